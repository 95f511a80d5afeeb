//! Retention on real snapshot folders.

use chrono::{Duration, NaiveDate, TimeZone, Utc};

use crate::util::*;

/// Make `stamps` as copies of one real snapshot, each with its own metadata stamp.
fn fabricate(i: &Install, stamps: &[(String, &str)]) {
    let m = i.backup(&[]);
    let proto = i.snapshot_dir(m["stamp"].as_str().unwrap());
    for (stamp, kind) in stamps {
        let dir = i.snapshot_dir(stamp);
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::hard_link(proto.join("db/atocore.db"), dir.join("db/atocore.db")).unwrap();
        std::fs::hard_link(
            proto.join("config/project-registry.json"),
            dir.join("config/project-registry.json"),
        )
        .unwrap();
        std::fs::copy(proto.join("manifest.sha256"), dir.join("manifest.sha256")).unwrap();
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(proto.join("backup-metadata.json")).unwrap())
                .unwrap();
        meta["stamp"] = (*stamp).clone().into();
        meta["kind"] = (*kind).into();
        std::fs::write(dir.join("backup-metadata.json"), meta.to_string()).unwrap();
    }
    std::fs::remove_dir_all(proto).unwrap();
}

#[test]
fn a_year_of_dailies_is_pruned_to_the_exact_expected_set() {
    let i = Install::new();
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let stamps: Vec<(String, &str)> = (0..365)
        .map(|d| {
            (
                format!("{}T060000Z", (start + Duration::days(d)).format("%Y%m%d")),
                "scheduled",
            )
        })
        .collect();
    fabricate(&i, &stamps);
    let now = "2026-12-31T12:00:00Z";
    let dry = i.run(&["prune", "--dry-run", "--now", now]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    // 7 dailies (Dec 25-31); ISO weeks W53 (Dec 31) and W52 (Sun Dec 27) are already
    // among them, W51 and W50 add their Sundays; months Dec (Dec 31) and Nov-Jul add
    // their last days.
    let expected = [
        "20260731T060000Z",
        "20260831T060000Z",
        "20260930T060000Z",
        "20261031T060000Z",
        "20261130T060000Z",
        "20261213T060000Z",
        "20261220T060000Z",
        "20261225T060000Z",
        "20261226T060000Z",
        "20261227T060000Z",
        "20261228T060000Z",
        "20261229T060000Z",
        "20261230T060000Z",
        "20261231T060000Z",
    ];
    assert_eq!(dry.json["kept"], serde_json::json!(expected));
    assert_eq!(
        dry.json["deleted"].as_array().unwrap().len(),
        365 - expected.len()
    );
    assert_eq!(dry.json["dry_run"], true);
    assert_eq!(i.stamps().len(), 365, "a dry run deleted something");
    let reasons = &dry.json["reasons"];
    assert_eq!(
        reasons.as_object().unwrap().len(),
        365,
        "every snapshot needs a reason"
    );
    assert!(
        reasons["20261231T060000Z"]
            .as_str()
            .unwrap()
            .contains("daily 2026-12-31")
    );
    assert!(
        reasons["20261231T060000Z"]
            .as_str()
            .unwrap()
            .contains("weekly 2026-W53")
    );
    assert!(
        reasons["20261231T060000Z"]
            .as_str()
            .unwrap()
            .contains("monthly 2026-12")
    );
    assert!(
        reasons["20261213T060000Z"]
            .as_str()
            .unwrap()
            .contains("weekly 2026-W50")
    );

    let real = i.run(&["prune", "--now", now]);
    assert_eq!(real.code, 0);
    assert_eq!(real.json["kept"], serde_json::json!(expected));
    assert_eq!(i.stamps(), expected.to_vec());
    // A second run changes nothing.
    let again = i.run(&["prune", "--now", now]);
    assert_eq!(again.json["deleted"], serde_json::json!([]));
}

#[test]
fn special_kinds_and_counts_are_settings() {
    let i = Install::new();
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let s = |days: i64| {
        (now - Duration::days(days))
            .format("%Y%m%dT%H%M%SZ")
            .to_string()
    };
    fabricate(
        &i,
        &[
            (s(40), "pre-restore"),
            (s(10), "drill"),
            (s(3), "manual"),
            (s(2), "scheduled"),
            (s(1), "scheduled"),
        ],
    );
    let r = i.run_env(
        &["prune", "--dry-run", "--now", "2026-11-27T12:00:00Z"],
        &[
            ("ATOCORE_KEEP_DAILY", "1"),
            ("ATOCORE_KEEP_WEEKLY", "0"),
            ("ATOCORE_KEEP_MONTHLY", "0"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["kept"], serde_json::json!([s(10), s(1)]));
    assert_eq!(r.json["deleted"], serde_json::json!([s(40), s(3), s(2)]));
    assert!(
        r.json["reasons"][s(40)]
            .as_str()
            .unwrap()
            .contains("older than 30 days")
    );
}
