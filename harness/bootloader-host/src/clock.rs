//! Whose time a host client counts its deadlines on.
//!
//! A client's timeouts are promises about the device: "the ROM answers within 1 s". Against a real
//! board that is wall time. Against a virtual board in `timing: fast`, the board's own clock runs
//! only while the host waits on it, so the client must count on that clock, or its verdict would
//! depend on how busy the host machine is. The transport supplies the clock; the client never
//! asks which kind it got (DESIGN.md symmetry rule: the time source belongs to the seam).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic clock with a way to let time pass on it.
pub trait Clock: Send + Sync {
    /// Time since this clock's epoch. A clock that can no longer be read (its board is gone)
    /// returns [`Duration::MAX`]: every deadline on it has passed, so no wait can hang.
    fn now(&self) -> Duration;
    /// Let `d` pass on this clock (a sleep on the wall clock; the board runs for `d` on a virtual
    /// one).
    fn sleep(&self, d: Duration);
    /// "wall" or "virtual", for logs and reports.
    fn kind(&self) -> ClockKind;
}

/// What a clock counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockKind {
    /// The host's monotonic clock (lab boards, `timing: realistic`).
    Wall,
    /// A virtual board's clock, which runs only while the host waits on it.
    Virtual,
}

/// The host's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    epoch: Instant,
}

impl WallClock {
    pub fn new() -> Self {
        WallClock { epoch: Instant::now() }
    }
    /// A shared handle, as clients and the rig take it.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(Self::new())
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for WallClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
    fn kind(&self) -> ClockKind {
        ClockKind::Wall
    }
}

/// A point on a [`Clock`]: `timeout` from now, saturating (an absurd timeout means "never", not an
/// overflow panic).
#[derive(Clone)]
pub struct Deadline {
    clock: Arc<dyn Clock>,
    at: Duration,
}

impl Deadline {
    pub fn after(clock: &Arc<dyn Clock>, timeout: Duration) -> Deadline {
        Deadline { clock: clock.clone(), at: clock.now().saturating_add(timeout) }
    }
    /// Time left on the clock (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_sub(self.clock.now())
    }
    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }
    /// The deadline as a time on its clock.
    pub fn at(&self) -> Duration {
        self.at
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Deadline({:?} on the {:?} clock)", self.at, self.clock.kind())
    }
}

/// Sleeps for at least the asked time and little more, on the wall clock.
///
/// A DfuSe host waits `bwPollTimeout` (about 22 ms on a G0 for a page erase or a 2 KiB block)
/// twice per 2 KiB, and whatever the OS adds to each sleep is lost throughput: ~0.06 ms on a lab
/// PC, ~1.3 ms in a Linux guest under QEMU TCG (measured, `hil bench flash-dfu`). So the OS sleep
/// ends early by the lateness seen so far and the rest is spent yielding. The lateness is learnt
/// per sleeper because it differs by two orders of magnitude between hosts; the `spin_sleep`
/// crate takes a fixed accuracy instead, which would be wrong on one of them.
#[derive(Debug, Default)]
pub struct PreciseSleep {
    /// How late the OS woke us lately (a running estimate, capped at [`PreciseSleep::MAX_EARLY`]).
    lateness: Duration,
}

impl PreciseSleep {
    /// The most a sleep is cut short by (and so spent yielding): a bound on the CPU this costs.
    pub const MAX_EARLY: Duration = Duration::from_millis(2);

    pub fn new() -> Self {
        Self::default()
    }

    /// Returns once `d` has passed, never before.
    pub fn sleep(&mut self, d: Duration) {
        let start = Instant::now();
        let end = start + d;
        let early = self.lateness.min(Self::MAX_EARLY);
        if d > early {
            let asked = d - early;
            std::thread::sleep(asked);
            // Lateness: how far past the asked wake-up we got; a running estimate weighted 1/4 to
            // the newest, so one preempted wake-up does not set it.
            let late = start.elapsed().saturating_sub(asked).min(Self::MAX_EARLY);
            self.lateness = (self.lateness * 3 + late) / 4;
        }
        while Instant::now() < end {
            std::thread::yield_now();
        }
    }

    /// The current estimate of the OS's lateness.
    pub fn lateness(&self) -> Duration {
        self.lateness
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::Mutex;

    /// A clock that moves only when slept on (what a gated virtual board looks like to a client).
    #[derive(Debug, Default)]
    pub struct ManualClock(pub Mutex<Duration>);

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            *self.0.lock().unwrap()
        }
        fn sleep(&self, d: Duration) {
            let mut t = self.0.lock().unwrap();
            *t = t.saturating_add(d);
        }
        fn kind(&self) -> ClockKind {
            ClockKind::Virtual
        }
    }

    #[test]
    fn a_precise_sleep_never_returns_early_and_learns_a_bounded_lateness() {
        let mut s = PreciseSleep::new();
        for ms in [0, 1, 3, 5, 3, 1] {
            let d = Duration::from_millis(ms);
            let t = Instant::now();
            s.sleep(d);
            assert!(t.elapsed() >= d, "{:?} < {d:?}", t.elapsed());
            assert!(s.lateness() <= PreciseSleep::MAX_EARLY);
        }
    }

    #[test]
    fn deadlines_count_on_their_clock_and_saturate() {
        let c: Arc<dyn Clock> = Arc::new(ManualClock::default());
        let d = Deadline::after(&c, Duration::from_secs(2));
        assert_eq!(d.remaining(), Duration::from_secs(2));
        c.sleep(Duration::from_millis(1500));
        assert_eq!(d.remaining(), Duration::from_millis(500));
        c.sleep(Duration::from_secs(1));
        assert!(d.passed());
        let never = Deadline::after(&c, Duration::MAX);
        assert!(!never.passed());
    }
}
