//! One compose project under test: the real `compose/docker-compose.yml` with the demo
//! override (the stand-in as atocore), in a temp storage root, every name unique.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::docker::{self, Engine};
use crate::http;
use crate::images::Images;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The result of a one-shot `restore-job` run.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub code: i32,
    /// stdout parsed as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

/// A compose project, torn down (`down -v --remove-orphans`) with its folder on drop.
#[derive(Debug)]
pub struct Stack {
    pub project: String,
    /// Host storage root (bind-mounted at /srv/storage/atocore in the containers).
    pub root: PathBuf,
    pub atocore_port: u16,
    pub sidecar_port: u16,
    pub token: String,
    pub atocore_container: String,
    pub restore_container: String,
    pub sidecar_container: String,
    pub images: Images,
    env_file: PathBuf,
    compose: Vec<String>,
    files: Vec<PathBuf>,
    dir: Option<tempfile::TempDir>,
}

/// A free TCP port on 127.0.0.1 (free when asked; compose binds it right after), never
/// the same twice in one test run.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

impl Stack {
    /// A new project (nothing started yet) with unique names, ports and storage root.
    pub fn new(engine: &Engine, images: &Images) -> Self {
        Self::with_override(engine, images, None)
    }

    /// Like [`Stack::new`], plus a test's own compose override (YAML text), applied last.
    pub fn with_override(engine: &Engine, images: &Images, extra: Option<&str>) -> Self {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(sweep_stale);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let project = format!("atoe2e-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{project}-"))
            .tempdir()
            .expect("a temp dir");
        let root = dir.path().join("storage");
        std::fs::create_dir_all(&root).expect("create the storage root");
        let compose_dir = crate::repo_root().join("compose");
        let mut stack = Self {
            atocore_container: format!("{project}-atocore"),
            restore_container: format!("{project}-restore-job"),
            sidecar_container: format!("{project}-sidecar"),
            atocore_port: free_port(),
            sidecar_port: free_port(),
            token: format!("e2e-token-{project}"),
            env_file: dir.path().join("e2e.env"),
            compose: engine.compose.clone(),
            files: vec![
                compose_dir.join("docker-compose.yml"),
                compose_dir.join("docker-compose.demo.yml"),
                // Test-only: the sidecar's schedule off (no catch-up snapshot pausing
                // atocore in the middle of a test).
                crate::repo_root().join("tests/e2e/compose/e2e.yml"),
            ],
            images: images.clone(),
            root,
            project,
            dir: Some(dir),
        };
        std::fs::write(&stack.env_file, stack.env_text()).expect("write the env file");
        if let Some(yaml) = extra {
            let path = stack.dir().join("override.yml");
            std::fs::write(&path, yaml).expect("write the test's compose override");
            stack.files.push(path);
        }
        stack
    }

    fn env_text(&self) -> String {
        let vars = [
            ("ATOCORE_HOST_ROOT", self.root.display().to_string()),
            ("ATOCORE_CONTAINER", self.atocore_container.clone()),
            ("ATOCORE_RESTORE_CONTAINER", self.restore_container.clone()),
            ("ATOCORE_SIDECAR_CONTAINER", self.sidecar_container.clone()),
            ("ATOCORE_BIND", "127.0.0.1".to_owned()),
            ("ATOCORE_PORT", self.atocore_port.to_string()),
            ("ATOCORE_SIDECAR_PORT", self.sidecar_port.to_string()),
            ("ATOCORE_SIDECAR_TOKEN", self.token.clone()),
            ("ATOCORE_IMAGE", self.images.standin.clone()),
            ("ATOCORE_STANDIN_IMAGE", self.images.standin.clone()),
            ("ATOCORE_RESTORE_JOB_IMAGE", self.images.restore_job.clone()),
            ("ATOCORE_SIDECAR_IMAGE", self.images.sidecar.clone()),
            ("ATOCORE_LOG", "info".to_owned()),
        ];
        vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// The folder holding the storage root and the env file.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the stack's folder").path()
    }

    /// A compose command for this project, hermetic: the caller's ATOCORE_* and COMPOSE_*
    /// variables are removed so only the env file counts.
    pub fn command(&self, global: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..]);
        for (key, _) in std::env::vars() {
            if key.starts_with("ATOCORE_") || key.starts_with("COMPOSE_") || key == "DOCKER_SOCKET"
            {
                cmd.env_remove(key);
            }
        }
        cmd.arg("--env-file")
            .arg(&self.env_file)
            .args(["-p", &self.project]);
        for file in &self.files {
            cmd.arg("-f").arg(file);
        }
        cmd.args(global).args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs compose with `args` (global options such as `--profile` go in `global`).
    pub fn compose(&self, global: &[&str], args: &[&str]) -> Output {
        self.command(global, args)
            .output()
            .expect("cannot run compose")
    }

    /// Runs compose and panics with its output unless it exits 0.
    pub fn compose_ok(&self, global: &[&str], args: &[&str]) -> Output {
        let out = self.compose(global, args);
        assert!(
            out.status.success(),
            "compose {global:?} {args:?} failed: {}",
            docker::describe(&out)
        );
        out
    }

    /// `up -d` (all services, or the ones named).
    pub fn up(&self, services: &[&str]) {
        let mut args = vec!["up", "-d"];
        args.extend_from_slice(services);
        self.compose_ok(&[], &args);
    }

    /// A URL on atocore's published port.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.atocore_port)
    }

    /// A URL on the sidecar's published port.
    pub fn sidecar_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.sidecar_port)
    }

    /// Waits until Docker reports atocore healthy and `/health` answers ok; returns it.
    pub fn wait_healthy(&self) -> Value {
        http::wait_for("atocore healthy", Duration::from_secs(90), |note| {
            let state = docker::container_state(&self.atocore_container);
            *note = format!("{state:?}");
            let state = state?;
            if state.status == "exited" || state.status == "dead" {
                panic!("atocore exited ({state:?}):\n{}", self.logs());
            }
            if state.health.as_deref() != Some("healthy") {
                return None;
            }
            match http::get(&self.url("/health")) {
                Ok((200, body)) if body["status"] == "ok" => Some(body),
                other => {
                    *note = format!("{other:?}");
                    None
                }
            }
        })
    }

    /// Waits until Docker reports the sidecar healthy (its own `healthcheck` probe).
    pub fn wait_sidecar_healthy(&self) {
        http::wait_for("sidecar healthy", Duration::from_secs(90), |note| {
            let state = docker::container_state(&self.sidecar_container);
            *note = format!("{state:?}");
            (state?.health.as_deref() == Some("healthy")).then_some(())
        });
    }

    /// The sidecar's bearer token header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Runs the restore-job once (`run --rm -T restore-job <args>`), with
    /// `--profile restore` when `restore_profile`.
    pub fn restore_job(&self, restore_profile: bool, args: &[&str]) -> JobRun {
        let global: &[&str] = if restore_profile {
            &["--profile", "restore"]
        } else {
            &[]
        };
        let mut run = vec!["run", "--rm", "-T", "restore-job"];
        run.extend_from_slice(args);
        let out = self.compose(global, &run);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        JobRun {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The project's logs (for failure messages).
    pub fn logs(&self) -> String {
        let out = self.compose(&[], &["logs", "--no-color", "--tail", "200"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Tears the project down; also removes anything left with its label.
    pub fn down(&self) {
        let out = self.compose(&[], &["down", "-v", "--remove-orphans", "-t", "5"]);
        if !out.status.success() {
            eprintln!(
                "e2e: compose down of {} failed: {}",
                self.project,
                docker::describe(&out)
            );
        }
        let label = format!("label=com.docker.compose.project={}", self.project);
        let left = docker::docker(&["ps", "-aq", "--filter", &label]);
        let ids: Vec<String> = String::from_utf8_lossy(&left.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            docker::docker(&args);
        }
        for name in [
            &self.atocore_container,
            &self.restore_container,
            &self.sidecar_container,
        ] {
            if docker::inspect(name).is_some() {
                docker::docker(&["rm", "-f", "-v", name]);
            }
        }
        let network = format!("{}_default", self.project);
        if docker::inspect(&network).is_some() {
            docker::docker(&["network", "rm", &network]);
        }
    }
}

/// Removes what earlier test runs left when they were killed before their guards ran:
/// containers and networks of `atoe2e-<pid>-<n>` projects whose process is gone.
pub fn sweep_stale() {
    let out = docker::docker(&[
        "ps",
        "-a",
        "--filter",
        "label=com.docker.compose.project",
        "--format",
        "{{.ID}} {{.Label \"com.docker.compose.project\"}}",
    ]);
    let dead = |project: &str| -> bool {
        let Some(rest) = project.strip_prefix("atoe2e-") else {
            return false;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        !pid.is_empty()
            && pid != std::process::id().to_string()
            && !Path::new("/proc").join(pid).exists()
    };
    let mut projects = std::collections::BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((id, project)) = line.split_once(' ')
            && dead(project)
        {
            docker::docker(&["rm", "-f", "-v", id]);
            projects.insert(project.to_owned());
        }
    }
    let networks = docker::docker(&["network", "ls", "--format", "{{.Name}}"]);
    for name in String::from_utf8_lossy(&networks.stdout).lines() {
        if let Some(project) = name.strip_suffix("_default")
            && dead(project)
        {
            docker::docker(&["network", "rm", name]);
            projects.insert(project.to_owned());
        }
    }
    if !projects.is_empty() {
        eprintln!("e2e: removed leftovers of killed test runs: {projects:?}");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e: {} failed; its logs:\n{}", self.project, self.logs());
        }
        self.down();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!(
                    "e2e: cannot remove {} ({e}); files written by containers may need root",
                    path.display()
                );
            }
        }
    }
}
