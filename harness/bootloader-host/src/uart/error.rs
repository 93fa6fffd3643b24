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

/// Why a NACK may have a cause beyond "the device refused these bytes". Offered only when the
/// evidence supports it: a single NACK is as likely a corrupted byte on a noisy link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NackHint {
    /// The same NACK after the command bytes on every attempt, for a command readout protection
    /// blocks (AN3155 command table note; reference 1.4), while Get Version, which protection
    /// does not block, was answered: the link itself works.
    ReadoutProtection { attempts: u32 },
    /// The address lies outside every region of the memory map the client was given (the device
    /// NACKs such addresses after the address frame; reference 1.2).
    AddressOutsideMap { address: u32, map: String },
}

impl fmt::Display for NackHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NackHint::ReadoutProtection { attempts } => write!(
                f,
                "the same NACK on all {attempts} attempts while Get Version was answered: readout protection active?"
            ),
            NackHint::AddressOutsideMap { address, map } => {
                write!(f, "0x{address:08X} is outside the bootloader's memory map ({map})")
            }
        }
    }
}

/// Bytes for a message: all of a short frame, the head and checksum of a long one.
pub(crate) fn summary(bytes: &[u8]) -> String {
    use crate::transcript::hex;
    match bytes.len() {
        0 => "nothing".into(),
        1..=8 => hex(bytes),
        n => format!("{} .. {} ({n} bytes)", hex(&bytes[..5]), hex(&bytes[n - 1..])),
    }
}

/// Errors of the AN3155 client. Each names the command, the address or pages, and the stage.
#[derive(Debug, thiserror::Error)]
pub enum UartError {
    #[error(
        "{command}{subject}: device answered NACK {stage} to {}{}",
        summary(sent),
        hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Nack {
        command: Command,
        subject: Subject,
        stage: Stage,
        /// The frame the NACK answered (command pair, address frame, length or data frame).
        sent: Vec<u8>,
        hint: Option<NackHint>,
    },
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
    #[error(
        "{command}{subject}: the block reads back 0x{got:02X} at offset {offset} where 0x{expected:02X} was sent, and is not erased (the flash needs an erase before it takes the block again)"
    )]
    ReadBackDiffers { command: Command, subject: Subject, offset: usize, expected: u8, got: u8 },
    #[error("{command}{subject}: gave up after {attempts} attempts; the last one: {last}")]
    RetriesExhausted { command: Command, subject: Subject, attempts: u32, last: Box<UartError> },
    #[error("{command}{subject}: the caller's deadline passed {stage} (after {retries} retries of this command)")]
    DeadlineExceeded { command: Command, subject: Subject, stage: Stage, retries: u32 },
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
    #[error("resync: the device answered none of the filler bytes with NACK within {timeout:?}")]
    ResyncFailed { timeout: Duration },
    #[error("serial port {port}: {source}")]
    Port { port: String, source: serialport::Error },
}

impl UartError {
    /// The device answered NACK (as opposed to not answering or the link failing).
    pub fn is_nack(&self) -> bool {
        matches!(self.last(), UartError::Nack { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self.last(), UartError::Timeout { .. })
    }

    /// The error of the last attempt when retries ran out, else this one.
    pub fn last(&self) -> &UartError {
        match self {
            UartError::RetriesExhausted { last, .. } => last,
            other => other,
        }
    }

    /// What a noisy link can cause and a retry can cure: a refusal (a corrupted byte fails a
    /// complement or checksum), silence (a lost byte leaves the device waiting), or a garbled
    /// reply. Port errors, deadlines and refused arguments are final.
    pub fn is_link_error(&self) -> bool {
        matches!(
            self,
            UartError::Nack { .. }
                | UartError::Timeout { .. }
                | UartError::UnexpectedByte { .. }
                | UartError::BadReply { .. }
                | UartError::ReadBackDiffers { .. }
        )
    }

    /// Where in the exchange it happened, when known.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            UartError::Nack { stage, .. }
            | UartError::Timeout { stage, .. }
            | UartError::UnexpectedByte { stage, .. }
            | UartError::DeadlineExceeded { stage, .. } => Some(*stage),
            UartError::BadReply { .. } => Some(Stage::Reply),
            UartError::ReadBackDiffers { .. } => Some(Stage::Completion),
            UartError::RetriesExhausted { last, .. } => last.stage(),
            _ => None,
        }
    }
}
