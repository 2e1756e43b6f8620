#!/bin/bash
# A Zask cluster over ssh, by hand: this machine runs the scheduler, each host given on the
# command line runs one worker started over ssh.
#
#   examples/deploy/ssh.sh node1 node2 node3
#
# One command does this too (the scheduler on node1, the keys sent over ssh's standard input,
# resized later by `zask scale` or `zask adapt`; see README), and this script shows the steps
# by hand:
#
#   zask ssh node1 node2 node3 --workers-per-host 1
#
# Assumes passwordless ssh to each host, zask-worker on each host's PATH and that the hosts
# reach this machine's ports 8786 (workers) and 8787 (clients). Ctrl-C stops everything.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 HOST..." >&2
    exit 2
fi

WORKER_PORT=8786
CLIENT_PORT=8787
# The scheduler's keys; the access files are written beside them.
DIR="${ZASK_DIR:-$HOME/.zask}"
SCHEDULER_HOST="${ZASK_SCHEDULER_HOST:-$(hostname -f)}"

# Listen on every interface (by default the scheduler listens on loopback only).
zask-scheduler --host 0.0.0.0 --worker-port "$WORKER_PORT" --client-port "$CLIENT_PORT" \
    --security-file "$DIR/cluster.keys" &
SCHEDULER_PID=$!
PIDS=("$SCHEDULER_PID")
# On exit, stop the ssh sessions and the scheduler. A remote worker ends with its ssh
# session (its terminal hangs up: SIGHUP, not the graceful SIGTERM; for a graceful stop,
# `ssh HOST kill -TERM PID` first).
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

for _ in $(seq 1 30); do
    [ -f "$DIR/worker.access" ] && break
    sleep 1
done

for HOST in "$@"; do
    # Each worker needs only the worker's access file (mode 0600 on the host too).
    ssh "$HOST" 'mkdir -p -m 700 ~/.zask'
    scp -p "$DIR/worker.access" "$HOST:.zask/worker.access"
    # -tt: the remote worker ends when this ssh session ends. --host 0.0.0.0: peers on other
    # hosts fetch results from it (advertised by that host's hostname).
    ssh -tt "$HOST" zask-worker "tcp://$SCHEDULER_HOST:$WORKER_PORT" --host 0.0.0.0 \
        --memory-limit auto --access-file .zask/worker.access </dev/null &
    PIDS+=("$!")
done

echo "clients: zask status --scheduler tcp://$SCHEDULER_HOST:$CLIENT_PORT --access-file $DIR/operator.access"
wait "$SCHEDULER_PID"
