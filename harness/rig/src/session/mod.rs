//! One board opened for a run: every scenario step carried out over the board's backends
//! ([`crate::backend`]). The same code runs against lab hardware and virtual boards.
//!
//! One module per step family: [`flash`] (images, preflight, AN3155 / DfuSe / probe flashing),
//! [`protection`] (option bytes, readout protection), [`expect`] (expectations), [`control`]
//! (reset, power, DfuSe leave) and [`transcript`] (protocol transcripts for reports). Errors are
//! [`StepError`]s, which say whether the board or the rig is to blame.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hil_bootloader_host::transcript::{Direction, Event, Transcript};
use hil_bootloader_host::uart::{Config as UartConfig, LinkStats, UartClient};
use hil_chips::Chip;
use hil_config::scenario::{
    Action, BoardState, EraseMode, ExpectMemory, ExpectRegister, Flash, FlashTarget, ImageRef, NamedRegion, NamedValue,
    RegionRef, ResetFlag, ResetVia, ValueRef, Via, WriteOptionBytes,
};
use hil_config::{Board, PinLevel, Step};
use hil_report::{Diagnosis, Evidence, Status, TranscriptEntry};

use crate::backend::Backends;
use crate::engine::{BoardSession, StepCx, StepOutcome};
use crate::probe::ProbeError;
use crate::probe_ops::ProbeOps;
use crate::step_error::StepError;

mod control;
mod expect;
mod flash;
mod protection;
mod transcript;

pub use flash::{FlashedImage, NoBootloaderRegion, preflight_report};

/// The steps' view of one board.
pub struct RigSession {
    pub board: Board,
    pub chip: &'static Chip,
    pub backends: Backends,
    /// The attached probe; `None` until the first use after a power cycle ended the last session
    /// (the probe connector is `backends.probe`).
    pub probe: Option<Box<dyn ProbeOps>>,
    /// Bootloader protocol traffic of the current scenario.
    pub transcript: Transcript,
    pub last_image: Option<FlashedImage>,
    /// Where the scenario believes the board is (the strategy updates it).
    pub state: Option<BoardState>,
    /// Address of the last Go / DFU leave since the last reset (for diagnosis).
    pub last_go: Option<u32>,
    /// The level the rig last drove BOOT0 to (for diagnosis).
    pub boot0_driven: Option<bool>,
    /// Called with (bytes written, total) while flashing (a progress bar on a terminal).
    pub progress: Option<Box<dyn FnMut(u64, u64) + Send>>,
    /// What the run saw of the board (probe, bootloader answer, images), for the report. Shared
    /// so that code inside a bootloader exchange can note what it learns.
    pub seen: std::sync::Arc<std::sync::Mutex<hil_report::Seen>>,
    /// What the last AN3155 session cost on the link (retries, resyncs).
    pub uart_stats: LinkStats,
    /// What the last DfuSe download cost (retries).
    pub dfu_stats: hil_bootloader_host::dfu::DfuStats,
}

/// AN3155 connect (sync, Get Version, Get, Get ID), noting the bootloader's PID and version.
pub(crate) fn connect_noted(
    c: &mut UartClient,
    seen: &std::sync::Mutex<hil_report::Seen>,
) -> Result<hil_bootloader_host::uart::BootloaderInfo, hil_bootloader_host::uart::UartError> {
    let info = c.connect()?;
    if let Ok(mut s) = seen.lock() {
        let v = info.version.version;
        s.bootloader = Some(format!("PID {:#06x}, bootloader version {}.{} ({v:#04x})", info.id.pid, v >> 4, v & 0xF));
    }
    Ok(info)
}

/// A step's result as its outcome: `failed` when the board is to blame, `error` when the rig is.
pub(super) fn outcome_from<T>(r: Result<T, StepError>) -> StepOutcome {
    match r {
        Ok(_) => StepOutcome::passed(),
        Err(e) => outcome_of(e),
    }
}

pub(super) fn outcome_of(e: StepError) -> StepOutcome {
    e.outcome(None)
}

impl RigSession {
    /// A session; a board with a probe attaches at once (a bad probe fails early).
    pub fn new(board: Board, backends: Backends) -> Result<RigSession, StepError> {
        let chip = Chip::by_name(&board.chip.value)
            .ok_or_else(|| StepError::unsupported(format!("unknown chip {}", board.chip.value)))?;
        let probe = backends.probe.as_ref().map(|c| c.connect()).transpose()?;
        Ok(RigSession {
            board,
            chip,
            backends,
            probe,
            transcript: Transcript::new(),
            last_image: None,
            state: None,
            last_go: None,
            boot0_driven: None,
            progress: None,
            seen: Default::default(),
            uart_stats: LinkStats::default(),
            dfu_stats: Default::default(),
        })
    }

