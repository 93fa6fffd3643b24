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

/// A second Ctrl-C abandons what still runs (here a cleanup step, which the first one lets
/// finish): the report is written at once, marked interrupted, naming the step that was running.
#[test]
fn a_second_sigint_abandons_the_run_and_still_writes_an_interrupted_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boards.yaml"), REALISTIC_BOARD).unwrap();
    std::fs::write(
        dir.path().join("slow-cleanup.yaml"),
        "name: slow-cleanup\nsteps:\n  - wait: 60s\n    timeout: 90s\ncleanup:\n  - wait: 60s\n    timeout: 90s\n",
    )
    .unwrap();
    let locks = dir.path().join("locks");
    let mut run = Running::spawn(hil(dir.path(), &locks, &["run", "--report-dir", "r", "slow-cleanup.yaml"]));
    run.wait_for_line("running wait 60s", Duration::from_secs(60));
    kill(run.pid(), Signal::SIGINT).unwrap();
    // The cleanup's wait starts (cleanup runs after a first Ctrl-C), then the second one.
    run.wait_for_line("running wait 60s (cleanup)", Duration::from_secs(30));
    kill(run.pid(), Signal::SIGINT).unwrap();
    let (status, out, err) = run.finish(Duration::from_secs(20));
    let output = format!("stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(status.code(), Some(130), "{output}");
    assert!(err.contains("SIGINT: abandoning the running steps"), "{output}");
    let report = latest_report(&dir.path().join("r"));
    assert_eq!(report["status"], "interrupted", "{output}");
    let s = &report["scenarios"][0];
    assert_eq!(s["status"], "interrupted", "{output}");
    assert_eq!(
        s["message"], "interrupted at step 2 wait (stopped again: the run was abandoned)",
        "the step that was running: {output}"
    );
    assert_eq!(report["summary"]["interrupted"], 1);
}
