#!/bin/bash
# A Zask cluster inside one SLURM allocation: the first node runs the scheduler, every other
# node runs one worker (a nanny process that restarts its worker if it dies).
#
#   sbatch examples/deploy/slurm.sh
#
# Then, from any machine that reaches the first node (login node, another job):
#   zask status --scheduler tcp://FIRST_NODE:8787 --access-file ~/.zask/slurm-JOBID/operator.access
#
# Assumes zask-scheduler and zask-worker are on PATH on every node and that $HOME is on a
# filesystem all nodes share (the access files are written there by the scheduler).
#SBATCH --job-name=zask
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --output=zask-%j.out

set -euo pipefail

# Fixed ports, so clients know where to connect (any free ports will do).
WORKER_PORT=8786
CLIENT_PORT=8787

# The cluster's keys and the access files, private to this job, on the shared filesystem.
# zask-scheduler makes the keys (mode 0600) and writes worker.access, client.access and
# operator.access beside them.
DIR="${ZASK_DIR:-$HOME/.zask/slurm-${SLURM_JOB_ID}}"
mkdir -p "$DIR"
chmod 700 "$DIR"

# The allocation's first node runs the scheduler; the others run workers.
NODES=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
SCHEDULER_NODE=$(echo "$NODES" | head -n 1)
WORKER_COUNT=$((SLURM_JOB_NUM_NODES - 1))

# --host 0.0.0.0: listen on every interface of that node (by default the scheduler listens on
# loopback only). Its stdout says the addresses it listens on.
srun --nodes=1 --ntasks=1 --nodelist="$SCHEDULER_NODE" \
    zask-scheduler --host 0.0.0.0 --worker-port "$WORKER_PORT" --client-port "$CLIENT_PORT" \
    --security-file "$DIR/cluster.keys" \
    >"$DIR/scheduler.out" 2>"$DIR/scheduler.log" &

# The scheduler writes the workers' access file once its keys exist.
for _ in $(seq 1 60); do
    [ -f "$DIR/worker.access" ] && break
    sleep 1
done
[ -f "$DIR/worker.access" ] || { echo "the scheduler wrote no access file" >&2; exit 1; }

# One worker per remaining node, as many task threads as SLURM gave it CPUs, the node's
# memory as its limit. --host 0.0.0.0: its peer port listens on every interface (peers on
# other nodes fetch data from it), advertised by the node's hostname.
srun --nodes="$WORKER_COUNT" --ntasks-per-node=1 --exclude="$SCHEDULER_NODE" \
    zask-worker "tcp://$SCHEDULER_NODE:$WORKER_PORT" \
    --nthreads "$SLURM_CPUS_PER_TASK" --memory-limit auto --host 0.0.0.0 \
    --access-file "$DIR/worker.access" \
    2>"$DIR/workers.log" &

echo "scheduler: tcp://$SCHEDULER_NODE:$CLIENT_PORT (clients: --access-file $DIR/client.access)"

# The job lasts until its time limit or `scancel`; SLURM then sends SIGTERM to the steps and
# the workers retire gracefully.
wait
