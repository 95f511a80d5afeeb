#!/usr/bin/env python3
"""A steady writer: commits one row at a time until SIGTERM, then prints
'commits worst_ms p99_ms' for the commits made while it ran."""
import signal, sqlite3, sys, time

path = sys.argv[1]
stop = False
def _stop(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, _stop)
c = sqlite3.connect(path, timeout=60, isolation_level=None)
lat = []
print("ready", flush=True)
while not stop:
    t = time.perf_counter()
    c.execute("INSERT INTO interactions (prompt, response, client, created_at) VALUES ('p', 'r', 'bench', datetime('now'))")
    lat.append((time.perf_counter() - t) * 1000)
    time.sleep(0.001)
lat.sort()
p99 = lat[int(len(lat) * 0.99)] if lat else 0
print(f"{len(lat)} {lat[-1] if lat else 0:.1f} {p99:.1f}", flush=True)
