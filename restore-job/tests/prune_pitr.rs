//! Retention never makes a moment of the point-in-time window unrecoverable, as a
//! property: random schedules of backups, base snapshots, stream generations, database
//! replacements (restores) and prunes over simulated days; before each prune, random
//! moments of the window are planned, and each one a captured generation reaches
//! plans to the same `restored_to` after the prune.
//!
//! Everything real runs: the streamer follows a live SQLite database a writer commits
//! to, snapshots and restores are the engine's own, `prune` is the real binary and the
//! plan is [`wal::pitr::plan`]. Only time is simulated: after each operation the files
//! it wrote get the current simulated time (a segment's captured time in its name and
//! header, a snapshot's stamp, folder and pin), and the simulated clock moves on by a
//! random step. Every operation runs alone, so the order of all these times is the
//! order in which things happened, as in a real run days long.
//!
//! `ATOCORE_PITR_SEED` replays a schedule; a failure prints its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use atocore_restore_job::wal::{StreamOptions, Streamer, follow, generation, pitr, segment};
use atocore_restore_job::{BackupHooks, BackupOptions, Kind, RestoreOptions, Stamp, restore};
use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::Connection;

use crate::util::{BIN, Install, Run};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// Simulated time, and which files already carry it.
struct Sim {
    now_ms: i64,
    /// Segments already given a simulated time: (generation, seq).
    segments: BTreeSet<(String, u64)>,
    /// Snapshot folders already renamed to a simulated stamp.
    snapshots: BTreeSet<String>,
}

impl Sim {
    fn now(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.now_ms).unwrap()
    }

    fn advance(&mut self, rng: &mut StdRng, min_ms: i64, max_ms: i64) {
        self.now_ms += rng.random_range(min_ms..=max_ms);
    }

    /// Give every file the last operation wrote the current simulated time.
    fn settle(&mut self, i: &Install) {
        let wal = i.paths.backup_dir.join("wal");
        let mut fresh: Vec<(String, u64, PathBuf)> = Vec::new();
        for g in std::fs::read_dir(&wal).into_iter().flatten().flatten() {
            let gid = g.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(g.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some((seq, _)) = segment::parse_name(&name)
                    && !self.segments.contains(&(gid.clone(), seq))
                {
                    fresh.push((gid.clone(), seq, f.path()));
                }
            }
        }
        fresh.sort();
        for (gid, seq, path) in fresh {
            self.now_ms += 7;
            retime_segment(&path, seq, self.now_ms);
            self.segments.insert((gid, seq));
        }
        let snaps = i.paths.snapshots_dir();
        let mut new_snaps: Vec<String> = std::fs::read_dir(&snaps)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && !self.snapshots.contains(n))
            .collect();
        new_snaps.sort();
        for real in new_snaps {
            // Stamps have whole seconds and never repeat.
            self.now_ms = (self.now_ms / 1000 + 1) * 1000;
            let stamp = Stamp::from_time(self.now()).to_string();
            restamp_snapshot(i, &real, &stamp, self.now_ms);
            self.snapshots.insert(stamp);
        }
    }
}

/// Set a segment's captured time (header and file name); its body is unchanged. The
/// simulated time passes on the boot-time clock too (`mono_ms` moves by as much), so
/// no clock step appears where there was none.
fn retime_segment(path: &Path, seq: u64, ms: i64) {
    let bytes = std::fs::read(path).unwrap();
    let first = bytes.iter().position(|b| *b == b'\n').unwrap();
    let second = first + 1 + bytes[first + 1..].iter().position(|b| *b == b'\n').unwrap();
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[first + 1..second]).unwrap();
    if let (Some(mono), Some(was)) = (h["mono_ms"].as_i64(), h["captured_ms"].as_i64()) {
        h["mono_ms"] = (mono + (ms - was)).into();
    }
    h["captured_ms"] = ms.into();
    h["captured_at"] = generation::ms_to_rfc3339(ms).into();
    let mut out = bytes[..=first].to_vec();
    out.extend_from_slice(h.to_string().as_bytes());
    out.extend_from_slice(&bytes[second..]);
    let to = path.with_file_name(segment::file_name(seq, ms));
    std::fs::write(&to, out).unwrap();
    if to != path {
        std::fs::remove_file(path).unwrap();
    }
}

