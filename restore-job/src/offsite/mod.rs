//! Off-site replication: encrypted, deduplicated copies of snapshots on S3-compatible
//! storage or a folder, and the way back onto a new host.
//!
//! One concept per module: [`store`] (the target over `object_store`), [`crypto`]
//! (age), [`chunker`] (FastCDC, keyed names, zstd), [`format`] (the objects),
//! [`push`], [`fetch`], [`list`], [`verify`], [`prune`]. The engine is synchronous;
//! [`store::Target`] runs its requests on a small tokio runtime of its own.

pub mod cache;
pub mod chunker;
pub mod crypto;
pub mod fetch;
pub mod format;
pub mod list;
pub mod prune;
pub mod push;
pub mod store;
pub(crate) mod trust;
pub mod verify;
pub mod wal;

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::Value;

use crate::config::Paths;
use crate::durable;
use crate::error::{Error, Result};
use chunker::RepoKey;
use crypto::Identity;
use format::{CONFIG_KEY, REPO_KEY_KEY, RepoConfig};
use store::Target;

/// Where to and how: the settings every `offsite` command shares. The argument ids
/// are prefixed so that, flattened into another command line (the sidecar's), they
/// never merge with an argument of the same name (`healthcheck --url`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OffsiteArgs {
    /// The target: s3://BUCKET/PREFIX (endpoint, region and credentials from the
    /// AWS_* variables) or file:///PATH.
    #[arg(
        id = "offsite_url",
        long = "offsite-url",
        env = "ATOCORE_OFFSITE_URL",
        global = true
    )]
    pub url: Option<String>,
    /// age X25519 public keys (age1…) to encrypt to, comma or whitespace separated.
    #[arg(
        id = "offsite_recipients",
        long = "offsite-recipients",
        env = "ATOCORE_OFFSITE_RECIPIENTS",
        global = true
    )]
    pub recipients: Option<String>,
    /// Allow pushing without encryption: 1/0, true/false, yes/no, on/off (any case);
    /// anything else is refused.
    #[arg(
        id = "offsite_unencrypted",
        long = "offsite-unencrypted",
        env = "ATOCORE_OFFSITE_UNENCRYPTED",
        global = true,
        action = clap::ArgAction::Set,
        default_value = "false",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub unencrypted: bool,
    /// Requests to the target at once (uploads, downloads, deletes), 1-64.
    #[arg(
        id = "offsite_concurrency",
        long = "offsite-concurrency",
        env = "ATOCORE_OFFSITE_CONCURRENCY",
        global = true,
        default_value_t = store::PARALLEL,
        value_name = "N",
        value_parser = parse_concurrency
    )]
    pub concurrency: usize,
    /// Upper bound for upload bandwidth, bytes per second (10MiB, 500KB, 1048576); `off`
    /// (the default) is unlimited.
    #[arg(
        id = "offsite_bandwidth",
        long = "offsite-bandwidth",
        env = "ATOCORE_OFFSITE_BANDWIDTH",
        global = true,
        default_value = "off",
        value_name = "BYTES_PER_SEC",
        value_parser = store::parse_bandwidth
    )]
    pub bandwidth: store::Bandwidth,
}

fn parse_concurrency(v: &str) -> std::result::Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err(format!(
            "`{v}` is not a number of requests from 1 to 64 (default {})",
            store::PARALLEL
        )),
    }
}

