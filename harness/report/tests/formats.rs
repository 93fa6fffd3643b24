//! Every report format, snapshotted from one synthetic run with fixed timestamps.

mod common;

use common::sample;
use hil_report::*;

#[test]
fn summary_and_status_follow_the_results() {
    let r = sample();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.summary, Summary { total: 3, passed: 1, failed: 1, errors: 0, skipped: 1, interrupted: 0, flaky: 0 });
}

#[test]
fn json_snapshot_and_round_trip() {
    let r = sample();
    let json = render_json(&r).unwrap();
    insta::assert_snapshot!("report_json", json);
    let back: RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
}

#[test]
fn junit_snapshot() {
    let xml = render_junit(&sample());
    // The host the run ran on differs between machines.
    insta::with_settings!({ filters => vec![(r#"hostname="[^"]*""#, r#"hostname="[host]""#)] }, {
        insta::assert_snapshot!("junit_xml", xml);
    });
}

#[test]
fn junit_attributes_stay_on_one_line_and_long_output_is_trimmed() {
    let mut r = sample();
    let s = r.scenarios.iter_mut().find(|s| s.status == hil_report::Status::Failed).unwrap();
    s.message = Some("`hil-app` did not appear\r\nsaw: boot\r\n".into());
    s.steps[0].evidence.push(hil_report::Evidence::Text { label: "serial".into(), text: "x".repeat(100_000) });
    let xml = render_junit(&r);
    let msg = xml.split("message=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert!(!msg.contains('\n') && !msg.contains('\r') && !msg.contains("&#xA;"), "{msg}");
    assert!(msg.contains("did not appear / saw: boot"), "{msg}");
    assert!(xml.len() < 40_000, "{} bytes", xml.len());
    assert!(xml.contains("not shown here; the whole output is in report.json"));
}

#[test]
fn junit_is_well_formed_and_counts_match() {
    let xml = render_junit(&sample());
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut cases, mut failures, mut skipped) = (0, 0, 0);
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => match e.name().as_ref() {
                b"testcase" => cases += 1,
                b"failure" => failures += 1,
                b"skipped" => skipped += 1,
                _ => {}
            },
            _ => {}
        }
    }
    assert_eq!((cases, failures, skipped), (3, 1, 1));
}

#[test]
fn markdown_snapshot() {
    insta::assert_snapshot!("summary_md", render_markdown(&sample()));
}

#[test]
fn html_snapshot() {
    insta::assert_snapshot!("report_html", render_html(&sample()));
}

