//! DfuSe host (AN3156 / UM0391 as dfu-util implements it; reference section 3).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use super::descriptors::{DescriptorError, DfuFunctional, parse_configuration, parse_string};
use super::layout::{LayoutError, MemoryLayout, MemorySegment};
use super::transport::{ControlTransfer, Setup, TransferError, dfu_request, request_type};
use crate::clock::Deadline;
use crate::transcript::{Event, Tap, TranscriptSink};

/// DFU state (bState of GETSTATUS; reference 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct State(pub u8);

impl State {
    pub const APP_IDLE: State = State(0);
    pub const APP_DETACH: State = State(1);
    pub const IDLE: State = State(2);
    pub const DNLOAD_SYNC: State = State(3);
    pub const DNBUSY: State = State(4);
    pub const DNLOAD_IDLE: State = State(5);
    pub const MANIFEST_SYNC: State = State(6);
    pub const MANIFEST: State = State(7);
    pub const MANIFEST_WAIT_RESET: State = State(8);
    pub const UPLOAD_IDLE: State = State(9);
    pub const ERROR: State = State(10);
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 11] = [
            "appIDLE",
            "appDETACH",
            "dfuIDLE",
            "dfuDNLOAD-SYNC",
            "dfuDNBUSY",
            "dfuDNLOAD-IDLE",
            "dfuMANIFEST-SYNC",
            "dfuMANIFEST",
            "dfuMANIFEST-WAIT-RESET",
            "dfuUPLOAD-IDLE",
            "dfuERROR",
        ];
        match NAMES.get(self.0 as usize) {
            Some(n) => f.write_str(n),
            None => write!(f, "state {}", self.0),
        }
    }
}

/// DFU status code (bStatus of GETSTATUS; reference 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(pub u8);

impl Status {
    pub const OK: Status = Status(0);
    pub const ERR_TARGET: Status = Status(1);
    pub const ERR_VENDOR: Status = Status(0x0B);
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 16] = [
            "OK",
            "errTARGET",
            "errFILE",
            "errWRITE",
            "errERASE",
            "errCHECK_ERASED",
            "errPROG",
            "errVERIFY",
            "errADDRESS",
            "errNOTDONE",
            "errFIRMWARE",
            "errVENDOR",
            "errUSBR",
            "errPOR",
            "errUNKNOWN",
            "errSTALLEDPKT",
        ];
        match NAMES.get(self.0 as usize) {
            Some(n) => f.write_str(n),
            None => write!(f, "status {}", self.0),
        }
    }
}

/// Reply to GETSTATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuStatus {
    pub status: Status,
    /// bwPollTimeout: minimum wait before the next GETSTATUS (3 bytes LE, ms).
    pub poll_timeout: Duration,
    pub state: State,
    pub string_index: u8,
}

/// What an operation was, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Open,
    ClearErrors,
    GetStatus,
    GetCommands,
    SetAddress(u32),
    ErasePage(u32),
    MassErase,
    ReadUnprotect,
    Download { address: u32, len: usize },
    Upload { address: u32, len: usize },
    Leave(Option<u32>),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Open => write!(f, "open"),
            Op::ClearErrors => write!(f, "clearing the error state"),
            Op::GetStatus => write!(f, "GETSTATUS"),
            Op::GetCommands => write!(f, "Get Commands"),
            Op::SetAddress(a) => write!(f, "Set Address Pointer 0x{a:08X}"),
            Op::ErasePage(a) => write!(f, "Erase page 0x{a:08X}"),
            Op::MassErase => write!(f, "Mass erase"),
            Op::ReadUnprotect => write!(f, "Read Unprotect"),
            Op::Download { address, len } => write!(f, "Download of {len} bytes to 0x{address:08X}"),
            Op::Upload { address, len } => write!(f, "Upload of {len} bytes from 0x{address:08X}"),
            Op::Leave(Some(a)) => write!(f, "Leave to 0x{a:08X}"),
            Op::Leave(None) => write!(f, "Leave (to the current address pointer)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DfuError {
    #[error("{op}: {setup} failed: {source}")]
    Transfer { op: Op, setup: Setup, source: TransferError },
    #[error("{op}: device reports {state}, {status}{}", status_hint(*.status))]
    Status { op: Op, state: State, status: Status },
    #[error("{op}: expected {expected}, device is in {state} ({status})")]
    WrongState { op: Op, expected: State, state: State, status: Status },
    #[error("{op}: still dfuDNBUSY after waiting {waited:?} (limit {limit:?})")]
    BusyTimeout { op: Op, waited: Duration, limit: Duration },
    #[error("{op}: still dfuDNBUSY after {polls} polls with a zero bwPollTimeout")]
    Stuck { op: Op, polls: u32 },
    #[error("{op}: GETSTATUS returned {got} bytes, expected 6")]
    ShortStatus { op: Op, got: usize },
    #[error("{op}: device is in runtime mode ({state}); detach it into DFU mode first")]
    RuntimeMode { op: Op, state: State },
    #[error("{op}: 0x{address:08X} is not in the memory layout ({layout})")]
    NotInLayout { op: Op, address: u32, layout: String },
    #[error("{op}: 0x{address:08X} is not {what} ({layout})")]
    NotAllowed { op: Op, address: u32, what: &'static str, layout: String },
    #[error("{op}: {reason}")]
    InvalidArgument { op: Op, reason: String },
    #[error("{op}: gave up after {attempts} attempts; the last one: {last}")]
    RetriesExhausted { op: Op, attempts: u32, last: Box<DfuError> },
    #[error("{op}: the caller's deadline passed")]
    DeadlineExceeded { op: Op },
    #[error(
        "{op}: reads back 0x{got:02X} at offset {offset} where 0x{expected:02X} was sent, and is not erased (the flash needs an erase before it takes the block again)"
    )]
    ReadBackDiffers { op: Op, offset: usize, expected: u8, got: u8 },
    #[error("configuration descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
    #[error("alternate setting {alt} not found; the DFU interface offers {available:?}")]
    NoSuchAlt { alt: u8, available: Vec<u8> },
    #[error("no DFU functional descriptor in the configuration")]
    NoFunctional,
    #[error("not a DfuSe device: bcdDFUVersion 0x{0:04X} (DfuSe is 0x011A)")]
    NotDfuSe(u16),
    #[error("alternate setting {alt} has no memory layout string (iInterface 0)")]
    NoLayout { alt: u8 },
    #[error("alternate setting {alt}: {source}")]
    Layout { alt: u8, source: LayoutError },
}

