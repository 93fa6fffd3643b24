//! The target side of the debug link: a Serial Wire Debug Port (SW-DP) and the AHB-AP of a
//! Cortex-M0+ DAP, as ADIv5.2 (ARM IHI 0031) describes them, plus the STM32 system ROM table.
//!
//! The model answers one wire transaction at a time ([`Dap::read`], [`Dap::write`]) the way a
//! CMSIS-DAP probe reports it to the host: an AP read returns its own data (the probe firmware
//! performs the posted read and the RDBUFF read), errors come back as FAULT or no acknowledge.
//! Memory accesses go to the board through a [`Link`]; a block of DRW accesses is one transfer.
//!
//! Modelled:
//! - SW-DP (ADIv5.2 B2.2): DPIDR 0x0BC11477 (Cortex-M0+ MINDP, DPv1), ABORT, CTRL/STAT with the
//!   power-up handshake (CxxxPWRUPREQ acknowledged by CxxxPWRUPACK), READOK and STICKYERR,
//!   DLCR (DPBANKSEL 1), SELECT (APSEL, APBANKSEL, DPBANKSEL), RESEND and RDBUFF.
//! - Line reset (B4.3.3): 50 or more SWCLK cycles with SWDIO high; after a line reset and after
//!   power-on the DP answers nothing but a DPIDR read.
//! - Sticky errors (ADIv5.2 "Sticky flags and DP error responses"): a failed AP access sets
//!   STICKYERR; while it is set every AP access and RDBUFF read gets FAULT and reaches nothing;
//!   ABORT.STKERRCLR clears it. The failed access (address, size, direction, reason) is kept.
//! - AHB-AP 0 (C2.6, the MEM-AP registers): IDR 0x04770031, CSW (Size byte/halfword/word,
//!   AddrInc off/single, DeviceEn, HPROT bits stored), TAR with auto-increment, DRW with the byte
//!   lanes of C2.2.6, BD0-BD3, CFG 0 (little-endian, 32-bit), BASE. Other APSEL values read as
//!   zero (ADIv5.2 IDR: "zero if no AP is present"), which ends probe-rs's AP scan.
//! - The STM32 system ROM table at 0xF0000000 (CoreSight class 0x1, designer STMicroelectronics,
//!   part = DEV_ID) pointing at the Cortex-M0+ ROM table at 0xE00FF000 (which the core serves).

use hil_cortex_m::Size;
use hil_virtual_board::debug_ext::{DapLink, TransferOutcome};
use hil_virtual_board::{BoardError, DebugOp};

use crate::error::VirtualProbeError;

/// SW-DP identification of the Cortex-M0+ DAP: ARM designer 0x23B, PARTNO 0xBC, MINDP, DPv1
/// (ARM DDI 0484 Cortex-M0+ TRM, "DPIDR"; the value probe-rs reads from STM32G0 parts).
pub const DPIDR_M0PLUS: u32 = 0x0BC1_1477;
/// AHB-AP identification of the Cortex-M0+ DAP: ARM, MEM-AP class, AMBA AHB3 (type 1).
pub const AHB_AP_IDR_M0PLUS: u32 = 0x0477_0031;
/// Where the STM32 system ROM table sits (AHB-AP BASE 0xF0000003 on STM32 Cortex-M0/M0+ parts).
pub const ST_ROM_TABLE: u32 = 0xF000_0000;
/// The Cortex-M0+ ROM table (ARMv6-M ARM C1.2, Cortex-M0+ TRM).
pub const CORE_ROM_TABLE: u32 = 0xE00F_F000;

// CTRL/STAT bits (ADIv5.2 B2.2.3).
const ORUNDETECT: u32 = 1 << 0;
const STICKYERR: u32 = 1 << 5;
const READOK: u32 = 1 << 6;
const CDBGRSTREQ: u32 = 1 << 26;
const CDBGPWRUPREQ: u32 = 1 << 28;
const CSYSPWRUPREQ: u32 = 1 << 30;
/// Writable bits on a MINDP SW-DP: no TRNMODE, MASKLANE or TRNCNT (B2.2.3: RAZ/WI on MINDP).
const CTRL_WRITABLE: u32 = ORUNDETECT | CDBGRSTREQ | CDBGPWRUPREQ | CSYSPWRUPREQ;
// ABORT bits (B2.2.1).
const STKERRCLR: u32 = 1 << 2;

/// Where the AP's auto-increment wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TarIncrement {
    /// Only TAR[9:0] increments: the address wraps inside its 1 KiB block (ADIv5.2 TAR auto-increment only
    /// guarantees the increment of the low 10 bits; wrapping there is what simple AHB-APs do).
    /// Not verified on the M0+ DAP; probe-rs rewrites TAR at every 1 KiB boundary and never sees
    /// the difference.
    #[default]
    Wrap1K,
    /// The whole TAR increments.
    Linear,
}

/// Which ROM table AHB-AP BASE points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RomTable {
    /// BASE = 0xF0000003: the STM32 system ROM table (designer ST, part = DEV_ID), whose one entry
    /// points at the Cortex-M0+ ROM table. Layout as OpenOCD `dap info` shows it on STM32
    /// Cortex-M0/M0+ parts; not read from a G0 in this lab.
    St,
    /// BASE = 0xE00FF003: the core's ROM table directly.
    CoreOnly,
}

