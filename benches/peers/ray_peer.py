#!/usr/bin/env python3
"""Ray core tasks on the scenarios of `zask-bench` that Ray can express, for side-by-side ratios.

Same scenario names, arguments and JSON fields as `zask-bench` and `dask_peer.py`, so
`benches/compare_all.sh` can divide one by the other:

    python ray_peer.py {independent,tree,latency} [--workers W] [--n N] [--repeat R]

- independent: N `inc` tasks submitted one `.remote()` call each (Ray has no whole-graph
  submit), then one `ray.get` of all N results.
- tree: binary-tree sum over N leaves; each `add` takes the two ObjectRefs below it, so Ray
  resolves the dependencies; one `ray.get` of the root.
- latency: N sequential `ray.get(inc.remote(i))`, after 20 not counted.

Each run starts a fresh local Ray (`ray.init(num_cpus=W)`, no dashboard), so at most W tasks of
one CPU each run at once, like W one-thread workers; W tasks warm the worker processes before
the timed part. Prints one JSON line on stdout.
"""
import argparse
import json
import os
import statistics
import sys
import time

# No usage reports: this machine reaches no network but the package registries.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def percentile(sorted_values, p):
    """Nearest rank, as zask-bench and dask_peer.py compute it."""
    rank = -(-len(sorted_values) * p // 100) - 1
    return sorted_values[max(0, min(len(sorted_values) - 1, rank))]


def one_run(ray, scenario, n, workers):
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             logging_level="warning")
    start_s = time.perf_counter() - t0
    try:
        @ray.remote(num_cpus=1)
        def inc(x):
            return x + 1

        @ray.remote(num_cpus=1)
        def add(x, y):
            return x + y

        assert ray.get([inc.remote(i) for i in range(workers)]) == list(range(1, workers + 1))
        if scenario == "independent":
            t0 = time.perf_counter()
            values = ray.get([inc.remote(i) for i in range(n)])
            wall = time.perf_counter() - t0
            return start_s, {"wall_s": wall, "tasks": n, "ok": sum(values) == n * (n + 1) // 2}
        if scenario == "tree":
            if n & (n - 1):
                sys.exit("tree: --n must be a power of two")
            t0 = time.perf_counter()
            level = [inc.remote(i) for i in range(n)]
            tasks = n
            while len(level) > 1:
                level = [add.remote(a, b) for a, b in zip(level[0::2], level[1::2])]
                tasks += len(level)
            value = ray.get(level[0])
            wall = time.perf_counter() - t0
            return start_s, {"wall_s": wall, "tasks": tasks, "ok": value == n * (n + 1) // 2}
        # latency
        for i in range(20):
            ray.get(inc.remote(n + i))
        seconds, ok = [], True
        t_all = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            ok &= ray.get(inc.remote(i)) == i + 1
            seconds.append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_all
        seconds.sort()
        return start_s, {"wall_s": wall, "tasks": n, "ok": ok,
                         "median_us": statistics.median(seconds) * 1e6,
                         "p99_us": percentile(seconds, 99) * 1e6}
    finally:
        ray.shutdown()


DEFAULT_N = {"independent": 10_000, "tree": 8192, "latency": 1000}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(DEFAULT_N))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n", type=int)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    n = args.n or DEFAULT_N[args.scenario]

    import ray

    runs, starts = [], []
    for _ in range(max(1, args.repeat)):
        start_s, run = one_run(ray, args.scenario, n, args.workers)
        starts.append(start_s)
        runs.append(run)

    def median_of(field):
        values = [r[field] for r in runs if field in r]
        return statistics.median(values) if values else None

    print(json.dumps({
        "system": f"ray {ray.__version__}",
        "scenario": args.scenario,
        "workers": args.workers,
        "n": n,
        "wall_s": median_of("wall_s"),
        "tasks_per_s": statistics.median(r["tasks"] / r["wall_s"] for r in runs),
        "median_us": median_of("median_us"),
        "p99_us": median_of("p99_us"),
        "cluster_start_s": statistics.median(starts),
        "ok": all(r["ok"] for r in runs),
        "runs": len(runs),
    }), flush=True)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