    /// The probe, re-attached if a power cycle ended the previous session.
    pub fn probe(&mut self) -> Result<&mut Box<dyn ProbeOps>, StepError> {
        if self.probe.is_none()
            && let Some(c) = &self.backends.probe
        {
            self.probe = Some(c.connect()?);
        }
        let name = &self.board.name.value;
        self.probe.as_mut().ok_or_else(|| StepError::unsupported(format!("board `{name}` has no debug probe")))
    }

    /// Run `f` with the probe (see [`RigSession::probe`]).
    pub fn with_probe<T>(
        &mut self,
        f: impl FnOnce(&mut Box<dyn ProbeOps>) -> Result<T, ProbeError>,
    ) -> Result<T, StepError> {
        Ok(f(self.probe()?)?)
    }

    /// The board lost power: its debug session is gone.
    pub(super) fn forget_probe(&mut self) {
        self.probe = None;
    }

    pub(super) fn serial(&mut self) -> Result<&mut crate::serial_link::SerialLink, StepError> {
        let name = self.board.name.value.clone();
        self.backends
            .serial
            .as_mut()
            .ok_or_else(|| StepError::unsupported(format!("board `{name}` has no serial link")))
    }

    pub(super) fn lines(&mut self) -> Result<&mut Box<dyn crate::backend::ControlLines + Send>, StepError> {
        let name = self.board.name.value.clone();
        self.backends
            .lines
            .as_mut()
            .ok_or_else(|| StepError::unsupported(format!("board `{name}` cannot drive BOOT0/NRST")))
    }

    pub fn application_base(&self) -> u32 {
        self.board.application_base(self.chip)
    }

    /// Run `f` with an AN3155 client that has the serial port to itself. No wait of the client
    /// (replies, resyncs, retries) goes past the step's deadline; what the link cost (retries,
    /// resyncs) is kept in [`RigSession::uart_stats`] for the step's evidence.
    pub fn uart_session<R>(
        &mut self,
        cx: &StepCx,
        f: impl FnOnce(&mut UartClient) -> Result<R, StepError>,
    ) -> Result<R, StepError> {
        let transcript = self.transcript.clone();
        let remaining = cx.remaining();
        let config = uart_config(self.chip, remaining);
        let deadline = cx.deadline.clone();
        let link = self.serial()?;
        let (r, stats) = link.exclusive(|port, clock| {
            let mut client = UartClient::with_clock(port, config, clock);
            client.set_transcript(Some(Box::new(transcript)));
            client.set_deadline(Some(deadline));
            let r = f(&mut client);
            (r, client.stats())
        })?;
        self.uart_stats = stats;
        r
    }

    /// Resolve a value written in a scenario.
    pub fn resolve(&mut self, v: &ValueRef) -> Result<u32, StepError> {
        Ok(match v {
            ValueRef::Literal(x) => *x,
            ValueRef::Symbol(name) => {
                let img = self
                    .last_image
                    .as_ref()
                    .ok_or_else(|| StepError::unsupported(format!("symbol:{name} needs an image flashed first")))?;
                img.symbol(name)
                    .ok_or_else(|| StepError::unsupported(format!("symbol `{name}` is not in {}", img.name)))?
            }
            ValueRef::Named(n) => match n {
                NamedValue::ApplicationBase => self.application_base(),
                NamedValue::SystemMemoryBase => self.chip.bootloader.jump_address,
                NamedValue::SystemMemoryVectorTable => {
                    if self.chip.remap.is_some() {
                        0
                    } else {
                        self.chip.bootloader.jump_address
                    }
                }
                NamedValue::ApplicationInitialSp | NamedValue::ApplicationResetHandler => {
                    let base = self.application_base();
                    let word = if *n == NamedValue::ApplicationInitialSp { 0 } else { 4 };
                    let v = self.read_word(base + word)?;
                    if word == 4 { v & !1 } else { v }
                }
                NamedValue::ImageBase | NamedValue::ImageInitialSp | NamedValue::ImageResetHandler => {
                    let img = self
                        .last_image
                        .as_ref()
                        .ok_or_else(|| StepError::unsupported(format!("{} needs an image flashed first", n.name())))?;
                    let base = img.base().ok_or_else(|| StepError::unsupported("the image flashed last is empty"))?;
                    let no_table = || StepError::unsupported("the image has no vector table");
                    match n {
                        NamedValue::ImageBase => base,
                        NamedValue::ImageInitialSp => img.image.read_u32(base).ok_or_else(no_table)?,
                        _ => img.image.read_u32(base + 4).ok_or_else(no_table)? & !1,
                    }
                }
            },
        })
    }

