//! The engine with a scripted board: `send: { text: ... }` steps tell the fake what to do.

use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hil_config::scenario::Action;
use hil_config::{Board, Config, Step, ValidationContext, load_and_validate};
use hil_report::{Diagnosis, Evidence, RunReport, RunStatus, Status};
use hil_rig::engine::{self, BoardOpener, BoardSession, CancelFlag, EngineOptions, StepCx, StepOutcome};

const BOARDS: &str = "\
boards:
  - { name: a, chip: STM32G071RB, default: true, virtual: {} }
  - { name: b, chip: STM32G0B1RE, default: true, virtual: {} }
  # Two names for one bench setup: they share a serial port (which need not exist to be locked).
  - { name: bench-a, chip: STM32G071RB, lab: { serial: { port: /nonexistent/hil-engine-tty } } }
  - { name: bench-b, chip: STM32G071RB, lab: { serial: { port: /nonexistent/hil-engine-tty } } }
  - name: behind-loader
    chip: STM32G071RB
    virtual: {}
    layout: { bootloader: { base: 0x08000000, size: 8K }, application-base: 0x08002000 }
";

struct Fake {
    barrier: Arc<Barrier>,
    log: Arc<Mutex<Vec<String>>>,
    board: String,
    /// What the board's state would make a diagnosis say (`looks:CAUSE` steps), though they pass.
    looks_like: Option<String>,
}

impl BoardSession for Fake {
    fn begin_scenario(&mut self, s: &hil_config::Scenario) -> Result<(), hil_rig::step_error::StepError> {
        self.log.lock().unwrap().push(format!("{}: begin {}", self.board, s.name.value));
        self.looks_like = None;
        Ok(())
    }
    fn run_step(&mut self, step: &Step, cx: &StepCx) -> StepOutcome {
        let Action::Send(s) = &step.action else { return StepOutcome::passed() };
        let cmd = s.text.clone().unwrap_or_default();
        self.log.lock().unwrap().push(format!("{}: {cmd}", self.board));
        match cmd.split_once(':').unwrap_or((&cmd, "")) {
            ("pass", _) => StepOutcome::passed(),
            ("looks", cause) => {
                self.looks_like = Some(cause.to_string());
                StepOutcome::passed()
            }
            ("fail", why) => StepOutcome::failed(why.to_string()),
            // Fails its first N runs on this board, then passes (a flaky bench).
            ("flaky", n) => {
                let line = format!("{}: {cmd}", self.board);
                let runs = self.log.lock().unwrap().iter().filter(|l| **l == line).count();
                if runs <= n.parse().unwrap() { StepOutcome::failed("flaky-contact") } else { StepOutcome::passed() }
            }
            ("error", why) => StepOutcome::error(why.to_string()),
            ("sleep", ms) => {
                // A well-behaved backend: waits, but not past its deadline or a cancellation.
                let end = Instant::now() + Duration::from_millis(ms.parse().unwrap());
                while Instant::now() < end && !cx.expired() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if cx.deadline.passed() {
                    StepOutcome::failed("waited until the deadline")
                } else {
                    StepOutcome::passed()
                }
            }
            ("hang", ms) => {
                // A misbehaving backend that ignores its deadline.
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
                StepOutcome::passed()
            }
            ("barrier", _) => {
                self.barrier.wait();
                StepOutcome::passed()
            }
            other => panic!("unknown fake command {other:?}"),
        }
    }
    fn diagnose(&mut self, _: &Step, o: &StepOutcome) -> Option<Diagnosis> {
        let cause = match (&o.message, &self.looks_like) {
            (Some(m), _) => m.clone(),
            (None, Some(looks)) => looks.clone(),
            (None, None) => "unknown".into(),
        };
        Some(Diagnosis {
            cause,
            title: "scripted".into(),
            explanation: String::new(),
            facts: vec![],
            snapshot: Default::default(),
            fix: None,
        })
    }
    fn take_scenario_evidence(&mut self) -> Vec<Evidence> {
        vec![Evidence::Text { label: "serial output".into(), text: format!("{} output", self.board) }]
    }
}

