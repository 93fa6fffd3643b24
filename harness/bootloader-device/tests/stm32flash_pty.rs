//! The real referee: Debian's stm32flash 0.7 talking to the USART engine through a PTY, as it will
//! talk to the virtual board. PTYs cannot carry parity, so stm32flash runs with `-m 8n1`
//! (bootloader-protocols.md section 7). Skipped with a message when stm32flash is not installed, failed when CI=true.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::{Call, FakeTarget};
use hil_bootloader_device::{RomAction, UsartEngine, UsartOutput};
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

/// Skips (locally) or fails (CI=true) when stm32flash is missing.
fn stm32flash_available() -> bool {
    hil_fixtures::peer_available("stm32flash", "apt-get install stm32flash")
}

/// Runs stm32flash with `args` against a PTY served by a fresh engine and target (prepared by
/// `prepare`). Returns stm32flash's output, the target afterwards and the actions taken.
fn run(chip: &str, prepare: impl FnOnce(&mut FakeTarget), args: &[&str]) -> (Output, FakeTarget, Vec<RomAction>) {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let path = ptsname_r(&master).unwrap();
    // Hold the slave open ourselves so the master never sees a hang-up between opens, and start
    // from raw mode.
    let slave = open(path.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty()).unwrap();
    let mut termios = tcgetattr(&slave).unwrap();
    cfmakeraw(&mut termios);
    tcsetattr(&slave, SetArg::TCSANOW, &termios).unwrap();

    let mut engine = UsartEngine::new(FakeTarget::config(chip)).unwrap();
    let mut target = FakeTarget::for_chip(chip);
    prepare(&mut target);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_device = stop.clone();
    let device = thread::spawn(move || {
        let mut master = master;
        let mut actions = Vec::new();
        let mut buf = [0u8; 512];
        while !stop_device.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(20u8)).unwrap_or(0) == 0 {
                continue;
            }
            let n = match master.read(&mut buf) {
                Ok(n) => n,
                Err(_) => continue,
            };
            for &b in &buf[..n] {
                let mut tx = Vec::new();
                for out in engine.receive(b, &mut target) {
                    match out {
                        UsartOutput::Tx(t) => tx.push(t),
                        UsartOutput::Busy(_) => {}
                        UsartOutput::Action(a) => actions.push(a),
                    }
                }
                master.write_all(&tx).unwrap();
            }
        }
        (target, actions)
    });
    let output = Command::new("stm32flash").args(["-b", "115200", "-m", "8n1"]).args(args).arg(&path).output().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (target, actions) = device.join().unwrap();
    drop(slave);
    (output, target, actions)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn stm32flash_identifies_the_g0b1() {
    if !stm32flash_available() {
        return;
    }
    let (out, _, _) = run("STM32G0B1RE", |_| {}, &[]);
    let log = text(&out);
    eprintln!("{log}");
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Version      : 0x31"), "{log}");
    assert!(log.contains("Device ID    : 0x0467"), "{log}");
}

#[test]
fn stm32flash_writes_verifies_and_starts_an_image() {
    if !stm32flash_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hil-bootloader-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("image.bin");
    let mut image = vec![0x00, 0x40, 0x02, 0x20, 0xC1, 0x00, 0x00, 0x08];
    image.extend((8..3000u32).map(|i| (i * 7 + 3) as u8));
    std::fs::write(&file, &image).unwrap();
    let (out, target, actions) = run("STM32G0B1RE", |_| {}, &["-w", file.to_str().unwrap(), "-v", "-g", "0x0"]);
    let log = text(&out);
    eprintln!("{log}");
    assert!(out.status.success(), "{log}");
    assert_eq!(target.flash_at(0x0800_0000, image.len()), &image[..]);
    // Only the two pages the file covers were erased.
    let erased: Vec<_> = target.calls.iter().filter(|c| matches!(c, Call::ErasePage(_))).collect();
    assert_eq!(erased, [&Call::ErasePage(0), &Call::ErasePage(1)]);
    let [RomAction::Jump(jump)] = &actions[..] else { panic!("{actions:?}\n{log}") };
    assert_eq!((jump.address, jump.msp, jump.pc), (0x0800_0000, Some(0x2002_4000), 0x0800_00C1));

    // Read back with a second session (the device was reset in between).
    let back = dir.join("back.bin");
    let (out, _, _) = run(
        "STM32G0B1RE",
        |t| t.preload_flash(0x0800_0000, &image),
        &["-r", back.to_str().unwrap(), "-S", "0x08000000:3000"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&back).unwrap(), image);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stm32flash_software_reset_goes_through_ram() {
    if !stm32flash_available() {
        return;
    }
    // -R without an exit sequence: a reset routine written to RAM start, then Go there.
    let (out, target, actions) = run("STM32G071RB", |_| {}, &["-R"]);
    assert!(out.status.success(), "{}", text(&out));
    let [RomAction::Jump(jump)] = &actions[..] else { panic!("{actions:?}") };
    assert_eq!(jump.address, 0x2000_2700, "dev_table.c ram_start of 0x460");
    assert_eq!(jump.pc, 0x2000_2709);
    assert_eq!(target.ram_at(0x2000_2708, 4), [0x01, 0x49, 0x02, 0x4A]);
}

#[test]
fn stm32flash_erases_the_whole_flash_with_a_mass_erase() {
    if !stm32flash_available() {
        return;
    }
    let (out, target, _) = run("STM32G071RB", |t| t.preload_flash(0x0801_0000, &[0; 8]), &["-o"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(target.calls.contains(&Call::MassErase));
    assert_eq!(target.flash_at(0x0801_0000, 8), [0xFF; 8]);
}
