//! Snapshot stamps: UTC `YYYYMMDDTHHMMSSZ`, validated before any path is built from one.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use crate::error::{Error, Result};

const FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A validated snapshot stamp. Building a path from a `Stamp` can never escape the
/// snapshots folder: only the 16 characters `[0-9]{8}T[0-9]{6}Z` of a real UTC time pass.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(String);

impl Stamp {
    /// Parse and validate user input.
    pub fn parse(s: &str) -> Result<Stamp> {
        let b = s.as_bytes();
        let shape_ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        if !shape_ok || NaiveDateTime::parse_from_str(s, FORMAT).is_err() {
            return Err(Error::BadStamp(s.to_string()));
        }
        Ok(Stamp(s.to_string()))
    }

    /// The stamp of a moment (sub-second part dropped).
    pub fn from_time(t: DateTime<Utc>) -> Stamp {
        Stamp(t.format(FORMAT).to_string())
    }

    /// The moment the stamp names.
    pub fn time(&self) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&self.0, FORMAT)
            .map(|n| n.and_utc())
            .unwrap_or_default()
    }

    /// The next second's stamp (used when a stamp is already taken).
    pub fn next(&self) -> Stamp {
        Stamp::from_time(self.time() + TimeDelta::seconds(1))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_stamps_only() {
        assert!(Stamp::parse("20260407T060000Z").is_ok());
        for bad in [
            "",
            "../20260407T060000Z",
            "20260407T060000Z/..",
            "/etc/passwd",
            "2026040T0600000Z",
            "20261307T060000Z",
            "20260407T256000Z",
            "20260407t060000z",
            "20260407T060000Z ",
            "２0260407T060000Z",
        ] {
            assert!(Stamp::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn next_rolls_over() {
        let s = Stamp::parse("20261231T235959Z").unwrap();
        assert_eq!(s.next().as_str(), "20270101T000000Z");
    }
}
