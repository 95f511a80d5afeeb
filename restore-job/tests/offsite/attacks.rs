//! The off-site repository tried as an attacker would: someone who can write the
//! bucket (a leaked access key, a compromised provider, a shared NAS) and knows the
//! public key, but holds neither the identity nor the repository key. Each attack is
//! scripted with the attacker's own tools: their own push to their own repository,
//! objects copied over the victim's, an index made by hand and encrypted with Debian's
//! `age` CLI to the public key. Nothing they plant may be accepted by `fetch`,
//! `fetch --at` or `verify --identity`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use object_store::{ObjectStore, ObjectStoreExt};

use super::*;

/// A target as the attacker reaches it: the folder itself, or the bucket with the
/// leaked credentials.
enum Bucket {
    Folder(PathBuf),
    S3 {
        store: object_store::aws::AmazonS3,
        prefix: String,
        rt: tokio::runtime::Runtime,
    },
}

impl Bucket {
    fn of(site: &Site) -> Bucket {
        let env: BTreeMap<&str, &str> = site
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let url = env["ATOCORE_OFFSITE_URL"];
        if let Some(path) = url.strip_prefix("file://") {
            return Bucket::Folder(PathBuf::from(path));
        }
        let (bucket, prefix) = url.strip_prefix("s3://").unwrap().split_once('/').unwrap();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(env["AWS_ENDPOINT_URL"])
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_region("us-east-1")
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Bucket::S3 {
            store,
            prefix: prefix.trim_end_matches('/').to_string(),
            rt,
        }
    }

    fn path(prefix: &str, key: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{prefix}/{key}"))
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        match self {
            Bucket::Folder(root) => {
                let p = root.join(key);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, bytes).unwrap();
            }
            Bucket::S3 { store, prefix, rt } => {
                rt.block_on(store.put(&Self::path(prefix, key), bytes.to_vec().into()))
                    .unwrap();
            }
        }
    }

    fn get(&self, key: &str) -> Vec<u8> {
        match self {
            Bucket::Folder(root) => fs::read(root.join(key)).unwrap(),
            Bucket::S3 { store, prefix, rt } => rt.block_on(async {
                let r = store.get(&Self::path(prefix, key)).await.unwrap();
                r.bytes().await.unwrap().to_vec()
            }),
        }
    }

    /// Every key below `dir` (`index/`, `snapshots/`, or `` for all).
    fn keys(&self, dir: &str) -> Vec<String> {
        let mut out = match self {
            Bucket::Folder(root) => {
                let mut out = Vec::new();
                let mut todo = vec![root.join(dir)];
                while let Some(d) = todo.pop() {
                    let Ok(rd) = fs::read_dir(&d) else { continue };
                    for e in rd.flatten() {
                        if e.file_type().unwrap().is_dir() {
                            todo.push(e.path());
                        } else {
                            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                            if !rel.contains("/.") && !rel.starts_with('.') {
                                out.push(rel);
                            }
                        }
                    }
                }
                out
            }
            Bucket::S3 { store, prefix, rt } => rt.block_on(async {
                use futures_util::StreamExt;
                let base = object_store::path::Path::from(format!("{prefix}/{dir}"));
                let mut s = store.list(Some(&base));
                let mut out = Vec::new();
                while let Some(m) = s.next().await {
                    let k = m.unwrap().location.to_string();
                    out.push(k.strip_prefix(&format!("{prefix}/")).unwrap().to_string());
                }
                out
            }),
        };
        out.sort();
        out
    }

    fn delete(&self, key: &str) {
        match self {
            Bucket::Folder(root) => fs::remove_file(root.join(key)).unwrap(),
            Bucket::S3 { store, prefix, rt } => {
                rt.block_on(store.delete(&Self::path(prefix, key))).unwrap()
            }
        }
    }

    /// Copy the objects below each of `dirs` (or the object itself, without a
    /// trailing `/`) from `from` over this target's.
    fn copy_from(&self, from: &Bucket, dirs: &[&str]) {
        for dir in dirs {
            // `config` is one object; `index/` and the like are folders.
            let keys = if dir.ends_with('/') {
                from.keys(dir)
            } else {
                vec![dir.to_string()]
            };
            for k in keys {
                self.put(&k, &from.get(&k));
            }
        }
    }
}

