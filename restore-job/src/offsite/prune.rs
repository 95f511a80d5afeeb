//! `offsite prune`: the local retention series applied to the target (its own counts),
//! then garbage collection: an index or chunk is deleted only when no remaining
//! snapshot references it and it is older than the grace period (so a push running
//! meanwhile keeps what it just uploaded). References go first, so a snapshot is never
//! listed with objects missing; when no snapshot would remain, nothing is deleted.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::format::{self, Reference};
use super::store::{Requests, Target};
use crate::error::Result;
use crate::metadata::Kind;
use crate::retention::{self, Candidate, Policy};
use crate::stamp::Stamp;

/// Retention on the target, configured apart from the local one.
#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, env = "ATOCORE_OFFSITE_KEEP_DAILY", default_value_t = 7)]
    pub keep_daily: u32,
    #[arg(long, env = "ATOCORE_OFFSITE_KEEP_WEEKLY", default_value_t = 4)]
    pub keep_weekly: u32,
    #[arg(long, env = "ATOCORE_OFFSITE_KEEP_MONTHLY", default_value_t = 6)]
    pub keep_monthly: u32,
    #[arg(long, env = "ATOCORE_OFFSITE_KEEP_CHROMA_DAILY", default_value_t = 7)]
    pub keep_chroma_daily: u32,
    #[arg(long, env = "ATOCORE_OFFSITE_KEEP_CHROMA_WEEKLY", default_value_t = 4)]
    pub keep_chroma_weekly: u32,
    #[arg(long, env = "ATOCORE_OFFSITE_KEEP_CHROMA_MONTHLY", default_value_t = 6)]
    pub keep_chroma_monthly: u32,
    #[arg(long, env = "ATOCORE_OFFSITE_KEEP_SPECIAL_DAYS", default_value_t = 30)]
    pub keep_special_days: u32,
    /// Keep every snapshot younger than this on top of the series (`24h`, `0` off).
    #[arg(long, env = "ATOCORE_OFFSITE_KEEP_WITHIN", default_value = "24h", value_parser = crate::config::parse_duration_secs)]
    pub keep_within: std::time::Duration,
    /// Unreferenced objects younger than this many hours are kept.
    #[arg(long, env = "ATOCORE_OFFSITE_GRACE_HOURS", default_value_t = 24)]
    pub grace_hours: u32,
    /// Evaluate the policy as of this RFC 3339 time instead of now.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<DateTime<Utc>>,
}

impl PruneArgs {
    /// The target's retention from the environment alone (`ATOCORE_OFFSITE_KEEP_*`,
    /// `ATOCORE_OFFSITE_GRACE_HOURS`), with the CLI's defaults: what a long-running
    /// caller (the sidecar) applies after each push. A bad value is a usage error
    /// naming the variable.
    pub fn from_env() -> Result<PruneArgs> {
        #[derive(clap::Parser)]
        #[command(no_binary_name = true)]
        struct Env {
            #[command(flatten)]
            args: PruneArgs,
        }
        <Env as clap::Parser>::try_parse_from(std::iter::empty::<String>())
            .map(|e| e.args)
            .map_err(|e| {
                crate::error::Error::Usage(format!(
                    "off-site retention: {}",
                    e.to_string().trim().trim_start_matches("error: ")
                ))
            })
    }
}

/// The body of `offsite prune`.
#[derive(Debug, Clone, Serialize)]
pub struct OffsitePruneReport {
    pub target: String,
    #[serde(flatten)]
    pub plan: retention::Plan,
    pub dry_run: bool,
    /// Index and chunk objects deleted (or that would be).
    pub objects_deleted: usize,
    pub bytes_freed: u64,
    /// Unreferenced objects kept because they are younger than the grace period.
    pub objects_in_grace: usize,
    /// Objects of `snapshots/` that are not a readable reference: left alone (a
    /// reference nobody can read keeps nothing; its objects are swept like any
    /// unreferenced ones).
    pub problems: Vec<super::verify::Problem>,
    pub requests: Requests,
}

pub fn prune(target: &Target, args: &PruneArgs) -> Result<OffsitePruneReport> {
    let now = args.now.unwrap_or_else(Utc::now);
    let policy = Policy {
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        chroma_daily: args.keep_chroma_daily,
        chroma_weekly: args.keep_chroma_weekly,
        chroma_monthly: args.keep_chroma_monthly,
        special_days: args.keep_special_days,
        keep_within: TimeDelta::from_std(args.keep_within).unwrap_or(TimeDelta::MAX),
        ..Policy::default()
    };
    let listing = super::references(target)?;
    let refs = listing.refs;
    let candidates: Vec<Candidate> = refs
        .iter()
        .filter_map(|r| {
            Some(Candidate {
                stamp: Stamp::parse(&r.stamp).ok()?,
                kind: r.kind.parse().unwrap_or(Kind::Manual),
                valid: true,
                chroma: r.chroma,
                protected: false,
                pitr_base: false,
            })
        })
        .collect();
    let plan = retention::plan(&candidates, &policy, now);
    let kept: HashSet<&str> = plan.kept.iter().map(String::as_str).collect();
    let keep_refs: Vec<&Reference> = refs
        .iter()
        .filter(|r| kept.contains(r.stamp.as_str()))
        .collect();

    let mut objects_deleted = 0;
    let mut bytes_freed = 0;
    let mut objects_in_grace = 0;
    if !args.dry_run {
        let gone: Vec<String> = plan.deleted.iter().map(|s| Reference::key_for(s)).collect();
        target.delete_many(&gone)?;
    }
    // Never sweep when nothing is kept (an empty or unreadable listing must not
    // empty the target).
    if !keep_refs.is_empty() {
        let referenced: HashSet<String> = keep_refs
            .iter()
            .flat_map(|r| r.objects().map(|(k, _)| k))
            .collect();
        let grace = TimeDelta::hours(i64::from(args.grace_hours));
        let mut sweep = Vec::new();
        for dir in [format::INDEX_DIR, format::CHUNKS_DIR] {
            for l in target.list(dir)? {
                if referenced.contains(&l.key) {
                    continue;
                }
                if now - l.modified < grace {
                    objects_in_grace += 1;
                } else {
                    bytes_freed += l.size;
                    sweep.push(l.key);
                }
            }
        }
        objects_deleted = sweep.len();
        if !args.dry_run {
            target.delete_many(&sweep)?;
        }
    }
    tracing::info!(
        kept = plan.kept.len(),
        deleted = plan.deleted.len(),
        objects_deleted,
        dry_run = args.dry_run,
        "pruned the off-site target"
    );
    Ok(OffsitePruneReport {
        target: target.url().to_string(),
        plan,
        dry_run: args.dry_run,
        objects_deleted,
        bytes_freed,
        objects_in_grace,
        problems: super::verify::Problem::unreadable(listing.unreadable),
        requests: target.requests(),
    })
}
