//! AN3155 USART bootloader, device side: a byte-stream state machine (bytes in, bytes out).
//!
//! There are no timeouts: like the ROM (\[OBL\] `OPENBL_USART_ReadByte` spins forever), the engine
//! waits for the rest of a command however long it takes, which is what stm32flash's resync
//! (0xFF 0x00 pairs until a NACK, \[SF\] `stm32_resync`) relies on.

use std::time::Duration;

use crate::config::{ConfigError, EraseKind, LeaveJump, RomConfig};
use crate::mem::{self, WriteError};
use crate::target::{BootTarget, RdpLevel, RomAction, TargetError};

/// Acknowledge (AN3155 2.x; \[OBL\] `openbl_core.h` ACK_BYTE).
pub const ACK: u8 = 0x79;
/// Not acknowledge.
pub const NACK: u8 = 0x1F;
/// The autobaud byte the host sends once after reset (AN3155; \[OBL\] USART auto baud "on 0x7F frame").
pub const SYNC: u8 = 0x7F;

/// AN3155 command codes (\[OBL\] `openbl_core.h`; \[SF\] `stm32.c`).
pub mod cmd {
    pub const GET: u8 = 0x00;
    pub const GET_VERSION: u8 = 0x01;
    pub const GET_ID: u8 = 0x02;
    pub const READ_MEMORY: u8 = 0x11;
    pub const GO: u8 = 0x21;
    pub const WRITE_MEMORY: u8 = 0x31;
    pub const ERASE: u8 = 0x43;
    pub const EXTENDED_ERASE: u8 = 0x44;
    pub const WRITE_PROTECT: u8 = 0x63;
    pub const WRITE_UNPROTECT: u8 = 0x73;
    pub const READOUT_PROTECT: u8 = 0x82;
    pub const READOUT_UNPROTECT: u8 = 0x92;
    pub const GET_CHECKSUM: u8 = 0xA1;
}

/// A receive error the USART flagged for a byte (8E1 on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineError {
    Parity,
    Framing,
    Noise,
}

/// One received byte as the board's USART model delivers it.
///
/// What the ROM does with a flagged byte: it uses the value and ignores the flag. \[OBL\]
/// `OPENBL_USART_ReadByte` reads RDR as soon as RXNE is set and never looks at PE/FE/NE, so a
/// corrupted byte is just a wrong byte: it fails the complement or checksum check it takes part in
/// (NACK), or lands in memory if it is payload of a frame whose checksum it happens to satisfy. The
/// engine counts flagged bytes ([`UsartEngine::line_errors`]) for diagnosis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxByte {
    pub value: u8,
    pub error: Option<LineError>,
}

impl From<u8> for RxByte {
    fn from(value: u8) -> Self {
        RxByte { value, error: None }
    }
}

/// What the engine produces, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsartOutput {
    /// Transmit this byte.
    Tx(u8),
    /// The ROM is busy (flash erase/program, option bytes) for this long before the outputs that
    /// follow; the time is what the target reported.
    Busy(Duration),
    /// After transmitting everything before it, carry this out ([`RomAction::apply`]).
    Action(RomAction),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    ReadAddress,
    ReadCount { address: u32 },
    GoAddress,
    WriteAddress,
    WriteCount { address: u32 },
    WriteData { address: u32, count: u8 },
    EraseCount,
    EraseGlobal,
    ErasePages { count: u8 },
    ExtEraseCount,
    ExtEraseSpecial { code: u16 },
    ExtErasePages { count: u16 },
    ProtectCount,
    ProtectSectors { count: u8 },
    ChecksumAddress,
    ChecksumLength { address: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// After reset: waiting for the autobaud byte.
    AwaitSync,
    /// Waiting for a command byte.
    Idle,
    /// Got a command byte, waiting for its complement.
    Complement(u8),
    /// Collecting `need` bytes of a command's next frame.
    Collect { need: usize, buf: Vec<u8>, step: Step },
    /// An action ended the session (jump, reset); bytes are ignored until [`UsartEngine::reset`].
    Finished,
}

/// The AN3155 engine for one USART. Create it (or [`reset`](Self::reset) it) at every chip reset
/// that enters the ROM, then feed every received byte to [`receive`](Self::receive).
#[derive(Clone, Debug)]
pub struct UsartEngine {
    config: RomConfig,
    state: State,
    line_errors: u64,
}

/// Output collector.
#[derive(Default)]
struct Out(Vec<UsartOutput>);