struct Opener {
    barrier: Arc<Barrier>,
    log: Arc<Mutex<Vec<String>>>,
    fail_open: bool,
}

impl BoardOpener for Opener {
    fn open(&self, board: &Board, _: &CancelFlag) -> Result<Box<dyn BoardSession>, hil_rig::opener::OpenError> {
        if self.fail_open {
            return Err(hil_rig::opener::OpenError::NoBackend(board.name.value.clone()));
        }
        Ok(Box::new(Fake {
            barrier: self.barrier.clone(),
            log: self.log.clone(),
            board: board.name.value.clone(),
            looks_like: None,
        }))
    }
}

struct Run {
    report: RunReport,
    dir: std::path::PathBuf,
    log: Vec<String>,
    _tmp: tempfile::TempDir,
}

fn setup(scenarios: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("boards.yaml"), BOARDS).unwrap();
    std::fs::create_dir(tmp.path().join("sc")).unwrap();
    for (name, body) in scenarios {
        std::fs::write(tmp.path().join("sc").join(format!("{name}.yaml")), body).unwrap();
    }
    let (config, diags) =
        load_and_validate(&tmp.path().join("boards.yaml"), &[tmp.path().join("sc")], &ValidationContext::default());
    assert!(diags.is_empty(), "{diags:?}");
    (tmp, config.unwrap())
}

fn opts(tmp: &Path) -> EngineOptions {
    EngineOptions {
        lock_dir: tmp.join("locks"),
        grace: Duration::from_millis(300),
        command: vec!["test".into()],
        ..Default::default()
    }
}

fn run_with(scenarios: &[(&str, &str)], boards: &[&str], cancel_after: Option<Duration>, fail_open: bool) -> Run {
    run_opts(scenarios, boards, cancel_after, fail_open, false)
}

fn run_opts(
    scenarios: &[(&str, &str)],
    boards: &[&str],
    cancel_after: Option<Duration>,
    fail_open: bool,
    audit_diagnosis: bool,
) -> Run {
    run_engine(scenarios, boards, cancel_after, fail_open, |o| EngineOptions { audit_diagnosis, ..o })
}

fn run_engine(
    scenarios: &[(&str, &str)],
    boards: &[&str],
    cancel_after: Option<Duration>,
    fail_open: bool,
    options: impl FnOnce(EngineOptions) -> EngineOptions,
) -> Run {
    let (tmp, config) = setup(scenarios);
    let log = Arc::new(Mutex::new(Vec::new()));
    let opener = Arc::new(Opener { barrier: Arc::new(Barrier::new(2)), log: log.clone(), fail_open });
    let selected: Vec<&Board> = boards.iter().map(|b| config.boards.get(b).unwrap()).collect();
    let cancel = CancelFlag::new();
    if let Some(after) = cancel_after {
        let c = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            c.cancel();
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (report, dir) = rt
        .block_on(engine::run_config(
            &config,
            &selected,
            opener,
            &tmp.path().join("reports"),
            options(opts(tmp.path())),
            cancel,
        ))
        .unwrap();
    let log = log.lock().unwrap().clone();
    Run { report, dir: dir.path().to_path_buf(), log, _tmp: tmp }
}

fn result<'a>(r: &'a RunReport, scenario: &str, board: &str) -> &'a hil_report::ScenarioResult {
    r.scenarios
        .iter()
        .find(|s| s.scenario == scenario && s.board == board)
        .unwrap_or_else(|| panic!("no {scenario} on {board}"))
}

