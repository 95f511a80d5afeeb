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
async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let step = Duration::from_secs(1);
    let mut waited = Duration::ZERO;
    while waited < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    f()
}

fn state(paths: &Paths, missed: &str) -> Arc<State> {
    let mut s = Settings::for_root(&paths.storage_root);
    s.unset("--no-schedule")
        .set("--missed-run", missed)
        .set("--catch-up-delay-secs", "60");
    State::new(s.config(), CancellationToken::new())
}

#[tokio::test(start_paused = true)]
async fn scheduled_snapshots_fire_at_six_with_chroma_on_sunday_then_retention() {
    let (_dir, paths) = sample_root(200);
    let state = state(&paths, "skip");
    // 2026-04-05 is a Sunday.
    let clock = Arc::new(TokioClock::starting_at(t("2026-04-05T05:58:00Z")));
    let task = tokio::spawn(schedule::run(Arc::clone(&state), clock.clone()));

    tokio::time::sleep(Duration::from_secs(100)).await;
    assert!(stamps(&paths).is_empty(), "nothing before 06:00");

    assert!(
        until(Duration::from_secs(600), || stamps(&paths).len() == 1
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
        until(Duration::from_secs(3 * 3600), || {
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
        until(Duration::from_secs(300), || stamps(&paths).len() == 1
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
        until(Duration::from_secs(900), || stamps(&paths).len() == 1
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
