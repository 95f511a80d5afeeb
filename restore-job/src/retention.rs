//! Retention: which snapshots `prune` keeps, restic-style.
//!
//! Calendar buckets are UTC days, ISO weeks and months. For each of the `daily` most
//! recent days that have a valid snapshot, the newest snapshot of that day is kept;
//! likewise for weeks and months. One snapshot may fill a daily, a weekly and a monthly
//! slot at once (restic: "the 7 dailies already include 1 weekly"), so "monthly" keeps
//! the *last* snapshot of each month.
//!
//! Snapshots with chroma form a second series with its own counts, over the same kind of
//! buckets: the default schedule takes chroma only on Sundays, so the newest snapshot of
//! a day, week or month is rarely a chroma one, and without this series chroma history
//! would shrink to a few weeks. The newest valid chroma snapshot is always kept.
//!
//! `pre-restore` and `drill` snapshots do not count in the buckets and are kept for
//! `special_days`. On top of the series, every snapshot younger than `keep_within`
//! (24 h by default, restic's `--keep-within`) is kept (`within`): a snapshot someone
//! just asked for never disappears because a later one "covers" its day. A snapshot
//! that a restore to a moment of the point-in-time window starts from (decided by
//! [`wal::pitr::needs`](crate::wal::pitr::needs), passed in as
//! [`Candidate::pitr_base`]) is kept too (`pitr-base`). The newest valid snapshot is
//! never deleted. **Only valid snapshots
//! are ever deleted**: an invalid one (or one whose metadata cannot be read) counts in
//! no bucket and is kept, for the operator to inspect and remove with `delete`. When the
//! policy would delete every snapshot, nothing is deleted.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde::Serialize;

use crate::config::RetentionArgs;
use crate::metadata::Kind;
use crate::stamp::Stamp;

/// The counts of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    /// The chroma series: the same buckets over the snapshots that include chroma.
    pub chroma_daily: u32,
    pub chroma_weekly: u32,
    pub chroma_monthly: u32,
    pub special_days: u32,
    /// How far back point-in-time recovery reaches (days).
    pub pitr_days: u32,
    /// Every snapshot younger than this is kept, whatever the series say.
    pub keep_within: TimeDelta,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            daily: 7,
            weekly: 4,
            monthly: 6,
            chroma_daily: 7,
            chroma_weekly: 4,
            chroma_monthly: 6,
            special_days: 30,
            pitr_days: 7,
            keep_within: TimeDelta::hours(24),
        }
    }
}

/// What retention needs to know of one snapshot.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub stamp: Stamp,
    pub kind: Kind,
    /// Passed the structural check. An invalid snapshot is never deleted.
    pub valid: bool,
    /// Holds a chroma copy: counts in the chroma series too.
    pub chroma: bool,
    /// Referenced by a pending restore request, journal or staged restore: never deleted.
    pub protected: bool,
    /// A restore to some moment of the point-in-time window starts from it.
    pub pitr_base: bool,
}

/// The decision: stamps kept and deleted (oldest first), with a reason for each.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Plan {
    pub kept: Vec<String>,
    pub deleted: Vec<String>,
    pub reasons: BTreeMap<String, String>,
}

