#!/usr/bin/env python3
"""Capture lag: `lag.py WAL_DIR SKIP COMMIT_TIMES`. Reads every segment header under
WAL_DIR (oldest first), skips the first SKIP captured commits (those made before the
measured writer started), and matches the writer's commits, in order, to the segment
holding each (cumulative `commits` of the headers). Lag = segment captured_ms - time the
commit returned. Prints "matched p50_ms p99_ms max_ms"."""
import glob, json, os, sys

wal_dir, skip, times = sys.argv[1], int(sys.argv[2]), sys.argv[3]
commits = [int(l) for l in open(times) if l.strip()]
headers = []
for g in sorted(os.listdir(wal_dir)):
    for p in sorted(glob.glob(os.path.join(wal_dir, g, "*.seg"))):
        with open(p, "rb") as f:
            assert f.readline().strip() == b"ATOCORE-WAL-SEGMENT 1"
            headers.append(json.loads(f.readline()))
cum, lags, i = 0, [], 0
for h in headers:
    cum += h["commits"]
    while i < len(commits) and skip + i + 1 <= cum:
        lags.append(h["captured_ms"] - commits[i])
        i += 1
lags.sort()
if not lags:
    print("0 0 0 0")
else:
    q = lambda p: lags[min(len(lags) - 1, int(len(lags) * p))]
    print(f"{len(lags)} {q(0.5)} {q(0.99)} {lags[-1]}")
