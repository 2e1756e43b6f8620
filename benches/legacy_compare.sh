#!/usr/bin/env bash
# The unmodified 2015 client (dask 0.7.5 on Python 3.6) on Zask and on the 2015 scheduler
# itself, side by side in one run on this machine.
#
#   benches/legacy_compare.sh SCENARIO [--n N]          (from the repository root)
#
# SCENARIO: independent | latency. Builds the release binaries, makes the Python 3.6 venv with
# compat/tests/legacy/setup.sh, then for $ROUNDS rounds (default 3) runs the client against a
# fresh Zask cluster (zask-scheduler + 2 zask-workers) and against a fresh 2015 cluster
# (scheduler + 2 workers), and prints each round's ratio.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scenario=${1:?usage: benches/legacy_compare.sh independent|latency [--n N]}
shift
export ZASK_LEGACY_VENV=${ZASK_LEGACY_VENV:-$HOME/.cache/zask-legacy/py36}
bash "$root/compat/tests/legacy/setup.sh" >/dev/null
python36="$ZASK_LEGACY_VENV/bin/python"
(cd "$root" && cargo build --release --quiet --bin zask-scheduler --bin zask-worker)
bin="$root/target/release"
peer="$root/benches/peers/legacy_peer.py"

run_zask() {
  local log; log=$(mktemp)
  local keys; keys=$(mktemp -d)
  # Secured as by default; the 2015 client (no CURVE) uses the plaintext 2015 client port.
  "$bin/zask-scheduler" --security-file "$keys/cluster.keys" --legacy-client-port 0 \
    >"$log" 2>/dev/null &
  local scheduler=$!
  local to_workers="" to_clients=""
  for _ in $(seq 1 100); do
    to_workers=$(awk '$1 == "address_to_workers" {print $2}' "$log")
    to_clients=$(awk '$1 == "legacy_address_to_clients" {print $2}' "$log")
    [ -n "$to_workers" ] && [ -n "$to_clients" ] && break
    sleep 0.1
  done
  "$bin/zask-worker" --nthreads 1 "$to_workers" --access-file "$keys/worker.access" >/dev/null 2>&1 &
  local w1=$!
  "$bin/zask-worker" --nthreads 1 "$to_workers" --access-file "$keys/worker.access" >/dev/null 2>&1 &
  local w2=$!
  "$python36" -W ignore "$peer" "$scenario" --scheduler "$to_clients" "$@" | grep '^{' | tail -n 1
  kill -TERM "$w1" "$w2" 2>/dev/null || true
  wait "$w1" "$w2" 2>/dev/null || true
  kill -TERM "$scheduler" 2>/dev/null || true
  wait "$scheduler" 2>/dev/null || true
  rm -f "$log"
  rm -rf "$keys"
}

for round in $(seq 1 "${ROUNDS:-3}"); do
  zask=$(run_zask "$@")
  old=$("$python36" -W ignore "$peer" "$scenario" --own-cluster "$@" | grep '^{' | tail -n 1)
  python3 - "$round" "$zask" "$old" <<'PY'
import json, sys
round_, zask, old = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for field, higher in (("tasks_per_s", True), ("median_us", False)):
    z, o = zask.get(field), old.get(field)
    if z and o:
        ratio = z / o if higher else o / z
        ok = "" if zask["ok"] and old["ok"] else "  (A RESULT WAS WRONG)"
        print(f"round {round_} {zask['scenario']} {field}: 2015 client on zask {z:.4g}, "
              f"on the 2015 scheduler {o:.4g}: zask {ratio:.2f}x{ok}")
PY
done
