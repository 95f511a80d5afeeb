//! Encryption with age: X25519 recipients only. The host holds public keys
//! (`ATOCORE_OFFSITE_RECIPIENTS`); the private key (an identity file as made by
//! `age-keygen`) is read only by the commands that decrypt (`fetch`, and `verify`
//! or `push` when handed one).

use std::io::{Read, Write};
use std::path::Path;

use age::x25519;

use crate::error::{Error, Result};

/// How objects are sealed on the way out.
pub enum Sealer {
    /// Encrypted to these recipients.
    Age(Vec<x25519::Recipient>),
    /// Written as they are (`ATOCORE_OFFSITE_UNENCRYPTED=true`).
    Plain,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sealer::Age(r) => write!(f, "Sealer::Age({} recipients)", r.len()),
            Sealer::Plain => f.write_str("Sealer::Plain"),
        }
    }
}

impl Sealer {
    /// From the settings: recipients (comma or whitespace separated), or plain when
    /// explicitly allowed. Neither is a refusal.
    pub fn from_settings(recipients: Option<&str>, unencrypted: bool) -> Result<Sealer> {
        let keys: Vec<&str> = recipients
            .unwrap_or("")
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        if keys.is_empty() {
            return if unencrypted {
                Ok(Sealer::Plain)
            } else {
                Err(Error::OffsiteNotConfigured(
                    "refusing to push without encryption: set ATOCORE_OFFSITE_RECIPIENTS to one or more age public keys (age1…, from `age-keygen -y key.txt`), or ATOCORE_OFFSITE_UNENCRYPTED=true to push in the clear".into(),
                ))
            };
        }
        let parsed = keys
            .iter()
            .map(|k| {
                k.parse::<x25519::Recipient>().map_err(|e| {
                    Error::OffsiteNotConfigured(format!(
                        "ATOCORE_OFFSITE_RECIPIENTS: `{k}` is not an age X25519 public key ({e}); use the age1… line that `age-keygen -y key.txt` prints"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Sealer::Age(parsed))
    }

    pub fn encrypted(&self) -> bool {
        matches!(self, Sealer::Age(_))
    }

    /// Encrypt (or pass through) `plain`.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let Sealer::Age(recipients) = self else {
            return Ok(plain.to_vec());
        };
        let fail = |e: String| Error::OffsiteNotConfigured(format!("age encryption failed: {e}"));
        let enc =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| fail(e.to_string()))?;
        // age adds a 16-byte tag per 64 KiB and a header with a stanza per recipient:
        // sized once, the output is never reallocated.
        let mut out = Vec::with_capacity(
            plain.len() + 16 * (plain.len() / (64 << 10) + 1) + 256 + 256 * recipients.len(),
        );
        let mut w = enc.wrap_output(&mut out).map_err(|e| fail(e.to_string()))?;
        w.write_all(plain).map_err(|e| fail(e.to_string()))?;
        w.finish().map_err(|e| fail(e.to_string()))?;
        Ok(out)
    }
}

/// The comment line of an identity file that pins a repository: the fingerprint of
/// its repository key, as `offsite push` printed it when it set the repository up.
/// age ignores `#` lines, so the file stays an ordinary identity file.
pub const PIN_PREFIX: &str = "# atocore-offsite-fingerprint:";

/// The private keys of an age identity file, and the repositories it is pinned to.
pub struct Identity {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Fingerprints of the repository keys this identity trusts.
    pins: Vec<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identity({} keys, {} pins)",
            self.keys.len(),
            self.pins.len()
        )
    }
}

