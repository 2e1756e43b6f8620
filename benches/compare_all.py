#!/usr/bin/env python3
"""Runs every scenario of the performance issue's table on Zask and its peers, ROUNDS rounds,
and prints the table in markdown. Started by benches/compare_all.sh (which builds and makes the
venvs); standard library only.

In each round every case runs once on each system, one after the other (Zask, dask, Ray), so a
round's ratios come from runs minutes apart on the same machine. A cell lists every round's
figure, "r1 / r2 / r3". Ratios say how many times better Zask is (> 1: Zask better), per
round. "met?" compares each round with the issue's target.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "peers")
TIMEOUT_S = float(os.environ.get("ZASK_COMPARE_TIMEOUT", "1200"))


class Case:
    """One scenario run per round on each system that has it."""

    def __init__(self, name, zask, quick_zask, dask=None, ray=None):
        self.name, self.zask, self.quick_zask = name, zask, quick_zask
        self.dask, self.ray = dask, ray


def args_for(scenario, workers, n):
    return [scenario, "--workers", str(workers), "--n", str(n)]


# name: (zask-bench arguments, the same in --quick, dask_peer.py's, ray_peer.py's)
# Peers take the same arguments as zask-bench unless None (they lack the scenario).
CASES = [
    Case("independent", args_for("independent", 2, 10_000), args_for("independent", 2, 300),
         dask=True, ray=True),
    Case("tree", args_for("tree", 2, 8192), args_for("tree", 2, 64), dask=True, ray=True),
    Case("latency", args_for("latency", 2, 1000), args_for("latency", 2, 30), dask=True,
         ray=True),
    Case("transfer", args_for("transfer", 2, 100_000_000), args_for("transfer", 2, 1_000_000),
         dask=True),
    Case("zero", args_for("independent", 2, 100_000) + ["--zero"],
         args_for("independent", 2, 2000) + ["--zero"]),
    Case("bag-sigkill", ["bag", "--n", "400", "--faults", "sigkill"],
         ["bag", "--n", "40", "--faults", "sigkill"], dask=True),
    # The quick one is larger than its calibration run, so the memory check runs too.
    Case("million", args_for("scale", 2, 1_000_000),
         args_for("scale", 2, 3000) + ["--calibrate-n", "1000"]),
]


class Row:
    """One line of the table: a figure of a case, its unit and the issue's target."""

    def __init__(self, label, case, field, higher_is_better, fmt, target, target_text):
        self.label, self.case, self.field = label, case, field
        self.higher, self.fmt = higher_is_better, fmt
        # target: ("abs", value) on Zask's figure, or ("vs dask", ratio) on the ratio.
        self.target, self.target_text = target, target_text


def tasks_s(v):
    return f"{v:,.0f} tasks/s"


def micros(v):
    return f"{v:,.0f} µs"


def mbs(v):
    return f"{v:,.0f} MB/s"


def secs(v):
    return f"{v:.2f} s"


def per_task(v):
    return f"{v:,.0f} B/task"


ROWS = [
    Row("independent, 10,000 tasks, 2 workers", "independent", "tasks_per_s", True, tasks_s,
        ("abs", 70_000), "≥ 70,000 tasks/s"),
    Row("tree, 8,192 leaves (16,383 tasks), 2 workers", "tree", "tasks_per_s", True, tasks_s,
        ("abs", 50_000), "≥ 50,000 tasks/s"),
    Row("latency, one tiny task per `get`: median", "latency", "median_us", False, micros,
        ("abs", 250), "≤ 250 µs"),
    Row("latency, one tiny task per `get`: p99", "latency", "p99_us", False, micros,
        ("abs", 1000), "≤ 1 ms"),
    Row("transfer, 100 MB worker → worker", "transfer", "mb_per_s", True, mbs,
        ("vs dask", 1.5), "≥ 1.5× dask on the same run"),
    Row("zero worker, 100,000 tasks", "zero", "tasks_per_s", True, tasks_s,
        ("abs", 150_000), "≥ 150,000 tasks/s"),
    Row("resilience bag, a worker SIGKILLed every 0.5 s (4 workers)", "bag-sigkill", "wall_s",
        False, secs, ("abs", 8.0), "≤ 8 s"),
    Row("1,000,000 independent tasks, 2 workers", "million", "tasks_per_s", True, tasks_s,
        ("abs", 50_000), "≥ 50,000 tasks/s"),
    Row("1,000,000 independent tasks: scheduler peak RSS / tasks", "million", "bytes_per_task",
        False, per_task, ("abs", 500), "≤ 500 B/task"),
]