/// Rename a snapshot to `stamp`, pinned at `ms`; a generation record naming it as its
/// start follows.
fn restamp_snapshot(i: &Install, real: &str, stamp: &str, ms: i64) {
    let snaps = i.paths.snapshots_dir();
    let dir = snaps.join(stamp);
    std::fs::rename(snaps.join(real), &dir).unwrap();
    let meta_path = dir.join("backup-metadata.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    m["stamp"] = stamp.into();
    m["created_at"] = generation::ms_to_rfc3339(ms).into();
    m["backup_root"] = dir.display().to_string().into();
    if m["wal"].is_object() {
        m["wal"]["pinned_ms"] = ms.into();
        m["wal"]["pinned_at"] = generation::ms_to_rfc3339(ms).into();
    }
    std::fs::write(&meta_path, m.to_string()).unwrap();
    let wal = i.paths.backup_dir.join("wal");
    for g in std::fs::read_dir(&wal).into_iter().flatten().flatten() {
        let rec = g.path().join(generation::RECORD_FILE);
        let Ok(bytes) = std::fs::read(&rec) else {
            continue;
        };
        let mut r: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if r["base"] == real {
            r["base"] = stamp.into();
            std::fs::write(&rec, r.to_string()).unwrap();
        }
    }
}

fn open_writer(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS ticks (n INTEGER PRIMARY KEY, pad BLOB);")
        .unwrap();
    c
}

fn commit(c: &Connection, rng: &mut StdRng, rows: usize) {
    for _ in 0..rows {
        let pad: Vec<u8> = (0..rng.random_range(50..600))
            .map(|_| rng.random())
            .collect();
        c.execute("INSERT INTO ticks (pad) VALUES (?1)", [pad])
            .unwrap();
    }
}

/// What a plan said: `restored_to` and generation, or the error code.
type Outcome = Result<(String, Option<String>), String>;

fn plan_at(i: &Install, at_ms: i64) -> Outcome {
    let at = Utc.timestamp_millis_opt(at_ms).unwrap();
    pitr::plan(&i.paths, at, None)
        .map(|p| (p.restored_to, p.generation))
        .map_err(|e| e.code().to_string())
}

/// The moments of `[from, now]` a captured generation reaches (from its first base to
/// its last segment, or to `now` for the newest): their plans, as of now.
fn reachable_moments(
    i: &Install,
    rng: &mut StdRng,
    from: i64,
    now: i64,
    n: usize,
) -> Vec<(i64, Outcome)> {
    let gens = generation::list(&i.paths).unwrap();
    let newest = gens.last().map(|g| g.record.id.clone());
    let ends: BTreeMap<String, i64> = gens
        .iter()
        .map(|g| {
            let end = if Some(&g.record.id) == newest.as_ref() {
                now
            } else {
                g.segments.last().map_or(i64::MIN, |s| s.captured_ms)
            };
            (g.record.id.clone(), end)
        })
        .collect();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = rng.random_range(from..=now);
        let o = plan_at(i, t);
        if let Ok((_, Some(g))) = &o
            && t <= ends[g]
        {
            out.push((t, o));
        }
    }
    out
}