    /// A word of the board's memory: from the image flashed last when it covers the address,
    /// else through the probe.
    pub(super) fn read_word(&mut self, addr: u32) -> Result<u32, StepError> {
        if let Some(v) = self.last_image.as_ref().and_then(|i| i.image.read_u32(addr)) {
            return Ok(v);
        }
        let bytes = self.probe()?.read_memory(addr, 4)?;
        word_of(&bytes, addr)
    }

    pub fn region(&self, r: &RegionRef) -> Result<(u32, u64), StepError> {
        let m = &self.chip.memory;
        Ok(match r {
            RegionRef::Range { base, size } => (base.0, size.0 as u64),
            RegionRef::Named(n) => match n {
                NamedRegion::Application => {
                    let a = self.application_base();
                    (a, m.flash.area().end() - a as u64)
                }
                NamedRegion::SystemMemory => (m.system_memory.base, m.system_memory.size as u64),
                NamedRegion::Flash => (m.flash.base, m.flash.size as u64),
                NamedRegion::Sram => (m.sram.base, m.sram.size as u64),
                NamedRegion::Bootloader => {
                    let bl = self
                        .board
                        .layout
                        .bootloader
                        .as_ref()
                        .ok_or_else(|| StepError::unsupported("the board's layout has no bootloader region"))?;
                    (bl.value.base.0, bl.value.size.0 as u64)
                }
                NamedRegion::Image => {
                    let img = self
                        .last_image
                        .as_ref()
                        .ok_or_else(|| StepError::unsupported("region `image` needs an image flashed first"))?;
                    let (Some(first), Some(last)) = (img.image.segments.first(), img.image.segments.last()) else {
                        return Err(StepError::unsupported(format!("the image {} is empty", img.name)));
                    };
                    (first.address, last.end() - first.address as u64)
                }
            },
        })
    }
}

pub(super) fn region_name(r: &RegionRef) -> String {
    match r {
        RegionRef::Named(n) => format!("{n:?}").to_lowercase(),
        RegionRef::Range { base, size } => format!("{base}+{:#x}", size.0),
    }
}

/// The little-endian word at the start of a probe read of `addr`.
pub(crate) fn word_of(bytes: &[u8], addr: u32) -> Result<u32, StepError> {
    match bytes.get(..4) {
        Some(b) => Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(StepError::Probe(ProbeError::Image {
            image: format!("memory at {addr:#010x}"),
            message: format!("short read: {} of 4 bytes", bytes.len()),
        })),
    }
}

/// CRC-32 (IEEE, as zlib computes it).
pub fn crc32(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(data)
}

impl BoardSession for RigSession {
    fn clock(&self) -> std::sync::Arc<dyn crate::backend::Clock> {
        self.backends.clock.clone()
    }

    fn begin_scenario(&mut self, _: &hil_config::Scenario) -> Result<(), StepError> {
        if let Some(s) = self.backends.serial.as_mut() {
            // A board still printing what the last scenario started would leave its tail here.
            if !s.clear_when_quiet(Duration::from_millis(30), Duration::from_millis(300))? {
                tracing::debug!("{}: console still busy after 300 ms; cleared anyway", s.name());
            }
        }
        self.transcript = Transcript::new();
        self.last_image = None;
        self.state = None;
        self.last_go = None;
        Ok(())
    }