impl Out {
    fn tx(&mut self, byte: u8) {
        self.0.push(UsartOutput::Tx(byte));
    }
    fn ack(&mut self) {
        self.tx(ACK);
    }
    fn nack(&mut self) -> State {
        self.tx(NACK);
        State::Idle
    }
    fn busy(&mut self, elapsed: Duration) {
        if !elapsed.is_zero() {
            self.0.push(UsartOutput::Busy(elapsed));
        }
    }
    fn action(&mut self, action: RomAction) -> State {
        self.0.push(UsartOutput::Action(action));
        State::Finished
    }
}

fn collect(need: usize, step: Step) -> State {
    State::Collect { need, buf: Vec::with_capacity(need.min(512)), step }
}

/// A 4-byte big-endian address followed by its XOR checksum (AN3155; \[OBL\] `OPENBL_USART_GetAddress`).
fn checked_address(frame: &[u8]) -> Option<u32> {
    let [a, b, c, d, x] = frame.try_into().ok()?;
    (a ^ b ^ c ^ d == x).then(|| u32::from_be_bytes([a, b, c, d]))
}

/// Splits `payload + checksum` and checks that the XOR of `seed` and the payload equals the checksum.
fn checked_payload(seed: u8, frame: &[u8]) -> Option<&[u8]> {
    let (checksum, payload) = frame.split_last()?;
    (payload.iter().fold(seed, |x, b| x ^ b) == *checksum).then_some(payload)
}

impl UsartEngine {
    pub fn new(config: RomConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(UsartEngine { config, state: State::AwaitSync, line_errors: 0 })
    }

    pub fn config(&self) -> &RomConfig {
        &self.config
    }

    /// Back to the state after a chip reset: the next 0x7F is the autobaud byte again.
    pub fn reset(&mut self) {
        self.state = State::AwaitSync;
        self.line_errors = 0;
    }

    /// Whether the autobaud byte has been answered (the USART is the active interface).
    pub fn is_synced(&self) -> bool {
        !matches!(self.state, State::AwaitSync)
    }

    /// Whether an action (jump, reset) ended the session.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// Whether the engine is between commands (no partial command pending).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Bytes received with a parity, framing or noise flag since the last reset.
    pub fn line_errors(&self) -> u64 {
        self.line_errors
    }

    /// Feeds one received byte. Returns what to transmit, busy spans and at most one action.
    pub fn receive<T: BootTarget + ?Sized>(&mut self, rx: impl Into<RxByte>, target: &mut T) -> Vec<UsartOutput> {
        let rx = rx.into();
        if rx.error.is_some() {
            self.line_errors += 1;
        }
        let byte = rx.value;
        let mut out = Out::default();
        let state = std::mem::replace(&mut self.state, State::Idle);
        self.state = match state {
            State::Finished => State::Finished,
            // [OBL] OPENBL_USART_ProtocolDetection: the auto-baud unit only locks on a 0x7F frame;
            // the ROM discards it and ACKs. Anything else leaves the ROM waiting.
            State::AwaitSync if byte == SYNC => {
                out.ack();
                if self.config.usart.extra_ack_after_sync {
                    out.ack();
                }
                State::Idle
            }
            State::AwaitSync => State::AwaitSync,
            // After sync, 0x7F is an ordinary command byte (bootloader-protocols.md 1.1).
            State::Idle => State::Complement(byte),
            // AN3155: command byte + complement; [OBL] OPENBL_USART_GetCommandOpcode.
            State::Complement(code) if code ^ byte != 0xFF => out.nack(),
            State::Complement(code) => self.dispatch(code, target, &mut out),
            State::Collect { need, mut buf, step } => {
                buf.push(byte);
                if buf.len() < need {
                    State::Collect { need, buf, step }
                } else {
                    self.step(step, &buf, target, &mut out)
                }
            }
        };
        out.0
    }

