//! Issues 14 and 15 together: the virtual G0B1 as a NUCLEO-G0B1RE on a Linux host - its ROM's USB
//! DFU device and its debug adapter (CMSIS-DAP probe, virtual COM port with DTR/RTS) both attached
//! through usbredir - and `hil run` in the guest running the DFU flow and conformance scenarios over
//! nusb against the guest kernel, on a `lab:` entry (the UART and probe ones run on the G071 lab
//! entry in guest_adapter.rs). Every scenario must reach the verdict it reaches on the virtual
//! entry.

mod guest;

use std::time::Duration;

use guest::{SimServe, run};

const LAB_BOARDS: &str = "boards:
  - name: g0b1-lab
    chip: STM32G0B1RE
    default: true
    description: The virtual G0B1 through its debug adapter and its own USB, seen through a Linux USB stack
    lab:
      probe: { selector: \"1209:0001:g0b1-virtual\" }
      serial: { port: /dev/ttyACM0, baud: 115200, parity: even }
      usb: \"0483:df11\"
      boot0: { via: serial-dtr, asserted-level: low }
      nrst: { via: serial-rts, asserted-level: low }
      power:
        on: [hil, sim, power, --adapter, \"1209:0001:g0b1-virtual\", \"on\"]
        off: [hil, sim, power, --adapter, \"1209:0001:g0b1-virtual\", \"off\"]
";

#[test]
fn dfu_flows_and_conformance_on_a_g0b1_lab_entry_match_the_virtual_entry() {
    if !guest::tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boards.yaml"), LAB_BOARDS).unwrap();
    let hil = guest::stripped_hil(dir.path());
    let scenarios: Vec<_> = guest::scenarios_for("g0b1-virtual", &["g071", "g474-virtual"])
        .into_iter()
        .filter(|(_, t)| t.contains("dfu"))
        .collect();
    let (virt, tar) = guest::lab_scenarios(dir.path(), scenarios, "g0b1-virtual", "g0b1-lab");
    let files = vec![
        format!("{}:/bin/hil", hil.display()),
        format!("{}:/data/boards.yaml", dir.path().join("boards.yaml").display()),
        format!("{}:/data/lab.tar", tar.display()),
    ];
    let guest_dir = dir.path().join("guest");
    guest::build(&guest_dir, &files);

    let (usb, adapter) = (dir.path().join("usb.sock"), dir.path().join("adapter.sock"));
    let options = [
        "--usbredir".to_string(),
        usb.display().to_string(),
        "--usbredir-adapter".to_string(),
        adapter.display().to_string(),
    ];
    let mut sim = SimServe::start_with("g0b1-virtual", &options, None);
    let mut g = hil_guest::Guest::boot_with(&guest_dir, &[&usb, &adapter]).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("guest boot to the command prompt: {:.2?}", g.boot);
    let o = run(
        &mut g,
        "for i in $(seq 100); do [ -e /dev/ttyACM0 ] && break; sleep 0.1; done; ls /dev/ttyACM0",
        Duration::from_secs(60),
    );
    assert_eq!(o.rc, 0, "no ttyACM0:\n{}\n{}", o.text, g.console());
    let o = run(&mut g, "hil list dfu", Duration::from_secs(60));
    assert!(o.text.contains("0483:df11"), "the ROM's DFU device is listed: {}", o.text);
    let verdicts =
        guest::same_verdicts_on_lab_and_virtual(&mut g, &mut sim, &virt, "g0b1-virtual", &dir.path().join("host"));
    assert!(verdicts.iter().filter(|v| v.0.contains("dfu") && v.1 == "passed").count() >= 5, "{verdicts:?}");
}
