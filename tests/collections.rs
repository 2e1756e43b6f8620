//! Stored collections and published datasets shared between separate clients: a bag stored by
//! one client is fetched and computed by another (also after the first is gone), overwritten,
//! listed and deleted; concurrent writers never let a reader see a mix; stored collections
//! survive a scheduler restart (with a state dir) and `client.restart()`; a published dataset is
//! used without recomputing, released by `unpublish`, and recomputed from lineage when the
//! worker holding it dies.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use common::{wait_until, ClusterOptions, Proc, TestCluster, DEADLINE, SCHEDULER, WORKER};
use zask::bag::Item;
use zask::client::ClientSecurity;
use zask::graph::literal;
use zask::protocol::{RequestError, WorkerAddress};
use zask::{Bag, Client, ClientConfig, ClientError, Collection, Graph, Key, Value};

fn ints(xs: impl IntoIterator<Item = i64>) -> Value {
    Value::from(xs.into_iter().collect::<Vec<_>>())
}

/// The bag of the issue: `[1, 2, 3, 4, 5]` once computed.
fn mybag() -> Bag {
    Bag::from_sequence(0..5, 2).map("inc", vec![])
}

/// Runs `f` on a thread and returns its result, failing the test if it takes longer than the
/// deadline (a hang is a failure, not a stuck test run).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what} did not return within {DEADLINE:?}"))
}

/// Asserts that `result` is the clear "no such collection" error naming `name`.
fn assert_no_such<T: std::fmt::Debug>(result: Result<T, ClientError>, name: &str) {
    match result {
        Err(ClientError::Request(RequestError::NoSuchCollection { name: n })) => {
            assert_eq!(n, name, "the error names the missing collection");
            let message =
                ClientError::Request(RequestError::NoSuchCollection { name: n }).to_string();
            assert!(message.contains(name), "{message}");
        }
        other => panic!("expected NoSuchCollection {{ name: {name:?} }}, got {other:?}"),
    }
}

/// The graph of the dataset tests: `("c", i) => counted_inc(count_file, i)` for `i` in `0..n`,
/// so the count file gets one line `i` each time a task runs.
fn counted_graph(count_file: &Path, n: i64) -> (Graph, Vec<Key>) {
    let path = count_file.display().to_string();
    let mut g = Graph::new();
    let mut keys = Vec::new();
    for i in 0..n {
        g.insert(("c", i), ("counted_inc", literal(path.as_str()), i));
        keys.push(Key::from(("c", i)));
    }
    (g, keys)
}

/// How many times each input ran, from the count file (no file: nothing ran).
fn runs(count_file: &Path) -> BTreeMap<i64, usize> {
    let text = std::fs::read_to_string(count_file).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let i: i64 = line
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("count file line {line:?}: {e}"));
        *counts.entry(i).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_bag_stored_by_one_client_is_computed_by_another() {
    let cluster = TestCluster::new();
    let client_a = cluster.client();
    let client_b = cluster.client();
    let bag = mybag();
    client_a.set_collection("mybag", &bag).unwrap();

    let fetched = client_b.get_collection("mybag").unwrap();
    assert_eq!(
        fetched,
        bag.to_collection(),
        "the stored collection, exactly"
    );
    let back = Bag::from_collection(&fetched).unwrap();
    assert_eq!(back, bag);
    assert_eq!(client_b.compute(&back).unwrap(), ints(1..6));
    // Built upon by the second client, it gives the same keys as built upon by the first.
    assert_eq!(client_b.compute(&back.sum()).unwrap(), Value::from(15));
    assert_eq!(back.sum().key(), bag.sum().key());
    // The first client reads it back too.
    assert_eq!(client_a.get_collection("mybag").unwrap(), fetched);
}

