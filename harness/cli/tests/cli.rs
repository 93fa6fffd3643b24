//! The `hil` binary: exit codes and output of the commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Runs `hil` with a lock directory of its own: board locks are real, and tests run in parallel.
fn hil(args: &[&str], cwd: &Path) -> Output {
    let locks = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env("HIL_LOCK_DIR", locks.path())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_the_shipped_configuration() {
    let o = hil(&["validate"], &repo());
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("ok: boards.yaml ("), "{}", text(&o.stdout));
}

#[test]
fn validate_reports_each_problem_as_file_line_col_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("boards.yaml"), dir.path().join("boards.yaml")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), "name: a\nboards: [nope]\nsteps: [reset]\n").unwrap();
    std::fs::write(dir.path().join("b.yaml"), "name: b\nsteps:\n  - go: { address: 0x0800_000G }\n").unwrap();
    std::fs::write(dir.path().join("c.yaml"), "").unwrap();
    let o = hil(&["validate", "a.yaml", "b.yaml", "c.yaml", "missing.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(lines[0].starts_with("a.yaml:2:10: unknown board `nope`"), "{err}");
    assert!(lines[1].starts_with("b.yaml:3:20: bad value `0x0800_000G`"), "{err}");
    assert!(lines[2].starts_with("c.yaml:1:1: empty file"), "{err}");
    assert!(lines[3].starts_with("missing.yaml:1:1: cannot read a scenario: file not found"), "{err}");
    assert_eq!(lines[4], "4 problems in 4 files");
}

#[test]
fn list_shows_boards_with_capabilities_and_scenarios() {
    let o = hil(&["list", "boards"], &repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let g0b1 = out.lines().find(|l| l.starts_with("g0b1-virtual ")).expect("g0b1 listed");
    assert!(g0b1.contains("usb"), "{g0b1}");
    let g071 = out.lines().find(|l| l.starts_with("g071-virtual ")).expect("g071 listed");
    assert!(!g071.contains("usb"), "the G071 ROM has no USB DFU: {g071}");
    let o = hil(&["list", "scenarios"], &repo());
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).starts_with("NAME"));
}

#[test]
fn schemas_are_json() {
    for what in ["boards", "scenario"] {
        let o = hil(&["schema", what], &repo());
        assert_eq!(o.status.code(), Some(0));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert!(v["title"].as_str().unwrap().starts_with("hil "));
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(hil(&["frobnicate"], &repo()).status.code(), Some(2));
    assert_eq!(hil(&["list", "nothing"], &repo()).status.code(), Some(2));
    let o = hil(&["run", "--board", "no-such-board"], &repo());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown board `no-such-board`"), "{}", text(&o.stderr));
}

#[test]
fn run_refuses_an_invalid_configuration_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boards.yaml"), "boards: []\n").unwrap();
    std::fs::create_dir(dir.path().join("scenarios")).unwrap();
    std::fs::write(dir.path().join("scenarios/a.yaml"), "name: a\nsteps: [reset]\n").unwrap();
    let o = hil(&["run"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("boards.yaml:1:1: no boards defined"), "{}", text(&o.stderr));
    assert!(!dir.path().join("reports").exists(), "no report for a run that never started");
}

#[test]
fn image_check_exit_codes() {
    let smoke = hil_fixtures::get("smoke", 0x0800_0000).unwrap().path;
    let o = hil(&["image", "check", "--board", "g071-virtual", smoke], &repo());
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("segment 0x08000000.."), "{}", text(&o.stdout));
    // Linked at 0x08000000, but this board's application lives behind a 32 KiB bootloader.
    let o = hil(&["image", "check", "--board", "g071-custom-bootloader", smoke], &repo());
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(out.contains("error[bootloader-overlap]") && out.contains("error[vector-table-not-at-app-base]"), "{out}");
    let o = hil(&["image", "check", "--board", "g071-virtual", "README.md"], &repo());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown image format"), "{}", text(&o.stderr));
    let o = hil(&["image", "check", "--board", "nope", smoke], &repo());
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn image_check_of_a_custom_bootloader_uses_the_bootloader_region() {
    let bl = hil_fixtures::get("custom-bootloader", 0x0800_0000).unwrap().path;
    let check = |extra: &[&str], board: &str| {
        let mut args = vec!["image", "check", "--board", board];
        args.extend_from_slice(extra);
        args.push(bl);
        hil(&args, &repo())
    };
    let o = check(&["--target", "bootloader"], "g071-custom-bootloader");
    assert_eq!(o.status.code(), Some(0), "{}{}", text(&o.stdout), text(&o.stderr));
    // As an application it would overwrite the bootloader region it was built for.
    let o = check(&[], "g071-custom-bootloader");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("error[bootloader-overlap]"), "{}", text(&o.stdout));
    // A board without a bootloader region cannot take one: a configuration problem.
    let o = check(&["--target", "bootloader"], "g071-virtual");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("board `g071-virtual` has no layout.bootloader region"), "{}", text(&o.stderr));
}

