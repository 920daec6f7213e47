#!/usr/bin/env bash
# Coverage-guided fuzzing of the fuzz targets in fuzz/ with cargo-fuzz (libFuzzer):
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 300 s each for config and request
#
# Installs cargo-fuzz into .tools/ when missing, then runs each target in turn, niced,
# seeded from the committed corpus (fuzz/corpus/TARGET, and tests/config for `config`).
# New corpus entries go to fuzz/work/corpus/TARGET and crashes to fuzz/artifacts/TARGET
# (both ignored by git). Replay one with `cargo test --test fuzz` after copying it into
# fuzz/corpus/TARGET, or `RUSTC_BOOTSTRAP=1 .tools/bin/cargo-fuzz run --fuzz-dir fuzz TARGET FILE`.
#
# Environment: FUZZ_SANITIZER (address, the default, or none: faster),
# FUZZ_NICE (10), FUZZ_ARGS (more libFuzzer flags, e.g. "-fork=1 -ignore_crashes=1").
#
# Only a stable toolchain is needed: cargo-fuzz passes nightly `-Z` flags, which
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
duration=${1:-300}
[[ $# -gt 0 ]] && shift
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(config request)
if ! [[ $duration =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...] (targets: config request)" >&2
    exit 2
fi

cargo_fuzz=.tools/bin/cargo-fuzz
if ! "$cargo_fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/" >&2
    cargo install --root .tools cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
nice=${FUZZ_NICE:-10}
failed=()
for target in "${targets[@]}"; do
    if [[ ! -f fuzz/fuzz_targets/$target.rs ]]; then
        echo "no fuzz target $target (targets: config request)" >&2
        exit 2
    fi
    out=fuzz/work/corpus/$target
    mkdir -p "$out" "fuzz/artifacts/$target"
    seeds=("fuzz/corpus/$target")
    [[ $target == config ]] && seeds+=(tests/config/valid tests/config/invalid)
    echo "== $target: ${duration}s, sanitizer $sanitizer, corpus $out" >&2
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    if ! nice -n "$nice" "$cargo_fuzz" run --fuzz-dir fuzz --sanitizer "$sanitizer" \
        "$target" "$out" "${seeds[@]}" -- \
        -max_total_time="$duration" -dict="fuzz/dict/$target.dict" -print_final_stats=1 \
        ${FUZZ_ARGS:-}; then
        failed+=("$target")
    fi
    echo "== $target: corpus $(find "$out" -type f | wc -l) files;" \
        "artifacts $(find "fuzz/artifacts/$target" -type f | wc -l) files" >&2
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing found a failure in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