#[test]
fn a_failing_step_stops_the_scenario_and_gets_a_diagnosis() {
    let run = run_with(
        &[
            ("ok", "name: ok\nsteps:\n  - send: { text: pass }\n  - send: { text: pass }\n"),
            (
                "bad",
                "name: bad\nsteps:\n  - send: { text: pass }\n  - send: { text: 'fail:remap-not-done' }\n  - send: { text: pass }\n",
            ),
        ],
        &["a"],
        None,
        false,
    );
    let r = &run.report;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!((r.summary.passed, r.summary.failed), (1, 1));
    let bad = result(r, "bad", "a");
    let statuses: Vec<Status> = bad.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [Status::Passed, Status::Failed, Status::NotRun]);
    assert_eq!(bad.message.as_deref(), Some("step 2 send: remap-not-done"));
    assert_eq!(bad.diagnosis.as_ref().unwrap().cause, "remap-not-done");
    assert!(bad.steps[1].evidence.iter().any(|e| matches!(e, Evidence::Text { text, .. } if text == "a output")));
    // The files on disk are the final report.
    let on_disk: RunReport = serde_json::from_slice(&std::fs::read(run.dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(&on_disk, r);
    for f in ["junit.xml", "summary.md", "report.html"] {
        assert!(run.dir.join(f).is_file());
    }
}

#[test]
fn the_audit_fails_a_passing_scenario_on_which_a_rule_names_a_cause() {
    let scenarios = [
        ("clean", "name: clean\nsteps:\n  - send: { text: pass }\n"),
        ("alarm", "name: alarm\nsteps:\n  - send: { text: 'looks:remap-not-done' }\n"),
        (
            "expected",
            "name: expected\nexpect: { outcome: fail, cause: remap-not-done }\nsteps:\n  - send: { text: 'fail:remap-not-done' }\n",
        ),
        (
            "tolerated",
            "name: tolerated\nexpect: { outcome: pass, latent: remap-not-done }\nsteps:\n  - send: { text: 'looks:remap-not-done' }\n",
        ),
        (
            "unseen",
            "name: unseen\nexpect: { outcome: pass, latent: remap-not-done }\nsteps:\n  - send: { text: pass }\n",
        ),
    ];
    // Without the audit nobody looks at a passing scenario.
    let plain = run_with(&scenarios, &["a"], None, false);
    assert_eq!(plain.report.status, RunStatus::Passed);
    assert!(result(&plain.report, "alarm", "a").diagnosis.is_none());

    let audited = run_opts(&scenarios, &["a"], None, false, true);
    let r = &audited.report;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(result(r, "clean", "a").status, Status::Passed, "`unknown` is no cause");
    assert_eq!(result(r, "expected", "a").status, Status::Passed, "expected failures are not audited");
    let alarm = result(r, "alarm", "a");
    assert_eq!(alarm.status, Status::Failed);
    assert_eq!(
        alarm.message.as_deref(),
        Some("false alarm: every step passed, yet the diagnosis names `remap-not-done` (scripted)")
    );
    assert_eq!(alarm.diagnosis.as_ref().unwrap().cause, "remap-not-done");
    // A mistake the scenario declares this board tolerates must be named, and only that one.
    let tolerated = result(r, "tolerated", "a");
    assert_eq!(tolerated.status, Status::Passed);
    assert_eq!(tolerated.diagnosis.as_ref().unwrap().cause, "remap-not-done");
    let unseen = result(r, "unseen", "a");
    assert_eq!(unseen.status, Status::Failed);
    assert_eq!(
        unseen.message.as_deref(),
        Some("the latent mistake `remap-not-done` was not named: the diagnosis says `unknown`")
    );
}

#[test]
fn expected_failures_pass_only_with_the_named_cause() {
    let exp = "expect: { outcome: fail, cause: primask-set-at-jump }\n";
    let run = run_with(
        &[
            ("right", &format!("name: right\n{exp}steps:\n  - send: {{ text: 'fail:primask-set-at-jump' }}\n")),
            ("wrong", &format!("name: wrong\n{exp}steps:\n  - send: {{ text: 'fail:remap-not-done' }}\n")),
            ("none", &format!("name: none\n{exp}steps:\n  - send: {{ text: pass }}\n")),
        ],
        &["a"],
        None,
        false,
    );
    let r = &run.report;
    assert_eq!(result(r, "right", "a").status, Status::Passed);
    let wrong = result(r, "wrong", "a");
    assert_eq!(wrong.status, Status::Failed);
    assert_eq!(
        wrong.message.as_deref(),
        Some("failed as expected, but the diagnosis is `remap-not-done` instead of `primask-set-at-jump`")
    );
    let none = result(r, "none", "a");
    assert_eq!(none.status, Status::Failed);
    assert_eq!(none.expected.as_ref().unwrap().observed_outcome, "pass");
}

#[test]
fn deadlines_are_enforced_even_for_a_backend_that_ignores_them() {
    let run = run_with(
        &[
            ("polite", "name: polite\nsteps:\n  - send: { text: 'sleep:5000' }\n    timeout: 200ms\n"),
            ("rude", "name: rude\nsteps:\n  - send: { text: 'hang:1500' }\n    timeout: 100ms\n"),
            ("zz-after", "name: zz-after\nsteps:\n  - send: { text: pass }\n"),
        ],
        &["a"],
        None,
        false,
    );
    let r = &run.report;
    let polite = result(r, "polite", "a");
    assert_eq!(polite.status, Status::Failed, "the backend reported the deadline itself");
    assert!(polite.steps[0].wall_duration_ms < 1000, "{}", polite.steps[0].wall_duration_ms);
    let rude = result(r, "rude", "a");
    assert_eq!(rude.status, Status::Error);
    assert!(
        rude.message.as_ref().is_some_and(
            |m| m.contains("its deadline: 100ms on the board's wall clock") && m.contains("the board is stuck")
        ),
        "{:?}",
        rude.message
    );
    let after = result(r, "zz-after", "a");
    assert_eq!(after.status, Status::Error, "a stuck board runs nothing more");
}

#[test]
fn cancellation_leaves_a_valid_interrupted_report() {
    let run = run_with(
        &[
            (
                "long",
                "name: long\nsteps:\n  - send: { text: 'sleep:20000' }\n    timeout: 60s\n  - send: { text: pass }\n",
            ),
            ("zz-later", "name: zz-later\nsteps:\n  - send: { text: pass }\n"),
        ],
        &["a"],
        Some(Duration::from_millis(300)),
        false,
    );
    let r = &run.report;
    assert_eq!(r.status, RunStatus::Interrupted);
    let long = result(r, "long", "a");
    assert_eq!(long.status, Status::Interrupted);
    assert_eq!(long.message.as_deref(), Some("interrupted at step 1 send"));
    // The running step and the one not yet run.
    assert_eq!([long.steps[0].status, long.steps[1].status], [Status::Interrupted, Status::Interrupted]);
    assert!(long.steps[0].wall_duration_ms < 10_000, "the step was cut short: {} ms", long.steps[0].wall_duration_ms);
    assert!(long.diagnosis.is_none(), "an interruption is no failure to diagnose");
    assert_eq!((r.summary.interrupted, r.summary.failed, r.summary.errors), (1, 0, 0));
    assert!(r.scenarios.iter().all(|s| s.scenario != "zz-later"), "nothing starts after cancellation");
    let on_disk: RunReport = serde_json::from_slice(&std::fs::read(run.dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(on_disk.status, RunStatus::Interrupted);
}

#[test]
fn an_interrupted_scenario_has_no_verdict_even_when_it_expects_to_fail() {
    let run = run_with(
        &[(
            "faulty",
            "name: faulty\nexpect: { outcome: fail, cause: remap-not-done }\nsteps:\n  - send: { text: 'sleep:20000' }\n    timeout: 60s\n  - send: { text: 'fail:remap-not-done' }\n",
        )],
        &["a"],
        Some(Duration::from_millis(300)),
        false,
    );
    let faulty = result(&run.report, "faulty", "a");
    assert_eq!(faulty.status, Status::Interrupted, "{:?}", faulty.message);
    assert_eq!(faulty.expected, None, "no observed outcome to compare");
    assert!(!run.log.iter().any(|l| l.contains("fail:remap-not-done")), "{:?}", run.log);
}

#[test]
fn scenarios_needing_what_a_board_lacks_are_skipped_with_the_reason() {
    let run = run_with(&[("dfu", "name: dfu\nsteps:\n  - expect-usb: {}\n")], &["a", "b"], None, false);
    let skipped = result(&run.report, "dfu", "a");
    assert_eq!(skipped.status, Status::Skipped);
    assert_eq!(skipped.message.as_deref(), Some("board lacks usb (STM32G071RB's ROM bootloader has no USB DFU)"));
    assert_eq!(result(&run.report, "dfu", "b").status, Status::Passed);
}

#[test]
fn boards_run_in_parallel() {
    // Each board's step waits at a 2-party barrier: only parallel boards get through.
    let run = run_with(
        &[("meet", "name: meet\nsteps:\n  - send: { text: barrier }\n    timeout: 20s\n")],
        &["a", "b"],
        None,
        false,
    );
    assert_eq!(run.report.summary.passed, 2, "{:?}", run.report.scenarios);
}

#[test]
fn a_board_that_cannot_be_opened_errors_its_scenarios() {
    let run = run_with(&[("x", "name: x\nsteps: [halt]\n")], &["a"], None, true);
    let x = result(&run.report, "x", "a");
    assert_eq!(x.status, Status::Error);
    assert_eq!(x.message.as_deref(), Some("cannot open the board: board `a` is neither virtual nor lab"));
    assert_eq!(run.report.status, RunStatus::Failed);
}

#[test]
fn a_lab_board_whose_port_another_run_holds_is_not_touched() {
    let (tmp, config) = setup(&[("x", "name: x\nsteps:\n  - send: { text: pass }\n")]);
    // Another process's lock, as far as flock is concerned: taken through another board entry.
    let held = hil_rig::lock::BoardLock::acquire(
        &tmp.path().join("locks"),
        config.boards.get("bench-a").unwrap(),
        Duration::ZERO,
        &|| false,
    )
    .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let opener = Arc::new(Opener { barrier: Arc::new(Barrier::new(1)), log: log.clone(), fail_open: false });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (report, _) = rt
        .block_on(engine::run_config(
            &config,
            &[config.boards.get("bench-b").unwrap()],
            opener,
            &tmp.path().join("reports"),
            opts(tmp.path()),
            CancelFlag::new(),
        ))
        .unwrap();
    let x = result(&report, "x", "bench-b");
    assert_eq!(x.status, Status::Error);
    let want =
        format!("board `bench-b`: serial port /nonexistent/hil-engine-tty is in use by pid {}", std::process::id());
    assert!(x.message.as_ref().unwrap().starts_with(&want), "{:?}", x.message);
    assert!(log.lock().unwrap().is_empty(), "the board was not opened");
    drop(held);
}

#[test]
fn cleanup_runs_after_a_failure_and_a_failing_cleanup_is_an_error() {
    let run = run_with(
        &[
            (
                "a",
                "name: a\nsteps:\n  - send: { text: 'fail:boom' }\n  - send: { text: pass }\ncleanup:\n  - send: { text: 'pass' }\n",
            ),
            (
                "b",
                "name: b\nsteps:\n  - send: { text: pass }\ncleanup:\n  - send: { text: 'fail:restore failed' }\n  - send: { text: pass }\n",
            ),
        ],
        &["a"],
        None,
        false,
    );
    let a = result(&run.report, "a", "a");
    assert_eq!(a.status, Status::Failed);
    let kinds: Vec<(Status, bool)> = a.steps.iter().map(|s| (s.status, s.cleanup)).collect();
    assert_eq!(kinds, [(Status::Failed, false), (Status::NotRun, false), (Status::Passed, true)]);
    assert_eq!(a.diagnosis.as_ref().unwrap().cause, "boom", "diagnosis is taken before the cleanup changes the board");
    let b = result(&run.report, "b", "a");
    assert_eq!(b.status, Status::Error);
    assert_eq!(b.message.as_deref(), Some("cleanup step 2 send: restore failed"));
    assert_eq!(b.steps[2].status, Status::Passed, "later cleanup steps still run");
    // Order on the board: the diagnosis of `a` happened before its cleanup step.
    let log = run.log.join("\n");
    assert!(log.contains("a: fail:boom\na: pass"), "{log}");
}

#[test]
fn a_board_that_only_joined_runs_only_the_scenarios_naming_it() {
    let (_tmp, config) =
        setup(&[("generic", "name: generic\nsteps: [halt]\n"), ("for-b", "name: for-b\nboards: [b]\nsteps: [halt]\n")]);
    let boards = [config.boards.get("a").unwrap(), config.boards.get("b").unwrap()];
    let names = |p: &hil_rig::plan::BoardPlan| {
        p.scenarios.iter().map(|s| s.loaded.scenario.name.value.clone()).collect::<Vec<_>>()
    };
    let plans = hil_rig::plan::plan_with(&config, &boards, &["b"]);
    assert_eq!(names(&plans[0]), ["generic"]);
    assert_eq!(names(&plans[1]), ["for-b"]);
    // Selected explicitly, the same board runs both.
    let plans = hil_rig::plan::plan(&config, &boards);
    assert_eq!(names(&plans[1]), ["for-b", "generic"]);
}

#[test]
fn a_board_with_its_own_bootloader_skips_the_scenarios_written_for_the_usual_layout() {
    let (_tmp, config) = setup(&[
        ("generic", "name: generic\nsteps: [halt]\n"),
        ("for-loader", "name: for-loader\nboards: [behind-loader]\nsteps: [halt]\n"),
    ]);
    let board = config.boards.get("behind-loader").unwrap();
    // Selected explicitly: the generic scenario is planned, as skipped, with the reason.
    let plans = hil_rig::plan::plan(&config, &[board]);
    let planned: Vec<(&str, Option<&str>)> =
        plans[0].scenarios.iter().map(|s| (s.loaded.scenario.name.value.as_str(), s.skip.as_deref())).collect();
    assert_eq!(
        planned,
        [
            ("for-loader", None),
            (
                "generic",
                Some(
                    "written for the application at the start of flash (0x08000000); this board has it at \
                     0x08002000 behind its bootloader at 0x08000000-0x08001fff. Scenarios for this layout name \
                     the board in `boards:`"
                )
            ),
        ]
    );
    // The usual layout runs it.
    let plans = hil_rig::plan::plan(&config, &[config.boards.get("a").unwrap()]);
    assert!(plans[0].scenarios.iter().all(|s| s.skip.is_none()));
}

#[test]
fn a_lab_board_whose_tty_is_missing_names_the_board_and_the_port() {
    let (_tmp, config) = setup(&[("x", "name: x\nsteps: [halt]\n")]);
    let board = config.boards.get("bench-a").unwrap();
    let Err(e) = hil_rig::opener::rig_opener().open_session(board) else { panic!("opened a missing tty") };
    assert!(matches!(&e, hil_rig::opener::OpenError::Serial { board, .. } if board == "bench-a"), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("board `bench-a`: serial port /nonexistent/hil-engine-tty: "), "{text}");
}

#[test]
fn fail_fast_starts_nothing_after_the_first_failure_and_names_it() {
    let sc = [
        ("s1", "name: s1\nsteps:\n  - send: { text: \"pass\" }\n"),
        ("s2", "name: s2\nsteps:\n  - send: { text: \"fail:broken\" }\n"),
        ("s3", "name: s3\nsteps:\n  - send: { text: \"pass\" }\n"),
        ("s4", "name: s4\nsteps:\n  - send: { text: \"pass\" }\n"),
    ];
    // One board at a time (whichever starts first): s1 passes, s2 fails, nothing after it starts,
    // on this board or the other.
    let r = run_engine(&sc, &["a", "b"], None, false, |o| EngineOptions { fail_fast: true, parallel_boards: 1, ..o });
    let (first, other) = if result(&r.report, "s2", "a").status == Status::Failed { ("a", "b") } else { ("b", "a") };
    assert_eq!(result(&r.report, "s1", first).status, Status::Passed);
    assert_eq!(result(&r.report, "s2", first).status, Status::Failed);
    let why = format!("not run: --fail-fast stopped the run after s2 failed on {first}");
    for (s, b) in [("s3", first), ("s4", first), ("s1", other), ("s2", other), ("s3", other), ("s4", other)] {
        let x = result(&r.report, s, b);
        assert_eq!(x.status, Status::Skipped, "{s} on {b}");
        assert_eq!(x.message.as_deref(), Some(why.as_str()));
    }
    assert!(!r.log.iter().any(|l| l.starts_with(&format!("{other}: "))), "{other} started: {:?}", r.log);
    assert_eq!(r.report.status, RunStatus::Failed);
    // Without it every scenario runs.
    let r = run_engine(&sc, &["a", "b"], None, false, |o| EngineOptions { parallel_boards: 1, ..o });
    assert_eq!(r.report.summary.passed, 6);
    assert_eq!(r.report.summary.failed, 2);
}

#[test]
fn a_lab_board_is_retried_and_a_pass_after_a_retry_is_flaky_in_every_report() {
    let sc = [
        ("once", "name: once\nsteps:\n  - send: { text: \"flaky:1\" }\n"),
        ("always", "name: always\nsteps:\n  - send: { text: \"fail:dead\" }\n"),
    ];
    let r = run_engine(&sc, &["bench-a"], None, false, |o| EngineOptions { retries: 2, ..o });
    let once = result(&r.report, "once", "bench-a");
    assert_eq!(once.status, Status::Passed);
    assert!(once.flaky);
    assert_eq!(once.retried.len(), 1);
    assert_eq!(once.retried[0].status, Status::Failed);
    assert_eq!(once.retried[0].cause.as_deref(), Some("flaky-contact"));
    let always = result(&r.report, "always", "bench-a");
    assert_eq!(always.status, Status::Failed);
    assert!(!always.flaky);
    assert_eq!(always.retried.len(), 2, "bounded by --retries");
    assert_eq!(r.log.iter().filter(|l| l.ends_with("fail:dead")).count(), 3);
    assert_eq!(r.report.summary.flaky, 1);
    let junit = std::fs::read_to_string(r.dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<flakyFailure"), "{junit}");
    assert!(junit.contains("<rerunFailure"), "{junit}");
    let md = std::fs::read_to_string(r.dir.join("summary.md")).unwrap();
    assert!(md.contains("1 flaky (passed after a retry)"), "{md}");
    assert!(md.contains("once on bench-a, attempt 1: failed"), "{md}");
    let html = std::fs::read_to_string(r.dir.join("report.html")).unwrap();
    assert!(html.contains("flaky"), "html");
    let json = std::fs::read_to_string(r.dir.join("report.json")).unwrap();
    assert!(json.contains("\"flaky\": true"), "{json}");
}

#[test]
fn a_virtual_board_is_never_retried() {
    let sc = [("once", "name: once\nsteps:\n  - send: { text: \"flaky:1\" }\n")];
    let r = run_engine(&sc, &["a"], None, false, |o| EngineOptions { retries: 3, ..o });
    let once = result(&r.report, "once", "a");
    assert_eq!(once.status, Status::Failed);
    assert!(once.retried.is_empty() && !once.flaky);
    assert_eq!(r.log.iter().filter(|l| l.ends_with("flaky:1")).count(), 1);
}

#[test]
fn running_steps_say_what_each_board_is_on_while_it_runs() {
    let sc = [("slow", "name: slow\nsteps:\n  - send: { text: \"pass\" }\n  - send: { text: \"sleep:400\" }\n")];
    let (tmp, config) = setup(&sc);
    let log = Arc::new(Mutex::new(Vec::new()));
    let opener = Arc::new(Opener { barrier: Arc::new(Barrier::new(2)), log, fail_open: false });
    let running = hil_rig::engine::RunningSteps::default();
    let watcher = {
        let running = running.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                let now = running.current();
                if !now.is_empty() && now[0].2 == "step 2 send" {
                    return now;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Vec::new()
        })
    };
    let selected: Vec<&Board> = vec![config.boards.get("a").unwrap()];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (report, _) = rt
        .block_on(engine::run_config(
            &config,
            &selected,
            opener,
            &tmp.path().join("reports"),
            EngineOptions { running: running.clone(), ..opts(tmp.path()) },
            CancelFlag::new(),
        ))
        .unwrap();
    assert_eq!(report.summary.passed, 1);
    assert_eq!(watcher.join().unwrap(), vec![("a".to_string(), "slow".to_string(), "step 2 send".to_string())]);
    assert!(running.current().is_empty(), "nothing runs once the run is over");
}

#[test]
fn each_result_is_in_the_journal_when_it_is_announced_and_the_journal_goes_once_the_report_holds_all() {
    let sc = [
        ("one", "name: one\nsteps:\n  - send: { text: \"pass\" }\n"),
        ("two", "name: two\nsteps:\n  - send: { text: \"fail\" }\n"),
        ("three", "name: three\nsteps:\n  - send: { text: \"pass\" }\n"),
    ];
    let (tmp, config) = setup(&sc);
    let reports = tmp.path().join("reports");
    let seen_in_journal = Arc::new(Mutex::new(Vec::new()));
    let sink: hil_rig::engine::ResultSink = {
        let (reports, seen) = (reports.clone(), seen_in_journal.clone());
        Arc::new(move |r: &hil_report::ScenarioResult| {
            // The run directory is the only one under reports/; a reader that crashed now (or a
            // process killed now) would find every announced result in its journal.
            let run_dir =
                std::fs::read_dir(&reports).unwrap().flatten().map(|e| e.path()).find(|p| p.is_dir()).unwrap();
            let report = hil_report::read_run(&run_dir).unwrap();
            assert_eq!(report.status, hil_report::RunStatus::Running, "the final report is not written yet");
            let names: Vec<String> = report.scenarios.iter().map(|s| s.scenario.clone()).collect();
            assert!(names.contains(&r.scenario), "{} announced but not on disk: {names:?}", r.scenario);
            seen.lock().unwrap().push((r.scenario.clone(), report.summary.failed));
        })
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let opener = Arc::new(Opener { barrier: Arc::new(Barrier::new(2)), log, fail_open: false });
    let selected: Vec<&Board> = vec![config.boards.get("a").unwrap()];
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (report, dir) = rt
        .block_on(engine::run_config(
            &config,
            &selected,
            opener,
            &reports,
            EngineOptions { on_result: Some(sink), ..opts(tmp.path()) },
            CancelFlag::new(),
        ))
        .unwrap();
    assert_eq!((report.summary.passed, report.summary.failed), (2, 1));
    let seen = seen_in_journal.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    // Read back after the last one, the summary counts the journal's failure.
    assert_eq!(seen.last().map(|(_, failed)| *failed), Some(1), "{seen:?}");
    assert!(!dir.path().join(hil_report::write::JOURNAL).exists(), "the final report.json holds every result");
    assert_eq!(hil_report::read_run(dir.path()).unwrap(), report);
}
