#!/usr/bin/env bash
# Benchmark: connres against the bare-responder yardstick (docs/performance.md) on one
# throwaway nats-server on a free loopback port. For each target it runs a bounded load
# per request kind (N requests, CONC in flight from one client) and a sequential latency
# run (SEQ_N requests, one in flight), and reports throughput,
# latency p50/p99, the target's CPU time per request over the measured window (exact,
# from /proc/<pid>/task/*/schedstat; and utime+stime from /proc/<pid>/stat in CLK_TCK
# ticks as a cross-check) and its peak RSS (VmHWM). Results: a table, then connres/bare
# ratios of CPU per request. The whole set runs ROUNDS times, targets interleaved, each
# round on freshly started targets; the table shows medians (and the CPU range), since a
# small shared machine is noisy.
#
#   scripts/bench.sh
#   N=200000 CONC=64 SEQ_N=20000 CIDS=1000 ROUNDS=5 scripts/bench.sh
#   RESULTS=/tmp/raw.txt scripts/bench.sh    # also keep every run's raw RESULT line
#   CONCS="1 16 64 256" scripts/bench.sh      # several concurrencies (CONC is one)
#   BASE_BIN=/tmp/old/connres scripts/bench.sh  # also an older build, as target `base`
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

N=${N:-100000}
CONC=${CONC:-64}
CONCS=${CONCS:-$CONC}
SEQ_N=${SEQ_N:-10000}
CIDS=${CIDS:-1000}
WARMUP=${WARMUP:-5000}
MAX_SECS=${MAX_SECS:-120}
ROUNDS=${ROUNDS:-3}
KINDS=${KINDS:-"get-anon get access set"}
SEQ_KINDS=${SEQ_KINDS:-"get access set"}
clk_tck=$(getconf CLK_TCK)

nats_bin=$("$root/scripts/install-nats-server.sh")
release_bins

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
  if [ -n "${RESULTS:-}" ] && [ -f "$work/results" ]; then cp "$work/results" "$RESULTS"; fi
  rm -rf "$work"
  exit "$rc"
}
on_exit cleanup
start_throwaway_nats "$work"

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); nats-server $("$nats_bin" --version | grep -oE '[0-9]+\.[0-9.]+') on $url" >&2
echo "load: N=$N requests, $CONC in flight, sequential SEQ_N=$SEQ_N, $CIDS connections, warm-up $WARMUP, $ROUNDS rounds" >&2

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews throughput and latency more than CPU per request)" >&2
results="$work/results"
: >"$results"

load() { # target kind concurrency requests round
  local as=$1 label=""
  [ "$1" = base ] && { as=connres; label="s/target=Connres/target=Base/;"; }
  "$bench_bin" load --nats "$url" --target "$as" --kind "$2" --concurrency "$3" \
    --requests "$4" --warmup "$WARMUP" --cids "$CIDS" --max-secs "$MAX_SECS" \
    --pid "$server_pid" --nats-pid "$nats_pid" --clk-tck "$clk_tck" |
    sed "${label}s/^RESULT /RESULT round=$5 /" >>"$results"
}

for round in $(seq 1 "$ROUNDS"); do
  for target in bare connres ${BASE_BIN:+base}; do
    case $target in
      bare) "$bench_bin" bare --nats "$url" >"$work/bare.log" 2>&1 & ;;
      connres) RUST_LOG=${RUST_LOG:-info} "$connres_bin" serve --config "$root/resources.yaml" --nats "$url" \
        >"$work/connres.log" 2>&1 & ;;
      base) RUST_LOG=${RUST_LOG:-info} "$BASE_BIN" serve --config "$root/resources.yaml" --nats "$url" \
        >"$work/base.log" 2>&1 & ;;
    esac
    server_pid=$!
    echo "== round $round/$ROUNDS: $target (pid $server_pid)" >&2
    # Readiness is the load generator's first request, retried until answered (bounded).
    for conc in $CONCS; do
      for kind in $KINDS; do load "$target" "$kind" "$conc" "$N" "$round"; done
    done
    for kind in $SEQ_KINDS; do load "$target" "$kind" 1 "$SEQ_N" "$round"; done
    kill -0 "$server_pid" 2>/dev/null || { echo "$target died during the run" >&2; exit 1; }
    stop_pid "$server_pid"
    server_pid=""
  done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# The table (medians over the rounds), then connres/bare ratios of CPU per request.
python3 - "$results" <<'EOF'
import statistics, sys
runs = []
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        runs.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
def num(v):
    try:
        return float(v)
    except ValueError:
        return None
groups = {}
for r in runs:
    groups.setdefault((r["target"], r["kind"], r["conc"]), []).append(r)
def med(rs, key):
    vals = [v for v in (num(r[key]) for r in rs) if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"
cols = ["target", "kind", "in flight", "requests", "req/s", "p50 us", "p99 us",
        "server CPU us/req", "(range)", "(ticks)", "nats CPU us/req", "server max RSS kB", "errors"]
table = [cols]
cpu = {}
for key, rs in groups.items():
    target, kind, conc = key
    c = [num(r["server_cpu_us"]) for r in rs if num(r["server_cpu_us"]) is not None]
    cpu[key] = med(rs, "server_cpu_us")
    table.append([target, kind, conc, f"{int(med(rs, 'requests'))}x{len(rs)}",
                  fmt(med(rs, "rps"), 0), fmt(med(rs, "p50_us"), 1), fmt(med(rs, "p99_us"), 1),
                  fmt(cpu[key], 2), f"{min(c):.2f}-{max(c):.2f}" if c else "-",
                  fmt(med(rs, "server_ticks_us"), 2), fmt(med(rs, "nats_cpu_us"), 2),
                  str(max(int(r["hwm_kb"]) for r in rs if r["hwm_kb"].isdigit())),
                  str(sum(int(r["errors"]) for r in rs))])
widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
print()
for n, row in enumerate(table):
    print("  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if n == 0:
        print("  ".join("-" * w for w in widths))
print()
# The bare responder does the same work whatever the kind, so the median of all its runs
# at a concurrency is the steadier yardstick; the same-kind ratio is shown beside it.
for conc in sorted({k[2] for k in groups}, key=int, reverse=True):
    pooled = [num(r["server_cpu_us"]) for r in runs
              if r["target"] == "Bare" and r["conc"] == conc and num(r["server_cpu_us"]) is not None]
    yard = statistics.median(pooled) if pooled else None
    for target in ["Connres", "Base"]:
        for kind in ["get-anon", "get", "access", "set"]:
            b, c = cpu.get(("Bare", kind, conc)), cpu.get((target, kind, conc))
            if b and c and yard:
                print(f"{target.lower()}/bare CPU per {kind:8s} ({conc:>3} in flight): {c:6.2f} us / {yard:5.2f} us"
                      f" (all bare runs) = {c / yard:4.2f}x   [same-kind bare {b:5.2f} us: {c / b:4.2f}x]")
        for kind in ["get", "access"]:
            b = statistics.median([num(r["rps"]) for r in runs if r["target"] == "Bare" and r["conc"] == conc and r["kind"] == kind] or [0])
            c = statistics.median([num(r["rps"]) for r in runs if r["target"] == target and r["conc"] == conc and r["kind"] == kind] or [0])
            if b and c:
                print(f"{target.lower()}/bare throughput {kind:6s} ({conc:>3} in flight): {c:8.0f} / {b:8.0f} req/s = {c / b:4.2f}x")
EOF
