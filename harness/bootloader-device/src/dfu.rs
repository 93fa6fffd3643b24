//! DfuSe (AN3156, DFU 1.1 with ST's extensions) device side over a control-transfer interface:
//! setup packet (+ OUT data) in, IN data / ACK / STALL out.
//!
//! The engine answers the standard requests a host needs to enumerate and select the interface,
//! and the DFU class requests with the DFU 1.1 state machine (DFU 1.1 appendix A) plus the DfuSe
//! commands (block 0) and block addressing. DfuSe commands and data blocks execute on the first
//! GETSTATUS after the DNLOAD, which reports dfuDNBUSY with a `bwPollTimeout` equal to the time the
//! target said the operation took (bootloader-protocols.md 3.4; \[USBD\] `DFU_GetStatus` /
//! `USBD_DFU_EP0_TxReady`).

use std::time::Duration;

use crate::config::{ConfigError, DfuConfig, RomConfig};
use crate::mem::{self, WriteError};
use crate::target::{BootTarget, RdpLevel, RomAction, TargetError};

/// DFU class request codes (DFU 1.1 table 3.2; \[DU\] `usb_dfu.h`).
pub mod request {
    pub const DETACH: u8 = 0;
    pub const DNLOAD: u8 = 1;
    pub const UPLOAD: u8 = 2;
    pub const GETSTATUS: u8 = 3;
    pub const CLRSTATUS: u8 = 4;
    pub const GETSTATE: u8 = 5;
    pub const ABORT: u8 = 6;
}

/// USB standard request codes (USB 2.0 table 9-4).
pub mod std_request {
    pub const GET_STATUS: u8 = 0;
    pub const CLEAR_FEATURE: u8 = 1;
    pub const SET_FEATURE: u8 = 3;
    pub const SET_ADDRESS: u8 = 5;
    pub const GET_DESCRIPTOR: u8 = 6;
    pub const GET_CONFIGURATION: u8 = 8;
    pub const SET_CONFIGURATION: u8 = 9;
    pub const GET_INTERFACE: u8 = 10;
    pub const SET_INTERFACE: u8 = 11;
}

/// DfuSe command bytes of a block-0 DNLOAD (AN3156; AN2662 4.5).
pub mod dfuse {
    pub const GET_COMMANDS: u8 = 0x00;
    pub const SET_ADDRESS_POINTER: u8 = 0x21;
    pub const ERASE: u8 = 0x41;
    pub const READ_UNPROTECT: u8 = 0x92;
}

/// DFU states (DFU 1.1 6.1.2; \[DU\] `dfu.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DfuState {
    AppIdle = 0,
    AppDetach = 1,
    Idle = 2,
    DnloadSync = 3,
    DnBusy = 4,
    DnloadIdle = 5,
    ManifestSync = 6,
    Manifest = 7,
    ManifestWaitReset = 8,
    UploadIdle = 9,
    Error = 10,
}

/// DFU status codes (DFU 1.1 6.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DfuStatus {
    Ok = 0x00,
    ErrTarget = 0x01,
    ErrFile = 0x02,
    ErrWrite = 0x03,
    ErrErase = 0x04,
    ErrCheckErased = 0x05,
    ErrProg = 0x06,
    ErrVerify = 0x07,
    ErrAddress = 0x08,
    ErrNotDone = 0x09,
    ErrFirmware = 0x0A,
    ErrVendor = 0x0B,
    ErrUsbr = 0x0C,
    ErrPor = 0x0D,
    ErrUnknown = 0x0E,
    ErrStalledPkt = 0x0F,
}

/// A control request's setup stage (USB 2.0 9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetupPacket {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl SetupPacket {
    /// From the 8 bytes on the wire (little-endian fields).
    pub fn from_bytes(b: [u8; 8]) -> Self {
        SetupPacket {
            request_type: b[0],
            request: b[1],
            value: u16::from_le_bytes([b[2], b[3]]),
            index: u16::from_le_bytes([b[4], b[5]]),
            length: u16::from_le_bytes([b[6], b[7]]),
        }
    }

    fn is_in(&self) -> bool {
        self.request_type & 0x80 != 0
    }
    fn kind(&self) -> u8 {
        (self.request_type >> 5) & 0x03
    }
    fn recipient(&self) -> u8 {
        self.request_type & 0x1F
    }
}

