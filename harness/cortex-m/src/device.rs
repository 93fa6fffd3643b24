//! The seam between the core's system and a board's peripherals.
//!
//! A board (e.g. the virtual STM32G071) implements each peripheral as a [`Device`] and maps it into
//! the [`crate::Memory`] map. Devices never call each other: state that several devices need (clock
//! enables in RCC that gate other peripherals, option bytes, the boot mode) lives in the board's
//! shared state `S`, reached through [`DeviceCx::shared`].

use std::any::Any;

use crate::bus::{BusFaultKind, Initiator, Size};
use crate::memory::{DeviceId, Memory};
use crate::scheduler::Scheduler;
use crate::time::{VirtualDuration, VirtualTime};

/// Why a system reset happens. Boards map these to their reset-flag registers (RCC_CSR on STM32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetCause {
    /// Power-on (and BOR): SRAM content is lost, everything resets.
    PowerOn,
    /// The NRST pin was driven low.
    Pin,
    /// SYSRESETREQ written to AIRCR.
    Software,
    IndependentWatchdog,
    WindowWatchdog,
    /// Option byte loading (OBL_LAUNCH): a reset that re-reads option bytes.
    OptionByteLoad,
    LowPower,
}

/// A memory-mapped peripheral.
///
/// `offset` is relative to the base of the region the access hit. Errors are bus faults: the
/// system adds the address and size.
pub trait Device<S>: Any + Send {
    /// Short name used in traces and errors ("FLASH", "USART2").
    fn name(&self) -> &str;

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        initiator: Initiator,
        cx: &mut DeviceCx<'_, S>,
    ) -> Result<u32, BusFaultKind>;

    fn write(
        &mut self,
        offset: u32,
        size: Size,
        value: u32,
        initiator: Initiator,
        cx: &mut DeviceCx<'_, S>,
    ) -> Result<(), BusFaultKind>;

    /// A CPU write to a store mapped with [`crate::WritePolicy::Device`] naming this device: the
    /// flash controller decides whether it programs (`addr` is the absolute bus address).
    fn store_write(&mut self, addr: u32, size: Size, value: u32, cx: &mut DeviceCx<'_, S>) -> Result<(), BusFaultKind> {
        let _ = (addr, size, value, cx);
        Err(BusFaultKind::ReadOnly)
    }

    /// An event this device scheduled fell due (`cx.now` is the time it was scheduled for).
    fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, S>) {
        let _ = (tag, cx);
    }

    /// System reset. Pending events of the device are cancelled before this is called.
    fn reset(&mut self, cause: ResetCause, cx: &mut DeviceCx<'_, S>) {
        let _ = (cause, cx);
    }
}

/// Interrupt request lines from devices to the NVIC (up to 256).
#[derive(Clone, Debug, Default)]
pub struct IrqLines {
    level: [u64; 4],
    pulses: [u64; 4],
    pub(crate) changed: bool,
}

impl IrqLines {
    /// Drive line `n` high (request) or low. STM32 peripheral interrupts are levels: they stay high
    /// while the flag and its enable bit are set.
    pub fn set(&mut self, n: u32, high: bool) {
        let (w, b) = ((n / 64) as usize & 3, n % 64);
        let old = self.level[w];
        if high {
            self.level[w] |= 1 << b;
        } else {
            self.level[w] &= !(1 << b);
        }
        self.changed |= old != self.level[w];
    }
    /// A one-shot request (sets the NVIC pending bit once).
    pub fn pulse(&mut self, n: u32) {
        self.pulses[(n / 64) as usize & 3] |= 1 << (n % 64);
        self.changed = true;
    }
    pub fn is_high(&self, n: u32) -> bool {
        self.level[(n / 64) as usize & 3] & (1 << (n % 64)) != 0
    }
    pub fn levels(&self) -> [u64; 4] {
        self.level
    }
    pub fn take_pulses(&mut self) -> [u64; 4] {
        std::mem::take(&mut self.pulses)
    }
    /// All lines low (system reset).
    pub fn clear(&mut self) {
        self.changed |= self.level != [0; 4] || self.pulses != [0; 4];
        self.level = [0; 4];
        self.pulses = [0; 4];
    }
}

/// Requests from devices to the board, collected after each device call.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    pub(crate) reset: Option<ResetCause>,
    pub(crate) event: bool,
    pub(crate) core_hz: Option<u32>,
}

/// What a device sees during a call.
pub struct DeviceCx<'a, S> {
    /// Virtual time of this access (or the time an event was scheduled for).
    pub now: VirtualTime,
    /// The device being called (for scheduling its own events).
    pub me: DeviceId,
    /// Board state shared by devices.
    pub shared: &'a mut S,
    /// The memory map and its stores (flash controllers program through it).
    pub memory: &'a mut Memory,
    pub(crate) scheduler: &'a mut Scheduler,
    pub(crate) irq: &'a mut IrqLines,
    pub(crate) signals: &'a mut Signals,
}

impl<S> DeviceCx<'_, S> {
    /// Call this device's [`Device::event`] with `tag` after `delay` (replacing a pending one with
    /// the same tag).
    pub fn schedule_in(&mut self, delay: VirtualDuration, tag: u32) {
        self.scheduler.schedule(self.now + delay, self.me, tag);
    }
    pub fn schedule_at(&mut self, at: VirtualTime, tag: u32) {
        self.scheduler.schedule(at, self.me, tag);
    }
    pub fn cancel(&mut self, tag: u32) -> bool {
        self.scheduler.cancel(self.me, tag)
    }
    pub fn is_scheduled(&self, tag: u32) -> bool {
        self.scheduler.is_pending(self.me, tag)
    }
    /// Drive interrupt line `irq` (the NVIC input number).
    pub fn set_irq(&mut self, irq: u32, high: bool) {
        self.irq.set(irq, high);
    }
    pub fn pulse_irq(&mut self, irq: u32) {
        self.irq.pulse(irq);
    }
    pub fn irq_is_high(&self, irq: u32) -> bool {
        self.irq.is_high(irq)
    }
    /// Request a system reset; the board performs it once the current instruction completes.
    pub fn request_reset(&mut self, cause: ResetCause) {
        // The first request wins (a watchdog reset is not overwritten by a later software one).
        self.signals.reset.get_or_insert(cause);
    }
    /// Signal an event to the core (wakes WFE).
    pub fn signal_event(&mut self) {
        self.signals.event = true;
    }
    /// The core clock changed (RCC switched SYSCLK): virtual time per cycle changes from now on.
    pub fn set_core_clock(&mut self, hz: u32) {
        self.signals.core_hz = Some(hz);
    }
}
