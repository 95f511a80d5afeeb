//! The phases of a restore once its journal exists (steps 2 to 5 of the module docs),
//! one function each, every one repeatable from the start after a crash: the journal
//! records the phase reached, and a rerun skips what was already done.

use std::fs;
use std::os::unix::fs::MetadataExt;

use chrono::{SecondsFormat, Utc};

use crate::chroma::{self, Index};
use crate::config::Paths;
use crate::control::{self, Aside, Journal, Phase};
use crate::db;
use crate::durable::{self, mtime_ns, remove_file_if_exists};
use crate::error::{Error, Result};
use crate::faults::crash_point;
use crate::layout::{
    aside_chroma, aside_db, aside_path, aside_registry, journal_path, restore_tmp, staging_dir,
};
use crate::metadata::Metadata;
use crate::stamp::Stamp;

use super::stage::{clear_staging, counts_match, load_index, stage_all, staged_matches};
use super::swap::{free_name, move_db_aside, move_file_aside, move_leftovers, swap_file};
use super::{Parts, RestoreReport};

/// Stage, set aside, swap in, verify, clean up.
pub(super) fn execute(paths: &Paths, j: Journal, meta: &Metadata) -> Result<RestoreReport> {
    let mut run = Run {
        stamp: Stamp::parse(&j.stamp)?,
        paths,
        meta,
        j,
        index: None,
        staged_db: None,
        staged_ahead: false,
        db_renamed: false,
        warnings: Vec::new(),
    };
    run.stage()?;
    run.set_aside()?;
    run.swap_in()?;
    let integrity_ok = run.verify()?;
    run.clean_up(integrity_ok)
}

/// One restore's progress through its phases.
struct Run<'a> {
    paths: &'a Paths,
    meta: &'a Metadata,
    j: Journal,
    stamp: Stamp,
    /// The snapshot's chroma index, when chroma is restored.
    index: Option<Index>,
    /// The staged database as checked, to recognise it once it is live.
    staged_db: Option<fs::Metadata>,
    staged_ahead: bool,
    /// The database went in by a rename (not rewritten in place).
    db_renamed: bool,
    warnings: Vec<String>,
}

