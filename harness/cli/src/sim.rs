//! `hil sim serve`: a virtual board on its own, its USART on a PTY.
//!
//! The board comes from boards.yaml (its `virtual:` section: timing, power-on RAM, seed, option
//! bytes, faults). Without `--image` it starts as a chip from the reel: flash erased, factory option
//! bytes (plus the option bits boards.yaml sets), so an empty-check chip boots its ROM bootloader.
//! `--image` loads an ELF (its loadable segments) or a raw binary (at the flash base) into flash
//! first. The USART is the one the chip data names for the ROM that a Nucleo wires to the ST-Link
//! virtual COM port (USART2 where the ROM serves it, else its first USART).
//!
//! Output (stdout, one line each, flushed): `ready: ...` once the board runs, naming the PTY (and
//! the `--uart-link` symlink); `event: ...` for resets, ROM entry/exit and USB attach/detach;
//! `stopped: ...` after Ctrl-C or SIGTERM, when the board thread has ended and the symlink is gone.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hil_config::Config;
use hil_config::boards::{RamInit, Timing, VirtualBoard};
use hil_virtual_board::config::{FaultConfig, PtyConfig, UartFaults};
use hil_virtual_board::{Board, BoardConfig, BoardEvent, EventKind, ImageFormat};

use crate::cli::Level;
use crate::commands::{EXIT_CONFIG, board_from};

/// The USART a Nucleo's ST-Link VCP reaches: USART2 where the ROM serves it (UM2324: PA2/PA3 on
/// the Nucleo-64 boards), else the first USART of the ROM.
fn console_usart(chip: &hil_chips::Chip) -> Option<String> {
    let usarts: Vec<&str> = chip
        .bootloader
        .usart
        .iter()
        .map(|u| u.instance.as_str())
        .filter(|n| chip.peripheral(n).is_some_and(|p| p.kind == hil_chips::PeripheralKind::Usart))
        .collect();
    usarts.iter().find(|n| **n == "USART2").or(usarts.first()).map(|n| n.to_string())
}

/// The USER option word with the option bits boards.yaml sets (RM0444 3.4.1 FLASH_OPTR fields by
/// their chip-data names).
fn user_option_word(chip: &hil_chips::Chip, v: &VirtualBoard) -> Result<Option<u32>> {
    let Some(bits) = &v.option_bytes else { return Ok(None) };
    let layout = chip.option_bytes.as_ref().with_context(|| format!("{} has no option byte layout", chip.name))?;
    let user = layout.word("USER").with_context(|| format!("{}: no USER option word", chip.name))?;
    let mut word = user.factory;
    let mut set = |field: &str, value: u32| -> Result<()> {
        let f = layout.field(field).with_context(|| format!("{}: no option bit {field}", chip.name))?;
        word = f.set(word, value);
        Ok(())
    };
    if let Some(b) = bits.nboot0 {
        set("nBOOT0", b as u32)?;
    }
    if let Some(b) = bits.nboot1 {
        set("nBOOT1", b as u32)?;
    }
    if let Some(b) = bits.nboot_sel {
        set("nBOOT_SEL", b as u32)?;
    }
    if let Some(hw) = bits.hardware_watchdog {
        // IWDG_SW = 0 selects the hardware watchdog.
        set("IWDG_SW", (!hw) as u32)?;
    }
    if let Some(level) = bits.rdp {
        let code = match level {
            0 => u32::from(layout.rdp_levels.level0),
            2 => u32::from(layout.rdp_levels.level2),
            // Every other RDP byte is level 1 (RM0444 3.5.1).
            _ => 0xBB,
        };
        set("RDP", code)?;
    }
    Ok(Some(word))
}

