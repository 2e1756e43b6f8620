//! Unit tests of the scheduler state machine, driven directly with no sockets. Every message
//! passes through the real codec, and invariants are checked after every step.

// Tests pick commands out of a list with `Result<Wanted, Command>`: the size of the
// `Err` (the command handed back) does not matter here.
#![allow(clippy::result_large_err)]

use super::*;
use crate::graph::{Expr, Graph, Key};
use crate::protocol::codec::{decode, decode_value, encode, encode_value};
use crate::protocol::{
    ClientRole, ComputeTask, ErredTask, FinishedTask, RequestError, RequestId, TaskError,
    TaskErrorKind, WorkerAddress, WorkerName, WorkerRegistration, WorkerSelector, PROTOCOL_VERSION,
};
use crate::value::Value;
use rustc_hash::FxHashMap as HashMap;

/// Stories and cluster events (their own file, driving the same harness).
mod stories;

/// Flaky workers and their early copies (their own file, driving the same harness).
mod flaky;

struct Harness {
    core: SchedulerCore,
    now: u64,
    /// Commands taken but not yet examined, in order.
    inbox: Vec<Command>,
}

fn client_id(n: u32) -> ConnectionId {
    ConnectionId::from(format!("client-{n}"))
}

fn worker_id(n: u32) -> ConnectionId {
    ConnectionId::from(format!("worker-{n}"))
}

fn address(n: u32) -> WorkerAddress {
    WorkerAddress::from(format!("tcp://w{n}:1"))
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(CoreConfig {
            worker_queue_extra: 1,
            ..CoreConfig::default()
        })
    }

    fn with_config(config: CoreConfig) -> Harness {
        Harness {
            core: SchedulerCore::new(config),
            now: 0,
            inbox: Vec::new(),
        }
    }

    fn step(&mut self, event: Event) {
        // Round-trip through the codec, as the IO layer would.
        let event = match event {
            Event::FromWorker {
                identity,
                msg,
                frames,
            } => Event::FromWorker {
                identity,
                msg: decode(&encode(&msg)).unwrap(),
                frames,
            },
            Event::FromClient {
                identity,
                role,
                msg,
                frames,
            } => Event::FromClient {
                identity,
                role,
                msg: decode(&encode(&msg)).unwrap(),
                frames,
            },
            other => other,
        };
        self.core.handle(self.now, event);
        self.flush();
    }

    fn flush(&mut self) {
        let cmds = self.core.take_commands();
        remember_names(&self.core, &cmds);
        self.inbox.extend(cmds);
        self.core.check_invariants().unwrap();
    }

    fn add_worker(&mut self, n: u32, nthreads: u32) {
        self.step(Event::FromWorker {
            identity: worker_id(n),
            msg: FromWorker::Register(registration(address(n), format!("w{n}"), nthreads, n, None)),
            frames: vec![],
        });
        let id = worker_id(n);
        let pos = self
            .inbox
            .iter()
            .position(|c| {
                matches!(c, Command::ToWorker { identity, msg: ToWorker::Registered { .. }, .. } if *identity == id)
            })
            .expect("the worker is registered");
        self.inbox.remove(pos);
    }

    fn submit(&mut self, client: u32, request: u64, graph: &Graph, outputs: &[&str]) {
        self.step(Event::FromClient {
            identity: client_id(client),
            role: ClientRole::Operator,
            msg: FromClient::Submit {
                request: RequestId(request),
                graph: graph.resolve(&|_| false),
                outputs: outputs.iter().map(|k| Key::from(*k)).collect(),
                keep_results: false,
                restrictions: vec![],
            },
            frames: vec![],
        });
    }

    /// Removes and returns the messages sent to worker `n` so far.
    fn take_worker_msgs(&mut self, n: u32) -> Vec<ToWorker> {
        let id = worker_id(n);
        let mut out = Vec::new();
        self.inbox.retain(|c| match c {
            Command::ToWorker { identity, msg, .. } if *identity == id => {
                out.push(msg.clone());
                false
            }
            _ => true,
        });
        out
    }

    fn take_computes(&mut self, n: u32) -> Vec<ComputeTask> {
        self.take_worker_msgs(n)
            .into_iter()
            .flat_map(|m| match m {
                ToWorker::Compute(ts) => ts,
                _ => vec![],
            })
            .collect()
    }

    fn take_releases(&mut self, n: u32) -> Vec<Key> {
        self.take_worker_msgs(n)
            .into_iter()
            .flat_map(|m| match m {
                ToWorker::Release(ks) => ks,
                _ => vec![],
            })
            .collect()
    }

    /// Removes and returns the replies sent to client `n`, with values decoded.
    fn take_client_msgs(&mut self, n: u32) -> Vec<(ToClient, Vec<Value>)> {
        let id = client_id(n);
        let mut out = Vec::new();
        self.inbox.retain(|c| match c {
            Command::ToClient {
                identity,
                msg,
                frames,
            } if *identity == id => {
                let values = frames.iter().map(|f| decode_value(f).unwrap()).collect();
                out.push((msg.clone(), values));
                false
            }
            _ => true,
        });
        out
    }

    /// Worker `n` reports `key` done with `value`.
    fn finish(&mut self, n: u32, task: &ComputeTask, value: Value) {
        let frame = encode_value(&value);
        let fetched = task
            .dependencies
            .iter()
            .filter(|(_, holders)| !holders.contains(&address(n)))
            .map(|(k, _)| (k.clone(), 8))
            .collect();
        self.step(Event::FromWorker {
            identity: worker_id(n),
            msg: FromWorker::Finished(vec![FinishedTask {
                key: task.key.clone(),
                nbytes: frame.len() as u64,
                fetched,
                has_value: task.report_value,
            }]),
            frames: if task.report_value {
                vec![frame]
            } else {
                vec![]
            },
        });
    }

    fn fail(&mut self, n: u32, key: &Key, message: &str) {
        self.step(Event::FromWorker {
            identity: worker_id(n),
            msg: FromWorker::Erred(vec![ErredTask {
                key: key.clone(),
                error: TaskError {
                    kind: TaskErrorKind::Failed,
                    message: message.into(),
                },
            }]),
            frames: vec![],
        });
    }

    fn kill_worker(&mut self, n: u32) {
        self.now += self.core.config().heartbeat_timeout_ms + 1;
        // Every other worker stays alive.
        let others: Vec<ConnectionId> = self
            .core
            .workers
            .iter()
            .map(|(_, w)| w.identity.clone())
            .filter(|i| *i != worker_id(n))
            .collect();
        for identity in others {
            self.core.handle(
                self.now,
                Event::FromWorker {
                    identity,
                    msg: FromWorker::Heartbeat,
                    frames: vec![],
                },
            );
        }
        self.core.tick(self.now);
        self.flush();
    }
}

thread_local! {
    /// The key each wire key seen in a command stood for (each test runs on its own thread).
    static WIRE_NAMES: std::cell::RefCell<HashMap<Key, Key>> = Default::default();
}

/// Remembers the keys behind the wire keys of these commands, while the core knows them.
fn remember_names(core: &SchedulerCore, commands: &[Command]) {
    let mut seen = Vec::new();
    for c in commands {
        if let Command::ToWorker { msg, .. } = c {
            match msg {
                ToWorker::Compute(ts) => {
                    for t in ts {
                        seen.push(&t.key);
                        seen.extend(t.dependencies.iter().map(|(k, _)| k));
                    }
                }
                ToWorker::PutData { keys, .. }
                | ToWorker::GetData { keys, .. }
                | ToWorker::Release(keys)
                | ToWorker::CheckHeld { keys } => seen.extend(keys.iter()),
                _ => {}
            }
        }
    }
    WIRE_NAMES.with(|names| {
        let mut names = names.borrow_mut();
        for k in seen {
            if let Some(name) = core.key_of(k) {
                names.insert(k.clone(), name);
            }
        }
    });
}

/// A worker's registration as these tests make it (memory store, no keys held).
fn registration(
    address: WorkerAddress,
    name: impl Into<WorkerName>,
    nthreads: u32,
    pid: u32,
    nanny_token: Option<u64>,
) -> WorkerRegistration {
    WorkerRegistration {
        protocol_version: PROTOCOL_VERSION,
        address,
        name: name.into(),
        nthreads,
        memory_limit_bytes: 0,
        pid,
        store: "memory".into(),
        keys: vec![],
        nanny_token,
        runs_python: false,
    }
}

/// The key a wire key (what workers see) stands for.
fn name(key: &Key) -> Key {
    WIRE_NAMES.with(|names| {
        names
            .borrow()
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.clone())
    })
}

/// Dependencies as tests name them.
fn names_of(deps: &[(Key, Vec<WorkerAddress>)]) -> Vec<(Key, Vec<WorkerAddress>)> {
    deps.iter().map(|(k, h)| (name(k), h.clone())).collect()
}

/// Evaluates a compute message the way a worker would, for the built-ins these tests use.
fn run(task: &ComputeTask, inputs: &[(&Key, Value)]) -> Value {
    let expr: Expr = crate::protocol::codec::decode_plain(&task.spec).unwrap();
    // Specs refer to wire keys; tests name inputs by key.
    let lookup = |k: &Key| {
        let name = name(k);
        inputs
            .iter()
            .find(|(x, _)| **x == name || *x == k)
            .unwrap()
            .1
            .clone()
    };
    fn eval(e: &Expr, lookup: &dyn Fn(&Key) -> Value) -> Value {
        match e {
            Expr::Lit(v) => v.clone(),
            Expr::Ref(k) => lookup(k),
            Expr::List(items) => Value::List(items.iter().map(|i| eval(i, lookup)).collect()),
            Expr::Call(f, args) => {
                let args: Vec<i64> = args
                    .iter()
                    .map(|a| eval(a, lookup).as_i64().unwrap())
                    .collect();
                Value::from(match f.as_str() {
                    "inc" => args[0] + 1,
                    "add" => args[0] + args[1],
                    other => panic!("test function {other}"),
                })
            }
        }
    }
    eval(&expr, &lookup)
}

#[test]
fn seed_example_computes_and_releases_everything_afterwards() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(
        1,
        1,
        &crate::graph! { "x" => 1, "y" => ("add", "x", 2) },
        &["y"],
    );
    let x = h.take_computes(1);
    assert_eq!(x.len(), 1);
    assert_eq!(name(&x[0].key), Key::from("x"));
    assert!(!x[0].report_value);
    h.finish(1, &x[0], Value::from(1));
    let y = h.take_computes(1);
    assert_eq!(name(&y[0].key), Key::from("y"));
    assert!(y[0].report_value);
    assert_eq!(
        names_of(&y[0].dependencies),
        vec![(Key::from("x"), vec![address(1)])]
    );
    let xk = Key::from("x");
    let yv = run(&y[0], &[(&xk, Value::from(1))]);
    // x is released as soon as y, its only dependent, is done.
    h.finish(1, &y[0], yv);
    assert_eq!(
        h.take_client_msgs(1),
        vec![(
            ToClient::Values {
                request: RequestId(1),
                positions: vec![]
            },
            vec![Value::from(3)]
        )]
    );
    let mut released: Vec<Key> = h.take_releases(1).iter().map(name).collect();
    released.sort();
    assert_eq!(released, vec![Key::from("x"), Key::from("y")]);
    assert_eq!(h.core.task_count(), 0, "the finished graph is forgotten");
}

#[test]
fn missing_keys_and_cycles_fail_promptly_without_running_anything() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(
        1,
        1,
        &crate::graph! { "y" => ("inc", crate::graph::key("nope")) },
        &["y"],
    );
    let replies = h.take_client_msgs(1);
    assert!(
        matches!(&replies[0].0, ToClient::Failed { request: RequestId(1), error: RequestError::Graph(crate::GraphError::MissingKey { key, .. }) } if *key == Key::from("nope")),
        "{replies:?}"
    );
    h.submit(
        1,
        2,
        &crate::graph! { "a" => ("inc", "b"), "b" => ("inc", "a") },
        &["a"],
    );
    let replies = h.take_client_msgs(1);
    assert!(matches!(
        &replies[0].0,
        ToClient::Failed {
            request: RequestId(2),
            error: RequestError::Graph(crate::GraphError::Cycle { .. })
        }
    ));
    assert!(h.take_computes(1).is_empty());
    assert_eq!(h.core.task_count(), 0);
}

#[test]
fn task_error_fails_dependents_and_the_next_get_succeeds() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    let g = crate::graph! { "x" => ("fail", "boom"), "y" => ("inc", "x") };
    h.submit(1, 1, &g, &["y"]);
    let x = h.take_computes(1);
    h.fail(1, &x[0].key, "boom");
    let replies = h.take_client_msgs(1);
    match &replies[0].0 {
        ToClient::Failed {
            request: RequestId(1),
            error: RequestError::Task { key, error },
        } => {
            assert_eq!(*key, Key::from("x"));
            assert_eq!(error.message, "boom");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.core.task_count(), 0);
    h.submit(
        1,
        2,
        &crate::graph! { "a" => 41, "b" => ("inc", "a") },
        &["b"],
    );
    let a = h.take_computes(1);
    h.finish(1, &a[0], Value::from(41));
    let b = h.take_computes(1);
    let ak = Key::from("a");
    let v = run(&b[0], &[(&ak, Value::from(41))]);
    h.finish(1, &b[0], v);
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(42)]);
}

#[test]
fn worker_lost_while_running_reschedules_its_tasks() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.submit(
        1,
        1,
        &crate::graph! { "a" => ("inc", 1), "b" => ("inc", 2) },
        &["a", "b"],
    );
    let on1 = h.take_computes(1);
    let on2 = h.take_computes(2);
    assert_eq!(
        on1.len() + on2.len(),
        2,
        "both tasks placed, one per worker"
    );
    assert_eq!(on1.len(), 1);
    h.finish(2, &on2[0], Value::from(0));
    h.kill_worker(1);
    let again = h.take_computes(2);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].key, on1[0].key);
    h.finish(2, &again[0], Value::from(0));
    assert!(matches!(
        h.take_client_msgs(1)[0].0,
        ToClient::Values {
            request: RequestId(1),
            ..
        }
    ));
}

