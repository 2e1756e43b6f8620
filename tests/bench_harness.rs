//! Runs every `zask-bench` scenario at a small size so the benchmark harness cannot rot: each
//! must start its cluster, compute, check its own answer and print its JSON line. Nothing here
//! is timed.

mod common;

use common::run;

const BENCH: &str = env!("CARGO_BIN_EXE_zask-bench");

fn scenario(args: &[&str]) -> serde_json::Value {
    let out = run(BENCH, args);
    assert_eq!(
        out.code(),
        Some(0),
        "zask-bench {args:?} failed:\n{}",
        out.stderr
    );
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("zask-bench {args:?} printed no JSON line"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["scenario"], args[0], "{json}");
    json
}

#[test]
fn every_scenario_runs_at_a_small_size_and_checks_its_answer() {
    let independent = scenario(&["independent", "--n", "200"]);
    assert_eq!(independent["n"], 200);
    assert!(independent["tasks_per_s"].as_f64().unwrap() > 0.0);
    assert!(independent["scheduler_peak_rss_mb"].as_f64().is_some());
    scenario(&["tree", "--n", "64"]);
    let latency = scenario(&["latency", "--n", "20"]);
    assert!(latency["median_us"].as_f64().unwrap() > 0.0);
    assert!(latency["p99_us"].as_f64().unwrap() >= latency["median_us"].as_f64().unwrap());
    scenario(&["bag", "--n", "20"]);
    let transfer = scenario(&["transfer", "--n", "100000"]);
    assert!(transfer["mb_per_s"].as_f64().unwrap() > 0.0);
    scenario(&["scale", "--n", "500"]);
    let restart = scenario(&["restart", "--n", "300"]);
    assert!(restart["resume_s"].as_f64().unwrap() >= restart["restart_s"].as_f64().unwrap());
}

#[test]
fn the_zero_worker_completes_tasks_without_running_them() {
    let json = scenario(&["independent", "--n", "300", "--zero"]);
    assert_eq!(json["system"], "zask-zero");
}

#[test]
fn the_bag_survives_workers_killed_while_it_runs() {
    // Long enough for several kills; the answer is checked by the harness itself.
    let sigterm = scenario(&["bag", "--n", "60", "--faults"]);
    assert_eq!(sigterm["faults"], "sigterm", "{sigterm}");
    let sigkill = scenario(&["bag", "--n", "60", "--faults", "sigkill"]);
    assert_eq!(sigkill["faults"], "sigkill", "{sigkill}");
    assert!(sigkill["kills"].as_f64().is_some(), "{sigkill}");
}

#[test]
fn a_large_scale_run_first_measures_the_memory_it_needs() {
    // Larger than its calibration run: it calibrates, then runs and reports bytes per task.
    let json = scenario(&["scale", "--n", "600", "--calibrate-n", "200"]);
    assert!(
        json["estimated_bytes_per_task"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(json["memory_needed_mb"].as_f64().unwrap() > 0.0, "{json}");
    assert!(
        json["memory_available_mb"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(json["bytes_per_task"].as_f64().unwrap() > 0.0, "{json}");
}

#[test]
fn a_scale_run_the_machine_cannot_hold_is_refused_politely() {
    // 10,000,000 tasks at 1 MB each: no machine this runs on has 10 TB.
    let out = run(
        BENCH,
        &["scale", "--n", "10000000", "--bytes-per-task", "1000000"],
    );
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(!out.stdout.contains('{'), "it must not run: {}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", out.stderr);
    assert!(lines[0].contains("needs about"), "{}", lines[0]);
    assert!(lines[0].contains("GiB available"), "{}", lines[0]);
}

#[test]
fn the_whole_comparison_script_runs_in_quick_mode_and_prints_every_row() {
    // Zask alone (no peers, no venv), this build's binaries, small sizes, one round.
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/compare_all.sh"
        ))
        .args(["--quick", "--no-peers"])
        .env("ZASK_BENCH", BENCH)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "compare_all.sh failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("QUICK MODE"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario"))
        .collect();
    for name in [
        "independent",
        "tree",
        "latency, 30 gets: median",
        "latency, 30 gets: p99",
        "transfer",
        "zero worker",
        "SIGKILL",
        "scale, 3,000 tasks",
        "bytes per task",
    ] {
        let row = rows
            .iter()
            .find(|r| r.contains(name))
            .unwrap_or_else(|| panic!("no {name:?} row:\n{stdout}"));
        // The Zask column holds a figure, not a failure.
        let zask = row.split('|').nth(2).unwrap_or_default();
        assert!(zask.chars().any(|c| c.is_ascii_digit()), "{row}");
        assert!(!zask.contains("failed") && !zask.contains("WRONG"), "{row}");
    }
    assert_eq!(rows.len(), 9, "{stdout}");
}
