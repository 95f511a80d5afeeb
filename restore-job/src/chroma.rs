//! The Chroma directory: an index of its tree, an incremental copy into a snapshot
//! (unchanged files hard-linked from the previous snapshot), and the restore that makes
//! the live directory equal a snapshot while the directory itself keeps its inode.
//!
//! The live chroma directory is a bind-mount point: it is never renamed or removed.
//! Restores stage inside it (`.atocore-restore/`), move live entries aside into the
//! staging area and the staged ones into place, entry by entry (docs/design.md §4: renames
//! inside a mount work; renames into it from outside fail with EXDEV).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::{self, copy_file_hashed, set_owner_and_mtime, sync_path};
use crate::durable::{ctime_ns, mtime_ns};
use crate::error::{Error, Result};
use crate::layout::STAGING_DIR;

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

fn now_ns() -> i128 {
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

/// Walk a chroma tree (without hashing). The staging folder is left out; odd entries
/// are left out and listed in `skipped`.
pub fn scan(root: &Path) -> Result<Index> {
    Ok(scan_tree(root)?.0)
}

/// [`scan`], with the left-out entries as values.
pub fn scan_tree(root: &Path) -> Result<(Index, Vec<Skipped>)> {
    // The root is the configured path: a link to the real folder is followed.
    let meta = fs::metadata(root).map_err(Error::io("stat", root))?;
    if !meta.is_dir() {
        return Err(Error::UnsafeEntry {
            path: root.to_path_buf(),
            why: "is not a folder".into(),
        });
    }
    let scanned_at_ns = now_ns();
    let mut index = Index {
        root: RootAttrs {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: mtime_ns(&meta),
        },
        entries: Vec::new(),
        skipped: Vec::new(),
        scanned_at_ns: Some(scanned_at_ns),
    };
    let mut skipped = Vec::new();
    walk(root, "", &mut index.entries, &mut skipped);
    index.entries.sort_by(|a, b| a.path.cmp(&b.path));
    // Links are judged against the whole tree, as the kernel would resolve them.
    let opaque: HashSet<&str> = skipped.iter().map(|s| s.path.as_str()).collect();
    let bad = unsafe_links(&index.entries, &opaque);
    if !bad.is_empty() {
        index
            .entries
            .retain(|e| !bad.iter().any(|(p, _)| p == &e.path));
        skipped.extend(bad.into_iter().map(|(path, why)| Skipped {
            path,
            why,
            unreadable: false,
        }));
    }
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    index.skipped = skipped
        .iter()
        .map(|s| format!("{}: {}", s.path, s.why))
        .collect();
    Ok((index, skipped))
}

/// A name as text: itself when UTF-8, else with `\x..` escapes for the odd bytes.
fn shown(name: &std::ffi::OsStr) -> String {
    match name.to_str() {
        Some(s) => s.to_string(),
        None => name
            .as_bytes()
            .utf8_chunks()
            .map(|c| {
                let mut s = c.valid().to_string();
                for b in c.invalid() {
                    s.push_str(&format!("\\x{b:02x}"));
                }
                s
            })
            .collect(),
    }
}

fn walk(root: &Path, rel_dir: &str, out: &mut Vec<Entry>, skipped: &mut Vec<Skipped>) {
    let dir = if rel_dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel_dir)
    };
    let unreadable = |skipped: &mut Vec<Skipped>, e: std::io::Error| {
        skipped.push(Skipped {
            path: if rel_dir.is_empty() {
                ".".into()
            } else {
                rel_dir.to_string()
            },
            why: format!("folder could not be listed ({e})"),
            unreadable: true,
        })
    };
    let children: Vec<fs::DirEntry> = match fs::read_dir(&dir).and_then(|rd| rd.collect()) {
        Ok(c) => c,
        Err(e) => return unreadable(skipped, e),
    };
    let mut children: Vec<_> = children.into_iter().map(|c| (c.file_name(), c)).collect();
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, child) in children {
        if rel_dir.is_empty() && name == STAGING_DIR {
            continue;
        }
        let join = |n: &str| {
            if rel_dir.is_empty() {
                n.to_string()
            } else {
                format!("{rel_dir}/{n}")
            }
        };
        let Some(name_str) = name.to_str() else {
            skipped.push(Skipped {
                path: join(&shown(&name)),
                why: "has a name that is not UTF-8".into(),
                unreadable: false,
            });
            continue;
        };
        let rel = join(name_str);
        let path = child.path();
        let m = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                skipped.push(Skipped {
                    path: rel,
                    why: format!("could not be stat-ed ({e})"),
                    unreadable: true,
                });
                continue;
            }
        };
        let ft = m.file_type();
        let mut e = Entry {
            path: rel.clone(),
            kind: EntryKind::File,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: 0,
            mtime_ns: mtime_ns(&m),
            ctime_ns: ctime_ns(&m),
            sha256: None,
            target: None,
        };
        if ft.is_symlink() {
            let target = match fs::read_link(&path) {
                Ok(t) => t,
                Err(err) => {
                    skipped.push(Skipped {
                        path: rel,
                        why: format!("symlink could not be read ({err})"),
                        unreadable: false,
                    });
                    continue;
                }
            };
            let Some(t) = target.to_str() else {
                skipped.push(Skipped {
                    path: rel,
                    why: "is a symlink whose target is not UTF-8".into(),
                    unreadable: false,
                });
                continue;
            };
            e.kind = EntryKind::Symlink;
            e.target = Some(t.to_string());
            out.push(e);
        } else if ft.is_dir() {
            e.kind = EntryKind::Dir;
            out.push(e);
            walk(root, &rel, out, skipped);
        } else if ft.is_file() {
            e.size = m.len();
            out.push(e);
        } else {
            skipped.push(Skipped {
                path: rel,
                why: "is not a file, folder or symlink (socket, fifo or device)".into(),
                unreadable: false,
            });
        }
    }
}

