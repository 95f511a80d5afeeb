//! `offsite …`: push, fetch, list, verify and prune against a folder target and a real
//! S3 server on loopback (moto), with the real binary on real files.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use atocore_restore_job::{Paths, sample};
use rand::RngCore;
use serde_json::Value;

use crate::util::*;

const CHROMA_FILES: usize = 40;
const SEGMENT: &str = "6f1c2a4e-0000-4000-8000-sample000001";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A moto S3 server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Start moto, or `None` (with a note) when it is not installed outside CI.
    fn start() -> Option<Moto> {
        Moto::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Option<Moto> {
        let bin = std::env::var("ATOCORE_MOTO")
            .unwrap_or_else(|_| "/opt/atocore-moto/bin/moto_server".into());
        if !Path::new(&bin).exists() {
            assert!(
                !ci(),
                "CI=true but there is no moto server at {bin}; .ci/run installs it"
            );
            eprintln!("skipped: no moto server at {bin} (see .ci/run to install it)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !moto.create_bucket("atocore-test") {
            assert!(Instant::now() < deadline, "moto did not start on {port}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(moto)
    }

    /// `PUT /bucket`, unsigned (moto accepts any credentials).
    fn create_bucket(&self, bucket: &str) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let req = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.lines().next().is_some_and(|l| l.contains(" 200"))
    }

    fn env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                "ATOCORE_OFFSITE_URL".into(),
                format!("s3://atocore-test/{prefix}"),
            ),
            (
                "AWS_ENDPOINT_URL".into(),
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether Debian's `age` CLI is there (required under CI=true).
fn age_cli() -> bool {
    let ok = Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !ci(),
            "CI=true but the age CLI is missing; .ci/run installs it"
        );
        eprintln!("skipped: no `age` CLI (apt-get install age)");
    }
    ok
}

/// An install with a database of `rows` memories and 40 chroma files of random
/// bytes, an age key pair, and the settings of one target.
struct Site {
    install: Install,
    key: PathBuf,
    env: Vec<(String, String)>,
}

impl Site {
    fn new(rows: u64) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let paths = sample::create(&dir.path().join("storage"), rows, 0, 0).unwrap();
        for i in 0..CHROMA_FILES {
            write_random(
                &paths
                    .chroma
                    .join(SEGMENT)
                    .join(format!("data_level{i}.bin")),
                128 * 1024,
            );
        }
        let id = age::x25519::Identity::generate();
        let key = dir.path().join("key.txt");
        fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
        let recipient = id.to_public().to_string();
        let env = vec![
            (
                "ATOCORE_OFFSITE_URL".to_string(),
                format!("file://{}", dir.path().join("remote").display()),
            ),
            ("ATOCORE_OFFSITE_RECIPIENTS".to_string(), recipient),
        ];
        Site {
            install: Install { dir, paths },
            key,
            env,
        }
    }

    /// Point at another target (keeping the recipients).
    fn with_target(mut self, target: Vec<(String, String)>) -> Site {
        self.env.retain(|(k, _)| k == "ATOCORE_OFFSITE_RECIPIENTS");
        self.env.extend(target);
        self
    }

    /// Another, empty storage root (a new host) with the same target and key.
    fn new_host(&self) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_root(dir.path().join("elsewhere/atocore"));
        Site {
            install: Install { dir, paths },
            key: self.key.clone(),
            env: self.env.clone(),
        }
    }

    fn remote(&self) -> PathBuf {
        self.install.dir.path().join("remote")
    }

    fn paths(&self) -> &Paths {
        &self.install.paths
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend_from_slice(extra);
        let r = self.install.run_env(args, &env);
        if args.starts_with(&["offsite", "push"]) {
            self.keep_pin(&r.json);
        }
        r
    }

    /// What the operator does once a push set up the repository: keep its fingerprint
    /// in the identity file (the line the push printed), so that a fetch on a new host
    /// can tell this repository's key from a substituted one.
    fn keep_pin(&self, pushed: &Value) {
        let Some(fp) = pushed["fingerprint"].as_str() else {
            return;
        };
        let line = format!("# atocore-offsite-fingerprint: {fp}\n");
        let text = fs::read_to_string(&self.key).unwrap();
        if !text.contains(&line) {
            fs::write(&self.key, format!("{text}{line}")).unwrap();
        }
    }

    fn ok(&self, args: &[&str]) -> Value {
        let r = self.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}\n{}", r.stdout, r.stderr);
        r.json
    }

    fn backup(&self) -> String {
        let m = self.install.backup(&["--include-chroma"]);
        m["stamp"].as_str().unwrap().to_string()
    }

    fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

fn write_random(path: &Path, len: usize) {
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, buf).unwrap();
}

/// Every row of both tables, as text.
fn rows(db: &Path) -> Vec<String> {
    let c = atocore_restore_job::open_immutable(db).unwrap();
    let mut out = Vec::new();
    for table in ["memories", "interactions"] {
        let mut st = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY id"))
            .unwrap();
        let n = st.column_count();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let cols: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect();
            out.push(format!("{table}: {}", cols.join("|")));
        }
    }
    out
}

