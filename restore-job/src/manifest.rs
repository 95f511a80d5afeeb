//! `manifest.sha256`: every file of a snapshot but itself and the metadata, in
//! coreutils format, so `sha256sum -c manifest.sha256` inside the folder checks it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::durable;
use crate::error::{Error, Result};

/// File name of the manifest inside a snapshot folder.
pub const MANIFEST_FILE: &str = "manifest.sha256";

/// Relative path (with `/`) to lowercase hex SHA-256.
pub type Manifest = BTreeMap<String, String>;

/// Render in coreutils format, sorted by path.
pub fn render(m: &Manifest) -> String {
    let mut s = String::new();
    for (path, hash) in m {
        s.push_str(hash);
        s.push_str("  ");
        s.push_str(path);
        s.push('\n');
    }
    s
}

/// Write the manifest durably.
pub fn write(dir: &Path, m: &Manifest) -> Result<()> {
    durable::write_atomic(&dir.join(MANIFEST_FILE), render(m).as_bytes())
}

/// Read a manifest; `Ok(None)` when the snapshot has none (legacy).
/// A malformed line is reported as an error code, not a crash.
pub fn read(dir: &Path) -> Result<Option<Result<Manifest, String>>> {
    let path = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Ok(Some(Err("manifest_invalid".into())));
        }
        Err(e) => return Err(Error::io("read", &path)(e)),
    };
    let mut m = Manifest::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some((hash, rel)) = line.split_once("  ") else {
            return Ok(Some(Err("manifest_invalid".into())));
        };
        let rel = rel.strip_prefix('*').unwrap_or(rel);
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Some(Err("manifest_invalid".into())));
        }
        m.insert(rel.to_string(), hash.to_ascii_lowercase());
    }
    Ok(Some(Ok(m)))
}
