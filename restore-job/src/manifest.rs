//! `manifest.sha256`: every file of a snapshot but itself and the metadata, in
//! coreutils format, so `sha256sum -c manifest.sha256` inside the folder checks it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::durable;
use crate::error::{Error, Result};
use crate::layout::MANIFEST_FILE;

/// Relative path (with `/`) to lowercase hex SHA-256.
pub type Manifest = BTreeMap<String, String>;

/// Render in coreutils format, sorted by path. A name with a backslash, a newline or
/// a carriage return is written the way `sha256sum` writes it: the line starts with
/// `\` and the name has `\\`, `\n` and `\r` for those characters, so
/// `sha256sum -c` reads it back.
pub fn render(m: &Manifest) -> String {
    let mut s = String::new();
    for (path, hash) in m {
        let escaped = path.contains(['\\', '\n', '\r']);
        if escaped {
            s.push('\\');
        }
        s.push_str(hash);
        s.push_str("  ");
        if escaped {
            for c in path.chars() {
                match c {
                    '\\' => s.push_str("\\\\"),
                    '\n' => s.push_str("\\n"),
                    '\r' => s.push_str("\\r"),
                    c => s.push(c),
                }
            }
        } else {
            s.push_str(path);
        }
        s.push('\n');
    }
    s
}

/// Undo [`render`]'s escaping of a name; `None` for an unknown escape.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            _ => return None,
        }
    }
    Some(out)
}

/// Parse one manifest line: `[\]<hex>  <name>` or `[\]<hex> *<name>`.
fn parse_line(line: &str) -> Option<(String, String)> {
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let hash = line.get(..64)?;
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let rest = line[64..].strip_prefix(' ')?;
    let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'))?;
    if name.is_empty() {
        return None;
    }
    let name = if escaped {
        unescape(name)?
    } else {
        name.to_string()
    };
    Some((name, hash.to_ascii_lowercase()))
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
    // Split on `\n` only: a name may end in `\r` (escaped) and must keep it.
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let Some((rel, hash)) = parse_line(line) else {
            return Ok(Some(Err("manifest_invalid".into())));
        };
        m.insert(rel, hash);
    }
    Ok(Some(Ok(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_round_trip_in_sha256sum_format() {
        let h = "ab".repeat(32);
        let mut m = Manifest::new();
        for name in ["plain/file", "new\nline", "back\\slash", "cr\r", "sp ace"] {
            m.insert(name.to_string(), h.clone());
        }
        let text = render(&m);
        assert!(text.contains(&format!("\\{h}  new\\nline\n")), "{text}");
        assert!(text.contains(&format!("\\{h}  back\\\\slash\n")), "{text}");
        assert!(text.contains(&format!("\n{h}  plain/file\n")), "{text}");
        let back: Manifest = text
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_line(l).unwrap())
            .collect();
        assert_eq!(back, m);
        // Binary-mode lines and upper-case hex are read too; bad escapes are not.
        assert_eq!(
            parse_line(&format!("{}  *x", h.to_uppercase())).unwrap(),
            ("*x".to_string(), h.clone())
        );
        assert_eq!(
            parse_line(&format!("{h} *x")).unwrap(),
            ("x".to_string(), h.clone())
        );
        assert!(parse_line(&format!("\\{h}  a\\tb")).is_none());
        assert!(parse_line(&format!("{h} x")).is_none());
        assert!(parse_line("zz  x").is_none());
    }
}
