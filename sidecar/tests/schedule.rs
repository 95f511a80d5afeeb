//! The schedule, driven by tokio's paused clock: snapshots fire at their time, kind
//! `scheduled`, chroma on Sundays, retention after each; a missed run gives one catch-up.

use std::sync::Arc;
use std::time::Duration;

use atocore_restore_job::{Paths, Stamp, metadata};
use atocore_sidecar::State;
use atocore_sidecar::scheduler::{self as schedule, Clock, TokioClock};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::util::{Settings, sample_root, stamps};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn meta(paths: &Paths, stamp: &str) -> atocore_restore_job::Metadata {
    metadata::read(&paths.snapshot_dir(&Stamp::parse(stamp).unwrap()))
        .unwrap()
        .unwrap()
}

/// Sleep (paused time) until `f` holds; the blocking backups hold time still while
/// they run, so this waits for them.
/// Wait for `f`, at most `limit` of (paused, virtual) time. Virtual time stands still
/// while an operation runs: the paused clock jumps ahead whenever the runtime is idle,
/// which it is while a backup or push works on a blocking thread, so under load hours
/// would pass in the milliseconds that work takes.
async fn until(state: &State, limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let step = Duration::from_secs(1);
    let mut waited = Duration::ZERO;
    let real = std::time::Instant::now();
    while waited < limit {
        if f() {
            return true;
        }
        if state.gate.running().is_some() && real.elapsed() < Duration::from_secs(300) {
            // Let the operation's thread work, and its task on this runtime run.
            std::thread::sleep(Duration::from_millis(5));
            tokio::task::yield_now().await;
            continue;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    f()
}

fn state(paths: &Paths, missed: &str) -> Arc<State> {
    state_with(paths, missed, &[])
}

fn state_with(paths: &Paths, missed: &str, extra: &[(&str, &str)]) -> Arc<State> {
    let mut s = Settings::for_root(&paths.storage_root);
    s.unset("--no-schedule")
        .set("--missed-run", missed)
        .set("--catch-up-delay-secs", "60");
    for (flag, value) in extra {
        s.set(flag, value);
    }
    State::new(s.config(), CancellationToken::new())
}

#[tokio::test(start_paused = true)]
async fn scheduled_snapshots_fire_at_six_with_chroma_on_sunday_then_retention() {
    let (_dir, paths) = sample_root(200);
    // The snapshots' stamps come from the real clock, seconds apart: with the default
    // `--keep-within 24h` retention would keep them all.
    let state = state_with(&paths, "skip", &[("--keep-within", "0")]);
    // 2026-04-05 is a Sunday.
    let clock = Arc::new(TokioClock::starting_at(t("2026-04-05T05:58:00Z")));
    let task = tokio::spawn(schedule::run(Arc::clone(&state), clock.clone()));

    tokio::time::sleep(Duration::from_secs(100)).await;
    assert!(stamps(&paths).is_empty(), "nothing before 06:00");

    assert!(
        until(&state, Duration::from_secs(600), || stamps(&paths).len()
            == 1
            && state.gate.running().is_none())
        .await
    );
    let sunday = stamps(&paths)[0].clone();
    let m = meta(&paths, &sunday);
    assert_eq!(m.kind, Some(atocore_restore_job::Kind::Scheduled));
    assert!(m.include_chroma, "Sunday's snapshot has chroma");
    assert_eq!(m.chroma_quiesced, Some(false), "no Docker in this test");
    assert!(clock.now() >= t("2026-04-05T06:00:00Z") && clock.now() < t("2026-04-05T06:20:00Z"));

    // An older database-only snapshot of the same real day, for retention to delete.
    let older = Stamp::parse(&sunday).unwrap().time() - chrono::TimeDelta::seconds(1);
    let older = Stamp::from_time(older).to_string();
    let older_dir = paths.snapshot_dir(&Stamp::parse(&older).unwrap());
    std::fs::create_dir_all(older_dir.join("db")).unwrap();
    let sunday_dir = paths.snapshot_dir(&Stamp::parse(&sunday).unwrap());
    std::fs::hard_link(
        sunday_dir.join("db/atocore.db"),
        older_dir.join("db/atocore.db"),
    )
    .unwrap();
    let mut m = meta(&paths, &sunday);
    m.stamp = older.clone();
    m.include_chroma = false;
    m.chroma_snapshot_path = None;
    m.registry_snapshot_path = None;
    std::fs::write(
        older_dir.join(atocore_restore_job::layout::METADATA_FILE),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();

    // Monday 06:00: without chroma. Retention runs after it; the three snapshots are from
    // the same real day, so the daily bucket keeps only the newest one, and the chroma
    // series keeps Sunday's: chroma history survives a database-only day.
    tokio::time::sleep(Duration::from_secs(23 * 3600)).await;
    assert_eq!(
        stamps(&paths),
        vec![older.clone(), sunday.clone()],
        "nothing before Monday 06:00"
    );
    assert!(
        until(&state, Duration::from_secs(3 * 3600), || {
            let s = stamps(&paths);
            s.len() == 2 && s[0] == sunday && state.gate.running().is_none()
        })
        .await,
        "{:?}",
        stamps(&paths)
    );
    let monday = meta(&paths, &stamps(&paths)[1]);
    assert_eq!(monday.kind, Some(atocore_restore_job::Kind::Scheduled));
    assert!(!monday.include_chroma);
    assert!(clock.now() < t("2026-04-06T09:00:00Z"));

    state.shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_missed_run_gives_one_catch_up_snapshot_after_start() {
    let (_dir, paths) = sample_root(200);
    let state = state(&paths, "catch-up");
    // Tuesday 09:00: today's 06:00 run (and, on a fresh install, Sunday's chroma run)
    // were missed.
    let clock = Arc::new(TokioClock::starting_at(t("2026-04-07T09:00:00Z")));
    let task = tokio::spawn(schedule::run(Arc::clone(&state), clock.clone()));

    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        stamps(&paths).is_empty(),
        "the catch-up waits for its delay"
    );
    assert!(
        until(&state, Duration::from_secs(300), || stamps(&paths).len()
            == 1
            && state.gate.running().is_none())
        .await
    );
    let m = meta(&paths, &stamps(&paths)[0]);
    assert_eq!(m.kind, Some(atocore_restore_job::Kind::Scheduled));
    assert!(m.include_chroma, "a chroma run was missed too");

    // One catch-up, not a burst: nothing more until Wednesday 06:00.
    tokio::time::sleep(Duration::from_secs(20 * 3600)).await;
    assert!(clock.now() < t("2026-04-08T06:00:00Z"));
    assert_eq!(stamps(&paths).len(), 1);

    state.shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_catch_up_when_the_scheduled_snapshot_is_there() {
    let (_dir, paths) = sample_root(200);
    let state = state(&paths, "catch-up");
    atocore_sidecar::operation::backup(&state, true, atocore_restore_job::Kind::Scheduled)
        .await
        .unwrap();
    // The real stamp is newer than any scheduled time of this fake Tuesday in 2024.
    let clock = Arc::new(TokioClock::starting_at(t("2024-04-09T09:00:00Z")));
    let task = tokio::spawn(schedule::run(Arc::clone(&state), clock));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(stamps(&paths).len(), 1);
    state.shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_snapshot_is_pushed_off_site_right_after() {
    let (_dir, paths) = sample_root(200);
    let remote = tempfile::tempdir().unwrap();
    let mut s = Settings::for_root(&paths.storage_root);
    s.unset("--no-schedule")
        .set("--missed-run", "skip")
        .set(
            "--offsite-url",
            &format!("file://{}", remote.path().display()),
        )
        .set("--offsite-unencrypted", "yes");
    let state = State::new(s.config(), CancellationToken::new());
    let clock = Arc::new(TokioClock::starting_at(t("2026-04-06T05:59:00Z")));
    let task = tokio::spawn(schedule::run(Arc::clone(&state), clock));
    let pushed = |stamp: &str| {
        remote
            .path()
            .join(format!("snapshots/{stamp}.json"))
            .is_file()
    };
    assert!(
        until(&state, Duration::from_secs(900), || stamps(&paths).len()
            == 1
            && pushed(&stamps(&paths)[0])
            && state.gate.running().is_none())
        .await,
        "the 06:00 snapshot was not pushed: local {:?}",
        stamps(&paths)
    );
    let m = state.metrics.render(&atocore_sidecar::metrics::Scrape {
        summary: &Default::default(),
        docker_up: false,
        operation_running: None,
        paused: false,
        next_run: None,
        now: Utc::now(),
        wal: Default::default(),
    });
    assert!(m.contains("atocore_offsite_pushes_total 1\n"), "{m}");
    state.shutdown.cancel();
    task.await.unwrap();
}

fn remote_stamps(remote: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(remote.join("snapshots"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn after_a_scheduled_push_the_target_is_pruned_and_verified_when_due() {
    use atocore_sidecar::operation;
    // Big enough for a database in chunks (small files live in the index).
    let (_dir, paths) = sample_root(20_000);
    let remote = tempfile::tempdir().unwrap();
    let mut s = Settings::for_root(&paths.storage_root);
    s.unset("--no-schedule")
        .set("--missed-run", "skip")
        .set(
            "--offsite-url",
            &format!("file://{}", remote.path().display()),
        )
        .set("--offsite-unencrypted", "yes")
        .set("--offsite-verify-read-data", "100")
        // Stamps from the real clock, seconds apart: keep-within would keep them all,
        // here and on the target.
        .set("--keep-within", "0");
    let mut config = s.config();
    config.offsite_prune.keep_within = Duration::ZERO;
    let state = State::new(config, CancellationToken::new());

    // A snapshot on the target, plus two older copies of its reference from the same
    // day: the target's daily retention keeps only the newest of that day.
    let first = operation::backup(&state, false, atocore_restore_job::Kind::Manual)
        .await
        .unwrap()
        .stamp;
    operation::offsite_push(&state).await.unwrap();
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(remote.path().join(format!("snapshots/{first}.json"))).unwrap(),
    )
    .unwrap();
    let mut forged = Vec::new();
    for back in [1, 2] {
        let t = Stamp::parse(&first).unwrap().time() - chrono::TimeDelta::seconds(back);
        let stamp = Stamp::from_time(t).to_string();
        let mut r = reference.clone();
        r["stamp"] = stamp.clone().into();
        std::fs::write(
            remote.path().join(format!("snapshots/{stamp}.json")),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        forged.push(stamp);
    }
    assert_eq!(remote_stamps(remote.path()).len(), 3);
    let verify_file = paths.backup_dir.join("offsite/sidecar-verify.json");
    assert!(!verify_file.exists());

    let clock = Arc::new(TokioClock::starting_at(t("2026-04-06T05:59:00Z")));
    let task = tokio::spawn(schedule::run(Arc::clone(&state), clock.clone()));
    assert!(
        until(&state, Duration::from_secs(900), || stamps(&paths).len()
            <= 2
            && stamps(&paths).iter().any(|s| *s != first)
            && verify_file.exists()
            && state.gate.running().is_none())
        .await,
        "local {:?}, remote {:?}",
        stamps(&paths),
        remote_stamps(remote.path())
    );
    // Remote retention ran with the same (default) counts as the local one, so both
    // keep the same snapshots; the forged same-day references are gone.
    let remote_now = remote_stamps(remote.path());
    assert_eq!(remote_now, stamps(&paths));
    assert!(
        forged.iter().all(|f| !remote_now.contains(f)),
        "{remote_now:?}"
    );

    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&verify_file).unwrap()).unwrap();
    assert_eq!(record["ok"], true, "{record}");
    assert_eq!(record["problems"], 0, "{record}");
    assert_eq!(record["read_data_percent"], 100.0, "{record}");
    assert_eq!(record["snapshots"], remote_now.len(), "{record}");
    assert!(record["chunks_read"].as_u64().unwrap() >= 1, "{record}");
    assert!(record.get("error").is_none(), "{record}");
    let verified_at = record["at"].as_str().unwrap().to_string();
    assert!(verified_at.starts_with("2026-04-06T06:0"), "{verified_at}");

    // Tuesday 06:00: pushed and pruned again, but the verify is not due for a week.
    // (Stamps come from the real clock, to the second: let one pass.)
    std::thread::sleep(Duration::from_millis(1100));
    tokio::time::sleep(Duration::from_secs(23 * 3600)).await;
    assert!(
        until(&state, Duration::from_secs(3 * 3600), || remote_stamps(
            remote.path()
        )
        .iter()
        .any(|s| !remote_now.contains(s))
            && state.gate.running().is_none())
        .await,
        "local {:?}, remote {:?}, running {:?}",
        stamps(&paths),
        remote_stamps(remote.path()),
        state.gate.running()
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&verify_file).unwrap()).unwrap();
    assert_eq!(record["at"], verified_at.as_str());
    let m = state.metrics.render(&atocore_sidecar::metrics::Scrape {
        summary: &Default::default(),
        docker_up: false,
        operation_running: None,
        paused: false,
        next_run: None,
        now: Utc::now(),
        wal: Default::default(),
    });
    assert!(m.contains("atocore_offsite_prune_runs_total 2\n"), "{m}");
    assert!(
        m.contains("atocore_offsite_prune_failures_total 0\n"),
        "{m}"
    );
    assert!(m.contains("atocore_offsite_pruned_snapshots_total "), "{m}");

    // A restart remembers the verify: not due before a week has passed.
    let restarted = State::new(s.config(), CancellationToken::new());
    assert!(!operation::offsite_verify_due(
        &restarted,
        t("2026-04-12T06:00:00Z")
    ));
    assert!(operation::offsite_verify_due(
        &restarted,
        t("2026-04-13T06:10:00Z")
    ));

    // A truncated chunk is found by the next verify and recorded as a problem.
    let chunk = walk_files(&remote.path().join("chunks"))[0].clone();
    let len = std::fs::metadata(&chunk).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&chunk)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let r = operation::offsite_verify(&restarted, t("2026-04-13T06:10:00Z"))
        .await
        .unwrap();
    assert!(!r.ok);
    assert!(r.problems >= 1, "{r:?}");
    assert!(!operation::offsite_verify_due(
        &restarted,
        t("2026-04-13T07:00:00Z")
    ));

    state.shutdown.cancel();
    task.await.unwrap();
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
