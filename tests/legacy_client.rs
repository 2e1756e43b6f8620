//! The unmodified 2015 Python client (`from dask.distributed import Client`, dask 0.7.5 on
//! Python 3.6) against a real `zask-scheduler` and `zask-worker`: it registers, asks status
//! and the workers, runs graphs whose functions the Rust workers have (`c.get`, nested keys,
//! `keep_results`, dask.bag graphs of known functions), gets the Python exception class for a
//! task error and a missing key, and a `ValueError` for a Python-only function when no Python
//! worker joins in time; its collections are stored verbatim, read back and computed by
//! another 2015 client, listed (and refused with a typed error) by the native client, and a
//! missing one is a prompt `KeyError`; its `close(close_scheduler=True)` is ignored, and the
//! native client keeps working. On the worker port, a 2015-style `status` is answered and a
//! heartbeat registers a Python worker. The Python environment comes from
//! `compat/tests/legacy/setup.sh` (which `.ci/run` calls; run here too when the venv is
//! missing). Without a Python 3.6 this test FAILS, saying so: it never passes silently.

mod common;

use std::time::Duration;

use common::legacy::run_script;
use common::{TestCluster, DEADLINE};
use zask::protocol::RequestError;
use zask::{graph, ClientError, Collection, GetOptions, Value};

/// Bounds the Python script's whole run (it also bounds each of its receives).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(90);

const SCRIPT: &str = r#"
import datetime, operator, sys
import zmq
from dask.distributed import Client
import dask.bag as db

address, worker, worker_port = sys.argv[1], sys.argv[2].encode(), sys.argv[3]

c = Client(address)
# Every later receive is bounded: a missing reply raises zmq.Again instead of hanging.
c.socket.setsockopt(zmq.RCVTIMEO, 20000)
assert worker in c.registered_workers, c.registered_workers
print('registered', sorted(c.registered_workers), flush=True)

status = c.scheduler_status()
assert status == 'OK', status
print('status', status, flush=True)

workers = c.get_registered_workers()
assert worker in workers, workers
info = workers[worker]
assert isinstance(info['pid'], int) and info['pid'] > 0, info
assert isinstance(info['last-seen'], datetime.datetime), info
print('workers', sorted(workers), flush=True)

import time

def timed(what, f):
    # Prompt answers, never hangs: each get is bounded by the socket's RCVTIMEO too.
    start = time.time()
    try:
        return f()
    finally:
        print(what, 'took %.2f s' % (time.time() - start), flush=True)

# The seed example: operator.add runs on the Rust worker.
y = timed('seed', lambda: c.get({'x': 1, 'y': (operator.add, 'x', 2)}, 'y'))
assert y == 3, y
print('seed example', y, flush=True)

# Nested keys come back in their shape; nested tasks, list arguments, builtins.
dsk = {'a': 1, 'b': (operator.mul, 'a', 10), 'c': (sum, ['a', 'b', (operator.neg, 4)]),
       ('t', 0): (max, 'a', 'b', 3), 'l': (len, [1, 2, 3]), 'd': (operator.truediv, 'b', 4),
       'f': (operator.floordiv, -7, 2), 'm': (min, [5, 'a'])}
r = c.get(dsk, [['a', 'b'], 'c', [[('t', 0)], 'd', 'f', 'm'], 'l'])
# len of a list argument works (dask 0.7.5's own workers raised TypeError there).
assert r == [[1, 10], 7, [[10], 2.5, -4, 1], 3], r
assert isinstance(r[2][1], float), r
print('nested keys', r, flush=True)

# keep_results=True, then a second get reusing the kept key.
kept = {'k': 5, 'k2': (operator.add, 'k', 1)}
assert c.get(kept, 'k2', keep_results=True) == 6
kept2 = dict(kept)
kept2['k3'] = (operator.mul, 'k2', 2)
r = c.get(kept2, ['k3', 'k2'])
assert r == [12, 6], r
print('keep_results then reuse', r, flush=True)

# Errors are the Python exception classes.
try:
    c.get({'z': (operator.truediv, 1, 0)}, 'z')
