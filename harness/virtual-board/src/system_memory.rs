//! The hand-off to the ROM bootloader model.
//!
//! The system-memory store holds a real vector table (SP word, reset handler) so that a boot
//! into system memory or an application's jump (`MSP = [0x1FFF0000]; PC = [0x1FFF0004]`) runs
//! through the core exactly as on silicon. The code those vectors point at is a few Thumb
//! instructions around `UDF #ROM_TRAP` ([`hil_cortex_m::CpuConfig::native_trap`]):
//!
//! ```text
//! ENTRY:   udf #T ; b ENTRY          reset handler: the board calls SystemBootloader::on_entry
//! PARK:    udf #T ; wfe ; b PARK     idle loop: each pass calls SystemBootloader::poll
//! EXC:     udf #T ; bx lr            vectors of the interrupts the ROM uses: on_exception
//! DEFAULT: wfi ; b DEFAULT           every other vector (NMI, HardFault, SysTick, other IRQs)
//! CRASH:   udf #0xFE                 an undefined instruction: HardFault into DEFAULT
//! ```
//!
//! The ROM's vector table is faithful to what a ROM built from ST's startup code has: the entries
//! of the interrupts it serves (its USARTs, USB) lead to their handlers (here: into the native
//! model), and every other entry is a default handler that loops forever. An exception the
//! application left enabled and pending at the jump (SysTick, a peripheral interrupt) therefore
//! hangs the ROM in DEFAULT once it is taken through the ROM's table, as users report it (seed 002;
//! bootloader-protocols.md P2 "long NVIC ICER/ICPR loops"); and an application started by Go whose
//! interrupts still vector through the ROM's table (VTOR left at the ROM, P1; candleLight_fw PR
//! #319: "the application executes the interrupt handler defined in STM bootloader code ... this
//! crashed the MCU") ends there too. The loop waits with WFI so that a hung board does not burn
//! host time; what a diagnosis sees (PC in the ROM's default handler, IPSR = the exception) is the
//! same as with a `b .` loop.
//!
//! While the model idles, the core really sits in `wfe` in system memory: interrupts still
//! vector through the NVIC and VTOR, SysTick keeps counting, the watchdog keeps running. The
//! board wakes the core (an event, as SEV from another master would) whenever a device event or
//! host input arrives, or at the time the model asked for, and the core's next pass over PARK
//! calls `poll` again. The model drives the peripherals as the real ROM does, through bus
//! accesses as the CPU ([`RomCx::read`]/[`RomCx::write`]: USART registers, FLASH registers and
//! flash programming), and leaves with [`RomCx::go`] (`MSP = [addr]`, `PC = [addr + 4]`; VTOR and
//! the remap untouched, PROTO section 1.5) or a reset.

use std::any::Any;

use hil_chips::Chip;
use hil_cortex_m::{
    Bus, BusFault, Cpu, DeviceId, Initiator, Reg, ResetCause, Size, System, VirtualDuration, VirtualTime,
};

use crate::shared::{BootInfo, BootTargetName, RdpLevel, Shared};

/// The immediate of the `UDF` that hands control to the native ROM model. Not 0 (cortex-m's
/// `udf()`) nor 254 (LLVM's trap): firmware never emits it, and only traps inside system memory
/// are taken as hand-offs.
pub const ROM_TRAP: u8 = 0x5B;

const UDF: u16 = 0xDE00 | ROM_TRAP as u16;
/// `udf #0xFE`: permanently undefined, a HardFault on ARMv6-M (B1.5.6).
const UDF_CRASH: u16 = 0xDEFE;
const WFE: u16 = 0xBF20;
const WFI: u16 = 0xBF30;
const BX_LR: u16 = 0x4770;

/// Addresses of the hand-off code in system memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RomLayout {
    pub vector_table: u32,
    pub initial_sp: u32,
    /// Reset handler (`udf #T`).
    pub entry: u32,
    /// Idle loop: `udf #T` at `park`, `wfe` at `park + 2`.
    pub park: u32,
    /// Exception stub: `udf #T` at `exc`, `bx lr` at `exc + 2`.
    pub exc: u32,
    /// Default handler (vectors of exceptions the ROM does not use): `wfi ; b` forever.
    pub default_handler: u32,
    /// An undefined instruction: executing it crashes the ROM (HardFault into the default handler).
    pub crash: u32,
}