#[test]
fn a_stored_collection_outlives_the_client_that_stored_it() {
    let cluster = TestCluster::new();
    let client_a = cluster.client();
    let bag = mybag();
    client_a.set_collection("mybag", &bag).unwrap();
    // Items and plain graphs are stored as well.
    client_a.set_collection("total", &bag.sum()).unwrap();
    client_a.close();

    let client_b = cluster.client();
    let fetched = client_b.get_collection("mybag").unwrap();
    assert_eq!(fetched, bag.to_collection());
    let back = Bag::from_collection(&fetched).unwrap();
    assert_eq!(client_b.compute(&back).unwrap(), ints(1..6));
    let total = Item::from_collection(&client_b.get_collection("total").unwrap()).unwrap();
    assert_eq!(total, bag.sum());
    assert_eq!(client_b.compute(&total).unwrap(), Value::from(15));
}

#[test]
fn overwrite_replaces_delete_removes_and_a_missing_name_is_a_clear_error() {
    let cluster = TestCluster::new();
    let client_a = Arc::new(cluster.client());
    let client_b = Arc::new(cluster.client());
    let first = mybag();
    let second = Bag::from_sequence(vec![10, 20, 30], 3).map("double", vec![]);
    client_a.set_collection("mybag", &first).unwrap();
    client_b.set_collection("mybag", &second).unwrap();
    let fetched = client_a.get_collection("mybag").unwrap();
    assert_eq!(fetched, second.to_collection(), "the last write wins");
    assert_eq!(
        client_a
            .compute(&Bag::from_collection(&fetched).unwrap())
            .unwrap(),
        ints([20, 40, 60])
    );
    assert_eq!(client_b.list_collections().unwrap(), vec!["mybag"]);

    client_a.delete_collection("mybag").unwrap();
    // Promptly (bounded), and naming it, for both clients.
    for client in [client_a.clone(), client_b.clone()] {
        let result = bounded("get_collection of a deleted name", move || {
            client.get_collection("mybag")
        });
        assert_no_such(result, "mybag");
    }
    assert_eq!(client_b.list_collections().unwrap(), Vec::<String>::new());
    let b = client_b.clone();
    assert_no_such(
        bounded("deleting a missing name", move || {
            b.delete_collection("mybag")
        }),
        "mybag",
    );
    let b = client_b.clone();
    assert_no_such(
        bounded("get_collection of a name never stored", move || {
            b.get_collection("never stored")
        }),
        "never stored",
    );
    // The name can be used again after its deletion.
    client_b.set_collection("mybag", &first).unwrap();
    assert_eq!(
        client_a.get_collection("mybag").unwrap(),
        first.to_collection()
    );
}

#[test]
fn list_collections_names_every_stored_collection() {
    let cluster = TestCluster::new();
    let client_a = cluster.client();
    let client_b = cluster.client();
    assert_eq!(client_a.list_collections().unwrap(), Vec::<String>::new());
    let g = zask::graph! { "x" => 1, "y" => ("add", "x", 2) };
    client_a.set_collection("zeta", &mybag()).unwrap();
    client_b.set_collection("alpha", &mybag().sum()).unwrap();
    client_a
        .set_collection("graph", &Collection::from_graph(&g, vec!["y".into()]))
        .unwrap();
    client_b.set_collection("zeta", &mybag()).unwrap(); // overwriting adds no name
    let mut names = client_b.list_collections().unwrap();
    names.sort();
    assert_eq!(names, vec!["alpha", "graph", "zeta"]);

    client_b.delete_collection("graph").unwrap();
    let mut names = client_a.list_collections().unwrap();
    names.sort();
    assert_eq!(names, vec!["alpha", "zeta"]);
    // Each listed name can be fetched.
    for name in names {
        client_a.get_collection(&name).unwrap();
    }
}

