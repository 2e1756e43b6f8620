#!/usr/bin/env bash
# Runs every libFuzzer target (or those named as arguments) for a fixed number of inputs, from
# the committed seeds in fuzz/corpus/<target>/. CI calls it after the tests (.ci/run). Needs a
# nightly toolchain: without one it fails, saying so. Installs the pinned cargo-fuzz if missing.
#
#   bash fuzz/run.sh                      every target, the CI budget
#   ZASK_FUZZ_RUNS=2000000 bash fuzz/run.sh value json_graph   longer, two targets
#   ZASK_FUZZ_SEED=0 bash fuzz/run.sh     a random libFuzzer seed instead of the fixed one
#
# What libFuzzer finds besides the seeds goes to a scratch directory, deleted at the end: the
# repository keeps only seeds (and regression inputs, fuzz/corpus/<target>/regression-*). A crash
# leaves its input in fuzz/artifacts/<target>/ and fails the script, naming the command that
# replays it. Targets are built without a sanitizer (`-s none`: the code under test is safe Rust)
# and unoptimised (`--dev`, with debug assertions): the build is most of the time this takes, and
# an optimised one takes several times longer on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.1
# 60,000 inputs per target: all ten take about 1.5 minutes on 2 cores, after a build of about 1.75.
RUNS=${ZASK_FUZZ_RUNS:-60000}
# Messages a few KiB long reach every branch of the decoders; longer ones only slow runs down.
MAX_LEN=${ZASK_FUZZ_MAX_LEN:-4096}
SEED=${ZASK_FUZZ_SEED:-1}
FLAGS=(--sanitizer none --dev)

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "error: fuzz/run.sh needs a nightly Rust toolchain (cargo +nightly), which this machine" \
    "lacks: install it with 'rustup toolchain install nightly'" >&2
  exit 1
fi
if [[ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
[[ ${#targets[@]} -gt 0 ]] || { echo "error: no fuzz targets found" >&2; exit 1; }

cargo +nightly fuzz build "${FLAGS[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
  [[ -d corpus/$t ]] || { echo "error: no seeds in fuzz/corpus/$t" >&2; exit 1; }
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  start=$SECONDS
  # The scratch directory comes first: libFuzzer adds what it finds to the first directory.
  if cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
    -runs="$RUNS" -max_len="$MAX_LEN" -seed="$SEED" -timeout=10 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz $t: $RUNS inputs, no crash ($((SECONDS - start)) s;" \
      "$(grep -o 'cov: [0-9]*' "$log" | tail -1))"
  else
    tail -n 60 "$log" >&2
    echo "fuzz $t: FAILED; replay with: (cd fuzz && cargo +nightly fuzz run ${FLAGS[*]} $t" \
      "artifacts/$t/<crash file>)" >&2
    failed+=("$t")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "error: fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
