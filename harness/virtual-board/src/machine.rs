//! The whole board executed synchronously: chip ([`Soc`]), core ([`Cpu`]) and ROM model, with
//! power, NRST, resets, the ROM hand-off, host-side UART traffic, the debug port operations and
//! the diagnosis snapshot. The board thread ([`crate::board`]) owns one `Machine`; tests may
//! drive one directly.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hil_chips::PinId;
use hil_cortex_m::{
    Bus, BusFault, BusFaultKind, CoreSnapshot, Cpu, CpuConfig, DeviceId, Reg, ResetCause, RunState, Size, Stop,
    VirtualDuration, VirtualTime,
};

use crate::config::BoardConfig;
use crate::error::BoardError;
use crate::periph::iwdg::Iwdg;
use crate::periph::rcc::reset_flag_names;
use crate::periph::usart::RxFrame;
use crate::periph::usb::{UsbDevice, UsbFailure, UsbReply, UsbSetup};
use crate::periph::wwdg::Wwdg;
use crate::shared::{BootInfo, BootTargetName, Counters, RdpLevel, ResetCauseName, ser_time};
use crate::soc::Soc;
use crate::system_memory::{self, RecordingRom, RomControl, RomCx, RomEntry, RomEntryKind, SystemBootloader};

/// Something that happened on the board, in virtual-time order.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BoardEvent {
    pub seq: u64,
    #[serde(serialize_with = "ser_time")]
    pub at: VirtualTime,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum EventKind {
    PowerOn,
    PowerOff,
    /// NRST driven low (the chip is held in reset until it is released).
    NrstAsserted,
    /// A system reset completed and the core starts (or halts on vector catch).
    Reset {
        cause: ResetCauseName,
        boot: BootInfo,
    },
    /// The core reached the ROM's reset handler.
    RomEntered(RomEntry),
    /// The ROM model moved the core elsewhere (Go / leave).
    RomLeft {
        pc: u32,
        msp: u32,
    },
    /// An exception vectored through the ROM's vector table.
    RomException {
        exception: u32,
    },
    /// An output pin changed level.
    Pin {
        pin: String,
        level: bool,
    },
    /// The core entered or left debug state.
    Halted {
        reason: String,
    },
    Resumed,
    /// The core locked up (a fault it cannot handle).
    Lockup {
        pc: u32,
        fault: Option<String>,
    },
    /// Firmware executed the ROM trap instruction outside system memory; the core is stopped.
    ForeignTrap {
        pc: u32,
    },
    /// The USB device appeared on (D+ pull-up on) or left the bus.
    Usb {
        attached: bool,
    },
}

/// Debug port counters: proof of what ran (e.g. that ST's flash algorithm really executed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DebugCounters {
    pub instructions: u64,
    pub cycles: u64,
    pub accesses: Counters,
}

/// Flash controller state for a diagnosis.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FlashSnapshot {
    pub acr: u32,
    pub sr: u32,
    pub cr: u32,
    /// Option registers as written (offset, value).
    pub option_registers: Vec<(u32, u32)>,
    /// Option words as loaded at the last OBL (name, value).
    pub loaded: Vec<(String, u32)>,
    pub rdp: RdpLevel,
    pub empty: bool,
}

/// A USART's configuration and flags for a diagnosis.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UsartSnapshot {
    pub name: String,
    pub cr1: u32,
    pub brr: u32,
    pub isr: u32,
    pub baud: Option<u32>,
    pub lost_while_off: u64,
    pub overruns: u64,
}

/// Everything a failed expectation's diagnosis needs, captured at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardSnapshot {
    pub name: String,
    pub chip: String,
    pub at: VirtualTime,
    pub powered: bool,
    pub nrst_low: bool,
    pub run_state: String,
    pub core: Option<CoreSnapshot>,
    pub last_fault: Option<String>,
    /// The register holding the chip's remap field (chip data `remap.register`: SYSCFG_CFGR1 on
    /// the G0, SYSCFG_MEMRMP on the G4); 0 on parts without one (F1).
    pub remap_register: u32,
    /// What 0x00000000 shows now.
    pub alias: BootTargetName,
    pub flash: FlashSnapshot,
    /// Raw option area (words and complements).
    pub option_bytes: Vec<u8>,
    pub rcc_csr: u32,
    pub reset_flags: Vec<&'static str>,
    /// The RCC enable registers in the board's four gate slots (G0: IOPENR, AHBENR, APBENR1,
    /// APBENR2; F1: -, AHBENR, APB1ENR, APB2ENR; G4: AHB2ENR, AHB1ENR, APB1ENR1, APB2ENR).
    pub rcc_enables: [u32; 4],
    pub hclk_hz: u32,
    pub boot: Option<BootInfo>,
    pub boot0_pin: bool,
    pub rom_active: bool,
    pub rom_model: String,
    /// What the ROM model noticed (CPU state at entry, interface in use, ...).
    pub rom_notes: Vec<String>,
    /// Whether the USB device is on the bus (`None`: no USB device).
    pub usb_attached: Option<bool>,
    pub iwdg_running: bool,
    pub usarts: Vec<UsartSnapshot>,
    pub counters: DebugCounters,
}

