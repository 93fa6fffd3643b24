//! `hil doctor`: is each lab board ready - its probe, serial port and DFU device present and
//! accessible, the target answering the probe (DBGMCU_IDCODE) and, when it sits in the ROM, the
//! bootloader over AN3155 - with the fix for each problem. `hil info`: what the probe reads of a
//! board (identity, option bytes, RDP level, the boot source they select).
//!
//! Presence checks open nothing but the lists the OS keeps (probe-rs's lister, sysfs through
//! serialport and nusb); the target and ROM checks open the board the way `hil run` does.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use hil_config::Board;
use hil_rig::inspect;
use nusb::MaybeFuture;
use serde::Serialize;

use crate::commands::{EXIT_CONFIG, EXIT_FAILED};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Worth knowing, not a reason the board is not ready.
    Note,
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub board: String,
    /// `probe`, `target`, `serial`, `rom`, `usb`, `power`.
    pub what: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Where the udev rules of the repository are (docs/lab.md explains them).
const UDEV_RULES: &str = "docs/lab/99-hil.rules";

fn check(board: &Board, what: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check { board: board.name.value.clone(), what, verdict, detail: detail.into(), fix: None }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// The fix for a device node the user may not open.
fn permission_fix(path: &str) -> String {
    let group = group_of(path).unwrap_or_else(|| "dialout".into());
    format!(
        "add your user to the `{group}` group that owns {path} (sudo usermod -aG {group} $USER, then log in again), \
         or install {UDEV_RULES} into /etc/udev/rules.d/ and run `sudo udevadm control --reload && sudo udevadm trigger`"
    )
}

/// The group owning `path` (by name from /etc/group, else the number).
fn group_of(path: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let gid = std::fs::metadata(path).ok()?.gid();
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    Some(
        groups
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == gid.to_string()).then(|| f[0].to_string())
            })
            .unwrap_or_else(|| gid.to_string()),
    )
}

