#!/usr/bin/env bash
# Benchmark of off-site replication (not a test): `atocore-restore-job offsite push` and
# `offsite fetch` against restic (the tool an operator would pick instead: encrypted,
# deduplicated), both to the same local S3 server (moto, on loopback), on the same
# storage root: a ~575 MB WAL database and 40 x 8 MiB chroma files.
#
#   1. first push vs `restic backup` (time, bytes uploaded, requests for ours);
#   2. after 1 chroma file changed and ~1% new rows: second push vs restic's second backup;
#   3. fetch of the newest snapshot on an empty storage root vs `restic restore`;
#   4. peak RSS of our push, from the CLI and inside the sidecar (POST /admin/offsite/push
#      on a sidecar started from the same build, its VmHWM read from /proc);
#   5. `rclone copy` of the first snapshot's folder (plain, no dedup, no encryption):
#      the reference for raw transfer to the same server.
#
#   bench/offsite/run.sh                 # SIZE_MB=575 by default
#   SIZE_MB=100 bench/offsite/run.sh     # quicker
#
# Needs: moto in /opt/atocore-moto (what .ci/run installs), restic, rclone and age from
# Debian (apt-get install -y restic rclone age), python3, curl. Files go to bench/out/offsite
# (gitignored) and are deleted at the end unless KEEP=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
size_mb="${SIZE_MB:-575}"
work="${BENCH_DIR:-$repo/bench/out/offsite}"
moto="${ATOCORE_MOTO:-/opt/atocore-moto/bin/moto_server}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p atocore-restore-job -p atocore-sidecar --manifest-path "$repo/Cargo.toml"
fi
bin="${BIN:-$CARGO_TARGET_DIR/release/atocore-restore-job}"
sidecar_bin="${SIDECAR_BIN:-$(dirname "$bin")/atocore-sidecar}"
for tool in restic rclone age-keygen curl python3; do
  command -v "$tool" >/dev/null || { echo "bench/offsite: $tool is missing" >&2; exit 2; }
done
[ -x "$moto" ] || { echo "bench/offsite: no moto at $moto (see .ci/run)" >&2; exit 2; }

rm -rf "$work"; mkdir -p "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
for b in bench-ours bench-restic bench-rclone; do curl -s -X PUT "http://127.0.0.1:$port/$b" >/dev/null; done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
unset AWS_CA_BUNDLE || true
age-keygen -o "$work/key.txt" 2>/dev/null
export ATOCORE_OFFSITE_URL="s3://bench-ours/atocore"
ATOCORE_OFFSITE_RECIPIENTS="$(grep -o 'age1[0-9a-z]*' "$work/key.txt")"
export ATOCORE_OFFSITE_RECIPIENTS
export RESTIC_REPOSITORY="s3:http://127.0.0.1:$port/bench-restic/atocore" RESTIC_PASSWORD=bench
export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other \
  RCLONE_CONFIG_MOTO_ENDPOINT="http://127.0.0.1:$port" RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=bench \
  RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=bench RCLONE_CONFIG_MOTO_REGION=us-east-1
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
# Both tools start alike: the backup's writes on disk, the snapshot in the page cache.
settle() { sync; find "$1" -type f -exec cat {} + >/dev/null; }
settle "$dir1"

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
t0=$(ms); rclone copy "$dir1" moto:bench-rclone/atocore 2>/dev/null; t1=$(ms); rclone1=$((t1 - t0))

echo "== the same first push inside the sidecar (its peak RSS)" >&2
sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ATOCORE_STORAGE_ROOT="$root" ATOCORE_SIDECAR_ADDR="127.0.0.1:$sport" ATOCORE_SIDECAR_NO_SCHEDULE=true \
  DOCKER_HOST=unix:///nonexistent ATOCORE_URL=http://127.0.0.1:9 ATOCORE_OFFSITE_URL="s3://bench-ours/sidecar" \
  "$sidecar_bin" >"$work/sidecar.log" 2>&1 &
sidecar_pid=$!
trap 'kill $moto_pid $sidecar_pid 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$sport/health" && break; sleep 0.1; done
hwm() { awk '/VmHWM/ {print $2}' "/proc/$sidecar_pid/status"; }
sidecar_idle=$(hwm)
t0=$(ms); curl -sf -X POST "http://127.0.0.1:$sport/admin/offsite/push" >"$work/sidecar-push.json"; t1=$(ms); sidecar_ms=$((t1 - t0))
sidecar_peak=$(hwm)
kill "$sidecar_pid" 2>/dev/null || true

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
settle "$dir2"
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
echo "rclone copy (plain, no dedup) of the first snapshot: $rclone1 ms"
echo "peak RSS of our first push: CLI $(echo "$push1" | json 'd["peak_rss_kb"]') KiB; sidecar $sidecar_peak KiB (idle before: $sidecar_idle KiB; that push took $sidecar_ms ms)"
