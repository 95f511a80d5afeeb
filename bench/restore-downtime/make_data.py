#!/usr/bin/env python3
"""Grow a stopped atocore stand-in's storage for the restore-downtime benchmark (not a test).

    make_data.py ROOT DB_MB CHROMA_MB

ROOT is the storage root of a compose project whose atocore (the stand-in) has run once
(so data/db/atocore.db exists with the stand-in's own schema) and is stopped now.
Adds memories in that schema until the database file is about DB_MB MiB (WAL mode,
checkpointed, owner kept), and CHROMA_MB MiB of segment-like files in one extra folder
under data/chroma (incompressible bytes, files of 32 MiB; the stand-in ignores folders it
did not create, the snapshot engine copies them like any chroma file). Prints the sizes.
"""
import os
import sqlite3
import sys
import time


def chown_like(path, ref):
    st = os.stat(ref)
    os.chown(path, st.st_uid, st.st_gid)


def main():
    root, db_mb, chroma_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    db = os.path.join(root, "data", "db", "atocore.db")
    if not os.path.isfile(db):
        sys.exit(f"make_data: {db} is missing: start the stand-in once first")
    started = time.time()
    con = sqlite3.connect(db)
    mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode == "wal", mode
    cols = {r[1] for r in con.execute("PRAGMA table_info(memories)")}
    want = {"id", "memory_type", "content", "project", "confidence", "created_at"}
    assert want <= cols, f"not the stand-in's schema: {cols}"
    (n,) = con.execute("SELECT count(*) FROM memories").fetchone()
    filler = ("benchmark memory about restore downtime, " * 12)[:440]
    batch = 20_000
    while os.path.getsize(db) < db_mb * 1024 * 1024:
        with con:
            con.executemany(
                "INSERT INTO memories (id, memory_type, content, project, confidence, created_at)"
                " VALUES (?, 'episodic', ?, ?, 0.5, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                ((f"bench-{n + i:012d}", f"{filler} #{n + i}", f"bench{(n + i) % 20}")
                 for i in range(batch)),
            )
        n += batch
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            chown_like(db + suffix, os.path.dirname(db))
    chroma = os.path.join(root, "data", "chroma")
    seg = os.path.join(chroma, "bench-filler-0000-4000-8000-000000000001")
    os.makedirs(seg, exist_ok=True)
    chown_like(seg, chroma)
    left, i = chroma_mb * 1024 * 1024, 0
    chunk = 32 * 1024 * 1024
    while left > 0:
        p = os.path.join(seg, f"data_level{i}.bin")
        size = min(chunk, left)
        if not os.path.exists(p) or os.path.getsize(p) != size:
            with open(p, "wb") as f:
                f.write(os.urandom(size))
            chown_like(p, chroma)
        left -= size
        i += 1
    chroma_bytes = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(chroma) for f in fs
    )
    print(
        f"database {os.path.getsize(db) / 1048576:.0f} MiB ({n} memories), "
        f"chroma {chroma_bytes / 1048576:.0f} MiB, made in {time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
