//! Board state that several peripherals need (devices never call each other): RCC clock enables
//! and frequencies, the option bytes the flash controller loaded, pin levels, debug state,
//! fault injection, and the queues the board thread drains (UART output, pin changes).

use hil_chips::{BootTarget, Chip, ClockGate, PinId};
use hil_cortex_m::{ResetCause, VirtualTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{FaultConfig, Quirks, UartFaults};
use crate::error::BoardError;

/// RCC registers that hold clock-enable or reset bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GateReg {
    IopEnr,
    AhbEnr,
    ApbEnr1,
    ApbEnr2,
    IopRstr,
    AhbRstr,
    ApbRstr1,
    ApbRstr2,
    /// STM32F1 names (RM0008 7.3.4-7.3.8): APB1 in slot 2, APB2 in slot 3 like the G0's
    /// APBENR1 / APBENR2, AHBENR in slot 1.
    Apb1EnrF1,
    Apb2EnrF1,
    Apb1RstrF1,
    Apb2RstrF1,
    /// STM32G4 names (RM0440 7.4.9-7.4.20): AHB2 (GPIO) in the IOP slot 0, AHB1 in slot 1,
    /// APB1 (ENR1) in slot 2, APB2 in slot 3.
    Ahb1G4,
    Ahb2G4,
    Apb1G4,
}

impl GateReg {
    fn parse(name: &str) -> Option<GateReg> {
        Some(match name {
            "IOPENR" => GateReg::IopEnr,
            "AHBENR" => GateReg::AhbEnr,
            "APBENR1" => GateReg::ApbEnr1,
            "APBENR2" => GateReg::ApbEnr2,
            "IOPRSTR" => GateReg::IopRstr,
            "AHBRSTR" => GateReg::AhbRstr,
            "APBRSTR1" => GateReg::ApbRstr1,
            "APBRSTR2" => GateReg::ApbRstr2,
            "APB1ENR" => GateReg::Apb1EnrF1,
            "APB2ENR" => GateReg::Apb2EnrF1,
            "APB1RSTR" => GateReg::Apb1RstrF1,
            "APB2RSTR" => GateReg::Apb2RstrF1,
            "AHB1ENR" | "AHB1RSTR" => GateReg::Ahb1G4,
            "AHB2ENR" | "AHB2RSTR" => GateReg::Ahb2G4,
            "APB1ENR1" | "APB1RSTR1" => GateReg::Apb1G4,
            _ => return None,
        })
    }
    fn index(self) -> usize {
        match self {
            GateReg::IopEnr | GateReg::IopRstr | GateReg::Ahb2G4 => 0,
            GateReg::AhbEnr | GateReg::AhbRstr | GateReg::Ahb1G4 => 1,
            GateReg::ApbEnr1 | GateReg::ApbRstr1 | GateReg::Apb1EnrF1 | GateReg::Apb1RstrF1 | GateReg::Apb1G4 => 2,
            GateReg::ApbEnr2 | GateReg::ApbRstr2 | GateReg::Apb2EnrF1 | GateReg::Apb2RstrF1 => 3,
        }
    }
}

/// A resolved RCC bit (clock enable or peripheral reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gate {
    pub reg: GateReg,
    pub bit: u8,
}

impl Gate {
    pub fn resolve(chip: &Chip, g: &ClockGate, what: &str) -> Result<Gate, BoardError> {
        let reg = GateReg::parse(&g.register).ok_or_else(|| BoardError::ChipModel {
            chip: chip.name.clone(),
            message: format!("{what}: unknown RCC register {:?} in {:?}", g.register, String::from(g.clone())),
        })?;
        Ok(Gate { reg, bit: g.bit })
    }
}

/// What RCC exposes to the other peripherals.
#[derive(Clone, Debug)]
pub struct RccShared {
    /// IOPENR, AHBENR, APBENR1, APBENR2.
    pub enr: [u32; 4],
    /// Reset pulses seen per RSTR bit (peripherals compare with the count they last saw).
    pub reset_count: [[u32; 32]; 4],
    pub sysclk_hz: u32,
    pub hclk_hz: u32,
    pub pclk_hz: u32,
    /// APB2 clock (STM32F1: USART1's clock, RM0008 7.2); the G0 has one APB (= `pclk_hz`).
    pub pclk2_hz: u32,
    pub hsi16_hz: u32,
    pub lsi_hz: u32,
    /// RCC_CCIPR (USART kernel clock selection).
    pub ccipr: u32,
    /// LSI forced on by the IWDG (RM0444 5.2.6: starting the IWDG starts the LSI).
    pub lsi_forced: bool,
    /// RCC_CSR reset flags (bits 25..31), kept across non-POR resets.
    pub csr_flags: u32,
}