/// How many links one resolution may follow (the kernel's limit).
const MAX_LINK_HOPS: usize = 40;

/// Resolve `target` (the text of a link in folder `stack`) through the links of the
/// tree, as the kernel would: each component in turn, a link's own target expanded in
/// the folder that holds it, `..` taking the folder actually reached. An error when the
/// resolution leaves the root, is absolute, or follows more than 40 links.
fn follow(
    links: &HashMap<&str, &str>,
    opaque: &HashSet<&str>,
    stack: &mut Vec<String>,
    target: &str,
    hops: &mut usize,
) -> std::result::Result<(), String> {
    if target.starts_with('/') {
        return Err(format!(
            "is a symlink that leads to the absolute path {target}; only links that stay inside the chroma directory are kept"
        ));
    }
    if target.is_empty() {
        return Err("is a symlink with an empty target".into());
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err("is a symlink that resolves outside the chroma directory".into());
                }
            }
            name => {
                stack.push(name.to_string());
                let here = stack.join("/");
                if opaque.contains(here.as_str()) {
                    return Err(format!(
                        "is a symlink that resolves through {here}, which was left out"
                    ));
                }
                if let Some(t) = links.get(here.as_str()) {
                    if *hops >= MAX_LINK_HOPS {
                        return Err(
                            "is a symlink chain that does not resolve (too many levels of links)"
                                .into(),
                        );
                    }
                    *hops += 1;
                    stack.pop();
                    follow(links, opaque, stack, t, hops)?;
                }
            }
        }
    }
    Ok(())
}

/// Check one link of a tree: `Err(why)` when it would resolve outside the root.
fn check_link(
    links: &HashMap<&str, &str>,
    opaque: &HashSet<&str>,
    rel: &str,
    target: &str,
) -> std::result::Result<(), String> {
    let mut stack: Vec<String> = rel.split('/').map(str::to_string).collect();
    stack.pop();
    let mut hops = 1;
    follow(links, opaque, &mut stack, target, &mut hops)
}

