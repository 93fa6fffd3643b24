//! The probe-rs driver: [`VirtualProbe`] (a `DebugProbe` with raw DAP access, like a CMSIS-DAP
//! probe) and its factory, which probe-rs's `Lister` asks when it opens a selector.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use hil_virtual_board::debug_ext::{DapLink, InResetBus, TransferOutcome};
use hil_virtual_board::{Board, DebugOp};
use probe_rs::architecture::arm::sequences::ArmDebugSequence;
use probe_rs::architecture::arm::{
    ArmCommunicationInterface, ArmDebugInterface, ArmError, DapError, DapProbe, RawDapAccess, RegisterAddress,
};
use probe_rs::probe::list::ProbeListItem;
use probe_rs::probe::{
    DebugProbe, DebugProbeError, DebugProbeInfo, DebugProbeSelector, ProbeCreationError, ProbeFactory, WireProtocol,
};

use crate::dap::{Ack, Dap, DapConfig, DapStats, Link, Port, RomTable, TarIncrement};
use crate::error::VirtualProbeError;
use crate::{PRODUCT_ID, VENDOR_ID};

/// Per-board settings of the virtual probe (the switchable, unverified behaviours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeConfig {
    /// Bus accesses while NRST is held low (see [`InResetBus`]).
    pub in_reset_bus: InResetBus,
    /// Where TAR auto-increment wraps.
    pub tar_increment: TarIncrement,
    /// Override of the ROM table AHB-AP BASE points at (default: the STM32 system ROM table).
    pub rom_table: Option<RomTable>,
}

/// What the probe of one board did (kept after the probe is closed, accumulated across opens).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProbeStats {
    pub opens: u64,
    pub dap: DapStats,
    /// nRST driven low by the probe (target_reset_assert, swj_pins, target_reset).
    pub nrst_asserts: u64,
}

struct Registry {
    configs: HashMap<String, ProbeConfig>,
    stats: HashMap<String, ProbeStats>,
    open: HashSet<String>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry { configs: HashMap::new(), stats: HashMap::new(), open: HashSet::new() }))
        .lock()
        // The registry holds plain maps; a panic elsewhere cannot leave them inconsistent.
        .unwrap_or_else(|p| p.into_inner())
}

/// Set the probe behaviours for a board (effective at the next open).
pub fn configure(board: &str, config: ProbeConfig) {
    registry().configs.insert(board.to_string(), config);
}

/// What the probe of `board` did so far (`None`: never opened).
pub fn probe_stats(board: &str) -> Option<ProbeStats> {
    registry().stats.get(board).cloned()
}

/// Time one transfer (a batch of DP/AP accesses) takes on a bench: the ST-LINK/V2-1 on the
/// NUCLEO-64 boards the virtual boards stand for (UM2324) is a USB full-speed device, whose
/// command round trip takes at least one 1 ms frame. Not a chip fact but the rig's
/// model of its probe: a gated virtual board runs for this long per transfer, so a probe polling
/// the target (a flash algorithm, a reset, a ROM at work) lets it make progress by the same amount
/// on every run, whatever the host's load.
pub const TRANSFER_WIRE_TIME: std::time::Duration = std::time::Duration::from_micros(1000);

/// Debug Halting Control and Status Register (ARMv7-M C1.6.2, ARMv6-M C1.6.3).
const DHCSR: u32 = 0xE000_EDF0;

/// How much of its own time a gated board may run for one halt poll while its core runs (see
/// `Board::exec_on_wire_polling_halt`): a tenth of the shortest flash-algorithm timeout probe-rs
/// uses for the modelled chips (STM32F1 program_page_timeout 100 ms), so an algorithm step that
/// the chip finishes in time is seen finished within a few polls, whatever the host's load.
pub const HALT_POLL_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// The link to a running board: every transfer is one message to its thread, answered by the
/// board's deadline.
pub(crate) struct BoardLink {
    pub(crate) board: Board,
    pub(crate) in_reset: InResetBus,
}

impl BoardLink {
    fn err(&self, what: &'static str, source: hil_virtual_board::BoardError) -> VirtualProbeError {
        VirtualProbeError::Link { board: self.board.name().to_string(), what, source: Box::new(source) }
    }
    fn set_nrst(&self, low: bool) -> Result<(), VirtualProbeError> {
        self.board.debug().set_nrst(low).wait().map_err(|e| self.err("drive NRST", e))
    }
    fn nrst_low(&self) -> Result<bool, VirtualProbeError> {
        self.board.exec("read NRST", |m| Ok(m.nrst_low())).wait().map_err(|e| self.err("read NRST", e))
    }
    pub(crate) fn set_nrst_pin(&self, low: bool) -> Result<(), VirtualProbeError> {
        self.set_nrst(low)
    }
    pub(crate) fn nrst_pin_low(&self) -> Result<bool, VirtualProbeError> {
        self.nrst_low()
    }
}

