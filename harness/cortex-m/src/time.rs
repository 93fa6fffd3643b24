//! Virtual time. The board runs on a virtual clock: instructions, UART bytes, flash operations and
//! watchdogs take virtual time; `timing: realistic` paces it to wall time, `timing: fast` does not.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// Picoseconds since the board's power-on. A `u64` of picoseconds covers about 213 days, and every
/// clock this project models (64 MHz, 16 MHz, 32 kHz LSI, UART bit times) has a period that is a
/// whole or near-whole number of picoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualTime(pub u64);

/// A span of virtual time in picoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualDuration(pub u64);

impl VirtualTime {
    pub const ZERO: VirtualTime = VirtualTime(0);
    pub const MAX: VirtualTime = VirtualTime(u64::MAX);

    pub const fn as_ps(self) -> u64 {
        self.0
    }
    pub const fn as_ns(self) -> u64 {
        self.0 / 1_000
    }
    pub const fn as_us(self) -> u64 {
        self.0 / 1_000_000
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 * 1e-12
    }
    /// Time since the board's epoch (power-up of the model) as a `std` duration (ns resolution).
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0 / 1_000)
    }
    /// Saturating difference (zero if `earlier` is later than `self`).
    pub fn since(self, earlier: VirtualTime) -> VirtualDuration {
        VirtualDuration(self.0.saturating_sub(earlier.0))
    }
}

impl VirtualDuration {
    pub const ZERO: VirtualDuration = VirtualDuration(0);

    pub const fn from_ps(ps: u64) -> Self {
        VirtualDuration(ps)
    }
    pub const fn from_ns(ns: u64) -> Self {
        VirtualDuration(ns.saturating_mul(1_000))
    }
    pub const fn from_us(us: u64) -> Self {
        VirtualDuration(us.saturating_mul(1_000_000))
    }
    pub const fn from_ms(ms: u64) -> Self {
        VirtualDuration(ms.saturating_mul(1_000_000_000))
    }
    /// `cycles` periods of a clock running at `hz`.
    pub const fn from_cycles(cycles: u64, hz: u32) -> Self {
        // 128-bit intermediate: cycles * 1e12 overflows u64 after ~18 M cycles.
        VirtualDuration(((cycles as u128 * 1_000_000_000_000u128) / hz as u128) as u64)
    }
    pub const fn as_ps(self) -> u64 {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 * 1e-12
    }
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0 / 1_000)
    }
}

/// Whole cycles of a clock at `hz` that fit in `d` (rounded down).
pub const fn cycles_in(d: VirtualDuration, hz: u32) -> u64 {
    ((d.0 as u128 * hz as u128) / 1_000_000_000_000u128) as u64
}

impl Add<VirtualDuration> for VirtualTime {
    type Output = VirtualTime;
    fn add(self, d: VirtualDuration) -> VirtualTime {
        VirtualTime(self.0.saturating_add(d.0))
    }
}
impl AddAssign<VirtualDuration> for VirtualTime {
    fn add_assign(&mut self, d: VirtualDuration) {
        self.0 = self.0.saturating_add(d.0);
    }
}
impl Sub for VirtualTime {
    type Output = VirtualDuration;
    fn sub(self, rhs: VirtualTime) -> VirtualDuration {
        self.since(rhs)
    }
}
impl Add for VirtualDuration {
    type Output = VirtualDuration;
    fn add(self, rhs: VirtualDuration) -> VirtualDuration {
        VirtualDuration(self.0.saturating_add(rhs.0))
    }
}

impl fmt::Display for VirtualTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6} ms", self.0 as f64 / 1e9)
    }
}
impl fmt::Display for VirtualDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} us", self.0 as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_periods_are_exact_for_modelled_clocks() {
        assert_eq!(VirtualDuration::from_cycles(1, 64_000_000).as_ps(), 15_625);
        assert_eq!(VirtualDuration::from_cycles(1, 16_000_000).as_ps(), 62_500);
        assert_eq!(VirtualDuration::from_cycles(1, 32_000).as_ps(), 31_250_000);
        // No overflow for long spans: one hour of a 64 MHz core.
        let hour = VirtualDuration::from_cycles(64_000_000 * 3600, 64_000_000);
        assert_eq!(hour.as_ps(), 3_600_000_000_000_000);
        assert_eq!(cycles_in(hour, 64_000_000), 64_000_000 * 3600);
    }

    #[test]
    fn time_arithmetic_saturates() {
        let t = VirtualTime(10);
        assert_eq!(t.since(VirtualTime(20)), VirtualDuration::ZERO);
        assert_eq!(VirtualTime::MAX + VirtualDuration(5), VirtualTime::MAX);
    }
}
