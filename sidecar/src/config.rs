//! Settings: the clap [`Arguments`] (every flag has an environment mirror) and the
//! validated [`Config`] that the rest of the crate takes. Nothing after
//! [`Config::from_args`] sees a raw string.

use std::net::SocketAddr;
use std::time::Duration;

use atocore_restore_job::config::{parse_duration_ms, parse_duration_secs};

use atocore_restore_job::logging::LogFormat;
use atocore_restore_job::offsite::OffsiteArgs;
use atocore_restore_job::offsite::prune::PruneArgs;
use atocore_restore_job::{Paths, Policy, RetentionArgs, StorageArgs};
use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::schedule::Schedule;

/// Default listening address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8101";

/// AtoCore sidecar: admin API, backup schedule, retention, metrics.
#[derive(Debug, Parser)]
#[command(name = "atocore-sidecar", version, about, long_about = None)]
pub struct Arguments {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Off-site replication (ATOCORE_OFFSITE_URL, ATOCORE_OFFSITE_RECIPIENTS, ...):
    /// when a target is set, every valid snapshot is pushed after it is made.
    #[command(flatten)]
    pub offsite: OffsiteArgs,
    /// Continuous WAL capture for point-in-time restores (ATOCORE_WAL_STREAM, ...).
    #[command(flatten)]
    pub wal: crate::walstream::WalArgs,

