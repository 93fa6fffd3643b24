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
