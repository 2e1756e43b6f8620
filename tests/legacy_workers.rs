//! Unmodified 2015 Python workers (`dask.distributed.Worker`, dask 0.7.5 on Python 3.6) join a
//! real `zask-scheduler` beside a Rust `zask-worker`, and the unmodified 2015 client runs
//! graphs on them: lambdas and a user's functions run on the Python workers, graphs mixing
//! Rust-run and Python-run tasks give the right answer, task errors raise the Python class,
//! a bag over a user's function stored by one client is computed by another, a result Zask
//! cannot hold is a prompt error, and killing a Python worker mid-graph still gives the right
//! answer (its task reruns on the other). Without Python 3.6 these tests FAIL, saying so.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::legacy::{python_worker, run_script};
use common::{wait_until, TestCluster, DEADLINE};

/// Bounds a client script's whole run (it also bounds each of its receives).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

/// Waits until the scheduler lists `n` workers that run Python.
fn wait_for_python_workers(cluster: &TestCluster, n: usize) {
    let client = cluster.client();
    wait_until(&format!("{n} Python workers to join"), DEADLINE, || {
        let workers = client.workers().expect("status");
        (workers.iter().filter(|w| w.runs_python).count() == n).then_some(())
    });
}

const MIXED: &str = r#"
import operator, sys, time, zmq
from dask.distributed import Client
import dask.bag as db

address, python_worker = sys.argv[1], sys.argv[2].encode()
c = Client(address)
c.socket.setsockopt(zmq.RCVTIMEO, 30000)
assert python_worker in c.registered_workers, c.registered_workers
print('registered', sorted(c.registered_workers), flush=True)

# A lambda runs on the Python worker.
assert c.get({'x': 1, 'y': (lambda v: v + 1, 'x')}, 'y') == 2
print('lambda', 2, flush=True)

# Rust-run (add, sum) and Python-run (the lambdas) tasks in one graph, values crossing both
# ways, keys of both kinds.
dsk = {'a': 2, 'b': (lambda v: v * 10, 'a'), 'c': (operator.add, 'b', 1),
       ('d', 0): (lambda u, v: [u, v], 'c', 'b'), 'e': (sum, ('d', 0)),
       'f': (lambda xs: [x for x in xs][::-1], [('d', 0), 'e'])}
r = c.get(dsk, [('d', 0), 'e', 'f'])
assert r == [[21, 20], 41, [41, [21, 20]]], r
print('mixed', r, flush=True)

# A chain of Python tasks: each one's input is the result the task before it just computed on
# the same Python worker (and deleted there after handing it over). The worker runs messages
# on a pool in no particular order, so a deletion not waited for can run after the next
# task's setitem of that key, and the task then sees the key itself instead of its value.
chain = {'n-0': 0}
for i in range(1, 60):
    chain['n-%d' % i] = (lambda v: v + 1, 'n-%d' % (i - 1))
assert c.get(chain, 'n-59') == 59, c.get(chain, 'n-59')
print('chain', 59, flush=True)

# A user's function, defined here, runs there.
def double(v):
    return 2 * v
assert c.get({'x': 21, 'y': (double, 'x')}, 'y') == 42
print('user function', 42, flush=True)

# Task errors raise the Python class, and poison nothing.
for task, cls in [((lambda v: v / 0, 'x'), ZeroDivisionError),
                  ((lambda v: [].pop(), 'x'), IndexError),
                  ((lambda v: {}['missing'], 'x'), KeyError),
                  ((lambda v: v.nope, 'x'), AttributeError)]:
    try:
        c.get({'x': 1, 'y': task}, 'y')
    except cls as e:
        print('raised', cls.__name__, e, flush=True)
    else:
        raise AssertionError('no %s' % cls.__name__)
# A dependent of a failed Python task fails too, with its error.
try:
    c.get({'x': 1, 'y': (lambda v: v / 0, 'x'), 'z': (operator.add, 'y', 1)}, 'z')
except ZeroDivisionError as e:
    print('dependent raised ZeroDivisionError', e, flush=True)
else:
    raise AssertionError('the dependent of a failed task did not raise')

# A result Zask's values cannot hold is a prompt error naming it, not a hang.
start = time.time()
try:
    c.get({'x': 1, 'y': (lambda v: {v}, 'x')}, 'y')
except NotImplementedError as e:
    assert 'set' in str(e), e
    print('a set result raised NotImplementedError:', e, flush=True)
else:
    raise AssertionError('a set result did not raise')
assert time.time() - start < 10, time.time() - start

# The seed's collection: a bag over a user's function stored by one client, computed from
# another.
def inc(x):
    return x + 1
c.set_collection('mybag', db.from_sequence(range(5), npartitions=2).map(inc))
c2 = Client(address)
c2.socket.setsockopt(zmq.RCVTIMEO, 30000)
b = c2.get_collection('mybag')
parts = c2.get(b.dask, b._keys())
flat = [x for part in parts for x in part]
assert flat == [1, 2, 3, 4, 5], parts
print('mybag', flat, flush=True)
# Its reductions: Python's map partitions, Rust's sum.
total = b.sum()
assert c2.get(total.dask, total.key) == 15
print('mybag sum', 15, flush=True)

assert c.get({'x': 2, 'y': (operator.sub, 'x', 5)}, 'y') == -3
print('MIXED OK', flush=True)
"#;

