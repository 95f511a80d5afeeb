//! Settings: raw values (flags with environment mirrors) validated into a [`Config`].
//!
//! The hook must never fail because of a setting, so [`Config::resolve`] has two modes:
//! [`Strictness::Lenient`] (the hook) replaces a bad value by its default and returns a
//! warning; [`Strictness::Strict`] (the commands people run) refuses it with an error.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default AtoCore base URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8100";
/// Default total time budget of one hook run, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 1500;
/// Default cap on the transcript bytes one run may read.
pub const DEFAULT_MAX_READ_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest accepted transcript read cap.
pub const MIN_MAX_READ_BYTES: u64 = 64 * 1024;
/// Smallest and largest accepted time budget, in milliseconds.
pub const TIMEOUT_RANGE_MS: (u64, u64) = (50, 600_000);
/// Largest hook input (stdin) accepted, in bytes.
pub const MAX_STDIN_BYTES: u64 = 4 * 1024 * 1024;

/// Environment variable names, in one place.
pub mod env {
    /// AtoCore base URL.
    pub const URL: &str = "ATOCORE_URL";
    /// Project name sent with every capture.
    pub const PROJECT: &str = "ATOCORE_PROJECT";
    /// Kill switch.
    pub const DISABLED: &str = "ATOCORE_CAPTURE_DISABLED";
    /// Total time budget of one hook run.
    pub const TIMEOUT_MS: &str = "ATOCORE_CAPTURE_TIMEOUT_MS";
    /// State directory (outbox, ledger, status, log).
    pub const DIR: &str = "ATOCORE_CAPTURE_DIR";
    /// Cap on transcript bytes read per run.
    pub const MAX_READ_BYTES: &str = "ATOCORE_CAPTURE_MAX_READ_BYTES";
    /// Path of the cwd → project map.
    pub const PROJECTS: &str = "ATOCORE_CAPTURE_PROJECTS";
    /// Fault injection for self-tests (`panic`).
    pub const FAULT: &str = "ATOCORE_CAPTURE_FAULT";
}

/// Raw setting values as given (flag or environment), before validation.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RawSettings {
    /// AtoCore base URL; captures go to `<URL>/interactions`.
    #[arg(long, global = true, env = env::URL, value_name = "URL")]
    pub url: Option<String>,
    /// Project name sent with every capture (default: mapped from the session's cwd).
    #[arg(long, global = true, env = env::PROJECT, value_name = "NAME")]
    pub project: Option<String>,
    /// Kill switch: 1/true/yes/on makes the hook do nothing at all.
    #[arg(long, global = true, env = env::DISABLED, value_name = "BOOL", hide = true)]
    pub disabled: Option<String>,
    /// Total time budget of one hook run in milliseconds (HTTP included).
    #[arg(long, global = true, env = env::TIMEOUT_MS, value_name = "MS")]
    pub timeout_ms: Option<String>,
    /// State directory: outbox/, dead/, ledger, status.json, capture.log.
    #[arg(long, global = true, env = env::DIR, value_name = "DIR")]
    pub dir: Option<String>,
    /// Cap on the transcript bytes one hook run may read.
    #[arg(long, global = true, env = env::MAX_READ_BYTES, value_name = "BYTES")]
    pub max_read_bytes: Option<String>,
    /// JSON file mapping cwd prefixes to project names.
    #[arg(long, global = true, env = env::PROJECTS, value_name = "FILE")]
    pub projects_file: Option<String>,
}

impl RawSettings {
    /// Reads every setting from the environment only (the hook's path when flags cannot
    /// be parsed).
    pub fn from_env() -> Self {
        let get = |name: &str| std::env::var(name).ok();
        RawSettings {
            url: get(env::URL),
            project: get(env::PROJECT),
            disabled: get(env::DISABLED),
            timeout_ms: get(env::TIMEOUT_MS),
            dir: get(env::DIR),
            max_read_bytes: get(env::MAX_READ_BYTES),
            projects_file: get(env::PROJECTS),
        }
    }
}

/// How [`Config::resolve`] treats a bad value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Use the default and warn (hook mode: never fail).
    Lenient,
    /// Refuse with an error (commands run by people).
    Strict,
}

/// Validated settings. Nothing after [`Config::resolve`] sees raw strings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL without a trailing slash.
    pub url: String,
    /// `ATOCORE_PROJECT`, when set and not blank.
    pub project: Option<String>,
    /// The kill switch.
    pub disabled: bool,
    /// Total time budget of one hook run.
    pub timeout: Duration,
    /// State directory.
    pub dir: PathBuf,
    /// Cap on transcript bytes read per run.
    pub max_read_bytes: u64,
    /// cwd → project map file (may not exist).
    pub projects_file: Option<PathBuf>,
}

impl Config {
    /// The endpoint captures are POSTed to.
    pub fn interactions_url(&self) -> String {
        format!("{}/interactions", self.url)
    }

