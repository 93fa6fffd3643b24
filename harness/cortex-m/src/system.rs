//! The system bus of a board: memory map, devices, event scheduler, interrupt lines and the core
//! clock that turns core cycles into virtual time. Implements [`Bus`] for the core.

use std::any::Any;

use crate::bus::{Attention, Bus, BusFault, BusFaultKind, CODE_LINE_HALFWORDS, Initiator, Size};
use crate::device::{Device, DeviceCx, IrqLines, ResetCause, Signals};
use crate::memory::{DeviceId, Memory, Target, WritePolicy, read_le};
use crate::scheduler::Scheduler;
use crate::time::{VirtualDuration, VirtualTime};

/// Core clock: virtual time = `epoch_time` + (cycle - `epoch_cycle`) periods at `hz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreClock {
    pub epoch_time: VirtualTime,
    pub epoch_cycle: u64,
    pub hz: u32,
}

impl CoreClock {
    pub fn new(hz: u32) -> Self {
        assert!(hz > 0, "core clock must be non-zero");
        CoreClock { epoch_time: VirtualTime::ZERO, epoch_cycle: 0, hz }
    }
    #[inline]
    pub fn time_at(&self, cycle: u64) -> VirtualTime {
        self.epoch_time + VirtualDuration::from_cycles(cycle.saturating_sub(self.epoch_cycle), self.hz)
    }
    /// First cycle at or after which `t` has been reached.
    pub fn cycle_at(&self, t: VirtualTime) -> u64 {
        if t <= self.epoch_time {
            return self.epoch_cycle;
        }
        let ps = (t.as_ps() - self.epoch_time.as_ps()) as u128;
        let cycles = (ps * self.hz as u128).div_ceil(1_000_000_000_000u128);
        self.epoch_cycle.saturating_add(cycles.min(u64::MAX as u128) as u64)
    }
    /// Change frequency at `cycle`, keeping time continuous.
    pub fn rebase(&mut self, cycle: u64, hz: u32) {
        assert!(hz > 0, "core clock must be non-zero");
        self.epoch_time = self.time_at(cycle);
        self.epoch_cycle = cycle;
        self.hz = hz;
    }
}

/// The board's system: everything on the bus except the core's own Private Peripheral Bus.
pub struct System<S> {
    pub memory: Memory,
    devices: Vec<Option<Box<dyn Device<S>>>>,
    names: Vec<String>,
    pub scheduler: Scheduler,
    pub irq: IrqLines,
    signals: Signals,
    pub shared: S,
    clock: CoreClock,
    attention: bool,
    pending: Attention,
}