impl RccShared {
    pub fn new(hsi16_hz: u32, lsi_hz: u32) -> Self {
        RccShared {
            enr: [0, 0x100, 0, 0],
            reset_count: [[0; 32]; 4],
            sysclk_hz: hsi16_hz,
            hclk_hz: hsi16_hz,
            pclk_hz: hsi16_hz,
            pclk2_hz: hsi16_hz,
            hsi16_hz,
            lsi_hz,
            ccipr: 0,
            lsi_forced: false,
            csr_flags: 0,
        }
    }
    /// Whether the clock behind `gate` runs (`None`: always clocked).
    pub fn clocked(&self, gate: Option<Gate>) -> bool {
        gate.is_none_or(|g| self.enr[g.reg.index()] & (1 << g.bit) != 0)
    }
    pub fn reset_pulses(&self, gate: Option<Gate>) -> u32 {
        gate.map_or(0, |g| self.reset_count[g.reg.index()][g.bit as usize])
    }
    /// USART kernel clock for the 2-bit selection field at `shift` of RCC_CCIPR
    /// (RM0444 5.4.21: 00 PCLK, 01 SYSCLK, 10 HSI16, 11 LSE).
    pub fn usart_kernel_hz(&self, shift: Option<u8>) -> u32 {
        match shift.map(|s| (self.ccipr >> s) & 3).unwrap_or(0) {
            0 => self.pclk_hz,
            1 => self.sysclk_hz,
            2 => self.hsi16_hz,
            // LSE: no 32.768 kHz crystal on the virtual board, the clock does not run.
            _ => 0,
        }
    }
}

/// Serialize a [`VirtualTime`] as picoseconds since power-on.
pub fn ser_time<S: serde::Serializer>(t: &VirtualTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(t.as_ps())
}

/// RDP level (RM0444 3.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum RdpLevel {
    Level0,
    Level1,
    Level2,
}

/// Option values as last loaded by option byte loading, and the latches the flash controller
/// owns (EMPTY, DBG_SWEN).
#[derive(Clone, Debug)]
pub struct FlashShared {
    /// Register offset -> value loaded at the last OBL (FLASH_OPTR at 0x20, SECR at 0x80 ...).
    pub loaded: std::collections::BTreeMap<u32, u32>,
    pub rdp: RdpLevel,
    /// FLASH_ACR.EMPTY (RM0444 3.3.2): set by OBL from the first flash word, writable.
    pub empty: bool,
    /// FLASH_ACR.DBG_SWEN (RM0444 3.7.1): debugger access enabled.
    pub dbg_swen: bool,
    /// The option word values by name (same data as `loaded`, for boot selection).
    pub words: std::collections::BTreeMap<String, u32>,
}

/// Externally driven pin levels (what the board's wiring applies to each GPIO pin).
#[derive(Clone, Debug, Default)]
pub struct Pins {
    /// Per port: bit n set = pin n driven by the outside world (slot 8: dedicated pins, BOOT0).
    pub driven: [u16; 9],
    /// Per port: level of the driven pins.
    pub level: [u16; 9],
}

/// The slot of a pin's port in [`Pins`].
fn pin_slot(pin: PinId) -> (usize, u16) {
    let p = if pin == PinId::BOOT0 { 8 } else { pin.port as usize & 7 };
    (p, 1u16 << (pin.pin & 15))
}

impl Pins {
    pub fn drive(&mut self, pin: PinId, level: Option<bool>) {
        let (p, b) = pin_slot(pin);
        match level {
            Some(l) => {
                self.driven[p] |= b;
                if l {
                    self.level[p] |= b;
                } else {
                    self.level[p] &= !b;
                }
            }
            None => self.driven[p] &= !b,
        }
    }
    pub fn external(&self, pin: PinId) -> Option<bool> {
        let (p, b) = pin_slot(pin);
        (self.driven[p] & b != 0).then_some(self.level[p] & b != 0)
    }
}

/// Debug-related state shared by DBGMCU, the watchdogs and the board.
#[derive(Clone, Debug, Default)]
pub struct DebugShared {
    /// The core is halted by the debugger (watchdogs with their DBG_xxx_STOP bit freeze).
    pub core_halted: bool,
    /// DBGMCU_CR, APB_FZ1, APB_FZ2 (RM0444 40.4.2-40.4.4).
    pub cr: u32,
    pub apb_fz1: u32,
    pub apb_fz2: u32,
    /// A freeze bit was written: the watchdogs re-evaluate their freeze even if the core's run
    /// state did not change (a debugger sets the bits while the core is halted).
    pub freeze_written: bool,
    /// DBG_IWDG_STOP / DBG_WWDG_STOP as the chip's DBGMCU model holds them (G0: APB_FZ1 bits
    /// 12 / 11; F1: DBGMCU_CR bits 8 / 9).
    pub iwdg_stop: bool,
    pub wwdg_stop: bool,
}

