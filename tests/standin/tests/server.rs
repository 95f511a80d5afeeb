//! The stand-in's own tests: the real server in-process on 127.0.0.1:0, and the real
//! binary for signals and the healthcheck subcommand.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atocore_standin::{Config, Service, server};
use serde_json::{Value, json};

/// A stand-in served on a background thread; shut down (and joined) on drop.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), atocore_standin::StandinError>>>,
}

impl Running {
    fn start(root: &Path) -> Self {
        let mut config = Config::for_root(root);
        config.build_sha = "test-sha".to_owned();
        config.heartbeat = Duration::from_millis(20);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let service = Service::open(config)?;
                server::run(listener, service, async {
                    let _ = stop_rx.await;
                })
                .await
            })
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn stop(&mut self) -> Result<(), atocore_standin::StandinError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

fn get(url: &str) -> (u16, Value) {
    let response = agent().get(url).call().unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().read_json().unwrap())
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let response = agent().post(url).send_json(body).unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().read_json().unwrap())
}

#[test]
fn memories_round_trip_and_health_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut standin = Running::start(dir.path());

    let (status, health) = get(&standin.url("/health"));
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "atocore-standin");
    assert_eq!(health["build_sha"], "test-sha");
    assert_eq!(health["memories"], 0);

    let memory = json!({"memory_type": "episodic", "content": "DRILL-MARKER-1", "project": "drill", "confidence": 1.0});
    let (status, created) = post(&standin.url("/memory"), &memory);
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, again) = post(&standin.url("/memory"), &memory);
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));

    let (status, listed) = get(&standin.url("/memory?project=drill"));
    assert_eq!(status, 200);
    let memories = listed["memories"].as_array().unwrap();
    assert_eq!(memories.len(), 1);
    assert_eq!(memories[0]["id"], id.as_str());
    assert_eq!(memories[0]["content"], "DRILL-MARKER-1");
    assert_eq!(memories[0]["confidence"], 1.0);
    assert!(memories[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        get(&standin.url("/memory?project=other")).1["memories"],
        json!([])
    );
    assert_eq!(get(&standin.url("/health")).1["memories"], 1);

    // Chroma-like files exist and hold the embedding.
    let chroma = dir.path().join("data/chroma");
    assert!(chroma.join("chroma.sqlite3").is_file());
    let segment = std::fs::read_dir(&chroma)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a segment folder");
    assert!(
        std::fs::metadata(segment.join("data_level0.bin"))
            .unwrap()
            .len()
            > 0
    );
    assert_eq!(get(&standin.url("/stats")).1["embeddings"], 1);

    // The database is a live WAL database with background writes.
    assert!(dir.path().join("data/db/atocore.db-wal").exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&standin.url("/stats")).1["heartbeats"]
        .as_i64()
        .unwrap()
        < 3
    {
        assert!(Instant::now() < deadline, "no heartbeat writes");
        std::thread::sleep(Duration::from_millis(20));
    }

    standin.stop().unwrap();
    // A clean close checkpoints and removes the WAL.
    assert!(!dir.path().join("data/db/atocore.db-wal").exists());
    let conn = rusqlite::Connection::open(dir.path().join("data/db/atocore.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn interactions_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let standin = Running::start(dir.path());
    let good = json!({"prompt": "p", "response": "r", "client": "claude-code", "session_id": "s",
                      "project": null, "reinforce": false});
    let (status, body) = post(&standin.url("/interactions"), &good);
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].is_string());

    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("session_id");
    let (status, body) = post(&standin.url("/interactions"), &missing);
    assert_eq!(status, 422);
    assert_eq!(body["error"], "invalid_body");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "session_id"]));

    let mut mistyped = good.clone();
    mistyped["reinforce"] = json!("false");
    assert_eq!(post(&standin.url("/interactions"), &mistyped).0, 422);

    assert_eq!(get(&standin.url("/stats")).1["interactions"], 1);
    assert_eq!(get(&standin.url("/nope")).0, 404);
    let (status, _) = post(&standin.url("/health"), &json!({}));
    assert_eq!(status, 405);
}

#[test]
fn projects_come_from_the_registry_file() {
    let dir = tempfile::tempdir().unwrap();
    let standin = Running::start(dir.path());
    assert_eq!(
        get(&standin.url("/projects")),
        (200, json!({"projects": []}))
    );
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/project-registry.json"),
        r#"{"projects": [{"name": "atocore", "path": "/srv/atocore"}]}"#,
    )
    .unwrap();
    assert_eq!(
        get(&standin.url("/projects")).1["projects"][0]["name"],
        "atocore"
    );
}

#[test]
fn the_binary_answers_its_healthcheck_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let bin = env!("CARGO_BIN_EXE_atocore-standin");
    let mut child = Command::new(bin)
        .env_clear()
        .env("ATOCORE_STORAGE_ROOT", dir.path())
        .env("ATOCORE_LISTEN", &listen)
        .env("ATOCORE_BUILD_SHA", "bin-sha")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthcheck = || {
        Command::new(bin)
            .args(["healthcheck", "--timeout-ms", "1000"])
            .env_clear()
            .env("ATOCORE_LISTEN", &listen)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let output = loop {
        let output = healthcheck();
        if output.status.success() || Instant::now() > deadline {
            break output;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["build_sha"], "bin-sha");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the stand-in did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    assert!(!dir.path().join("data/db/atocore.db-wal").exists());
    // Unhealthy once it is gone.
    assert_eq!(healthcheck().status.code(), Some(1));
}