/// How the device answers a control transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlResponse {
    /// IN data stage (at most wLength bytes; fewer is a short transfer).
    Data(Vec<u8>),
    /// Zero-length status stage of an OUT or no-data request.
    Ack,
    /// Protocol STALL.
    Stall,
}

/// The result of one control transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlOutcome {
    pub response: ControlResponse,
    /// Virtual time the target spent on an operation started by this request (the reported
    /// `bwPollTimeout` is this, rounded up to milliseconds).
    pub busy: Duration,
    /// To carry out after the status stage of this transfer ([`RomAction::apply`]).
    pub action: Option<RomAction>,
}

impl ControlOutcome {
    fn new(response: ControlResponse) -> Self {
        ControlOutcome { response, busy: Duration::ZERO, action: None }
    }
}

/// A DfuSe block-0 command or a data block, waiting for the GETSTATUS that executes it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    SetAddress(u32),
    ErasePage(u32),
    MassErase,
    ReadUnprotect,
    Write { block: u16, data: Vec<u8> },
}

/// The outcome of an executed command, reported by the GETSTATUS after the busy one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Completion {
    state: DfuState,
    status: DfuStatus,
}

const DT_DEVICE: u8 = 1;
const DT_CONFIGURATION: u8 = 2;
const DT_STRING: u8 = 3;
const DT_INTERFACE: u8 = 4;
/// DFU functional descriptor type (DFU 1.1 4.1.3).
const DT_DFU_FUNCTIONAL: u8 = 0x21;
/// First string index of the alternate setting names (1-3: manufacturer, product, serial; as the ROM
/// numbers them, \[DU\] device-logs lsusb).
const FIRST_ALT_STRING: u8 = 4;

/// The DfuSe engine for the ROM's USB device. Create it at every chip reset that enters the ROM;
/// call [`bus_reset`](Self::bus_reset) on a USB bus reset and [`control`](Self::control) for every
/// control transfer on endpoint 0.
#[derive(Clone, Debug)]
pub struct DfuEngine {
    config: RomConfig,
    dfu: DfuConfig,
    device_descriptor: Vec<u8>,
    configuration_descriptor: Vec<u8>,
    usb_address: u8,
    configuration: u8,
    alt_setting: u8,
    state: DfuState,
    status: DfuStatus,
    address_pointer: u32,
    pending: Option<Command>,
    completion: Option<Completion>,
    finished: bool,
}

impl DfuEngine {
    pub fn new(config: RomConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let dfu = config.dfu.clone().ok_or_else(|| ConfigError::NoUsbDfu { chip: config.chip.clone() })?;
        let device_descriptor = device_descriptor(&dfu);
        let configuration_descriptor = configuration_descriptor(&dfu);
        let address_pointer = config.flash.base;
        let mut engine = DfuEngine {
            config,
            dfu,
            device_descriptor,
            configuration_descriptor,
            usb_address: 0,
            configuration: 0,
            alt_setting: 0,
            state: DfuState::Idle,
            status: DfuStatus::Ok,
            address_pointer,
            pending: None,
            completion: None,
            finished: false,
        };
        engine.init_class();
        Ok(engine)
    }

    pub fn config(&self) -> &RomConfig {
        &self.config
    }
    pub fn state(&self) -> DfuState {
        self.state
    }
    pub fn status(&self) -> DfuStatus {
        self.status
    }
    /// The DfuSe address pointer (default: flash base, AN2662 4.4.1).
    pub fn address_pointer(&self) -> u32 {
        self.address_pointer
    }
    pub fn alt_setting(&self) -> u8 {
        self.alt_setting
    }
    /// Address assigned by SET_ADDRESS (0 in the Default state).
    pub fn usb_address(&self) -> u8 {
        self.usb_address
    }
    pub fn is_configured(&self) -> bool {
        self.configuration != 0
    }
    /// Whether the device left (leave, read unprotect, option byte write): it answers nothing more.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
    pub fn device_descriptor(&self) -> &[u8] {
        &self.device_descriptor
    }
    pub fn configuration_descriptor(&self) -> &[u8] {
        &self.configuration_descriptor
    }

    /// USB bus reset: back to the Default state (address 0, not configured). The DFU state restarts
    /// with the next SET_CONFIGURATION, as the class is initialised there (\[USBD\] `USBD_DFU_Init`).
    pub fn bus_reset(&mut self) {
        self.usb_address = 0;
        self.configuration = 0;
        self.init_class();
    }

