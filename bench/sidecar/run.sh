#!/usr/bin/env bash
# Benchmark of atocore-sidecar (not a test). Three numbers, release build, no Docker:
#   1. idle RSS of the sidecar (target: under 15 MB);
#   2. GET /admin/backup latency with 1,000 snapshots listed (target: p99 under 50 ms);
#   3. wrk load on GET /health while a backup of a large database runs (target: no errors);
#   4. when the images exist (deploy/build-images.sh): the orchestrated restore's downtime
#      on that database, db only and with chroma, next to the stand-in's own start time.
#      Images: BENCH_STANDIN_IMAGE (atocore-standin:local), BENCH_RESTORE_JOB_IMAGE
#      (atocore-restore-job:local); needs a Docker engine; skipped otherwise.
#
#   bench/sidecar/run.sh
#   ROWS=3000000 DURATION=20 bench/sidecar/run.sh   # bigger database, longer load
#
# Needs python3, curl and wrk (apt-get install -y wrk). Files go to bench/out/sidecar
# (gitignored) and are deleted at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out=${BENCH_OUT:-$root/bench/out/sidecar}
rows=${ROWS:-2000000}
duration=${DURATION:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
token=bench-token-0123456789
for tool in python3 curl wrk; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done

cargo build -q --release -p atocore-sidecar -p atocore-restore-job
side=$CARGO_TARGET_DIR/release/atocore-sidecar
job=$CARGO_TARGET_DIR/release/atocore-restore-job
rm -rf "$out"
mkdir -p "$out"
pids=()
containers=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  wait 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$out"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# start_sidecar ROOT [FLAGS...] -> sets $pid and $base
start_sidecar() {
  local port; port=$(free_port)
  local root=$1; shift
  local flags=("$@")
  [ "${#flags[@]}" -gt 0 ] || flags=(--docker-host unix:///nonexistent/docker.sock --atocore-url http://127.0.0.1:9)
  "$side" --storage-root "$root" --addr "127.0.0.1:$port" --token "$token" --no-schedule \
    "${flags[@]}" --log-format json 2>>"$out/sidecar.log" &
  pid=$!
  pids+=("$pid")
  base="http://127.0.0.1:$port"
  for _ in $(seq 100); do curl -fs "$base/health" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "bench: the sidecar did not start; see $out/sidecar.log" >&2
  exit 1
}

echo "binary: $side, $(stat -c %s "$side") bytes (release, lto, stripped)"

# --- 1 + 2: idle RSS, list latency with 1,000 snapshots -------------------------------
# The sidecar caches the listing until the snapshots folder changes (or 2 s pass), so the
# wrk numbers are mostly cache hits; list_cold.py measures every request uncached.
small=$out/small
python3 bench/sidecar/make_sample.py "$small" 1000 2 65536
"$job" --storage-root "$small" --log-format json backup >/dev/null 2>>"$out/job.log"
python3 bench/sidecar/fabricate.py "$small/backups/snapshots" 1000
n=$(ls "$small/backups/snapshots" | grep -vc '^\.')
start_sidecar "$small"
sleep 2
idle=$(rss_kb "$pid")
echo "1. idle RSS after start: $idle KiB ($(( idle / 1024 )) MiB; target < 15 MiB)"

list_bytes=$(curl -fs -H "Authorization: Bearer $token" "$base/admin/backup" | wc -c)
listed=$(curl -fs -H "Authorization: Bearer $token" "$base/admin/backup" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["backups"]))')
[ "$listed" = "$n" ] || { echo "bench: listed $listed of $n snapshots" >&2; exit 1; }
wrk -t1 -c1 -d"${duration}s" --latency -H "Authorization: Bearer $token" "$base/admin/backup" > "$out/wrk-list.txt"
p50=$(awk '/^ +50%/ {print $2}' "$out/wrk-list.txt")
p99=$(awk '/^ +99%/ {print $2}' "$out/wrk-list.txt")
rps=$(awk '/^Requests\/sec/ {print $2}' "$out/wrk-list.txt")
errs=$(grep -E "Non-2xx|Socket errors" "$out/wrk-list.txt" || true)
echo "2. GET /admin/backup, $listed snapshots, $list_bytes-byte body (target p99 < 50 ms):"
echo "   wrk, 1 connection, ${duration}s: p50 $p50, p99 $p99, $rps req/s ${errs:+[$errs]}"
echo "   uncached (folder mtime bumped before each request, every metadata file reread):"
echo "   $(python3 bench/sidecar/list_cold.py "$base" "$token" "$small/backups/snapshots" 200)"
echo "   RSS after the list load: $(rss_kb "$pid") KiB"
wrk -t2 -c8 -d"${duration}s" --latency -H "Authorization: Bearer $token" "$base/admin/backup" > "$out/wrk-list8.txt"
echo "   8 connections: p50 $(awk '/^ +50%/ {print $2}' "$out/wrk-list8.txt"), p99 $(awk '/^ +99%/ {print $2}' "$out/wrk-list8.txt"), $(awk '/^Requests\/sec/ {print $2}' "$out/wrk-list8.txt") req/s $(grep -E 'Non-2xx|Socket errors' "$out/wrk-list8.txt" || true)"
kill "$pid"; wait "$pid" 2>/dev/null || true

# --- 3: /health under load while a backup runs ----------------------------------------
big=$out/big
python3 bench/sidecar/make_sample.py "$big" "$rows" 16 $((4 << 20))
db_mb=$(( $(stat -c %s "$big/data/db/atocore.db") / 1048576 ))
start_sidecar "$big"
# The backup alone, for reference.
curl -fs -X POST -H "Authorization: Bearer $token" -d '{"include_chroma": true}' "$base/admin/backup" > "$out/backup-alone.json"
# Again, under load.
curl -s -o "$out/backup-loaded.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
  -d '{"include_chroma": true}' "$base/admin/backup" > "$out/backup-status.txt" &
bpid=$!
sleep 0.2
wrk -t2 -c32 -d"${duration}s" --latency "$base/health" > "$out/wrk-health.txt"
wait "$bpid"
status=$(cat "$out/backup-status.txt")
echo "3. GET /health with wrk (2 threads, 32 connections, ${duration}s) while a chroma backup of a ${db_mb} MiB database runs:"
echo "   $(awk '/^Requests\/sec/ {print $2}' "$out/wrk-health.txt") req/s, p50 $(awk '/^ +50%/ {print $2}' "$out/wrk-health.txt"), p99 $(awk '/^ +99%/ {print $2}' "$out/wrk-health.txt"), $(awk '/requests in/ {print $1}' "$out/wrk-health.txt") requests"
errors=$(grep -E "Non-2xx|Socket errors" "$out/wrk-health.txt" || true)
echo "   errors: ${errors:-none}"
timing() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("%s ms (copy %s + validate %s)" % (m.get("duration_ms"), m.get("copy_ms"), m.get("validate_ms")))' "$1"; }
echo "   backup: HTTP $status; alone $(timing "$out/backup-alone.json"); under load $(timing "$out/backup-loaded.json")"
echo "   RSS after: $(rss_kb "$pid") KiB"
[ "$status" = 200 ] && [ -z "$errors" ] || { echo "bench: errors under load" >&2; exit 1; }
kill "$pid"; wait "$pid" 2>/dev/null || true

# --- 4: orchestrated restore downtime on the same database ----------------------------
standin_image=${BENCH_STANDIN_IMAGE:-atocore-standin:local}
job_image=${BENCH_RESTORE_JOB_IMAGE:-atocore-restore-job:local}
if ! docker image inspect "$standin_image" >/dev/null 2>&1 || ! docker image inspect "$job_image" >/dev/null 2>&1; then
  echo "4. skipped: images $standin_image / $job_image not found (deploy/build-images.sh builds them)"
  exit 0
fi
aport=$(free_port)
atocore=bench-sidecar-atocore-$$
job=bench-sidecar-restore-job-$$
containers+=("$atocore" "$job")
docker run -d --name "$atocore" --user 0:0 --network host -e "ATOCORE_STORAGE_ROOT=$big" \
  -e "ATOCORE_LISTEN=127.0.0.1:$aport" -e ATOCORE_BUILD_SHA=bench -v "$big:$big" "$standin_image" serve >/dev/null
docker create --name "$job" --network none -e "ATOCORE_STORAGE_ROOT=$big" -v "$big:$big" "$job_image" init >/dev/null
wait_atocore() { for _ in $(seq 600); do curl -fs "http://127.0.0.1:$aport/health" >/dev/null 2>&1 && return; sleep 0.01; done; echo "bench: atocore did not come up" >&2; exit 1; }
wait_atocore
# The stand-in's own start time: docker start until /health answers (median of 3).
starts=()
for _ in 1 2 3; do
  docker stop -t 10 "$atocore" >/dev/null
  t0=$(date +%s%N); docker start "$atocore" >/dev/null; wait_atocore
  starts+=($(( ($(date +%s%N) - t0) / 1000000 )))
done
start_ms=$(printf '%s\n' "${starts[@]}" | sort -n | sed -n 2p)
stop0=$(date +%s%N); docker stop -t 10 "$atocore" >/dev/null; stop_ms=$(( ($(date +%s%N) - stop0) / 1000000 )); docker start "$atocore" >/dev/null; wait_atocore
start_sidecar "$big" --docker-host "${DOCKER_HOST:-unix:///var/run/docker.sock}" --container "$atocore" \
  --restore-container "$job" --atocore-url "http://127.0.0.1:$aport"
db_stamp=$(curl -fs -X POST -H "Authorization: Bearer $token" -d '{}' "$base/admin/backup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stamp"])')
ch_stamp=$(curl -fs -X POST -H "Authorization: Bearer $token" -d '{"include_chroma": true}' "$base/admin/backup" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stamp"])')
restore() {
  curl -s -X POST -H "Authorization: Bearer $token" -d "$1" "$base/admin/restore" > "$out/restore.json"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r.get("healthy") and not r.get("error"), r; print("downtime %s ms (restore job %s ms, staged ahead: %s), whole call %s ms, build_sha %s -> %s" % (r["downtime_ms"], r["restore_job_ms"], r["staged_ahead"], r["duration_ms"], r["build_sha_before"], r["build_sha_after"]))' "$out/restore.json"
}
echo "4. orchestrated restore of the ${db_mb} MiB database (stand-in as atocore: stop ${stop_ms} ms, start-to-healthy ${start_ms} ms):"
echo "   db only:     $(restore "{\"stamp\": \"$db_stamp\", \"include_chroma\": false}")"
echo "   with chroma: $(restore "{\"stamp\": \"$ch_stamp\"}")"