/// External interrupt lines whose vectors lead into the ROM model: the USARTs the chip data names
/// for the bootloader and, on parts whose ROM has USB DFU, the USB peripheral (AN2606 bootloader
/// configuration of the part).
pub fn rom_irqs(chip: &Chip) -> Vec<u32> {
    let mut names: Vec<&str> = chip.bootloader.usart.iter().map(|u| u.instance.as_str()).collect();
    if chip.bootloader.usb_dfu {
        names.push("USB");
    }
    let mut irqs: Vec<u32> =
        names.iter().filter_map(|n| chip.peripherals.iter().find(|p| p.name == *n).and_then(|p| p.irq)).collect();
    irqs.sort_unstable();
    irqs.dedup();
    irqs
}

/// Unconditional branch T2 from `at` to `target`.
fn b(at: u32, target: u32) -> u16 {
    let off = (target as i64 - (at as i64 + 4)) >> 1;
    0xE000 | (off as u16 & 0x7FF)
}

/// Build the system-memory image: vector table, hand-off code, bootloader ID byte.
pub fn build_image(chip: &Chip) -> (Vec<u8>, RomLayout) {
    let sm = &chip.memory.system_memory;
    let mut img = vec![0xFF; sm.size as usize];
    let base = sm.base;
    let layout = RomLayout {
        vector_table: base,
        initial_sp: chip.bootloader.initial_sp.unwrap_or(chip.memory.sram.base + chip.memory.sram.size),
        entry: base + 0x200,
        park: base + 0x210,
        exc: base + 0x220,
        default_handler: base + 0x230,
        crash: base + 0x240,
    };
    let put16 = |img: &mut Vec<u8>, addr: u32, v: u16| {
        let o = (addr - base) as usize;
        img[o..o + 2].copy_from_slice(&v.to_le_bytes());
    };
    let put32 = |img: &mut Vec<u8>, addr: u32, v: u32| {
        let o = (addr - base) as usize;
        img[o..o + 4].copy_from_slice(&v.to_le_bytes());
    };
    put32(&mut img, base, layout.initial_sp);
    put32(&mut img, base + 4, layout.entry | 1);
    let irqs = rom_irqs(chip);
    for n in 2..chip.vector_entries() {
        let used = n >= 16 && irqs.contains(&(n - 16));
        put32(&mut img, base + 4 * n, if used { layout.exc } else { layout.default_handler } | 1);
    }
    put16(&mut img, layout.entry, UDF);
    put16(&mut img, layout.entry + 2, b(layout.entry + 2, layout.entry));
    put16(&mut img, layout.park, UDF);
    put16(&mut img, layout.park + 2, WFE);
    put16(&mut img, layout.park + 4, b(layout.park + 4, layout.park));
    put16(&mut img, layout.exc, UDF);
    put16(&mut img, layout.exc + 2, BX_LR);
    put16(&mut img, layout.default_handler, WFI);
    put16(&mut img, layout.default_handler + 2, b(layout.default_handler + 2, layout.default_handler));
    put16(&mut img, layout.crash, UDF_CRASH);
    if let Some(a) = chip.bootloader.id_address
        && sm.contains(a)
    {
        img[(a - base) as usize] = chip.bootloader.id;
    }
    // Parts whose flash-size register lies in system memory (STM32F1: 0x1FFFF7E0, RM0008 30.1)
    // find it in the ROM image: flash size in KiB.
    let fsr = chip.memory.flash_size_register;
    if sm.contains(fsr) && sm.contains(fsr + 1) {
        let o = (fsr - base) as usize;
        img[o..o + 2].copy_from_slice(&((chip.memory.flash.size / 1024) as u16).to_le_bytes());
    }
    (img, layout)
}

