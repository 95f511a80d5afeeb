//! The backup schedule: when scheduled snapshots run, with or without chroma, and what
//! happens to a run the sidecar missed.
//!
//! Two cron expressions (UTC), parsed by the `cron` crate: `ATOCORE_BACKUP_SCHEDULE`
//! (default `0 6 * * *`, daily 06:00) and `ATOCORE_BACKUP_CHROMA_SCHEDULE` (default
//! `0 6 * * Sun`). A snapshot runs at every time either one names; it includes chroma
//! when the chroma expression names that time. Retention (prune) runs right after each
//! scheduled snapshot that succeeded.
//!
//! Expressions take 5 fields (`min hour day-of-month month day-of-week`) or 6 with
//! seconds first, or `@daily`/`@weekly`/...; `off` disables one. Days of the week must be
//! names (`Sun`, `Mon-Fri`): the `cron` crate counts 1 = Sunday where Unix cron counts
//! 0 = Sunday, so numbers are refused rather than silently shifted by a day.
//!
//! Missed runs (the sidecar was down at the scheduled time): at start, when the newest
//! `scheduled` snapshot is older than the most recent scheduled time (looking back at
//! most [`LOOKBACK_DAYS`] days), one catch-up snapshot runs after
//! `ATOCORE_CATCH_UP_DELAY_SECS` (default 60 s); it includes chroma when a chroma time
//! was missed too. Several missed times give one catch-up, not a burst. With
//! `ATOCORE_MISSED_RUN=skip` the sidecar just waits for the next time.
//!
//!
//! This module is the pure part (parsing, next times, missed runs); the loop that
//! sleeps and runs the snapshots is [`crate::scheduler`].

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::{Error, Result};

/// How far back the missed-run check looks for a scheduled time.
pub const LOOKBACK_DAYS: i64 = 35;

/// The parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    backup: Option<Expr>,
    chroma: Option<Expr>,
}

#[derive(Debug, Clone)]
struct Expr {
    source: String,
    cron: cron::Schedule,
}

/// One scheduled run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    pub at: DateTime<Utc>,
    pub include_chroma: bool,
}

fn parse_expr(setting: &str, text: &str) -> Result<Option<Expr>> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let fields: Vec<&str> = t.split_whitespace().collect();
    let full = match fields.len() {
        1 if t.starts_with('@') => t.to_string(),
        5 => format!("0 {t}"),
        6 | 7 => t.to_string(),
        n => {
            return Err(Error::Config(format!(
                "{setting} `{text}` has {n} fields; write `min hour day-of-month month day-of-week` (e.g. `0 6 * * *`) or `off`"
            )));
        }
    };
    if !t.starts_with('@') {
        let dow = if fields.len() == 5 {
            fields[4]
        } else {
            fields[5]
        };
        if dow.chars().any(|c| c.is_ascii_digit()) {
            return Err(Error::Config(format!(
                "{setting} `{text}`: write days of the week as names (Sun, Mon-Fri), not numbers; cron dialects number them differently"
            )));
        }
    }
    let cron = cron::Schedule::from_str(&full)
        .map_err(|e| Error::Config(format!("{setting} `{text}` is not a cron expression: {e}")))?;
    Ok(Some(Expr {
        source: t.to_string(),
        cron,
    }))
}

impl Expr {
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t).next()
    }

    /// The newest time at or before `t` (within the lookback).
    fn previous(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.cron.includes(t) {
            return Some(t);
        }
        self.cron
            .after(&t)
            .next_back()
            .filter(|p| *p <= t && t - *p <= TimeDelta::days(LOOKBACK_DAYS))
    }
}

impl Schedule {
    /// Parse the two settings; `Ok(None)` when both are `off`.
    pub fn parse(backup: &str, chroma: &str) -> Result<Option<Schedule>> {
        let s = Schedule {
            backup: parse_expr("ATOCORE_BACKUP_SCHEDULE", backup)?,
            chroma: parse_expr("ATOCORE_BACKUP_CHROMA_SCHEDULE", chroma)?,
        };
        Ok((s.backup.is_some() || s.chroma.is_some()).then_some(s))
    }

    pub fn backup_source(&self) -> &str {
        self.backup.as_ref().map_or("off", |e| &e.source)
    }

    pub fn chroma_source(&self) -> &str {
        self.chroma.as_ref().map_or("off", |e| &e.source)
    }

