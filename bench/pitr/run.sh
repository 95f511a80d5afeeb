#!/usr/bin/env bash
# Benchmark of point-in-time recovery (not a test), one run, release build:
#
#   1. writer throughput (small rows, one transaction each, SECS seconds) with the WAL
#      streamer off, then on;
#      the same with a paced writer (1 ms pause after each commit, ~1k commits/s);
#   2. capture lag: time from a commit returning to the segment holding it being
#      written (segment header `captured_ms` minus the writer's own commit time,
#      commits matched to segments in order through the headers' `commits` counts);
#   3. restore to a moment (`restore --at T`) on a SIZE_MB database after DAY_COMMITS
#      small commits were captured, vs a plain snapshot restore of the same database;
#   4. the snapshot's database copy phase (metadata `copy_ms`): the default (copy under
#      a pinned read transaction) vs SQLite's backup API (ATOCORE_BACKUP_METHOD=
#      sqlite-backup) vs `cp` of the same file.
#
#   bench/pitr/run.sh                                  # SIZE_MB=500 SECS=20 DAY_COMMITS=100000
#   SIZE_MB=100 SECS=10 DAY_COMMITS=20000 bench/pitr/run.sh
#   BIN=/path/to/atocore-restore-job bench/pitr/run.sh # skip the build, use that binary
#
# Settings: SIZE_MB, SECS, DAY_COMMITS, POLL (streamer poll, 250ms = the CLI default),
# CHECKPOINT_FRAMES (1000 = the CLI default), BENCH_DIR (bench/out/pitr; removed and
# re-created), KEEP=1 keeps it afterwards. Needs python3 (stdlib sqlite3) and jq.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
size_mb="${SIZE_MB:-500}"
secs="${SECS:-20}"
day="${DAY_COMMITS:-100000}"
poll="${POLL:-250ms}"
cpf="${CHECKPOINT_FRAMES:-1000}"
work="${BENCH_DIR:-$repo/bench/out/pitr}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p atocore-restore-job --manifest-path "$repo/Cargo.toml"
fi
bin="${BIN:-$CARGO_TARGET_DIR/release/atocore-restore-job}"
unset ATOCORE_DB_PATH ATOCORE_REGISTRY_PATH ATOCORE_CHROMA_PATH ATOCORE_BACKUP_DIR ATOCORE_BACKUP_METHOD
export ATOCORE_LOG_FORMAT=json
rm -rf "$work"
mkdir -p "$work"
root="$work/storage"
db="$root/data/db/atocore.db"
wal="$root/backups/wal"
job() { "$bin" --storage-root "$root" "$@" 2>>"$work/job.log"; }
ms() { date +%s%3N; }
streamer_pid=""
writer_pid=""
cleanup() {
  [ -n "$writer_pid" ] && kill "$writer_pid" 2>/dev/null || true
  [ -n "$streamer_pid" ] && kill "$streamer_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

echo "== database: ${size_mb} MB WAL-mode" >&2
python3 "$repo/bench/restore-job/make_db.py" "$db" "$size_mb" >/dev/null
bytes=$(stat -c %s "$db")
cat "$db" >/dev/null # warm the page cache

echo "== 4. snapshot copy phase" >&2
t0=$(ms); cp "$db" "$work/cp.db"; t1=$(ms); rm -f "$work/cp.db"
cp_ms=$((t1 - t0))
copy_ms=$(job backup | jq .copy_ms)
sqlb_ms=$(ATOCORE_BACKUP_METHOD=sqlite-backup job backup | jq .copy_ms)
copy2_ms=$(job backup | jq .copy_ms)

echo "== 1. writer throughput, streaming off (${secs}s)" >&2
read -r off_n off_s off_rate < <(python3 "$here/writer.py" "$db" "$work/off.times" "$secs" | tail -n 1)

echo "== 1. paced writer (1 ms pause per commit), streaming off (${secs}s)" >&2
read -r poff_n poff_s poff_rate < <(WRITER_PAUSE_S=0.001 python3 "$here/writer.py" "$db" "$work/poff.times" "$secs" | tail -n 1)

echo "== 1+2. writer throughput, streaming on (${secs}s), capture lag" >&2
python3 "$here/writer.py" "$db" "$work/on.times" "$secs" "$work/go" > "$work/on.out" &
writer_pid=$!
until grep -q ready "$work/on.out" 2>/dev/null; do sleep 0.05; done
"$bin" --storage-root "$root" stream --poll "$poll" --checkpoint-frames "$cpf" > "$work/stream.json" 2>>"$work/job.log" &
streamer_pid=$!
until [ "$(job list | jq '.windows | length')" -gt 0 ]; do sleep 0.2; done
skip=$(python3 "$here/captured.py" "$wal")
touch "$work/go"
wait "$writer_pid"; writer_pid=""
read -r on_n on_s on_rate < <(tail -n 1 "$work/on.out")
sleep 2
read -r lag_n lag_p50 lag_p99 lag_max < <(python3 "$here/lag.py" "$wal" "$skip" "$work/on.times")

echo "== 1+2. paced writer, streaming on (${secs}s), capture lag" >&2
pskip=$(( $(python3 "$here/captured.py" "$wal") + 1 )) # + the writer's primer commit
read -r pon_n pon_s pon_rate < <(WRITER_PAUSE_S=0.001 python3 "$here/writer.py" "$db" "$work/pon.times" "$secs" | tail -n 1)
sleep 2
read -r plag_n plag_p50 plag_p99 plag_max < <(python3 "$here/lag.py" "$wal" "$pskip" "$work/pon.times")

echo "== 3. a day of WAL: ${day} commits captured" >&2
read -r day_n day_s day_rate < <(python3 "$here/writer.py" "$db" "$work/day.times" "-$day" | tail -n 1)
sleep 2
kill -TERM "$streamer_pid"; wait "$streamer_pid"; streamer_pid=""
stream_errors=$(jq .errors "$work/stream.json")
wal_bytes=$(du -sb "$wal" | cut -f1)
segments=$(find "$wal" -name '*.seg' | wc -l)
at=$(job list | jq -r '.windows[-1].to')
rows_expected=$(python3 -c "import sqlite3,sys; print(sqlite3.connect('file:$db?mode=ro', uri=True).execute('select count(*) from interactions').fetchone()[0])")

echo "== 3. restore --at $at" >&2
t0=$(ms)
job restore --at "$at" --confirm-service-stopped --no-pre-snapshot > "$work/pitr.json"
t1=$(ms)
pitr_ms=$((t1 - t0))
frames=$(jq .point_in_time.frames_replayed "$work/pitr.json")
replayed=$(jq .point_in_time.segments_replayed "$work/pitr.json")
rows_pitr=$(python3 -c "import sqlite3; print(sqlite3.connect('file:$db?mode=ro', uri=True).execute('select count(*) from interactions').fetchone()[0])")

echo "== 3. plain snapshot + restore" >&2
stamp=$(job backup | jq -r .stamp)
t0=$(ms)
job restore "$stamp" --confirm-service-stopped --no-pre-snapshot > "$work/plain.json"
t1=$(ms)
plain_ms=$((t1 - t0))

ratio() { python3 -c "print(f'{$1/max($2,1e-9):.2f}')"; }
cat <<TABLE

PITR benchmark ($(nproc) cores, $(uname -r); database ${bytes} bytes; streamer --poll ${poll} --checkpoint-frames ${cpf}; writer: python3 sqlite3, synchronous=NORMAL, one row per transaction)

| measure                                     | value |
|---------------------------------------------|-------|
| writer, streaming off                       | ${off_rate} commits/s (${off_n} in ${off_s} s) |
| writer, streaming on                        | ${on_rate} commits/s (${on_n} in ${on_s} s) |
| on / off                                    | $(ratio "$on_rate" "$off_rate")x (goal >= 0.9x) |
| capture lag p50 / p99 / max                 | ${lag_p50} / ${lag_p99} / ${lag_max} ms (${lag_n} commits matched) |
| paced writer (1 ms pause), streaming off    | ${poff_rate} commits/s (${poff_n} in ${poff_s} s) |
| paced writer (1 ms pause), streaming on     | ${pon_rate} commits/s (${pon_n} in ${pon_s} s); on/off $(ratio "$pon_rate" "$poff_rate")x |
| paced writer capture lag p50 / p99 / max    | ${plag_p50} / ${plag_p99} / ${plag_max} ms (${plag_n} commits matched) |
| day of WAL captured                         | ${day_n} commits at ${day_rate}/s + the above; ${segments} segments, ${wal_bytes} bytes on disk; streamer errors ${stream_errors} |
| restore --at (build point-in-time + restore)| ${pitr_ms} ms (${replayed} segments, ${frames} frames replayed; rows ${rows_pitr} of ${rows_expected} live at the end) |
| plain snapshot restore                      | ${plain_ms} ms |
| restore --at / plain                        | $(ratio "$pitr_ms" "$plain_ms")x |
| snapshot copy phase: copy at pin            | ${copy_ms} ms (again: ${copy2_ms} ms) |
| snapshot copy phase: sqlite backup API      | ${sqlb_ms} ms |
| cp of the same file                         | ${cp_ms} ms |
TABLE
