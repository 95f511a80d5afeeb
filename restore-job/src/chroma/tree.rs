//! Reading a chroma tree: the scan that builds an [`Index`] (odd entries left out
//! with a reason), symlinks resolved through the tree as the kernel would, and the
//! checks that keep a crafted index from reaching outside its folder.

use crate::durable::{ctime_ns, mtime_ns};
use crate::error::{Error, Result};
use crate::layout::STAGING_DIR;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::*;

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
pub(crate) fn shown(name: &std::ffi::OsStr) -> String {
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

pub(crate) fn walk(root: &Path, rel_dir: &str, out: &mut Vec<Entry>, skipped: &mut Vec<Skipped>) {
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
pub(crate) const MAX_LINK_HOPS: usize = 40;

/// Resolve `target` (the text of a link in folder `stack`) through the links of the
/// tree, as the kernel would: each component in turn, a link's own target expanded in
/// the folder that holds it, `..` taking the folder actually reached. An error when the
/// resolution leaves the root, is absolute, or follows more than 40 links.
pub(crate) fn follow(
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
pub(crate) fn check_link(
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
pub(crate) fn unsafe_links(entries: &[Entry], opaque: &HashSet<&str>) -> Vec<(String, String)> {
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
