#!/usr/bin/env bash
# The web example, ready to open in a browser: nats-server, connres on the shipped
# resources.yaml with the example's sessions (examples/web/auth.yaml: connres as the
# auth service), the auth example (examples/auth.rs, for users.user.*), Resgate and
# the page's server (examples/web/serve.mjs: static files and a development JWT
# issuer), all on loopback. Prints the URL and runs until Ctrl-C.
#
#   scripts/web-demo.sh
#   WEB_PORT=8000 RESGATE_PORT=8080 scripts/web-demo.sh   # fixed ports (default: free ones)
#
# Needs a Resgate binary ($RESGATE_BIN, `resgate` on PATH, or ../shared/bin/resgate;
# users get theirs from the Resgate releases, `go install
# github.com/resgateio/resgate@v1.8.0` or the resgateio/resgate container image), Node
# 20+ with npm (for ResClient from npm and the file server), and cargo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

if ! resgate=$(scripts/find-resgate.sh); then
  echo "no Resgate binary to run: set RESGATE_BIN=/path/to/resgate or put resgate on PATH" >&2
  echo "(releases, go install github.com/resgateio/resgate@v1.8.0, or the resgateio/resgate image)" >&2
  exit 1
fi
say() { echo "web-demo: $*" >&2; }
nats_bin=$(scripts/install-nats-server.sh)
say "checking ResClient's npm packages (e2e/node_modules)"
scripts/install-e2e.sh --no-browser
say "building connres and the auth example (debug)..."
cargo_build --bin connres --example auth
target_dir=$(cargo_target_dir)

work=$(mktemp -d)
pids=()
cleanup() {
  local rc=$? pid
  # Stop only what this script started, by pid, last started first.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; then
    for log in "$work"/*.log; do
      [ -s "$log" ] && { echo "--- $(basename "$log") ---" >&2; tail -20 "$log" >&2; }
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback port (node: this script needs it anyway).
free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Waits (bounded) until a log file has a line matching a pattern; fails if the
# process exits first.
wait_line() {
  local file=$1 pattern=$2 pid=$3 i
  say "starting $(basename "$file" .log): waiting for \"$pattern\" in its log"
  for i in $(seq 1 400); do
    grep -qE "$pattern" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$(basename "$file" .log) exited during startup" >&2; return 1; }
    sleep 0.05
  done
  echo "$(basename "$file" .log) did not start: no \"$pattern\" in its log" >&2
  return 1
}

"$nats_bin" -a 127.0.0.1 -p -1 >"$work/nats.log" 2>&1 &
pids+=($!)
wait_line "$work/nats.log" 'Listening for client connections' "${pids[-1]}"
nats_url="nats://127.0.0.1:$(grep -oE 'client connections on [0-9.]+:[0-9]+' "$work/nats.log" | grep -oE '[0-9]+$')"

# connres's config: the shipped resources.yaml, the example's sessions
# (examples/web/auth.yaml) and who is here (examples/web/here.yaml), with a fresh
# development secret the issuer shares.
config="$work/config"
mkdir -p "$config"
cp "$root/resources.yaml" "$root/examples/web/auth.yaml" "$root/examples/web/here.yaml" "$config/"
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$config/jwt.secret"
# Logins are logged (at debug) with their connection ID, for the backend write below.
RUST_LOG=${RUST_LOG:-info,connres::engine::auth=debug} \
  "$target_dir/debug/connres" serve --config "$config" --nats "$nats_url" >"$work/connres.log" 2>&1 &
pids+=($!)
wait_line "$work/connres.log" 'connres is serving' "${pids[-1]}"

"$target_dir/debug/examples/auth" --nats "$nats_url" >"$work/auth.log" 2>&1 &
pids+=($!)
wait_line "$work/auth.log" 'auth service ready' "${pids[-1]}"

resgate_port=${RESGATE_PORT:-$(free_port)}
"$resgate" --nats "$nats_url" --addr 127.0.0.1 --port "$resgate_port" >"$work/resgate.log" 2>&1 &
pids+=($!)
wait_line "$work/resgate.log" 'Server ready' "${pids[-1]}"

node examples/web/serve.mjs --port "${WEB_PORT:-0}" --resgate "ws://127.0.0.1:$resgate_port" \
  --jwt-secret-file "$config/jwt.secret" >"$work/web.log" 2>&1 &
pids+=($!)
wait_line "$work/web.log" 'serving the web example on' "${pids[-1]}"
url=$(grep -oE 'http://[0-9.:]+/' "$work/web.log" | head -1)

cat <<EOF

  connres web example: open $url

  nats-server $nats_url, connres on resources.yaml and examples/web/auth.yaml
  (logins with JWTs from the page's server), the auth example (users.user.*),
  Resgate ws://127.0.0.1:$resgate_port, logs in $work
  Demo accounts: ann / ann-pass, bob / bob-pass, cat / cat-pass
  A backend writing the page's session card (the connection ID is in
  $work/connres.log after a login: "a login ... cid=..."):
    cargo run -q --example api -- --nats $nats_url \\
      set session.status.<cid> '{"cartItems":3,"notice":"Your order has shipped."}'
  Ctrl-C stops everything.

EOF
# Until Ctrl-C, or until one of them stops.
wait -n "${pids[@]}"
echo "a process stopped; shutting down" >&2
exit 1
