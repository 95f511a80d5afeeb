#!/usr/bin/env python3
"""A writer for the PITR benchmark: small rows, one transaction each, as fast as it can.

  writer.py DB OUT SECONDS|-COMMITS [GO_FILE]

Opens DB, commits one primer row (so the live WAL holds frames when a streamer starts,
as under a running atocore), prints "ready", waits for GO_FILE to exist when given,
then commits rows into `interactions` for SECONDS (or until COMMITS when negative),
keeping the connection open. Writes the Unix-ms time each commit returned to OUT (one
per line, in commit order) and prints "commits seconds commits_per_s".

With COMMIT_LOG=PATH in the environment, also appends the rowid of each row to PATH
(one write(2) per commit, right after the commit returned), so a writer killed with
SIGKILL leaves the list of rows it saw committed (vs-litestream.sh's rows-lost test)."""
import os, sqlite3, sys, time

db, out, amount = sys.argv[1], sys.argv[2], float(sys.argv[3])
go = sys.argv[4] if len(sys.argv) > 4 else None
c = sqlite3.connect(db, timeout=60, isolation_level=None)
c.execute("PRAGMA synchronous=NORMAL")
if os.environ.get("WAL_AUTOCHECKPOINT"):
    c.execute(f"PRAGMA wal_autocheckpoint={int(os.environ['WAL_AUTOCHECKPOINT'])}")
pause = float(os.environ.get("WRITER_PAUSE_S", "0"))
log = os.environ.get("COMMIT_LOG")
log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if log else None
c.execute("INSERT INTO interactions (prompt, response, client, created_at) VALUES ('primer', '', 'bench', datetime('now'))")
print("ready", flush=True)
while go and not os.path.exists(go):
    time.sleep(0.01)
done = []
sql = "INSERT INTO interactions (prompt, response, client, created_at) VALUES (?, 'r', 'bench', datetime('now'))"
t0 = time.time()
if amount > 0:
    end = t0 + amount
    while time.time() < end:
        cur = c.execute(sql, (f"p{len(done)}",))
        done.append(time.time())
        if log_fd is not None:
            os.write(log_fd, b"%d\n" % cur.lastrowid)
        if pause:
            time.sleep(pause)
else:
    for i in range(int(-amount)):
        cur = c.execute(sql, (f"p{i}",))
        done.append(time.time())
        if log_fd is not None:
            os.write(log_fd, b"%d\n" % cur.lastrowid)
secs = time.time() - t0
with open(out, "w") as f:
    f.write("".join(f"{int(t * 1000)}\n" for t in done))
print(f"{len(done)} {secs:.2f} {len(done) / secs:.0f}", flush=True)