impl<S: 'static> System<S> {
    pub fn new(shared: S, core_hz: u32) -> Self {
        System {
            memory: Memory::new(),
            devices: Vec::new(),
            names: Vec::new(),
            scheduler: Scheduler::new(),
            irq: IrqLines::default(),
            signals: Signals::default(),
            shared,
            clock: CoreClock::new(core_hz),
            attention: false,
            pending: Attention::default(),
        }
    }

    /// Add a device; map its register window(s) with [`Memory::map_device`].
    pub fn add_device(&mut self, device: Box<dyn Device<S>>) -> DeviceId {
        self.names.push(device.name().to_string());
        self.devices.push(Some(device));
        DeviceId((self.devices.len() - 1) as u16)
    }

    pub fn device_ids(&self) -> impl Iterator<Item = DeviceId> + '_ {
        (0..self.devices.len()).map(|i| DeviceId(i as u16))
    }
    pub fn device_name(&self, id: DeviceId) -> &str {
        &self.names[id.0 as usize]
    }
    pub fn find_device(&self, name: &str) -> Option<DeviceId> {
        self.names.iter().position(|n| n == name).map(|i| DeviceId(i as u16))
    }

    /// Typed access to a device (for the board, tests and diagnosis), outside any bus access.
    pub fn device<T: Device<S>>(&self, id: DeviceId) -> Option<&T> {
        let d: &dyn Any = self.devices.get(id.0 as usize)?.as_deref()?;
        d.downcast_ref::<T>()
    }
    /// Untyped access, for callers that accept several device types (e.g. register versions).
    pub fn device_any(&self, id: DeviceId) -> Option<&dyn Any> {
        let d: &dyn Any = self.devices.get(id.0 as usize)?.as_deref()?;
        Some(d)
    }
    pub fn device_any_mut(&mut self, id: DeviceId) -> Option<&mut dyn Any> {
        let d: &mut dyn Any = self.devices.get_mut(id.0 as usize)?.as_deref_mut()?;
        Some(d)
    }
    pub fn device_mut<T: Device<S>>(&mut self, id: DeviceId) -> Option<&mut T> {
        let d: &mut dyn Any = self.devices.get_mut(id.0 as usize)?.as_deref_mut()?;
        d.downcast_mut::<T>()
    }

    pub fn clock(&self) -> CoreClock {
        self.clock
    }
    /// Virtual time at core cycle `cycle`.
    pub fn time_at(&self, cycle: u64) -> VirtualTime {
        self.clock.time_at(cycle)
    }
    pub fn set_core_hz(&mut self, cycle: u64, hz: u32) {
        self.clock.rebase(cycle, hz);
        self.pending.deadline_changed = true;
        self.attention = true;
    }

    /// Run `f` with a device and its context at the time of `cycle` (or at `at` if given).
    pub fn with_device<R>(
        &mut self,
        id: DeviceId,
        cycle: u64,
        at: Option<VirtualTime>,
        f: impl FnOnce(&mut dyn Device<S>, &mut DeviceCx<'_, S>) -> R,
    ) -> R {
        let mut dev = self.devices[id.0 as usize]
            .take()
            .unwrap_or_else(|| panic!("device {} re-entered during its own call", self.names[id.0 as usize]));
        let now = at.unwrap_or_else(|| self.clock.time_at(cycle));
        let mut cx = DeviceCx {
            now,
            me: id,
            shared: &mut self.shared,
            memory: &mut self.memory,
            scheduler: &mut self.scheduler,
            irq: &mut self.irq,
            signals: &mut self.signals,
        };
        let r = f(dev.as_mut(), &mut cx);
        self.devices[id.0 as usize] = Some(dev);
        self.collect_signals(cycle);
        r
    }

    fn collect_signals(&mut self, cycle: u64) {
        if let Some(hz) = self.signals.core_hz.take() {
            self.clock.rebase(cycle, hz);
            self.pending.deadline_changed = true;
            self.attention = true;
        }
        if let Some(cause) = self.signals.reset.take() {
            self.pending.reset.get_or_insert(cause);
            self.attention = true;
        }
        if std::mem::take(&mut self.signals.event) {
            self.pending.event = true;
            self.attention = true;
        }
        if std::mem::take(&mut self.irq.changed) {
            self.pending.irq_changed = true;
            self.attention = true;
        }
        if std::mem::take(&mut self.scheduler.moved_earlier) {
            self.pending.deadline_changed = true;
            self.attention = true;
        }
    }

    /// Dispatch every device event due at `cycle`. Returns how many ran.
    pub fn dispatch_due_events(&mut self, cycle: u64) -> usize {
        let now = self.clock.time_at(cycle);
        let mut n = 0;
        while let Some((dev, tag, at)) = self.scheduler.pop_due(now) {
            self.with_device(dev, cycle, Some(at), |d, cx| d.event(tag, cx));
            n += 1;
        }
        n
    }

    /// Reset every device (pending events cancelled first), e.g. on a system reset.
    pub fn reset_devices(&mut self, cause: ResetCause, cycle: u64) {
        self.irq.clear();
        for id in 0..self.devices.len() {
            let id = DeviceId(id as u16);
            self.scheduler.cancel_all(id);
            self.with_device(id, cycle, None, |d, cx| d.reset(cause, cx));
        }
    }

    /// A reset requested by a device that the board has not yet acted on (also reported through
    /// [`Bus::take_attention`]).
    pub fn pending_reset(&self) -> Option<ResetCause> {
        self.pending.reset
    }
}