    fn run_step(&mut self, step: &Step, cx: &StepCx) -> StepOutcome {
        let seen = self.seen.clone();
        match &step.action {
            Action::PowerCycle(p) => {
                let r = self.power_cycle(p.off.map(|d| d.std()).unwrap_or(Duration::from_millis(10)));
                self.state = None;
                self.last_go = None;
                outcome_from(r)
            }
            Action::Reset(r) => outcome_from(self.reset_board(r.via)),
            Action::SetBoot0(level) => {
                let high = *level == PinLevel::High;
                let r = self.lines().and_then(|l| l.set_boot0(high).map_err(StepError::from));
                if r.is_ok() {
                    self.boot0_driven = Some(high);
                }
                outcome_from(r)
            }
            Action::WriteOptionBytes(w) => outcome_from(self.write_option_bytes(w, cx)),
            Action::Flash(f) => self.flash_step(f, cx),
            Action::Go(g) => {
                let addr = match self.resolve(&g.address.value) {
                    Ok(a) => a,
                    Err(e) => return outcome_of(e),
                };
                let r = self.uart_session(cx, |c| {
                    crate::session::connect_noted(c, &seen)?;
                    Ok(c.go(addr)?)
                });
                self.state = None;
                self.last_go = Some(addr);
                outcome_from(r)
            }
            Action::Leave(l) => {
                let addr = match l.address.as_ref().map(|a| self.resolve(&a.value)).transpose() {
                    Ok(a) => a,
                    Err(e) => return outcome_of(e),
                };
                outcome_from(self.leave_dfu(addr))
            }
            Action::Send(s) => {
                let bytes = s.bytes.clone().unwrap_or_else(|| s.text.clone().unwrap_or_default().into_bytes());
                outcome_from(self.serial().and_then(|l| l.send(&bytes).map_err(StepError::from)))
            }
            Action::Halt(_) => outcome_from(self.with_probe(|p| p.halt())),
            Action::Resume(_) => outcome_from(self.with_probe(|p| p.resume())),
            Action::ResetHalt(_) => outcome_from(self.with_probe(|p| p.reset_halt())),
            Action::Wait(d) if d.std() > cx.remaining() => StepOutcome::error(format!(
                "wait {d} does not fit in what is left of the step's deadline ({:?}): not waited",
                cx.remaining()
            )),
            Action::Wait(d) => {
                // In slices on the board's clock, so that Ctrl-C does not sit out a long wait.
                let end = cx.clock().now().saturating_add(d.std());
                loop {
                    let left = end.saturating_sub(cx.clock().now());
                    if left.is_zero() {
                        break StepOutcome::passed();
                    }
                    if cx.cancel.is_cancelled() {
                        break StepOutcome::error("wait cut short");
                    }
                    cx.clock().sleep(left.min(Duration::from_millis(50)));
                }
            }
            Action::Enter(e) => crate::strategy::enter(self, e.state, e.via, cx),
            Action::ReadoutUnprotect(r) => outcome_from(
                match r.via {
                    Via::Uart => self.uart_session(cx, |c| {
                        crate::session::connect_noted(c, &seen)?;
                        Ok(c.readout_unprotect()?)
                    }),
                    Via::Dfu => self.open_dfu().and_then(|mut d| d.read_unprotect().map_err(StepError::from)),
                    Via::Probe => Err(StepError::unsupported("readout-unprotect goes through a bootloader")),
                }
                .and_then(|()| self.await_protection_removed(cx)),
            ),
            Action::ExpectBootloader(b) => self.expect_bootloader(b.via, b.pid.as_ref().map(|p| p.value.0), cx),
            Action::ExpectSerial(e) => {
                let (deadline, cancel) = (cx.deadline.clone(), cx.cancel.clone());
                match self.serial() {
                    Ok(link) => match link.expect(&e.contains, &deadline, &cancel) {
                        Ok(_) => StepOutcome::passed(),
                        Err(err) => {
                            let unread = link.unread();
                            let mut o = StepError::from(err).outcome(None);
                            if !unread.is_empty() {
                                o = o.with_evidence(Evidence::Text {
                                    label: "serial text searched (received since the last match)".into(),
                                    text: unread,
                                });
                            }
                            o
                        }
                    },
                    Err(err) => outcome_of(err),
                }
            }
            Action::ExpectRegister(e) => self.expect_register(e),
            Action::ExpectMemory(m) => self.expect_memory(m),
            Action::ExpectUsb(u) => self.expect_usb(u.present, cx),
            Action::ExpectState(s) => crate::strategy::expect_state(self, *s, cx),
            Action::ExpectResetCause(f) => self.expect_reset_cause(*f),
        }
    }

    fn diagnose(&mut self, failed_step: &Step, outcome: &StepOutcome) -> Option<Diagnosis> {
        crate::diagnosis::diagnose(self, failed_step, outcome)
    }

