//! What a reader with the identity may trust, and why (the threat model is in
//! docs/offsite.md).
//!
//! Anyone with the public key can make age ciphertext, so encryption proves nothing
//! about who wrote an object. What proves it is a MAC under the repository key
//! ([`super::format`]), and the repository key itself is trusted only when it is this
//! host's own copy, or when its fingerprint is one the identity file is pinned to
//! ([`crypto::PIN_PREFIX`], the line `offsite push` prints when it sets a repository
//! up). A reader given an identity therefore refuses, before it writes anything:
//! a missing or plain `config` (a downgrade), a config of the unauthenticated format, a
//! repository key that is not pinned, and a config whose MAC does not match.

use super::chunker::RepoKey;
use super::crypto::{self, Identity};
use super::format::{self, CONFIG_KEY, REPO_KEY_KEY, Reference, RepoConfig};
use super::store::Target;
use crate::config::Paths;
use crate::error::{Error, Result};

/// The repository as a reader with the identity may trust it.
#[derive(Debug)]
pub(crate) struct Trusted {
    pub config: RepoConfig,
    pub key: RepoKey,
}

pub(crate) fn not_authentic(object: &str, why: impl Into<String>) -> Error {
    Error::OffsiteNotAuthentic {
        object: object.to_string(),
        why: why.into(),
    }
}

/// Open the repository for a reader holding `identity`: it must be the encrypted,
/// authenticated repository whose key this host holds or the identity is pinned to.
pub(crate) fn open(paths: &Paths, target: &Target, identity: &Identity) -> Result<Trusted> {
    let config = super::read_config(target)?.ok_or_else(|| {
        not_authentic(
            CONFIG_KEY,
            format!(
                "{} holds no `config` object, but an identity was given: the encrypted repository it belongs to was expected",
                target.url()
            ),
        )
    })?;
    if !config.encrypted {
        return Err(not_authentic(
            CONFIG_KEY,
            "the repository on the target is unencrypted, but an identity was given: the encrypted repository the identity belongs to was expected (a plain repository where an encrypted one belongs is a downgrade)",
        ));
    }
    if config.format < format::FORMAT {
        return Err(not_authentic(
            CONFIG_KEY,
            format!(
                "the repository is of format {}, which carries no MACs; upgrade it with `atocore-restore-job offsite push` on the host that holds its key, then fetch",
                config.format
            ),
        ));
    }
    let key = match super::local_key(paths, &config.repository) {
        Some(k) => k,
        None => pinned(identity, super::key_from_identity(target, identity)?)?,
    };
    if key.check_value() != config.key_check || !config.is_signed_by(&key) {
        return Err(not_authentic(
            CONFIG_KEY,
            "not made with the repository key (its MAC does not match)",
        ));
    }
    super::save_local_key(paths, &config.repository, &key)?;
    Ok(Trusted { config, key })
}

/// `key` (read from `keys/repository` with the identity), when the identity is pinned
/// to it.
pub(crate) fn pinned(identity: &Identity, key: RepoKey) -> Result<RepoKey> {
    if identity.pins().contains(&key.fingerprint()) {
        return Ok(key);
    }
    Err(not_authentic(
        REPO_KEY_KEY,
        format!(
            "the repository key it holds (fingerprint {}) is not the one this identity was pinned to ({}); the pin is the line `{} FINGERPRINT` that `offsite push` printed when it set the repository up, kept in the identity file",
            key.fingerprint(),
            if identity.pins().is_empty() {
                "the identity file holds no pin".to_string()
            } else {
                identity.pins().join(", ")
            },
            crypto::PIN_PREFIX
        ),
    ))
}

impl Trusted {
    /// Check a reference read from `object` (`snapshots/<STAMP>.json`): made with the
    /// repository key, and about the stamp its name says.
    pub(crate) fn check_reference(&self, object: &str, r: &Reference) -> Result<()> {
        check_name(object, r)?;
        if r.format < format::FORMAT || !r.is_signed_by(&self.key) {
            return Err(not_authentic(
                object,
                "not made with the repository key (its MAC does not match)",
            ));
        }
        Ok(())
    }

    /// Check the stored index object a checked reference names.
    pub(crate) fn check_index(&self, r: &Reference, stored: &[u8]) -> Result<()> {
        if !r.binds_index(stored) {
            return Err(not_authentic(
                &r.index,
                format!(
                    "it is not the index the reference of {} was made with (SHA-256 differs)",
                    r.stamp
                ),
            ));
        }
        Ok(())
    }
}

/// A reference must be stored under its own stamp (a copy under another name would
/// publish another snapshot than the one asked for).
pub(crate) fn check_name(object: &str, r: &Reference) -> Result<()> {
    if Reference::key_for(&r.stamp) != object {
        return Err(not_authentic(
            object,
            format!(
                "{object} describes snapshot {}: a reference copied under another name",
                r.stamp
            ),
        ));
    }
    Ok(())
}
