#!/usr/bin/env python3
"""Watch atocore's /health from outside during a restore (not a test).

    poll_health.py URL OUT_JSON STOP_FILE

Probes URL every 50 ms while it answers 200 and every 5 ms while it does not (a closed
port answers at once; the stand-in's /health counts rows, so probing it flat out would
load the machine), until STOP_FILE exists. Writes OUT_JSON with the outages seen:
last 200 before, first failure, first 200 after (wall-clock ms), and
gap_ms = first 200 after - last 200 before (the downtime an outside client saw, to
within one probe period).
"""
import json
import os
import sys
import time
import urllib.request


def probe(url):
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return r.status == 200
    except Exception:
        return False


def main():
    url, out, stop = sys.argv[1:4]
    outages, last_ok, fail_since, probes = [], None, None, 0
    while not os.path.exists(stop):
        t = time.time() * 1000
        ok = probe(url)
        probes += 1
        if ok:
            if fail_since is not None:
                outages.append({
                    "last_ok_before_ms": last_ok,
                    "first_failure_ms": fail_since,
                    "first_ok_after_ms": t,
                    "gap_ms": round(t - last_ok) if last_ok is not None else None,
                })
                fail_since = None
            last_ok = t
            time.sleep(0.05)
        else:
            if fail_since is None:
                fail_since = t
            time.sleep(0.005)
    with open(out, "w") as f:
        json.dump({"probes": probes, "outages": outages,
                   "still_down_since_ms": fail_since}, f)


if __name__ == "__main__":
    main()
