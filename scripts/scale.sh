#!/usr/bin/env bash
# Scale the Docker-less pipeline on this host (docs/scaling.md):
#
#   scripts/scale.sh pattern_engine N   # N pattern engines, engine i owning shards i, i+N, i+2N, ... of
#                                       # AITRADER_SHARDS (which must be >= N and the same for every process)
#   scripts/scale.sh pattern_engine N --standby
#                                       # the same, each engine with a standby twin on its shards' consumer
#                                       # group (AITRADER_PE_STANDBY: the lease holder reads, the twin takes
#                                       # over within AITRADER_PE_LEASE_MS when it dies or stops)
#   scripts/scale.sh worker N           # N job workers (more processes on the same queue)
#   scripts/scale.sh status             # what runs: each extra instance, its shards and /metrics port
#
# Engines never read a shard together: an engine keeps each symbol's features in memory, so a symbol's ticks
# must all reach the same engine (a standby twin reads only once it holds the lease). Rescaling pattern engines restarts them (features warm up again);
# each keeps a stable consumer name (<host>-pe<i>), and entries an engine left pending are read again
# by the next owner of their shard (claimed after AITRADER_CLAIM_IDLE_MS). Extra instances have pid
# files <service>@<i>.pid; scripts/stop_pipeline.sh stops them with the rest.
set -euo pipefail
. "$(dirname "$0")/_lib.sh"
HOST="${AITRADER_INSTANCE:-$(hostname)}"

pidfile() { if [ "$2" -eq 0 ]; then echo "$AITRADER_HOME/pids/$1.pid"; else echo "$AITRADER_HOME/pids/$1@$2.pid"; fi; }
next_free_port() { local p="$1"; while port_busy "$p" && [ "$p" -lt $(($1 + 200)) ]; do p=$((p + 1)); done; echo "$p"; }
start_one() {  # SERVICE INDEX: start it with the variables already exported, wait until it is healthy
  local svc="$1" i="$2" f log_file
  f="$(pidfile "$svc" "$i")"
  log_file="$AITRADER_HOME/logs/$svc$([ "$i" -eq 0 ] || echo "@$i").log"
  nohup "$AITRADER_PYTHON" -m "$svc" >>"$log_file" 2>&1 &
  echo $! >"$f"
  env | grep -E '^AITRADER_(INSTANCE|PE_SHARDS|PE_STANDBY|PE_METRICS_PORT|JOBS_METRICS_PORT)=' >"${f%.pid}.env" || true
  local check=("$AITRADER_PYTHON" -m "$svc" --check)
  [ "$svc" = backend.jobs.worker ] || check+=(--self)
  for _ in $(seq 1 "${AITRADER_START_TIMEOUT:-60}"); do
    if "${check[@]}" >/dev/null 2>&1; then log "$svc #$i healthy (pid $(cat "$f"), ${AITRADER_INSTANCE:-$(hostname)}, log $log_file)"; return; fi
    pid_alive "$f" || { tail -n 30 "$log_file" >&2 || true; die "$svc #$i exited during start (see $log_file)"; }
    sleep 1
  done
  die "$svc #$i not healthy in time (see $log_file)"
}
running_indexes() {  # SERVICE: indexes with a live pid file
  local svc="$1" f i
  pid_alive "$AITRADER_HOME/pids/$svc.pid" && echo 0
  for f in "$AITRADER_HOME/pids/$svc@"*.pid; do
    [ -e "$f" ] || continue
    i="${f##*@}"; i="${i%.pid}"
    if pid_alive "$f"; then echo "$i"; else rm -f "$f" "${f%.pid}.env"; fi
  done
}
need_n() { [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] || die "N must be a number >= 1"; }

case "${1:-}" in
  pattern_engine|pattern-engines)
    n="${2:-}"; need_n "$n"
    standby=0
    case "${3:-}" in --standby) standby=1 ;; "") ;; *) die "unknown option ${3}: --standby or nothing" ;; esac
    total="${AITRADER_SHARDS:-1}"
    [ "$n" -le "$total" ] || die "$n engines but AITRADER_SHARDS=$total: each engine needs a shard of its own \
(set AITRADER_SHARDS >= $n for every process, then restart the pipeline: scripts/stop_pipeline.sh --keep-redis && scripts/start_pipeline.sh)"
    for i in $(running_indexes pattern_engine | sort -rn); do stop_pidfile "$(pidfile pattern_engine "$i")" "pattern_engine #$i" || true; done
    base="$AITRADER_PE_METRICS_PORT"
    if [ "$standby" = 1 ]; then export AITRADER_PE_STANDBY=true; else export AITRADER_PE_STANDBY=false; fi
    for ((j = 0; j < n * (1 + standby); j++)); do
      i=$((j % n))  # engine j >= n is engine i's standby twin: the same shards
      shards=""
      for ((s = i; s < total; s += n)); do shards="${shards:+$shards,}$s"; done
      if [ "$n" -eq 1 ]; then export AITRADER_PE_SHARDS=all; else export AITRADER_PE_SHARDS="$shards"; fi
      if [ "$j" -ge "$n" ]; then export AITRADER_INSTANCE="$HOST-pe$i-b"
      elif [ "$n" -gt 1 ]; then export AITRADER_INSTANCE="$HOST-pe$i"; fi
      if [ "$base" != 0 ]; then export AITRADER_PE_METRICS_PORT="$(next_free_port $((base + j)))"; fi
      start_one pattern_engine "$j"
      log "pattern_engine #$j: shards $AITRADER_PE_SHARDS$([ "$j" -ge "$n" ] && echo ", standby of #$i"), metrics port $AITRADER_PE_METRICS_PORT"
    done
    ;;
  worker|workers)
    n="${2:-}"; need_n "$n"
    have="$(running_indexes backend.jobs.worker | tr '\n' ' ')"
    for i in $have; do
      if [ "$i" -ge "$n" ]; then stop_pidfile "$(pidfile backend.jobs.worker "$i")" "backend.jobs.worker #$i" || true; fi
    done
    base="$AITRADER_JOBS_METRICS_PORT"
    for ((i = 0; i < n; i++)); do
      case " $have " in *" $i "*) continue ;; esac
      if [ "$i" -gt 0 ]; then export AITRADER_INSTANCE="$HOST-w$i"; fi
      if [ "$base" != 0 ]; then export AITRADER_JOBS_METRICS_PORT="$(next_free_port $((base + i)))"; fi
      start_one backend.jobs.worker "$i"
    done
    log "$n job worker(s) running"
    ;;
  status)
    for svc in pattern_engine backend.jobs.worker; do
      for i in $(running_indexes "$svc" | sort -n); do
        f="$(pidfile "$svc" "$i")"
        echo "$svc #$i pid $(cat "$f") $(tr '\n' ' ' <"${f%.pid}.env" 2>/dev/null || true)"
      done
    done
    ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
