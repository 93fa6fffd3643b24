//! The harness's probe layer: a blocking wrapper over a probe-rs `Session` that scenario steps use,
//! the same for a real probe and the virtual board's simulated one.
//!
//! A [`ProbeSession`] is opened with a probe-rs selector (`VID:PID[:serial]`) and a probe-rs
//! target name (chip data: [`hil_chips::Chip::probe_rs_target`]). An ST-Link selector opens the
//! ST-Link; `1209:0001:<board>` ([`hil_virtual_probe::selector_for`]) opens a virtual board's
//! probe. Nothing below depends on which one it is (DESIGN.md, symmetry rule).
//!
//! probe-rs is blocking: call this from a blocking thread (the scenario engine runs every step on
//! tokio's blocking pool), never on the async executor. [`ProbeSession`] is `Send`, so it can move
//! between blocking-pool threads from step to step.
//!
//! Every wait is bounded: halts and resets wait at most [`ProbeOptions::halt_timeout`]; flashing
//! uses probe-rs's per-operation timeouts from the target description; the virtual probe answers
//! every transaction by the board's deadline.

use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

use probe_rs::architecture::arm::armv6m::Demcr;
use probe_rs::flashing::{
    BinLoader, BinOptions, DownloadOptions, ElfLoader, ElfOptions, FileDownloadError, FlashError, HexLoader,
};
use probe_rs::probe::DebugProbeError;
use probe_rs::probe::list::Lister;
use probe_rs::{CoreStatus, CoreType, MemoryInterface, MemoryMappedRegister, Permissions, RegisterId, Session};

/// How to open a probe session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOptions {
    /// SWD clock; `None` keeps the probe's default.
    pub speed_khz: Option<u32>,
    /// Assert NRST through the probe while connecting and catch the reset vector when releasing it.
    pub connect_under_reset: bool,
    /// Longest wait for the core to halt (halt, reset-and-halt, snapshot).
    pub halt_timeout: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { speed_khz: None, connect_under_reset: false, halt_timeout: Duration::from_millis(500) }
    }
}