impl OffsiteArgs {
    fn target(&self, create: bool) -> Result<Target> {
        let url = self
            .url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| {
                Error::OffsiteNotConfigured(
                    "no target: set ATOCORE_OFFSITE_URL to s3://BUCKET/PREFIX or file:///PATH"
                        .into(),
                )
            })?;
        Ok(Target::open(url.trim(), create)?.with_limits(self.concurrency, self.bandwidth.0))
    }

    fn unencrypted(&self) -> bool {
        self.unencrypted
    }

    /// What objects are sealed with: age to the recipients, or nothing when
    /// `ATOCORE_OFFSITE_UNENCRYPTED` says so (refused without either).
    fn sealer(&self) -> Result<crypto::Sealer> {
        crypto::Sealer::from_settings(self.recipients.as_deref(), self.unencrypted())
    }

    /// Whether a target is set (`ATOCORE_OFFSITE_URL`).
    pub fn is_configured(&self) -> bool {
        self.url.as_deref().is_some_and(|u| !u.trim().is_empty())
    }

    /// Check the settings without touching the target: a target that parses, and
    /// recipients (or an explicit `ATOCORE_OFFSITE_UNENCRYPTED`). A long-running caller
    /// (the sidecar) checks this at start.
    pub fn check(&self) -> Result<()> {
        self.sealer()?;
        store::Location::parse(self.url.as_deref().unwrap_or_default().trim())?;
        Ok(())
    }

    /// Push every valid local snapshot the target lacks (what the sidecar runs after
    /// each snapshot, and what catches up after downtime).
    pub fn push_missing(&self, paths: &Paths) -> Result<push::PushReport> {
        self.push_missing_while(paths, &|| true)
    }

    /// [`Self::push_missing`], stopping with [`Error::Cancelled`] at the next snapshot
    /// or batch of uploads once `keep_going` says no (the sidecar lets a requested
    /// backup go first this way).
    pub fn push_missing_while(
        &self,
        paths: &Paths,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<push::PushReport> {
        let sealer = self.sealer()?;
        let target = self.target(true)?;
        push::push(
            paths,
            &target,
            &sealer,
            &push::Which::Missing,
            None,
            keep_going,
        )
    }

    /// Upload the captured WAL segments the target lacks. `known` is what the target
    /// holds, kept by the caller between pushes (`None`: ask the target, one listing).
    pub fn push_wal(
        &self,
        paths: &Paths,
        known: &mut Option<wal::RemoteWal>,
    ) -> Result<wal::WalPushReport> {
        let sealer = self.sealer()?;
        let target = self.target(true)?;
        let (_, key) = push::open_or_create(paths, &target, &sealer, None)?;
        let mut state = match known.take() {
            Some(k) => k,
            None => wal::remote_state(&target)?,
        };
        let r = wal::push(paths, &target, &sealer, &key, &mut state);
        *known = Some(state);
        r
    }

    /// The snapshots on the target.
    pub fn list_remote(&self) -> Result<list::RemoteList> {
        list::list(&self.target(false)?)
    }

    /// Apply the target's retention (`offsite prune`).
    pub fn prune_remote(&self, args: &prune::PruneArgs) -> Result<prune::OffsitePruneReport> {
        prune::prune(&self.target(false)?, args)
    }

    /// Check the target (`offsite verify --read-data PCT`), without a private key.
    pub fn verify_remote(&self, read_pct: f64) -> Result<verify::VerifyReport> {
        verify::verify(&self.target(false)?, read_pct, None)
    }

    /// Fetch `which` (a stamp or `latest`) into `paths` with the identity file
    /// (`offsite fetch`). `host`: a storage root whose copies of repository keys are
    /// trusted besides the identity file's pins (the sidecar's drill fetches into a
    /// scratch root and trusts the keys of the host it runs on).
    pub fn fetch_into(
        &self,
        paths: &Paths,
        which: &str,
        identity: &Path,
        host: Option<&Paths>,
    ) -> Result<fetch::FetchReport> {
        let mut identity = Identity::load(identity)?;
        if let Some(host) = host {
            for key in host_keys(host) {
                identity.pin(&key.fingerprint());
            }
        }
        fetch::fetch(paths, &self.target(false)?, which, Some(&identity))
    }
}

/// Write a small JSON state file (a long-running caller's record of its off-site
/// work) atomically and durably, creating its folder.
pub fn write_state_file<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        durable::create_dir_all(dir)?;
    }
    durable::write_json_atomic(path, value)
}

