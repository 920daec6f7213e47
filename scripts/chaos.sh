#!/usr/bin/env bash
# Fault injection against real processes, for the shared store (docs/scaling.md): one
# nats-server with JetStream and N `connres serve` instances (`state.store: nats`,
# 32 partitions, a 2 s lease) on free loopback ports, driven by examples/chaos.rs (gateway,
# auth service and backend in one program, which records the wire and checks invariants;
# what it asserts is documented at the top of that file) while this script injects
# faults from a seeded schedule (`chaos schedule`): SIGKILL an instance and start a new
# one, SIGSTOP one for 1-2 leases then SIGCONT, SIGTERM one and start a new one, and
# restart nats-server (SIGTERM, same port, same JetStream store directory). Every fault
# is logged with a timestamp (faults.log, and in the driver's summary).
#
#   scripts/chaos.sh                  # short run: 20 s of traffic, a fault every 3-5 s
#                                     # (each kind at least once), about 45 s in all
#   SEED=7 scripts/chaos.sh           # another seed (default 1): same faults and traffic
#   DURATION=10m scripts/chaos.sh     # long run: a fault every 2-6 s (MIN_GAP, MAX_GAP)
#   N=5 CIDS=80 RATE=1500 KEEP=1 scripts/chaos.sh
#   FAULTS=0 N=1 scripts/chaos.sh     # a baseline: the same traffic, no faults
#   HISTORY=0 DURATION=1h ...         # no history.jsonl (about 25 MB a minute)
#   MAPPED=0 scripts/chaos.sh         # nats-server without the `connres mapping` block
#                                     # (default 1: reads routed to their owners)
#
# Exit 0 when no invariant is violated, 1 when one is (or an instance panicked), 2 when
# the run could not be made. On failure (or with KEEP=1) the temporary directory is kept
# and its path printed: every instance's log (connres-<slot>.<generation>.log),
# nats.log, faults.log, the config and history.jsonl (every message sent and received).
# Only black-box means are used (NATS traffic, processes, signals), so the run works on
# any version of connres that speaks the same protocol.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

SEED=${SEED:-1}
N=${N:-3}
CIDS=${CIDS:-40}
RATE=${RATE:-800}
LEASE=${LEASE:-2s}
if [ -n "${DURATION:-}" ]; then
  mode=long
  duration=$DURATION
  min_gap=${MIN_GAP:-2s}
  max_gap=${MAX_GAP:-6s}
else
  mode=short
  duration=20s
  min_gap=${MIN_GAP:-3s}
  max_gap=${MAX_GAP:-5s}
fi

nats_bin=$("$root/scripts/install-nats-server.sh")
# PROFILE=dev reuses what `cargo test` built (the test command runs it that way).
profile=${PROFILE:-release}
echo "building connres and the chaos driver ($profile)..." >&2
if [ "$profile" = release ]; then
  cargo_build --release --bin connres --example chaos
  dir=release
else
  cargo_build --bin connres --example chaos
  dir=debug
fi
target_dir=$(cargo_target_dir)
connres_bin="$target_dir/$dir/connres"
chaos_bin="$target_dir/$dir/examples/chaos"

work=$(mktemp -d "${TMPDIR:-/tmp}/connres-chaos.XXXXXX")
nats_pid=""
driver_pid=""
declare -a slot_pid=() slot_gen=()