#[test]
fn only_lost_intermediate_results_are_recomputed() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    // a on w1, b on w2; c needs both.
    let g = crate::graph! { "a" => ("inc", 1), "b" => ("inc", 2), "c" => ("add", "a", "b") };
    h.submit(1, 1, &g, &["c"]);
    let on1 = h.take_computes(1);
    let on2 = h.take_computes(2);
    h.finish(1, &on1[0], Value::from(2));
    h.finish(2, &on2[0], Value::from(3));
    let c: Vec<ComputeTask> = h
        .take_computes(1)
        .into_iter()
        .chain(h.take_computes(2))
        .collect();
    assert_eq!(c.len(), 1);
    // The worker holding b dies before c runs anywhere else: only b is recomputed.
    let holder_of_b = if name(&on2[0].key) == Key::from("b") {
        2
    } else {
        1
    };
    let survivor = 3 - holder_of_b;
    h.kill_worker(holder_of_b);
    let redo = h.take_computes(survivor);
    let keys: Vec<Key> = redo.iter().map(|t| name(&t.key)).collect();
    assert_eq!(
        keys,
        vec![Key::from("b")],
        "only the lost input is recomputed"
    );
    h.finish(survivor, &redo[0], Value::from(3));
    let c = h.take_computes(survivor);
    assert_eq!(c.len(), 1);
    h.finish(survivor, &c[0], Value::from(5));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(5)]);
}

#[test]
fn placement_prefers_the_worker_holding_the_inputs() {
    let mut h = Harness::with_config(CoreConfig {
        worker_queue_extra: 4,
        ..CoreConfig::default()
    });
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.submit(1, 1, &crate::graph! { "x" => 1 }, &["x"]);
    let computes: Vec<(u32, ComputeTask)> = [1, 2]
        .into_iter()
        .flat_map(|n| h.take_computes(n).into_iter().map(move |c| (n, c)))
        .collect();
    let (holder, x) = &computes[0];
    h.finish(*holder, x, Value::from(1));
    h.take_client_msgs(1);
    // x is forgotten after the get; keep it this time.
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Submit {
            request: RequestId(2),
            graph: crate::graph! { "x" => 1 }.resolve(&|_| false),
            outputs: vec!["x".into()],
            keep_results: true,
            restrictions: vec![],
        },
        frames: vec![],
    });
    let computes: Vec<(u32, ComputeTask)> = [1, 2]
        .into_iter()
        .flat_map(|n| h.take_computes(n).into_iter().map(move |c| (n, c)))
        .collect();
    let (holder, x) = &computes[0];
    h.finish(*holder, x, Value::from(1));
    h.take_client_msgs(1);
    let mut g = Graph::new();
    for i in 0..3 {
        g.insert(format!("y{i}"), ("inc", "x"));
    }
    g.insert("x", 1);
    let outs: Vec<String> = (0..3).map(|i| format!("y{i}")).collect();
    let outs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
    h.submit(1, 3, &g, &outs);
    assert_eq!(h.take_computes(*holder).len(), 3, "all go where x is");
}

#[test]
fn workers_never_get_more_than_threads_plus_queue() {
    let mut h = Harness::new(); // queue extra 1
    h.add_worker(1, 2);
    let mut g = Graph::new();
    for i in 0..10 {
        g.insert(format!("t{i}"), ("inc", i));
    }
    let outs: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let outs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
    h.submit(1, 1, &g, &outs);
    let mut done = 0;
    loop {
        let batch = h.take_computes(1);
        if batch.is_empty() {
            break;
        }
        assert!(
            batch.len() <= 3,
            "2 threads + 1 queued, got {}",
            batch.len()
        );
        for t in batch {
            h.finish(1, &t, Value::from(0));
            done += 1;
        }
    }
    assert_eq!(done, 10);
    assert_eq!(h.take_client_msgs(1)[0].1.len(), 10);
}

#[test]
fn same_key_same_definition_is_shared_and_a_different_one_lives_beside_it() {
    let mut h = Harness::new();
    h.add_worker(1, 4);
    h.submit(1, 1, &crate::graph! { "x" => ("inc", 1) }, &["x"]);
    h.submit(2, 1, &crate::graph! { "x" => ("inc", 1) }, &["x"]);
    let x = h.take_computes(1);
    assert_eq!(x.len(), 1, "computed once for both clients");
    h.submit(3, 1, &crate::graph! { "x" => ("inc", 5) }, &["x"]);
    let x5 = h.take_computes(1);
    assert_eq!(x5.len(), 1, "another definition is another task");
    assert_ne!(x5[0].key, x[0].key);
    assert_eq!(name(&x5[0].key), Key::from("x"));
    h.finish(1, &x5[0], Value::from(6));
    h.finish(1, &x[0], Value::from(2));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(2)]);
    assert_eq!(h.take_client_msgs(2)[0].1, vec![Value::from(2)]);
    assert_eq!(h.take_client_msgs(3)[0].1, vec![Value::from(6)]);
}

#[test]
fn scattered_data_is_placed_gathered_and_used_in_graphs() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Scatter {
            request: RequestId(1),
            keys: vec!["a".into()],
        },
        frames: vec![encode_value(&Value::from(10))],
    });
    let msgs = h.take_worker_msgs(1);
    let ToWorker::PutData { request, keys } = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(keys.len(), 1);
    let wire = keys[0].clone();
    h.step(Event::FromWorker {
        identity: worker_id(1),
        msg: FromWorker::Stored { request: *request },
        frames: vec![],
    });
    assert_eq!(h.core.key_of(&wire), Some(Key::from("a")));
    assert!(matches!(
        h.take_client_msgs(1)[0].0,
        ToClient::Scattered { .. }
    ));
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Submit {
            request: RequestId(2),
            graph: crate::graph! { "b" => ("inc", "a") }.resolve(&|k| *k == Key::from("a")),
            outputs: vec!["b".into()],
            keep_results: false,
            restrictions: vec![],
        },
        frames: vec![],
    });
    let b = h.take_computes(1);
    assert_eq!(name(&b[0].dependencies[0].0), Key::from("a"));
    h.finish(1, &b[0], Value::from(11));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(11)]);
    // Scattered data outlives the get that used it.
    assert_eq!(h.core.task_state(&"a".into()), Some(TaskState::Memory));
    // Losing its only holder loses it for good: a get that needs it fails, naming it.
    h.kill_worker(1);
    h.add_worker(2, 1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Gather {
            request: RequestId(3),
            keys: vec!["a".into()],
        },
        frames: vec![],
    });
    assert!(matches!(
        h.take_client_msgs(1)[0].0,
        ToClient::Failed {
            request: RequestId(3),
            ..
        }
    ));
}

#[test]
fn a_client_that_leaves_releases_its_work() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(
        1,
        1,
        &crate::graph! { "a" => ("inc", 1), "b" => ("inc", "a") },
        &["b"],
    );
    let a = h.take_computes(1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Goodbye,
        frames: vec![],
    });
    assert_eq!(h.take_releases(1), vec![a[0].key.clone()]);
    // The late result is dropped, not stored.
    h.finish(1, &a[0], Value::from(2));
    assert_eq!(h.take_releases(1), vec![a[0].key.clone()]);
    assert_eq!(h.core.task_count(), 0);
}

#[test]
fn messages_from_unknown_workers_ask_them_to_register() {
    let mut h = Harness::new();
    h.step(Event::FromWorker {
        identity: worker_id(9),
        msg: FromWorker::Heartbeat,
        frames: vec![],
    });
    assert!(matches!(h.take_worker_msgs(9)[0], ToWorker::UnknownWorker));
}

#[test]
fn a_dropped_connection_pings_everyone_and_removes_the_silent() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.submit(
        1,
        1,
        &crate::graph! { "a" => ("inc", 1), "b" => ("inc", 2) },
        &["a", "b"],
    );
    let on1 = h.take_computes(1);
    let on2 = h.take_computes(2);
    h.now += 10;
    h.step(Event::WorkerConnectionLost);
    assert!(h.take_worker_msgs(1).contains(&ToWorker::Ping));
    assert!(h.take_worker_msgs(2).contains(&ToWorker::Ping));
    // Worker 2 answers, worker 1 (killed) does not.
    h.now += 100;
    h.step(Event::FromWorker {
        identity: worker_id(2),
        msg: FromWorker::Heartbeat,
        frames: vec![],
    });
    assert_eq!(
        h.core.next_deadline(),
        Some(10 + h.core.config().probe_timeout_ms)
    );
    h.now = 10 + h.core.config().probe_timeout_ms;
    h.core.tick(h.now);
    h.flush();
    assert_eq!(
        h.core.status().workers.len(),
        1,
        "well before the heartbeat timeout"
    );
    let msgs = h.take_worker_msgs(2);
    assert!(msgs.contains(&ToWorker::PeersLost(vec![address(1)])));
    let moved: Vec<Key> = msgs
        .into_iter()
        .flat_map(|m| match m {
            ToWorker::Compute(ts) => ts.into_iter().map(|t| t.key).collect(),
            _ => vec![],
        })
        .collect();
    assert_eq!(moved, vec![on1[0].key.clone()]);
    h.finish(2, &on2[0], Value::from(3));
}

#[test]
fn replicated_scattered_data_survives_losing_a_holder_and_is_topped_up() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Scatter {
            request: RequestId(1),
            keys: vec!["a".into()],
        },
        frames: vec![encode_value(&Value::from(10))],
    });
    let (holder, other) = match h.take_worker_msgs(1).as_slice() {
        [ToWorker::PutData { request, .. }] => {
            let r = *request;
            h.step(Event::FromWorker {
                identity: worker_id(1),
                msg: FromWorker::Stored { request: r },
                frames: vec![],
            });
            (1, 2)
        }
        _ => {
            let ToWorker::PutData { request, .. } = h.take_worker_msgs(2)[0].clone() else {
                panic!("scatter went nowhere")
            };
            h.step(Event::FromWorker {
                identity: worker_id(2),
                msg: FromWorker::Stored { request },
                frames: vec![],
            });
            (2, 1)
        }
    };
    h.take_client_msgs(1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Replicate {
            request: RequestId(2),
            keys: vec!["a".into()],
            replicas: 2,
        },
        frames: vec![],
    });
    let copy = h.take_computes(other);
    assert_eq!(copy.len(), 1);
    assert_eq!(
        names_of(&copy[0].dependencies),
        vec![(Key::from("a"), vec![address(holder)])]
    );
    assert!(
        h.take_client_msgs(1).is_empty(),
        "answers once the copy exists"
    );
    h.finish(other, &copy[0], Value::from(10));
    assert_eq!(
        h.take_client_msgs(1)[0].0,
        ToClient::Done {
            request: RequestId(2)
        }
    );
    // The first holder dies: the data survives, and a newcomer gets a fresh copy.
    h.kill_worker(holder);
    assert_eq!(h.core.task_state(&"a".into()), Some(TaskState::Memory));
    h.add_worker(3, 1);
    let copy = h.take_computes(3);
    assert_eq!(copy.len(), 1, "topped up to 2 copies");
    assert_eq!(
        names_of(&copy[0].dependencies),
        vec![(Key::from("a"), vec![address(other)])]
    );
}

#[test]
fn a_ping_fails_the_requests_this_scheduler_does_not_know() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(1, 7, &crate::graph! { "a" => ("inc", 1) }, &["a"]);
    // Request 7 is in progress; 5 was lost with an earlier scheduler process.
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Ping {
            pending: vec![RequestId(5), RequestId(7)],
        },
        frames: vec![],
    });
    let replies: Vec<ToClient> = h.take_client_msgs(1).into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        replies,
        vec![
            ToClient::Failed {
                request: RequestId(5),
                error: RequestError::SchedulerRestarted
            },
            ToClient::Pong
        ]
    );
}

#[test]
fn restricted_tasks_run_only_on_their_workers_and_wait_for_them() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Submit {
            request: RequestId(1),
            graph: crate::graph! { "a" => ("inc", 1), "b" => ("inc", "a") }.resolve(&|_| false),
            outputs: vec!["b".into()],
            keep_results: false,
            restrictions: vec![("b".into(), vec![WorkerSelector::Name("w2".into())])],
        },
        frames: vec![],
    });
    let a = h.take_computes(1);
    h.finish(1, &a[0], Value::from(2));
    assert!(h.take_computes(1).is_empty(), "b may not run on w1");
    // Restrictions name workers by address or by name; w2 joins later.
    h.add_worker(2, 1);
    let b = h.take_computes(2);
    assert_eq!(name(&b[0].key), Key::from("b"));
    assert_eq!(
        names_of(&b[0].dependencies),
        vec![(Key::from("a"), vec![address(1)])]
    );
    h.finish(2, &b[0], Value::from(3));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(3)]);
}

#[test]
fn a_retiring_worker_hands_its_results_over_before_it_is_closed() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.submit(
        1,
        1,
        &crate::graph! { "a" => ("inc", 1), "b" => ("inc", "a"), "c" => ("inc", 9) },
        &["b", "c"],
    );
    // a and c start, one per worker.
    let on1 = h.take_computes(1);
    let on2 = h.take_computes(2);
    let (mut w_a, mut a) = (1, None);
    for (w, ts) in [(1, &on1), (2, &on2)] {
        for t in ts {
            if name(&t.key) == Key::from("a") {
                (w_a, a) = (w, Some(t.clone()));
            }
        }
    }
    let a = a.expect("a was placed");
    h.finish(w_a, &a, Value::from(2));
    // b goes where a is; the holder of a is asked to leave before b runs.
    let b = h.take_computes(w_a);
    let other = 3 - w_a;
    h.step(Event::FromWorker {
        identity: worker_id(w_a),
        msg: FromWorker::Retire,
        frames: vec![],
    });
    // a exists nowhere else: a copy is made on the other worker first.
    let copies = h.take_computes(other);
    assert!(
        copies.iter().any(|t| name(&t.key) == Key::from("a")),
        "{copies:?}"
    );
    assert!(
        !h.take_worker_msgs(w_a).contains(&ToWorker::Close),
        "not closed while it runs b and holds the only a"
    );
    for c in copies.iter().filter(|t| name(&t.key) == Key::from("a")) {
        h.finish(other, c, Value::from(2));
    }
    h.finish(w_a, &b[0], Value::from(3));
    // b, wanted by the client until c is done, exists only there too: it is copied as well.
    let copies = h.take_computes(other);
    let b_copy = copies
        .iter()
        .find(|t| name(&t.key) == Key::from("b"))
        .expect("b is copied");
    assert!(!h.take_worker_msgs(w_a).contains(&ToWorker::Close));
    h.finish(other, b_copy, Value::from(3));
    assert!(h.take_worker_msgs(w_a).contains(&ToWorker::Close));
    assert_eq!(h.core.status().workers.len(), 1);
    // Nothing was blamed, and b's value still reaches the client once c is done.
    let c: Vec<ComputeTask> = on1
        .iter()
        .chain(on2.iter())
        .filter(|t| name(&t.key) == Key::from("c"))
        .cloned()
        .collect();
    let c_worker = if on1.iter().any(|t| name(&t.key) == Key::from("c")) {
        1
    } else {
        2
    };
    if c_worker == other {
        h.finish(other, &c[0], Value::from(10));
    } else {
        let again = h.take_computes(other);
        let c = again
            .iter()
            .find(|t| name(&t.key) == Key::from("c"))
            .expect("c moved");
        h.finish(other, c, Value::from(10));
    }
    let replies = h.take_client_msgs(1);
    assert_eq!(
        replies.last().unwrap().1,
        vec![Value::from(3), Value::from(10)]
    );
}