    /// Handles one control transfer: `setup`, and for OUT requests the `data` of the data stage
    /// (exactly wLength bytes; IN requests pass an empty slice).
    pub fn control<T: BootTarget + ?Sized>(
        &mut self,
        setup: SetupPacket,
        data: &[u8],
        target: &mut T,
    ) -> ControlOutcome {
        // A device that disconnected (leave / reset pending) does not answer.
        if self.finished {
            return ControlOutcome::new(ControlResponse::Stall);
        }
        // The data stage must match wLength (USB 2.0 8.5.3); IN requests carry no OUT data.
        let expected_out = if setup.is_in() { 0 } else { usize::from(setup.length) };
        if data.len() != expected_out {
            return ControlOutcome::new(ControlResponse::Stall);
        }
        let outcome = match setup.kind() {
            0 => ControlOutcome::new(self.standard(setup)),
            1 => self.class(setup, data, target),
            _ => ControlOutcome::new(ControlResponse::Stall),
        };
        tracing::trace!(?setup, response = ?outcome.response, state = ?self.state, "dfu: control transfer");
        outcome
    }

    fn init_class(&mut self) {
        self.alt_setting = 0;
        self.address_pointer = self.config.flash.base;
        self.pending = None;
        self.completion = None;
        // [DU] device-logs/stm32f4discovery.bin-download: the F4 ROM starts in dfuERROR/errFIRMWARE.
        (self.state, self.status) = if self.dfu.start_in_error {
            (DfuState::Error, DfuStatus::ErrFirmware)
        } else {
            (DfuState::Idle, DfuStatus::Ok)
        };
    }

    // ---------------------------------------------------------------- standard requests (USB 2.0 9.4)

    fn standard(&mut self, setup: SetupPacket) -> ControlResponse {
        let configured = self.configuration != 0;
        let reply = |bytes: &[u8]| ControlResponse::Data(bytes[..bytes.len().min(usize::from(setup.length))].to_vec());
        match (setup.request, setup.recipient(), setup.is_in()) {
            (std_request::GET_STATUS, 0, true) => reply(&[u8::from(self.dfu.self_powered), 0]),
            (std_request::GET_STATUS, 1, true) if configured && setup.index == 0 => reply(&[0, 0]),
            (std_request::GET_STATUS, 2, true) if setup.index & 0x7F == 0 => reply(&[0, 0]),
            // ENDPOINT_HALT on endpoint 0 is the only feature (no remote wakeup in bmAttributes).
            (std_request::CLEAR_FEATURE | std_request::SET_FEATURE, 2, false)
                if setup.value == 0 && setup.index & 0x7F == 0 =>
            {
                ControlResponse::Ack
            }
            (std_request::SET_ADDRESS, 0, false) if setup.value <= 127 && !configured => {
                self.usb_address = setup.value as u8;
                ControlResponse::Ack
            }
            (std_request::GET_DESCRIPTOR, 0 | 1, true) => match self.descriptor(setup.value) {
                Some(bytes) => reply(&bytes),
                None => ControlResponse::Stall,
            },
            (std_request::GET_CONFIGURATION, 0, true) => reply(&[self.configuration]),
            (std_request::SET_CONFIGURATION, 0, false) => match setup.value {
                0 => {
                    self.configuration = 0;
                    ControlResponse::Ack
                }
                // Selecting the configuration (again) initialises the DFU class only on a change
                // ([USBD] USBD_SetConfig).
                1 => {
                    if self.configuration != 1 {
                        self.configuration = 1;
                        self.init_class();
                    }
                    ControlResponse::Ack
                }
                _ => ControlResponse::Stall,
            },
            (std_request::GET_INTERFACE, 1, true) if configured && setup.index == 0 => reply(&[self.alt_setting]),
            // One alternate setting per memory; the DFU state is kept ([USBD] USB_REQ_SET_INTERFACE).
            (std_request::SET_INTERFACE, 1, false)
                if configured && setup.index == 0 && usize::from(setup.value) < self.dfu.alt_settings.len() =>
            {
                self.alt_setting = setup.value as u8;
                ControlResponse::Ack
            }
            _ => ControlResponse::Stall,
        }
    }