    /// Address to listen on. Anything but loopback needs a token.
    #[arg(long, env = "ATOCORE_SIDECAR_ADDR", default_value = DEFAULT_ADDR, global = true)]
    pub addr: String,
    /// Bearer token required on every /admin/* request.
    #[arg(
        long,
        env = "ATOCORE_SIDECAR_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// The atocore container (paused for chroma copies, stopped/started for restores).
    #[arg(
        long,
        env = "ATOCORE_CONTAINER",
        default_value = "atocore",
        global = true
    )]
    pub container: String,
    /// The restore-job container that compose created (started for restores).
    #[arg(
        long,
        env = "ATOCORE_RESTORE_CONTAINER",
        default_value = "atocore-restore-job",
        global = true
    )]
    pub restore_container: String,
    /// atocore's base URL (its /health gives the build_sha recorded in snapshots).
    #[arg(
        long,
        env = "ATOCORE_URL",
        default_value = "http://127.0.0.1:8100",
        global = true
    )]
    pub atocore_url: String,
    /// Docker Engine socket.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock",
        global = true
    )]
    pub docker_host: String,

    /// When to take a scheduled snapshot: cron expression (UTC, 5 fields `min hour dom
    /// month dow` or 6 with seconds first; day names, not numbers), or `off`.
    #[arg(
        long,
        env = "ATOCORE_BACKUP_SCHEDULE",
        default_value = "0 6 * * *",
        global = true
    )]
    pub schedule: String,
    /// When a scheduled snapshot includes chroma (also fires on its own), or `off`.
    #[arg(
        long,
        env = "ATOCORE_BACKUP_CHROMA_SCHEDULE",
        default_value = "0 6 * * Sun",
        global = true
    )]
    pub chroma_schedule: String,
    /// Run no scheduled snapshots at all (the API still works). `--no-schedule` alone is
    /// true; as a value (`--no-schedule=no`, or the env mirror) 1/0, true/false, yes/no
    /// and on/off are accepted, as env files write them.
    #[arg(
        long,
        env = "ATOCORE_SIDECAR_NO_SCHEDULE",
        global = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_schedule: bool,
    /// What to do at start when a scheduled snapshot was missed while the sidecar was down.
    #[arg(long, env = "ATOCORE_MISSED_RUN", value_enum, default_value_t = MissedRun::CatchUp, global = true)]
    pub missed_run: MissedRun,
    /// Seconds after start before the catch-up snapshot runs.
    #[arg(
        long,
        env = "ATOCORE_CATCH_UP_DELAY_SECS",
        default_value = "60",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub catch_up_delay_secs: Duration,

    /// /health says `degraded` when the newest valid snapshot is older than this.
    #[arg(
        long,
        env = "ATOCORE_HEALTH_STALE_HOURS",
        default_value_t = 26,
        global = true
    )]
    pub stale_hours: u64,
    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(
        long,
        env = "ATOCORE_SIDECAR_MAX_BODY_BYTES",
        default_value_t = 65536,
        global = true
    )]
    pub max_body_bytes: usize,
    /// Connections served at once; more get a 503 and are closed.
    #[arg(
        long,
        env = "ATOCORE_SIDECAR_MAX_CONNECTIONS",
        default_value_t = 64,
        global = true
    )]
    pub max_connections: usize,
    /// A client must send a request's headers within this time (also closes idle
    /// keep-alive connections), in milliseconds.
    #[arg(
        long,
        env = "ATOCORE_SIDECAR_HEADER_TIMEOUT_MS",
        default_value = "10000",
        value_parser = parse_duration_ms,
        global = true
    )]
    pub header_timeout_ms: Duration,
    /// A client must send a request's body within this time, in milliseconds.
    #[arg(
        long,
        env = "ATOCORE_SIDECAR_BODY_TIMEOUT_MS",
        default_value = "10000",
        value_parser = parse_duration_ms,
        global = true
    )]
    pub body_timeout_ms: Duration,
    /// On SIGTERM/SIGINT, how long running work may take to finish before exit.
    #[arg(
        long,
        env = "ATOCORE_SIDECAR_SHUTDOWN_SECS",
        default_value = "8",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub shutdown_secs: Duration,
    /// Upper bound for the online database copy of one snapshot, in seconds.
    #[arg(
        long,
        env = "ATOCORE_BACKUP_TIMEOUT_SECS",
        default_value = "3600",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub backup_timeout_secs: Duration,
    /// Timeout of each Docker Engine call, in seconds.
    #[arg(
        long,
        env = "ATOCORE_DOCKER_TIMEOUT_SECS",
        default_value = "30",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub docker_timeout_secs: Duration,
    /// How long atocore gets to stop (SIGTERM, then SIGKILL) before a restore, in seconds.
    #[arg(
        long,
        env = "ATOCORE_STOP_TIMEOUT_SECS",
        default_value = "30",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub stop_timeout_secs: Duration,
    /// How long the restore-job container may run, in seconds.
    #[arg(
        long,
        env = "ATOCORE_RESTORE_TIMEOUT_SECS",
        default_value = "1800",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub restore_timeout_secs: Duration,
    /// How long atocore may take to become healthy after a restore, in seconds.
    #[arg(
        long,
        env = "ATOCORE_HEALTHY_TIMEOUT_SECS",
        default_value = "120",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub healthy_timeout_secs: Duration,

    /// How often the schedule checks the off-site target (`offsite verify`, after a
    /// scheduled snapshot once this much time has passed since the last one); `0` or
    /// `off` never.
    #[arg(
        long,
        env = "ATOCORE_OFFSITE_VERIFY_EVERY",
        default_value = "7d",
        value_parser = parse_optional_duration,
        global = true
    )]
    pub offsite_verify_every: OptionalDuration,
    /// Percentage (0-100) of the chunks the scheduled verify downloads and checks.
    #[arg(
        long,
        env = "ATOCORE_OFFSITE_VERIFY_READ_DATA",
        default_value_t = 5.0,
        global = true
    )]
    pub offsite_verify_read_data: f64,
    /// /health says `degraded` when the newest snapshot on the off-site target is
    /// older than this.
    #[arg(
        long,
        env = "ATOCORE_OFFSITE_MAX_AGE",
        default_value = "36h",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub offsite_max_age: Duration,
    /// The age identity file (private key) the off-site drill decrypts with; only
    /// `POST /admin/drill {"offsite": true}` reads it. Empty: not set.
    #[arg(
        long,
        env = "ATOCORE_OFFSITE_IDENTITY_FILE",
        value_name = "FILE",
        global = true
    )]
    pub offsite_identity_file: Option<String>,

    /// Log format on stderr (auto: text on a terminal, JSON otherwise).
    #[arg(long, env = "ATOCORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to run; `serve` when none is given.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the admin API and run the schedule (the default).
    Serve,
    /// Probe the sidecar's /health and exit 0 when it answers, 1 otherwise (for the
    /// image HEALTHCHECK: a scratch image has no curl).
    Healthcheck {
        /// URL to probe [default: http://<addr>/health, 0.0.0.0 read as 127.0.0.1].
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// Also fail when the sidecar reports `degraded` (stale snapshots).
        #[arg(long)]
        strict: bool,
    },
}

/// A duration that can be turned off (`0`, `off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

fn parse_optional_duration(v: &str) -> Result<OptionalDuration, String> {
    if v.trim().eq_ignore_ascii_case("off") {
        return Ok(OptionalDuration(None));
    }
    let d = parse_duration_secs(v)?;
    Ok(OptionalDuration((!d.is_zero()).then_some(d)))
}

/// What happens at start when a scheduled snapshot was missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MissedRun {
    /// Take one catch-up snapshot shortly after start.
    CatchUp,
    /// Wait for the next scheduled time.
    Skip,
}

