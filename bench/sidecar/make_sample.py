#!/usr/bin/env python3
"""Make a sample AtoCore storage root for the sidecar benchmark (not a test).

    make_sample.py ROOT ROWS [CHROMA_FILES] [CHROMA_FILE_BYTES]

ROOT/data/db/atocore.db: WAL-mode SQLite with ROWS memories (~180 bytes each, plus two
indexes) in the atocore stand-in's schema (so the stand-in can serve it),
ROOT/config/project-registry.json, ROOT/data/chroma/ with one segment folder of
CHROMA_FILES files of CHROMA_FILE_BYTES bytes (defaults 8 x 1 MiB). No chroma.sqlite3:
the stand-in creates its own when it serves the root.
"""
import json
import os
import sqlite3
import sys


def main():
    root, rows = sys.argv[1], int(sys.argv[2])
    files = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 20
    db_dir = os.path.join(root, "data", "db")
    chroma = os.path.join(root, "data", "chroma")
    seg = os.path.join(chroma, "6f1c2a4e-0000-4000-8000-bench0000001")
    for d in (db_dir, os.path.join(root, "config"), seg):
        os.makedirs(d, exist_ok=True)
    con = sqlite3.connect(os.path.join(db_dir, "atocore.db"))
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS memories (id TEXT PRIMARY KEY, memory_type TEXT NOT NULL,"
        " content TEXT NOT NULL, project TEXT NOT NULL, confidence REAL NOT NULL,"
        " created_at TEXT NOT NULL)"
    )
    con.execute(
        "CREATE INDEX IF NOT EXISTS memories_by_project ON memories (project, created_at)"
    )
    filler = "lorem ipsum dolor sit amet " * 6
    batch = 50_000
    done = 0
    while done < rows:
        n = min(batch, rows - done)
        con.executemany(
            "INSERT INTO memories (id, memory_type, content, project, confidence, created_at)"
            " VALUES (?, 'episodic', ?, 'bench', 0.9, datetime('now'))",
            ((f"bench-{done + i:012d}", f"memory {done + i} {filler}") for i in range(n)),
        )
        con.commit()
        done += n
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with open(os.path.join(root, "config", "project-registry.json"), "w") as f:
        json.dump({"projects": [{"name": "bench"}]}, f)
    for i in range(files):
        p = os.path.join(seg, f"data_level{i}.bin")
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(bytes([i % 251 + 1]) * size)


if __name__ == "__main__":
    main()
