//! The board thread and its handle.
//!
//! One thread per board owns the [`Machine`] (core and peripherals). Every call on a [`Board`]
//! is a message to that thread and returns a [`Pending`] (blocking `wait()` or `.await`, no
//! runtime required) that resolves by its deadline. The thread runs the core in slices and
//! between slices serves requests, feeds PTY input to the USARTs, writes USART output to the
//! PTYs and answers waiting reads.
//!
//! Timing: `fast` runs virtual time as fast as the host can (a sleeping core skips to the next
//! event; with nothing scheduled the thread blocks until input arrives); `realistic` paces
//! virtual time to wall time so that external tools see real baud rates. While the core is
//! halted by the debugger, virtual time follows wall time in both modes (UART frames finish,
//! watchdogs without their debug freeze run).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hil_chips::{Chip, PinId};
use hil_cortex_m::{Reg, RunState, Size, VirtualDuration, VirtualTime};

use crate::config::{BoardConfig, FaultConfig, Timing};
use crate::error::BoardError;
use crate::image::{ImageFormat, segments};
use crate::machine::{BoardEvent, BoardSnapshot, DebugCounters, Machine, RunOutcome};
use crate::pending::{Pending, Reply, pending, ready};
use crate::periph::usart::RxFrame;
use crate::periph::usb::{UsbReply, UsbSetup};
use crate::pty::{Pty, PtyInput};
use crate::rom::SystemBootloader;

/// Core cycles per run slice: short enough that requests are served within milliseconds.
const SLICE_CYCLES: u64 = 200_000;
/// Grace added to a waiting request's deadline so that the board's answer (what arrived so far)
/// wins over the timeout.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Thread-level settings a request may change.
pub(crate) struct Ctl {
    pub timing: Timing,
    resync: bool,
}

type Job = Box<dyn FnOnce(&mut Machine, &mut Ctl) + Send>;

enum Waiter {
    UartRead { usart: usize, max: usize, answer_at: Instant, reply: Reply<Vec<u8>> },
    UartUntil { usart: usize, needle: Vec<u8>, answer_at: Instant, budget: Duration, reply: Reply<Vec<u8>> },
    Events { from: u64, answer_at: Instant, reply: Reply<Vec<BoardEvent>> },
    UsbControl { id: u64, request: String, answer_at: Instant, budget: Duration, reply: Reply<UsbReply> },
}

impl Waiter {
    fn answer_at(&self) -> Instant {
        match self {
            Waiter::UartRead { answer_at, .. }
            | Waiter::UartUntil { answer_at, .. }
            | Waiter::Events { answer_at, .. }
            | Waiter::UsbControl { answer_at, .. } => *answer_at,
        }
    }
}

/// A control transfer on its way to the board thread.
struct UsbRequest {
    setup: UsbSetup,
    data: Vec<u8>,
    request: String,
    answer_at: Instant,
    budget: Duration,
    reply: Reply<UsbReply>,
}

enum Cmd {
    Exec(Job),
    Wait(Waiter),
    HostRx(PtyInput),
    Usb(UsbRequest),
    Shutdown,
}

struct Inner {
    name: String,
    chip: String,
    tx: Sender<Cmd>,
    usarts: Vec<String>,
    ptys: Vec<(usize, PathBuf)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    default_deadline: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Shutdown);
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        if reg.get(&self.name).is_some_and(|w| std::ptr::eq(w.as_ptr(), self)) {
            reg.remove(&self.name);
        }
    }
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Inner>>> {
    static REG: OnceLock<Mutex<HashMap<String, Weak<Inner>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// Handle of a running virtual board. Cheap to clone; the board stops when the last handle is
/// dropped or [`Board::shutdown`] is called.
#[derive(Clone)]
pub struct Board {
    inner: Arc<Inner>,
    deadline: Duration,
}

/// The core's execution state as the debug port sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreState {
    Off,
    InReset,
    Running,
    Sleeping,
    Halted(hil_cortex_m::HaltReason),
    Lockup,
}

/// One debug port access of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugOp {
    Read { addr: u32, size: Size },
    Write { addr: u32, size: Size, value: u32 },
}

impl Board {
    /// Start a board with the default ROM model ([`crate::RecordingRom`]).
    pub fn start(cfg: BoardConfig) -> Result<Board, BoardError> {
        Self::start_with_rom(cfg, None)
    }

