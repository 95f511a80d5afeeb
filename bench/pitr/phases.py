#!/usr/bin/env python3
"""Where `atocore-restore-job restore --at T` spends its time, from an strace log.

  phases.py STRACE_LOG

The log is from `strace -f -tt -T -e trace=openat,rename,renameat,renameat2,fsync,
fdatasync,copy_file_range,unlink,mkdir,ftruncate,exit_group ...` (read/write are not
traced, so the overhead is small). Each phase ends at the first syscall after the
previous phase's end that matches its marker; a phase whose marker is missing prints
"?" and is folded into the next. Prints "phase ms" lines, then "total ms"."""
import re, sys
from datetime import datetime

# (phase, marker regex for the syscall that ENDS it): in restore --at's order.
PHASES = [
    ("start (exec, args, logging)", r'openat\(.*/backups/snapshots", O_RDONLY\|O_NONBLOCK'),
    ("plan (list bases, read segment headers)", r'openat\(.*/backups/\.lock"'),
    ("build: open base, make .partial", r'openat\(.*\.partial/db/atocore\.db", O_WRONLY\|O_CREAT\|O_TRUNC'),
    ("build: base copy (copy_file_range)", r'openat\(.*/wal/.*\.seg"'),
    ("build: replay segments (-wal writes + SQLite checkpoints, fsyncs)", r'unlink\(.*\.partial/db/atocore\.db-wal"(?!.*\n)'),
    ("build: integrity_check of the rebuilt db", r'openat\(.*\.partial/db/atocore\.db", O_RDONLY\|O_CLOEXEC\)'),
    ("build: fsync + sha256 of the rebuilt db (manifest hashing)", r'openat\(.*\.partial/\.tmp-'),
    ("build: write manifest + metadata, publish (renames, dir fsyncs)", r'openat\(.*/data/db/atocore\.db-shm", O_RDONLY'),
    ("restore: in-use check, lock, read metadata", r'openat\(.*/snapshots/[0-9TZ]+/db/atocore\.db", O_RDONLY\|O_NOFOLLOW'),
    ("restore: validate snapshot (integrity_check + sha256 in a thread)", r'mkdir\(.*/backups/restore"'),
    ("restore: write journal", r'openat\(.*\.atocore\.db\.restore-tmp", O_WRONLY\|O_CREAT\|O_EXCL'),
    ("restore: staging copy (copy + sha256 against manifest, fsync)", r'openat\(.*\.atocore\.db\.restore-tmp", O_RDONLY\|O_NOFOLLOW'),
    ("restore: integrity_check of the staged copy", r'mkdir\(.*/backups/restore"'),
    ("restore: set aside live db + swap (renames, fsyncs)", r'rename\(.*\.restore-tmp", ".*/atocore\.db"\)'),
    ("restore: verify swapped inode + clean up journal", r'unlink\(.*/backups/restore/journal\.json"'),
    ("finalize: remove aside copy (--no-pre-snapshot)", r'unlink\(.*/backups/restore/aside\.json"'),
    ("exit (print JSON)", r'(exit_group|\+\+\+ exited)'),
]

def ts(line):
    m = re.match(r"\s*(?:\d+\s+)?(\d\d):(\d\d):(\d\d\.\d+)", line)
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None

lines = [l for l in open(sys.argv[1]) if ts(l) is not None]
t_prev = ts(lines[0])
t_first = t_prev
i = 0
pending = 0.0
for name, pat in PHASES:
    # The replay ends at the LAST unlink of the .partial -wal before the integrity check.
    if name.startswith("build: replay"):
        rx = re.compile(r'unlink\(.*\.partial/db/atocore\.db-wal"')
        stop = re.compile(r'openat\(.*\.partial/db/atocore\.db", O_RDONLY\|O_NOFOLLOW')
        j, last = i, None
        while j < len(lines) and not stop.search(lines[j]):
            if rx.search(lines[j]):
                last = j
            j += 1
        hit = last
    else:
        rx = re.compile(pat)
        hit = next((j for j in range(i, len(lines)) if rx.search(lines[j])), None)
    if hit is None:
        print(f"{name}\t?")
        continue
    t = ts(lines[hit])
    print(f"{name}\t{(t - t_prev) * 1000:.0f}")
    t_prev, i = t, hit + 1
print(f"total\t{(t_prev - t_first) * 1000:.0f}")