/// The further system memory areas (chip data `system_memory_extra`): the ROM's code there is not
/// modelled (erased bytes, 0xFF), but the bootloader ID byte is placed where AN2606 Table 3 says.
pub fn build_extra_images(chip: &Chip) -> Vec<(u32, Vec<u8>)> {
    chip.memory
        .system_memory_extra
        .iter()
        .map(|a| {
            let mut img = vec![0xFF; a.size as usize];
            if let Some(id) = chip.bootloader.id_address
                && a.contains(id)
            {
                img[(id - a.base) as usize] = chip.bootloader.id;
            }
            (a.base, img)
        })
        .collect()
}

/// How the core arrived in the ROM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RomEntryKind {
    /// Straight from a reset whose boot selection chose system memory.
    Reset(crate::shared::ResetCauseName),
    /// Software branched to the ROM's reset handler (the application's jump).
    Jump,
}

/// The core state at the moment it reached the ROM's reset handler.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RomEntry {
    #[serde(serialize_with = "crate::shared::ser_time")]
    pub at: VirtualTime,
    pub via: RomEntryKind,
    pub primask: bool,
    pub control: u32,
    /// CONTROL.SPSEL: thread mode on the process stack.
    pub psp_active: bool,
    /// Exception number in IPSR (0: thread mode).
    pub ipsr: u32,
    pub active_exceptions: Vec<u32>,
    pub vtor: u32,
    pub msp: u32,
    pub psp: u32,
    pub lr: u32,
    /// NVIC enabled interrupts (ISER words) and whether SysTick is counting with its interrupt.
    pub nvic_enabled: Vec<u32>,
    pub systick_running: bool,
    /// The remap register (chip data `remap.register`; 0 without one) and what the 0x00000000
    /// alias shows.
    pub remap_register: u32,
    pub alias: BootTargetName,
    pub boot: Option<BootInfo>,
}

/// What the model wants the core to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RomControl {
    /// Park the core in the ROM's idle loop; call `poll` again on the next device event or host
    /// input, or at `wake_at`.
    Idle { wake_at: Option<VirtualTime> },
    /// Return from the exception being handled (only after `on_exception`; elsewhere = Idle).
    Return,
    /// The model moved the core elsewhere ([`RomCx::go`]): the ROM is left.
    Jumped,
    /// Perform a system reset with this cause (e.g. after option bytes were written).
    Reset(ResetCause),
    /// Continue in the ROM's default handler, which loops forever (an exception the ROM has no
    /// use for, or one that reaches its handlers after the ROM was left: pitfall P1).
    Hang,
    /// The ROM code crashes: the core executes an undefined instruction in system memory and takes
    /// a HardFault through the vector table in use.
    Crash,
}

/// The ROM bootloader model the board hands control to.
pub trait SystemBootloader: Send {
    fn name(&self) -> &str;
    /// The chip was reset (any cause): forget per-session state (autobaud is once per reset).
    fn on_reset(&mut self, cause: ResetCause) {
        let _ = cause;
    }
    /// The core reached the ROM's reset handler.
    fn on_entry(&mut self, entry: &RomEntry, cx: &mut RomCx<'_>) -> RomControl;
    /// The core passed the idle loop (something may have happened).
    fn poll(&mut self, cx: &mut RomCx<'_>) -> RomControl;
    /// An exception vectored through the ROM's vector table (VTOR at system memory).
    fn on_exception(&mut self, exception: u32, cx: &mut RomCx<'_>) -> RomControl {
        default_exception(exception, cx)
    }
    /// What the model noticed that a diagnosis should report (CPU state at entry and what it
    /// implies, the interface in use, why it stopped answering). Newest last.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// For downcasting to the concrete model (tests, diagnosis).
    fn as_any(&mut self) -> &mut dyn Any;
}

/// What the default model does with an exception: an interrupt it does not use is disabled in
/// the NVIC (its line would re-pend forever) and returned from; SVC/PendSV/SysTick return;
/// NMI/HardFault park the core in the handler, where a diagnosis sees them.
pub fn default_exception(exception: u32, cx: &mut RomCx<'_>) -> RomControl {
    match exception {
        n if n >= 16 => {
            let irq = n - 16;
            let _ = cx.write(0xE000_E180 + 4 * (irq / 32), Size::Word, 1 << (irq % 32));
            RomControl::Return
        }
        11 | 14 | 15 => RomControl::Return,
        _ => RomControl::Idle { wake_at: None },
    }
}

/// Why [`RomCx::wait_until`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("condition not met within {0:?} of virtual time")]
    Timeout(VirtualDuration),
    /// A device requested a reset meanwhile (watchdog, option byte loading): the board performs it
    /// as soon as the model returns.
    #[error("a {0:?} reset is pending")]
    Reset(ResetCause),
}

/// What a ROM model can touch: the system bus as the CPU, the core's registers, time, chip data.
pub struct RomCx<'a> {
    pub(crate) cpu: &'a mut Cpu,
    pub(crate) sys: &'a mut System<Shared>,
    pub(crate) layout: RomLayout,
    /// The device that wakes the idle loop.
    pub(crate) wake: DeviceId,
    /// The USB device model, on chips whose ROM has USB DFU.
    pub(crate) usb: Option<DeviceId>,
}