/// The validated settings of a running sidecar.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub paths: Paths,
    pub policy: Policy,
    pub atocore_container: String,
    pub restore_container: String,
    pub atocore_url: String,
    pub docker_host: String,
    /// `None`: no scheduled snapshots.
    pub schedule: Option<Schedule>,
    pub missed_run: MissedRun,
    /// The off-site target, when one is set.
    pub offsite: Option<OffsiteArgs>,
    /// WAL streaming, when on.
    pub wal: Option<crate::walstream::WalSettings>,
    /// The target's retention (`ATOCORE_OFFSITE_KEEP_*`), applied after each
    /// scheduled push.
    pub offsite_prune: PruneArgs,
    /// `None`: no scheduled off-site verify.
    pub offsite_verify_every: Option<Duration>,
    pub offsite_verify_read_data: f64,
    pub offsite_max_age: Duration,
    pub offsite_identity_file: Option<std::path::PathBuf>,
    pub catch_up_delay: Duration,
    pub stale_after: Duration,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub backup_timeout: Duration,
    pub docker_timeout: Duration,
    pub stop_timeout: Duration,
    pub restore_timeout: Duration,
    pub healthy_timeout: Duration,
}

impl Config {
    /// Validate the command line. Refuses (exit 2) a non-loopback address without a token.
    pub fn from_args(a: &Arguments) -> Result<Config, Error> {
        let addr: SocketAddr = a.addr.parse().map_err(|_| {
            Error::Config(format!(
                "ATOCORE_SIDECAR_ADDR / --addr `{}` is not an IP:port such as {DEFAULT_ADDR}",
                a.addr
            ))
        })?;
        let token = match a.token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(Error::Config(
                    "ATOCORE_SIDECAR_TOKEN must not contain spaces or control characters; generate one with `openssl rand -hex 32`".into(),
                ));
            }
            Some(t) => Some(t.to_string()),
        };
        let offsite = if a.offsite.is_configured() {
            // The engine's off-site errors already say "off-site: ...".
            a.offsite
                .check()
                .map_err(|e| Error::Config(e.to_string()))?;
            Some(a.offsite.clone())
        } else {
            None
        };
        let offsite_prune = PruneArgs::from_env().map_err(|e| Error::Config(e.to_string()))?;
        if !(0.0..=100.0).contains(&a.offsite_verify_read_data) {
            return Err(Error::Config(format!(
                "ATOCORE_OFFSITE_VERIFY_READ_DATA `{}` is not a percentage from 0 to 100",
                a.offsite_verify_read_data
            )));
        }
        if a.offsite_max_age.is_zero() {
            return Err(Error::Config(
                "ATOCORE_OFFSITE_MAX_AGE must be greater than 0 (e.g. 36h)".into(),
            ));
        }
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to listen on {addr} without a token: anyone who can reach it could restore or delete snapshots. Set ATOCORE_SIDECAR_TOKEN (e.g. `openssl rand -hex 32`) or listen on loopback (ATOCORE_SIDECAR_ADDR=127.0.0.1:8101)"
            )));
        }
        for (flag, name) in [
            ("ATOCORE_CONTAINER", &a.container),
            ("ATOCORE_RESTORE_CONTAINER", &a.restore_container),
        ] {
            if !valid_container_name(name) {
                return Err(Error::Config(format!(
                    "{flag} `{name}` is not a container name (letters, digits, `_.-`, starting with a letter or digit)"
                )));
            }
        }
        if a.container == a.restore_container {
            return Err(Error::Config(format!(
                "ATOCORE_CONTAINER and ATOCORE_RESTORE_CONTAINER are both `{}`; they must name two different containers",
                a.container
            )));
        }
        let atocore_url = a.atocore_url.trim_end_matches('/').to_string();
        if !atocore_url.starts_with("http://") && !atocore_url.starts_with("https://") {
            return Err(Error::Config(format!(
                "ATOCORE_URL `{}` must start with http:// (for example http://atocore:8100)",
                a.atocore_url
            )));
        }
        let schedule = if a.no_schedule {
            None
        } else {
            Schedule::parse(&a.schedule, &a.chroma_schedule)?
        };
        for (flag, v) in [
            ("ATOCORE_SIDECAR_MAX_BODY_BYTES", a.max_body_bytes as u64),
            ("ATOCORE_SIDECAR_MAX_CONNECTIONS", a.max_connections as u64),
            (
                "ATOCORE_SIDECAR_HEADER_TIMEOUT_MS",
                a.header_timeout_ms.as_millis() as u64,
            ),
            (
                "ATOCORE_SIDECAR_BODY_TIMEOUT_MS",
                a.body_timeout_ms.as_millis() as u64,
            ),
            ("ATOCORE_HEALTH_STALE_HOURS", a.stale_hours),
            (
                "ATOCORE_DOCKER_TIMEOUT_SECS",
                a.docker_timeout_secs.as_millis() as u64,
            ),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{flag} must be greater than 0")));
            }
        }
        Ok(Config {
            addr,
            token,
            paths: Paths::from(&a.storage),
            policy: Policy::from(&a.retention),
            offsite,
            wal: a.wal.settings(),
            offsite_prune,
            offsite_verify_every: a.offsite_verify_every.0,
            offsite_verify_read_data: a.offsite_verify_read_data,
            offsite_max_age: a.offsite_max_age,
            offsite_identity_file: a
                .offsite_identity_file
                .as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from),
            atocore_container: a.container.clone(),
            restore_container: a.restore_container.clone(),
            atocore_url,
            docker_host: a.docker_host.clone(),
            schedule,
            missed_run: a.missed_run,
            catch_up_delay: a.catch_up_delay_secs,
            stale_after: Duration::from_secs(a.stale_hours.saturating_mul(3600)),
            max_body_bytes: a.max_body_bytes,
            max_connections: a.max_connections,
            header_timeout: a.header_timeout_ms,
            body_timeout: a.body_timeout_ms,
            shutdown_timeout: a.shutdown_secs,
            backup_timeout: a.backup_timeout_secs,
            docker_timeout: a.docker_timeout_secs,
            stop_timeout: a.stop_timeout_secs,
            restore_timeout: a.restore_timeout_secs,
            healthy_timeout: a.healthy_timeout_secs,
        })
    }

    /// Parse a command line (for tests and embedders) and validate it.
    pub fn parse_from<I, T>(args: I) -> Result<Config, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let a = Arguments::try_parse_from(args).map_err(|e| Error::Config(e.to_string()))?;
        Config::from_args(&a)
    }
}

