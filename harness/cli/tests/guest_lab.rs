//! Issue 14, the lab path for the first time: inside a Linux guest, the unmodified `hil` flashes
//! the virtual G0B1 through its ROM's DfuSe device with nusb against the guest kernel's usbfs -
//! the code a bench runs against a real NUCLEO - from a `lab:` board entry whose `usb:` names the
//! device. The board reaches the guest through `hil sim serve --usbredir` and QEMU's usb-redir.

mod guest;

use std::time::Duration;

use guest::run;

const LAB_BOARDS: &str = "boards:
  - name: g0b1-lab
    chip: STM32G0B1RE
    description: The virtual G0B1's ROM DFU device, seen through a Linux USB stack
    lab:
      usb: \"0483:df11\"
";

#[test]
fn hil_flash_via_dfu_runs_over_nusb_in_a_linux_guest() {
    if !guest::tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hil = guest::stripped_hil(dir.path());
    std::fs::write(dir.path().join("boards.yaml"), LAB_BOARDS).unwrap();
    let app = hil_fixtures::get("app", 0x0800_0000).expect("app fixture").path;
    let files = vec![
        format!("{}:/bin/hil", hil.display()),
        format!("{}:/data/boards.yaml", dir.path().join("boards.yaml").display()),
        format!("{app}:/data/app.elf"),
    ];
    let guest_dir = dir.path().join("guest");
    guest::build(&guest_dir, &files);

    let socket = dir.path().join("usb.sock");
    let (mut sim, mut g) = guest::serve_and_boot("g0b1-virtual", &guest_dir, &socket);
    let o = run(
        &mut g,
        "for i in $(seq 100); do [ -e /sys/bus/usb/devices/1-1 ] && break; sleep 0.1; done; \
         cd /data && hil flash --boards /data/boards.yaml --board g0b1-lab --via dfu --verify --go /data/app.elf",
        Duration::from_secs(120),
    );
    eprintln!("hil flash --via dfu --verify --go in the guest: {:.2?}", o.took);
    assert_eq!(o.rc, 0, "hil flash in the guest:\n{}\n--- console ---\n{}", o.text, g.console());
    assert!(o.text.contains("flashed 3") && o.text.contains("verified"), "{}", o.text);
    assert!(o.text.contains("started the image at 0x08000000"), "{}", o.text);
    // The board agrees: the ROM left into the application and the DFU device left the bus.
    let left = sim.wait_for("ROM bootloader left", Duration::from_secs(30));
    assert!(left.contains("PC 0x080"), "{left}");
    sim.wait_for("USB device detached", Duration::from_secs(30));
}

#[test]
fn the_dfu_flash_benchmark_runs_both_clients_in_the_guest_and_prints_its_figures() {
    if !guest::tools_available() {
        return;
    }
    // A small image keeps this quick; the speed targets are read from the JSON, not asserted here.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["bench", "flash-dfu", "--board", "g0b1-virtual", "--size", "4K"])
        .current_dir(guest::repo())
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["bytes"], 4096);
    let rounds = v["rounds"].as_u64().unwrap() as usize;
    for key in ["ours_flash_samples_s", "ours_command_samples_s", "dfu_util_command_samples_s"] {
        let samples = v[key].as_array().unwrap_or_else(|| panic!("{key}: {v}"));
        assert_eq!(samples.len(), rounds, "{key}");
        assert!(samples.iter().all(|s| s.as_f64().unwrap() > 0.0), "{key}: {v}");
    }
    // Two 2 KiB pages erased and 512 double words programmed at the G0B1's typical times, plus the
    // bus time of the control transfers.
    let (bound, chip, bus) =
        (v["bound_s"].as_f64().unwrap(), v["bound_chip_s"].as_f64().unwrap(), v["bound_bus_s"].as_f64().unwrap());
    assert!((bound - chip - bus).abs() < 1e-9, "{v}");
    assert!(bus > 4096.0 * 8.0 / 12e6, "{v}");
    // Our client cannot beat what the chip and the bus allow.
    assert!(v["ours_flash_s"].as_f64().unwrap() >= bound, "{v}");
    assert!(v["within_target"].is_boolean(), "{v}");
}
