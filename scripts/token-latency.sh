#!/usr/bin/env bash
# Token event -> change event latency (issue #11: p99 <= 1 ms at 10,000 events/s), on one
# throwaway nats-server on a free loopback port and `connres serve` on the shipped
# resources.yaml. Each run starts connres afresh, makes CIDS connections' user models
# known to it (a token event, then a get), publishes token events at a paced RATE per
# second for SECS seconds (alternating between two tokens, so every event changes the
# model) and times each one to its `event.session.user.<cid>.change`
# (`examples/bench.rs token-latency`). The yardstick runs the same way in each run
# beside it: the bare responder relaying each token event as a fixed change event
# (`bench bare --relay-tokens`), so the figures separate what connres adds from what
# the machine, nats-server and the clients cost. Prints one TOKEN_LATENCY line per run
# and target, and the medians over the runs.
#
#   scripts/token-latency.sh
#   RATE=10000 SECS=10 CIDS=1000 RUNS=5 scripts/token-latency.sh
#   BIN=/path/to/other/connres scripts/token-latency.sh   # another build
#   BASE_BIN=/tmp/old/connres scripts/token-latency.sh    # also an older build, as `base`
#   TARGETS=connres scripts/token-latency.sh             # without the yardstick
#   JETSTREAM=1 CONFIG=shared.yaml scripts/token-latency.sh # a config on the shared store
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

CONFIG=${CONFIG:-$root/resources.yaml}
RATE=${RATE:-10000}
SECS=${SECS:-5}
CIDS=${CIDS:-1000}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2000}
TARGETS=${TARGETS:-"bare connres${BASE_BIN:+ base}"}

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
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(free_port)
url="nats://127.0.0.1:$port"
js=()
[ -n "${JETSTREAM:-}" ] && js=(-js -sd "$work/js")
"$nats_bin" -a 127.0.0.1 -p "$port" "${js[@]}" >"$work/nats.log" 2>&1 &
nats_pid=$!
wait_port "$port" nats-server

echo "machine: $(nproc) CPUs; nats-server $("$nats_bin" --version | grep -oE '[0-9]+\.[0-9.]+') on $url; $RATE events/s for ${SECS}s over $CIDS connections, $RUNS runs" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
results="$work/results"
: >"$results"
for run in $(seq 1 "$RUNS"); do
  for target in $TARGETS; do
    case $target in
      bare) "$bench_bin" bare --relay-tokens --nats "$url" >"$work/bare.log" 2>&1 & ;;
      connres) RUST_LOG=${RUST_LOG:-warn} "$connres_bin" serve --config "$CONFIG" \
        --nats "$url" >"$work/connres.log" 2>&1 & ;;
      base) RUST_LOG=${RUST_LOG:-warn} "$BASE_BIN" serve --config "$CONFIG" \
        --nats "$url" >"$work/base.log" 2>&1 & ;;
    esac
    server_pid=$!
    as=$target label=""
    [ "$target" = base ] && { as=connres; label="s/target=Connres/target=Base/;"; }
    # Readiness is the generator's first get, retried until answered (bounded).
    "$bench_bin" token-latency --nats "$url" --target "$as" --rate "$RATE" --secs "$SECS" \
      --cids "$CIDS" --warmup "$WARMUP" --pid "$server_pid" --nats-pid "$nats_pid" |
      sed "${label}s/^TOKEN_LATENCY /TOKEN_LATENCY run=$run /" | tee -a "$results"
    kill -0 "$server_pid" 2>/dev/null || { echo "$target died during the run" >&2; exit 1; }
    stop_pid "$server_pid"
    server_pid=""
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'PY'
import statistics, sys
runs = [dict(kv.split("=", 1) for kv in l.split()[1:]) for l in open(sys.argv[1]) if l.startswith("TOKEN_LATENCY ")]
for target in ["Bare", "Connres", "Base"]:
    rs = [r for r in runs if r["target"] == target]
    if not rs:
        continue
    def med(k): return statistics.median(float(r[k]) for r in rs)
    def rng(k): return f"{min(float(r[k]) for r in rs):.0f}-{max(float(r[k]) for r in rs):.0f}"
    print(f"{target.lower():7s} median of {len(rs)} runs at {med('rate'):.0f} events/s: token -> change "
          f"p50 {med('p50_us'):.0f} us ({rng('p50_us')}), p99 {med('p99_us'):.0f} us ({rng('p99_us')}), "
          f"p99.9 {med('p999_us'):.0f} us, max {med('max_us'):.0f} us ({rng('max_us')}); "
          f"CPU {med('server_cpu_us'):.1f} us per event, nats-server {med('nats_cpu_us'):.1f} us")
PY
