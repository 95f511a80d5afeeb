#!/usr/bin/env bash
# Restore downtime with the real compose stack (demo override: the atocore STAND-IN as
# atocore), on a ~500 MiB database, db only and with chroma:
#
#   1. the stand-in's own restart: docker stop + docker start until /health answers 200
#      (what any restore must pay on top of its own work);
#   2. the one-call restore, POST /admin/restore on the sidecar: its `downtime_ms`
#      (atocore asked to stop -> healthy again), the gap an outside client saw on
#      atocore's /health (poll_health.py), and where the time goes (Docker events);
#   3. the old runbook's manual sequence on the same data and snapshots, timed the same
#      way: `docker-compose down`, `docker-compose run --rm restore-job restore <STAMP>
#      --confirm-service-stopped`, `docker-compose up -d` until /health answers 200.
#
#   bench/restore-downtime/run.sh
#   DB_MB=500 CHROMA_MB=256 REPS=3 bench/restore-downtime/run.sh
#
# Settings: DB_MB (500), CHROMA_MB (256: chroma files besides the stand-in's own), REPS
# (3 runs of each restore; medians and ranges are printed), BENCH_IMAGE_TAG (bench),
# BENCH_BUILD_PROFILE (release), BENCH_SKIP_BUILD=1 (use the tagged images as they are),
# KEEP=1 (keep bench/out/restore-downtime). Needs a Docker engine, docker-compose or the
# compose plugin, python3; run as root (the containers write files as root and 10001).
# Everything (containers, network, files) is removed at the end, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
here=$repo/bench/restore-downtime
db_mb=${DB_MB:-500}
chroma_mb=${CHROMA_MB:-256}
reps=${REPS:-3}
tag=${BENCH_IMAGE_TAG:-bench}
out=${BENCH_OUT:-$repo/bench/out/restore-downtime}
project=benchrd-$$
token=bench-token-$$-0123456789

if docker compose version >/dev/null 2>&1; then compose_cmd=(docker compose); else compose_cmd=(docker-compose); fi
"${compose_cmd[@]}" version >/dev/null
docker info >/dev/null

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  ATOCORE_IMAGE_TAG=$tag ATOCORE_BUILD_PROFILE=${BENCH_BUILD_PROFILE:-release} deploy/build-images.sh >&2
fi
for image in atocore-sidecar atocore-restore-job atocore-standin; do
  docker image inspect "$image:$tag" >/dev/null 2>&1 || { echo "bench: image $image:$tag is missing" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out/storage"
root=$out/storage
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
aport=$(free_port)
sport=$(free_port)
atocore=$project-atocore
job=$project-restore-job
sidecar=$project-sidecar
cat > "$out/bench.env" <<EOF
ATOCORE_HOST_ROOT=$root
ATOCORE_CONTAINER=$atocore
ATOCORE_RESTORE_CONTAINER=$job
ATOCORE_SIDECAR_CONTAINER=$sidecar
ATOCORE_BIND=127.0.0.1
ATOCORE_PORT=$aport
ATOCORE_SIDECAR_PORT=$sport
ATOCORE_SIDECAR_TOKEN=$token
ATOCORE_STANDIN_IMAGE=atocore-standin:$tag
ATOCORE_IMAGE=atocore-standin:$tag
ATOCORE_RESTORE_JOB_IMAGE=atocore-restore-job:$tag
ATOCORE_SIDECAR_IMAGE=atocore-sidecar:$tag
ATOCORE_LOG=info
EOF
# Hermetic: the caller's ATOCORE_*/COMPOSE_* variables would override the env file.
compose() {
  env $(env | sed -n 's/^\(\(ATOCORE\|COMPOSE\)_[A-Za-z0-9_]*\)=.*/-u \1/p') \
    "${compose_cmd[@]}" --env-file "$out/bench.env" -p "$project" \
    -f compose/docker-compose.yml -f compose/docker-compose.demo.yml -f "$here/no-schedule.yml" "$@"
}
cleanup() {
  local rc=$?
  touch "$out/stop-poll" 2>/dev/null || true
  compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
  for c in $(docker ps -aq --filter "label=com.docker.compose.project=$project"); do docker rm -f -v "$c" >/dev/null 2>&1 || true; done
  docker network rm "${project}_default" >/dev/null 2>&1 || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$out"; fi
  exit $rc
}
trap cleanup EXIT

A=http://127.0.0.1:$aport
S=http://127.0.0.1:$sport
H="Authorization: Bearer $token"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_200() { # until atocore's /health answers 200 (10 ms steps), at most 120 s
  for _ in $(seq 12000); do curl -fs -o /dev/null --max-time 1 "$A/health" && return; sleep 0.01; done
  echo "bench: atocore did not answer /health" >&2; compose logs --tail 50 >&2; exit 1
}
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%d", m}'; }
range() { sort -n | awk 'NR==1{lo=$1} {hi=$1} END {printf "%d-%d", lo, hi}'; }
stat_line() { # FILE: "median M ms (range)"
  printf 'median %s ms (%s, n=%s)' "$(median < "$1")" "$(range < "$1")" "$(wc -l < "$1")"
}
poll_start() { rm -f "$out/stop-poll"; python3 "$here/poll_health.py" "$A/health" "$out/poll.json" "$out/stop-poll" & poll_pid=$!; sleep 0.3; }
poll_stop() { touch "$out/stop-poll"; wait "$poll_pid"; python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))
gaps = [x["gap_ms"] for x in o["outages"] if x["gap_ms"] is not None]
assert o["still_down_since_ms"] is None, "atocore still down"
print(max(gaps) if gaps else 0)' "$out/poll.json"; }

