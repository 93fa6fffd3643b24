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
    let hil = dir.path().join("hil");
    let stripped = std::process::Command::new("strip").arg("-o").arg(&hil).arg(env!("CARGO_BIN_EXE_hil")).status();
    if !stripped.is_ok_and(|s| s.success()) {
        std::fs::copy(env!("CARGO_BIN_EXE_hil"), &hil).unwrap();
    }
    let (virt, lab) = (dir.path().join("virtual"), dir.path().join("lab"));
    std::fs::create_dir_all(&virt).unwrap();
    std::fs::create_dir_all(&lab).unwrap();
    for (name, text) in guest::scenarios_for("g0b1-virtual", &["g071"]).into_iter().filter(|(_, t)| t.contains("dfu")) {
        std::fs::write(virt.join(&name), &text).unwrap();
        std::fs::write(lab.join(&name), text.replace("g0b1-virtual", "g0b1-lab")).unwrap();
    }
    let tar = dir.path().join("lab.tar");
    let st = std::process::Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(dir.path()).arg("lab").status();
    assert!(st.is_ok_and(|s| s.success()), "tar of the lab scenarios");
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
    let _sim = SimServe::start_with("g0b1-virtual", &options, None);
    let mut g = hil_guest::Guest::boot_with(&guest_dir, &[&usb, &adapter]).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("guest boot to the command prompt: {:.2?}", g.boot);
    let o = run(
        &mut g,
        "for i in $(seq 100); do [ -e /dev/ttyACM0 ] && break; sleep 0.1; done; ls /dev/ttyACM0",
        Duration::from_secs(60),
    );
    assert_eq!(o.rc, 0, "no ttyACM0:\n{}\n{}", o.text, g.console());
    let o = run(
        &mut g,
        "cd /data && tar -xf lab.tar && hil run --boards /data/boards.yaml --report-dir /data/reports /data/lab/*.yaml 2>&1 | cat",
        Duration::from_secs(900),
    );
    eprintln!("hil run (flows + conformance, DFU included) on the lab entry in the guest: {:.2?}", o.took);
    let on_lab = guest::verdicts(&o.text);
    let host = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--board", "g0b1-virtual", "--report-dir"])
        .arg(dir.path().join("host-reports"))
        .args(std::fs::read_dir(&virt).unwrap().map(|e| e.unwrap().path()))
        .current_dir(guest::repo())
        .output()
        .unwrap();
    let on_virtual = guest::verdicts(&String::from_utf8_lossy(&host.stdout));
    assert!(on_virtual.iter().filter(|v| v.0.contains("dfu") && v.1 == "passed").count() >= 5, "{on_virtual:?}");
    let differ: Vec<String> = on_virtual
        .iter()
        .filter(|v| !on_lab.contains(v))
        .map(|v| {
            let lab = on_lab.iter().find(|l| l.0 == v.0);
            format!("{}: virtual {} {} / lab {:?}", v.0, v.1, v.2, lab.map(|l| (&l.1, &l.2)))
        })
        .collect();
    assert!(
        differ.is_empty() && on_lab.len() == on_virtual.len(),
        "lab-entry verdicts differ from the virtual entry's:\n{}\n--- lab run ---\n{}",
        differ.join("\n"),
        o.text
    );
}