#[test]
fn python_workers_run_what_rust_workers_cannot_beside_them() {
    let cluster = TestCluster::options()
        .workers(1)
        .legacy_ports()
        .scheduler_args(&["--python-worker-timeout-ms", "5000"])
        .start();
    cluster.wait_for_workers(1);
    let (python, python_address) =
        python_worker(cluster.dir(), cluster.legacy_address_to_workers(), 0);
    wait_for_python_workers(&cluster, 1);
    let run = run_script(
        cluster.dir(),
        "mixed.py",
        MIXED,
        &[cluster.legacy_address_to_clients(), &python_address],
        SCRIPT_DEADLINE,
    );
    eprintln!("client script output:\n{}", run.stdout);
    assert!(
        run.status.success() && run.stdout.contains("MIXED OK"),
        "the 2015 client script failed ({}):\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    // The native client sees the Python worker under its own address and pid, running Python.
    let workers = cluster.client().workers().unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w.runs_python && w.name.as_ref() == python_address && w.pid == python.pid()),
        "{workers:?}"
    );
    assert_eq!(workers.iter().filter(|w| !w.runs_python).count(), 1);
}

const KILLED: &str = r#"
import sys, zmq
from dask.distributed import Client
c = Client(sys.argv[1])
c.socket.setsockopt(zmq.RCVTIMEO, 60000)
# Each task leaves a file naming itself and the worker process that ran it, then takes a
# second: the test kills a Python worker while one of its tasks runs.
square = lambda i: (open('started-%d-%d' % (i, __import__('os').getpid()), 'w').close(),
                    __import__('time').sleep(1.0), i * i)[2]
dsk = {('s', i): (square, i) for i in range(8)}
dsk['total'] = (sum, [('s', i) for i in range(8)])
print('total', c.get(dsk, 'total'), flush=True)
"#;

#[test]
fn killing_a_python_worker_mid_graph_still_gives_the_right_answer() {
    let cluster = TestCluster::options()
        .workers(1)
        .legacy_ports()
        .scheduler_args(&["--python-worker-timeout-ms", "3000"])
        .start();
    cluster.wait_for_workers(1);
    let (mut first, _) = python_worker(cluster.dir(), cluster.legacy_address_to_workers(), 0);
    let (_second, _) = python_worker(cluster.dir(), cluster.legacy_address_to_workers(), 1);
    wait_for_python_workers(&cluster, 2);
    let victim = first.pid();
    let dir = cluster.dir().to_owned();
    let address = cluster.legacy_address_to_clients().to_owned();
    let script = std::thread::spawn(move || {
        run_script(&dir, "killed.py", KILLED, &[&address], SCRIPT_DEADLINE)
    });
    // Which task ran on which worker process, from the files the tasks leave.
    let started = |dir: &std::path::Path| -> HashMap<u32, HashSet<u32>> {
        let mut by_task: HashMap<u32, HashSet<u32>> = HashMap::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("started-") else {
                continue;
            };
            let (task, pid) = rest.split_once('-').unwrap();
            by_task
                .entry(task.parse().unwrap())
                .or_default()
                .insert(pid.parse().unwrap());
        }
        by_task
    };
    // As soon as the victim has started a task, it dies with it (the task takes a second).
    let killed_task = wait_until("the first Python worker to start a task", DEADLINE, || {
        started(cluster.dir())
            .into_iter()
            .find(|(_, pids)| pids.contains(&victim))
            .map(|(task, _)| task)
    });
    first.kill();
    let run = script.join().unwrap();
    assert!(
        run.status.success(),
        "the client script failed ({}):\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let expected: u32 = (0..8).map(|i| i * i).sum();
    assert!(
        run.stdout.contains(&format!("total {expected}")),
        "the right answer despite the kill: {}",
        run.stdout
    );
    // The task the victim died in ran again, on the other Python worker.
    let reran = started(cluster.dir());
    assert!(
        reran[&killed_task].iter().any(|&pid| pid != victim),
        "task {killed_task} was started again by another worker: {reran:?}"
    );
    let log = std::fs::read_to_string(cluster.dir().join("scheduler.log")).unwrap();
    assert!(
        log.contains("silent for more than 3000 ms: removed"),
        "the removal is logged:\n{log}"
    );
}

const WAITS: &str = r#"
import sys, zmq
from dask.distributed import Client
c = Client(sys.argv[1])
c.socket.setsockopt(zmq.RCVTIMEO, 60000)
print('y', c.get({'x': 1, 'y': (lambda v: v + 1, 'x')}, 'y'), flush=True)
"#;

#[test]
fn a_python_task_waits_with_a_log_line_until_a_python_worker_joins() {
    let cluster = TestCluster::options().workers(1).legacy_ports().start();
    cluster.wait_for_workers(1);
    let dir = cluster.dir().to_owned();
    let address = cluster.legacy_address_to_clients().to_owned();
    let script = std::thread::spawn(move || {
        run_script(&dir, "waits.py", WAITS, &[&address], SCRIPT_DEADLINE)
    });
    let log = || std::fs::read_to_string(cluster.dir().join("scheduler.log")).unwrap();
    wait_until("the scheduler to log the task's wait", DEADLINE, || {
        log()
            .contains("waits: no connected worker can run it")
            .then_some(())
    });
    let (_python, _) = python_worker(cluster.dir(), cluster.legacy_address_to_workers(), 0);
    let run = script.join().unwrap();
    assert!(
        run.status.success() && run.stdout.contains("y 2"),
        "the task ran once a Python worker joined ({}):\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}
