//! Settings: the clap `Arguments` (flags with environment mirrors, as every AtoCore
//! component takes them) and the validated `Config` that the rest of the crate uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::StandinError;

/// Default storage root, as in the contract (section 0).
pub const DEFAULT_STORAGE_ROOT: &str = "/srv/storage/atocore";
/// Default listening address: the real service's port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8100";

/// `atocore-standin`: a STAND-IN for the AtoCore service, for tests and the demo.
///
/// It is not the real AtoCore service and not a mock of AtoCore Ops' own code: it speaks
/// the same endpoints, keeps a real WAL-mode SQLite database and chroma-like files at the
/// contract's paths, and writes in the background while it runs, like the real one.
#[derive(Debug, Parser)]
#[command(name = "atocore-standin", version, about, long_about = None)]
pub struct Arguments {
    /// Storage root; the database, registry and chroma paths derive from it.
    #[arg(long, env = "ATOCORE_STORAGE_ROOT", default_value = DEFAULT_STORAGE_ROOT, global = true)]
    pub storage_root: PathBuf,

    /// SQLite database [default: <root>/data/db/atocore.db].
    #[arg(long, env = "ATOCORE_DB_PATH", global = true)]
    pub db_path: Option<PathBuf>,

    /// Project registry JSON [default: <root>/config/project-registry.json].
    #[arg(long, env = "ATOCORE_REGISTRY_PATH", global = true)]
    pub registry_path: Option<PathBuf>,

    /// Chroma-like vector store directory [default: <root>/data/chroma].
    #[arg(long, env = "ATOCORE_CHROMA_PATH", global = true)]
    pub chroma_path: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "ATOCORE_LISTEN", default_value = DEFAULT_LISTEN, global = true)]
    pub listen: String,

    /// Build identifier reported by `GET /health`.
    #[arg(long, env = "ATOCORE_BUILD_SHA", global = true)]
    pub build_sha: Option<String>,

    /// Interval of the background heartbeat write, in milliseconds.
    #[arg(
        long,
        env = "ATOCORE_STANDIN_HEARTBEAT_MS",
        default_value_t = 200,
        global = true
    )]
    pub heartbeat_ms: u64,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Probe `/health` and exit 0 when it answers `"status":"ok"`, else 1 (for the image
    /// HEALTHCHECK: a scratch image has no curl).
    Healthcheck {
        /// URL to probe [default: http://127.0.0.1:<listen port>/health].
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Create the storage folders (db, chroma, config, backups) and optionally hand the
    /// database and chroma folders to a numeric `UID:GID` (demo helper; run as root).
    PrepareStorage {
        /// Numeric owner `UID:GID` for the database and chroma folders (not their contents).
        #[arg(long)]
        owner: Option<String>,
    },
}

/// Validated settings; nothing after this sees raw strings.
#[derive(Debug, Clone)]
pub struct Config {
    pub storage_root: PathBuf,
    pub db_path: PathBuf,
    pub registry_path: PathBuf,
    pub chroma_path: PathBuf,
    pub backup_dir: PathBuf,
    pub listen: SocketAddr,
    pub build_sha: String,
    pub heartbeat: Duration,
}

impl Config {
    /// Settings for a storage root with every path derived from it (handy in tests).
    pub fn for_root(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref().to_path_buf();
        Self {
            db_path: root.join("data/db/atocore.db"),
            registry_path: root.join("config/project-registry.json"),
            chroma_path: root.join("data/chroma"),
            backup_dir: root.join("backups"),
            storage_root: root,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8100),
            build_sha: "unknown".to_owned(),
            heartbeat: Duration::from_millis(200),
        }
    }

    /// The URL `healthcheck` probes by default: the listening port on loopback.
    pub fn local_health_url(&self) -> String {
        let ip = match self.listen.ip() {
            ip if ip.is_unspecified() && ip.is_ipv6() => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/health", SocketAddr::new(ip, self.listen.port()))
    }
}

impl TryFrom<&Arguments> for Config {
    type Error = StandinError;

    fn try_from(args: &Arguments) -> Result<Self, Self::Error> {
        if args.storage_root.as_os_str().is_empty() {
            return Err(StandinError::Config {
                name: "ATOCORE_STORAGE_ROOT",
                message: "empty path".to_owned(),
            });
        }
        let mut config = Config::for_root(&args.storage_root);
        let given = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        if let Some(p) = given(&args.db_path) {
            config.db_path = p;
        }
        if let Some(p) = given(&args.registry_path) {
            config.registry_path = p;
        }
        if let Some(p) = given(&args.chroma_path) {
            config.chroma_path = p;
        }
        config.listen = args.listen.parse().map_err(|e| StandinError::Config {
            name: "ATOCORE_LISTEN",
            message: format!(
                "`{}` is not an address like 0.0.0.0:8100 ({e})",
                args.listen
            ),
        })?;
        config.build_sha = args
            .build_sha
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_owned();
        if args.heartbeat_ms == 0 {
            return Err(StandinError::Config {
                name: "ATOCORE_STANDIN_HEARTBEAT_MS",
                message: "must be at least 1".to_owned(),
            });
        }
        config.heartbeat = Duration::from_millis(args.heartbeat_ms);
        Ok(config)
    }
}

/// Parses a numeric `UID:GID` owner.
pub fn parse_owner(text: &str) -> Result<(u32, u32), StandinError> {
    let bad = || StandinError::Config {
        name: "--owner",
        message: format!("`{text}` is not a numeric UID:GID such as 10001:10001"),
    };
    let (uid, gid) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        uid.parse().map_err(|_| bad())?,
        gid.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_derive_from_the_root_and_flags_override_them() {
        let args = Arguments::try_parse_from([
            "atocore-standin",
            "--storage-root",
            "/x",
            "--chroma-path",
            "/y/chroma",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let config = Config::try_from(&args).unwrap();
        assert_eq!(config.db_path, Path::new("/x/data/db/atocore.db"));
        assert_eq!(
            config.registry_path,
            Path::new("/x/config/project-registry.json")
        );
        assert_eq!(config.chroma_path, Path::new("/y/chroma"));
        assert_eq!(config.backup_dir, Path::new("/x/backups"));
        assert_eq!(config.build_sha, "unknown");
    }

    #[test]
    fn health_url_uses_loopback_for_a_wildcard_listen() {
        let config = Config::for_root("/x");
        assert_eq!(config.local_health_url(), "http://127.0.0.1:8100/health");
    }

    #[test]
    fn owner_must_be_numeric() {
        assert_eq!(parse_owner("10001:10002").unwrap(), (10001, 10002));
        assert!(parse_owner("atocore").is_err());
    }
}