/// Identification and switchable behaviours of the modelled DAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DapConfig {
    pub dpidr: u32,
    pub ap_idr: u32,
    pub rom_table: RomTable,
    /// DBGMCU DEV_ID, the part number of the ST ROM table.
    pub dev_id: u16,
    pub tar_increment: TarIncrement,
}

impl DapConfig {
    /// The DAP of a chip as its chip data describes it (`identity.debug_port`); a Cortex-M0+
    /// MINDP with ST's ROM table when the data says nothing.
    pub fn for_chip(chip: &hil_chips::Chip) -> Self {
        let mut c = Self::stm32_m0plus(chip.identity.dev_id);
        if let Some(d) = &chip.identity.debug_port {
            c.dpidr = d.dpidr;
            c.ap_idr = d.ap_idr;
            c.rom_table = match d.rom_table {
                hil_chips::RomTableKind::St => RomTable::St,
                hil_chips::RomTableKind::Core => RomTable::CoreOnly,
            };
        }
        c
    }

    /// The DAP of an STM32 with a Cortex-M0+ (G0): DEV_ID from chip data.
    pub fn stm32_m0plus(dev_id: u16) -> Self {
        DapConfig {
            dpidr: DPIDR_M0PLUS,
            ap_idr: AHB_AP_IDR_M0PLUS,
            rom_table: RomTable::St,
            dev_id,
            tar_increment: TarIncrement::Wrap1K,
        }
    }
}

/// The board side of the link.
pub trait Link {
    /// The board's name, for errors.
    fn board(&self) -> &str;
    fn link(&mut self) -> Result<DapLink, VirtualProbeError>;
    fn transfer(&mut self, ops: Vec<DebugOp>) -> Result<TransferOutcome, VirtualProbeError>;
}

/// The target's answer to one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    Ok(u32),
    /// FAULT: a sticky error flag is set (or was just set by this access).
    Fault,
    /// No acknowledge: the DP does not answer (no power, disabled, or waiting for the DPIDR read
    /// that must follow a line reset).
    NoAck,
}

/// The AP access that set STICKYERR.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StickyFault {
    pub address: u32,
    pub size: &'static str,
    pub write: bool,
    pub reason: String,
}

impl std::fmt::Display for StickyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = if self.write { "write" } else { "read" };
        write!(f, "{} {dir} at {:#010x}: {}", self.size, self.address, self.reason)
    }
}

/// Traffic counters (what probe-rs did against the model).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DapStats {
    pub dp_reads: u64,
    pub dp_writes: u64,
    pub ap_reads: u64,
    pub ap_writes: u64,
    /// Memory accesses (DRW/BDx) performed on the bus.
    pub memory_accesses: u64,
    /// Messages to the board thread.
    pub transfers: u64,
    pub line_resets: u64,
    pub sticky_errors: u64,
    pub last_sticky: Option<StickyFault>,
    /// Register accesses per name ("DP.CTRL/STAT", "AP.CSW", ...), reads and writes together.
    pub registers: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Dp,
    Ap,
}

#[derive(Clone, Copy, Debug)]
struct Dp {
    /// False after power-on and after a line reset until DPIDR is read (B4.3.3).
    connected: bool,
    /// SWDIO-high cycles seen in a row (line reset detection).
    ones: u32,
    ctrl: u32,
    sticky_err: bool,
    read_ok: bool,
    select: u32,
    dlcr: u32,
    rdbuff: u32,
}

impl Dp {
    fn power_on() -> Self {
        // DLCR reset: bit 6 is RES1 (B2.2.4).
        Dp { connected: false, ones: 0, ctrl: 0, sticky_err: false, read_ok: false, select: 0, dlcr: 0x40, rdbuff: 0 }
    }
    fn powered_up(&self) -> bool {
        self.ctrl & (CDBGPWRUPREQ | CSYSPWRUPREQ) == (CDBGPWRUPREQ | CSYSPWRUPREQ)
    }
    /// CTRL/STAT as read: the acknowledges follow the requests at once (the STM32 debug power
    /// domains are on whenever VDD is).
    fn ctrl_stat(&self) -> u32 {
        let mut v = self.ctrl;
        v |= (self.ctrl & CDBGRSTREQ) << 1;
        v |= (self.ctrl & CDBGPWRUPREQ) << 1;
        v |= (self.ctrl & CSYSPWRUPREQ) << 1;
        if self.sticky_err {
            v |= STICKYERR;
        }
        if self.read_ok {
            v |= READOK;
        }
        v
    }
}

#[derive(Clone, Copy, Debug)]
struct Ap {
    /// CSW[31:24] (DbgSwEnable, HNONSEC, MasterType, HPROT): stored as written.
    prot: u32,
    addr_inc: u32,
    size: u32,
    tar: u32,
}

impl Ap {
    fn reset() -> Self {
        // CSW reset: HPROT data + privileged, byte size, no increment (an IMPLEMENTATION DEFINED
        // value in ADIv5.2 C2.6.4; probe-rs reads and rewrites the whole register).
        Ap { prot: 0x0300_0000, addr_inc: 0, size: 0, tar: 0 }
    }
}

/// The SW-DP with its AHB-AP.
pub struct Dap {
    cfg: DapConfig,
    dp: Dp,
    ap: Ap,
    pub stats: DapStats,
}

fn size_of(csw_size: u32) -> Option<Size> {
    match csw_size {
        0 => Some(Size::Byte),
        1 => Some(Size::Half),
        2 => Some(Size::Word),
        _ => None,
    }
}