/// `offsite …`: the settings and one subcommand.
#[derive(Debug, clap::Args)]
pub struct OffsiteCli {
    #[command(flatten)]
    pub settings: OffsiteArgs,
    #[command(subcommand)]
    pub command: OffsiteCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OffsiteCommand {
    /// Upload a snapshot (default: the newest valid one), or every valid snapshot the
    /// target lacks (--missing). Only new chunks are uploaded.
    Push {
        /// The stamp to push.
        #[arg(conflicts_with = "missing")]
        stamp: Option<String>,
        /// Push every valid local snapshot that is not on the target yet.
        #[arg(long)]
        missing: bool,
        /// An age identity file, only needed once on a host that lost its local copy
        /// of the repository key.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// List the snapshots on the target, oldest first.
    List,
    /// Check that every object the snapshots need is there at its size; with
    /// --read-data, download a share of the chunks and check them too.
    Verify {
        /// Percentage (0–100) of the chunks to download and check.
        #[arg(long, value_name = "PCT", default_value_t = 0.0)]
        read_data: f64,
        /// Decrypt the chunks read and check their names (keyed hashes).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Download a snapshot, check every hash, and publish it as a local snapshot. With
    /// --at: download the captured WAL and the snapshot that starts the replay, and
    /// build the database at that moment as a local `point-in-time` snapshot.
    Fetch {
        /// A stamp, or `latest`.
        #[arg(required_unless_present = "at", conflicts_with = "at")]
        stamp: Option<String>,
        /// An RFC 3339 moment (see `restore --at`).
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// The age identity file (private key) the target was encrypted to.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Apply retention on the target and delete chunks no kept snapshot needs.
    Prune(prune::PruneArgs),
}

/// Run one `offsite` command: the JSON to print and the exit code.
pub fn run(paths: &Paths, cli: OffsiteCli) -> Result<(Value, u8)> {
    let s = &cli.settings;
    match cli.command {
        OffsiteCommand::Push {
            stamp,
            missing,
            identity,
        } => {
            let sealer = s.sealer()?;
            let which = match (stamp, missing) {
                (_, true) => push::Which::Missing,
                (Some(st), false) => push::Which::Stamp(st),
                (None, false) => push::Which::Newest,
            };
            let identity = identity.as_deref().map(Identity::load).transpose()?;
            let target = s.target(true)?;
            let r = push::push(paths, &target, &sealer, &which, identity.as_ref(), &|| true)?;
            let mut v = to_value(&r);
            // The captured WAL follows the snapshots (point-in-time recovery off-site).
            if crate::wal::generation::wal_dir(paths).is_dir() {
                let (_, key) = push::open_or_create(paths, &target, &sealer, None)?;
                let mut known = wal::remote_state(&target)?;
                let w = wal::push(paths, &target, &sealer, &key, &mut known)?;
                if let Value::Object(o) = &mut v {
                    o.insert("wal".into(), to_value(&w));
                }
            }
            Ok((v, 0))
        }
        OffsiteCommand::List => {
            let target = s.target(false)?;
            Ok((to_value(&list::list(&target)?), 0))
        }
        OffsiteCommand::Verify {
            read_data,
            identity,
        } => {
            if !(0.0..=100.0).contains(&read_data) {
                return Err(Error::Usage(format!(
                    "--read-data {read_data}: give a percentage from 0 to 100"
                )));
            }
            let identity = identity.as_deref().map(Identity::load).transpose()?;
            let target = s.target(false)?;
            let r = verify::verify(&target, read_data, identity.as_ref().map(|id| (paths, id)))?;
            let code = if r.ok { 0 } else { 1 };
            Ok((to_value(&r), code))
        }
        OffsiteCommand::Fetch {
            stamp,
            at,
            identity,
        } => {
            let identity = identity.as_deref().map(Identity::load).transpose()?;
            let target = s.target(false)?;
            if let Some(at) = at {
                let at = crate::wal::pitr::parse_at(&at)?;
                let r = wal::fetch_at(paths, &target, at, identity.as_ref())?;
                return Ok((to_value(&r), 0));
            }
            let r = fetch::fetch(
                paths,
                &target,
                stamp.as_deref().unwrap_or("latest"),
                identity.as_ref(),
            )?;
            Ok((to_value(&r), 0))
        }
        OffsiteCommand::Prune(args) => {
            let target = s.target(false)?;
            let r = prune::prune(&target, &args)?;
            Ok((to_value(&r), 0))
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The target's `config`, when there is one.
pub(crate) fn read_config(target: &Target) -> Result<Option<RepoConfig>> {
    let Some(bytes) = target.get_optional(CONFIG_KEY)? else {
        return Ok(None);
    };
    let c: RepoConfig =
        serde_json::from_slice(&bytes).map_err(|e| Error::OffsiteObjectDamaged {
            object: CONFIG_KEY.into(),
            why: format!("not the expected JSON: {e}"),
        })?;
    if !(format::FORMAT_UNAUTHENTICATED..=format::FORMAT).contains(&c.format) {
        return Err(Error::OffsiteNotConfigured(format!(
            "{} holds a repository of format {}; this engine reads formats {} to {}",
            target.url(),
            c.format,
            format::FORMAT_UNAUTHENTICATED,
            format::FORMAT
        )));
    }
    Ok(Some(c))
}

/// Every repository key this host keeps (`<backup dir>/offsite/*.key`).
fn host_keys(paths: &Paths) -> Vec<RepoKey> {
    let dir = paths.backup_dir.join("offsite");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".key"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| RepoKey::from_hex(&t))
        .collect()
}

/// Where this host keeps its copy of a repository's key.
pub fn local_key_path(paths: &Paths, repository: &str) -> PathBuf {
    paths
        .backup_dir
        .join("offsite")
        .join(format!("{repository}.key"))
}

pub(crate) fn save_local_key(paths: &Paths, repository: &str, key: &RepoKey) -> Result<()> {
    let p = local_key_path(paths, repository);
    if let Some(dir) = p.parent() {
        durable::create_dir_all(dir)?;
    }
    // Created 0600: never readable by others, not even between creation and rename.
    durable::write_secret_atomic(&p, format!("{}\n", key.to_hex()).as_bytes())
}

fn check_key(config: &RepoConfig, key: RepoKey, source: &str) -> Result<RepoKey> {
    if key.check_value() == config.key_check {
        Ok(key)
    } else {
        Err(Error::OffsiteNotConfigured(format!(
            "the repository key in {source} does not belong to repository {} on the target; remove it and pass --identity to read the right one",
            config.repository
        )))
    }
}

/// The repository key as `keys/repository` holds it, decrypted with the identity (not
/// trusted yet: see [`trust::pinned`]).
pub(crate) fn key_from_identity(target: &Target, identity: &Identity) -> Result<RepoKey> {
    let sealed = target.get(REPO_KEY_KEY)?;
    let plain = identity.open(REPO_KEY_KEY, &sealed)?;
    RepoKey::from_hex(&String::from_utf8_lossy(&plain)).ok_or_else(|| Error::OffsiteObjectDamaged {
        object: REPO_KEY_KEY.into(),
        why: "does not hold a 32-byte hex key".into(),
    })
}

/// This host's copy of the key of `repository`, when it has one.
pub(crate) fn local_key(paths: &Paths, repository: &str) -> Option<RepoKey> {
    std::fs::read_to_string(local_key_path(paths, repository))
        .ok()
        .and_then(|t| RepoKey::from_hex(&t))
}

/// The repository key for reading: plain config, the local copy, or the identity.
pub(crate) fn repo_key(
    paths: &Paths,
    target: &Target,
    config: &RepoConfig,
    identity: Option<&Identity>,
) -> Result<RepoKey> {
    if !config.encrypted {
        let key = config
            .key
            .as_deref()
            .and_then(RepoKey::from_hex)
            .ok_or_else(|| Error::OffsiteObjectDamaged {
                object: CONFIG_KEY.into(),
                why: "an unencrypted repository's config holds no key".into(),
            })?;
        return check_key(config, key, CONFIG_KEY);
    }
    let local = local_key_path(paths, &config.repository);
    if let Some(key) = local_key(paths, &config.repository) {
        return check_key(config, key, &local.display().to_string());
    }
    match identity {
        Some(id) => {
            let key = trust::pinned(id, key_from_identity(target, id)?)?;
            let key = check_key(config, key, REPO_KEY_KEY)?;
            save_local_key(paths, &config.repository, &key)?;
            Ok(key)
        }
        None => Err(Error::OffsiteNotConfigured(format!(
            "this host has no copy of the key of repository {} ({} is missing); run the command once with --identity FILE to read it from the target",
            config.repository,
            local.display()
        ))),
    }
}

/// Decode an index object (or any zstd+age JSON object).
pub(crate) fn open_json<T: serde::de::DeserializeOwned>(
    object: &str,
    bytes: &[u8],
    encrypted: bool,
    identity: Option<&Identity>,
) -> Result<T> {
    let identity = if encrypted {
        Some(identity.ok_or_else(|| {
            Error::OffsiteNotConfigured(format!(
                "{object} is encrypted: pass --identity FILE (the age private key)"
            ))
        })?)
    } else {
        None
    };
    let plain = chunker::unpack(identity, object, bytes, format::INDEX_MAX)?;
    serde_json::from_slice(&plain).map_err(|e| Error::OffsiteObjectDamaged {
        object: object.to_string(),
        why: format!("not the expected JSON: {e}"),
    })
}

/// The snapshot references on the target: those that parse and are stored under
/// their own stamp, oldest first, and the objects of `snapshots/` that are not such a
/// reference (each a reported problem, never a reason for the others to fail).
#[derive(Debug, Default)]
pub(crate) struct References {
    pub refs: Vec<format::Reference>,
    /// (object, what is wrong with it).
    pub unreadable: Vec<(String, String)>,
}

/// All snapshot references on the target (one LIST, one GET each).
pub(crate) fn references(target: &Target) -> Result<References> {
    let listed = target.list(format::SNAPSHOTS_DIR)?;
    let keys: Vec<String> = listed
        .into_iter()
        .map(|l| l.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    let bodies = target.get_many(&keys)?;
    let mut out = References::default();
    for (key, body) in keys.iter().zip(bodies) {
        match serde_json::from_slice::<format::Reference>(&body) {
            Ok(r) if &format::Reference::key_for(&r.stamp) == key => out.refs.push(r),
            Ok(r) => out.unreadable.push((
                key.clone(),
                format!(
                    "it describes snapshot {}: a reference copied under another name",
                    r.stamp
                ),
            )),
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "an off-site reference that does not parse is left out");
                out.unreadable
                    .push((key.clone(), format!("not the expected JSON: {e}")));
            }
        }
    }
    out.refs.sort_by(|a, b| a.stamp.cmp(&b.stamp));
    Ok(out)
}

pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A number the stages of a pipeline share: one stage waits for it to allow a step,
/// another moves it. Closing it (a stage failed or stopped) wakes every waiter with
/// [`Error::Cancelled`], and no later move reopens it.
pub(crate) struct Gauge {
    value: std::sync::Mutex<Option<u64>>,
    moved: std::sync::Condvar,
    /// What a cancelled waiter was part of (`the off-site push`).
    what: &'static str,
}

impl Gauge {
    pub(crate) fn new(start: u64, what: &'static str) -> Gauge {
        Gauge {
            value: std::sync::Mutex::new(Some(start)),
            moved: std::sync::Condvar::new(),
            what,
        }
    }

    /// Wait until `ready(value)`, then set the value to `then(value)`.
    pub(crate) fn wait(
        &self,
        ready: impl Fn(u64) -> bool,
        then: impl FnOnce(u64) -> u64,
    ) -> Result<()> {
        let mut v = self.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match *v {
                None => return Err(Error::Cancelled(self.what)),
                Some(x) if ready(x) => {
                    *v = Some(then(x));
                    return Ok(());
                }
                Some(_) => v = self.moved.wait(v).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    /// Move the value (unless the gauge is closed) and wake the waiters.
    pub(crate) fn update(&self, f: impl FnOnce(u64) -> u64) {
        if let Some(x) = self
            .value
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            *x = f(*x);
        }
        self.moved.notify_all();
    }

    pub(crate) fn close(&self) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.moved.notify_all();
    }
}

/// Threads for a pipeline's CPU stage (naming, compressing and sealing chunks, or
/// opening them): one per core, at most 4.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

/// The result of a pipeline stage's thread; a stage that panicked is `Cancelled` with
/// `what` (`the off-site push (reader crashed)`).
pub(crate) fn joined<T>(
    stage: std::thread::ScopedJoinHandle<'_, Result<T>>,
    what: &'static str,
) -> Result<T> {
    stage.join().unwrap_or_else(|_| Err(Error::Cancelled(what)))
}

/// The results of several threads of one stage, or its first real failure.
pub(crate) fn joined_all<'a, T: 'a>(
    stages: impl IntoIterator<Item = std::thread::ScopedJoinHandle<'a, Result<T>>>,
    what: &'static str,
) -> Result<Vec<T>> {
    let results: Vec<Result<T>> = stages.into_iter().map(|s| joined(s, what)).collect();
    if results.iter().all(|r| r.is_ok()) {
        return Ok(results.into_iter().flatten().collect());
    }
    Err(first_failure(results.into_iter().map(|r| r.err())))
}

/// Of the failures of a pipeline's stages, the one to report: the first real failure,
/// not the cancellations it caused in the other stages.
pub(crate) fn first_failure(failures: impl IntoIterator<Item = Option<Error>>) -> Error {
    let mut failures: Vec<Error> = failures.into_iter().flatten().collect();
    let first = failures
        .iter()
        .position(|e| !matches!(e, Error::Cancelled(_)))
        .unwrap_or(0);
    if failures.is_empty() {
        return Error::Cancelled("the off-site transfer");
    }
    failures.swap_remove(first)
}

pub(crate) fn rel(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}
