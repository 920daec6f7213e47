#!/usr/bin/env bash
# The whole test suite: installs nats-server if missing, then format check, lints, and
# every unit and integration test (the integration tests start their own nats-server on
# free loopback ports), then the end-to-end lane through a real Resgate (scripts/e2e.sh;
# skipped with one line when no Resgate binary is found, unless CONNRES_E2E_REQUIRED=1),
# and the short fault-injection run of the shared store (scripts/chaos.sh). The container
# image is built and tried where a Docker daemon answers (scripts/docker-check.sh; one
# skip line otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_SERVER=$(scripts/install-nats-server.sh)
export NATS_SERVER
echo "using $NATS_SERVER ($("$NATS_SERVER" --version))"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
scripts/docker-check.sh
scripts/e2e.sh
# Fault injection against shared-store instances (about 30 s; docs/scaling.md), on what
# `cargo test` built.
PROFILE=dev scripts/chaos.sh
