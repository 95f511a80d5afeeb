//! The target: an S3-compatible bucket or a local folder behind `object_store`, driven
//! from the synchronous engine through a small tokio runtime. Every request is counted
//! so that commands can report (and tests can bound) what they cost.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde::Serialize;

use crate::error::{Error, Result};

/// How many requests run at once for uploads, downloads and deletes, unless
/// `ATOCORE_OFFSITE_CONCURRENCY` says otherwise.
pub const PARALLEL: usize = 8;

/// Paces uploads to a rate: each object's upload starts only once the bytes started
/// before it fit the rate since the first one (a burst of at most one object).
struct Pacer {
    bytes_per_sec: u64,
    next: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Pacer {
    /// When an upload of `n` bytes may start (and book its time).
    fn slot(&self, n: u64) -> tokio::time::Instant {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let start = next.map_or(now, |t| t.max(now));
        *next = Some(start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64));
        start
    }
}

/// Parse a bandwidth: bytes per second as a number with an optional unit (`B`, `KB`,
/// `KiB`, `MB`, `MiB`, `GB`, `GiB`, any case, optional `/s`); `0`, `off` or empty is
/// unlimited (`None`).
pub fn parse_bandwidth(v: &str) -> std::result::Result<Bandwidth, String> {
    parse_bytes_per_sec(v).map(Bandwidth)
}

/// An upload bandwidth limit in bytes per second; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bandwidth(pub Option<u64>);

fn parse_bytes_per_sec(v: &str) -> std::result::Result<Option<u64>, String> {
    let t = v.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t)
        .trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "`{v}` is not a bandwidth: write bytes per second such as 10MiB, 500KB or 1048576, or off"
        )
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = (n * mult as f64) as u64;
    Ok((bytes > 0).then_some(bytes))
}

/// Test hook: kill this process (SIGKILL) right after this many objects were written.
pub const CRASH_ENV: &str = "ATOCORE_OFFSITE_CRASH_AFTER_PUTS";

/// Requests made and bytes moved, per command.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    pub put: u64,
    pub get: u64,
    pub list: u64,
    pub delete: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
}

/// One object found by a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Key below the target's prefix, e.g. `chunks/ab/ab12…`.
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

/// An open target.
pub struct Target {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The folder of a `file://` target (written objects are fsynced there).
    local_root: Option<PathBuf>,
    rt: tokio::runtime::Runtime,
    display: String,
    stats: Cell<RequestsCells>,
    crash_after: Option<u64>,
    /// Requests at once.
    parallel: usize,
    /// Upload pacing (`ATOCORE_OFFSITE_BANDWIDTH`).
    pacer: Option<Pacer>,
}

#[derive(Debug, Clone, Copy, Default)]
struct RequestsCells {
    put: u64,
    get: u64,
    list: u64,
    delete: u64,
    bytes_written: u64,
    bytes_read: u64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.display)
            .finish()
    }
}

/// Where an `ATOCORE_OFFSITE_URL` points, checked without touching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location<'a> {
    /// `file:///PATH`: a folder (absolute).
    Folder(PathBuf),
    /// `s3://BUCKET/PREFIX`.
    S3 { bucket: &'a str, prefix: &'a str },
}

impl<'a> Location<'a> {
    /// Parse a target URL; every malformed one is `offsite_not_configured`.
    pub(crate) fn parse(url: &'a str) -> Result<Location<'a>> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::OffsiteNotConfigured(format!(
                    "ATOCORE_OFFSITE_URL `{url}`: a folder target needs an absolute path, such as file:///mnt/backup/atocore"
                )));
            }
            return Ok(Location::Folder(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::OffsiteNotConfigured(format!(
                    "ATOCORE_OFFSITE_URL `{url}` names no bucket: use s3://BUCKET/PREFIX"
                )));
            }
            return Ok(Location::S3 { bucket, prefix });
        }
        Err(Error::OffsiteNotConfigured(format!(
            "ATOCORE_OFFSITE_URL `{url}` is neither s3://BUCKET/PREFIX nor file:///PATH"
        )))
    }
}

