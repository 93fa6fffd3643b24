//! Whose fault a failed step is (issue 13): the board's (`failed`: the firmware or the chip did
//! not do what the step expects) or the rig's (`error`: its probe, port or board thread is gone).
//! A board that is lost mid-scenario must never be reported as a firmware failure.

use std::path::{Path, PathBuf};

use hil_config::{Config, Step, ValidationContext, load_and_validate};
use hil_report::Status;
use hil_rig::engine::{BoardSession, CancelFlag, StepCx};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config() -> Config {
    let ctx = ValidationContext {
        fixtures: hil_fixtures::all().iter().map(|f| (f.name.to_string(), f.base)).collect(),
        causes: hil_rig::diagnosis::cause_ids(),
    };
    let (config, diags) = load_and_validate(&repo().join("boards.yaml"), &[], &ctx);
    assert!(diags.is_empty(), "{diags:?}");
    config.expect("valid boards.yaml")
}

fn step(yaml: &str) -> Step {
    serde_saphyr::from_str(yaml).unwrap()
}

fn run(s: &mut hil_rig::session::RigSession, yaml: &str) -> hil_rig::engine::StepOutcome {
    let cx = StepCx::new(&s.clock(), std::time::Duration::from_secs(5), CancelFlag::new(), repo().join("t"), 0);
    s.run_step(&step(yaml), &cx)
}

#[test]
fn a_board_that_misses_an_expectation_fails_and_a_lost_board_is_an_error() {
    let config = config();
    let board = config.boards.file.boards.iter().find(|b| b.value.name.value == "g071-virtual").unwrap();
    let mut s = hil_rig::opener::rig_opener().open_session(&board.value).unwrap();
    // The board's own answer: the application is not running, so its banner never comes.
    let o = run(&mut s, "expect-serial: { contains: \"no such banner\" }\ntimeout: 50ms");
    assert_eq!(o.status, Status::Failed, "{o:?}");
    let o = run(&mut s, "expect-register: { register: pc, in: { base: 0x20000000, size: 4 } }");
    assert_eq!(o.status, Status::Failed, "{o:?}");

    // Now the board's thread goes away under the rig, as a probe or a cable is lost on a bench.
    let prefix = format!("g071-virtual.{}.", std::process::id());
    let running: Vec<String> =
        hil_virtual_board::Board::running().into_iter().filter(|n| n.starts_with(&prefix)).collect();
    assert_eq!(running.len(), 1, "{running:?}");
    hil_virtual_board::Board::lookup(&running[0]).unwrap().shutdown().unwrap();
    let o = run(&mut s, "expect-register: { register: pc, in: application }");
    assert_eq!(o.status, Status::Error, "a lost probe is the rig's problem: {o:?}");
    let o = run(&mut s, "expect-serial: { contains: \"hil-app\" }");
    assert_eq!(o.status, Status::Error, "a lost port is the rig's problem: {o:?}");
    let o = run(&mut s, "expect-bootloader: { via: uart }");
    assert_eq!(o.status, Status::Error, "{o:?}");
}
