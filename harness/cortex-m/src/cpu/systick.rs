//! SysTick (ARMv6-M ARM B3.3), computed lazily from the core's cycle count: the counter is never
//! ticked; its value and the cycle of its next 1 -> 0 transition follow from the cycle at which it
//! last changed. The run loop stops at that cycle so the exception is pended exactly on time.

/// CSR bits (B3.3.3).
pub(crate) const CSR_ENABLE: u32 = 1 << 0;
pub(crate) const CSR_TICKINT: u32 = 1 << 1;
pub(crate) const CSR_CLKSOURCE: u32 = 1 << 2;
pub(crate) const CSR_COUNTFLAG: u32 = 1 << 16;
const MASK24: u32 = 0x00FF_FFFF;

#[derive(Clone, Debug)]
pub(crate) struct SysTick {
    pub enable: bool,
    pub tickint: bool,
    /// 1 = processor clock, 0 = the implementation's reference clock.
    pub clksource: bool,
    pub countflag: bool,
    pub rvr: u32,
    /// Counter value at `base_cycle`.
    base_val: u32,
    base_cycle: u64,
    /// Cycle of the next 1 -> 0 transition (`u64::MAX`: none while the configuration stands).
    pub next_event: u64,
    /// Core cycles per reference-clock tick; `None` when the chip provides no reference clock.
    pub ref_divider: Option<u32>,
    pub calib: u32,
}

impl SysTick {
    pub fn new(ref_divider: Option<u32>, calib: u32) -> Self {
        SysTick {
            enable: false,
            tickint: false,
            clksource: ref_divider.is_none(),
            countflag: false,
            rvr: 0,
            base_val: 0,
            base_cycle: 0,
            next_event: u64::MAX,
            ref_divider,
            calib,
        }
    }

    /// Reset (B3.3.3: CSR resets to 0 except CLKSOURCE where only one clock exists; RVR and CVR
    /// are UNKNOWN, we use 0).
    pub fn reset(&mut self, cycle: u64) {
        *self = SysTick::new(self.ref_divider, self.calib);
        self.base_cycle = cycle;
    }

    fn divider(&self) -> u64 {
        if self.clksource { 1 } else { self.ref_divider.unwrap_or(1).max(1) as u64 }
    }

    /// Clock ticks between two cycles: ticks fall on absolute multiples of the divider, so
    /// re-basing at any cycle keeps the phase.
    fn ticks(&self, from: u64, to: u64) -> u64 {
        let d = self.divider();
        (to / d).saturating_sub(from / d)
    }

    /// Counter value after `k` ticks from the base (B3.3.1: counts down to 0, then reloads RVR on
    /// the next tick; a reload value of 0 leaves it at 0).
    fn value_after(&self, k: u64) -> u32 {
        let base = self.base_val as u64;
        if k <= base {
            return (base - k) as u32;
        }
        if self.rvr == 0 {
            return 0;
        }
        let period = self.rvr as u64 + 1;
        self.rvr - ((k - base - 1) % period) as u32
    }

    /// Tick number (from the base) of the first 1 -> 0 transition, if any.
    fn first_event_tick(&self) -> Option<u64> {
        if self.base_val >= 1 {
            Some(self.base_val as u64)
        } else if self.rvr >= 1 {
            Some(self.rvr as u64 + 1)
        } else {
            None
        }
    }

    /// CVR as software reads it at `cycle`.
    pub fn current(&self, cycle: u64) -> u32 {
        if !self.enable {
            return self.base_val;
        }
        self.value_after(self.ticks(self.base_cycle, cycle))
    }

    /// Bring the state to `cycle`. Returns true when the SysTick exception must be pended
    /// (a 1 -> 0 transition happened with TICKINT set).
    pub fn sync(&mut self, cycle: u64) -> bool {
        if !self.enable || cycle < self.base_cycle {
            return false;
        }
        let k = self.ticks(self.base_cycle, cycle);
        let fired = self.first_event_tick().is_some_and(|t| t <= k);
        self.base_val = self.value_after(k);
        self.base_cycle = cycle;
        if fired {
            self.countflag = true;
        }
        self.recompute();
        fired && self.tickint
    }

    fn recompute(&mut self) {
        self.next_event = match (self.enable, self.first_event_tick()) {
            (true, Some(t)) => {
                let d = self.divider();
                (self.base_cycle / d).saturating_add(t).saturating_mul(d)
            }
            _ => u64::MAX,
        };
    }