    fn descriptor(&self, value: u16) -> Option<Vec<u8>> {
        let [index, kind] = value.to_le_bytes();
        match (kind, index) {
            (DT_DEVICE, 0) => Some(self.device_descriptor.clone()),
            (DT_CONFIGURATION, 0) => Some(self.configuration_descriptor.clone()),
            (DT_STRING, 0) => Some(vec![4, DT_STRING, 0x09, 0x04]),
            (DT_STRING, 1) => Some(string_descriptor(&self.dfu.manufacturer)),
            (DT_STRING, 2) => Some(string_descriptor(&self.dfu.product)),
            (DT_STRING, 3) => Some(string_descriptor(&self.dfu.serial)),
            (DT_STRING, i) if i >= FIRST_ALT_STRING => {
                self.dfu.alt_settings.get(usize::from(i - FIRST_ALT_STRING)).map(|s| string_descriptor(s))
            }
            (DT_DFU_FUNCTIONAL, 0) => Some(functional_descriptor(&self.dfu).to_vec()),
            _ => None,
        }
    }

    // ---------------------------------------------------------------- DFU class requests

    /// STALL and enter dfuERROR / errSTALLEDPKT (DFU 1.1 A.2: a request not valid in the current
    /// state; AN2662 figure 55 for unsupported DfuSe commands).
    fn stall_error(&mut self) -> ControlOutcome {
        self.fail(DfuStatus::ErrStalledPkt)
    }

    fn fail(&mut self, status: DfuStatus) -> ControlOutcome {
        self.state = DfuState::Error;
        self.status = status;
        self.pending = None;
        ControlOutcome::new(ControlResponse::Stall)
    }

    fn class<T: BootTarget + ?Sized>(&mut self, setup: SetupPacket, data: &[u8], target: &mut T) -> ControlOutcome {
        // Class requests go to the DFU interface (wIndex 0) of a configured device; anything else is
        // not a DFU request and stalls without touching the DFU state.
        if self.configuration == 0 || setup.recipient() != 1 || setup.index != 0 {
            return ControlOutcome::new(ControlResponse::Stall);
        }
        let wants_in = matches!(setup.request, request::UPLOAD | request::GETSTATUS | request::GETSTATE);
        if setup.request > request::ABORT || wants_in != setup.is_in() {
            return self.stall_error();
        }
        // dfuDNBUSY: only the status poll is expected (DFU 1.1 A.2.5); the operation has completed
        // in virtual time once the host polls again.
        if self.state == DfuState::DnBusy {
            return match setup.request {
                request::GETSTATUS => {
                    let done = self
                        .completion
                        .take()
                        .unwrap_or(Completion { state: DfuState::DnloadIdle, status: DfuStatus::Ok });
                    (self.state, self.status) = (done.state, done.status);
                    ControlOutcome::new(self.status_reply(setup, 0))
                }
                _ => self.stall_error(),
            };
        }
        use DfuState as S;
        match (self.state, setup.request) {
            (_, request::GETSTATUS) => self.get_status(setup, target),
            (_, request::GETSTATE) => {
                let state = [self.state as u8];
                ControlOutcome::new(ControlResponse::Data(state[..usize::from(setup.length.min(1))].to_vec()))
            }
            // dfuERROR: CLRSTATUS -> dfuIDLE; any other request stalls and keeps the error status
            // for diagnosis (DFU 1.1 A.2.11).
            (S::Error, request::CLRSTATUS) => {
                (self.state, self.status) = (S::Idle, DfuStatus::Ok);
                ControlOutcome::new(ControlResponse::Ack)
            }
            (S::Error, _) => ControlOutcome::new(ControlResponse::Stall),
            (S::Idle | S::DnloadIdle, request::DNLOAD) => self.download(setup, data),
            (S::Idle | S::UploadIdle, request::UPLOAD) => self.upload(setup, target),
            // ABORT returns to dfuIDLE from every idle/sync state (DFU 1.1 A.2); DETACH does the
            // same in DFU mode ([USBD] DFU_Detach; dfu-util -R sends it before a USB reset).
            (
                S::Idle | S::DnloadSync | S::DnloadIdle | S::ManifestSync | S::UploadIdle,
                request::ABORT | request::DETACH,
            ) => {
                (self.state, self.status) = (S::Idle, DfuStatus::Ok);
                self.pending = None;
                ControlOutcome::new(ControlResponse::Ack)
            }
            _ => self.stall_error(),
        }
    }