fn size_name(size: Size) -> &'static str {
    match size {
        Size::Byte => "byte",
        Size::Half => "halfword",
        Size::Word => "word",
    }
}

fn dp_name(a: u8, read: bool, bank: u32) -> &'static str {
    match (a, read) {
        (0x0, true) => "DP.DPIDR",
        (0x0, false) => "DP.ABORT",
        (0x4, _) if bank == 1 => "DP.DLCR",
        (0x4, _) => "DP.CTRL/STAT",
        (0x8, true) => "DP.RESEND",
        (0x8, false) => "DP.SELECT",
        (_, true) => "DP.RDBUFF",
        (_, false) => "DP.TARGETSEL",
    }
}

fn ap_name(reg: u32) -> &'static str {
    match reg {
        0x00 => "AP.CSW",
        0x04 => "AP.TAR",
        0x0C => "AP.DRW",
        0x10..=0x1C => "AP.BDx",
        0xF4 => "AP.CFG",
        0xF8 => "AP.BASE",
        0xFC => "AP.IDR",
        _ => "AP.reserved",
    }
}

/// One memory access the AP is about to make.
#[derive(Clone, Copy, Debug)]
struct Access {
    addr: u32,
    size: Size,
    write: bool,
}

enum Prepared {
    Bus(DebugOp),
    /// Served by the AP itself (the ST ROM table): the 32-bit word at the aligned address.
    Local(u32),
}

impl Dap {
    pub fn new(cfg: DapConfig) -> Self {
        Dap { cfg, dp: Dp::power_on(), ap: Ap::reset(), stats: DapStats::default() }
    }

    pub fn config(&self) -> &DapConfig {
        &self.cfg
    }

    fn count(&mut self, name: &'static str) {
        *self.stats.registers.entry(name).or_default() += 1;
    }

    /// Bits clocked out with SWDIO driven (LSB first), as DAP_SWJ_Sequence sends them. Only the
    /// line reset matters to a SW-DP (the JTAG-to-SWD switch code is for SWJ-DPs; the M0+ DAP of
    /// the G0 is SW-DP only and ignores it).
    pub fn swj_sequence(&mut self, bit_len: u8, bits: u64) {
        for i in 0..bit_len.min(64) {
            if bits >> i & 1 == 1 {
                self.dp.ones += 1;
                if self.dp.ones == 50 {
                    self.dp.connected = false;
                    self.stats.line_resets += 1;
                }
            } else {
                self.dp.ones = 0;
            }
        }
    }

    /// Everything back to its power-on state (the board lost power).
    fn power_on_reset(&mut self) {
        self.dp = Dp::power_on();
        self.ap = Ap::reset();
    }

    /// Sample the link: `None` when the DP cannot answer (the transaction gets no acknowledge).
    fn link_up<L: Link>(&mut self, link: &mut L) -> Result<Option<bool>, VirtualProbeError> {
        match link.link()? {
            DapLink::Off | DapLink::Disabled(_) => {
                self.power_on_reset();
                Ok(None)
            }
            DapLink::Up { device_enabled, .. } => Ok(Some(device_enabled)),
        }
    }

    /// Read register A[3:2] = `a` of the DP or of the AP selected by SELECT.
    pub fn read<L: Link>(&mut self, link: &mut L, port: Port, a: u8) -> Result<Ack, VirtualProbeError> {
        let a = a & 0xC;
        match port {
            Port::Dp => {
                self.stats.dp_reads += 1;
                self.count(dp_name(a, true, self.dp.select & 0xF));
                if self.link_up(link)?.is_none() {
                    return Ok(Ack::NoAck);
                }
                if !self.dp.connected {
                    if a != 0 {
                        return Ok(Ack::NoAck);
                    }
                    self.dp.connected = true;
                }
                Ok(match a {
                    0x0 => Ack::Ok(self.cfg.dpidr),
                    0x4 => match self.dp.select & 0xF {
                        0 => Ack::Ok(self.dp.ctrl_stat()),
                        1 => Ack::Ok(self.dp.dlcr),
                        // DPv1 has banks 0 and 1 only; the others read as zero here.
                        _ => Ack::Ok(0),
                    },
                    // RESEND and RDBUFF: the last AP read's data (the model completes AP reads at
                    // once, so both repeat it).
                    _ if self.dp.sticky_err => Ack::Fault,
                    _ => {
                        self.dp.read_ok = true;
                        Ack::Ok(self.dp.rdbuff)
                    }
                })
            }
            Port::Ap => {
                self.stats.ap_reads += 1;
                let reg = self.ap_reg(a);
                self.count(ap_name(reg));
                match self.ap_check() {
                    Some(ack) => Ok(ack),
                    None => self.ap_read(link, reg),
                }
            }
        }
    }

    pub fn write<L: Link>(&mut self, link: &mut L, port: Port, a: u8, value: u32) -> Result<Ack, VirtualProbeError> {
        let a = a & 0xC;
        match port {
            Port::Dp => {
                self.stats.dp_writes += 1;
                self.count(dp_name(a, false, self.dp.select & 0xF));
                if !self.dp.connected {
                    return Ok(Ack::NoAck);
                }
                match a {
                    // ABORT: DAPABORT has nothing to abort (no transaction stays pending);
                    // STKCMPCLR, WDERRCLR, ORUNERRCLR clear flags this DP never sets.
                    0x0 if value & STKERRCLR != 0 => self.dp.sticky_err = false,
                    0x0 => {}
                    0x4 => match self.dp.select & 0xF {
                        0 => self.dp.ctrl = value & CTRL_WRITABLE,
                        1 => self.dp.dlcr = value & 0x300 | 0x40,
                        _ => {}
                    },
                    0x8 => self.dp.select = value,
                    // TARGETSEL exists on DPv2 only.
                    _ => {}
                }
                Ok(Ack::Ok(0))
            }
            Port::Ap => {
                self.stats.ap_writes += 1;
                let reg = self.ap_reg(a);
                self.count(ap_name(reg));
                match self.ap_check() {
                    Some(ack) => Ok(ack),
                    None => self.ap_write(link, reg, value),
                }
            }
        }
    }