    fn chroma_at(&self, t: DateTime<Utc>) -> bool {
        self.chroma.as_ref().is_some_and(|c| c.cron.includes(t))
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<Fire> {
        let at = [&self.backup, &self.chroma]
            .into_iter()
            .flatten()
            .filter_map(|e| e.next_after(t))
            .min()?;
        Some(Fire {
            at,
            include_chroma: self.chroma_at(at),
        })
    }

    /// The newest run at or before `t` (within [`LOOKBACK_DAYS`]).
    pub fn previous(&self, t: DateTime<Utc>) -> Option<Fire> {
        let at = [&self.backup, &self.chroma]
            .into_iter()
            .flatten()
            .filter_map(|e| e.previous(t))
            .max()?;
        Some(Fire {
            at,
            include_chroma: self.chroma_at(at),
        })
    }

    /// The catch-up run owed at `now`, given the newest scheduled snapshot (and the
    /// newest scheduled one with chroma). `None`: nothing was missed.
    pub fn missed(
        &self,
        now: DateTime<Utc>,
        newest_scheduled: Option<DateTime<Utc>>,
        newest_scheduled_chroma: Option<DateTime<Utc>>,
    ) -> Option<Fire> {
        let last = self.previous(now)?;
        if newest_scheduled.is_some_and(|n| n >= last.at) {
            return None;
        }
        let chroma_due = self
            .chroma
            .as_ref()
            .and_then(|c| c.previous(now))
            .is_some_and(|p| newest_scheduled_chroma.is_none_or(|n| n < p));
        Some(Fire {
            at: last.at,
            include_chroma: chroma_due,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn default() -> Schedule {
        Schedule::parse("0 6 * * *", "0 6 * * Sun")
            .unwrap()
            .unwrap()
    }

    #[test]
    fn daily_with_chroma_on_sundays() {
        let s = default();
        // 2026-04-04 is a Saturday.
        let f = s.next_after(t("2026-04-04T05:00:00Z")).unwrap();
        assert_eq!(
            f,
            Fire {
                at: t("2026-04-04T06:00:00Z"),
                include_chroma: false
            }
        );
        let f = s.next_after(f.at).unwrap();
        assert_eq!(
            f,
            Fire {
                at: t("2026-04-05T06:00:00Z"),
                include_chroma: true
            }
        );
        let f = s.next_after(f.at).unwrap();
        assert_eq!(
            f,
            Fire {
                at: t("2026-04-06T06:00:00Z"),
                include_chroma: false
            }
        );
    }

    #[test]
    fn previous_includes_the_exact_time() {
        let s = default();
        assert_eq!(
            s.previous(t("2026-04-06T06:00:00Z")).unwrap().at,
            t("2026-04-06T06:00:00Z")
        );
        assert_eq!(
            s.previous(t("2026-04-06T05:59:59Z")).unwrap().at,
            t("2026-04-05T06:00:00Z")
        );
        assert!(
            s.previous(t("2026-04-06T05:59:59Z"))
                .unwrap()
                .include_chroma
        );
    }

    #[test]
    fn missed_runs_give_one_catch_up() {
        let s = default();
        let now = t("2026-04-07T09:00:00Z"); // Tuesday
        // Up to date.
        assert_eq!(
            s.missed(
                now,
                Some(t("2026-04-07T06:00:00Z")),
                Some(t("2026-04-05T06:00:00Z"))
            ),
            None
        );
        // Tuesday's run missed; Sunday's chroma run was done.
        assert_eq!(
            s.missed(
                now,
                Some(t("2026-04-06T06:00:00Z")),
                Some(t("2026-04-05T06:00:00Z"))
            ),
            Some(Fire {
                at: t("2026-04-07T06:00:00Z"),
                include_chroma: false
            })
        );
        // Down since Saturday: the Sunday chroma run was missed too.
        assert_eq!(
            s.missed(
                now,
                Some(t("2026-04-04T06:00:00Z")),
                Some(t("2026-03-29T06:00:00Z"))
            ),
            Some(Fire {
                at: t("2026-04-07T06:00:00Z"),
                include_chroma: true
            })
        );
        // Fresh install: one catch-up with chroma.
        assert!(s.missed(now, None, None).unwrap().include_chroma);
    }

    #[test]
    fn expressions_are_checked() {
        assert!(Schedule::parse("off", "off").unwrap().is_none());
        assert!(Schedule::parse("@daily", "off").unwrap().is_some());
        assert!(
            Schedule::parse("0 0 6 * * Mon-Fri", "off")
                .unwrap()
                .is_some()
        );
        for bad in ["0 6 * * 0", "6 * *", "0 25 * * *", "every day"] {
            assert!(Schedule::parse(bad, "off").is_err(), "{bad}");
        }
        let s = Schedule::parse("off", "30 2 * * Sat").unwrap().unwrap();
        let f = s.next_after(t("2026-04-04T00:00:00Z")).unwrap();
        assert_eq!(
            f,
            Fire {
                at: t("2026-04-04T02:30:00Z"),
                include_chroma: true
            }
        );
    }
}