QUICK_LABELS = {
    ("independent", "tasks_per_s"): "independent, 300 tasks",
    ("tree", "tasks_per_s"): "tree, 64 leaves",
    ("latency", "median_us"): "latency, 30 gets: median",
    ("latency", "p99_us"): "latency, 30 gets: p99",
    ("transfer", "mb_per_s"): "transfer, 1 MB",
    ("zero", "tasks_per_s"): "zero worker, 2,000 tasks",
    ("bag-sigkill", "wall_s"): "bag of 40 items, SIGKILL every 0.5 s",
    ("million", "tasks_per_s"): "scale, 3,000 tasks",
    ("million", "bytes_per_task"): "scale, 3,000 tasks: bytes per task",
}


def say(*words):
    print(*words, file=sys.stderr, flush=True)


def run_json(command, what):
    """Runs a benchmark command; its last JSON line, or {"error": ...}.

    It runs in a session of its own, and whatever of that session is left when it ends (a
    cluster that a failed run did not stop) is ended with it. Its stderr goes to a file: a
    process it leaves behind must not hold a pipe open."""
    say(f"  {what}: {' '.join(command[-6:])}")
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                 start_new_session=True)
        try:
            stdout, _ = child.communicate(timeout=TIMEOUT_S)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if timed_out:
            child.communicate()
            return {"error": f"timed out after {TIMEOUT_S:.0f} s"}
        err.seek(0)
        stderr = err.read()
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    if not lines:
        said = stderr.strip().splitlines() or ["no output"]
        errors = [l for l in said if l.startswith("error") or "Error" in l]
        return {"error": f"exit {child.returncode}: {(errors or said)[-1][:200]}"}
    result = json.loads(lines[-1])
    if child.returncode != 0 and result.get("ok", True):
        result["ok"] = False
    return result


def measure(args):
    """{case: {system: [result per round]}}"""
    results = {c.name: {"zask": [], "dask": [], "ray": []} for c in CASES}
    for round_ in range(1, args.rounds + 1):
        say(f"round {round_} of {args.rounds}")
        for case in CASES:
            zask_args = case.quick_zask if args.quick else case.zask
            results[case.name]["zask"].append(
                run_json([args.zask_bench] + zask_args, f"zask {case.name}"))
            if case.dask and args.dask_python:
                results[case.name]["dask"].append(run_json(
                    [args.dask_python, os.path.join(PEERS, "dask_peer.py")] + zask_args,
                    f"dask {case.name}"))
            if case.ray and args.ray_python:
                results[case.name]["ray"].append(run_json(
                    [args.ray_python, os.path.join(PEERS, "ray_peer.py")] + zask_args,
                    f"ray {case.name}"))
    return results


def figure(result, field):
    """A result's figure, or None (failed, or a wrong answer)."""
    if "error" in result or not result.get("ok"):
        return None
    return result.get(field)


def cell(results, row):
    if not results:
        return "—"
    parts = []
    for r in results:
        v = r.get(row.field) if "error" not in r else None
        if "error" in r:
            parts.append(f"failed ({r['error']})")
        elif v is None:
            parts.append("—")
        else:
            parts.append(row.fmt(v) + ("" if r.get("ok") else " (WRONG RESULT)"))
    if row.case == "bag-sigkill":
        kills = [r.get("kills") for r in results if r.get("kills") is not None]
        if kills:
            parts[-1] += f" (kills: {' / '.join(str(int(k)) for k in kills)})"
    return " / ".join(parts)