# --- the stack and the data -----------------------------------------------------------
echo "compose: ${compose_cmd[*]} ($("${compose_cmd[@]}" version --short 2>/dev/null || true)); images :$tag; $(nproc) cores"
compose up -d >/dev/null 2>&1
wait_200
compose stop atocore >/dev/null 2>&1
echo "data: $(python3 "$here/make_data.py" "$root" "$db_mb" "$chroma_mb")"
compose up -d >/dev/null 2>&1
wait_200
for _ in $(seq 300); do [ "$(docker inspect -f '{{.State.Health.Status}}' "$sidecar")" = healthy ] && break; sleep 0.2; done

# --- 1. the stand-in's own restart ----------------------------------------------------
: > "$out/own-stop"; : > "$out/own-start"; : > "$out/own-total"
for _ in $(seq "$reps"); do
  t0=$(now_ms); docker stop -t 30 "$atocore" >/dev/null; t1=$(now_ms)
  docker start "$atocore" >/dev/null; wait_200; t2=$(now_ms)
  echo $((t1 - t0)) >> "$out/own-stop"; echo $((t2 - t1)) >> "$out/own-start"; echo $((t2 - t0)) >> "$out/own-total"
done
echo "1. the stand-in's own restart on this data (docker stop, docker start, until /health 200):"
echo "   stop $(stat_line "$out/own-stop"); start->200 $(stat_line "$out/own-start"); total $(stat_line "$out/own-total")"

# --- snapshots ------------------------------------------------------------------------
backup() {
  curl -fs -X POST -H "$H" -d "$1" "$S/admin/backup" > "$out/backup.json"
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["stamp"], m.get("duration_ms"))' "$out/backup.json"
}
read -r db_stamp db_backup_ms < <(backup '{"include_chroma": false}')
sleep 1.1 # distinct stamps (one per second)
read -r ch_stamp ch_backup_ms < <(backup '{"include_chroma": true}')
echo "   snapshots through the sidecar: db only $db_stamp ($db_backup_ms ms), with chroma $ch_stamp ($ch_backup_ms ms)"