impl Identity {
    /// Read an identity file (`age-keygen -o key.txt`).
    pub fn load(path: &Path) -> Result<Identity> {
        let refuse = |why: String| {
            Error::OffsiteNotConfigured(format!(
                "--identity {}: {why}; pass the age identity file made by `age-keygen` (AGE-SECRET-KEY-1… line)",
                path.display()
            ))
        };
        let bytes = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
        let ids = age::IdentityFile::from_buffer(&bytes[..])
            .map_err(|e| refuse(e.to_string()))?
            .into_identities()
            .map_err(|e| refuse(e.to_string()))?;
        if ids.is_empty() {
            return Err(refuse("it holds no key".into()));
        }
        let pins = String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| l.trim().strip_prefix(PIN_PREFIX))
            .map(|fp| fp.trim().to_ascii_lowercase())
            .filter(|fp| !fp.is_empty())
            .collect();
        Ok(Identity { keys: ids, pins })
    }

    /// Also trust the repository key with this fingerprint (one a host holds: the
    /// sidecar's drill trusts the keys of its own host).
    pub fn pin(&mut self, fingerprint: &str) {
        self.pins.push(fingerprint.trim().to_ascii_lowercase());
    }

    /// The fingerprints of the repository keys this identity trusts.
    pub fn pins(&self) -> &[String] {
        &self.pins
    }

    /// Decrypt the age object `object` (its name is used in errors).
    pub fn open(&self, object: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(bytes.len());
        self.open_stream(object, bytes)?
            .read_to_end(&mut out)
            .map_err(|e| Error::OffsiteObjectDamaged {
                object: object.to_string(),
                why: format!("truncated or altered: {e}"),
            })?;
        Ok(out)
    }

    /// Decrypt `bytes` (the object `object`) as a stream: a read fails when the
    /// object is truncated or altered (age authenticates every 64 KiB).
    pub fn open_stream<'a>(&self, object: &str, bytes: &'a [u8]) -> Result<impl Read + 'a> {
        let damaged = |why: String| Error::OffsiteObjectDamaged {
            object: object.to_string(),
            why,
        };
        let dec =
            age::Decryptor::new(bytes).map_err(|e| damaged(format!("not an age file: {e}")))?;
        dec.decrypt(self.keys.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => Error::OffsiteWrongKey {
                    object: object.to_string(),
                },
                other => damaged(format!("age: {other}")),
            })
    }
}

/// Whether `bytes` start with a well-formed age header (no key needed).
pub fn parses_as_age(bytes: &[u8]) -> std::result::Result<(), String> {
    age::Decryptor::new(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    /// Write a new identity file at `path`; its public key.
    fn identity_file(path: &Path) -> String {
        let id = x25519::Identity::generate();
        std::fs::write(path, format!("{}\n", id.to_string().expose_secret())).unwrap();
        id.to_public().to_string()
    }

    #[test]
    fn seals_to_every_recipient_and_opens_with_either_key() {
        let d = tempfile::tempdir().unwrap();
        let [k1, k2, k3] = ["a", "b", "c"].map(|n| d.path().join(n));
        let (r1, r2) = (identity_file(&k1), identity_file(&k2));
        identity_file(&k3);
        let sealer = Sealer::from_settings(Some(&format!(" {r1},\n{r2} ")), false).unwrap();
        let sealed = sealer.seal(b"hello").unwrap();
        assert_ne!(&sealed[..], b"hello");
        for k in [&k1, &k2] {
            assert_eq!(
                Identity::load(k).unwrap().open("x", &sealed).unwrap(),
                b"hello"
            );
        }
        assert!(matches!(
            Identity::load(&k3).unwrap().open("x", &sealed),
            Err(Error::OffsiteWrongKey { .. })
        ));
        assert!(matches!(
            Identity::load(&k1)
                .unwrap()
                .open("x", &sealed[..sealed.len() - 1]),
            Err(Error::OffsiteObjectDamaged { .. })
        ));
    }

    #[test]
    fn refuses_without_recipients_unless_unencrypted() {
        assert!(matches!(
            Sealer::from_settings(None, false),
            Err(Error::OffsiteNotConfigured(_))
        ));
        assert!(matches!(
            Sealer::from_settings(Some(" , "), false),
            Err(Error::OffsiteNotConfigured(_))
        ));
        assert!(!Sealer::from_settings(None, true).unwrap().encrypted());
        assert!(matches!(
            Sealer::from_settings(Some("age1nope"), true),
            Err(Error::OffsiteNotConfigured(_))
        ));
    }
}