    /// Start a board with a ROM bootloader model.
    pub fn start_with_rom(cfg: BoardConfig, rom: Option<Box<dyn SystemBootloader>>) -> Result<Board, BoardError> {
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        if reg.get(&cfg.name).is_some_and(|w| w.strong_count() > 0) {
            return Err(BoardError::NameTaken(cfg.name.clone()));
        }
        let mut m = Machine::new(&cfg, rom)?;
        let usarts: Vec<String> = m.soc.layout.usarts.iter().map(|(n, _)| n.clone()).collect();
        let (tx, rx) = channel::<Cmd>();
        let mut ptys = Vec::new();
        for p in &cfg.ptys {
            let idx = usarts.iter().position(|n| n.eq_ignore_ascii_case(&p.usart)).ok_or_else(|| {
                BoardError::NoUsart { board: cfg.name.clone(), usart: p.usart.clone(), known: usarts.join(", ") }
            })?;
            let tx = tx.clone();
            let pty = Pty::open(idx, p.link.as_deref(), move |input| tx.send(Cmd::HostRx(input)).is_ok())
                .map_err(|message| BoardError::Pty { board: cfg.name.clone(), usart: p.usart.clone(), message })?;
            m.enable_tap(idx);
            ptys.push(pty);
        }
        let pty_paths = ptys.iter().map(|p| (p.usart, p.path.clone())).collect();
        if cfg.power_on {
            m.power_on();
        }
        let ctl = Ctl { timing: cfg.timing, resync: true };
        let thread = std::thread::Builder::new()
            .name(format!("board-{}", cfg.name))
            .spawn(move || board_thread(m, rx, ctl, ptys))
            .map_err(|e| BoardError::Other { board: cfg.name.clone(), message: format!("spawn board thread: {e}") })?;
        let inner = Arc::new(Inner {
            name: cfg.name.clone(),
            chip: cfg.chip.clone(),
            tx,
            usarts,
            ptys: pty_paths,
            thread: Mutex::new(Some(thread)),
            default_deadline: cfg.default_deadline,
        });
        reg.insert(cfg.name.clone(), Arc::downgrade(&inner));
        Ok(Board { inner, deadline: cfg.default_deadline })
    }

    /// A running board by registry name (what the probe driver resolves a selector to).
    pub fn lookup(name: &str) -> Option<Board> {
        let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        let inner = reg.get(name)?.upgrade()?;
        let deadline = inner.default_deadline;
        Some(Board { inner, deadline })
    }

