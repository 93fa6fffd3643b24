//! Event scheduler on virtual time: devices are called only when something they asked for falls
//! due (a UART byte finishes shifting, a flash erase completes, the IWDG counter reaches zero),
//! never ticked per instruction.

use crate::memory::DeviceId;
use crate::time::VirtualTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Event {
    at: VirtualTime,
    seq: u64,
    device: DeviceId,
    tag: u32,
}

/// Pending device events. A board has a handful at a time, so a small vector with a cached
/// minimum beats a heap and makes cancel/replace trivial.
#[derive(Default, Debug)]
pub struct Scheduler {
    events: Vec<Event>,
    seq: u64,
    next: Option<VirtualTime>,
    /// Set when an event was added that is due earlier than the previous minimum.
    pub(crate) moved_earlier: bool,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask for `device.event(tag)` at `at`. An existing event with the same device and tag is
    /// replaced (re-arming a timer is the common case).
    pub fn schedule(&mut self, at: VirtualTime, device: DeviceId, tag: u32) {
        self.events.retain(|e| !(e.device == device && e.tag == tag));
        self.seq += 1;
        self.events.push(Event { at, seq: self.seq, device, tag });
        if self.next.is_none_or(|n| at < n) {
            self.moved_earlier = true;
        }
        self.recompute();
    }

    /// Cancel a pending event; returns whether one was pending.
    pub fn cancel(&mut self, device: DeviceId, tag: u32) -> bool {
        let before = self.events.len();
        self.events.retain(|e| !(e.device == device && e.tag == tag));
        self.recompute();
        before != self.events.len()
    }

    /// Cancel every event of a device (on its reset).
    pub fn cancel_all(&mut self, device: DeviceId) {
        self.events.retain(|e| e.device != device);
        self.recompute();
    }

    pub fn is_pending(&self, device: DeviceId, tag: u32) -> bool {
        self.events.iter().any(|e| e.device == device && e.tag == tag)
    }

    /// When the next event is due.
    pub fn next_deadline(&self) -> Option<VirtualTime> {
        self.next
    }

    /// Remove and return the earliest event due at or before `now` (ties in scheduling order).
    pub fn pop_due(&mut self, now: VirtualTime) -> Option<(DeviceId, u32, VirtualTime)> {
        let idx = self
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.at <= now)
            .min_by_key(|(_, e)| (e.at, e.seq))
            .map(|(i, _)| i)?;
        let e = self.events.swap_remove(idx);
        self.recompute();
        Some((e.device, e.tag, e.at))
    }

    pub fn clear(&mut self) {
        self.events.clear();
        self.next = None;
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn recompute(&mut self) {
        self.next = self.events.iter().map(|e| e.at).min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_events_come_out_in_time_then_schedule_order() {
        let mut s = Scheduler::new();
        let (a, b) = (DeviceId(0), DeviceId(1));
        s.schedule(VirtualTime(300), a, 1);
        s.schedule(VirtualTime(100), b, 7);
        s.schedule(VirtualTime(100), a, 2);
        assert_eq!(s.next_deadline(), Some(VirtualTime(100)));
        assert_eq!(s.pop_due(VirtualTime(99)), None);
        assert_eq!(s.pop_due(VirtualTime(200)), Some((b, 7, VirtualTime(100))));
        assert_eq!(s.pop_due(VirtualTime(200)), Some((a, 2, VirtualTime(100))));
        assert_eq!(s.pop_due(VirtualTime(200)), None);
        assert_eq!(s.next_deadline(), Some(VirtualTime(300)));
    }

    #[test]
    fn rescheduling_replaces_and_cancel_removes() {
        let mut s = Scheduler::new();
        let d = DeviceId(3);
        s.schedule(VirtualTime(100), d, 1);
        s.schedule(VirtualTime(500), d, 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_deadline(), Some(VirtualTime(500)));
        assert!(s.cancel(d, 1));
        assert!(!s.cancel(d, 1));
        assert_eq!(s.next_deadline(), None);
    }
}
