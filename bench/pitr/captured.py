#!/usr/bin/env python3
"""`captured.py WAL_DIR`: the commits captured so far (sum over every segment header)."""
import glob, json, sys

n = 0
for p in glob.glob(sys.argv[1] + "/*/*.seg"):
    with open(p, "rb") as f:
        f.readline()
        n += json.loads(f.readline())["commits"]
print(n)
