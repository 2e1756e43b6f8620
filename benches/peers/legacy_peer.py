#!/usr/bin/env python
"""The unmodified 2015 client (dask 0.7.5, Python 3.6) timing `get`s, against any scheduler.

    python legacy_peer.py {independent,latency} --scheduler tcp://HOST:PORT [--n N]
    python legacy_peer.py {independent,latency} --own-cluster [--workers W] [--n N]

With `--scheduler` it only runs the client (Zask's scheduler and workers were started by
`benches/legacy_compare.sh`); with `--own-cluster` it starts the 2015 scheduler and W 2015
workers as processes of their own (this file in another role), each in a scratch directory
because the 2015 modules write their message logs into the working directory.

independent: N tasks `(operator.add, i, 1)` in one graph, every result gathered, one `get`.
latency: N sequential `get`s of one task `(operator.add, i, 1)`, each under its own key.
operator.add is a function Zask's Rust workers run, so both clusters run the same graph.
Prints one JSON line.
"""
import argparse
import json
import operator
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def role_scheduler(addr_file):
    from dask.distributed import Scheduler

    s = Scheduler(hostname="127.0.0.1", bind_to_workers="127.0.0.1", bind_to_clients="127.0.0.1")
    with open(addr_file + ".tmp", "w") as f:
        json.dump({"workers": s.address_to_workers.decode(), "clients": s.address_to_clients.decode()}, f)
    os.rename(addr_file + ".tmp", addr_file)
    while True:
        time.sleep(3600)


def role_worker(scheduler):
    from dask.distributed import Worker

    Worker(scheduler.encode(), hostname="127.0.0.1", bind_to_workers="127.0.0.1")
    while True:
        time.sleep(3600)


def wait_for(predicate, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    sys.exit("timed out waiting for " + what)


def start_own_cluster(workers, scratch):
    procs = []

    def spawn(role, *args):
        cwd = os.path.join(scratch, "%s-%d" % (role, len(procs)))
        os.makedirs(cwd)
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_" + role] + list(args),
                             cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)

    addr_file = os.path.join(scratch, "scheduler.json")
    spawn("scheduler", addr_file)
    wait_for(lambda: os.path.exists(addr_file), 30, "the 2015 scheduler")
    with open(addr_file) as f:
        addresses = json.load(f)
    for _ in range(workers):
        spawn("worker", addresses["workers"])
    return procs, addresses["clients"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["independent", "latency"])
    parser.add_argument("--scheduler", help="client address of a running scheduler")
    parser.add_argument("--own-cluster", action="store_true", help="start the 2015 system")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n", type=int)
    args = parser.parse_args()
    if bool(args.scheduler) == bool(args.own_cluster):
        sys.exit("give exactly one of --scheduler and --own-cluster")
    scratch = tempfile.mkdtemp(prefix="legacy-peer-")
    os.chdir(scratch)  # the client's own message log goes here too
    procs = []
    try:
        if args.own_cluster:
            procs, address = start_own_cluster(args.workers, scratch)
        else:
            address = args.scheduler
        from dask.distributed import Client

        client = Client(address)
        wait_for(lambda: len(client.get_registered_workers()) >= args.workers, 30, "workers")
        assert client.get({"warm": (operator.add, 1, 1)}, "warm") == 2
        result = {"scenario": args.scenario, "workers": args.workers}
        if args.scenario == "independent":
            n = args.n or 10000
            graph = {("inc", i): (operator.add, i, 1) for i in range(n)}
            keys = list(graph)
            t0 = time.perf_counter()
            values = client.get(graph, keys)
            wall = time.perf_counter() - t0
            result.update(n=n, wall_s=wall, tasks_per_s=n / wall, ok=sum(values) == n * (n + 1) // 2)
        else:
            n = args.n or 1000
            seconds, ok = [], True
            for i in range(n):
                t0 = time.perf_counter()
                # A key of its own per get: the 2015 scheduler can hang when one key is reused.
                key = "x-%d" % i
                ok &= client.get({key: (operator.add, i, 1)}, key) == i + 1
                seconds.append(time.perf_counter() - t0)
            result.update(n=n, median_us=statistics.median(seconds) * 1e6, ok=ok)
        client.close()
        result["system"] = "2015 scheduler" if args.own_cluster else "zask"
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_scheduler":
        role_scheduler(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "_worker":
        role_worker(sys.argv[2])
    else:
        sys.exit(main())