    /// A block of reads of one register (DAP_TransferBlock): DRW reads are one transfer.
    pub fn read_block<L: Link>(
        &mut self,
        link: &mut L,
        port: Port,
        a: u8,
        out: &mut [u32],
    ) -> Result<Ack, VirtualProbeError> {
        if port == Port::Ap && a & 0xC == 0xC && self.ap_reg(a) == 0x0C && out.len() > 1 {
            self.stats.ap_reads += out.len() as u64;
            *self.stats.registers.entry("AP.DRW").or_default() += out.len() as u64;
            if let Some(ack) = self.ap_check() {
                return Ok(ack);
            }
            return self.drw_block(link, out.len(), None).map(|r| match r {
                Ok(values) => {
                    out.copy_from_slice(&values);
                    Ack::Ok(0)
                }
                Err(ack) => ack,
            });
        }
        for v in out.iter_mut() {
            match self.read(link, port, a)? {
                Ack::Ok(x) => *v = x,
                other => return Ok(other),
            }
        }
        Ok(Ack::Ok(0))
    }

    pub fn write_block<L: Link>(
        &mut self,
        link: &mut L,
        port: Port,
        a: u8,
        values: &[u32],
    ) -> Result<Ack, VirtualProbeError> {
        if port == Port::Ap && a & 0xC == 0xC && self.ap_reg(a) == 0x0C && values.len() > 1 {
            self.stats.ap_writes += values.len() as u64;
            *self.stats.registers.entry("AP.DRW").or_default() += values.len() as u64;
            if let Some(ack) = self.ap_check() {
                return Ok(ack);
            }
            return self.drw_block(link, values.len(), Some(values)).map(|r| r.err().unwrap_or(Ack::Ok(0)));
        }
        for v in values {
            match self.write(link, port, a, *v)? {
                Ack::Ok(_) => {}
                other => return Ok(other),
            }
        }
        Ok(Ack::Ok(0))
    }

    /// The AP register an access with A[3:2] = `a` reaches: SELECT.APBANKSEL selects the bank.
    fn ap_reg(&self, a: u8) -> u32 {
        (self.dp.select & 0xF0) | (a as u32 & 0xC)
    }

    fn apsel(&self) -> u32 {
        self.dp.select >> 24
    }

    /// Conditions under which an AP access does not reach the AP: no answer before the DPIDR read,
    /// FAULT while STICKYERR is set or while the debug domain is not powered up.
    fn ap_check(&mut self) -> Option<Ack> {
        if !self.dp.connected {
            return Some(Ack::NoAck);
        }
        if self.dp.sticky_err {
            return Some(Ack::Fault);
        }
        if !self.dp.powered_up() {
            // ADIv5.2 leaves AP accesses without debug power IMPLEMENTATION DEFINED; here they fail.
            self.set_sticky(None, "AP access with the debug power domain down (CTRL/STAT power-up not requested)");
            return Some(Ack::Fault);
        }
        None
    }

    fn set_sticky(&mut self, access: Option<Access>, reason: impl Into<String>) {
        self.dp.sticky_err = true;
        self.dp.read_ok = false;
        self.stats.sticky_errors += 1;
        let reason = reason.into();
        let fault = match access {
            Some(a) => StickyFault { address: a.addr, size: size_name(a.size), write: a.write, reason },
            None => StickyFault { address: self.ap.tar, size: "-", write: false, reason },
        };
        tracing::warn!(target: "hil_virtual_probe", "STICKYERR: {fault}");
        self.stats.last_sticky = Some(fault);
    }

    fn csw(&self, device_enabled: bool) -> u32 {
        self.ap.prot | (device_enabled as u32) << 6 | self.ap.addr_inc << 4 | self.ap.size
    }

    fn base(&self) -> u32 {
        match self.cfg.rom_table {
            RomTable::St => ST_ROM_TABLE | 3,
            RomTable::CoreOnly => CORE_ROM_TABLE | 3,
        }
    }

    fn ap_read<L: Link>(&mut self, link: &mut L, reg: u32) -> Result<Ack, VirtualProbeError> {
        if self.apsel() != 0 {
            return Ok(self.read_done(0));
        }
        let v = match reg {
            0x00 => match self.link_up(link)? {
                None => return Ok(Ack::NoAck),
                Some(enabled) => self.csw(enabled),
            },
            0x04 => self.ap.tar,
            0x0C => {
                return self.drw_block(link, 1, None).map(|r| match r {
                    Ok(v) => Ack::Ok(v[0]),
                    Err(ack) => ack,
                });
            }
            0x10..=0x1C => return self.banked(link, reg, None),
            0xF4 => 0,
            0xF8 => self.base(),
            0xFC => self.cfg.ap_idr,
            _ => 0,
        };
        Ok(self.read_done(v))
    }