impl DebugShared {
    /// DBG_IWDG_STOP with the core halted.
    pub fn iwdg_frozen(&self) -> bool {
        self.core_halted && self.iwdg_stop
    }
    /// DBG_WWDG_STOP with the core halted.
    pub fn wwdg_frozen(&self) -> bool {
        self.core_halted && self.wwdg_stop
    }
}

/// Boot selection made at the last reset.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BootInfo {
    /// What the core booted from (the 0x00000000 alias after reset).
    pub target: BootTargetName,
    /// What the boot table row selected before the empty check.
    pub table_target: BootTargetName,
    /// The empty check redirected a main-flash boot to system memory.
    pub empty_redirect: bool,
    /// BOOT0 pin level latched at this reset.
    pub boot0: bool,
    /// Inputs of the boot table (BOOT0, nBOOT_SEL, nBOOT0, nBOOT1, BOOT_LOCK) and EMPTY.
    pub inputs: Vec<(String, u8)>,
    pub cause: ResetCauseName,
}

/// Serializable mirror of [`BootTarget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum BootTargetName {
    MainFlash,
    SystemMemory,
    Sram,
}

impl From<BootTarget> for BootTargetName {
    fn from(t: BootTarget) -> Self {
        match t {
            BootTarget::MainFlash => BootTargetName::MainFlash,
            BootTarget::SystemMemory => BootTargetName::SystemMemory,
            BootTarget::Sram => BootTargetName::Sram,
        }
    }
}

/// Serializable mirror of [`ResetCause`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ResetCauseName {
    PowerOn,
    Pin,
    Software,
    IndependentWatchdog,
    WindowWatchdog,
    OptionByteLoad,
    LowPower,
}

impl From<ResetCause> for ResetCauseName {
    fn from(c: ResetCause) -> Self {
        match c {
            ResetCause::PowerOn => ResetCauseName::PowerOn,
            ResetCause::Pin => ResetCauseName::Pin,
            ResetCause::Software => ResetCauseName::Software,
            ResetCause::IndependentWatchdog => ResetCauseName::IndependentWatchdog,
            ResetCause::WindowWatchdog => ResetCauseName::WindowWatchdog,
            ResetCause::OptionByteLoad => ResetCauseName::OptionByteLoad,
            ResetCause::LowPower => ResetCauseName::LowPower,
        }
    }
}

/// A byte a USART finished transmitting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UartOut {
    /// Index of the USART in [`crate::Layout::usarts`].
    pub usart: usize,
    pub byte: u8,
    pub at: VirtualTime,
}

/// An output pin changed level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinChange {
    pub pin: PinId,
    pub level: bool,
    pub at: VirtualTime,
}

/// Access counters a test can use to prove who touched what (e.g. that ST's flash algorithm ran).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub flash_reg_reads_cpu: u64,
    pub flash_reg_writes_cpu: u64,
    pub flash_reg_reads_debug: u64,
    pub flash_reg_writes_debug: u64,
    /// Double words programmed successfully.
    pub flash_programs: u64,
    /// Programs cut by an injected brown-out.
    pub flash_brownouts: u64,
    pub flash_page_erases: u64,
    pub flash_mass_erases: u64,
    pub option_programs: u64,
    /// Bytes the USARTs received from the host side (delivered or lost).
    pub uart_rx_frames: u64,
    pub uart_rx_dropped: u64,
    /// Bytes the USARTs transmitted that a fault dropped or corrupted on the way to the host.
    pub uart_tx_dropped: u64,
    pub uart_tx_corrupted: u64,
    /// DFU class requests a fault stalled or lost before the bootloader saw them.
    pub usb_requests_faulted: u64,
}

/// Fault injection state (seeded, deterministic).
#[derive(Clone, Debug)]
pub struct FaultState {
    pub config: FaultConfig,
    rng: ChaCha8Rng,
    rx_seen: Vec<u64>,
    tx_seen: Vec<u64>,
    dfu_requests_seen: u64,
    programs_started: u64,
    probe_transfers: u64,
}

/// What happens to one frame on a UART wire (either direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxFate {
    Deliver,
    Drop,
    /// Deliver with this XOR mask applied to the data bits.
    Corrupt(u8),
}

/// What happens to one DFU class request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsbFate {
    Deliver,
    Stall,
    Lose,
}