fn status_hint(status: Status) -> &'static str {
    // AN3156 / AN2662 4.5.3: bad address gives errTARGET, readout protection gives errVENDOR.
    match status {
        Status::ERR_TARGET => " (address not supported by the device)",
        Status::ERR_VENDOR => " (readout protection active?)",
        _ => "",
    }
}

type Result<T, E = DfuError> = std::result::Result<T, E>;

impl DfuError {
    /// What a bad cable or a device that lost a request can cause, and clearing the device's
    /// state and sending the request again can cure: a stall or timeout of a transfer, a status
    /// of dfuERROR, a state the request did not lead to, a short status. Not: a device that is
    /// gone, a host-side error, an address outside the layout.
    pub fn is_transient(&self) -> bool {
        match self {
            DfuError::Transfer { source, .. } => matches!(source, TransferError::Stall | TransferError::Timeout(_)),
            // Not BusyTimeout / Stuck: a device busy for that long is not cured by asking again.
            DfuError::Status { .. } | DfuError::WrongState { .. } | DfuError::ShortStatus { .. } => true,
            _ => false,
        }
    }

    /// The error of the last attempt when retries ran out, else this one.
    pub fn last(&self) -> &DfuError {
        match self {
            DfuError::RetriesExhausted { last, .. } => last,
            other => other,
        }
    }
}

/// What it took to get the requests through (see [`DfuSeClient::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DfuStats {
    /// Operations (a block write, a page erase, an upload) done again after a transient error.
    pub retries: u32,
    /// Blocks whose outcome was unknown and that an upload showed written.
    pub confirmed_by_upload: u32,
}

/// Waits and limits. Defaults follow dfu-util (\[DU\]; reference 3.3, 3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuConfig {
    /// Per control transfer (\[DU\] DFU_TIMEOUT 5000 ms).
    pub transfer_timeout: Duration,
    /// Longest an operation may stay dfuDNBUSY (summed bwPollTimeouts), except mass erase.
    pub busy_limit: Duration,
    /// Same for mass erase (\[DU\]: "datasheet says up to 32 seconds", waits 35 s).
    pub mass_erase_limit: Duration,
    /// STM32F405 reports exactly 100 ms for a mass erase that takes far longer; wait
    /// `mass_erase_limit` instead, as dfu-util does.
    pub f405_mass_erase_quirk: bool,
    /// Early GETSTATUS polls some L4 ROMs STALL, counted as still busy (dfu-util: 3).
    pub max_poll_stalls: u32,
    /// Give up after this many consecutive zero-timeout busy polls (dfu-util: 100).
    pub max_zero_polls: u32,
    /// How often a block write, page erase or upload that failed transiently (a stalled or lost
    /// request, dfuERROR) is done again after CLRSTATUS / ABORT back to dfuIDLE (0 = never).
    pub retries: u32,
}

