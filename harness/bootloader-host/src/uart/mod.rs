//! AN3155 client: the ST ROM bootloader's USART protocol over any [`serialport::SerialPort`] (a
//! tty in the lab, the virtual board's PTY in CI).
//!
//! Behaviour follows AN3155 and, where the note is silent, stm32flash (\[SF\]), as summarized in the
//! project's reference (bootloader-protocols.md sections 1-2): 8E1 framing, 0x7F autobaud once per
//! reset, command byte + complement, MSB-first addresses with an XOR checksum, 256-byte blocks,
//! \[SF\] timeouts, \[SF\]-style resync.

mod error;
pub mod protocol;

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Deadline, WallClock};

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits};

pub use error::{Stage, Subject, UartError};
use protocol::{ACK, BUSY, MAX_BLOCK, NACK, SYNC, address_frame, xor};
pub use protocol::{Command, MassErase, stm32_crc};

use crate::transcript::{Direction, Event, Tap, TranscriptSink};

/// Deadlines for device replies. Defaults are stm32flash's (\[SF\] stm32.c, serial_posix.c;
/// reference 1.6).
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
    /// Total time [`UartClient::resync`] keeps sending 0xFF 0x00 (\[SF\] STM32_RESYNC_TIMEOUT).
    pub resync: Duration,
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
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub timeouts: Timeouts,
    /// How often [`UartClient::sync`] tries the 0x7F exchange.
    pub sync_attempts: u32,
    /// After a reply times out mid-command, send 0xFF 0x00 until NACK (bounded by
    /// `timeouts.resync`) so the next command starts in step: the device has no inter-byte timeout
    /// and would otherwise take the next command as the rest of the lost one (reference 1.1).
    pub resync_after_timeout: bool,
    /// Page erases are split into commands of at most this many pages (\[SF\]: "STM32L152 cannot erase
    /// more than 512 pages in one command, even 511 for STM32L082").
    pub max_pages_per_erase: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { timeouts: Timeouts::default(), sync_attempts: 3, resync_after_timeout: true, max_pages_per_erase: 511 }
    }
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
}

type Result<T, E = UartError> = std::result::Result<T, E>;

/// Command context carried through one exchange for error messages.
#[derive(Clone, Copy)]
struct Ctx {
    command: Command,
    subject: Subject,
}

impl UartClient {
    /// Wraps an already configured port (see [`open_port`] / [`configure_port`]) whose read
    /// timeouts are wall time (a tty, a PTY).
    pub fn new(port: Box<dyn SerialPort>, config: Config) -> Self {
        Self::with_clock(port, config, WallClock::shared())
    }

    /// Wraps a port whose read timeouts count on `clock` (a virtual board's in-process port: its
    /// reads let the board's clock run, and the client's deadlines are on the same clock).
    pub fn with_clock(port: Box<dyn SerialPort>, config: Config, clock: Arc<dyn Clock>) -> Self {
        UartClient { port, clock, config, tap: Tap::default(), get: None }
    }