impl Target {
    /// Open `s3://bucket/prefix` (settings from the standard `AWS_*` variables) or
    /// `file:///path` (the folder is created when `create`, else it must exist: a
    /// disk that is not mounted must not silently become a folder on the host).
    pub fn open(url: &str, create: bool) -> Result<Target> {
        let not_configured = |why: String| Error::OffsiteNotConfigured(why);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("start the I/O runtime for", PathBuf::from(url)))?;
        let (store, prefix, local_root): (Arc<dyn ObjectStore>, String, Option<PathBuf>) =
            match Location::parse(url)? {
                Location::Folder(root) => {
                    if create {
                        crate::durable::create_dir_all(&root)?;
                    } else if !root.is_dir() {
                        return Err(not_configured(format!(
                            "the target folder {} does not exist: is the disk mounted? (`offsite push` creates it)",
                            root.display()
                        )));
                    }
                    let fs = LocalFileSystem::new_with_prefix(&root).map_err(|e| {
                        not_configured(format!("cannot use {} as a target: {e}", root.display()))
                    })?;
                    (Arc::new(fs), String::new(), Some(root))
                }
                Location::S3 { bucket, prefix } => {
                    let endpoint = std::env::var("AWS_ENDPOINT_URL")
                        .or_else(|_| std::env::var("AWS_ENDPOINT"))
                        .ok();
                    let allow_http = endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://"))
                        || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| truthy(&v));
                    let plain_http = endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://"));
                    let mut b = AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .with_client_options(
                            ClientOptions::new()
                                .with_connect_timeout(Duration::from_secs(10))
                                .with_timeout(Duration::from_secs(300))
                                .with_allow_http(allow_http)
                                // A plain-http endpoint needs no CA store (images built
                                // FROM scratch have none).
                                .with_no_system_certificates(plain_http),
                        )
                        .with_retry(RetryConfig {
                            backoff: BackoffConfig {
                                init_backoff: Duration::from_millis(100),
                                max_backoff: Duration::from_secs(2),
                                base: 2.0,
                            },
                            max_retries: 3,
                            retry_timeout: Duration::from_secs(30),
                        })
                        .with_virtual_hosted_style_request(false);
                    if std::env::var("AWS_REGION").is_err()
                        && std::env::var("AWS_DEFAULT_REGION").is_err()
                    {
                        b = b.with_region("us-east-1");
                    }
                    if let Some(e) = endpoint {
                        b = b.with_endpoint(e);
                    }
                    let s3 = b.build().map_err(|e| {
                    not_configured(format!(
                        "cannot use {url} as a target: {e}; for an https endpoint the CA certificates must be readable (in a container built FROM scratch mount the host's bundle: -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)"
                    ))
                })?;
                    (Arc::new(s3), prefix.trim_matches('/').to_string(), None)
                }
            };
        let crash_after = std::env::var(CRASH_ENV).ok().and_then(|v| v.parse().ok());
        Ok(Target {
            store,
            prefix,
            local_root,
            rt,
            display: url.to_string(),
            stats: Cell::new(RequestsCells::default()),
            crash_after,
            parallel: PARALLEL,
            pacer: None,
        })
    }

    /// Run `parallel` requests at once (at least 1), and pace uploads to
    /// `bytes_per_sec` when set.
    pub fn with_limits(mut self, parallel: usize, bytes_per_sec: Option<u64>) -> Target {
        self.parallel = parallel.max(1);
        self.pacer = bytes_per_sec.map(|bytes_per_sec| Pacer {
            bytes_per_sec,
            next: std::sync::Mutex::new(None),
        });
        self
    }

    /// Requests at once.
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// The URL the target was opened with.
    pub fn url(&self) -> &str {
        &self.display
    }

    /// What this target was asked so far.
    pub fn requests(&self) -> Requests {
        let s = self.stats.get();
        Requests {
            put: s.put,
            get: s.get,
            list: s.list,
            delete: s.delete,
            bytes_written: s.bytes_written,
            bytes_read: s.bytes_read,
        }
    }

    fn count(&self, f: impl FnOnce(&mut RequestsCells)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn error(&self, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::OffsiteObjectMissing {
                object: key.to_string(),
                target: self.display.clone(),
            },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Error::OffsiteDenied {
                target: self.display.clone(),
                why: e.to_string(),
            },
            other => Error::OffsiteUnreachable {
                target: self.display.clone(),
                why: format!("{key}: {other}"),
            },
        }
    }

    /// Write one object (whole, atomically on both kinds of target).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.put_many(vec![(key.to_string(), bytes)])
    }

    /// Write objects, [`Target::parallel`] at a time (paced when a bandwidth is set).
    pub fn put_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.put_all(stream::iter(items), &|| true, &|_| {})
    }

    /// Write the objects `rx` delivers as they come, [`Target::parallel`] at a time, until
    /// every sender is gone, telling `written` the size of each once it is written.
    /// Used by a push whose chunks are packed on other threads while this one uploads.
    /// Stops at the first failed write, or when `keep_going` (asked after each write)
    /// says no ([`Error::Cancelled`]); dropping `rx` then tells the senders to stop.
    pub fn put_from(
        &self,
        rx: tokio::sync::mpsc::Receiver<(String, Vec<u8>)>,
        keep_going: &dyn Fn() -> bool,
        written: &dyn Fn(u64),
    ) -> Result<()> {
        let items = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) });
        self.put_all(items, keep_going, written)
    }

    fn put_all(
        &self,
        items: impl futures_util::Stream<Item = (String, Vec<u8>)>,
        keep_going: &dyn Fn() -> bool,
        written: &dyn Fn(u64),
    ) -> Result<()> {
        let store = &self.store;
        let pacer = self.pacer.as_ref();
        let puts = items
            .map(|(key, bytes)| {
                let path = self.path(&key);
                async move {
                    let n = bytes.len() as u64;
                    if let Some(p) = pacer {
                        tokio::time::sleep_until(p.slot(n)).await;
                    }
                    let r = store.put(&path, PutPayload::from(bytes)).await;
                    (key, n, r)
                }
            })
            .buffer_unordered(self.parallel);
        let mut puts = std::pin::pin!(puts);
        self.rt.block_on(async {
            while let Some((key, n, r)) = puts.next().await {
                self.put_done(&key, n, r)?;
                written(n);
                if !keep_going() {
                    return Err(Error::Cancelled("the off-site push"));
                }
            }
            Ok(())
        })
    }

    /// Count a finished write, make it durable on a folder target, and fire the test
    /// crash point.
    fn put_done(
        &self,
        key: &str,
        n: u64,
        r: object_store::Result<object_store::PutResult>,
    ) -> Result<()> {
        if let Err(e) = r {
            return Err(match e {
                object_store::Error::NotFound { .. } => Error::OffsiteNotConfigured(format!(
                    "{}: writing {key} answered \"not found\": the bucket does not exist; create it (or fix ATOCORE_OFFSITE_URL) and retry",
                    self.display
                )),
                e => self.error(key, e),
            });
        }
        self.count(|s| {
            s.put += 1;
            s.bytes_written += n;
        });
        if let Some(root) = &self.local_root {
            let p = root.join(self.path(key).as_ref());
            crate::durable::sync_path(&p)?;
            crate::durable::sync_parent(&p)?;
        }
        if self.crash_after.is_some_and(|c| self.stats.get().put >= c) {
            tracing::warn!(
                object = %key,
                "crash point reached: killing this process (test hook)"
            );
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        Ok(())
    }

    /// Read one object; `None` when it does not exist.
    pub fn get_optional(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.get_many(&[key.to_string()]) {
            Ok(mut v) => Ok(v.pop()),
            Err(Error::OffsiteObjectMissing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Read one object that must exist.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get_many(&[key.to_string()])?.pop().unwrap_or_default())
    }

    /// Read objects, [`Target::parallel`] at a time, in the order asked.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(keys.len());
        self.get_each(keys.iter().cloned(), |_, bytes| {
            out.push(bytes.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    /// Read objects, [`Target::parallel`] at a time, handing each to `each` in the
    /// order asked as soon as it and those before it are in. Stops at the first failed
    /// read or the first error of `each` (used by a fetch whose chunks are opened on
    /// other threads while this one downloads; `each` blocking holds the downloads
    /// back, so memory stays bounded).
    pub fn get_each(
        &self,
        keys: impl IntoIterator<Item = String>,
        mut each: impl FnMut(usize, bytes::Bytes) -> Result<()>,
    ) -> Result<()> {
        let store = &self.store;
        let gets = stream::iter(keys)
            .map(|key| {
                let path = self.path(&key);
                async move {
                    let r = match store.get(&path).await {
                        Ok(g) => g.bytes().await,
                        Err(e) => Err(e),
                    };
                    (key, r)
                }
            })
            .buffered(self.parallel);
        let mut gets = std::pin::pin!(gets);
        self.rt.block_on(async {
            let mut i = 0;
            while let Some((key, r)) = gets.next().await {
                self.count(|s| s.get += 1);
                let bytes = r.map_err(|e| self.error(&key, e))?;
                self.count(|s| s.bytes_read += bytes.len() as u64);
                each(i, bytes)?;
                i += 1;
            }
            Ok(())
        })
    }

    /// Every object below `dir` (`""` for the whole target), in one listing.
    pub fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let prefix = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => None,
            (true, false) => Some(ObjectPath::from(dir)),
            (false, true) => Some(ObjectPath::from(self.prefix.as_str())),
            (false, false) => Some(self.path(dir)),
        };
        self.count(|s| s.list += 1);
        let found: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(prefix.as_ref()).try_collect())
            .map_err(|e| self.error(if dir.is_empty() { "/" } else { dir }, e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out: Vec<Listed> = found
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some(Listed {
                    key,
                    size: m.size,
                    modified: m.last_modified,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Delete objects, [`Target::parallel`] at a time. A missing object counts as deleted.
    pub fn delete_many(&self, keys: &[String]) -> Result<()> {
        let store = &self.store;
        let jobs = keys.iter().map(|key| {
            let path = self.path(key);
            async move { (key, store.delete(&path).await) }
        });
        let results: Vec<_> = self
            .rt
            .block_on(stream::iter(jobs).buffer_unordered(self.parallel).collect());
        for (key, r) in results {
            self.count(|s| s.delete += 1);
            match r {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error(key, e)),
            }
        }
        Ok(())
    }
}

/// `true`, `1`, `yes`, `on` (any case).
pub fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on"
    )
}

#[cfg(test)]
mod bandwidth_tests {
    use super::*;

    #[test]
    fn bandwidths_read_like_people_write_them() {
        let b = |v: &str| parse_bandwidth(v).map(|b| b.0);
        assert_eq!(b("10MiB"), Ok(Some(10 << 20)));
        assert_eq!(b("10 mib/s"), Ok(Some(10 << 20)));
        assert_eq!(b("500KB"), Ok(Some(500_000)));
        assert_eq!(b("1.5GiB"), Ok(Some(3 << 29)));
        assert_eq!(b("1048576"), Ok(Some(1 << 20)));
        assert_eq!(b("off"), Ok(None));
        assert_eq!(b("0"), Ok(None));
        assert_eq!(b(""), Ok(None));
        assert!(b("fast").unwrap_err().contains("is not a bandwidth"));
        assert!(b("10MB/h").is_err());
        assert!(b("-1MiB").is_err());
    }

    #[test]
    fn the_pacer_books_each_upload_after_the_bytes_before_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let p = Pacer {
                bytes_per_sec: 1000,
                next: std::sync::Mutex::new(None),
            };
            let t0 = p.slot(500);
            let t1 = p.slot(1500);
            let t2 = p.slot(10);
            assert_eq!(t1 - t0, Duration::from_millis(500));
            assert_eq!(t2 - t0, Duration::from_millis(2000));
        });
    }
}
