#!/usr/bin/env python3
"""dask.distributed on the scenarios of `zask-bench`, for side-by-side ratios.

Same scenario names, arguments and JSON fields as `zask-bench` (src/bin/zask-bench.rs), so
`benches/compare.sh` can divide one by the other. Every run starts a fresh
`LocalCluster(processes=True, threads_per_worker=1)`, makes one round trip to warm the
connections, and times only the computation.

    python dask_peer.py {independent,tree,latency,bag,transfer,scale} [--workers W] [--n N]
                        [--repeat R] [--faults [sigterm|sigkill]] [--saturation inf]

Prints one JSON line on stdout.
"""
import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Worker processes import the task functions by module name: put this folder on their path.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
sys.path.insert(0, HERE)
import peer_tasks as tasks  # noqa: E402


def start_cluster(workers, saturation):
    import dask
    from dask.distributed import Client, LocalCluster

    if saturation is not None:
        dask.config.set({"distributed.scheduler.worker-saturation": float(saturation)})
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(workers)
    assert client.submit(tasks.inc, 0, pure=False).result() == 1
    return cluster, client, time.perf_counter() - t0


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def independent(client, n, args):
    graph = {("inc", i): (tasks.inc, i) for i in range(n)}
    values, wall = timed(lambda: client.get(graph, list(graph)))
    return {"wall_s": wall, "tasks": n, "ok": sum(values) == n * (n + 1) // 2}


def tree(client, leaves, args):
    if leaves & (leaves - 1):
        sys.exit("tree: --n must be a power of two")
    graph = {("t", 0, i): (tasks.inc, i) for i in range(leaves)}
    depth, width = 0, leaves
    while width > 1:
        for j in range(width // 2):
            graph[("t", depth + 1, j)] = (tasks.add, ("t", depth, 2 * j), ("t", depth, 2 * j + 1))
        depth, width = depth + 1, width // 2
    value, wall = timed(lambda: client.get(graph, ("t", depth, 0)))
    return {"wall_s": wall, "tasks": len(graph), "ok": value == leaves * (leaves + 1) // 2}


def latency(client, n, args):
    for i in range(20):  # not counted: warms caches on every side
        client.submit(tasks.inc, i, pure=False).result()
    seconds, ok = [], True
    t_all = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        ok &= client.submit(tasks.inc, i, pure=False).result() == i + 1
        seconds.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_all
    seconds.sort()
    p99 = seconds[min(len(seconds) - 1, max(0, -(-len(seconds) * 99 // 100) - 1))]
    return {"wall_s": wall, "tasks": n, "ok": ok,
            "median_us": statistics.median(seconds) * 1e6, "p99_us": p99 * 1e6}


def kill_workers(client, signum, stop, kills):
    """Every 0.5 s, signal one worker process other than the first two (as zask-bench)."""
    pids = lambda: sorted(client.run(os.getpid).values())
    protected = set(pids()[:2])
    rng = random.Random(os.getpid())
    while not stop.wait(0.5):
        try:
            candidates = [p for p in pids() if p not in protected]
        except Exception:
            continue
        if candidates:
            try:
                os.kill(rng.choice(candidates), signum)
                kills.append(1)
            except ProcessLookupError:
                pass


def bag(client, items, args):
    import dask.bag as db

    total = db.from_sequence(range(items), npartitions=max(1, items // 2)).map(tasks.slow_double).sum()
    stop, kills = threading.Event(), []
    signum = signal.SIGKILL if args.faults == "sigkill" else signal.SIGTERM
    killer = threading.Thread(target=kill_workers, args=(client, signum, stop, kills), daemon=True)
    if args.faults:
        killer.start()
    try:
        value, wall = timed(lambda: total.compute())
    finally:
        stop.set()
    if args.faults:
        killer.join()
        print(f"{len(kills)} workers killed with {args.faults} during the run", file=sys.stderr)
        return {"wall_s": wall, "tasks": items, "ok": value == items * (items - 1),
                "kills": len(kills)}
    return {"wall_s": wall, "tasks": items, "ok": value == items * (items - 1)}


def transfer(client, nbytes, args):
    a, b = sorted(client.scheduler_info()["workers"])[:2]
    warm = client.submit(tasks.make_bytes, 1000, workers=[a], pure=False)
    client.submit(len, warm, workers=[b], pure=False).result()
    from dask.distributed import wait

    blob = client.submit(tasks.make_bytes, nbytes, workers=[a], pure=False)
    wait(blob)  # made and kept on A; only the move to B and one tiny task are timed
    length, wall = timed(lambda: client.submit(len, blob, workers=[b], pure=False).result())
    return {"wall_s": wall, "tasks": 1, "ok": length == nbytes, "mb_per_s": nbytes / 1e6 / wall}


SCENARIOS = {
    # name: (function, default n, default workers)
    "independent": (independent, 10_000, 2),
    "tree": (tree, 8192, 2),
    "latency": (latency, 1000, 2),
    "bag": (bag, 400, 4),
    "transfer": (transfer, 100_000_000, 2),
    "scale": (independent, 100_000, 2),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--workers", type=int)
    parser.add_argument("--n", type=int)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--faults", nargs="?", const="sigterm", choices=["sigterm", "sigkill"],
                        help="bag: SIGTERM (or SIGKILL) a worker every 0.5 s")
    parser.add_argument("--saturation", help="distributed.scheduler.worker-saturation (e.g. inf)")
    args = parser.parse_args()
    run, default_n, default_workers = SCENARIOS[args.scenario]
    n = args.n or default_n
    workers = args.workers or default_workers
    runs, starts = [], []
    for _ in range(max(1, args.repeat)):
        cluster, client, start_s = start_cluster(workers, args.saturation)
        try:
            runs.append(run(client, n, args))
        finally:
            client.close()
            cluster.close()
        starts.append(start_s)

    def median_of(field):
        values = [r[field] for r in runs if field in r]
        return statistics.median(values) if values else None

    import distributed

    print(json.dumps({
        "system": f"dask.distributed {distributed.__version__}",
        "scenario": args.scenario,
        "workers": workers,
        "n": n,
        "wall_s": median_of("wall_s"),
        "tasks_per_s": statistics.median(r["tasks"] / r["wall_s"] for r in runs),
        "median_us": median_of("median_us"),
        "p99_us": median_of("p99_us"),
        "mb_per_s": median_of("mb_per_s"),
        "cluster_start_s": statistics.median(starts),
        "faults": args.faults,
        "kills": median_of("kills"),
        "ok": all(r["ok"] for r in runs),
        "runs": len(runs),
    }))
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
