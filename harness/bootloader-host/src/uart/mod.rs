//! AN3155 client: the ST ROM bootloader's USART protocol over any [`serialport::SerialPort`] (a
//! tty in the lab, the virtual board's PTY in CI).
//!
//! Behaviour follows AN3155 and, where the note is silent, stm32flash (\[SF\]), as summarized in the
//! project's reference (bootloader-protocols.md sections 1-2): 8E1 framing, 0x7F autobaud once per
//! reset, command byte + complement, MSB-first addresses with an XOR checksum, 256-byte blocks,
//! \[SF\] timeouts.
//!
//! # On a noisy link
//! AN3155 has no retransmission of its own: a corrupted byte fails a complement or checksum and
//! the device answers NACK, after which it waits for a new command and the host may send the
//! command again; a lost byte leaves the device waiting for one more byte, since the ROM has no
//! inter-byte timeout (reference 1.1-1.2). So every command runs under a retry loop
//! ([`Config::retries`]): after a failure the client brings the device back to its command state
//! ([`UartClient::resync`]) and tries the command again. A Write Memory block whose outcome is
//! unknown (its ACK was lost or garbled) is read back before it is written again, because flash
//! cannot be programmed twice without an erase. Every wait is bounded by the caller's deadline
//! ([`UartClient::set_deadline`]) on the port's clock. [`UartClient::stats`] counts retries.

mod error;
pub mod protocol;

use std::io::{ErrorKind, Read, Write};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Deadline, WallClock};

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits};

pub use error::{NackHint, Stage, Subject, UartError};
use protocol::{ACK, BUSY, MAX_BLOCK, NACK, SYNC, address_frame, xor};
pub use protocol::{Command, MassErase, stm32_crc};

use crate::transcript::{Direction, Event, Tap, TranscriptSink};

/// Deadlines for device replies. Defaults are stm32flash's (\[SF\] stm32.c, serial_posix.c;
/// reference 1.6) where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Any reply byte or block that is not one of the slow operations below (\[SF\]: 0.5 s per read).
    pub read: Duration,
    /// ACK after a Write Memory block (\[SF\] STM32_BLKWRITE_TIMEOUT).
    pub block_write: Duration,
    /// ACK after a page erase, per page in the command (\[SF\] STM32_PAGEERASE_TIMEOUT).
    pub page_erase: Duration,
    /// ACK after a mass or bank erase (\[SF\] STM32_MASSERASE_TIMEOUT).
    pub mass_erase: Duration,
    /// Second ACK of Readout Unprotect, sent before the device mass-erases (\[SF\] waits up to 35 s).
    pub readout_unprotect: Duration,
    /// Second ACK of Get Checksum, sent when the CRC is computed (\[SF\] uses its plain read timeout).
    pub checksum: Duration,
    /// Total time one [`UartClient::resync`] may take (\[SF\] STM32_RESYNC_TIMEOUT).
    pub resync: Duration,
    /// How long a resync waits for the device's answer to a filler byte before it sends more.
    /// The ROM answers a completed frame at once, so this is the link's latency (a USB serial
    /// adapter's latency timer is 1-16 ms) with a margin, not a device processing time.
    pub resync_probe: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            read: Duration::from_millis(500),
            block_write: Duration::from_secs(1),
            page_erase: Duration::from_secs(5),
            mass_erase: Duration::from_secs(35),
            readout_unprotect: Duration::from_secs(35),
            checksum: Duration::from_millis(500),
            resync: Duration::from_secs(35),
            resync_probe: Duration::from_millis(100),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub timeouts: Timeouts,
    /// How often [`UartClient::sync`] tries the 0x7F exchange.
    pub sync_attempts: u32,
    /// When a command finally fails on a timeout or a garbled reply, resynchronize before
    /// returning so the next command starts in step: the device has no inter-byte timeout and
    /// would otherwise take the next command as the rest of the lost one (reference 1.1).
    pub resync_after_timeout: bool,
    /// Page erases are split into commands of at most this many pages (\[SF\]: "STM32L152 cannot erase
    /// more than 512 pages in one command, even 511 for STM32L082").
    pub max_pages_per_erase: usize,
    /// How often a failed command (or Write Memory block) is sent again after a link error
    /// (NACK, silence, garbled reply) before the client gives up with
    /// [`UartError::RetriesExhausted`]. 0 = never.
    pub retries: u32,
    /// The address ranges the bootloader serves (flash, RAM, system memory, option bytes), when
    /// the caller knows the chip. Only used to explain an address NACK; nothing is refused.
    pub memory_map: Vec<Range<u64>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeouts: Timeouts::default(),
            sync_attempts: 3,
            resync_after_timeout: true,
            max_pages_per_erase: 511,
            retries: 4,
            memory_map: Vec::new(),
        }
    }
}

/// What it took to get the commands through, since the client was made (or
/// [`UartClient::take_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Commands or blocks sent again after a link error.
    pub retries: u32,
    /// Resynchronizations of the command framing ([`UartClient::resync`]).
    pub resyncs: u32,
    /// Write Memory blocks whose ACK was lost but whose read-back showed them written.
    pub confirmed_by_read_back: u32,
}

/// Line settings actually in effect after [`configure_port`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineSettings {
    pub baud_rate: u32,
    pub parity: Parity,
    /// False when the port silently kept another parity. Linux PTYs force CS8 without PARENB
    /// (reference 7), so against the virtual board this is false and that is fine: parity is a
    /// property of the wire, and a PTY has none.
    pub parity_applied: bool,
}

/// Sets 8E1 (AN3155 framing) at `baud`, no flow control, and reports what the port kept.
pub fn configure_port(port: &mut dyn SerialPort, baud_rate: u32) -> Result<LineSettings, serialport::Error> {
    port.set_baud_rate(baud_rate)?;
    port.set_data_bits(DataBits::Eight)?;
    port.set_parity(Parity::Even)?;
    port.set_stop_bits(StopBits::One)?;
    port.set_flow_control(FlowControl::None)?;
    let parity = port.parity()?;
    if parity != Parity::Even {
        tracing::info!(port = ?port.name(), ?parity, "even parity not applied (expected on a PTY); continuing");
    }
    Ok(LineSettings { baud_rate, parity, parity_applied: parity == Parity::Even })
}