impl<S: 'static> Bus for System<S> {
    #[inline]
    fn read(&mut self, addr: u32, size: Size, initiator: Initiator, cycle: u64) -> Result<u32, BusFault> {
        let Some((_, region)) = self.memory.region_at(addr) else {
            return Err(BusFault::new(addr, size, BusFaultKind::Unmapped));
        };
        match region.target {
            Target::Store { store, offset, .. } => {
                let off = (offset + (addr - region.base)) as usize;
                read_le(self.memory.store(store), off, size).ok_or(BusFault::new(addr, size, BusFaultKind::Unmapped))
            }
            Target::Device { device } => {
                let off = addr - region.base;
                self.with_device(device, cycle, None, |d, cx| d.read(off, size, initiator, cx))
                    .map_err(|kind| BusFault::new(addr, size, kind))
            }
        }
    }

    #[inline]
    fn write(&mut self, addr: u32, size: Size, value: u32, initiator: Initiator, cycle: u64) -> Result<(), BusFault> {
        if let Some(done) = self.memory.write_store_direct(addr, size, value) {
            return done;
        }
        let Some((_, region)) = self.memory.region_at(addr) else {
            return Err(BusFault::new(addr, size, BusFaultKind::Unmapped));
        };
        match region.target {
            Target::Store { writes: WritePolicy::Device(device), .. } => self
                .with_device(device, cycle, None, |d, cx| d.store_write(addr, size, value, cx))
                .map_err(|kind| BusFault::new(addr, size, kind)),
            Target::Store { .. } => unreachable!("direct/fault/ignore policies are handled by write_store_direct"),
            Target::Device { device } => {
                let off = addr - region.base;
                self.with_device(device, cycle, None, |d, cx| d.write(off, size, value, initiator, cx))
                    .map_err(|kind| BusFault::new(addr, size, kind))
            }
        }
    }

    #[inline]
    fn fetch16(&mut self, addr: u32) -> Result<u16, BusFault> {
        let Some((_, region)) = self.memory.region_at(addr) else {
            return Err(BusFault::new(addr, Size::Half, BusFaultKind::Unmapped));
        };
        if !region.executable {
            return Err(BusFault::new(addr, Size::Half, BusFaultKind::NotExecutable));
        }
        match region.target {
            Target::Store { store, offset, .. } => {
                let off = (offset + (addr - region.base)) as usize;
                read_le(self.memory.store(store), off, Size::Half).map(|v| v as u16).ok_or(BusFault::new(
                    addr,
                    Size::Half,
                    BusFaultKind::Unmapped,
                ))
            }
            Target::Device { .. } => Err(BusFault::new(addr, Size::Half, BusFaultKind::NotExecutable)),
        }
    }

    #[inline]
    fn attention(&self) -> bool {
        self.attention
    }

    fn take_attention(&mut self) -> Attention {
        self.attention = false;
        std::mem::take(&mut self.pending)
    }

    fn irq_levels(&self) -> [u64; 4] {
        self.irq.levels()
    }

    fn take_irq_pulses(&mut self) -> [u64; 4] {
        self.irq.take_pulses()
    }

    fn deadline_cycle(&self) -> u64 {
        match self.scheduler.next_deadline() {
            Some(t) => self.clock.cycle_at(t),
            None => u64::MAX,
        }
    }

    #[inline]
    fn fetch_code_line(&mut self, line_addr: u32, out: &mut [u16; CODE_LINE_HALFWORDS]) -> bool {
        self.memory.fetch_code_line(line_addr, out)
    }

    #[inline]
    fn code_generation(&self) -> u64 {
        self.memory.generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::WritePolicy;

    /// A timer that raises IRQ 5 `period` after its CTRL register is written, and counts reads.
    struct Timer {
        reads: u32,
        fired: Vec<VirtualTime>,
    }
    #[derive(Default)]
    struct Shared {
        gate_open: bool,
    }

    impl Device<Shared> for Timer {
        fn name(&self) -> &str {
            "TIM"
        }
        fn read(
            &mut self,
            offset: u32,
            _: Size,
            _: Initiator,
            cx: &mut DeviceCx<'_, Shared>,
        ) -> Result<u32, BusFaultKind> {
            if !cx.shared.gate_open {
                return Err(BusFaultKind::Device("clock gated"));
            }
            self.reads += 1;
            Ok(offset)
        }
        fn write(
            &mut self,
            _: u32,
            _: Size,
            v: u32,
            _: Initiator,
            cx: &mut DeviceCx<'_, Shared>,
        ) -> Result<(), BusFaultKind> {
            cx.schedule_in(VirtualDuration::from_us(v as u64), 1);
            Ok(())
        }
        fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, Shared>) {
            assert_eq!(tag, 1);
            self.fired.push(cx.now);
            cx.set_irq(5, true);
            cx.request_reset(ResetCause::IndependentWatchdog);
        }
        fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
            cx.set_irq(5, false);
        }
    }

    fn sys() -> (System<Shared>, DeviceId) {
        let mut s = System::new(Shared::default(), 16_000_000);
        let ram = s.memory.add_store("sram", 1024, 0);
        s.memory.map_store("sram", 0x2000_0000, 1024, ram, 0, WritePolicy::Direct, true).unwrap();
        let t = s.add_device(Box::new(Timer { reads: 0, fired: vec![] }));
        s.memory.map_device("TIM", 0x4000_0000, 0x400, t).unwrap();
        (s, t)
    }

    #[test]
    fn device_access_sees_shared_state_and_offsets() {
        let (mut s, t) = sys();
        let e = s.read(0x4000_0010, Size::Word, Initiator::Cpu, 0).unwrap_err();
        assert_eq!((e.addr, e.kind), (0x4000_0010, BusFaultKind::Device("clock gated")));
        s.shared.gate_open = true;
        assert_eq!(s.read(0x4000_0010, Size::Word, Initiator::Cpu, 0).unwrap(), 0x10);
        assert_eq!(s.device::<Timer>(t).unwrap().reads, 1);
        assert_eq!(s.fetch16(0x4000_0000).unwrap_err().kind, BusFaultKind::NotExecutable);
    }

    #[test]
    fn events_fire_at_their_time_and_raise_attention() {
        let (mut s, t) = sys();
        assert_eq!(s.deadline_cycle(), u64::MAX);
        // 16 MHz: 10 us = 160 cycles after cycle 1000.
        s.write(0x4000_0000, Size::Word, 10, Initiator::Cpu, 1000).unwrap();
        assert!(s.attention());
        let a = s.take_attention();
        assert!(a.deadline_changed && !a.irq_changed);
        assert_eq!(s.deadline_cycle(), 1160);
        assert_eq!(s.dispatch_due_events(1159), 0);
        assert_eq!(s.dispatch_due_events(1160), 1);
        assert_eq!(s.device::<Timer>(t).unwrap().fired, vec![VirtualTime(1160 * 62_500)]);
        let a = s.take_attention();
        assert!(a.irq_changed);
        assert_eq!(a.reset, Some(ResetCause::IndependentWatchdog));
        assert_eq!(s.irq_levels()[0], 1 << 5);
        s.reset_devices(ResetCause::IndependentWatchdog, 1200);
        assert_eq!(s.irq_levels()[0], 0);
    }

    #[test]
    fn clock_change_keeps_time_continuous() {
        let (mut s, _) = sys();
        s.set_core_hz(16_000_000, 64_000_000); // at 1 s
        assert_eq!(s.time_at(16_000_000), VirtualTime(1_000_000_000_000));
        assert_eq!(s.time_at(16_000_000 + 64_000_000), VirtualTime(2_000_000_000_000));
        assert_eq!(s.clock().cycle_at(VirtualTime(2_000_000_000_000)), 80_000_000);
    }
}