#[test]
fn html_escapes_everything_from_the_run() {
    let mut r = sample();
    r.scenarios[0].scenario = "<script>alert(1)</script>".into();
    r.scenarios[1].steps[0].evidence = vec![Evidence::Text { label: "out".into(), text: "</pre><img src=x>".into() }];
    let html = render_html(&r);
    assert!(!html.contains("<script>alert"));
    assert!(!html.contains("<img src=x>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("http://") && !html.contains("https://"), "self-contained: no external resources");
}

#[test]
fn run_dir_holds_all_formats_and_replaces_them_atomically() {
    let root = tempfile::tempdir().unwrap();
    let mut r = sample();
    let dir = RunDir::create(root.path(), &r).unwrap();
    assert!(dir.path().ends_with("20261121100000-r0001"));
    dir.write_all(&r).unwrap();
    for f in ["report.json", "junit.xml", "summary.md", "report.html"] {
        assert!(dir.path().join(f).is_file(), "{f}");
        // Readable by the lab group and CI's uploader, not only by the user who ran hil.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o044, 0o044, "{f} is {mode:o}");
        }
    }
    r.status = RunStatus::Interrupted;
    dir.write_all(&r).unwrap();
    let back: RunReport = serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(back.status, RunStatus::Interrupted);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    dir.mark_latest(root.path());
    assert!(root.path().join("latest").join("report.json").is_file());
}

#[test]
fn a_run_whose_process_died_keeps_its_finished_results_in_the_journal() {
    let root = tempfile::tempdir().unwrap();
    let full = sample();
    // What was on disk when the process died: report.json from the start of the run, the journal
    // with every finished result, the last line cut short by the crash.
    let mut started = full.clone();
    started.status = RunStatus::Running;
    started.scenarios.clear();
    started.summary = Summary::of(&[]);
    let dir = RunDir::create(root.path(), &started).unwrap();
    dir.write_all(&started).unwrap();
    for r in &full.scenarios {
        dir.append_result(r).unwrap();
    }
    let journal = dir.path().join(hil_report::write::JOURNAL);
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(b"{\"scenario\":\"cut-sh");
    std::fs::write(&journal, &bytes).unwrap();
    let back = hil_report::read_run(dir.path()).unwrap();
    assert_eq!(back.status, RunStatus::Running, "no verdict for a run that did not finish");
    assert_eq!(back.scenarios, full.scenarios);
    assert_eq!(back.summary, full.summary);
    // A damaged line inside the journal is named, not skipped.
    std::fs::write(&journal, "not json\n{}\n").unwrap();
    let e = hil_report::read_run(dir.path()).unwrap_err().to_string();
    assert!(e.contains("results.jsonl:1: not a scenario result"), "{e}");
    // A finished report is read as it is; the journal is not consulted.
    dir.write_all(&full).unwrap();
    assert_eq!(hil_report::read_run(&dir.path().join("report.json")).unwrap(), full);
}

#[test]
fn writing_into_a_missing_directory_names_the_path() {
    let e = write_atomic(std::path::Path::new("/nonexistent-dir-hil/x.json"), b"{}").unwrap_err();
    assert!(e.to_string().contains("/nonexistent-dir-hil/x.json"), "{e}");
}

#[test]
fn conformance_cells_pair_the_faulty_and_the_correct_fixture() {
    let mut r = sample();
    let base = r.scenarios[0].clone();
    let faulty = ScenarioResult {
        scenario: "remap-faulty".into(),
        class: Some("3. remap".into()),
        status: Status::Passed,
        expected: Some(ExpectedResult {
            outcome: "fail".into(),
            cause: Some("remap-not-done".into()),
            observed_outcome: "fail".into(),
            observed_cause: Some("remap-not-done".into()),
        }),
        ..base.clone()
    };
    let correct = ScenarioResult {
        scenario: "remap-correct".into(),
        class: Some("3. remap".into()),
        status: Status::Passed,
        ..base.clone()
    };
    let elsewhere = ScenarioResult { board: "g0b1-virtual".into(), status: Status::Failed, ..correct.clone() };
    r.scenarios = vec![faulty, correct, elsewhere];
    r.finish_status();
    assert_eq!(r.conformance.len(), 1);
    let row = &r.conformance[0];
    assert_eq!(row.class, "3. remap");
    let g071 = &row.cells["g071-virtual"];
    assert_eq!(
        (g071.expected.as_str(), g071.seen.as_str(), g071.ok),
        ("fail: remap-not-done; pass", "fail: remap-not-done; pass", true)
    );
    assert_eq!(g071.scenarios, ["remap-faulty", "remap-correct"]);
    assert!(!row.cells["g0b1-virtual"].ok, "a correct fixture that fails is a mismatch");
}

#[test]
fn conformance_rows_follow_the_class_numbers() {
    let mut r = sample();
    let base = r.scenarios[0].clone();
    r.scenarios = ["10. watchdog", "2. interrupt context", "1. PRIMASK", "unnumbered", "11. readout protection"]
        .iter()
        .map(|c| ScenarioResult { class: Some(c.to_string()), status: Status::Passed, ..base.clone() })
        .collect();
    r.finish_status();
    let classes: Vec<&str> = r.conformance.iter().map(|row| row.class.as_str()).collect();
    assert_eq!(classes, ["1. PRIMASK", "2. interrupt context", "10. watchdog", "11. readout protection", "unnumbered"]);
}

/// The sample's passing scenario, cut off by Ctrl-C in its second step.
fn interrupted_sample() -> RunReport {
    let mut r = sample();
    let mut x = r.scenarios[0].clone();
    x.scenario = "long-wait".into();
    x.class = Some("1. jump with PRIMASK set".into());
    x.status = Status::Interrupted;
    x.message = Some("interrupted at step 2 expect-bootloader".into());
    x.steps[1].status = Status::Interrupted;
    x.steps[1].message = Some("interrupted".into());
    r.scenarios.push(x);
    r.status = RunStatus::Running;
    r.finish_status();
    r
}

#[test]
fn an_interrupted_scenario_has_no_verdict_in_any_format() {
    let r = interrupted_sample();
    assert_eq!(r.status, RunStatus::Interrupted, "no verdict for the run either");
    assert_eq!(r.summary, Summary { total: 4, passed: 1, failed: 1, errors: 0, skipped: 1, interrupted: 1, flaky: 0 });
    // No conformance cell: one scenario of the class failed, the interrupted one adds nothing.
    assert_eq!(r.conformance[0].cells["g071-virtual"].scenarios, ["jump-from-app-primask"]);

    let json: serde_json::Value = serde_json::from_str(&render_json(&r).unwrap()).unwrap();
    assert_eq!(json["scenarios"][3]["status"], "interrupted");
    assert_eq!(json["scenarios"][3]["steps"][1]["status"], "interrupted");
    assert_eq!(json["summary"]["interrupted"], 1);

    let xml = render_junit(&r);
    assert!(xml.contains(r#"<skipped message="interrupted" type="interrupted">"#), "{xml}");
    assert!(!xml.contains("<error"), "an interrupted scenario is no error: {xml}");

    let md = render_markdown(&r);
    assert!(md.contains("1 skipped, 1 interrupted."), "{md}");
    assert!(md.contains("| long-wait | _interrupted_ | - |"), "{md}");
    assert!(md.contains("## Interrupted\n"), "{md}");
    assert!(md.contains("[INT ]  2. expect-bootloader via uart"), "{md}");

    let html = render_html(&r);
    assert!(html.contains("<b>1</b> skipped, <b>1</b> interrupted."), "{html}");
    assert!(html.contains(r#"<span class="badge interrupted">interrupted</span>"#), "{html}");
    assert!(html.contains(".running,.interrupted{"), "the badge has a style");
}

#[test]
fn a_schema_1_summary_without_interrupted_still_reads() {
    let s: Summary = serde_json::from_str(r#"{"total":1,"passed":1,"failed":0,"errors":0,"skipped":0}"#).unwrap();
    assert_eq!(s.interrupted, 0);
}
