//! Ctrl-C / SIGTERM during `hil run`: the step under way and the rest of the scenario are
//! `interrupted`, the report is written, and the exit status says which signal came (128 + its
//! number, as for a process the signal killed).

mod common;

use std::time::Duration;

use common::{LONG_WAIT, REALISTIC_BOARD, Running, hil, latest_report};
use nix::sys::signal::{Signal, kill};

fn stop_a_long_run_with(signal: Signal) -> (Option<i32>, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boards.yaml"), REALISTIC_BOARD).unwrap();
    std::fs::write(dir.path().join("long.yaml"), LONG_WAIT).unwrap();
    let locks = dir.path().join("locks");
    let mut run = Running::spawn(hil(dir.path(), &locks, &["run", "--report-dir", "r", "long.yaml"]));
    // The board is open and the 60 s wait under way: the signal cuts a running step.
    run.wait_for_line("running wait 60s", Duration::from_secs(60));
    kill(run.pid(), signal).unwrap();
    let (status, out, err) = run.finish(Duration::from_secs(30));
    let report = latest_report(&dir.path().join("r"));
    (status.code(), report, format!("stdout:\n{out}\nstderr:\n{err}"))
}

fn assert_interrupted(report: &serde_json::Value, output: &str) {
    assert_eq!(report["status"], "interrupted", "{output}");
    let long = &report["scenarios"][0];
    assert_eq!(long["scenario"], "long");
    assert_eq!(long["status"], "interrupted", "{output}");
    assert_eq!(long["message"], "interrupted at step 1 wait", "{output}");
    assert_eq!(long["steps"][0]["status"], "interrupted", "the running step");
    assert_eq!(long["steps"][1]["status"], "interrupted", "the step not yet run");
    assert!(long["steps"][0]["wall_duration_ms"].as_u64().unwrap() < 50_000, "the wait was cut short: {output}");
    assert_eq!(report["summary"]["interrupted"], 1);
    assert!(output.contains("interrupted long"), "the summary line: {output}");
}

#[test]
fn sigint_stops_a_run_with_exit_130_and_an_interrupted_report() {
    let (code, report, output) = stop_a_long_run_with(Signal::SIGINT);
    assert_eq!(code, Some(130), "{output}");
    assert!(output.contains("SIGINT: stopping"), "{output}");
    assert_interrupted(&report, &output);
}

#[test]
fn sigterm_stops_a_run_with_exit_143_and_an_interrupted_report() {
    let (code, report, output) = stop_a_long_run_with(Signal::SIGTERM);
    assert_eq!(code, Some(143), "{output}");
    assert!(output.contains("SIGTERM: stopping"), "{output}");
    assert_interrupted(&report, &output);
}