/// The links of `entries` that resolve outside the root, with the reason. Links that
/// pass never go through one that fails (that one's resolution fails first), nor
/// through an `opaque` path: one left out of the tree, whose content is unknown.
fn unsafe_links(entries: &[Entry], opaque: &HashSet<&str>) -> Vec<(String, String)> {
    let links: HashMap<&str, &str> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
        .map(|e| (e.path.as_str(), e.target.as_deref().unwrap_or_default()))
        .collect();
    let mut bad: Vec<(String, String)> = links
        .iter()
        .filter_map(|(p, t)| {
            check_link(&links, opaque, p, t)
                .err()
                .map(|w| (p.to_string(), w))
        })
        .collect();
    bad.sort();
    bad
}

/// Every problem that makes an index unsafe to write out: a path that is not plain, a
/// path listed twice, an entry whose parent is not a folder of the index (so nothing
/// is ever written through a link), a link that resolves outside the tree.
pub fn index_problems(index: &Index) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut kinds: HashMap<&str, EntryKind> = HashMap::new();
    for e in &index.entries {
        if !is_plain(&e.path) {
            problems.push((e.path.clone(), "is not a plain relative path".into()));
            continue;
        }
        if kinds.insert(e.path.as_str(), e.kind).is_some() {
            problems.push((e.path.clone(), "is listed twice".into()));
        }
        if e.kind == EntryKind::Symlink && e.target.is_none() {
            problems.push((e.path.clone(), "is a symlink without a target".into()));
        }
    }
    for e in &index.entries {
        if let Some((parent, _)) = e.path.rsplit_once('/')
            && kinds.get(parent) != Some(&EntryKind::Dir)
        {
            problems.push((
                e.path.clone(),
                "lies below something that is not a folder of the index".into(),
            ));
        }
    }
    problems.extend(unsafe_links(&index.entries, &HashSet::new()));
    problems.sort();
    problems.dedup();
    problems
}

/// A relative path of plain names: no `..`, `.`, empty or absolute parts.
fn is_plain(rel: &str) -> bool {
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

/// Files whose mtime or ctime lie within this margin before the previous snapshot's
/// scan (or after it) are "racily clean": they may have changed in the same timestamp
/// tick as the scan, so they are copied again, never linked. Two seconds cover coarse
/// (one- and two-second) timestamp granularity and the kernel's coarse clock.
pub const RACY_MARGIN_NS: i128 = 2_000_000_000;

/// Whether a live file (`live`, freshly stat-ed) may be hard-linked from the previous
/// snapshot, whose entry is `prev` and whose scan began at `prev_scanned_at_ns`.
/// Same size, mtime and ctime are not enough on their own: the file must also have
/// been clearly older than that scan, so that any later change shows in its times.
pub fn may_link(prev: &Entry, live: &Entry, prev_scanned_at_ns: Option<i128>) -> bool {
    let Some(scanned) = prev_scanned_at_ns else {
        return false;
    };
    let settled = scanned - RACY_MARGIN_NS;
    prev.kind == EntryKind::File
        && live.kind == EntryKind::File
        && prev.sha256.is_some()
        && prev.size == live.size
        && prev.mtime_ns == live.mtime_ns
        && prev.ctime_ns == live.ctime_ns
        && live.mtime_ns < settled
        && live.ctime_ns < settled
}

/// The snapshot a copy may link unchanged files from.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    pub index: &'a Index,
    /// Its chroma folder.
    pub dir: &'a Path,
    /// Its stamp (named in warnings about it).
    pub stamp: &'a str,
}

/// Counts and findings from a snapshot copy.
#[derive(Debug, Clone, Default)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    pub linked: u64,
    /// Files that kept changing while they were copied (the last copy is kept), or
    /// that vanished before they could be copied.
    pub changed: Vec<String>,
    /// Link sources in the previous snapshot whose bytes no longer match their
    /// recorded hash, as `<stamp>/<path>` (the file was copied from live instead).
    pub damaged_sources: Vec<String>,
}

/// How often a file that changes while it is copied is copied again.
pub const COPY_RETRIES: usize = 3;