    /// Validates raw settings. Returns the config and the warnings of lenient mode.
    pub fn resolve(raw: &RawSettings, strictness: Strictness) -> Result<(Config, Vec<String>)> {
        let mut warnings = Vec::new();
        let mut bad = |err: Error| -> Result<()> {
            match strictness {
                Strictness::Strict => Err(err),
                Strictness::Lenient => {
                    warnings.push(format!("{err}; using the default"));
                    Ok(())
                }
            }
        };

        let mut url = DEFAULT_URL.to_string();
        if let Some(value) = nonblank(&raw.url) {
            let trimmed = value.trim().trim_end_matches('/');
            if trimmed.starts_with("http://") && trimmed.len() > "http://".len() {
                url = trimmed.to_string();
            } else {
                bad(Error::BadSetting {
                    name: env::URL,
                    value: value.to_string(),
                    why: "expected a plain http:// URL such as http://127.0.0.1:8100 (https is not built in: AtoCore is a local service)".into(),
                })?;
            }
        }

        let disabled = match nonblank(&raw.disabled) {
            None => false,
            Some(v) => match parse_bool(v) {
                Some(b) => b,
                None => {
                    bad(Error::BadSetting {
                        name: env::DISABLED,
                        value: v.to_string(),
                        why: "expected 1/0, true/false, yes/no or on/off".into(),
                    })?;
                    false
                }
            },
        };

        let mut timeout_ms = DEFAULT_TIMEOUT_MS;
        if let Some(v) = nonblank(&raw.timeout_ms) {
            match v.trim().parse::<u64>() {
                Ok(ms) if (TIMEOUT_RANGE_MS.0..=TIMEOUT_RANGE_MS.1).contains(&ms) => {
                    timeout_ms = ms
                }
                _ => bad(Error::BadSetting {
                    name: env::TIMEOUT_MS,
                    value: v.to_string(),
                    why: format!(
                        "expected whole milliseconds from {} to {}",
                        TIMEOUT_RANGE_MS.0, TIMEOUT_RANGE_MS.1
                    ),
                })?,
            }
        }

        let mut max_read_bytes = DEFAULT_MAX_READ_BYTES;
        if let Some(v) = nonblank(&raw.max_read_bytes) {
            match v.trim().parse::<u64>() {
                Ok(n) if n >= MIN_MAX_READ_BYTES => max_read_bytes = n,
                _ => bad(Error::BadSetting {
                    name: env::MAX_READ_BYTES,
                    value: v.to_string(),
                    why: format!("expected a whole number of bytes, at least {MIN_MAX_READ_BYTES}"),
                })?,
            }
        }

        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let dir = match nonblank(&raw.dir) {
            Some(d) => PathBuf::from(d),
            None => default_state_dir(home.as_deref()),
        };
        let projects_file = match nonblank(&raw.projects_file) {
            Some(p) => Some(PathBuf::from(p)),
            None => default_projects_file(home.as_deref()),
        };

        let config = Config {
            url,
            project: nonblank(&raw.project).map(|p| p.trim().to_string()),
            disabled,
            timeout: Duration::from_millis(timeout_ms),
            dir,
            max_read_bytes,
            projects_file,
        };
        Ok((config, warnings))
    }
}

/// `$XDG_STATE_HOME/atocore-capture`, else `~/.local/state/atocore-capture`, else a
/// per-user folder in the temp directory.
fn default_state_dir(home: Option<&std::path::Path>) -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            return xdg.join("atocore-capture");
        }
    }
    match home {
        Some(home) => home.join(".local/state/atocore-capture"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => std::env::temp_dir().join(format!("atocore-capture-{}", unsafe { libc::getuid() })),
    }
}

/// `$XDG_CONFIG_HOME/atocore-capture/projects.json`, else `~/.config/atocore-capture/projects.json`.
fn default_projects_file(home: Option<&std::path::Path>) -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            return Some(xdg.join("atocore-capture/projects.json"));
        }
    }
    home.map(|h| h.join(".config/atocore-capture/projects.json"))
}

fn nonblank(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

/// Parses the usual spellings of a boolean.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// True when the kill switch is set in the environment. Checked before anything else.
pub fn disabled_in_env() -> bool {
    std::env::var(env::DISABLED)
        .ok()
        .and_then(|v| parse_bool(&v))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_replaces_bad_values_with_defaults() {
        let raw = RawSettings {
            url: Some("ftp://x".into()),
            timeout_ms: Some("soon".into()),
            max_read_bytes: Some("12".into()),
            dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let (cfg, warnings) = Config::resolve(&raw, Strictness::Lenient).unwrap();
        assert_eq!(cfg.url, DEFAULT_URL);
        assert_eq!(cfg.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!(cfg.max_read_bytes, DEFAULT_MAX_READ_BYTES);
        assert_eq!(warnings.len(), 3);
        assert!(Config::resolve(&raw, Strictness::Strict).is_err());
    }

    #[test]
    fn url_trailing_slash_is_dropped() {
        let raw = RawSettings {
            url: Some("http://h:1/".into()),
            dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let (cfg, _) = Config::resolve(&raw, Strictness::Strict).unwrap();
        assert_eq!(cfg.interactions_url(), "http://h:1/interactions");
    }
}
