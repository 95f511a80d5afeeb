//! The orchestrated restore and the drill end to end: the real images, the real
//! `compose/` files (demo override: the stand-in as atocore), the real compose command
//! and engine, the sidecar's `POST /admin/restore` and `POST /admin/drill`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use atocore_e2e::admin::{
    self, HeldRequest, facts, log_lines_containing, memories_in_file, metric, tree, wait_for_file,
};
use atocore_e2e::docker;
use atocore_e2e::http::wait_for;
use atocore_e2e::images;
use atocore_e2e::stack::Stack;
use serde_json::{Value, json};

/// The stand-in logs this once per start, when it has opened the database and chroma.
const OPENED: &str = "opened its storage";

/// A stack up and healthy (atocore and the sidecar).
fn healthy_stack(test: &str) -> Option<Stack> {
    healthy_stack_with(test, None)
}

/// A stack with a test's own compose override, up and healthy.
fn healthy_stack_with(test: &str, extra: Option<&str>) -> Option<Stack> {
    let engine = docker::engine_or_skip(test)?;
    let images = images::ensure(&engine);
    let stack = Stack::with_override(&engine, &images, extra);
    stack.up(&[]);
    stack.wait_healthy();
    stack.wait_sidecar_healthy();
    Some(stack)
}

/// `POST /admin/backup {"include_chroma": true}` through the sidecar: checks that
/// atocore was paused for the chroma copy and runs unpaused afterwards; the stamp.
fn chroma_backup(stack: &Stack) -> String {
    let before = facts(&stack.atocore_container);
    let answer = stack.admin_post("/admin/backup", r#"{"include_chroma": true}"#);
    assert_eq!(answer.status, 200, "backup: {}", answer.text);
    let meta = &answer.json;
    assert_eq!(meta["include_chroma"], true, "{meta}");
    assert_eq!(meta["kind"], "manual", "{meta}");
    assert_eq!(
        meta["chroma_quiesced"], true,
        "atocore paused for the chroma copy: {meta}"
    );
    let after = facts(&stack.atocore_container);
    assert_eq!(
        (after.status.as_str(), after.paused),
        ("running", false),
        "atocore unpaused after the backup"
    );
    assert_eq!(
        after.started_at, before.started_at,
        "a pause is not a restart"
    );
    assert_eq!(
        metric(&stack.metrics(), "atocore_sidecar_atocore_paused"),
        Some(0.0)
    );
    meta["stamp"].as_str().expect("a stamp").to_owned()
}

/// The build_sha atocore reports now.
fn build_sha(stack: &Stack) -> String {
    let health = stack.wait_healthy();
    let sha = health["build_sha"].as_str().unwrap_or_default().to_owned();
    assert!(!sha.is_empty(), "atocore reports a build_sha: {health}");
    sha
}

fn assert_no_restore_in_progress(stack: &Stack) {
    for file in ["request.json", "journal.json", "aside.json", "staged.json"] {
        assert!(
            !stack.restore_file(file).exists(),
            "{file} left behind: {:?}",
            stack.read_restore_file(file)
        );
    }
    assert_eq!(
        stack.restore_leftovers(),
        Vec::<String>::new(),
        "staged or aside files left beside the live ones"
    );
}

/// Bad requests (unknown stamp, no or wrong token, path-like or malformed stamps,
/// unknown fields) are refused with the contract's statuses and change nothing: no
/// file under backups/, nothing staged, atocore never stopped. Then the orchestrated
/// restore of a chroma snapshot reverts a mutation in one call: healthy, not rolled
/// back, the same container with the same build_sha, downtime reported, the pre-restore
/// snapshot listed and holding the mutation.
#[test]
fn orchestrated_restore_reverts_a_mutation_and_bad_requests_change_nothing() {
    let Some(stack) =
        healthy_stack("orchestrated_restore_reverts_a_mutation_and_bad_requests_change_nothing")
    else {
        return;
    };
    stack.remember("kept-1", "orch");
    stack.remember("kept-2", "orch");
    let stamp = chroma_backup(&stack);
    let sha = build_sha(&stack);
    let image_sha = docker::inspect(&stack.images.standin).unwrap()["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| {
            e.as_str()?
                .strip_prefix("ATOCORE_BUILD_SHA=")
                .map(str::to_owned)
        })
        .expect("the stand-in image sets ATOCORE_BUILD_SHA");
    assert_eq!(
        sha, image_sha,
        "build_sha comes from the image's environment"
    );

    // --- bad requests ---
    let atocore_before = facts(&stack.atocore_container);
    let backups_before = tree(&stack.root.join("backups"));
    let data_names_before = admin::names(&stack.root.join("data"));
    let url = stack.sidecar_url("/admin/restore");
    let bearer = stack.bearer();
    let good = json!({ "stamp": stamp }).to_string();
    let t = Duration::from_secs(60);
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "unknown stamp",
            Some(&bearer),
            json!({"stamp": "20000101T000000Z"}).to_string(),
            404,
            "unknown_stamp",
        ),
        ("no token", None, good.clone(), 401, ""),
        (
            "wrong token",
            Some("Bearer not-the-token"),
            good.clone(),
            401,
            "",
        ),
        (
            "token without Bearer",
            Some(stack.token.as_str()),
            good.clone(),
            401,
            "",
        ),
        (
            "path-like stamp",
            Some(&bearer),
            json!({"stamp": "../../../etc/passwd"}).to_string(),
            400,
            "",
        ),
        (
            "stamp with a path",
            Some(&bearer),
            json!({"stamp": format!("{stamp}/../{stamp}")}).to_string(),
            400,
            "",
        ),
        (
            "stamp with a slash",
            Some(&bearer),
            json!({"stamp": format!("../snapshots/{stamp}")}).to_string(),
            400,
            "",
        ),
        (
            "unknown field",
            Some(&bearer),
            json!({"stamp": stamp, "force": true}).to_string(),
            400,
            "",
        ),
        (
            "stamp not a string",
            Some(&bearer),
            json!({"stamp": 20260101}).to_string(),
            400,
            "",
        ),
        (
            "malformed JSON",
            Some(&bearer),
            format!("{{\"stamp\": \"{stamp}\""),
            400,
            "",
        ),
    ];
    for (what, auth, body, want, code) in &cases {
        let answer = admin::request("POST", &url, *auth, Some(body), t).unwrap();
        assert_eq!(answer.status, *want, "{what}: {}", answer.text);
        assert!(
            answer.json["error"].is_string(),
            "{what}: the contract's error body: {}",
            answer.text
        );
        if !code.is_empty() {
            assert_eq!(answer.json["error"], *code, "{what}: {}", answer.text);
        }
    }
    let drill = admin::request("POST", &stack.sidecar_url("/admin/drill"), None, None, t).unwrap();
    assert_eq!(drill.status, 401, "drill without a token: {}", drill.text);
    let drill = admin::request(
        "POST",
        &stack.sidecar_url("/admin/drill"),
        Some("Bearer not-the-token"),
        Some("{}"),
        t,
    )
    .unwrap();
    assert_eq!(
        drill.status, 401,
        "drill with a wrong token: {}",
        drill.text
    );

    let atocore_after = facts(&stack.atocore_container);
    assert_eq!(
        atocore_after, atocore_before,
        "atocore was never stopped, paused or restarted by a bad request"
    );
    assert_eq!(
        tree(&stack.root.join("backups")),
        backups_before,
        "nothing under backups/ changed"
    );
    assert_eq!(
        admin::names(&stack.root.join("data")),
        data_names_before,
        "nothing staged beside the live files"
    );
    assert_eq!(stack.memories("orch"), ["kept-1", "kept-2"]);
    let m = stack.metrics();
    assert_eq!(metric(&m, "atocore_restores_total"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "atocore_restore_failures_total"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(metric(&m, "atocore_drills_total"), Some(0.0), "{m}");

    // --- the mutation, then the restore in one call ---
    stack.remember("MUTATION-1", "orch");
    stack.remember("MUTATION-2", "orch");
    assert_eq!(
        stack.memories("orch"),
        ["kept-1", "kept-2", "MUTATION-1", "MUTATION-2"]
    );
    assert_eq!(stack.stats()["embeddings"], 4);
    let started = Instant::now();
    let answer = stack.admin_post("/admin/restore", &good);
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "restore: {}", answer.text);
    let r = &answer.json;
    eprintln!("e2e: orchestrated restore answered in {took:?}: {r}");
    assert_eq!(r["stamp"], stamp.as_str(), "{r}");
    assert_eq!(r["healthy"], true, "{r}");
    assert_eq!(r["rolled_back"], false, "{r}");
    assert_eq!(r["restored_integrity_ok"], true, "{r}");
    assert_eq!(r["db_restored"], true, "{r}");
    assert_eq!(r["chroma_restored"], true, "{r}");
    assert_eq!(r["dry_run"], false, "{r}");
    assert_eq!(r["staged_ahead"], true, "{r}");
    assert!(
        r.get("error").is_none() && r.get("rollback").is_none(),
        "{r}"
    );
    assert!(r.get("warnings").is_none(), "no warnings: {r}");
    assert_eq!(r["build_sha_before"], sha.as_str(), "{r}");
    assert_eq!(r["build_sha_after"], sha.as_str(), "{r}");
    let downtime = r["downtime_ms"].as_u64().expect("downtime_ms");
    let duration = r["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        downtime > 0 && downtime <= duration && (duration as u128) <= took.as_millis(),
        "downtime {downtime} ms within the call's {duration} ms ({took:?}): {r}"
    );
    let pre = r["pre_restore_snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("a pre-restore snapshot: {r}"))
        .to_owned();
    assert_ne!(pre, stamp);

    // The mutation is gone, in the database and in chroma; atocore is the same
    // container, started again, with the same build_sha, and writable.
    assert_eq!(stack.memories("orch"), ["kept-1", "kept-2"]);
    assert_eq!(
        stack.stats()["embeddings"],
        2,
        "chroma restored too: {}",
        stack.stats()
    );
    assert_eq!(build_sha(&stack), sha);
    let atocore_now = facts(&stack.atocore_container);
    assert_eq!(atocore_now.id, atocore_before.id, "the same container");
    assert_ne!(
        atocore_now.started_at, atocore_before.started_at,
        "it was stopped and started"
    );
    stack.remember("after-restore", "orch");
    assert_eq!(
        stack.memories("orch"),
        ["kept-1", "kept-2", "after-restore"]
    );

    // The pre-restore snapshot: listed, valid, kind pre-restore, holding the mutation.
    let row = stack
        .listed(&pre)
        .unwrap_or_else(|| panic!("{pre} not in GET /admin/backup"));
    assert_eq!(row["kind"], "pre-restore", "{row}");
    assert_eq!(row["valid"], true, "{row}");
    let validated = stack.admin_get(&format!("/admin/backup/{pre}/validate"));
    assert_eq!(validated.json["valid"], true, "{}", validated.text);
    assert_eq!(
        memories_in_file(
            &stack
                .root
                .join(format!("backups/snapshots/{pre}/db/atocore.db")),
            "orch"
        ),
        ["kept-1", "kept-2", "MUTATION-1", "MUTATION-2"]
    );

    // Nothing left in progress; the result file is this request's.
    assert_no_restore_in_progress(&stack);
    let result = stack.read_restore_file("result.json").expect("result.json");
    assert_eq!(result["request_id"], r["request_id"], "{result}");
    assert_eq!(result["ok"], true, "{result}");
    let m = stack.metrics();
    assert_eq!(metric(&m, "atocore_restores_total"), Some(1.0), "{m}");
    assert_eq!(
        metric(&m, "atocore_restore_failures_total"),
        Some(0.0),
        "{m}"
    );
    let last = metric(&m, "atocore_restore_last_downtime_seconds").expect("last downtime");
    assert!(
        (last * 1000.0 - downtime as f64).abs() < 2.0,
        "{last} s vs {downtime} ms"
    );
}

/// A restore whose restore-job fails after it touched the live files: the staged chroma
/// copy is damaged after the sidecar validated and staged the snapshot (while atocore
/// is being stopped), so the job's final check of the swapped-in tree fails. The
/// sidecar makes the pre-restore snapshot and restores it the same way, without ever
/// starting atocore on the damaged data: rolled back, healthy, its pre-restore data
/// (database and chroma) back. A later restore of the same snapshot works.
#[test]
fn failed_restore_job_is_rolled_back_to_the_pre_restore_state() {
    let Some(stack) = healthy_stack("failed_restore_job_is_rolled_back_to_the_pre_restore_state")
    else {
        return;
    };
    stack.remember("kept", "rb");
    let stamp = chroma_backup(&stack);
    stack.remember("written-after-the-snapshot", "rb");
    let sha = build_sha(&stack);
    let atocore_before = facts(&stack.atocore_container);
    assert_eq!(log_lines_containing(&stack.atocore_container, OPENED), 1);

    // The damage: as soon as the sidecar has staged the snapshot (staged.json is written
    // last), grow one staged chroma file. The sidecar then writes the request and stops
    // atocore before it starts the job, so this lands well before the job runs.
    let staged = stack.restore_file("staged.json");
    let new_dir = stack.root.join("data/chroma/.atocore-restore/new");
    let done = Arc::new(AtomicBool::new(false));
    let injector = {
        let done = Arc::clone(&done);
        let job = stack.restore_container.clone();
        std::thread::spawn(move || -> Option<(String, bool)> {
            if !wait_for_file(&staged, Duration::from_secs(120), || {
                done.load(Ordering::SeqCst)
            }) {
                return None;
            }
            let victim = tree(&new_dir)
                .into_iter()
                .find(|(_, what)| what.starts_with("file"))
                .map(|(path, _)| path)?;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(new_dir.join(&victim))
                .ok()?;
            std::io::Write::write_all(&mut f, &[0xA5; 4096]).ok()?;
            f.sync_all().ok()?;
            // Whether the job had already started (it must not have).
            let job_started = docker::container_state(&job).is_some_and(|s| s.status == "running");
            Some((victim, job_started))
        })
    };
    let answer = stack.admin_post("/admin/restore", &json!({ "stamp": stamp }).to_string());
    done.store(true, Ordering::SeqCst);
    let injected = injector.join().expect("the injector thread");
    let (victim, job_was_running) =
        injected.unwrap_or_else(|| panic!("nothing was staged to damage: {}", answer.text));
    assert!(!job_was_running, "the damage landed after the job started");
    eprintln!(
        "e2e: damaged staged chroma file {victim}; restore answered {}",
        answer.text
    );

    let r = &answer.json;
    assert_eq!(answer.status, 500, "{r}");
    assert_eq!(r["error"], "restore_failed", "{r}");
    assert_eq!(r["restored_integrity_ok"], false, "{r}");
    assert_eq!(r["rolled_back"], true, "{r}");
    assert_eq!(r["healthy"], true, "{r}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("failed its checks")),
        "{r}"
    );
    assert_eq!(r["build_sha_before"], sha.as_str(), "{r}");
    assert_eq!(r["build_sha_after"], sha.as_str(), "{r}");
    assert!(r["downtime_ms"].as_u64().is_some_and(|d| d > 0), "{r}");
    let rb = &r["rollback"];
    assert_eq!(rb["restored_integrity_ok"], true, "{r}");
    assert_eq!(rb["healthy"], true, "{r}");
    let pre = rb["stamp"]
        .as_str()
        .unwrap_or_else(|| panic!("rolled back to a pre-restore snapshot: {r}"))
        .to_owned();

    // atocore: healthy on its pre-restore data, same container and build_sha, and it
    // was started once only (after the rollback), never on the damaged restore.
    assert_eq!(stack.memories("rb"), ["kept", "written-after-the-snapshot"]);
    assert_eq!(stack.stats()["embeddings"], 2, "{}", stack.stats());
    assert_eq!(build_sha(&stack), sha);
    assert_eq!(facts(&stack.atocore_container).id, atocore_before.id);
    assert_eq!(
        log_lines_containing(&stack.atocore_container, OPENED),
        2,
        "atocore started once, after the rollback"
    );
    let row = stack
        .listed(&pre)
        .expect("the pre-restore snapshot is listed");
    assert_eq!(row["kind"], "pre-restore", "{row}");
    assert_eq!(
        memories_in_file(
            &stack
                .root
                .join(format!("backups/snapshots/{pre}/db/atocore.db")),
            "rb"
        ),
        ["kept", "written-after-the-snapshot"]
    );
    assert_no_restore_in_progress(&stack);
    let m = stack.metrics();
    assert_eq!(
        metric(&m, "atocore_restore_failures_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "atocore_restore_rollbacks_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "atocore_restores_total"), Some(0.0), "{m}");

    // Not wedged: the same restore, undisturbed, now works.
    let again = stack.admin_post("/admin/restore", &json!({ "stamp": stamp }).to_string());
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["healthy"], true, "{}", again.text);
    assert_eq!(stack.memories("rb"), ["kept"]);
    assert_eq!(stack.stats()["embeddings"], 1);
    assert_no_restore_in_progress(&stack);
}