#[test]
fn a_journaled_request_cancelled_during_recovery_is_not_resumed() {
    let mut h = Harness::with_config(CoreConfig {
        journal: true,
        ..CoreConfig::default()
    });
    let graph = crate::graph! { "a" => ("inc", 1) }.resolve(&|_| false);
    h.core.recover(
        0,
        Recovered {
            computations: vec![(
                client_id(1),
                RequestId(4),
                Submission {
                    graph,
                    outputs: vec!["a".into()],
                    keep_results: false,
                    restrictions: vec![],
                },
            )],
            ..Recovered::default()
        },
    );
    h.add_worker(1, 1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Cancel {
            request: RequestId(4),
        },
        frames: vec![],
    });
    let journal: Vec<&JournalOp> = h
        .inbox
        .iter()
        .filter_map(|c| match c {
            Command::Journal(op) => Some(op),
            _ => None,
        })
        .collect();
    assert_eq!(
        journal,
        vec![&JournalOp::DeleteComputation {
            client: client_id(1),
            request: RequestId(4)
        }]
    );
    h.now = h.core.config().recovery_grace_ms + 1;
    h.core.tick(h.now);
    h.flush();
    assert!(h.take_computes(1).is_empty(), "nothing resumes");
    assert_eq!(h.core.task_count(), 0);
}

// ---- hardening: redefinitions, trust boundaries, bounds ----

impl Harness {
    fn submit_keep(&mut self, client: u32, request: u64, graph: &Graph, outputs: &[&str]) {
        self.step(Event::FromClient {
            identity: client_id(client),
            role: ClientRole::Operator,
            msg: FromClient::Submit {
                request: RequestId(request),
                graph: graph.resolve(&|_| false),
                outputs: outputs.iter().map(|k| Key::from(*k)).collect(),
                keep_results: true,
                restrictions: vec![],
            },
            frames: vec![],
        });
    }

    fn gather(&mut self, client: u32, request: u64, keys: &[&str]) {
        self.step(Event::FromClient {
            identity: client_id(client),
            role: ClientRole::Operator,
            msg: FromClient::Gather {
                request: RequestId(request),
                keys: keys.iter().map(|k| Key::from(*k)).collect(),
            },
            frames: vec![],
        });
    }

    /// Runs every compute sent to worker `n` (inputs from `values`, by key) until none is left.
    fn run_all(&mut self, n: u32, values: &mut Vec<(Key, Value)>) {
        loop {
            let computes = self.take_computes(n);
            if computes.is_empty() {
                return;
            }
            for t in computes {
                let inputs: Vec<(&Key, Value)> =
                    values.iter().map(|(k, v)| (k, v.clone())).collect();
                let v = run(&t, &inputs);
                values.push((t.key.clone(), v.clone()));
                self.finish(n, &t, v);
            }
        }
    }

    fn worker_says(&mut self, n: u32, msg: FromWorker, frames: Vec<Frame>) {
        self.step(Event::FromWorker {
            identity: worker_id(n),
            msg,
            frames,
        });
    }
}

#[test]
fn kept_key_redefined_by_the_next_graph_keeps_both_definitions() {
    // The user report: keep y = inc(x) with x = 1, then compute z = add(y, x) with y = inc(5)
    // and x = 3 in a graph of its own. The core used to panic here.
    let mut h = Harness::new();
    h.add_worker(1, 2);
    let mut values = Vec::new();
    h.submit_keep(
        1,
        1,
        &crate::graph! { "x" => 1, "y" => ("inc", "x") },
        &["y"],
    );
    h.run_all(1, &mut values);
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(2)]);
    h.submit(
        1,
        2,
        &crate::graph! { "y" => ("inc", 5), "x" => 3, "z" => ("add", "y", "x") },
        &["z"],
    );
    h.run_all(1, &mut values);
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(9)]);
    // The kept y is still the one that was kept; the next get works.
    h.gather(1, 3, &["y"]);
    let ToWorker::GetData { request, keys } = h.take_worker_msgs(1).remove(0) else {
        panic!("the holder of y is asked for it")
    };
    let value = values
        .iter()
        .find(|(k, _)| *k == keys[0])
        .unwrap()
        .1
        .clone();
    h.worker_says(
        1,
        FromWorker::Data {
            request,
            found: keys,
            missing: vec![],
        },
        vec![encode_value(&value)],
    );
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(2)]);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Submit {
            request: RequestId(4),
            graph: crate::graph! { "w" => ("inc", "y") }.resolve(&|k| *k == Key::from("y")),
            outputs: vec!["w".into()],
            keep_results: false,
            restrictions: vec![],
        },
        frames: vec![],
    });
    // w uses the kept y (it is not defined in this graph).
    h.run_all(1, &mut values);
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(3)]);
}

#[test]
fn a_scatter_replaces_the_named_value_but_not_what_running_graphs_use() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    let scatter = |h: &mut Harness, request: u64, v: i64| {
        h.step(Event::FromClient {
            identity: client_id(1),
            role: ClientRole::Operator,
            msg: FromClient::Scatter {
                request: RequestId(request),
                keys: vec!["a".into()],
            },
            frames: vec![encode_value(&Value::from(v))],
        });
        let msgs = h.take_worker_msgs(1);
        let ToWorker::PutData { request: put, keys } = &msgs[0] else {
            panic!("{msgs:?}")
        };
        let key = keys[0].clone();
        h.worker_says(1, FromWorker::Stored { request: *put }, vec![]);
        h.take_client_msgs(1);
        key
    };
    let a10 = scatter(&mut h, 1, 10);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Submit {
            request: RequestId(2),
            graph: crate::graph! { "b" => ("inc", "a") }.resolve(&|k| *k == Key::from("a")),
            outputs: vec!["b".into()],
            keep_results: false,
            restrictions: vec![],
        },
        frames: vec![],
    });
    let b = h.take_computes(1);
    let a20 = scatter(&mut h, 3, 20);
    assert_ne!(a10, a20, "a new scatter is a new value");
    // b still gets the value it was submitted with.
    assert_eq!(b[0].dependencies[0].0, a10);
    h.finish(1, &b[0], Value::from(11));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(11)]);
    // The old value is dropped once b no longer needs it.
    assert!(h.take_releases(1).contains(&a10));
    assert_eq!(h.core.task_state(&"a".into()), Some(TaskState::Memory));
}

#[test]
fn a_forged_result_from_another_worker_never_reaches_the_client() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(1, 1, &crate::graph! { "x" => ("inc", 1) }, &["x"]);
    let x = h.take_computes(1);
    h.add_worker(2, 1);
    // Worker 2 was never given x: its "result" is ignored and it is told to drop it.
    h.finish(2, &x[0], Value::from(666));
    assert!(h.take_client_msgs(1).is_empty());
    assert_eq!(h.take_releases(2), vec![x[0].key.clone()]);
    h.fail(2, &x[0].key, "forged");
    assert!(h.take_client_msgs(1).is_empty());
    h.finish(1, &x[0], Value::from(2));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(2)]);
}

#[test]
fn data_from_a_worker_that_was_not_asked_is_ignored() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.submit_keep(1, 1, &crate::graph! { "x" => ("inc", 1) }, &["x"]);
    let x = h.take_computes(1);
    let (holder, x) = if x.is_empty() {
        (2, h.take_computes(2))
    } else {
        (1, x)
    };
    h.finish(holder, &x[0], Value::from(2));
    h.take_client_msgs(1);
    h.gather(1, 2, &["x"]);
    let ToWorker::GetData { request, keys } = h.take_worker_msgs(holder).remove(0) else {
        panic!("the holder is asked")
    };
    let stranger = 3 - holder;
    h.worker_says(
        stranger,
        FromWorker::Data {
            request,
            found: keys.clone(),
            missing: vec![],
        },
        vec![encode_value(&Value::from(666))],
    );
    assert!(
        h.take_client_msgs(1).is_empty(),
        "not from the worker asked"
    );
    h.worker_says(
        holder,
        FromWorker::Data {
            request,
            found: keys,
            missing: vec![],
        },
        vec![encode_value(&Value::from(2))],
    );
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(2)]);
}

#[test]
fn a_missing_dependency_report_cannot_drop_another_workers_copy() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit_keep(1, 1, &crate::graph! { "x" => ("inc", 1) }, &["x"]);
    let x = h.take_computes(1);
    h.finish(1, &x[0], Value::from(2));
    h.take_client_msgs(1);
    h.add_worker(2, 1);
    h.add_worker(3, 1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Submit {
            request: RequestId(2),
            graph: crate::graph! { "y" => ("inc", "x") }.resolve(&|k| *k == Key::from("x")),
            outputs: vec!["y".into()],
            keep_results: false,
            restrictions: vec![("y".into(), vec![WorkerSelector::Address(address(2))])],
        },
        frames: vec![],
    });
    let y = h.take_computes(2);
    assert_eq!(y.len(), 1, "y runs on w2, x is on w1");
    let report = |h: &mut Harness, from: u32| {
        h.worker_says(
            from,
            FromWorker::MissingDependency {
                key: y[0].key.clone(),
                dependency: x[0].key.clone(),
                holders: vec![address(1)],
                unresponsive: vec![],
            },
            vec![],
        )
    };
    // Worker 3 was given nothing: its report is ignored.
    report(&mut h, 3);
    assert!(h.take_worker_msgs(1).is_empty());
    assert!(h.take_computes(2).is_empty());
    // The assigned worker's report only makes the scheduler ask the holder itself.
    report(&mut h, 2);
    assert_eq!(
        h.take_worker_msgs(1),
        vec![ToWorker::CheckHeld {
            keys: vec![x[0].key.clone()]
        }]
    );
    h.worker_says(1, FromWorker::NotHeld { keys: vec![] }, vec![]);
    assert_eq!(h.core.task_state(&"x".into()), Some(TaskState::Memory));
    // y is tried again, x still fetched from w1.
    let again = h.take_computes(2);
    assert_eq!(
        again[0].dependencies[0],
        (x[0].key.clone(), vec![address(1)])
    );
    // Had the holder said it lacks x, x would be recomputed.
    report(&mut h, 2);
    h.take_worker_msgs(1);
    h.worker_says(
        1,
        FromWorker::NotHeld {
            keys: vec![x[0].key.clone()],
        },
        vec![],
    );
    assert!(h.core.task_state(&"x".into()).unwrap().is_active());
}

#[test]
fn death_reports_are_believed_only_from_the_workers_own_nanny() {
    let mut h = Harness::new();
    h.step(Event::FromWorker {
        identity: worker_id(1),
        msg: FromWorker::Register(registration(address(1), "w1", 1, 1, Some(77))),
        frames: vec![],
    });
    h.take_worker_msgs(1);
    let died = |h: &mut Harness, from: &str| {
        h.step(Event::FromWorker {
            identity: ConnectionId::from(from),
            msg: FromWorker::WorkerDied {
                worker_address: address(1),
                token: 77,
                expected: false,
                reason: "forged".into(),
            },
            frames: vec![],
        });
        h.core.status().workers.len()
    };
    assert_eq!(died(&mut h, "stranger"), 1, "not from a nanny");
    h.step(Event::FromWorker {
        identity: ConnectionId::from("impostor"),
        msg: FromWorker::NannyOf {
            worker_address: address(1),
            token: 78,
        },
        frames: vec![],
    });
    assert_eq!(died(&mut h, "impostor"), 1, "a nanny with the wrong token");
    h.step(Event::FromWorker {
        identity: ConnectionId::from("nanny"),
        msg: FromWorker::NannyOf {
            worker_address: address(1),
            token: 77,
        },
        frames: vec![],
    });
    assert_eq!(died(&mut h, "nanny"), 0, "its own nanny is believed");
}

impl Harness {
    fn register_named(&mut self, n: u32, name: &str, addr: WorkerAddress) {
        self.step(Event::FromWorker {
            identity: worker_id(n),
            msg: FromWorker::Register(registration(addr, name, 1, n, None)),
            frames: vec![],
        });
    }

    /// Lets the ping deadline pass (workers that answered stay).
    fn end_probe(&mut self) {
        self.now += self.core.config().probe_timeout_ms + 1;
        self.core.tick(self.now);
        self.flush();
    }
}

#[test]
fn a_worker_whose_name_is_taken_by_a_live_worker_is_rejected() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.register_named(2, "w1", address(2));
    assert!(h.take_worker_msgs(2).is_empty(), "held while w1 is checked");
    assert_eq!(h.take_worker_msgs(1), vec![ToWorker::Ping]);
    h.now += 1;
    h.worker_says(1, FromWorker::Heartbeat, vec![]);
    h.take_worker_msgs(1);
    h.end_probe();
    assert_eq!(
        h.take_worker_msgs(2),
        vec![ToWorker::Rejected {
            reason: crate::protocol::RejectReason::NameTaken { name: "w1".into() }
        }]
    );
    assert_eq!(h.core.status().workers.len(), 1);
    // The same for an address taken by a live worker.
    h.register_named(3, "other", address(1));
    h.now += 1;
    h.worker_says(1, FromWorker::Heartbeat, vec![]);
    h.end_probe();
    assert!(matches!(
        h.take_worker_msgs(3)[..],
        [ToWorker::Rejected {
            reason: crate::protocol::RejectReason::AddressTaken { .. }
        }]
    ));
}