    fn read_done(&mut self, v: u32) -> Ack {
        self.dp.rdbuff = v;
        self.dp.read_ok = true;
        Ack::Ok(v)
    }

    fn ap_write<L: Link>(&mut self, link: &mut L, reg: u32, value: u32) -> Result<Ack, VirtualProbeError> {
        if self.apsel() != 0 {
            return Ok(Ack::Ok(0));
        }
        match reg {
            0x00 => {
                self.ap.prot = value & 0xFF00_0000;
                // Reserved Size values and packed increment (not implemented by this AP) are
                // ignored: the fields keep their value (an assumption; ADIv5.2 C2.6.4 leaves
                // unsupported sizes IMPLEMENTATION DEFINED).
                if size_of(value & 7).is_some() {
                    self.ap.size = value & 7;
                }
                if (value >> 4) & 3 <= 1 {
                    self.ap.addr_inc = (value >> 4) & 3;
                }
            }
            0x04 => self.ap.tar = value,
            0x0C => {
                return self.drw_block(link, 1, Some(&[value])).map(|r| r.err().unwrap_or(Ack::Ok(0)));
            }
            0x10..=0x1C => return self.banked(link, reg, Some(value)),
            // CFG, BASE, IDR are read-only.
            _ => {}
        }
        Ok(Ack::Ok(0))
    }

    /// Prepare the bus operation for one access at `addr` (`data`: the DRW value of a write).
    fn prepare(&self, addr: u32, size: Size, data: Option<u32>) -> Result<Prepared, (Access, String)> {
        let access = Access { addr, size, write: data.is_some() };
        if addr & (size.bytes() - 1) != 0 {
            // AHB transfers are naturally aligned; an unaligned TAR for the size faults here
            // (ADIv5.2 C2.2.6 makes it UNPREDICTABLE).
            return Err((access, format!("{} access at an unaligned TAR", size_name(size))));
        }
        let lane = 8 * (addr & 3);
        if self.cfg.rom_table == RomTable::St && addr & !0xFFF == ST_ROM_TABLE {
            let word = if data.is_some() { 0 } else { st_rom_word(self.cfg.dev_id, addr & 0xFFC) };
            return Ok(Prepared::Local(word));
        }
        Ok(Prepared::Bus(match data {
            None => DebugOp::Read { addr, size },
            Some(d) => DebugOp::Write { addr, size, value: (d >> lane) & size.mask() },
        }))
    }

    fn next_tar(&self, tar: u32, size: Size) -> u32 {
        if self.ap.addr_inc == 0 {
            return tar;
        }
        match self.cfg.tar_increment {
            TarIncrement::Linear => tar.wrapping_add(size.bytes()),
            TarIncrement::Wrap1K => (tar & !0x3FF) | (tar.wrapping_add(size.bytes()) & 0x3FF),
        }
    }

    /// `count` DRW accesses from TAR on (writes when `data` is given), as one transfer. Returns
    /// the DRW values read, or the acknowledge of the access that failed.
    fn drw_block<L: Link>(
        &mut self,
        link: &mut L,
        count: usize,
        data: Option<&[u32]>,
    ) -> Result<Result<Vec<u32>, Ack>, VirtualProbeError> {
        let Some(size) = size_of(self.ap.size) else {
            let a = Access { addr: self.ap.tar, size: Size::Word, write: data.is_some() };
            self.set_sticky(Some(a), format!("CSW.Size = {} is not supported by this AP", self.ap.size));
            return Ok(Err(Ack::Fault));
        };
        // Plan the accesses and where TAR goes.
        let mut plan = Vec::with_capacity(count);
        let mut tar = self.ap.tar;
        for i in 0..count {
            match self.prepare(tar, size, data.map(|d| d[i])) {
                Ok(p) => plan.push((tar, p)),
                Err((a, why)) => {
                    // Perform what precedes the bad access, then fail it.
                    let done = self.perform(link, &plan, size, data.is_some())?;
                    return Ok(match done {
                        Ok(_) => {
                            self.ap.tar = tar;
                            self.set_sticky(Some(a), why);
                            Err(Ack::Fault)
                        }
                        Err(ack) => Err(ack),
                    });
                }
            }
            tar = self.next_tar(tar, size);
        }
        let r = self.perform(link, &plan, size, data.is_some())?;
        if r.is_ok() {
            self.ap.tar = tar;
        }
        if let Ok(values) = &r
            && let Some(last) = values.last()
            && data.is_none()
        {
            self.dp.rdbuff = *last;
            self.dp.read_ok = true;
        }
        Ok(r)
    }

