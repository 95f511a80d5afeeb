#!/usr/bin/env python3
"""Where a restore's downtime goes, from Docker's own events (not a test).

    timeline.py ATOCORE_CONTAINER JOB_CONTAINER SINCE_S UNTIL_S [HEALTH_JSON]

Reads `docker events` of the two containers between SINCE_S and UNTIL_S (unix seconds,
fractions allowed) and prints one line: atocore's stop (SIGTERM sent -> exited), the
restore-job container (start -> exit) and the gaps around it (the sidecar's Docker calls
and Docker's own container start), atocore's start (start event -> first 200 from /health
seen from outside, from HEALTH_JSON written by poll_health.py). Times in ms.
"""
import json
import subprocess
import sys


def events(container, since, until):
    out = subprocess.run(
        ["docker", "events", "--since", since, "--until", until,
         "--filter", f"container={container}", "--format", "{{json .}}"],
        capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        e = json.loads(line)
        rows.append((e["timeNano"] / 1e6, e.get("Action") or e.get("status")))
    return rows


def first(rows, pred, after=0.0):
    for t, a in rows:
        if t >= after and pred(a):
            return t
    return None


def main():
    atocore, job, since, until = sys.argv[1:5]
    health = None
    if len(sys.argv) > 5:
        with open(sys.argv[5]) as f:
            outages = json.load(f)["outages"]
        if outages:
            health = max(outages, key=lambda o: o["gap_ms"] or 0)
    a = events(atocore, since, until)
    j = events(job, since, until)
    kill = first(a, lambda x: x.startswith("kill"))
    die = first(a, lambda x: x == "die", kill or 0)
    jstart = first(j, lambda x: x == "start", die or 0)
    jdie = first(j, lambda x: x == "die", jstart or 0)
    start = first(a, lambda x: x == "start", jdie or die or 0)
    ok = health["first_ok_after_ms"] if health else None

    def d(x, y):
        return f"{y - x:.0f}" if x is not None and y is not None else "?"

    parts = [f"stop {d(kill, die)}"]
    if jstart:
        parts.append(f"gap {d(die, jstart)}")
        parts.append(f"job container {d(jstart, jdie)}")
        parts.append(f"gap {d(jdie, start)}")
    else:
        parts.append(f"gap {d(die, start)}")
    parts.append(f"atocore start->200 {d(start, ok)}" if ok else "atocore start->200 ?")
    print(", ".join(parts))


if __name__ == "__main__":
    main()