impl Default for DfuConfig {
    fn default() -> Self {
        DfuConfig {
            transfer_timeout: Duration::from_millis(5000),
            busy_limit: Duration::from_secs(10),
            mass_erase_limit: Duration::from_secs(35),
            f405_mass_erase_quirk: true,
            max_poll_stalls: 3,
            max_zero_polls: 100,
            retries: 3,
        }
    }
}

/// The memory this client talks to: one alternate setting of the DFU interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfuSeTarget {
    pub interface: u8,
    pub alt_setting: u8,
    pub layout: MemoryLayout,
    /// wTransferSize: data stage length of DNLOAD/UPLOAD, and the unit of block addressing.
    pub transfer_size: u16,
    pub functional: DfuFunctional,
}

/// How [`DfuSeClient::leave`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// GETSTATUS answered with a manifestation state; the device is about to jump.
    Manifest(State),
    /// The device was gone before it answered (it jumped already).
    Disconnected,
}

/// DfuSe client over a [`ControlTransfer`] device.
pub struct DfuSeClient<T: ControlTransfer> {
    dev: T,
    target: DfuSeTarget,
    config: DfuConfig,
    tap: Tap,
    stats: DfuStats,
    /// The caller's deadline: no transfer, poll wait or retry goes past it.
    deadline: Option<Deadline>,
    /// Told the bytes of each chunk written (a progress bar).
    progress: Option<Box<dyn FnMut(u64) + Send>>,
}

const GET_DESCRIPTOR: u8 = 6;
const DESC_CONFIGURATION: u16 = 2;
const DESC_STRING: u16 = 3;
const LANG_EN_US: u16 = 0x0409;

impl<T: ControlTransfer> DfuSeClient<T> {
    /// Reads the descriptors through `dev`, selects `alt_setting`, parses its memory layout and
    /// brings the device to dfuIDLE (reference 3.6). `transcript` sees every transfer from the
    /// first one.
    pub fn open(
        dev: T,
        alt_setting: u8,
        config: DfuConfig,
        transcript: Option<Box<dyn TranscriptSink>>,
    ) -> Result<Self> {
        let mut tap = Tap::default();
        tap.set(transcript);
        let placeholder = DfuSeTarget {
            interface: 0,
            alt_setting,
            layout: MemoryLayout { name: String::new(), segments: Vec::new() },
            transfer_size: 0,
            functional: DfuFunctional { attributes: 0, detach_timeout_ms: 0, transfer_size: 0, dfu_version: 0 },
        };
        let mut client = DfuSeClient {
            dev,
            target: placeholder,
            config,
            tap,
            stats: DfuStats::default(),
            deadline: None,
            progress: None,
        };
        client.target = client.discover(alt_setting)?;
        client.select_and_clear()?;
        Ok(client)
    }

    /// Like [`DfuSeClient::open`] with the target already known (no descriptor reads).
    pub fn with_target(
        dev: T,
        target: DfuSeTarget,
        config: DfuConfig,
        transcript: Option<Box<dyn TranscriptSink>>,
    ) -> Result<Self> {
        let mut tap = Tap::default();
        tap.set(transcript);
        let mut client =
            DfuSeClient { dev, target, config, tap, stats: DfuStats::default(), deadline: None, progress: None };
        client.select_and_clear()?;
        Ok(client)
    }

    fn select_and_clear(&mut self) -> Result<()> {
        let (interface, alt) = (self.target.interface, self.target.alt_setting);
        let setup = Setup {
            request_type: request_type::TO_INTERFACE,
            request: 11,
            value: alt as u16,
            index: interface as u16,
            length: 0,
        };
        let result = self.dev.set_alt_setting(interface, alt, self.config.transfer_timeout);
        self.tap.emit(|| Event::Control {
            setup,
            data: Vec::new(),
            outcome: result.clone().map_err(|e| e.to_string()),
        });
        result.map_err(|source| DfuError::Transfer { op: Op::Open, setup, source })?;
        if self.target.transfer_size == 0 {
            return Err(DfuError::InvalidArgument { op: Op::Open, reason: "wTransferSize is 0".into() });
        }
        self.clear_errors()?;
        Ok(())
    }