impl Link for BoardLink {
    fn board(&self) -> &str {
        self.board.name()
    }
    fn link(&mut self) -> Result<DapLink, VirtualProbeError> {
        self.board.exec("debug link state", |m| Ok(m.dap_link())).wait().map_err(|e| self.err("debug link state", e))
    }
    fn transfer(&mut self, ops: Vec<DebugOp>) -> Result<TransferOutcome, VirtualProbeError> {
        let policy = self.in_reset;
        // A lone DHCSR read is the debugger polling for a halt (a flash algorithm, a breakpoint).
        let halt_poll = matches!(ops.as_slice(), [DebugOp::Read { addr: DHCSR, .. }]);
        let run = move |m: &mut hil_virtual_board::Machine| Ok(m.debug_transfer(&ops, policy));
        let pending = if halt_poll {
            self.board.exec_on_wire_polling_halt("debug transfer", TRANSFER_WIRE_TIME, HALT_POLL_WINDOW, run)
        } else {
            self.board.exec_on_wire("debug transfer", TRANSFER_WIRE_TIME, run)
        };
        pending.wait().map_err(|e| self.err("debug transfer", e))
    }
}

/// A debug probe wired to a virtual board's SWD pins and NRST.
pub struct VirtualProbe {
    link: BoardLink,
    dap: Dap,
    speed_khz: u32,
    /// Stats at open (the registry keeps the board's totals).
    base: DapStats,
}

impl std::fmt::Debug for VirtualProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualProbe")
            .field("board", &self.link.board.name())
            .field("speed_khz", &self.speed_khz)
            .finish()
    }
}

impl VirtualProbe {
    /// Open the probe of a running board (one probe per board at a time).
    pub fn open(board: Board) -> Result<VirtualProbe, VirtualProbeError> {
        let name = board.name().to_string();
        let chip = hil_chips::Chip::by_name(board.chip()).ok_or_else(|| VirtualProbeError::UnknownChip {
            board: name.clone(),
            chip: board.chip().to_string(),
            known: hil_chips::names().join(", "),
        })?;
        let mut reg = registry();
        if !reg.open.insert(name.clone()) {
            return Err(VirtualProbeError::InUse { board: name });
        }
        let cfg = reg.configs.get(&name).copied().unwrap_or_default();
        let stats = reg.stats.entry(name.clone()).or_default();
        stats.opens += 1;
        let base = stats.dap.clone();
        drop(reg);
        let mut dc = DapConfig::for_chip(chip);
        dc.tar_increment = cfg.tar_increment;
        if let Some(r) = cfg.rom_table {
            dc.rom_table = r;
        }
        Ok(VirtualProbe {
            link: BoardLink { board, in_reset: cfg.in_reset_bus },
            dap: Dap::new(dc),
            speed_khz: 4000,
            base,
        })
    }

    pub fn board(&self) -> &Board {
        &self.link.board
    }

    fn publish(&mut self) {
        let mut total = self.base.clone();
        let s = &self.dap.stats;
        total.dp_reads += s.dp_reads;
        total.dp_writes += s.dp_writes;
        total.ap_reads += s.ap_reads;
        total.ap_writes += s.ap_writes;
        total.memory_accesses += s.memory_accesses;
        total.transfers += s.transfers;
        total.line_resets += s.line_resets;
        total.sticky_errors += s.sticky_errors;
        if s.last_sticky.is_some() {
            total.last_sticky = s.last_sticky.clone();
        }
        for (k, v) in &s.registers {
            *total.registers.entry(k).or_default() += v;
        }
        registry().stats.entry(self.link.board.name().to_string()).or_default().dap = total;
    }

    fn count_nrst(&self) {
        registry().stats.entry(self.link.board.name().to_string()).or_default().nrst_asserts += 1;
    }