except ZeroDivisionError as e:
    print('truediv by zero raised ZeroDivisionError:', e, flush=True)
else:
    raise AssertionError('1/0 did not raise')
# No Python worker is connected: a lambda waits for one (--unrunnable-timeout-ms 1000 here),
# then fails as the 2015 scheduler failed without workers.
try:
    c.get({'x': 1, 'y': (lambda v: v + 1, 'x')}, 'y')
except ValueError as e:
    assert 'task "y" waited' in str(e) and 'a worker that runs Python' in str(e), e
    print('lambda without a Python worker raised ValueError:', e, flush=True)
else:
    raise AssertionError('a lambda task ran without a Python worker')
try:
    c.get({'x': 1}, 'nope')
except KeyError as e:
    assert e.args == ('nope',), e.args
    print('missing key raised KeyError:', e, flush=True)
else:
    raise AssertionError('a missing key did not raise')
try:
    c.get({'x': 'a', 'y': (operator.add, 'x', 1)}, 'y')
except TypeError as e:
    print("'a' + 1 raised TypeError:", e, flush=True)
else:
    raise AssertionError("'a' + 1 did not raise")
# Errors poison nothing: the next get works.
assert c.get({'x': 2, 'y': (operator.sub, 'x', 5)}, 'y') == -3

# Collections are stored verbatim and shared between clients (one namespace with Zask's own).
b = db.from_sequence(range(5), npartitions=2).map(operator.neg)
timed('set_collection', lambda: c.set_collection('mybag', b))
c2 = Client(address)
c2.socket.setsockopt(zmq.RCVTIMEO, 20000)
b2 = timed('get_collection', lambda: c2.get_collection('mybag'))
assert isinstance(b2, db.Bag), type(b2)
assert (b2.name, b2.npartitions, sorted(b2._keys())) == (b.name, 2, sorted(b._keys())), b2
assert b2.dask.keys() == b.dask.keys(), (b2.dask, b.dask)
print('collection round trip', b2.name, b2.npartitions, flush=True)
# The bag's graph (reify, map over operator.neg) runs on the Rust worker.
parts = timed('compute mybag', lambda: c2.get(b2.dask, b2._keys()))
flat = [x for part in parts for x in part]
assert flat == [0, -1, -2, -3, -4], parts
print('computed mybag', flat, flush=True)
# Its reductions too (sum, count, max: built-ins and toolz.count).
for what, expected in [('sum', -10), ('count', 5), ('max', 0)]:
    r = getattr(b2, what)()
    got = c2.get(r.dask, r.key)
    assert got == expected, (what, got)
    print('mybag', what, got, flush=True)
# A missing collection is a prompt KeyError (the 2015 scheduler hung).
start = time.time()
try:
    c2.get_collection('nope')
except KeyError as e:
    assert 'nope' in str(e), e
    print('missing collection raised KeyError:', e, flush=True)
else:
    raise AssertionError('a missing collection did not raise')
assert time.time() - start < 1.0, time.time() - start
# A collection a Zask client stored cannot be rebuilt by this client: a KeyError saying so.
try:
    c2.get_collection('native')
except KeyError as e:
    assert 'stored by a Zask client' in str(e), e
    print('native collection raised KeyError:', e, flush=True)
else:
    raise AssertionError('a native collection did not raise')
# With a user's function, set/get still round-trip; computing needs a Python worker (none here).
def inc(x):
    return x + 1
bi = db.from_sequence(range(5), npartitions=2).map(inc)
c.set_collection('incbag', bi)
bi2 = c2.get_collection('incbag')
assert bi2.name == bi.name and bi2.npartitions == 2, bi2
try:
    timed('compute incbag', lambda: c2.get(bi2.dask, bi2._keys()))
except ValueError as e:
    assert 'a worker that runs Python' in str(e), e
    print('computing a user function without a Python worker raised ValueError:', e, flush=True)
else:
    raise AssertionError('a user function ran without a Python worker')