    /// Run planned accesses: bus ones in one transfer, local ones in place. On a failure TAR is
    /// left at the failing address (the increment happens on success only).
    fn perform<L: Link>(
        &mut self,
        link: &mut L,
        plan: &[(u32, Prepared)],
        size: Size,
        write: bool,
    ) -> Result<Result<Vec<u32>, Ack>, VirtualProbeError> {
        let ops: Vec<DebugOp> = plan
            .iter()
            .filter_map(|(_, p)| match p {
                Prepared::Bus(op) => Some(*op),
                Prepared::Local(_) => None,
            })
            .collect();
        let outcome = if ops.is_empty() {
            TransferOutcome { values: Vec::new(), error: None }
        } else {
            self.stats.transfers += 1;
            link.transfer(ops)?
        };
        self.stats.memory_accesses += outcome.values.len() as u64 + outcome.error.is_some() as u64;
        let mut bus_values = outcome.values.into_iter();
        let mut out = Vec::with_capacity(plan.len());
        let mut bus_index = 0usize;
        for (addr, p) in plan {
            let lane = 8 * (addr & 3);
            match p {
                Prepared::Local(word) => {
                    let v = if write { 0 } else { ((word >> lane) & size.mask()) << lane };
                    out.push(v);
                }
                Prepared::Bus(_) => {
                    if let Some((i, e)) = &outcome.error
                        && *i == bus_index
                    {
                        self.ap.tar = *addr;
                        let access = Access { addr: *addr, size, write };
                        if matches!(e, BoardError::PoweredOff { .. }) {
                            self.power_on_reset();
                            return Ok(Err(Ack::NoAck));
                        }
                        if !is_target_error(e) {
                            return Err(VirtualProbeError::Link {
                                board: link.board().to_string(),
                                what: "memory access",
                                source: Box::new(e.clone()),
                            });
                        }
                        self.set_sticky(Some(access), e.to_string());
                        return Ok(Err(Ack::Fault));
                    }
                    let v = bus_values.next().unwrap_or(0);
                    out.push(if write { 0 } else { (v & size.mask()) << lane });
                    bus_index += 1;
                }
            }
        }
        Ok(Ok(out))
    }

    /// BD0-BD3: the word-aligned block of TAR[31:4], no increment (ADIv5.2 C2.6.2).
    fn banked<L: Link>(&mut self, link: &mut L, reg: u32, data: Option<u32>) -> Result<Ack, VirtualProbeError> {
        let saved = (self.ap.tar, self.ap.addr_inc);
        self.ap.tar = (self.ap.tar & !0xF) | (reg & 0xC) | (self.ap.tar & 3);
        self.ap.addr_inc = 0;
        let r = self.drw_block(link, 1, data.as_ref().map(std::slice::from_ref));
        // BDx accesses never move TAR.
        let failed_at = self.ap.tar;
        (self.ap.tar, self.ap.addr_inc) = saved;
        let r = r?;
        if r.is_err() {
            tracing::debug!(target: "hil_virtual_probe", "BD access at {failed_at:#010x} failed");
        }
        Ok(match r {
            Ok(v) => {
                if data.is_none() {
                    self.read_done(v[0])
                } else {
                    Ack::Ok(0)
                }
            }
            Err(ack) => ack,
        })
    }

    /// The sticky error flag (for the driver's error handling).
    pub fn sticky(&self) -> bool {
        self.dp.sticky_err
    }
}

/// Errors the target answers with FAULT; the others are failures of the link to the board.
fn is_target_error(e: &BoardError) -> bool {
    matches!(e, BoardError::Bus { .. } | BoardError::DebugRefused { .. } | BoardError::InReset { .. })
}

