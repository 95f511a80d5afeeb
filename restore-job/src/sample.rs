//! A sample storage root shaped like a real AtoCore install: a WAL-mode database with
//! a few tables and rows, a project registry, and a chroma-like tree. Used by the
//! `demo` command, the tests and the benchmarks.

use std::fs;
use std::path::Path;

use rusqlite::Connection;

use crate::config::Paths;
use crate::durable;
use crate::error::{Error, Result};

/// Create (or top up) a sample install under `root` with `rows` memories and
/// `segment_files` chroma segment files of `segment_bytes` each.
pub fn create(root: &Path, rows: u64, segment_files: u32, segment_bytes: usize) -> Result<Paths> {
    let paths = Paths::from_root(root);
    for d in [
        paths.db.parent(),
        paths.registry.parent(),
        Some(paths.chroma.as_path()),
    ]
    .into_iter()
    .flatten()
    {
        durable::create_dir_all(d)?;
    }
    let conn = Connection::open(&paths.db).map_err(Error::sqlite("create", &paths.db))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE IF NOT EXISTS memories (id INTEGER PRIMARY KEY, memory_type TEXT NOT NULL,
             content TEXT NOT NULL, project TEXT, confidence REAL, created_at TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS memories_project ON memories(project);
         CREATE TABLE IF NOT EXISTS interactions (id INTEGER PRIMARY KEY, prompt TEXT, response TEXT,
             client TEXT, session_id TEXT, project TEXT, created_at TEXT NOT NULL);",
    )
    .map_err(Error::sqlite("create tables in", &paths.db))?;
    let tx_sql = "INSERT INTO memories (memory_type, content, project, confidence, created_at)
                  VALUES ('episodic', ?1, 'sample', 0.9, datetime('now'))";
    let mut done = 0;
    while done < rows {
        let batch = (rows - done).min(10_000);
        conn.execute_batch("BEGIN")
            .map_err(Error::sqlite("write", &paths.db))?;
        {
            let mut stmt = conn
                .prepare_cached(tx_sql)
                .map_err(Error::sqlite("write", &paths.db))?;
            for i in 0..batch {
                stmt.execute([format!(
                    "sample memory {} {}",
                    done + i,
                    "lorem ipsum ".repeat(8)
                )])
                .map_err(Error::sqlite("write", &paths.db))?;
            }
        }
        conn.execute_batch("COMMIT")
            .map_err(Error::sqlite("write", &paths.db))?;
        done += batch;
    }
    if !paths.registry.exists() {
        durable::write_atomic(
            &paths.registry,
            br#"{"projects": [{"name": "sample", "description": "sample project"}]}"#,
        )?;
    }
    let chroma_db = paths.chroma.join("chroma.sqlite3");
    let c = Connection::open(&chroma_db).map_err(Error::sqlite("create", &chroma_db))?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS embeddings (id INTEGER PRIMARY KEY, seg TEXT);
                     INSERT INTO embeddings (seg) VALUES ('sample');",
    )
    .map_err(Error::sqlite("write", &chroma_db))?;
    let seg = paths.chroma.join("6f1c2a4e-0000-4000-8000-sample000001");
    durable::create_dir_all(&seg)?;
    for i in 0..segment_files {
        let f = seg.join(format!("data_level{i}.bin"));
        if !f.exists() {
            let byte = (i % 251) as u8 + 1;
            fs::write(&f, vec![byte; segment_bytes]).map_err(Error::io("write", &f))?;
        }
    }
    Ok(paths)
}