/// How long the sidecar waits for atocore to be healthy after a restore, in the test
/// below (the default is 120 s; Docker's `unhealthy` usually ends the wait sooner).
const HEALTHY_TIMEOUT_SECS: u64 = 15;

/// A snapshot that is sound for the engine (valid, integrity_check ok) but holds a
/// database atocore cannot start on (another schema: as from an incompatible version of
/// the service). After the swap atocore exits at once and Docker restarts it over and
/// over (`restart: unless-stopped`); Docker reports it unhealthy (or the sidecar's
/// healthy timeout, shortened here to bound the test, runs out), the sidecar stops it,
/// makes the pre-restore snapshot and restores it: rolled back, healthy on the data it
/// had before.
#[test]
fn restore_that_atocore_cannot_start_on_is_rolled_back() {
    let yaml = format!(
        "services:\n  sidecar:\n    environment:\n      ATOCORE_HEALTHY_TIMEOUT_SECS: \"{HEALTHY_TIMEOUT_SECS}\"\n"
    );
    let Some(stack) = healthy_stack_with(
        "restore_that_atocore_cannot_start_on_is_rolled_back",
        Some(&yaml),
    ) else {
        return;
    };
    stack.remember("live", "foreign");
    let sha = build_sha(&stack);
    let atocore_before = facts(&stack.atocore_container);

    // The foreign database, snapshotted by the restore-job's own `backup`.
    let dir = stack.root.join("backups/e2e-foreign");
    std::fs::create_dir_all(&dir).unwrap();
    {
        let conn = rusqlite::Connection::open(dir.join("atocore.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE memories (id TEXT PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO memories VALUES ('m1', 'from another schema');",
        )
        .unwrap();
    }
    let backup = stack.restore_job(
        false,
        &[
            "backup",
            "--db-path",
            "/srv/storage/atocore/backups/e2e-foreign/atocore.db",
        ],
    );
    assert_eq!(backup.code, 0, "backup of the foreign database: {backup:?}");
    let foreign = backup.json["stamp"].as_str().unwrap().to_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    let validated = stack.admin_get(&format!("/admin/backup/{foreign}/validate"));
    assert_eq!(validated.json["valid"], true, "{}", validated.text);

    let answer = stack.admin_post(
        "/admin/restore",
        &json!({ "stamp": foreign, "include_chroma": false }).to_string(),
    );
    eprintln!(
        "e2e: restore of a database atocore cannot open: {}",
        answer.text
    );
    let r = &answer.json;
    assert_eq!(answer.status, 500, "{r}");
    assert_eq!(r["error"], "restore_failed", "{r}");
    assert_eq!(
        r["restored_integrity_ok"], true,
        "the engine found it sound: {r}"
    );
    assert_eq!(r["rolled_back"], true, "{r}");
    assert_eq!(r["healthy"], true, "{r}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not become healthy")),
        "{r}"
    );
    assert_eq!(r["rollback"]["restored_integrity_ok"], true, "{r}");
    let pre = r["rollback"]["stamp"]
        .as_str()
        .expect("rollback stamp")
        .to_owned();

    // atocore really ran on the foreign database and failed (the schema error is in its
    // log), and is back on its own data, same container and build_sha.
    assert!(
        log_lines_containing(&stack.atocore_container, "no such column") > 0,
        "atocore failed on the restored database"
    );
    assert_eq!(stack.memories("foreign"), ["live"]);
    assert_eq!(build_sha(&stack), sha);
    assert_eq!(facts(&stack.atocore_container).id, atocore_before.id);
    let row = stack
        .listed(&pre)
        .expect("the pre-restore snapshot is listed");
    assert_eq!(row["kind"], "pre-restore", "{row}");
    assert_no_restore_in_progress(&stack);
    let m = stack.metrics();
    assert_eq!(
        metric(&m, "atocore_restore_rollbacks_total"),
        Some(1.0),
        "{m}"
    );
}