    /// Names of the running boards.
    pub fn running() -> Vec<String> {
        let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = reg.iter().filter(|(_, w)| w.strong_count() > 0).map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn chip(&self) -> &str {
        &self.inner.chip
    }
    /// Modelled USART instances.
    pub fn usarts(&self) -> &[String] {
        &self.inner.usarts
    }
    /// The same board with another default deadline for its calls.
    pub fn with_deadline(&self, deadline: Duration) -> Board {
        Board { inner: self.inner.clone(), deadline }
    }
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Stop the board thread and wait for it (at most the deadline). The name is free again at
    /// once; other handles of this board get [`BoardError::Gone`] from then on.
    pub fn shutdown(self) -> Result<(), BoardError> {
        let _ = self.inner.tx.send(Cmd::Shutdown);
        {
            let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
            if reg.get(&self.inner.name).is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.inner))) {
                reg.remove(&self.inner.name);
            }
        }
        let handle = self.inner.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let t = Instant::now();
            while !h.is_finished() {
                if t.elapsed() > self.deadline {
                    return Err(BoardError::Timeout {
                        board: self.inner.name.clone(),
                        what: "shutdown".into(),
                        deadline: self.deadline,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = h.join();
        }
        Ok(())
    }

    /// Run `f` on the board thread with the machine (escape hatch for tests, the probe driver
    /// and ROM models).
    pub fn exec<R: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Machine) -> Result<R, BoardError> + Send + 'static,
    ) -> Pending<R> {
        self.call(what, self.deadline, move |m, _| f(m))
    }

    fn call<R: Send + 'static>(
        &self,
        what: &str,
        budget: Duration,
        f: impl FnOnce(&mut Machine, &mut Ctl) -> Result<R, BoardError> + Send + 'static,
    ) -> Pending<R> {
        let (p, reply) = pending(&self.inner.name, what, budget);
        let job: Job = Box::new(move |m, c| reply.send(f(m, c)));
        // If the thread is gone the job (and its reply) is dropped: the Pending resolves Gone.
        let _ = self.inner.tx.send(Cmd::Exec(job));
        p
    }

    // ---- power, pins, reset -------------------------------------------------------------------

    pub fn power_on(&self) -> Pending<()> {
        self.call("power on", self.deadline, |m, _| {
            m.power_on();
            Ok(())
        })
    }
    pub fn power_off(&self) -> Pending<()> {
        self.call("power off", self.deadline, |m, _| {
            m.power_off();
            Ok(())
        })
    }
    /// Power off, wait `off_for` of virtual time, power on (POR: RAM lost, empty check re-run).
    pub fn power_cycle(&self, off_for: Duration) -> Pending<()> {
        self.call("power cycle", self.deadline, move |m, _| {
            m.power_off();
            m.idle_for(VirtualDuration::from_ns(off_for.as_nanos().min(u64::MAX as u128) as u64));
            m.power_on();
            Ok(())
        })
    }
    /// Drive BOOT0 (latched at the next reset).
    pub fn set_boot0(&self, level: bool) -> Pending<()> {
        self.call("set BOOT0", self.deadline, move |m, _| {
            m.set_boot0(level);
            Ok(())
        })
    }
    /// Drive NRST (`true`: low, the chip is held in reset; releasing it resets the chip).
    pub fn set_nrst(&self, low: bool) -> Pending<()> {
        self.call("drive NRST", self.deadline, move |m, _| {
            m.set_nrst(low);
            Ok(())
        })
    }
    /// NRST pulse: a pin reset.
    pub fn pulse_nrst(&self) -> Pending<()> {
        self.call("pulse NRST", self.deadline, |m, _| {
            m.set_nrst(true);
            m.set_nrst(false);
            Ok(())
        })
    }
    /// Drive a GPIO pin (`PA0`...) from outside; `None` releases it.
    pub fn drive_pin(&self, pin: &str, level: Option<bool>) -> Pending<()> {
        let Some(id) = PinId::parse(pin) else {
            return ready(
                &self.inner.name,
                "drive pin",
                Err(BoardError::NoPin { board: self.inner.name.clone(), pin: pin.to_string() }),
            );
        };
        self.call("drive pin", self.deadline, move |m, _| {
            m.drive_pin(id, level);
            Ok(())
        })
    }

    // ---- images and memory --------------------------------------------------------------------

    /// Load an image into flash as a programmer would (no controller timing). Every segment
    /// must lie in flash (or OTP); nothing is written otherwise.
    pub fn load_image(&self, bytes: Vec<u8>, format: ImageFormat) -> Pending<Vec<(u32, u32)>> {
        self.call("load image", self.deadline, move |m, _| {
            let segs = segments(&bytes, format)?;
            let chip = m.soc.chip;
            for (i, s) in segs.iter().enumerate() {
                let fits = chip.memory.flash.area().contains_range(s.addr, s.data.len() as u64)
                    || chip.memory.otp.as_ref().is_some_and(|a| a.contains_range(s.addr, s.data.len() as u64));
                if !fits {
                    return Err(BoardError::Image(format!(
                        "segment {i} ({} bytes at {:#010x}) is outside the flash of {} ({:#010x}..{:#010x}); \
                         link the image for flash or load only its flash segments",
                        s.data.len(),
                        s.addr,
                        chip.name,
                        chip.memory.flash.base,
                        chip.memory.flash.area().end()
                    )));
                }
            }
            for s in &segs {
                m.soc.load_flash(s.addr, &s.data)?;
            }
            Ok(segs.iter().map(|s| (s.addr, s.data.len() as u32)).collect())
        })
    }

    /// Back to the new-chip state (flash erased, factory option bytes), effective at the next
    /// power-on.
    pub fn factory_reset(&self) -> Pending<()> {
        self.call("factory reset", self.deadline, |m, _| {
            m.soc.factory_reset();
            Ok(())
        })
    }

    /// Program an option word (chip-data name, e.g. `USER`) with its complement; effective at
    /// the next power-on or option byte loading.
    pub fn set_option_word(&self, name: &str, value: u32) -> Pending<()> {
        let name = name.to_string();
        self.call("set option word", self.deadline, move |m, _| m.soc.set_option_word(&name, value))
    }

    /// Read memory without side effects on devices (stores only: flash, RAM, ROM, options).
    pub fn peek(&self, addr: u32, len: usize) -> Pending<Vec<u8>> {
        self.call("peek memory", self.deadline, move |m, _| {
            let mut buf = vec![0; len];
            m.soc.sys.memory.peek(addr, &mut buf).map_err(|fault| BoardError::Bus { board: m.name.clone(), fault })?;
            Ok(buf)
        })
    }

    // ---- timing and faults ----------------------------------------------------------------------

    pub fn set_timing(&self, timing: Timing) -> Pending<()> {
        self.call("set timing", self.deadline, move |_, c| {
            c.timing = timing;
            c.resync = true;
            Ok(())
        })
    }
    pub fn set_faults(&self, faults: FaultConfig) -> Pending<()> {
        self.call("set faults", self.deadline, move |m, _| {
            m.soc.sys.shared.faults.set(faults);
            Ok(())
        })
    }
    /// Virtual time now.
    pub fn now(&self) -> Pending<VirtualTime> {
        self.call("read virtual time", self.deadline, |m, _| Ok(m.now()))
    }

    // ---- diagnosis and events -------------------------------------------------------------------

    pub fn snapshot(&self) -> Pending<BoardSnapshot> {
        self.call("snapshot", self.deadline, |m, _| Ok(m.snapshot()))
    }

    /// Events with sequence number >= `from`, as soon as there is at least one, or whatever there
    /// is (possibly none) after `timeout`.
    pub fn events(&self, from: u64, timeout: Duration) -> Pending<Vec<BoardEvent>> {
        let (p, reply) = pending(&self.inner.name, "wait for events", timeout + ANSWER_GRACE);
        let answer_at = Instant::now() + timeout;
        let _ = self.inner.tx.send(Cmd::Wait(Waiter::Events { from, answer_at, reply }));
        p
    }

    /// Sequence number the next event will get.
    pub fn event_cursor(&self) -> Pending<u64> {
        self.call("event cursor", self.deadline, |m, _| Ok(m.next_event_seq()))
    }

    /// Block until an event satisfying `pred` (seq >= `from`) happens, or `timeout`.
    pub fn wait_event(
        &self,
        from: u64,
        timeout: Duration,
        mut pred: impl FnMut(&BoardEvent) -> bool,
    ) -> Result<BoardEvent, BoardError> {
        let end = Instant::now() + timeout;
        let mut from = from;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let evs = self.events(from, left).wait()?;
            for e in &evs {
                if pred(e) {
                    return Ok(e.clone());
                }
                from = e.seq + 1;
            }
            if Instant::now() >= end {
                return Err(BoardError::Timeout {
                    board: self.inner.name.clone(),
                    what: "waiting for a board event".into(),
                    deadline: timeout,
                });
            }
        }
    }

    // ---- USARTs ---------------------------------------------------------------------------------

    /// A USART's host side, by instance name (`USART2`).
    pub fn uart(&self, usart: &str) -> Result<UartPort, BoardError> {
        let index = self.inner.usarts.iter().position(|n| n.eq_ignore_ascii_case(usart)).ok_or_else(|| {
            BoardError::NoUsart {
                board: self.inner.name.clone(),
                usart: usart.to_string(),
                known: self.inner.usarts.join(", "),
            }
        })?;
        Ok(UartPort { board: self.clone(), index, name: self.inner.usarts[index].clone() })
    }

    // ---- USB ------------------------------------------------------------------------------------

    /// The host side of the board's USB device (chips whose ROM has USB DFU: the G0B1), or
    /// [`BoardError::NoUsb`].
    pub fn usb(&self) -> Result<UsbPort, BoardError> {
        if Chip::by_name(&self.inner.chip).is_some_and(|c| c.bootloader.usb_dfu) {
            Ok(UsbPort { board: self.clone() })
        } else {
            Err(BoardError::NoUsb { board: self.inner.name.clone(), chip: self.inner.chip.clone() })
        }
    }

    // ---- debug port -----------------------------------------------------------------------------

    /// What the simulated probe drives.
    pub fn debug(&self) -> DebugPort {
        DebugPort { board: self.clone() }
    }
}