impl<'a> RomCx<'a> {
    pub fn chip(&self) -> &'static Chip {
        self.sys.shared.chip
    }
    pub fn now(&self) -> VirtualTime {
        self.sys.time_at(self.cpu.cycles())
    }
    pub fn layout(&self) -> RomLayout {
        self.layout
    }
    /// A read as ROM code would do it: the Private Peripheral Bus (NVIC, SCB, SysTick) is served
    /// by the core, everything else is a bus access as the CPU (peripherals, flash, RAM).
    pub fn read(&mut self, addr: u32, size: Size) -> Result<u32, BusFault> {
        if is_ppb(addr) {
            return self.cpu.debug_read(&mut *self.sys, addr, size);
        }
        let c = self.cpu.cycles();
        self.sys.read(addr, size, Initiator::Cpu, c)
    }
    /// A write as ROM code would do it (flash writes go to the flash controller like the ROM's
    /// stores; PPB writes to the core).
    pub fn write(&mut self, addr: u32, size: Size, value: u32) -> Result<(), BusFault> {
        if is_ppb(addr) {
            return self.cpu.debug_write(&mut *self.sys, addr, size, value);
        }
        let c = self.cpu.cycles();
        self.sys.write(addr, size, value, Initiator::Cpu, c)
    }
    pub fn read_bytes(&mut self, addr: u32, out: &mut [u8]) -> Result<(), BusFault> {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read(addr.wrapping_add(i as u32), Size::Byte)? as u8;
        }
        Ok(())
    }
    /// The core (registers; PPB accesses through `debug_read`/`debug_write`).
    pub fn cpu(&mut self) -> &mut Cpu {
        self.cpu
    }
    /// The whole system (escape hatch for models that need more than bus accesses).
    pub fn system(&mut self) -> &mut System<Shared> {
        self.sys
    }
    /// Read-protection level loaded at the last option byte loading.
    pub fn rdp(&self) -> RdpLevel {
        self.sys.shared.flash.rdp
    }
    /// An option word (by chip-data name, e.g. `USER`) as loaded.
    pub fn option_word(&self, name: &str) -> Option<u32> {
        self.sys.shared.flash.words.get(name).copied()
    }
    /// Go (AN3155 Go command; PROTO section 1.5): `MSP = [addr]`, `PC = [addr + 4]` with the Thumb bit
    /// taken from the vector; VTOR, the remap and CONTROL stay as they are. Return
    /// [`RomControl::Jumped`] afterwards.
    pub fn go(&mut self, addr: u32) -> Result<(), BusFault> {
        let sp = self.read(addr, Size::Word)?;
        let pc = self.read(addr.wrapping_add(4), Size::Word)?;
        self.cpu.set_reg(Reg::Msp, sp);
        let xpsr = self.cpu.reg(Reg::Xpsr);
        let t = 1 << 24;
        self.cpu.set_reg(Reg::Xpsr, if pc & 1 != 0 { xpsr | t } else { xpsr & !t });
        self.cpu.set_reg(Reg::Pc, pc & !1);
        Ok(())
    }
    /// Set VTOR (SCB, 0xE000ED08) as ROM code would.
    pub fn set_vtor(&mut self, value: u32) -> Result<(), BusFault> {
        self.write(0xE000_ED08, Size::Word, value)
    }
    /// PRIMASK as `cpsid i` / `cpsie i` would set it.
    pub fn set_primask(&mut self, masked: bool) {
        let packed = self.cpu.reg(Reg::SpecialPacked);
        self.cpu.set_reg(Reg::SpecialPacked, (packed & !1) | masked as u32);
    }
    /// Branch as the ROM's jump code does: MSP (when given), then `BX pc` (bit 0 is the Thumb bit:
    /// a clear bit faults at the target, ARMv6-M A6.7.15). Nothing else changes (VTOR, remap,
    /// CONTROL, active exceptions). Return [`RomControl::Jumped`] afterwards.
    pub fn branch(&mut self, msp: Option<u32>, pc: u32) {
        if let Some(sp) = msp {
            self.cpu.set_reg(Reg::Msp, sp);
        }
        let xpsr = self.cpu.reg(Reg::Xpsr);
        let t = 1 << 24;
        self.cpu.set_reg(Reg::Xpsr, if pc & 1 != 0 { xpsr | t } else { xpsr & !t });
        self.cpu.set_reg(Reg::Pc, pc & !1);
    }
    /// Call `poll` again at `at` (or now, if `at` has passed), also from an exception handler.
    pub fn wake_at(&mut self, at: VirtualTime) {
        let cycle = self.cpu.cycles();
        let now = self.sys.time_at(cycle);
        self.sys.with_device(self.wake, cycle, None, |_, cx| cx.schedule_at(at.max(now), 1));
    }
    /// Let virtual time pass as a CPU polling a status flag would, until `done` holds: device
    /// events fall due on the way (flash operations complete, USART frames move, SysTick and the
    /// watchdog count). Interrupts are not taken meanwhile (the ROM code is busy), they stay
    /// pending. Gives up after `limit` of virtual time, or when a device requested a reset.
    /// Returns the time waited.
    pub fn wait_until(
        &mut self,
        limit: VirtualDuration,
        mut done: impl FnMut(&mut RomCx<'_>) -> bool,
    ) -> Result<VirtualDuration, WaitError> {
        let start = self.now();
        let hz = self.sys.clock().hz;
        let end = self.cpu.cycles().saturating_add(hil_cortex_m::time::cycles_in(limit, hz).max(1));
        loop {
            if let Some(cause) = self.sys.pending_reset() {
                return Err(WaitError::Reset(cause));
            }
            if done(self) {
                return Ok(self.now() - start);
            }
            let cycle = self.cpu.cycles();
            if cycle >= end {
                return Err(WaitError::Timeout(limit));
            }
            let next = self.sys.deadline_cycle().min(end).max(cycle + 1);
            self.cpu.skip_cycles(next - cycle);
            self.sys.dispatch_due_events(self.cpu.cycles());
        }
    }
    /// The USB device model (chips whose ROM has USB DFU).
    pub fn usb(&mut self) -> Option<&mut crate::periph::usb::UsbDevice> {
        let id = self.usb?;
        self.sys.device_mut::<crate::periph::usb::UsbDevice>(id)
    }
    /// Run `f` on the USB device model with its device context (for state changes that schedule
    /// events or move its interrupt line).
    pub fn with_usb<R>(
        &mut self,
        f: impl FnOnce(&mut crate::periph::usb::UsbDevice, &mut hil_cortex_m::DeviceCx<'_, Shared>) -> R,
    ) -> Option<R> {
        let id = self.usb?;
        let cycle = self.cpu.cycles();
        self.sys.with_device(id, cycle, None, |d, cx| {
            let any: &mut dyn Any = d;
            any.downcast_mut::<crate::periph::usb::UsbDevice>().map(|u| f(u, cx))
        })
    }
}

/// The Private Peripheral Bus (ARMv6-M B3.1): served by the core, not the system bus.
fn is_ppb(addr: u32) -> bool {
    (0xE000_0000..0xE010_0000).contains(&addr)
}

/// A ROM model for tests of the hand-off itself: records every entry and exception, points VTOR
/// at its own vector table and idles. The board's default ROM is [`crate::StRom`] (ST's
/// bootloader); this one is the fallback for chips without ROM protocol data.
#[derive(Debug, Default)]
pub struct RecordingRom {
    pub entries: Vec<RomEntry>,
    pub exceptions: Vec<(u32, VirtualTime)>,
    pub polls: u64,
    pub resets: u64,
}

impl SystemBootloader for RecordingRom {
    fn name(&self) -> &str {
        "recording ROM (no protocol)"
    }
    fn on_reset(&mut self, _: ResetCause) {
        self.resets += 1;
    }
    fn on_entry(&mut self, entry: &RomEntry, cx: &mut RomCx<'_>) -> RomControl {
        self.entries.push(entry.clone());
        let base = cx.layout.vector_table;
        if let Err(e) = cx.set_vtor(base) {
            tracing::warn!(target: "hil_virtual_board", "ROM model could not set VTOR: {e}");
        }
        RomControl::Idle { wake_at: None }
    }
    fn poll(&mut self, _: &mut RomCx<'_>) -> RomControl {
        self.polls += 1;
        RomControl::Idle { wake_at: None }
    }
    fn on_exception(&mut self, exception: u32, cx: &mut RomCx<'_>) -> RomControl {
        self.exceptions.push((exception, cx.now()));
        default_exception(exception, cx)
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_has_vectors_and_trap_code() {
        let chip = Chip::by_name("STM32G071RB").unwrap();
        let (img, l) = build_image(chip);
        let w = |a: u32| u32::from_le_bytes(img[(a - 0x1FFF_0000) as usize..][..4].try_into().unwrap());
        let h = |a: u32| u16::from_le_bytes(img[(a - 0x1FFF_0000) as usize..][..2].try_into().unwrap());
        assert_eq!(w(0x1FFF_0000), 0x2000_2700);
        assert_eq!(w(0x1FFF_0004), l.entry | 1);
        assert_eq!(w(0x1FFF_0008), l.default_handler | 1, "NMI: default handler");
        assert_eq!(w(0x1FFF_003C), l.default_handler | 1, "SysTick: default handler");
        assert_eq!(w(0x1FFF_0000 + 4 * 47), l.default_handler | 1, "last IRQ vector");
        // USART1 (IRQ 27) and USART2 (IRQ 28) are the G071 ROM's interfaces (chip data).
        assert_eq!(rom_irqs(chip), vec![27, 28]);
        assert_eq!(w(0x1FFF_0000 + 4 * (16 + 27)), l.exc | 1, "USART1 vector into the model");
        assert_eq!(w(0x1FFF_0000 + 4 * (16 + 28)), l.exc | 1, "USART2 vector into the model");
        assert_eq!(h(l.default_handler), 0xBF30, "wfi");
        assert_eq!(h(l.default_handler + 2), 0xE7FD, "b default_handler");
        assert_eq!(h(l.crash), 0xDEFE);
        let g0b1 = Chip::by_name("STM32G0B1RE").unwrap();
        assert_eq!(rom_irqs(g0b1), vec![8, 27, 28], "USB DFU adds the USB interrupt");
        assert_eq!(h(l.entry), 0xDE5B);
        assert_eq!(h(l.park + 2), 0xBF20);
        // b PARK from PARK+4: offset -8 -> imm11 = -4.
        assert_eq!(h(l.park + 4), 0xE7FC);
        assert_eq!(h(l.entry + 2), 0xE7FD);
        assert_eq!(h(l.exc + 2), 0x4770);
        assert_eq!(img[0x6FFE], 0xB3, "bootloader ID byte at 0x1FFF6FFE");
    }
}