/// A word of the STM32 system ROM table (CoreSight ROM table, ARM IHI 0029 D5; class 0x1).
/// Entry 0 points at the Cortex-M0+ ROM table (offset 0xF00FF000 from 0xF0000000 wraps to
/// 0xE00FF000); the peripheral ID names ST (JEP106 bank 0, code 0x20) and the part DEV_ID.
pub fn st_rom_word(dev_id: u16, offset: u32) -> u32 {
    let part = dev_id as u32 & 0xFFF;
    const ST_JEP106: u32 = 0x20;
    match offset {
        0x000 => CORE_ROM_TABLE.wrapping_sub(ST_ROM_TABLE) | 3,
        // MEMTYPE.SYSMEM: system memory is also on this bus.
        0xFCC => 1,
        // PIDR4: 4 KiB, JEP106 continuation code 0.
        0xFD0 => 0x00,
        0xFE0 => part & 0xFF,
        0xFE4 => (part >> 8) | (ST_JEP106 & 0xF) << 4,
        // PIDR2: JEP106 id[6:4], JEDEC bit, revision 0.
        0xFE8 => (ST_JEP106 >> 4) & 7 | 1 << 3,
        0xFF0 => 0x0D,
        0xFF4 => 0x10,
        0xFF8 => 0x05,
        0xFFC => 0xB1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A link to a plain memory: RAM at 0x20000000..0x20007F00, faults elsewhere.
    struct Mem {
        words: HashMap<u32, u32>,
        link: DapLink,
        transfers: usize,
    }

    impl Mem {
        fn new() -> Self {
            Mem { words: HashMap::new(), link: DapLink::Up { nrst_low: false, device_enabled: true }, transfers: 0 }
        }
    }

    impl Link for Mem {
        fn board(&self) -> &str {
            "mem"
        }
        fn link(&mut self) -> Result<DapLink, VirtualProbeError> {
            Ok(self.link.clone())
        }
        fn transfer(&mut self, ops: Vec<DebugOp>) -> Result<TransferOutcome, VirtualProbeError> {
            self.transfers += 1;
            let mut values = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                let (addr, size) = match op {
                    DebugOp::Read { addr, size } | DebugOp::Write { addr, size, .. } => (addr, size),
                };
                if !(0x2000_0000..0x2000_7F00).contains(&addr) {
                    let fault = hil_cortex_m::BusFault::new(addr, size, hil_cortex_m::BusFaultKind::Unmapped);
                    return Ok(TransferOutcome {
                        values,
                        error: Some((i, BoardError::Bus { board: "m".into(), fault })),
                    });
                }
                let w = self.words.entry(addr & !3).or_insert(0);
                let lane = 8 * (addr & 3);
                match op {
                    DebugOp::Read { .. } => values.push((*w >> lane) & size.mask()),
                    DebugOp::Write { value, .. } => {
                        *w = (*w & !(size.mask() << lane)) | (value & size.mask()) << lane;
                        values.push(0);
                    }
                }
            }
            Ok(TransferOutcome { values, error: None })
        }
    }

    fn connected() -> (Dap, Mem) {
        let mut d = Dap::new(DapConfig::stm32_m0plus(0x460));
        let mut m = Mem::new();
        d.swj_sequence(51, 0x0007_FFFF_FFFF_FFFF);
        assert_eq!(d.read(&mut m, Port::Dp, 0).unwrap(), Ack::Ok(DPIDR_M0PLUS));
        d.write(&mut m, Port::Dp, 0x8, 0).unwrap();
        d.write(&mut m, Port::Dp, 0x4, 0x5000_0000).unwrap();
        (d, m)
    }

    fn ap_write(d: &mut Dap, m: &mut Mem, reg: u32, v: u32) -> Ack {
        d.write(m, Port::Dp, 0x8, reg & 0xF0).unwrap();
        d.write(m, Port::Ap, (reg & 0xC) as u8, v).unwrap()
    }
    fn ap_read(d: &mut Dap, m: &mut Mem, reg: u32) -> Ack {
        d.write(m, Port::Dp, 0x8, reg & 0xF0).unwrap();
        d.read(m, Port::Ap, (reg & 0xC) as u8).unwrap()
    }

    #[test]
    fn only_dpidr_answers_before_connect_and_after_a_line_reset() {
        let mut d = Dap::new(DapConfig::stm32_m0plus(0x460));
        let mut m = Mem::new();
        assert_eq!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::NoAck, "power-on: no answer before DPIDR");
        assert_eq!(d.read(&mut m, Port::Dp, 0x0).unwrap(), Ack::Ok(DPIDR_M0PLUS));
        assert!(matches!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::Ok(_)));
        // 0xE79E (JTAG-to-SWD) does not disturb a SW-DP; 50 ones do.
        d.swj_sequence(16, 0xE79E);
        assert!(matches!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::Ok(_)));
        // The wire is continuous: the switch code ended with three ones.
        d.swj_sequence(47, (1 << 47) - 1);
        assert_eq!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::NoAck, "3 + 47 ones are a line reset");
        assert_eq!(d.read(&mut m, Port::Dp, 0x0).unwrap(), Ack::Ok(DPIDR_M0PLUS));
        d.swj_sequence(2, 0);
        d.swj_sequence(49, (1 << 49) - 1);
        assert!(matches!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::Ok(_)), "49 ones are no line reset");
        d.swj_sequence(51, 0x0007_FFFF_FFFF_FFFF);
        assert_eq!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::NoAck);
        assert_eq!(d.stats.line_resets, 2);
    }

    #[test]
    fn power_up_handshake_and_power_loss() {
        let (mut d, mut m) = connected();
        assert_eq!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::Ok(0xF000_0000), "both ACKs follow the REQs");
        d.write(&mut m, Port::Dp, 0x4, 0).unwrap();
        assert_eq!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::Ok(0));
        // AP access with the domains down: FAULT and STICKYERR.
        assert_eq!(d.read(&mut m, Port::Ap, 0xC).unwrap(), Ack::Fault);
        assert_eq!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::Ok(STICKYERR));
        m.link = DapLink::Off;
        assert_eq!(d.read(&mut m, Port::Dp, 0x0).unwrap(), Ack::NoAck);
        m.link = DapLink::Up { nrst_low: false, device_enabled: true };
        assert_eq!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::NoAck, "power loss: connect again");
    }

    #[test]
    fn identification_and_nonexistent_aps() {
        let (mut d, mut m) = connected();
        assert_eq!(ap_read(&mut d, &mut m, 0xFC), Ack::Ok(AHB_AP_IDR_M0PLUS));
        assert_eq!(ap_read(&mut d, &mut m, 0xF8), Ack::Ok(0xF000_0003));
        assert_eq!(ap_read(&mut d, &mut m, 0xF4), Ack::Ok(0));
        d.write(&mut m, Port::Dp, 0x8, 1 << 24 | 0xF0).unwrap();
        assert_eq!(d.read(&mut m, Port::Ap, 0xC).unwrap(), Ack::Ok(0), "AP 1 does not exist: IDR reads 0");
        // The ST ROM table through DRW: designer ST (0x20), part 0x460, class 1, one entry.
        d.write(&mut m, Port::Dp, 0x8, 0).unwrap();
        ap_write(&mut d, &mut m, 0x00, 0x2300_0012);
        let rd = |d: &mut Dap, m: &mut Mem, a: u32| {
            ap_write(d, m, 0x04, a);
            match ap_read(d, m, 0x0C) {
                Ack::Ok(v) => v,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(rd(&mut d, &mut m, 0xF000_0000), 0xF00F_F003);
        assert_eq!(rd(&mut d, &mut m, 0xF000_0004), 0);
        let pid = [0xFE0, 0xFE4, 0xFE8, 0xFEC].map(|o| rd(&mut d, &mut m, 0xF000_0000 + o));
        assert_eq!(pid, [0x60, 0x04, 0x0A, 0x00]);
        assert_eq!(rd(&mut d, &mut m, 0xF000_0FF4), 0x10);
        assert_eq!(m.transfers, 0, "the ROM table is the AP's own");
    }

    #[test]
    fn csw_sizes_byte_lanes_and_tar_increment() {
        let (mut d, mut m) = connected();
        // CSW as probe-rs writes it for words: DeviceEn reads back set.
        ap_write(&mut d, &mut m, 0x00, 0xEB00_0012);
        assert_eq!(ap_read(&mut d, &mut m, 0x00), Ack::Ok(0xEB00_0052));
        ap_write(&mut d, &mut m, 0x04, 0x2000_0000);
        ap_write(&mut d, &mut m, 0x0C, 0x4433_2211);
        ap_write(&mut d, &mut m, 0x0C, 0x8877_6655);
        assert_eq!(ap_read(&mut d, &mut m, 0x04), Ack::Ok(0x2000_0008), "single increment by 4");
        // Bytes: the lane follows TAR[1:0] (C2.2.6).
        ap_write(&mut d, &mut m, 0x00, 0xEB00_0010);
        ap_write(&mut d, &mut m, 0x04, 0x2000_0001);
        assert_eq!(ap_read(&mut d, &mut m, 0x0C), Ack::Ok(0x0000_2200));
        assert_eq!(ap_read(&mut d, &mut m, 0x0C), Ack::Ok(0x0033_0000));
        ap_write(&mut d, &mut m, 0x04, 0x2000_0006);
        ap_write(&mut d, &mut m, 0x0C, 0xAB00_0000 | 0x00CD_0000);
        assert_eq!(m.words[&0x2000_0004], 0x88CD_6655, "only lane 2 written");
        // Halfwords.
        ap_write(&mut d, &mut m, 0x00, 0xEB00_0011);
        ap_write(&mut d, &mut m, 0x04, 0x2000_0002);
        assert_eq!(ap_read(&mut d, &mut m, 0x0C), Ack::Ok(0x4433_0000));
        // Reserved size: ignored.
        ap_write(&mut d, &mut m, 0x00, 0xEB00_0013);
        assert_eq!(ap_read(&mut d, &mut m, 0x00), Ack::Ok(0xEB00_0051));
        // Increment wraps inside the 1 KiB block.
        ap_write(&mut d, &mut m, 0x00, 0xEB00_0012);
        ap_write(&mut d, &mut m, 0x04, 0x2000_03FC);
        ap_read(&mut d, &mut m, 0x0C);
        assert_eq!(ap_read(&mut d, &mut m, 0x04), Ack::Ok(0x2000_0000));
        // Banked data: TAR[31:4] + 4n, TAR unchanged.
        ap_write(&mut d, &mut m, 0x04, 0x2000_0000);
        assert_eq!(ap_read(&mut d, &mut m, 0x14), Ack::Ok(0x88CD_6655));
        assert_eq!(ap_read(&mut d, &mut m, 0x04), Ack::Ok(0x2000_0000));
    }

    #[test]
    fn block_transfers_are_one_message_and_stop_at_a_fault() {
        let (mut d, mut m) = connected();
        ap_write(&mut d, &mut m, 0x00, 0xEB00_0012);
        ap_write(&mut d, &mut m, 0x04, 0x2000_0000);
        let words: Vec<u32> = (0..256).collect();
        assert_eq!(d.write_block(&mut m, Port::Ap, 0xC, &words).unwrap(), Ack::Ok(0));
        assert_eq!(m.transfers, 1);
        ap_write(&mut d, &mut m, 0x04, 0x2000_0000);
        let mut back = vec![0; 256];
        assert_eq!(d.read_block(&mut m, Port::Ap, 0xC, &mut back).unwrap(), Ack::Ok(0));
        assert_eq!(back, words);
        // Across the end of RAM: the fault stops the block; TAR holds the failing address.
        ap_write(&mut d, &mut m, 0x04, 0x2000_7EF8);
        let mut three = vec![0; 3];
        assert_eq!(d.read_block(&mut m, Port::Ap, 0xC, &mut three).unwrap(), Ack::Fault);
        let sticky = d.stats.last_sticky.clone().unwrap();
        assert_eq!((sticky.address, sticky.write), (0x2000_7F00, false));
        assert!(sticky.reason.contains("0x20007f00"), "{sticky:?}");
        // STICKYERR blocks further AP accesses until ABORT.STKERRCLR.
        let before = m.transfers;
        assert_eq!(d.read(&mut m, Port::Ap, 0xC).unwrap(), Ack::Fault);
        assert_eq!(m.transfers, before, "nothing reaches the bus");
        assert_eq!(d.read(&mut m, Port::Dp, 0x4).unwrap(), Ack::Ok(0xF000_0000 | STICKYERR));
        d.write(&mut m, Port::Dp, 0x0, STKERRCLR).unwrap();
        assert_eq!(ap_read(&mut d, &mut m, 0x04), Ack::Ok(0x2000_7F00));
    }

    #[test]
    fn the_debug_port_identity_comes_from_the_chip_data() {
        let f103 = DapConfig::for_chip(hil_chips::Chip::by_name("STM32F103CB").unwrap());
        assert_eq!((f103.dpidr, f103.ap_idr, f103.rom_table), (0x1BA0_1477, 0x1477_0011, RomTable::CoreOnly));
        let g071 = DapConfig::for_chip(hil_chips::Chip::by_name("STM32G071RB").unwrap());
        assert_eq!((g071.dpidr, g071.ap_idr, g071.rom_table), (DPIDR_M0PLUS, AHB_AP_IDR_M0PLUS, RomTable::St));
        assert_eq!(g071.dev_id, 0x460);
    }
}