# The worker port, as a 2015 worker talks to it (a DEALER whose identity is its address;
# [header, payload], P4): status is answered 'OK' echoing the jobid; a heartbeat (a legacy
# worker registering) gets no reply and makes a Python worker, listed under its address
# (tests/legacy_workers.rs runs tasks on real ones).
import pickle
w = zmq.Context.instance().socket(zmq.DEALER)
w.setsockopt(zmq.IDENTITY, b'tcp://legacy-worker:1')
w.setsockopt(zmq.RCVTIMEO, 20000)
w.setsockopt(zmq.LINGER, 0)
w.connect(worker_port)
def to_scheduler(function, payload, **extra):
    header = dict(function=function, address=b'tcp://legacy-worker:1',
                  timestamp=datetime.datetime.utcnow(), **extra)
    w.send_multipart([pickle.dumps(header, protocol=4), pickle.dumps(payload, protocol=4)])
to_scheduler('heartbeat', {'pid': 1})
to_scheduler('status', {}, jobid=('x', 0))
header, payload = w.recv_multipart()
header, payload = pickle.loads(header), pickle.loads(payload)
assert payload == 'OK', payload
assert header['jobid'] == ('x', 0), header
assert isinstance(header['timestamp'], datetime.datetime), header
assert 'function' not in header, header
print('worker port status', payload, header['jobid'], flush=True)
deadline = time.time() + 10
while b'tcp://legacy-worker:1' not in c.get_registered_workers():
    assert time.time() < deadline, c.get_registered_workers()
    time.sleep(0.05)
print('a heartbeat registers a Python worker', flush=True)

# The client still works after the errors.
assert c.scheduler_status() == 'OK'
# Ignored by Zask (logged): no unauthenticated request shuts it down.
c.close(close_scheduler=True)
print('LEGACY CLIENT OK', flush=True)
"#;

#[test]
fn the_2015_client_registers_runs_graphs_of_builtins_and_gets_python_errors() {
    // Tasks only Python can run fail after a second without a Python worker.
    let cluster = TestCluster::options()
        .workers(1)
        .legacy_ports()
        .scheduler_args(&["--unrunnable-timeout-ms", "1000"])
        .start();
    cluster.wait_for_workers(1);
    let worker = cluster.worker_addresses()[0].clone();
    // A native collection, which the 2015 client is refused (it cannot rebuild it).
    let native = graph! { "x" => 1 };
    cluster
        .client()
        .set_collection("native", &Collection::from_graph(&native, vec!["x".into()]))
        .unwrap();
    let run = run_script(
        cluster.dir(),
        "legacy_client.py",
        SCRIPT,
        &[
            cluster.legacy_address_to_clients(),
            &worker,
            cluster.legacy_address_to_workers(),
        ],
        SCRIPT_DEADLINE,
    );
    let (status, stdout, stderr) = (run.status, run.stdout, run.stderr);
    eprintln!("legacy client script output:\n{stdout}");
    assert!(
        status.success() && stdout.contains("LEGACY CLIENT OK"),
        "the legacy client script failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("workers [b'{worker}']")),
        "the Rust worker is listed: {stdout}"
    );

    // The scheduler did not close on the legacy close(close_scheduler=True), and the native
    // client works as before.
    let client = cluster.client();
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    let names = client.list_collections().unwrap();
    for name in ["mybag", "incbag", "native"] {
        assert!(names.contains(&name.to_owned()), "{name} listed: {names:?}");
    }
    match client.get_collection("mybag") {
        Err(ClientError::Request(RequestError::LegacyCollection { name })) => {
            assert_eq!(name, "mybag")
        }
        other => panic!("expected the typed LegacyCollection error, got {other:?}"),
    }
    assert!(client.get_collection("native").is_ok());
    let g = graph! { "x" => 1, "y" => ("add", "x", 2) };
    assert_eq!(client.get_with(&g, "y", options), Ok(Value::from(3)));
    let log = std::fs::read_to_string(cluster.dir().join("scheduler.log")).unwrap();
    assert!(
        log.contains("asked the scheduler to close") && log.contains("ignored"),
        "the ignored close is logged:\n{log}"
    );
}