#[test]
fn concurrent_writers_of_one_name_never_let_a_reader_see_a_mix() {
    const WRITERS: usize = 4;
    const WRITES: usize = 40;
    let cluster = TestCluster::new();
    // Each writer's bag differs in everything: name, keys, partitions, tasks, literals.
    let bags: Vec<Collection> = (0..WRITERS)
        .map(|w| {
            Bag::from_sequence((0..(3 + 4 * w as i64)).map(|x| x * 100 + w as i64), w + 1)
                .map("add", vec![Value::from(w as i64)])
                .filter("identity")
                .to_collection()
        })
        .collect();
    for (i, a) in bags.iter().enumerate() {
        for b in &bags[i + 1..] {
            assert_ne!(a, b);
        }
    }
    let bags = Arc::new(bags);
    cluster.client().set_collection("shared", &bags[0]).unwrap();

    let writing = Arc::new(AtomicBool::new(true));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let client = cluster.client();
            let bags = bags.clone();
            let writing = writing.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                // At least a few reads, then on while anyone writes.
                while reads < 5 || writing.load(Ordering::SeqCst) {
                    let c = client.get_collection("shared").unwrap();
                    assert!(
                        bags.contains(&c),
                        "a read returned a collection nobody wrote whole: {c:?}"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = cluster.client();
            let bags = bags.clone();
            std::thread::spawn(move || {
                for _ in 0..WRITES {
                    client.set_collection("shared", &bags[w]).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        bounded("a writer", move || w.join()).expect("a writer panicked");
    }
    writing.store(false, Ordering::SeqCst);
    for r in readers {
        let reads = bounded("a reader", move || r.join()).expect("a reader panicked");
        assert!(reads >= 5);
    }
    // Afterwards: one of them, whole, computing as that bag does.
    let client = cluster.client();
    let last = client.get_collection("shared").unwrap();
    assert!(bags.contains(&last));
    assert_eq!(client.list_collections().unwrap(), vec!["shared"]);
    let w = bags.iter().position(|b| *b == last).unwrap() as i64;
    let expected: Vec<i64> = (0..(3 + 4 * w)).map(|x| x * 100 + 2 * w).collect();
    let computed = client
        .compute(&Bag::from_collection(&last).unwrap())
        .unwrap();
    // `filter("identity")` drops the zero of writer 0.
    let expected: Vec<i64> = expected.into_iter().filter(|x| *x != 0).collect();
    assert_eq!(computed, ints(expected));
}

// ---- a scheduler started by hand, restarted on the same ports with the same state dir ----

/// A scheduler with a state dir and two bare workers, as processes started here.
struct StatefulCluster {
    dir: tempfile::TempDir,
    scheduler: Proc,
    workers: Vec<Proc>,
    worker_port: String,
    client_port: String,
}

fn port(address: &str) -> String {
    address.rsplit(':').next().unwrap().to_owned()
}

impl StatefulCluster {
    fn scheduler_args(&self, worker_port: &str, client_port: &str) -> Vec<String> {
        vec![
            "--worker-port".into(),
            worker_port.into(),
            "--client-port".into(),
            client_port.into(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
            "--insecure".into(),
        ]
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start() -> StatefulCluster {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let args: Vec<String> = [
            "--worker-port",
            "0",
            "--client-port",
            "0",
            "--state-dir",
            state.to_str().unwrap(),
            "--insecure",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut scheduler = Proc::spawn(
            "scheduler-1",
            SCHEDULER,
            &args,
            dir.path().join("scheduler-1.log"),
        );
        let to_workers = scheduler.read_line_after("address_to_workers");
        let to_clients = scheduler.read_line_after("address_to_clients");
        let workers = (0..2)
            .map(|i| {
                let args: Vec<String> = [
                    to_workers.as_str(),
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--insecure",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                Proc::spawn(
                    &format!("worker-{i}"),
                    WORKER,
                    &args,
                    dir.path().join(format!("worker-{i}.log")),
                )
            })
            .collect();
        let cluster = StatefulCluster {
            dir,
            scheduler,
            workers,
            worker_port: port(&to_workers),
            client_port: port(&to_clients),
        };
        cluster.wait_for_workers(2);
        cluster
    }

    fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.client_port)
    }

    fn client(&self) -> Client {
        let config = ClientConfig {
            scheduler_timeout_ms: 15_000,
            security: ClientSecurity::Insecure,
            ..ClientConfig::default()
        };
        Client::connect_with(&self.address(), config).unwrap()
    }

    fn wait_for_workers(&self, n: usize) {
        let client = self.client();
        wait_until("workers to register", DEADLINE, || {
            (client.workers().ok()?.len() >= n).then_some(())
        });
    }

    /// SIGKILL the scheduler, then start a new one on the same ports with the same state dir.
    fn crash_and_restart_scheduler(&mut self, generation: u32) {
        self.scheduler.kill();
        let args = self.scheduler_args(&self.worker_port, &self.client_port);
        let mut scheduler = Proc::spawn(
            &format!("scheduler-{generation}"),
            SCHEDULER,
            &args,
            self.dir.path().join(format!("scheduler-{generation}.log")),
        );
        scheduler.read_line_after("address_to_clients");
        self.scheduler = scheduler;
    }
}

impl Drop for StatefulCluster {
    fn drop(&mut self) {
        // Workers before the scheduler.
        self.workers.clear();
    }
}

#[test]
fn stored_collections_survive_a_scheduler_restart_with_a_state_dir() {
    let mut cluster = StatefulCluster::start();
    let bag = mybag();
    {
        let client = cluster.client();
        client
            .set_collection("mybag", &Bag::from_sequence(vec![7], 1))
            .unwrap();
        client.set_collection("mybag", &bag).unwrap(); // overwritten: the last one counts
        client.set_collection("total", &bag.sum()).unwrap();
        client.set_collection("gone", &bag).unwrap();
        client.delete_collection("gone").unwrap(); // deleted: stays deleted
    }
    cluster.crash_and_restart_scheduler(2);

    let client = cluster.client();
    let mut names = client.list_collections().unwrap();
    names.sort();
    assert_eq!(names, vec!["mybag", "total"]);
    let fetched = client.get_collection("mybag").unwrap();
    assert_eq!(fetched, bag.to_collection());
    assert_no_such(client.get_collection("gone"), "gone");
    cluster.wait_for_workers(2);
    let back = Bag::from_collection(&fetched).unwrap();
    assert_eq!(client.compute(&back).unwrap(), ints(1..6));
    let total = Item::from_collection(&client.get_collection("total").unwrap()).unwrap();
    assert_eq!(client.compute(&total).unwrap(), Value::from(15));

    // A second crash keeps what the restarted scheduler was told.
    client.delete_collection("total").unwrap();
    drop(client);
    cluster.crash_and_restart_scheduler(3);
    let client = cluster.client();
    assert_eq!(client.list_collections().unwrap(), vec!["mybag"]);
    assert_eq!(client.get_collection("mybag").unwrap(), bag.to_collection());
}

#[test]
fn stored_collections_are_kept_across_a_client_restart() {
    let cluster = ClusterOptions::default().with_nanny().start();
    let client_a = cluster.client();
    let bag = mybag();
    client_a.set_collection("mybag", &bag).unwrap();
    assert_eq!(client_a.compute(&bag).unwrap(), ints(1..6));
    let persisted = client_a.persist(&bag).unwrap();
    client_a.publish("ds", &persisted).unwrap();
    let pids_before: Vec<u32> = client_a.workers().unwrap().iter().map(|w| w.pid).collect();
    bounded("client.restart()", move || {
        client_a.restart().unwrap();
        client_a
    })
    .close();
    cluster.wait_for_workers(2);
    let client_b = cluster.client();
    // The workers really were restarted (new processes under their nannies).
    let pids_after: Vec<u32> = client_b.workers().unwrap().iter().map(|w| w.pid).collect();
    assert!(
        pids_after.iter().all(|p| !pids_before.contains(p)),
        "before {pids_before:?}, after {pids_after:?}"
    );
    assert_eq!(client_b.list_collections().unwrap(), vec!["mybag"]);
    // Published datasets are data, gone with the restarted workers: a clear error.
    assert_no_such(client_b.get_dataset("ds"), "ds");
    let fetched = client_b.get_collection("mybag").unwrap();
    assert_eq!(fetched, bag.to_collection());
    assert_eq!(
        client_b
            .compute(&Bag::from_collection(&fetched).unwrap())
            .unwrap(),
        ints(1..6)
    );
}

// ---- published datasets ----

#[test]
fn a_published_dataset_is_used_by_another_client_without_recomputing() {
    let cluster = TestCluster::options().with_test_functions().start();
    let count_file = cluster.dir().join("counts");
    let (g, keys) = counted_graph(&count_file, 5);
    let collection = Collection::from_graph(&g, keys.clone());

    let client_a = cluster.client();
    let persisted = client_a.persist(&collection).unwrap();
    assert_eq!(persisted, collection);
    client_a.publish("ds", &persisted).unwrap();
    // The dataset holds the results; the names `persist` gave them are not needed any more.
    client_a.release(persisted.keys.clone()).unwrap();
    assert_eq!(runs(&count_file), (0..5).map(|i| (i, 1)).collect());
    client_a.close();

    let client_b = Arc::new(cluster.client());
    let c = client_b.get_dataset("ds").unwrap();
    assert_eq!(c, collection);
    assert_eq!(
        client_b.get(&c.to_graph(), c.keys.clone()).unwrap(),
        ints(1..6)
    );
    // Twice, even: the results are there, nothing ran again.
    assert_eq!(
        client_b.get(&c.to_graph(), c.keys.clone()).unwrap(),
        ints(1..6)
    );
    assert_eq!(
        runs(&count_file),
        (0..5).map(|i| (i, 1)).collect(),
        "each task ran exactly once"
    );
    // Published datasets are not stored collections.
    assert_eq!(client_b.list_collections().unwrap(), Vec::<String>::new());

    // Unpublishing releases the results.
    let held = client_b.who_has(keys.clone()).unwrap();
    assert!(held.values().all(|h| !h.is_empty()), "{held:?}");
    client_b.unpublish("ds").unwrap();
    wait_until("the unpublished results to be released", DEADLINE, || {
        let held = client_b.who_has(keys.clone()).unwrap();
        held.values().all(Vec::is_empty).then_some(())
    });
    for (name, client) in [("ds", client_b.clone()), ("missing", client_b.clone())] {
        let n = name.to_owned();
        let result = bounded("get_dataset of a missing name", move || {
            client.get_dataset(&n)
        });
        assert_no_such(result, name);
    }
    let b = client_b.clone();
    assert_no_such(
        bounded("unpublish of a missing name", move || b.unpublish("ds")),
        "ds",
    );
}

#[test]
fn a_published_dataset_lost_with_its_worker_is_recomputed_from_lineage() {
    let mut options = ClusterOptions::default()
        .with_test_functions()
        .worker_args(&["--heartbeat-interval-ms", "100"]);
    options.scheduler_args = vec!["--heartbeat-timeout-ms".into(), "1500".into()];
    let mut cluster = options.start();
    let count_file = cluster.dir().join("counts");
    let (g, keys) = counted_graph(&count_file, 6);
    let collection = Collection::from_graph(&g, keys.clone());
    {
        let client_a = cluster.client();
        let persisted = client_a.persist(&collection).unwrap();
        client_a.publish("ds", &persisted).unwrap();
        client_a.release(persisted.keys.clone()).unwrap();
    }
    assert_eq!(runs(&count_file), (0..6).map(|i| (i, 1)).collect());

    let client_b = cluster.client();
    let who_has: HashMap<Key, Vec<WorkerAddress>> = client_b.who_has(keys.clone()).unwrap();
    // Kill a worker holding some of the results (the holder of the first key).
    let victim_address = who_has[&keys[0]][0].clone();
    let victim = cluster
        .worker_index(victim_address.as_str())
        .unwrap_or_else(|| panic!("no worker printed {victim_address}"));
    let lost: Vec<i64> = (0..6)
        .filter(|&i| who_has[&keys[i as usize]] == vec![victim_address.clone()])
        .collect();
    assert!(lost.contains(&0));
    cluster.kill_worker(victim);

    let c = client_b.get_dataset("ds").unwrap();
    assert_eq!(c, collection);
    let b = Arc::new(client_b);
    let client = b.clone();
    let graph = c.to_graph();
    let wanted = c.keys.clone();
    let value = bounded("computing the dataset after its holder died", move || {
        client.get(&graph, wanted)
    });
    assert_eq!(value.unwrap(), ints(1..7));
    let counts = runs(&count_file);
    for i in 0..6 {
        let expected = if lost.contains(&i) { 2 } else { 1 };
        assert_eq!(
            counts.get(&i),
            Some(&expected),
            "task {i} (lost: {lost:?}): {counts:?}"
        );
    }
    // Still published: another client gets it again without a further run.
    let client_c = cluster.client();
    let c = client_c.get_dataset("ds").unwrap();
    assert_eq!(
        client_c.get(&c.to_graph(), c.keys.clone()).unwrap(),
        ints(1..7)
    );
    assert_eq!(runs(&count_file), counts);
    // Unpublishing releases the recomputed results too.
    client_c.unpublish("ds").unwrap();
    wait_until("the unpublished results to be released", DEADLINE, || {
        let held = client_c.who_has(keys.clone()).unwrap();
        held.values().all(Vec::is_empty).then_some(())
    });
}

#[test]
fn republishing_and_publishing_under_two_names_release_only_what_no_name_holds() {
    let cluster = TestCluster::options().with_test_functions().start();
    let count_file = cluster.dir().join("counts");
    let (g, keys) = counted_graph(&count_file, 4);
    let first = Collection::from_graph(&g, keys[..2].to_vec());
    let second = Collection::from_graph(&g, keys[2..].to_vec());
    let client = cluster.client();
    let held = |ks: &[Key]| {
        let who_has = client.who_has(ks.to_vec()).unwrap();
        ks.iter().filter(|k| !who_has[*k].is_empty()).count()
    };
    // Not persisted yet: nothing to publish.
    match client.publish("ds", &first) {
        Err(ClientError::Request(RequestError::NotFound { .. })) => {}
        other => panic!("publishing what is not in memory: {other:?}"),
    }
    assert_no_such(client.get_dataset("ds"), "ds");

    let first = client.persist(&first).unwrap();
    let second = client.persist(&second).unwrap();
    client.publish("ds", &first).unwrap();
    client.publish("alias", &first).unwrap();
    client.publish("other", &second).unwrap();
    // From here on only the datasets hold the results (persist named them until now).
    client.release(keys.clone()).unwrap();
    // Republishing "ds" with the second collection: the first stays, "alias" holds it.
    client.publish("ds", &second).unwrap();
    assert_eq!(client.get_dataset("ds").unwrap(), second);
    assert_eq!(client.get_dataset("alias").unwrap(), first);
    client.unpublish("other").unwrap(); // "ds" still holds the second
    client.unpublish("alias").unwrap(); // nothing holds the first any more
    wait_until("the first collection's results to go", DEADLINE, || {
        (held(&keys[..2]) == 0).then_some(())
    });
    assert_eq!(held(&keys[2..]), 2, "still published as \"ds\"");
    let other = cluster.client();
    let c = other.get_dataset("ds").unwrap();
    assert_eq!(
        other.get(&c.to_graph(), c.keys.clone()).unwrap(),
        ints(3..5)
    );
    assert_eq!(
        runs(&count_file),
        (0..4).map(|i| (i, 1)).collect(),
        "nothing ran twice"
    );
    client.unpublish("ds").unwrap();
    wait_until("every result to go", DEADLINE, || {
        (held(&keys) == 0).then_some(())
    });
}