/// Errors of the probe layer; each names the operation, and the address or register.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe selector {selector:?}: {message}")]
    Selector { selector: String, message: String },
    #[error("open probe {selector}: {}", chain(.error))]
    Open { selector: String, error: Box<DebugProbeError> },
    /// No probe matches: say what is attached instead of the USB stack's errno.
    #[error(
        "no debug probe matches {selector}; attached: {}{} (`hil list probes` lists them, `hil doctor` checks the board)",
        if present.is_empty() { "none".to_string() } else { present.join(", ") },
        if *no_usb { " - this host has no USB stack (/sys/bus/usb/devices is missing)" } else { "" }
    )]
    NotFound { selector: String, present: Vec<String>, no_usb: bool },
    #[error("probe {selector}: set SWD speed {khz} kHz: {}", chain(.error))]
    Speed { selector: String, khz: u32, error: Box<DebugProbeError> },
    #[error("attach to {target} through {selector}{how}: {}", chain(.error))]
    Attach { selector: String, target: String, how: &'static str, error: Box<probe_rs::Error> },
    #[error("{op}: {}", chain(.error))]
    Core { op: &'static str, error: Box<probe_rs::Error> },
    #[error("{op} {register}: {}", chain(.error))]
    Register { op: &'static str, register: String, error: Box<probe_rs::Error> },
    #[error("{op} at {address:#010x} ({len} bytes): {}", chain(.error))]
    Memory { op: &'static str, address: u32, len: usize, error: Box<probe_rs::Error> },
    #[error("set the watchdog freeze bits in {register} ({address:#010x}): {error}")]
    DebugFreeze { register: String, address: u32, error: Box<ProbeError> },
    #[error("{op}: the core is {state}; it must be halted")]
    NotHalted { op: &'static str, state: String },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("load image {image}: {}", chain(.error))]
    Load { image: String, error: Box<FileDownloadError> },
    #[error("flash {image} ({bytes} bytes in {start:#010x}..{end:#010x}): {}", chain(.error))]
    Flash { image: String, bytes: u64, start: u64, end: u64, error: Box<FlashError> },
}

impl ProbeError {
    /// Whether the probe or its link failed - not found, not opened, the USB transport or the
    /// virtual board's thread gone, our image handling - as opposed to the target answering (a
    /// bus fault, a core that does not halt, a flash algorithm that fails): the rig's fault, not
    /// the board's.
    pub fn is_link_failure(&self) -> bool {
        match self {
            ProbeError::Selector { .. }
            | ProbeError::Open { .. }
            | ProbeError::NotFound { .. }
            | ProbeError::Speed { .. } => true,
            ProbeError::Image { .. } | ProbeError::Load { .. } => true,
            ProbeError::DebugFreeze { error, .. } => error.is_link_failure(),
            ProbeError::Attach { error, .. }
            | ProbeError::Core { error, .. }
            | ProbeError::Register { error, .. }
            | ProbeError::Memory { error, .. } => link_failure_in_chain(error.as_ref()),
            ProbeError::Flash { error, .. } => link_failure_in_chain(error.as_ref()),
            ProbeError::NotHalted { .. } => false,
        }
    }
}

fn link_failure_in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(DebugProbeError::Usb(_)) = c.downcast_ref::<DebugProbeError>() {
            return true;
        }
        #[cfg(feature = "virtual")]
        if let Some(b) = c.downcast_ref::<probe_rs::probe::BoxedProbeError>()
            && let Some(hil_virtual_probe::VirtualProbeError::Link { .. }) =
                b.downcast_ref::<hil_virtual_probe::VirtualProbeError>()
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// An error and its causes, `: `-separated (probe-rs's top-level messages are often generic; the
/// address is in the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The core's execution state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    Sleeping,
    /// Halted, with probe-rs's reason (`Request`, `Breakpoint(..)`, `Exception` for a vector
    /// catch, `Step` ...).
    Halted(String),
    LockedUp,
    Unknown,
}

impl RunState {
    fn from_status(s: CoreStatus) -> Self {
        match s {
            CoreStatus::Running => RunState::Running,
            CoreStatus::Sleeping => RunState::Sleeping,
            CoreStatus::Halted(r) => RunState::Halted(format!("{r:?}")),
            CoreStatus::LockedUp => RunState::LockedUp,
            CoreStatus::Unknown => RunState::Unknown,
        }
    }
    pub fn is_halted(&self) -> bool {
        matches!(self, RunState::Halted(_))
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunState::Running => f.write_str("running"),
            RunState::Sleeping => f.write_str("sleeping"),
            RunState::Halted(r) => write!(f, "halted ({r})"),
            RunState::LockedUp => f.write_str("locked up"),
            RunState::Unknown => f.write_str("in an unknown state"),
        }
    }
}

/// A core register by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreReg {
    /// R0-R12.
    R(u8),
    Sp,
    Lr,
    Pc,
    Xpsr,
    Msp,
    Psp,
    /// CONTROL (from the packed CONTROL/FAULTMASK/BASEPRI/PRIMASK register, DCRSR REGSEL 0b10100).
    Control,
    Primask,
    /// xPSR[8:0]: the exception number (0 in Thread mode).
    Ipsr,
}

impl CoreReg {
    /// DCRSR.REGSEL (ARMv6-M ARM C1.6.3; ARMv7-M C1.6.3).
    fn regsel(self) -> u16 {
        match self {
            CoreReg::R(n) => u16::from(n.min(12)),
            CoreReg::Sp => 13,
            CoreReg::Lr => 14,
            CoreReg::Pc => 15,
            CoreReg::Xpsr | CoreReg::Ipsr => 16,
            CoreReg::Msp => 17,
            CoreReg::Psp => 18,
            CoreReg::Control | CoreReg::Primask => 0b10100,
        }
    }
    fn extract(self, raw: u32) -> u32 {
        match self {
            CoreReg::Control => raw >> 24 & 0xFF,
            CoreReg::Primask => raw & 1,
            CoreReg::Ipsr => raw & 0x1FF,
            _ => raw,
        }
    }
}

impl std::fmt::Display for CoreReg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreReg::R(n) => write!(f, "R{n}"),
            other => write!(f, "{}", format!("{other:?}").to_uppercase()),
        }
    }
}