fn is_permission(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string().to_lowercase();
        if text.contains("permission denied") || text.contains("access denied") {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn probe_presence(board: &Board, selector: &str) -> Check {
    let parsed: probe_rs::probe::DebugProbeSelector = match selector.parse() {
        Ok(p) => p,
        Err(e) => {
            return check(board, "probe", Verdict::Fail, format!("selector `{selector}` is not VID:PID[:serial]: {e}"))
                .fix("write the probe as `hil list probes` prints it");
        }
    };
    let lister = probe_rs::probe::list::Lister::new();
    let matching = lister.list(Some(&parsed));
    match matching.as_slice() {
        [p] => check(
            board,
            "probe",
            Verdict::Ok,
            format!("{selector} present: {} (serial {})", p.identifier, p.serial_number.as_deref().unwrap_or("none")),
        ),
        [] => {
            let present: Vec<String> = lister
                .list_all()
                .iter()
                .map(|p| {
                    format!(
                        "{:04x}:{:04x}{}",
                        p.vendor_id,
                        p.product_id,
                        p.serial_number.as_deref().map(|s| format!(":{s}")).unwrap_or_default()
                    )
                })
                .collect();
            let mut c = check(
                board,
                "probe",
                Verdict::Fail,
                format!(
                    "no probe matches {selector}; probes present: {}",
                    if present.is_empty() { "none".to_string() } else { present.join(", ") }
                ),
            );
            c = if !Path::new("/sys/bus/usb/devices").exists() {
                c.fix("this host has no USB stack (/sys/bus/usb/devices is missing): run on the machine the probe is plugged into")
            } else {
                c.fix("plug the probe in; if it is listed by `lsusb` but not here, install the udev rules (see docs/lab.md)")
            };
            c
        }
        many => {
            check(board, "probe", Verdict::Fail, format!("{} probes match {selector}: it must name one", many.len()))
                .fix("add the probe's serial to the selector (VID:PID:SERIAL, as `hil list probes` prints it)")
        }
    }
}

fn serial_presence(board: &Board, port: &str, baud: u32) -> Check {
    if !Path::new(port).exists() {
        let present: Vec<String> =
            serialport::available_ports().unwrap_or_default().into_iter().map(|p| p.port_name).collect();
        return check(
            board,
            "serial",
            Verdict::Fail,
            format!(
                "{port} does not exist; serial ports present: {}",
                if present.is_empty() { "none".to_string() } else { present.join(", ") }
            ),
        )
        .fix("plug the USB-UART adapter in, or name it by /dev/serial/by-id/... so the path survives re-plugging");
    }
    // Opening a tty raises DTR and RTS for a moment (the kernel does so on open).
    match serialport::new(port, baud).timeout(Duration::from_millis(100)).open() {
        Ok(_) => check(board, "serial", Verdict::Ok, format!("{port} opens at {baud} baud")),
        Err(e) if is_permission(&e) => {
            check(board, "serial", Verdict::Fail, format!("{port}: permission denied ({e})")).fix(permission_fix(port))
        }
        Err(e) => check(board, "serial", Verdict::Fail, format!("{port} does not open: {e}"))
            .fix("another program (a terminal, ModemManager) may hold it: `fuser -v` names it"),
    }
}

fn usb_presence(board: &Board, selector: &str) -> Check {
    let parts: Vec<&str> = selector.split(':').collect();
    let hex = |s: &str| u16::from_str_radix(s, 16).ok();
    let (Some(vid), Some(pid)) = (parts.first().and_then(|s| hex(s)), parts.get(1).and_then(|s| hex(s))) else {
        return check(board, "usb", Verdict::Fail, format!("`{selector}` is not VID:PID[:serial] in hex"));
    };
    let serial = parts.get(2).copied();
    if !Path::new("/sys/bus/usb/devices").exists() {
        return check(board, "usb", Verdict::Note, "this host has no USB stack (/sys/bus/usb/devices is missing)");
    }
    let devices = match nusb::list_devices().wait() {
        Ok(d) => d,
        Err(e) => return check(board, "usb", Verdict::Fail, format!("listing USB devices: {e}")),
    };
    let found = devices
        .into_iter()
        .find(|d| d.vendor_id() == vid && d.product_id() == pid && serial.is_none_or(|s| d.serial_number() == Some(s)));
    match found {
        None => check(
            board,
            "usb",
            Verdict::Note,
            format!(
                "{selector} not present: the ROM's DFU device appears only while the ROM runs (BOOT0 high + reset)"
            ),
        ),
        Some(d) => match d.open().wait() {
            Ok(_) => check(board, "usb", Verdict::Ok, format!("{selector} present and accessible")),
            Err(e) if is_permission(&e) => {
                let node = format!("/dev/bus/usb/{:03}/{:03}", d.busnum(), d.device_address());
                check(board, "usb", Verdict::Fail, format!("{selector}: permission denied on {node}")).fix(format!(
                    "install {UDEV_RULES} into /etc/udev/rules.d/ (it grants the `plugdev` group 0483:df11), reload udev and re-plug"
                ))
            }
            Err(e) => check(board, "usb", Verdict::Fail, format!("{selector} does not open: {e}")),
        },
    }
}

fn power_presence(board: &Board, on: &[String]) -> Check {
    let Some(program) = on.first() else {
        return check(board, "power", Verdict::Fail, "power.on is empty");
    };
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
    };
    if found {
        check(board, "power", Verdict::Ok, format!("`{program}` found"))
    } else {
        check(board, "power", Verdict::Fail, format!("power command `{program}` not found in PATH"))
            .fix("install it (uhubctl: apt-get install uhubctl) or give its full path")
    }
}

/// Open the board as `hil run` does; ask the probe who the target is, and the ROM over AN3155.
fn answers(board: &Board, checks: &mut Vec<Check>) {
    let mut session = match hil_rig::opener::rig_opener().open_session(board) {
        Ok(s) => s,
        Err(e) => {
            let what = if board.lab.as_ref().is_some_and(|l| l.value.probe.is_some()) { "target" } else { "serial" };
            checks.push(check(board, what, Verdict::Fail, format!("opening the board: {e}")));
            return;
        }
    };
    let chip = session.chip;
    if session.backends.probe.is_some() {
        match session.probe() {
            Ok(p) => match inspect::identity(p.as_mut(), chip) {
                Ok(id) if id.matches_chip => checks.push(check(
                    board,
                    "target",
                    Verdict::Ok,
                    format!(
                        "answers: DBGMCU_IDCODE {:#010x}, DEV_ID {:#05x} ({}), REV_ID {:#06x}",
                        id.idcode, id.dev_id, chip.name, id.rev_id
                    ),
                )),
                Ok(id) => checks.push(
                    check(
                        board,
                        "target",
                        Verdict::Fail,
                        format!("DEV_ID {:#05x} is not {}'s {:#05x}", id.dev_id, chip.name, chip.identity.dev_id),
                    )
                    .fix("the probe is on another board, or the board entry names the wrong chip"),
                ),
                Err(e) => checks.push(check(board, "target", Verdict::Fail, format!("{e}"))),
            },
            Err(e) => checks.push(check(board, "target", Verdict::Fail, format!("{e}")).fix(
                "check the SWD wiring and target power; a target in a low-power mode needs connect-under-reset: true",
            )),
        }
    }
    if session.backends.serial.is_some() {
        let clock = session.backends.clock.clone();
        // Opening a tty raises DTR and RTS (the kernel does, on open): wired to NRST that is a
        // reset pulse, after which the chip needs a moment before its USART listens (the rig's
        // entry sequences wait 100 ms, stm32flash's `-i` steps too).
        clock.sleep(Duration::from_millis(200));
        let cx = hil_rig::StepCx::new(
            &clock,
            Duration::from_secs(2),
            hil_rig::CancelFlag::new(),
            std::path::PathBuf::from("doctor"),
            0,
        );
        match session.uart_session(&cx, |c| Ok(c.connect()?)) {
            Ok(info) => {
                let v = info.version.version;
                checks.push(check(
                    board,
                    "rom",
                    Verdict::Ok,
                    format!(
                        "the ROM answers over AN3155: PID {:#06x}, bootloader version {}.{}",
                        info.id.pid,
                        v >> 4,
                        v & 0xF
                    ),
                ))
            }
            Err(e) => checks.push(check(
                board,
                "rom",
                Verdict::Note,
                format!("no AN3155 answer within 2 s ({e}): normal while the application runs; the ROM answers after BOOT0 high + reset"),
            )),
        }
    }
}

/// Every check of one board.
pub fn checks_for(board: &Board) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(lab) = &board.lab {
        let lab = &lab.value;
        if let Some(p) = &lab.probe {
            checks.push(probe_presence(board, &p.selector.value));
        }
        if let Some(s) = &lab.serial {
            checks.push(serial_presence(board, &s.port.value, s.baud.value));
        }
        if let Some(u) = &lab.usb {
            checks.push(usb_presence(board, &u.value));
        }
        if let Some(p) = &lab.power {
            checks.push(power_presence(board, &p.on));
        }
        if lab.probe.is_none() && lab.serial.is_none() {
            checks.push(check(board, "probe", Verdict::Fail, "the entry has neither a probe nor a serial port"));
        }
    }
    // The target is asked only when everything it needs is there, and never while a run holds
    // the board (asking would disturb it).
    if !checks.iter().any(|c| c.verdict == Verdict::Fail) {
        let lock_dir = hil_rig::lock::default_lock_dir();
        match hil_rig::lock::BoardLock::acquire(&lock_dir, board, Duration::ZERO, &|| false) {
            Ok(_lock) => answers(board, &mut checks),
            Err(e) => checks.push(check(board, "target", Verdict::Note, format!("not asked: {e}"))),
        }
    }
    checks
}

