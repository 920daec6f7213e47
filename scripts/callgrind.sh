#!/usr/bin/env bash
# Instructions per request, connres against the bare responder, counted by
# `valgrind --tool=callgrind` (deterministic: repeatable whatever else the machine does).
# Each target runs under callgrind on one throwaway nats-server; for each kind the load
# generator sends a warm-up, then two measured loads of N1 and N2 requests, each between
# a `callgrind_control --zero` and a `--dump`. Instructions per request is
# (I(N2) - I(N1)) / (N2 - N1): what every request costs, with the fixed cost of a load
# (connecting, priming tokens, readiness) cancelled out. Whole process, all threads.
#
#   scripts/callgrind.sh
#   N1=2000 N2=12000 CONC=16 KINDS="get access set" scripts/callgrind.sh
#   BIN=/path/to/other/connres scripts/callgrind.sh      # a build to compare with
#   KEEP=/tmp/cg scripts/callgrind.sh                     # keep the dumps (callgrind_annotate)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

N1=${N1:-2000}
N2=${N2:-12000}
CONC=${CONC:-16}
CIDS=${CIDS:-1000}
KINDS=${KINDS:-"get-anon get access set"}
TARGETS=${TARGETS:-"bare connres"}

nats_bin=$("$root/scripts/install-nats-server.sh")
[ -n "${NO_BUILD:-}" ] || {
  echo "building connres and the load generator (release)..." >&2
  cargo_build --release --bin connres --example bench
}
target_dir=${TARGET_DIR:-$(cargo_target_dir)}
connres_bin=${BIN:-"$target_dir/release/connres"}
bench_bin="$target_dir/release/examples/bench"

work=$(mktemp -d)
nats_pid=""
server_pid=""
cleanup() {
  local rc=$?
  stop_pid "$server_pid"
  stop_pid "$nats_pid"
  if [ "$rc" -ne 0 ]; then
    tail_logs "$work"
  fi
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/cg.* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(free_port)
url="nats://127.0.0.1:$port"
"$nats_bin" -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 &
nats_pid=$!
wait_port "$port" nats-server

load() { # kind requests warmup
  "$bench_bin" load --nats "$url" --target "$target" --kind "$1" --concurrency "$CONC" \
    --requests "$2" --warmup "$3" --cids "$CIDS" --max-secs 600 --timeout-secs 30 >/dev/null 2>>"$work/load.log"
}
# The total instructions of the newest dump.
dumped() {
  local f
  f=$(ls -t "$work"/cg.out.* | head -1)
  grep -m1 '^summary:' "$f" | awk '{print $2}'
}

for target in $TARGETS; do
  case $target in
    bare) cmd=("$bench_bin" bare --nats "$url") ;;
    connres) cmd=("$connres_bin" serve --config "$root/resources.yaml" --nats "$url") ;;
  esac
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg.out.%p" \
    "${cmd[@]}" >"$work/$target.log" 2>&1 &
  server_pid=$!
  for kind in $KINDS; do
    load "$kind" 500 2000 # readiness, tokens primed, warm
    counts=()
    for n in "$N1" "$N2"; do
      callgrind_control --zero "$server_pid" >/dev/null 2>&1
      load "$kind" "$n" 0
      callgrind_control --dump="$target-$kind-$n" "$server_pid" >/dev/null 2>&1
      counts+=("$(dumped)")
    done
    per=$(python3 -c "import sys; a,b,n1,n2=map(int,sys.argv[1:]); print(f'{(b-a)/(n2-n1):.0f}')" \
      "${counts[0]}" "${counts[1]}" "$N1" "$N2")
    echo "CALLGRIND target=$target kind=$kind conc=$CONC instr_per_req=$per i_n1=${counts[0]} i_n2=${counts[1]}"
  done
  stop_pid "$server_pid"
  server_pid=""
done
