#!/usr/bin/env python3
"""GET /admin/backup latency with the sidecar's listing cache defeated (benchmark helper).

    list_cold.py BASE_URL TOKEN SNAPSHOTS_DIR [N]

Before each request the snapshots folder's mtime is bumped, which is what another process
publishing a snapshot does, so every request rereads all snapshot metadata. Prints p50,
p99 and max in ms over N requests (default 200) on one keep-alive connection.
"""
import http.client
import os
import sys
import time
import urllib.parse


def main():
    base, token, snaps = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    times = []
    for i in range(n):
        t = time.time_ns()
        os.utime(snaps, ns=(t, t + i))  # a new mtime every time
        start = time.perf_counter()
        conn.request("GET", "/admin/backup", headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        r.read()
        times.append((time.perf_counter() - start) * 1000)
        assert r.status == 200, r.status
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"p50 {pick(0.50):.2f}ms, p99 {pick(0.99):.2f}ms, max {times[-1]:.2f}ms over {n} requests")


if __name__ == "__main__":
    main()
