//! Against the real Docker engine: atocore is paused for the chroma copy and unpaused
//! on every path. A throwaway container (a static binary imported as a scratch image,
//! nothing pulled) stands in for atocore; it and its image are removed even when the
//! test fails. Without an engine these tests skip with a note, except under CI=true,
//! where they fail.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use atocore_restore_job::Quiesce;
use atocore_sidecar::docker::{Docker, Target};
use atocore_sidecar::quiesce::{DockerQuiesce, PauseFlag};
use tempfile::TempDir;

use crate::util::{Sidecar, snapshot_entries, stamps};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI")
}

/// Whether an engine answers; panics under CI=true when it does not.
pub fn engine_available() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no Docker engine answers: the Docker tests must run in CI");
        }
        eprintln!("note: no Docker engine answers; skipping this Docker test");
    }
    ok
}

/// A running throwaway container from a scratch image with one static binary that
/// sleeps until SIGTERM.
pub struct Throwaway {
    pub name: String,
    image: String,
    _dir: TempDir,
}

impl Throwaway {
    pub fn start(label: &str) -> Throwaway {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("atocore-sidecar-test-{}-{n}-{label}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let t = Throwaway {
            name: prefix.clone(),
            image: format!("{prefix}:local"),
            _dir: dir,
        };
        let d = t._dir.path();
        std::fs::write(
            d.join("sleeper.c"),
            "#include <signal.h>\n#include <unistd.h>\nstatic void bye(int s){(void)s;_exit(0);}\nint main(void){signal(SIGTERM,bye);signal(SIGINT,bye);for(;;)pause();}\n",
        )
        .unwrap();
        let cc = Command::new("cc")
            .args(["-static", "-Os", "-o"])
            .arg(d.join("sleeper"))
            .arg(d.join("sleeper.c"))
            .output()
            .unwrap();
        assert!(
            cc.status.success(),
            "cc -static: {}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let tar = Command::new("tar")
            .arg("-C")
            .arg(d)
            .args(["-cf"])
            .arg(d.join("rootfs.tar"))
            .arg("sleeper")
            .output()
            .unwrap();
        assert!(tar.status.success());
        let tarball = d.join("rootfs.tar");
        let import = docker(&[
            "import",
            "--change",
            "ENTRYPOINT [\"/sleeper\"]",
            tarball.to_str().unwrap(),
            &t.image,
        ]);
        assert!(
            import.status.success(),
            "{}",
            String::from_utf8_lossy(&import.stderr)
        );
        let run = docker(&["run", "-d", "--name", &t.name, &t.image]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        t
    }

    pub fn state(&self) -> (bool, bool) {
        let o = docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.Paused}}",
            &self.name,
        ]);
        let s = String::from_utf8_lossy(&o.stdout);
        let mut it = s.split_whitespace();
        (it.next() == Some("true"), it.next() == Some("true"))
    }

    /// pause/unpause actions the engine recorded for this container since `since`.
    pub fn actions(&self, since: &str) -> Vec<String> {
        let until = chrono::Utc::now().timestamp() + 1;
        let o = docker(&[
            "events",
            "--since",
            since,
            "--until",
            &until.to_string(),
            "--filter",
            &format!("container={}", self.name),
            "--format",
            "{{.Action}}",
        ]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|a| *a == "pause" || *a == "unpause")
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

#[test]
fn quiesce_pauses_and_unpauses_a_real_container() {
    if !engine_available() {
        return;
    }
    let c = Throwaway::start("q");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dk = Arc::new(Docker::new(
        &docker_host(),
        Duration::from_secs(30),
        &c.name,
        "atocore-sidecar-test-none",
    ));
    let flag = Arc::new(PauseFlag::default());
    let status = rt.block_on(dk.inspect(Target::Atocore)).unwrap();
    assert!(status.running && !status.paused, "{status:?}");

    let mut q = DockerQuiesce::new(Arc::clone(&dk), Arc::clone(&flag), rt.handle().clone());
    assert!(q.pause());
    assert_eq!(c.state(), (true, true));
    assert!(flag.is_set());
    q.resume();
    assert_eq!(c.state(), (true, false));
    assert!(!flag.is_set());

    // A panic between pause and resume: the guard unpauses.
    let mut q = DockerQuiesce::new(Arc::clone(&dk), Arc::clone(&flag), rt.handle().clone());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        assert!(q.pause());
        panic!("copy blew up");
    }));
    assert!(r.is_err());
    assert_eq!(c.state(), (true, false), "unpaused by the guard");

    // Paused by someone else: quiet, and left as found.
    assert!(docker(&["pause", &c.name]).status.success());
    let mut q = DockerQuiesce::new(Arc::clone(&dk), Arc::clone(&flag), rt.handle().clone());
    assert!(q.pause());
    q.resume();
    drop(q);
    assert_eq!(c.state(), (true, true));
    assert!(docker(&["unpause", &c.name]).status.success());

    // No such container: not quiesced.
    let ghost = Arc::new(Docker::new(
        &docker_host(),
        Duration::from_secs(30),
        "atocore-sidecar-test-ghost",
        "x-none",
    ));
    let mut q = DockerQuiesce::new(ghost, Arc::clone(&flag), rt.handle().clone());
    assert!(!q.pause());

    // The shutdown path unpauses what the flag says we hold.
    let mut q = DockerQuiesce::new(Arc::clone(&dk), Arc::clone(&flag), rt.handle().clone());
    assert!(q.pause());
    std::mem::forget(q); // as if the backup thread were abandoned
    assert_eq!(c.state(), (true, true));
    rt.block_on(flag.unpause_if_paused(&dk));
    assert_eq!(c.state(), (true, false));
}

