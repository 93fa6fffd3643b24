//! Issue 7 end to end: `hil flash` through the ROM over UART (G071) and USB DFU (G0B1) with
//! verify and start, a flash fault caught by verify, and the flash-and-go flows as scenarios
//! (whose `expect-serial` proves the application started).

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

fn app() -> &'static str {
    hil_fixtures::get("app", 0x0800_0000).unwrap().path
}

#[test]
fn flash_over_uart_verifies_and_starts_the_image() {
    let o = hil(&["flash", "--board", "g071-virtual", "--via", "uart", "--verify", "--go", app()], &repo());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("via uart") && out.contains("; verified"), "{out}");
    assert!(out.contains("verify time (read back through the probe)"), "the fastest verify path is the probe: {out}");
    assert!(out.contains("started the image at 0x08000000"), "{out}");
}

#[test]
fn flash_over_dfu_verifies_and_starts_the_image() {
    let o = hil(&["flash", "--board", "g0b1-virtual", "--via", "dfu", "--verify", "--go", app()], &repo());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("via dfu") && out.contains("; verified") && out.contains("started the image at 0x08000000"),
        "{out}"
    );
}

#[test]
fn a_flash_that_does_not_program_is_caught_and_named() {
    let dir = tempfile::tempdir().unwrap();
    // Programming the double word at 0x08000100 fails (PROGERR); the ROM reports the write error.
    std::fs::write(
        dir.path().join("boards.yaml"),
        "boards:\n  - name: faulty\n    chip: STM32G071RB\n    virtual: { option-bytes: { nboot-sel: false }, faults: { flash-program-error-at: 0x0800_0100 } }\n",
    )
    .unwrap();
    let o =
        hil(&["flash", "--boards", "boards.yaml", "--board", "faulty", "--via", "uart", "--verify", app()], dir.path());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Write Memory (0x31) at 0x08000100"), "the failure names the command and address: {err}");
}

#[test]
fn a_flash_over_a_noisy_line_gets_through_and_says_what_it_took() {
    // Issue 19: one lost byte used to fail the whole flash. Lost bytes to the board and corrupted
    // bytes from it are recovered by retries, which `hil flash` reports.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boards.yaml"),
        "boards:\n  - name: noisy\n    chip: STM32G071RB\n    virtual: { option-bytes: { nboot-sel: false }, faults: { uart-rx-drop-every: 700, uart-tx-corrupt-every: 40 } }\n",
    )
    .unwrap();
    let o =
        hil(&["flash", "--boards", "boards.yaml", "--board", "noisy", "--via", "uart", "--verify", app()], dir.path());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("; verified") && out.contains("AN3155 retries on link errors"), "{out}");
}

#[test]
fn flash_refuses_an_image_preflight_rejects() {
    // Linked at 0x08000000; this board's application lives behind a 32 KiB bootloader.
    let o = hil(&["flash", "--board", "g071-custom-bootloader", "--via", "uart", app()], &repo());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("error[bootloader-overlap]"), "{}", text(&o.stdout));
}

#[test]
fn flash_and_go_flows_pass_as_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    for (board, file) in
        [("g071-virtual", "scenarios/flash-over-uart.yaml"), ("g0b1-virtual", "scenarios/flash-over-dfu.yaml")]
    {
        let o = hil(&["run", "--board", board, "--report-dir", dir.path().to_str().unwrap(), file], &repo());
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{board} {file}: {out}{}", text(&o.stderr));
        assert!(out.contains("PASSED: 1 passed"), "{out}");
    }
}

#[test]
fn the_uart_flash_benchmark_prints_its_figures() {
    // A small image keeps this quick; speed targets are read from the JSON by people, not asserted.
    let o = hil(&["bench", "flash-uart", "--board", "g071-virtual", "--size", "4K"], &repo());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["bytes"], 4096);
    assert!(v["ours"]["write_s"].as_f64().unwrap() > 0.0);
    let ceiling = v["an3155_ceiling_bytes_per_s"].as_f64().unwrap();
    assert!((ceiling - 115_200.0 / 11.0 * 256.0 / 268.0).abs() < 1e-6, "{ceiling}");
    assert!(v["ratio_to_ceiling"].as_f64().unwrap() > 0.0);
    if hil_fixtures::peer_available("stm32flash", "apt-get install stm32flash") {
        assert!(v["stm32flash_w_v_s"].as_f64().unwrap() > 0.0, "stm32flash wrote and verified the same image");
    }
}

#[test]
fn hil_run_without_arguments_passes_the_suite_and_writes_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let o = hil(&["run", "--report-dir", dir.path().to_str().unwrap()], &repo());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    let latest = dir.path().join("latest");
    for f in ["report.json", "junit.xml", "summary.md", "report.html"] {
        assert!(latest.join(f).is_file(), "{f} missing");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(latest.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "passed");
    assert!(report["summary"]["passed"].as_u64().unwrap() >= 10, "{}", report["summary"]);
    assert_eq!(report["summary"]["failed"], 0);
}