/// Host side of one USART: bytes in and out, in process. If the board exposes it as a PTY too,
/// both see the device's output.
#[derive(Clone)]
pub struct UartPort {
    board: Board,
    index: usize,
    name: String,
}

impl UartPort {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The PTY slave path, if this USART is exposed as one.
    pub fn pty_path(&self) -> Option<PathBuf> {
        self.board.inner.ptys.iter().find(|(i, _)| *i == self.index).map(|(_, p)| p.clone())
    }
    /// Send bytes to the device (each a frame on the RX wire).
    pub fn write(&self, bytes: &[u8]) -> Pending<()> {
        let frames: Vec<RxFrame> = bytes.iter().map(|b| RxFrame::byte(*b)).collect();
        self.inject(frames)
    }
    /// Send frames with injected line errors (parity, framing, noise).
    pub fn inject(&self, frames: Vec<RxFrame>) -> Pending<()> {
        let (i, name) = (self.index, self.name.clone());
        self.board.call("write to USART", self.board.deadline, move |m, _| {
            if m.uart_send(i, &frames) {
                Ok(())
            } else {
                Err(BoardError::NoUsart { board: m.name.clone(), usart: name, known: String::new() })
            }
        })
    }
    /// The host's baud rate on the wire (`None`: matches the device's rate).
    pub fn set_host_baud(&self, baud: Option<u32>) -> Pending<()> {
        let i = self.index;
        self.board.call("set host baud rate", self.board.deadline, move |m, _| {
            m.set_host_baud(i, baud);
            Ok(())
        })
    }
    /// Up to `max` bytes of device output: as soon as there is at least one, or whatever there
    /// is (possibly nothing) after `timeout`.
    pub fn read(&self, max: usize, timeout: Duration) -> Pending<Vec<u8>> {
        let (p, reply) = pending(&self.board.inner.name, "read USART", timeout + ANSWER_GRACE);
        let answer_at = Instant::now() + timeout;
        let _ = self.board.inner.tx.send(Cmd::Wait(Waiter::UartRead { usart: self.index, max, answer_at, reply }));
        p
    }
    /// Device output up to and including the first `needle` (the bytes after it stay for the
    /// next read). On timeout the error carries what had arrived, which also stays unread.
    pub fn read_until(&self, needle: &[u8], timeout: Duration) -> Pending<Vec<u8>> {
        let (p, reply) = pending(&self.board.inner.name, "read USART until a pattern", timeout + ANSWER_GRACE);
        let answer_at = Instant::now() + timeout;
        let w = Waiter::UartUntil { usart: self.index, needle: needle.to_vec(), answer_at, budget: timeout, reply };
        let _ = self.board.inner.tx.send(Cmd::Wait(w));
        p
    }
}