impl FaultState {
    pub fn new(config: FaultConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        FaultState {
            config,
            rng,
            rx_seen: Vec::new(),
            tx_seen: Vec::new(),
            dfu_requests_seen: 0,
            programs_started: 0,
            probe_transfers: 0,
        }
    }
    pub fn set(&mut self, config: FaultConfig) {
        *self = FaultState::new(config);
    }
    /// Decide the fate of the next frame received by USART `name`.
    pub fn rx_fate(&mut self, usart: usize, name: &str) -> RxFate {
        let Some(f) = self.config.uart_rx.get(name).copied() else { return RxFate::Deliver };
        let n = bump(&mut self.rx_seen, usart);
        frame_fate(f, n, &mut self.rng)
    }
    /// Decide the fate of the next frame USART `name` transmits to the host.
    pub fn tx_fate(&mut self, usart: usize, name: &str) -> RxFate {
        let Some(f) = self.config.uart_tx.get(name).copied() else { return RxFate::Deliver };
        let n = bump(&mut self.tx_seen, usart);
        frame_fate(f, n, &mut self.rng)
    }
    /// Decide the fate of the next DFU class request the host submits.
    pub fn dfu_request_fate(&mut self) -> UsbFate {
        let (stall, lose) = (self.config.usb_stall_every, self.config.usb_timeout_every);
        if stall.is_none() && lose.is_none() {
            return UsbFate::Deliver;
        }
        self.dfu_requests_seen += 1;
        let n = self.dfu_requests_seen;
        if stall.is_some_and(|k| k > 0 && n.is_multiple_of(k as u64)) {
            UsbFate::Stall
        } else if lose.is_some_and(|k| k > 0 && n.is_multiple_of(k as u64)) {
            UsbFate::Lose
        } else {
            UsbFate::Deliver
        }
    }
    /// Counts one debug transfer; whether the SWD link is still up.
    pub fn probe_transfer(&mut self) -> bool {
        self.probe_transfers += 1;
        self.config.probe_link_drop_after.is_none_or(|n| self.probe_transfers <= n)
    }
    /// Whether the injected probe-link drop has happened.
    pub fn probe_link_dropped(&self) -> bool {
        self.config.probe_link_drop_after.is_some_and(|n| self.probe_transfers >= n)
    }
    /// Whether the program now starting is the one that browns out (counts every program).
    pub fn program_browns_out(&mut self) -> bool {
        self.programs_started += 1;
        self.config.flash_brownout_at_program == Some(self.programs_started)
    }
    /// Whether programming the double word at `addr` fails (and consumes one `fail_next_programs`).
    pub fn program_fails(&mut self, addr: u32) -> bool {
        if self.config.flash_fail_next_programs > 0 {
            self.config.flash_fail_next_programs -= 1;
            return true;
        }
        self.config.flash_program_fail.iter().any(|r| r.contains(&addr))
    }
}

/// Counts one more frame on USART `usart`'s wire; returns its number (from 1).
fn bump(seen: &mut Vec<u64>, usart: usize) -> u64 {
    if seen.len() <= usart {
        seen.resize(usart + 1, 0);
    }
    seen[usart] += 1;
    seen[usart]
}

/// The fate of frame number `n` under `f`.
fn frame_fate(f: UartFaults, n: u64, rng: &mut ChaCha8Rng) -> RxFate {
    let UartFaults { drop_every, drop_probability, corrupt_every, corrupt_probability, drop_at, corrupt_at } = f;
    if drop_at == Some(n) {
        return RxFate::Drop;
    }
    if corrupt_at == Some(n) {
        return RxFate::Corrupt(1u8 << rng.random_range(0..8));
    }
    if drop_every.is_some_and(|k| k > 0 && n.is_multiple_of(k as u64))
        || (drop_probability > 0.0 && rng.random_bool(drop_probability.clamp(0.0, 1.0)))
    {
        return RxFate::Drop;
    }
    if corrupt_every.is_some_and(|k| k > 0 && n.is_multiple_of(k as u64))
        || (corrupt_probability > 0.0 && rng.random_bool(corrupt_probability.clamp(0.0, 1.0)))
    {
        return RxFate::Corrupt(1u8 << rng.random_range(0..8));
    }
    RxFate::Deliver
}