/// Docker's container-name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, Error> {
        let mut args = vec!["atocore-sidecar", "--storage-root", "/tmp/x"];
        args.extend_from_slice(extra);
        Config::parse_from(args)
    }

    #[test]
    fn defaults_are_the_contracts() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(c.atocore_container, "atocore");
        assert_eq!(c.restore_container, "atocore-restore-job");
        assert_eq!(c.stale_after, Duration::from_secs(26 * 3600));
        assert!(c.schedule.is_some());
        assert_eq!(c.policy, Policy::default());
    }

    #[test]
    fn the_scheduled_prune_uses_both_retention_series() {
        let c = parse(&["--keep-chroma-monthly", "12", "--keep-chroma-daily", "3"]).unwrap();
        assert_eq!(
            (
                c.policy.chroma_daily,
                c.policy.chroma_weekly,
                c.policy.chroma_monthly
            ),
            (3, 4, 12)
        );
        assert_eq!((c.policy.daily, c.policy.monthly), (7, 6));
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let e = parse(&["--addr", "0.0.0.0:8101"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("ATOCORE_SIDECAR_TOKEN"), "{e}");
        assert!(parse(&["--addr", "0.0.0.0:8101", "--token", "s3cret-token"]).is_ok());
        assert!(parse(&["--addr", "[::1]:8101"]).is_ok());
        assert!(parse(&["--addr", "0.0.0.0:8101", "--token", "  "]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--addr", "localhost"]).is_err());
        assert!(parse(&["--container", "../x"]).is_err());
        assert!(parse(&["--container", "a", "--restore-container", "a"]).is_err());
        assert!(parse(&["--atocore-url", "atocore:8100"]).is_err());
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--schedule", "0 6 * * 1"]).is_err());
        assert!(parse(&["--no-schedule"]).unwrap().schedule.is_none());
    }

    #[test]
    fn durations_take_units_or_a_plain_number_in_the_settings_unit() {
        let c = Config::parse_from([
            "atocore-sidecar",
            "--storage-root",
            "/tmp/x",
            "--catch-up-delay-secs",
            "2m",
            "--shutdown-secs",
            "5",
            "--header-timeout-ms",
            "1500",
            "--body-timeout-ms",
            "3s",
            "--healthy-timeout-secs",
            "1h30m",
        ])
        .unwrap();
        assert_eq!(c.catch_up_delay, Duration::from_secs(120));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(c.header_timeout, Duration::from_millis(1500));
        assert_eq!(c.body_timeout, Duration::from_secs(3));
        assert_eq!(c.healthy_timeout, Duration::from_secs(5400));
        assert_eq!(
            parse_duration_secs("soon").unwrap_err(),
            "`soon` is not a duration (expected number at 0); write a number, or one with a unit: 90s, 2m, 1h"
        );
    }
}