    /// A command with a valid complement arrived.
    fn dispatch<T: BootTarget + ?Sized>(&self, code: u8, target: &mut T, out: &mut Out) -> State {
        // [OBL] OPENBL_CommandProcess: unknown or unlisted commands get NACK.
        if !self.config.usart.commands.contains(&code) {
            tracing::debug!(code, "usart: command not offered, NACK");
            return out.nack();
        }
        // AN3155 command table note / bootloader-protocols.md 1.4: with RDP active only Get, Get
        // Version, Get ID and Readout Unprotect are served; the rest are NACKed right after the
        // command pair ([OBL] Common_GetProtectionStatus at the top of each command).
        let ungated = matches!(code, cmd::GET | cmd::GET_VERSION | cmd::GET_ID | cmd::READOUT_UNPROTECT);
        if !ungated && target.rdp_level().is_active() {
            tracing::debug!(code, "usart: refused under readout protection");
            return out.nack();
        }
        tracing::debug!(code, "usart: command");
        let u = &self.config.usart;
        match code {
            // ACK, N, version, N command codes, ACK ([OBL] OPENBL_USART_GetCommand; N counts the
            // codes, so N + 1 bytes follow, [SF] stm32_init).
            cmd::GET => {
                out.ack();
                out.tx(u.commands.len() as u8);
                out.tx(u.version);
                for &c in &u.commands {
                    out.tx(c);
                }
                out.ack();
                State::Idle
            }
            // ACK, version, option byte 1, option byte 2, ACK ([OBL] OPENBL_USART_GetVersion).
            cmd::GET_VERSION => {
                out.ack();
                out.tx(u.version);
                out.tx(u.get_version_options[0]);
                out.tx(u.get_version_options[1]);
                out.ack();
                State::Idle
            }
            // ACK, N = 1, PID MSB, PID LSB, ACK ([OBL] OPENBL_USART_GetID).
            cmd::GET_ID => {
                let [msb, lsb] = self.config.pid.to_be_bytes();
                out.ack();
                out.tx(0x01);
                out.tx(msb);
                out.tx(lsb);
                out.ack();
                State::Idle
            }
            cmd::READ_MEMORY => {
                out.ack();
                collect(5, Step::ReadAddress)
            }
            cmd::GO => {
                out.ack();
                collect(5, Step::GoAddress)
            }
            cmd::WRITE_MEMORY => {
                out.ack();
                collect(5, Step::WriteAddress)
            }
            cmd::ERASE => {
                out.ack();
                collect(1, Step::EraseCount)
            }
            cmd::EXTENDED_ERASE => {
                out.ack();
                collect(2, Step::ExtEraseCount)
            }
            cmd::WRITE_PROTECT => {
                out.ack();
                collect(1, Step::ProtectCount)
            }
            // ACK, unprotect, ACK, reset ([OBL] OPENBL_USART_WriteUnprotect: the second ACK goes out
            // whatever the result; the option byte launch only follows a success; AN2662 2.14).
            cmd::WRITE_UNPROTECT => {
                out.ack();
                match target.clear_write_protection() {
                    Ok(elapsed) => {
                        out.busy(elapsed);
                        out.ack();
                        out.action(RomAction::LaunchOptionBytes)
                    }
                    Err(e) => {
                        tracing::warn!(%e, "usart: write unprotect failed");
                        out.ack();
                        State::Idle
                    }
                }
            }
            // ACK, set RDP level 1, ACK, reset ([OBL] OPENBL_USART_ReadoutProtect; AN2662 2.15).
            // Already-protected parts were NACKed above.
            cmd::READOUT_PROTECT => {
                out.ack();
                match target.set_rdp_level(RdpLevel::Level1) {
                    Ok(elapsed) => {
                        out.busy(elapsed);
                        out.ack();
                        out.action(RomAction::LaunchOptionBytes)
                    }
                    Err(e) => {
                        tracing::warn!(%e, "usart: readout protect failed");
                        out.nack()
                    }
                }
            }
            // ACK, ACK, then the RDP regression (mass erase) and reset: both ACKs go out first
            // because the option change wipes the ROM's RAM ([OBL] OPENBL_USART_ReadoutUnprotect).
            cmd::READOUT_UNPROTECT => {
                out.ack();
                out.ack();
                match target.set_rdp_level(RdpLevel::Level0) {
                    Ok(elapsed) => {
                        out.busy(elapsed);
                        out.action(RomAction::LaunchOptionBytes)
                    }
                    Err(e) => {
                        tracing::warn!(%e, "usart: readout unprotect failed");
                        State::Idle
                    }
                }
            }
            cmd::GET_CHECKSUM => {
                out.ack();
                collect(5, Step::ChecksumAddress)
            }
            // validate() admits only the codes above.
            _ => out.nack(),
        }
    }