# --- 2. the one-call restore ----------------------------------------------------------
orchestrated() { # LABEL BODY
  local label=$1 body=$2
  : > "$out/o-$label-down"; : > "$out/o-$label-ext"; : > "$out/o-$label-call"; : > "$out/o-$label-job"
  for i in $(seq "$reps"); do
    poll_start
    since=$(date +%s.%N)
    curl -s -X POST -H "$H" -d "$body" "$S/admin/restore" > "$out/restore.json"
    until=$(date +%s.%N)
    ext=$(poll_stop)
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r.get("healthy") and not r.get("rolled_back") and not r.get("error"), r
assert r["build_sha_before"] and r["build_sha_before"] == r["build_sha_after"], r
print(r["downtime_ms"], r["duration_ms"], r["restore_job_ms"], r["staged_ahead"])' "$out/restore.json" > "$out/r.txt"
    read -r down call jobms staged < "$out/r.txt"
    echo "$down" >> "$out/o-$label-down"; echo "$ext" >> "$out/o-$label-ext"
    echo "$call" >> "$out/o-$label-call"; echo "$jobms" >> "$out/o-$label-job"
    echo "   run $i: downtime_ms $down, outside gap $ext ms, restore job $jobms ms, staged ahead $staged, whole call $call ms;"
    echo "          $(python3 "$here/timeline.py" "$atocore" "$job" "$since" "$until" "$out/poll.json")"
  done
  echo "   => downtime_ms $(stat_line "$out/o-$label-down"); outside gap $(stat_line "$out/o-$label-ext"); whole call $(stat_line "$out/o-$label-call")"
}
echo "2. POST /admin/restore (validate + stage while atocore runs; downtime = stop, job, start, healthy):"
echo "   db only ($db_stamp, include_chroma false):"
orchestrated db "{\"stamp\": \"$db_stamp\", \"include_chroma\": false}"
echo "   with chroma ($ch_stamp):"
orchestrated chroma "{\"stamp\": \"$ch_stamp\"}"

# --- 3. the old runbook's manual sequence ---------------------------------------------
manual() { # LABEL STAMP
  local label=$1 stamp=$2
  : > "$out/m-$label-total"; : > "$out/m-$label-ext"
  for i in $(seq "$reps"); do
    poll_start
    t0=$(now_ms)
    compose down -t 30 >/dev/null 2>&1
    t1=$(now_ms)
    compose --profile restore run --rm -T restore-job restore "$stamp" --confirm-service-stopped > "$out/manual.json" 2>"$out/manual.err" \
      || { echo "bench: manual restore failed" >&2; cat "$out/manual.err" "$out/manual.json" >&2; exit 1; }
    t2=$(now_ms)
    compose up -d >/dev/null 2>&1
    t3=$(now_ms)
    wait_200
    t4=$(now_ms)
    ext=$(poll_stop)
    pre=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["restored_integrity_ok"], r; print(r.get("pre_restore_snapshot"))' "$out/manual.json")
    echo $((t4 - t0)) >> "$out/m-$label-total"; echo "$ext" >> "$out/m-$label-ext"
    echo "   run $i: down $((t1 - t0)) ms, run --rm restore $((t2 - t1)) ms (pre-restore snapshot $pre made inside), up -d $((t3 - t2)) ms, then /health 200 after $((t4 - t3)) ms: total $((t4 - t0)) ms, outside gap $ext ms"
  done
  echo "   => total $(stat_line "$out/m-$label-total"); outside gap $(stat_line "$out/m-$label-ext")"
}
echo "3. the old runbook by hand (down; run --rm restore-job restore STAMP --confirm-service-stopped; up -d; until /health 200):"
echo "   db only ($db_stamp):"
manual db "$db_stamp"
echo "   with chroma ($ch_stamp):"
manual chroma "$ch_stamp"
for _ in $(seq 300); do [ "$(docker inspect -f '{{.State.Health.Status}}' "$sidecar" 2>/dev/null)" = healthy ] && break; sleep 0.2; done
echo "snapshots now: $(curl -fs -H "$H" "$S/admin/backup" | python3 -c 'import json,sys; b=json.load(sys.stdin)["backups"]; print(len(b), "(", ", ".join(sorted({x["kind"] for x in b})), ")")')"
echo "disk used under $out: $(du -sh "$out" | cut -f1)"