    pub fn read_csr(&mut self, clear_countflag: bool) -> u32 {
        let v = if self.enable { CSR_ENABLE } else { 0 }
            | if self.tickint { CSR_TICKINT } else { 0 }
            | if self.clksource { CSR_CLKSOURCE } else { 0 }
            | if self.countflag { CSR_COUNTFLAG } else { 0 };
        if clear_countflag {
            // B3.3.3: COUNTFLAG clears when software reads CSR.
            self.countflag = false;
        }
        v
    }

    /// Callers sync to `cycle` first.
    pub fn write_csr(&mut self, cycle: u64, v: u32) {
        self.base_cycle = cycle;
        self.enable = v & CSR_ENABLE != 0;
        self.tickint = v & CSR_TICKINT != 0;
        // Without a reference clock CLKSOURCE reads as one (CALIB.NOREF).
        self.clksource = v & CSR_CLKSOURCE != 0 || self.ref_divider.is_none();
        self.recompute();
    }

    pub fn write_rvr(&mut self, cycle: u64, v: u32) {
        self.base_cycle = cycle;
        self.rvr = v & MASK24;
        self.recompute();
    }

    /// B3.3.5: any write clears the counter and COUNTFLAG.
    pub fn write_cvr(&mut self, cycle: u64) {
        self.base_cycle = cycle;
        self.base_val = 0;
        self.countflag = false;
        self.recompute();
    }

    /// CALIB (B3.3.6): NOREF (bit 31) when there is no reference clock.
    pub fn read_calib(&self) -> u32 {
        (self.calib & 0x7FFF_FFFF) | ((self.ref_divider.is_none() as u32) << 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(rvr: u32, at: u64) -> SysTick {
        let mut s = SysTick::new(Some(8), 0);
        s.write_rvr(at, rvr);
        s.write_cvr(at);
        s.write_csr(at, CSR_ENABLE | CSR_TICKINT | CSR_CLKSOURCE);
        s
    }

    #[test]
    fn counts_down_from_reload_and_fires_every_period() {
        // CVR = 0 at enable: tick 1 reloads 9, tick 10 is the 1 -> 0 transition.
        let mut s = started(9, 100);
        assert_eq!(s.current(100), 0);
        assert_eq!(s.current(101), 9);
        assert_eq!(s.current(109), 1);
        assert_eq!(s.next_event, 110);
        assert!(!s.sync(109));
        assert!(s.sync(110));
        assert!(s.countflag);
        assert_eq!(s.current(110), 0);
        assert_eq!(s.next_event, 120, "period is RELOAD + 1");
        assert_eq!(s.read_csr(true) & CSR_COUNTFLAG, CSR_COUNTFLAG);
        assert_eq!(s.read_csr(true) & CSR_COUNTFLAG, 0, "COUNTFLAG clears on read");
    }

    #[test]
    fn reference_clock_ticks_on_divider_multiples() {
        let mut s = SysTick::new(Some(8), 0);
        s.write_rvr(3, 1);
        s.write_csr(3, CSR_ENABLE); // reference clock: ticks at 8, 16, 24 ...
        assert_eq!(s.next_event, 16, "tick at 8 reloads 1, tick at 16 reaches 0");
        assert!(!s.sync(16), "TICKINT clear: no exception, COUNTFLAG only");
        assert!(s.countflag);
    }

    #[test]
    fn reload_zero_stops_after_reaching_zero_and_disable_freezes() {
        let s = started(0, 0);
        assert_eq!(s.next_event, u64::MAX);
        let mut s = started(5, 0);
        assert!(s.sync(1000), "several wraps while skipping still pend once");
        let v = s.current(1003);
        s.sync(1003);
        s.write_csr(1003, 0);
        assert_eq!(s.current(5000), v);
        assert_eq!(s.next_event, u64::MAX);
    }

    #[test]
    fn no_reference_clock_forces_clksource() {
        let mut s = SysTick::new(None, 0x1234);
        s.write_csr(0, 0);
        assert_eq!(s.read_csr(false) & CSR_CLKSOURCE, CSR_CLKSOURCE);
        assert_eq!(s.read_calib(), 0x8000_1234);
    }
}