#[test]
fn a_worker_restarted_under_its_name_replaces_its_dead_predecessor() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.register_named(2, "w1", address(1));
    assert_eq!(h.take_worker_msgs(1), vec![ToWorker::Ping]);
    h.end_probe();
    let msgs = h.take_worker_msgs(2);
    assert!(
        matches!(msgs[..], [ToWorker::Registered { .. }]),
        "{msgs:?}"
    );
    let workers = h.core.status().workers;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].pid, 2, "the new process");
}

#[test]
fn a_long_task_error_reaches_the_client_cut() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(1, 1, &crate::graph! { "x" => ("inc", 1) }, &["x"]);
    let x = h.take_computes(1);
    h.fail(1, &x[0].key, &"e".repeat(100_000));
    let msgs = h.take_client_msgs(1);
    let ToClient::Failed {
        error: RequestError::Task { key, error },
        ..
    } = &msgs[0].0
    else {
        panic!("{msgs:?}")
    };
    assert_eq!(
        key,
        &Key::from("x"),
        "errors name the key, not the wire key"
    );
    let max = h.core.config().task_error_bytes_max;
    assert!(error.message.len() <= max, "{}", error.message.len());
    // What is kept and what the marker says was cut add up to the original.
    let kept = error.message.find('…').expect("the cut is marked");
    let marker = &error.message[kept..];
    assert_eq!(marker, format!("… [cut: {} more bytes]", 100_000 - kept));
}

#[test]
fn a_key_asked_for_many_times_travels_once() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(1, 1, &crate::graph! { "x" => ("inc", 1) }, &["x", "x", "x"]);
    let x = h.take_computes(1);
    h.finish(1, &x[0], Value::from(2));
    let msgs = h.take_client_msgs(1);
    assert_eq!(
        msgs,
        vec![(
            ToClient::Values {
                request: RequestId(1),
                positions: vec![0, 0, 0]
            },
            vec![Value::from(2)]
        )]
    );
}

impl Harness {
    /// Worker `n` (a process whose nanny gave it `token`) registers at `address(1)` as "w1",
    /// and its nanny, connection `nanny`, claims the token.
    fn register_nannied(&mut self, n: u32, token: u64) {
        self.step(Event::FromWorker {
            identity: worker_id(n),
            msg: FromWorker::Register(registration(address(1), "w1", 1, n, Some(token))),
            frames: vec![],
        });
        self.step(Event::FromWorker {
            identity: ConnectionId::from("nanny"),
            msg: FromWorker::NannyOf {
                worker_address: address(1),
                token,
            },
            frames: vec![],
        });
    }

    fn nanny_reports_death(&mut self, token: u64) {
        self.step(Event::FromWorker {
            identity: ConnectionId::from("nanny"),
            msg: FromWorker::WorkerDied {
                worker_address: address(1),
                token,
                expected: false,
                reason: "killed".into(),
            },
            frames: vec![],
        });
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.core.status().workers.iter().map(|w| w.pid).collect()
    }
}

#[test]
fn a_process_a_restart_is_ending_is_not_registered_again() {
    // Model test seed 65338: the old process, told "unknown worker" before its nanny killed
    // it, registered again and was given scattered data that died with it.
    let mut h = Harness::new();
    h.register_nannied(1, 5);
    h.inbox.clear();
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Restart {
            request: RequestId(1),
        },
        frames: vec![],
    });
    assert!(h.inbox.iter().any(|c| matches!(
        c,
        Command::ToWorker { identity, msg: ToWorker::Restart, .. } if identity == &ConnectionId::from("nanny")
    )));
    h.inbox.clear();
    h.register_nannied(1, 5);
    assert!(h.take_worker_msgs(1).is_empty(), "ignored, not registered");
    assert!(h.worker_pids().is_empty());
    // Its successor (a new token) is welcome, and the restart is answered.
    h.register_nannied(2, 6);
    assert!(matches!(
        h.take_worker_msgs(2)[..],
        [ToWorker::Registered { .. }]
    ));
    assert_eq!(
        h.take_client_msgs(1)[0].0,
        ToClient::Done {
            request: RequestId(1)
        }
    );
}

#[test]
fn a_death_report_names_the_process_not_the_address() {
    // Model test seed 130468: a death report by address removed whichever process held the
    // address, and a stale registration of the dead one got in ahead of its successor.
    let mut h = Harness::new();
    h.register_nannied(1, 5);
    h.now += 10;
    // The successor (same name and address) registers before the death is reported: held.
    h.register_nannied(2, 6);
    assert!(h.take_worker_msgs(2).is_empty(), "held while w1 is asked");
    h.nanny_reports_death(5);
    assert!(h.worker_pids().is_empty(), "process 1 is gone");
    // A registration of the dead process still on the way is ignored.
    h.take_worker_msgs(1);
    h.register_nannied(1, 5);
    assert!(h
        .take_worker_msgs(1)
        .iter()
        .all(|m| !matches!(m, ToWorker::Registered { .. })));
    h.end_probe();
    assert_eq!(h.worker_pids(), vec![2], "the successor got in");
    // A report of a death of the successor's predecessor does not touch the successor.
    h.nanny_reports_death(5);
    assert_eq!(h.worker_pids(), vec![2]);
}

#[test]
fn a_forgotten_task_id_never_names_the_task_reusing_its_slot() {
    let mut table = TaskTable::default();
    let a = table.insert(Key::from("a"), tasks::wire_key(1), None);
    table.remove(a);
    let b = table.insert(Key::from("b"), tasks::wire_key(2), None);
    assert_ne!(a, b, "the slot is reused under a new generation");
    assert!(!table.exists(a), "a stale id names nothing");
    assert_eq!(table.get(b).name(), &Key::from("b"));
    // A restart clears the table the same way: ids given before stay stale.
    table.clear();
    assert!(!table.exists(b));
    let c = table.insert(Key::from("c"), tasks::wire_key(3), None);
    assert!(!table.exists(a) && !table.exists(b));
    assert_eq!(table.get(c).name(), &Key::from("c"));
    assert_eq!(table.len(), 1);
}

#[test]
fn a_broken_invariant_is_a_typed_error_naming_its_part() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(1, 1, &crate::graph! { "x" => 1 }, &["x"]);
    let (t, _) = h.core.tasks.iter().next().expect("x is known");
    // A pin no name or dataset holds.
    h.core.tasks.get_mut(t).pins += 1;
    let err: InvariantViolation = h.core.check_invariants().unwrap_err();
    assert_eq!(err.part, "pins");
    assert!(err.to_string().starts_with("pins: "), "{err}");
    let _: &dyn std::error::Error = &err;
    h.core.tasks.get_mut(t).pins -= 1;
    h.core.check_invariants().unwrap();
}

#[test]
fn a_part_keeping_a_forgotten_task_breaks_its_own_invariant() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.submit(1, 1, &crate::graph! { "x" => 1 }, &["x"]);
    let (t, _) = h.core.tasks.iter().next().expect("x is known");
    let x = h.take_computes(1);
    h.finish(1, &x[0], Value::from(1));
    assert_eq!(h.take_client_msgs(1).len(), 1);
    assert!(!h.core.tasks.exists(t), "the answered graph is forgotten");
    // Forgetting announced it to placement, which dropped the task; keeping it is a bug.
    h.core.placement.restrict(
        t,
        vec![WorkerSelector::Address(address(1))].into_boxed_slice(),
    );
    let err = h.core.check_invariants().unwrap_err();
    assert_eq!(err.part, "placement", "{err}");
}

#[test]
fn a_selector_matches_a_worker_by_its_own_kind_only() {
    let mut h = Harness::new();
    // Worker 1 is named "w1" and listens at tcp://w1:1.
    h.add_worker(1, 1);
    let name_like_w1s_address = WorkerSelector::Name(WorkerName::from(address(1).as_str()));
    let address_like_w1s_name = WorkerSelector::Address(WorkerAddress::from("w1"));
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Submit {
            request: RequestId(1),
            graph: crate::graph! { "a" => ("inc", 1), "b" => ("inc", 2) }.resolve(&|_| false),
            outputs: vec!["a".into(), "b".into()],
            keep_results: false,
            restrictions: vec![
                ("a".into(), vec![name_like_w1s_address]),
                ("b".into(), vec![address_like_w1s_name]),
            ],
        },
        frames: vec![],
    });
    assert!(
        h.take_computes(1).is_empty(),
        "a name is never matched against an address, nor an address against a name"
    );
    // A worker named like w1's address, at an address spelled like w1's name: both run there.
    h.register_named(2, address(1).as_str(), WorkerAddress::from("w1"));
    let mut tasks = h.take_computes(2);
    tasks.sort_by_key(|t| name(&t.key));
    let keys: Vec<Key> = tasks.iter().map(|t| name(&t.key)).collect();
    assert_eq!(keys, vec![Key::from("a"), Key::from("b")]);
    h.finish(2, &tasks[0], Value::from(2));
    h.finish(2, &tasks[1], Value::from(3));
    assert_eq!(
        h.take_client_msgs(1)[0].1,
        vec![Value::from(2), Value::from(3)]
    );
}

#[test]
fn a_hello_of_another_protocol_version_is_rejected_with_no_request_id() {
    let mut h = Harness::new();
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Hello {
            protocol_version: PROTOCOL_VERSION + 1,
        },
        frames: vec![],
    });
    let replies = h.take_client_msgs(1);
    assert!(
        matches!(
            &replies[..],
            [(ToClient::Rejected { error: RequestError::Protocol { message } }, _)]
                if message.contains("not supported")
        ),
        "{replies:?}"
    );
}

/// The answer to one client request (the last reply to client `n`, an operator).
fn ask(h: &mut Harness, n: u32, msg: FromClient) -> ToClient {
    ask_as(h, n, ClientRole::Operator, msg)
}

/// The answer to one request of client `n` in `role`.
fn ask_as(h: &mut Harness, n: u32, role: ClientRole, msg: FromClient) -> ToClient {
    h.step(Event::FromClient {
        identity: client_id(n),
        role,
        msg,
        frames: vec![],
    });
    h.take_client_msgs(n).pop().expect("a reply").0
}

#[test]
fn legacy_and_native_collections_share_one_namespace_and_the_journal() {
    use crate::collection::{Collection, LegacyCollection, StoredCollection};
    let mut h = Harness::with_config(CoreConfig {
        journal: true,
        ..CoreConfig::default()
    });
    let payload = vec![0x80, 4, b'N', b'.'];
    let native = Collection::from_graph(&crate::graph! { "x" => 1 }, vec!["x".into()]);
    let done = |request| ToClient::Done {
        request: RequestId(request),
    };
    let set_legacy = FromClient::SetLegacyCollection {
        request: RequestId(1),
        name: "legacy".into(),
        payload: payload.clone(),
    };
    assert_eq!(ask(&mut h, 1, set_legacy), done(1));
    let set_native = FromClient::SetCollection {
        request: RequestId(2),
        name: "native".into(),
        collection: native.clone(),
    };
    assert_eq!(ask(&mut h, 1, set_native), done(2));
    let journal: Vec<JournalOp> = h
        .inbox
        .drain(..)
        .filter_map(|c| match c {
            Command::Journal(op) => Some(op),
            _ => None,
        })
        .collect();
    let legacy_stored = StoredCollection::Legacy(LegacyCollection {
        payload: payload.clone(),
    });
    assert_eq!(
        journal,
        vec![
            JournalOp::PutCollection {
                name: "legacy".into(),
                collection: legacy_stored.clone(),
                owner: Some(client_id(1)),
            },
            JournalOp::PutCollection {
                name: "native".into(),
                collection: StoredCollection::Native(native.clone()),
                owner: Some(client_id(1)),
            },
        ]
    );

    // Each kind of client reads its own kind, and gets a typed error for the other.
    let get = |name: &str| FromClient::GetCollection {
        request: RequestId(3),
        name: name.into(),
    };
    let get_legacy = |name: &str| FromClient::GetLegacyCollection {
        request: RequestId(4),
        name: name.into(),
    };
    let failed = |request, error| ToClient::Failed {
        request: RequestId(request),
        error,
    };
    assert_eq!(
        ask(&mut h, 2, get("legacy")),
        failed(
            3,
            RequestError::LegacyCollection {
                name: "legacy".into()
            }
        )
    );
    assert_eq!(
        ask(&mut h, 2, get("native")),
        ToClient::Collection {
            request: RequestId(3),
            collection: native,
        }
    );
    assert_eq!(
        ask(&mut h, 2, get_legacy("legacy")),
        ToClient::LegacyCollection {
            request: RequestId(4),
            payload: payload.clone(),
        }
    );
    assert_eq!(
        ask(&mut h, 2, get_legacy("native")),
        failed(
            4,
            RequestError::NativeCollection {
                name: "native".into()
            }
        )
    );
    assert_eq!(
        ask(&mut h, 2, get_legacy("nope")),
        failed(
            4,
            RequestError::NoSuchCollection {
                name: "nope".into()
            }
        )
    );
    let list = FromClient::ListCollections {
        request: RequestId(5),
    };
    assert_eq!(
        ask(&mut h, 2, list),
        ToClient::Names {
            request: RequestId(5),
            names: vec!["legacy".into(), "native".into()],
        }
    );

    // A scheduler restarted with the journal keeps the legacy payload.
    let mut h = Harness::new();
    h.core.recover(
        0,
        Recovered {
            collections: vec![("legacy".into(), legacy_stored)],
            ..Recovered::default()
        },
    );
    assert_eq!(
        ask(&mut h, 1, get_legacy("legacy")),
        ToClient::LegacyCollection {
            request: RequestId(4),
            payload,
        }
    );
}