/// What one call of [`Machine::run`] ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Executed (or slept) up to the budget or an event.
    Progress,
    /// Asleep with nothing scheduled: only outside input can wake the core.
    Idle,
    /// Halted in debug state: time passes only through [`Machine::idle_for`].
    Halted,
    /// Powered off, held in reset, locked up or stopped on a foreign trap.
    Stopped,
}

const EVENT_LOG_LIMIT: usize = 100_000;
const DHCSR: u32 = 0xE000_EDF0;
const DEMCR: u32 = 0xE000_EDFC;
const DBGKEY: u32 = 0xA05F_0000;

pub struct Machine {
    pub name: String,
    pub soc: Soc,
    pub cpu: Cpu,
    rom: Box<dyn SystemBootloader>,
    rom_active: bool,
    powered: bool,
    nrst_low: bool,
    /// Powered on while NRST was low: the core's power-on reset happens at the release.
    por_pending: bool,
    stuck: Option<u32>,
    instructions_at_reset: u64,
    halted_seen: Option<String>,
    lockup_seen: bool,
    events: VecDeque<BoardEvent>,
    next_seq: u64,
    /// Device output per USART, for in-process readers.
    uart_out: Vec<VecDeque<u8>>,
    uart_limit: usize,
    /// Copies of device output for PTYs (per USART, when enabled).
    taps: Vec<Option<Vec<u8>>>,
    /// The virtual time (ps) as of the last time the clock moved, for readers on other threads
    /// (a gated board's host reads its clock without a round trip; see `Board::now`).
    published_now: Arc<AtomicU64>,
}