/// Where an attack runs: a folder target, or a bucket on moto.
#[derive(Clone, Copy, PartialEq)]
enum On {
    Folder,
    S3,
}

/// The victim (encrypted, pushed once) and the attacker's own install, each with its
/// own target on the same kind of storage; `None` when moto is not installed.
fn victim_and_attacker(on: On, name: &str) -> Option<(Option<Moto>, Site, Site)> {
    let (moto, victim, attacker) = match on {
        On::Folder => (None, Site::new(2_000), Site::new(50)),
        On::S3 => {
            let moto = Moto::start()?;
            let v = Site::new(2_000).with_target(moto.env(&format!("{name}-victim")));
            let a = Site::new(50).with_target(moto.env(&format!("{name}-attacker")));
            (Some(moto), v, a)
        }
    };
    victim.backup();
    victim.ok(&["offsite", "push"]);
    attacker.install.add_memories(7, "planted-by-the-attacker");
    Some((moto, victim, attacker))
}

fn recipient(site: &Site) -> String {
    site.env
        .iter()
        .find(|(k, _)| k == "ATOCORE_OFFSITE_RECIPIENTS")
        .unwrap()
        .1
        .clone()
}

/// A refusal with `code` whose message contains `says`, that published nothing.
fn refused(host: &Site, r: &Run, code: &str, says: &str) {
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["error"], code, "{}", r.stdout);
    assert!(
        r.json["message"].as_str().unwrap().contains(says),
        "the message does not say `{says}`: {}",
        r.stdout
    );
    let snaps = host.paths().snapshots_dir();
    assert!(
        !snaps.exists() || names_in(&snaps, |_| true).is_empty(),
        "something was published: {:?}",
        names_in(&snaps, |_| true)
    );
}

// ---- item 1: downgrade to a plain repository -------------------------------------