/// What identifies one version of a live file.
fn version(m: &fs::Metadata) -> (u64, u64, i128, i128) {
    (m.ino(), m.len(), mtime_ns(m), ctime_ns(m))
}

/// Take the fresh stat of a live file into its entry.
fn refresh(e: &mut Entry, m: &fs::Metadata) {
    e.mode = m.mode() & 0o7777;
    e.uid = m.uid();
    e.gid = m.gid();
    e.size = m.len();
    e.mtime_ns = mtime_ns(m);
    e.ctime_ns = ctime_ns(m);
}

/// What became of one live file.
enum FileCopy {
    /// Copied; `false` when it kept changing through every attempt.
    Copied(bool),
    /// Gone (or no longer a regular file) before it could be copied.
    Vanished,
    /// Could not be opened for reading (the reason).
    Unreadable(String),
}

/// Copy one live file to `out`, statting it before and after; a file that changed
/// meanwhile (size, mtime, ctime or inode) is copied again, up to [`COPY_RETRIES`]
/// times. The entry gets the stat the kept copy was taken under and its hash.
fn copy_live_file(src: &Path, out: &Path, e: &mut Entry) -> Result<FileCopy> {
    for attempt in 0..=COPY_RETRIES {
        if attempt > 0 {
            fs::remove_file(out).map_err(Error::io("remove", out))?;
        }
        let before = match fs::symlink_metadata(src) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(FileCopy::Vanished),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FileCopy::Vanished);
            }
            Err(err) => return Err(Error::io("stat", src)(err)),
        };
        let copied = match copy_file_hashed(src, out) {
            Ok(c) => c,
            Err(Error::Io {
                op: "open",
                path,
                source,
            }) if path == src => {
                return Ok(match source.kind() {
                    std::io::ErrorKind::NotFound => FileCopy::Vanished,
                    _ => FileCopy::Unreadable(format!("could not be opened ({source})")),
                });
            }
            Err(err) => return Err(err),
        };
        let after = fs::symlink_metadata(src).ok();
        refresh(e, &before);
        e.size = copied.bytes;
        e.sha256 = Some(copied.sha256);
        set_owner_and_mtime(out, e.uid, e.gid, Some(e.mtime_ns))?;
        if after.as_ref().map(version) == Some(version(&before)) {
            return Ok(FileCopy::Copied(true));
        }
        tracing::debug!(path = %src.display(), attempt, "file changed while it was copied");
    }
    Ok(FileCopy::Copied(false))
}