    /// Turn the target's answer into what a CMSIS-DAP driver reports. On FAULT the driver reads
    /// CTRL/STAT and clears STICKYERR through ABORT (what probe-rs's CMSIS-DAP driver does after a
    /// FAULT), so the next access can go through; the failed access was logged with its address.
    fn finish(&mut self, ack: Result<Ack, VirtualProbeError>) -> Result<u32, ArmError> {
        let r = match ack {
            Ok(Ack::Ok(v)) => Ok(v),
            Ok(Ack::NoAck) => Err(ArmError::Dap(DapError::NoAcknowledge)),
            Ok(Ack::Fault) => {
                if self.dap.sticky() {
                    let clear = self.dap.write(&mut self.link, Port::Dp, 0x0, 1 << 2);
                    if let Err(e) = clear {
                        self.publish();
                        return Err(probe_err(e));
                    }
                }
                Err(ArmError::Dap(DapError::FaultResponse))
            }
            Err(e) => Err(probe_err(e)),
        };
        self.publish();
        r
    }
}

impl Drop for VirtualProbe {
    fn drop(&mut self) {
        self.publish();
        registry().open.remove(self.link.board.name());
    }
}

fn probe_err(e: VirtualProbeError) -> ArmError {
    ArmError::Probe(DebugProbeError::from(e))
}

fn port_of(address: RegisterAddress) -> (Port, u8) {
    match address {
        RegisterAddress::DpRegister(_) => (Port::Dp, address.a2_and_3()),
        RegisterAddress::ApRegister(_) => (Port::Ap, address.a2_and_3()),
    }
}

impl DebugProbe for VirtualProbe {
    fn get_name(&self) -> &str {
        "hil virtual probe"
    }

    fn speed_khz(&self) -> u32 {
        self.speed_khz
    }

    /// Any SWCLK rate a CMSIS-DAP probe offers is accepted; the model's timing does not depend on
    /// it (transfers complete at the speed of the board thread).
    fn set_speed(&mut self, speed_khz: u32) -> Result<u32, DebugProbeError> {
        if speed_khz == 0 || speed_khz > 100_000 {
            return Err(DebugProbeError::UnsupportedSpeed(speed_khz));
        }
        self.speed_khz = speed_khz;
        Ok(speed_khz)
    }

    fn attach(&mut self) -> Result<(), DebugProbeError> {
        // Fails when the board thread is gone: the probe has nothing on its pins.
        self.link.link().map(|_| ()).map_err(DebugProbeError::from)
    }

    fn detach(&mut self) -> Result<(), probe_rs::Error> {
        self.publish();
        Ok(())
    }

    fn target_reset(&mut self) -> Result<(), DebugProbeError> {
        self.count_nrst();
        self.link.set_nrst(true)?;
        self.link.set_nrst(false)?;
        Ok(())
    }

    fn target_reset_assert(&mut self) -> Result<(), DebugProbeError> {
        self.count_nrst();
        Ok(self.link.set_nrst(true)?)
    }

    fn target_reset_deassert(&mut self) -> Result<(), DebugProbeError> {
        Ok(self.link.set_nrst(false)?)
    }

    fn select_protocol(&mut self, protocol: WireProtocol) -> Result<(), DebugProbeError> {
        match protocol {
            WireProtocol::Swd => Ok(()),
            WireProtocol::Jtag => Err(DebugProbeError::UnsupportedProtocol(WireProtocol::Jtag)),
        }
    }

    fn active_protocol(&self) -> Option<WireProtocol> {
        Some(WireProtocol::Swd)
    }

    fn has_arm_interface(&self) -> bool {
        true
    }

    fn try_get_arm_debug_interface<'probe>(
        self: Box<Self>,
        sequence: Arc<dyn ArmDebugSequence>,
    ) -> Result<Box<dyn ArmDebugInterface + 'probe>, (Box<dyn DebugProbe>, ArmError)> {
        // probe-rs's generic ADIv5 stack (the one CMSIS-DAP and J-Link use) over our raw DAP.
        Ok(ArmCommunicationInterface::create(self, sequence, false))
    }

    fn into_probe(self: Box<Self>) -> Box<dyn DebugProbe> {
        self
    }

    fn try_as_dap_probe(&mut self) -> Option<&mut dyn DapProbe> {
        Some(self)
    }

    /// VTref: the board's VDD (3.3 V as on a Nucleo) while it is powered.
    fn get_target_voltage(&mut self) -> Result<Option<f32>, DebugProbeError> {
        let up = !matches!(self.link.link()?, DapLink::Off);
        Ok(Some(if up { 3.3 } else { 0.0 }))
    }
}

impl RawDapAccess for VirtualProbe {
    fn raw_read_register(&mut self, address: RegisterAddress) -> Result<u32, ArmError> {
        let (port, a) = port_of(address);
        let ack = self.dap.read(&mut self.link, port, a);
        self.finish(ack)
    }

