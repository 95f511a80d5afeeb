#!/usr/bin/env bash
# Benchmark of off-site replication (not a test): `atocore-restore-job offsite push` and
# `offsite fetch` against restic (the tool an operator would pick instead: encrypted,
# deduplicated), both to the same local S3 server (moto, on loopback), on the same
# storage root: a ~575 MB WAL database and 40 x 8 MiB chroma files.
#
#   1. first push vs `restic backup` (time, bytes uploaded, requests for ours);
#   2. after 1 chroma file changed and ~1% new rows: second push vs restic's second backup;
#   3. fetch of the newest snapshot on an empty storage root vs `restic restore`;
#   4. peak RSS of our push.
#
#   bench/offsite/run.sh                 # SIZE_MB=575 by default
#   SIZE_MB=100 bench/offsite/run.sh     # quicker
#
# Needs: moto in /opt/atocore-moto (what .ci/run installs), restic and age from Debian
# (apt-get install -y restic age), python3, curl. Files go to bench/out/offsite
# (gitignored) and are deleted at the end unless KEEP=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
size_mb="${SIZE_MB:-575}"
work="${BENCH_DIR:-$repo/bench/out/offsite}"
moto="${ATOCORE_MOTO:-/opt/atocore-moto/bin/moto_server}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p atocore-restore-job --manifest-path "$repo/Cargo.toml"
fi
bin="${BIN:-$CARGO_TARGET_DIR/release/atocore-restore-job}"
for tool in restic age-keygen curl python3; do
  command -v "$tool" >/dev/null || { echo "bench/offsite: $tool is missing" >&2; exit 2; }
done
[ -x "$moto" ] || { echo "bench/offsite: no moto at $moto (see .ci/run)" >&2; exit 2; }

rm -rf "$work"; mkdir -p "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
for b in bench-ours bench-restic; do curl -s -X PUT "http://127.0.0.1:$port/$b" >/dev/null; done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
unset AWS_CA_BUNDLE || true
age-keygen -o "$work/key.txt" 2>/dev/null
export ATOCORE_OFFSITE_URL="s3://bench-ours/atocore"
ATOCORE_OFFSITE_RECIPIENTS="$(grep -o 'age1[0-9a-z]*' "$work/key.txt")"
export ATOCORE_OFFSITE_RECIPIENTS
export RESTIC_REPOSITORY="s3:http://127.0.0.1:$port/bench-restic/atocore" RESTIC_PASSWORD=bench
ms() { date +%s%3N; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "== storage root: ${size_mb} MB database, 40 x 8 MiB chroma" >&2
root="$work/storage"
python3 "$repo/bench/restore-job/make_db.py" "$root/data/db/atocore.db" "$size_mb" >/dev/null
seg="$root/data/chroma/3c5e0d1a-0000-4000-8000-000000000001"
mkdir -p "$seg" "$root/config"
for n in $(seq 1 40); do head -c $((8 * 1024 * 1024)) /dev/urandom >"$seg/file$n.bin"; done
echo '{"projects": []}' >"$root/config/project-registry.json"
sleep 3 # settled files (see the racy-clean rule)
snap1=$("$bin" --storage-root "$root" backup --include-chroma 2>/dev/null | json 'd["stamp"]')
dir1="$root/backups/snapshots/$snap1"

restic init >/dev/null 2>&1

echo "== first push / first restic backup" >&2
t0=$(ms)
push1=$(python3 - "$bin" "$root" <<'PY'
import json, resource, subprocess, sys
p = subprocess.run([sys.argv[1], "--storage-root", sys.argv[2], "offsite", "push"], capture_output=True, text=True)
if p.returncode != 0:
    sys.stderr.write(p.stdout + p.stderr); sys.exit(1)
d = json.loads(p.stdout)
d["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps(d))
PY
)
t1=$(ms); ours1=$((t1 - t0))
t0=$(ms); r1=$(cd "$dir1" && restic backup --json . 2>/dev/null | tail -n 1); t1=$(ms); restic1=$((t1 - t0))

echo "== one chroma file changed, ~1% new rows" >&2
head -c $((8 * 1024 * 1024)) /dev/urandom >"$seg/file7.bin"
python3 - "$root/data/db/atocore.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
n = c.execute("SELECT count(*) FROM memories").fetchone()[0]
blob = ("new memory " * 40)[:480]
with c:
    c.executemany("INSERT INTO memories (memory_type, content, project, confidence, created_at) VALUES ('episodic', ?, 'bench', 0.5, datetime('now'))",
                  ((f"{blob} {i}",) for i in range(max(1, n // 100))))
c.close()
PY
sleep 3
snap2=$("$bin" --storage-root "$root" backup --include-chroma 2>/dev/null | json 'd["stamp"]')
dir2="$root/backups/snapshots/$snap2"
t0=$(ms); push2=$("$bin" --storage-root "$root" offsite push 2>/dev/null); t1=$(ms); ours2=$((t1 - t0))
t0=$(ms); r2=$(cd "$dir2" && restic backup --json . 2>/dev/null | tail -n 1); t1=$(ms); restic2=$((t1 - t0))

echo "== fetch onto an empty host / restic restore" >&2
fresh="$work/new-host"
mkdir -p "$fresh"
t0=$(ms); "$bin" --storage-root "$fresh" offsite fetch latest --identity "$work/key.txt" >/dev/null 2>&1; t1=$(ms); fetch_ms=$((t1 - t0))
t0=$(ms); restic restore latest --target "$work/restic-restore" >/dev/null 2>&1; t1=$(ms); rrestore=$((t1 - t0))
fetched_ok=$("$bin" --storage-root "$fresh" validate "$snap2" 2>/dev/null | json 'd["valid"]')

bytes_of() { json 'sum(p["bytes_written"] for p in d["pushed"])'; }
reqs_of() { json 'd["requests"]'; }
echo
echo "storage root: $(du -sb "$dir1" | cut -f1) bytes in the first snapshot"
echo "first push:        ours $ours1 ms, $(echo "$push1" | bytes_of) bytes written, requests $(echo "$push1" | reqs_of)"
echo "                   restic $restic1 ms, $(echo "$r1" | json 'd.get("data_added")') bytes added"
echo "second push:       ours $ours2 ms, $(echo "$push2" | bytes_of) bytes written, requests $(echo "$push2" | reqs_of)"
echo "                   restic $restic2 ms, $(echo "$r2" | json 'd.get("data_added")') bytes added"
echo "fetch vs restore:  ours $fetch_ms ms (fetched snapshot valid: $fetched_ok), restic restore $rrestore ms"
echo "peak RSS of our first push: $(echo "$push1" | json 'd["peak_rss_kb"]') KiB"