impl Harness {
    /// Lets time pass to `now`: client 1 (waiting for `pending`) and these workers stay in
    /// touch, then the core ticks.
    fn idle_until(&mut self, now: u64, workers: &[u32], pending: &[u64]) {
        self.now = now;
        self.step(Event::FromClient {
            identity: client_id(1),
            role: ClientRole::Operator,
            msg: FromClient::Ping {
                pending: pending.iter().map(|r| RequestId(*r)).collect(),
            },
            frames: vec![],
        });
        for &w in workers {
            self.worker_says(w, FromWorker::Heartbeat, vec![]);
        }
        self.core.tick(self.now);
        self.flush();
    }

    /// Removes the replies to client `n` and returns its failed requests (the rest are pongs).
    fn take_failures(&mut self, n: u32) -> Vec<(RequestId, RequestError)> {
        self.take_client_msgs(n)
            .into_iter()
            .filter_map(|(m, _)| match m {
                ToClient::Failed { request, error } => Some((request, error)),
                ToClient::Pong => None,
                other => panic!("unexpected reply {other:?}"),
            })
            .collect()
    }

    /// Client 1 submits `graph` (request `request`) for `outputs`, with `restrictions`.
    fn submit_restricted(
        &mut self,
        request: u64,
        graph: &Graph,
        outputs: &[&str],
        restrictions: Vec<(Key, Vec<WorkerSelector>)>,
    ) {
        self.step(Event::FromClient {
            identity: client_id(1),
            role: ClientRole::Operator,
            msg: FromClient::Submit {
                request: RequestId(request),
                graph: graph.resolve(&|_| false),
                outputs: outputs.iter().map(|k| Key::from(*k)).collect(),
                keep_results: false,
                restrictions,
            },
            frames: vec![],
        });
    }
}

#[test]
fn a_task_no_connected_worker_may_run_fails_with_no_worker_after_the_timeout() {
    let mut h = Harness::new();
    let timeout = h.core.config().unrunnable_timeout_ms;
    h.add_worker(1, 1);
    h.submit_restricted(
        1,
        &crate::graph! { "a" => ("inc", 1), "b" => ("inc", "a") },
        &["b"],
        vec![(
            "a".into(),
            vec![
                WorkerSelector::Name("w9".into()),
                WorkerSelector::Address(address(9)),
            ],
        )],
    );
    assert!(h.take_computes(1).is_empty(), "a may not run on w1");
    assert_eq!(
        h.core.placement.unrunnable_deadline(timeout),
        Some(timeout + 1)
    );
    // Still waiting just before the timeout.
    h.idle_until(timeout - 1, &[1], &[1]);
    assert!(h.take_failures(1).is_empty());
    assert_eq!(h.core.task_state(&"a".into()), Some(TaskState::Ready));
    // Past it: a fails, and b with it; the client is told.
    h.idle_until(timeout + 1, &[1], &[1]);
    let failures = h.take_failures(1);
    let [(request, RequestError::Task { key, error })] = &failures[..] else {
        panic!("{failures:?}");
    };
    assert_eq!((*request, key), (RequestId(1), &Key::from("a")));
    assert_eq!(error.kind, TaskErrorKind::NoWorker);
    let text = error.to_string();
    assert!(text.starts_with("no worker: "), "{text}");
    for part in ["\"a\"", "w9", address(9).as_str(), "60.0 s"] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
    assert!(h.take_computes(1).is_empty());
    assert_eq!(h.core.task_count(), 0, "the failed graph is forgotten");
    assert_eq!(h.core.placement.unrunnable_deadline(timeout), None);
}

#[test]
fn a_task_waiting_for_a_worker_is_placed_when_one_that_may_run_it_registers() {
    let mut h = Harness::new();
    let timeout = h.core.config().unrunnable_timeout_ms;
    // No worker at all: a restricted task waits for one from the start.
    h.submit_restricted(
        1,
        &crate::graph! { "a" => ("inc", 1) },
        &["a"],
        vec![("a".into(), vec![WorkerSelector::Name("w2".into())])],
    );
    assert_eq!(
        h.core.placement.unrunnable_deadline(timeout),
        Some(timeout + 1)
    );
    h.idle_until(timeout / 2, &[], &[1]);
    h.add_worker(2, 1);
    let a = h.take_computes(2);
    assert_eq!(name(&a[0].key), Key::from("a"));
    assert_eq!(h.core.placement.unrunnable_deadline(timeout), None);
    // Long past the timeout while it runs: it never fails for it.
    h.idle_until(2 * timeout, &[2], &[1]);
    assert!(h.take_failures(1).is_empty());
    h.finish(2, &a[0], Value::from(2));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(2)]);
}

#[test]
fn a_worker_registering_in_the_batch_of_the_timeout_still_gets_the_task() {
    let mut h = Harness::new();
    let timeout = h.core.config().unrunnable_timeout_ms;
    h.submit_restricted(
        1,
        &crate::graph! { "a" => ("inc", 1) },
        &["a"],
        vec![("a".into(), vec![WorkerSelector::Name("w2".into())])],
    );
    // The registration and the tick come in one batch, before the decision pass.
    h.now = timeout + 1;
    h.core.handle(
        h.now,
        Event::FromClient {
            identity: client_id(1),
            role: ClientRole::Operator,
            msg: FromClient::Ping {
                pending: vec![RequestId(1)],
            },
            frames: vec![],
        },
    );
    h.core.handle(
        h.now,
        Event::FromWorker {
            identity: worker_id(2),
            msg: FromWorker::Register(registration(address(2), "w2", 1, 2, None)),
            frames: vec![],
        },
    );
    h.core.tick(h.now);
    h.flush();
    assert!(h.take_failures(1).is_empty());
    assert_eq!(name(&h.take_computes(2)[0].key), Key::from("a"));
}

#[test]
fn an_unrestricted_task_waits_for_the_first_worker_however_long() {
    let mut h = Harness::new();
    let timeout = h.core.config().unrunnable_timeout_ms;
    h.submit(1, 1, &crate::graph! { "a" => ("inc", 1) }, &["a"]);
    assert_eq!(h.core.placement.unrunnable_deadline(timeout), None);
    for i in 1..=10 {
        h.idle_until(i * timeout / 2, &[], &[1]);
    }
    assert!(h.take_failures(1).is_empty());
    assert_eq!(h.core.task_state(&"a".into()), Some(TaskState::Ready));
    h.add_worker(1, 1);
    let a = h.take_computes(1);
    h.finish(1, &a[0], Value::from(2));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(2)]);
}

#[test]
fn a_restricted_task_waiting_only_for_a_free_slot_does_not_time_out() {
    let mut h = Harness::new();
    let timeout = h.core.config().unrunnable_timeout_ms;
    // One thread and one queued task: two tasks fill w1.
    h.add_worker(1, 1);
    h.submit(
        1,
        1,
        &crate::graph! { "x" => ("inc", 1), "y" => ("inc", 2) },
        &["x", "y"],
    );
    let busy = h.take_computes(1);
    assert_eq!(busy.len(), 2);
    h.submit_restricted(
        2,
        &crate::graph! { "z" => ("inc", 3) },
        &["z"],
        vec![("z".into(), vec![WorkerSelector::Name("w1".into())])],
    );
    assert!(h.take_computes(1).is_empty(), "no free slot on w1");
    assert_eq!(h.core.placement.unrunnable_deadline(timeout), None);
    h.idle_until(2 * timeout, &[1], &[1, 2]);
    assert!(h.take_failures(1).is_empty());
    assert_eq!(h.core.task_state(&"z".into()), Some(TaskState::Ready));
    // A slot frees up: z runs there.
    h.finish(1, &busy[0], Value::from(0));
    let z = h.take_computes(1);
    assert_eq!(name(&z[0].key), Key::from("z"));
}

#[test]
fn a_task_whose_only_worker_leaves_starts_waiting_then_and_only_then() {
    let mut h = Harness::new();
    let timeout = h.core.config().unrunnable_timeout_ms;
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    // x fills w2's two slots with y; z may only run on w2 and waits for a slot.
    h.submit_restricted(
        1,
        &crate::graph! { "x" => ("inc", 1), "y" => ("inc", 2), "z" => ("inc", 3) },
        &["x", "y", "z"],
        vec![
            ("x".into(), vec![WorkerSelector::Name("w2".into())]),
            ("y".into(), vec![WorkerSelector::Name("w2".into())]),
            ("z".into(), vec![WorkerSelector::Name("w2".into())]),
        ],
    );
    assert_eq!(h.take_computes(2).len(), 2);
    assert_eq!(h.core.placement.unrunnable_deadline(timeout), None);
    // w2 leaves: its tasks and z have no worker now, from this moment.
    h.now = 1_000;
    h.worker_says(2, FromWorker::Goodbye, vec![]);
    assert_eq!(
        h.core.placement.unrunnable_deadline(timeout),
        Some(1_000 + timeout + 1)
    );
    h.idle_until(1_000 + timeout, &[1], &[1]);
    assert!(h.take_failures(1).is_empty());
    h.idle_until(1_000 + timeout + 1, &[1], &[1]);
    let failures = h.take_failures(1);
    assert!(
        matches!(&failures[..], [(RequestId(1), RequestError::Task { error, .. })] if error.kind == TaskErrorKind::NoWorker),
        "{failures:?}"
    );
}

#[test]
fn the_unrunnable_timeout_is_settable_and_the_core_wakes_up_for_it() {
    let mut h = Harness::with_config(CoreConfig {
        unrunnable_timeout_ms: 1_500,
        ..CoreConfig::default()
    });
    h.submit_restricted(
        1,
        &crate::graph! { "a" => ("inc", 1) },
        &["a"],
        vec![("a".into(), vec![WorkerSelector::Name("w2".into())])],
    );
    // Nothing else is due before (no worker; the client is silent for 30 s at most).
    assert_eq!(h.core.next_deadline(), Some(1_501));
    h.now = 1_501;
    h.core.tick(h.now);
    h.flush();
    let failures = h.take_failures(1);
    let [(RequestId(1), RequestError::Task { error, .. })] = &failures[..] else {
        panic!("{failures:?}");
    };
    assert_eq!(error.kind, TaskErrorKind::NoWorker);
    assert!(error.message.contains("1.5 s"), "{error}");
}

// ---- roles and ownership ----

/// `Release` of `keys` as client `n` in `role`.
fn release(h: &mut Harness, n: u32, role: ClientRole, request: u64, keys: &[&str]) -> ToClient {
    let keys = keys.iter().map(|k| Key::from(*k)).collect();
    let request = RequestId(request);
    ask_as(h, n, role, FromClient::Release { request, keys })
}

/// Client `n` keeps `key` (defined as the literal `value`), computed on worker 1.
fn keep(h: &mut Harness, n: u32, request: u64, key: &str, value: i64) {
    keep_together(h, &[n], request, key, value);
}

/// Each of `clients` keeps `key` (one shared task, computed once on worker 1).
fn keep_together(h: &mut Harness, clients: &[u32], request: u64, key: &str, value: i64) {
    let mut graph = Graph::new();
    graph.insert(key, Value::from(value));
    for &n in clients {
        h.submit_keep(n, request, &graph, &[key]);
    }
    h.run_all(1, &mut Vec::new());
    for &n in clients {
        let replies = h.take_client_msgs(n);
        assert!(
            matches!(&replies[..], [(ToClient::Values { .. }, _)]),
            "{replies:?}"
        );
    }
}

/// Asserts `reply` refuses an operator's action on `what` (a quoted name).
fn assert_forbidden(reply: &ToClient, what: &str) {
    match reply {
        ToClient::Failed {
            error:
                RequestError::Forbidden {
                    action,
                    needs: ClientRole::Operator,
                },
            ..
        } => assert!(action.contains(what), "{action:?} names {what}"),
        other => panic!("expected Forbidden naming {what}, got {other:?}"),
    }
}

fn named(h: &Harness, key: &str) -> bool {
    h.core.names.get(&Key::from(key)).is_some()
}

#[test]
fn a_client_cannot_restart_the_cluster_an_operator_can() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    keep(&mut h, 1, 1, "x", 1);
    let restart = |request| FromClient::Restart {
        request: RequestId(request),
    };
    let reply = ask_as(&mut h, 1, ClientRole::Client, restart(2));
    assert_forbidden(&reply, "restarting the cluster");
    let ToClient::Failed { error, .. } = &reply else {
        unreachable!("checked above")
    };
    assert_eq!(
        error.to_string(),
        "forbidden: restarting the cluster needs the operator role"
    );
    assert!(named(&h, "x"), "nothing was dropped");
    assert!(h.take_worker_msgs(1).is_empty(), "no worker was touched");

    let reply = ask_as(&mut h, 2, ClientRole::Operator, restart(3));
    assert_eq!(
        reply,
        ToClient::Done {
            request: RequestId(3)
        }
    );
    assert!(!named(&h, "x"));
    assert_eq!(h.core.task_count(), 0);
}

#[test]
fn a_client_releases_its_own_names_but_not_another_clients() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    keep(&mut h, 1, 1, "x", 1);
    keep(&mut h, 2, 1, "y", 2);
    assert_eq!(h.core.names.owners(&"x".into()), [client_id(1)]);

    // Client 1 may not release client 2's y; nothing of the request happens, not even the
    // release of its own x listed beside it.
    let reply = release(&mut h, 1, ClientRole::Client, 2, &["x", "y"]);
    assert_forbidden(&reply, "\"y\"");
    assert!(named(&h, "x") && named(&h, "y"));
    assert!(h.take_releases(1).is_empty());

    // Its own x it may; a key nobody named is a success that changes nothing, as before.
    let done = |request| ToClient::Done {
        request: RequestId(request),
    };
    assert_eq!(release(&mut h, 1, ClientRole::Client, 3, &["x"]), done(3));
    assert!(!named(&h, "x"));
    assert_eq!(h.take_releases(1).len(), 1);
    assert_eq!(
        release(&mut h, 1, ClientRole::Client, 4, &["never-named"]),
        done(4)
    );

    // An operator may release what client 2 owns.
    assert_eq!(release(&mut h, 3, ClientRole::Operator, 1, &["y"]), done(1));
    assert!(!named(&h, "y"));
    assert_eq!(h.take_releases(1).len(), 1);
}