    fn raw_read_block(&mut self, address: RegisterAddress, values: &mut [u32]) -> Result<(), ArmError> {
        let (port, a) = port_of(address);
        let ack = self.dap.read_block(&mut self.link, port, a, values);
        self.finish(ack).map(|_| ())
    }

    fn raw_write_register(&mut self, address: RegisterAddress, value: u32) -> Result<(), ArmError> {
        let (port, a) = port_of(address);
        let ack = self.dap.write(&mut self.link, port, a, value);
        self.finish(ack).map(|_| ())
    }

    fn raw_write_block(&mut self, address: RegisterAddress, values: &[u32]) -> Result<(), ArmError> {
        let (port, a) = port_of(address);
        let ack = self.dap.write_block(&mut self.link, port, a, values);
        self.finish(ack).map(|_| ())
    }

    fn configure_jtag(&mut self, _skip_scan: bool) -> Result<(), DebugProbeError> {
        Err(DebugProbeError::from(VirtualProbeError::Protocol("JTAG")))
    }

    fn jtag_sequence(&mut self, _cycles: u8, _tms: bool, _tdi: u64) -> Result<(), DebugProbeError> {
        Err(DebugProbeError::from(VirtualProbeError::Protocol("JTAG")))
    }

    fn swj_sequence(&mut self, bit_len: u8, bits: u64) -> Result<(), DebugProbeError> {
        self.dap.swj_sequence(bit_len, bits);
        self.publish();
        Ok(())
    }

    /// DAP_SWJ_Pins: only nRESET (bit 7) is wired to the board; it is open-drain, so the level read
    /// back is the NRST pin's. SWDIO (bit 1) reads high (pull-up), the other pins low.
    fn swj_pins(&mut self, pin_out: u32, pin_select: u32, _pin_wait: u32) -> Result<u32, DebugProbeError> {
        const NRESET: u32 = 1 << 7;
        if pin_select & NRESET != 0 {
            let low = pin_out & NRESET == 0;
            if low {
                self.count_nrst();
            }
            self.link.set_nrst(low)?;
        }
        let nrst_high = !self.link.nrst_low()?;
        Ok(1 << 1 | (nrst_high as u32) << 7)
    }

    fn into_probe(self: Box<Self>) -> Box<dyn DebugProbe> {
        self
    }

    fn core_status_notification(&mut self, _state: probe_rs::CoreStatus) -> Result<(), DebugProbeError> {
        Ok(())
    }
}

impl DapProbe for VirtualProbe {}

/// The factory probe-rs asks for every selector (registered by [`crate::register`]).
#[derive(Debug)]
pub struct VirtualProbeFactory;

pub(crate) static FACTORY: VirtualProbeFactory = VirtualProbeFactory;

impl std::fmt::Display for VirtualProbeFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hil virtual probe")
    }
}

fn creation_err(e: VirtualProbeError) -> DebugProbeError {
    DebugProbeError::ProbeCouldNotBeCreated(ProbeCreationError::from(e))
}

impl ProbeFactory for VirtualProbeFactory {
    fn open(&self, selector: &DebugProbeSelector) -> Result<Box<dyn DebugProbe>, DebugProbeError> {
        if selector.vendor_id != VENDOR_ID || selector.product_id != PRODUCT_ID {
            return Err(DebugProbeError::ProbeCouldNotBeCreated(ProbeCreationError::NotFound));
        }
        let running = Board::running();
        let name = match selector.serial_number.as_deref() {
            Some(s) if !s.is_empty() => s.to_string(),
            _ if running.len() == 1 => running[0].clone(),
            _ => {
                return Err(creation_err(VirtualProbeError::Ambiguous {
                    selector: format!("{VENDOR_ID:04x}:{PRODUCT_ID:04x}"),
                    count: running.len(),
                    running: running.join(", "),
                }));
            }
        };
        let board = Board::lookup(&name)
            .ok_or_else(|| creation_err(VirtualProbeError::NoSuchBoard { name, running: running.join(", ") }))?;
        Ok(Box::new(VirtualProbe::open(board).map_err(creation_err)?))
    }

    fn list_probes(&self) -> Vec<ProbeListItem> {
        Board::running()
            .into_iter()
            .map(|name| {
                ProbeListItem::accessible(DebugProbeInfo::new(
                    format!("hil virtual probe ({name})"),
                    VENDOR_ID,
                    PRODUCT_ID,
                    Some(name),
                    &FACTORY,
                    None,
                    false,
                ))
            })
            .collect()
    }
}