/// The core registers a diagnosis looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoreRegisters {
    pub pc: u32,
    pub lr: u32,
    pub sp: u32,
    pub msp: u32,
    pub psp: u32,
    pub control: u32,
    pub primask: u32,
    pub xpsr: u32,
    pub ipsr: u32,
}

/// Image formats the flash loader takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Elf,
    /// Intel HEX.
    Hex,
    /// Raw binary placed at `base`.
    Bin {
        base: u32,
    },
}

/// An image to flash.
#[derive(Clone, Debug)]
pub struct FlashImage {
    /// For messages (file name or fixture name).
    pub name: String,
    pub bytes: Vec<u8>,
    pub format: ImageFormat,
}

impl FlashImage {
    pub fn new(name: impl Into<String>, bytes: Vec<u8>, format: ImageFormat) -> Self {
        FlashImage { name: name.into(), bytes, format }
    }

    /// Read a file; the format comes from `format` or the extension (`.elf`/none: ELF, `.hex`/`.ihex`:
    /// Intel HEX, `.bin` needs `format`).
    pub fn from_file(path: &Path, format: Option<ImageFormat>) -> Result<Self, ProbeError> {
        let name = path.display().to_string();
        let err = |message: String| ProbeError::Image { image: name.clone(), message };
        let format = match format {
            Some(f) => f,
            None => match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                Some("hex" | "ihex") => ImageFormat::Hex,
                Some("bin") => return Err(err("a raw binary needs a base address".into())),
                _ => ImageFormat::Elf,
            },
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("read: {e}")))?;
        Ok(FlashImage { name, bytes, format })
    }
}

/// What a flash operation did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FlashReport {
    pub image: String,
    pub format: &'static str,
    /// Bytes of image data programmed (sum of the loadable segments).
    pub bytes: u64,
    /// Loadable segments as (address, length).
    pub segments: Vec<(u32, u32)>,
    pub verified: bool,
    pub duration_ms: f64,
}

/// SysTick registers (ARMv6-M B3.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SysTickRegs {
    pub csr: u32,
    pub rvr: u32,
    pub cvr: u32,
}

/// NVIC bit registers, one word per 32 interrupts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NvicRegs {
    pub iser: Vec<u32>,
    pub ispr: Vec<u32>,
    /// Active bits: ARMv7-M only (ARMv6-M has no NVIC_IABR, B3.4).
    pub iabr: Option<Vec<u32>>,
}

/// A memory-mapped register the caller asked for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NamedValue {
    pub name: String,
    pub address: u32,
    pub value: Option<u32>,
    /// Why it could not be read (the snapshot is taken anyway).
    pub error: Option<String>,
}

/// Everything a diagnosis needs from the core, read through the probe at one halt.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProbeSnapshot {
    /// The state found before the snapshot (restored afterwards).
    pub run_state: RunState,
    pub core: CoreRegisters,
    pub vtor: u32,
    pub icsr: u32,
    /// SHCSR (on ARMv6-M only SVCALLPENDED, and only to the debugger).
    pub shcsr: Option<u32>,
    pub systick: SysTickRegs,
    pub nvic: NvicRegs,
    pub extra: Vec<NamedValue>,
}

// System control space (ARMv6-M B3.2, B3.3, B3.4; ARMv7-M B3.2-B3.4).
const ICSR: u32 = 0xE000_ED04;
const VTOR: u32 = 0xE000_ED08;
const SHCSR: u32 = 0xE000_ED24;
const SYST_CSR: u32 = 0xE000_E010;
const ICTR: u32 = 0xE000_E004;
const NVIC_ISER: u32 = 0xE000_E100;
const NVIC_ISPR: u32 = 0xE000_E200;
const NVIC_IABR: u32 = 0xE000_E300;

/// An open debug session on one core (core 0 of the target).
pub struct ProbeSession {
    session: Session,
    selector: String,
    target: String,
    opts: ProbeOptions,
    /// `VID:PID:serial` of the probe probe-rs opened, when its lister names exactly one.
    identity: Option<String>,
}

impl std::fmt::Debug for ProbeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeSession").field("selector", &self.selector).field("target", &self.target).finish()
    }
}