/// What the live install holds: database rows, the chroma tree (without the restore's
/// own staging folder), the registry.
fn live_state(p: &Paths) -> (Vec<String>, Tree, Vec<u8>) {
    let chroma = tree(&p.chroma)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".atocore-restore"))
        .collect();
    (rows(&p.db), chroma, fs::read(&p.registry).unwrap())
}

/// (files, bytes) below `dir`.
fn usage(dir: &Path) -> (u64, u64) {
    tree(dir)
        .values()
        .filter(|v| v.starts_with("file"))
        .fold((0, 0), |(n, b), v| {
            (
                n + 1,
                b + v.split(' ').nth(2).unwrap().parse::<u64>().unwrap(),
            )
        })
}

/// The chunk files below a folder target.
fn chunk_files(remote: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(remote.join("chunks")).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// Push, wipe the whole storage root, fetch with the identity (into the same root,
/// or into an empty one elsewhere: a new host), restore with the real binary: the
/// live tree equals the original.
fn round_trip(old: &Site, on_new_host: bool) {
    let stamp = old.backup();
    let original = live_state(old.paths());
    let original_snapshot = tree(&old.paths().snapshots_dir().join(&stamp));

    let pushed = old.ok(&["offsite", "push"]);
    assert_eq!(pushed["pushed"][0]["stamp"], stamp.as_str());
    assert!(
        pushed["pushed"][0]["chunks"].as_u64().unwrap() > 10,
        "{pushed}"
    );
    let listed = old.ok(&["offsite", "list"]);
    assert_eq!(listed["snapshots"][0]["stamp"], stamp.as_str());
    assert_eq!(listed["encrypted"], true);

    fs::remove_dir_all(old.install.root()).unwrap();
    assert!(!old.install.root().exists());
    // The same storage root on the same host, or another one elsewhere.
    let other;
    let site = if on_new_host {
        other = old.new_host();
        &other
    } else {
        old
    };

    let fetched = site.ok(&["offsite", "fetch", "latest", "--identity", site.key()]);
    assert_eq!(fetched["stamp"], stamp.as_str());
    let dir = site.paths().snapshots_dir().join(&stamp);
    assert_eq!(
        tree(&dir),
        original_snapshot,
        "the fetched snapshot differs"
    );
    let local = site.ok(&["list"]);
    assert_eq!(local["backups"][0]["stamp"], stamp.as_str());
    assert_eq!(local["backups"][0]["valid"], true);
    assert_eq!(site.ok(&["validate", &stamp])["valid"], true);

    // On a new host there is nothing to keep: the documented command skips the
    // pre-restore snapshot and leaves nothing behind.
    let restore: &[&str] = if on_new_host {
        &[
            "restore",
            &stamp,
            "--confirm-service-stopped",
            "--no-pre-snapshot",
        ]
    } else {
        &["restore", &stamp, "--confirm-service-stopped"]
    };
    let restored = site.ok(restore);
    assert_eq!(restored["restored_integrity_ok"], true, "{restored}");
    assert_eq!(restored["chroma_restored"], true);
    if on_new_host {
        assert!(!site.paths().chroma.join(".atocore-restore").exists());
    }
    let (rows_now, chroma_now, registry_now) = live_state(site.paths());
    assert!(rows_now == original.0, "database rows differ");
    assert_eq!(chroma_now, original.1, "chroma trees differ");
    assert!(registry_now == original.2, "registry differs");

    // The new host carries on with the same repository: fetch kept the repository
    // key, so the next push needs no identity and uploads only what changed.
    let next = site.backup();
    let again = site.ok(&["offsite", "push"]);
    assert_eq!(again["pushed"][0]["stamp"], next.as_str());
    assert!(
        again["pushed"][0]["chunks_uploaded"].as_u64().unwrap() <= 3,
        "{again}"
    );
    // Without that copy of the key a push is refused until given the identity once.
    fs::remove_dir_all(site.paths().backup_dir.join("offsite")).unwrap();
    site.install.add_memories(10, "after-recovery");
    site.backup();
    let r = site.run(&["offsite", "push"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "offsite_not_configured");
    assert!(r.stdout.contains("--identity"), "{}", r.stdout);
    site.ok(&["offsite", "push", "--identity", site.key()]);
    assert_eq!(
        site.ok(&["offsite", "list"])["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn folder_push_wipe_fetch_restore_gives_the_original_back() {
    round_trip(&Site::new(20_000), false);
}

#[test]
fn s3_push_wipe_fetch_restore_gives_the_original_back() {
    let Some(moto) = Moto::start() else { return };
    round_trip(&Site::new(20_000).with_target(moto.env("round-trip")), true);
}

/// A second push after 1 of 40 chroma files changed and ~1 % new rows uploads only
/// the changed chunks, the index and the reference.
fn second_push_is_small(site: &Site, remote_dir: Option<&Path>) {
    site.backup();
    let first = site.ok(&["offsite", "push"]);
    let before = remote_dir.map(usage);

    write_random(
        &site.paths().chroma.join(SEGMENT).join("data_level7.bin"),
        128 * 1024,
    );
    site.install.add_memories(300, "one-percent");
    let stamp = site.backup();
    let second = site.ok(&["offsite", "push"]);

    let f = &first["pushed"][0];
    let s = &second["pushed"][0];
    let (f_objects, f_bytes) = (
        f["objects_written"].as_u64().unwrap(),
        f["bytes_written"].as_u64().unwrap(),
    );
    let (s_objects, s_bytes) = (
        s["objects_written"].as_u64().unwrap(),
        s["bytes_written"].as_u64().unwrap(),
    );
    eprintln!(
        "first push: {f_objects} objects {f_bytes} B; second: {s_objects} objects {s_bytes} B"
    );
    assert!(
        f["chunks"].as_u64().unwrap() > CHROMA_FILES as u64,
        "{first}"
    );
    // The changed chroma file, the changed database regions, index, reference.
    assert!(
        s_objects <= 10,
        "second push wrote {s_objects} objects: {second}"
    );
    assert!(
        s_bytes * 4 < f_bytes,
        "second push wrote {s_bytes} of {f_bytes} bytes"
    );
    assert!(s["chunks_uploaded"].as_u64().unwrap() >= 2, "{second}");
    // The first push read every file; the second read only the database and the
    // changed chroma file (besides the small files held inline in the index): the
    // other 39 were known from the first push and not read again.
    let snap = site.paths().snapshots_dir().join(&stamp);
    let size = |rel: &str| fs::metadata(snap.join(rel)).unwrap().len();
    assert_eq!(f["files_unchanged"], 0, "{first}");
    assert_eq!(f["bytes_read"], f["bytes"], "{first}");
    assert_eq!(
        s["files_unchanged"].as_u64().unwrap(),
        CHROMA_FILES as u64 - 1,
        "{second}"
    );
    let chroma_big = format!("chroma/{SEGMENT}/data_level7.bin");
    let inline: u64 = tree(&snap)
        .values()
        .filter(|v| v.starts_with("file"))
        .map(|v| v.split(' ').nth(2).unwrap().parse::<u64>().unwrap())
        .filter(|n| *n <= 64 * 1024)
        .sum();
    assert_eq!(
        s["bytes_read"].as_u64().unwrap(),
        size("db/atocore.db") + size(&chroma_big) + inline,
        "{second}"
    );
    // Requests: a handful of LISTs and GETs, and one PUT per object written.
    let req = &second["requests"];
    assert_eq!(req["put"].as_u64().unwrap(), s_objects);
    assert!(req["list"].as_u64().unwrap() <= 4, "{req}");
    assert!(req["get"].as_u64().unwrap() <= 2, "{req}");
    if let (Some(dir), Some((n0, b0))) = (remote_dir, before) {
        // What the folder really gained.
        let (n1, b1) = usage(dir);
        assert_eq!(n1 - n0, s_objects);
        assert_eq!(b1 - b0, s_bytes);
    }
}

#[test]
fn folder_second_push_uploads_only_changed_chunks() {
    let site = Site::new(20_000);
    second_push_is_small(&site, Some(&site.remote()));
}

#[test]
fn s3_second_push_uploads_only_changed_chunks() {
    let Some(moto) = Moto::start() else { return };
    let site = Site::new(20_000).with_target(moto.env("dedup"));
    second_push_is_small(&site, None);
}

#[test]
fn damaged_objects_and_a_wrong_key_fail_naming_the_object_and_publish_nothing() {
    let site = Site::new(20_000);
    site.backup();
    site.ok(&["offsite", "push"]);
    fs::remove_dir_all(site.install.root()).unwrap();
    fs::create_dir_all(site.install.root()).unwrap();
    let chunk = chunk_files(&site.remote())[3].clone();
    let object = chunk
        .strip_prefix(site.remote())
        .unwrap()
        .display()
        .to_string();
    let good = fs::read(&chunk).unwrap();

    let fetch_fails = |code: &str, names: &str, key: &str| {
        let r = site.run(&["offsite", "fetch", "latest", "--identity", key]);
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.json["error"], code, "{}", r.stdout);
        assert!(
            r.json["message"].as_str().unwrap().contains(names),
            "the error does not name {names}: {}",
            r.stdout
        );
        // Nothing published, no partial folder left.
        let snaps = site.paths().snapshots_dir();
        assert!(
            !snaps.exists() || names_in(&snaps, |_| true).is_empty(),
            "{:?}",
            names_in(&snaps, |_| true)
        );
    };

    // A flipped byte inside the ciphertext.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    fs::write(&chunk, &bad).unwrap();
    fetch_fails("offsite_object_damaged", &object, site.key());

    // Truncated.
    fs::write(&chunk, &good[..good.len() - 100]).unwrap();
    fetch_fails("offsite_object_damaged", &object, site.key());
    let v = site.run(&["offsite", "verify"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert_eq!(v.json["problems"][0]["object"], object.as_str());

    // Another chunk's content under this name.
    let other = fs::read(&chunk_files(&site.remote())[4]).unwrap();
    fs::write(&chunk, &other).unwrap();
    fetch_fails("offsite_object_damaged", &object, site.key());
    let v = site.run(&[
        "offsite",
        "verify",
        "--read-data",
        "100",
        "--identity",
        site.key(),
    ]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains(&object), "{}", v.stdout);

    // Missing.
    fs::remove_file(&chunk).unwrap();
    fetch_fails("offsite_object_missing", &object, site.key());

    // Whole again: a wrong identity is refused, naming the first object it meets.
    fs::write(&chunk, &good).unwrap();
    let wrong = site.install.dir.path().join("wrong.txt");
    fs::write(
        &wrong,
        format!(
            "{}\n",
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
        ),
    )
    .unwrap();
    // The right identity already read the repository key into the backups folder,
    // so the first object the wrong one meets is the index; on a host without that
    // copy it is the key object.
    fetch_fails("offsite_wrong_key", "index/", wrong.to_str().unwrap());
    fs::remove_dir_all(site.paths().backup_dir.join("offsite")).unwrap();
    fetch_fails(
        "offsite_wrong_key",
        "keys/repository",
        wrong.to_str().unwrap(),
    );

    // And the right one works.
    assert_eq!(
        site.ok(&[
            "offsite",
            "verify",
            "--read-data",
            "100",
            "--identity",
            site.key()
        ])["ok"],
        true
    );
    site.ok(&["offsite", "fetch", "latest", "--identity", site.key()]);
}

#[test]
fn pushing_without_recipients_is_refused_unless_unencrypted_is_asked_for() {
    let site = Site::new(200);
    site.backup();
    let before = storage_tree(site.install.root());
    let r = site.run_with(&["offsite", "push"], &[("ATOCORE_OFFSITE_RECIPIENTS", "")]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "offsite_not_configured");
    assert!(
        r.stdout.contains("ATOCORE_OFFSITE_RECIPIENTS"),
        "{}",
        r.stdout
    );
    assert!(!site.remote().exists());
    assert_eq!(storage_tree(site.install.root()), before);

    let r = site.run_with(
        &["offsite", "push"],
        &[("ATOCORE_OFFSITE_RECIPIENTS", "age1notakey")],
    );
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "offsite_not_configured");

    let r = site.run_with(
        &["offsite", "push"],
        &[
            ("ATOCORE_OFFSITE_RECIPIENTS", ""),
            ("ATOCORE_OFFSITE_UNENCRYPTED", "yes"),
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["encrypted"], false);
    // An unencrypted repository is fetched without an identity.
    let stamp = r.json["pushed"][0]["stamp"].as_str().unwrap().to_string();
    let original = tree(&site.paths().snapshots_dir().join(&stamp));
    fs::remove_dir_all(site.install.root()).unwrap();
    site.ok(&["offsite", "fetch", &stamp]);
    assert_eq!(tree(&site.paths().snapshots_dir().join(&stamp)), original);
    // An encrypted push into it is refused.
    let r = site.run(&["offsite", "push"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
}

#[test]
fn unknown_stamp_and_missing_identity_are_refusals() {
    let site = Site::new(200);
    // Nothing to push: refused before the target is touched.
    let r = site.run(&["offsite", "push"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "bad_request");
    assert_eq!(usage(&site.remote()), (0, 0));
    // A folder target that is not there (a disk not mounted) is not created by
    // anything but push.
    fs::remove_dir(site.remote()).unwrap();
    for args in [
        vec!["offsite", "list"],
        vec!["offsite", "verify"],
        vec!["offsite", "prune"],
        vec!["offsite", "fetch", "latest", "--identity", site.key()],
    ] {
        let r = site.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stdout);
        assert_eq!(r.json["error"], "offsite_not_configured");
        assert!(r.stdout.contains("mounted"), "{}", r.stdout);
        assert!(!site.remote().exists());
    }
    site.backup();
    site.ok(&["offsite", "push"]);
    let r = site.run(&[
        "offsite",
        "fetch",
        "20200101T000000Z",
        "--identity",
        site.key(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "offsite_unknown_stamp");
    let r = site.run(&["offsite", "fetch", "latest"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "offsite_not_configured");
    assert!(r.stdout.contains("--identity"));
    let r = site.run(&["offsite", "push", "20200101T000000Z"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "unknown_stamp");
    let r = site.run_with(&["offsite", "list"], &[("ATOCORE_OFFSITE_URL", "")]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "offsite_not_configured");
}

#[test]
fn an_unreachable_endpoint_is_a_clear_error_and_changes_nothing_locally() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let site = Site::new(200).with_target(vec![
        (
            "ATOCORE_OFFSITE_URL".into(),
            "s3://atocore-test/nowhere".into(),
        ),
        ("AWS_ENDPOINT_URL".into(), endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
    ]);
    site.backup();
    let before = storage_tree(site.install.root());
    for args in [
        vec!["offsite", "push"],
        vec!["offsite", "list"],
        vec!["offsite", "fetch", "latest", "--identity", site.key()],
    ] {
        let t = Instant::now();
        let r = site.run(&args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stdout);
        assert_eq!(r.json["error"], "offsite_unreachable", "{}", r.stdout);
        assert!(r.stdout.contains(&endpoint), "{}", r.stdout);
        assert!(t.elapsed() < Duration::from_secs(60));
    }
    assert_eq!(storage_tree(site.install.root()), before);
}

#[test]
fn bad_credentials_are_a_clear_error_and_change_nothing_locally() {
    // moto checks credentials after its first request (the bucket's creation).
    let Some(moto) = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]) else {
        return;
    };
    let site = Site::new(200).with_target(moto.env("denied"));
    site.backup();
    let before = storage_tree(site.install.root());
    for args in [
        vec!["offsite", "push"],
        vec!["offsite", "list"],
        vec!["offsite", "fetch", "latest", "--identity", site.key()],
    ] {
        let r = site.run(&args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stdout);
        assert_eq!(r.json["error"], "offsite_denied", "{}", r.stdout);
        assert!(r.stdout.contains("AWS_ACCESS_KEY_ID"), "{}", r.stdout);
    }
    assert_eq!(storage_tree(site.install.root()), before);
}

#[test]
fn the_age_cli_decrypts_what_push_wrote() {
    if !age_cli() {
        return;
    }
    let site = Site::new(200);
    site.backup();
    site.ok(&["offsite", "push"]);
    let age_d = |object: &Path| {
        let o = Command::new("age")
            .args(["-d", "-i", site.key()])
            .arg(object)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "age -d {}: {}",
            object.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    let key = age_d(&site.remote().join("keys/repository"));
    assert_eq!(String::from_utf8(key).unwrap().trim().len(), 64);
    // A chroma file of 128 KiB is one chunk: zstd inside age.
    let wanted = fs::read(site.paths().chroma.join(SEGMENT).join("data_level5.bin")).unwrap();
    let found = chunk_files(&site.remote())
        .iter()
        .any(|c| zstd::decode_all(&age_d(c)[..]).unwrap() == wanted);
    assert!(found, "no chunk decrypts to the chroma file");
    let index = fs::read_dir(site.remote().join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let json: Value =
        serde_json::from_slice(&zstd::decode_all(&age_d(&index)[..]).unwrap()).unwrap();
    assert!(
        json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "db/atocore.db")
    );
}

#[test]
fn a_push_killed_midway_resumes_and_is_never_listed_incomplete() {
    let site = Site::new(20_000);
    let stamp = site.backup();
    // Killed once 6 objects are written: config, key, and the first batch of chunks
    // (a batch of uploads runs at once, so a few more may have landed).
    let r = site.run_with(
        &["offsite", "push"],
        &[("ATOCORE_OFFSITE_CRASH_AFTER_PUTS", "6")],
    );
    assert_eq!(r.code, -1, "the push was not killed: {}", r.stdout);
    let after_kill = chunk_files(&site.remote()).len();
    assert!(after_kill >= 4, "{after_kill}");
    assert_eq!(
        site.ok(&["offsite", "list"])["snapshots"],
        Value::Array(vec![])
    );
    assert_eq!(site.ok(&["offsite", "verify"])["ok"], true);
    let r = site.run(&["offsite", "fetch", "latest", "--identity", site.key()]);
    assert_eq!(r.json["error"], "offsite_unknown_stamp", "{}", r.stdout);

    // The next push resumes: it uploads only what the killed one did not.
    let again = site.ok(&["offsite", "push"]);
    let chunks_total = again["pushed"][0]["chunks"].as_u64().unwrap();
    assert_eq!(
        again["pushed"][0]["chunks_uploaded"].as_u64().unwrap(),
        chunks_total - after_kill as u64,
        "{again}"
    );
    let resumed = site.ok(&["offsite", "list"]);
    assert_eq!(resumed["snapshots"][0]["stamp"], stamp.as_str());
    // Nothing uploaded twice: every chunk file exists once and the two runs together
    // wrote exactly the chunks the snapshot needs.
    assert_eq!(chunk_files(&site.remote()).len() as u64, chunks_total);
    assert_eq!(
        site.ok(&[
            "offsite",
            "verify",
            "--read-data",
            "100",
            "--identity",
            site.key()
        ])["ok"],
        true
    );
}

#[test]
fn a_push_killed_before_its_reference_is_not_listed() {
    let site = Site::new(20_000);
    site.backup();
    let full = site.ok(&["offsite", "push"]);
    let puts = full["requests"]["put"].as_u64().unwrap();
    // Same data, another folder: die right after the index, before the reference.
    let site = site.with_target(vec![(
        "ATOCORE_OFFSITE_URL".into(),
        format!(
            "file://{}",
            std::env::temp_dir()
                .join(format!("atocore-offsite-{}", std::process::id()))
                .display()
        ),
    )]);
    let remote = std::env::temp_dir().join(format!("atocore-offsite-{}", std::process::id()));
    let _cleanup = Cleanup(remote.clone());
    let r = site.run_with(
        &["offsite", "push"],
        &[("ATOCORE_OFFSITE_CRASH_AFTER_PUTS", &(puts - 1).to_string())],
    );
    assert_eq!(r.code, -1, "{}", r.stdout);
    assert!(remote.join("index").read_dir().unwrap().next().is_some());
    assert_eq!(
        site.ok(&["offsite", "list"])["snapshots"],
        Value::Array(vec![])
    );
    let again = site.ok(&["offsite", "push"]);
    assert_eq!(again["pushed"][0]["chunks_uploaded"], 0, "{again}");
    assert_eq!(
        site.ok(&["offsite", "list"])["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn remote_prune_keeps_what_kept_snapshots_need() {
    let site = Site::new(20_000);
    let mut stamps = Vec::new();
    for i in 0..3 {
        if i > 0 {
            write_random(
                &site
                    .paths()
                    .chroma
                    .join(SEGMENT)
                    .join(format!("data_level{i}.bin")),
                128 * 1024,
            );
            site.install.add_memories(500, &format!("round{i}"));
        }
        stamps.push(site.backup());
        std::thread::sleep(Duration::from_millis(1100));
    }
    site.ok(&["offsite", "push", "--missing"]);
    assert_eq!(
        site.ok(&["offsite", "list"])["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let chunks_before = chunk_files(&site.remote()).len();

    // By default the target keeps every snapshot younger than a day (issue 19).
    let p = site.ok(&["offsite", "prune"]);
    assert_eq!(p["kept"], serde_json::json!(stamps), "{p}");
    assert_eq!(p["deleted"], serde_json::json!([]), "{p}");
    assert_eq!(p["reasons"][&stamps[0]], "kept: within 24h", "{p}");

    // Within the grace period: references go, objects stay.
    let p = site.ok(&["offsite", "prune", "--keep-within", "0"]);
    assert_eq!(p["kept"], serde_json::json!([stamps[2]]), "{p}");
    assert_eq!(p["objects_deleted"], 0, "{p}");
    assert!(p["objects_in_grace"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(chunk_files(&site.remote()).len(), chunks_before);

    // A dry run with no grace says what would go and deletes nothing.
    let dry = site.ok(&[
        "offsite",
        "prune",
        "--keep-within",
        "0",
        "--grace-hours",
        "0",
        "--dry-run",
    ]);
    let would = dry["objects_deleted"].as_u64().unwrap();
    assert!(would > 0, "{dry}");
    assert_eq!(chunk_files(&site.remote()).len(), chunks_before);

    let p = site.ok(&[
        "offsite",
        "prune",
        "--keep-within",
        "0",
        "--grace-hours",
        "0",
        "--keep-daily",
        "0",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
        "--keep-chroma-daily",
        "0",
        "--keep-chroma-weekly",
        "0",
        "--keep-chroma-monthly",
        "0",
    ]);
    assert_eq!(
        p["kept"],
        serde_json::json!([stamps[2]]),
        "never everything: {p}"
    );
    assert_eq!(p["objects_deleted"].as_u64().unwrap(), would);
    assert!(chunk_files(&site.remote()).len() < chunks_before);
    let listed = site.ok(&["offsite", "list"]);
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(
        listed["snapshots"][0]["chunks"].as_u64().unwrap(),
        chunk_files(&site.remote()).len() as u64,
        "only the kept snapshot's chunks remain"
    );
    let v = site.ok(&[
        "offsite",
        "verify",
        "--read-data",
        "100",
        "--identity",
        site.key(),
    ]);
    assert_eq!(v["ok"], true, "{v}");
    // The kept snapshot still comes back whole.
    let want = tree(&site.paths().snapshots_dir().join(&stamps[2]));
    fs::remove_dir_all(site.install.root()).unwrap();
    site.ok(&["offsite", "fetch", &stamps[2], "--identity", site.key()]);
    assert_eq!(tree(&site.paths().snapshots_dir().join(&stamps[2])), want);
}

#[test]
fn prune_running_during_a_push_leaves_every_listed_snapshot_whole() {
    let site = Site::new(20_000);
    let old = site.backup();
    site.ok(&["offsite", "push"]);
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..CHROMA_FILES {
        write_random(
            &site
                .paths()
                .chroma
                .join(SEGMENT)
                .join(format!("data_level{i}.bin")),
            128 * 1024,
        );
    }
    let new = site.backup();

    let mut cmd = Command::new(BIN);
    cmd.arg("--storage-root")
        .arg(site.install.root())
        .args(["offsite", "push"])
        .envs(site.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ATOCORE_LOG_FORMAT", "text");
    let mut push = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Prune over and over while the push runs: it drops the old snapshot's reference
    // as soon as the new one is listed, and never an object the push needs.
    let mut prunes = 0;
    while push.try_wait().unwrap().is_none() {
        let p = site.ok(&[
            "offsite",
            "prune",
            "--keep-daily",
            "1",
            "--keep-within",
            "0",
        ]);
        assert_eq!(p["objects_deleted"], 0, "{p}");
        prunes += 1;
        assert!(prunes < 10_000, "the push never ended");
    }
    let pushed = Run::from(push.wait_with_output().unwrap());
    assert_eq!(pushed.code, 0, "{}\n{}", pushed.stdout, pushed.stderr);
    assert!(prunes >= 1);
    site.ok(&[
        "offsite",
        "prune",
        "--keep-daily",
        "1",
        "--keep-within",
        "0",
    ]);
    let listed = site.ok(&["offsite", "list"]);
    let stamps: Vec<&str> = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stamp"].as_str().unwrap())
        .collect();
    assert_eq!(stamps, vec![new.as_str()], "{listed}");
    assert_ne!(old, new);
    let v = site.ok(&[
        "offsite",
        "verify",
        "--read-data",
        "100",
        "--identity",
        site.key(),
    ]);
    assert_eq!(v["ok"], true, "{v}");
}

/// Every file below `dir`, with its size.
fn sizes_under(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sizes_under(&p));
        } else {
            out.push(fs::metadata(&p).unwrap().len());
        }
    }
    out
}

#[test]
fn a_bandwidth_limit_paces_the_uploads_and_bad_limits_are_refused() {
    let site = Site::new(200);
    site.backup();
    let rate: u64 = 2 << 20;
    let started = Instant::now();
    let r = site.run_with(
        &["offsite", "push"],
        &[
            ("ATOCORE_OFFSITE_BANDWIDTH", "2MiB"),
            ("ATOCORE_OFFSITE_CONCURRENCY", "3"),
        ],
    );
    let elapsed = started.elapsed();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Each upload starts only once the bytes before it fit the rate, so the last one
    // started no earlier than (everything but the largest object) / rate.
    let sizes = sizes_under(&site.remote());
    let total: u64 = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap();
    assert!(total > 4 << 20, "{total}");
    let floor = Duration::from_secs_f64((total - largest) as f64 / rate as f64);
    assert!(
        elapsed >= floor,
        "{elapsed:?} < {floor:?} for {total} bytes"
    );

    for (var, value, needle) in [
        ("ATOCORE_OFFSITE_BANDWIDTH", "fast", "is not a bandwidth"),
        ("ATOCORE_OFFSITE_CONCURRENCY", "0", "from 1 to 64"),
        ("ATOCORE_OFFSITE_CONCURRENCY", "65", "from 1 to 64"),
    ] {
        let r = site.run_with(&["offsite", "list"], &[(var, value)]);
        assert_eq!(r.code, 2, "{var}={value}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{var}={value}: {}", r.stderr);
    }
}

/// The push remembers what it pushed (by content) and reads only what changed; a
/// chunk gone from the target, or a damaged cache, makes it read again, never reuse
/// blindly.
#[test]
fn unchanged_files_are_not_read_again_and_the_cache_is_never_trusted_blindly() {
    let site = Site::new(20_000);
    let pushed = |site: &Site| {
        site.backup();
        std::thread::sleep(Duration::from_millis(1100));
        site.ok(&["offsite", "push"])["pushed"][0].clone()
    };
    let first = pushed(&site);
    let big = first["chunks"].as_u64().unwrap();
    assert_eq!(first["files_unchanged"], 0, "{first}");

    // Nothing changed: no file is read again, nothing is uploaded.
    let same = pushed(&site);
    let unchanged = same["files_unchanged"].as_u64().unwrap();
    assert!(unchanged > CHROMA_FILES as u64, "{same}");
    assert_eq!(same["chunks_uploaded"], 0, "{same}");
    assert_eq!(same["chunks"].as_u64().unwrap(), big, "{same}");
    assert!(same["bytes_read"].as_u64().unwrap() * 20 < first["bytes_read"].as_u64().unwrap());

    // A chunk removed from the target behind this host's back: the one file that
    // needs it is read again and the chunk uploaded again.
    let victim = chunk_files(&site.remote())[5].clone();
    fs::remove_file(&victim).unwrap();
    let healed = pushed(&site);
    assert_eq!(
        healed["files_unchanged"].as_u64().unwrap(),
        unchanged - 1,
        "{healed}"
    );
    assert_eq!(healed["chunks_uploaded"], 1, "{healed}");
    assert!(victim.is_file(), "the missing chunk was not uploaded again");

    // A damaged cache is ignored: every file is read.
    let caches: Vec<PathBuf> = fs::read_dir(site.paths().backup_dir.join("offsite"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "files"))
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let text = fs::read_to_string(&caches[0]).unwrap();
    let some_id = first_chunk_id_in_cache(&text);
    fs::write(
        &caches[0],
        text.replacen(&some_id, &"0".repeat(some_id.len()), 1),
    )
    .unwrap();
    let reread = pushed(&site);
    assert_eq!(reread["files_unchanged"], 0, "{reread}");
    assert_eq!(reread["bytes_read"], reread["bytes"], "{reread}");
    assert_eq!(reread["chunks_uploaded"], 0, "{reread}");

    // What the last push listed comes back whole on a new host.
    let stamp = reread["stamp"].as_str().unwrap().to_string();
    let host = site.new_host();
    let fetched = host.ok(&["offsite", "fetch", &stamp, "--identity", host.key()]);
    assert_eq!(fetched["valid"], true, "{fetched}");
    assert_eq!(
        tree(&host.paths().snapshots_dir().join(&stamp)),
        tree(&site.paths().snapshots_dir().join(&stamp))
    );
}

/// The first chunk id named in a file cache.
fn first_chunk_id_in_cache(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap();
    let files = v["body"]["files"].as_object().unwrap();
    let (_, entry) = files.iter().next().unwrap();
    entry[1][0][0].as_str().unwrap().to_string()
}

/// A snapshot damaged after it was made is not pushed: the push hashes what it reads,
/// and a file that no longer matches the manifest stops it before the index and the
/// reference are written.
#[test]
fn a_snapshot_damaged_on_disk_is_never_listed_off_site() {
    let site = Site::new(20_000);
    let stamp = site.backup();
    let victim = site
        .paths()
        .snapshots_dir()
        .join(&stamp)
        .join(format!("chroma/{SEGMENT}/data_level3.bin"));
    let mut bytes = fs::read(&victim).unwrap();
    bytes[1000] ^= 0x40;
    fs::write(&victim, bytes).unwrap();

    push_is_refused_as_invalid(&site, &stamp, "data_level3.bin");
    let r = site.run(&["offsite", "push"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(empty_or_absent(&site.remote().join("snapshots")));
    assert!(empty_or_absent(&site.remote().join("index")));
    assert_eq!(
        site.ok(&["offsite", "list"])["snapshots"],
        serde_json::json!([])
    );
}

/// The push does not run SQLite's checks again on a database the manifest proves is
/// the one checked when the snapshot was made, but only for snapshots this engine
/// made (a format version in the metadata): without one, a damaged database with a
/// manifest to match is still caught by `integrity_check`.
#[test]
fn a_damaged_database_without_proof_of_its_check_is_never_pushed() {
    let site = Site::new(20_000);
    let stamp = site.backup();
    let snap = site.paths().snapshots_dir().join(&stamp);
    let db = snap.join("db/atocore.db");
    let mut bytes = fs::read(&db).unwrap();
    let page = 4096 * 6;
    for b in &mut bytes[page + 8..page + 400] {
        *b = 0xA5;
    }
    fs::write(&db, &bytes).unwrap();
    // A manifest that matches the damaged file, metadata from before format versions.
    rehash_in_manifest(&snap, "db/atocore.db");
    let meta_path = snap.join("backup-metadata.json");
    let mut meta: Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    assert!(
        meta.as_object_mut()
            .unwrap()
            .remove("format_version")
            .is_some()
    );
    fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();

    push_is_refused_as_invalid(&site, &stamp, "db_integrity_check_failed");
    assert_eq!(
        site.ok(&["offsite", "list"])["snapshots"],
        serde_json::json!([])
    );
}

/// `offsite push STAMP` fails with `snapshot_invalid` (exit 1), naming `why`.
fn push_is_refused_as_invalid(site: &Site, stamp: &str, why: &str) {
    let r = site.run(&["offsite", "push", stamp]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["error"], "snapshot_invalid", "{}", r.stdout);
    assert!(
        r.json["message"].as_str().unwrap().contains(why),
        "the refusal does not name {why}: {}",
        r.stdout
    );
}

/// A snapshot folder that is a link is not a snapshot: named, it is unknown; unnamed,
/// there is nothing to push; nothing it points to is read or uploaded.
#[test]
fn a_snapshot_folder_that_is_a_link_is_never_read_through() {
    let site = Site::new(2_000);
    let stamp = site.backup();
    let snapshots = site.paths().snapshots_dir();
    let elsewhere = site.install.dir.path().join("elsewhere");
    fs::rename(snapshots.join(&stamp), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, snapshots.join(&stamp)).unwrap();

    let r = site.run(&["offsite", "push", &stamp]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["error"], "unknown_stamp", "{}", r.stdout);
    let r = site.run(&["offsite", "push", "--missing"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["pushed"], serde_json::json!([]), "{}", r.stdout);
    assert!(
        empty_or_absent(&site.remote().join("chunks")),
        "chunks were uploaded from behind the link"
    );
}

/// Whether a folder of the target is absent or holds nothing.
fn empty_or_absent(dir: &Path) -> bool {
    !dir.exists() || fs::read_dir(dir).unwrap().next().is_none()
}

mod attacks;
