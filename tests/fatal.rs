//! The panic rule, on real processes: a panic on one of Zask's threads outside a task ends the
//! process at once with `zask::fatal::EXIT_CODE`, naming the thread and the location; a panic
//! inside a task stays that task's error; in library mode a panic on the user's own threads
//! keeps its usual meaning.
//!
//! A plain `main` (harness = false): the test runs this same executable again with
//! `ZASK_FATAL_CHILD=<scenario>` and checks how the child ends.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zask::protocol::TaskErrorKind;
use zask::{graph, ClientError, LocalCluster, Registry, Value};

const CHILD_ENV: &str = "ZASK_FATAL_CHILD";
/// Bound of every wait: a child that should have died and did not fails the test, never hangs.
const DEADLINE: Duration = Duration::from_secs(60);

fn main() {
    if let Ok(scenario) = std::env::var(CHILD_ENV) {
        child(&scenario);
        return;
    }
    let tests: [(&str, fn()); 3] = [
        (
            "panic_on_a_service_thread_exits_the_process_at_once",
            panic_on_a_service_thread_exits_the_process_at_once,
        ),
        (
            "panic_inside_a_task_stays_the_task_error",
            panic_inside_a_task_stays_the_task_error,
        ),
        (
            "library_mode_spares_the_users_threads_but_not_zasks",
            library_mode_spares_the_users_threads_but_not_zasks,
        ),
    ];
    // Like libtest: `--list` lists, a positional argument filters by substring.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let mut ran = 0;
    for (name, test) in tests {
        if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
            print!("test {name} ... ");
            test();
            println!("ok");
            ran += 1;
        }
    }
    println!("fatal: {ran} passed");
}

fn child(scenario: &str) {
    match scenario {
        "service-panic" => {
            zask::fatal::install_for_process();
            std::thread::Builder::new()
                .name("zask-test-victim".into())
                .spawn(|| panic!("deliberate bug"))
                .unwrap();
            // If the hook did not end the process, say so and exit 0: the parent fails.
            std::thread::sleep(DEADLINE);
            println!("still alive");
        }
        "task-panic" => {
            zask::fatal::install_for_process();
            let mut registry = Registry::with_builtins();
            registry.register("boom", |_: i64| -> i64 { panic!("task bug") });
            let cluster = LocalCluster::builder()
                .workers(1)
                .registry(registry)
                .start()
                .unwrap();
            let client = cluster.client().unwrap();
            match client.get(&graph! { "x" => ("boom", 1) }, "x") {
                Err(ClientError::Request(zask::protocol::RequestError::Task { error, .. }))
                    if error.kind == TaskErrorKind::Panicked =>
                {
                    println!("task-error: {}", error.message)
                }
                other => println!("unexpected: {other:?}"),
            }
            // The worker lives on and still computes.
            let v = client.get(&graph! { "y" => ("inc", 1) }, "y").unwrap();
            assert_eq!(v, Value::from(2));
            println!("after: {v:?}");
        }
        "library" => {
            zask::fatal::install();
            let user = std::thread::spawn(|| panic!("user's own bug"));
            assert!(user.join().is_err());
            println!("user thread panicked, process lives");
            let zask_thread =
                zask::fatal::spawn_service("zask-test-service", || panic!("zask bug")).unwrap();
            let _ = zask_thread.join();
            std::thread::sleep(DEADLINE);
            println!("still alive");
        }
        other => panic!("unknown scenario {other}"),
    }
}

struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    after: Duration,
}

fn run_child(scenario: &str) -> Ended {
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let started = Instant::now();
    let mut child = Command::new(exe)
        .env(CHILD_ENV, scenario)
        .env("RUST_LOG", "error")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > DEADLINE + Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {scenario} did not end within the deadline");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ended {
        code: status.code(),
        stdout: std::fs::read_to_string(out).unwrap(),
        stderr: std::fs::read_to_string(err).unwrap(),
        after: started.elapsed(),
    }
}

fn panic_on_a_service_thread_exits_the_process_at_once() {
    let ended = run_child("service-panic");
    assert_eq!(
        ended.code,
        Some(zask::fatal::EXIT_CODE),
        "stdout: {} stderr: {}",
        ended.stdout,
        ended.stderr
    );
    assert!(!ended.stdout.contains("still alive"));
    // "At once": well before the child's own sleep would have ended it.
    assert!(ended.after < DEADLINE, "took {:?}", ended.after);
    for needle in ["zask-test-victim", "tests/fatal.rs:", "deliberate bug"] {
        assert!(
            ended.stderr.contains(needle),
            "{needle} missing in: {}",
            ended.stderr
        );
    }
}

fn panic_inside_a_task_stays_the_task_error() {
    let ended = run_child("task-panic");
    assert_eq!(ended.code, Some(0), "stderr: {}", ended.stderr);
    assert!(
        ended.stdout.contains("task-error: boom: task bug"),
        "{}",
        ended.stdout
    );
    assert!(ended.stdout.contains("after: Int(2)"), "{}", ended.stdout);
}

fn library_mode_spares_the_users_threads_but_not_zasks() {
    let ended = run_child("library");
    assert!(
        ended.stdout.contains("user thread panicked, process lives"),
        "{}",
        ended.stdout
    );
    assert_eq!(ended.code, Some(zask::fatal::EXIT_CODE), "{}", ended.stderr);
    assert!(!ended.stdout.contains("still alive"));
    assert!(
        ended.stderr.contains("zask-test-service"),
        "{}",
        ended.stderr
    );
}