    /// A frame of a multi-frame command is complete.
    fn step<T: BootTarget + ?Sized>(&self, step: Step, frame: &[u8], target: &mut T, out: &mut Out) -> State {
        let config = &self.config;
        // Address frames: bad checksum or an address outside every memory -> NACK ([OBL]
        // OPENBL_USART_GetAddress).
        let known_address = |frame: &[u8]| checked_address(frame).filter(|a| config.region_of(*a).is_some());
        match step {
            Step::ReadAddress => match known_address(frame) {
                Some(address) => {
                    out.ack();
                    collect(2, Step::ReadCount { address })
                }
                None => out.nack(),
            },
            // N and its complement ([OBL] OPENBL_USART_ReadMemory; [SF] sends them as a command
            // pair). Then N + 1 raw bytes: no checksum, no trailing ACK. The whole range must lie
            // in one memory; the engine checks it before the ACK (model choice: [OBL] would read
            // across, a real core would fault).
            Step::ReadCount { address } => {
                let [n, complement] = [frame[0], frame[1]];
                if n ^ complement != 0xFF {
                    return out.nack();
                }
                match mem::read(config, target, address, usize::from(n) + 1) {
                    Some(data) => {
                        out.ack();
                        for b in data {
                            out.tx(b);
                        }
                        State::Idle
                    }
                    None => out.nack(),
                }
            }
            // One ACK, then MSP = [addr], PC = [addr + 4] (AN3155 Go; forum m-p/539284 "only one
            // ACK"). Only flash and RAM are jump targets ([OBL] OPENBL_MEM_CheckJumpAddress). The ROM
            // loads the vector with word accesses, so a misaligned address is refused (model choice:
            // an M0+ would fault there).
            Step::GoAddress => {
                let jump = known_address(frame)
                    .filter(|a| a.is_multiple_of(4))
                    .and_then(|a| mem::jump_to(config, target, a, LeaveJump::Vector, false));
                match jump {
                    Some(jump) => {
                        tracing::debug!(?jump, "usart: go");
                        out.ack();
                        out.action(RomAction::Jump(jump))
                    }
                    None => out.nack(),
                }
            }
            Step::WriteAddress => match known_address(frame) {
                Some(address) => {
                    out.ack();
                    collect(1, Step::WriteCount { address })
                }
                None => out.nack(),
            },
            Step::WriteCount { address } => {
                collect(usize::from(frame[0]) + 2, Step::WriteData { address, count: frame[0] })
            }
            // N, N + 1 bytes, XOR(N, data); ACK once written ([OBL] OPENBL_USART_WriteMemory).
            Step::WriteData { address, count } => {
                let Some(data) = checked_payload(count, frame) else {
                    return out.nack();
                };
                let u = &config.usart;
                match mem::write(config, target, address, data, u.write_address_alignment) {
                    Ok(written) => {
                        out.busy(written.elapsed);
                        out.ack();
                        // Option byte writes take effect through option byte loading ([OBL]
                        // Common_StartPostProcessing; AN2662 "Write Memory command": "generates a system Reset").
                        if written.option_bytes && u.launch_option_bytes_after_write {
                            out.action(RomAction::LaunchOptionBytes)
                        } else {
                            State::Idle
                        }
                    }
                    // AN2662 "Write Memory command" note: no error for writes to write-protected sectors.
                    Err(WriteError::Target(TargetError::WriteProtected { .. })) if u.ack_write_protected_writes => {
                        out.ack();
                        State::Idle
                    }
                    Err(e) => {
                        tracing::debug!(?e, address, "usart: write refused");
                        out.nack()
                    }
                }
            }
            // Erase (0x43): N = pages - 1, or 0xFF for a global erase followed by 0x00 (AN2662 "Erase Memory command";
            // [SF] stm32_mass_erase sends 0xFF 0x00).
            Step::EraseCount if frame[0] == 0xFF => collect(1, Step::EraseGlobal),
            Step::EraseCount => collect(usize::from(frame[0]) + 2, Step::ErasePages { count: frame[0] }),
            Step::EraseGlobal if frame[0] == 0x00 => self.finish_erase(target.mass_erase(), out),
            Step::EraseGlobal => out.nack(),
            Step::ErasePages { count } => match checked_payload(count, frame) {
                Some(pages) => {
                    let pages: Vec<u32> = pages.iter().map(|&p| u32::from(p)).collect();
                    self.erase_pages(&pages, target, out)
                }
                None => out.nack(),
            },
            // Extended Erase (0x44): 2-byte N, MSB first ([OBL] OPENBL_USART_EraseMemory). 0xFFF0 to
            // 0xFFFF are special codes followed by a 1-byte checksum.
            Step::ExtEraseCount => {
                let code = u16::from_be_bytes([frame[0], frame[1]]);
                if code & 0xFFF0 == 0xFFF0 {
                    collect(1, Step::ExtEraseSpecial { code })
                } else {
                    collect((usize::from(code) + 1) * 2 + 1, Step::ExtErasePages { count: code })
                }
            }
            Step::ExtEraseSpecial { code } => {
                let [hi, lo] = code.to_be_bytes();
                if frame[0] != hi ^ lo {
                    return out.nack();
                }
                let two_banks = config.flash.banks == 2;
                match code {
                    0xFFFF => self.finish_erase(target.mass_erase(), out),
                    // Bank erase only where banks exist; the reserved codes 0xFFF0-0xFFFC NACK.
                    0xFFFE if two_banks => self.finish_erase(target.erase_bank(1), out),
                    0xFFFD if two_banks => self.finish_erase(target.erase_bank(2), out),
                    _ => out.nack(),
                }
            }
            Step::ExtErasePages { count } => {
                let [hi, lo] = count.to_be_bytes();
                match checked_payload(hi ^ lo, frame) {
                    Some(bytes) => {
                        let pages: Vec<u32> =
                            bytes.chunks_exact(2).map(|p| u32::from(u16::from_be_bytes([p[0], p[1]]))).collect();
                        self.erase_pages(&pages, target, out)
                    }
                    None => out.nack(),
                }
            }
            Step::ProtectCount => collect(usize::from(frame[0]) + 2, Step::ProtectSectors { count: frame[0] }),
            // N, N + 1 sector codes, XOR; ACK; reset ([OBL] OPENBL_USART_WriteProtect: codes are not
            // checked (AN2662 2.13 note), the ACK goes out whatever the result, the reset only after
            // a success).
            Step::ProtectSectors { count } => match checked_payload(count, frame) {
                Some(sectors) => match target.set_write_protection(sectors) {
                    Ok(elapsed) => {
                        out.busy(elapsed);
                        out.ack();
                        out.action(RomAction::LaunchOptionBytes)
                    }
                    Err(e) => {
                        tracing::warn!(%e, "usart: write protect failed");
                        out.ack();
                        State::Idle
                    }
                },
                None => out.nack(),
            },
            // Get Checksum (0xA1) as stm32flash 0.7 drives it ([SF] stm32_crc_memory): address +
            // XOR, ACK; length + XOR, ACK; ACK; CRC (MSB first) + XOR. Address and length must be
            // multiples of 4 (AN3155 3.13 body not retrieved: layout unverified).
            Step::ChecksumAddress => match known_address(frame).filter(|a| a.is_multiple_of(4)) {
                Some(address) => {
                    out.ack();
                    collect(5, Step::ChecksumLength { address })
                }
                None => out.nack(),
            },
            Step::ChecksumLength { address } => {
                let length = checked_address(frame).filter(|l| *l != 0 && l.is_multiple_of(4));
                let data = length.and_then(|l| mem::read(config, target, address, l as usize));
                match data {
                    Some(data) => {
                        let crc = mem::stm32_crc(&data).to_be_bytes();
                        out.ack();
                        out.ack();
                        for b in crc {
                            out.tx(b);
                        }
                        out.tx(crc.iter().fold(0, |x, b| x ^ b));
                        State::Idle
                    }
                    None => out.nack(),
                }
            }
        }
    }

