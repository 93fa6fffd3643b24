//! Protocol transcripts as report evidence.

use super::*;

impl RigSession {
    /// Transcript records as report entries, relative to the transcript's start.
    pub fn transcript_evidence(&self) -> Option<Evidence> {
        let start = self.transcript.start();
        let entries: Vec<TranscriptEntry> = self
            .transcript
            .records()
            .into_iter()
            .map(|r| {
                let wall_offset_ms = r.at.saturating_duration_since(start).as_millis() as u64;
                match r.event {
                    Event::Bytes { direction, data } => TranscriptEntry {
                        wall_offset_ms,
                        direction: if direction == Direction::HostToDevice { "tx" } else { "rx" }.into(),
                        bytes: hex(&data),
                        decoded: decode_an3155(direction, &data),
                    },
                    Event::Control { setup, data, outcome } => TranscriptEntry {
                        wall_offset_ms,
                        direction: if setup.is_in() { "rx" } else { "tx" }.into(),
                        bytes: hex(&data),
                        decoded: Some(match outcome {
                            Ok(()) => setup.describe(),
                            Err(e) => format!("{} -> {e}", setup.describe()),
                        }),
                    },
                    Event::Note(text) => TranscriptEntry {
                        wall_offset_ms,
                        direction: "note".into(),
                        bytes: String::new(),
                        decoded: Some(text),
                    },
                }
            })
            .collect();
        (!entries.is_empty()).then(|| Evidence::Transcript { channel: "bootloader".into(), entries })
    }
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

/// Meaning of single AN3155 bytes, for transcripts.
pub(super) fn decode_an3155(direction: Direction, data: &[u8]) -> Option<String> {
    match (direction, data) {
        (Direction::DeviceToHost, [0x79]) => Some("ACK".into()),
        (Direction::DeviceToHost, [0x1F]) => Some("NACK".into()),
        (Direction::HostToDevice, [0x7F]) => Some("sync (autobaud)".into()),
        (Direction::HostToDevice, [cmd, inv]) if *cmd == !*inv => Some(
            match cmd {
                0x00 => "Get",
                0x01 => "Get Version",
                0x02 => "Get ID",
                0x11 => "Read Memory",
                0x21 => "Go",
                0x31 => "Write Memory",
                0x43 => "Erase",
                0x44 => "Extended Erase",
                0x63 => "Write Protect",
                0x73 => "Write Unprotect",
                0x82 => "Readout Protect",
                0x92 => "Readout Unprotect",
                0xA1 => "Get Checksum",
                _ => return None,
            }
            .into(),
        ),
        _ => None,
    }
}
