//! The command line of `atocore-restore-job`: clap arguments, then one function per
//! command over the engine library. Every command prints one JSON document on stdout; logs go
//! to stderr. Exit codes: 0 success, 1 the operation ran and failed, 2 bad usage or
//! refused.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use atocore_restore_job::config::{Paths, RetentionArgs, StorageArgs};
use atocore_restore_job::error::{Error, ErrorBody, Result};
use atocore_restore_job::logging::LogFormat;
use atocore_restore_job::metadata::Kind;
use atocore_restore_job::restore::{ChromaChoice, RestoreOptions};
use atocore_restore_job::snapshot::{BackupHooks, BackupOptions};
use atocore_restore_job::{Stamp, init, prune, restore, sample, snapshot, validate, wal};

/// AtoCore snapshot engine: back up, list, validate, restore and prune snapshots.
#[derive(Debug, Parser)]
#[command(name = "atocore-restore-job", version, about, long_about = None)]
pub(crate) struct Arguments {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Log format on stderr.
    #[arg(long, env = "ATOCORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Take a snapshot, validate it, print its metadata.
    Backup {
        /// Also copy the Chroma store (incrementally: unchanged files are hard links).
        #[arg(long)]
        include_chroma: bool,
        /// Why the snapshot is taken.
        #[arg(long, default_value = "manual", value_parser = parse_kind)]
        kind: Kind,
        /// atocore's build SHA, recorded in the metadata.
        #[arg(long, env = "ATOCORE_BUILD_SHA")]
        build_sha: Option<String>,
        /// Upper bound for the online database copy, in seconds.
        #[arg(long, env = "ATOCORE_BACKUP_TIMEOUT_SECS", default_value = "3600", value_parser = atocore_restore_job::config::parse_duration_secs)]
        backup_timeout_secs: Duration,
    },
    /// List snapshots, oldest first.
    List,
    /// Fully validate one snapshot (hashes, integrity, row counts).
    Validate { stamp: String },
    /// Restore a snapshot into the live paths (atocore must be stopped). With `--at`,
    /// the database is first rebuilt as it was at that moment (a `point-in-time`
    /// snapshot from the newest base before it and the captured WAL), then restored.
    Restore {
        /// The snapshot (with `--at`: the base the replay must start from; optional).
        #[arg(required_unless_present = "at")]
        stamp: Option<String>,
        /// Restore the database to the last transaction captured at or before this
        /// RFC 3339 moment (2026-11-27T10:15:03Z).
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// Confirms that atocore is stopped. Required.
        #[arg(long)]
        confirm_service_stopped: bool,
        /// Skip the pre-restore safety snapshot.
        #[arg(long)]
        no_pre_snapshot: bool,
        /// Leave the live Chroma store alone.
        #[arg(long, conflicts_with = "chroma")]
        no_chroma: bool,
        /// Restore Chroma (refused when the snapshot has none).
        #[arg(long)]
        chroma: bool,
        /// Check everything and print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stage a restore ahead while atocore still runs (validate, copy out, check);
    /// a following `restore` of the same stamp then only swaps files.
    Prepare {
        stamp: String,
        /// Leave the live Chroma store alone.
        #[arg(long, conflicts_with = "chroma")]
        no_chroma: bool,
        /// Restore Chroma (refused when the snapshot has none).
        #[arg(long)]
        chroma: bool,
    },
    /// Make the pending pre-restore snapshot of a restore that deferred it.
    Finalize,
    /// Follow the live database's WAL and capture every commit into
    /// `<backup_dir>/wal/` until stopped (SIGTERM/SIGINT); see docs/pitr.md.
    Stream {
        /// How often the WAL is looked at.
        #[arg(long, env = "ATOCORE_WAL_POLL", default_value = "250ms", value_parser = atocore_restore_job::config::parse_duration_ms)]
        poll: Duration,
        /// Copy, checkpoint and re-pin once the WAL holds this many frames.
        #[arg(long, env = "ATOCORE_WAL_CHECKPOINT_FRAMES", default_value_t = 1000)]
        checkpoint_frames: u64,
        /// Stop after this many looks (for scripts and tests).
        #[arg(long)]
        steps: Option<u64>,
    },
    /// Apply the retention policy. Deletes only valid snapshots no rule keeps; invalid
    /// ones are reported in `invalid` and kept.
    Prune {
        /// Print what would be deleted and why; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        retention: RetentionArgs,
        /// Evaluate the policy as of this RFC 3339 time instead of now.
        #[arg(long, value_name = "RFC3339")]
        now: Option<DateTime<Utc>>,
    },
    /// Delete one snapshot, valid or not (the way to remove one prune reports invalid).
    /// Refused while a pending or staged restore refers to it.
    Delete { stamp: String },
    /// Init-job mode: finish an interrupted restore, perform a pending restore request.
    Init,
    /// Create a sample storage root (default ./atocore-demo), snapshot it with chroma
    /// and validate the snapshot. Ignores the storage flags.
    Demo {
        #[arg(long, default_value = "atocore-demo")]
        dir: PathBuf,
    },
    /// Off-site replication: push, list, verify, fetch, prune (see docs/offsite.md).
    Offsite(atocore_restore_job::offsite::OffsiteCli),
}

fn chroma_choice(no_chroma: bool, chroma: bool) -> ChromaChoice {
    if no_chroma {
        ChromaChoice::Skip
    } else if chroma {
        ChromaChoice::Force
    } else {
        ChromaChoice::Auto
    }
}

fn parse_kind(s: &str) -> std::result::Result<Kind, String> {
    s.parse()
}

/// Run a parsed command line: the JSON to print and the exit code.
pub(crate) fn run(args: Arguments) -> (Value, u8) {
    let paths = Paths::from(&args.storage);
    match dispatch(&paths, args.command) {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(code = e.code(), "{e}");
            (json!(ErrorBody::from(&e)), e.exit_code())
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn dispatch(paths: &Paths, command: Command) -> Result<(Value, u8)> {
    match command {
        Command::Backup {
            include_chroma,
            kind,
            build_sha,
            backup_timeout_secs,
        } => {
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
            }
            let keep_going = || !stop.load(Ordering::Relaxed);
            let meta = snapshot::backup(
                paths,
                &BackupOptions {
                    include_chroma,
                    kind,
                    build_sha,
                    timeout: backup_timeout_secs,
                    source_paths: None,
                },
                BackupHooks {
                    quiesce: None,
                    keep_going: &keep_going,
                },
            )?;
            Ok((to_value(&meta), 0))
        }
        Command::List => Ok((to_value(&snapshot::list_with_windows(paths)?), 0)),
        Command::Validate { stamp } => {
            let stamp = Stamp::parse(&stamp)?;
            let r = validate::validate(paths, &stamp)?;
            let code = if r.valid { 0 } else { 1 };
            Ok((to_value(&r), code))
        }
        Command::Restore {
            stamp,
            at,
            confirm_service_stopped,
            no_pre_snapshot,
            no_chroma,
            chroma,
            dry_run,
        } => {
            let (stamp, point_in_time) = match at {
                None => (stamp.unwrap_or_default(), None),
                Some(at) => {
                    let at = wal::pitr::parse_at(&at)?;
                    if dry_run {
                        let plan = wal::pitr::plan(paths, at, stamp.as_deref())?;
                        return Ok((json!({"dry_run": true, "point_in_time": plan}), 0));
                    }
                    if !confirm_service_stopped {
                        return Err(Error::NotConfirmed(format!("--at {at}")));
                    }
                    let meta = wal::pitr::snapshot_at(paths, at, stamp.as_deref())?;
                    (meta.stamp.clone(), Some(meta))
                }
            };
            // A restore runs to its end once started: SIGTERM is noted, not obeyed.
            // (SIGKILL is safe too: the journal lets the next run finish the job.)
            let ignored = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                let _ = signal_hook::flag::register(sig, Arc::clone(&ignored));
            }
            let r = restore::restore(
                paths,
                &RestoreOptions {
                    stamp,
                    confirmed_service_stopped: confirm_service_stopped,
                    pre_snapshot: !no_pre_snapshot,
                    chroma: chroma_choice(no_chroma, chroma),
                    dry_run,
                    ..RestoreOptions::default()
                },
            )?;
            let code = if r.dry_run || r.restored_integrity_ok {
                0
            } else {
                1
            };
            let mut v = to_value(&r);
            if let (Some(m), Value::Object(o)) = (point_in_time, &mut v) {
                o.insert("point_in_time".into(), to_value(&m.point_in_time));
                o.insert("point_in_time_warnings".into(), to_value(&m.warnings));
            }
            Ok((v, code))
        }
        Command::Prepare {
            stamp,
            no_chroma,
            chroma,
        } => {
            let staged = restore::prepare(paths, &stamp, chroma_choice(no_chroma, chroma))?;
            Ok((to_value(&staged), 0))
        }
        Command::Stream {
            poll,
            checkpoint_frames,
            steps,
        } => {
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
            }
            let opts = wal::StreamOptions {
                checkpoint_frames,
                ..wal::StreamOptions::default()
            };
            let sum = wal::follow::run(paths, opts, poll, steps, &stop);
            Ok((to_value(&sum), 0))
        }
        Command::Finalize => {
            let done = restore::finalize(paths)?;
            Ok((to_value(&done), 0))
        }
        Command::Prune {
            dry_run,
            retention,
            now,
        } => {
            let r = prune::prune(
                paths,
                &(&retention).into(),
                dry_run,
                now.unwrap_or_else(Utc::now),
            )?;
            Ok((to_value(&r), 0))
        }
        Command::Delete { stamp } => Ok((to_value(&prune::delete(paths, &stamp)?), 0)),
        Command::Init => {
            let r = init::init(paths)?;
            let code = r.exit_code();
            Ok((to_value(&r), code))
        }
        Command::Demo { dir } => {
            let created = !dir.exists();
            let demo = sample::create(&dir, if created { 1000 } else { 10 }, 8, 64 * 1024)?;
            let meta = snapshot::backup(
                &demo,
                &BackupOptions {
                    include_chroma: true,
                    ..BackupOptions::default()
                },
                BackupHooks::default(),
            )?;
            let stamp = Stamp::parse(&meta.stamp)?;
            let check = validate::validate(&demo, &stamp)?;
            let listed = snapshot::list(&demo)?;
            let code = if check.valid { 0 } else { 1 };
            Ok((
                json!({
                    "storage_root": demo.storage_root,
                    "created_sample": created,
                    "backup": meta,
                    "validate": check,
                    "snapshots": listed.backups.len(),
                    "next": format!("atocore-restore-job --storage-root {} list", demo.storage_root.display()),
                }),
                code,
            ))
        }
        Command::Offsite(cli) => atocore_restore_job::offsite::run(paths, cli),
    }
}

/// Print the JSON document on stdout. A closed pipe is not an error.
pub(crate) fn print(v: &Value) {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