/// The host side of the board's USB device: what a USB host controller offers a DFU host client,
/// in process (DESIGN.md symmetry rule: the rig's DfuSe client talks to a small control-transfer
/// trait; nusb implements it for real devices, this port for the virtual board).
///
/// - **Presence**: [`attached`](Self::attached) is true while the device's D+ pull-up is on, i.e.
///   while the ROM's DFU interface is up (from ROM entry until a USART wins the interface
///   selection, a DfuSe leave, a reset or power-off). [`wait_attached`](Self::wait_attached) waits
///   for a change; the board's event log has [`crate::EventKind::Usb`] entries.
/// - **Enumeration**: when the device attaches, the virtual host resets the bus after the attach
///   debounce (USB 2.0 7.1.7.3); the client then enumerates with standard requests over
///   [`control`](Self::control) (GET_DESCRIPTOR, SET_ADDRESS, SET_CONFIGURATION, SET_INTERFACE) as
///   a host stack would. [`bus_reset`](Self::bus_reset) resets the bus again.
/// - **Control transfers**: [`control`](Self::control) sends a setup packet and, for OUT
///   requests, exactly wLength bytes of data; the answer is the IN data, an ACK (status stage) or
///   a STALL. The transfer takes bus time and then waits for the device's firmware to handle its
///   interrupt: a ROM that cannot take its USB interrupt (PRIMASK set at the jump, an active
///   exception of equal priority, VTOR elsewhere) never answers, and the call fails with
///   [`BoardError::UsbTimeout`] when `timeout` (wall time) runs out, as a host's control
///   transfer times out on a device that NAKs forever. A device that is not (or no longer)
///   attached fails with [`BoardError::UsbDetached`], as a host reports "no such device".
#[derive(Clone)]
pub struct UsbPort {
    board: Board,
}

impl UsbPort {
    /// Whether the device is on the bus now.
    pub fn attached(&self) -> Pending<bool> {
        self.board.call("USB presence", self.board.deadline, |m, _| Ok(m.usb_attached().unwrap_or(false)))
    }