    /// GETSTATUS: 6 bytes `bStatus, bwPollTimeout (3 bytes LE), bState, iString` (DFU 1.1 6.1.2).
    fn status_reply(&self, setup: SetupPacket, poll_timeout_ms: u32) -> ControlResponse {
        let t = poll_timeout_ms.to_le_bytes();
        let reply = [self.status as u8, t[0], t[1], t[2], self.state as u8, 0];
        ControlResponse::Data(reply[..usize::from(setup.length).min(6)].to_vec())
    }

    fn get_status<T: BootTarget + ?Sized>(&mut self, setup: SetupPacket, target: &mut T) -> ControlOutcome {
        match self.state {
            // The first GETSTATUS after a DNLOAD executes it and reports dfuDNBUSY (dfu-util insists
            // on dfuDNBUSY for DfuSe commands, [DU] dfuse_special_command).
            DfuState::DnloadSync => {
                let Some(command) = self.pending.take() else {
                    self.state = DfuState::DnloadIdle;
                    return ControlOutcome::new(self.status_reply(setup, 0));
                };
                let (busy, completion, action) = self.execute(command, target);
                self.completion = Some(completion);
                self.state = DfuState::DnBusy;
                let poll = mem::poll_timeout_ms(busy);
                let mut outcome = ControlOutcome::new(self.status_reply(setup, poll));
                outcome.busy = busy;
                if let Some(action) = action {
                    // The device resets after this status: it will not answer again.
                    outcome.action = Some(action);
                    self.finished = true;
                }
                outcome
            }
            // Leave: the GETSTATUS after the zero-length DNLOAD reports dfuMANIFEST, then the device
            // disconnects and jumps to the address pointer (AN3156 "Leave DFU mode", AN2662 p.80).
            // Nothing executable there (not a flash/RAM address, unreadable vector): reset instead.
            DfuState::ManifestSync => {
                self.state = DfuState::Manifest;
                let reply = self.status_reply(setup, 0);
                let jump = mem::jump_to(&self.config, target, self.address_pointer, self.dfu.leave, true);
                tracing::debug!(?jump, pointer = self.address_pointer, "dfu: leave");
                let action = jump.map_or(RomAction::SystemReset, RomAction::Jump);
                self.state = DfuState::ManifestWaitReset;
                self.finished = true;
                ControlOutcome { response: reply, busy: Duration::ZERO, action: Some(action) }
            }
            _ => ControlOutcome::new(self.status_reply(setup, 0)),
        }
    }

    fn download(&mut self, setup: SetupPacket, data: &[u8]) -> ControlOutcome {
        // Zero-length DNLOAD from dfuIDLE or dfuDNLOAD-IDLE = leave request (AN3156; AN2662 p.80).
        if data.is_empty() {
            self.state = DfuState::ManifestSync;
            return ControlOutcome::new(ControlResponse::Ack);
        }
        if data.len() > usize::from(self.dfu.transfer_size) {
            return self.stall_error();
        }
        let command = match setup.value {
            // DfuSe commands (AN2662 4.5): 0x21 + 4-byte LE address, 0x41 + address (page erase),
            // 0x41 alone (mass erase), 0x92 alone (read unprotect). Anything else is an unsupported
            // command: dfuERROR / errSTALLEDPKT and a stall (AN2662 figure 55).
            0 => {
                let address = |d: &[u8]| u32::from_le_bytes([d[1], d[2], d[3], d[4]]);
                match (data[0], data.len()) {
                    (dfuse::SET_ADDRESS_POINTER, 5) => Command::SetAddress(address(data)),
                    (dfuse::ERASE, 5) => Command::ErasePage(address(data)),
                    (dfuse::ERASE, 1) => Command::MassErase,
                    (dfuse::READ_UNPROTECT, 1) => Command::ReadUnprotect,
                    _ => return self.stall_error(),
                }
            }
            // wValue = 1 is not a valid block number ([USBD] stalls it).
            1 => return self.stall_error(),
            block => Command::Write { block, data: data.to_vec() },
        };
        self.pending = Some(command);
        self.state = DfuState::DnloadSync;
        ControlOutcome::new(ControlResponse::Ack)
    }