#[test]
fn explain_shows_the_evidence_behind_each_cause() {
    use hil_report::*;
    let dir = tempfile::tempdir().unwrap();
    let diagnosis = Diagnosis {
        cause: "remap-not-done".into(),
        title: "System memory is not mapped at 0x0".into(),
        explanation: "An interrupt taken in the ROM vectored through 0x0, which still shows flash.".into(),
        facts: vec![
            Fact { name: "SYSCFG_CFGR1.MEM_MODE".into(), value: "not 01: flash at 0x0".into(), supports: true },
            Fact { name: "PRIMASK".into(), value: "0".into(), supports: false },
        ],
        snapshot: [("pc".to_string(), 0x0800_0140u32)].into_iter().collect(),
        fix: Some("Remap system memory.".into()),
    };
    let result = ScenarioResult {
        scenario: "jump-no-remap".into(),
        board: "g071-virtual".into(),
        file: "x.yaml".into(),
        description: None,
        class: Some("3. remap".into()),
        status: Status::Passed,
        expected: Some(ExpectedResult {
            outcome: "fail".into(),
            cause: Some("remap-not-done".into()),
            observed_outcome: "fail".into(),
            observed_cause: Some("remap-not-done".into()),
        }),
        wall_started_at: "t".into(),
        wall_duration_ms: 1,
        message: Some("failed as expected".into()),
        steps: vec![],
        diagnosis: Some(diagnosis),
        retried: vec![],
        flaky: false,
    };
    let mut report = RunReport {
        schema_version: SCHEMA_VERSION,
        run_id: "r1".into(),
        tool: Tool { name: "hil".into(), version: "0".into(), revision: None, host: None },
        started_at: "t".into(),
        wall_finished_at: None,
        wall_duration_ms: 1,
        status: RunStatus::Passed,
        command: vec![],
        boards: vec![],
        scenarios: vec![result],
        summary: Default::default(),
        conformance: vec![],
    };
    report.finish_status();
    std::fs::write(dir.path().join("report.json"), render_json(&report).unwrap()).unwrap();
    // A deliberate failure that failed as expected is a pass: not shown by default.
    let o = hil(&["explain", dir.path().to_str().unwrap()], &repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("no failures (--all shows diagnosed passes) in run r1"), "{}", text(&o.stdout));
    let o = hil(&["explain", "--all", dir.path().to_str().unwrap()], &repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("cause:    System memory is not mapped at 0x0 (remap-not-done)"), "{out}");
    assert!(out.contains("+ SYSCFG_CFGR1.MEM_MODE"), "{out}");
    assert!(out.contains("- PRIMASK"), "{out}");
    assert!(out.contains("pc             0x08000140"), "{out}");
    let o = hil(&["explain", "--all", dir.path().to_str().unwrap(), "--board", "other"], &repo());
    assert!(text(&o.stdout).contains("no failures or diagnoses in run r1"), "{}", text(&o.stdout));
    let o = hil(&["explain", "/nonexistent/run"], &repo());
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn run_exit_status_says_failed_infrastructure_or_nothing_ran() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("r");
    // Every scenario skipped (the G071's ROM has no USB DFU): nothing ran, not a pass.
    let o = hil(
        &["run", "--board", "g071-virtual", "--report-dir", reports.to_str().unwrap(), "scenarios/flash-over-dfu.yaml"],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("NOTHING RAN: 0 passed, 0 failed, 0 errors, 1 skipped"), "{}", text(&o.stdout));
    // A lab board whose serial port does not exist: the rig cannot open it - an infrastructure error.
    std::fs::write(
        dir.path().join("boards.yaml"),
        "boards:\n  - name: gone\n    chip: STM32G071RB\n    default: true\n    lab:\n      serial: { port: /nonexistent/ttyUSB9, baud: 115200 }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("s.yaml"), "name: s\nrequires: [uart]\nsteps:\n  - send: { text: x }\n").unwrap();
    let o = hil(&["run", "--boards", "boards.yaml", "--report-dir", "r", "s.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(3), "{}{}", text(&o.stdout), text(&o.stderr));
    // And a scenario the board fails: 1.
    std::fs::write(
        dir.path().join("f.yaml"),
        "name: f\nsteps:\n  - expect-serial: { contains: never }\n    timeout: 20ms\n",
    )
    .unwrap();
    let o = hil(
        &[
            "run",
            "--board",
            "g071-virtual",
            "--report-dir",
            reports.to_str().unwrap(),
            dir.path().join("f.yaml").to_str().unwrap(),
        ],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
}

#[test]
fn run_prints_a_line_per_scenario_as_it_goes_and_q_only_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("r");
    let files = ["scenarios/reset-verify-pc.yaml", "scenarios/enter-via-boot0.yaml"];
    let mut args = vec!["run", "--board", "g071-virtual", "--report-dir", reports.to_str().unwrap()];
    args.extend(files);
    let o = hil(&args, &repo());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for name in ["reset-verify-pc", "enter-via-boot0-pin"] {
        assert_eq!(out.lines().filter(|l| l.starts_with("passed") && l.contains(name)).count(), 1, "{out}");
    }
    assert!(out.contains("PASSED: 2 passed"), "{out}");
    args.insert(1, "-q");
    let o = hil(&args, &repo());
    let out = text(&o.stdout);
    assert!(!out.lines().any(|l| l.starts_with("passed")), "{out}");
    assert!(out.contains("PASSED: 2 passed"), "{out}");
}

#[test]
fn dry_run_shows_the_plan_with_skip_reasons_and_selection_filters_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("r");
    let o =
        hil(&["run", "--dry-run", "--scenario", "flash-over-*", "--report-dir", reports.to_str().unwrap()], &repo());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("g071-virtual (STM32G071RB):"), "{out}");
    assert!(
        out.contains("skip  flash-over-dfu") && out.contains("STM32G071RB's ROM bootloader has no USB DFU"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.trim_start().starts_with("run   flash-over-uart")), "{out}");
    assert!(!out.contains("reset-verify-pc"), "filtered out by --scenario: {out}");
    assert!(!reports.exists(), "a dry run writes no report");
    let o = hil(&["run", "--dry-run", "--class", "10.", "--board", "g0b1-virtual"], &repo());
    let out = text(&o.stdout);
    let runs: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("run")).collect();
    assert_eq!(runs.len(), 2, "c10-watchdog-after-go and c10-watchdog-correct: {out}");
    // A selection that leaves nothing is a usage error, not a green run.
    let o = hil(&["run", "--tag", "no-such-tag"], &repo());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn rerun_failed_runs_only_what_failed_and_explain_shows_the_serial_text_received() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("r");
    let sc = dir.path().join("sc");
    std::fs::create_dir(&sc).unwrap();
    std::fs::write(sc.join("ok.yaml"), "name: ok\nsteps:\n  - reset: {}\n").unwrap();
    // The application prints its banner after reset; this text never comes.
    std::fs::write(
        sc.join("bad.yaml"),
        "name: bad\nsteps:\n  - flash: { image: fixture:app, via: probe }\n  - reset: {}\n  - expect-serial: { contains: \"no such banner\" }\n    timeout: 300ms\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--board", "g071-virtual", "--report-dir", reports.to_str().unwrap()];
        args.extend(extra);
        args.push(sc.to_str().unwrap());
        hil(&args, &repo())
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("FAILED: 1 passed, 1 failed"), "{}", text(&o.stdout));
    // Traceability: the revision, the host, the probe and the SHA-256 of the flashed image.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("latest/report.json")).unwrap()).unwrap();
    assert_eq!(report["tool"]["revision"].as_str().map(str::len), Some(12), "{}", report["tool"]);
    assert!(report["tool"]["host"].as_str().is_some_and(|h| !h.is_empty()));
    let seen = &report["boards"][0]["seen"];
    assert_eq!(seen["probe"], "hil virtual probe of g071-virtual", "{seen}");
    let image = &seen["images"][0];
    assert_eq!(image["name"], "fixture:app", "{seen}");
    let sha = image["sha256"].as_str().unwrap();
    assert!(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()), "{sha}");

    // explain defaults to the failures and shows what the board actually sent.
    let o = hil(&["explain", reports.join("latest").to_str().unwrap()], &repo());
    let out = text(&o.stdout);
    // Reviewed snapshot of the whole text. A virtual board's side is deterministic (registers, the
    // 300 ms of board time); only the temporary directory varies.
    insta::with_settings!({ filters => vec![(regex::escape(&sc.display().to_string()).as_str(), "[SCENARIOS]")] }, {
        insta::assert_snapshot!("explain_failed_expect_serial", out);
    });
    assert!(out.starts_with("bad on g071-virtual: failed"), "{out}");
    assert!(out.contains("step 3:   expect-serial"), "{out}");
    assert!(
        out.contains("serial text searched (received since the last match):") && out.contains("| hil-app"),
        "the banner it got: {out}"
    );
    assert!(!out.contains("ok on g071-virtual"), "{out}");

    // Only `bad` runs again, on the board it failed on.
    let o = run(&["--rerun-failed"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAILED: 0 passed, 1 failed, 0 errors, 0 skipped"), "{out}");
    assert!(!out.lines().any(|l| l.contains(" ok ")), "{out}");
    // Named explicitly, a run whose failures are fixed has nothing to rerun.
    let first = std::fs::read_dir(&reports)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.ends_with("latest"))
        .min()
        .unwrap();
    let o = hil(
        &[
            "run",
            &format!("--rerun-failed={}", first.join("report.json").display()),
            "--report-dir",
            reports.to_str().unwrap(),
            sc.to_str().unwrap(),
        ],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(1), "still failing: {}{}", text(&o.stdout), text(&o.stderr));
    let o = run(&["--rerun-failed=/nonexistent/run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("/nonexistent/run"), "{}", text(&o.stderr));

    // --fail-fast: `bad` (first in file order) fails, `ok` does not start.
    let o = run(&["--fail-fast", "-j", "1"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAILED: 0 passed, 1 failed, 0 errors, 1 skipped"), "{out}");
    assert!(out.contains("not run: --fail-fast stopped the run after bad failed on g071-virtual"), "{out}");
}

#[test]
fn scenario_names_and_globs_as_arguments_select_like_scenario_and_unknown_names_are_refused() {
    // Names and a glob among the positional arguments; the plan is a reviewed snapshot.
    let o = hil(&["run", "--dry-run", "--board", "g071-virtual", "c09-*", "flash-over-uart"], &repo());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    insta::assert_snapshot!("dry_run_names_and_glob_g071", out);
    // The same selection through --scenario gives the same plan.
    let o = hil(
        &["run", "--dry-run", "--board", "g071-virtual", "--scenario", "c09-*", "--scenario", "flash-over-uart"],
        &repo(),
    );
    assert_eq!(text(&o.stdout), out);
    // A path and a name together: the file's scenarios, narrowed by the name.
    let o = hil(&["run", "--dry-run", "--board", "g071-virtual", "scenarios/conformance", "c02-correct"], &repo());
    let plan = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{plan}{}", text(&o.stderr));
    assert_eq!(plan.lines().filter(|l| l.trim_start().starts_with("run")).count(), 1, "{plan}");
    // A name that matches nothing is a usage error naming the closest scenario, not an empty run.
    let o = hil(&["run", "--board", "g071-virtual", "c02-corect"], &repo());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("no scenario is named `c02-corect` (did you mean `c02-correct`?)"),
        "{}",
        text(&o.stderr)
    );
    // Something that looks like a path stays a path: a missing file is reported as such.
    let o = hil(&["run", "--dry-run", "scenarios/no-such.yaml"], &repo());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no-such.yaml"), "{}", text(&o.stderr));
}

#[test]
fn doctor_output_on_a_virtual_board_and_on_missing_lab_pieces_is_as_reviewed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boards.yaml"),
        "boards:\n  - name: bench\n    chip: STM32G071RB\n    lab:\n      probe: { selector: \"0483:374b:NOSUCHPROBE\" }\n      serial: { port: /nonexistent/ttyUSB7 }\n  - { name: sim, chip: STM32G0B1RE, virtual: {} }\n",
    )
    .unwrap();
    let o = hil(&["doctor", "--board", "sim"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    insta::assert_snapshot!("doctor_virtual_g0b1", text(&o.stdout));
    let o = hil(&["doctor", "--board", "bench"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    // What is attached to this machine, and whether it has a USB stack at all, varies; the rest of
    // the text is reviewed.
    insta::with_settings!({ filters => vec![
        (r"present: [^\n]*", "present: [ATTACHED]"),
        (r"fix: (this host has no USB stack|plug the probe in)[^\n]*", "fix: [PROBE FIX FOR THIS HOST]"),
    ]}, {
        insta::assert_snapshot!("doctor_lab_missing_pieces", text(&o.stdout));
    });
    // The inventory as `list boards` shows it, with no scenarios/ next to it.
    let o = hil(&["list", "boards"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    insta::assert_snapshot!("list_boards_lab_and_virtual", text(&o.stdout));
}

#[test]
fn version_names_the_git_revision() {
    let o = hil(&["--version"], &repo());
    let out = text(&o.stdout);
    assert!(out.starts_with(&format!("hil {} (", env!("CARGO_PKG_VERSION"))), "{out}");
    let rev = out.trim().rsplit('(').next().unwrap().trim_end_matches(')').to_string();
    // Built from a checkout (as tests always are): the revision is HEAD's (the build script reruns
    // when HEAD moves).
    let g = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(repo()).output().unwrap();
    assert_eq!(rev, text(&g.stdout).trim(), "{out}");
}

#[test]
fn doctor_names_each_missing_piece_with_its_fix_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boards.yaml"),
        "boards:\n  - name: bench\n    chip: STM32G071RB\n    lab:\n      probe: { selector: \"0483:374b:NOSUCHPROBE\" }\n      serial: { port: /nonexistent/ttyUSB7 }\n      power: { on: [no-such-uhubctl, on], off: [no-such-uhubctl, off] }\n  - { name: sim, chip: STM32G071RB, virtual: {} }\n",
    )
    .unwrap();
    let o = hil(&["doctor"], dir.path());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", text(&o.stderr));
    assert!(out.starts_with("bench (STM32G071RB, lab)\n"), "only lab boards by default: {out}");
    assert!(out.contains("FAIL probe   no probe matches 0483:374b:NOSUCHPROBE; probes present:"), "{out}");
    assert!(out.contains("FAIL serial  /nonexistent/ttyUSB7 does not exist; serial ports present:"), "{out}");
    assert!(out.contains("FAIL power   power command `no-such-uhubctl` not found in PATH"), "{out}");
    assert_eq!(out.matches("fix: ").count(), 3, "a fix per problem: {out}");
    assert!(out.contains("not ready: bench"), "{out}");
    assert!(!out.contains("target"), "the target is not asked while its probe is missing: {out}");
    // JSON for scripts.
    let o = hil(&["doctor", "--json"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().iter().filter(|c| c["verdict"] == "fail").count(), 3, "{v}");
    // A virtual board on request: the target answers the probe.
    let o = hil(&["doctor", "--board", "sim"], dir.path());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("ok   target  answers: DBGMCU_IDCODE 0x20000460, DEV_ID 0x460 (STM32G071RB)"), "{out}");
    assert!(out.contains("ready: 1 board"), "{out}");
    let o = hil(&["doctor", "--board", "bnch"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown board `bnch` (did you mean `bench`?)"), "{}", text(&o.stderr));
}

#[test]
fn info_decodes_identity_option_bytes_and_boot_source() {
    let o = hil(&["info", "--board", "g071-virtual"], &repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    insta::assert_snapshot!("info_g071_virtual", text(&o.stdout));
}

#[test]
fn boards_yaml_is_found_from_a_subdirectory_and_list_boards_needs_no_scenarios() {
    // From deep inside the repository: the repository's boards.yaml and scenarios/.
    let o = hil(&["validate"], &repo().join("harness/cli/src"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with(&format!("ok: {}/boards.yaml", repo().display())), "{out}");
    // A project with boards and no scenarios/: listing boards works, validating says what is missing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boards.yaml"), "boards:\n  - { name: only, chip: STM32G071RB, virtual: {} }\n")
        .unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let o = hil(&["list", "boards"], &dir.path().join("sub"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("only"), "{}", text(&o.stdout));
    // HIL_BOARDS names the file from anywhere; nothing found says how to name one.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hil"));
    let o = cmd
        .args(["list", "boards"])
        .current_dir(elsewhere.path())
        .env("HIL_BOARDS", dir.path().join("boards.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = hil(&["list", "boards"], elsewhere.path());
    if !elsewhere.path().ancestors().any(|d| d.join("boards.yaml").is_file()) {
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).contains("pass --boards FILE or set HIL_BOARDS"), "{}", text(&o.stderr));
    }
}

#[test]
fn completions_are_generated_for_the_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let o = hil(&["completions", shell], &repo());
        assert_eq!(o.status.code(), Some(0), "{shell}");
        assert!(text(&o.stdout).contains("rerun-failed"), "{shell}: every option completes");
    }
}

#[test]
fn a_wait_is_never_cut_short_by_a_deadline_and_never_passes_unwaited() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("r");
    // A scenario-wide timeout shorter than the wait: the wait's deadline makes room for it.
    std::fs::write(dir.path().join("w.yaml"), "name: w\ntimeout: 100ms\nsteps:\n  - wait: 300ms\n").unwrap();
    let o = hil(
        &[
            "run",
            "--board",
            "g071-virtual",
            "--report-dir",
            reports.to_str().unwrap(),
            dir.path().join("w.yaml").to_str().unwrap(),
        ],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("latest/report.json")).unwrap()).unwrap();
    let step = &report["scenarios"][0]["steps"][0];
    let waited = step["virtual_end_us"].as_u64().unwrap() - step["virtual_start_us"].as_u64().unwrap();
    assert!(waited >= 300_000, "the board's clock moved {waited} us: {step}");
    // A step timeout shorter than its own wait is a configuration error.
    std::fs::write(dir.path().join("x.yaml"), "name: x\nsteps:\n  - wait: 86340s\n    timeout: 60s\n").unwrap();
    let o = hil(&["validate", dir.path().join("x.yaml").to_str().unwrap()], &repo());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("x.yaml:3:5: wait 86340s does not fit in its step timeout 60s"),
        "{}",
        text(&o.stderr)
    );
}

/// Issue 19 faults where real boards fail: a brown-out in the middle of a flash write and a probe
/// link that drops mid-session. The rig detects each, never reports a pass with wrong flash
/// content, and the board is usable again where recovery is possible.
#[test]
fn a_brownout_mid_write_and_a_dropped_probe_link_are_caught_never_passed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boards.yaml"),
        "boards:\n  - name: bo\n    chip: STM32G071RB\n    virtual:\n      seed: 1\n      option-bytes: { nboot-sel: false }\n      faults: { flash-brownout-at-program: 50 }\n  - name: pl\n    chip: STM32G071RB\n    virtual:\n      seed: 1\n      faults: { probe-link-drop-after: 400 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "name: a-uart-flash\nsteps:\n  - enter: { state: system-bootloader, via: boot0-pin }\n  - flash: { image: \"fixture:app\", via: uart }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "name: b-probe-flash\nsteps:\n  - flash: { image: \"fixture:app\", via: probe }\n  - reset\n  - expect-serial: { contains: \"hil-app\" }\n",
    )
    .unwrap();
    let run = |board: &str| -> serde_json::Value {
        let o = hil(&["run", "--board", board, "--report-dir", "r", "a.yaml", "b.yaml"], dir.path());
        assert_eq!(o.status.code(), Some(1), "{}{}", text(&o.stdout), text(&o.stderr));
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/latest/report.json")).unwrap()).unwrap()
    };
    let status = |r: &serde_json::Value, name: &str| -> (String, String) {
        let s = r["scenarios"].as_array().unwrap().iter().find(|s| s["scenario"] == name).unwrap();
        (s["status"].as_str().unwrap().to_string(), s["message"].as_str().unwrap_or("").to_string())
    };
    // Brown-out at the 50th double word of the UART flash: the write does not pass; the board
    // comes back from the power-on reset, and the next flash (probe) passes and runs.
    let r = run("bo");
    let (st, msg) = status(&r, "a-uart-flash");
    assert_eq!(st, "failed", "{msg}");
    assert!(msg.contains("step 2 flash"), "{msg}");
    assert_eq!(status(&r, "b-probe-flash").0, "passed", "the board is usable after the brown-out");
    // The SWD link drops mid-flash: the probe flash fails (nothing passes on a board the rig can
    // no longer see; this board's entry leaves BOOT0 to the option bits, so `a` fails anyway).
    let r = run("pl");
    let (st, msg) = status(&r, "b-probe-flash");
    assert_eq!(st, "failed", "{msg}");
    assert!(msg.contains("step 1 flash"), "{msg}");
    assert_eq!(r["summary"]["passed"], 0, "{}", r["summary"]);
}

#[test]
fn a_missing_probe_is_named_with_what_is_attached_not_an_errno() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boards.yaml"),
        "boards:\n  - name: bench\n    chip: STM32G071RB\n    lab:\n      probe: { selector: \"0483:374b:NOSUCH\" }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("s.yaml"), "name: s\nsteps:\n  - flash: { image: \"fixture:app\", via: probe }\n")
        .unwrap();
    let o = hil(&["run", "--board", "bench", "--report-dir", "r", "s.yaml"], dir.path());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "the rig cannot reach the board: {out}");
    assert!(out.contains("no debug probe matches 0483:374b:NOSUCH; attached:"), "{out}");
    assert!(out.contains("hil doctor"), "{out}");
    assert!(!out.contains("errno"), "{out}");
}