/// Copy the live tree into `dst` (a new folder), hashing every file. A file may be
/// hard-linked from `previous` instead (see [`may_link`]); a linked file is read and
/// hashed like a copied one, and a link source whose bytes differ from its recorded
/// hash is not used. Returns the index of the new copy (hashes filled).
pub fn snapshot_copy(
    live: &Path,
    dst: &Path,
    previous: Option<Previous<'_>>,
    keep_going: &dyn Fn() -> bool,
) -> Result<(Index, CopyStats)> {
    let mut index = scan(live)?;
    let prev: HashMap<&str, &Entry> = previous
        .map(|p| {
            p.index
                .entries
                .iter()
                .map(|e| (e.path.as_str(), e))
                .collect()
        })
        .unwrap_or_default();
    durable::create_dir_all(dst)?;
    let mut stats = CopyStats::default();
    let mut vanished = Vec::new();
    let mut unreadable = Vec::new();
    for e in &mut index.entries {
        if !keep_going() {
            return Err(Error::Cancelled("the chroma copy"));
        }
        let src = safe_join(live, &e.path)?;
        let out = safe_join(dst, &e.path)?;
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir(&out).map_err(Error::io("create folder", &out))?;
            }
            EntryKind::Symlink => {
                let target = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(target, &out).map_err(Error::io("create link", &out))?;
                set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
            }
            EntryKind::File => {
                // Decide on a fresh stat, not the scan's: the file may have changed since.
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => refresh(e, &m),
                    Ok(_) => {
                        vanished.push(e.path.clone());
                        continue;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        vanished.push(e.path.clone());
                        continue;
                    }
                    Err(err) => return Err(Error::io("stat", &src)(err)),
                }
                if let (Some(p), Some(pv)) = (prev.get(e.path.as_str()), previous)
                    && may_link(p, e, pv.index.scanned_at_ns)
                {
                    let from = safe_join(pv.dir, &e.path)?;
                    if fs::hard_link(&from, &out).is_ok() {
                        // Every file of a snapshot is hashed from its bytes: the link
                        // source is read, not trusted.
                        let h = durable::sha256_file(&out).ok();
                        if h.is_some()
                            && h == p.sha256
                            && fs::metadata(&out).map(|m| m.len()).ok() == Some(e.size)
                        {
                            e.sha256 = h;
                            stats.files += 1;
                            stats.bytes += e.size;
                            stats.linked += 1;
                            continue;
                        }
                        fs::remove_file(&out).map_err(Error::io("remove", &out))?;
                        tracing::warn!(
                            snapshot = pv.stamp,
                            path = %e.path,
                            "a chroma file of an earlier snapshot no longer matches its recorded hash; that snapshot is damaged, the file is copied from live instead"
                        );
                        stats
                            .damaged_sources
                            .push(format!("{}/{}", pv.stamp, e.path));
                    }
                }
                match copy_live_file(&src, &out, e)? {
                    FileCopy::Copied(consistent) => {
                        stats.files += 1;
                        stats.bytes += e.size;
                        if !consistent {
                            tracing::warn!(path = %e.path, "chroma file kept changing while it was copied; the last copy is kept");
                            stats.changed.push(e.path.clone());
                        }
                    }
                    FileCopy::Vanished => vanished.push(e.path.clone()),
                    FileCopy::Unreadable(why) => {
                        tracing::warn!(path = %e.path, why, "chroma file left out: it cannot be read");
                        unreadable.push(e.path.clone());
                        index.skipped.push(format!("{}: {why}", e.path));
                    }
                }
            }
        }
    }
    if !unreadable.is_empty() {
        index.entries.retain(|e| !unreadable.contains(&e.path));
        index.skipped.sort();
    }
    if !vanished.is_empty() {
        for p in &vanished {
            tracing::warn!(path = %p, "chroma file vanished before it could be copied");
        }
        index.entries.retain(|e| !vanished.contains(&e.path));
        stats.changed.extend(vanished);
        stats.changed.sort();
    }
    finish_dirs(&index, dst)?;
    sync_path(dst)?;
    Ok((index, stats))
}

/// Give the folders of a copied tree their recorded mode, owner and mtime, and fsync
/// them. Folders last, deepest first: their mtimes change while children are added.
fn finish_dirs(index: &Index, base: &Path) -> Result<()> {
    for e in index
        .entries
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Dir)
    {
        let out = safe_join(base, &e.path)?;
        fs::set_permissions(&out, fs::Permissions::from_mode(e.mode))
            .map_err(Error::io("set mode of", &out))?;
        sync_path(&out)?;
        set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
    }
    Ok(())
}