impl Run<'_> {
    fn parts(&self) -> Parts {
        Parts {
            registry: self.j.registry,
            chroma: self.j.chroma,
        }
    }

    fn fail(&self, why: String) -> Error {
        Error::RestoreFailed {
            stamp: self.stamp.to_string(),
            why,
        }
    }

    fn enter(&mut self, phase: Phase) -> Result<()> {
        self.j.phase = phase;
        control::write_journal(self.paths, &self.j)
    }

    /// Phase `staging`: stage the snapshot beside the destinations (or reuse what
    /// `prepare` staged). A failure here has touched nothing live: the journal and
    /// the staging are dropped.
    fn stage(&mut self) -> Result<()> {
        let paths = self.paths;
        if self.j.phase == Phase::Staging {
            control::write_journal(paths, &self.j)?;
        }
        crash_point("after-journal");
        let parts = self.parts();
        self.staged_ahead = self.j.attempt == 1 && staged_matches(paths, &self.stamp, &parts);
        let staged = if self.staged_ahead {
            tracing::info!(stamp = %self.stamp, "using the staging prepared ahead");
            if parts.chroma {
                load_index(&paths.snapshot_dir(&self.stamp))
            } else {
                Ok(None)
            }
        } else {
            stage_all(paths, &self.stamp, self.meta, &parts)
        };
        match staged {
            Ok(index) => self.index = index,
            Err(e) => {
                if self.j.phase == Phase::Staging {
                    clear_staging(paths);
                    remove_file_if_exists(&journal_path(paths))?;
                }
                return Err(e);
            }
        }
        let db_tmp = restore_tmp(&paths.db);
        self.staged_db = Some(fs::metadata(&db_tmp).map_err(Error::io("stat", &db_tmp))?);
        Ok(())
    }

    /// Phase `aside`: the live state is renamed out of the way; that is the safety
    /// copy. Only what is still live moves, and nothing is ever renamed over.
    fn set_aside(&mut self) -> Result<()> {
        if self.j.phase > Phase::Aside {
            return Ok(());
        }
        let paths = self.paths;
        self.enter(Phase::Aside)?;
        crash_point("before-swap");
        let aside = match control::pending_aside(paths)? {
            Some(a) if a.restore_id == self.j.id => a,
            Some(other) => {
                // Never reached through `restore`/`init`, which finalize an earlier
                // aside copy first; refusing keeps its files from being mistaken for
                // this restore's.
                return Err(self.fail(format!(
                    "the live state moved aside by the restore of `{}` is still waiting to become a snapshot; run `atocore-restore-job finalize` first",
                    other.restored_stamp
                )));
            }
            None => {
                // Anything already at the aside names belongs to no pending restore:
                // move it to a unique folder (never delete it, never rename over it).
                let moved = move_leftovers(paths, &self.j.id, self.j.registry, self.j.chroma)?;
                self.warnings.extend(moved);
                let a = Aside {
                    restore_id: self.j.id.clone(),
                    restored_stamp: self.j.stamp.clone(),
                    make_snapshot: self.j.pre_snapshot,
                    db: aside_db(paths),
                    registry: aside_registry(paths),
                    chroma: self.j.chroma.then(|| aside_chroma(paths)),
                    snapshot: None,
                    created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                    kept_because: None,
                };
                durable::write_json_atomic(&aside_path(paths), &a)?;
                a
            }
        };
        move_db_aside(paths, &aside.db)?;
        if paths.db.exists() && !aside.db.exists() {
            // Never rename the staged file over a live database nobody set aside.
            return Err(self.fail(format!(
                "the live database {} could not be set aside as {}; nothing was replaced, the live state is as before",
                paths.db.display(),
                aside.db.display()
            )));
        }
        crash_point("after-wal-removed");
        if self.j.registry {
            move_file_aside(&paths.registry, &aside.registry)?;
        }
        if let Some(chroma_aside) = &aside.chroma {
            durable::create_dir_all(&paths.chroma)?;
            chroma::move_out(&paths.chroma, chroma_aside, "chroma-moved-aside")?;
        }
        Ok(())
    }

    /// Phase `swap-in`: the staged files take the live names. From here on, whatever
    /// is live is this restore's own partial swap-in, so it is simply redone.
    fn swap_in(&mut self) -> Result<()> {
        let paths = self.paths;
        if self.j.phase < Phase::SwapIn {
            self.enter(Phase::SwapIn)?;
        }
        for f in db::wal_shm_and_journal(&paths.db) {
            remove_file_if_exists(&f)?;
        }
        self.db_renamed = swap_file(&restore_tmp(&paths.db), &paths.db)?;
        crash_point("after-db-swap");
        if self.j.registry {
            swap_file(&restore_tmp(&paths.registry), &paths.registry)?;
        }
        if let Some(index) = &self.index {
            let trash = free_name(&staging_dir(paths), "trash");
            chroma::move_out(&paths.chroma, &trash, "chroma-trash")?;
            chroma::move_in(&staging_dir(paths).join("new"), &paths.chroma, &index.root)?;
        }
        Ok(())
    }

    /// Phase `verifying`: the live database is the very file checked while staged
    /// (or is checked again in full), and the chroma tree equals the snapshot's.
    fn verify(&mut self) -> Result<bool> {
        let paths = self.paths;
        self.enter(Phase::Verifying)?;
        crash_point("before-verify");
        let live = fs::metadata(&paths.db).map_err(Error::io("stat", &paths.db))?;
        // A rename changes neither the inode, the size nor the mtime; any write would
        // change the mtime.
        let same_file = self.db_renamed
            && self.staged_db.as_ref().is_some_and(|s| {
                live.ino() == s.ino() && live.len() == s.len() && mtime_ns(&live) == mtime_ns(s)
            });
        let mut integrity_ok = if same_file {
            // The live database is the very inode that passed integrity_check and the
            // row counts while staged, unwritten since (same size and mtime).
            true
        } else {
            let (problems, facts) = db::check_file(&paths.db);
            self.warnings
                .extend(problems.iter().map(|p| format!("integrity_check: {p}")));
            problems.is_empty() && facts.is_some_and(|f| counts_match(&f, self.meta))
        };
        if let Some(index) = &self.index {
            let diffs = chroma::differences(&paths.chroma, index)?;
            if !diffs.is_empty() {
                integrity_ok = false;
                self.warnings
                    .extend(diffs.into_iter().map(|d| format!("chroma_{d}")));
            }
        }
        Ok(integrity_ok)
    }

    /// Drop the staging (kept when the checks failed, for inspection) and the
    /// journal; the aside copy stays until finalize.
    fn clean_up(self, integrity_ok: bool) -> Result<RestoreReport> {
        let paths = self.paths;
        crash_point("before-cleanup");
        if integrity_ok {
            clear_staging(paths);
            if let Ok(rd) = fs::read_dir(staging_dir(paths)) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with("trash") {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
            if paths.chroma.is_dir() {
                durable::sync_path(&paths.chroma)?;
            }
        }
        remove_file_if_exists(&journal_path(paths))?;
        durable::sync_path(&paths.restore_dir())?;
        tracing::info!(stamp = %self.j.stamp, integrity_ok, staged_ahead = self.staged_ahead, "restore swapped in");
        Ok(RestoreReport {
            stamp: self.j.stamp,
            db_restored: true,
            registry_restored: self.j.registry,
            chroma_restored: self.j.chroma,
            restored_integrity_ok: integrity_ok,
            pre_restore_pending: control::pending_aside(paths)?.is_some(),
            staged_ahead: self.staged_ahead,
            warnings: self.warnings,
            ..RestoreReport::default()
        })
    }
}
