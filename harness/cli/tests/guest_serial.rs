//! Issue 15, the serial half of the virtual debug adapter: a CDC-ACM virtual COM port bridged to
//! the G071's ROM USART, DTR wired to BOOT0 and RTS to NRST (both asserted low), served over
//! usbredir into a Linux guest. There the real stm32flash talks to /dev/ttyACM0 at 115200 8E1 -
//! real parity, no `-m 8n1` - and enters the ROM with an `-i` DTR/RTS sequence, as on a bench with a
//! USB-UART adapter. The board starts with the application in flash, so only BOOT0 high at the
//! reset reaches the ROM: the wiring is what the test exercises.

mod guest;

use std::time::Duration;

use guest::{SimServe, run};

const CALL: Duration = Duration::from_secs(120);

#[test]
fn stm32flash_enters_the_rom_with_dtr_rts_and_flashes_at_8e1_over_a_cdc_acm_tty() {
    if !guest::tools_available() || !hil_fixtures::peer_available("stm32flash", "apt-get install stm32flash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = hil_fixtures::get("app", 0x0800_0000).expect("app fixture");
    let img = hil_image::Image::from_elf("app", app.elf).unwrap();
    let ranges = img.ranges();
    let (base, end) = (ranges[0].0, ranges.iter().map(|(a, d)| a + d.len() as u32).max().unwrap());
    let mut bin = vec![0xFFu8; (end - base) as usize];
    for (a, d) in ranges {
        bin[(a - base) as usize..][..d.len()].copy_from_slice(d);
    }
    std::fs::write(dir.path().join("app.bin"), &bin).unwrap();
    let stm32flash = String::from_utf8(
        std::process::Command::new("sh").args(["-c", "command -v stm32flash"]).output().unwrap().stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let files = vec![
        format!("{stm32flash}:/bin/stm32flash"),
        format!("{}:/data/app.bin", dir.path().join("app.bin").display()),
    ];
    let guest_dir = dir.path().join("guest");
    guest::build(&guest_dir, &files);

    let adapter = dir.path().join("adapter.sock");
    let mut sim = SimServe::start_with(
        "g071-virtual",
        &["--usbredir-adapter".into(), adapter.display().to_string()],
        Some(std::path::Path::new(app.path)),
    );
    sim.wait_for("DTR drives BOOT0 and RTS drives NRST", Duration::from_secs(5));
    let mut g = guest::boot(&guest_dir, &adapter);
    eprintln!("guest boot to the command prompt: {:.2?}", g.boot);
    let o = run(&mut g, "for i in $(seq 100); do [ -e /dev/ttyACM0 ] && break; sleep 0.1; done; ls /dev/ttyACM0", CALL);
    assert_eq!(o.rc, 0, "no ttyACM0:\n{}\n{}", o.text, g.console());

    // BOOT0 low at the reset (DTR asserted): the application starts, the ROM never answers.
    let o = run(&mut g, "stm32flash -b 115200 -i 'dtr,rts,-rts' /dev/ttyACM0", CALL);
    assert_ne!(o.rc, 0, "the ROM answered although BOOT0 was low:\n{}", o.text);

    // BOOT0 high (DTR released), an NRST pulse (RTS): the ROM at 8E1; write, verify, Go.
    let o = run(&mut g, "stm32flash -b 115200 -i '-dtr,rts,-rts' -w /data/app.bin -v -g 0x08000000 /dev/ttyACM0", CALL);
    eprintln!("stm32flash -w -v -g over ttyACM0: {:.2?}", o.took);
    assert_eq!(o.rc, 0, "stm32flash:\n{}", o.text);
    assert!(o.text.contains("Device ID    : 0x0460"), "{}", o.text);
    assert!(o.text.contains("Wrote and verified address 0x08000de8 (100.00%) Done."), "{}", o.text);
    assert!(o.text.contains("Starting execution at address 0x08000000... done."), "{}", o.text);
    let entered = sim.wait_for("boots SystemMemory", Duration::from_secs(10));
    assert!(entered.contains("reset (Pin)"), "{entered}");
    let left = sim.wait_for("ROM bootloader left", Duration::from_secs(30));
    assert!(left.contains("PC 0x080"), "{left}");
}