    fn take_scenario_evidence(&mut self) -> Vec<Evidence> {
        let mut ev = Vec::new();
        if let Some(s) = self.backends.serial.as_mut() {
            // What the board sent since the last read is part of the story (nothing runs meanwhile).
            if let Err(e) = s.drain() {
                tracing::debug!("{}: reading the rest of the console: {e}", s.name());
            }
            let text = s.console_text();
            if !text.is_empty() {
                ev.push(Evidence::Text { label: format!("serial output ({})", s.name()), text });
            }
        }
        ev.extend(self.transcript_evidence());
        ev
    }

    fn seen(&self) -> hil_report::Seen {
        let mut seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        if seen.probe.is_none() && self.probe.is_some() {
            // A virtual probe's serial carries the process id (probe-rs lists probes process-wide);
            // the report names it by its board so that runs compare equal.
            seen.probe = if self.board.virtual_board.is_some() {
                Some(format!("hil virtual probe of {}", self.board.name.value))
            } else {
                self.probe.as_ref().and_then(|p| p.identity())
            };
        }
        seen
    }

    fn close(&mut self) {
        self.probe = None;
        self.backends.probe = None;
        self.backends.serial = None;
        self.backends.keep_alive = None;
    }
}

/// How many sync attempts fit in `remaining`: each waits up to two reads (0x7F, then a second
/// 0x7F after silence). At least one, so a short step still tries.
/// The AN3155 client's configuration for `chip` with `remaining` left of the step: completion
/// timeouts from the chip's flash timing where the chip data has it, and its memory map for NACK
/// messages.
///
/// stm32flash's completion timeouts (1 s per block, 5 s per page) are for any chip; with the
/// datasheet's maximum figures the host learns of a lost byte in a block or page list in a
/// fraction of that, which leaves time to retry within the step (issue 19: one lost byte in
/// the page list of a 48-page Extended Erase used to cost 240 s). Margins: 4x the maximum plus a
/// fixed 100 ms for the link's latency.
pub fn uart_config(chip: &Chip, remaining: Duration) -> UartConfig {
    let mut config = UartConfig::default();
    let t = &mut config.timeouts;
    if let Some(ft) = &chip.flash_timing {
        let us = |n: u64| Duration::from_micros(n);
        let margin = Duration::from_millis(100);
        let unit = chip.flash_controller.as_ref().map_or(8, |c| c.program_unit.max(1)) as u64;
        let per_block = 256u64.div_ceil(unit) * ft.program_double_word_us.max as u64;
        t.block_write = t.block_write.min(margin + us(4 * per_block));
        t.page_erase = t.page_erase.min(margin + us(4 * ft.page_erase_us.max as u64));
        t.mass_erase = t.mass_erase.min(Duration::from_secs(1) + us(4 * ft.mass_erase_us.max as u64));
    }
    for d in [
        &mut t.read,
        &mut t.block_write,
        &mut t.page_erase,
        &mut t.mass_erase,
        &mut t.readout_unprotect,
        &mut t.checksum,
        &mut t.resync,
    ] {
        *d = (*d).min(remaining.max(Duration::from_millis(50)));
    }
    config.sync_attempts = sync_attempts_within(remaining, t.read, config.sync_attempts);
    let m = &chip.memory;
    let area = |a: &hil_chips::Area| a.base as u64..a.end();
    config.memory_map =
        [Some(m.flash.area()), Some(m.sram.clone()), Some(m.system_memory.clone()), Some(m.option_bytes.clone())]
            .into_iter()
            .chain([m.otp.clone(), m.engineering_bytes.clone()])
            .flatten()
            .map(|a| area(&a))
            .collect();
    config
}

pub(super) fn sync_attempts_within(remaining: Duration, read: Duration, configured: u32) -> u32 {
    let per_attempt = (read * 2).max(Duration::from_millis(1));
    let fit = u32::try_from(remaining.as_millis() / per_attempt.as_millis()).unwrap_or(u32::MAX);
    configured.min(fit.max(1))
}

#[cfg(test)]
mod sync_budget_tests {
    use super::sync_attempts_within;
    use std::time::Duration;

    #[test]
    pub(super) fn sync_attempts_never_outlast_the_step() {
        let ms = Duration::from_millis;
        assert_eq!(sync_attempts_within(ms(600), ms(500), 3), 1, "one attempt, even when it cannot fit");
        assert_eq!(sync_attempts_within(ms(50), ms(50), 3), 1);
        assert_eq!(sync_attempts_within(ms(2100), ms(500), 3), 2);
        assert_eq!(sync_attempts_within(ms(30_000), ms(500), 3), 3, "the configured count caps a long step");
    }
}