    /// Wait until the device is (`true`) or is not (`false`) on the bus.
    pub fn wait_attached(&self, attached: bool, timeout: Duration) -> Result<(), BoardError> {
        let end = Instant::now() + timeout;
        loop {
            let from = self.board.event_cursor().wait()?;
            if self.attached().wait()? == attached {
                return Ok(());
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BoardError::Timeout {
                    board: self.board.name().to_string(),
                    what: format!("waiting for the USB device to {}", if attached { "attach" } else { "detach" }),
                    deadline: timeout,
                });
            }
            // Any attach/detach after `from` ends this round; the loop re-checks the state.
            let _ = self.board.wait_event(from, left, |e| matches!(e.kind, crate::EventKind::Usb { .. }));
        }
    }

    /// Reset the bus (the device returns to its default state, address 0).
    pub fn bus_reset(&self) -> Pending<()> {
        self.board.call("USB bus reset", self.board.deadline, |m, _| m.usb_bus_reset())
    }

    /// One control transfer on endpoint 0: `data` is the OUT data stage (exactly wLength bytes) or
    /// empty for IN and no-data requests.
    pub fn control(&self, setup: UsbSetup, data: Vec<u8>, timeout: Duration) -> Pending<UsbReply> {
        let request = format!(
            "bmRequestType {:#04x} bRequest {} wValue {:#06x} wIndex {} wLength {}",
            setup.request_type, setup.request, setup.value, setup.index, setup.length
        );
        let name = self.board.inner.name.clone();
        let (p, reply) = pending(&name, "USB control transfer", timeout + ANSWER_GRACE);
        let expected = if setup.is_in() { 0 } else { usize::from(setup.length) };
        if data.len() != expected {
            reply.send(Err(BoardError::Other {
                board: name,
                message: format!("{request}: OUT data of {} bytes for wLength {}", data.len(), setup.length),
            }));
            return p;
        }
        let answer_at = Instant::now() + timeout;
        let _ =
            self.board.inner.tx.send(Cmd::Usb(UsbRequest { setup, data, request, answer_at, budget: timeout, reply }));
        p
    }
}

/// The debug port: what an AHB-AP and the core's debug registers offer a probe, plus NRST and
/// counters. The simulated probe (probe-rs driver) builds DP/AP semantics on top of this.
#[derive(Clone)]
pub struct DebugPort {
    board: Board,
}

impl DebugPort {
    fn call<R: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Machine) -> Result<R, BoardError> + Send + 'static,
    ) -> Pending<R> {
        self.board.call(what, self.board.deadline, move |m, _| f(m))
    }
    pub fn read(&self, addr: u32, size: Size) -> Pending<u32> {
        self.call("debug read", move |m| m.debug_read(addr, size))
    }
    pub fn write(&self, addr: u32, size: Size, value: u32) -> Pending<()> {
        self.call("debug write", move |m| m.debug_write(addr, size, value))
    }
    /// Word reads from `addr` (auto-increment, like TAR/DRW).
    pub fn read_words(&self, addr: u32, count: usize) -> Pending<Vec<u32>> {
        self.call("debug block read", move |m| {
            (0..count).map(|i| m.debug_read(addr.wrapping_add(4 * i as u32), Size::Word)).collect()
        })
    }
    pub fn write_words(&self, addr: u32, words: Vec<u32>) -> Pending<()> {
        self.call("debug block write", move |m| {
            for (i, w) in words.into_iter().enumerate() {
                m.debug_write(addr.wrapping_add(4 * i as u32), Size::Word, w)?;
            }
            Ok(())
        })
    }
    /// Several accesses in one round trip; each has its own result.
    pub fn batch(&self, ops: Vec<DebugOp>) -> Pending<Vec<Result<u32, BoardError>>> {
        self.call("debug batch", move |m| {
            Ok(ops
                .into_iter()
                .map(|op| match op {
                    DebugOp::Read { addr, size } => m.debug_read(addr, size),
                    DebugOp::Write { addr, size, value } => m.debug_write(addr, size, value).map(|()| 0),
                })
                .collect())
        })
    }
    pub fn halt(&self) -> Pending<()> {
        self.call("halt", |m| m.halt())
    }
    pub fn resume(&self) -> Pending<()> {
        self.call("resume", |m| m.resume())
    }
    pub fn step(&self) -> Pending<()> {
        self.call("single step", |m| m.step())
    }
    pub fn state(&self) -> Pending<CoreState> {
        self.call("core state", |m| {
            Ok(if !m.powered() {
                CoreState::Off
            } else if m.nrst_low() {
                CoreState::InReset
            } else {
                match m.cpu.run_state() {
                    RunState::Running => CoreState::Running,
                    RunState::Sleeping => CoreState::Sleeping,
                    RunState::Halted(r) => CoreState::Halted(r),
                    RunState::Lockup => CoreState::Lockup,
                }
            })
        })
    }
    pub fn reg(&self, r: Reg) -> Pending<u32> {
        self.call("read core register", move |m| Ok(m.cpu.reg(r)))
    }
    pub fn set_reg(&self, r: Reg, value: u32) -> Pending<()> {
        self.call("write core register", move |m| {
            m.cpu.set_reg(r, value);
            Ok(())
        })
    }
    /// Reset through NRST, optionally halting at the reset vector.
    pub fn reset(&self, halt: bool) -> Pending<()> {
        self.call("reset", move |m| m.reset(halt))
    }
    pub fn set_nrst(&self, low: bool) -> Pending<()> {
        self.board.set_nrst(low)
    }
    /// Instructions, cycles and peripheral access counters.
    pub fn counters(&self) -> Pending<DebugCounters> {
        self.call("counters", |m| Ok(m.counters()))
    }
}

