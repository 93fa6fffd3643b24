//! Protocol transcripts: every byte a client sends or receives (and every control transfer), with
//! direction and time, plus notes saying which command the bytes belong to. The rig attaches a sink
//! to a client and renders the records into reports.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::dfu::transport::Setup;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    HostToDevice,
    DeviceToHost,
}

/// One thing that happened on the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes written to (host to device) or read from (device to host) a serial line.
    Bytes { direction: Direction, data: Vec<u8> },
    /// A control transfer: the setup packet, the data stage (OUT data sent or IN data received)
    /// and the outcome (`Err` holds the transfer error text).
    Control { setup: Setup, data: Vec<u8>, outcome: Result<(), String> },
    /// What the client is doing, e.g. `Write Memory (0x31) at 0x08000000, 256 bytes`.
    Note(String),
}

/// Receives events as they happen. Implemented for closures and for [`Transcript`].
pub trait TranscriptSink: Send {
    fn record(&mut self, at: Instant, event: Event);
}

impl<F: FnMut(Instant, Event) + Send> TranscriptSink for F {
    fn record(&mut self, at: Instant, event: Event) {
        self(at, event)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub at: Instant,
    pub event: Event,
}

/// A shareable in-memory transcript: clone it, give one clone to a client as its sink, read the
/// records from the other.
#[derive(Clone, Debug)]
pub struct Transcript {
    start: Instant,
    records: Arc<Mutex<Vec<Record>>>,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript { start: Instant::now(), records: Arc::default() }
    }
}

impl Transcript {
    pub fn new() -> Self {
        Self::default()
    }

    /// Time zero of [`Transcript::render`].
    pub fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        // A panic elsewhere while holding the lock leaves a usable Vec; keep recording.
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// All bytes that went in `direction`, concatenated (handy in tests and byte-level diffs).
    pub fn bytes(&self, direction: Direction) -> Vec<u8> {
        self.lock()
            .iter()
            .filter_map(|r| match &r.event {
                Event::Bytes { direction: d, data } if *d == direction => Some(data.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    /// One line per record: time since start, direction, hex bytes, and the meaning of single
    /// AN3155 reply bytes and DFU requests.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in self.lock().iter() {
            let t = r.at.saturating_duration_since(self.start);
            let _ = write!(out, "{:>10.3} ms  ", t.as_secs_f64() * 1000.0);
            let _ = match &r.event {
                Event::Note(text) => writeln!(out, "-- {text}"),
                Event::Bytes { direction, data } => {
                    let arrow = if *direction == Direction::HostToDevice { ">>" } else { "<<" };
                    let meaning = match (direction, data.as_slice()) {
                        (Direction::DeviceToHost, [0x79]) => "  ACK",
                        (Direction::DeviceToHost, [0x1F]) => "  NACK",
                        (Direction::DeviceToHost, [0x76]) => "  BUSY",
                        _ => "",
                    };
                    writeln!(out, "{arrow} {}{meaning}", hex(data))
                }
                Event::Control { setup, data, outcome } => {
                    let arrow = if setup.is_in() { "<<" } else { ">>" };
                    let result = match outcome {
                        Ok(()) => String::new(),
                        Err(e) => format!("  -> {e}"),
                    };
                    writeln!(out, "{arrow} {} [{}]{result}", setup.describe(), hex(data))
                }
            };
        }
        out
    }

    /// Time from the first to the last record.
    pub fn span(&self) -> Duration {
        let records = self.lock();
        match (records.first(), records.last()) {
            (Some(a), Some(b)) => b.at.saturating_duration_since(a.at),
            _ => Duration::ZERO,
        }
    }
}

impl TranscriptSink for Transcript {
    fn record(&mut self, at: Instant, event: Event) {
        self.lock().push(Record { at, event });
    }
}

pub(crate) fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 3);
    for (i, b) in data.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Optional sink held by the clients.
#[derive(Default)]
pub(crate) struct Tap(Option<Box<dyn TranscriptSink>>);

impl Tap {
    pub(crate) fn set(&mut self, sink: Option<Box<dyn TranscriptSink>>) {
        self.0 = sink;
    }

    pub(crate) fn emit(&mut self, event: impl FnOnce() -> Event) {
        if let Some(sink) = self.0.as_mut() {
            sink.record(Instant::now(), event());
        }
    }

    pub(crate) fn note(&mut self, text: impl FnOnce() -> String) {
        self.emit(|| Event::Note(text()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_directions_and_ack_meanings() {
        let mut t = Transcript::new();
        let at = t.start();
        t.record(at, Event::Note("Get (0x00)".into()));
        t.record(at, Event::Bytes { direction: Direction::HostToDevice, data: vec![0x00, 0xFF] });
        t.record(at + Duration::from_millis(2), Event::Bytes { direction: Direction::DeviceToHost, data: vec![0x1F] });
        let text = t.render();
        assert_eq!(
            text, "     0.000 ms  -- Get (0x00)\n     0.000 ms  >> 00 FF\n     2.000 ms  << 1F  NACK\n",
            "{text}"
        );
        assert_eq!(t.bytes(Direction::HostToDevice), [0x00, 0xFF]);
        assert_eq!(t.span(), Duration::from_millis(2));
    }

    #[test]
    fn closures_are_sinks() {
        let mut seen = Vec::new();
        {
            let mut sink = |_: Instant, e: Event| seen.push(e);
            sink.record(Instant::now(), Event::Note("x".into()));
        }
        assert_eq!(seen, [Event::Note("x".into())]);
    }
}
