//! Retention: which snapshots `prune` keeps, restic-style.
//!
//! Calendar buckets are UTC days, ISO weeks and months. For each of the `daily` most
//! recent days that have a valid snapshot, the newest snapshot of that day is kept;
//! likewise for weeks and months. One snapshot may fill a daily, a weekly and a monthly
//! slot at once (restic: "the 7 dailies already include 1 weekly"), so "monthly" keeps
//! the *last* snapshot of each month. `pre-restore` and `drill` snapshots do not count
//! in the buckets and are kept for `special_days`. Invalid snapshots never count. The
//! newest valid snapshot is never deleted, and when the policy would delete every
//! snapshot nothing is deleted.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde::Serialize;

use crate::metadata::Kind;
use crate::stamp::Stamp;

/// The counts of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub special_days: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            daily: 7,
            weekly: 4,
            monthly: 6,
            special_days: 30,
        }
    }
}

/// What retention needs to know of one snapshot.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub stamp: Stamp,
    pub kind: Kind,
    pub valid: bool,
    /// Referenced by a pending restore request or journal: never deleted.
    pub protected: bool,
}

/// The decision: stamps kept and deleted (oldest first), with a reason for each.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Plan {
    pub kept: Vec<String>,
    pub deleted: Vec<String>,
    pub reasons: BTreeMap<String, String>,
}

/// Decide, at time `now`, what to keep.
pub fn plan(candidates: &[Candidate], policy: &Policy, now: DateTime<Utc>) -> Plan {
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |s: &Stamp, why: String| reasons.entry(s.to_string()).or_default().push(why);

    let mut newest_first: Vec<&Candidate> = candidates.iter().collect();
    newest_first.sort_by(|a, b| b.stamp.cmp(&a.stamp));

    // Calendar buckets over valid regular snapshots.
    let regular: Vec<&Candidate> = newest_first
        .iter()
        .copied()
        .filter(|c| c.valid && !c.kind.is_special())
        .collect();
    type BucketKey = fn(&DateTime<Utc>) -> String;
    let buckets: [(&str, u32, BucketKey); 3] = [
        ("daily", policy.daily, |t| t.format("%Y-%m-%d").to_string()),
        ("weekly", policy.weekly, |t| {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }),
        ("monthly", policy.monthly, |t| t.format("%Y-%m").to_string()),
    ];
    for (name, count, key) in buckets {
        let mut seen: HashSet<String> = HashSet::new();
        for c in &regular {
            if seen.len() >= count as usize {
                break;
            }
            let k = key(&c.stamp.time());
            if seen.insert(k.clone()) {
                add(&c.stamp, format!("{name} {k}"));
            }
        }
    }

    let special_cutoff = now - TimeDelta::days(i64::from(policy.special_days));
    for c in &newest_first {
        if c.kind.is_special() && c.stamp.time() >= special_cutoff {
            add(
                &c.stamp,
                format!(
                    "{} snapshot younger than {} days",
                    c.kind.as_str(),
                    policy.special_days
                ),
            );
        }
        if c.protected {
            add(&c.stamp, "referenced by a pending restore".into());
        }
    }
    if let Some(newest) = newest_first.iter().find(|c| c.valid) {
        add(&newest.stamp, "newest valid snapshot".into());
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
            let why = if !c.valid {
                "deleted: invalid snapshot, counts in no bucket".to_string()
            } else if c.kind.is_special() {
                format!(
                    "deleted: {} snapshot older than {} days",
                    c.kind.as_str(),
                    policy.special_days
                )
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn c(s: &str, kind: Kind, valid: bool) -> Candidate {
        Candidate {
            stamp: Stamp::parse(s).unwrap(),
            kind,
            valid,
            protected: false,
        }
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
                special_days: 30,
            },
            at(2027, 1, 4),
        );
        assert_eq!(p.kept, vec!["20270103T060000Z", "20270104T060000Z"]);
        assert!(p.reasons["20270103T060000Z"].contains("weekly 2026-W53"));
    }

    #[test]
    fn special_kinds_kept_by_age_and_invalid_never_count() {
        let cs = vec![
            c("20261001T060000Z", Kind::PreRestore, true),
            c("20261120T060000Z", Kind::Drill, true),
            c("20261125T060000Z", Kind::Scheduled, true),
            c("20261126T060000Z", Kind::Scheduled, false),
        ];
        let p = plan(&cs, &Policy::default(), at(2026, 11, 27));
        assert_eq!(p.kept, vec!["20261120T060000Z", "20261125T060000Z"]);
        assert_eq!(p.deleted, vec!["20261001T060000Z", "20261126T060000Z"]);
        assert!(p.reasons["20261126T060000Z"].contains("invalid"));
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
                protected: false,
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
}
