#!/usr/bin/env bash
# The whole peer comparison of the performance issue in one command, from a clean clone:
#
#   benches/compare_all.sh [--quick] [--no-peers]          (ROUNDS=3 by default)
#
# Builds the release binaries (zask-bench, zask-scheduler, zask-worker), creates a venv with a
# pinned dask.distributed ($ZASK_PEER_VENV, default ~/.cache/zask-peers/dask-venv, shared with
# benches/compare.sh) and tries one with a pinned Ray ($ZASK_PEER_RAY_VENV, default
# ~/.cache/zask-peers/ray-venv): a peer that cannot be installed on this machine is said so and
# left out. Then benches/compare_all.py runs every scenario of the issue's table ROUNDS times,
# Zask and its peers one after the other in each round, and prints the table in markdown on
# stdout (progress on stderr), every round's figure side by side.
#
# --quick: small sizes and one round, to check the script itself (its figures mean nothing).
# --no-peers: Zask alone (no venv is made or used).
# ZASK_BENCH=path/to/zask-bench: use that binary (and the zask-scheduler/zask-worker beside
# it) instead of building. ZASK_PEER_DASK / ZASK_PEER_RAY: other pinned versions.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
quick=0
peers=1
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --no-peers) peers=0 ;;
    *) echo "usage: benches/compare_all.sh [--quick] [--no-peers]" >&2; exit 2 ;;
  esac
done
rounds=${ROUNDS:-3}
[ "$quick" = 1 ] && rounds=${ROUNDS:-1}

zask_bench=${ZASK_BENCH:-$root/target/release/zask-bench}
if [ -z "${ZASK_BENCH:-}" ]; then
  echo "building the release binaries..." >&2
  (cd "$root" && cargo build --release --quiet --bin zask-bench --bin zask-scheduler --bin zask-worker)
fi

# make_venv DIR PACKAGE MODULE: a venv at DIR with PACKAGE (pinned) that imports MODULE.
# Prints DIR's python on success; says why on stderr and prints nothing otherwise.
make_venv() {
  local dir=$1 package=$2 module=$3 log
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import $module" 2>/dev/null; then
    echo "$dir/bin/python"
    return
  fi
  echo "installing $package into $dir..." >&2
  log=$(mktemp)
  if python3 -m venv "$dir" >"$log" 2>&1 && "$dir/bin/pip" install --quiet "$package" >>"$log" 2>&1 \
      && "$dir/bin/python" -c "import $module" >>"$log" 2>&1; then
    echo "$dir/bin/python"
  else
    echo "PEER LEFT OUT: $package is not installable on this machine; its last words:" >&2
    tail -n 3 "$log" | sed 's/^/    /' >&2
  fi
  rm -f "$log"
}

dask_python=""
ray_python=""
if [ "$peers" = 1 ]; then
  dask_python=$(make_venv "${ZASK_PEER_VENV:-$HOME/.cache/zask-peers/dask-venv}" \
    "dask[distributed]==${ZASK_PEER_DASK:-2026.8.0}" distributed)
  ray_python=$(make_venv "${ZASK_PEER_RAY_VENV:-$HOME/.cache/zask-peers/ray-venv}" \
    "ray==${ZASK_PEER_RAY:-2.60.0}" ray)
fi

args=(--zask-bench "$zask_bench" --rounds "$rounds")
[ "$quick" = 1 ] && args+=(--quick)
[ -n "$dask_python" ] && args+=(--dask-python "$dask_python")
[ -n "$ray_python" ] && args+=(--ray-python "$ray_python")
exec python3 "$root/benches/compare_all.py" "${args[@]}"