/// The sidecar is killed in the middle of a restore: after it wrote the request and
/// asked Docker to stop atocore, before it started the restore-job (a slow client holds
/// atocore's shutdown open for up to 3 s and the kill follows Docker's `kill` event for
/// atocore, so it lands there every time).
/// atocore stays down; `docker-compose up -d` runs the init job, which performs the
/// request before atocore starts: healthy on the snapshot's data, no journal or request
/// left, and the pre-restore snapshot made.
#[test]
fn sidecar_killed_mid_restore_is_finished_by_compose_up() {
    let Some(stack) = healthy_stack("sidecar_killed_mid_restore_is_finished_by_compose_up") else {
        return;
    };
    stack.remember("kept", "kill");
    let stamp = chroma_backup(&stack);
    stack.remember("MUTATION", "kill");
    let sha = build_sha(&stack);
    let snapshots_before = admin::names(&stack.root.join("backups/snapshots"))
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect::<Vec<_>>();
    let job_before = facts(&stack.restore_container);

    let held = HeldRequest::open(stack.atocore_port);
    let since = std::time::SystemTime::now();
    let restore = {
        let url = stack.sidecar_url("/admin/restore");
        let bearer = stack.bearer();
        let body = json!({ "stamp": stamp }).to_string();
        std::thread::spawn(move || {
            admin::request(
                "POST",
                &url,
                Some(&bearer),
                Some(&body),
                admin::OPERATION_TIMEOUT,
            )
        })
    };
    // The sidecar has written the request and asked Docker to stop atocore (SIGTERM
    // sent); atocore's drain waits for the held request, so the sidecar is still
    // waiting for the stop to finish when it is killed.
    let signalled = admin::wait_for_event(
        &stack.atocore_container,
        "kill",
        since,
        Duration::from_secs(120),
    );
    let signalled = signalled.unwrap_or_else(|e| {
        panic!(
            "{e}: the sidecar never stopped atocore (restore: {:?})",
            restore.is_finished()
        )
    });
    assert!(
        stack.restore_file("request.json").exists(),
        "the request is written before atocore is stopped ({signalled})"
    );
    let kill = docker::docker(&["kill", &stack.sidecar_container]);
    assert!(kill.status.success(), "{}", docker::describe(&kill));
    assert_eq!(
        facts(&stack.atocore_container).status,
        "running",
        "atocore was still shutting down (draining the held request) when the sidecar died"
    );
    held.close();
    let answer = restore.join().expect("the restore thread");
    assert!(
        answer.is_err(),
        "the client gets no answer from a killed sidecar: {answer:?}"
    );
    let pending = stack
        .read_restore_file("request.json")
        .expect("the request is still pending");
    assert_eq!(pending["stamp"], stamp.as_str());
    assert_eq!(
        facts(&stack.restore_container).started_at,
        job_before.started_at,
        "the restore-job had not been started"
    );
    // The stop the sidecar asked for completes without it; atocore stays down
    // (stopped by request, so `restart: unless-stopped` leaves it).
    wait_for("atocore stopped", Duration::from_secs(60), |note| {
        let f = facts(&stack.atocore_container);
        *note = format!("{f:?}");
        (f.status == "exited").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(facts(&stack.atocore_container).status, "exited");
    assert!(!stack.restore_file("journal.json").exists());

    // `up -d`: the init job performs the request first, then atocore starts.
    stack.up(&[]);
    let job = facts(&stack.restore_container);
    assert_ne!(job.started_at, job_before.started_at, "the init job ran");
    assert_eq!((job.status.as_str(), job.exit_code), ("exited", 0));
    let result = stack.read_restore_file("result.json").expect("result.json");
    assert_eq!(result["request_id"], pending["request_id"], "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["chroma_restored"], true, "{result}");
    stack.wait_healthy();
    assert_eq!(stack.memories("kill"), ["kept"]);
    assert_eq!(stack.stats()["embeddings"], 1);
    assert_eq!(build_sha(&stack), sha);
    assert!(
        !stack.restore_file("journal.json").exists(),
        "no journal left"
    );
    assert!(
        !stack.restore_file("request.json").exists(),
        "the request was consumed"
    );
    stack.wait_sidecar_healthy();

    // The pre-restore snapshot: the state from before the restore, mutation included.
    // (Made by the init job or by the restarted sidecar: allow it a few seconds.)
    let new_snapshots = || -> Vec<String> {
        admin::names(&stack.root.join("backups/snapshots"))
            .into_iter()
            .filter(|p| !p.contains('/') && !p.starts_with('.'))
            .filter(|p| !snapshots_before.contains(p))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_snapshots = loop {
        let found = new_snapshots();
        if !found.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no pre-restore snapshot was made after `up -d` finished the restore: the live state moved aside stays pending (restore files: {:?}, result: {result}, leftovers: {:?})",
            stack.restore_files_present(),
            stack.restore_leftovers()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(new_snapshots.len(), 1, "{new_snapshots:?}");
    let pre = &new_snapshots[0];
    let row = stack.listed(pre).expect("listed");
    assert_eq!(row["kind"], "pre-restore", "{row}");
    assert_eq!(
        memories_in_file(
            &stack
                .root
                .join(format!("backups/snapshots/{pre}/db/atocore.db")),
            "kill"
        ),
        ["kept", "MUTATION"]
    );
    assert_no_restore_in_progress(&stack);
}

/// The live drill through the sidecar passes and is recorded: in the answer, in
/// `GET /admin/drill`, in `backups/drills.jsonl`, in `/metrics` and `/health`; the
/// marker is gone, data written before the drill is still there.
#[test]
fn drill_passes_and_is_recorded() {
    let Some(stack) = healthy_stack("drill_passes_and_is_recorded") else {
        return;
    };
    stack.remember("before-the-drill", "drillcase");
    let sha = build_sha(&stack);
    let answer = stack.admin_post("/admin/drill", "{}");
    assert_eq!(answer.status, 200, "drill: {}", answer.text);
    let d = &answer.json;
    assert_eq!(d["passed"], true, "{d}");
    for check in [
        "snapshot_taken",
        "marker_written",
        "marker_visible",
        "restore_ok",
        "marker_gone",
        "atocore_healthy",
        "build_sha_unchanged",
    ] {
        assert_eq!(d["checks"][check], true, "check {check}: {d}");
    }
    assert_eq!(d["rolled_back"], false, "{d}");
    assert_eq!(d["build_sha_before"], sha.as_str(), "{d}");
    assert_eq!(d["build_sha_after"], sha.as_str(), "{d}");
    assert!(d["downtime_ms"].as_u64().is_some_and(|ms| ms > 0), "{d}");
    let id = d["id"].as_str().expect("an id").to_owned();
    let marker = d["marker"].as_str().expect("a marker").to_owned();
    assert_eq!(marker, format!("DRILL-MARKER-{id}"));
    let stamp = d["stamp"].as_str().expect("the drill snapshot").to_owned();
    let pre = d["pre_restore_snapshot"]
        .as_str()
        .expect("the pre-restore snapshot")
        .to_owned();

    // atocore: the marker is gone, the earlier data kept, same build_sha.
    let drill_memories = stack.memories("drill");
    assert!(
        !drill_memories.iter().any(|m| m == &marker),
        "{drill_memories:?}"
    );
    assert_eq!(stack.memories("drillcase"), ["before-the-drill"]);
    assert_eq!(build_sha(&stack), sha);
    // The pre-restore snapshot holds the marker (it was taken after it was written).
    assert!(
        memories_in_file(
            &stack
                .root
                .join(format!("backups/snapshots/{pre}/db/atocore.db")),
            "drill"
        )
        .contains(&marker)
    );
    assert_eq!(stack.listed(&stamp).expect("listed")["kind"], "drill");
    assert_eq!(stack.listed(&pre).expect("listed")["kind"], "pre-restore");

    // Recorded: GET /admin/drill, drills.jsonl, /metrics, /health.
    let history = stack.admin_get("/admin/drill");
    assert_eq!(history.status, 200, "{}", history.text);
    let drills = history.json["drills"].as_array().expect("drills").clone();
    assert_eq!(drills.len(), 1, "{}", history.text);
    assert_eq!(drills[0]["id"], id.as_str());
    assert_eq!(drills[0]["passed"], true);
    assert_eq!(
        history.json["drills_file"],
        "/srv/storage/atocore/backups/drills.jsonl"
    );
    let text = std::fs::read_to_string(stack.root.join("backups/drills.jsonl"))
        .expect("backups/drills.jsonl");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(&lines[0], d, "the file holds the record returned");
    let m = stack.metrics();
    assert_eq!(metric(&m, "atocore_drill_last_passed"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "atocore_drills_total"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "atocore_drill_failures_total"), Some(0.0), "{m}");
    let age = metric(&m, "atocore_drill_last_age_seconds").expect("drill age");
    assert!((0.0..120.0).contains(&age), "{age}");
    let (_, health) = atocore_e2e::http::get(&stack.sidecar_url("/health")).unwrap();
    assert_eq!(health["last_drill"]["id"], id.as_str(), "{health}");
    assert_eq!(health["last_drill"]["passed"], true, "{health}");
    assert_no_restore_in_progress(&stack);
}
