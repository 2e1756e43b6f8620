//! The seed example of the 2015 design, on an embedded local cluster: no servers to start.
//! Run with `cargo run --example quickstart`. Pass a scheduler's client address
//! (e.g. tcp://127.0.0.1:5555) to run it against a real cluster instead.

use zask::{graph, Client, LocalCluster, LocalClusterError, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Keep the cluster alive for as long as the client is used.
    let (_cluster, client) = match std::env::args().nth(1) {
        Some(address) => (None, Client::connect(&address)?),
        None => {
            // Worker processes filling the machine; they need the zask-worker program, which
            // `cargo run --example` does not build (`cargo build --bins` does): without it,
            // threads of this process.
            let cluster = match LocalCluster::new() {
                Err(LocalClusterError::NoWorkerProgram(e)) => {
                    eprintln!("{e}\n(running the workers as threads of this process instead)");
                    LocalCluster::builder().processes(false).start()?
                }
                started => started?,
            };
            let client = cluster.client()?;
            (Some(cluster), client)
        }
    };

    let dsk = graph! { "x" => 1, "y" => ("add", "x", 2) };
    let y = client.get(&dsk, "y")?;
    assert_eq!(y, Value::from(3));
    println!("y = {y}");

    // A bigger graph: a sum over 1,000 incremented numbers, computed on the workers.
    let mut big = zask::Graph::new();
    let mut parts = Vec::new();
    for i in 0..1000 {
        big.insert(("x", i), ("inc", i));
        parts.push(zask::graph::key(("x", i)));
    }
    big.insert("total", ("sum", parts));
    let total = client.get(&big, "total")?;
    assert_eq!(total, Value::from((1..=1000).sum::<i64>()));
    println!("total = {total}");
    for w in client.workers()? {
        println!(
            "worker {} ({} threads, pid {})",
            w.address, w.nthreads, w.pid
        );
    }
    Ok(())
}