fn downgrade(on: On) {
    let Some((_moto, victim, attacker)) = victim_and_attacker(on, "downgrade") else {
        return;
    };
    // The attacker's own unencrypted repository, copied over the victim's.
    attacker.install.backup(&[]);
    let plain = [
        ("ATOCORE_OFFSITE_RECIPIENTS", ""),
        ("ATOCORE_OFFSITE_UNENCRYPTED", "true"),
    ];
    let r = attacker.run_with(&["offsite", "push"], &plain);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let (theirs, ours) = (Bucket::of(&attacker), Bucket::of(&victim));
    ours.copy_from(&theirs, &["config", "index/", "snapshots/", "chunks/"]);

    let host = victim.new_host();
    let r = host.run(&["offsite", "fetch", "latest", "--identity", host.key()]);
    refused(
        &host,
        &r,
        "offsite_not_authentic",
        "the repository on the target is unencrypted, but an identity was given",
    );
    let r = host.run(&["offsite", "verify", "--identity", host.key()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.json["error"], "offsite_not_authentic", "{}", r.stdout);

    // A missing config is no way around it.
    ours.delete("config");
    let r = host.run(&["offsite", "fetch", "latest", "--identity", host.key()]);
    refused(&host, &r, "offsite_not_authentic", "no `config` object");

    // Nor are plain WAL batches: a hand-made one, next to a copied plain config.
    ours.put("config", &theirs.get("config"));
    let generation = "6f1c2a4e-0000-4000-8000-attacker0001";
    let record = serde_json::json!({
        "id": generation, "started_at": "2026-12-01T00:00:00Z", "reason": "start",
        "db_dev": 1, "db_ino": 1, "start": null
    });
    let mut batch = b"ATOCORE-WAL-BATCH 1\n".to_vec();
    for field in [
        serde_json::to_vec(&record).unwrap(),
        b"000000000001-1764547200000.seg".to_vec(),
        b"not a segment".to_vec(),
    ] {
        batch.extend_from_slice(&(field.len() as u64).to_le_bytes());
        batch.extend_from_slice(&field);
    }
    ours.put(
        &format!("wal/{generation}/000000000001-000000000001.batch"),
        &batch,
    );
    let at = chrono::Utc::now().to_rfc3339();
    let r = host.run(&["offsite", "fetch", "--at", &at, "--identity", host.key()]);
    refused(
        &host,
        &r,
        "offsite_not_authentic",
        "the repository on the target is unencrypted, but an identity was given",
    );
    assert!(
        !host
            .paths()
            .backup_dir
            .join("wal")
            .join(generation)
            .exists(),
        "the plain batch was written out"
    );
}

#[test]
fn attack_folder_a_plain_repository_copied_over_an_encrypted_one_is_refused() {
    downgrade(On::Folder);
}

#[test]
fn attack_s3_a_plain_repository_copied_over_an_encrypted_one_is_refused() {
    downgrade(On::S3);
}

// ---- item 2: forged snapshots ---------------------------------------------------

/// An index made by hand: the attacker's snapshot, every file inline, as JSON, zstd,
/// then `age -r <the victim's public key>`.
fn hand_made_index(snap: &Path, stamp: &str, repository: &str, recipient: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    for (rel, _) in tree(snap) {
        let p = snap.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let mut e = serde_json::json!({
            "path": rel, "kind": if m.is_dir() { "dir" } else { "file" },
            "mode": m.permissions().mode() & 0o7777, "uid": m.uid(), "gid": m.gid(),
            "mtime_ns": m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        });
        if m.is_file() {
            let bytes = fs::read(&p).unwrap();
            e["size"] = bytes.len().into();
            e["inline"] = hex::encode(&bytes).into();
        }
        entries.push(e);
    }
    let index = serde_json::json!({
        "format": 1, "stamp": stamp, "repository": repository,
        "metadata": serde_json::from_slice::<Value>(&fs::read(snap.join("backup-metadata.json")).unwrap()).unwrap(),
        "entries": entries,
    });
    age_encrypt(
        &zstd::encode_all(&serde_json::to_vec(&index).unwrap()[..], 3).unwrap(),
        recipient,
    )
}

/// `age -r RECIPIENT` of `plain`, with Debian's CLI.
fn age_encrypt(plain: &[u8], recipient: &str) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let (input, output) = (d.path().join("plain"), d.path().join("sealed"));
    fs::write(&input, plain).unwrap();
    let o = Command::new("age")
        .args(["-r", recipient, "-o"])
        .arg(&output)
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::read(output).unwrap()
}

