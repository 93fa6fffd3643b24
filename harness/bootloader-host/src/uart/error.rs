use std::fmt;
use std::time::Duration;

use super::protocol::Command;

/// What a command was about, for messages: an address, a page range, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    None,
    Address(u32),
    Pages { first: u16, count: usize },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::None => Ok(()),
            Subject::Address(a) => write!(f, " at 0x{a:08X}"),
            Subject::Pages { first, count: 1 } => write!(f, " of page {first}"),
            Subject::Pages { first, count } => write!(f, " of {count} pages from page {first}"),
        }
    }
}

/// Where in a command exchange something went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// After the command byte and its complement.
    Command,
    /// After the 4-byte address and checksum.
    Address,
    /// After a length / page-count frame.
    Length,
    /// After a data block or page list: the device has done the work when it ACKs.
    Completion,
    /// While reading the reply.
    Reply,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Command => "after the command bytes",
            Stage::Address => "after the address",
            Stage::Length => "after the length",
            Stage::Completion => "at the end of the operation",
            Stage::Reply => "in the reply",
        })
    }
}

/// Errors of the AN3155 client. Each names the command, the address or pages, and the stage.
#[derive(Debug, thiserror::Error)]
pub enum UartError {
    #[error("{command}{subject}: device answered NACK {stage}{}", nack_hint(*.command, *.stage))]
    Nack { command: Command, subject: Subject, stage: Stage },
    #[error(
        "{command}{subject}: no reply {stage} within {timeout:?} (got {received} of {expected} bytes){}",
        if *.resynced { "; link resynchronized" } else { "" }
    )]
    Timeout {
        command: Command,
        subject: Subject,
        stage: Stage,
        timeout: Duration,
        received: usize,
        expected: usize,
        /// True when the client resynchronized the link after the timeout (see
        /// [`super::Config::resync_after_timeout`]), so the next command starts clean.
        resynced: bool,
    },
    #[error("{command}{subject}: expected ACK or NACK {stage}, got 0x{byte:02X}")]
    UnexpectedByte { command: Command, subject: Subject, stage: Stage, byte: u8 },
    #[error("{command}{subject}: malformed reply: {reason}")]
    BadReply { command: Command, subject: Subject, reason: String },
    #[error("{command}: not offered by this bootloader (Get lists {listed})")]
    NotSupported { command: Command, listed: String },
    #[error("{command}{subject}: {reason}")]
    InvalidArgument { command: Command, subject: Subject, reason: String },
    #[error("{during}: serial port error: {source}")]
    Io { during: String, source: std::io::Error },
    #[error(
        "sync: no ACK or NACK to 0x7F after {attempts} attempts (is the board in its bootloader, on this port, at a baud rate the bootloader accepts?)"
    )]
    SyncFailed { attempts: u32 },
    #[error("resync: no NACK to 0xFF 0x00 within {timeout:?}")]
    ResyncFailed { timeout: Duration },
    #[error("serial port {port}: {source}")]
    Port { port: String, source: serialport::Error },
}

fn nack_hint(command: Command, stage: Stage) -> &'static str {
    match (command, stage) {
        // AN3155: with readout protection active only Get, Get Version and Get ID are served.
        (
            Command::ReadMemory | Command::WriteMemory | Command::Go | Command::Erase | Command::ExtendedErase,
            Stage::Command,
        ) => " (readout protection active?)",
        (_, Stage::Address) => " (address outside the bootloader's memory map, or checksum)",
        _ => "",
    }
}

impl UartError {
    /// The device answered NACK (as opposed to not answering or the link failing).
    pub fn is_nack(&self) -> bool {
        matches!(self, UartError::Nack { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, UartError::Timeout { .. })
    }
}
