#!/usr/bin/env bash
# The container image: builds the Dockerfile and tries the image, where a Docker daemon
# answers (`docker info`); otherwise prints one line saying so and exits 0.
#
#   scripts/docker-check.sh
#
# The image must run as a user other than root, check the shipped resources.yaml mounted
# at /etc/connres/resources.yaml, and serve it against a nats-server of this host named
# by NATS_URL (the container on the host's network, loopback only), then drain and exit
# 0 on `docker stop`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "docker: skipped, no Docker daemon answers (docker info); the image (Dockerfile) was not built"
  exit 0
fi

image=connres:test
echo "docker: building $image from the Dockerfile..." >&2
if [ -t 2 ]; then docker build --tag "$image" .; else docker build --quiet --tag "$image" . >/dev/null; fi

config=(--volume "$root/resources.yaml:/etc/connres/resources.yaml:ro")
uid=$(docker run --rm --entrypoint id "$image" -u)
[ "$uid" != 0 ] || { echo "docker: FAILED: the image runs as root" >&2; exit 1; }
docker run --rm "${config[@]}" --entrypoint /usr/local/bin/connres "$image" check >/dev/null ||
  { echo "docker: FAILED: connres check of the mounted resources.yaml" >&2; exit 1; }

nats_bin=${NATS_SERVER:-$(scripts/install-nats-server.sh)}
work=$(mktemp -d)
nats_pid=""
container=""
cleanup() {
  local rc=$?
  [ -z "$container" ] || docker rm --force "$container" >/dev/null 2>&1 || true
  stop_pid "$nats_pid"
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

port=$(free_port)
"$nats_bin" -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 &
nats_pid=$!
wait_port "$port" nats-server

container=$(docker run --detach --network host "${config[@]}" \
  --env NATS_URL="nats://127.0.0.1:$port" --env CONNRES_METRICS_ADDR="127.0.0.1:$(free_port)" \
  "$image")
# Readiness by connres's own log line; grep ends at the first match.
if ! grep -q -m1 'connres is serving' < <(timeout 30 docker logs --follow "$container" 2>&1); then
  echo "docker: FAILED: the container did not serve; its log:" >&2
  docker logs "$container" >&2 2>&1 || true
  exit 1
fi
docker stop --time 10 "$container" >/dev/null
status=$(docker wait "$container")
[ "$status" = 0 ] || { echo "docker: FAILED: exit $status after docker stop" >&2; docker logs "$container" >&2 2>&1; exit 1; }
echo "docker: $image runs as uid $uid, checks and serves the mounted config, and stops with exit 0"