fn prune(i: &Install, now: DateTime<Utc>, dry: bool, policy: &[(&str, String)]) -> Run {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--storage-root")
        .arg(i.root())
        .args(["prune", "--now", &now.to_rfc3339()])
        .env("ATOCORE_LOG_FORMAT", "text");
    if dry {
        cmd.arg("--dry-run");
    }
    for (k, v) in policy {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

fn backup(i: &Install, kind: Kind) {
    let opts = BackupOptions {
        kind,
        ..Default::default()
    };
    atocore_restore_job::snapshot::backup(&i.paths, &opts, BackupHooks::default()).unwrap();
}

fn seed() -> u64 {
    std::env::var("ATOCORE_PITR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_millis() as u64)
}

/// The property, over several schedules.
#[test]
fn prune_keeps_every_moment_of_the_pitr_window_restorable() {
    let runs: u64 = std::env::var("ATOCORE_PITR_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let first = seed();
    for k in 0..runs {
        one_schedule(first.wrapping_add(k));
    }
}

fn one_schedule(seed: u64) {
    eprintln!("prune_pitr: seed {seed} (ATOCORE_PITR_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let i = Install::with_rows(20);
    let pitr_days: i64 = rng.random_range(1..=3);
    let policy: Vec<(&str, String)> = vec![
        ("ATOCORE_PITR_DAYS", pitr_days.to_string()),
        ("ATOCORE_KEEP_DAILY", rng.random_range(0..=2u32).to_string()),
        (
            "ATOCORE_KEEP_WEEKLY",
            rng.random_range(0..=1u32).to_string(),
        ),
        (
            "ATOCORE_KEEP_MONTHLY",
            rng.random_range(0..=1u32).to_string(),
        ),
        ("ATOCORE_KEEP_CHROMA_DAILY", "0".into()),
        ("ATOCORE_KEEP_CHROMA_WEEKLY", "0".into()),
        ("ATOCORE_KEEP_CHROMA_MONTHLY", "0".into()),
        (
            "ATOCORE_KEEP_SPECIAL_DAYS",
            rng.random_range(0..=2u32).to_string(),
        ),
        (
            "ATOCORE_KEEP_WITHIN",
            ["0", "6h", "24h"][rng.random_range(0..3)].into(),
        ),
    ];
    let ctx = format!("seed {seed}, policy {policy:?}");
    let mut sim = Sim {
        now_ms: Utc
            .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
            .unwrap()
            .timestamp_millis(),
        segments: BTreeSet::new(),
        snapshots: BTreeSet::new(),
    };
    // The sample's own snapshot-free start: give the install's files simulated time.
    sim.settle(&i);
    let opts = StreamOptions {
        checkpoint_frames: rng.random_range(8..40),
        ..Default::default()
    };
    let mut streamer = Some(Streamer::new(&i.paths, opts.clone()));
    let mut writer = Some(open_writer(&i.paths.db));
    let days = rng.random_range(5..=8);
    let (mut checked, mut prunes, mut deleted, mut wal_removed) = (0usize, 0, 0usize, 0usize);
    let (mut restores, mut restarts) = (0, 0);
    for day in 0..days {
        let day_start = sim.now_ms - sim.now_ms.rem_euclid(DAY_MS);
        let scheduled_at = day_start + 6 * HOUR_MS;
        let mut scheduled_done = false;
        while sim.now_ms < day_start + DAY_MS {
            if !scheduled_done && sim.now_ms >= scheduled_at {
                scheduled_done = true;
                backup(&i, Kind::Scheduled);
                sim.settle(&i);
                // The sidecar's retention runs right after the scheduled snapshot.
                if rng.random_bool(0.7) {
                    let (d, w) = prune_and_check(
                        &i,
                        &mut rng,
                        &mut sim,
                        pitr_days,
                        &policy,
                        &ctx,
                        &mut checked,
                    );
                    prunes += 1;
                    deleted += d;
                    wal_removed += w;
                }
                continue;
            }
            let roll: f64 = rng.random();
            if let (Some(c), Some(s)) = (writer.as_ref(), streamer.as_mut()) {
                let rows = rng.random_range(0..12);
                commit(c, &mut rng, rows);
                s.step().unwrap();
                sim.settle(&i);
                if s.needs_base() && rng.random_bool(0.8) {
                    follow::take_base(s, &i.paths, &|| true).unwrap();
                    sim.settle(&i);
                }
            }
            if roll < 0.05 {
                // A manual snapshot.
                backup(&i, Kind::Manual);
                sim.settle(&i);
            } else if roll < 0.07 && streamer.is_some() {
                // A database replacement: an orchestrated restore of a random snapshot.
                streamer.as_mut().unwrap().release();
                drop(writer.take());
                let stamps: Vec<String> = sim.snapshots.iter().cloned().collect();
                let valid: Vec<String> = stamps
                    .into_iter()
                    .filter(|s| i.snapshot_dir(s).is_dir())
                    .collect();
                if let Some(stamp) = valid.get(rng.random_range(0..valid.len().max(1))) {
                    restore::restore(
                        &i.paths,
                        &RestoreOptions {
                            stamp: stamp.clone(),
                            confirmed_service_stopped: true,
                            pre_snapshot: rng.random_bool(0.5),
                            ..Default::default()
                        },
                    )
                    .unwrap_or_else(|e| panic!("restore {stamp}: {e} ({ctx})"));
                    sim.settle(&i);
                    restores += 1;
                }
                writer = Some(open_writer(&i.paths.db));
            } else if roll < 0.09 && streamer.is_some() {
                // The sidecar stops for a while; atocore writes and checkpoints meanwhile,
                // so the next start is a new chain.
                streamer = None;
                restarts += 1;
                let c = writer.as_ref().unwrap();
                commit(c, &mut rng, 5);
                let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                commit(c, &mut rng, 3);
            } else if roll < 0.15 && streamer.is_none() {
                streamer = Some(Streamer::new(&i.paths, opts.clone()));
            } else if roll < 0.17 {
                let (d, w) = prune_and_check(
                    &i,
                    &mut rng,
                    &mut sim,
                    pitr_days,
                    &policy,
                    &ctx,
                    &mut checked,
                );
                prunes += 1;
                deleted += d;
                wal_removed += w;
            }
            sim.advance(&mut rng, 10 * 60_000, 3 * HOUR_MS);
        }
        eprintln!(
            "prune_pitr: day {day} done, {} snapshots",
            sim.snapshots.len()
        );
    }
    let (d, w) = prune_and_check(
        &i,
        &mut rng,
        &mut sim,
        pitr_days,
        &policy,
        &ctx,
        &mut checked,
    );
    prunes += 1;
    deleted += d;
    wal_removed += w;
    let generations = generation::list(&i.paths).unwrap().len();
    eprintln!(
        "prune_pitr: seed {seed}: {days} days, {restores} restores, {restarts} streamer restarts, {prunes} prunes deleting {deleted} snapshots and {wal_removed} WAL files, {generations} generations left, {checked} moments checked"
    );
    assert!(checked > 0, "no moment was checked ({ctx})");
}

/// Plan random moments of the window, prune (a dry run first, which must list the
/// same), plan them again: the same `restored_to` from the same generation.
fn prune_and_check(
    i: &Install,
    rng: &mut StdRng,
    sim: &mut Sim,
    pitr_days: i64,
    policy: &[(&str, String)],
    ctx: &str,
    checked: &mut usize,
) -> (usize, usize) {
    let now = sim.now();
    let from = sim.now_ms - pitr_days * DAY_MS;
    let before = reachable_moments(i, rng, from, sim.now_ms, 60);
    let dry = prune(i, now, true, policy);
    assert_eq!(dry.code, 0, "{}\n{} ({ctx})", dry.stdout, dry.stderr);
    let real = prune(i, now, false, policy);
    assert_eq!(real.code, 0, "{}\n{} ({ctx})", real.stdout, real.stderr);
    for field in ["kept", "deleted", "wal_removed"] {
        assert_eq!(
            dry.json[field], real.json[field],
            "the dry run listed other {field} than the prune did at {now} ({ctx})"
        );
    }
    for (t, was) in &before {
        let is = plan_at(i, *t);
        assert_eq!(
            &is,
            was,
            "the moment {} restored to {was:?} before the prune at {now} and to {is:?} after it ({ctx})\nprune: {}",
            generation::ms_to_rfc3339(*t),
            real.stdout
        );
    }
    *checked += before.len();
    let gone = |f: &str| real.json[f].as_array().map_or(0, |a| a.len());
    (gone("deleted"), gone("wal_removed"))
}

/// The two cases of issue 16 item 3, by hand: a base and a manual snapshot the same
/// day (the default prune deleted the base, and a moment between them failed
/// `no_point_in_time`), and a database replacement (prune deleted the old
/// generation's last base, then the generation).
#[test]
fn prune_keeps_the_bases_and_the_generation_a_moment_of_the_window_needs() {
    let mut rng = StdRng::seed_from_u64(16);
    let i = Install::with_rows(20);
    let mut sim = Sim {
        now_ms: Utc
            .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
            .unwrap()
            .timestamp_millis(),
        segments: BTreeSet::new(),
        snapshots: BTreeSet::new(),
    };
    let opts = StreamOptions {
        checkpoint_frames: 20,
        ..Default::default()
    };
    let mut s = Streamer::new(&i.paths, opts.clone());
    let mut c = open_writer(&i.paths.db);
    let mut hours = |s: &mut Streamer, c: &Connection, sim: &mut Sim, n: usize| {
        for _ in 0..n {
            commit(c, &mut rng, 3);
            s.step().unwrap();
            sim.settle(&i);
            sim.now_ms += HOUR_MS;
        }
    };
    hours(&mut s, &c, &mut sim, 2);
    follow::take_base(&mut s, &i.paths, &|| true)
        .unwrap()
        .expect("a base");
    sim.settle(&i);
    let base = sim.snapshots.last().unwrap().clone();
    hours(&mut s, &c, &mut sim, 3);
    backup(&i, Kind::Manual);
    sim.settle(&i);
    let manual = sim.snapshots.last().unwrap().clone();
    hours(&mut s, &c, &mut sim, 2);
    let old_generation = s.generation().unwrap().to_string();
    // The database replaced by a restore of the manual snapshot.
    s.release();
    drop(c);
    restore::restore(
        &i.paths,
        &RestoreOptions {
            stamp: manual.clone(),
            confirmed_service_stopped: true,
            ..Default::default()
        },
    )
    .unwrap();
    sim.settle(&i);
    c = open_writer(&i.paths.db);
    hours(&mut s, &c, &mut sim, 1);
    assert_ne!(s.generation().unwrap(), old_generation);
    follow::take_base(&mut s, &i.paths, &|| true)
        .unwrap()
        .expect("a base of the new generation");
    sim.settle(&i);
    hours(&mut s, &c, &mut sim, 2);

    let meta = |stamp: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(i.snapshot_dir(stamp).join("backup-metadata.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(meta(&base)["kind"], "wal-base");
    let pinned = |stamp: &str| meta(stamp)["wal"]["pinned_ms"].as_i64().unwrap();
    // Between the base and the manual snapshot, and between the manual snapshot and
    // the replacement: both replay the old generation.
    let moments = [pinned(&base) + HOUR_MS, pinned(&manual) + HOUR_MS];
    let before: Vec<Outcome> = moments.iter().map(|t| plan_at(&i, *t)).collect();
    for o in &before {
        assert_eq!(
            o.as_ref().map(|(_, g)| g.clone()),
            Ok(Some(old_generation.clone()))
        );
    }
    let r = prune(&i, sim.now(), false, &[("ATOCORE_KEEP_WITHIN", "0".into())]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let why = "kept: pitr-base (a restore to a moment of the last 7 days starts from it)";
    assert_eq!(r.json["reasons"][&base], why, "{}", r.stdout);
    assert_eq!(r.json["reasons"][&manual], why, "{}", r.stdout);
    assert!(
        i.paths
            .backup_dir
            .join("wal")
            .join(&old_generation)
            .is_dir(),
        "{}",
        r.stdout
    );
    let after: Vec<Outcome> = moments.iter().map(|t| plan_at(&i, *t)).collect();
    assert_eq!(after, before, "{}", r.stdout);
}
