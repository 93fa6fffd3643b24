//! The model of ST's ROM (system-memory) bootloader that takes over when the core executes the
//! system-memory reset handler: after a BOOT0 / option-bit boot, an empty-check boot, or an
//! application's jump. It is the board's default ROM on chips whose chip file describes the
//! bootloader completely ([`hil_bootloader_device::RomConfig::for_chip`] builds it from the
//! chip data).
//!
//! The protocols are the engines of hil-bootloader-device (AN3155 USART, DfuSe USB). This module is the
//! ROM firmware around them, and it drives the chip the way ROM code does:
//!
//! - **USARTs through their registers** (the instances the chip data names for the bootloader):
//!   clock enable in RCC, 8 data bits + even parity (AN3155 2: 8E1; \[OBL\] `OPENBL_USART_Init`),
//!   auto-baud on the 0x7F frame (ABREN, ABRMOD = 10; \[OBL\] "detect on 0x7F frame"), bytes from
//!   RDR with their PE/FE/NE flags, replies through TDR as TXE allows. Baud mismatch, parity errors
//!   and line timing are the USART model's.
//! - **Flash through the FLASH controller's registers** ([`target::BoardTarget`]).
//! - **USB DFU** (G0B1) through the USB device model: D+ pull-up on while the DFU interface is up,
//!   control transfers from the USB interrupt.
//! - **Interface selection**: the ROM listens on all its interfaces and keeps the first that
//!   becomes active: a USART whose 0x7F was answered, or USB once the host configured the device
//!   (AN2606 "bootloader activation" and bootloader-protocols.md 6.2; \[OBL\]
//!   `OPENBL_InterfaceDetection`). The others are shut down (USART disabled, USB pull-up off).
//! - **CPU state** ([`hil_bootloader_device::Execution`], per chip, every field unverified and a switch):
//!   interrupt-driven service runs only when the core takes the interface's interrupt through the
//!   vector table it uses, so PRIMASK, active exceptions and VTOR decide whether the ROM answers;
//!   polled service does not depend on them. The ROM's own vector table leads every other
//!   exception into a default handler that loops forever ([`crate::rom`]).
//! - **Go / leave**: MSP = \[addr\], PC = \[addr + 4\]; VTOR, the remap and the boot latches stay
//!   (bootloader-protocols.md 1.5, 3.7; P1, P6); the interface peripherals are reset first only where
//!   the configuration says so (`peripherals_reset_on_go`).

pub mod target;
mod target_f1;

use std::any::Any;
use std::collections::VecDeque;

use hil_bootloader_device::{
    ConfigError, DfuEngine, Jump, LineError, ProcessStackEntry, RomAction, RomConfig, RxByte, SYNC, SetupPacket,
    UsartEngine, UsartOutput,
};
use hil_chips::{Chip, ClockGate, PeripheralKind, PeripheralVersion};
use hil_cortex_m::{ResetCause, Size, VirtualDuration};

use crate::periph::usart::{
    CR2_ABREN, ICR, ICR_FECF, ICR_NECF, ICR_ORECF, ICR_PECF, ISR_ABRE, ISR_FE, ISR_NE, ISR_ORE, ISR_PE, ISR_RXNE,
    ISR_TC, ISR_TXE, RQR, RQR_ABRRQ,
};
use crate::periph::usb::{self, UsbReply};
use crate::periph::{usart, usart_v1};
use crate::shared::BootTargetName;
use crate::system_memory::{RomControl, RomCx, RomEntry, RomEntryKind, SystemBootloader};
use target::BoardTarget;

pub use hil_bootloader_device::Service;

const NVIC_ISER: u32 = 0xE000_E100;
const NVIC_ICER: u32 = 0xE000_E180;
const NVIC_ICPR: u32 = 0xE000_E280;
/// ABRMOD = 10: auto-baud measured on a 0x7F frame (RM0444 33.8.2).
const CR2_ABRMOD_7F: u32 = 2 << 21;
/// Notes kept for a diagnosis.
const NOTES_LIMIT: usize = 64;
/// How often the ROM reloads a running independent watchdog (\[OBL\] `OPENBL_USART_ReadByte`
/// refreshes the IWDG while it waits; the real ROM's period is not published).
const IWDG_REFRESH: VirtualDuration = VirtualDuration::from_ms(100);