    /// (wValue - 2) * wTransferSize + address pointer (AN2662 4.4.1 and its DNLOAD twin in 4.5).
    fn block_address(&self, block: u16) -> Option<u32> {
        let offset = u64::from(block.checked_sub(2)?) * u64::from(self.dfu.transfer_size);
        u32::try_from(u64::from(self.address_pointer) + offset).ok()
    }

    fn upload<T: BootTarget + ?Sized>(&mut self, setup: SetupPacket, target: &mut T) -> ControlOutcome {
        let length = usize::from(setup.length);
        if length > usize::from(self.dfu.transfer_size) {
            return self.stall_error();
        }
        match setup.value {
            // Get Commands (AN2662 4.4.2): 00 21 41 92. A short transfer ends the upload (DFU 1.1
            // 6.2: short frame -> dfuIDLE).
            0 => {
                let commands = [dfuse::GET_COMMANDS, dfuse::SET_ADDRESS_POINTER, dfuse::ERASE, dfuse::READ_UNPROTECT];
                let n = commands.len().min(length);
                self.state = if n < length { DfuState::Idle } else { DfuState::UploadIdle };
                ControlOutcome::new(ControlResponse::Data(commands[..n].to_vec()))
            }
            1 => self.stall_error(),
            block => {
                // AN2662 4.4.1: with read protection the read is not performed and the status is
                // dfuERROR / errVENDOR, whatever the memory.
                if target.rdp_level().is_active() {
                    return self.fail(DfuStatus::ErrVendor);
                }
                if length == 0 {
                    self.state = DfuState::Idle;
                    return ControlOutcome::new(ControlResponse::Data(Vec::new()));
                }
                let data = self.block_address(block).and_then(|a| mem::read(&self.config, target, a, length));
                match data {
                    Some(data) => {
                        self.state = DfuState::UploadIdle;
                        ControlOutcome::new(ControlResponse::Data(data))
                    }
                    None => self.fail(DfuStatus::ErrTarget),
                }
            }
        }
    }

    /// Runs a DNLOAD's command. Returns the busy time, the state/status to report next, and an
    /// action when the device resets afterwards.
    fn execute<T: BootTarget + ?Sized>(
        &mut self,
        command: Command,
        target: &mut T,
    ) -> (Duration, Completion, Option<RomAction>) {
        let ok = Completion { state: DfuState::DnloadIdle, status: DfuStatus::Ok };
        let error = |status| Completion { state: DfuState::Error, status };
        // AN2662 4.5: with read protection active, erase and write are skipped with errVENDOR.
        let gated = matches!(command, Command::ErasePage(_) | Command::MassErase | Command::Write { .. });
        if gated && target.rdp_level().is_active() {
            return (Duration::ZERO, error(DfuStatus::ErrVendor), None);
        }
        match command {
            // AN2662 4.5 (bootloader-protocols.md 3.4): an address the device does not have gives errTARGET.
            Command::SetAddress(address) => {
                if self.config.region_of(address).is_some() {
                    self.address_pointer = address;
                    (Duration::ZERO, ok, None)
                } else {
                    (Duration::ZERO, error(DfuStatus::ErrTarget), None)
                }
            }
            Command::ErasePage(address) => match self.config.flash.page_of(address) {
                Some(page) => match target.erase_page(page) {
                    Ok(busy) => (busy, ok, None),
                    // AN2662 4.5 (bootloader-protocols.md 3.4): no error for erasing write-protected pages.
                    Err(TargetError::WriteProtected { .. }) if !self.dfu.report_write_protected_erase => {
                        (Duration::ZERO, ok, None)
                    }
                    Err(_) => (Duration::ZERO, error(DfuStatus::ErrErase), None),
                },
                None => (Duration::ZERO, error(DfuStatus::ErrTarget), None),
            },
            Command::MassErase => match target.mass_erase() {
                Ok(busy) => (busy, ok, None),
                Err(_) => (Duration::ZERO, error(DfuStatus::ErrErase), None),
            },
            // AN2662 4.5 "Read Unprotect": the device removes the protection (mass erase) and resets.
            Command::ReadUnprotect => match target.set_rdp_level(RdpLevel::Level0) {
                Ok(busy) => (busy, ok, Some(RomAction::LaunchOptionBytes)),
                Err(_) => (Duration::ZERO, error(DfuStatus::ErrUnknown), None),
            },
            // Error statuses for controller failures follow the DFU 1.1 meanings (errWRITE "unable
            // to write memory", errPROG "program memory function failed"); the ROM's exact choice
            // is not documented (unverified).
            Command::Write { block, data } => {
                let Some(address) = self.block_address(block) else {
                    return (Duration::ZERO, error(DfuStatus::ErrTarget), None);
                };
                let alignment = self.config.usart.write_address_alignment;
                match mem::write(&self.config, target, address, &data, alignment) {
                    // Option bytes take effect through option byte loading, which resets the device.
                    Ok(w) if w.option_bytes => (w.elapsed, ok, Some(RomAction::LaunchOptionBytes)),
                    Ok(w) => (w.elapsed, ok, None),
                    Err(WriteError::Address | WriteError::Level2Refused) => {
                        (Duration::ZERO, error(DfuStatus::ErrTarget), None)
                    }
                    Err(WriteError::Target(TargetError::WriteProtected { .. })) => {
                        (Duration::ZERO, error(DfuStatus::ErrWrite), None)
                    }
                    Err(WriteError::Target(_)) => (Duration::ZERO, error(DfuStatus::ErrProg), None),
                }
            }
        }
    }
}