fn is_under_reset_halt_timeout(e: &probe_rs::Error) -> bool {
    // probe-rs 0.32 maps the timeout of its post-reset halt wait to this message.
    matches!(e, probe_rs::Error::Other(m) if m.contains("attaching to target under reset"))
}

/// probe-rs's built-in target database, built once per process. `Probe::attach` builds it anew on
/// every call (probe-rs 0.32, probe.rs `attach`): parsing and then dropping every chip family cost
/// about a quarter of the virtual suite's CPU time, as the rig re-attaches after every power cycle.
fn builtin_targets() -> &'static probe_rs::config::Registry {
    static REGISTRY: std::sync::OnceLock<probe_rs::config::Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(probe_rs::config::Registry::from_builtin_families)
}

impl ProbeSession {
    /// Open the probe at `selector` and attach to `target` (a probe-rs target name).
    ///
    /// Connect under reset: probe-rs 0.32 sets DEMCR.VC_CORERESET while NRST is low but enables
    /// halting debug (DHCSR.C_DEBUGEN) only after the release, and the architecture ignores vector
    /// catch without C_DEBUGEN (ARMv6-M ARM C1.6.5). On a chip fresh from power-on the core
    /// therefore runs and probe-rs times out waiting for the halt; a failed attempt leaves
    /// C_DEBUGEN set (debug registers survive everything but power-on), so the next one catches the
    /// reset vector. Real STM32G0/H5/L5 do exactly this (probe-rs issue #4113: "connect-under-reset
    /// fails after power cycle", the second attempt succeeds). The layer retries once in that case;
    /// note that firmware runs briefly during the failed first attempt.
    pub fn open(selector: &str, target: &str, opts: &ProbeOptions) -> Result<ProbeSession, ProbeError> {
        // Makes virtual boards' probes visible to the lister; real selectors are unaffected.
        #[cfg(feature = "virtual")]
        hil_virtual_probe::register();
        let parsed: probe_rs::probe::DebugProbeSelector = selector
            .parse()
            .map_err(|e| ProbeError::Selector { selector: selector.to_string(), message: format!("{e}") })?;
        // A probe that is not there: name what is, rather than the USB stack's errno.
        let lister = Lister::new();
        if lister.list(Some(&parsed)).is_empty() {
            let present = lister
                .list_all()
                .iter()
                .map(|p| {
                    format!(
                        "{:04x}:{:04x}{}",
                        p.vendor_id,
                        p.product_id,
                        p.serial_number.as_deref().map(|s| format!(":{s}")).unwrap_or_default()
                    )
                })
                .collect();
            return Err(ProbeError::NotFound {
                selector: selector.to_string(),
                present,
                no_usb: !std::path::Path::new("/sys/bus/usb/devices").exists(),
            });
        }
        let attempts = if opts.connect_under_reset { 2 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let mut probe = Lister::new()
                .open(parsed.clone())
                .map_err(|source| ProbeError::Open { selector: selector.to_string(), error: Box::new(source) })?;
            if let Some(khz) = opts.speed_khz {
                probe.set_speed(khz).map_err(|source| ProbeError::Speed {
                    selector: selector.to_string(),
                    khz,
                    error: Box::new(source),
                })?;
            }
            let r = if opts.connect_under_reset {
                probe.attach_under_reset_with_registry(target, Permissions::default(), builtin_targets())
            } else {
                probe.attach_with_registry(target, Permissions::default(), builtin_targets())
            };
            match r {
                Ok(session) => {
                    // Which probe this is, for the report (identical probes differ by serial).
                    let listed = Lister::new().list(Some(&parsed));
                    let identity = match listed.as_slice() {
                        [p] => Some(format!(
                            "{:04x}:{:04x}{} ({})",
                            p.vendor_id,
                            p.product_id,
                            p.serial_number.as_deref().map(|s| format!(":{s}")).unwrap_or_default(),
                            p.identifier
                        )),
                        _ => None,
                    };
                    return Ok(ProbeSession {
                        session,
                        selector: selector.to_string(),
                        target: target.to_string(),
                        opts: opts.clone(),
                        identity,
                    });
                }
                Err(e) if opts.connect_under_reset && is_under_reset_halt_timeout(&e) => {
                    tracing::info!(
                        target: "hil_rig::probe",
                        "{selector}: attach under reset timed out waiting for the reset halt; retrying (probe-rs #4113)"
                    );
                    last = Some(e);
                }
                Err(source) => return Err(Self::attach_err(selector, target, opts, source)),
            }
        }
        let source = last.unwrap_or_else(|| probe_rs::Error::Other("no attach attempt was made".into()));
        Err(Self::attach_err(selector, target, opts, source))
    }

