#!/usr/bin/env bash
# Prints the path of a Resgate binary: $RESGATE_BIN, then `resgate` on PATH, then
# ../shared/bin/resgate beside the project (or beside the repository a local clone was
# made from, so a fresh clone in a temporary directory finds the same binary). Exits 1
# when there is none, 2 when RESGATE_BIN names something that does not run.
# Users get Resgate from its releases, `go install github.com/resgateio/resgate@v1.8.0`
# or the resgateio/resgate container image.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [ -n "${RESGATE_BIN:-}" ]; then
  [ -x "$RESGATE_BIN" ] || { echo "RESGATE_BIN=$RESGATE_BIN is not an executable file" >&2; exit 2; }
  echo "$RESGATE_BIN"
  exit 0
fi
if command -v resgate >/dev/null 2>&1; then
  command -v resgate
  exit 0
fi
candidates=("$root/../shared/bin/resgate")
origin=$(git -C "$root" remote get-url origin 2>/dev/null || true)
if [ -n "$origin" ] && [ -d "$origin" ]; then
  candidates+=("$origin/../shared/bin/resgate")
fi
for candidate in "${candidates[@]}"; do
  if [ -x "$candidate" ]; then
    echo "$candidate"
    exit 0
  elif [ -f "$candidate" ]; then
    # A copy without its execute bit: run a copy of it that has one.
    mkdir -p "$root/.tools/bin"
    cp "$candidate" "$root/.tools/bin/resgate"
    chmod +x "$root/.tools/bin/resgate"
    echo "$root/.tools/bin/resgate"
    exit 0
  fi
done
exit 1
