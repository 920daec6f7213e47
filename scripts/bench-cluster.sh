#!/usr/bin/env bash
# Benchmark of the shared store (docs/scaling.md): the shipped resources.yaml served by
# one memory-store instance, then by 1, 2 and 3 instances with `state.store: nats`, in
# one run on one nats-server with JetStream on a free loopback port. For each setup and
# request kind it runs `bench load` and reports throughput, latency and the CPU time
# per request summed over every instance (from /proc/<pid>/task/*/schedstat over the
# measured window), and the mean bucket write latency (from the instances' metrics,
# since start). On one machine nats-server bounds throughput; summed CPU per
# request is the figure that shows whether capacity grows with instances. Setups
# `mappedN` are N instances with the block `connres mapping` prints loaded into
# nats-server (reads routed to their owners, calls to their owner and the instance
# ranked next); `natsN` without it (reads forwarded, calls to every instance);
# `bareN` are N bare responders in one queue group (the load generator's yardstick:
# no state, a fixed reply), the control for what splitting one load over N processes
# costs on this machine whatever they do.
#
# LOAD says how many requests are in flight: `each` (the default) keeps CONC in flight
# per instance (3 instances: 3 x CONC), so each instance works under the load one
# instance does, as when instances are added for more clients; `total` keeps CONC in
# flight whatever the setup, so each of N instances works in batches N times smaller.
#
#   scripts/bench-cluster.sh
#   N=50000 CONC=64 SETUPS="memory nats1 nats3 mapped3" KINDS="get access set" scripts/bench-cluster.sh
#   KEEP=1 ...                        # keep the instances' logs (printed path)
#   SETUPS="mapped1 mapped3 bare1 bare3 mapped1 mapped3 bare1 bare3" LOAD=total ...
#                                     # a setup named again runs again, on a bucket of its own
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

N=${N:-30000}
CONC=${CONC:-64}
CIDS=${CIDS:-1000}
WARMUP=${WARMUP:-2000}
SETUPS=${SETUPS:-"memory nats1 nats2 nats3 mapped1 mapped2 mapped3"}
KINDS=${KINDS:-"get access set"}
LEASE=${LEASE:-5s}
LOAD=${LOAD:-each}
case $LOAD in each | total) ;; *) echo "LOAD is each or total, not $LOAD" >&2; exit 2 ;; esac

nats_bin=$("$root/scripts/install-nats-server.sh")
release_bins

work=$(mktemp -d)
nats_pid=""
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do stop_pid "$p"; done
  stop_pid "$nats_pid"
  if [ "$rc" -ne 0 ]; then
    tail_logs "$work"
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(free_port)
url="nats://127.0.0.1:$port"
# The mappings, when a setup has them: loaded by a configuration reload.
: >"$work/nats.conf"
"$nats_bin" -a 127.0.0.1 -p "$port" -js -sd "$work/js" -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
nats_pid=$!
wait_port "$port" nats-server
echo "machine: $(nproc) CPUs; nats-server $("$nats_bin" --version | grep -oE '[0-9]+\.[0-9.]+') with JetStream on $url" >&2
echo "load: N=$N requests per kind, $CONC in flight ($LOAD), $CIDS connections, lease $LEASE" >&2

# Loads a nats-server configuration (the mappings) and waits until the server says so.
load_nats_conf() {
  local before
  before=$(grep -c "Reloaded server configuration" "$work/nats.log" || true)
  cat >"$work/nats.conf"
  kill -HUP "$nats_pid"
  for _ in $(seq 1 100); do
    [ "$(grep -c "Reloaded server configuration" "$work/nats.log" || true)" -gt "$before" ] && return 0
    sleep 0.05
  done
  echo "nats-server did not reload its configuration" >&2
  return 1
}

