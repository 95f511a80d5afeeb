//! The `project` field: `ATOCORE_PROJECT`, else a cwd → project map, else the name of the
//! repository or folder the session runs in.
//!
//! The map is a JSON object of absolute path prefixes to project names, e.g.
//! `{"/home/me/work/atocore": "atocore", "/home/me/notes": "notes"}`. The longest prefix
//! that matches the cwd on whole path components wins. Without a match, the project is the
//! base name of the nearest ancestor of cwd that holds a `.git` entry, else the base name of
//! cwd itself, else `unknown`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Name used when nothing else gives one.
pub const UNKNOWN: &str = "unknown";

/// Where the project name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectSource {
    /// `ATOCORE_PROJECT`.
    Env,
    /// The projects map file.
    Map,
    /// The enclosing git repository's folder name.
    GitRoot,
    /// The cwd's folder name.
    Cwd,
    /// Nothing matched.
    Unknown,
}

/// Resolves the project. A map file that exists but cannot be read is an error (the
/// caller logs it and falls back to the folder name).
pub fn resolve(
    env_project: Option<&str>,
    map_file: Option<&Path>,
    cwd: Option<&str>,
) -> (String, ProjectSource, Option<Error>) {
    if let Some(p) = env_project.filter(|p| !p.trim().is_empty()) {
        return (p.trim().to_string(), ProjectSource::Env, None);
    }
    let Some(cwd) = cwd.filter(|c| !c.is_empty()).map(Path::new) else {
        return (UNKNOWN.into(), ProjectSource::Unknown, None);
    };
    let mut warning = None;
    if let Some(file) = map_file {
        match load_map(file) {
            Ok(Some(map)) => {
                if let Some(name) = lookup(&map, cwd) {
                    return (name, ProjectSource::Map, None);
                }
            }
            Ok(None) => {}
            Err(e) => warning = Some(e),
        }
    }
    if let Some(root) = cwd.ancestors().find(|a| a.join(".git").exists())
        && let Some(name) = base_name(root)
    {
        return (name, ProjectSource::GitRoot, warning);
    }
    match base_name(cwd) {
        Some(name) => (name, ProjectSource::Cwd, warning),
        None => (UNKNOWN.into(), ProjectSource::Unknown, warning),
    }
}

/// Reads the map; `Ok(None)` when the file does not exist.
pub fn load_map(file: &Path) -> Result<Option<BTreeMap<PathBuf, String>>> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read projects map", file, e)),
    };
    let raw: BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|source| Error::BadJson {
            path: file.to_path_buf(),
            source,
            hint: "expected an object of \"/abs/path/prefix\": \"project\"; fix it or delete it",
        })?;
    Ok(Some(
        raw.into_iter()
            .filter(|(k, v)| !k.is_empty() && !v.trim().is_empty())
            .map(|(k, v)| (PathBuf::from(k), v.trim().to_string()))
            .collect(),
    ))
}

fn lookup(map: &BTreeMap<PathBuf, String>, cwd: &Path) -> Option<String> {
    map.iter()
        .filter(|(prefix, _)| cwd.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.components().count())
        .map(|(_, name)| name.clone())
}

fn base_name(p: &Path) -> Option<String> {
    match p.components().next_back()? {
        Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_then_longest_prefix_then_folder() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("projects.json");
        std::fs::write(
            &map,
            r#"{"/w": "outer", "/w/inner": "inner", "/wx": "nope"}"#,
        )
        .unwrap();
        let r = |cwd| resolve(None, Some(&map), Some(cwd)).0;
        assert_eq!(resolve(Some(" p "), Some(&map), Some("/w")).0, "p");
        assert_eq!(r("/w/inner/deep"), "inner");
        assert_eq!(r("/w/other"), "outer");
        assert_eq!(r("/wxyz/q"), "q");
        assert_eq!(resolve(None, None, Some("/")).0, UNKNOWN);
        assert_eq!(resolve(None, None, None).0, UNKNOWN);
    }

    #[test]
    fn git_root_names_the_project() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("myrepo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("src/deep")).unwrap();
        let cwd = repo.join("src/deep");
        let (name, source, _) = resolve(None, None, Some(cwd.to_str().unwrap()));
        assert_eq!((name.as_str(), source), ("myrepo", ProjectSource::GitRoot));
    }

    #[test]
    fn broken_map_is_reported_and_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("projects.json");
        std::fs::write(&map, "{not json").unwrap();
        let (name, _, warning) = resolve(None, Some(&map), Some("/a/b"));
        assert_eq!(name, "b");
        assert!(warning.unwrap().to_string().contains("projects.json"));
    }
}
