//! Issue 15, the virtual debug adapter in a Linux guest (one boot for the sequence), like a
//! NUCLEO's ST-LINK on a bench:
//! - its CMSIS-DAP v2 probe: the unmodified `hil flash --via probe` opens it through probe-rs's own
//!   CMSIS-DAP driver by selector (VID:PID:serial) and flashes with ST's flash algorithm;
//! - its virtual COM port (CDC-ACM, bridged to the G071's ROM USART, DTR wired to BOOT0 and RTS to
//!   NRST, both asserted low): the real stm32flash talks to /dev/ttyACM0 at 115200 8E1 - real
//!   parity, no `-m 8n1` - and enters the ROM with an `-i` DTR/RTS sequence. With the application
//!   in flash only BOOT0 high at the reset reaches the ROM: the wiring is what the test exercises;
//! - then `hil run` runs the flow and conformance scenarios of the G071 on a `lab:` entry (probe,
//!   serial at 8E1, BOOT0 on DTR, NRST on RTS, power through `hil sim power`), and every scenario
//!   must reach the verdict it reaches on the virtual entry.

mod guest;

use std::time::Duration;

use guest::{SimServe, run};

const CALL: Duration = Duration::from_secs(120);

const LAB_BOARDS: &str = "boards:
  - name: g071-lab
    chip: STM32G071RB
    default: true
    description: The virtual G071 behind its debug adapter, seen through a Linux USB stack
    lab:
      probe: { selector: \"1209:0001:g071-virtual\" }
      serial: { port: /dev/ttyACM0, baud: 115200, parity: even }
      boot0: { via: serial-dtr, asserted-level: low }
      nrst: { via: serial-rts, asserted-level: low }
      power:
        on: [hil, sim, power, --adapter, \"1209:0001:g071-virtual\", \"on\"]
        off: [hil, sim, power, --adapter, \"1209:0001:g071-virtual\", \"off\"]
";

#[test]
fn probe_rs_cmsis_dap_and_stm32flash_at_8e1_with_dtr_rts_through_the_debug_adapter() {
    if !guest::tools_available() || !hil_fixtures::peer_available("stm32flash", "apt-get install stm32flash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = hil_fixtures::get("app", 0x0800_0000).expect("app fixture");
    let app_bin = guest::app_bin(app.elf);
    std::fs::write(dir.path().join("app.bin"), &app_bin).unwrap();
    std::fs::write(dir.path().join("boards.yaml"), LAB_BOARDS).unwrap();
    let which = std::process::Command::new("sh").args(["-c", "command -v stm32flash"]).output().unwrap();
    let stm32flash = String::from_utf8_lossy(&which.stdout).trim().to_string();
    // The scenarios twice: as written (for the virtual entry, run here) and for the lab entry.
    let scenarios = guest::scenarios_for(
        "g071-virtual",
        &["g071-custom-bootloader", "f103-custom-bootloader", "g0b1", "g474-virtual"],
    );
    let (virt, tar) = guest::lab_scenarios(dir.path(), scenarios, "g071-virtual", "g071-lab");
    let hil = guest::stripped_hil(dir.path());
    let files = vec![
        format!("{}:/data/lab.tar", tar.display()),
        format!("{stm32flash}:/bin/stm32flash"),
        format!("{}:/bin/hil", hil.display()),
        format!("{}:/data/app.bin", dir.path().join("app.bin").display()),
        format!("{}:/data/boards.yaml", dir.path().join("boards.yaml").display()),
        format!("{}:/data/app.elf", app.path),
    ];
    let guest_dir = dir.path().join("guest");
    guest::build(&guest_dir, &files);

    // A new chip: erased flash, the ROM runs (empty check).
    let adapter = dir.path().join("adapter.sock");
    let mut sim =
        SimServe::start_with("g071-virtual", &["--usbredir-adapter".into(), adapter.display().to_string()], None);
    sim.wait_for("DTR drives BOOT0 and RTS drives NRST", Duration::from_secs(5));
    let mut g = guest::boot(&guest_dir, &adapter);
    eprintln!("guest boot to the command prompt: {:.2?}", g.boot);
    let o = run(&mut g, "for i in $(seq 100); do [ -e /dev/ttyACM0 ] && break; sleep 0.1; done; ls /dev/ttyACM0", CALL);
    assert_eq!(o.rc, 0, "no ttyACM0:\n{}\n{}", o.text, g.console());

    // What the lab host sees: the adapter as a probe and as a serial port, by VID:PID:serial.
    let o = run(&mut g, "hil list probes && hil list ports --json", CALL);
    assert_eq!(o.rc, 0, "{}", o.text);
    assert!(o.text.contains("1209:0001:g071-virtual") && o.text.contains("CMSIS-DAP"), "{}", o.text);
    assert!(o.text.contains("\"id\": \"/dev/ttyACM0\""), "{}", o.text);
    assert!(o.text.matches("1209:0001:g071-virtual").count() >= 2, "the port names its adapter: {}", o.text);

    // hil doctor on the lab entry: probe and port present and accessible, the target answers the
    // probe. Opening the tty pulses NRST (RTS) with BOOT0 low (DTR): the G071's ROM cleared
    // FLASH_ACR.EMPTY when it started (AN2606 45.3.1), so the chip now boots its erased flash and
    // the ROM check can only be a note - as on a real bench.
    let o = run(&mut g, "cd /data && hil doctor --boards /data/boards.yaml --board g071-lab", CALL);
    assert_eq!(o.rc, 0, "hil doctor:\n{}", o.text);
    for want in [
        "ok   probe   1209:0001:g071-virtual present",
        "ok   serial  /dev/ttyACM0 opens at 115200 baud",
        "ok   power",
        "ok   target  answers: DBGMCU_IDCODE",
        "DEV_ID 0x460 (STM32G071RB)",
        "note rom     no AN3155 answer",
        "ready: 1 board",
    ] {
        assert!(o.text.contains(want), "`{want}` missing:\n{}", o.text);
    }

    // The probe: probe-rs's CMSIS-DAP driver, ST's flash algorithm on the virtual core.
    let o = run(
        &mut g,
        "cd /data && hil flash --boards /data/boards.yaml --board g071-lab --via probe --verify --go /data/app.elf",
        CALL,
    );
    eprintln!("hil flash --via probe (CMSIS-DAP) in the guest: {:.2?}", o.took);
    assert_eq!(o.rc, 0, "hil flash via the CMSIS-DAP probe:\n{}\n{}", o.text, g.console());
    // Every loadable byte of the ELF, no more (the image's segments, not its file size).
    let loadable: usize =
        hil_image::Image::from_elf("app", app.elf).unwrap().ranges().iter().map(|(_, d)| d.len()).sum();
    let flashed = format!("flashed {loadable} bytes to g071-lab via probe");
    assert!(o.text.contains(&flashed) && o.text.contains("verified"), "`{flashed}` missing:\n{}", o.text);
    sim.wait_for("boots MainFlash", Duration::from_secs(30));

    // BOOT0 low at the reset (DTR asserted): the application starts, the ROM never answers.
    let o = run(&mut g, "stm32flash -b 115200 -i 'dtr,rts,-rts' /dev/ttyACM0", CALL);
    assert_ne!(o.rc, 0, "the ROM answered although BOOT0 was low:\n{}", o.text);

    // BOOT0 high (DTR released), an NRST pulse (RTS): the ROM at 8E1; write, verify, Go.
    let o = run(&mut g, "stm32flash -b 115200 -i '-dtr,rts,-rts' -w /data/app.bin -v -g 0x08000000 /dev/ttyACM0", CALL);
    eprintln!("stm32flash -w -v -g over ttyACM0: {:.2?}", o.took);
    assert_eq!(o.rc, 0, "stm32flash:\n{}", o.text);
    assert!(o.text.contains("Device ID    : 0x0460"), "{}", o.text);
    // stm32flash ends at the address past the image.
    let done = format!("Wrote and verified address {:#010x} (100.00%) Done.", 0x0800_0000 + app_bin.len());
    assert!(o.text.contains(&done), "`{done}` missing:\n{}", o.text);
    assert!(o.text.contains("Starting execution at address 0x08000000... done."), "{}", o.text);
    let entered = sim.wait_for("boots SystemMemory", Duration::from_secs(10));
    assert!(entered.contains("reset (Pin)"), "{entered}");
    let left = sim.wait_for("ROM bootloader left", Duration::from_secs(30));
    assert!(left.contains("PC 0x080"), "{left}");

    // The flows and the conformance suite on the lab entry, against their verdicts on the virtual one.
    let verdicts =
        guest::same_verdicts_on_lab_and_virtual(&mut g, &mut sim, &virt, "g071-virtual", &dir.path().join("host"));
    assert!(verdicts.len() >= 30, "{verdicts:?}");
}
