#!/usr/bin/env bash
# Benchmark of the snapshot engine (not a test). Reports, in one run on a ~500 MB WAL
# database (warm page cache): `cp` of the file, Python's sqlite3 Connection.backup (what
# the old service used), and `atocore-restore-job backup` (its copy phase and its whole
# run), with a concurrent writer's commit latency during our backup; the restore of that
# snapshot (with and without the pre-restore snapshot). Then the chroma incremental
# snapshot after 1 of 40 files changed vs the full one (every file, linked or copied, is
# hashed from its bytes), and the disk both use.
#
#   bench/restore-job/run.sh            # SIZE_MB=500 by default
#   SIZE_MB=100 bench/restore-job/run.sh
#   BIN=/path/to/other/atocore-restore-job bench/restore-job/run.sh   # compare a build
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
size_mb="${SIZE_MB:-500}"
work="${BENCH_DIR:-$repo/bench/out/restore-job}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p atocore-restore-job --manifest-path "$repo/Cargo.toml"
fi
bin="${BIN:-$CARGO_TARGET_DIR/release/atocore-restore-job}"
mkdir -p "$work"
root="$work/storage"
db="$root/data/db/atocore.db"
ms() { date +%s%3N; }

echo "== database: ${size_mb} MB WAL" >&2
python3 "$here/make_db.py" "$db" "$size_mb" >/dev/null
rm -rf "$root/backups"
bytes=$(stat -c %s "$db")
cat "$db" > /dev/null # warm the cache

t0=$(ms); cp "$db" "$work/cp.db"; t1=$(ms); sync "$work/cp.db"; t2=$(ms)
cp_ms=$((t1 - t0)); cp_sync_ms=$((t2 - t0)); rm -f "$work/cp.db"

t0=$(ms); python3 "$here/py_backup.py" "$db" "$work/py.db"; t1=$(ms)
py_ms=$((t1 - t0)); rm -f "$work/py.db"

# Ours, with a steady writer committing next to it.
wout="$work/writer.out"
rm -f "$wout"
python3 "$here/writer.py" "$db" > "$wout" &
wpid=$!
until grep -q ready "$wout" 2>/dev/null; do sleep 0.1; done
sleep 1
t0=$(ms)
meta=$("$bin" --storage-root "$root" --log-format json backup 2>/dev/null)
t1=$(ms)
kill -TERM "$wpid"
wait "$wpid" || true
read -r commits worst p99 < <(tail -n 1 "$wout")
ours_total=$((t1 - t0))
copy_ms=$(echo "$meta" | python3 -c 'import json,sys; print(json.load(sys.stdin)["copy_ms"])')
validate_ms=$(echo "$meta" | python3 -c 'import json,sys; print(json.load(sys.stdin)["validate_ms"])')

# Ours again without the writer, for a like-for-like copy figure.
meta2=$("$bin" --storage-root "$root" --log-format json backup 2>/dev/null)
copy2_ms=$(echo "$meta2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["copy_ms"])')

ratio() { python3 -c "print(f'{$1/max($2,1):.2f}')"; }
echo
echo "database bytes:                 $bytes"
echo "cp (no fsync):                  ${cp_ms} ms"
echo "cp + sync:                      ${cp_sync_ms} ms"
echo "python sqlite3 backup:          ${py_ms} ms   ($(ratio $py_ms $cp_ms)x cp)"
echo "ours, copy phase, idle db:      ${copy2_ms} ms   ($(ratio $copy2_ms $cp_ms)x cp; the fsync overlaps with validation)"
echo "ours, copy phase, with writer:  ${copy_ms} ms   ($(ratio $copy_ms $cp_ms)x cp)"
echo "ours, validate phase (hash + integrity_check in parallel): ${validate_ms} ms"
echo "ours, whole command:            ${ours_total} ms"
echo "writer during our backup:       ${commits} commits, worst ${worst} ms, p99 ${p99} ms"

# Restore of the idle snapshot: with the pre-restore snapshot (the default) and without.
stamp2=$(echo "$meta2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stamp"])')
t0=$(ms); "$bin" --storage-root "$root" restore "$stamp2" --confirm-service-stopped >/dev/null 2>&1; t1=$(ms)
restore_ms=$((t1 - t0))
t0=$(ms); "$bin" --storage-root "$root" restore "$stamp2" --confirm-service-stopped --no-pre-snapshot >/dev/null 2>&1; t1=$(ms)
restore_nopre_ms=$((t1 - t0))
echo "ours, restore (with pre-restore snapshot): ${restore_ms} ms"
echo "ours, restore --no-pre-snapshot:           ${restore_nopre_ms} ms"

echo "== chroma: 40 files" >&2
croot="$work/chroma-storage"
rm -rf "$croot"
python3 "$here/make_db.py" "$croot/data/db/atocore.db" 1 >/dev/null
seg="$croot/data/chroma/3c5e0d1a-0000-4000-8000-000000000001"
mkdir -p "$seg"
for n in $(seq 1 40); do head -c $((5 * 1024 * 1024)) /dev/urandom > "$seg/file$n.bin"; done
sync
# Real chroma files were written long before a snapshot; files written within the
# timestamp margin of a scan are "racy" and are never linked from it (copied again).
sleep 3
t0=$(ms); full=$("$bin" --storage-root "$croot" backup --include-chroma 2>/dev/null); t1=$(ms)
full_ms=$((t1 - t0)); full_copy=$(echo "$full" | python3 -c 'import json,sys; print(json.load(sys.stdin)["copy_ms"])')
head -c $((5 * 1024 * 1024)) /dev/urandom > "$seg/file7.bin"
t0=$(ms); inc=$("$bin" --storage-root "$croot" backup --include-chroma 2>/dev/null); t1=$(ms)
inc_ms=$((t1 - t0)); inc_copy=$(echo "$inc" | python3 -c 'import json,sys; print(json.load(sys.stdin)["copy_ms"])')
linked=$(echo "$inc" | python3 -c 'import json,sys; print(json.load(sys.stdin)["chroma_linked_files"])')
du_both=$(du -sb "$croot/backups/snapshots" | cut -f1)
echo
echo "chroma full snapshot (200 MB):  ${full_ms} ms whole command, copy phase ${full_copy} ms"
echo "chroma after 1 of 40 changed:   ${inc_ms} ms whole command, copy phase ${inc_copy} ms, ${linked} files hard-linked"
echo "incremental / full:             $(ratio $inc_ms $full_ms)x (whole command), $(ratio $inc_copy $full_copy)x (copy phase)"
echo "disk used by both snapshots:    $du_both bytes (du counts hard links once)"
