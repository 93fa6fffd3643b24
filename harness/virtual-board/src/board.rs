//! The board thread and its handle.
//!
//! One thread per board owns the [`Machine`] (core and peripherals). Every call on a [`Board`]
//! is a message to that thread and returns a [`Pending`] (blocking `wait()` or `.await`, no
//! runtime required) that resolves by its deadline. The thread runs the core in slices and
//! between slices serves requests, feeds PTY input to the USARTs, writes USART output to the
//! PTYs and answers waiting reads.
//!
//! Timing:
//! - `fast` (without PTYs): the board is **gated**. Its clock advances only while a host waits on
//!   it: every wait ([`UartPort::read`], [`UartPort::read_until`], [`Board::events`],
//!   [`UsbPort::control`], [`Board::sleep`]) carries a budget that becomes a deadline on the
//!   board's clock when the board receives it, and the board runs until the awaited event or that
//!   deadline, then stops. A debug transfer on the wire ([`Board::exec_on_wire`]) lets the board run
//!   for the transfer's duration. Host commands take effect at the board's current virtual time,
//!   in the order they were sent. So everything the host observes is a function of its own
//!   sequence of requests and the board's inputs, never of host load (DESIGN.md, virtual time and
//!   determinism). Wall time bounds a wait only as a safety net ([`wall_safety_net`]); tripping
//!   it is [`BoardError::WallSafetyNet`], an infrastructure error.
//! - `fast` with PTYs (an external tool such as stm32flash on the other side, which waits on its
//!   own wall clock and cannot tell the board): virtual time runs as fast as the host can (a
//!   sleeping core skips to the next event; with nothing scheduled the thread blocks until input
//!   arrives).
//! - `realistic`: virtual time is paced to wall time so that external tools see real baud rates.
//!
//! In the two wall-paced modes, while the core is halted by the debugger, virtual time follows
//! wall time (UART frames finish, watchdogs without their debug freeze run).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::system_memory::SystemBootloader;

/// Core cycles per run slice: short enough that requests are served within milliseconds.
const SLICE_CYCLES: u64 = 200_000;
/// Core cycles per run slice while a host waits for an event (bytes, a USB answer, a board
/// event): the board stops at most this long after the event (125 us at the G0's 16 MHz reset
/// clock), so the host's next request arrives about when it would on a real bench.
const EVENT_SLICE_CYCLES: u64 = 2_000;
/// Grace added to a waiting request's deadline so that the board's answer (what arrived so far)
/// wins over the timeout.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// The wall-clock limit of a wait of `budget` on a gated board's clock: generous (30x the
/// budget, at least a minute), because it only catches a board that stopped making progress.
pub fn wall_safety_net(budget: Duration) -> Duration {
    budget.saturating_mul(30).max(Duration::from_secs(60))
}

/// Thread-level settings a request may change.
pub(crate) struct Ctl {
    pub timing: Timing,
    resync: bool,
    /// Whether the board is gated (`fast` without PTYs), published for the handles.
    gated: Arc<AtomicBool>,
}

type Job = Box<dyn FnOnce(&mut Machine, &mut Ctl) + Send>;

/// What a host waits for.
enum WaitFor {
    UartRead {
        usart: usize,
        max: usize,
        reply: Reply<Vec<u8>>,
    },
    UartUntil {
        usart: usize,
        needle: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    Events {
        from: u64,
        reply: Reply<Vec<BoardEvent>>,
    },
    UsbControl {
        id: u64,
        request: String,
        reply: Reply<UsbReply>,
    },
    /// Nothing but time: the board runs for the budget.
    Sleep {
        reply: Reply<()>,
    },
}

/// A host waiting on the board, with its budget.
struct Waiter {
    what: WaitFor,
    budget: Duration,
    /// When the host sent it (wall): the deadline of wall-paced modes, the safety net's start.
    sent: Instant,
    /// The deadline on the board's clock, fixed when a gated board receives the wait.
    until: Option<VirtualTime>,
}

impl Waiter {
    fn new(what: WaitFor, budget: Duration) -> Waiter {
        Waiter { what, budget, sent: Instant::now(), until: None }
    }
    /// Wall time at which a wall-paced board answers it.
    fn answer_at(&self) -> Instant {
        self.sent.checked_add(self.budget).unwrap_or_else(|| self.sent + Duration::from_secs(365 * 24 * 3600))
    }
    /// Whether it waits for something that may happen before its deadline.
    fn awaits_event(&self) -> bool {
        !matches!(self.what, WaitFor::Sleep { .. })
    }
    fn describe(&self) -> &'static str {
        match self.what {
            WaitFor::UartRead { .. } => "a USART read",
            WaitFor::UartUntil { .. } => "a USART read until a pattern",
            WaitFor::Events { .. } => "a wait for board events",
            WaitFor::UsbControl { .. } => "a USB control transfer",
            WaitFor::Sleep { .. } => "a wait on the board's clock",
        }
    }
}