fn forged_index(on: On) {
    if !age_cli() {
        return;
    }
    let Some((_moto, victim, attacker)) = victim_and_attacker(on, "forged-index") else {
        return;
    };
    let ours = Bucket::of(&victim);
    let config: Value = serde_json::from_slice(&ours.get("config")).unwrap();
    // The attacker's snapshot, under a stamp newer than any of the victim's.
    let theirs = attacker.backup();
    let snap = attacker.paths().snapshots_dir().join(&theirs);
    let stamp = "20991231T000000Z";
    fs::rename(&snap, snap.with_file_name(stamp)).unwrap();
    let snap = snap.with_file_name(stamp);
    let meta_path = snap.join("backup-metadata.json");
    let meta = fs::read_to_string(&meta_path)
        .unwrap()
        .replace(&theirs, stamp);
    fs::write(&meta_path, meta).unwrap();
    rehash_in_manifest(&snap, "backup-metadata.json");
    let index = hand_made_index(
        &snap,
        stamp,
        config["repository"].as_str().unwrap(),
        &recipient(&victim),
    );
    let index_key = format!("index/{}", "ab".repeat(32));
    ours.put(&index_key, &index);
    let reference = serde_json::json!({
        "format": 1, "stamp": stamp, "kind": "manual", "chroma": false, "encrypted": true,
        "pushed_at": "2099-12-31T00:00:00Z", "index": index_key, "index_size": index.len(),
        "chunks": [], "bytes": 1, "files": 1
    });
    ours.put(
        &format!("snapshots/{stamp}.json"),
        &serde_json::to_vec(&reference).unwrap(),
    );

    let host = victim.new_host();
    let r = host.run(&["offsite", "fetch", "latest", "--identity", host.key()]);
    assert!(
        r.code != 0 || r.json["stamp"] != stamp,
        "the forged snapshot was fetched: {}",
        r.stdout
    );
    let host = victim.new_host();
    let r = host.run(&["offsite", "fetch", stamp, "--identity", host.key()]);
    refused(
        &host,
        &r,
        "offsite_not_authentic",
        &format!("snapshots/{stamp}.json"),
    );
    let v = host.run(&[
        "offsite",
        "verify",
        "--read-data",
        "100",
        "--identity",
        host.key(),
    ]);
    assert_eq!(v.code, 1, "{}\n{}", v.stdout, v.stderr);
    assert_eq!(v.json["ok"], false, "{}", v.stdout);
    assert!(
        v.json["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["object"] == format!("snapshots/{stamp}.json")
                && p["problem"]
                    .as_str()
                    .unwrap()
                    .contains("not made with the repository key")),
        "{}",
        v.stdout
    );
}

#[test]
fn attack_folder_a_hand_made_index_encrypted_to_the_public_key_is_never_fetched() {
    forged_index(On::Folder);
}

#[test]
fn attack_s3_a_hand_made_index_encrypted_to_the_public_key_is_never_fetched() {
    forged_index(On::S3);
}