/// `hil doctor`: the lab boards (or the named ones, virtual too); exit 1 when one is not ready.
pub fn doctor(boards_path: &Path, names: &[String], json: bool) -> Result<ExitCode> {
    let loaded = match crate::commands::load_boards_checked(boards_path) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let boards: Vec<&Board> = if names.is_empty() {
        loaded.file.boards.iter().map(|b| &b.value).filter(|b| b.lab.is_some()).collect()
    } else {
        let mut v = Vec::new();
        for n in names {
            match loaded.get(n) {
                Some(b) => v.push(b),
                None => {
                    eprintln!(
                        "error: unknown board `{n}`{}; boards in {}: {}",
                        crate::commands::did_you_mean(n, loaded.names()),
                        boards_path.display(),
                        loaded.names().join(", ")
                    );
                    return Ok(ExitCode::from(EXIT_CONFIG));
                }
            }
        }
        v
    };
    if boards.is_empty() {
        eprintln!("error: {} has no lab board; name one with --board", boards_path.display());
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let mut all = Vec::new();
    let mut not_ready = Vec::new();
    for b in &boards {
        let checks = checks_for(b);
        if checks.iter().any(|c| c.verdict == Verdict::Fail) {
            not_ready.push(b.name.value.clone());
        }
        if !json {
            println!(
                "{} ({}, {})",
                b.name.value,
                b.chip.value,
                if b.virtual_board.is_some() { "virtual" } else { "lab" }
            );
            for c in &checks {
                let mark = match c.verdict {
                    Verdict::Ok => "ok  ",
                    Verdict::Note => "note",
                    Verdict::Fail => "FAIL",
                };
                println!("  {mark} {:<7} {}", c.what, c.detail);
                if let Some(f) = &c.fix {
                    println!("       {:<7} fix: {f}", "");
                }
            }
        }
        all.extend(checks);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if not_ready.is_empty() {
        println!("ready: {} board{}", boards.len(), if boards.len() == 1 { "" } else { "s" });
    } else {
        println!("not ready: {}", not_ready.join(", "));
    }
    Ok(if not_ready.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) })
}

