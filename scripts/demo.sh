#!/usr/bin/env bash
# The quick-start demo: a throwaway nats-server on a free loopback port, connres serving
# the shipped resources.yaml, and examples/demo.rs playing Resgate against it (login,
# claim change, client set, backend set, logout). Exits non-zero if anything in the
# conversation is not as expected, so it doubles as a smoke test.
#
#   scripts/demo.sh            # debug build (fast to build)
#   PROFILE=release scripts/demo.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh
profile=${PROFILE:-debug}

nats_bin=$("$root/scripts/install-nats-server.sh")

echo "building connres and the demo driver ($profile)..." >&2
build_flags=()
[ "$profile" = release ] && build_flags+=(--release)
cargo_build "${build_flags[@]}" --bin connres --example demo
target_dir=$(cargo_target_dir)
bin_dir="$target_dir/$profile"

work=$(mktemp -d)
nats_pid=""
connres_pid=""
cleanup() {
  local rc=$?
  # Stop only what this script started, by pid.
  if [ -n "$connres_pid" ] && kill -0 "$connres_pid" 2>/dev/null; then
    kill -TERM "$connres_pid" 2>/dev/null || true
    wait "$connres_pid" 2>/dev/null || true
  fi
  if [ -n "$nats_pid" ] && kill -0 "$nats_pid" 2>/dev/null; then
    kill -TERM "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/connres.log" ]; then
    echo "--- connres log ---" >&2
    cat "$work/connres.log" >&2
  fi
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
echo "nats-server $("$nats_bin" --version | grep -oE '[0-9]+\.[0-9.]+') on $url (pid $nats_pid)" >&2

RUST_LOG=${RUST_LOG:-info} "$bin_dir/connres" serve --config "$root/resources.yaml" --nats "$url" \
  >"$work/connres.log" 2>&1 &
connres_pid=$!

# Readiness: connres logs "connres is serving" right after it published system.reset.
# (The driver also retries its first request until answered, so this is belt and braces.)
for i in $(seq 1 400); do
  if grep -q "connres is serving" "$work/connres.log" 2>/dev/null; then break; fi
  if ! kill -0 "$connres_pid" 2>/dev/null; then
    echo "connres exited during startup" >&2
    exit 1
  fi
  sleep 0.05
done
echo "connres serving $root/resources.yaml (pid $connres_pid)" >&2

NATS_URL="$url" "$bin_dir/examples/demo"