fn board_config(name: &str, chip: &hil_chips::Chip, v: &VirtualBoard, usart: &str, link: Option<&Path>) -> BoardConfig {
    let seed = v.seed.unwrap_or(1);
    let mut faults = FaultConfig { seed, ..Default::default() };
    if v.faults.uart_rx_drop_every.is_some() || v.faults.uart_rx_corrupt_every.is_some() {
        faults.uart_rx.insert(
            usart.to_string(),
            UartFaults {
                drop_every: v.faults.uart_rx_drop_every,
                corrupt_every: v.faults.uart_rx_corrupt_every,
                ..Default::default()
            },
        );
    }
    if let Some(a) = v.faults.flash_program_error_at {
        // The double word holding the address fails (RM0444 3.3.7: double-word programming).
        let dw = a.0 & !7;
        faults.flash_program_fail.push(dw..dw.saturating_add(8));
    }
    BoardConfig {
        name: format!("{name}.sim.{}", std::process::id()),
        chip: chip.name.clone(),
        timing: match v.timing {
            Timing::Fast => hil_virtual_board::Timing::Fast,
            Timing::Realistic => hil_virtual_board::Timing::Realistic,
        },
        ram_init: match v.ram_at_power_on {
            RamInit::Zero => hil_virtual_board::RamInit::Zero,
            RamInit::Random => hil_virtual_board::RamInit::Random { seed },
        },
        boot0: v.boot0 == hil_config::PinLevel::High,
        power_on: false,
        ptys: vec![PtyConfig { usart: usart.to_string(), link: link.map(Path::to_path_buf) }],
        faults,
        ..Default::default()
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn describe(e: &BoardEvent) -> Option<String> {
    let at = e.at;
    Some(match &e.kind {
        EventKind::PowerOn => format!("{at}: power on"),
        EventKind::Reset { cause, boot } => {
            format!(
                "{at}: reset ({cause:?}), boots {:?}{}",
                boot.target,
                if boot.empty_redirect { " (empty check)" } else { "" }
            )
        }
        EventKind::RomEntered(entry) => format!("{at}: ROM bootloader entered ({:?})", entry.via),
        EventKind::RomLeft { pc, msp } => format!("{at}: ROM bootloader left: PC {pc:#010x}, MSP {msp:#010x}"),
        EventKind::Lockup { pc, fault } => {
            format!("{at}: core locked up at {pc:#010x}: {}", fault.as_deref().unwrap_or("?"))
        }
        EventKind::Usb { attached } => format!("{at}: USB device {}", if *attached { "attached" } else { "detached" }),
        _ => return None,
    })
}

pub fn serve(
    boards: &Path,
    board: &str,
    uart_link: Option<&Path>,
    image: Option<&Path>,
    boot0: Option<Level>,
) -> Result<ExitCode> {
    let (loaded, name) = match board_from(boards, board) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    let b = loaded.get(&name).context("board disappeared from the loaded boards file")?;
    let Some(v) = b.virtual_board.as_ref().map(|v| &v.value) else {
        eprintln!("error: board `{name}` in {} is a lab board; `hil sim serve` runs virtual boards", boards.display());
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let chip = Config::chip_of(b);
    let Some(usart) = console_usart(chip) else {
        bail!("{}: the chip data names no USART for the ROM bootloader that the virtual board models", chip.name);
    };
    let mut cfg = board_config(&name, chip, v, &usart, uart_link);
    if let Some(level) = boot0 {
        cfg.boot0 = level == Level::High;
    }
    let vb = Board::start(cfg).with_context(|| format!("starting virtual board {name}"))?;
    let run = || -> Result<()> {
        if let Some(word) = user_option_word(chip, v)? {
            vb.set_option_word("USER", word).wait()?;
        }
        if let Some(path) = image {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let format = ImageFormat::detect(&bytes, chip.memory.flash.base);
            let segs = vb.load_image(bytes, format).wait().with_context(|| format!("loading {}", path.display()))?;
            for (addr, len) in segs {
                say(&format!("loaded: {len} bytes at {addr:#010x} from {}", path.display()));
            }
        }
        vb.power_on().wait()?;
        Ok(())
    };
    if let Err(e) = run() {
        let _ = vb.shutdown();
        return Err(e);
    }
    let pty = vb.uart(&usart)?.pty_path().context("the virtual board opened no PTY")?;
    let link = uart_link.map_or(String::new(), |l| format!(", linked at {}", l.display()));
    say(&format!(
        "ready: virtual board {name} ({}) {usart} on {}{link}; AN3155 peers use `-b 115200 -m 8n1` (PTYs carry no \
         parity); Ctrl-C or SIGTERM stops it",
        chip.name,
        pty.display()
    ));
    if chip.bootloader.usb_dfu {
        say("note: the ROM's USB DFU device is reachable in process only (hil_virtual_board::UsbPort); this \
             command exposes no USB device to the host's USB stack");
    }

    // Board events to stdout until the board stops.
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (vb, stop) = (vb.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut from = 0;
            while !stop.load(Ordering::Relaxed) {
                match vb.events(from, Duration::from_millis(200)).wait() {
                    Ok(evs) => {
                        for e in evs {
                            from = e.seq + 1;
                            if let Some(text) = describe(&e) {
                                say(&format!("event: {text}"));
                            }
                        }
                    }
                    Err(_) => return,
                }
            }
        })
    };

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let why = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; return Ok::<_, anyhow::Error>("interrupt"); }
                _ = term.recv() => return Ok("SIGTERM"),
                _ = tick.tick() => {
                    // The board thread must still answer (it ends only on shutdown or a panic).
                    if vb.now().wait().is_err() {
                        return Ok("the board thread stopped");
                    }
                }
            }
        }
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = follower.join();
    let done = vb.shutdown();
    if let Some(l) = uart_link
        && l.symlink_metadata().is_ok()
    {
        let _ = std::fs::remove_file(l);
    }
    done.context("stopping the virtual board")?;
    say(&format!("stopped: {why}"));
    if why == "the board thread stopped" {
        return Ok(ExitCode::from(crate::commands::EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}
