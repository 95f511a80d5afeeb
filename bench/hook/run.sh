#!/usr/bin/env bash
# Benchmark of atocore-capture (not a test): wall time per hook run on generated transcripts
# of 1 MB, 100 MB and 1 GB whose last prompt starts about 1 MB before the end, next to the
# time `wc -l` takes to read the same file once; peak RSS; release binary size.
#
#   bench/hook/run.sh                 # all three sizes
#   SIZES="1M 100M" bench/hook/run.sh # some
#   KEEP=1 bench/hook/run.sh          # keep the generated files (default: deleted at the end)
#
# Needs python3, hyperfine (apt install hyperfine) and GNU time (apt install time).
# Files go to bench/out/hook (gitignored). The page cache is warm (each file is read once
# by `wc -l` before anything is timed): this measures the hook's own work, not the disk.
#
# Modes timed per file:
#   extract  - `atocore-capture extract FILE`: the transcript scan alone
#   repeat   - the hook on a turn already captured (ledger hit): scan + ledger + empty outbox
#   capture  - the hook capturing anew each run (state dir wiped before each run): scan,
#              outbox file written and fsynced, ledger, POST to a loopback sink, unlink
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out=${BENCH_OUT:-$root/bench/out/hook}
sizes=${SIZES:-"1M 100M 1G"}
runs=${RUNS:-30}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$out"

for tool in python3 hyperfine /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt install hyperfine time python3)" >&2; exit 1; }
done

cargo build -q -p atocore-capture --release
bin=$CARGO_TARGET_DIR/release/atocore-capture

python3 bench/hook/sink.py > "$out/sink.port" &
sink=$!
cleanup() {
  kill "$sink" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then rm -f "$out"/t-*.jsonl "$out"/t-*.stdin.json; fi
}
trap cleanup EXIT
for _ in $(seq 50); do [ -s "$out/sink.port" ] && break; sleep 0.1; done
export ATOCORE_URL="http://127.0.0.1:$(cat "$out/sink.port")"
unset ATOCORE_CAPTURE_DISABLED ATOCORE_PROJECT

# Median of the runs (the machine is shared: the median is what a quiet run takes; the mean
# is printed beside it to show the noise).
mean_ms() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.2f %.2f" % (r["median"]*1000, r["mean"]*1000))' "$1"; }
max_rss_kb() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}'; }

printf '%s\n' "binary: $bin, $(stat -c %s "$bin") bytes (release, lto, stripped)"
echo "times: median ms of $runs runs (ratio to one wc -l of the file) [mean ms]; warm page cache"
printf '%-6s %-12s %-10s %-28s %-28s %-28s %-8s %-s\n' size bytes "wc -l ms" "extract" "repeat" "capture" "RSS KiB" "(RSS: extract/repeat/capture)"
for size in $sizes; do
  t=$out/t-$size.jsonl
  python3 bench/hook/gen_transcript.py "$t" "$size" --tail 1M >/dev/null
  bytes=$(stat -c %s "$t")
  wc -l "$t" >/dev/null   # warm the page cache
  hyperfine -N -w 1 -r 5 --export-json "$out/wc.json" "wc -l $t" >/dev/null 2>&1
  read -r wc_ms wc_mean < <(mean_ms "$out/wc.json")

  hyperfine -N -w 3 -r "$runs" --export-json "$out/extract.json" "$bin extract $t" >/dev/null 2>&1
  read -r ex_ms ex_mean < <(mean_ms "$out/extract.json")

  state=$out/state-repeat
  rm -rf "$state"
  ATOCORE_CAPTURE_DIR=$state "$bin" < "$t.stdin.json" 2>/dev/null  # first run captures; the timed ones repeat
  hyperfine -w 3 -r "$runs" --export-json "$out/repeat.json" \
    "ATOCORE_CAPTURE_DIR=$state $bin < $t.stdin.json" >/dev/null 2>&1
  read -r rep_ms rep_mean < <(mean_ms "$out/repeat.json")

  state2=$out/state-capture
  hyperfine -w 3 -r "$runs" --prepare "rm -rf $state2" --export-json "$out/capture.json" \
    "ATOCORE_CAPTURE_DIR=$state2 $bin < $t.stdin.json" >/dev/null 2>&1
  read -r cap_ms cap_mean < <(mean_ms "$out/capture.json")
  pending=$(ls "$state2/outbox" | wc -l)
  [ "$pending" = 0 ] || echo "bench: $pending capture(s) not delivered to the sink" >&2

  rss_ex=$(max_rss_kb "$bin" extract "$t")
  rss_rep=$(ATOCORE_CAPTURE_DIR=$state max_rss_kb sh -c "exec $bin < $t.stdin.json 2>/dev/null")
  rm -rf "$state2"
  rss_cap=$(ATOCORE_CAPTURE_DIR=$state2 max_rss_kb sh -c "exec $bin < $t.stdin.json 2>/dev/null")

  ratio() { python3 -c "print('%.4f' % ($1/$wc_ms))"; }
  printf '%-6s %-12s %-10s %-28s %-28s %-28s %-8s %s\n' "$size" "$bytes" "$wc_ms" \
    "$ex_ms ($(ratio "$ex_ms")x) [$ex_mean]" "$rep_ms ($(ratio "$rep_ms")x) [$rep_mean]" "$cap_ms ($(ratio "$cap_ms")x) [$cap_mean]" \
    "$(printf '%s\n' "$rss_ex" "$rss_rep" "$rss_cap" | sort -n | tail -1)" "$rss_ex/$rss_rep/$rss_cap"
  rm -rf "$state" "$state2"
  [ -n "${KEEP:-}" ] || rm -f "$t" "$t.stdin.json"
done