# Whether a process this script started is still running (a zombie is not).
alive() {
  local state
  [ -n "$1" ] || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Waits up to MS milliseconds for PID to exit and reaps it; 1 if it is still running.
wait_exit() {
  local pid=$1 ms=$2 waited=0
  while alive "$pid"; do
    [ "$waited" -ge "$ms" ] && return 1
    sleep 0.05
    waited=$((waited + 50))
  done
  wait "$pid" 2>/dev/null || true
}

seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
now_ms() { date +%s%3N; }

cleanup() {
  local rc=$? s p
  trap - EXIT
  exec 3>&-
  if alive "$driver_pid"; then kill -TERM "$driver_pid" 2>/dev/null || true; fi
  [ -n "$driver_pid" ] && { wait "$driver_pid" 2>/dev/null || true; }
  for s in "${!slot_pid[@]}"; do
    p=${slot_pid[$s]}
    if alive "$p"; then
      kill -CONT "$p" 2>/dev/null || true
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  if alive "$nats_pid"; then kill -TERM "$nats_pid" 2>/dev/null || true; fi
  [ -n "$nats_pid" ] && { wait "$nats_pid" 2>/dev/null || true; }
  if [ "$rc" -ne 0 ] || [ "${KEEP:-0}" = 1 ]; then
    echo "chaos: logs, faults and history kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# A write to the driver's pipe after it exited must fail, not kill this script.
trap '' PIPE

# A fault or recovery step: to faults.log with the wall time, and to the driver, which
# logs it on its own clock.
note() {
  echo "$(date +%T.%3N) $*" >>"$work/faults.log"
  { echo "$*" >&3; } 2>/dev/null || true
}

start_nats() {
  # fd 3 (the driver's pipe) is closed in long-lived children: the driver sees the end
  # of the faults when this script closes it.
  "$nats_bin" -a 127.0.0.1 -p "$port" -js -sd "$work/js" -c "$work/nats.conf" \
    >>"$work/nats.log" 2>&1 </dev/null 3>&- &
  nats_pid=$!
  wait_port "$port" nats-server
}

start_instance() {
  local s=$1
  slot_gen[$s]=$((${slot_gen[$s]:-0} + 1))
  RUST_LOG=${RUST_LOG:-info} "$connres_bin" serve --config "$config" --nats "$url" \
    >"$work/connres-$s.${slot_gen[$s]}.log" 2>&1 </dev/null 3>&- &
  slot_pid[$s]=$!
}

# An instance found dead that this script did not stop: logged, and started again.
revive() {
  local s=$1 p=${slot_pid[$1]} rc=0
  alive "$p" && return 0
  wait "$p" 2>/dev/null || rc=$?
  note "crashed slot=$s pid=$p exit=$rc (see connres-$s.${slot_gen[$s]}.log)"
  start_instance "$s"
  note "start slot=$s pid=${slot_pid[$s]}"
}

port=$(free_port)
url="nats://127.0.0.1:$port"
config="$work/chaos.yaml"
"$chaos_bin" config --partitions 32 --lease "$LEASE" >"$config"
"$connres_bin" check "$config" >/dev/null
if [ "${MAPPED:-1}" = 1 ]; then
  "$connres_bin" mapping --config "$config" >"$work/nats.conf"
else
  : >"$work/nats.conf"
fi
schedule=$("$chaos_bin" schedule --seed "$SEED" --duration "$duration" --instances "$N" \
  --lease "$LEASE" --min-gap "$min_gap" --max-gap "$max_gap")
if [ "${FAULTS:-1}" = 0 ]; then # a baseline without faults
  schedule=$(echo "$schedule" | head -1)
fi
echo "$schedule" >"$work/schedule.txt"
echo "chaos: $mode run, seed $SEED, $N instances, traffic $duration, mapped requests ${MAPPED:-1}; work dir $work" >&2

start_nats
for s in $(seq 1 "$N"); do start_instance "$s"; done

mkfifo "$work/faults.fifo"
history=""
[ "${HISTORY:-1}" = 0 ] || history="$work/history.jsonl"
"$chaos_bin" run --nats "$url" --seed "$SEED" --duration "$duration" --cids "$CIDS" \
  --rate "$RATE" --lease "$LEASE" --faults "$work/faults.fifo" \
  --ready-file "$work/ready" ${history:+--history "$history"} </dev/null &
driver_pid=$!
# Read-write: opening does not wait for the reader, and what is written before it reads
# stays in the pipe.
exec 3<>"$work/faults.fifo"

# The fault clock starts with the traffic.
for _ in $(seq 1 2400); do
  [ -e "$work/ready" ] && break
  alive "$driver_pid" || break
  sleep 0.05
done
if [ ! -e "$work/ready" ]; then
  echo "chaos: the driver never started its traffic" >&2
  rc=0
  wait "$driver_pid" || rc=$?
  exit $((rc == 0 ? 2 : rc))
fi

t0=$(now_ms)
end_ms=0
while read -r -u 4 at kind slot param; do
  if [ "$at" = end ]; then
    end_ms=$kind
    continue
  fi
  alive "$driver_pid" || break
  now=$(($(now_ms) - t0))
  if [ "$now" -gt "$end_ms" ]; then
    note "skip $kind slot=$slot (the traffic is over)"
    continue
  fi
  [ "$at" -gt "$now" ] && sleep "$(seconds $((at - now)))"
  if [ "$kind" != nats ]; then revive "$slot"; fi
  case $kind in
    kill)
      p=${slot_pid[$slot]}
      kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
      note "kill slot=$slot pid=$p"
      sleep "$(seconds "$param")"
      start_instance "$slot"
      note "start slot=$slot pid=${slot_pid[$slot]}"
      ;;
    pause)
      p=${slot_pid[$slot]}
      kill -STOP "$p" 2>/dev/null || true
      note "stop slot=$slot pid=$p for ${param} ms"
      sleep "$(seconds "$param")"
      kill -CONT "$p" 2>/dev/null || true
      note "cont slot=$slot pid=$p"
      ;;
    term)
      p=${slot_pid[$slot]}
      t=$(now_ms)
      kill -TERM "$p" 2>/dev/null || true
      note "term slot=$slot pid=$p"
      if wait_exit "$p" 20000; then
        note "exited slot=$slot pid=$p after $(($(now_ms) - t)) ms"
      else
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
        note "term-timeout slot=$slot pid=$p: killed after 20 s"
      fi
      sleep "$(seconds "$param")"
      start_instance "$slot"
      note "start slot=$slot pid=${slot_pid[$slot]}"
      ;;
    nats)
      p=$nats_pid
      kill -TERM "$p" 2>/dev/null || true
      if ! wait_exit "$p" 20000; then
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
      fi
      note "nats-stop pid=$p"
      sleep "$(seconds "$param")"
      start_nats
      note "nats-start pid=$nats_pid after ${param} ms down"
      ;;
  esac
done 4<<<"$schedule"

# Every process up again, then the end of the faults for the driver.
if ! alive "$nats_pid"; then
  note "nats-restart (it had exited)"
  start_nats
fi
for s in $(seq 1 "$N"); do revive "$s"; done
note "faults over"
exec 3>&-

rc=0
wait "$driver_pid" || rc=$?
driver_pid=""
panicked=$(grep -l 'panicked' "$work"/connres-*.log 2>/dev/null || true)
if [ -n "$panicked" ]; then
  echo "chaos: an instance panicked: $panicked" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