fn sidecar_for(c: &Throwaway) -> Sidecar {
    let name = c.name.clone();
    Sidecar::start_with(move |s| {
        s.set("--docker-host", &docker_host())
            .set("--container", &name)
            .set("--restore-container", &format!("{name}-restore"));
    })
}

#[test]
fn a_chroma_backup_pauses_atocore_for_the_copy_and_unpauses_it() {
    if !engine_available() {
        return;
    }
    let c = Throwaway::start("b");
    let sc = sidecar_for(&c);
    let since = (chrono::Utc::now().timestamp() - 1).to_string();
    let h = sc.get("/health").json();
    assert_eq!(h["docker"]["reachable"], true, "{h}");
    let r = sc.post("/admin/backup", r#"{"include_chroma": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    assert_eq!(m["chroma_quiesced"], true, "{m}");
    assert_eq!(c.state(), (true, false));
    assert_eq!(c.actions(&since), vec!["pause", "unpause"]);
    // Without chroma nothing is paused.
    let since = chrono::Utc::now().timestamp().to_string();
    assert_eq!(sc.post("/admin/backup", "{}").status, 200);
    assert!(c.actions(&since).is_empty());
    assert!(
        sc.get("/metrics")
            .body
            .contains("atocore_sidecar_docker_up 1\n")
    );
}

#[test]
fn atocore_is_unpaused_even_when_the_chroma_copy_fails() {
    if !engine_available() {
        return;
    }
    let c = Throwaway::start("f");
    let sc = sidecar_for(&c);
    // A backups disk with room for the database but not for a 32 MiB chroma file: the
    // chroma copy fails (ENOSPC) after the pause. (Odd chroma entries no longer fail
    // a backup: they are left out with a warning.)
    std::fs::write(sc.paths.chroma.join("big.bin"), vec![0xABu8; 32 << 20]).unwrap();
    let db_bytes = std::fs::metadata(&sc.paths.db).unwrap().len();
    let _small = SmallTmpfs::mount(&sc.paths.backup_dir, 2 * db_bytes + (1 << 20));
    let since = (chrono::Utc::now().timestamp() - 1).to_string();
    let r = sc.post("/admin/backup", r#"{"include_chroma": true}"#);
    r.assert_error(500, "io_error");
    assert_eq!(c.state(), (true, false), "atocore left paused");
    assert_eq!(c.actions(&since), vec!["pause", "unpause"]);
    assert!(stamps(&sc.paths).is_empty());
    assert!(
        snapshot_entries(&sc.paths)
            .iter()
            .all(|e| !e.ends_with(".partial")),
        "{:?}",
        snapshot_entries(&sc.paths)
    );
    assert!(!sc.state.paused.is_set());
}

/// A tmpfs of `bytes` mounted over a folder, lazily unmounted on drop.
struct SmallTmpfs(std::path::PathBuf);

impl SmallTmpfs {
    fn mount(at: &std::path::Path, bytes: u64) -> SmallTmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs on {} failed", at.display());
        SmallTmpfs(at.to_path_buf())
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
