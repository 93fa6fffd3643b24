//! Issue 13: a virtual board's verdicts are a function of the scenarios, boards.yaml and the
//! images, never of host load. The default suite runs once on a quiet machine and once with the
//! machine loaded from inside the test (a busy thread per core plus a second suite at the same
//! time); the report.json files must be identical once the wall-clock keys (`wall_*`), the run id,
//! the run's start timestamp and the command line are dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn suite(report_dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--report-dir"])
        .arg(report_dir)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finished(child: std::process::Child) -> Output {
    child.wait_with_output().unwrap()
}

/// The report without what may differ between runs: wall-clock keys, the run id, the run's start
/// timestamp and the command line.
fn board_side(report_dir: &Path) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !k.starts_with("wall_") && k != "run_id" && k != "started_at" && k != "command");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("latest/report.json")).unwrap()).unwrap();
    strip(&mut v);
    v
}

/// The first difference between two JSON documents, as a path and both values.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (p, q) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                if let Some(d) = first_difference(p, q, &format!("{path}.{k}")) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

#[test]
fn the_suite_reports_the_same_board_side_facts_on_a_quiet_and_on_a_loaded_machine() {
    let quiet_dir = tempfile::tempdir().unwrap();
    let quiet = finished(suite(quiet_dir.path()));
    assert_eq!(quiet.status.code(), Some(0), "{}", String::from_utf8_lossy(&quiet.stdout));

    // Load: a spinning thread per core, and a second suite in parallel with the measured one.
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let (loaded_dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let other = suite(other_dir.path());
    let loaded = finished(suite(loaded_dir.path()));
    let other = finished(other);
    stop.store(true, Ordering::Relaxed);
    hogs.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(loaded.status.code(), Some(0), "{}", String::from_utf8_lossy(&loaded.stdout));
    assert_eq!(other.status.code(), Some(0), "{}", String::from_utf8_lossy(&other.stdout));

    let reference = board_side(quiet_dir.path());
    let scenarios = reference["scenarios"].as_array().map_or(0, Vec::len);
    assert!(scenarios >= 80, "the default suite ran {scenarios} scenario runs");
    for (what, dir) in [("the loaded run", loaded_dir.path()), ("the parallel run", other_dir.path())] {
        let seen = board_side(dir);
        if let Some(d) = first_difference(&reference, &seen, "report") {
            panic!("{what} differs from the quiet run: {d}");
        }
    }
}
