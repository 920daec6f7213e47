#!/usr/bin/env bash
# Memory per live connection: RSS growth of `connres serve` (release) on the shipped
# resources.yaml while N connections each get what the seed models give a logged-in
# user (a token event with three claims, an access and a get of session.user, a set of
# session.prefs), made by `bench fill` on a throwaway nats-server on a free loopback
# port. state.max_entries is raised so that nothing is evicted. Prints the FILL line
# of each step and the bytes per connection over all of them.
#
#   scripts/memory.sh              # 100,000 connections
#   scripts/memory.sh 1000000      # a million, in steps of STEP (default 100,000)
#   SHAPE=small scripts/memory.sh  # tokens of one claim (shapes: seed, user, small, anon)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

N=${1:-100000}
STEP=${STEP:-100000}
SHAPE=${SHAPE:-seed}
CONCURRENCY=${CONCURRENCY:-64}

nats_bin=$("$root/scripts/install-nats-server.sh")
release_bins

work=$(mktemp -d)
nats_pid=""
server_pid=""
cleanup() {
  local rc=$?
  stop_pid "$server_pid"
  stop_pid "$nats_pid"
  [ "$rc" -ne 0 ] && tail_logs "$work"
  rm -rf "$work"
  exit "$rc"
}
on_exit cleanup
start_throwaway_nats "$work"

# The shipped file with room for every connection (two entries each).
entries=$((2 * N + 1000))
python3 - "$root/resources.yaml" "$work/resources.yaml" "$entries" <<'PY'
import re, sys
text, entries = open(sys.argv[1]).read(), sys.argv[3]
if re.search(r"^  max_entries:", text, re.M):
    text = re.sub(r"^  max_entries: .*$", f"  max_entries: {entries}", text, count=1, flags=re.M)
elif re.search(r"^state:\n", text, re.M):
    text = re.sub(r"^state:\n", f"state:\n  max_entries: {entries}\n", text, count=1, flags=re.M)
else:
    text = re.sub(r"^resources:", f"state:\n  max_entries: {entries}\n\nresources:", text, count=1, flags=re.M)
open(sys.argv[2], "w").write(text)
PY

metrics_port=$(free_port)
RUST_LOG=${RUST_LOG:-warn} "$connres_bin" serve --config "$work/resources.yaml" --nats "$url" \
  --metrics-addr "127.0.0.1:$metrics_port" >"$work/connres.log" 2>&1 &
server_pid=$!
wait_port "$metrics_port" "connres's metrics listener"
# Ready: subscribed and announced (a port accepting connections is not yet that).
for _ in $(seq 1 200); do
  if python3 -c 'import sys,urllib.request; urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)' "$metrics_port" 2>/dev/null; then
    break
  fi
  sleep 0.05
done

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
start_kb=$(rss_kb)
echo "machine: $(nproc) CPUs; connres pid $server_pid, RSS at start ${start_kb} kB; shape $SHAPE" >&2
from=0
while [ "$from" -lt "$N" ]; do
  count=$((N - from < STEP ? N - from : STEP))
  "$bench_bin" fill --nats "$url" --connections "$count" --from "$from" \
    --pid "$server_pid" --concurrency "$CONCURRENCY" --shape "$SHAPE"
  from=$((from + count))
done
end_kb=$(rss_kb)
python3 - "$start_kb" "$end_kb" "$N" <<'PY'
import sys
start, end, n = (int(v) for v in sys.argv[1:])
per = (end - start) * 1024 / n
print(f"MEMORY connections={n} rss_start_kb={start} rss_end_kb={end} bytes_per_connection={per:.0f} per_million_mib={per * 1e6 / 2**20:.0f}")
PY
