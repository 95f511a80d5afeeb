//! The service database: a real WAL-mode SQLite file at the contract's path, kept open
//! while the stand-in runs, with a heartbeat row written in the background.

use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::StandinError;

/// How many heartbeat rows are kept; older ones are deleted as new ones arrive.
const HEARTBEAT_ROWS_KEPT: i64 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS memories (
    id          TEXT PRIMARY KEY,
    memory_type TEXT NOT NULL,
    content     TEXT NOT NULL,
    project     TEXT NOT NULL,
    confidence  REAL NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_by_project ON memories (project, created_at);
CREATE TABLE IF NOT EXISTS interactions (
    id          TEXT PRIMARY KEY,
    prompt      TEXT NOT NULL,
    response    TEXT NOT NULL,
    client      TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    project     TEXT,
    reinforce   INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeat (
    id  INTEGER PRIMARY KEY AUTOINCREMENT,
    at  TEXT NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS service_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO service_meta (key, value) VALUES ('service', 'atocore-standin');
INSERT OR IGNORE INTO service_meta (key, value) VALUES ('schema_version', '1');
";

/// A memory as stored and returned by `GET /memory`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    pub id: String,
    pub memory_type: String,
    pub content: String,
    pub project: String,
    pub confidence: f64,
    pub created_at: String,
}

/// A validated `POST /memory` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub memory_type: String,
    pub content: String,
    pub project: String,
    pub confidence: f64,
}

/// A validated `POST /interactions` body (the capture hook's turn).
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub prompt: String,
    pub response: String,
    pub client: String,
    pub session_id: String,
    pub project: Option<String>,
    pub reinforce: bool,
}

/// Row counts for `GET /stats` and `/health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub memories: i64,
    pub interactions: i64,
    pub heartbeats: i64,
}