/// Paces virtual time against wall time.
struct Pacer {
    wall0: Instant,
    virt0: VirtualTime,
}

impl Pacer {
    fn rebase(&mut self, now: VirtualTime) {
        self.wall0 = Instant::now();
        self.virt0 = now;
    }
    fn allowed(&self) -> VirtualTime {
        let d = self.wall0.elapsed();
        self.virt0 + VirtualDuration::from_ns(d.as_nanos().min(u64::MAX as u128) as u64)
    }
}

fn board_thread(m: Machine, rx: Receiver<Cmd>, ctl: Ctl, ptys: Vec<Pty>) {
    let name = m.name.clone();
    let r = std::panic::catch_unwind(AssertUnwindSafe(move || board_loop(m, rx, ctl, ptys)));
    if r.is_err() {
        tracing::error!(target: "hil_virtual_board", board = %name, "board thread panicked; the board is gone");
    }
}

fn board_loop(mut m: Machine, rx: Receiver<Cmd>, mut ctl: Ctl, mut ptys: Vec<Pty>) {
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut pacer = Pacer { wall0: Instant::now(), virt0: m.now() };
    let mut last = RunOutcome::Progress;
    loop {
        if ctl.resync {
            pacer.rebase(m.now());
            ctl.resync = false;
        }
        // How long the thread may wait for requests before running again.
        let allowed = pacer.allowed();
        let ahead = ctl.timing == Timing::Realistic && m.now() >= allowed;
        let block = match last {
            RunOutcome::Progress if !ahead => None,
            // Ahead of wall time: wait until it catches up (at least 10 us, so that the device answers
            // a host within microseconds as a chip does; at most 5 ms).
            RunOutcome::Progress => {
                Some((m.now() - allowed).to_std().clamp(Duration::from_micros(10), Duration::from_millis(5)))
            }
            RunOutcome::Idle if ctl.timing == Timing::Fast => Some(Duration::from_millis(200)),
            RunOutcome::Stopped if ctl.timing == Timing::Fast && m.powered() => Some(Duration::from_millis(5)),
            RunOutcome::Stopped if ctl.timing == Timing::Fast => Some(Duration::from_millis(200)),
            _ => Some(Duration::from_millis(5)),
        };
        let block = block.map(|b| {
            waiters.iter().map(|w| w.answer_at().saturating_duration_since(Instant::now())).fold(b, Duration::min)
        });
        let mut first = match block {
            None => match rx.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            },
            Some(d) => match rx.recv_timeout(d) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        // In fast mode a long wait must not turn into a virtual-time jump when running again.
        let mut had_input = false;
        while let Some(cmd) = first.take().or_else(|| rx.try_recv().ok()) {
            match cmd {
                Cmd::Shutdown => return,
                Cmd::Exec(job) => {
                    job(&mut m, &mut ctl);
                    had_input = true;
                }
                Cmd::Wait(w) => waiters.push(w),
                Cmd::Usb(r) => {
                    match m.usb_submit(r.setup, r.data) {
                        Ok(id) => waiters.push(Waiter::UsbControl {
                            id,
                            request: r.request,
                            answer_at: r.answer_at,
                            budget: r.budget,
                            reply: r.reply,
                        }),
                        Err(e) => r.reply.send(Err(e)),
                    }
                    had_input = true;
                }
                Cmd::HostRx(input) => {
                    if ctl.timing == Timing::Realistic && may_skip_time(&m, last) {
                        // Catch virtual time up to wall time before the bytes arrive.
                        let target = pacer.allowed();
                        if target > m.now() {
                            m.idle_for(target - m.now());
                        }
                    }
                    m.set_host_baud(input.usart, input.baud);
                    let frames: Vec<RxFrame> = input.bytes.iter().map(|b| RxFrame::byte(*b)).collect();
                    m.uart_send(input.usart, &frames);
                    had_input = true;
                }
            }
        }
        let halted = last == RunOutcome::Halted;
        let follow_wall = ctl.timing == Timing::Realistic || halted;
        if ctl.timing == Timing::Fast && !halted {
            pacer.rebase(m.now());
        }
        if follow_wall && may_skip_time(&m, last) {
            let target = pacer.allowed();
            if target > m.now() {
                m.idle_for(target - m.now());
            }
        }
        // Run a slice.
        let cycles = m.cpu.cycles();
        let mut until = cycles + SLICE_CYCLES;
        if ctl.timing == Timing::Realistic {
            until = until.min(m.soc.sys.clock().cycle_at(pacer.allowed()));
        }
        last = if until > cycles || had_input {
            m.run(until.max(cycles + 1))
        } else {
            // Ahead of wall time: wait.
            RunOutcome::Progress
        };
        if last == RunOutcome::Halted && !halted {
            pacer.rebase(m.now());
        }
        for p in ptys.iter_mut() {
            let out = m.take_tap(p.usart);
            if !out.is_empty() {
                p.write(&out);
            }
        }
        serve_waiters(&mut m, &mut waiters);
    }
}