#[test]
fn a_shared_key_keeps_each_clients_pin_until_its_own_release() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    keep_together(&mut h, &[1, 2], 1, "x", 1);
    assert_eq!(
        h.core.names.owners(&"x".into()),
        [client_id(1), client_id(2)]
    );

    // A's release drops A's pin only: B's value stays on the cluster.
    let done = |request| ToClient::Done {
        request: RequestId(request),
    };
    assert_eq!(release(&mut h, 1, ClientRole::Client, 2, &["x"]), done(2));
    assert!(named(&h, "x"));
    assert_eq!(h.core.names.owners(&"x".into()), [client_id(2)]);
    assert!(
        h.take_releases(1).is_empty(),
        "the value stays on its worker"
    );
    let who_has = FromClient::WhoHas {
        request: RequestId(3),
        keys: vec!["x".into()],
    };
    assert_eq!(
        ask_as(&mut h, 1, ClientRole::Client, who_has),
        ToClient::WhoHas {
            request: RequestId(3),
            who_has: vec![("x".into(), vec![address(1)])],
        },
        "reading stays open"
    );

    // A no longer holds a pin, and B does: A's second release is refused.
    assert_forbidden(&release(&mut h, 1, ClientRole::Client, 4, &["x"]), "\"x\"");
    // B's release drops the last pin, and the value goes.
    assert_eq!(release(&mut h, 2, ClientRole::Client, 2, &["x"]), done(2));
    assert!(!named(&h, "x"));
    assert_eq!(h.take_releases(1).len(), 1);
}

#[test]
fn collections_and_datasets_change_only_by_their_owner_or_an_operator() {
    use crate::collection::Collection;
    let mut h = Harness::new();
    h.add_worker(1, 1);
    let client = ClientRole::Client;
    let done = |request| ToClient::Done {
        request: RequestId(request),
    };
    let collection = Collection::from_graph(&crate::graph! { "x" => 1 }, vec!["x".into()]);
    let set = |request, name: &str| FromClient::SetCollection {
        request: RequestId(request),
        name: name.into(),
        collection: collection.clone(),
    };
    let set_legacy = |request, name: &str| FromClient::SetLegacyCollection {
        request: RequestId(request),
        name: name.into(),
        payload: vec![0x80, 4, b'N', b'.'],
    };
    let delete = |request, name: &str| FromClient::DeleteCollection {
        request: RequestId(request),
        name: name.into(),
    };
    assert_eq!(ask_as(&mut h, 1, client, set(1, "c")), done(1));
    assert_eq!(ask_as(&mut h, 1, client, set_legacy(2, "old")), done(2));
    assert_forbidden(&ask_as(&mut h, 2, client, delete(1, "c")), "\"c\"");
    assert_forbidden(&ask_as(&mut h, 2, client, set(2, "c")), "\"c\"");
    assert_forbidden(&ask_as(&mut h, 2, client, set_legacy(3, "old")), "\"old\"");
    // Reading stays open.
    let get = FromClient::GetCollection {
        request: RequestId(4),
        name: "c".into(),
    };
    assert!(matches!(
        ask_as(&mut h, 2, client, get),
        ToClient::Collection { .. }
    ));
    // The owner may replace and delete its own.
    assert_eq!(ask_as(&mut h, 1, client, set(3, "c")), done(3));
    assert_eq!(ask_as(&mut h, 1, client, delete(4, "c")), done(4));
    // An operator may delete another's.
    assert_eq!(
        ask_as(&mut h, 3, ClientRole::Operator, delete(1, "old")),
        done(1)
    );

    // Datasets: published by client 1 from its kept x.
    keep(&mut h, 1, 5, "x", 1);
    let publish = |request| FromClient::Publish {
        request: RequestId(request),
        name: "d".into(),
        collection: collection.clone(),
    };
    let unpublish = |request| FromClient::Unpublish {
        request: RequestId(request),
        name: "d".into(),
    };
    assert_eq!(ask_as(&mut h, 1, client, publish(6)), done(6));
    assert_forbidden(&ask_as(&mut h, 2, client, unpublish(5)), "\"d\"");
    assert_forbidden(&ask_as(&mut h, 2, client, publish(6)), "\"d\"");
    let get = FromClient::GetDataset {
        request: RequestId(7),
        name: "d".into(),
    };
    assert!(matches!(
        ask_as(&mut h, 2, client, get),
        ToClient::Collection { .. }
    ));
    assert_eq!(ask_as(&mut h, 1, client, unpublish(8)), done(8));
    assert_eq!(ask_as(&mut h, 1, client, publish(9)), done(9));
    assert_eq!(
        ask_as(&mut h, 3, ClientRole::Operator, unpublish(2)),
        done(2)
    );
}

#[test]
fn what_a_departed_client_owned_stays_and_only_an_operator_removes_it() {
    use crate::collection::Collection;
    let mut h = Harness::with_config(CoreConfig {
        journal: true,
        worker_queue_extra: 1,
        ..CoreConfig::default()
    });
    h.add_worker(1, 1);
    let client = ClientRole::Client;
    let collection = Collection::from_graph(&crate::graph! { "x" => 1 }, vec!["x".into()]);
    let set = FromClient::SetCollection {
        request: RequestId(1),
        name: "c".into(),
        collection: collection.clone(),
    };
    assert!(matches!(
        ask_as(&mut h, 1, client, set),
        ToClient::Done { .. }
    ));
    keep(&mut h, 1, 2, "x", 1);
    let publish = FromClient::Publish {
        request: RequestId(3),
        name: "d".into(),
        collection,
    };
    assert!(matches!(
        ask_as(&mut h, 1, client, publish),
        ToClient::Done { .. }
    ));
    h.inbox.clear();

    h.step(Event::FromClient {
        identity: client_id(1),
        role: client,
        msg: FromClient::Goodbye,
        frames: vec![],
    });
    // Everything stays; the collection's owner is gone from the journal too.
    assert!(named(&h, "x"));
    assert!(h.take_releases(1).is_empty());
    assert_eq!(h.core.collections.collection_owner("c"), None);
    let journal: Vec<&JournalOp> = h
        .inbox
        .iter()
        .filter_map(|c| match c {
            Command::Journal(op) => Some(op),
            _ => None,
        })
        .collect();
    assert_eq!(
        journal,
        [&JournalOp::SetCollectionOwner {
            name: "c".into(),
            owner: None
        }]
    );

    // No client may remove or replace them now, not even one that comes with the same name.
    for n in [1, 2] {
        let delete = FromClient::DeleteCollection {
            request: RequestId(10),
            name: "c".into(),
        };
        let reply = ask_as(&mut h, n, client, delete);
        assert_forbidden(&reply, "(its owner is gone)");
        let unpublish = FromClient::Unpublish {
            request: RequestId(11),
            name: "d".into(),
        };
        assert_forbidden(&ask_as(&mut h, n, client, unpublish), "\"d\"");
        let reply = release(&mut h, n, client, 12, &["x"]);
        assert_forbidden(&reply, "\"x\" (its owners are gone)");
    }
    // An operator may.
    let operator = ClientRole::Operator;
    let delete = FromClient::DeleteCollection {
        request: RequestId(13),
        name: "c".into(),
    };
    assert!(matches!(
        ask_as(&mut h, 3, operator, delete),
        ToClient::Done { .. }
    ));
    let unpublish = FromClient::Unpublish {
        request: RequestId(14),
        name: "d".into(),
    };
    assert!(matches!(
        ask_as(&mut h, 3, operator, unpublish),
        ToClient::Done { .. }
    ));
    assert!(matches!(
        release(&mut h, 3, operator, 15, &["x"]),
        ToClient::Done { .. }
    ));
    assert!(!named(&h, "x"));
}

#[test]
fn a_scattered_key_is_its_scatterers_again_after_a_scheduler_restart() {
    let mut h = Harness::new();
    h.core.recover(
        0,
        Recovered {
            scattered: vec![
                ("a".into(), 5.into(), 3, Some(client_id(1))),
                ("old".into(), 6.into(), 3, None),
            ],
            ..Recovered::default()
        },
    );
    let client = ClientRole::Client;
    assert_forbidden(&release(&mut h, 2, client, 1, &["a"]), "\"a\"");
    assert_forbidden(&release(&mut h, 1, client, 2, &["old"]), "\"old\"");
    assert!(matches!(
        release(&mut h, 1, client, 3, &["a"]),
        ToClient::Done { .. }
    ));
    assert!(!named(&h, "a"));
}

#[test]
fn collection_owners_survive_a_scheduler_restart() {
    use crate::collection::{Collection, StoredCollection};
    let mut h = Harness::new();
    let stored = StoredCollection::Native(Collection::from_graph(
        &crate::graph! { "x" => 1 },
        vec!["x".into()],
    ));
    h.core.recover(
        0,
        Recovered {
            collections: vec![("mine".into(), stored.clone()), ("old".into(), stored)],
            collection_owners: vec![("mine".into(), client_id(1))],
            ..Recovered::default()
        },
    );
    let delete = |request, name: &str| FromClient::DeleteCollection {
        request: RequestId(request),
        name: name.into(),
    };
    let client = ClientRole::Client;
    assert_forbidden(&ask_as(&mut h, 2, client, delete(1, "mine")), "\"mine\"");
    // Journaled before owners were: nobody's.
    assert_forbidden(&ask_as(&mut h, 1, client, delete(2, "old")), "\"old\"");
    assert!(matches!(
        ask_as(&mut h, 1, client, delete(3, "mine")),
        ToClient::Done { .. }
    ));
}

#[test]
fn key_prefixes_split_names_at_the_first_dash_and_tuples_at_their_first_element() {
    use super::placement::key_prefix;
    assert_eq!(key_prefix(&Key::from("inc-3")), "inc");
    assert_eq!(key_prefix(&Key::from("sum-ab-7")), "sum");
    assert_eq!(key_prefix(&Key::from("x")), "x");
    assert_eq!(
        key_prefix(&Key::Tuple(vec![Key::from("load-a1"), Key::Int(0)])),
        "load"
    );
    assert_eq!(key_prefix(&Key::Int(42)), "42");
    assert_eq!(key_prefix(&Key::Tuple(vec![])), "");
}

#[test]
fn status_reports_pending_tasks_and_run_times_per_prefix_and_each_workers_load() {
    let mut h = Harness::new(); // queue extra 1
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    let mut g = Graph::new();
    for i in 0..4 {
        g.insert(format!("slow-{i}"), ("inc", i));
    }
    g.insert("total", ("add", "slow-0", "slow-1"));
    h.submit(1, 1, &g, &["total", "slow-2", "slow-3"]);
    let status = h.core.status();
    // Two workers, one thread and one queued each: every slow task is placed.
    assert_eq!((status.ready, status.waiting, status.processing), (0, 1, 4));
    let pending: Vec<(String, u64, Option<u64>)> = status
        .prefixes
        .iter()
        .map(|p| (p.prefix.clone(), p.pending, p.average_ms))
        .collect();
    assert_eq!(
        pending,
        vec![
            ("slow".to_string(), 4, None),
            ("total".to_string(), 1, None)
        ]
    );
    assert!(status.workers.iter().all(|w| w.processing == 2 && !w.idle));

    // Worker 1 finishes its two after 400 ms and 200 ms more: the average weighs the newest
    // sample by half (400, then (400 + 600) / 2 = 500: both were assigned at 0).
    let computes = h.take_computes(1);
    assert_eq!(computes.len(), 2);
    h.now = 400;
    h.finish(1, &computes[0], Value::from(1));
    h.now = 600;
    h.finish(1, &computes[1], Value::from(2));
    let status = h.core.status();
    let slow = status.prefixes.iter().find(|p| p.prefix == "slow").unwrap();
    assert_eq!((slow.pending, slow.average_ms), (2, Some(500)));
    let w1 = status
        .workers
        .iter()
        .find(|w| w.address == address(1))
        .unwrap();
    let w2 = status
        .workers
        .iter()
        .find(|w| w.address == address(2))
        .unwrap();
    assert!(w1.idle && w1.processing == 0);
    assert!(w1.nbytes > 0, "it holds two results");
    assert!(!w2.idle && w2.nbytes == 0);
    assert_eq!((status.ready, status.waiting), (0, 1));
}

impl Harness {
    fn get_logs(&mut self, client: u32, request: u64, worker: Option<WorkerSelector>) {
        self.step(Event::FromClient {
            identity: client_id(client),
            role: ClientRole::Client,
            msg: FromClient::GetLogs {
                request: RequestId(request),
                worker,
            },
            frames: vec![],
        });
    }

    /// The `GetLogs` request id worker `n` was sent (exactly one).
    fn logs_asked(&mut self, n: u32) -> u64 {
        let asked: Vec<u64> = self
            .take_worker_msgs(n)
            .into_iter()
            .filter_map(|m| match m {
                ToWorker::GetLogs { request } => Some(request),
                _ => None,
            })
            .collect();
        assert_eq!(asked.len(), 1, "worker {n} asked for logs once: {asked:?}");
        asked[0]
    }

    fn logs_reply(&mut self, client: u32) -> Option<(u64, WorkerLines)> {
        let replies: Vec<_> = self
            .take_client_msgs(client)
            .into_iter()
            .filter_map(|(m, _)| match m {
                ToClient::Logs {
                    request,
                    scheduler,
                    workers,
                } => {
                    assert!(scheduler.is_empty(), "the core has no lines of its own");
                    Some((request.0, workers))
                }
                _ => None,
            })
            .collect();
        assert!(replies.len() <= 1, "one answer per request: {replies:?}");
        replies.into_iter().next()
    }
}

/// Each worker's lines in a `ToClient::Logs`.
type WorkerLines = Vec<(WorkerAddress, Vec<String>)>;