# The value of a metric summed over the instances.
metric_sum() {
  local name=$1 total=0 m v
  shift
  for m in "$@"; do
    v=$(curl -s "http://127.0.0.1:$m/metrics" | awk -v n="$name" '$1 == n {print $2}')
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# The mean of a histogram over the instances' metrics: sum / count.
kv_mean_us() {
  local sum=0 count=0 m s c
  for m in "$@"; do
    s=$(curl -s "http://127.0.0.1:$m/metrics" | awk '/^connres_cluster_kv_write_seconds_sum/ {print $2}')
    c=$(curl -s "http://127.0.0.1:$m/metrics" | awk '/^connres_cluster_kv_write_seconds_count/ {print $2}')
    sum=$(python3 -c "print($sum + ${s:-0})")
    count=$(python3 -c "print($count + ${c:-0})")
  done
  python3 -c "print(f'{$sum / $count * 1e6:.0f}' if $count else '-')"
}

results="$work/results"
printf "%-7s %-7s %9s %9s %8s %8s %16s %10s %10s %9s %6s\n" setup kind "in flight" "req/s" "p50 us" "p99 us" "CPU us/req (sum)" "nats us/req" "kv write us" forwarded errors >"$results"
round=0
for setup in $SETUPS; do
  round=$((round + 1))
  case $setup in
    memory | bare*)
      # No mapping: an empty block removes one loaded for an earlier setup.
      echo 'mappings = {}' | load_nats_conf
      n=1
      config="$root/resources.yaml"
      [ "$setup" = memory ] || n=${setup#bare}
      ;;
    nats* | mapped*)
      n=${setup#nats}
      n=${n#mapped}
      config="$work/$setup.yaml"
      python3 - "$root/resources.yaml" "$config" "$setup-$round" "$LEASE" <<'EOF'
import sys
text = open(sys.argv[1]).read()
state = f"state:\n  store: nats\n  bucket: bench-{sys.argv[3]}\n  partitions: 64\n  lease: {sys.argv[4]}\n"
head, rest = text.split("state:\n", 1)
# Drop the shipped state block's lines (indented), keep the rest.
lines = rest.splitlines(keepends=True)
while lines and (lines[0].startswith("  ") or not lines[0].strip()):
    lines.pop(0)
open(sys.argv[2], "w").write(head + state + "".join(lines))
EOF
      if [ "${setup#mapped}" != "$setup" ]; then
        "$connres_bin" mapping --config "$config" | load_nats_conf
      else
        # An empty block removes mappings loaded before; a file without one keeps them.
        echo 'mappings = {}' | load_nats_conf
      fi
      ;;
  esac
  pids=()
  metrics=()
  for i in $(seq 1 "$n"); do
    if [ "${setup#bare}" != "$setup" ]; then
      "$bench_bin" bare --nats "$url" >"$work/$setup-$i.log" 2>&1 &
      pids+=($!)
      for _ in $(seq 1 200); do
        grep -q "bare responder ready" "$work/$setup-$i.log" && break
        sleep 0.05
      done
      grep -q "bare responder ready" "$work/$setup-$i.log" || { echo "$setup-$i never got ready" >&2; exit 1; }
      continue
    fi
    m=$(free_port)
    RUST_LOG=warn "$connres_bin" serve --config "$config" --nats "$url" --metrics-addr "127.0.0.1:$m" \
      >"$work/$setup-$i.log" 2>&1 &
    pids+=($!)
    metrics+=("$m")
    wait_port "$m" "connres $setup-$i"
  done
  if [ -n "${metrics[*]}" ] && [ "$setup" != memory ]; then
    # Until every partition is served: the instances' partitions_served add up to 64.
    # Until every partition is served, each instance serves some, and that has held
    # for a second (handovers come one after another).
    stable=0
    for _ in $(seq 1 400); do
      served=$(metric_sum connres_cluster_partitions_served "${metrics[@]}")
      each=1
      for m in "${metrics[@]}"; do
        [ "$(metric_sum connres_cluster_partitions_served "$m")" -gt 0 ] || each=0
      done
      if [ "$served" -eq 64 ] && [ "$each" = 1 ]; then stable=$((stable + 1)); else stable=0; fi
      [ "$stable" -ge 20 ] && break
      sleep 0.05
    done
    [ "$stable" -ge 20 ] || { echo "$setup: partitions never settled ($served of 64 served)" >&2; exit 1; }
    if [ "${setup#mapped}" != "$setup" ]; then
      for _ in $(seq 1 200); do
        [ "$(metric_sum connres_cluster_reads_mapped "${metrics[@]}")" -eq "$n" ] && break
        sleep 0.05
      done
      [ "$(metric_sum connres_cluster_reads_mapped "${metrics[@]}")" -eq "$n" ] ||
        { echo "$setup: the instances did not find the mapping in force" >&2; exit 1; }
    fi
    # Handovers done and the previous owners' mapped subscriptions ended (a lease).
    sleep "${LEASE%s}"
  fi
  echo "== $setup: ${#pids[@]} instance(s) (${pids[*]})" >&2
  also=()
  for p in "${pids[@]:1}"; do also+=(--also-pid "$p"); done
  conc=$CONC
  [ "$LOAD" = each ] && conc=$((CONC * n))
  # The shared store's figures: only where there is a bucket.
  shared=0
  case $setup in nats* | mapped*) shared=1 ;; esac
  target=()
  [ "${setup#bare}" != "$setup" ] && target=(--target bare)
  for kind in $KINDS; do
    fwd_before=0
    [ "$shared" = 1 ] && fwd_before=$(metric_sum connres_cluster_forwarded_total "${metrics[@]}")
    line=$("$bench_bin" load --nats "$url" "${target[@]}" --kind "$kind" --concurrency "$conc" --requests "$N" \
      --warmup "$WARMUP" --cids "$CIDS" --pid "${pids[0]}" "${also[@]}" --nats-pid "$nats_pid" | grep '^RESULT')
    fwd=-
    [ "$shared" = 1 ] && fwd=$(($(metric_sum connres_cluster_forwarded_total "${metrics[@]}") - fwd_before))
    python3 - "$line" "$setup" "$kind" "$conc" \
      "$(if [ "$shared" = 1 ] && [ "$kind" = set ]; then kv_mean_us "${metrics[@]}"; else echo -; fi)" \
      "$fwd" >>"$results" <<'EOF'
import sys
line, setup, kind, conc, kv, fwd = sys.argv[1:]
r = dict(kv_.split("=", 1) for kv_ in line.split()[1:])
print(f"{setup:7s} {kind:7s} {conc:>9s} {float(r['rps']):9.0f} {float(r['p50_us']):8.1f} {float(r['p99_us']):8.1f} {r['server_cpu_us']:>16s} {r['nats_cpu_us']:>10s} {kv:>10s} {fwd:>9s} {r['errors']:>6s}")
EOF
  done
  for p in "${pids[@]}"; do stop_pid "$p"; done
  pids=()
done
echo
cat "$results"
# A setup run more than once: its CPU per request in each run, the median, and the
# median against its family's one-instance setup (mapped3 against mapped1, bare3
# against bare1; against the first setup when the family has none), within this run.
python3 - "$results" <<'EOF'
import re, statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
cpu = {}
for r in rows:
    cpu.setdefault((r[0], r[1]), []).append(float(r[6]))
if all(len(v) == 1 for v in cpu.values()):
    sys.exit(0)
print()
for (setup, kind), v in cpu.items():
    base = re.sub(r"[0-9]+$", "", setup) + "1"
    if (base, kind) not in cpu:
        base = rows[0][0]
    med = statistics.median(v)
    ref = statistics.median(cpu.get((base, kind), [med]))
    runs = " ".join(f"{x:.2f}" for x in v)
    print(f"{setup:7s} {kind:7s} CPU us/req {runs}  median {med:.2f}  {med / ref:.2f}x {base}")
EOF
