//! The worker IO with a store whose writes fail: a value that could not be written is never
//! reported as stored. An in-process scheduler and workers on real loopback sockets, one of
//! them given a `Store` that refuses every write (`Worker::start_with_store`).

use std::time::{Duration, Instant};

use zask::client::ClientSecurity;
use zask::protocol::{RequestError, WorkerAddress, WorkerSelector};
use zask::scheduler::{Scheduler, SchedulerConfig};
use zask::worker::{Registry, Worker, WorkerConfig};
use zask::{graph, Client, ClientConfig, ClientError, GetOptions, Key, Value};
use zask_storage::{MemoryStore, Store, StoreError, StoreResult};

const DEADLINE: Duration = Duration::from_secs(30);

/// A memory store that refuses every write, as a full disk would.
struct FailingWrites(MemoryStore);

impl Store for FailingWrites {
    fn kind(&self) -> String {
        "failing-writes".into()
    }
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn set(&mut self, _key: &[u8], _value: Vec<u8>) -> StoreResult<()> {
        Err(StoreError::Io("no space left on device".into()))
    }
    fn delete(&mut self, key: &[u8]) -> StoreResult<bool> {
        self.0.delete(key)
    }
    fn contains(&self, key: &[u8]) -> StoreResult<bool> {
        self.0.contains(key)
    }
    fn keys(&self) -> StoreResult<Vec<Vec<u8>>> {
        self.0.keys()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn total_bytes(&self) -> u64 {
        self.0.total_bytes()
    }
    fn clear(&mut self) -> StoreResult<()> {
        self.0.clear()
    }
}

fn wait_until<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = condition() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Setup {
    client: Client,
    failing: WorkerAddress,
    healthy: Option<WorkerAddress>,
    // Workers before the scheduler, so they leave first.
    _workers: Vec<Worker>,
    _scheduler: Scheduler,
}

/// A scheduler, a worker whose store fails every write and, if asked, a healthy worker.
fn setup(with_healthy: bool) -> Setup {
    let scheduler = Scheduler::start(SchedulerConfig::default()).expect("scheduler");
    let config = |name: &str| {
        let mut c = WorkerConfig::new(scheduler.address_to_workers());
        c.nthreads = 1;
        c.name = Some(name.into());
        c
    };
    let failing = Worker::start_with_store(
        config("failing"),
        Registry::with_builtins(),
        Box::new(FailingWrites(MemoryStore::new())),
    )
    .expect("worker");
    let mut workers = vec![failing];
    if with_healthy {
        workers.push(Worker::start(config("healthy"), Registry::with_builtins()).expect("worker"));
    }
    // SchedulerConfig::default() has no security: so neither does the client.
    let client = Client::connect_with(
        scheduler.address_to_clients(),
        ClientConfig {
            security: ClientSecurity::Insecure,
            ..ClientConfig::default()
        },
    )
    .expect("client");
    wait_until("the workers to register", || {
        (client.workers().expect("status").len() == workers.len()).then_some(())
    });
    Setup {
        client,
        failing: workers[0].address().clone(),
        healthy: workers.get(1).map(|w| w.address().clone()),
        _workers: workers,
        _scheduler: scheduler,
    }
}

fn on(key: &str, worker: &WorkerAddress) -> GetOptions {
    GetOptions {
        restrictions: vec![(
            Key::from(key),
            vec![WorkerSelector::Address(worker.clone())],
        )],
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    }
}

fn task_error_message(result: Result<Value, ClientError>) -> String {
    match result {
        Err(ClientError::Request(RequestError::Task { error, .. })) => error.message,
        other => panic!("expected a task error, got {other:?}"),
    }
}

#[test]
fn a_result_the_store_cannot_write_fails_its_task() {
    let s = setup(false);
    let dsk = graph! { "x" => ("inc", 1) };
    let message = task_error_message(s.client.get_with(&dsk, "x", on("x", &s.failing)));
    assert_eq!(
        message,
        "could not store the result: store backend error: no space left on device"
    );
}

#[test]
fn an_input_fetched_from_a_peer_that_the_store_cannot_write_fails_the_task_needing_it() {
    let s = setup(true);
    let healthy = s.healthy.clone().expect("a healthy worker");
    let dsk = graph! { "a" => ("inc", 1), "b" => ("inc", "a") };
    let mut options = on("a", &healthy);
    options
        .restrictions
        .extend(on("b", &s.failing).restrictions);
    let message = task_error_message(s.client.get_with(&dsk, "b", options));
    assert!(
        message.starts_with("could not store input")
            && message.contains("fetched from a peer")
            && message.ends_with("no space left on device"),
        "{message}"
    );
}

#[test]
fn scattered_data_the_store_cannot_write_is_reported_lost_not_stored() {
    let s = setup(false);
    // The only worker takes it; the scheduler confirms the scatter, then hears it is not held.
    s.client
        .scatter([("s", Value::from(41))])
        .expect("the scatter itself is answered");
    wait_until("the scheduler to drop the failing worker as holder", || {
        let who_has = s.client.who_has("s").expect("who_has");
        who_has.values().all(Vec::is_empty).then_some(())
    });
    let dsk = graph! { "t" => ("inc", "s") };
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    match s.client.get_with(&dsk, "t", options) {
        Err(ClientError::Request(RequestError::DataLost { key, workers })) => {
            assert_eq!(key, Key::from("s"));
            assert_eq!(workers, vec![s.failing.clone()]);
        }
        other => panic!("expected the scattered value to be reported lost, got {other:?}"),
    }
}
