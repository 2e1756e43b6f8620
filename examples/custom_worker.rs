//! Your own worker binary: the built-ins plus your functions, in a few lines.
//! Run it like `zask-worker`: `cargo run --example custom_worker -- tcp://127.0.0.1:4444`.
//! With no address it starts an embedded cluster using the same registry and runs one graph.

use zask::worker::{Worker, WorkerConfig};
use zask::{graph, LocalCluster, Registry, Value};

fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register("square", |x: i64| x * x);
    registry.register("greet", |name: String| format!("hello, {name}"));
    registry.register("checked_sqrt", |x: f64| {
        if x < 0.0 {
            Err(format!("cannot take the square root of {x}"))
        } else {
            Ok(x.sqrt())
        }
    });
    registry
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Some(scheduler) = std::env::args().nth(1) {
        let worker = Worker::start(WorkerConfig::new(scheduler), registry())?;
        worker.wait()?;
        return Ok(());
    }
    let cluster = LocalCluster::builder().registry(registry()).start()?;
    let client = cluster.client()?;
    let dsk = graph! { "x" => 7, "y" => ("square", "x"), "hi" => ("greet", "zask") };
    assert_eq!(client.get(&dsk, "y")?, Value::from(49));
    println!("{}", client.get(&dsk, "hi")?);
    Ok(())
}
