//! Chroma-like files under the chroma path, shaped the way the real vector store leaves
//! them, so that backups and restores meet the same kind of tree:
//!
//! ```text
//! <chroma>/chroma.sqlite3          rollback-journal SQLite (NOT WAL): collections, segments, embeddings
//! <chroma>/<segment uuid>/header.bin       HNSW-like binary files, rewritten IN PLACE
//! <chroma>/<segment uuid>/data_level0.bin  (same inode) whenever a memory is added
//! <chroma>/<segment uuid>/length.bin
//! <chroma>/<segment uuid>/link_lists.bin
//! ```
//!
//! The chroma directory itself is a bind-mount point in the real deployment: it is
//! created when missing but never renamed or removed.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StandinError;
use crate::store::{now, uuid_text};

/// Dimensions of the stand-in's pseudo-embeddings.
pub const DIMENSIONS: usize = 16;
/// The segment files, in the order they are rewritten.
pub const SEGMENT_FILES: [&str; 4] = [
    "header.bin",
    "data_level0.bin",
    "length.bin",
    "link_lists.bin",
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS collections (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS segments (
    id TEXT PRIMARY KEY, collection TEXT NOT NULL, scope TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    segment_id   TEXT NOT NULL,
    embedding_id TEXT NOT NULL UNIQUE,
    document     TEXT NOT NULL,
    vector       BLOB NOT NULL,
    created_at   TEXT NOT NULL
);
";

/// The open chroma-like store.
#[derive(Debug)]
pub struct ChromaFiles {
    dir: PathBuf,
    conn: Connection,
    segment: String,
}

impl ChromaFiles {
    /// Opens the store, creating the directory, `chroma.sqlite3` and one segment when
    /// missing; rebuilds segment files that are missing from the embeddings table.
    pub fn open(dir: &Path) -> Result<Self, StandinError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StandinError::io("cannot create the chroma folder", dir, e))?;
        let db = dir.join("chroma.sqlite3");
        let sql = |action| {
            let db = db.clone();
            move |e| StandinError::sqlite(action, db, e)
        };
        let conn = Connection::open(&db).map_err(sql("opening"))?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(sql("setting temp_store"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql("setting busy_timeout"))?;
        // Chroma uses a rollback journal; make sure of it even if a file says otherwise.
        conn.pragma_update(None, "journal_mode", "DELETE")
            .map_err(sql("setting journal_mode"))?;
        conn.execute_batch(SCHEMA)
            .map_err(sql("creating the schema"))?;
        let segment: Option<String> = conn
            .query_row(
                "SELECT id FROM segments WHERE scope = 'VECTOR' LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("reading the segment"))?;
        let segment = match segment {
            Some(id) => id,
            None => {
                let random = |conn: &Connection| -> rusqlite::Result<String> {
                    let bytes: Vec<u8> =
                        conn.query_row("SELECT randomblob(16)", [], |r| r.get(0))?;
                    Ok(uuid_text(&bytes))
                };
                let collection = random(&conn).map_err(sql("creating the collection"))?;
                let id = random(&conn).map_err(sql("creating the segment"))?;
                conn.execute_batch("BEGIN")
                    .map_err(sql("creating the segment"))?;
                conn.execute(
                    "INSERT OR IGNORE INTO collections (id, name) VALUES (?1, 'atocore_memories')",
                    params![collection],
                )
                .map_err(sql("creating the collection"))?;
                conn.execute(
                    "INSERT INTO segments (id, collection, scope)
                     VALUES (?1, (SELECT id FROM collections WHERE name = 'atocore_memories'), 'VECTOR')",
                    params![id],
                )
                .map_err(sql("creating the segment"))?;
                conn.execute_batch("COMMIT")
                    .map_err(sql("creating the segment"))?;
                id
            }
        };
        let store = Self {
            dir: dir.to_path_buf(),
            conn,
            segment,
        };
        let seg_dir = store.segment_dir();
        let complete = SEGMENT_FILES.iter().all(|f| seg_dir.join(f).is_file());
        if !complete {
            store.write_segment()?;
        }
        Ok(store)
    }

    /// The segment's directory.
    pub fn segment_dir(&self) -> PathBuf {
        self.dir.join(&self.segment)
    }

    /// Number of stored embeddings.
    pub fn count(&self) -> Result<i64, StandinError> {
        self.conn
            .query_row("SELECT count(*) FROM embeddings", [], |r| r.get(0))
            .map_err(|e| {
                StandinError::sqlite("counting embeddings", self.dir.join("chroma.sqlite3"), e)
            })
    }

    /// Adds the pseudo-embedding of a memory and rewrites the segment files in place.
    pub fn add(&self, memory_id: &str, document: &str) -> Result<(), StandinError> {
        let vector: Vec<u8> = embed(document)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        self.conn
            .execute(
                "INSERT OR IGNORE INTO embeddings (segment_id, embedding_id, document, vector, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![self.segment, memory_id, document, vector, now()],
            )
            .map_err(|e| StandinError::sqlite("adding an embedding", self.dir.join("chroma.sqlite3"), e))?;
        self.write_segment()
    }

    /// Rewrites every segment file from the embeddings table, each in place (same inode),
    /// as HNSW persistence does.
    fn write_segment(&self) -> Result<(), StandinError> {
        let db = self.dir.join("chroma.sqlite3");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, document, vector FROM embeddings WHERE segment_id = ?1 ORDER BY id",
            )
            .map_err(|e| StandinError::sqlite("reading embeddings", &db, e))?;
        let rows: Vec<(i64, String, Vec<u8>)> = stmt
            .query_map(params![self.segment], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| StandinError::sqlite("reading embeddings", &db, e))?;

        let count = rows.len() as u64;
        let mut header = Vec::with_capacity(64);
        header.extend_from_slice(b"ATOSTANDIN-HNSW\0");
        header.extend_from_slice(&(DIMENSIONS as u32).to_le_bytes());
        header.extend_from_slice(&count.to_le_bytes());
        header.extend_from_slice(&16u32.to_le_bytes()); // M
        header.extend_from_slice(&100u32.to_le_bytes()); // ef_construction
        header.resize(64, 0);

        let mut data = Vec::new();
        let mut lengths = Vec::new();
        let mut links = Vec::new();
        for (i, (label, document, vector)) in rows.iter().enumerate() {
            data.extend_from_slice(vector);
            data.extend_from_slice(&(*label as u64).to_le_bytes());
            lengths.extend_from_slice(&(document.len() as u32).to_le_bytes());
            let neighbours: Vec<u32> = [
                i.checked_sub(1),
                Some(i + 1).filter(|n| (*n as u64) < count),
            ]
            .into_iter()
            .flatten()
            .map(|n| n as u32)
            .collect();
            links.extend_from_slice(&(neighbours.len() as u32).to_le_bytes());
            for n in neighbours {
                links.extend_from_slice(&n.to_le_bytes());
            }
        }

        let seg_dir = self.segment_dir();
        std::fs::create_dir_all(&seg_dir)
            .map_err(|e| StandinError::io("cannot create the segment folder", &seg_dir, e))?;
        for (name, bytes) in SEGMENT_FILES.iter().zip([&header, &data, &lengths, &links]) {
            rewrite_in_place(&seg_dir.join(name), bytes)?;
        }
        Ok(())
    }
}

/// Overwrites a file's contents without replacing the file (same inode).
fn rewrite_in_place(path: &Path, bytes: &[u8]) -> Result<(), StandinError> {
    let err = |e| StandinError::io("cannot rewrite", path, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.set_len(bytes.len() as u64).map_err(err)?;
    file.sync_data().map_err(err)
}

/// A deterministic, normalised pseudo-embedding (FNV-1a per dimension). Not semantic.
pub fn embed(text: &str) -> [f32; DIMENSIONS] {
    let mut v = [0f32; DIMENSIONS];
    for (d, slot) in v.iter_mut().enumerate() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (d as u64);
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        *slot = ((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
    }
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.map(|x| x / norm)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn segment_files_change_in_place_when_memories_are_added() {
        let dir = tempfile::tempdir().unwrap();
        let chroma = dir.path().join("chroma");
        let store = ChromaFiles::open(&chroma).unwrap();
        let data = store.segment_dir().join("data_level0.bin");
        let before = std::fs::metadata(&data).unwrap();
        store.add("m1", "hello").unwrap();
        let after = std::fs::metadata(&data).unwrap();
        assert_eq!(before.ino(), after.ino());
        assert_eq!(after.len(), (DIMENSIONS * 4 + 8) as u64);
        assert_eq!(store.count().unwrap(), 1);

        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        let segment = store.segment.clone();
        drop(store);
        // Reopening finds the same segment.
        let again = ChromaFiles::open(&chroma).unwrap();
        assert_eq!(again.segment, segment);
        assert_eq!(std::fs::metadata(&data).unwrap().ino(), after.ino());
    }

    #[test]
    fn embeddings_are_deterministic_and_normalised() {
        let a = embed("x");
        assert_eq!(a, embed("x"));
        assert_ne!(a, embed("y"));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