/// Copy a snapshot's chroma tree out into `new` (a fresh folder), checking every file's
/// hash against the index on the way: a snapshot damaged after validation is caught
/// here, before anything live is touched.
///
/// Nothing is ever written outside `new`: an index whose paths are not plain, whose
/// entries lie below a link, or whose links resolve outside the tree is refused before
/// anything is written; files are created with `O_EXCL` (never through a link) and
/// folders only below folders this stage created.
pub fn stage(snapshot_chroma: &Path, index: &Index, new: &Path) -> Result<()> {
    // The layout is fixed: `<snapshots>/<STAMP>/chroma`.
    let stamp = snapshot_chroma
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let problems = index_problems(index);
    if !problems.is_empty() {
        return Err(Error::DamagedSnapshot {
            stamp,
            why: format!(
                "its chroma index is unsafe to restore ({})",
                problems
                    .iter()
                    .map(|(p, why)| format!("{p} {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    if new.exists() {
        fs::remove_dir_all(new).map_err(Error::io("clear stale staging", new))?;
    }
    durable::create_dir_all(new)?;
    for e in &index.entries {
        let src = safe_join(snapshot_chroma, &e.path)?;
        let out = safe_join(new, &e.path)?;
        match e.kind {
            EntryKind::Dir => fs::create_dir(&out).map_err(Error::io("create folder", &out))?,
            EntryKind::Symlink => {
                let target = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(target, &out).map_err(Error::io("create link", &out))?;
                set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
            }
            EntryKind::File => {
                let copied = copy_file_hashed(&src, &out)?;
                if let Some(want) = &e.sha256
                    && &copied.sha256 != want
                {
                    return Err(Error::DamagedSnapshot {
                        stamp,
                        why: format!(
                            "chroma file {} does not match its recorded hash (damaged after it was validated)",
                            e.path
                        ),
                    });
                }
                fs::set_permissions(&out, fs::Permissions::from_mode(e.mode))
                    .map_err(Error::io("set mode of", &out))?;
                set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
            }
        }
    }
    finish_dirs(index, new)?;
    sync_path(new)
}

/// Move every entry of the live directory (but the staging folder) into `into`, a
/// folder inside the staging area. Entries already moved by an interrupted run are no
/// longer live, so running it again moves only the rest.
pub fn move_out(live: &Path, into: &Path, crash_point_name: &str) -> Result<()> {
    durable::create_dir_all(into)?;
    for (n, entry) in fs::read_dir(live)
        .map_err(Error::io("list", live))?
        .enumerate()
    {
        let entry = entry.map_err(Error::io("list", live))?;
        if entry.file_name() == STAGING_DIR {
            continue;
        }
        let to = into.join(entry.file_name());
        fs::rename(entry.path(), &to).map_err(Error::io("move aside", entry.path()))?;
        if n == 0 {
            crate::faults::crash_point(crash_point_name);
        }
    }
    sync_path(into)?;
    sync_path(live)
}

/// Move every staged entry from `new` into the live directory, then give the live
/// directory the snapshot's mode and owner. The live directory keeps its inode.
pub fn move_in(new: &Path, live: &Path, root: &RootAttrs) -> Result<()> {
    for (n, entry) in fs::read_dir(new)
        .map_err(Error::io("list", new))?
        .enumerate()
    {
        let entry = entry.map_err(Error::io("list", new))?;
        let to = live.join(entry.file_name());
        fs::rename(entry.path(), &to).map_err(Error::io("move into place", &to))?;
        if n == 0 {
            crate::faults::crash_point("chroma-half-in");
        }
    }
    fs::set_permissions(live, fs::Permissions::from_mode(root.mode))
        .map_err(Error::io("set mode of", live))?;
    set_owner_and_mtime(live, root.uid, root.gid, None)?;
    sync_path(new)?;
    sync_path(live)
}

/// Compare the live tree with a snapshot index: paths, kinds, sizes, modes, owners and
/// link targets. Returns the differences (empty when equal).
/// Entries the scan had to leave out count as `extra:` (they are not in any index);
/// folders that could not be listed as `unreadable:`.
pub fn differences(live: &Path, index: &Index) -> Result<Vec<String>> {
    let (now, odd) = scan_tree(live)?;
    let want: HashMap<&str, &Entry> = index.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let have: HashMap<&str, &Entry> = now.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut diffs = Vec::new();
    for (p, w) in &want {
        match have.get(p) {
            None => diffs.push(format!("missing:{p}")),
            Some(h) => {
                let same = h.kind == w.kind
                    && h.mode == w.mode
                    && (h.kind != EntryKind::File || h.size == w.size)
                    && h.target == w.target;
                if !same {
                    diffs.push(format!("differs:{p}"));
                }
            }
        }
    }
    for p in have.keys() {
        if !want.contains_key(p) {
            diffs.push(format!("extra:{p}"));
        }
    }
    for o in odd {
        diffs.push(if o.unreadable {
            format!("unreadable:{}", o.path)
        } else {
            format!("extra:{}", o.path)
        });
    }
    diffs.sort();
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;

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
