#!/usr/bin/env python3
"""Create (or reuse) a WAL-mode SQLite database of about SIZE_MB megabytes shaped like
AtoCore's: memories with an index, interactions. Usage: make_db.py PATH SIZE_MB"""
import os, sqlite3, sys

path, size_mb = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.dirname(path), exist_ok=True)
c = sqlite3.connect(path)
c.execute("PRAGMA journal_mode=WAL")
c.executescript("""
CREATE TABLE IF NOT EXISTS memories (id INTEGER PRIMARY KEY, memory_type TEXT NOT NULL,
    content TEXT NOT NULL, project TEXT, confidence REAL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS memories_project ON memories(project);
CREATE TABLE IF NOT EXISTS interactions (id INTEGER PRIMARY KEY, prompt TEXT, response TEXT,
    client TEXT, session_id TEXT, project TEXT, created_at TEXT NOT NULL);
""")
blob = ("memory text " * 40)[:480]
while os.path.getsize(path) < size_mb * 1024 * 1024:
    with c:
        c.executemany(
            "INSERT INTO memories (memory_type, content, project, confidence, created_at) VALUES ('episodic', ?, ?, 0.5, datetime('now'))",
            ((f"{blob} {i}", f"p{i % 50}") for i in range(20000)),
        )
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
print(os.path.getsize(path))
