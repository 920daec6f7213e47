#!/usr/bin/env bash
# The end-to-end lane: connres behind a real Resgate, driven by ResClient in Node and by
# the web example in headless Chromium (e2e/). Runs when a Resgate binary is found:
# $RESGATE_BIN, then `resgate` on PATH, then ../shared/bin/resgate beside the project.
# Without one it prints one line saying so and exits 0, unless CONNRES_E2E_REQUIRED=1
# (as in CI), where that is a failure.
#
#   scripts/e2e.sh                        # every e2e test
#   scripts/e2e.sh e2e/tests/seed.test.mjs  # some of them
#
# Installs what it needs when missing (scripts/install-e2e.sh: npm ci, Debian's
# chromium) and builds the connres binary and the auth example (debug).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

found=0
RESGATE_BIN=$(scripts/find-resgate.sh) || found=$?
if [ "$found" -ne 0 ]; then
  # A RESGATE_BIN that does not run is a mistake to report, not a reason to skip.
  if [ "${CONNRES_E2E_REQUIRED:-0}" = 1 ] || [ "$found" -eq 2 ]; then
    echo "e2e: FAILED: no Resgate binary to run (set RESGATE_BIN, put resgate on PATH, or ../shared/bin/resgate)" >&2
    exit 1
  fi
  echo "e2e: skipped, no Resgate binary found; to run it set RESGATE_BIN=/path/to/resgate or put resgate on PATH (releases, go install github.com/resgateio/resgate@v1.8.0)"
  exit 0
fi
export RESGATE_BIN

NATS_SERVER=${NATS_SERVER:-$(scripts/install-nats-server.sh)}
CHROMIUM=$(scripts/install-e2e.sh)
export NATS_SERVER CHROMIUM

echo "e2e: building connres and the auth example (debug)..." >&2
cargo_build --locked --bin connres --example auth
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
export CONNRES_BIN="$target_dir/debug/connres" AUTH_BIN="$target_dir/debug/examples/auth"
# Nothing in the lane may fetch a browser build.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1

echo "e2e: $("$RESGATE_BIN" --version 2>&1 | head -1) ($RESGATE_BIN), $("$CHROMIUM" --version 2>/dev/null | head -1)"
[ "$#" -gt 0 ] || set -- e2e/tests/*.test.mjs
started=$(date +%s%N)
set +e
node --test --test-concurrency=2 "$@"
rc=$?
set -e
ms=$((($(date +%s%N) - started) / 1000000))
echo "e2e: the tests took $((ms / 1000)).$((ms % 1000 / 100)) s"
exit "$rc"
