//! Docker end-to-end tests: the real images, the real `compose/` files and the real
//! compose command against the real engine. Outside CI they skip (with a note) when no
//! engine answers; under CI=true they fail instead.
//!
//! Run: `cargo test -p atocore-e2e` (`ATOCORE_E2E_SKIP_BUILD=1` reuses built images).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use atocore_e2e::docker::{self, container_state};
use atocore_e2e::http::{self, wait_for};
use atocore_e2e::images;
use atocore_e2e::stack::Stack;
use serde_json::{Value, json};

mod orchestration;

fn memory(content: &str, project: &str) -> Value {
    json!({"memory_type": "episodic", "content": content, "project": project, "confidence": 0.9})
}

fn contents(stack: &Stack, project: &str) -> Vec<String> {
    let (status, body) = http::get(&stack.url(&format!("/memory?project={project}"))).unwrap();
    assert_eq!(status, 200, "{body}");
    body["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// The build script makes three static FROM-scratch images with the agreed users,
/// entrypoints, health checks and labels, and a second run changes nothing.
#[test]
fn images_are_built_from_scratch_and_rebuilt_idempotently() {
    let Some(engine) =
        docker::engine_or_skip("images_are_built_from_scratch_and_rebuilt_idempotently")
    else {
        return;
    };
    let images = images::ensure(&engine);
    let expected = [
        (&images.sidecar, "sidecar", "0:0", Some("/atocore-sidecar")),
        (&images.restore_job, "restore-job", "0:0", None),
        (
            &images.standin,
            "standin",
            "10001:10001",
            Some("/atocore-standin"),
        ),
    ];
    let mut ids = Vec::new();
    for (image, component, user, health) in expected {
        let v = docker::inspect(image).unwrap();
        let config = &v["Config"];
        assert_eq!(config["User"], user, "{image} user");
        assert_eq!(
            config["Labels"]["io.atocore.component"], component,
            "{image} label"
        );
        assert!(
            config["Labels"]["org.opencontainers.image.revision"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
        );
        let binary = format!("/atocore-{}", component);
        assert_eq!(config["Entrypoint"], json!([binary]), "{image} entrypoint");
        match health {
            Some(bin) => assert_eq!(
                config["Healthcheck"]["Test"],
                json!(["CMD", bin, "healthcheck"]),
                "{image}"
            ),
            None => assert!(
                config["Healthcheck"].is_null(),
                "{image} is one-shot: no health check"
            ),
        }
        // FROM scratch: one layer, the binary.
        assert_eq!(
            v["RootFS"]["Layers"].as_array().unwrap().len(),
            1,
            "{image} layers"
        );
        ids.push(v["Id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        docker::inspect(&images.restore_job).unwrap()["Config"]["Cmd"],
        json!(["init"])
    );

    if !images::skip_build() {
        images::run_build_script().expect("a second build");
        for (image, id) in images.all().iter().zip(&ids) {
            assert_eq!(
                &docker::inspect(image).unwrap()["Id"].as_str().unwrap(),
                id,
                "{image} changed on a rebuild"
            );
        }
    }
}

/// `compose up` with the demo override: the init job exits 0 (no request), atocore
/// (the stand-in) becomes healthy on its published loopback port and keeps memories;
/// the static binaries resolve compose service names; `stop` is clean.
#[test]
fn demo_stack_comes_up_and_serves_memories() {
    let Some(engine) = docker::engine_or_skip("demo_stack_comes_up_and_serves_memories") else {
        return;
    };
    let images = images::ensure(&engine);
    let stack = Stack::new(&engine, &images);
    stack.up(&[]);

    let init = container_state(&stack.restore_container).expect("the restore-job init container");
    assert_eq!(
        (init.status.as_str(), init.exit_code),
        ("exited", 0),
        "init job"
    );
    let health = stack.wait_healthy();
    assert_eq!(health["service"], "atocore-standin");
    let image_sha = docker::inspect(&images.standin).unwrap()["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| {
            e.as_str()
                .and_then(|e| e.strip_prefix("ATOCORE_BUILD_SHA="))
                .map(str::to_owned)
        })
        .unwrap();
    assert_eq!(health["build_sha"], image_sha.as_str());

    let (status, created) =
        http::post(&stack.url("/memory"), &memory("hello from e2e", "e2e")).unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(contents(&stack, "e2e"), ["hello from e2e"]);
    assert_eq!(
        http::get(&stack.url("/projects")).unwrap().1,
        json!({"projects": []})
    );

    // Published on loopback only.
    let ports =
        &docker::inspect(&stack.atocore_container).unwrap()["NetworkSettings"]["Ports"]["8100/tcp"];
    assert_eq!(ports[0]["HostIp"], "127.0.0.1");
    let sidecar_ports = &docker::inspect(&stack.sidecar_container).unwrap()["HostConfig"]["PortBindings"]
        ["8101/tcp"];
    assert_eq!(sidecar_ports[0]["HostIp"], "127.0.0.1");

    // data/chroma is its own bind mount (a mount point, as in the real deployment), and
    // only the sidecar has the Docker socket.
    for container in [
        &stack.atocore_container,
        &stack.restore_container,
        &stack.sidecar_container,
    ] {
        let mounts = docker::inspect(container).unwrap()["Mounts"].clone();
        let destinations: Vec<&str> = mounts
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["Destination"].as_str())
            .collect();
        assert!(
            destinations.contains(&"/srv/storage/atocore/data/chroma"),
            "{container}: {destinations:?}"
        );
        assert_eq!(
            destinations.contains(&"/var/run/docker.sock"),
            container == &stack.sidecar_container,
            "{container}"
        );
    }

    // A real WAL database on the host, written by the stand-in's non-root user.
    let db = stack.root.join("data/db/atocore.db");
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), 10001);
    assert!(stack.root.join("data/db/atocore.db-wal").exists());
    assert!(stack.root.join("data/chroma/chroma.sqlite3").is_file());

    // A static scratch binary resolves a compose service name (the sidecar's drill
    // reaches atocore as http://atocore:8100).
    let probe = stack.compose(
        &[],
        &[
            "run",
            "--rm",
            "-T",
            "--no-deps",
            "atocore",
            "healthcheck",
            "--url",
            "http://atocore:8100/health",
        ],
    );
    assert!(
        probe.status.success(),
        "service-name lookup from a scratch image: {}",
        docker::describe(&probe)
    );

    // docker stop (SIGTERM): clean and quick; the database is closed (WAL checkpointed).
    let started = Instant::now();
    // (The sidecar's WAL streaming keeps the database open: stop it too, as the
    // runbook's manual route does, so the database is closed for real.)
    stack.compose_ok(&[], &["stop", "-t", "20", "atocore", "sidecar"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
    let stopped = container_state(&stack.atocore_container).unwrap();
    assert_eq!((stopped.status.as_str(), stopped.exit_code), ("exited", 0));
    assert!(!stack.root.join("data/db/atocore.db-wal").exists());

    // `up` again runs the init job again (nothing to do) and brings atocore back.
    stack.up(&[]);
    stack.wait_healthy();
    assert_eq!(contents(&stack, "e2e"), ["hello from e2e"]);
}

/// The manual route of the runbook: backup with the one-shot job, mutate, stop atocore,
/// `--profile restore run --rm restore-job restore <STAMP> --confirm-service-stopped`,
/// start atocore: the mutation is gone (database and chroma), and atocore can write.
#[test]
fn manual_restore_route_reverts_a_mutation() {
    let Some(engine) = docker::engine_or_skip("manual_restore_route_reverts_a_mutation") else {
        return;
    };
    let images = images::ensure(&engine);
    let stack = Stack::new(&engine, &images);
    stack.up(&[]);
    let before = stack.wait_healthy();
    assert_eq!(
        http::post(&stack.url("/memory"), &memory("kept", "manual"))
            .unwrap()
            .0,
        201
    );

    let backup = stack.restore_job(false, &["backup", "--include-chroma"]);
    assert_eq!(backup.code, 0, "backup: {backup:?}");
    let stamp = backup.json["stamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no stamp in {backup:?}"))
        .to_owned();
    let listed = stack.restore_job(false, &["list"]);
    assert_eq!(listed.code, 0, "list: {listed:?}");
    assert!(
        listed.json["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["stamp"] == stamp.as_str())
    );

    // The mutation: a memory (database) and its embedding (chroma files).
    assert_eq!(
        http::post(&stack.url("/memory"), &memory("MUTATION", "manual"))
            .unwrap()
            .0,
        201
    );
    assert_eq!(contents(&stack, "manual"), ["kept", "MUTATION"]);
    let chroma_inode = std::fs::metadata(stack.root.join("data/chroma"))
        .unwrap()
        .ino();

    // Refused while atocore runs (its database is open): exit 2, nothing changed.
    let refused = stack.restore_job(true, &["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(refused.code, 2, "restore while running: {refused:?}");
    assert_eq!(contents(&stack, "manual"), ["kept", "MUTATION"]);

    stack.compose_ok(&[], &["stop", "atocore", "sidecar"]);
    let restored = stack.restore_job(true, &["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(restored.code, 0, "restore: {restored:?}");
    assert_eq!(restored.json["stamp"], stamp.as_str());
    assert_eq!(restored.json["restored_integrity_ok"], true);
    assert_eq!(restored.json["db_restored"], true);
    assert_eq!(restored.json["chroma_restored"], true);
    assert!(
        restored.json["pre_restore_snapshot"].is_string(),
        "{restored:?}"
    );

    // Read straight from the host file (immutable: no lock, no -shm left behind): the
    // restored database holds the backed-up rows only.
    let uri = format!(
        "file:{}?immutable=1",
        stack.root.join("data/db/atocore.db").display()
    );
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = rusqlite::Connection::open_with_flags(&uri, flags).unwrap();
    let rows: Vec<String> = conn
        .prepare("SELECT content FROM memories WHERE project = 'manual' ORDER BY created_at")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, ["kept"]);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    assert!(
        !stack.root.join("data/db/atocore.db-wal").exists(),
        "no stale WAL beside the restored database"
    );

    // The chroma mount point kept its inode; the database its owner.
    assert_eq!(
        std::fs::metadata(stack.root.join("data/chroma"))
            .unwrap()
            .ino(),
        chroma_inode
    );
    assert_eq!(
        std::fs::metadata(stack.root.join("data/db/atocore.db"))
            .unwrap()
            .uid(),
        10001
    );

    stack.up(&["atocore"]);
    let after = stack.wait_healthy();
    assert_eq!(after["build_sha"], before["build_sha"]);
    assert_eq!(contents(&stack, "manual"), ["kept"]);
    let stats = http::get(&stack.url("/stats")).unwrap().1;
    assert_eq!(stats["embeddings"], 1, "chroma restored too: {stats}");
    // The restored database is writable by the service again.
    assert_eq!(
        http::post(&stack.url("/memory"), &memory("after restore", "manual"))
            .unwrap()
            .0,
        201
    );
    wait_for("the new memory", Duration::from_secs(5), |_| {
        (contents(&stack, "manual") == ["kept", "after restore"]).then_some(())
    });
}

/// The init job on `up`: a pending restore request (as a sidecar that died mid-restore
/// leaves it) is performed before atocore starts; a request that fails keeps atocore
/// down (`service_completed_successfully`) and the next `up` starts it unchanged.
#[test]
fn init_job_performs_a_pending_request_before_atocore_starts() {
    let Some(engine) =
        docker::engine_or_skip("init_job_performs_a_pending_request_before_atocore_starts")
    else {
        return;
    };
    let images = images::ensure(&engine);
    let stack = Stack::new(&engine, &images);
    stack.up(&[]);
    stack.wait_healthy();
    assert_eq!(
        http::post(&stack.url("/memory"), &memory("kept", "init"))
            .unwrap()
            .0,
        201
    );
    let backup = stack.restore_job(false, &["backup"]);
    assert_eq!(backup.code, 0, "backup: {backup:?}");
    let stamp = backup.json["stamp"].as_str().unwrap().to_owned();
    assert_eq!(
        http::post(&stack.url("/memory"), &memory("MUTATION", "init"))
            .unwrap()
            .0,
        201
    );
    stack.compose_ok(&[], &["stop", "atocore", "sidecar"]);

    let restore_dir = stack.root.join("backups/restore");
    std::fs::create_dir_all(&restore_dir).unwrap();
    let request = |id: &str, stamp: &str| {
        let body = json!({"request_id": id, "stamp": stamp, "include_chroma": null, "pre_snapshot": true,
                          "requested_at": "2026-01-01T00:00:00Z"});
        std::fs::write(restore_dir.join("request.json"), body.to_string()).unwrap();
    };
    let result = || -> Value {
        serde_json::from_slice(&std::fs::read(restore_dir.join("result.json")).unwrap()).unwrap()
    };

    // A request that cannot be performed: the init job fails, `up` fails, atocore stays down.
    request("e2e-bad", "20000101T000000Z");
    let up = stack.compose(&[], &["up", "-d"]);
    assert!(
        !up.status.success(),
        "up must fail when the init job fails: {}",
        docker::describe(&up)
    );
    let init = container_state(&stack.restore_container).unwrap();
    assert_ne!(init.exit_code, 0, "{init:?}");
    assert_eq!(
        container_state(&stack.atocore_container).unwrap().status,
        "exited"
    );
    assert_eq!(result()["request_id"], "e2e-bad");
    assert_eq!(result()["ok"], false);
    assert!(
        !restore_dir.join("request.json").exists(),
        "a failed request is consumed"
    );

    // A good request: performed on `up`, then atocore starts on the restored data.
    request("e2e-good", &stamp);
    stack.up(&[]);
    assert_eq!(
        container_state(&stack.restore_container).unwrap().exit_code,
        0
    );
    assert_eq!(result()["request_id"], "e2e-good");
    assert_eq!(result()["ok"], true);
    assert_eq!(result()["restored_integrity_ok"], true);
    assert!(!restore_dir.join("request.json").exists());
    stack.wait_healthy();
    assert_eq!(contents(&stack, "init"), ["kept"]);
}

/// The sidecar in its scratch image: healthy through its own probe, reaches Docker through
/// the socket, requires the token, and takes a backup with chroma (pausing atocore for the
/// copy and unpausing it) that the restore-job sees on the shared backups volume.
#[test]
fn sidecar_takes_a_chroma_backup_through_the_socket() {
    let Some(engine) = docker::engine_or_skip("sidecar_takes_a_chroma_backup_through_the_socket")
    else {
        return;
    };
    let images = images::ensure(&engine);
    let stack = Stack::new(&engine, &images);
    stack.up(&[]);
    stack.wait_healthy();
    stack.wait_sidecar_healthy();
    assert_eq!(
        http::post(&stack.url("/memory"), &memory("in the backup", "sidecar"))
            .unwrap()
            .0,
        201
    );

    let (status, health) = http::call("GET", &stack.sidecar_url("/health"), None, None).unwrap();
    assert!(health.is_object(), "sidecar /health ({status}): {health}");

    // No token, wrong token: refused, nothing taken.
    let (status, _) = http::call(
        "POST",
        &stack.sidecar_url("/admin/backup"),
        None,
        Some(&json!({})),
    )
    .unwrap();
    assert_eq!(status, 401);
    let (status, _) = http::call(
        "GET",
        &stack.sidecar_url("/admin/backup"),
        Some("Bearer wrong"),
        None,
    )
    .unwrap();
    assert_eq!(status, 401);
    let bearer = stack.bearer();
    let (status, _) = http::call(
        "GET",
        &stack.sidecar_url("/admin/backup/20000101T000000Z/validate"),
        Some(&bearer),
        None,
    )
    .unwrap();
    assert_eq!(status, 404);
    let (status, listed) = http::call(
        "GET",
        &stack.sidecar_url("/admin/backup"),
        Some(&bearer),
        None,
    )
    .unwrap();
    assert_eq!(
        (status, listed["backups"].clone()),
        (200, json!([])),
        "{listed}"
    );

    let (status, meta) = http::call(
        "POST",
        &stack.sidecar_url("/admin/backup"),
        Some(&bearer),
        Some(&json!({"include_chroma": true})),
    )
    .unwrap();
    assert_eq!(status, 200, "{meta}");
    let stamp = meta["stamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no stamp: {meta}"))
        .to_owned();
    assert_eq!(meta["include_chroma"], true);
    assert_eq!(
        meta["chroma_quiesced"], true,
        "atocore paused for the chroma copy: {meta}"
    );

    // atocore is running again (unpaused) and the snapshot is valid for the restore-job.
    assert_eq!(
        container_state(&stack.atocore_container).unwrap().status,
        "running"
    );
    assert_eq!(contents(&stack, "sidecar"), ["in the backup"]);
    let validated = stack.restore_job(false, &["validate", &stamp]);
    assert_eq!(
        (validated.code, validated.json["valid"].clone()),
        (0, json!(true)),
        "{validated:?}"
    );
}
