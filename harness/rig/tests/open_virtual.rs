//! Virtual boards opened as `hil run` opens them (the rig opener: the board, its serial port in
//! process or on a PTY, its probe attached at once): a verdict must not depend on the timing mode
//! (DESIGN.md, virtual time and determinism).

use std::sync::Arc;

use hil_config::{Board, ValidationContext, load_and_validate};
use hil_report::Status;
use hil_rig::engine::{self, CancelFlag, EngineOptions};

/// Empty flash on every board: the empty check boots the ROM bootloader (RM0444 2.5), which
/// serves USART2 (AN2606).
const BOARDS: &str = "\
boards:
  - { name: g0b1-fast, chip: STM32G0B1RE, virtual: {} }
  - { name: g0b1-realistic, chip: STM32G0B1RE, virtual: { timing: realistic } }
  - { name: g071-fast, chip: STM32G071RB, virtual: {} }
  - { name: g071-realistic, chip: STM32G071RB, virtual: { timing: realistic } }
";

const SCENARIOS: [(&str, &str); 2] = [
    // The first thing after the board was opened (its probe attached at once).
    ("rom-first", "name: rom-first\nsteps:\n  - expect-bootloader: { via: uart }\n"),
    // After a power cycle the probe attaches again (expect-state), then the host syncs.
    (
        "rom-after-power-cycle",
        "name: rom-after-power-cycle\nsteps:\n  - power-cycle\n  - expect-state: system-bootloader\n  \
         - expect-bootloader: { via: uart }\n",
    ),
];

/// A gated board (`timing: fast`) used to stand at its power-on instant when the probe attached:
/// probe-rs's STM32G0 attach read RCC_APBENR1 before the ROM had enabled USART2's clock and wrote
/// it back after, so the ROM never heard 0x7F (the realistic board, on for the wall time the
/// opening took, answered).
#[test]
fn an_empty_board_answers_the_rom_sync_right_after_open_and_power_cycle_in_both_timing_modes() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("boards.yaml"), BOARDS).unwrap();
    std::fs::create_dir(tmp.path().join("sc")).unwrap();
    for (name, body) in SCENARIOS {
        std::fs::write(tmp.path().join("sc").join(format!("{name}.yaml")), body).unwrap();
    }
    let (config, diags) =
        load_and_validate(&tmp.path().join("boards.yaml"), &[tmp.path().join("sc")], &ValidationContext::default());
    assert!(diags.is_empty(), "{diags:?}");
    let config = config.unwrap();
    let names = ["g0b1-fast", "g0b1-realistic", "g071-fast", "g071-realistic"];
    let boards: Vec<&Board> = names.iter().map(|b| config.boards.get(b).unwrap()).collect();
    let opts = EngineOptions { lock_dir: tmp.path().join("locks"), command: vec!["test".into()], ..Default::default() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (report, _) = rt
        .block_on(engine::run_config(
            &config,
            &boards,
            Arc::new(hil_rig::opener::rig_opener()),
            &tmp.path().join("reports"),
            opts,
            CancelFlag::new(),
        ))
        .unwrap();
    let mut bad = Vec::new();
    for board in names {
        for (scenario, _) in SCENARIOS {
            match report.scenarios.iter().find(|s| s.board == board && s.scenario == scenario) {
                Some(s) if s.status == Status::Passed => {}
                Some(s) => bad.push(format!("{scenario} on {board}: {:?} {:?}", s.status, s.message)),
                None => bad.push(format!("{scenario} on {board}: no result")),
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
