//! The conformance suite (scenarios/conformance/) end to end on the virtual boards: every failure
//! class of issue 9 has a scenario in which a faulty fixture fails with the right named cause and
//! one in which the correct fixture passes, and the report's conformance matrix shows each cell as
//! expected. This is the check CI runs for "every class fails on the faulty fixture with the right
//! cause and passes on the correct one"; the rules' facts are pinned in diagnosis_rules.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hil_config::scenario::Outcome;
use hil_config::{Config, ValidationContext, load_and_validate};
use hil_report::{RunStatus, Status};
use hil_rig::engine::{self, CancelFlag, EngineOptions};

/// The failure classes of issue 9, as the scenarios name them (the rows of the matrix).
const CLASSES: [&str; 12] = [
    "1. jump with PRIMASK set",
    "2. jump from PSP or interrupt handler",
    "3. remap not done or SYSCFG clock off",
    "4. interrupt left enabled at the jump",
    "5. Go / leave without VTOR set",
    "6. Go to vector table + 4",
    "7. application base or VTOR behind a custom bootloader",
    "8. image with a RAM load segment",
    "9. option bits or empty check select the ROM",
    "10. watchdog not refreshed",
    "11. readout protection",
    "12. USB left enabled at the jump",
];
const DEFAULT_BOARDS: [&str; 2] = ["g071-virtual", "g0b1-virtual"];
const LAYOUT_BOARD: &str = "g071-custom-bootloader";
/// Seed 004's class runs on the chip whose ROM it concerns (the G474's DFU, chip-data switch
/// `bootloader.usb_left_enabled_blocks_dfu`): its scenarios name the board.
const USB_BOARD: &str = "g474-virtual";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(dir: &str) -> Config {
    let ctx = ValidationContext {
        fixtures: hil_fixtures::all().iter().map(|f| (f.name.to_string(), f.base)).collect(),
        causes: hil_rig::diagnosis::cause_ids(),
    };
    let (config, diags) = load_and_validate(&repo().join("boards.yaml"), &[repo().join(dir)], &ctx);
    assert!(diags.is_empty(), "{}", diags.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"));
    config.expect("valid configuration")
}

#[test]
fn every_class_has_a_faulty_and_a_correct_scenario() {
    let config = load("scenarios/conformance");
    let mut faulty: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut correct: BTreeMap<String, usize> = BTreeMap::new();
    for ls in &config.scenarios {
        let s = &ls.scenario;
        let class =
            s.class.clone().unwrap_or_else(|| panic!("{}: conformance scenarios name their class", ls.path.display()));
        assert!(CLASSES.contains(&class.as_str()), "{}: unknown class {class:?}", ls.path.display());
        match s.expect.as_ref().map(|e| &e.value) {
            Some(e) if e.outcome == Outcome::Fail => {
                let cause = e
                    .cause
                    .as_ref()
                    .unwrap_or_else(|| panic!("{}: an expected failure names its cause", ls.path.display()));
                faulty.entry(class).or_default().insert(cause.value.clone());
            }
            _ => *correct.entry(class).or_default() += 1,
        }
    }
    for class in CLASSES {
        assert!(faulty.contains_key(class), "class {class:?} has no faulty scenario");
        assert!(correct.contains_key(class), "class {class:?} has no correct scenario");
    }
}

#[test]
fn conformance_matrix_and_no_false_alarm_across_the_suite() {
    // The whole suite (the flows too): the audit below must find no false alarm anywhere.
    let config = load("scenarios");
    let board = |name: &str| config.boards.get(name).unwrap_or_else(|| panic!("boards.yaml has {name}"));
    // The default boards run the scenarios that do not name boards; the custom-bootloader layout
    // runs only the scenarios written for it.
    let defaults: Vec<_> = DEFAULT_BOARDS.iter().map(|n| board(n)).collect();
    let mut plans = hil_rig::plan::plan(&config, &defaults);
    let mut layout_only = config.clone();
    layout_only.scenarios.retain(|ls| ls.scenario.boards.iter().any(|b| b.value == LAYOUT_BOARD));
    plans.extend(hil_rig::plan::plan(&layout_only, &[board(LAYOUT_BOARD)]));
    let mut usb_only = config.clone();
    usb_only.scenarios.retain(|ls| ls.scenario.boards.iter().any(|b| b.value == USB_BOARD));
    plans.extend(hil_rig::plan::plan(&usb_only, &[board(USB_BOARD)]));

    let tmp = tempfile::tempdir().unwrap();
    // CI can keep the reports (the matrix in summary.md / report.html) as artifacts.
    let reports = std::env::var_os("HIL_CONFORMANCE_REPORTS").map(PathBuf::from).unwrap_or(tmp.path().join("reports"));
    // Every scenario that passes is diagnosed as well: a rule naming a cause there fails it.
    let opts = EngineOptions { lock_dir: tmp.path().join("locks"), audit_diagnosis: true, ..Default::default() };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (report, _) = runtime
        .block_on(engine::run(plans, Arc::new(hil_rig::opener::rig_opener()), &reports, opts, CancelFlag::new()))
        .unwrap();

    let failed: Vec<String> = report
        .scenarios
        .iter()
        .filter(|s| !matches!(s.status, Status::Passed | Status::Skipped))
        .map(|s| format!("{} on {}: {}", s.scenario, s.board, s.message.clone().unwrap_or_default()))
        .collect();
    assert!(failed.is_empty(), "scenarios that did not behave as expected:\n{}", failed.join("\n"));
    // The audit ran: every passing scenario that expects to pass was diagnosed and named nothing.
    let audited = report.scenarios.iter().filter(|s| s.status == Status::Passed && s.expected.is_none()).count();
    assert!(audited >= 30, "only {audited} passing scenarios were audited");
    assert_eq!(report.status, RunStatus::Passed);

    let rows: BTreeMap<&str, _> = report.conformance.iter().map(|r| (r.class.as_str(), &r.cells)).collect();
    for class in CLASSES {
        let cells = rows.get(class).unwrap_or_else(|| panic!("no matrix row for {class:?}"));
        for (b, c) in cells.iter() {
            assert!(c.ok, "{class} on {b}: expected {}, seen {}", c.expected, c.seen);
        }
        // Each class fails somewhere with a named cause and passes somewhere.
        assert!(cells.values().any(|c| c.expected.contains("fail: ")), "{class}: no expected failure ran");
        assert!(cells.values().any(|c| c.expected.split("; ").any(|e| e == "pass")), "{class}: no passing run");
        let boards: Vec<&str> = cells.keys().map(String::as_str).collect();
        if class.starts_with("7.") {
            assert_eq!(boards, [LAYOUT_BOARD]);
        } else if class.starts_with("12.") {
            assert_eq!(boards, [USB_BOARD]);
        } else {
            assert_eq!(boards, DEFAULT_BOARDS, "{class}: both virtual chips");
        }
    }
    // The per-chip differences the ROM model implies (seed 002; AN2606 45.3.1): the G071's
    // polled USART answers a jump with PRIMASK set, from a handler, or without the remap, and its
    // V11.3 ROM clears EMPTY; the G0B1 does none of that.
    for (class, g071, g0b1) in [
        ("1. jump with PRIMASK set", "pass", "fail: primask-set-at-jump"),
        ("3. remap not done or SYSCFG clock off", "pass", "fail: remap-not-done"),
        ("9. option bits or empty check select the ROM", "pass", "fail: empty-check-latched"),
    ] {
        let cells = rows[class];
        assert!(
            cells["g071-virtual"].seen.split("; ").any(|s| s == g071),
            "{class} on g071: {}",
            cells["g071-virtual"].seen
        );
        assert!(cells["g0b1-virtual"].seen.contains(g0b1), "{class} on g0b1: {}", cells["g0b1-virtual"].seen);
    }
}