/// Register offsets and bits of a USART version, as ROM code addresses them. v2: RM0444 33.8;
/// v1: RM0008 27.6 (SR in place of ISR, one DR for both directions, errors cleared by the
/// SR-then-DR read sequence instead of ICR, no auto-baud unit).
#[derive(Clone, Copy, Debug)]
struct UsartRegs {
    v1: bool,
    cr1: u32,
    cr2: u32,
    cr3: u32,
    status: u32,
    rx: u32,
    tx: u32,
    brr: u32,
    ue: u32,
    m: u32,
    pce: u32,
    te: u32,
    re: u32,
    rxneie: u32,
    txeie: u32,
    tcie: u32,
}

impl UsartRegs {
    fn of(version: Option<PeripheralVersion>) -> Self {
        if version == Some(PeripheralVersion::UsartV1) {
            use usart_v1 as u;
            UsartRegs {
                v1: true,
                cr1: u::CR1,
                cr2: u::CR2,
                cr3: u::CR3,
                status: u::SR,
                rx: u::DR,
                tx: u::DR,
                brr: u::BRR,
                ue: u::CR1_UE,
                m: u::CR1_M,
                pce: u::CR1_PCE,
                te: u::CR1_TE,
                re: u::CR1_RE,
                rxneie: u::CR1_RXNEIE,
                txeie: u::CR1_TXEIE,
                tcie: u::CR1_TCIE,
            }
        } else {
            use usart as u;
            UsartRegs {
                v1: false,
                cr1: u::CR1,
                cr2: u::CR2,
                cr3: u::CR3,
                status: u::ISR,
                rx: u::RDR,
                tx: u::TDR,
                brr: u::BRR,
                ue: u::CR1_UE,
                m: u::CR1_M0,
                pce: u::CR1_PCE,
                te: u::CR1_TE,
                re: u::CR1_RE,
                rxneie: u::CR1_RXNEIE,
                txeie: u::CR1_TXEIE,
                tcie: u::CR1_TCIE,
            }
        }
    }
}

/// One of the ROM's USARTs.
struct UsartPort {
    name: String,
    base: u32,
    regs: UsartRegs,
    irq: Option<u32>,
    clock: Option<ClockGate>,
    reset: Option<ClockGate>,
    engine: UsartEngine,
    /// Engine output not yet on the wire (bytes, busy spans, the closing action).
    tx: VecDeque<UsartOutput>,
    enabled: bool,
}