fn lines(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

#[test]
fn a_logs_request_fans_out_and_collects_every_answer() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.get_logs(1, 7, None);
    let r1 = h.logs_asked(1);
    let r2 = h.logs_asked(2);
    h.worker_says(
        2,
        FromWorker::Logs {
            request: r2,
            lines: lines(&["two"]),
        },
        vec![],
    );
    assert_eq!(h.logs_reply(1), None, "worker 1 has not answered yet");
    // A client waiting for logs is known to the scheduler: its ping fails nothing.
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Client,
        msg: FromClient::Ping {
            pending: vec![RequestId(7)],
        },
        frames: vec![],
    });
    assert!(h
        .take_client_msgs(1)
        .iter()
        .all(|(m, _)| matches!(m, ToClient::Pong)));
    h.worker_says(
        1,
        FromWorker::Logs {
            request: r1,
            lines: lines(&["one", "uno"]),
        },
        vec![],
    );
    assert_eq!(
        h.logs_reply(1),
        Some((
            7,
            vec![
                (address(1), lines(&["one", "uno"])),
                (address(2), lines(&["two"]))
            ]
        ))
    );
    assert_eq!(h.core.logs.len(), 0);
}

#[test]
fn a_logs_request_asks_only_the_selected_worker_and_none_answers_at_once() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.get_logs(
        1,
        1,
        Some(WorkerSelector::Name(WorkerName::from("w2".to_string()))),
    );
    assert!(h.take_worker_msgs(1).is_empty());
    let r = h.logs_asked(2);
    h.worker_says(
        2,
        FromWorker::Logs {
            request: r,
            lines: lines(&["x"]),
        },
        vec![],
    );
    assert_eq!(
        h.logs_reply(1),
        Some((1, vec![(address(2), lines(&["x"]))]))
    );
    h.get_logs(1, 2, Some(WorkerSelector::Python));
    assert_eq!(h.logs_reply(1), Some((2, vec![])));
}

#[test]
fn a_silent_worker_cannot_hang_a_logs_request() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.get_logs(1, 3, None);
    let r1 = h.logs_asked(1);
    let _ = h.logs_asked(2);
    h.worker_says(
        1,
        FromWorker::Logs {
            request: r1,
            lines: lines(&["one"]),
        },
        vec![],
    );
    let deadline = h.core.next_deadline().expect("the request has a deadline");
    assert!(deadline <= h.now + h.core.config().logs_timeout_ms);
    h.now += h.core.config().logs_timeout_ms - 1;
    h.core.tick(h.now);
    h.flush();
    assert_eq!(h.logs_reply(1), None, "not yet");
    h.now += 1;
    h.core.tick(h.now);
    h.flush();
    assert_eq!(
        h.logs_reply(1),
        Some((3, vec![(address(1), lines(&["one"]))]))
    );
    assert_eq!(h.core.logs.len(), 0);
}

#[test]
fn a_lost_worker_is_not_waited_for() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.get_logs(1, 4, None);
    let r1 = h.logs_asked(1);
    let _ = h.logs_asked(2);
    h.worker_says(
        1,
        FromWorker::Logs {
            request: r1,
            lines: lines(&["one"]),
        },
        vec![],
    );
    h.worker_says(2, FromWorker::Goodbye, vec![]);
    assert_eq!(
        h.logs_reply(1),
        Some((4, vec![(address(1), lines(&["one"]))]))
    );
}

#[test]
fn logs_nobody_asked_for_are_dropped() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    // No request is open at all.
    h.worker_says(
        1,
        FromWorker::Logs {
            request: 0,
            lines: lines(&["forged"]),
        },
        vec![],
    );
    h.get_logs(1, 5, Some(WorkerSelector::Address(address(1))));
    let r1 = h.logs_asked(1);
    // Worker 2 was not asked: its answer to worker 1's request changes nothing.
    h.worker_says(
        2,
        FromWorker::Logs {
            request: r1,
            lines: lines(&["forged"]),
        },
        vec![],
    );
    assert_eq!(h.logs_reply(1), None);
    assert_eq!(h.core.logs.len(), 1);
    h.worker_says(
        1,
        FromWorker::Logs {
            request: r1,
            lines: lines(&["real"]),
        },
        vec![],
    );
    assert_eq!(
        h.logs_reply(1),
        Some((5, vec![(address(1), lines(&["real"]))]))
    );
    // A second answer to a finished request is dropped too.
    h.worker_says(
        1,
        FromWorker::Logs {
            request: r1,
            lines: lines(&["again"]),
        },
        vec![],
    );
    assert_eq!(h.logs_reply(1), None);
}

#[test]
fn the_core_keeps_as_many_lines_of_a_worker_as_its_ring_holds() {
    assert_eq!(logs::WORKER_LOG_LINES_MAX, crate::logs::LOG_LINES_MAX);
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.get_logs(1, 1, None);
    let r = h.logs_asked(1);
    let many: Vec<String> = (0..logs::WORKER_LOG_LINES_MAX + 5)
        .map(|i| format!("line {i}"))
        .collect();
    h.worker_says(
        1,
        FromWorker::Logs {
            request: r,
            lines: many.clone(),
        },
        vec![],
    );
    let (_, workers) = h.logs_reply(1).expect("answered");
    assert_eq!(
        workers[0].1,
        many[5..].to_vec(),
        "the newest lines are kept"
    );

    // A very long line is cut, the cut marked.
    h.get_logs(1, 2, None);
    let r = h.logs_asked(1);
    h.worker_says(
        1,
        FromWorker::Logs {
            request: r,
            lines: vec!["x".repeat(100_000)],
        },
        vec![],
    );
    let (_, workers) = h.logs_reply(1).expect("answered");
    let line = &workers[0].1[0];
    assert!(line.len() <= logs::LOG_LINE_BYTES_MAX, "{}", line.len());
    assert!(line.contains("[cut: "), "{line}");
}

impl Harness {
    fn client_says(&mut self, client: u32, role: ClientRole, msg: FromClient) {
        self.step(Event::FromClient {
            identity: client_id(client),
            role,
            msg,
            frames: vec![],
        });
    }

    /// The progress reports client `n` got so far: (done, total, erred).
    fn take_progress(&mut self, n: u32) -> Vec<(u64, u64, u64)> {
        self.take_client_msgs(n)
            .into_iter()
            .filter_map(|(m, _)| match m {
                ToClient::Progress {
                    done, total, erred, ..
                } => Some((done, total, erred)),
                _ => None,
            })
            .collect()
    }

    fn tick_at(&mut self, now: u64) {
        self.now = now;
        self.core.tick(now);
        self.flush();
    }
}

#[test]
fn progress_is_reported_batched_at_most_every_interval_and_counts_each_task_once() {
    let mut h = Harness::with_config(CoreConfig {
        worker_queue_extra: 100,
        ..CoreConfig::default()
    });
    h.add_worker(1, 1);
    let mut dsk = Graph::new();
    for i in 0..20 {
        dsk.insert(
            format!("t-{i}"),
            crate::graph::task("inc", [crate::graph::literal(i)]),
        );
    }
    dsk.insert(
        "total",
        crate::graph::task(
            "sum",
            [crate::graph::Node::List(
                (0..20)
                    .map(|i| crate::graph::key(format!("t-{i}")))
                    .collect(),
            )],
        ),
    );
    h.submit(1, 1, &dsk, &["total"]);
    h.client_says(
        1,
        ClientRole::Client,
        FromClient::WatchProgress {
            request: RequestId(1),
        },
    );
    // The first report goes out at the next tick: nothing done of 21 tasks.
    h.tick_at(1);
    assert_eq!(h.take_progress(1), vec![(0, 21, 0)]);
    let computes = h.take_computes(1);
    assert_eq!(computes.len(), 20);
    // Ten tasks finish within the interval: one report, after it.
    for t in &computes[..10] {
        h.finish(1, t, Value::from(1));
    }
    h.tick_at(1 + crate::protocol::PROGRESS_INTERVAL_MS / 2);
    assert_eq!(
        h.take_progress(1),
        vec![],
        "not before the interval has passed"
    );
    assert_eq!(
        h.core.next_deadline(),
        Some(1 + crate::protocol::PROGRESS_INTERVAL_MS),
        "the core asks to be woken when the report is due"
    );
    h.tick_at(1 + crate::protocol::PROGRESS_INTERVAL_MS);
    assert_eq!(h.take_progress(1), vec![(10, 21, 0)]);
    // Nothing changed: nothing sent.
    h.tick_at(1 + 3 * crate::protocol::PROGRESS_INTERVAL_MS);
    assert_eq!(h.take_progress(1), vec![]);
    for t in &computes[10..] {
        h.finish(1, t, Value::from(1));
    }
    let total = h.take_computes(1);
    h.tick_at(1 + 4 * crate::protocol::PROGRESS_INTERVAL_MS);
    assert_eq!(h.take_progress(1), vec![(20, 21, 0)]);
    h.finish(1, &total[0], Value::from(20));
    // The computation ended with its values: no report follows, and nothing is left.
    h.tick_at(1 + 6 * crate::protocol::PROGRESS_INTERVAL_MS);
    assert_eq!(h.take_progress(1), vec![]);
    assert_eq!(h.core.next_deadline().map(|d| d > h.now), Some(true));
}

#[test]
fn progress_counts_results_already_in_memory_as_done() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Client,
        msg: FromClient::Scatter {
            request: RequestId(1),
            keys: vec![Key::from("data")],
        },
        frames: vec![encode_value(&Value::from(5))],
    });
    h.take_worker_msgs(1);
    h.worker_says(1, FromWorker::Stored { request: 1 }, vec![]);
    h.inbox.clear();
    let mut dsk = Graph::new();
    dsk.insert("y", crate::graph::task("inc", [crate::graph::key("data")]));
    h.submit(1, 2, &dsk, &["y"]);
    h.client_says(
        1,
        ClientRole::Client,
        FromClient::WatchProgress {
            request: RequestId(2),
        },
    );
    h.tick_at(1);
    assert_eq!(h.take_progress(1), vec![(1, 2, 0)]);
}

#[test]
fn datasets_are_listed_sorted() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    for (request, name) in [(1, "zeta"), (2, "alpha")] {
        h.step(Event::FromClient {
            identity: client_id(1),
            role: ClientRole::Client,
            msg: FromClient::Persist {
                request: RequestId(request),
                graph: crate::graph! { "x" => ("inc", 1) }.resolve(&|_| false),
                outputs: vec![Key::from("x")],
            },
            frames: vec![],
        });
        for t in h.take_computes(1) {
            h.finish(1, &t, Value::from(2));
        }
        let collection = crate::collection::Collection::from_graph(
            &crate::graph! { "x" => ("inc", 1) },
            vec![Key::from("x")],
        );
        h.client_says(
            1,
            ClientRole::Client,
            FromClient::Publish {
                request: RequestId(10 + request),
                name: name.into(),
                collection,
            },
        );
    }
    h.inbox.clear();
    h.client_says(
        1,
        ClientRole::Client,
        FromClient::ListDatasets {
            request: RequestId(9),
        },
    );
    let replies = h.take_client_msgs(1);
    assert_eq!(
        replies[0].0,
        ToClient::Names {
            request: RequestId(9),
            names: vec!["alpha".into(), "zeta".into()],
        }
    );
}

#[test]
fn an_operator_retires_a_worker_its_results_move_first_and_it_is_dismissed_for_good() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Scatter {
            request: RequestId(1),
            keys: vec![Key::from("data")],
        },
        frames: vec![encode_value(&Value::from(5))],
    });
    // The put goes to one worker; it stores it.
    let holder = if h
        .take_worker_msgs(1)
        .iter()
        .any(|m| matches!(m, ToWorker::PutData { .. }))
    {
        1
    } else {
        2
    };
    h.take_worker_msgs(3 - holder);
    h.worker_says(holder, FromWorker::Stored { request: 1 }, vec![]);
    h.inbox.clear();
    // A client may not retire workers.
    h.client_says(
        2,
        ClientRole::Client,
        FromClient::RetireWorkers {
            request: RequestId(1),
            workers: vec![WorkerSelector::Name(WorkerName::from(format!("w{holder}")))],
        },
    );
    assert!(matches!(
        &h.take_client_msgs(2)[0].0,
        ToClient::Failed {
            error: RequestError::Forbidden { .. },
            ..
        }
    ));
    // A selector matching no worker fails the request and retires nothing.
    h.client_says(
        2,
        ClientRole::Operator,
        FromClient::RetireWorkers {
            request: RequestId(2),
            workers: vec![WorkerSelector::Name(WorkerName::from("nobody"))],
        },
    );
    assert!(matches!(
        &h.take_client_msgs(2)[0].0,
        ToClient::Failed {
            error: RequestError::NoSuchWorker { .. },
            ..
        }
    ));
    h.client_says(
        2,
        ClientRole::Operator,
        FromClient::RetireWorkers {
            request: RequestId(3),
            workers: vec![WorkerSelector::Name(WorkerName::from(format!("w{holder}")))],
        },
    );
    // The only copy of the scattered value is copied first; no answer before.
    assert_eq!(h.take_client_msgs(2), vec![]);
    let copies = h.take_computes(3 - holder);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(!h.take_worker_msgs(holder).contains(&ToWorker::Dismiss));
    h.finish(3 - holder, &copies[0], Value::from(5));
    let to_holder = h.take_worker_msgs(holder);
    assert!(to_holder.contains(&ToWorker::Dismiss), "{to_holder:?}");
    assert!(
        !to_holder.contains(&ToWorker::Close),
        "dismissed, not closed"
    );
    assert_eq!(
        h.take_client_msgs(2)[0].0,
        ToClient::Retired {
            request: RequestId(3),
            workers: vec![address(holder)],
        }
    );
    assert_eq!(h.core.status().workers.len(), 1);
    // The value is still there.
    assert_eq!(
        h.core.who_has(vec![Key::from("data")])[0].1,
        vec![address(3 - holder)]
    );
}

#[test]
fn an_operator_shuts_the_cluster_down_and_a_client_may_not() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.client_says(
        1,
        ClientRole::Client,
        FromClient::Shutdown {
            request: RequestId(1),
        },
    );
    assert!(matches!(
        &h.take_client_msgs(1)[0].0,
        ToClient::Failed {
            error: RequestError::Forbidden { .. },
            ..
        }
    ));
    assert!(!h.core.is_shut_down());
    h.client_says(
        1,
        ClientRole::Operator,
        FromClient::Shutdown {
            request: RequestId(2),
        },
    );
    assert!(h.core.is_shut_down());
    assert_eq!(
        h.take_client_msgs(1)[0].0,
        ToClient::Done {
            request: RequestId(2)
        }
    );
    for w in [1, 2] {
        assert!(h.take_worker_msgs(w).contains(&ToWorker::Dismiss));
    }
}