fn substituted_key(on: On) {
    let Some((_moto, victim, attacker)) = victim_and_attacker(on, "key-substitution") else {
        return;
    };
    // The attacker's own encrypted repository, to the victim's public key: their own
    // repository key in `keys/repository`, their config, index and references.
    attacker.install.backup(&[]);
    let r = attacker.run_with(
        &["offsite", "push"],
        &[("ATOCORE_OFFSITE_RECIPIENTS", &recipient(&victim))],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let (theirs, ours) = (Bucket::of(&attacker), Bucket::of(&victim));
    for k in ours.keys("snapshots/") {
        ours.delete(&k);
    }
    ours.copy_from(
        &theirs,
        &["config", "keys/", "index/", "snapshots/", "chunks/"],
    );
    let host = victim.new_host();
    let r = host.run(&["offsite", "fetch", "latest", "--identity", host.key()]);
    refused(
        &host,
        &r,
        "offsite_not_authentic",
        "is not the one this identity was pinned to",
    );
    let r = host.run(&["offsite", "verify", "--identity", host.key()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.json["error"], "offsite_not_authentic", "{}", r.stdout);
}

#[test]
fn attack_folder_a_substituted_repository_key_is_refused() {
    substituted_key(On::Folder);
}

#[test]
fn attack_s3_a_substituted_repository_key_is_refused() {
    substituted_key(On::S3);
}

fn renamed_reference(on: On) {
    let Some((_moto, victim, _attacker)) = victim_and_attacker(on, "renamed-reference") else {
        return;
    };
    let ours = Bucket::of(&victim);
    let old = ours.keys("snapshots/")[0].clone();
    // The old snapshot's reference copied under a newer stamp.
    let newer = "20991231T000000Z";
    ours.put(&format!("snapshots/{newer}.json"), &ours.get(&old));
    let host = victim.new_host();
    let r = host.run(&["offsite", "fetch", newer, "--identity", host.key()]);
    refused(
        &host,
        &r,
        "offsite_not_authentic",
        &format!("snapshots/{newer}.json describes snapshot"),
    );
}

#[test]
fn attack_folder_a_reference_for_one_stamp_naming_another_is_refused() {
    renamed_reference(On::Folder);
}

#[test]
fn attack_s3_a_reference_for_one_stamp_naming_another_is_refused() {
    renamed_reference(On::S3);
}

// ---- item 6: one bad object ----------------------------------------------------------

fn one_bad_reference(on: On) {
    let Some((_moto, victim, _attacker)) = victim_and_attacker(on, "bad-reference") else {
        return;
    };
    let ours = Bucket::of(&victim);
    let good = victim.ok(&["offsite", "list"])["snapshots"][0]["stamp"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = "snapshots/20991231T000000Z.json";
    ours.put(bad, b"{ this is not a reference");
    let problem = |v: &Value| {
        let p = v["problems"].as_array().expect("a list of problems");
        assert_eq!(p.len(), 1, "{v}");
        assert_eq!(p[0]["object"], bad, "{v}");
        assert!(
            p[0]["problem"]
                .as_str()
                .unwrap()
                .starts_with("not the expected JSON"),
            "{v}"
        );
    };
    let listed = victim.ok(&["offsite", "list"]);
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 1, "{listed}");
    problem(&listed);
    let v = victim.run(&["offsite", "verify"]);
    assert_eq!(v.code, 1, "{}\n{}", v.stdout, v.stderr);
    assert_eq!(v.json["snapshots"], 1, "{}", v.stdout);
    problem(&v.json);
    let pruned = victim.ok(&["offsite", "prune", "--dry-run"]);
    assert_eq!(pruned["kept"][0], good.as_str(), "{pruned}");
    problem(&pruned);
    let host = victim.new_host();
    let fetched = host.ok(&["offsite", "fetch", "latest", "--identity", host.key()]);
    assert_eq!(fetched["stamp"], good.as_str(), "{fetched}");
    let host = victim.new_host();
    let at = chrono::Utc::now().to_rfc3339();
    let r = host.run(&["offsite", "fetch", "--at", &at, "--identity", host.key()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["fetched"][0], good.as_str(), "{}", r.stdout);
}

#[test]
fn folder_one_unparsable_reference_is_a_reported_problem_and_the_rest_keeps_working() {
    one_bad_reference(On::Folder);
}

#[test]
fn s3_one_unparsable_reference_is_a_reported_problem_and_the_rest_keeps_working() {
    one_bad_reference(On::S3);
}
// ---- item 7: secret files -------------------------------------------------------------

/// Watch `dir` while `f` runs: every mode seen of any file in it.
fn modes_seen_while(dir: &Path, f: impl FnOnce()) -> Vec<(String, u32)> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(rd) = fs::read_dir(dir) else { continue };
                for e in rd.flatten() {
                    if let Ok(m) = e.metadata() {
                        let item = (
                            e.file_name().to_string_lossy().into_owned(),
                            m.permissions().mode() & 0o777,
                        );
                        if !seen.contains(&item) {
                            seen.push(item);
                        }
                    }
                }
            }
            seen
        });
        // Stop the watcher even when `f` panics, so a failure fails instead of hanging.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let guard = StopOnDrop(&stop);
        f();
        drop(guard);
        watcher.join().unwrap()
    })
}

#[test]
fn the_repository_key_file_is_never_readable_by_others_not_even_briefly() {
    let site = Site::new(200);
    site.backup();
    let keys = site.paths().backup_dir.join("offsite");
    let seen = modes_seen_while(&keys, || {
        site.ok(&["offsite", "push"]);
    });
    let mut all = seen.clone();
    for _ in 0..3 {
        let host = site.new_host();
        let keys = host.paths().backup_dir.join("offsite");
        all.extend(modes_seen_while(&keys, || {
            host.ok(&["offsite", "fetch", "latest", "--identity", host.key()]);
        }));
    }
    let keyish: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.ends_with(".key") || n.starts_with(".tmp-"))
        .collect();
    assert!(!keyish.is_empty(), "the watcher saw no key file: {all:?}");
    assert!(
        keyish.iter().all(|(_, mode)| mode & 0o077 == 0),
        "a key file or its temp file was readable by others: {keyish:?}"
    );
}
