#!/usr/bin/env bash
# Prints the path of a Resgate binary: $RESGATE_BIN, then `resgate` on PATH, then
# ../shared/bin/resgate beside the project. Exits 1 when there is none, 2 when
# RESGATE_BIN names something that does not run.
# Users get Resgate from its releases, `go install github.com/resgateio/resgate@v1.8.0`
# or the resgateio/resgate container image.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [ -n "${RESGATE_BIN:-}" ]; then
  [ -x "$RESGATE_BIN" ] || { echo "RESGATE_BIN=$RESGATE_BIN is not an executable file" >&2; exit 2; }
  echo "$RESGATE_BIN"
elif command -v resgate >/dev/null 2>&1; then
  command -v resgate
elif [ -x "$root/../shared/bin/resgate" ]; then
  echo "$root/../shared/bin/resgate"
elif [ -f "$root/../shared/bin/resgate" ]; then
  # A copy without its execute bit: run a copy of it that has one.
  mkdir -p "$root/.tools/bin"
  cp "$root/../shared/bin/resgate" "$root/.tools/bin/resgate"
  chmod +x "$root/.tools/bin/resgate"
  echo "$root/.tools/bin/resgate"
else
  exit 1
fi