/// USB 2.0 9.6.1; identity as the ROM reports it (\[DU\] device-logs lsusb).
fn device_descriptor(d: &DfuConfig) -> Vec<u8> {
    let [usb_lo, usb_hi] = d.bcd_usb.to_le_bytes();
    let [vid_lo, vid_hi] = d.vendor_id.to_le_bytes();
    let [pid_lo, pid_hi] = d.product_id.to_le_bytes();
    let [dev_lo, dev_hi] = d.bcd_device.to_le_bytes();
    vec![
        18,
        DT_DEVICE,
        usb_lo,
        usb_hi,
        0, // class defined at interface level
        0,
        0,
        d.max_packet_size0,
        vid_lo,
        vid_hi,
        pid_lo,
        pid_hi,
        dev_lo,
        dev_hi,
        1, // iManufacturer
        2, // iProduct
        3, // iSerialNumber
        1, // one configuration
    ]
}

/// DFU functional descriptor (DFU 1.1 4.1.3): bmAttributes, wDetachTimeOut, wTransferSize,
/// bcdDFUVersion 0x011A (DfuSe, \[DU\] main.c treats 0x011A as DfuSe).
fn functional_descriptor(d: &DfuConfig) -> [u8; 9] {
    let [det_lo, det_hi] = d.detach_timeout_ms.to_le_bytes();
    let [ts_lo, ts_hi] = d.transfer_size.to_le_bytes();
    [9, DT_DFU_FUNCTIONAL, d.attributes, det_lo, det_hi, ts_lo, ts_hi, 0x1A, 0x01]
}

/// One configuration, one interface (class 0xFE, subclass 1 DFU, protocol 2 DFU mode) with an
/// alternate setting per memory, the functional descriptor after the last one (\[DU\] F4/F107 lsusb:
/// wTotalLength 54 for four alternate settings, bmAttributes 0xC0, 100 mA, iConfiguration 0).
fn configuration_descriptor(d: &DfuConfig) -> Vec<u8> {
    let total = 9 + 9 * d.alt_settings.len() + 9;
    let [tot_lo, tot_hi] = (total as u16).to_le_bytes();
    let attributes = 0x80 | if d.self_powered { 0x40 } else { 0 };
    let max_power = (d.max_power_ma / 2).min(255) as u8;
    let mut desc = vec![9, DT_CONFIGURATION, tot_lo, tot_hi, 1, 1, 0, attributes, max_power];
    for alt in 0..d.alt_settings.len() {
        let alt = alt as u8;
        desc.extend_from_slice(&[9, DT_INTERFACE, 0, alt, 0, 0xFE, 0x01, 0x02, FIRST_ALT_STRING + alt]);
    }
    desc.extend_from_slice(&functional_descriptor(d));
    desc
}

/// USB 2.0 9.6.7: UTF-16LE, at most 126 code units (checked by [`RomConfig::validate`]).
fn string_descriptor(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().take(126).collect();
    let mut desc = vec![(2 + 2 * units.len()) as u8, DT_STRING];
    for u in units {
        desc.extend_from_slice(&u.to_le_bytes());
    }
    desc
}