type BucketKey = fn(&DateTime<Utc>) -> String;
/// One series: the prefix of its reasons, its members (newest first), its buckets.
type Series<'a> = (&'a str, &'a [&'a Candidate], [(&'a str, u32, BucketKey); 3]);

fn day_key(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn week_key(t: &DateTime<Utc>) -> String {
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

fn month_key(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m").to_string()
}

/// Decide, at time `now`, what to keep.
pub fn plan(candidates: &[Candidate], policy: &Policy, now: DateTime<Utc>) -> Plan {
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |s: &Stamp, why: String| reasons.entry(s.to_string()).or_default().push(why);

    let mut newest_first: Vec<&Candidate> = candidates.iter().collect();
    newest_first.sort_by(|a, b| b.stamp.cmp(&a.stamp));

    // Calendar buckets over valid regular snapshots, then over those with chroma.
    let regular: Vec<&Candidate> = newest_first
        .iter()
        .copied()
        .filter(|c| c.valid && !c.kind.is_special())
        .collect();
    let with_chroma: Vec<&Candidate> = regular.iter().copied().filter(|c| c.chroma).collect();
    let series: [Series; 2] = [
        (
            "",
            &regular,
            [
                ("daily", policy.daily, day_key),
                ("weekly", policy.weekly, week_key),
                ("monthly", policy.monthly, month_key),
            ],
        ),
        (
            "chroma ",
            &with_chroma,
            [
                ("daily", policy.chroma_daily, day_key),
                ("weekly", policy.chroma_weekly, week_key),
                ("monthly", policy.chroma_monthly, month_key),
            ],
        ),
    ];
    for (prefix, members, buckets) in series {
        for (name, count, key) in buckets {
            let mut seen: HashSet<String> = HashSet::new();
            for c in members {
                if seen.len() >= count as usize {
                    break;
                }
                let k = key(&c.stamp.time());
                if seen.insert(k.clone()) {
                    add(&c.stamp, format!("{prefix}{name} {k}"));
                }
            }
        }
    }

    let special_cutoff = now - TimeDelta::days(i64::from(policy.special_days));
    for c in &newest_first {
        if c.kind.is_special() && c.valid && c.stamp.time() >= special_cutoff {
            add(
                &c.stamp,
                format!(
                    "{} snapshot younger than {} days",
                    c.kind.as_str(),
                    policy.special_days
                ),
            );
        }
        // Zero turns it off; a stamp ahead of `now` (a clock step, or stamps bumped
        // to stay unique) counts as young.
        if c.valid && !policy.keep_within.is_zero() && now - c.stamp.time() < policy.keep_within {
            add(&c.stamp, format!("within {}", span(policy.keep_within)));
        }
        if c.pitr_base {
            add(
                &c.stamp,
                format!(
                    "pitr-base (a restore to a moment of the last {} days starts from it)",
                    policy.pitr_days
                ),
            );
        }
        if c.protected {
            add(&c.stamp, "referenced by a pending or staged restore".into());
        }
        if !c.valid {
            add(
                &c.stamp,
                "invalid snapshot (see `invalid`): prune never deletes it; remove it with `delete` once inspected".into(),
            );
        }
    }
    if let Some(newest) = newest_first.iter().find(|c| c.valid) {
        add(&newest.stamp, "newest valid snapshot".into());
    }
    if let Some(newest) = newest_first.iter().find(|c| c.valid && c.chroma) {
        add(&newest.stamp, "newest valid chroma snapshot".into());
    }

    let kept: BTreeSet<String> = reasons.keys().cloned().collect();
    let mut out = Plan::default();
    if kept.is_empty() && !candidates.is_empty() {
        for c in candidates {
            out.kept.push(c.stamp.to_string());
            out.reasons.insert(
                c.stamp.to_string(),
                "kept: the policy would delete every snapshot, so nothing is deleted".into(),
            );
        }
        out.kept.sort();
        return out;
    }
    for c in candidates {
        let s = c.stamp.to_string();
        if let Some(why) = reasons.get(&s) {
            out.kept.push(s.clone());
            out.reasons.insert(s, format!("kept: {}", why.join(", ")));
        } else {
            // Only valid snapshots get here: every invalid one has a reason above.
            let why = if c.kind.is_special() {
                format!(
                    "deleted: {} snapshot older than {} days",
                    c.kind.as_str(),
                    policy.special_days
                )
            } else if c.chroma {
                "deleted: not the newest of a kept day, week or month, with or without chroma"
                    .to_string()
            } else {
                "deleted: not the newest of a kept day, week or month".to_string()
            };
            out.deleted.push(s.clone());
            out.reasons.insert(s, why);
        }
    }
    out.kept.sort();
    out.deleted.sort();
    out
}

/// A span as the reasons show it: whole hours as `24h`, anything else as humantime
/// writes it (`90s`, `1h 30m`).
fn span(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs > 0 && secs % 3600 == 0 && d.subsec_nanos() == 0 {
        format!("{}h", secs / 3600)
    } else {
        humantime::format_duration(d.to_std().unwrap_or_default()).to_string()
    }
}

/// The settings default to the policy's defaults.
impl Default for RetentionArgs {
    fn default() -> Self {
        let p = Policy::default();
        RetentionArgs {
            keep_daily: p.daily,
            keep_weekly: p.weekly,
            keep_monthly: p.monthly,
            keep_chroma_daily: p.chroma_daily,
            keep_chroma_weekly: p.chroma_weekly,
            keep_chroma_monthly: p.chroma_monthly,
            keep_special_days: p.special_days,
            pitr_days: p.pitr_days,
            keep_within: p.keep_within.to_std().unwrap_or_default(),
        }
    }
}

/// The policy from its settings (flags with environment mirrors).
impl From<&RetentionArgs> for Policy {
    fn from(a: &RetentionArgs) -> Policy {
        Policy {
            daily: a.keep_daily,
            weekly: a.keep_weekly,
            monthly: a.keep_monthly,
            chroma_daily: a.keep_chroma_daily,
            chroma_weekly: a.keep_chroma_weekly,
            chroma_monthly: a.keep_chroma_monthly,
            special_days: a.keep_special_days,
            pitr_days: a.pitr_days,
            keep_within: TimeDelta::from_std(a.keep_within).unwrap_or(TimeDelta::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn c(s: &str, kind: Kind, valid: bool) -> Candidate {
        Candidate {
            stamp: Stamp::parse(s).unwrap(),
            kind,
            valid,
            chroma: false,
            protected: false,
            pitr_base: false,
        }
    }

    fn with_chroma(mut c: Candidate) -> Candidate {
        c.chroma = true;
        c
    }

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
    }

    #[test]
    fn several_per_day_keeps_the_newest() {
        let cs = vec![
            c("20261120T060000Z", Kind::Scheduled, true),
            c("20261120T120000Z", Kind::Manual, true),
            c("20261120T180000Z", Kind::Manual, true),
        ];
        let p = plan(&cs, &Policy::default(), at(2026, 11, 21));
        assert_eq!(p.kept, vec!["20261120T180000Z"]);
        assert_eq!(p.deleted, vec!["20261120T060000Z", "20261120T120000Z"]);
    }

    #[test]
    fn gaps_count_days_that_have_snapshots() {
        // A 10-day outage: the 7 dailies reach back past it.
        let mut cs = vec![];
        for d in 1..=5 {
            cs.push(c(&format!("202611{d:02}T060000Z"), Kind::Scheduled, true));
        }
        for d in 16..=18 {
            cs.push(c(&format!("202611{d:02}T060000Z"), Kind::Scheduled, true));
        }
        let p = plan(
            &cs,
            &Policy {
                weekly: 0,
                monthly: 0,
                ..Policy::default()
            },
            at(2026, 11, 18),
        );
        assert_eq!(
            p.kept,
            vec![
                "20261102T060000Z",
                "20261103T060000Z",
                "20261104T060000Z",
                "20261105T060000Z",
                "20261116T060000Z",
                "20261117T060000Z",
                "20261118T060000Z"
            ]
        );
    }

    #[test]
    fn iso_week_53_is_one_bucket_across_new_year() {
        // 2026-12-31 (Thu) and 2027-01-03 (Sun) are both 2026-W53.
        let cs = vec![
            c("20261231T060000Z", Kind::Scheduled, true),
            c("20270103T060000Z", Kind::Scheduled, true),
            c("20270104T060000Z", Kind::Scheduled, true),
        ];
        let p = plan(
            &cs,
            &Policy {
                daily: 0,
                weekly: 2,
                monthly: 0,
                ..Policy::default()
            },
            at(2027, 1, 4),
        );
        assert_eq!(p.kept, vec!["20270103T060000Z", "20270104T060000Z"]);
        assert!(p.reasons["20270103T060000Z"].contains("weekly 2026-W53"));
    }

    #[test]
    fn special_kinds_kept_by_age_and_invalid_never_count_nor_go() {
        let cs = vec![
            c("20261001T060000Z", Kind::PreRestore, true),
            c("20261002T060000Z", Kind::Scheduled, false),
            c("20261120T060000Z", Kind::Drill, true),
            c("20261125T060000Z", Kind::Scheduled, true),
            c("20261126T060000Z", Kind::Scheduled, false),
        ];
        let p = plan(&cs, &Policy::default(), at(2026, 11, 27));
        // The invalid ones fill no bucket (Nov 25 is still the newest of its day, week
        // and month) and are kept all the same.
        assert_eq!(
            p.kept,
            vec![
                "20261002T060000Z",
                "20261120T060000Z",
                "20261125T060000Z",
                "20261126T060000Z"
            ]
        );
        assert_eq!(p.deleted, vec!["20261001T060000Z"]);
        assert_eq!(
            p.reasons["20261126T060000Z"],
            "kept: invalid snapshot (see `invalid`): prune never deletes it; remove it with `delete` once inspected"
        );
        assert!(p.reasons["20261125T060000Z"].contains("monthly 2026-11"));
        assert!(p.reasons["20261125T060000Z"].contains("newest valid snapshot"));
    }

    #[test]
    fn never_deletes_everything_and_keeps_newest_valid() {
        let cs = vec![c("20250101T060000Z", Kind::PreRestore, false)];
        let p = plan(&cs, &Policy::default(), at(2026, 11, 27));
        assert!(p.deleted.is_empty());
        let cs = vec![c("20250101T060000Z", Kind::Drill, true)];
        let p = plan(&cs, &Policy::default(), at(2026, 11, 27));
        assert_eq!(p.kept, vec!["20250101T060000Z"]);
        assert!(p.reasons["20250101T060000Z"].contains("newest valid"));
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let mut cs = vec![];
        let start = at(2026, 1, 1);
        for i in 0..200 {
            let t = start + TimeDelta::days(i);
            cs.push(Candidate {
                stamp: Stamp::from_time(t),
                kind: Kind::Scheduled,
                valid: true,
                chroma: t.weekday() == chrono::Weekday::Sun,
                protected: false,
                pitr_base: false,
            });
        }
        let now = start + TimeDelta::days(200);
        let first = plan(&cs, &Policy::default(), now);
        let left: Vec<Candidate> = cs
            .into_iter()
            .filter(|c| first.kept.contains(&c.stamp.to_string()))
            .collect();
        let second = plan(&left, &Policy::default(), now);
        assert!(second.deleted.is_empty());
        assert_eq!(second.kept, first.kept);
    }

    /// A year of daily database-only snapshots at 06:00, with chroma on Sundays.
    fn a_year_with_sunday_chroma() -> (Vec<Candidate>, DateTime<Utc>) {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 6, 0, 0).unwrap();
        let cs = (0..365)
            .map(|d| {
                let t = start + TimeDelta::days(d);
                Candidate {
                    stamp: Stamp::from_time(t),
                    kind: Kind::Scheduled,
                    valid: true,
                    chroma: t.weekday() == chrono::Weekday::Sun,
                    protected: false,
                    pitr_base: false,
                }
            })
            .collect();
        (cs, Utc.with_ymd_and_hms(2026, 12, 31, 12, 0, 0).unwrap())
    }

    fn kept_chroma(p: &Plan, cs: &[Candidate]) -> Vec<String> {
        cs.iter()
            .filter(|c| c.chroma && p.kept.contains(&c.stamp.to_string()))
            .map(|c| c.stamp.to_string())
            .collect()
    }

    #[test]
    fn sunday_chroma_snapshots_keep_six_months_of_history() {
        let (cs, now) = a_year_with_sunday_chroma();
        let p = plan(&cs, &Policy::default(), now);
        // The chroma series: its 7 dailies are the 7 newest Sundays (Nov 15 - Dec 27),
        // which already fill 7 weeks, and the months Dec-Nov; monthly adds the last
        // Sunday of Oct, Sep, Aug and Jul.
        assert_eq!(
            kept_chroma(&p, &cs),
            vec![
                "20260726T060000Z",
                "20260830T060000Z",
                "20260927T060000Z",
                "20261025T060000Z",
                "20261115T060000Z",
                "20261122T060000Z",
                "20261129T060000Z",
                "20261206T060000Z",
                "20261213T060000Z",
                "20261220T060000Z",
                "20261227T060000Z",
            ]
        );
        assert_eq!(
            p.reasons["20260726T060000Z"],
            "kept: chroma monthly 2026-07"
        );
        assert_eq!(
            p.reasons["20261227T060000Z"],
            "kept: daily 2026-12-27, weekly 2026-W52, chroma daily 2026-12-27, chroma weekly 2026-W52, chroma monthly 2026-12, newest valid chroma snapshot"
        );
        // Without the series only the Sundays that happen to be the newest of a kept
        // day or week are left: four weeks of chroma history.
        let db_only = Policy {
            chroma_daily: 0,
            chroma_weekly: 0,
            chroma_monthly: 0,
            ..Policy::default()
        };
        let p = plan(&cs, &db_only, now);
        assert_eq!(
            kept_chroma(&p, &cs),
            vec!["20261213T060000Z", "20261220T060000Z", "20261227T060000Z"]
        );
        // Every kept stamp has a reason, and a second run changes nothing.
        let p = plan(&cs, &Policy::default(), now);
        assert!(p.kept.iter().all(|s| p.reasons[s].starts_with("kept: ")));
        assert!(
            p.deleted
                .iter()
                .all(|s| p.reasons[s].starts_with("deleted: "))
        );
        assert_eq!(p.reasons.len(), cs.len());
        let left: Vec<Candidate> = cs
            .iter()
            .filter(|c| p.kept.contains(&c.stamp.to_string()))
            .cloned()
            .collect();
        let again = plan(&left, &Policy::default(), now);
        assert!(again.deleted.is_empty());
        assert_eq!(again.kept, p.kept);
    }

    #[test]
    fn a_manual_database_only_snapshot_on_sunday_does_not_evict_the_chroma_one() {
        let (mut cs, now) = a_year_with_sunday_chroma();
        // Sunday Dec 27, 10:00: a manual snapshot without chroma, now the newest of its
        // day, week and month; it takes those slots from the 06:00 chroma one.
        cs.push(c("20261227T100000Z", Kind::Manual, true));
        let p = plan(&cs, &Policy::default(), now);
        assert_eq!(
            p.reasons["20261227T100000Z"],
            "kept: daily 2026-12-27, weekly 2026-W52"
        );
        assert_eq!(
            p.reasons["20261227T060000Z"],
            "kept: chroma daily 2026-12-27, chroma weekly 2026-W52, chroma monthly 2026-12, newest valid chroma snapshot"
        );
    }

    #[test]
    fn the_newest_valid_chroma_snapshot_is_always_kept() {
        // A chroma snapshot, then a newer database-only one the same day and an
        // invalid chroma one: with no chroma buckets it stays as the newest valid.
        let cs = vec![
            with_chroma(c("20261101T060000Z", Kind::Scheduled, true)),
            with_chroma(c("20261105T060000Z", Kind::Scheduled, true)),
            c("20261105T090000Z", Kind::Manual, true),
            with_chroma(c("20261106T060000Z", Kind::Scheduled, false)),
        ];
        let policy = Policy {
            daily: 1,
            weekly: 0,
            monthly: 0,
            chroma_daily: 0,
            chroma_weekly: 0,
            chroma_monthly: 0,
            special_days: 30,
            pitr_days: 7,
            keep_within: TimeDelta::hours(24),
        };
        let p = plan(&cs, &policy, at(2026, 11, 7));
        assert_eq!(
            p.kept,
            vec!["20261105T060000Z", "20261105T090000Z", "20261106T060000Z"]
        );
        assert_eq!(
            p.reasons["20261105T060000Z"],
            "kept: newest valid chroma snapshot"
        );
        assert_eq!(p.deleted, vec!["20261101T060000Z"]);
        assert!(p.reasons["20261101T060000Z"].contains("with or without chroma"));
    }

    #[test]
    fn protected_snapshots_are_kept_with_their_reason() {
        let mut old = c("20250101T060000Z", Kind::Scheduled, true);
        old.protected = true;
        let cs = vec![old, c("20261101T060000Z", Kind::Scheduled, true)];
        let policy = Policy {
            daily: 1,
            weekly: 0,
            monthly: 0,
            ..Policy::default()
        };
        let p = plan(&cs, &policy, at(2026, 11, 7));
        assert!(p.deleted.is_empty());
        assert_eq!(
            p.reasons["20250101T060000Z"],
            "kept: referenced by a pending or staged restore"
        );
    }

    #[test]
    fn keep_within_and_pitr_bases_are_kept_on_top_of_the_series() {
        let mut base = c("20261120T001000Z", Kind::WalBase, true);
        base.pitr_base = true;
        let cs = vec![
            c("20261119T060000Z", Kind::Scheduled, true),
            base,
            c("20261120T060000Z", Kind::Scheduled, true),
            c("20261120T090000Z", Kind::Manual, true),
        ];
        let policy = Policy {
            daily: 1,
            weekly: 0,
            monthly: 0,
            keep_within: TimeDelta::hours(4),
            ..Policy::default()
        };
        let p = plan(&cs, &policy, at(2026, 11, 20));
        assert_eq!(p.kept, vec!["20261120T001000Z", "20261120T090000Z"]);
        assert_eq!(p.deleted, vec!["20261119T060000Z", "20261120T060000Z"]);
        assert_eq!(
            p.reasons["20261120T001000Z"],
            "kept: pitr-base (a restore to a moment of the last 7 days starts from it)"
        );
        assert_eq!(
            p.reasons["20261120T090000Z"],
            "kept: daily 2026-11-20, within 4h, newest valid snapshot"
        );
        // Exactly as old as the span: no longer within it.
        let p = plan(&cs, &policy, at(2026, 11, 20) + TimeDelta::hours(1));
        assert_eq!(
            p.reasons["20261120T090000Z"],
            "kept: daily 2026-11-20, newest valid snapshot"
        );
        // Off, even for a stamp ahead of now.
        let off = Policy {
            keep_within: TimeDelta::zero(),
            ..policy
        };
        let p = plan(
            &cs,
            &off,
            Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap(),
        );
        assert_eq!(
            p.reasons["20261120T090000Z"],
            "kept: daily 2026-11-20, newest valid snapshot"
        );
        // The default: a day.
        let p = plan(&cs, &Policy::default(), at(2026, 11, 20));
        assert_eq!(p.reasons["20261120T060000Z"], "kept: within 24h");
        assert_eq!(p.reasons["20261119T060000Z"], "kept: daily 2026-11-19");
    }
}
