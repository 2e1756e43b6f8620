#!/usr/bin/env bash
# Zask against dask.distributed on one scenario, side by side in one run on this machine.
#
#   benches/compare.sh SCENARIO [--workers W] [--n N]        (from the repository root)
#
# SCENARIO: independent | tree | latency | bag | transfer | scale (extra arguments go to both).
# Builds target/release/zask-bench if needed, creates a venv with a pinned dask.distributed on
# first use ($ZASK_PEER_VENV, default ~/.cache/zask-peers/dask-venv), then runs the two one
# after the other for $ROUNDS rounds (default 3) and prints each round's ratios. Only ratios
# from one run mean anything: the machine is shared and its speed varies from hour to hour.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scenario=${1:?usage: benches/compare.sh SCENARIO [--workers W] [--n N]}
shift
venv=${ZASK_PEER_VENV:-$HOME/.cache/zask-peers/dask-venv}
dask_version=${ZASK_PEER_DASK:-2026.8.0}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "dask[distributed]==$dask_version" >&2
fi
zask_bench=${ZASK_BENCH:-$root/target/release/zask-bench}
if [ -z "${ZASK_BENCH:-}" ]; then
  (cd "$root" && cargo build --release --quiet --bin zask-bench --bin zask-scheduler --bin zask-worker)
fi
json_line() { grep '^{' | tail -n 1; }
for round in $(seq 1 "${ROUNDS:-3}"); do
  zask=$("$zask_bench" "$scenario" "$@" | json_line)
  dask=$("$venv/bin/python" "$root/benches/peers/dask_peer.py" "$scenario" "$@" 2>/dev/null | json_line)
  python3 - "$round" "$zask" "$dask" <<'PY'
import json, sys
round_, zask, dask = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
higher_is_better = {"tasks_per_s", "mb_per_s"}
for field in ("tasks_per_s", "median_us", "p99_us", "mb_per_s", "wall_s"):
    z, d = zask.get(field), dask.get(field)
    if not z or not d:
        continue
    ratio = z / d if field in higher_is_better else d / z
    print(f"round {round_} {zask['scenario']} {field}: zask {z:.4g}, {dask['system']} {d:.4g}: "
          f"zask {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'}"
          f"{'' if zask['ok'] and dask['ok'] else '  (A RESULT WAS WRONG)'}")
PY
done
