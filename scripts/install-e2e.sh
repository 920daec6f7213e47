#!/usr/bin/env bash
# Installs what the end-to-end lane and the web example need, only when missing:
# - e2e/node_modules from the committed lockfile (`npm ci`; re-run when the lockfile
#   changes). playwright-core never downloads a browser, and the variables below make
#   sure nothing else does either.
# - A Chromium for playwright-core: Debian's `chromium` by apt, unless
#   /usr/bin/chromium or /usr/bin/chromium-headless-shell is already there (or
#   $CHROMIUM names one). Skipped with `--no-browser` (the web example needs none).
# Prints the Chromium path on stdout (nothing with --no-browser).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
browser=1
[ "${1:-}" = "--no-browser" ] && browser=0

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 npm_config_audit=false npm_config_fund=false

command -v node >/dev/null 2>&1 || { echo "node (20 or newer) and npm are needed for the e2e lane" >&2; exit 1; }
lock="$root/e2e/package-lock.json"
stamp="$root/e2e/node_modules/.installed-lock.sha256"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing e2e/node_modules (npm ci)" >&2
  (cd "$root/e2e" && npm ci --silent --no-audit --no-fund >&2)
  echo "$want" >"$stamp"
fi

[ "$browser" = 1 ] || exit 0
find_chromium() {
  local c
  for c in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-headless-shell; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}
if ! find_chromium >/dev/null; then
  echo "installing Debian's chromium (apt-get)" >&2
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "could not install chromium with apt-get; set CHROMIUM=/path/to/chromium" >&2
    exit 1
  fi
  rm -f "$log"
fi
find_chromium || { echo "no Chromium after installing: set CHROMIUM=/path/to/chromium" >&2; exit 1; }