/// Opens a serial device for the bootloader: 8E1 at `baud_rate` (see [`configure_port`]).
pub fn open_port(path: &str, baud_rate: u32) -> Result<(Box<dyn SerialPort>, LineSettings), UartError> {
    let port_err = |source| UartError::Port { port: path.to_string(), source };
    let mut port = serialport::new(path, baud_rate)
        .data_bits(DataBits::Eight)
        .parity(Parity::Even)
        .stop_bits(StopBits::One)
        .flow_control(FlowControl::None)
        .timeout(Duration::from_millis(500))
        .open()
        .map_err(port_err)?;
    let settings = configure_port(port.as_mut(), baud_rate).map_err(port_err)?;
    Ok((port, settings))
}

/// How [`UartClient::sync`] found the bootloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// 0x7F was taken as the autobaud byte: ACK.
    Synced,
    /// The bootloader had already been synced since its reset: 0x7F came back NACK, possibly
    /// after a second 0x7F completed a command pair (\[SF\] stm32_send_init_seq). Not an error.
    AlreadySynced,
}

/// Reply to Get (0x00).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetReply {
    /// Protocol version byte (0x31 = 3.1).
    pub version: u8,
    /// Command codes, in the order the device listed them.
    pub commands: Vec<u8>,
}

impl GetReply {
    pub fn supports(&self, command: Command) -> bool {
        self.commands.contains(&command.code())
    }

    /// The erase command to use: Extended Erase if listed, else Erase (\[SF\] takes the higher code;
    /// AN3155: a device offers one or the other).
    pub fn erase_command(&self) -> Option<Command> {
        [Command::ExtendedErase, Command::Erase].into_iter().find(|c| self.supports(*c))
    }

    fn listed(&self) -> String {
        self.commands.iter().map(|c| format!("{c:02X}")).collect::<Vec<_>>().join(" ")
    }
}

/// Reply to Get Version (0x01).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionReply {
    pub version: u8,
    /// Kept by AN3155 for compatibility; 0 on current bootloaders.
    pub option_bytes: [u8; 2],
}

/// Reply to Get ID (0x02).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdReply {
    /// Product ID, e.g. 0x460 for STM32G07x/08x (DBGMCU DEV_ID).
    pub pid: u16,
    /// Bytes beyond the 2-byte PID (\[SF\] prints them; BlueNRG parts send more).
    pub extra: Vec<u8>,
}

/// What [`UartClient::connect`] learned: the same sequence as stm32flash's init (reference 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootloaderInfo {
    pub sync: SyncOutcome,
    pub version: VersionReply,
    pub get: GetReply,
    pub id: IdReply,
}

/// AN3155 host over a serial port.
pub struct UartClient {
    port: Box<dyn SerialPort>,
    /// What the port's read timeouts count (see [`crate::clock`]): every deadline of the
    /// client is on this clock.
    clock: Arc<dyn Clock>,
    config: Config,
    tap: Tap,
    get: Option<GetReply>,
    /// The caller's deadline: no wait of the client goes past it.
    deadline: Option<Deadline>,
    stats: LinkStats,
    /// Bytes sent since the current command's opcode, to pick a resync filler that cannot
    /// complete the interrupted frame by accident.
    sent: Vec<u8>,
}

type Result<T, E = UartError> = std::result::Result<T, E>;

/// Command context carried through one exchange for error messages.
#[derive(Clone, Copy)]
struct Ctx {
    command: Command,
    subject: Subject,
}

/// Which failures of a command may be cured by sending it again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Read-only or idempotent commands (Get, Read Memory, erase, Get Checksum), and Write
    /// Memory, whose uncertain blocks are read back first.
    Always,
    /// Go: only while the device cannot have jumped yet (a NACK, or silence before the address
    /// was taken).
    UntilJump,
}

/// Where a resync found the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resynced {
    /// It answered the very first filler: it was one byte short of a frame (or of a command
    /// pair's complement).
    MidFrame,
    /// It needed more fillers (it was waiting for a command, or further into a frame).
    AtCommand,
}

/// Codes a resync filler must not complete into a command pair: everything that writes,
/// erases, protects or jumps (a filler F completes the pair `!F, F`).
const UNSAFE_AFTER_FILLER: [u8; 9] = [0x21, 0x31, 0x43, 0x44, 0x63, 0x73, 0x82, 0x92, 0x11];

impl UartClient {
    /// Wraps an already configured port (see [`open_port`] / [`configure_port`]) whose read
    /// timeouts are wall time (a tty, a PTY).
    pub fn new(port: Box<dyn SerialPort>, config: Config) -> Self {
        Self::with_clock(port, config, WallClock::shared())
    }

    /// Wraps a port whose read timeouts count on `clock` (a virtual board's in-process port: its
    /// reads let the board's clock run, and the client's deadlines are on the same clock).
    pub fn with_clock(port: Box<dyn SerialPort>, config: Config, clock: Arc<dyn Clock>) -> Self {
        UartClient {
            port,
            clock,
            config,
            tap: Tap::default(),
            get: None,
            deadline: None,
            stats: LinkStats::default(),
            sent: Vec::new(),
        }
    }

    /// Records every byte sent and received, and a note per command, into `sink`.
    pub fn set_transcript(&mut self, sink: Option<Box<dyn TranscriptSink>>) {
        self.tap.set(sink);
    }

    /// No wait of the client (reply, resync, retries) goes past `deadline`; once it has passed,
    /// commands fail with [`UartError::DeadlineExceeded`]. It should be on the port's clock.
    pub fn set_deadline(&mut self, deadline: Option<Deadline>) {
        self.deadline = deadline;
    }

