//! Shared test helpers: a sample install in a temp folder, the real sidecar server
//! running in-process on 127.0.0.1:0, and a small HTTP client.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atocore_restore_job::{Paths, sample};
use atocore_sidecar::{Config, State, server};
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// The token the helpers send when a test turns auth on.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A path where no Docker socket answers.
pub const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

/// A sample install: db with `rows` memories, a registry, a small chroma tree.
pub fn sample_root(rows: u64) -> (TempDir, Paths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = sample::create(&dir.path().join("atocore"), rows, 4, 16 * 1024).unwrap();
    (dir, paths)
}

/// Settings as `--flag value` pairs; later ones replace earlier ones.
#[derive(Debug, Clone)]
pub struct Settings(Vec<(String, Option<String>)>);

impl Settings {
    /// Defaults for tests: no schedule, no Docker, atocore on a closed port.
    pub fn for_root(root: &Path) -> Settings {
        let mut s = Settings(Vec::new());
        s.set("--storage-root", root.to_str().unwrap())
            .set("--addr", "127.0.0.1:0")
            .set("--docker-host", NO_DOCKER)
            .set("--atocore-url", "http://127.0.0.1:9")
            .flag("--no-schedule");
        s
    }

    pub fn set(&mut self, flag: &str, value: &str) -> &mut Self {
        self.0.retain(|(f, _)| f != flag);
        self.0.push((flag.into(), Some(value.into())));
        self
    }

    pub fn flag(&mut self, flag: &str) -> &mut Self {
        self.0.retain(|(f, _)| f != flag);
        self.0.push((flag.into(), None));
        self
    }

    pub fn unset(&mut self, flag: &str) -> &mut Self {
        self.0.retain(|(f, _)| f != flag);
        self
    }

    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (f, val) in &self.0 {
            v.push(f.clone());
            if let Some(val) = val {
                v.push(val.clone());
            }
        }
        v
    }

    pub fn config(&self) -> Config {
        let mut args = vec!["atocore-sidecar".to_string()];
        args.extend(self.args());
        Config::parse_from(args).unwrap()
    }
}

/// The real server, in-process, on its own runtime thread.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub paths: Paths,
    pub state: Arc<State>,
    pub token: Option<String>,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
    _dir: Option<TempDir>,
}

impl Sidecar {
    /// A sidecar over a fresh small sample install.
    pub fn start() -> Sidecar {
        Sidecar::start_with(|_| {})
    }

    /// A sidecar over a fresh sample install, with settings changed by `f`.
    pub fn start_with(f: impl FnOnce(&mut Settings)) -> Sidecar {
        let (dir, paths) = sample_root(200);
        let mut s = Settings::for_root(&paths.storage_root);
        f(&mut s);
        let mut sc = Sidecar::serve(s.config());
        sc._dir = Some(dir);
        sc
    }

    /// Serve `config` (the caller keeps its folders alive).
    pub fn serve(config: Config) -> Sidecar {
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = config.paths.clone();
        let token = config.token.clone();
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
                let addr = listener.local_addr().unwrap();
                let state = State::new(config, st.clone());
                tx.send((addr, Arc::clone(&state))).unwrap();
                server::run(listener, state, st.cancelled_owned())
                    .await
                    .unwrap();
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let (addr, state) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Sidecar {
            addr,
            paths,
            state,
            token,
            stop,
            thread: Some(thread),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent()
    }

    /// GET with the configured token (if any).
    pub fn get(&self, path: &str) -> Resp {
        let mut r = Self::agent().get(&self.url(path));
        if let Some(t) = &self.token {
            r = r.header("authorization", &format!("Bearer {t}"));
        }
        Resp::from(r.call().unwrap())
    }

    /// POST a raw body with the configured token (if any).
    pub fn post(&self, path: &str, body: &str) -> Resp {
        let mut r = Self::agent().post(&self.url(path));
        if let Some(t) = &self.token {
            r = r.header("authorization", &format!("Bearer {t}"));
        }
        Resp::from(
            r.header("content-type", "application/json")
                .send(body.as_bytes())
                .unwrap(),
        )
    }

    /// Any method and headers, no token unless given.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        let req = headers.iter().fold(req, |r, (k, v)| r.header(*k, *v));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .build()
            .new_agent();
        let resp = if body.is_empty() && method != "POST" {
            agent.run(req.body(()).unwrap())
        } else {
            agent.run(req.body(body.to_string()).unwrap())
        };
        Resp::from(resp.unwrap())
    }

    /// Raw bytes over TCP; whatever comes back until the server closes (or `wait`).
    pub fn raw(&self, bytes: &[u8], wait: Duration) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Names of the published snapshot folders.
    pub fn stamps(&self) -> Vec<String> {
        stamps(&self.paths)
    }

    /// Stop the server and wait for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Published snapshot folder names, sorted.
pub fn stamps(paths: &Paths) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(paths.snapshots_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every entry of the snapshots folder, hidden ones included.
pub fn snapshot_entries(paths: &Paths) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(paths.snapshots_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl From<ureq::http::Response<ureq::Body>> for Resp {
    fn from(r: ureq::http::Response<ureq::Body>) -> Resp {
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = r.into_body().read_to_string().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Assert the contract's error shape with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Resp {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["error"], code, "{}", self.body);
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        self
    }
}

/// Poll `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Path of the built sidecar binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atocore-sidecar"))
}