impl Machine {
    /// Build the board (powered off). `rom`: the ROM model; by default the model of ST's ROM
    /// bootloader ([`crate::StRom`]) on chips whose bootloader the virtual ROM knows, else a
    /// [`RecordingRom`].
    pub fn new(cfg: &BoardConfig, rom: Option<Box<dyn SystemBootloader>>) -> Result<Machine, BoardError> {
        let soc = Soc::new(cfg)?;
        let rom: Box<dyn SystemBootloader> = match rom {
            Some(r) => r,
            None => match crate::rom_bootloader::StRom::for_chip(soc.chip) {
                Ok(r) => Box::new(r),
                Err(e) => {
                    tracing::info!(target: "hil_virtual_board", chip = %soc.chip.name, "no ROM bootloader model: {e}");
                    Box::new(RecordingRom::default())
                }
            },
        };
        // The core profile follows the chip data (`core`): ARMv6-M for the M0+, ARMv7-M for the M3
        // (PM0056), ARMv7E-M for the M4.
        let ext = soc.chip.interrupts.external;
        let mut cc = match soc.chip.core {
            hil_chips::CoreKind::CortexM0Plus => CpuConfig::cortex_m0plus(ext),
            hil_chips::CoreKind::CortexM3 => CpuConfig::cortex_m3(ext),
            hil_chips::CoreKind::CortexM4 => CpuConfig::cortex_m4(ext),
        };
        cc.priority_bits = soc.chip.interrupts.priority_bits;
        // MPU_TYPE.DREGION per chip data (the F103CB has no MPU, PM0056 4.2).
        if let Some(mpu) = &soc.chip.mpu {
            cc.mpu_regions = mpu.regions;
        }
        cc.native_trap = Some(system_memory::ROM_TRAP);
        let cpu = Cpu::new(cc);
        let n = soc.layout.usarts.len();
        Ok(Machine {
            name: cfg.name.clone(),
            soc,
            cpu,
            rom,
            rom_active: false,
            powered: false,
            nrst_low: false,
            por_pending: false,
            stuck: None,
            instructions_at_reset: 0,
            halted_seen: None,
            lockup_seen: false,
            events: VecDeque::new(),
            next_seq: 0,
            uart_out: vec![VecDeque::new(); n],
            uart_limit: cfg.uart_buffer.max(1),
            taps: vec![None; n],
            published_now: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn now(&self) -> VirtualTime {
        self.soc.sys.time_at(self.cpu.cycles())
    }
    /// A cell that holds [`Machine::now`] as of the end of every run, skip or step: the clock
    /// moves only there, and each of them ends before a reply to the host goes out.
    pub fn published_now(&self) -> Arc<AtomicU64> {
        self.published_now.clone()
    }
    pub fn powered(&self) -> bool {
        self.powered
    }
    pub fn nrst_low(&self) -> bool {
        self.nrst_low
    }
    pub fn rom_active(&self) -> bool {
        self.rom_active
    }
    /// The ROM model (downcast with `as_any`).
    pub fn rom(&mut self) -> &mut dyn SystemBootloader {
        self.rom.as_mut()
    }

    fn push_event(&mut self, kind: EventKind) {
        let e = BoardEvent { seq: self.next_seq, at: self.now(), kind };
        self.next_seq += 1;
        if self.events.len() >= EVENT_LOG_LIMIT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Events with `seq >= from`.
    pub fn events_from(&self, from: u64) -> impl Iterator<Item = &BoardEvent> {
        self.events.iter().filter(move |e| e.seq >= from)
    }
    pub fn next_event_seq(&self) -> u64 {
        self.next_seq
    }

    // ---- power and reset ----------------------------------------------------------------------

    /// Power on: POR of the chip (RAM content lost, option bytes loaded, empty check), then the
    /// core's reset sequence.
    pub fn power_on(&mut self) {
        if self.powered {
            return;
        }
        self.powered = true;
        self.push_event(EventKind::PowerOn);
        let cycle = self.cpu.cycles();
        let boot = self.soc.power_on(cycle);
        if self.nrst_low {
            // Held in reset: the core's power-on reset happens now (debug registers cleared, so
            // a probe can connect under reset); it starts when NRST is released.
            self.cpu.power_on_reset(&mut self.soc.sys);
            self.por_pending = true;
            return;
        }
        self.start_core(ResetCause::PowerOn, boot, true);
    }

    /// Power off: everything stops; RAM and register content are lost at the next power-on.
    pub fn power_off(&mut self) {
        if !self.powered {
            return;
        }
        // Without power the D+ pull-up goes: the USB device leaves the bus.
        if let Some(id) = self.soc.layout.usb {
            let cycle = self.cpu.cycles();
            self.soc.sys.with_device(id, cycle, None, |d, cx| d.reset(ResetCause::PowerOn, cx));
            self.drain_outputs();
        }
        self.powered = false;
        self.rom_active = false;
        self.stuck = None;
        self.soc.sys.scheduler.clear();
        self.soc.sys.irq.clear();
        self.rom.on_reset(ResetCause::PowerOn);
        self.push_event(EventKind::PowerOff);
    }

    /// A system reset (SYSRESETREQ, IWDG, OBL, NRST pulse): every peripheral and the core; SRAM
    /// survives; the boot mode is selected again (option bytes reloaded for OBL only).
    pub fn system_reset(&mut self, cause: ResetCause) {
        if !self.powered {
            return;
        }
        let cycle = self.cpu.cycles();
        let boot = self.soc.reset(cause, cycle);
        if self.nrst_low {
            return;
        }
        self.start_core(cause, boot, false);
    }

    fn start_core(&mut self, cause: ResetCause, boot: BootInfo, power_on: bool) {
        self.rom_active = false;
        self.stuck = None;
        self.lockup_seen = false;
        self.rom.on_reset(cause);
        if power_on {
            self.cpu.power_on_reset(&mut self.soc.sys);
        } else {
            self.cpu.system_reset(&mut self.soc.sys);
        }
        self.instructions_at_reset = self.cpu.instructions();
        self.push_event(EventKind::Reset { cause: cause.into(), boot });
        self.sync_debug_state();
    }

    /// Drive NRST: low holds the chip in reset, the release (high) performs a pin reset.
    pub fn set_nrst(&mut self, low: bool) {
        if low == self.nrst_low {
            return;
        }
        self.nrst_low = low;
        if !self.powered {
            return;
        }
        if low {
            self.push_event(EventKind::NrstAsserted);
            // Peripherals are held in reset: stop what they were doing.
            let cycle = self.cpu.cycles();
            self.soc.reset(ResetCause::Pin, cycle);
            self.rom_active = false;
        } else if std::mem::take(&mut self.por_pending) {
            // Released after a power-on under reset: the debugger's settings made meanwhile
            // (DHCSR, DEMCR vector catch) stay; the event reports the power-on.
            let cycle = self.cpu.cycles();
            let boot = self.soc.reset(ResetCause::Pin, cycle);
            self.start_core(ResetCause::PowerOn, boot, false);
        } else {
            self.system_reset(ResetCause::Pin);
        }
    }

    /// Drive BOOT0 (latched at the next reset).
    pub fn set_boot0(&mut self, level: bool) {
        self.soc.set_boot0(level);
    }

    /// Drive a GPIO pin from outside (`None` releases it).
    pub fn drive_pin(&mut self, pin: PinId, level: Option<bool>) {
        self.soc.drive_pin(pin, level);
    }

    // ---- execution ----------------------------------------------------------------------------

    /// Run the core up to `until_cycle` (or the next thing the board must handle).
    pub fn run(&mut self, until_cycle: u64) -> RunOutcome {
        if !self.powered || self.nrst_low || self.stuck.is_some() {
            return RunOutcome::Stopped;
        }
        let stop = self.cpu.run(&mut self.soc.sys, until_cycle);
        self.dispatch_events();
        let outcome = match stop {
            Stop::Budget => RunOutcome::Progress,
            Stop::Sleeping => {
                // A device event dispatched just now (a ROM wake, an interrupt line) wakes the
                // core on the next run: not idle yet.
                if self.soc.sys.scheduler.is_empty()
                    && self.cpu.systick_next_event().is_none()
                    && !hil_cortex_m::Bus::attention(&self.soc.sys)
                {
                    RunOutcome::Idle
                } else {
                    RunOutcome::Progress
                }
            }
            Stop::Halted(_) => RunOutcome::Halted,
            Stop::ResetRequested(cause) => {
                self.system_reset(cause);
                RunOutcome::Progress
            }
            Stop::Lockup { pc } => {
                if !self.lockup_seen {
                    self.lockup_seen = true;
                    let fault = self.cpu.last_fault().map(|f| f.to_string());
                    self.push_event(EventKind::Lockup { pc, fault });
                }
                RunOutcome::Stopped
            }
            Stop::NativeTrap { pc, .. } => {
                self.handle_trap(pc);
                RunOutcome::Progress
            }
        };
        self.sync_debug_state();
        outcome
    }

    /// Let `d` of virtual time pass without executing (the core is halted or the board waits),
    /// dispatching device events on the way.
    pub fn idle_for(&mut self, d: VirtualDuration) {
        let hz = self.soc.sys.clock().hz;
        let cycles = hil_cortex_m::time::cycles_in(d, hz).max(1);
        let target = self.cpu.cycles().saturating_add(cycles);
        while self.cpu.cycles() < target {
            let next = self.soc.sys.deadline_cycle().min(target).max(self.cpu.cycles() + 1);
            self.cpu.skip_cycles(next - self.cpu.cycles());
            self.dispatch_events();
            if let Some(cause) = self.cpu.absorb_attention(&mut self.soc.sys) {
                self.system_reset(cause);
            }
        }
        self.sync_debug_state();
    }

    /// Dispatch device events that are due; wake the ROM idle loop when something happened.
    fn dispatch_events(&mut self) {
        let cycle = self.cpu.cycles();
        let now = self.soc.sys.time_at(cycle);
        let wake = self.soc.layout.rom_wake;
        let mut other = false;
        while let Some((dev, tag, at)) = self.soc.sys.scheduler.pop_due(now) {
            self.soc.sys.with_device(dev, cycle, Some(at), |d, cx| d.event(tag, cx));
            other |= dev != wake;
        }
        if other {
            self.wake_rom(None);
        }
        self.drain_outputs();
    }

    /// Ask the core to pass the ROM idle loop again (now, or at `at`).
    fn wake_rom(&mut self, at: Option<VirtualTime>) {
        if !self.rom_active {
            return;
        }
        let cycle = self.cpu.cycles();
        let now = self.soc.sys.time_at(cycle);
        let id: DeviceId = self.soc.layout.rom_wake;
        self.soc.sys.with_device(id, cycle, None, |_, cx| cx.schedule_at(at.unwrap_or(now).max(now), 1));
    }

    fn drain_outputs(&mut self) {
        let out = std::mem::take(&mut self.soc.sys.shared.uart_out);
        for o in out {
            if let Some(Some(tap)) = self.taps.get_mut(o.usart) {
                tap.push(o.byte);
            }
            if let Some(q) = self.uart_out.get_mut(o.usart) {
                if q.len() >= self.uart_limit {
                    q.pop_front();
                }
                q.push_back(o.byte);
            }
        }
        let pins = std::mem::take(&mut self.soc.sys.shared.pin_changes);
        for p in pins {
            self.push_event(EventKind::Pin { pin: p.pin.to_string(), level: p.level });
        }
        let usb = std::mem::take(&mut self.soc.sys.shared.usb_changes);
        for u in usb {
            self.push_event(EventKind::Usb { attached: u.attached });
        }
    }

    /// Keep the shared "core halted" flag (watchdog debug freeze) and the event log in step
    /// with the core.
    fn sync_debug_state(&mut self) {
        self.published_now.store(self.now().as_ps(), Ordering::Release);
        let halted = match self.cpu.run_state() {
            RunState::Halted(r) => Some(format!("{r:?}")),
            _ => None,
        };
        if halted != self.halted_seen {
            match &halted {
                Some(r) => self.push_event(EventKind::Halted { reason: r.clone() }),
                None => self.push_event(EventKind::Resumed),
            }
            self.halted_seen = halted.clone();
        }
        let debug = &mut self.soc.sys.shared.debug;
        if debug.core_halted != halted.is_some() || debug.freeze_written {
            debug.core_halted = halted.is_some();
            debug.freeze_written = false;
            self.refreeze_watchdogs();
        }
    }

    fn refreeze_watchdogs(&mut self) {
        let cycle = self.cpu.cycles();
        if let Some(id) = self.soc.layout.iwdg {
            self.soc.sys.with_device(id, cycle, None, |d, cx| {
                let any: &mut dyn std::any::Any = d;
                if let Some(w) = any.downcast_mut::<Iwdg>() {
                    w.refreeze(cx);
                }
            });
        }
        if let Some(id) = self.soc.layout.wwdg {
            self.soc.sys.with_device(id, cycle, None, |d, cx| {
                let any: &mut dyn std::any::Any = d;
                if let Some(w) = any.downcast_mut::<Wwdg>() {
                    w.refreeze(cx);
                }
            });
        }
    }

    // ---- ROM hand-off ---------------------------------------------------------------------------

    fn handle_trap(&mut self, pc: u32) {
        let l = self.soc.layout.rom;
        let site = if pc == l.entry {
            0
        } else if pc == l.park {
            1
        } else if pc == l.exc {
            2
        } else {
            // UDF #ROM_TRAP outside the hand-off code: not ours to interpret. The core is
            // stopped (a real chip would take a HardFault) and the event names the address.
            self.stuck = Some(pc);
            self.push_event(EventKind::ForeignTrap { pc });
            return;
        };
        let mut cx = RomCx {
            cpu: &mut self.cpu,
            sys: &mut self.soc.sys,
            layout: l,
            wake: self.soc.layout.rom_wake,
            usb: self.soc.layout.usb,
        };
        let control = match site {
            0 => {
                let entry = capture_entry(&mut cx, self.instructions_at_reset);
                self.rom_active = true;
                let c = self.rom.on_entry(&entry, &mut cx);
                self.push_event(EventKind::RomEntered(entry));
                c
            }
            1 => self.rom.poll(&mut cx),
            _ => {
                let exc = cx.cpu.reg(Reg::Xpsr) & 0x3F;
                let c = self.rom.on_exception(exc, &mut cx);
                self.push_event(EventKind::RomException { exception: exc });
                c
            }
        };
        self.apply_rom_control(control, site == 2);
    }

    fn apply_rom_control(&mut self, control: RomControl, in_exception_stub: bool) {
        let l = self.soc.layout.rom;
        match control {
            RomControl::Return if in_exception_stub => self.cpu.set_reg(Reg::Pc, l.exc + 2),
            // Return outside an exception: idle (continue at the `wfe` of the idle loop).
            RomControl::Return => self.cpu.set_reg(Reg::Pc, l.park + 2),
            RomControl::Idle { wake_at } => {
                self.cpu.set_reg(Reg::Pc, l.park + 2);
                if let Some(t) = wake_at {
                    self.wake_rom(Some(t));
                }
            }
            RomControl::Jumped => {
                self.rom_active = false;
                let (pc, msp) = (self.cpu.reg(Reg::Pc), self.cpu.reg(Reg::Msp));
                self.push_event(EventKind::RomLeft { pc, msp });
            }
            RomControl::Reset(cause) => self.system_reset(cause),
            RomControl::Hang => self.cpu.set_reg(Reg::Pc, l.default_handler),
            RomControl::Crash => {
                let xpsr = self.cpu.reg(Reg::Xpsr);
                self.cpu.set_reg(Reg::Xpsr, xpsr | 1 << 24);
                self.cpu.set_reg(Reg::Pc, l.crash);
            }
        }
    }

    // ---- host side of the USARTs ----------------------------------------------------------------

    fn usart_id(&self, usart: usize) -> Option<DeviceId> {
        self.soc.layout.usarts.get(usart).map(|(_, id)| *id)
    }

    /// The host puts frames on a USART's RX wire.
    pub fn uart_send(&mut self, usart: usize, frames: &[RxFrame]) -> bool {
        let Some(id) = self.usart_id(usart) else { return false };
        if !self.powered {
            // No power: the bytes go nowhere.
            return true;
        }
        let cycle = self.cpu.cycles();
        self.soc.sys.with_device(id, cycle, None, |d, cx| {
            let any: &mut dyn std::any::Any = d;
            if let Some(u) = crate::periph::host_uart_mut(any) {
                u.host_send(frames, cx);
            }
        });
        true
    }

    /// The host's baud rate on a USART's wire (`None`: matches the device).
    pub fn set_host_baud(&mut self, usart: usize, baud: Option<u32>) {
        if let Some(id) = self.usart_id(usart)
            && let Some(u) = self.soc.sys.device_any_mut(id).and_then(crate::periph::host_uart_mut)
        {
            u.set_host_baud(baud);
        }
    }

    /// Take up to `max` bytes of device output of a USART.
    pub fn uart_take(&mut self, usart: usize, max: usize) -> Vec<u8> {
        let Some(q) = self.uart_out.get_mut(usart) else { return Vec::new() };
        let n = q.len().min(max);
        q.drain(..n).collect()
    }
    /// Take device output up to and including the first `needle`, if it has arrived; the bytes
    /// after it stay for the next read.
    pub fn uart_take_until(&mut self, usart: usize, needle: &[u8]) -> Option<Vec<u8>> {
        let q = self.uart_out.get_mut(usart)?;
        let hay = q.make_contiguous();
        let end = hay.windows(needle.len().max(1)).position(|w| w == needle)? + needle.len();
        Some(q.drain(..end).collect())
    }
    /// A copy of the device output not yet taken.
    pub fn uart_peek(&self, usart: usize) -> Vec<u8> {
        self.uart_out.get(usart).map(|q| q.iter().copied().collect()).unwrap_or_default()
    }

    /// Start copying a USART's output for a PTY.
    pub fn enable_tap(&mut self, usart: usize) {
        if let Some(t) = self.taps.get_mut(usart) {
            t.get_or_insert_with(Vec::new);
        }
    }
    /// Output copied since the last call.
    pub fn take_tap(&mut self, usart: usize) -> Vec<u8> {
        self.taps.get_mut(usart).and_then(|t| t.as_mut()).map(std::mem::take).unwrap_or_default()
    }
    pub fn uart_available(&self, usart: usize) -> usize {
        self.uart_out.get(usart).map_or(0, |q| q.len())
    }

    // ---- host side of the USB device -----------------------------------------------------------

    fn with_usb<R>(
        &mut self,
        f: impl FnOnce(&mut UsbDevice, &mut hil_cortex_m::DeviceCx<'_, crate::shared::Shared>) -> R,
    ) -> Option<R> {
        let id = self.soc.layout.usb?;
        let cycle = self.cpu.cycles();
        let r = self.soc.sys.with_device(id, cycle, None, |d, cx| {
            let any: &mut dyn std::any::Any = d;
            any.downcast_mut::<UsbDevice>().map(|u| f(u, cx))
        });
        self.drain_outputs();
        r
    }

    fn no_usb(&self) -> BoardError {
        BoardError::NoUsb { board: self.name.clone(), chip: self.soc.chip.name.clone() }
    }

    /// Whether the USB device is on the bus (`None`: the chip has no USB device model).
    pub fn usb_attached(&self) -> Option<bool> {
        let id = self.soc.layout.usb?;
        Some(self.powered && !self.nrst_low && self.soc.sys.device::<UsbDevice>(id).is_some_and(|u| u.attached()))
    }

    /// Start a control transfer on endpoint 0; its result arrives through [`Machine::usb_completion`].
    pub fn usb_submit(&mut self, setup: UsbSetup, data: Vec<u8>) -> Result<u64, BoardError> {
        if self.soc.layout.usb.is_none() {
            return Err(self.no_usb());
        }
        if !self.powered || self.nrst_low {
            return Err(BoardError::UsbDetached { board: self.name.clone() });
        }
        match self.with_usb(|u, cx| u.submit(setup, data, cx)) {
            Some(Ok(id)) => Ok(id),
            Some(Err(UsbFailure::Detached)) => Err(BoardError::UsbDetached { board: self.name.clone() }),
            None => Err(self.no_usb()),
        }
    }

    /// The result of a control transfer, once there is one.
    pub fn usb_completion(&mut self, id: u64) -> Option<Result<UsbReply, BoardError>> {
        let name = self.name.clone();
        let id_dev = self.soc.layout.usb?;
        let r = self.soc.sys.device_mut::<UsbDevice>(id_dev)?.take_completion(id)?;
        Some(r.map_err(|UsbFailure::Detached| BoardError::UsbDetached { board: name }))
    }

    /// The host gives up on a control transfer.
    pub fn usb_cancel(&mut self, id: u64) {
        self.with_usb(|u, cx| u.cancel(id, cx));
    }

    /// The host resets the bus.
    pub fn usb_bus_reset(&mut self) -> Result<(), BoardError> {
        if !self.usb_attached().ok_or_else(|| self.no_usb())? {
            return Err(BoardError::UsbDetached { board: self.name.clone() });
        }
        self.with_usb(|u, cx| u.host_bus_reset(cx));
        Ok(())
    }

    // ---- debug port ---------------------------------------------------------------------------

    fn refuse(&self, why: impl Into<String>) -> BoardError {
        BoardError::DebugRefused { board: self.name.clone(), why: why.into() }
    }

    fn check_debug(&self, addr: u32) -> Result<(), BoardError> {
        if !self.powered {
            return Err(BoardError::PoweredOff { board: self.name.clone(), what: "debug access".into() });
        }
        let f = &self.soc.sys.shared.flash;
        if f.rdp == RdpLevel::Level2 {
            return Err(self.refuse("RDP level 2: the debug port is disabled (RM0444 3.5.1)"));
        }
        if !f.dbg_swen {
            return Err(self.refuse("FLASH_ACR.DBG_SWEN = 0: debugger access disabled by software (RM0444 3.7.1)"));
        }
        let ppb = addr >= 0xE000_0000;
        if self.nrst_low && !ppb {
            return Err(BoardError::InReset { board: self.name.clone(), what: format!("bus access at {addr:#010x}") });
        }
        Ok(())
    }

    /// RDP level 1: the debugger cannot read or write main flash (RM0444 3.5.1).
    fn rdp_blocks(&self, addr: u32, size: Size) -> Option<BusFault> {
        if self.soc.sys.shared.flash.rdp != RdpLevel::Level1 {
            return None;
        }
        let m = &self.soc.chip.memory;
        let in_flash = m.flash.area().contains(addr)
            || m.otp.as_ref().is_some_and(|a| a.contains(addr))
            || (addr < m.flash.size && self.soc.syscfg().alias_target() == BootTargetName::MainFlash);
        in_flash.then(|| {
            BusFault::new(addr, size, BusFaultKind::Device("RDP level 1: flash not accessible to the debugger"))
        })
    }

    /// A debugger (AHB-AP) read: PPB and debug registers through the core, the rest as a debug
    /// access on the bus.
    pub fn debug_read(&mut self, addr: u32, size: Size) -> Result<u32, BoardError> {
        self.check_debug(addr)?;
        if let Some(fault) = self.rdp_blocks(addr, size) {
            return Err(BoardError::Bus { board: self.name.clone(), fault });
        }
        self.cpu
            .debug_read(&mut self.soc.sys, addr, size)
            .map_err(|fault| BoardError::Bus { board: self.name.clone(), fault })
    }

    /// A debugger write; a SYSRESETREQ written through AIRCR is performed at once.
    pub fn debug_write(&mut self, addr: u32, size: Size, value: u32) -> Result<(), BoardError> {
        self.check_debug(addr)?;
        if let Some(fault) = self.rdp_blocks(addr, size) {
            return Err(BoardError::Bus { board: self.name.clone(), fault });
        }
        let r = self.cpu.debug_write(&mut self.soc.sys, addr, size, value);
        if let Some(cause) = self.cpu.take_reset_request() {
            self.system_reset(cause);
        }
        if let Some(cause) = self.cpu.absorb_attention(&mut self.soc.sys) {
            self.system_reset(cause);
        }
        self.drain_outputs();
        self.sync_debug_state();
        self.refreeze_watchdogs();
        r.map_err(|fault| BoardError::Bus { board: self.name.clone(), fault })
    }

    /// Halt the core (DHCSR: C_DEBUGEN | C_HALT), as a debugger would.
    pub fn halt(&mut self) -> Result<(), BoardError> {
        self.debug_write(DHCSR, Size::Word, DBGKEY | 0b11)
    }

    /// Resume from debug state (DHCSR: C_DEBUGEN, C_HALT cleared).
    pub fn resume(&mut self) -> Result<(), BoardError> {
        self.debug_write(DHCSR, Size::Word, DBGKEY | 0b1)
    }

    /// Execute one instruction of a halted core.
    pub fn step(&mut self) -> Result<(), BoardError> {
        self.check_debug(0xE000_0000)?;
        if !matches!(self.cpu.run_state(), RunState::Halted(_)) {
            return Err(BoardError::NotHalted { board: self.name.clone(), what: "single step".into() });
        }
        match self.cpu.step(&mut self.soc.sys) {
            Stop::ResetRequested(cause) => self.system_reset(cause),
            Stop::NativeTrap { pc, .. } => self.handle_trap(pc),
            _ => {}
        }
        self.dispatch_events();
        self.sync_debug_state();
        Ok(())
    }

    /// Reset through NRST; with `halt`, the core stops at the reset vector (DEMCR.VC_CORERESET
    /// and DHCSR.C_DEBUGEN set first, as a probe's connect-under-reset does).
    pub fn reset(&mut self, halt: bool) -> Result<(), BoardError> {
        if !self.powered {
            return Err(BoardError::PoweredOff { board: self.name.clone(), what: "reset".into() });
        }
        if halt {
            self.debug_write(DHCSR, Size::Word, DBGKEY | 0b1)?;
            let demcr = self.debug_read(DEMCR, Size::Word)?;
            self.debug_write(DEMCR, Size::Word, demcr | 1)?;
        }
        self.set_nrst(true);
        self.set_nrst(false);
        Ok(())
    }

    pub fn counters(&self) -> DebugCounters {
        DebugCounters {
            instructions: self.cpu.instructions(),
            cycles: self.cpu.cycles(),
            accesses: self.soc.sys.shared.counters,
        }
    }

    // ---- diagnosis ----------------------------------------------------------------------------

    pub fn snapshot(&self) -> BoardSnapshot {
        let soc = &self.soc;
        let shared = &soc.sys.shared;
        let run_state = if !self.powered {
            "off".to_string()
        } else if self.nrst_low {
            "held in reset".to_string()
        } else if let Some(pc) = self.stuck {
            format!("stopped on a foreign ROM trap at {pc:#010x}")
        } else {
            format!("{:?}", self.cpu.run_state())
        };
        let usarts = soc
            .layout
            .usarts
            .iter()
            .filter_map(|(name, id)| {
                let u = soc.sys.device_any(*id).and_then(crate::periph::host_uart)?.view(shared);
                Some(UsartSnapshot {
                    name: name.clone(),
                    cr1: u.cr1,
                    brr: u.brr,
                    isr: u.isr,
                    baud: u.baud,
                    lost_while_off: u.lost_while_off,
                    overruns: u.overruns,
                })
            })
            .collect();
        let csr = soc.rcc_csr();
        BoardSnapshot {
            name: self.name.clone(),
            chip: soc.chip.name.clone(),
            at: self.now(),
            powered: self.powered,
            nrst_low: self.nrst_low,
            run_state,
            core: self.powered.then(|| self.cpu.snapshot()),
            last_fault: self.cpu.last_fault().map(|f| f.to_string()),
            remap_register: soc.syscfg().cfgr1(),
            alias: soc.syscfg().alias_target(),
            flash: FlashSnapshot {
                acr: soc.flash().map_or_else(|| soc.flash_f1().map_or(0, |f| f.acr()), |f| f.acr_value(shared)),
                sr: soc.flash().map_or_else(|| soc.flash_f1().map_or(0, |f| f.sr()), |f| f.sr()),
                cr: soc.flash().map_or_else(|| soc.flash_f1().map_or(0, |f| f.cr()), |f| f.cr()),
                option_registers: match soc.flash() {
                    Some(f) => f.option_registers().iter().map(|(k, v)| (*k, *v)).collect(),
                    None => shared.flash.loaded.iter().map(|(k, v)| (*k, *v)).collect(),
                },
                loaded: shared.flash.words.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                rdp: shared.flash.rdp,
                empty: shared.flash.empty,
            },
            option_bytes: soc.option_bytes(),
            rcc_csr: csr,
            reset_flags: reset_flag_names(csr),
            rcc_enables: shared.rcc.enr,
            hclk_hz: shared.rcc.hclk_hz,
            boot: shared.boot.clone(),
            boot0_pin: shared.pins.external(soc.layout.boot0).unwrap_or(false),
            rom_active: self.rom_active,
            rom_model: self.rom.name().to_string(),
            rom_notes: self.rom.notes(),
            usb_attached: self.usb_attached(),
            iwdg_running: soc.layout.iwdg.and_then(|id| soc.sys.device::<Iwdg>(id)).is_some_and(|w| w.running()),
            usarts,
            counters: self.counters(),
        }
    }
}

/// Capture the core state at the ROM's reset handler.
fn capture_entry(cx: &mut RomCx<'_>, instructions_at_reset: u64) -> RomEntry {
    let s = cx.cpu.snapshot();
    let shared = &cx.sys.shared;
    // Nothing retired since the reset: the reset sequence itself fetched the ROM's vectors.
    let via = if cx.cpu.instructions() == instructions_at_reset {
        RomEntryKind::Reset(shared.reset_cause.into())
    } else {
        RomEntryKind::Jump
    };
    let syscfg = cx.sys.device::<crate::periph::syscfg::Syscfg>(find_syscfg(cx));
    RomEntry {
        at: cx.now(),
        via,
        primask: s.primask,
        control: s.control,
        psp_active: s.control & 2 != 0,
        ipsr: s.ipsr,
        active_exceptions: s.active_exceptions.clone(),
        vtor: s.vtor,
        msp: s.msp,
        psp: s.psp,
        lr: s.r[14],
        nvic_enabled: s.nvic_iser.clone(),
        systick_running: s.systick_csr & 0b11 == 0b11,
        remap_register: syscfg.map_or(0, |s| s.cfgr1()),
        alias: syscfg.map_or(BootTargetName::MainFlash, |s| s.alias_target()),
        boot: shared.boot.clone(),
    }
}

fn find_syscfg(cx: &RomCx<'_>) -> DeviceId {
    cx.sys.find_device("SYSCFG").unwrap_or(DeviceId(u16::MAX))
}