    /// What the link cost so far: retries, resyncs.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The stats so far, and zero them.
    pub fn take_stats(&mut self) -> LinkStats {
        std::mem::take(&mut self.stats)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The port, e.g. to clone it for [`crate::control::SerialControlLines`].
    pub fn port(&self) -> &dyn SerialPort {
        self.port.as_ref()
    }

    pub fn port_mut(&mut self) -> &mut dyn SerialPort {
        self.port.as_mut()
    }

    pub fn into_port(self) -> Box<dyn SerialPort> {
        self.port
    }

    /// The last Get reply, if Get ran (commands use it to pick Erase vs Extended Erase).
    pub fn commands(&self) -> Option<&GetReply> {
        self.get.as_ref()
    }

    /// Forgets what Get said, e.g. after the board was reset into another bootloader.
    pub fn forget_commands(&mut self) {
        self.get = None;
    }

    // ----- low level -------------------------------------------------------------------------

    /// `timeout`, cut to what is left of the caller's deadline.
    fn bounded(&self, timeout: Duration) -> Duration {
        match &self.deadline {
            Some(d) => timeout.min(d.remaining()),
            None => timeout,
        }
    }

    fn deadline_passed(&self) -> bool {
        self.deadline.as_ref().is_some_and(Deadline::passed)
    }

    fn send(&mut self, data: &[u8], ctx: Ctx) -> Result<()> {
        let during = || format!("{}{}", ctx.command, ctx.subject);
        let timeout = self.config.timeouts.read.saturating_add(self.wire_time(data.len()));
        self.port.set_timeout(timeout).map_err(|e| UartError::Io { during: during(), source: e.into() })?;
        self.tap.emit(|| Event::Bytes { direction: Direction::HostToDevice, data: data.to_vec() });
        self.sent.extend_from_slice(data);
        self.port
            .write_all(data)
            .and_then(|()| self.port.flush())
            .map_err(|source| UartError::Io { during: during(), source })
    }

    /// Time the bytes need on the wire (8E1 = 11 bits per byte), added to read deadlines so long
    /// blocks at low baud rates are not cut off.
    fn wire_time(&self, bytes: usize) -> Duration {
        match self.port.baud_rate() {
            Ok(baud) if baud > 0 => Duration::from_micros(bytes as u64 * 11 * 1_000_000 / baud as u64),
            _ => Duration::ZERO,
        }
    }

    /// Reads exactly `n` bytes before `timeout` (or the caller's deadline) runs out.
    fn read_exact(&mut self, n: usize, timeout: Duration, ctx: Ctx, stage: Stage) -> Result<Vec<u8>> {
        let deadline = Deadline::after(&self.clock, self.bounded(timeout));
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let left = deadline.remaining();
            if left.is_zero() {
                if self.deadline_passed() {
                    return Err(UartError::DeadlineExceeded {
                        command: ctx.command,
                        subject: ctx.subject,
                        stage,
                        retries: 0,
                    });
                }
                return Err(UartError::Timeout {
                    command: ctx.command,
                    subject: ctx.subject,
                    stage,
                    timeout,
                    received: got,
                    expected: n,
                    resynced: false,
                });
            }
            let io = |source| UartError::Io { during: format!("{}{}", ctx.command, ctx.subject), source };
            self.port.set_timeout(left).map_err(|e| io(e.into()))?;
            match self.port.read(&mut buf[got..]) {
                // Nothing yet (a port with VMIN=0 semantics): the deadline bounds the wait.
                Ok(0) => self.clock.sleep(Duration::from_millis(1).min(left)),
                Ok(k) => {
                    self.tap
                        .emit(|| Event::Bytes { direction: Direction::DeviceToHost, data: buf[got..got + k].to_vec() });
                    got += k;
                }
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(buf)
    }

    /// Waits for ACK, skipping BUSY, until `timeout`. `sent` is the frame being answered (for
    /// the NACK message).
    fn expect_ack(&mut self, timeout: Duration, ctx: Ctx, stage: Stage, sent: &[u8]) -> Result<()> {
        let deadline = Deadline::after(&self.clock, self.bounded(timeout));
        loop {
            let left = deadline.remaining();
            let byte = self.read_exact(1, left, ctx, stage).map_err(|e| match e {
                UartError::Timeout { .. } => UartError::Timeout {
                    command: ctx.command,
                    subject: ctx.subject,
                    stage,
                    timeout,
                    received: 0,
                    expected: 1,
                    resynced: false,
                },
                other => other,
            })?[0];
            match byte {
                ACK => return Ok(()),
                NACK => {
                    return Err(UartError::Nack {
                        command: ctx.command,
                        subject: ctx.subject,
                        stage,
                        sent: sent.to_vec(),
                        hint: self.address_hint(ctx, stage),
                    });
                }
                BUSY => continue,
                byte => {
                    return Err(UartError::UnexpectedByte { command: ctx.command, subject: ctx.subject, stage, byte });
                }
            }
        }
    }

    /// The address hint, when the map is known and the address is outside it.
    fn address_hint(&self, ctx: Ctx, stage: Stage) -> Option<NackHint> {
        let Subject::Address(address) = ctx.subject else { return None };
        let map = &self.config.memory_map;
        if stage != Stage::Address || map.is_empty() || map.iter().any(|r| r.contains(&(address as u64))) {
            return None;
        }
        let map = map.iter().map(|r| format!("0x{:08X}..0x{:08X}", r.start, r.end)).collect::<Vec<_>>().join(", ");
        Some(NackHint::AddressOutsideMap { address, map })
    }

    /// Opcode and complement, then ACK (AN3155; reference 1.2).
    fn send_command(&mut self, ctx: Ctx) -> Result<()> {
        let code = ctx.command.code();
        self.tap.note(|| format!("{}{}", ctx.command, ctx.subject));
        self.sent.clear();
        self.send(&[code, !code], ctx)?;
        self.expect_ack(self.config.timeouts.read, ctx, Stage::Command, &[code, !code])
    }

    fn send_address(&mut self, address: u32, ctx: Ctx) -> Result<()> {
        let frame = address_frame(address);
        self.send(&frame, ctx)?;
        self.expect_ack(self.config.timeouts.read, ctx, Stage::Address, &frame)
    }

    /// Runs one command exchange with retries (see the module docs): after a link error the
    /// device is brought back to its command state and `f` runs again, at most
    /// `config.retries` times and never past the caller's deadline. `f` gets the attempt number
    /// (0 first) and whether an earlier attempt may have completed unseen (its final reply was
    /// lost or garbled).
    fn exchange<T>(
        &mut self,
        ctx: Ctx,
        retry: Retry,
        mut f: impl FnMut(&mut Self, u32, bool) -> Result<T>,
    ) -> Result<T> {
        let max = self.config.retries;
        let mut uncertain = false;
        let mut command_nacks = 0u32;
        let mut attempt = 0u32;
        loop {
            let e = match f(self, attempt, uncertain) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let e = match e {
                UartError::DeadlineExceeded { command, subject, stage, .. } => {
                    return Err(UartError::DeadlineExceeded { command, subject, stage, retries: attempt });
                }
                e if !e.is_link_error() => return Err(e),
                e => e,
            };
            if matches!(e, UartError::Nack { stage: Stage::Command, .. }) {
                command_nacks += 1;
            }
            // The final reply was lost or garbled: the device may have done the work.
            let unseen = e.stage() == Some(Stage::Completion) && !e.is_nack();
            let jumped = retry == Retry::UntilJump
                && !e.is_nack()
                && matches!(e.stage(), Some(Stage::Address | Stage::Completion));
            if attempt >= max || jumped || self.deadline_passed() {
                return Err(self.give_up(ctx, e, attempt + 1, command_nacks, true));
            }
            attempt += 1;
            self.stats.retries += 1;
            self.tap.note(|| format!("retry {attempt} of {max}: {}{} after: {e}", ctx.command, ctx.subject));
            tracing::debug!(command = %ctx.command, attempt, "AN3155 retry after: {e}");
            // After a NACK the device waits for a command (AN3155 flow charts: every NACK returns
            // to the command loop), so the first NACK needs no resync. Anything else, or a second
            // failure, may have left it mid-frame.
            if e.is_nack() && attempt == 1 {
                let _ = self.port.clear(ClearBuffer::Input);
            } else {
                // After silence the device has been quiet for a whole timeout: nothing stale
                // is on its way.
                let drain = !e.is_timeout();
                match self.resync_for(ctx, drain) {
                    // The first lone filler completed a frame: the device was still waiting for
                    // a byte of this command, so it cannot have done the work.
                    Ok(Resynced::MidFrame) if e.is_timeout() => {}
                    Ok(_) => uncertain |= unseen,
                    Err(UartError::DeadlineExceeded { .. }) => {
                        return Err(UartError::DeadlineExceeded {
                            command: ctx.command,
                            subject: ctx.subject,
                            stage: e.stage().unwrap_or(Stage::Reply),
                            retries: attempt,
                        });
                    }
                    Err(r) => {
                        // The device no longer answers: report what failed, the resync is in the
                        // transcript.
                        tracing::debug!("resync after a failed attempt: {r}");
                        return Err(self.give_up(ctx, e, attempt, command_nacks, false));
                    }
                }
            }
        }
    }

    /// The error to return when retrying is over: hints where the evidence supports them, and a
    /// resync after silence so the next command starts in step.
    fn give_up(&mut self, ctx: Ctx, mut e: UartError, attempts: u32, command_nacks: u32, resync: bool) -> UartError {
        let gated = matches!(
            ctx.command,
            Command::ReadMemory | Command::WriteMemory | Command::Go | Command::Erase | Command::ExtendedErase
        );
        // Readout protection NACKs the gated commands right after their command bytes and still
        // serves Get Version (reference 1.4); a link so noisy that every attempt was corrupted
        // fails that too. So the hint needs every attempt NACKed there and a clean Get Version.
        if matches!(e, UartError::Nack { stage: Stage::Command, .. })
            && gated
            && attempts >= 2
            && command_nacks == attempts
            && self.answers_get_version()
            && let UartError::Nack { hint, .. } = &mut e
        {
            *hint = Some(NackHint::ReadoutProtection { attempts });
        }
        // After silence or a garbled reply the device may be mid-frame: leave it in step for the
        // next command (not after Go, whose device may be running the application).
        if resync && !e.is_nack() && self.config.resync_after_timeout && ctx.command != Command::Go {
            let ok = self.resync_for(ctx, true).is_ok();
            if let UartError::Timeout { resynced, .. } = &mut e {
                *resynced = ok;
            }
        }
        if attempts > 1 {
            UartError::RetriesExhausted { command: ctx.command, subject: ctx.subject, attempts, last: Box::new(e) }
        } else {
            e
        }
    }

    /// Whether one Get Version (no retries) goes through: evidence that the link works.
    fn answers_get_version(&mut self) -> bool {
        let retries = std::mem::replace(&mut self.config.retries, 0);
        let stats = self.stats;
        let ok = self.get_version().is_ok();
        (self.config.retries, self.stats) = (retries, stats);
        ok
    }

    /// Refuses a command the last Get did not list (when Get has run).
    fn check_listed(&self, command: Command) -> Result<()> {
        match &self.get {
            Some(get) if !get.supports(command) => Err(UartError::NotSupported { command, listed: get.listed() }),
            _ => Ok(()),
        }
    }

    fn ensure_get(&mut self) -> Result<GetReply> {
        match &self.get {
            Some(get) => Ok(get.clone()),
            None => self.get(),
        }
    }

    // ----- link --------------------------------------------------------------------------------

    /// Sends 0x7F so the bootloader measures the baud rate, with retries. A NACK means the
    /// bootloader was synced before (not an error). Without any answer, a second 0x7F completes a
    /// command pair the first one may have started, which the device NACKs (\[SF\]
    /// stm32_send_init_seq).
    pub fn sync(&mut self) -> Result<SyncOutcome> {
        let ctx = Ctx { command: Command::Get, subject: Subject::None };
        let io = |source: std::io::Error| UartError::Io { during: "sync (0x7F)".into(), source };
        for attempt in 1..=self.config.sync_attempts.max(1) {
            self.tap.note(|| format!("sync (0x7F), attempt {attempt}"));
            self.port.clear(ClearBuffer::Input).map_err(|e| io(e.into()))?;
            for first in [true, false] {
                self.send(&[SYNC], ctx).map_err(|e| match e {
                    UartError::Io { source, .. } => io(source),
                    other => other,
                })?;
                match self.read_sync_reply(ctx) {
                    Ok(Some(outcome)) => return Ok(outcome),
                    Ok(None) if first => continue,
                    Ok(None) => break,
                    Err(UartError::Io { source, .. }) => return Err(io(source)),
                    Err(e) => return Err(e),
                }
            }
        }
        Err(UartError::SyncFailed { attempts: self.config.sync_attempts.max(1) })
    }

    /// The reply to one 0x7F: ACK or NACK, or `None` when the read timeout passes first. Other
    /// bytes are skipped, not answered with another 0x7F: they are the tail of what the firmware
    /// printed before it jumped (seen: "\r\n" after "reset+jump"), and each extra 0x7F would
    /// leave the ROM one command byte out of step (AN3155 section 2: after the first 0x7F the ROM
    /// reads every byte as part of a command frame).
    fn read_sync_reply(&mut self, ctx: Ctx) -> Result<Option<SyncOutcome>> {
        let deadline = Deadline::after(&self.clock, self.config.timeouts.read);
        loop {
            let left = deadline.remaining();
            match self.read_exact(1, left, ctx, Stage::Reply) {
                Ok(b) if b[0] == ACK => return Ok(Some(SyncOutcome::Synced)),
                Ok(b) if b[0] == NACK => return Ok(Some(SyncOutcome::AlreadySynced)),
                Ok(_) => continue,
                Err(UartError::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Brings the device back to its command state after a lost, extra or corrupted byte, with
    /// the filler 0xFF (see [`UartClient::resync_for`] for how fillers are chosen).
    pub fn resync(&mut self) -> Result<()> {
        self.sent.clear();
        self.resync_with(0xFF, true).map(|_| ())
    }

    /// Resync after a failure of `ctx`, with a filler chosen so it cannot complete what the
    /// device may be collecting into something it acts on.
    ///
    /// The device is in one of: waiting for a command byte, for a complement, or for the rest of
    /// a frame (AN3155 has no inter-byte timeout; reference 1.1). A filler byte F is chosen with:
    /// F not among the bytes sent for this command (a frame short of the lost byte k accepts F
    /// only if F equals byte k: its XOR checksum then comes out right); F even (a Write Memory
    /// count of F followed by F+1 bytes of F and checksum F passes the XOR check exactly when F is
    /// odd); and `!F` not a command that writes, erases, protects or jumps (a pending opcode `!F`
    /// would take F as its complement). F F is never a valid pair, so once the frame is filled
    /// each two fillers earn a NACK. 0xFF is taken first for Extended Erase, whose pending count
    /// would read 0xFFFF, a special code whose checksum (0x00) 0xFF fails.
    fn resync_for(&mut self, ctx: Ctx, drain: bool) -> Result<Resynced> {
        let sent = std::mem::take(&mut self.sent);
        let filler = free_filler(ctx.command, &sent)
            .or_else(|| filler_candidates(ctx.command).find(|f| !UNSAFE_AFTER_FILLER.contains(&!f)))
            .unwrap_or(0xFE);
        self.resync_with(filler, drain)
    }

    /// Sends `filler` until the device answers a single filler byte with NACK: then it is waiting
    /// for a command. Fillers go one at a time while that may be the last byte of a frame, and in
    /// growing bursts (x4, up to 256) while the device stays silent, so a device that lost a
    /// byte early in a long frame is filled quickly. Bounded by `timeouts.resync` and the deadline.
    fn resync_with(&mut self, filler: u8, drain: bool) -> Result<Resynced> {
        let total = self.bounded(self.config.timeouts.resync);
        let deadline = Deadline::after(&self.clock, total);
        let ctx = Ctx { command: Command::Get, subject: Subject::None };
        self.stats.resyncs += 1;
        self.tap.note(|| format!("resync: 0x{filler:02X} until a single one is answered with NACK"));
        let _ = self.port.clear(ClearBuffer::Input);
        // First let the line go quiet: a device that took a frame cut short answers the rest of
        // it byte pair by byte pair, and one of those stale NACKs must not pass for the answer
        // to a lone filler.
        let quiet = self.config.timeouts.resync_probe;
        // Bounded: each read ends at the resync's deadline at the latest.
        if drain {
            loop {
                match self.read_exact(1, quiet.min(deadline.remaining()), ctx, Stage::Reply) {
                    Ok(_) => {}
                    Err(UartError::Io { source, .. }) => {
                        return Err(UartError::Io { during: "resync".into(), source });
                    }
                    Err(_) => break,
                }
            }
        }
        let (mut burst, mut silent, mut first) = (1usize, 0u32, true);
        while !deadline.passed() {
            if self.send(&vec![filler; burst], ctx).is_err() {
                self.clock.sleep(Duration::from_millis(10).min(deadline.remaining()));
                continue;
            }
            self.sent.clear();
            let probe = self.config.timeouts.resync_probe.saturating_add(self.wire_time(burst + 1));
            let mut replies = Vec::new();
            loop {
                match self.read_exact(1, probe.min(deadline.remaining()), ctx, Stage::Reply) {
                    // The answer to a lone filler: the device is at a command boundary.
                    Ok(b) if b[0] == NACK && burst == 1 => {
                        return Ok(if first { Resynced::MidFrame } else { Resynced::AtCommand });
                    }
                    Ok(b) => replies.push(b[0]),
                    Err(UartError::Timeout { .. }) => break,
                    Err(UartError::DeadlineExceeded { .. }) => {
                        return Err(UartError::DeadlineExceeded {
                            command: ctx.command,
                            subject: ctx.subject,
                            stage: Stage::Reply,
                            retries: 0,
                        });
                    }
                    Err(UartError::Io { source, .. }) => {
                        return Err(UartError::Io { during: "resync".into(), source });
                    }
                    Err(e) => return Err(e),
                }
            }
            first = false;
            if replies.contains(&NACK) {
                // The frame was filled within this burst and the rest went as pairs; a lone
                // filler now tells on which byte of a pair the device is.
                (burst, silent) = (1, 0);
            } else if replies.is_empty() {
                silent += 1;
                if silent >= 2 {
                    // Overshooting costs only wire time (the extra fillers pair up into NACKs);
                    // each probe costs a wait, so grow fast.
                    burst = (burst * 4).min(MAX_BLOCK);
                }
            }
        }
        if self.deadline_passed() {
            return Err(UartError::DeadlineExceeded {
                command: ctx.command,
                subject: ctx.subject,
                stage: Stage::Reply,
                retries: 0,
            });
        }
        Err(UartError::ResyncFailed { timeout: total })
    }

    /// Sync, then Get Version, Get and Get ID, like stm32flash's init (reference 2). Get and Get
    /// ID replies carry no checksum, so on a noisy link a corrupted byte would go unseen: each is
    /// read until two replies agree (the command list decides the erase command, the PID decides
    /// a scenario's verdict).
    pub fn connect(&mut self) -> Result<BootloaderInfo> {
        let sync = self.sync()?;
        let version = self.get_version()?;
        let get = self.confirmed(Command::Get, Self::get)?;
        self.get = Some(get.clone());
        let id = self.confirmed(Command::GetId, Self::get_id)?;
        Ok(BootloaderInfo { sync, version, get, id })
    }

    /// Runs `f` until two consecutive results agree, at most `retries + 2` times.
    fn confirmed<T: PartialEq>(&mut self, command: Command, mut f: impl FnMut(&mut Self) -> Result<T>) -> Result<T> {
        let mut last = f(self)?;
        for _ in 0..=self.config.retries {
            let next = f(self)?;
            if next == last {
                return Ok(next);
            }
            self.stats.retries += 1;
            self.tap.note(|| format!("{command}: two replies differ; asking again"));
            last = next;
        }
        Err(UartError::BadReply {
            command,
            subject: Subject::None,
            reason: format!("no two consecutive replies agreed in {} tries", self.config.retries + 2),
        })
    }

    // ----- commands ----------------------------------------------------------------------------

    /// Get (0x00): protocol version and supported commands. The reply is remembered.
    pub fn get(&mut self) -> Result<GetReply> {
        let ctx = Ctx { command: Command::Get, subject: Subject::None };
        let reply = self.exchange(ctx, Retry::Always, |c, _, _| {
            c.send_command(ctx)?;
            let t = c.config.timeouts.read;
            let n = c.read_exact(1, t, ctx, Stage::Reply)?[0] as usize;
            let body = c.read_exact(n + 1, t.saturating_add(c.wire_time(n + 1)), ctx, Stage::Reply)?;
            c.expect_ack(t, ctx, Stage::Completion, &[])?;
            // AN3155: Get, Get Version and Get ID are always offered; a list without them is a
            // corrupted reply.
            let commands = body[1..].to_vec();
            if ![0x00, 0x01, 0x02].iter().all(|c| commands.contains(c)) {
                return Err(UartError::BadReply {
                    command: Command::Get,
                    subject: Subject::None,
                    reason: format!("the command list {} lacks Get, Get Version or Get ID", error::summary(&commands)),
                });
            }
            Ok(GetReply { version: body[0], commands })
        })?;
        self.get = Some(reply.clone());
        Ok(reply)
    }

    /// Get Version (0x01): version and the two compatibility option bytes.
    pub fn get_version(&mut self) -> Result<VersionReply> {
        let ctx = Ctx { command: Command::GetVersion, subject: Subject::None };
        self.exchange(ctx, Retry::Always, |c, _, _| {
            c.send_command(ctx)?;
            let t = c.config.timeouts.read;
            let mut b = c.read_exact(3, t, ctx, Stage::Reply)?;
            // STM32L412/422 bootloader V13.1 sends an extra ACK after init, which arrives as the
            // first reply byte here ([SF] stm32_init, commit 7c10bf8).
            if b[0] == ACK && b[1] == 0x31 {
                b.remove(0);
                b.extend(c.read_exact(1, t, ctx, Stage::Reply)?);
            }
            c.expect_ack(t, ctx, Stage::Completion, &[])?;
            Ok(VersionReply { version: b[0], option_bytes: [b[1], b[2]] })
        })
    }

    /// Get ID (0x02): product ID.
    pub fn get_id(&mut self) -> Result<IdReply> {
        let ctx = Ctx { command: Command::GetId, subject: Subject::None };
        self.exchange(ctx, Retry::Always, |c, _, _| {
            c.send_command(ctx)?;
            let t = c.config.timeouts.read;
            let n = c.read_exact(1, t, ctx, Stage::Reply)?[0] as usize;
            let body = c.read_exact(n + 1, t, ctx, Stage::Reply)?;
            c.expect_ack(t, ctx, Stage::Completion, &[])?;
            if body.len() < 2 {
                return Err(UartError::BadReply {
                    command: Command::GetId,
                    subject: Subject::None,
                    reason: format!("{} byte(s) of product ID, expected 2", body.len()),
                });
            }
            Ok(IdReply { pid: u16::from_be_bytes([body[0], body[1]]), extra: body[2..].to_vec() })
        })
    }

    /// Read Memory (0x11) of one block of 1..=256 bytes.
    pub fn read_memory(&mut self, address: u32, len: usize) -> Result<Vec<u8>> {
        let ctx = Ctx { command: Command::ReadMemory, subject: Subject::Address(address) };
        if !(1..=MAX_BLOCK).contains(&len) {
            return Err(invalid(ctx, format!("{len} bytes requested; one Read Memory block is 1 to 256 bytes")));
        }
        self.check_listed(Command::ReadMemory)?;
        self.exchange(ctx, Retry::Always, |c, _, _| c.read_memory_once(address, len, ctx))
    }

    fn read_memory_once(&mut self, address: u32, len: usize, ctx: Ctx) -> Result<Vec<u8>> {
        self.send_command(ctx)?;
        self.send_address(address, ctx)?;
        let n = (len - 1) as u8;
        self.send(&[n, !n], ctx)?;
        self.expect_ack(self.config.timeouts.read, ctx, Stage::Length, &[n, !n])?;
        // The data follows with no checksum and no ACK (AN3155; reference 1.3).
        let t = self.config.timeouts.read.saturating_add(self.wire_time(len));
        self.read_exact(len, t, ctx, Stage::Reply)
    }

    /// Reads any length, in 256-byte blocks.
    pub fn read(&mut self, address: u32, len: usize) -> Result<Vec<u8>> {
        check_range(address, len, Command::ReadMemory)?;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = offset(address, out.len(), Command::ReadMemory)?;
            let block = self.read_memory(at, (len - out.len()).min(MAX_BLOCK))?;
            out.extend_from_slice(&block);
        }
        Ok(out)
    }

    /// Write Memory (0x31) of one block of 1..=256 bytes at a 4-byte aligned address; the length is
    /// padded to a multiple of 4 with 0xFF (\[SF\] stm32_write_memory).
    ///
    /// When an attempt's final ACK is lost or garbled the block may be written already, and flash
    /// cannot be programmed again without an erase. So before the next attempt the block is read
    /// back: written as sent, done; erased (all 0xFF), written again; anything else is reported
    /// ([`UartError::ReadBackDiffers`]) and read again, since Read Memory replies carry no
    /// checksum and the read itself may be what got corrupted.
    pub fn write_memory(&mut self, address: u32, data: &[u8]) -> Result<()> {
        let ctx = Ctx { command: Command::WriteMemory, subject: Subject::Address(address) };
        if data.is_empty() || data.len() > MAX_BLOCK {
            return Err(invalid(ctx, format!("{} bytes given; one Write Memory block is 1 to 256 bytes", data.len())));
        }
        if !address.is_multiple_of(4) {
            return Err(invalid(ctx, "the address must be 4-byte aligned".into()));
        }
        self.check_listed(Command::WriteMemory)?;
        let mut frame = Vec::with_capacity(data.len() + 5);
        let padded = data.len().div_ceil(4) * 4;
        frame.push((padded - 1) as u8);
        frame.extend_from_slice(data);
        frame.resize(padded + 1, 0xFF);
        frame.push(xor(&frame));
        // A block that holds every possible filler value leaves a resync no byte that is sure
        // to fail its checksum if one of its bytes is lost: write it as two halves instead (128
        // bytes cannot hold all values). Rare in real images, certain in some test patterns.
        let exchange: Vec<u8> =
            [&[0x31, 0xCE][..], &address_frame(address)[..], &frame[..]].into_iter().flatten().copied().collect();
        if data.len() > 4 && free_filler(Command::WriteMemory, &exchange).is_none() {
            let half = (data.len() / 2).div_ceil(4) * 4;
            self.write_memory(address, &data[..half])?;
            return self.write_memory(offset(address, half, Command::WriteMemory)?, &data[half..]);
        }
        let can_read_back = self.get.as_ref().is_none_or(|g| g.supports(Command::ReadMemory));
        // Per byte, whether any read-back since the block was last sent showed it as written /
        // as erased. Read Memory replies carry no checksum, so one read can be corrupted on the
        // way back; a flipped bit rarely hits the same byte twice, so the reads are combined.
        let mut seen_data = vec![false; data.len()];
        let mut seen_erased = vec![false; data.len()];
        self.exchange(ctx, Retry::Always, |c, _, uncertain| {
            if uncertain && can_read_back {
                let rctx = Ctx { command: Command::ReadMemory, subject: ctx.subject };
                let back = c.read_memory_once(address, data.len(), rctx).map_err(|e| match e {
                    // Keep the write's context: the read-back is part of this block's attempt.
                    UartError::Nack { stage, sent, .. } => {
                        UartError::Nack { command: ctx.command, subject: ctx.subject, stage, sent, hint: None }
                    }
                    other => other,
                })?;
                for (i, b) in back.iter().enumerate() {
                    seen_data[i] |= *b == data[i];
                    seen_erased[i] |= *b == 0xFF;
                }
                if seen_data.iter().all(|s| *s) {
                    c.stats.confirmed_by_read_back += 1;
                    c.tap.note(|| format!("{}{}: read back as written", ctx.command, ctx.subject));
                    return Ok(());
                }
                if !seen_erased.iter().all(|s| *s) {
                    // Neither yet: read again on the next attempt (or report it if none is left).
                    let i = (0..data.len()).find(|&i| !seen_data[i] && !seen_erased[i]).unwrap_or(0);
                    return Err(UartError::ReadBackDiffers {
                        command: ctx.command,
                        subject: ctx.subject,
                        offset: i,
                        expected: data[i],
                        got: back[i],
                    });
                }
            }
            // Erased (or never sent): send it, and judge later reads afresh.
            seen_data.fill(false);
            seen_erased.fill(false);
            c.send_command(ctx)?;
            c.send_address(address, ctx)?;
            c.send(&frame, ctx)?;
            let t = c.config.timeouts.block_write.saturating_add(c.wire_time(frame.len()));
            c.expect_ack(t, ctx, Stage::Completion, &frame)
        })
    }

    /// Writes any length in 256-byte blocks from a 4-byte aligned address.
    pub fn write(&mut self, address: u32, data: &[u8]) -> Result<()> {
        check_range(address, data.len(), Command::WriteMemory)?;
        for (i, block) in data.chunks(MAX_BLOCK).enumerate() {
            self.write_memory(offset(address, i * MAX_BLOCK, Command::WriteMemory)?, block)?;
        }
        Ok(())
    }

    /// Erases flash pages (numbered from the flash base), with Erase (0x43) or Extended Erase (0x44)
    /// as Get lists, split into commands of at most `max_pages_per_erase` pages. An erase is
    /// idempotent, so a failed one is simply sent again.
    pub fn erase_pages(&mut self, pages: &[u16]) -> Result<()> {
        if pages.is_empty() {
            return Ok(());
        }
        let get = self.ensure_get()?;
        let Some(command) = get.erase_command() else {
            return Err(UartError::NotSupported { command: Command::ExtendedErase, listed: get.listed() });
        };
        let legacy = command == Command::Erase;
        // Legacy N is one byte and N = 255 means global erase (reference 1.3), so 255 pages at most.
        let per_command = self.config.max_pages_per_erase.clamp(1, if legacy { 255 } else { 65520 });
        for chunk in pages.chunks(per_command) {
            let ctx = Ctx { command, subject: Subject::Pages { first: chunk[0], count: chunk.len() } };
            let mut frame = Vec::with_capacity(2 + 2 * chunk.len() + 1);
            if legacy {
                if let Some(p) = chunk.iter().find(|&&p| p > 0xFF) {
                    return Err(invalid(
                        ctx,
                        format!("page {p} needs Extended Erase; Erase (0x43) numbers pages in one byte"),
                    ));
                }
                frame.push((chunk.len() - 1) as u8);
                frame.extend(chunk.iter().map(|&p| p as u8));
            } else {
                if let Some(p) = chunk.iter().find(|&&p| p >= 0xFFF0) {
                    return Err(invalid(
                        ctx,
                        format!("page 0x{p:04X} is in the range 0xFFF0-0xFFFF reserved for special erase codes"),
                    ));
                }
                frame.extend_from_slice(&((chunk.len() - 1) as u16).to_be_bytes());
                for p in chunk {
                    frame.extend_from_slice(&p.to_be_bytes());
                }
            }
            // Legacy: XOR of N and the pages; extended: XOR of every byte after the ACK.
            frame.push(xor(&frame));
            // Per page as configured; the caller's deadline bounds the total (a lost byte in the
            // page list leaves the device waiting while the host waits for the erase to end).
            let t = (self.config.timeouts.page_erase.checked_mul(chunk.len() as u32))
                .unwrap_or(Duration::MAX)
                .saturating_add(self.wire_time(frame.len()));
            self.exchange(ctx, Retry::Always, |c, _, _| {
                c.send_command(ctx)?;
                c.send(&frame, ctx)?;
                c.expect_ack(t, ctx, Stage::Completion, &frame)
            })?;
        }
        Ok(())
    }

    /// Global mass erase: 0xFF 0x00 after Erase (0x43), special code 0xFFFF after Extended Erase.
    pub fn mass_erase(&mut self) -> Result<()> {
        self.special_erase(MassErase::Global)
    }

    /// Global or per-bank mass erase. Bank erase exists only with Extended Erase (reference 1.3).
    pub fn special_erase(&mut self, kind: MassErase) -> Result<()> {
        let get = self.ensure_get()?;
        let Some(command) = get.erase_command() else {
            return Err(UartError::NotSupported { command: Command::ExtendedErase, listed: get.listed() });
        };
        let ctx = Ctx { command, subject: Subject::None };
        let frame = match (command, kind) {
            (Command::Erase, MassErase::Global) => vec![0xFF, 0x00],
            (Command::Erase, _) => return Err(invalid(ctx, format!("{kind} needs Extended Erase (0x44)"))),
            _ => {
                let [hi, lo] = kind.code().to_be_bytes();
                vec![hi, lo, hi ^ lo]
            }
        };
        self.exchange(ctx, Retry::Always, |c, _, _| {
            c.tap.note(|| kind.to_string());
            c.send_command(ctx)?;
            c.send(&frame, ctx)?;
            c.expect_ack(c.config.timeouts.mass_erase, ctx, Stage::Completion, &frame)
        })
    }

    /// Go (0x21): the device loads MSP from `address` and jumps to the word at `address + 4`
    /// (AN3155; reference 1.5). Send the vector table base, not the reset handler.
    pub fn go(&mut self, address: u32) -> Result<()> {
        let ctx = Ctx { command: Command::Go, subject: Subject::Address(address) };
        self.check_listed(Command::Go)?;
        // Retried on NACKs and on silence after the command bytes only: a device that took the
        // address may already be running the application, whose bytes a resync would disturb.
        self.exchange(ctx, Retry::UntilJump, |c, _, _| {
            c.send_command(ctx)?;
            c.send_address(address, ctx)
        })
    }

    /// Readout Unprotect (0x92): two ACKs, then the device mass-erases flash and resets, so the
    /// link needs a new sync afterwards. Not retried: the device resets after the second ACK.
    pub fn readout_unprotect(&mut self) -> Result<()> {
        let ctx = Ctx { command: Command::ReadoutUnprotect, subject: Subject::None };
        self.check_listed(Command::ReadoutUnprotect)?;
        self.send_command(ctx)?;
        self.expect_ack(self.config.timeouts.readout_unprotect, ctx, Stage::Completion, &[])?;
        self.get = None;
        Ok(())
    }

    /// Get Checksum (0xA1): the device's CRC over `len` bytes at `address` (both multiples of 4),
    /// comparable with [`stm32_crc`]. Exchange as \[SF\] stm32_crc_memory: two ACKs after the length,
    /// then the CRC MSB first and its XOR.
    pub fn get_checksum(&mut self, address: u32, len: u32) -> Result<u32> {
        let ctx = Ctx { command: Command::GetChecksum, subject: Subject::Address(address) };
        if !address.is_multiple_of(4) || !len.is_multiple_of(4) || len == 0 {
            return Err(invalid(ctx, format!("address and length ({len}) must be non-zero multiples of 4")));
        }
        let get = self.ensure_get()?;
        if !get.supports(Command::GetChecksum) {
            return Err(UartError::NotSupported { command: Command::GetChecksum, listed: get.listed() });
        }
        self.exchange(ctx, Retry::Always, |c, _, _| {
            c.send_command(ctx)?;
            c.send_address(address, ctx)?;
            let length = address_frame(len);
            c.send(&length, ctx)?;
            c.expect_ack(c.config.timeouts.read, ctx, Stage::Length, &length)?;
            c.expect_ack(c.config.timeouts.checksum, ctx, Stage::Completion, &length)?;
            let b = c.read_exact(5, c.config.timeouts.read, ctx, Stage::Reply)?;
            if xor(&b[..4]) != b[4] {
                return Err(UartError::BadReply {
                    command: Command::GetChecksum,
                    subject: Subject::Address(address),
                    reason: format!("CRC bytes {:02X?} do not match their checksum 0x{:02X}", &b[..4], b[4]),
                });
            }
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        })
    }
}

/// Resync fillers in order of preference (see [`UartClient::resync_for`]).
fn filler_candidates(command: Command) -> impl Iterator<Item = u8> + Clone {
    std::iter::once(0xFFu8)
        .filter(move |_| matches!(command, Command::ExtendedErase | Command::Erase))
        .chain((1..=0x7Fu8).rev().map(|k| k * 2))
}

/// A filler that appears nowhere in `sent`, so it cannot stand in for a lost byte of it.
fn free_filler(command: Command, sent: &[u8]) -> Option<u8> {
    filler_candidates(command).find(|f| !sent.contains(f) && !UNSAFE_AFTER_FILLER.contains(&!f))
}

fn invalid(ctx: Ctx, reason: String) -> UartError {
    UartError::InvalidArgument { command: ctx.command, subject: ctx.subject, reason }
}

/// Refuses ranges past 4 GiB before anything is sent.
fn check_range(address: u32, len: usize, command: Command) -> Result<()> {
    if address as u64 + len as u64 > 1 << 32 {
        return Err(UartError::InvalidArgument {
            command,
            subject: Subject::Address(address),
            reason: format!("{len} bytes run past the end of the 32-bit address space"),
        });
    }
    Ok(())
}

fn offset(base: u32, by: usize, command: Command) -> Result<u32> {
    u32::try_from(by).ok().and_then(|b| base.checked_add(b)).ok_or(UartError::InvalidArgument {
        command,
        subject: Subject::Address(base),
        reason: "the range runs past the end of the 32-bit address space".into(),
    })
}

/// Page numbers (from the flash base) that any of `ranges` (address, length) touch, sorted and
/// deduplicated: erase only what an image needs (\[SF\] 0.6+ behaviour; reference 2). Uniform pages.
pub fn pages_touched(
    flash_base: u32,
    page_size: u32,
    ranges: impl IntoIterator<Item = (u32, usize)>,
) -> Result<Vec<u16>, String> {
    if page_size == 0 {
        return Err("page size 0".into());
    }
    let mut pages = std::collections::BTreeSet::new();
    for (address, len) in ranges {
        if len == 0 {
            continue;
        }
        let last = address as u64 + len as u64 - 1;
        if address < flash_base {
            return Err(format!("0x{address:08X} is below the flash base 0x{flash_base:08X}"));
        }
        let (first_page, last_page) =
            ((address - flash_base) as u64 / page_size as u64, (last - flash_base as u64) / page_size as u64);
        for p in first_page..=last_page {
            pages.insert(
                u16::try_from(p).map_err(|_| format!("page {p} does not fit the 16-bit page numbers of AN3155"))?,
            );
        }
    }
    Ok(pages.into_iter().collect())
}

#[cfg(test)]
mod tests;