    fn discover(&mut self, alt: u8) -> Result<DfuSeTarget> {
        let head = self.get_descriptor(DESC_CONFIGURATION, 0, 0, 9)?;
        let total = if head.len() >= 4 { u16::from_le_bytes([head[2], head[3]]) } else { 9 };
        let config = parse_configuration(&self.get_descriptor(DESC_CONFIGURATION, 0, 0, total)?)?;
        let functional = config.functional.ok_or(DfuError::NoFunctional)?;
        if !functional.is_dfuse() {
            return Err(DfuError::NotDfuSe(functional.dfu_version));
        }
        let found = config.alt_settings.iter().find(|a| a.alt_setting == alt).copied().ok_or_else(|| {
            DfuError::NoSuchAlt { alt, available: config.alt_settings.iter().map(|a| a.alt_setting).collect() }
        })?;
        if found.name_index == 0 {
            return Err(DfuError::NoLayout { alt });
        }
        // First LANGID of string 0, US English when the device has none (almost all use it).
        let lang = self
            .get_descriptor(DESC_STRING, 0, 0, 255)
            .ok()
            .filter(|d| d.len() >= 4)
            .map(|d| u16::from_le_bytes([d[2], d[3]]))
            .unwrap_or(LANG_EN_US);
        let name = parse_string(&self.get_descriptor(DESC_STRING, found.name_index, lang, 255)?)?;
        let layout = MemoryLayout::parse(&name).map_err(|source| DfuError::Layout { alt, source })?;
        Ok(DfuSeTarget {
            interface: found.interface,
            alt_setting: alt,
            layout,
            transfer_size: functional.transfer_size,
            functional,
        })
    }

    fn get_descriptor(&mut self, kind: u16, index: u8, lang: u16, length: u16) -> Result<Vec<u8>> {
        let setup = Setup {
            request_type: request_type::DEVICE_TO_HOST | request_type::STANDARD | request_type::TO_DEVICE,
            request: GET_DESCRIPTOR,
            value: kind << 8 | index as u16,
            index: lang,
            length,
        };
        self.transfer_in(Op::Open, setup)
    }

    pub fn target(&self) -> &DfuSeTarget {
        &self.target
    }

    /// Retries so far.
    pub fn stats(&self) -> DfuStats {
        self.stats
    }

    /// No transfer, bwPollTimeout wait or retry goes past `deadline`; once it has passed,
    /// operations fail with [`DfuError::DeadlineExceeded`]. It should be on the clock the
    /// device's waits count (the board's clock for a virtual board).
    pub fn set_deadline(&mut self, deadline: Option<Deadline>) {
        self.deadline = deadline;
    }

