//! Retention on real snapshot folders.

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};

use crate::util::*;

/// Make `stamps` as copies of one real snapshot, each with its own metadata stamp.
fn fabricate(i: &Install, stamps: &[(String, &str)]) {
    let with: Vec<(String, &str, bool)> =
        stamps.iter().map(|(s, k)| (s.clone(), *k, false)).collect();
    fabricate_with_chroma(i, &with);
}

/// [`fabricate`], with a chroma copy (a `chroma/` folder and the metadata saying so)
/// where the flag is set.
fn fabricate_with_chroma(i: &Install, stamps: &[(String, &str, bool)]) {
    let m = i.backup(&[]);
    let proto = i.snapshot_dir(m["stamp"].as_str().unwrap());
    for (stamp, kind, chroma) in stamps {
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
        if *chroma {
            std::fs::create_dir_all(dir.join("chroma")).unwrap();
            std::fs::write(dir.join("chroma/chroma.sqlite3"), stamp.as_bytes()).unwrap();
            meta["include_chroma"] = true.into();
            meta["chroma_snapshot_path"] = dir.join("chroma").display().to_string().into();
        }
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

fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// 2026: daily database-only snapshots at 06:00, with chroma on Sundays, and one manual
/// database-only snapshot on the last Sunday.
fn a_year_with_sunday_chroma(i: &Install) {
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let mut stamps: Vec<(String, &str, bool)> = (0..365)
        .map(|d| {
            let day = start + Duration::days(d);
            (
                format!("{}T060000Z", day.format("%Y%m%d")),
                "scheduled",
                day.weekday() == Weekday::Sun,
            )
        })
        .collect();
    stamps.push(("20261227T100000Z".into(), "manual", false));
    fabricate_with_chroma(i, &stamps);
}

#[test]
fn chroma_snapshots_keep_about_six_months_of_history() {
    let i = Install::new();
    a_year_with_sunday_chroma(&i);
    let now = "2026-12-31T12:00:00Z";
    let r = i.run(&["prune", "--now", now]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let left = i.stamps();
    let chroma_left: Vec<&String> = left
        .iter()
        .filter(|s| i.snapshot_dir(s).join("chroma").is_dir())
        .collect();
    // The last Sunday of July to December, and the 7 newest Sundays.
    assert_eq!(
        chroma_left,
        [
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
    // The manual snapshot took the Sunday's database slots; the chroma series kept it.
    let reasons = &r.json["reasons"];
    assert_eq!(
        reasons["20261227T100000Z"],
        "kept: daily 2026-12-27, weekly 2026-W52"
    );
    assert_eq!(
        reasons["20261227T060000Z"],
        "kept: chroma daily 2026-12-27, chroma weekly 2026-W52, chroma monthly 2026-12, newest valid chroma snapshot"
    );
    assert_eq!(reasons["20260726T060000Z"], "kept: chroma monthly 2026-07");
    assert_eq!(strs(&r.json["kept"]), left);
    assert_eq!(reasons.as_object().unwrap().len(), 366);
    for s in &left {
        assert!(reasons[s].as_str().unwrap().starts_with("kept: "), "{s}");
    }
    let again = i.run(&["prune", "--now", now]);
    assert_eq!(again.json["deleted"], serde_json::json!([]));
    assert_eq!(i.stamps(), left);
}

#[test]
fn the_chroma_series_counts_are_settings() {
    let i = Install::new();
    a_year_with_sunday_chroma(&i);
    let r = i.run_env(
        &["prune", "--dry-run", "--now", "2026-12-31T12:00:00Z"],
        &[
            ("ATOCORE_KEEP_CHROMA_DAILY", "0"),
            ("ATOCORE_KEEP_CHROMA_WEEKLY", "0"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let kept = strs(&r.json["kept"]);
    // Chroma monthly only: Dec 27 (also the newest chroma), Nov 29, Oct 25 ... Jul 26.
    for s in ["20260726T060000Z", "20261129T060000Z", "20261227T060000Z"] {
        assert!(kept.contains(&s.to_string()), "{s} not kept");
    }
    assert!(!kept.contains(&"20261122T060000Z".to_string()));
    let r = i.run(&[
        "prune",
        "--dry-run",
        "--now",
        "2026-12-31T12:00:00Z",
        "--keep-chroma-monthly",
        "2",
        "--keep-chroma-daily",
        "0",
        "--keep-chroma-weekly",
        "0",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let kept = strs(&r.json["kept"]);
    assert!(kept.contains(&"20261129T060000Z".to_string()));
    assert!(!kept.contains(&"20261025T060000Z".to_string()));
}

#[test]
fn invalid_and_unreadable_snapshots_are_kept_reported_and_deleted_only_on_request() {
    let i = Install::new();
    let s = |d: &str| format!("2025{d}T060000Z");
    fabricate(
        &i,
        &[
            (s("0101"), "scheduled"),
            (s("0102"), "scheduled"),
            (s("0103"), "scheduled"),
        ],
    );
    // 0101 lost its database; 0102's metadata is not JSON; 0103 is fine.
    std::fs::remove_file(i.snapshot_dir(&s("0101")).join("db/atocore.db")).unwrap();
    std::fs::write(
        i.snapshot_dir(&s("0102")).join("backup-metadata.json"),
        b"{oops",
    )
    .unwrap();
    let before = tree(&i.paths.snapshots_dir());
    let r = i.run_env(
        &["prune", "--now", "2026-11-27T12:00:00Z"],
        &[
            ("ATOCORE_KEEP_DAILY", "0"),
            ("ATOCORE_KEEP_WEEKLY", "0"),
            ("ATOCORE_KEEP_MONTHLY", "0"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["deleted"], serde_json::json!([]));
    assert_eq!(
        r.json["invalid"],
        serde_json::json!([
            {"stamp": s("0101"), "errors": ["db_snapshot_missing"]},
            {"stamp": s("0102"), "errors": ["metadata_invalid_json"]},
        ])
    );
    assert_eq!(
        r.json["kept"],
        serde_json::json!([s("0101"), s("0102"), s("0103")])
    );
    assert!(
        r.json["reasons"][s("0102")]
            .as_str()
            .unwrap()
            .contains("prune never deletes it")
    );
    assert_eq!(tree(&i.paths.snapshots_dir()), before);

    // The operator removes one explicitly.
    let d = i.run(&["delete", &s("0102")]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(d.json, serde_json::json!({"deleted": s("0102")}));
    assert_eq!(i.stamps(), vec![s("0101"), s("0103")]);
    assert_eq!(
        names_in(&i.paths.snapshots_dir(), |n| n.starts_with('.')),
        Vec::<String>::new()
    );
}

#[test]
fn delete_refuses_bad_unknown_and_referenced_stamps() {
    let i = Install::new();
    let a = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    let b = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    let r = i.run(&["delete", "../x"]);
    assert_eq!((r.code, r.json["error"].as_str()), (2, Some("bad_stamp")));
    let r = i.run(&["delete", "20200101T000000Z"]);
    assert_eq!(
        (r.code, r.json["error"].as_str()),
        (2, Some("unknown_stamp"))
    );

    // A pending request refers to `a`.
    let before = tree(i.root());
    std::fs::create_dir_all(i.paths.restore_dir()).unwrap();
    let req = serde_json::json!({"request_id": "t", "stamp": a});
    std::fs::write(i.paths.restore_dir().join("request.json"), req.to_string()).unwrap();
    let r = i.run(&["delete", &a]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "snapshot_in_use");
    assert!(r.json["message"].as_str().unwrap().contains("request.json"));
    assert_eq!(
        tree(&i.paths.snapshots_dir()),
        tree_below(&before, "backups/snapshots/")
    );

    // `b` is staged by prepare: delete refuses it and prune keeps it.
    let p = i.run(&["prepare", &b]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    let r = i.run(&["delete", &b]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "snapshot_in_use");
    assert!(r.json["message"].as_str().unwrap().contains("staged.json"));
    let r = i.run_env(
        &["prune", "--dry-run"],
        &[
            ("ATOCORE_KEEP_DAILY", "0"),
            ("ATOCORE_KEEP_WEEKLY", "0"),
            ("ATOCORE_KEEP_MONTHLY", "0"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["deleted"], serde_json::json!([]));
    assert_eq!(
        r.json["reasons"][&a],
        "kept: within 24h, referenced by a pending or staged restore"
    );
    // Nothing refers to `a` once the request is gone: it goes.
    std::fs::remove_file(i.paths.restore_dir().join("request.json")).unwrap();
    let r = i.run(&["delete", &a]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(i.stamps(), vec![b]);
}

/// The entries of a whole-tree listing below `prefix`, relative to it.
fn tree_below(t: &Tree, prefix: &str) -> Tree {
    t.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
        .collect()
}

#[test]
fn an_interrupted_deletion_is_finished_by_the_next_prune_or_backup() {
    let i = Install::new();
    let snaps = i.paths.snapshots_dir();
    let leftover = |name: &str| {
        let d = snaps.join(name);
        std::fs::create_dir_all(d.join("db")).unwrap();
        std::fs::write(d.join("db/atocore.db"), b"half deleted").unwrap();
    };
    i.backup(&[]);
    leftover(".20250101T060000Z.deleting");
    let r = i.run(&["prune", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        snaps.join(".20250101T060000Z.deleting").exists(),
        "a dry run changed something"
    );
    let r = i.run(&["prune"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json["partials_removed"],
        serde_json::json!([".20250101T060000Z.deleting"])
    );
    assert_eq!(
        names_in(&snaps, |n| n.starts_with('.')),
        Vec::<String>::new()
    );

    leftover(".20250102T060000Z.deleting");
    i.backup(&[]);
    assert_eq!(
        names_in(&snaps, |n| n.starts_with('.')),
        Vec::<String>::new()
    );
}

#[test]
fn a_symlinked_snapshot_folder_is_refused_everywhere() {
    let i = Install::new();
    let real = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    let linked = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    // The second snapshot moved elsewhere, a symlink left in its place.
    let elsewhere = i.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(i.snapshot_dir(&linked), elsewhere.join(&linked)).unwrap();
    std::os::unix::fs::symlink(elsewhere.join(&linked), i.snapshot_dir(&linked)).unwrap();
    let target = tree(&elsewhere);
    let storage = storage_tree(i.root());

    let l = i.run(&["list"]);
    assert_eq!(l.code, 0);
    let row = &l.json["backups"][1];
    assert_eq!(row["stamp"], linked.as_str());
    assert_eq!(row["valid"], false);
    assert_eq!(row["errors"], serde_json::json!(["snapshot_is_symlink"]));
    assert_eq!(
        row.get("kind"),
        None,
        "metadata read through the link: {row}"
    );
    assert_eq!(l.json["backups"][0]["valid"], true);

    let v = i.run(&["validate", &linked]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert_eq!(v.json["errors"], serde_json::json!(["snapshot_is_symlink"]));

    for extra in [&["--dry-run"][..], &[][..]] {
        let mut args = vec!["restore", linked.as_str(), "--confirm-service-stopped"];
        args.extend_from_slice(extra);
        let r = i.run(&args);
        assert_eq!(r.code, 1, "{}", r.stdout);
        assert_eq!(r.json["error"], "snapshot_invalid");
        assert!(
            r.json["message"]
                .as_str()
                .unwrap()
                .contains("snapshot_is_symlink")
        );
    }
    let p = i.run(&["prepare", &linked]);
    assert_eq!(
        (p.code, p.json["error"].as_str()),
        (1, Some("snapshot_invalid"))
    );
    assert_eq!(storage_tree(i.root()), storage);

    let r = i.run_env(
        &["prune"],
        &[
            ("ATOCORE_KEEP_DAILY", "0"),
            ("ATOCORE_KEEP_WEEKLY", "0"),
            ("ATOCORE_KEEP_MONTHLY", "0"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json["invalid"],
        serde_json::json!([{"stamp": linked, "errors": ["snapshot_is_symlink"]}])
    );
    assert_eq!(r.json["deleted"], serde_json::json!([]));
    assert_eq!(
        r.json["reasons"][&real],
        "kept: within 24h, newest valid snapshot"
    );
    assert_eq!(storage_tree(i.root()), storage);

    // `delete` removes the link, never what it points at.
    let d = i.run(&["delete", &linked]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert!(std::fs::symlink_metadata(i.snapshot_dir(&linked)).is_err());
    assert_eq!(tree(&elsewhere), target);
    assert_eq!(i.stamps(), vec![real]);
}

/// issue 19: a manual snapshot taken seconds ago is kept by default although a later
/// one the same day is the newest of the day; `--keep-within` (and its environment
/// mirror) sets the span, `0` turns it off.
#[test]
fn a_snapshot_taken_seconds_ago_is_kept_within_the_default_day() {
    let i = Install::new();
    let a = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    let b = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    let day = format!("{}-{}-{}", &b[0..4], &b[4..6], &b[6..8]);
    let r = i.run(&["prune"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["deleted"], serde_json::json!([]));
    assert_eq!(r.json["kept"], serde_json::json!([a, b]));
    assert_eq!(r.json["reasons"][&a], "kept: within 24h");
    assert!(
        r.json["reasons"][&b]
            .as_str()
            .unwrap()
            .starts_with(&format!("kept: daily {day}, ")),
        "{}",
        r.stdout
    );
    assert!(
        r.json["reasons"][&b]
            .as_str()
            .unwrap()
            .ends_with(", within 24h, newest valid snapshot"),
        "{}",
        r.stdout
    );
    // Other spans, as a flag or from the environment.
    let r = i.run(&["prune", "--dry-run", "--keep-within", "90m"]);
    assert_eq!(r.json["reasons"][&a], "kept: within 1h 30m", "{}", r.stdout);
    let r = i.run_env(&["prune", "--dry-run"], &[("ATOCORE_KEEP_WITHIN", "2d")]);
    assert_eq!(r.json["reasons"][&a], "kept: within 48h", "{}", r.stdout);
    let r = i.run(&["prune", "--dry-run", "--keep-within", "soon"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains(
            "`soon` is not a duration (expected number at 0); write a number, or one with a unit: 90s, 2m, 1h"
        ),
        "{}",
        r.stderr
    );
    // Off: the series alone decide, and the older one of the day goes.
    let r = i.run_env(&["prune"], &[("ATOCORE_KEEP_WITHIN", "0")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["deleted"], serde_json::json!([a]));
    assert_eq!(
        r.json["reasons"][&a],
        "deleted: not the newest of a kept day, week or month"
    );
    assert_eq!(i.stamps(), vec![b]);
}