/// `hil info --board NAME`: identity, option bytes, RDP level and boot source, through the probe.
pub fn info(boards_path: &Path, name: &str) -> Result<ExitCode> {
    let (loaded, name) = match crate::commands::board_from(boards_path, name) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    let board = loaded.get(&name).expect("checked by board_from");
    let _lock = match crate::commands::lock_board(board) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let mut session = hil_rig::opener::rig_opener().open_session(board)?;
    let chip = session.chip;
    if session.backends.probe.is_none() {
        eprintln!("error: board `{name}` has no probe: hil info reads the target through one");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let probe = session.probe()?;
    let id = inspect::identity(probe.as_mut(), chip)?;
    let options = inspect::option_report(probe.as_mut(), chip);
    print!("{}", info_text(board, chip, &id, options.as_ref()));
    Ok(ExitCode::SUCCESS)
}

pub fn info_text(
    board: &Board,
    chip: &hil_chips::Chip,
    id: &inspect::Identity,
    options: Result<&inspect::OptionReport, &inspect::InspectError>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} ({})",
        board.name.value,
        chip.name,
        if board.virtual_board.is_some() { "virtual" } else { "lab" }
    );
    let _ = writeln!(
        s,
        "  DBGMCU_IDCODE   {:#010x}: DEV_ID {:#05x}{}, REV_ID {:#06x}",
        id.idcode,
        id.dev_id,
        if id.matches_chip {
            format!(" ({})", chip.name)
        } else {
            format!(" - NOT {}'s {:#05x}", chip.name, chip.identity.dev_id)
        },
        id.rev_id
    );
    let _ = writeln!(
        s,
        "  flash size      {}",
        id.flash_kib.map(|k| format!("{k} KiB")).unwrap_or_else(|| "unreadable".into())
    );
    if let Some(uid) = &id.uid {
        let _ = writeln!(s, "  unique ID       {uid}");
    }
    match options {
        Err(e) => {
            let _ = writeln!(s, "  option bytes    unreadable: {e}");
        }
        Ok(o) => {
            for (name, address, value) in &o.words {
                let _ = writeln!(s, "  option word     {name} (loaded at {address:#010x}) = {value:#010x}");
            }
            for (field, value) in &o.fields {
                let _ = writeln!(s, "    {field:<14} {value:#x}");
            }
            let _ = writeln!(s, "  readout protection: {}", o.rdp);
            for b in &o.boot {
                let _ = writeln!(s, "  boot source:    {b}");
            }
        }
    }
    s
}