    /// Call `f` with the size of each chunk once it is written.
    pub fn on_progress(&mut self, f: impl FnMut(u64) + Send + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// The transfer timeout, cut to what is left of the caller's deadline.
    fn transfer_timeout(&self, op: Op) -> Result<Duration> {
        match &self.deadline {
            Some(d) if d.passed() => Err(DfuError::DeadlineExceeded { op }),
            Some(d) => Ok(self.config.transfer_timeout.min(d.remaining())),
            None => Ok(self.config.transfer_timeout),
        }
    }

    /// Waits `d` on the device's clock, at most until the caller's deadline.
    fn wait(&mut self, d: Duration) {
        let d = self.deadline.as_ref().map_or(d, |dl| d.min(dl.remaining()));
        self.dev.wait(d);
    }

    pub fn set_transcript(&mut self, sink: Option<Box<dyn TranscriptSink>>) {
        self.tap.set(sink);
    }

    pub fn device(&self) -> &T {
        &self.dev
    }

    pub fn device_mut(&mut self) -> &mut T {
        &mut self.dev
    }

    pub fn into_inner(self) -> T {
        self.dev
    }

    // ----- transfers ---------------------------------------------------------------------------

    fn transfer_in(&mut self, op: Op, setup: Setup) -> Result<Vec<u8>> {
        let timeout = self.transfer_timeout(op)?;
        let result = self.dev.control_in(setup, timeout);
        self.tap.emit(|| match &result {
            Ok(data) => Event::Control { setup, data: data.clone(), outcome: Ok(()) },
            Err(e) => Event::Control { setup, data: Vec::new(), outcome: Err(e.to_string()) },
        });
        result.map_err(|source| DfuError::Transfer { op, setup, source })
    }

    fn class_in(&mut self, op: Op, request: u8, value: u16, length: u16) -> Result<Vec<u8>> {
        let setup = Setup {
            request_type: request_type::DEVICE_TO_HOST | request_type::CLASS | request_type::TO_INTERFACE,
            request,
            value,
            index: self.target.interface as u16,
            length,
        };
        self.transfer_in(op, setup)
    }

    fn class_out(&mut self, op: Op, request: u8, value: u16, data: &[u8]) -> Result<()> {
        let setup = Setup {
            request_type: request_type::CLASS | request_type::TO_INTERFACE,
            request,
            value,
            index: self.target.interface as u16,
            length: data.len() as u16,
        };
        let timeout = self.transfer_timeout(op)?;
        let result = self.dev.control_out(setup, data, timeout);
        self.tap.emit(|| Event::Control {
            setup,
            data: data.to_vec(),
            outcome: result.clone().map_err(|e| e.to_string()),
        });
        result.map_err(|source| DfuError::Transfer { op, setup, source })
    }

    fn status_for(&mut self, op: Op) -> Result<DfuStatus> {
        let b = self.class_in(op, dfu_request::GETSTATUS, 0, 6)?;
        if b.len() < 6 {
            return Err(DfuError::ShortStatus { op, got: b.len() });
        }
        Ok(DfuStatus {
            status: Status(b[0]),
            poll_timeout: Duration::from_millis(u32::from_le_bytes([b[1], b[2], b[3], 0]) as u64),
            state: State(b[4]),
            string_index: b[5],
        })
    }

    /// GETSTATUS.
    pub fn get_status(&mut self) -> Result<DfuStatus> {
        self.status_for(Op::GetStatus)
    }

    /// CLRSTATUS: dfuERROR to dfuIDLE.
    pub fn clear_status(&mut self) -> Result<()> {
        self.class_out(Op::ClearErrors, dfu_request::CLRSTATUS, 0, &[])
    }

    /// ABORT: back to dfuIDLE from the idle states.
    pub fn abort(&mut self) -> Result<()> {
        self.class_out(Op::ClearErrors, dfu_request::ABORT, 0, &[])
    }

    /// GETSTATE.
    pub fn get_state(&mut self) -> Result<State> {
        let b = self.class_in(Op::GetStatus, dfu_request::GETSTATE, 0, 1)?;
        b.first().map(|&s| State(s)).ok_or(DfuError::ShortStatus { op: Op::GetStatus, got: 0 })
    }

    /// Brings the device to dfuIDLE with status OK: CLRSTATUS out of dfuERROR, ABORT out of the
    /// idle states, repeated (reference 3.6; the F4 ROM starts in dfuERROR / errFIRMWARE).
    ///
    /// A client that died mid-download (Ctrl-C, a killed CI job) leaves the device in
    /// dfuDNLOAD-SYNC or dfuDNBUSY: the GETSTATUS here runs what it left pending, and the device
    /// takes only GETSTATUS until that is done (DFU 1.1 A.2.5), so it is polled, not aborted. A
    /// request the device stalls has put it in dfuERROR (DFU 1.1 A.2), which the next round
    /// clears.
    pub fn clear_errors(&mut self) -> Result<DfuStatus> {
        let op = Op::ClearErrors;
        let mut last = None;
        for _ in 0..8 {
            let st = self.status_for(op)?;
            self.wait(st.poll_timeout);
            let request = match st.state {
                State::IDLE if st.status == Status::OK => return Ok(st),
                State::DNBUSY => None,
                State::ERROR | State::IDLE => Some(dfu_request::CLRSTATUS),
                State::APP_IDLE | State::APP_DETACH => return Err(DfuError::RuntimeMode { op, state: st.state }),
                _ => Some(dfu_request::ABORT),
            };
            if let Some(request) = request {
                match self.class_out(op, request, 0, &[]) {
                    Ok(()) | Err(DfuError::Transfer { source: TransferError::Stall, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            last = Some(st);
        }
        let st = last.unwrap_or(DfuStatus {
            status: Status::OK,
            poll_timeout: Duration::ZERO,
            state: State::ERROR,
            string_index: 0,
        });
        Err(DfuError::WrongState { op, expected: State::IDLE, state: st.state, status: st.status })
    }

    fn abort_to_idle(&mut self, op: Op) -> Result<()> {
        self.class_out(op, dfu_request::ABORT, 0, &[])?;
        let st = self.status_for(op)?;
        self.wait(st.poll_timeout);
        if st.state != State::IDLE {
            return Err(DfuError::WrongState { op, expected: State::IDLE, state: st.state, status: st.status });
        }
        Ok(())
    }

    /// Polls GETSTATUS while the device is dfuDNBUSY, sleeping bwPollTimeout before each poll and
    /// after the last one, like dfu-util. Returns the first status that is not busy.
    fn poll_while_busy(&mut self, op: Op, mut st: DfuStatus) -> Result<DfuStatus> {
        let limit = if op == Op::MassErase { self.config.mass_erase_limit } else { self.config.busy_limit };
        let (mut waited, mut zero_polls, mut stalls) = (Duration::ZERO, 0u32, 0u32);
        loop {
            let mut pause = st.poll_timeout;
            if op == Op::MassErase && self.config.f405_mass_erase_quirk && pause == Duration::from_millis(100) {
                pause = self.config.mass_erase_limit;
            }
            self.wait(pause);
            if st.state != State::DNBUSY {
                return Ok(st);
            }
            waited = waited.saturating_add(pause);
            if pause.is_zero() {
                zero_polls += 1;
                if zero_polls > self.config.max_zero_polls {
                    return Err(DfuError::Stuck { op, polls: zero_polls });
                }
            }
            match self.status_for(op) {
                Ok(next) => {
                    stalls = 0;
                    st = next;
                }
                // Some L4 ROMs stall GETSTATUS polled before the page erase ends: treat as busy and
                // reuse the last timeout (dfu-util, commit c15ee60).
                Err(DfuError::Transfer { source: TransferError::Stall, .. })
                    if stalls < self.config.max_poll_stalls =>
                {
                    stalls += 1;
                }
                Err(e) => return Err(e),
            }
            if st.state == State::DNBUSY && waited >= limit {
                return Err(DfuError::BusyTimeout { op, waited, limit });
            }
            if st.state == State::DNBUSY && self.deadline.as_ref().is_some_and(Deadline::passed) {
                return Err(DfuError::DeadlineExceeded { op });
            }
        }
    }

    /// A DfuSe command: DNLOAD with wValue 0, executed on the next GETSTATUS, which must report
    /// dfuDNBUSY (\[DU\] treats anything else as a protocol error), then polled to dfuDNLOAD-IDLE.
    fn special(&mut self, op: Op, payload: &[u8]) -> Result<DfuStatus> {
        self.class_out(op, dfu_request::DNLOAD, 0, payload)?;
        let first = self.status_for(op)?;
        match first.state {
            State::DNBUSY => {}
            State::ERROR => return Err(DfuError::Status { op, state: first.state, status: first.status }),
            state => return Err(DfuError::WrongState { op, expected: State::DNBUSY, state, status: first.status }),
        }
        if op == Op::ReadUnprotect {
            // The device mass-erases and resets; there is no later status to read ([DU]).
            self.wait(first.poll_timeout);
            return Ok(first);
        }
        let st = self.poll_while_busy(op, first)?;
        if st.state != State::DNLOAD_IDLE || st.status != Status::OK {
            return Err(DfuError::Status { op, state: st.state, status: st.status });
        }
        Ok(st)
    }

    fn segment(&self, op: Op, address: u32) -> Result<MemorySegment> {
        self.target.layout.find(address).copied().ok_or_else(|| DfuError::NotInLayout {
            op,
            address,
            layout: self.target.layout.to_string(),
        })
    }

    fn not_allowed(&self, op: Op, address: u32, what: &'static str) -> DfuError {
        DfuError::NotAllowed { op, address, what, layout: self.target.layout.to_string() }
    }

    /// Brings the device back to dfuIDLE after a transient error: GETSTATUS, then CLRSTATUS out
    /// of dfuERROR or ABORT out of the other states (DFU 1.1 state diagram; reference 3.3, 3.6).
    /// Those requests can fail on the same bad link, so a few tries.
    fn recover(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..3 {
            match self.clear_errors() {
                Ok(_) => return Ok(()),
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(DfuError::WrongState {
            op: Op::ClearErrors,
            expected: State::IDLE,
            state: State::ERROR,
            status: Status::OK,
        }))
    }

    /// Runs `f` until it succeeds, recovering to dfuIDLE after each transient error, at most
    /// `config.retries` more times. `f` gets the attempt number (0 first).
    fn retrying<R>(&mut self, op: Op, mut f: impl FnMut(&mut Self, u32) -> Result<R>) -> Result<R> {
        let mut attempt = 0;
        loop {
            let e = match f(self, attempt) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !e.is_transient() {
                return Err(e);
            }
            if attempt >= self.config.retries || self.deadline.as_ref().is_some_and(Deadline::passed) {
                return Err(if attempt == 0 {
                    e
                } else {
                    DfuError::RetriesExhausted { op, attempts: attempt + 1, last: Box::new(e) }
                });
            }
            attempt += 1;
            self.stats.retries += 1;
            self.tap.note(|| format!("retry {attempt} of {}: {op} after: {e}", self.config.retries));
            tracing::debug!(%op, attempt, "DfuSe retry after: {e}");
            if let Err(r) = self.recover() {
                tracing::debug!("recovering to dfuIDLE: {r}");
                return Err(DfuError::RetriesExhausted { op, attempts: attempt, last: Box::new(e) });
            }
        }
    }

    // ----- DfuSe commands ----------------------------------------------------------------------

    /// Get Commands (UPLOAD with wValue 0 from dfuIDLE): the ROM answers `00 21 41 92`.
    pub fn get_commands(&mut self) -> Result<Vec<u8>> {
        let op = Op::GetCommands;
        let data = self.class_in(op, dfu_request::UPLOAD, 0, self.target.transfer_size)?;
        self.abort_to_idle(op)?;
        Ok(data)
    }

    /// Set Address Pointer (0x21, 4-byte LE address).
    pub fn set_address(&mut self, address: u32) -> Result<()> {
        let a = address.to_le_bytes();
        self.special(Op::SetAddress(address), &[0x21, a[0], a[1], a[2], a[3]]).map(|_| ())
    }

    /// Erase page (0x41 + address) of the page holding `address`, if the layout says it is erasable.
    pub fn erase_page(&mut self, address: u32) -> Result<()> {
        let op = Op::ErasePage(address);
        if !self.segment(op, address)?.erasable {
            return Err(self.not_allowed(op, address, "erasable"));
        }
        let a = address.to_le_bytes();
        // An erase is idempotent: a failed one is simply done again.
        self.retrying(op, |c, _| c.special(op, &[0x41, a[0], a[1], a[2], a[3]]).map(|_| ()))
    }

    /// Mass erase (0x41 alone).
    pub fn mass_erase(&mut self) -> Result<()> {
        self.retrying(Op::MassErase, |c, _| c.special(Op::MassErase, &[0x41]).map(|_| ()))
    }

    /// Read Unprotect (0x92): the device removes readout protection, which mass-erases flash, and
    /// resets; it disconnects, so this client is done afterwards.
    pub fn read_unprotect(&mut self) -> Result<()> {
        self.special(Op::ReadUnprotect, &[0x92]).map(|_| ())
    }

    /// Start addresses of the pages the ranges touch, after checking every byte is writable.
    pub fn pages_to_erase(&self, ranges: &[(u32, &[u8])]) -> Result<Vec<u32>> {
        let mut pages = BTreeSet::new();
        for &(address, data) in ranges {
            let op = Op::Download { address, len: data.len() };
            let end = address as u64 + data.len() as u64;
            if end > 1 << 32 {
                return Err(DfuError::InvalidArgument { op, reason: "runs past the 32-bit address space".into() });
            }
            let mut at = address as u64;
            while at < end {
                let seg = self.segment(op, at as u32)?;
                if !seg.writable {
                    return Err(self.not_allowed(op, at as u32, "writable"));
                }
                let page = seg.page_start(at as u32);
                if seg.erasable {
                    pages.insert(page);
                }
                at = page as u64 + seg.page_size as u64;
            }
        }
        Ok(pages.into_iter().collect())
    }

    /// Erases the pages the data touches (each once, even when ranges share a page), then writes
    /// it. Everything is checked against the layout before the first erase.
    pub fn download(&mut self, address: u32, data: &[u8]) -> Result<()> {
        self.download_ranges(&[(address, data)])
    }

    /// [`DfuSeClient::download`] for several ranges (an image's segments).
    pub fn download_ranges(&mut self, ranges: &[(u32, &[u8])]) -> Result<()> {
        for page in self.pages_to_erase(ranges)? {
            self.erase_page(page)?;
        }
        for &(address, data) in ranges {
            self.write(address, data)?;
        }
        Ok(())
    }

    /// Writes without erasing (after [`DfuSeClient::mass_erase`], or to RAM): chunks of
    /// wTransferSize, then ABORT back to dfuIDLE. One Set Address Pointer serves consecutive
    /// chunks: DNLOAD block wValue >= 2 writes at ((wValue - 2) x wTransferSize) + the pointer
    /// (AN3156 "Download"; the ROM model's `block_address`). dfu-util sets the pointer before
    /// every chunk, a command and a status poll more per chunk than needed.
    ///
    /// A chunk that fails transiently is written again after the device is back in dfuIDLE. If
    /// its DNLOAD had gone out, the device may have programmed it before the error (the status
    /// that would say so was lost), and flash takes no second program without an erase; so the
    /// chunk is uploaded first: written as sent, done; erased, written again; else
    /// [`DfuError::ReadBackDiffers`].
    pub fn write(&mut self, address: u32, data: &[u8]) -> Result<()> {
        let size = self.target.transfer_size as usize;
        // The device's address pointer, while this write knows it.
        let mut pointer: Option<u64> = None;
        for (i, chunk) in data.chunks(size).enumerate() {
            let at = address as u64 + (i * size) as u64;
            let op = Op::Download { address: at as u32, len: chunk.len() };
            if at + chunk.len() as u64 > 1 << 32 {
                return Err(DfuError::InvalidArgument { op, reason: "runs past the 32-bit address space".into() });
            }
            let seg = self.segment(op, at as u32)?;
            if !seg.writable {
                return Err(self.not_allowed(op, at as u32, "writable"));
            }
            let mut sent = false;
            self.retrying(op, |c, attempt| {
                // Recovery (CLRSTATUS / ABORT) and the read-back below may move the pointer.
                if attempt > 0 {
                    pointer = None;
                }
                if sent && seg.readable {
                    pointer = None;
                    let back = c.upload(at as u32, chunk.len())?;
                    if back == chunk {
                        c.stats.confirmed_by_upload += 1;
                        c.tap.note(|| format!("{op}: uploaded as written"));
                        return Ok(());
                    }
                    if let Some(i) = back.iter().zip(chunk).position(|(b, d)| b != d && *b != 0xFF) {
                        return Err(DfuError::ReadBackDiffers { op, offset: i, expected: chunk[i], got: back[i] });
                    }
                }
                let block = match pointer {
                    Some(base) if at >= base && (at - base).is_multiple_of(size as u64) => {
                        u16::try_from((at - base) / size as u64 + 2).ok()
                    }
                    _ => None,
                };
                let block = match block {
                    Some(b) => b,
                    None => {
                        pointer = None;
                        c.set_address(at as u32)?;
                        pointer = Some(at);
                        2
                    }
                };
                sent = true;
                c.class_out(op, dfu_request::DNLOAD, block, chunk)?;
                let first = c.status_for(op)?;
                let st = c.poll_while_busy(op, first)?;
                if st.state != State::DNLOAD_IDLE || st.status != Status::OK {
                    return Err(DfuError::Status { op, state: st.state, status: st.status });
                }
                Ok(())
            })?;
            if let Some(p) = self.progress.as_mut() {
                p(chunk.len() as u64);
            }
        }
        if !data.is_empty() {
            let op = Op::Download { address, len: data.len() };
            self.retrying(op, |c, _| c.abort_to_idle(op))?;
        }
        Ok(())
    }

    /// Reads `len` bytes: Set Address Pointer, ABORT to dfuIDLE, UPLOAD with wValue 2, 3, ... (the
    /// device reads (wValue - 2) x wTransferSize past the pointer), stopping at a short packet;
    /// then ABORT (reference 3.5).
    pub fn upload(&mut self, address: u32, len: usize) -> Result<Vec<u8>> {
        let op = Op::Upload { address, len };
        if len == 0 {
            return Ok(Vec::new());
        }
        let size = self.target.transfer_size as usize;
        let blocks = len.div_ceil(size);
        let last = address as u64 + len as u64 - 1;
        if last >= 1 << 32 || blocks + 1 > u16::MAX as usize {
            return Err(DfuError::InvalidArgument { op, reason: "too long for one upload".into() });
        }
        for at in [address, last as u32] {
            if !self.segment(op, at)?.readable {
                return Err(self.not_allowed(op, at, "readable"));
            }
        }
        // Reading has no side effect: a failed piece is simply read again. Pieces of a few
        // blocks keep the work lost to one failed request small.
        const BLOCKS_PER_PIECE: usize = 4;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = address + out.len() as u32;
            let want = (len - out.len()).min(BLOCKS_PER_PIECE * size);
            let piece_op = Op::Upload { address: at, len: want };
            let piece = self.retrying(piece_op, |c, _| c.upload_once(piece_op, at, want, want.div_ceil(size)))?;
            let short = piece.len() < want;
            out.extend_from_slice(&piece);
            if short {
                break;
            }
        }
        Ok(out)
    }

    fn upload_once(&mut self, op: Op, address: u32, len: usize, blocks: usize) -> Result<Vec<u8>> {
        let size = self.target.transfer_size as usize;
        self.set_address(address)?;
        self.abort_to_idle(op)?;
        let mut out = Vec::with_capacity(len);
        for block in 0..blocks {
            let want = (len - out.len()).min(size);
            let data = self.class_in(op, dfu_request::UPLOAD, block as u16 + 2, want as u16)?;
            let short = data.len() < want;
            out.extend_from_slice(&data[..data.len().min(want)]);
            if short {
                break;
            }
        }
        self.abort_to_idle(op)?;
        Ok(out)
    }

    /// Leaves DFU mode: with `address`, Set Address Pointer first (the device jumps through the
    /// vector table there: MSP = `[address]`, PC = `[address + 4]`); without, the device uses its
    /// current pointer, which after a download is the last chunk written (reference 3.7: dfu-util
    /// 0.10+ behaviour). Then a zero-length DNLOAD and the GETSTATUS that triggers the jump.
    pub fn leave(&mut self, address: Option<u32>) -> Result<LeaveOutcome> {
        let op = Op::Leave(address);
        if let Some(a) = address {
            self.set_address(a)?;
        }
        self.class_out(op, dfu_request::DNLOAD, 2, &[])?;
        match self.status_for(op) {
            Ok(st) if matches!(st.state, State::MANIFEST_SYNC | State::MANIFEST | State::MANIFEST_WAIT_RESET) => {
                Ok(LeaveOutcome::Manifest(st.state))
            }
            Ok(st) if st.state == State::ERROR => Err(DfuError::Status { op, state: st.state, status: st.status }),
            Ok(st) => Err(DfuError::WrongState { op, expected: State::MANIFEST, state: st.state, status: st.status }),
            Err(DfuError::Transfer { source: TransferError::Disconnected | TransferError::Timeout(_), .. }) => {
                Ok(LeaveOutcome::Disconnected)
            }
            Err(e) => Err(e),
        }
    }
}
