#!/usr/bin/env python3
"""Turn one real snapshot into COUNT snapshots (benchmark helper, not a test).

    fabricate.py SNAPSHOTS_DIR COUNT

Takes the single published snapshot in SNAPSHOTS_DIR and makes COUNT-1 copies of it,
one per hour going back from its stamp: the data files are hard links (`cp -al`), the
metadata is rewritten with the new stamp and paths (a new file, not a link), so `list`
sees COUNT complete, structurally valid snapshots.
"""
import datetime
import json
import os
import subprocess
import sys

FMT = "%Y%m%dT%H%M%SZ"


def main():
    snaps, count = sys.argv[1], int(sys.argv[2])
    (base,) = [d for d in os.listdir(snaps) if not d.startswith(".")]
    src = os.path.join(snaps, base)
    with open(os.path.join(src, "backup-metadata.json")) as f:
        meta_text = f.read()
    t0 = datetime.datetime.strptime(base, FMT)
    for i in range(1, count):
        stamp = (t0 - datetime.timedelta(hours=i)).strftime(FMT)
        dst = os.path.join(snaps, stamp)
        if os.path.exists(dst):
            continue
        subprocess.run(["cp", "-al", src, dst], check=True)
        mpath = os.path.join(dst, "backup-metadata.json")
        os.unlink(mpath)
        meta = json.loads(meta_text.replace(base, stamp))
        t = datetime.datetime.strptime(stamp, FMT)
        meta["created_at"] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(mpath, "w") as f:
            json.dump(meta, f, indent=2)


if __name__ == "__main__":
    main()
