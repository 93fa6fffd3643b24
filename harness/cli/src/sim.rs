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
use hil_virtual_board::{Board, BoardEvent, EventKind, ImageFormat};

use crate::cli::Level;
use crate::commands::{EXIT_CONFIG, board_from};

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

/// Where `sim serve` puts the board's USB devices (usbredir sockets).
pub struct UsbSockets<'a> {
    /// The target's own USB (the ROM's DfuSe device).
    pub target: Option<&'a Path>,
    /// The debug adapter (virtual COM port with DTR/RTS).
    pub adapter: Option<&'a Path>,
}

pub fn serve(
    boards: &Path,
    board: &str,
    uart_link: Option<&Path>,
    image: Option<&Path>,
    boot0: Option<Level>,
    usb: UsbSockets<'_>,
) -> Result<ExitCode> {
    let usbredir = usb.target;
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
    if chip.bootloader.usart.is_empty() {
        bail!("{}: the chip data names no USART for the ROM bootloader that the virtual board models", chip.name);
    }
    // The same board the rig runs (hil_rig::virtual_backend), powered on once the image is in.
    let mut cfg = hil_rig::virtual_backend::board_config(&name, chip, v);
    let usart = hil_rig::virtual_backend::console_usart(chip);
    cfg.power_on = false;
    // The USART on a PTY for a peer that waits on its own wall clock (stm32flash): with a PTY a
    // `fast` board free-runs instead of being gated (see hil_virtual_board::board).
    cfg.ptys.push(hil_virtual_board::PtyConfig { usart: usart.clone(), link: uart_link.map(Path::to_path_buf) });
    if let Some(level) = boot0 {
        cfg.boot0 = level == Level::High;
    }
    let vb = Board::start(cfg).with_context(|| format!("starting virtual board {name}"))?;
    let run = || -> Result<()> {
        if let Some(word) =
            hil_rig::virtual_backend::user_option_word(chip, v.option_bytes.as_ref().unwrap_or(&Default::default()))
                .map_err(anyhow::Error::msg)?
        {
            vb.set_option_word("USER", word).wait()?;
        }
        if let Some(path) = image {
            let bytes = hil_image::read_image_file(path)?;
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
    // Signal handlers go in before "ready": a peer may send Ctrl-C as soon as it reads that line.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut interrupt, mut term) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _in_runtime = rt.enter();
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    let redir_stop = Arc::new(AtomicBool::new(false));
    let redir = match usbredir {
        Some(path) if chip.bootloader.usb_dfu => {
            Some(crate::usbredir_bridge::serve(vb.clone(), path, redir_stop.clone())?)
        }
        Some(_) => bail!("{}: its ROM bootloader has no USB device to serve over usbredir", chip.name),
        None => None,
    };
    let adapter = match usb.adapter {
        Some(path) => {
            let dev = crate::serial_adapter::SerialAdapter::new(vb.clone(), &usart, &name)?;
            say(&format!(
                "note: the debug adapter's VCP is {usart}; DTR drives BOOT0 and RTS drives NRST, both asserted low \
                 (virtual board entries name no wiring)"
            ));
            Some(crate::usbredir_bridge::serve_device(Box::new(dev), path, redir_stop.clone())?)
        }
        None => None,
    };
    let pty = vb.uart(&usart)?.pty_path().context("the virtual board opened no PTY")?;
    let mut link = uart_link.map_or(String::new(), |l| format!(", linked at {}", l.display()));
    if let Some(p) = usbredir {
        link.push_str(&format!(", USB on usbredir socket {}", p.display()));
    }
    if let Some(p) = usb.adapter {
        link.push_str(&format!(", debug adapter on usbredir socket {}", p.display()));
    }
    say(&format!(
        "ready: virtual board {name} ({}) {usart} on {}{link}; AN3155 peers use `-b 115200 -m 8n1` (PTYs carry no \
         parity); Ctrl-C or SIGTERM stops it",
        chip.name,
        pty.display()
    ));
    if chip.bootloader.usb_dfu && usbredir.is_none() {
        say("note: the ROM's USB DFU device is reachable in process only (hil_virtual_board::UsbPort); pass \
             --usbredir PATH to serve it to QEMU's usb-redir");
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

    let why = rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = interrupt.recv() => return Ok::<_, anyhow::Error>("interrupt"),
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
    redir_stop.store(true, Ordering::Relaxed);
    let _ = follower.join();
    for r in [redir, adapter].into_iter().flatten() {
        let _ = r.join();
    }
    let done = vb.shutdown();
    // The PTY removed its own link when the board stopped; a link still pointing at our PTY
    // (a board thread that died without dropping it) goes too, nothing else does.
    if let Some(l) = uart_link
        && std::fs::read_link(l).is_ok_and(|t| t == pty)
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

/// `hil sim power`: the adapter's power vendor request through the host's USB stack (nusb).
pub fn power(adapter: &str, on: bool) -> Result<ExitCode> {
    use nusb::MaybeFuture;
    use nusb::transfer::{ControlOut, ControlType, Recipient};
    let sel: hil_bootloader_host::dfu::UsbSelector = adapter.parse()?;
    let info = nusb::list_devices()
        .wait()
        .context("listing USB devices")?
        .find(|d| {
            d.vendor_id() == sel.vendor_id
                && d.product_id() == sel.product_id
                && sel.serial.as_deref().is_none_or(|s| d.serial_number() == Some(s))
        })
        .with_context(|| format!("no USB device matches {adapter}"))?;
    let device = info.open().wait().with_context(|| format!("opening {adapter}"))?;
    device
        .control_out(
            ControlOut {
                control_type: ControlType::Vendor,
                recipient: Recipient::Device,
                request: crate::serial_adapter::POWER_REQUEST,
                value: u16::from(on),
                index: 0,
                data: &[],
            },
            Duration::from_secs(5),
        )
        .wait()
        .with_context(|| format!("switching the target power {} through {adapter}", if on { "on" } else { "off" }))?;
    Ok(ExitCode::SUCCESS)
}