/// Whether virtual time may jump ahead without executing the core: it is halted, stopped (held in
/// reset, locked up), or asleep with nothing scheduled. A sleeping core with device events due
/// must run instead, so that it wakes for them (a ROM or an interrupt handler takes each received
/// frame before the next one overruns it).
fn may_skip_time(m: &Machine, last: RunOutcome) -> bool {
    m.powered()
        && match last {
            RunOutcome::Progress => false,
            RunOutcome::Idle => m.soc.sys.scheduler.is_empty(),
            RunOutcome::Halted | RunOutcome::Stopped => true,
        }
}

fn serve_waiters(m: &mut Machine, waiters: &mut Vec<Waiter>) {
    let now = Instant::now();
    let mut i = 0;
    while i < waiters.len() {
        let ready = match &waiters[i] {
            Waiter::UartRead { usart, answer_at, .. } => m.uart_available(*usart) > 0 || now >= *answer_at,
            Waiter::UartUntil { answer_at, .. } => now >= *answer_at,
            Waiter::Events { from, answer_at, .. } => m.next_event_seq() > *from || now >= *answer_at,
            Waiter::UsbControl { answer_at, .. } => now >= *answer_at,
        };
        if let Waiter::UartUntil { usart, needle, .. } = &waiters[i]
            && let Some(got) = m.uart_take_until(*usart, needle)
        {
            if let Waiter::UartUntil { reply, .. } = waiters.swap_remove(i) {
                reply.send(Ok(got));
            }
            continue;
        }
        if let Waiter::UsbControl { id, .. } = &waiters[i]
            && let Some(done) = m.usb_completion(*id)
        {
            if let Waiter::UsbControl { reply, .. } = waiters.swap_remove(i) {
                reply.send(done);
            }
            continue;
        }
        if !ready {
            i += 1;
            continue;
        }
        match waiters.swap_remove(i) {
            Waiter::UartRead { usart, max, reply, .. } => reply.send(Ok(m.uart_take(usart, max))),
            Waiter::Events { from, reply, .. } => reply.send(Ok(m.events_from(from).cloned().collect())),
            Waiter::UsbControl { id, request, budget, reply, .. } => {
                m.usb_cancel(id);
                reply.send(Err(BoardError::UsbTimeout { board: m.name.clone(), request, deadline: budget }))
            }
            Waiter::UartUntil { usart, needle, budget, reply, .. } => {
                let usart_name = m.soc.layout.usarts.get(usart).map(|(n, _)| n.clone()).unwrap_or_default();
                reply.send(Err(BoardError::UartTimeout {
                    board: m.name.clone(),
                    usart: usart_name,
                    expected: String::from_utf8_lossy(&needle).into_owned(),
                    received: String::from_utf8_lossy(&m.uart_peek(usart)).into_owned(),
                    deadline: budget,
                }))
            }
        }
    }
}
