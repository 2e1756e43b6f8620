#!/usr/bin/env bash
# What CurveZMQ costs: Zask secured (the default) against Zask --insecure, side by side in one
# run on this machine, for latency, independent tasks and a worker-to-worker transfer.
#
#   benches/security_cost.sh                (from the repository root)
#
# Builds the release binaries if needed, then for $ROUNDS rounds (default 3) runs each scenario
# secured and insecure one after the other and prints both and their ratio. Only ratios from
# one run mean anything: the machine is shared and its speed varies from hour to hour.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
zask_bench=${ZASK_BENCH:-$root/target/release/zask-bench}
if [ -z "${ZASK_BENCH:-}" ]; then
  (cd "$root" && cargo build --release --quiet --bin zask-bench --bin zask-scheduler --bin zask-worker)
fi
json_line() { grep '^{' | tail -n 1; }
for round in $(seq 1 "${ROUNDS:-3}"); do
  for scenario in latency independent transfer; do
    secure=$("$zask_bench" "$scenario" | json_line)
    insecure=$("$zask_bench" "$scenario" --insecure | json_line)
    python3 - "$round" "$scenario" "$secure" "$insecure" <<'PY'
import json, sys
rnd, scenario, s, i = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
assert s["secure"] and not i["secure"] and s["ok"] and i["ok"], (s, i)
field = {"latency": "median_us", "independent": "tasks_per_s", "transfer": "mb_per_s"}[scenario]
print(f"round {rnd} {scenario:12} {field:12} secure {s[field]:12.1f}  insecure {i[field]:12.1f}"
      f"  secure/insecure {s[field] / i[field]:.2f}")
PY
  done
done