    /// Records every byte sent and received, and a note per command, into `sink`.
    pub fn set_transcript(&mut self, sink: Option<Box<dyn TranscriptSink>>) {
        self.tap.set(sink);
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

    fn send(&mut self, data: &[u8], ctx: Ctx) -> Result<()> {
        let during = || format!("{}{}", ctx.command, ctx.subject);
        let timeout = self.config.timeouts.read.saturating_add(self.wire_time(data.len()));
        self.port.set_timeout(timeout).map_err(|e| UartError::Io { during: during(), source: e.into() })?;
        self.tap.emit(|| Event::Bytes { direction: Direction::HostToDevice, data: data.to_vec() });
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

    /// Reads exactly `n` bytes before `timeout` runs out.
    fn read_exact(&mut self, n: usize, timeout: Duration, ctx: Ctx, stage: Stage) -> Result<Vec<u8>> {
        let deadline = Deadline::after(&self.clock, timeout);
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let left = deadline.remaining();
            if left.is_zero() {
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

    /// Waits for ACK, skipping BUSY, until `timeout`.
    fn expect_ack(&mut self, timeout: Duration, ctx: Ctx, stage: Stage) -> Result<()> {
        let deadline = Deadline::after(&self.clock, timeout);
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
                NACK => return Err(UartError::Nack { command: ctx.command, subject: ctx.subject, stage }),
                BUSY => continue,
                byte => {
                    return Err(UartError::UnexpectedByte { command: ctx.command, subject: ctx.subject, stage, byte });
                }
            }
        }
    }

    /// Opcode and complement, then ACK (AN3155; reference 1.2).
    fn send_command(&mut self, ctx: Ctx) -> Result<()> {
        let code = ctx.command.code();
        self.tap.note(|| format!("{}{}", ctx.command, ctx.subject));
        self.send(&[code, !code], ctx)?;
        self.expect_ack(self.config.timeouts.read, ctx, Stage::Command)
    }

    fn send_address(&mut self, address: u32, ctx: Ctx) -> Result<()> {
        self.send(&address_frame(address), ctx)?;
        self.expect_ack(self.config.timeouts.read, ctx, Stage::Address)
    }

    /// Runs one command exchange; on a timeout, resynchronizes first if configured.
    fn exchange<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let result = f(self);
        if let Err(UartError::Timeout { command, subject, stage, timeout, received, expected, .. }) = result {
            let resynced = self.config.resync_after_timeout && self.resync().is_ok();
            return Err(UartError::Timeout { command, subject, stage, timeout, received, expected, resynced });
        }
        result
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

    /// Recovers command framing after a lost or extra byte: sends the invalid command 0xFF 0x00
    /// until the device answers NACK, for at most `timeouts.resync` (\[SF\] stm32_resync).
    pub fn resync(&mut self) -> Result<()> {
        let total = self.config.timeouts.resync;
        let deadline = Deadline::after(&self.clock, total);
        let ctx = Ctx { command: Command::Get, subject: Subject::None };
        self.tap.note(|| "resync: 0xFF 0x00 until NACK".into());
        while !deadline.passed() {
            if self.send(&[0xFF, 0x00], ctx).is_err() {
                self.clock.sleep(Duration::from_millis(10).min(deadline.remaining()));
                continue;
            }
            let wait = self.config.timeouts.read.min(deadline.remaining());
            match self.read_exact(1, wait, ctx, Stage::Reply) {
                Ok(b) if b[0] == NACK => return Ok(()),
                Ok(_) | Err(UartError::Timeout { .. }) => {}
                Err(UartError::Io { source, .. }) => {
                    return Err(UartError::Io { during: "resync (0xFF 0x00)".into(), source });
                }
                Err(e) => return Err(e),
            }
        }
        Err(UartError::ResyncFailed { timeout: total })
    }

    /// Sync, then Get Version, Get and Get ID, like stm32flash's init (reference 2).
    pub fn connect(&mut self) -> Result<BootloaderInfo> {
        let sync = self.sync()?;
        let version = self.get_version()?;
        let get = self.get()?;
        let id = self.get_id()?;
        Ok(BootloaderInfo { sync, version, get, id })
    }

    // ----- commands ----------------------------------------------------------------------------

    /// Get (0x00): protocol version and supported commands. The reply is remembered.
    pub fn get(&mut self) -> Result<GetReply> {
        let ctx = Ctx { command: Command::Get, subject: Subject::None };
        let reply = self.exchange(|c| {
            c.send_command(ctx)?;
            let t = c.config.timeouts.read;
            let n = c.read_exact(1, t, ctx, Stage::Reply)?[0] as usize;
            let body = c.read_exact(n + 1, t.saturating_add(c.wire_time(n + 1)), ctx, Stage::Reply)?;
            c.expect_ack(t, ctx, Stage::Completion)?;
            Ok(GetReply { version: body[0], commands: body[1..].to_vec() })
        })?;
        self.get = Some(reply.clone());
        Ok(reply)
    }

    /// Get Version (0x01): version and the two compatibility option bytes.
    pub fn get_version(&mut self) -> Result<VersionReply> {
        let ctx = Ctx { command: Command::GetVersion, subject: Subject::None };
        self.exchange(|c| {
            c.send_command(ctx)?;
            let t = c.config.timeouts.read;
            let mut b = c.read_exact(3, t, ctx, Stage::Reply)?;
            // STM32L412/422 bootloader V13.1 sends an extra ACK after init, which arrives as the
            // first reply byte here ([SF] stm32_init, commit 7c10bf8).
            if b[0] == ACK && b[1] == 0x31 {
                b.remove(0);
                b.extend(c.read_exact(1, t, ctx, Stage::Reply)?);
            }
            c.expect_ack(t, ctx, Stage::Completion)?;
            Ok(VersionReply { version: b[0], option_bytes: [b[1], b[2]] })
        })
    }

    /// Get ID (0x02): product ID.
    pub fn get_id(&mut self) -> Result<IdReply> {
        let ctx = Ctx { command: Command::GetId, subject: Subject::None };
        self.exchange(|c| {
            c.send_command(ctx)?;
            let t = c.config.timeouts.read;
            let n = c.read_exact(1, t, ctx, Stage::Reply)?[0] as usize;
            let body = c.read_exact(n + 1, t, ctx, Stage::Reply)?;
            c.expect_ack(t, ctx, Stage::Completion)?;
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
        self.exchange(|c| {
            c.send_command(ctx)?;
            c.send_address(address, ctx)?;
            let n = (len - 1) as u8;
            c.send(&[n, !n], ctx)?;
            c.expect_ack(c.config.timeouts.read, ctx, Stage::Length)?;
            // The data follows with no checksum and no ACK (AN3155; reference 1.3).
            let t = c.config.timeouts.read.saturating_add(c.wire_time(len));
            c.read_exact(len, t, ctx, Stage::Reply)
        })
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
        self.exchange(|c| {
            c.send_command(ctx)?;
            c.send_address(address, ctx)?;
            c.send(&frame, ctx)?;
            let t = c.config.timeouts.block_write.saturating_add(c.wire_time(frame.len()));
            c.expect_ack(t, ctx, Stage::Completion)
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
    /// as Get lists, split into commands of at most `max_pages_per_erase` pages.
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
            let t = (self.config.timeouts.page_erase.checked_mul(chunk.len() as u32))
                .unwrap_or(Duration::MAX)
                .saturating_add(self.wire_time(frame.len()));
            self.exchange(|c| {
                c.send_command(ctx)?;
                c.send(&frame, ctx)?;
                c.expect_ack(t, ctx, Stage::Completion)
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
        self.exchange(|c| {
            c.tap.note(|| kind.to_string());
            c.send_command(ctx)?;
            c.send(&frame, ctx)?;
            c.expect_ack(c.config.timeouts.mass_erase, ctx, Stage::Completion)
        })
    }

    /// Go (0x21): the device loads MSP from `address` and jumps to the word at `address + 4`
    /// (AN3155; reference 1.5). Send the vector table base, not the reset handler.
    pub fn go(&mut self, address: u32) -> Result<()> {
        let ctx = Ctx { command: Command::Go, subject: Subject::Address(address) };
        self.check_listed(Command::Go)?;
        // No resync on timeout: a device that took the address may already be running the app.
        self.send_command(ctx)?;
        self.send_address(address, ctx)
    }

    /// Readout Unprotect (0x92): two ACKs, then the device mass-erases flash and resets, so the
    /// link needs a new sync afterwards.
    pub fn readout_unprotect(&mut self) -> Result<()> {
        let ctx = Ctx { command: Command::ReadoutUnprotect, subject: Subject::None };
        self.check_listed(Command::ReadoutUnprotect)?;
        self.send_command(ctx)?;
        self.expect_ack(self.config.timeouts.readout_unprotect, ctx, Stage::Completion)?;
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
        self.exchange(|c| {
            c.send_command(ctx)?;
            c.send_address(address, ctx)?;
            c.send(&address_frame(len), ctx)?;
            c.expect_ack(c.config.timeouts.read, ctx, Stage::Length)?;
            c.expect_ack(c.config.timeouts.checksum, ctx, Stage::Completion)?;
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
