//! `atocore-capture install`: add the Stop hook to a Claude Code settings.json.
//!
//! Idempotent: a Stop hook whose command runs a program named `atocore-capture` is ours;
//! when it already has the wanted command and timeout nothing changes, when it differs it is
//! updated in place, when there is none a new entry is appended to `hooks.Stop`. Every other
//! key, hook and entry is kept, in its order. Before a change the file is copied to
//! `<settings>.atocore-capture-<UTC stamp>.bak`; the new file is written atomically with the
//! old file's permissions (through a symlink to its target).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ordered_json::Json;
use crate::state_dir::write_atomic;

/// What `install` does.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The settings file.
    pub settings: PathBuf,
    /// The hook command (normally the absolute path of this binary).
    pub command: String,
    /// Claude Code's timeout for the hook, in seconds.
    pub timeout_secs: u64,
    /// Compute and return the result without writing anything.
    pub dry_run: bool,
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstallReport {
    /// The settings file.
    pub settings: String,
    /// `added`, `updated` or `unchanged`.
    pub action: &'static str,
    /// The hook command written.
    pub command: String,
    /// The hook timeout in seconds.
    pub timeout: u64,
    /// The backup made before writing (`None` when nothing was written or the file is new).
    pub backup: Option<String>,
    /// True when nothing was written.
    pub dry_run: bool,
}

/// The default settings file: `$CLAUDE_CONFIG_DIR/settings.json`, else
/// `~/.claude/settings.json`.
pub fn default_settings_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("settings.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".claude/settings.json"))
}

/// The command for this binary: its absolute path, double-quoted when it holds spaces.
pub fn default_command() -> Result<String> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Error::io("cannot find the path of this program", "atocore-capture", e))?;
    let s = exe.to_string_lossy().into_owned();
    Ok(if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s
    })
}

/// True when a hook command runs a program named `atocore-capture`.
pub fn is_ours(command: &str) -> bool {
    let first = command
        .trim()
        .strip_prefix('"')
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| command.split_whitespace().next().unwrap_or(""));
    Path::new(first).file_name().and_then(|n| n.to_str()) == Some("atocore-capture")
}

/// Adds or updates the hook. Returns the report and the resulting settings document.
pub fn install(opts: &InstallOptions) -> Result<(InstallReport, Json)> {
    // Write through a symlink (dotfile managers) rather than replacing it.
    let target = std::fs::canonicalize(&opts.settings).unwrap_or_else(|_| opts.settings.clone());
    let (mut doc, existed) = match std::fs::read(&target) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => (Json::Object(Vec::new()), true),
        Ok(bytes) => {
            let doc: Json = serde_json::from_slice(&bytes).map_err(|source| Error::BadJson {
                path: target.clone(),
                source,
                hint: "fix it by hand (Claude Code would not read it either), or pass --settings to another file",
            })?;
            (doc, true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Json::Object(Vec::new()), false),
        Err(e) => return Err(Error::io("cannot read settings", &target, e)),
    };
    let bad = |what: &str| Error::BadSettings {
        path: target.clone(),
        what: what.to_string(),
    };
    let wanted = Json::Object(vec![
        ("type".into(), Json::String("command".into())),
        ("command".into(), Json::String(opts.command.clone())),
        ("timeout".into(), Json::Number(opts.timeout_secs.into())),
    ]);

    let hooks = doc
        .entry("hooks", Json::Object(Vec::new()))
        .ok_or_else(|| bad("the top level is not a JSON object"))?;
    if !matches!(hooks, Json::Object(_)) {
        return Err(bad("`hooks` is not an object"));
    }
    let stop = hooks
        .entry("Stop", Json::Array(Vec::new()))
        .ok_or_else(|| bad("`hooks` is not an object"))?;
    let Json::Array(groups) = stop else {
        return Err(bad("`hooks.Stop` is not an array"));
    };

    let mut found = 0;
    let mut changed = false;
    for group in groups.iter_mut() {
        let Some(Json::Array(list)) = group.get_mut("hooks") else {
            continue;
        };
        for hook in list.iter_mut() {
            let ours = hook
                .get("command")
                .and_then(Json::as_str)
                .is_some_and(is_ours);
            if ours {
                found += 1;
                if *hook != wanted {
                    *hook = wanted.clone();
                    changed = true;
                }
            }
        }
    }
    let action = if found == 0 {
        groups.push(Json::Object(vec![(
            "hooks".into(),
            Json::Array(vec![wanted.clone()]),
        )]));
        "added"
    } else if changed {
        "updated"
    } else {
        "unchanged"
    };

    let mut backup = None;
    if action != "unchanged" && !opts.dry_run {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create folder", dir, e))?;
        }
        let mode = std::fs::metadata(&target).ok().map(|m| m.permissions());
        if existed {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "settings.json".into());
            let bak = target.with_file_name(format!("{name}.atocore-capture-{stamp}.bak"));
            std::fs::copy(&target, &bak)
                .map_err(|e| Error::io("cannot back up settings to", &bak, e))?;
            backup = Some(bak.to_string_lossy().into_owned());
        }
        write_atomic(&target, doc.to_pretty().as_bytes())?;
        if let Some(perm) = mode {
            std::fs::set_permissions(&target, perm)
                .map_err(|e| Error::io("cannot restore permissions of", &target, e))?;
        }
    }
    let report = InstallReport {
        settings: target.to_string_lossy().into_owned(),
        action,
        command: opts.command.clone(),
        timeout: opts.timeout_secs,
        backup,
        dry_run: opts.dry_run,
    };
    Ok((report, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_our_command() {
        assert!(is_ours("/usr/local/bin/atocore-capture"));
        assert!(is_ours("atocore-capture hook"));
        assert!(is_ours("\"/My Tools/atocore-capture\" --x"));
        assert!(!is_ours("/usr/bin/other-hook atocore-capture"));
        assert!(!is_ours(""));
    }
}