/// The ROM's USB DFU interface.
struct UsbPort {
    irq: Option<u32>,
    base: u32,
    clock: Option<ClockGate>,
    engine: DfuEngine,
    up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Session {
    /// Not entered since the last reset.
    Off,
    /// Entered; listening on every interface.
    Listening,
    /// One interface won the selection.
    Active(Interface),
    /// Left by Go / leave: the ROM's handlers are stale.
    Left,
    /// The ROM crashed at entry.
    Crashed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interface {
    Usart(usize),
    Usb,
}

/// ST's ROM bootloader on the virtual board.
pub struct StRom {
    chip: &'static Chip,
    config: RomConfig,
    usarts: Vec<UsartPort>,
    usb: Option<UsbPort>,
    session: Session,
    /// An action decided in an interrupt handler, carried out by the main loop (Thread context).
    pending: Option<RomAction>,
    entries: Vec<RomEntry>,
    notes: VecDeque<String>,
}

impl StRom {
    /// The ROM of a shipped chip, as [`RomConfig::for_chip`] describes its bootloader version.
    pub fn for_chip(chip: &'static Chip) -> Result<StRom, ConfigError> {
        Self::with_config(chip, RomConfig::for_chip(chip)?)
    }

    /// The ROM with a modified configuration (scenarios and tests flip unverified switches).
    pub fn with_config(chip: &'static Chip, config: RomConfig) -> Result<StRom, ConfigError> {
        config.validate()?;
        let mut usarts = Vec::new();
        for u in &chip.bootloader.usart {
            // Only instances the board models as USARTs can carry the protocol.
            let Some(p) = chip.peripheral(&u.instance).filter(|p| p.kind == PeripheralKind::Usart) else {
                continue;
            };
            usarts.push(UsartPort {
                name: p.name.clone(),
                base: p.base,
                regs: UsartRegs::of(p.version),
                irq: p.irq,
                clock: p.clock.clone(),
                reset: p.reset.clone(),
                engine: UsartEngine::new(config.clone())?,
                tx: VecDeque::new(),
                enabled: false,
            });
        }
        let usb = match (&config.dfu, chip.peripheral("USB")) {
            (Some(_), Some(p)) => Some(UsbPort {
                irq: p.irq,
                base: p.base,
                clock: p.clock.clone(),
                engine: DfuEngine::new(config.clone())?,
                up: false,
            }),
            _ => None,
        };
        Ok(StRom {
            chip,
            config,
            usarts,
            usb,
            session: Session::Off,
            pending: None,
            entries: Vec::new(),
            notes: VecDeque::new(),
        })
    }

    pub fn config(&self) -> &RomConfig {
        &self.config
    }
    /// Every entry since the board started (newest last, at most 64 kept).
    pub fn entries(&self) -> &[RomEntry] {
        &self.entries
    }
    /// The interface that won the selection, by name (`USART2`, `USB`).
    pub fn active_interface(&self) -> Option<String> {
        match self.session {
            Session::Active(Interface::Usart(i)) => Some(self.usarts[i].name.clone()),
            Session::Active(Interface::Usb) => Some("USB".into()),
            _ => None,
        }
    }
    /// Parity / framing / noise errors the USART engines saw since the last entry.
    pub fn line_errors(&self) -> u64 {
        self.usarts.iter().map(|u| u.engine.line_errors()).sum()
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(target: "hil_virtual_board", "ROM: {text}");
        if self.notes.len() >= NOTES_LIMIT {
            self.notes.pop_front();
        }
        self.notes.push_back(text);
    }

    fn vector_irqs(&self) -> Vec<u32> {
        crate::system_memory::rom_irqs(self.chip)
    }

    /// What the CPU state at entry means for this ROM (the checks of pitfalls P1, P2, P4, P5 and
    /// seed 002), as notes for a diagnosis.
    fn assess(&mut self, e: &RomEntry) {
        let x = self.config.execution.clone();
        let via = match e.via {
            RomEntryKind::Reset(c) => format!("a {c:?} reset"),
            RomEntryKind::Jump => "a jump from user code".to_string(),
        };
        self.note(format!("entered through {via} (VTOR {:#010x}, MSP {:#010x})", e.vtor, e.msp));
        let interrupt_driven = (!self.usarts.is_empty() && x.usart_service == Service::Interrupt)
            || (self.usb.is_some() && x.usb_service == Service::Interrupt);
        if e.primask && !x.enables_interrupts_at_entry {
            if interrupt_driven {
                self.note(
                    "PRIMASK = 1 at entry: the ROM serves its interfaces from interrupts and does not clear \
                     PRIMASK, so it cannot answer (pitfall P2; seed 002: no response on a G0B1)",
                );
            } else {
                self.note("PRIMASK = 1 at entry: this ROM polls its USARTs, so it still answers (seed 002: G071)");
            }
        }
        if e.ipsr != 0 {
            self.note(format!(
                "entered in Handler mode (IPSR = {}, active exceptions {:?}): interrupts of the same or lower \
                 priority cannot preempt{} (pitfall P5)",
                e.ipsr,
                e.active_exceptions,
                if interrupt_driven { ", so the ROM's interface interrupts may never run" } else { "" }
            ));
        } else if e.psp_active {
            self.note(format!(
                "entered in Thread mode on the process stack (CONTROL.SPSEL = 1, PSP {:#010x}): the jump loaded \
                 MSP, but the ROM runs on the PSP (pitfall P5; behaviour: {:?})",
                e.psp, x.process_stack
            ));
        }
        // Which table the ROM's interrupts will use once it has set VTOR (execution.vtor_at_entry).
        let table = match x.vtor_at_entry {
            hil_bootloader_device::VtorAtEntry::SystemMemory => None,
            hil_bootloader_device::VtorAtEntry::BootAlias => match e.alias {
                BootTargetName::SystemMemory => None,
                other => Some(format!(
                    "the ROM points VTOR at 0x00000000, which shows {other:?} (system memory not remapped, or \
                     remapped with the SYSCFG clock off: pitfall P4)"
                )),
            },
            hil_bootloader_device::VtorAtEntry::Untouched => {
                if e.vtor == 0 {
                    match e.alias {
                        BootTargetName::SystemMemory => None,
                        other => Some(format!("VTOR = 0 and 0x00000000 shows {other:?} (remap not done, pitfall P4)")),
                    }
                } else if self.chip.memory.system_memory.contains(e.vtor) {
                    None
                } else {
                    Some(format!(
                        "VTOR = {:#010x} (the application's table, pitfall P1); the ROM does not set VTOR",
                        e.vtor
                    ))
                }
            }
        };
        if let Some(t) = table {
            self.note(format!("{t}: its interrupts run the application's handlers"));
        }
        let ours = self.vector_irqs();
        let foreign_irqs: Vec<u32> = e
            .nvic_enabled
            .iter()
            .enumerate()
            .flat_map(|(w, bits)| (0..32).filter(move |b| bits & (1 << b) != 0).map(move |b| w as u32 * 32 + b))
            .filter(|irq| !ours.contains(irq))
            .collect();
        if e.systick_running || !foreign_irqs.is_empty() {
            self.note(format!(
                "left enabled at entry: {}{}: once taken through the ROM's vector table they reach its default \
                 handler, which loops forever (seed 002, pitfall P2: clear NVIC ICER/ICPR and stop SysTick \
                 before the jump)",
                if e.systick_running { "SysTick with its interrupt " } else { "" },
                if foreign_irqs.is_empty() { String::new() } else { format!("NVIC lines {foreign_irqs:?}") }
            ));
        }
    }

    fn reset_session(&mut self) {
        self.session = Session::Off;
        self.pending = None;
        for u in &mut self.usarts {
            u.engine.reset();
            u.tx.clear();
            u.enabled = false;
        }
        if let Some(u) = &mut self.usb {
            u.up = false;
            if let Ok(e) = DfuEngine::new(self.config.clone()) {
                u.engine = e;
            }
        }
    }

    fn rcc_gates(&self) -> Vec<(Option<ClockGate>, Option<ClockGate>)> {
        let mut v: Vec<_> = self.usarts.iter().map(|u| (u.clock.clone(), u.reset.clone())).collect();
        if let Some(u) = &self.usb {
            let reset = self.chip.peripheral("USB").and_then(|p| p.reset.clone());
            v.push((u.clock.clone(), reset));
        }
        v
    }

    /// Bring up every interface (Listening).
    fn start_interfaces(&mut self, cx: &mut RomCx<'_>) {
        let x = self.config.execution.clone();
        let gates = self.rcc_gates();
        {
            let mut t = BoardTarget::new(cx);
            for (clock, _) in &gates {
                if let Some(c) = clock {
                    t.rcc_enable(c);
                }
            }
        }
        let irq_mode = x.usart_service == Service::Interrupt;
        for i in 0..self.usarts.len() {
            let (b, r) = (self.usarts[i].base, self.usarts[i].regs);
            // 9-bit word = 8 data bits + even parity, 1 stop bit, 16x oversampling; auto-baud on 0x7F.
            let _ = cx.write(b + r.cr1, Size::Word, 0);
            if r.v1 {
                // The F1 USART has no auto-baud unit: the ROM times the 0x7F on the RX pin and
                // programs BRR (AN2606 "STM32F10xxx bootloader": baud rate detection on 0x7F).
                let _ = cx.write(b + r.cr2, Size::Word, 0);
                self.measure_baud(i, cx);
            } else {
                let _ = cx.write(b + r.cr2, Size::Word, CR2_ABREN | CR2_ABRMOD_7F);
            }
            let _ = cx.write(b + r.cr3, Size::Word, 0);
            if !r.v1 {
                let _ = cx.write(b + RQR, Size::Word, RQR_ABRRQ);
            }
            let rxneie = if irq_mode { r.rxneie } else { 0 };
            let _ = cx.write(b + r.cr1, Size::Word, r.m | r.pce | r.te | r.re | r.ue | rxneie);
            let u = &mut self.usarts[i];
            u.enabled = true;
            if irq_mode && let Some(irq) = u.irq {
                let _ = cx.write(NVIC_ISER + 4 * (irq / 32), Size::Word, 1 << (irq % 32));
            }
        }
        // Seed 004: the application left its USB device attached (clock on, D+ pull-up set); this
        // ROM then does not bring its DFU device up (chip data switch, unverified).
        let usb_left_up = self.usb.as_ref().is_some_and(|u| {
            self.config.entry.usb_left_enabled_blocks_dfu
                && cx.read(u.base + usb::BCDR, Size::Word).is_ok_and(|v| v & usb::BCDR_DPPU != 0)
        });
        if usb_left_up {
            self.note("USB left attached by the application (BCDR.DPPU = 1): the ROM's DFU device does not come up");
        }
        if let Some(u) = self.usb.as_mut().filter(|_| !usb_left_up) {
            let b = u.base;
            let _ = cx.write(b + usb::CNTR, Size::Word, usb::CNTR_RESETM | usb::CNTR_CTRM);
            let _ = cx.write(b + usb::ISTR, Size::Word, 0);
            let _ = cx.write(b + usb::BCDR, Size::Word, usb::BCDR_DPPU);
            u.up = true;
            if x.usb_service == Service::Interrupt
                && let Some(irq) = u.irq
            {
                let _ = cx.write(NVIC_ISER + 4 * (irq / 32), Size::Word, 1 << (irq % 32));
            }
        }
        self.session = Session::Listening;
    }

    fn disable_irq(&self, irq: Option<u32>, cx: &mut RomCx<'_>) {
        if let Some(irq) = irq {
            // Another interface of the ROM may share the line (G0: USART3/4 and LPUART1 share 29).
            let shared = self.usarts.iter().any(|u| u.enabled && u.irq == Some(irq))
                || self.usb.as_ref().is_some_and(|u| u.up && u.irq == Some(irq));
            if !shared {
                let _ = cx.write(NVIC_ICER + 4 * (irq / 32), Size::Word, 1 << (irq % 32));
            }
        }
    }

    /// The F1 ROM's baud rate measurement (model): BRR from the rate the host drives the RX
    /// line at (an in-process host that never set one is measured as 115200 Bd, as on the G0).
    fn measure_baud(&mut self, i: usize, cx: &mut RomCx<'_>) {
        let (name, base, r) = (self.usarts[i].name.clone(), self.usarts[i].base, self.usarts[i].regs);
        let brr = {
            let sys = cx.system();
            let Some(id) = sys.find_device(&name) else { return };
            let Some(u) = sys.device::<usart_v1::UsartV1>(id) else { return };
            use crate::periph::HostUart;
            u.brr_for(&sys.shared, u.host_baud().unwrap_or(115_200))
        };
        if cx.read(base + r.brr, Size::Word).ok() != Some(brr) {
            let _ = cx.write(base + r.brr, Size::Word, brr);
        }
    }

    fn stop_usart(&mut self, i: usize, cx: &mut RomCx<'_>) {
        let r = self.usarts[i].regs;
        let _ = cx.write(self.usarts[i].base + r.cr1, Size::Word, 0);
        self.usarts[i].enabled = false;
        self.disable_irq(self.usarts[i].irq, cx);
    }

    fn stop_usb(&mut self, cx: &mut RomCx<'_>) {
        let Some(u) = &mut self.usb else { return };
        if !u.up {
            return;
        }
        let _ = cx.write(u.base + usb::BCDR, Size::Word, 0);
        let _ = cx.write(u.base + usb::CNTR, Size::Word, usb::CNTR_USBRST | usb::CNTR_PDWN);
        u.up = false;
        let irq = u.irq;
        self.disable_irq(irq, cx);
    }

    /// The first interface to become active wins; the others are shut down.
    fn select(&mut self, winner: Interface, cx: &mut RomCx<'_>) {
        if self.session != Session::Listening {
            return;
        }
        for i in 0..self.usarts.len() {
            if winner != Interface::Usart(i) && self.usarts[i].enabled {
                self.stop_usart(i, cx);
            }
        }
        if winner != Interface::Usb {
            self.stop_usb(cx);
        }
        self.session = Session::Active(winner);
        let name = match winner {
            Interface::Usart(i) => self.usarts[i].name.clone(),
            Interface::Usb => "USB DFU".into(),
        };
        self.note(format!("{name} became active first: the ROM serves it alone (AN2606 interface selection)"));
    }

    fn serving(&self, i: usize) -> bool {
        self.usarts[i].enabled
            && (self.session == Session::Listening || self.session == Session::Active(Interface::Usart(i)))
    }

    /// One pass over a USART: received byte to the engine, engine output to the transmitter.
    fn service_usart(&mut self, i: usize, cx: &mut RomCx<'_>) {
        if !self.serving(i) {
            return;
        }
        let (base, r) = (self.usarts[i].base, self.usarts[i].regs);
        if r.v1 && !self.usarts[i].engine.is_synced() {
            self.measure_baud(i, cx);
        }
        // SR (v1) has PE/FE/NE/ORE/RXNE/TC/TXE at the ISR (v2) bit positions (RM0008 27.6.1).
        let Ok(isr) = cx.read(base + r.status, Size::Word) else { return };
        if isr & ISR_RXNE != 0 {
            // v1: this DR read after the SR read also clears PE/FE/NE/ORE (RM0008 27.6.1).
            let rdr = cx.read(base + r.rx, Size::Word).unwrap_or(0);
            let flags = isr & (ISR_PE | ISR_FE | ISR_NE);
            if flags != 0 && !r.v1 {
                let _ = cx.write(base + ICR, Size::Word, ICR_PECF | ICR_FECF | ICR_NECF);
            }
            // [OBL] OPENBL_USART_ReadByte takes RDR and ignores the error flags.
            let error = if isr & ISR_PE != 0 {
                Some(LineError::Parity)
            } else if isr & ISR_FE != 0 {
                Some(LineError::Framing)
            } else if isr & ISR_NE != 0 {
                Some(LineError::Noise)
            } else {
                None
            };
            let value = (rdr & 0xFF) as u8;
            let u = &mut self.usarts[i];
            if !u.engine.is_synced() && ((!r.v1 && isr & ISR_ABRE != 0) || value != SYNC) {
                // The auto-baud measurement failed or the frame was not 0x7F: measure again on the
                // next frame (the ROM keeps waiting for 0x7F, AN3155 2).
                if !r.v1 {
                    let _ = cx.write(base + RQR, Size::Word, RQR_ABRRQ);
                }
            } else {
                let out = {
                    let mut t = BoardTarget::new(cx);
                    let out = self.usarts[i].engine.receive(RxByte { value, error }, &mut t);
                    if t.reset_pending {
                        self.note("a reset requested during a flash operation cut the command short");
                    }
                    out
                };
                self.usarts[i].tx.extend(out);
                if self.usarts[i].engine.is_synced() && self.session == Session::Listening {
                    self.select(Interface::Usart(i), cx);
                }
            }
        }
        if isr & ISR_ORE != 0 {
            if r.v1 {
                // SR read (above) then DR read clears ORE (RM0008 27.6.1).
                let _ = cx.read(base + r.rx, Size::Word);
            } else {
                let _ = cx.write(base + ICR, Size::Word, ICR_ORECF);
            }
        }
        self.pump_tx(i, cx);
    }

    /// Feed the transmitter as TXE allows; hand the closing action to the main loop once TC says
    /// the bytes before it are out.
    fn pump_tx(&mut self, i: usize, cx: &mut RomCx<'_>) {
        let (base, r) = (self.usarts[i].base, self.usarts[i].regs);
        loop {
            let Ok(isr) = cx.read(base + r.status, Size::Word) else { return };
            match self.usarts[i].tx.front() {
                Some(UsartOutput::Tx(b)) if isr & ISR_TXE != 0 => {
                    let b = *b;
                    let _ = cx.write(base + r.tx, Size::Word, u32::from(b));
                    self.usarts[i].tx.pop_front();
                }
                // The target already spent this time in the flash operation.
                Some(UsartOutput::Busy(_)) => {
                    self.usarts[i].tx.pop_front();
                }
                Some(UsartOutput::Action(a)) if isr & ISR_TC != 0 => {
                    self.pending = Some(a.clone());
                    self.usarts[i].tx.pop_front();
                    cx.wake_at(cx.now());
                }
                _ => break,
            }
        }
        if self.config.execution.usart_service == Service::Interrupt && self.usarts[i].enabled {
            let want = match self.usarts[i].tx.front() {
                Some(UsartOutput::Tx(_)) => r.txeie,
                Some(UsartOutput::Action(_)) => r.tcie,
                _ => 0,
            };
            if let Ok(cr1) = cx.read(base + r.cr1, Size::Word)
                && cr1 & (r.txeie | r.tcie) != want
            {
                let _ = cx.write(base + r.cr1, Size::Word, (cr1 & !(r.txeie | r.tcie)) | want);
            }
        }
    }

    /// One pass over the USB device: bus reset, then the control transfer behind CTR.
    fn service_usb(&mut self, cx: &mut RomCx<'_>) {
        let Some(port) = &self.usb else { return };
        if !port.up {
            return;
        }
        let base = port.base;
        let istr = cx.read(base + usb::ISTR, Size::Word).unwrap_or(0);
        if istr & usb::ISTR_RESET != 0 {
            let _ = cx.write(base + usb::ISTR, Size::Word, !usb::ISTR_RESET);
            let _ = cx.write(base + usb::DADDR, Size::Word, usb::DADDR_EF);
            if let Some(u) = &mut self.usb {
                u.engine.bus_reset();
            }
        }
        let Some(Some(transfer)) = cx.with_usb(|u, dcx| u.take_transfer(dcx)) else { return };
        let setup = SetupPacket {
            request_type: transfer.setup.request_type,
            request: transfer.setup.request,
            value: transfer.setup.value,
            index: transfer.setup.index,
            length: transfer.setup.length,
        };
        let outcome = {
            let Some(u) = &mut self.usb else { return };
            let mut t = BoardTarget::new(cx);
            u.engine.control(setup, &transfer.data, &mut t)
        };
        let reply = match outcome.response {
            hil_bootloader_device::ControlResponse::Data(d) => UsbReply::Data(d),
            hil_bootloader_device::ControlResponse::Ack => UsbReply::Ack,
            hil_bootloader_device::ControlResponse::Stall => UsbReply::Stall,
        };
        cx.with_usb(|u, dcx| u.complete(transfer.id, reply, dcx));
        if let Some(a) = outcome.action {
            self.pending = Some(a);
            cx.wake_at(cx.now());
        }
        if self.session == Session::Listening && self.usb.as_ref().is_some_and(|u| u.engine.is_configured()) {
            self.select(Interface::Usb, cx);
        }
    }

    /// Carry out an action in Thread context (the main loop).
    fn apply(&mut self, action: RomAction, cx: &mut RomCx<'_>) -> RomControl {
        match action {
            RomAction::Jump(j) => self.leave(&j, cx),
            RomAction::LaunchOptionBytes => {
                if BoardTarget::new(cx).is_f1() {
                    // F1: no OBL_LAUNCH; the ROM resets the chip, which loads the option bytes
                    // (PM0075 2.5; AN3155 Write Protect / Readout Protect: "system reset").
                    self.note("option bytes changed: the ROM performs a system reset (F1)");
                    return RomControl::Reset(ResetCause::Software);
                }
                BoardTarget::new(cx).launch_obl();
                self.note("option byte loading (FLASH_CR.OBL_LAUNCH): the chip resets");
                RomControl::Reset(ResetCause::OptionByteLoad)
            }
            RomAction::SystemReset => {
                self.note("system reset (nothing executable at the jump address)");
                RomControl::Reset(ResetCause::Software)
            }
        }
    }

    /// Go / DfuSe leave.
    fn leave(&mut self, j: &Jump, cx: &mut RomCx<'_>) -> RomControl {
        let x = self.config.execution.clone();
        if j.reset_peripherals {
            // AN3155 Go: the peripherals the bootloader used go back to their reset state.
            let irqs: Vec<Option<u32>> =
                self.usarts.iter().map(|u| u.irq).chain(self.usb.as_ref().map(|u| u.irq)).collect();
            let gates = self.rcc_gates();
            {
                let mut t = BoardTarget::new(cx);
                for (_, reset) in gates.iter() {
                    if let Some(r) = reset {
                        t.rcc_reset(r);
                    }
                }
            }
            for irq in irqs.into_iter().flatten() {
                let _ = cx.write(NVIC_ICER + 4 * (irq / 32), Size::Word, 1 << (irq % 32));
                let _ = cx.write(NVIC_ICPR + 4 * (irq / 32), Size::Word, 1 << (irq % 32));
            }
        }
        // DfuSe leave: the device disconnects before the jump (AN3156 "Leave DFU mode").
        self.stop_usb(cx);
        if x.enables_interrupts_at_go {
            cx.set_primask(false);
        }
        self.note(format!(
            "left by a jump to {:#010x}: MSP {}, PC {:#010x}; VTOR, the memory remap and the boot latches unchanged",
            j.address,
            j.msp.map_or("unchanged".to_string(), |m| format!("{m:#010x}")),
            j.pc
        ));
        cx.branch(j.msp, j.pc);
        self.session = Session::Left;
        RomControl::Jumped
    }

    fn iwdg_running(&self, cx: &mut RomCx<'_>) -> bool {
        let sys = cx.system();
        sys.find_device("IWDG").and_then(|id| sys.device::<crate::periph::iwdg::Iwdg>(id)).is_some_and(|w| w.running())
    }

    /// Reload a running IWDG and come back in time for the next reload.
    fn keep_watchdog(&self, cx: &mut RomCx<'_>) -> Option<hil_cortex_m::VirtualTime> {
        if !self.iwdg_running(cx) {
            return None;
        }
        if let Some(p) = self.chip.peripheral("IWDG") {
            // IWDG_KR = 0xAAAA reloads the counter (RM0444 25.3.2).
            let _ = cx.write(p.base, Size::Word, 0xAAAA);
        }
        Some(cx.now() + IWDG_REFRESH)
    }
}

impl SystemBootloader for StRom {
    fn name(&self) -> &str {
        "ST system bootloader (AN3155 USART, DfuSe USB)"
    }

    fn on_reset(&mut self, _: ResetCause) {
        self.reset_session();
    }

    fn on_entry(&mut self, entry: &RomEntry, cx: &mut RomCx<'_>) -> RomControl {
        self.reset_session();
        if self.entries.len() >= 64 {
            self.entries.remove(0);
        }
        self.entries.push(entry.clone());
        self.assess(entry);
        let x = self.config.execution.clone();
        // Thread mode on the PSP (P5).
        if entry.ipsr == 0 && entry.psp_active {
            let own_ram = &self.chip.bootloader.reserved_ram;
            let crash = match x.process_stack {
                ProcessStackEntry::Runs => false,
                ProcessStackEntry::Crashes => true,
                ProcessStackEntry::CrashesInOwnRam => own_ram.contains(entry.psp.wrapping_sub(4)),
            };
            if crash {
                self.note(format!(
                    "the ROM crashes: its stack (the PSP at {:#010x}) lies in the RAM the ROM initialises for \
                     itself ({:#010x}..{:#010x}); HardFault into its default handler",
                    entry.psp,
                    own_ram.base,
                    own_ram.end()
                ));
                self.session = Session::Crashed;
                point_vtor(x.vtor_at_entry, cx);
                return RomControl::Crash;
            }
        }
        // Version-specific first steps (G07x V11.3, AN2606 45.3.1 via td-p/825796).
        if self.config.entry.reset_peripherals {
            let gates = self.rcc_gates();
            let mut t = BoardTarget::new(cx);
            for (_, reset) in gates.iter() {
                if let Some(r) = reset {
                    t.rcc_reset(r);
                }
            }
        }
        let empty_boot =
            matches!(entry.via, RomEntryKind::Reset(_)) && entry.boot.as_ref().is_some_and(|b| b.empty_redirect);
        if self.config.entry.clear_empty_flag && empty_boot {
            BoardTarget::new(cx).clear_empty_flag();
            self.note("empty-check boot: this bootloader version clears FLASH_ACR.EMPTY (G07x V11.3)");
        }
        point_vtor(x.vtor_at_entry, cx);
        if x.enables_interrupts_at_entry {
            cx.set_primask(false);
        }
        self.start_interfaces(cx);
        RomControl::Idle { wake_at: self.keep_watchdog(cx) }
    }

    fn poll(&mut self, cx: &mut RomCx<'_>) -> RomControl {
        if matches!(self.session, Session::Off | Session::Left | Session::Crashed) {
            return RomControl::Idle { wake_at: None };
        }
        let x = self.config.execution.clone();
        if let Some(a) = self.pending.take() {
            return self.apply(a, cx);
        }
        if x.usart_service == Service::Polling {
            for i in 0..self.usarts.len() {
                self.service_usart(i, cx);
            }
        }
        if x.usb_service == Service::Polling {
            self.service_usb(cx);
        }
        if let Some(a) = self.pending.take() {
            return self.apply(a, cx);
        }
        RomControl::Idle { wake_at: self.keep_watchdog(cx) }
    }

    fn on_exception(&mut self, exception: u32, cx: &mut RomCx<'_>) -> RomControl {
        if !matches!(self.session, Session::Listening | Session::Active(_)) {
            // The ROM's handler runs on state that is no longer the ROM's (P1 after Go / leave;
            // candleLight_fw PR #319: "this crashed the MCU"): modelled as its default handler.
            return RomControl::Hang;
        }
        let Some(irq) = exception.checked_sub(16) else { return RomControl::Hang };
        let mut served = false;
        for i in 0..self.usarts.len() {
            if self.usarts[i].irq == Some(irq) {
                self.service_usart(i, cx);
                served = true;
            }
        }
        if self.usb.as_ref().is_some_and(|u| u.irq == Some(irq)) {
            self.service_usb(cx);
            served = true;
        }
        if !served {
            return RomControl::Hang;
        }
        RomControl::Return
    }

    fn notes(&self) -> Vec<String> {
        self.notes.iter().cloned().collect()
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// VTOR as the ROM sets it at entry (RomConfig::execution.vtor_at_entry, unverified).
fn point_vtor(v: hil_bootloader_device::VtorAtEntry, cx: &mut RomCx<'_>) {
    match v {
        hil_bootloader_device::VtorAtEntry::Untouched => {}
        hil_bootloader_device::VtorAtEntry::BootAlias => {
            let _ = cx.set_vtor(0);
        }
        hil_bootloader_device::VtorAtEntry::SystemMemory => {
            let _ = cx.set_vtor(cx.layout().vector_table);
        }
    }
}