def ratios(zask, peer, row):
    """Per round: how many times better Zask is than the peer (None where either lacks it)."""
    out = []
    for z, p in zip(zask, peer):
        zv, pv = figure(z, row.field), figure(p, row.field)
        out.append(None if not zv or not pv else (zv / pv if row.higher else pv / zv))
    return out


def ratio_cell(rs):
    if not rs:
        return "—"
    return " / ".join("—" if r is None else f"{r:.2f}×" for r in rs)


def met(row, zask, vs_dask, quick):
    if quick:
        return "— (quick: sizes too small)"
    kind, goal = row.target
    if kind == "abs":
        values = [figure(z, row.field) for z in zask]
        ok = [v is not None and (v >= goal if row.higher else v <= goal) for v in values]
        gaps = [goal / v if row.higher else v / goal for v in values if v]
    else:
        values = vs_dask
        ok = [v is not None and v >= goal for v in values]
        gaps = [goal / v for v in values if v]
    if values and all(ok):
        return "**yes**"
    if not any(v is not None for v in values):
        return "not measured"
    if any(ok):
        return f"in {sum(ok)} of {len(ok)} rounds"
    return f"no: {statistics.median(gaps):.1f}× short"


def table(results, args):
    rows = []
    ray = bool(args.ray_python)
    head = ["scenario", "Zask", "dask.distributed"] + (["Ray"] if ray else []) + \
        ["Zask vs dask"] + (["Zask vs Ray"] if ray else []) + ["target", "met?"]
    rows.append("| " + " | ".join(head) + " |")
    rows.append("|" + "---|" * len(head))
    for row in ROWS:
        r = results[row.case]
        vs_dask = ratios(r["zask"], r["dask"], row)
        label = row.label
        if args.quick:
            label = QUICK_LABELS[(row.case, row.field)]
        line = [label, cell(r["zask"], row), cell(r["dask"], row)]
        if ray:
            line.append(cell(r["ray"], row))
        line.append(ratio_cell(vs_dask if r["dask"] else []))
        if ray:
            line.append(ratio_cell(ratios(r["zask"], r["ray"], row) if r["ray"] else []))
        line += [row.target_text, met(row, r["zask"], vs_dask, args.quick)]
        rows.append("| " + " | ".join(line) + " |")
    return "\n".join(rows)


def versions(args):
    found = []
    for name, python, module in (("dask.distributed", args.dask_python, "distributed"),
                                 ("Ray", args.ray_python, "ray")):
        if not python:
            found.append(f"{name}: not run")
            continue
        v = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        found.append(f"{name} {v.stdout.strip() or '?'}")
    return ", ".join(found)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zask-bench", required=True)
    parser.add_argument("--dask-python")
    parser.add_argument("--ray-python")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = measure(args)
    minutes = (time.perf_counter() - t0) / 60
    load_after = os.getloadavg()
    print(f"Measured {started:%Y-%m-%d %H:%M} UTC, {args.rounds} round(s) in {minutes:.0f} min"
          f"{' (QUICK MODE: small sizes, the figures mean nothing)' if args.quick else ''}; "
          f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"Zask secured (CURVE), {versions(args)}.")
    print()
    print(table(results, args))
    print()
    print("Cells: every round's figure, r1 / r2 / …; ratios > 1: Zask better, per round.")
    problems = [(case, system, r) for case, by in results.items() for system, rs in by.items()
                for r in rs if "error" in r or not r.get("ok")]
    for case, system, r in problems:
        print(f"- {system} {case}: {r.get('error') or 'wrong result'}")
    # The script fails when Zask did; a peer's failure is reported in the table only.
    return 1 if any(s == "zask" for _, s, _ in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
