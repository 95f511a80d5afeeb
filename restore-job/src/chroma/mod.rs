//! The Chroma directory: an index of its tree, an incremental copy into a snapshot
//! (unchanged files hard-linked from the previous snapshot), and the restore that makes
//! the live directory equal a snapshot while the directory itself keeps its inode.
//!
//! The live chroma directory is a bind-mount point: it is never renamed or removed.
//! Restores stage inside it (`.atocore-restore/`), move live entries aside into the
//! staging area and the staged ones into place, entry by entry (docs/design.md §4: renames
//! inside a mount work; renames into it from outside fail with EXDEV).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

mod copy;
mod place;
mod tree;

pub(crate) use copy::*;
pub(crate) use place::*;
pub(crate) use tree::*;

/// What one entry of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry below the chroma root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path with `/` separators.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub size: u64,
    pub mtime_ns: i128,
    /// The live file's ctime when it was copied (used to recognise unchanged files).
    #[serde(default)]
    pub ctime_ns: i128,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Attributes of the chroma root itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RootAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
}

/// The whole tree: what a snapshot's `chroma-index.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub root: RootAttrs,
    /// Parents before children, sorted by path.
    pub entries: Vec<Entry>,
    /// Entries left out (sockets, fifos, devices, links leaving the tree, names that
    /// are not UTF-8, unreadable folders), each as `<path>: <reason>`.
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Wall-clock time (ns since the epoch) taken just before the tree was stat-ed.
    /// A later snapshot links a file from this one only when the file's mtime and
    /// ctime are clearly older than this moment (see [`may_link`]). Indexes written
    /// before this field existed never lend files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at_ns: Option<i128>,
}

impl Index {
    pub fn file_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .count() as u64
    }

    pub fn byte_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.size)
            .sum()
    }
}

pub(crate) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Something found in a tree that is not in its index.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Relative path (names that are not UTF-8 shown with `\x..` escapes).
    pub path: String,
    pub why: String,
    /// A folder that could not be listed (its content is unknown).
    pub unreadable: bool,
}

/// A relative path of plain names: no `..`, `.`, empty or absolute parts.
pub(crate) fn is_plain(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A relative path from an index, checked so that joining it cannot escape `base`.
pub fn safe_join(base: &Path, rel: &str) -> Result<PathBuf> {
    if !is_plain(rel)
        || Path::new(rel)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(Error::UnsafeEntry {
            path: base.join(rel),
            why: "is not a plain relative path".into(),
        });
    }
    Ok(base.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink,
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            sha256: None,
            target: Some(target.into()),
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            kind: EntryKind::Dir,
            target: None,
            ..link(path, "")
        }
    }

    fn file(path: &str) -> Entry {
        Entry {
            kind: EntryKind::File,
            target: None,
            sha256: Some("00".repeat(32)),
            size: 10,
            mtime_ns: 1_000_000_000_000,
            ctime_ns: 1_000_000_000_000,
            ..link(path, "")
        }
    }

    fn bad(entries: Vec<Entry>) -> Vec<String> {
        unsafe_links(&entries, &HashSet::new())
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    #[test]
    fn links_are_resolved_through_other_links() {
        // Plain links inside pass.
        assert!(bad(vec![dir("a"), link("a/link", "../b"), link("c", "a/x")]).is_empty());
        // Plain escapes and absolute targets fail.
        assert_eq!(bad(vec![link("link", "../outside")]), ["link"]);
        assert_eq!(bad(vec![dir("a"), link("a/l", "../../x")]), ["a/l"]);
        assert_eq!(bad(vec![link("l", "/etc/passwd")]), ["l"]);
        // `l -> .` is harmless; `m -> l/..` is the root's parent: outside.
        assert_eq!(bad(vec![link("l", "."), link("m", "l/..")]), ["m"]);
        // Deeper chains: `d/up -> ..` is the root, `d/up/..` its parent.
        assert_eq!(
            bad(vec![dir("d"), link("d/up", ".."), link("x", "d/up/../db")]),
            ["x"]
        );
        // A link into a folder reached through a link, then `..` twice.
        assert_eq!(
            bad(vec![
                dir("a"),
                dir("a/b"),
                link("s", "a/b"),
                link("t", "s/../.."),
                link("u", "s/../../.."),
            ]),
            ["u"]
        );
        // Loops never resolve.
        assert_eq!(bad(vec![link("p", "q"), link("q", "p")]), ["p", "q"]);
        assert_eq!(bad(vec![link("self", "self/x")]), ["self"]);
        // Through an absolute link: outside too.
        assert_eq!(
            bad(vec![link("abs", "/"), link("y", "abs/etc/passwd")]),
            ["abs", "y"]
        );
        // Through an entry left out of the tree (its content is unknown).
        let opaque = HashSet::from(["odd"]);
        let through = unsafe_links(&[link("z", "odd/x"), link("w", "odd")], &opaque);
        assert_eq!(through.len(), 2, "{through:?}");
    }

    #[test]
    fn an_index_with_entries_below_a_link_is_unsafe() {
        let mut index = Index {
            root: RootAttrs {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
            },
            entries: vec![link("l", "."), file("l/x")],
            skipped: Vec::new(),
            scanned_at_ns: None,
        };
        let p = index_problems(&index);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "l/x");
        index.entries = vec![file("a/../x")];
        assert_eq!(index_problems(&index).len(), 2);
        index.entries = vec![dir("d"), file("d/x"), link("d/l", "x")];
        assert!(index_problems(&index).is_empty());
        index.entries = vec![file("x"), file("x")];
        assert_eq!(index_problems(&index)[0].1, "is listed twice");
    }

    #[test]
    fn only_settled_unchanged_files_may_be_linked() {
        let prev = file("f");
        let scanned = prev.mtime_ns + RACY_MARGIN_NS + 1;
        let live = prev.clone();
        assert!(may_link(&prev, &live, Some(scanned)));
        // No scan time recorded (an older index): never.
        assert!(!may_link(&prev, &live, None));
        // Racily clean: mtime or ctime within the margin before the scan.
        assert!(!may_link(
            &prev,
            &live,
            Some(prev.mtime_ns + RACY_MARGIN_NS)
        ));
        assert!(!may_link(&prev, &live, Some(prev.mtime_ns)));
        let mut late_ctime = prev.clone();
        late_ctime.ctime_ns = scanned - RACY_MARGIN_NS;
        assert!(!may_link(&late_ctime, &late_ctime, Some(scanned)));
        // Any difference in size, mtime or ctime.
        for change in [
            |e: &mut Entry| e.size += 1,
            |e: &mut Entry| e.mtime_ns -= 1,
            |e: &mut Entry| e.ctime_ns += 1,
        ] {
            let mut l = live.clone();
            change(&mut l);
            assert!(!may_link(&prev, &l, Some(scanned)));
        }
        // A previous entry without a hash.
        let mut unhashed = prev.clone();
        unhashed.sha256 = None;
        assert!(!may_link(&unhashed, &live, Some(scanned)));
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let b = Path::new("/base");
        assert!(safe_join(b, "a/b").is_ok());
        assert!(safe_join(b, "a\nb").is_ok());
        assert!(safe_join(b, "../a").is_err());
        assert!(safe_join(b, "/a").is_err());
        assert!(safe_join(b, "").is_err());
        assert!(safe_join(b, "a/./b").is_err());
        assert!(safe_join(b, "a//b").is_err());
    }
}