/// The open service database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating folders, file and schema as needed) the database in WAL mode.
    pub fn open(path: &Path) -> Result<Self, StandinError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StandinError::io("cannot create the database folder", parent, e))?;
        }
        let sql = |action| move |e| StandinError::sqlite(action, path, e);
        let conn = Connection::open(path).map_err(sql("opening"))?;
        // A scratch image has no /tmp: keep temporary tables and indices in memory.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(sql("setting temp_store"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql("setting busy_timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql("switching to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StandinError::sqlite(
                "switching to WAL",
                path,
                rusqlite::Error::InvalidParameterName(format!("journal_mode stayed `{mode}`")),
            ));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("setting synchronous"))?;
        conn.execute_batch(SCHEMA)
            .map_err(sql("creating the schema"))?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, action: &'static str) -> impl Fn(rusqlite::Error) -> StandinError + '_ {
        move |e| StandinError::sqlite(action, &self.path, e)
    }

    /// A fresh UUID (v4 layout) from SQLite's random source.
    pub fn new_id(&self) -> Result<String, StandinError> {
        let bytes: Vec<u8> = self
            .conn
            .query_row("SELECT randomblob(16)", [], |row| row.get(0))
            .map_err(self.err("drawing an id"))?;
        Ok(uuid_text(&bytes))
    }

    /// Adds a memory; an identical one (same type, content and project) is not stored
    /// twice: `(memory, false)` returns the existing one.
    pub fn add_memory(&self, new: &NewMemory) -> Result<(Memory, bool), StandinError> {
        let existing = self
            .conn
            .query_row(
                "SELECT id, memory_type, content, project, confidence, created_at FROM memories
                 WHERE memory_type = ?1 AND content = ?2 AND project = ?3 LIMIT 1",
                params![new.memory_type, new.content, new.project],
                memory_from_row,
            )
            .optional()
            .map_err(self.err("looking up a memory"))?;
        if let Some(memory) = existing {
            return Ok((memory, false));
        }
        let memory = Memory {
            id: self.new_id()?,
            memory_type: new.memory_type.clone(),
            content: new.content.clone(),
            project: new.project.clone(),
            confidence: new.confidence,
            created_at: now(),
        };
        self.conn
            .execute(
                "INSERT INTO memories (id, memory_type, content, project, confidence, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    memory.id,
                    memory.memory_type,
                    memory.content,
                    memory.project,
                    memory.confidence,
                    memory.created_at
                ],
            )
            .map_err(self.err("adding a memory"))?;
        Ok((memory, true))
    }

    /// Memories, oldest first, of one project or of all.
    pub fn memories(&self, project: Option<&str>) -> Result<Vec<Memory>, StandinError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, memory_type, content, project, confidence, created_at FROM memories
                 WHERE ?1 IS NULL OR project = ?1 ORDER BY created_at, rowid",
            )
            .map_err(self.err("listing memories"))?;
        let rows = stmt
            .query_map(params![project], memory_from_row)
            .map_err(self.err("listing memories"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("listing memories"))
    }

    /// Stores a captured turn and returns its id.
    pub fn add_interaction(&self, turn: &Interaction) -> Result<String, StandinError> {
        let id = self.new_id()?;
        self.conn
            .execute(
                "INSERT INTO interactions (id, prompt, response, client, session_id, project, reinforce, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![id, turn.prompt, turn.response, turn.client, turn.session_id, turn.project, turn.reinforce, now()],
            )
            .map_err(self.err("adding an interaction"))?;
        Ok(id)
    }

    /// Writes one heartbeat row and trims old ones: the background write that keeps the
    /// database busy like the real service.
    pub fn beat(&self) -> Result<(), StandinError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.err("writing a heartbeat"))?;
        tx.execute(
            "INSERT INTO heartbeat (at, pid) VALUES (?1, ?2)",
            params![now(), std::process::id()],
        )
        .map_err(self.err("writing a heartbeat"))?;
        tx.execute(
            "DELETE FROM heartbeat WHERE id <= last_insert_rowid() - ?1",
            params![HEARTBEAT_ROWS_KEPT],
        )
        .map_err(self.err("trimming heartbeats"))?;
        tx.commit().map_err(self.err("writing a heartbeat"))
    }

    /// Row counts.
    pub fn counts(&self) -> Result<Counts, StandinError> {
        let count = |table: &str| -> Result<i64, StandinError> {
            self.conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .map_err(self.err("counting rows"))
        };
        Ok(Counts {
            memories: count("memories")?,
            interactions: count("interactions")?,
            heartbeats: count("heartbeat")?,
        })
    }

    /// Closes the connection (SQLite checkpoints and removes the `-wal` when it is the last).
    pub fn close(self) -> Result<(), StandinError> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, e)| StandinError::sqlite("closing", path, e))
    }
}

fn memory_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Memory> {
    Ok(Memory {
        id: row.get(0)?,
        memory_type: row.get(1)?,
        content: row.get(2)?,
        project: row.get(3)?,
        confidence: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Current UTC time, RFC 3339 with microseconds (sorts as text).
pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Formats 16 random bytes as a version-4 UUID.
pub(crate) fn uuid_text(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    for (dst, src) in b.iter_mut().zip(bytes) {
        *dst = *src;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(content: &str) -> NewMemory {
        NewMemory {
            memory_type: "episodic".to_owned(),
            content: content.to_owned(),
            project: "p".to_owned(),
            confidence: 0.5,
        }
    }

    #[test]
    fn the_database_is_in_wal_mode_and_counts_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data/db/atocore.db")).unwrap();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        store.beat().unwrap();
        let (first, created) = store.add_memory(&memory("a")).unwrap();
        assert!(created);
        let (again, created) = store.add_memory(&memory("a")).unwrap();
        assert!(!created);
        assert_eq!(first.id, again.id);
        assert_eq!(
            store.counts().unwrap(),
            Counts {
                memories: 1,
                interactions: 0,
                heartbeats: 1
            }
        );
        assert_eq!(store.memories(Some("p")).unwrap().len(), 1);
        assert!(store.memories(Some("q")).unwrap().is_empty());
        store.close().unwrap();
    }

    #[test]
    fn ids_look_like_uuids() {
        let id = uuid_text(&[0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