/// A control transfer on its way to the board thread.
struct UsbRequest {
    setup: UsbSetup,
    data: Vec<u8>,
    request: String,
    budget: Duration,
    sent: Instant,
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
    gated: Arc<AtomicBool>,
    /// Epoch of [`Board::clock_now`] on wall-paced boards.
    wall_epoch: Instant,
    /// The machine's clock as of its last move ([`Machine::published_now`]).
    published_now: Arc<std::sync::atomic::AtomicU64>,
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
        let published_now = m.published_now();
        let usarts: Vec<String> = m.soc.layout.usarts.iter().map(|(n, _)| n.clone()).collect();
        let (tx, rx) = channel::<Cmd>();
        let mut ptys = Vec::new();
        for p in &cfg.ptys {
            let idx = usarts.iter().position(|n| n.eq_ignore_ascii_case(&p.usart)).ok_or_else(|| {
                BoardError::NoUsart { board: cfg.name.clone(), usart: p.usart.clone(), known: usarts.join(", ") }
            })?;
            let tx = tx.clone();
            let pty =
                Pty::open(idx, p.link.as_deref(), move |input| tx.send(Cmd::HostRx(input)).is_ok()).map_err(|e| {
                    BoardError::Pty { board: cfg.name.clone(), usart: p.usart.clone(), source: std::sync::Arc::new(e) }
                })?;
            m.enable_tap(idx);
            ptys.push(pty);
        }
        let pty_paths = ptys.iter().map(|p| (p.usart, p.path.clone())).collect();
        if cfg.power_on {
            m.power_on();
        }
        let gated = Arc::new(AtomicBool::new(cfg.timing == Timing::Fast && ptys.is_empty()));
        let ctl = Ctl { timing: cfg.timing, resync: true, gated: gated.clone() };
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
            gated,
            wall_epoch: Instant::now(),
            published_now,
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
        self.inner.gated.store(false, Ordering::Release);
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