#[test]
fn only_an_operator_asks_for_a_size_and_anyone_reads_it() {
    use crate::protocol::{ScalingRequest, WantedScaling};
    let mut h = Harness::new();
    let scale = |request, workers| FromClient::SetScaling {
        request: RequestId(request),
        scaling: ScalingRequest::Scale { workers },
    };
    let get = |request| FromClient::GetScaling {
        request: RequestId(request),
    };
    let reply = ask_as(&mut h, 1, ClientRole::Client, scale(1, 3));
    assert_forbidden(&reply, "scaling the cluster");
    assert_eq!(
        ask_as(&mut h, 1, ClientRole::Client, get(2)),
        ToClient::Scaling {
            request: RequestId(2),
            wanted: None
        }
    );
    assert_eq!(
        ask_as(&mut h, 2, ClientRole::Operator, scale(3, 3)),
        ToClient::Done {
            request: RequestId(3)
        }
    );
    let bad = FromClient::SetScaling {
        request: RequestId(4),
        scaling: ScalingRequest::Adapt {
            minimum: 3,
            maximum: 1,
            target_duration_ms: None,
        },
    };
    assert!(matches!(
        ask_as(&mut h, 2, ClientRole::Operator, bad),
        ToClient::Failed {
            error: RequestError::Protocol { .. },
            ..
        }
    ));
    assert_eq!(
        ask_as(&mut h, 1, ClientRole::Client, get(5)),
        ToClient::Scaling {
            request: RequestId(5),
            wanted: Some(WantedScaling {
                serial: 1,
                request: ScalingRequest::Scale { workers: 3 }
            })
        }
    );
    h.core.check_invariants().unwrap();
}

#[test]
fn metrics_count_runs_failures_losses_and_recomputations_per_prefix() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    let g = crate::graph! { "a" => ("inc", 1), "b" => ("inc", 2), "c" => ("add", "a", "b") };
    h.submit(1, 1, &g, &["c"]);
    let on1 = h.take_computes(1);
    let on2 = h.take_computes(2);
    h.finish(1, &on1[0], Value::from(2));
    h.finish(2, &on2[0], Value::from(3));
    let m = h.core.metrics();
    assert_eq!(m.counters.tasks_finished_total, 2);
    assert_eq!(m.task_stream.len(), 2);
    assert!(m.task_stream.iter().all(|r| r.start_ms <= r.end_ms));
    let finished: Vec<(&str, &str)> = m
        .task_stream
        .iter()
        .map(|r| (r.key.as_str(), r.worker.as_str()))
        .collect();
    assert!(finished.contains(&(name(&on1[0].key).to_string().as_str(), address(1).as_str())));
    assert_eq!(m.workers.len(), 2);
    assert_eq!(m.workers.iter().map(|w| w.keys).sum::<u64>(), 2);
    // c runs somewhere; the holder of its other input dies first: that input is recomputed.
    let c: Vec<ComputeTask> = h
        .take_computes(1)
        .into_iter()
        .chain(h.take_computes(2))
        .collect();
    assert_eq!(c.len(), 1);
    let holder_of_b = if name(&on2[0].key) == Key::from("b") {
        2
    } else {
        1
    };
    h.kill_worker(holder_of_b);
    let m = h.core.metrics();
    assert_eq!(m.counters.workers_lost_total, 1);
    assert_eq!(m.counters.recomputations_total, 1);
    assert_eq!(m.workers.len(), 1);
    let prefix = |m: &CoreMetrics, p: &str| {
        m.prefixes
            .iter()
            .find(|x| x.prefix == p)
            .map(|x| (x.done, x.erred, x.pending))
    };
    assert_eq!(prefix(&m, "b"), Some((1, 0, 1)), "done once, pending again");
    assert_eq!(prefix(&m, "c"), Some((0, 0, 1)));
    let survivor = 3 - holder_of_b;
    let redo = h.take_computes(survivor);
    h.finish(survivor, &redo[0], Value::from(3));
    let c = h.take_computes(survivor);
    h.finish(survivor, &c[0], Value::from(5));
    assert_eq!(h.take_client_msgs(1)[0].1, vec![Value::from(5)]);
    // A failure counts once as a failure, and for each prefix that erred.
    let g = crate::graph! { "x" => ("fail", "boom"), "y" => ("inc", "x") };
    h.submit(1, 2, &g, &["y"]);
    let x = h.take_computes(survivor);
    h.fail(survivor, &x[0].key, "boom");
    h.take_client_msgs(1);
    let m = h.core.metrics();
    assert_eq!(m.counters.task_failures_total, 1);
    assert_eq!(m.counters.tasks_finished_total, 4);
    assert_eq!(prefix(&m, "b"), Some((2, 0, 0)));
    assert_eq!(prefix(&m, "x"), Some((0, 1, 0)));
    assert_eq!(prefix(&m, "y"), Some((0, 1, 0)));
    assert_eq!(m.tasks.total, h.core.task_count() as u64);
    assert!(m.counters.messages_total > 0);
    assert_eq!(m.journal_writes_total, 0, "no journal");
}

// --- Worker memory ---------------------------------------------------------------------------

fn memory_report(
    paused: bool,
    memory: u64,
    disk: u64,
    spilled: &[&Key],
    unspilled: &[&Key],
) -> FromWorker {
    FromWorker::Memory(crate::protocol::MemoryReport {
        paused,
        memory_bytes: memory,
        spilled_bytes: disk,
        spilled: spilled.iter().map(|k| (*k).clone()).collect(),
        unspilled: unspilled.iter().map(|k| (*k).clone()).collect(),
    })
}

/// A paused worker keeps the tasks already queued on it (it runs them once it resumes; they
/// are not moved: moving a queued task would need the worker to give it up, and its inputs
/// may be there), gets no new one while paused, and gets tasks again as soon as it resumes.
#[test]
fn a_paused_worker_gets_no_new_task_until_it_resumes_and_keeps_what_it_has_queued() {
    let mut h = Harness::new(); // queue extra 1
    h.add_worker(1, 1);
    let mut g = Graph::new();
    for i in 0..6 {
        g.insert(format!("t{i}"), ("inc", i));
    }
    h.submit(1, 1, &g, &["t0", "t1", "t2", "t3", "t4", "t5"]);
    let first = h.take_computes(1);
    assert_eq!(first.len(), 2, "1 thread + 1 queued");

    h.worker_says(1, memory_report(true, 900, 0, &[], &[]), vec![]);
    let status = h.core.status();
    assert!(status.workers[0].memory.paused);
    assert_eq!(status.workers[0].memory.memory_bytes, 900);
    // Its first task finishes: the slot it frees is not filled while it is paused.
    h.finish(1, &first[0], Value::from(1));
    assert!(h.take_computes(1).is_empty(), "paused: no new task");
    assert_eq!(
        h.core.status().workers[0].processing,
        1,
        "the queued one stays"
    );
    assert_eq!(h.core.status().ready, 4);

    // A second worker registering gets the ready tasks meanwhile.
    h.add_worker(2, 1);
    assert_eq!(h.take_computes(2).len(), 2);
    assert!(h.take_computes(1).is_empty());

    // Resumed: it gets tasks again at once.
    h.worker_says(1, memory_report(false, 100, 800, &[], &[]), vec![]);
    assert_eq!(h.take_computes(1).len(), 1, "its free slot is filled");
    let w1 = h.core.status().workers[0].clone();
    assert!(!w1.memory.paused);
    assert_eq!(
        (w1.memory.memory_bytes, w1.memory.spilled_bytes),
        (100, 800)
    );
}

/// Spilled keys are believed only for values the worker holds; status lists them by name,
/// and they leave the list when the value leaves the worker or comes back to memory.
#[test]
fn spilled_keys_are_believed_only_for_values_the_worker_holds() {
    let mut h = Harness::new();
    h.add_worker(1, 2);
    h.add_worker(2, 2);
    let mut g = Graph::new();
    g.insert("a", ("inc", 1));
    g.insert("b", ("inc", 2));
    h.submit_keep(1, 1, &g, &["a", "b"]);
    let mut on_1 = Vec::new();
    for n in [1, 2] {
        for t in h.take_computes(n) {
            if n == 1 {
                on_1.push(t.key.clone());
            }
            h.finish(n, &t, Value::from(0));
        }
    }
    let (held, other): (Vec<Key>, Vec<Key>) = {
        let all = h.core.who_has(vec![Key::from("a"), Key::from("b")]);
        let mut held = Vec::new();
        let mut other = Vec::new();
        for (k, holders) in all {
            if holders.contains(&address(1)) {
                held.push(k);
            } else {
                other.push(k);
            }
        }
        (held, other)
    };
    assert_eq!(held.len() + other.len(), 2);
    // Worker 1 says both moved to disk, and a key nobody knows: only what it holds counts.
    let unknown = Key::from("no-such-wire-key");
    let mut spilled: Vec<&Key> = on_1.iter().collect();
    let other_wire: Vec<Key> = h
        .core
        .tasks
        .iter()
        .map(|(_, t)| t.key.clone())
        .filter(|k| !on_1.contains(k))
        .collect();
    spilled.extend(other_wire.iter());
    spilled.push(&unknown);
    h.worker_says(1, memory_report(false, 0, 16, &spilled, &[]), vec![]);
    let status = h.core.status();
    let w1 = status
        .workers
        .iter()
        .find(|w| w.address == address(1))
        .unwrap();
    assert_eq!(w1.memory.spilled_keys, held);
    let w2 = status
        .workers
        .iter()
        .find(|w| w.address == address(2))
        .unwrap();
    assert!(w2.memory.spilled_keys.is_empty());

    // Back in memory: gone from the list.
    let back: Vec<&Key> = on_1.iter().collect();
    h.worker_says(1, memory_report(false, 16, 0, &[], &back), vec![]);
    assert!(h
        .core
        .status()
        .workers
        .iter()
        .all(|w| w.memory.spilled_keys.is_empty()));
    // Spilled again, then released: gone too (the invariant checks it after every step).
    h.worker_says(1, memory_report(false, 0, 16, &back, &[]), vec![]);
    assert_eq!(
        h.core
            .status()
            .workers
            .iter()
            .find(|w| w.address == address(1))
            .unwrap()
            .memory
            .spilled_keys,
        held
    );
    h.step(Event::FromClient {
        identity: client_id(1),
        role: ClientRole::Operator,
        msg: FromClient::Release {
            request: RequestId(2),
            keys: vec![Key::from("a"), Key::from("b")],
        },
        frames: vec![],
    });
    assert!(h
        .core
        .status()
        .workers
        .iter()
        .all(|w| w.memory.spilled_keys.is_empty()));
}

#[test]
fn a_worker_sending_an_announced_big_value_is_not_lost_until_it_could_have_arrived() {
    let mut h = Harness::with_config(CoreConfig {
        worker_queue_extra: 1,
        heartbeat_timeout_ms: 3_000,
        // 1 KB/s: 10,000 bytes take 10 s.
        transfer_min_bytes_per_s: 1_000,
        ..CoreConfig::default()
    });
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.now = 100;
    h.worker_says(1, FromWorker::Sending { bytes: 10_000 }, vec![]);
    // A probe (some connection dropped) spares the worker whose value is on its way: its
    // answer waits behind it. Worker 2 does not answer and is lost.
    h.step(Event::WorkerConnectionLost);
    assert_eq!(h.take_worker_msgs(1), vec![ToWorker::Ping]);
    h.take_worker_msgs(2);
    h.tick_at(100 + 500);
    assert_eq!(h.core.status().workers.len(), 1);
    // The heartbeat timeout is extended by the transfer time, and only by it.
    assert_eq!(h.core.next_deadline(), Some(100 + 3_000 + 10_000 + 1));
    h.tick_at(100 + 3_000 + 10_000);
    assert_eq!(h.core.status().workers.len(), 1);
    // The value arrives (here with a heartbeat): the bytes are no longer on their way, and the
    // usual timeout counts again from now.
    h.worker_says(1, FromWorker::Heartbeat, vec![vec![0u8; 10_000]]);
    h.take_worker_msgs(1);
    assert_eq!(h.core.next_deadline(), Some(13_100 + 3_000 + 1));
    h.tick_at(13_100 + 3_000 + 1);
    assert!(
        h.core.status().workers.is_empty(),
        "silent past its timeout"
    );
}

#[test]
fn an_announcement_buys_no_more_than_the_largest_message_takes() {
    let mut h = Harness::with_config(CoreConfig {
        worker_queue_extra: 1,
        heartbeat_timeout_ms: 3_000,
        transfer_min_bytes_per_s: 1_000,
        max_message_bytes: 5_000,
        ..CoreConfig::default()
    });
    h.add_worker(1, 1);
    h.worker_says(1, FromWorker::Sending { bytes: u64::MAX }, vec![]);
    h.worker_says(1, FromWorker::Sending { bytes: 4_000 }, vec![]);
    assert_eq!(h.core.next_deadline(), Some(3_000 + 5_000 + 1));
    h.tick_at(3_000 + 5_000 + 1);
    assert!(h.core.status().workers.is_empty());
}

#[test]
fn time_the_scheduler_was_deaf_does_not_count_against_its_workers() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    // The core was busy 10 s on one huge request: the worker's heartbeats of that time still
    // wait in the queues.
    h.now = 10_000;
    h.core.was_deaf(10_000, 9_000);
    h.tick_at(10_000);
    assert_eq!(h.core.status().workers.len(), 1);
    // Only that time: silent for the timeout past it, the worker is lost.
    assert_eq!(h.core.next_deadline(), Some(9_000 + 3_000 + 1));
    // Never moved past now.
    h.core.was_deaf(10_000, 60_000);
    assert_eq!(h.core.next_deadline(), Some(10_000 + 3_000 + 1));
    h.tick_at(13_001);
    assert!(h.core.status().workers.is_empty());
}