/// Everything devices share. Owned by the [`hil_cortex_m::System`].
pub struct Shared {
    pub chip: &'static Chip,
    pub quirks: Quirks,
    pub rcc: RccShared,
    pub flash: FlashShared,
    pub pins: Pins,
    pub debug: DebugShared,
    pub faults: FaultState,
    /// Bytes the USARTs transmitted, drained by the board.
    pub uart_out: Vec<UartOut>,
    /// Output level changes of GPIO pins, drained by the board.
    pub pin_changes: Vec<PinChange>,
    /// USB attach / detach changes, drained by the board.
    pub usb_changes: Vec<crate::periph::usb::UsbChange>,
    pub counters: Counters,
    /// Boot selection made at the last reset.
    pub boot: Option<BootInfo>,
    /// Cause of the reset being performed (set by the board before devices reset).
    pub reset_cause: ResetCause,
    /// Unmodelled peripherals already reported (name), so each is traced once.
    pub touched_generic: Vec<String>,
}

impl Shared {
    pub fn new(chip: &'static Chip, quirks: Quirks, faults: FaultConfig) -> Result<Self, BoardError> {
        let clocks = chip
            .clocks
            .as_ref()
            .ok_or_else(|| BoardError::ChipModel { chip: chip.name.clone(), message: "no `clocks` section".into() })?;
        Ok(Shared {
            chip,
            quirks,
            rcc: RccShared::new(clocks.hsi16_hz, clocks.lsi_hz),
            flash: FlashShared {
                loaded: Default::default(),
                rdp: RdpLevel::Level0,
                empty: false,
                dbg_swen: true,
                words: Default::default(),
            },
            pins: Pins::default(),
            debug: DebugShared::default(),
            faults: FaultState::new(faults),
            uart_out: Vec::new(),
            pin_changes: Vec::new(),
            usb_changes: Vec::new(),
            counters: Counters::default(),
            boot: None,
            reset_cause: ResetCause::PowerOn,
            touched_generic: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_deterministic_per_seed() {
        let mut cfg = FaultConfig::default();
        cfg.uart_rx.insert("USART2".into(), UartFaults { drop_every: Some(3), ..Default::default() });
        let mut f = FaultState::new(cfg.clone());
        let fates: Vec<_> = (0..6).map(|_| f.rx_fate(0, "USART2")).collect();
        assert_eq!(fates.iter().filter(|x| **x == RxFate::Drop).count(), 2);
        assert_eq!(fates[2], RxFate::Drop);
        assert_eq!(f.rx_fate(1, "USART1"), RxFate::Deliver);
        cfg.uart_rx.insert("USART2".into(), UartFaults { corrupt_probability: 0.5, ..Default::default() });
        let run = |cfg: &FaultConfig| {
            let mut f = FaultState::new(cfg.clone());
            (0..64).map(|_| f.rx_fate(0, "USART2")).collect::<Vec<_>>()
        };
        assert_eq!(run(&cfg), run(&cfg));
        assert!(run(&cfg).iter().any(|x| matches!(x, RxFate::Corrupt(_))));
    }

    #[test]
    fn each_wire_direction_and_usb_count_their_own_faults() {
        let mut cfg = FaultConfig::default();
        cfg.uart_rx.insert("USART2".into(), UartFaults { drop_every: Some(2), ..Default::default() });
        cfg.uart_tx.insert("USART2".into(), UartFaults { corrupt_every: Some(3), ..Default::default() });
        cfg.usb_stall_every = Some(2);
        cfg.usb_timeout_every = Some(3);
        let mut f = FaultState::new(cfg);
        // Interleaved traffic: the periods count frames of one direction each.
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        for _ in 0..6 {
            rx.push(f.rx_fate(0, "USART2"));
            tx.push(f.tx_fate(0, "USART2"));
        }
        assert_eq!(rx.iter().map(|x| *x == RxFate::Drop).collect::<Vec<_>>(), [false, true, false, true, false, true]);
        assert!(matches!(tx[2], RxFate::Corrupt(m) if m.count_ones() == 1), "{tx:?}");
        assert_eq!(tx.iter().filter(|x| **x != RxFate::Deliver).count(), 2);
        assert_eq!(f.tx_fate(1, "USART1"), RxFate::Deliver);
        let usb: Vec<_> = (0..6).map(|_| f.dfu_request_fate()).collect();
        use UsbFate::*;
        assert_eq!(usb, [Deliver, Stall, Lose, Stall, Deliver, Stall]);
    }

    #[test]
    fn pins_drive_and_release() {
        let mut p = Pins::default();
        let pa14 = PinId::parse("PA14").unwrap();
        assert_eq!(p.external(pa14), None);
        p.drive(pa14, Some(true));
        assert_eq!(p.external(pa14), Some(true));
        p.drive(pa14, Some(false));
        assert_eq!(p.external(pa14), Some(false));
        p.drive(pa14, None);
        assert_eq!(p.external(pa14), None);
    }
}