    /// Run `f` on the board thread, then let `wire_time` pass on a gated board: what a debug
    /// transfer costs on a real bench (the probe's USB round trip and the SWD bits), so that a
    /// probe polling the target lets it run, by the same amount on every run.
    pub fn exec_on_wire<R: Send + 'static>(
        &self,
        what: &str,
        wire_time: Duration,
        f: impl FnOnce(&mut Machine) -> Result<R, BoardError> + Send + 'static,
    ) -> Pending<R> {
        let (p, reply) = pending(&self.inner.name, what, self.deadline);
        let wire = virtual_duration(wire_time);
        let job: Job = Box::new(move |m, c| {
            let r = f(m);
            // The answer comes back after the round trip, as from a probe on a bench; and the
            // board's clock has its final value before the reply goes out (see `Board::now`).
            if c.gated.load(Ordering::Relaxed) {
                let target = m.now() + wire;
                while m.now() < target {
                    advance(m, target, SLICE_CYCLES);
                }
            }
            reply.send(r)
        });
        let _ = self.inner.tx.send(Cmd::Exec(job));
        p
    }

    /// Like [`Board::exec_on_wire`], for a probe polling the core's halt state while the core
    /// runs: on a gated board the core first runs until it halts or `window` of its time has
    /// passed. A debugger on a bench polls DHCSR every round trip and gives up after a wall-clock
    /// timeout (probe-rs: a flash algorithm's page timeout, 100 ms for the STM32F1); a gated board
    /// gains only `wire_time` per poll, so how many polls fit in that timeout would decide whether
    /// the algorithm finishes - a verdict depending on host load. Letting each halt poll cover a
    /// window makes the number of polls a function of the board's own time only.
    pub fn exec_on_wire_polling_halt<R: Send + 'static>(
        &self,
        what: &str,
        wire_time: Duration,
        window: Duration,
        f: impl FnOnce(&mut Machine) -> Result<R, BoardError> + Send + 'static,
    ) -> Pending<R> {
        let (p, reply) = pending(&self.inner.name, what, self.deadline);
        let (wire, window) = (virtual_duration(wire_time), virtual_duration(window));
        let job: Job = Box::new(move |m, c| {
            let gated = c.gated.load(Ordering::Relaxed);
            if gated && m.powered() && matches!(m.cpu.run_state(), hil_cortex_m::RunState::Running) {
                let until = m.now() + window;
                while m.now() < until && matches!(m.cpu.run_state(), hil_cortex_m::RunState::Running) {
                    advance(m, until, SLICE_CYCLES);
                }
            }
            let r = f(m);
            if gated {
                let target = m.now() + wire;
                while m.now() < target {
                    advance(m, target, SLICE_CYCLES);
                }
            }
            reply.send(r)
        });
        let _ = self.inner.tx.send(Cmd::Exec(job));
        p
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

    /// Send a wait; the reply comes by the board's clock, or by the wall-clock safety net.
    fn wait_on<R: Send + 'static>(
        &self,
        what: &str,
        budget: Duration,
        make: impl FnOnce(Reply<R>) -> WaitFor,
    ) -> Pending<R> {
        let wall = wall_safety_net(budget).saturating_add(ANSWER_GRACE);
        let (p, reply) = pending(&self.inner.name, what, wall);
        let _ = self.inner.tx.send(Cmd::Wait(Waiter::new(make(reply), budget)));
        p
    }

    /// Whether the board is gated (`timing: fast` without PTYs): its clock runs only while a host
    /// waits on it.
    pub fn gated(&self) -> bool {
        self.inner.gated.load(Ordering::Acquire)
    }

    /// The clock the board's waits count on: virtual time on a gated board, wall time since the
    /// board started otherwise.
    pub fn clock_now(&self) -> Result<Duration, BoardError> {
        if self.gated() { Ok(self.now().wait()?.to_std()) } else { Ok(self.inner.wall_epoch.elapsed()) }
    }

    /// Let `d` pass on the board's clock: a gated board runs for `d` of virtual time (and the call
    /// returns as soon as it has); a wall-paced board answers after `d` of wall time.
    pub fn sleep(&self, d: Duration) -> Pending<()> {
        self.wait_on("wait on the board's clock", d, |reply| WaitFor::Sleep { reply })
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
    /// Virtual time now. A gated board's clock moves only while it serves this host's requests,
    /// and it publishes the time before each reply, so the host reads it without a round trip
    /// (the rig asks for it around every wait).
    pub fn now(&self) -> Pending<VirtualTime> {
        if self.gated() {
            let ps = self.inner.published_now.load(Ordering::Acquire);
            return ready(&self.inner.name, "read virtual time", Ok(VirtualTime(ps)));
        }
        self.call("read virtual time", self.deadline, |m, _| Ok(m.now()))
    }

    // ---- diagnosis and events -------------------------------------------------------------------

    pub fn snapshot(&self) -> Pending<BoardSnapshot> {
        self.call("snapshot", self.deadline, |m, _| Ok(m.snapshot()))
    }

    /// Events with sequence number >= `from`, as soon as there is at least one, or whatever there
    /// is (possibly none) after `timeout`.
    pub fn events(&self, from: u64, timeout: Duration) -> Pending<Vec<BoardEvent>> {
        self.wait_on("wait for events", timeout, |reply| WaitFor::Events { from, reply })
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
        let end = self.clock_now()?.saturating_add(timeout);
        let mut from = from;
        loop {
            let left = end.saturating_sub(self.clock_now()?);
            let evs = self.events(from, left).wait()?;
            for e in &evs {
                if pred(e) {
                    return Ok(e.clone());
                }
                from = e.seq + 1;
            }
            if self.clock_now()? >= end {
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
        let usart = self.index;
        self.board.wait_on("read USART", timeout, |reply| WaitFor::UartRead { usart, max, reply })
    }
    /// Device output already received by the host side, without waiting (the board does not run).
    pub fn available(&self) -> Pending<usize> {
        let usart = self.index;
        self.board.call("USART bytes available", self.board.deadline, move |m, _| Ok(m.uart_available(usart)))
    }
    /// Forget device output not yet read (returns how many bytes were dropped).
    pub fn discard_input(&self) -> Pending<usize> {
        let usart = self.index;
        self.board
            .call("discard USART input", self.board.deadline, move |m, _| Ok(m.uart_take(usart, usize::MAX).len()))
    }
    /// Device output up to and including the first `needle` (the bytes after it stay for the
    /// next read). On timeout the error carries what had arrived, which also stays unread.
    pub fn read_until(&self, needle: &[u8], timeout: Duration) -> Pending<Vec<u8>> {
        let (usart, needle) = (self.index, needle.to_vec());
        self.board.wait_on("read USART until a pattern", timeout, |reply| WaitFor::UartUntil { usart, needle, reply })
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
        let end = self.board.clock_now()?.saturating_add(timeout);
        loop {
            let from = self.board.event_cursor().wait()?;
            if self.attached().wait()? == attached {
                return Ok(());
            }
            let left = end.saturating_sub(self.board.clock_now()?);
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
        let wall = wall_safety_net(timeout).saturating_add(ANSWER_GRACE);
        let (p, reply) = pending(&name, "USB control transfer", wall);
        let expected = if setup.is_in() { 0 } else { usize::from(setup.length) };
        if data.len() != expected {
            reply.send(Err(BoardError::Other {
                board: name,
                message: format!("{request}: OUT data of {} bytes for wLength {}", data.len(), setup.length),
            }));
            return p;
        }
        let sent = Instant::now();
        let _ = self.board.inner.tx.send(Cmd::Usb(UsbRequest { setup, data, request, budget: timeout, sent, reply }));
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
    let gated = ctl.gated.clone();
    let r = std::panic::catch_unwind(AssertUnwindSafe(move || board_loop(m, rx, ctl, ptys)));
    // A stopped board is not gated: its handles ask the thread, and learn it is gone.
    gated.store(false, Ordering::Release);
    if r.is_err() {
        tracing::error!(target: "hil_virtual_board", board = %name, "board thread panicked; the board is gone");
    }
}

/// `d` as a virtual duration (saturating).
fn virtual_duration(d: Duration) -> VirtualDuration {
    VirtualDuration::from_ps(d.as_nanos().saturating_mul(1_000).min(u64::MAX as u128) as u64)
}

fn board_loop(mut m: Machine, rx: Receiver<Cmd>, mut ctl: Ctl, mut ptys: Vec<Pty>) {
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut pacer = Pacer { wall0: Instant::now(), virt0: m.now() };
    let mut last = RunOutcome::Progress;
    loop {
        let gated = ctl.timing == Timing::Fast && ptys.is_empty();
        ctl.gated.store(gated, Ordering::Relaxed);
        if gated {
            if !gated_round(&mut m, &rx, &mut ctl, &mut waiters) {
                return;
            }
            ctl.resync = true;
            last = RunOutcome::Progress;
            continue;
        }
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
                    submit_usb(&mut m, r, &mut waiters);
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
        serve_waiters(&mut m, &mut waiters, false);
    }
}

fn submit_usb(m: &mut Machine, r: UsbRequest, waiters: &mut Vec<Waiter>) {
    match m.usb_submit(r.setup, r.data) {
        Ok(id) => waiters.push(Waiter {
            what: WaitFor::UsbControl { id, request: r.request, reply: r.reply },
            budget: r.budget,
            sent: r.sent,
            until: None,
        }),
        Err(e) => r.reply.send(Err(e)),
    }
}

/// One round of a gated board: take the host's requests in order (blocking while nobody waits:
/// the clock stands still), then run until the earliest deadline of the waiting hosts or an event
/// one of them waits for. Returns false when the board is to stop.
fn gated_round(m: &mut Machine, rx: &Receiver<Cmd>, ctl: &mut Ctl, waiters: &mut Vec<Waiter>) -> bool {
    let mut first = if waiters.is_empty() {
        match rx.recv() {
            Ok(c) => Some(c),
            Err(_) => return false,
        }
    } else {
        match rx.try_recv() {
            Ok(c) => Some(c),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => return false,
        }
    };
    while let Some(cmd) = first.take().or_else(|| rx.try_recv().ok()) {
        match cmd {
            Cmd::Shutdown => return false,
            Cmd::Exec(job) => job(m, ctl),
            Cmd::Wait(w) => waiters.push(w),
            Cmd::Usb(r) => submit_usb(m, r, waiters),
            // No PTY on a gated board; bytes from one that was just closed are dropped.
            Cmd::HostRx(_) => {}
        }
        if ctl.timing != Timing::Fast {
            // Switched to realistic: the wall-paced loop takes over from here.
            break;
        }
    }
    let now = m.now();
    for w in waiters.iter_mut() {
        w.until.get_or_insert(now + virtual_duration(w.budget));
    }
    // Answer what is already there before running (bytes already received, a finished transfer).
    serve_waiters(m, waiters, true);
    if let Some(target) = waiters.iter().filter_map(|w| w.until).min() {
        let slice = if waiters.iter().any(Waiter::awaits_event) { EVENT_SLICE_CYCLES } else { SLICE_CYCLES };
        advance(m, target, slice);
        serve_waiters(m, waiters, true);
    }
    true
}

/// Run the board towards `target` for at most `slice` core cycles. A core that executes nothing
/// (halted, held in reset, off, locked up) still lets the devices run; a sleeping core with nothing
/// scheduled has nothing that could wake it before `target`, so time jumps there.
fn advance(m: &mut Machine, target: VirtualTime, slice: u64) {
    let now = m.now();
    if now >= target {
        return;
    }
    let cycles = m.cpu.cycles();
    let until = m.soc.sys.clock().cycle_at(target).min(cycles.saturating_add(slice)).max(cycles + 1);
    let out = m.run(until);
    let after = m.now();
    match out {
        RunOutcome::Progress => {}
        RunOutcome::Idle if m.powered() => {
            if after < target {
                m.idle_for(target - after);
            }
        }
        _ => {
            // Nothing executed this slice: let the devices have it (bounded by the slice so that
            // waiters are looked at between).
            let slice_end = now + VirtualDuration::from_cycles(slice, m.soc.sys.clock().hz);
            let end = slice_end.min(target);
            if after < end {
                m.idle_for(end - after);
            }
        }
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

fn serve_waiters(m: &mut Machine, waiters: &mut Vec<Waiter>, gated: bool) {
    let wall = Instant::now();
    let now = m.now();
    let mut i = 0;
    while i < waiters.len() {
        let w = &waiters[i];
        // Due by its deadline: the board's clock when gated, wall time otherwise.
        let due = if gated { w.until.is_some_and(|u| now >= u) } else { wall >= w.answer_at() };
        let net_tripped = gated && !due && wall.saturating_duration_since(w.sent) >= wall_safety_net(w.budget);
        let ready = match &w.what {
            WaitFor::UartRead { usart, .. } => m.uart_available(*usart) > 0 || due,
            WaitFor::Events { from, .. } => m.next_event_seq() > *from || due,
            WaitFor::UartUntil { .. } | WaitFor::UsbControl { .. } | WaitFor::Sleep { .. } => due,
        };
        if let WaitFor::UartUntil { usart, needle, .. } = &w.what
            && let Some(got) = m.uart_take_until(*usart, needle)
        {
            if let WaitFor::UartUntil { reply, .. } = waiters.swap_remove(i).what {
                reply.send(Ok(got));
            }
            continue;
        }
        if let WaitFor::UsbControl { id, .. } = &w.what
            && let Some(done) = m.usb_completion(*id)
        {
            if let WaitFor::UsbControl { reply, .. } = waiters.swap_remove(i).what {
                reply.send(done);
            }
            continue;
        }
        if net_tripped && !ready {
            let w = waiters.swap_remove(i);
            let e = BoardError::WallSafetyNet {
                board: m.name.clone(),
                what: w.describe().to_string(),
                budget: w.budget,
                wall: wall.saturating_duration_since(w.sent),
            };
            match w.what {
                WaitFor::UartRead { reply, .. } | WaitFor::UartUntil { reply, .. } => reply.send(Err(e)),
                WaitFor::Events { reply, .. } => reply.send(Err(e)),
                WaitFor::UsbControl { id, reply, .. } => {
                    m.usb_cancel(id);
                    reply.send(Err(e))
                }
                WaitFor::Sleep { reply } => reply.send(Err(e)),
            }
            continue;
        }
        if !ready {
            i += 1;
            continue;
        }
        let w = waiters.swap_remove(i);
        let budget = w.budget;
        match w.what {
            WaitFor::UartRead { usart, max, reply } => reply.send(Ok(m.uart_take(usart, max))),
            WaitFor::Events { from, reply } => reply.send(Ok(m.events_from(from).cloned().collect())),
            WaitFor::Sleep { reply } => reply.send(Ok(())),
            WaitFor::UsbControl { id, request, reply } => {
                m.usb_cancel(id);
                reply.send(Err(BoardError::UsbTimeout { board: m.name.clone(), request, deadline: budget }))
            }
            WaitFor::UartUntil { usart, needle, reply } => {
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
