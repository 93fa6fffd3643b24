//! Issue 14: the virtual G0B1's ROM DfuSe device on a usbredir socket, attached by QEMU to a Linux
//! guest's xHCI, refereed by the real dfu-util running against the guest's USB stack. One guest boot
//! for the whole sequence (a new chip: list, read, option bytes, write and read back, readout
//! protection set through the option bytes and removed by Read Unprotect, mass erase, write and
//! leave into the application). Boot and per-call times go to stderr for the notes.

mod guest;

use std::time::Duration;

use guest::run;

const CALL: Duration = Duration::from_secs(60);

/// The application fixture as a flat binary from its base (what `dfu-util -D` writes).
fn app_bin() -> Vec<u8> {
    let f = hil_fixtures::get("app", 0x0800_0000).expect("app fixture");
    guest::app_bin(f.elf)
}

#[test]
fn dfu_util_lists_reads_writes_erases_and_leaves_through_a_linux_usb_stack() {
    if !guest::tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = app_bin();
    std::fs::write(dir.path().join("app.bin"), &app).unwrap();
    let tiny = [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    std::fs::write(dir.path().join("tiny.bin"), tiny).unwrap();
    let mut after_mass = vec![0xFFu8; 4096];
    after_mass[..8].copy_from_slice(&tiny);
    std::fs::write(dir.path().join("after-mass.bin"), &after_mass).unwrap();
    std::fs::write(dir.path().join("erased.bin"), vec![0xFFu8; 2048]).unwrap();
    // FLASH_OPTR's factory value 0xFFFFFEAA with RDP = 0xBB (level 1) and nBOOT0 (bit 26) clear.
    std::fs::write(dir.path().join("ob-rdp1.bin"), 0xFBFF_FEBBu32.to_le_bytes()).unwrap();
    let files: Vec<String> = ["app.bin", "tiny.bin", "after-mass.bin", "erased.bin", "ob-rdp1.bin"]
        .iter()
        .map(|f| format!("{}:/data/{f}", dir.path().join(f).display()))
        .collect();
    let guest_dir = dir.path().join("guest");
    guest::build(&guest_dir, &files);

    let socket = dir.path().join("usb.sock");
    // A new G0B1 boots its ROM (empty check): the DfuSe device is on the bus from the start.
    let (mut sim, mut g) = guest::serve_and_boot("g0b1-virtual", &guest_dir, &socket);

    // The device enumerates shortly after the kernel's xHCI comes up: wait for it in the guest.
    let o = run(
        &mut g,
        "for i in $(seq 100); do [ -e /sys/bus/usb/devices/1-1 ] && break; sleep 0.1; done; dfu-util -l",
        CALL,
    );
    eprintln!("dfu-util -l: {:.2?}", o.took);
    // dfu-util -l exits 0 even when it finds nothing: look for the device itself.
    for want in [
        "Found DFU: [0483:df11]",
        "alt=0, name=\"@Internal Flash  /0x08000000/256*02Kg\"",
        "alt=1, name=\"@Option Bytes  /0x1FFF7800/01*128 e\"",
        "alt=2, name=\"@OTP Memory  /0x1FFF7000/01*01Ke\"",
    ] {
        assert!(o.text.contains(want), "`{want}` missing from dfu-util -l:\n{}\n{}", o.text, g.console());
    }

    // A new chip reads erased.
    let o = run(&mut g, "dfu-util -a 0 -s 0x08000000:2048 -U /tmp/up.bin && cmp /tmp/up.bin /data/erased.bin", CALL);
    assert_eq!(o.rc, 0, "{}", o.text);
    eprintln!("dfu-util -U 2 KiB: {:.2?}", o.took);

    // The option bytes' alternate setting: FLASH_OPTR's factory value (RDP level 0 = 0xAA).
    // (dfu-util warns about the blank multiplier of "01*128 e", as it does on real ST ROMs.)
    let o =
        run(&mut g, "dfu-util -a 1 -s 0x1FFF7800:8 -U /tmp/ob.bin >/dev/null 2>&1 && od -An -tx1 /tmp/ob.bin", CALL);
    assert_eq!(o.rc, 0, "{}", o.text);
    assert!(o.text.trim_start().starts_with("aa"), "RDP byte of the option bytes: {}", o.text);

    // Write the application, read it back.
    let o = run(
        &mut g,
        &format!(
            "dfu-util -a 0 -s 0x08000000 -D /data/app.bin && dfu-util -a 0 -s 0x08000000:{} -U /tmp/app.bin && cmp /tmp/app.bin /data/app.bin",
            app.len()
        ),
        CALL,
    );
    assert_eq!(o.rc, 0, "write and read back:\n{}", o.text);
    eprintln!("dfu-util -D {} bytes + -U: {:.2?}", app.len(), o.took);

    // Readout protection, set and removed by dfu-util alone (AN2662 4.4.1 / 4.5):
    // the option bytes' USER word with RDP level 1 (0xBB) and nBOOT0 = 0 (RM0444 3.4.1: boot the
    // system memory), written through alternate setting 1. The ROM reloads the option bytes, which
    // resets the chip; it comes back in its ROM, protected, and enumerates again.
    let o = run(
        &mut g,
        "dmesg | grep -c 'USB device number' > /tmp/enum; dfu-util -a 1 -s 0x1FFF7800:will-reset -D /data/ob-rdp1.bin; echo rc=$?",
        CALL,
    );
    assert!(o.text.contains("File downloaded successfully"), "{}", o.text);
    eprintln!("dfu-util option bytes (RDP 1): {:.2?}", o.took);
    sim.wait_for("USB device detached", Duration::from_secs(30));
    sim.wait_for("USB device attached", Duration::from_secs(30));
    // Enumerated again: the kernel logged a new device and configured it (a dfu-util started
    // before that opens the old device, or finds the new one unconfigured). Then note the count
    // for the next reset.
    let enumerated = "for i in $(seq 200); do [ $(dmesg | grep -c 'USB device number') -gt $(cat /tmp/enum) ] && [ \"$(cat /sys/bus/usb/devices/1-1/bConfigurationValue 2>/dev/null)\" = 1 ] && break; sleep 0.1; done; dmesg | grep -c 'USB device number' > /tmp/enum; ";
    // Protected: the ROM refuses to read the flash: the upload stalls and the device is left in
    // dfuERROR / errVENDOR (AN2662 4.4.1), which the next dfu-util finds and clears.
    let o = run(&mut g, &format!("{enumerated}dfu-util -a 0 -s 0x08000000:2048 -U /tmp/protected.bin"), CALL);
    assert_ne!(o.rc, 0, "read under RDP level 1 succeeded:\n{}\n{}", o.text, g.console());
    assert!(o.text.contains("LIBUSB_ERROR_PIPE"), "the upload request stalls:\n{}", o.text);
    // Read Unprotect (DfuSe command 0x92): mass erase, RDP back to level 0, reset.
    let o = run(&mut g, "dfu-util -a 0 -s 0x08000000:unprotect:force -D /data/tiny.bin; echo rc=$?", CALL);
    assert!(
        o.text.contains("DFU state(10) = dfuERROR, status(11) = iString indicates a vendor specific error"),
        "the refused read left errVENDOR:\n{}",
        o.text
    );
    assert!(o.text.contains("Device disconnects, erases flash and resets now"), "{}", o.text);
    sim.wait_for("reset (OptionByteLoad)", Duration::from_secs(30));
    sim.wait_for("USB device attached", Duration::from_secs(30));
    let o = run(
        &mut g,
        &format!(
            "{enumerated}dfu-util -a 0 -s 0x08000000:2048 -U /tmp/u.bin && cmp /tmp/u.bin /data/erased.bin && dfu-util -a 1 -s 0x1FFF7800:4 -U /tmp/ob-after.bin >/dev/null 2>&1 && od -An -tx1 /tmp/ob-after.bin"
        ),
        CALL,
    );
    assert_eq!(o.rc, 0, "after Read Unprotect the flash reads erased:\n{}", o.text);
    assert!(o.text.trim_end().ends_with("aa fe ff fb"), "RDP level 0 again, nBOOT0 kept: {}", o.text);

    // Mass erase (DfuSe command 0x41 with address 0xFF...): the application is gone.
    let o = run(
        &mut g,
        "dfu-util -a 0 -s 0x08000000:mass-erase:force -D /data/tiny.bin && dfu-util -a 0 -s 0x08000000:4096 -U /tmp/m.bin && cmp /tmp/m.bin /data/after-mass.bin",
        CALL,
    );
    assert_eq!(o.rc, 0, "mass erase:\n{}", o.text);

    // Write the application again and leave: the ROM jumps to it and the device leaves the bus.
    let o = run(&mut g, "dfu-util -a 0 -s 0x08000000:leave -D /data/app.bin", CALL);
    assert_eq!(o.rc, 0, "download and leave:\n{}", o.text);
    let left = sim.wait_for("ROM bootloader left", Duration::from_secs(30));
    assert!(left.contains("PC 0x080"), "{left}");
    sim.wait_for("USB device detached", Duration::from_secs(30));
    let o = run(
        &mut g,
        "for i in $(seq 50); do [ -e /sys/bus/usb/devices/1-1 ] || break; sleep 0.1; done; [ ! -e /sys/bus/usb/devices/1-1 ]",
        CALL,
    );
    assert_eq!(o.rc, 0, "the guest still sees the device after leave:\n{}", g.console());
}