    /// Erases a page list: every page number must exist (model choice: the list is checked before
    /// anything is erased), then each page is erased; any controller error NACKs after the rest were
    /// attempted (\[OBL\] OPENBL_FLASH_Erase counts errors and goes on).
    fn erase_pages<T: BootTarget + ?Sized>(&self, pages: &[u32], target: &mut T, out: &mut Out) -> State {
        if let Some(bad) = pages.iter().find(|&&p| p >= self.config.flash.pages) {
            tracing::debug!(page = bad, "usart: erase of a page that does not exist");
            return out.nack();
        }
        let mut elapsed = Duration::ZERO;
        let mut failed = false;
        for &page in pages {
            match target.erase_page(page) {
                Ok(t) => elapsed += t,
                Err(e) => {
                    tracing::debug!(page, %e, "usart: page erase failed");
                    failed = true;
                }
            }
        }
        out.busy(elapsed);
        if failed {
            out.nack()
        } else {
            out.ack();
            State::Idle
        }
    }

    fn finish_erase(&self, result: Result<Duration, TargetError>, out: &mut Out) -> State {
        match result {
            Ok(elapsed) => {
                out.busy(elapsed);
                out.ack();
                State::Idle
            }
            Err(e) => {
                tracing::debug!(%e, "usart: erase failed");
                out.nack()
            }
        }
    }

    /// The erase command this engine speaks, if any.
    pub fn erase_kind(&self) -> Option<EraseKind> {
        self.config.usart.erase_kind()
    }
}