    /// The probe as probe-rs lists it (`VID:PID:serial (name)`), when known.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    fn attach_err(selector: &str, target: &str, opts: &ProbeOptions, source: probe_rs::Error) -> ProbeError {
        ProbeError::Attach {
            selector: selector.to_string(),
            target: target.to_string(),
            how: if opts.connect_under_reset { " under reset" } else { "" },
            error: Box::new(source),
        }
    }

    /// Open for a chip of the chip data (its probe-rs target name), with the chip's watchdogs
    /// frozen while the core is halted (see [`ProbeSession::freeze_watchdogs_on_halt`]).
    pub fn open_chip(selector: &str, chip: &hil_chips::Chip, opts: &ProbeOptions) -> Result<ProbeSession, ProbeError> {
        let mut session = Self::open(selector, &chip.probe_rs_target, opts)?;
        if let Some(freeze) = &chip.debug_freeze {
            session.freeze_watchdogs_on_halt(freeze)?;
        }
        Ok(session)
    }

    /// Set the chip's debug freeze bits (DBG_IWDG_STOP, DBG_WWDG_STOP): the rig halts the core to
    /// read registers, and a watchdog that kept counting meanwhile would reset the chip it is
    /// looking at. The registers survive everything but power-on (RM0444 40.4.2), so this is done
    /// on every attach, and the rig re-attaches after each power cycle.
    pub fn freeze_watchdogs_on_halt(&mut self, freeze: &hil_chips::DebugFreeze) -> Result<(), ProbeError> {
        for r in &freeze.registers {
            let failed = |e: ProbeError| ProbeError::DebugFreeze {
                register: r.name.clone(),
                address: r.address,
                error: Box::new(e),
            };
            let v = self.read_u32(r.address).map_err(failed)?;
            if v & r.set != r.set {
                self.write_u32(r.address, v | r.set).map_err(failed)?;
            }
        }
        Ok(())
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }
    pub fn target(&self) -> &str {
        &self.target
    }

    fn core(&mut self, op: &'static str) -> Result<probe_rs::Core<'_>, ProbeError> {
        self.session.core(0).map_err(|source| ProbeError::Core { op, error: Box::new(source) })
    }

    fn core_type(&mut self) -> CoreType {
        self.session.list_cores().first().map(|c| c.1).unwrap_or(CoreType::Armv6m)
    }

    /// The core's state now.
    pub fn status(&mut self) -> Result<RunState, ProbeError> {
        let mut core = self.core("read core status")?;
        let s = core.status().map_err(|source| ProbeError::Core { op: "read core status", error: Box::new(source) })?;
        Ok(RunState::from_status(s))
    }

    /// Halt the core; returns the PC it stopped at.
    pub fn halt(&mut self) -> Result<u32, ProbeError> {
        let t = self.opts.halt_timeout;
        let mut core = self.core("halt")?;
        let info = core.halt(t).map_err(|source| ProbeError::Core { op: "halt", error: Box::new(source) })?;
        Ok(info.pc as u32)
    }

    /// Let the core run.
    pub fn run(&mut self) -> Result<(), ProbeError> {
        let mut core = self.core("run")?;
        core.run().map_err(|source| ProbeError::Core { op: "run", error: Box::new(source) })
    }

    /// Reset the system (AIRCR.SYSRESETREQ) and halt at the reset handler (DEMCR.VC_CORERESET
    /// vector catch); returns the registers there (PC = reset vector, MSP = initial SP).
    pub fn reset_and_halt(&mut self) -> Result<CoreRegisters, ProbeError> {
        let t = self.opts.halt_timeout;
        {
            let mut core = self.core("reset and halt")?;
            core.reset_and_halt(t)
                .map_err(|source| ProbeError::Core { op: "reset and halt", error: Box::new(source) })?;
        }
        self.registers()
    }

    /// Reset the system and let it run.
    pub fn reset(&mut self) -> Result<(), ProbeError> {
        let mut core = self.core("reset")?;
        core.reset().map_err(|source| ProbeError::Core { op: "reset", error: Box::new(source) })
    }

    /// Stop at `address` (FPB comparator) the next time it executes.
    pub fn set_breakpoint(&mut self, address: u32) -> Result<(), ProbeError> {
        let mut core = self.core("set breakpoint")?;
        core.set_hw_breakpoint(address as u64).map_err(|source| ProbeError::Register {
            op: "set breakpoint at",
            register: format!("{address:#010x}"),
            error: Box::new(source),
        })
    }

    pub fn clear_breakpoints(&mut self) -> Result<(), ProbeError> {
        let mut core = self.core("clear breakpoints")?;
        core.clear_all_hw_breakpoints()
            .map_err(|source| ProbeError::Core { op: "clear breakpoints", error: Box::new(source) })
    }

    /// Wait (at most `timeout`) until the core halts (a breakpoint, a vector catch).
    pub fn wait_halted(&mut self, timeout: Duration) -> Result<u32, ProbeError> {
        let mut core = self.core("wait for halt")?;
        core.wait_for_core_halted(timeout)
            .map_err(|source| ProbeError::Core { op: "wait for halt", error: Box::new(source) })?;
        let pc: u32 = core.read_core_reg(RegisterId(15)).map_err(|source| ProbeError::Register {
            op: "read",
            register: "PC".into(),
            error: Box::new(source),
        })?;
        Ok(pc)
    }

    /// Read one core register (the core must be halted: DCRSR transfers need debug state).
    pub fn register(&mut self, r: CoreReg) -> Result<u32, ProbeError> {
        self.require_halted("read a core register")?;
        let mut core = self.core("read a core register")?;
        read_reg(&mut core, r)
    }

    /// PC, LR, SP, MSP, PSP, CONTROL, PRIMASK, xPSR, IPSR of the halted core.
    pub fn registers(&mut self) -> Result<CoreRegisters, ProbeError> {
        self.require_halted("read the core registers")?;
        let mut core = self.core("read the core registers")?;
        read_registers(&mut core)
    }

    /// SCB->VTOR.
    pub fn vtor(&mut self) -> Result<u32, ProbeError> {
        self.read_u32(VTOR)
    }

    fn require_halted(&mut self, op: &'static str) -> Result<(), ProbeError> {
        let s = self.status()?;
        if s.is_halted() { Ok(()) } else { Err(ProbeError::NotHalted { op, state: s.to_string() }) }
    }

    pub fn read_u32(&mut self, address: u32) -> Result<u32, ProbeError> {
        let mut core = self.core("read memory")?;
        core.read_word_32(address as u64).map_err(|source| ProbeError::Memory {
            op: "read",
            address,
            len: 4,
            error: Box::new(source),
        })
    }

    pub fn write_u32(&mut self, address: u32, value: u32) -> Result<(), ProbeError> {
        let mut core = self.core("write memory")?;
        core.write_word_32(address as u64, value).map_err(|source| ProbeError::Memory {
            op: "write",
            address,
            len: 4,
            error: Box::new(source),
        })
    }

    pub fn read_memory(&mut self, address: u32, len: usize) -> Result<Vec<u8>, ProbeError> {
        let mut buf = vec![0; len];
        let mut core = self.core("read memory")?;
        core.read(address as u64, &mut buf).map_err(|source| ProbeError::Memory {
            op: "read",
            address,
            len,
            error: Box::new(source),
        })?;
        Ok(buf)
    }

    pub fn write_memory(&mut self, address: u32, data: &[u8]) -> Result<(), ProbeError> {
        let mut core = self.core("write memory")?;
        core.write(address as u64, data).map_err(|source| ProbeError::Memory {
            op: "write",
            address,
            len: data.len(),
            error: Box::new(source),
        })?;
        core.flush().map_err(|source| ProbeError::Memory {
            op: "write",
            address,
            len: data.len(),
            error: Box::new(source),
        })
    }

    /// Program an image with probe-rs's flash loader (the target's flash algorithm runs on the
    /// core), optionally verifying it by reading flash back. The core is left halted: reset or run
    /// it afterwards.
    pub fn flash(&mut self, image: &FlashImage, verify: bool) -> Result<FlashReport, ProbeError> {
        let t0 = Instant::now();
        let mut loader = self.session.target().flash_loader();
        let mut file = Cursor::new(&image.bytes);
        let load = match image.format {
            ImageFormat::Elf => loader.load_image(&mut self.session, &mut file, ElfLoader(ElfOptions::default()), None),
            ImageFormat::Hex => loader.load_image(&mut self.session, &mut file, HexLoader, None),
            ImageFormat::Bin { base } => loader.load_image(
                &mut self.session,
                &mut file,
                BinLoader(BinOptions { base_address: Some(base as u64), skip: 0 }),
                None,
            ),
        };
        load.map_err(|source| ProbeError::Load { image: image.name.clone(), error: Box::new(source) })?;
        let segments: Vec<(u32, u32)> = loader.data().map(|(a, d)| (a as u32, d.len() as u32)).collect();
        let bytes: u64 = segments.iter().map(|s| u64::from(s.1)).sum();
        let start = segments.iter().map(|s| u64::from(s.0)).min().unwrap_or(0);
        let end = segments.iter().map(|s| u64::from(s.0) + u64::from(s.1)).max().unwrap_or(0);
        if bytes == 0 {
            return Err(ProbeError::Image { image: image.name.clone(), message: "no loadable data".into() });
        }
        let mut options = DownloadOptions::default();
        options.verify = verify;
        loader.commit(&mut self.session, options).map_err(|source| ProbeError::Flash {
            image: image.name.clone(),
            bytes,
            start,
            end,
            error: Box::new(source),
        })?;
        Ok(FlashReport {
            image: image.name.clone(),
            format: match image.format {
                ImageFormat::Elf => "elf",
                ImageFormat::Hex => "hex",
                ImageFormat::Bin { .. } => "bin",
            },
            bytes,
            segments,
            verified: verify,
            duration_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Capture the core state and the named memory-mapped registers at one halt. A running core is
    /// halted for the reads and resumed afterwards; a halted core stays halted. Registers of
    /// `extra` that cannot be read are reported with the error, not fatal.
    pub fn snapshot(&mut self, extra: &[(&str, u32)]) -> Result<ProbeSnapshot, ProbeError> {
        let before = self.status()?;
        let must_halt = !before.is_halted();
        if must_halt {
            self.halt()?;
        }
        let r = self.snapshot_halted(extra, before.clone());
        if must_halt {
            // Restore the run state even when a read failed.
            let resumed = self.run();
            let snap = r?;
            resumed?;
            return Ok(snap);
        }
        r
    }

    fn snapshot_halted(&mut self, extra: &[(&str, u32)], run_state: RunState) -> Result<ProbeSnapshot, ProbeError> {
        let v7 = !matches!(self.core_type(), CoreType::Armv6m);
        let mut core = self.core("snapshot")?;
        let regs = read_registers(&mut core)?;
        let mut rd = |address: u32| {
            core.read_word_32(address as u64).map_err(|source| ProbeError::Memory {
                op: "snapshot read",
                address,
                len: 4,
                error: Box::new(source),
            })
        };
        let vtor = rd(VTOR)?;
        let icsr = rd(ICSR)?;
        let shcsr = rd(SHCSR).ok();
        let systick = SysTickRegs { csr: rd(SYST_CSR)?, rvr: rd(SYST_CSR + 4)?, cvr: rd(SYST_CSR + 8)? };
        // ARMv6-M: at most 32 interrupts, one word; ARMv7-M: ICTR.INTLINESNUM + 1 words (B3.4.2).
        let words = if v7 { (rd(ICTR)? & 0xF) + 1 } else { 1 };
        let mut nvic = NvicRegs::default();
        for i in 0..words {
            nvic.iser.push(rd(NVIC_ISER + 4 * i)?);
            nvic.ispr.push(rd(NVIC_ISPR + 4 * i)?);
        }
        if v7 {
            let mut iabr = Vec::new();
            for i in 0..words {
                iabr.push(rd(NVIC_IABR + 4 * i)?);
            }
            nvic.iabr = Some(iabr);
        }
        let extra = extra
            .iter()
            .map(|(name, address)| match rd(*address) {
                Ok(v) => NamedValue { name: name.to_string(), address: *address, value: Some(v), error: None },
                Err(e) => {
                    NamedValue { name: name.to_string(), address: *address, value: None, error: Some(e.to_string()) }
                }
            })
            .collect();
        Ok(ProbeSnapshot { run_state, core: regs, vtor, icsr, shcsr, systick, nvic, extra })
    }

    /// DEMCR (vector catch bits), for checks of the reset catch.
    pub fn demcr(&mut self) -> Result<u32, ProbeError> {
        self.read_u32(Demcr::get_mmio_address() as u32)
    }

    /// The probe-rs session, for what this layer does not wrap.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

fn read_reg(core: &mut probe_rs::Core<'_>, r: CoreReg) -> Result<u32, ProbeError> {
    let raw: u32 = core.read_core_reg(RegisterId(r.regsel())).map_err(|source| ProbeError::Register {
        op: "read",
        register: r.to_string(),
        error: Box::new(source),
    })?;
    Ok(r.extract(raw))
}

fn read_registers(core: &mut probe_rs::Core<'_>) -> Result<CoreRegisters, ProbeError> {
    let xpsr = read_reg(core, CoreReg::Xpsr)?;
    let special = read_reg(core, CoreReg::Control)?;
    let primask = read_reg(core, CoreReg::Primask)?;
    Ok(CoreRegisters {
        pc: read_reg(core, CoreReg::Pc)?,
        lr: read_reg(core, CoreReg::Lr)?,
        sp: read_reg(core, CoreReg::Sp)?,
        msp: read_reg(core, CoreReg::Msp)?,
        psp: read_reg(core, CoreReg::Psp)?,
        control: special,
        primask,
        xpsr,
        ipsr: xpsr & 0x1FF,
    })
}

/// A probe that probe-rs opens by selector: a lab probe (VID:PID:serial) or the virtual board's
/// probe-rs driver. Each [`ProbeConnector::connect`] attaches anew, with the chip's watchdogs
/// frozen while the core is halted ([`ProbeSession::open_chip`]).
pub struct ProbeRsConnector {
    pub selector: String,
    pub chip: &'static hil_chips::Chip,
    pub options: ProbeOptions,
}

impl crate::backend::ProbeConnector for ProbeRsConnector {
    fn connect(&self) -> Result<Box<dyn crate::probe_ops::ProbeOps>, ProbeError> {
        ProbeSession::open_chip(&self.selector, self.chip, &self.options)
            .map(|p| Box::new(p) as Box<dyn crate::probe_ops::ProbeOps>)
    }

    fn selector(&self) -> &str {
        &self.selector
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_moves_between_threads() {
        fn send<T: Send>() {}
        send::<ProbeSession>();
    }

    #[test]
    fn register_selectors_and_fields() {
        assert_eq!(CoreReg::Control.regsel(), 0b10100);
        assert_eq!(CoreReg::Control.extract(0x0200_0001), 2);
        assert_eq!(CoreReg::Primask.extract(0x0200_0001), 1);
        assert_eq!(CoreReg::Ipsr.extract(0x2100_000F), 15);
        assert_eq!(CoreReg::Msp.to_string(), "MSP");
        assert_eq!(CoreReg::R(3).to_string(), "R3");
    }

    #[test]
    fn bad_selectors_and_missing_base_are_errors() {
        let e = ProbeSession::open("not-a-selector", "STM32G071RBTx", &ProbeOptions::default()).unwrap_err();
        assert!(matches!(e, ProbeError::Selector { .. }), "{e}");
        let e = FlashImage::from_file(Path::new("/nonexistent/x.bin"), None).unwrap_err();
        assert!(e.to_string().contains("base address"), "{e}");
    }
}
