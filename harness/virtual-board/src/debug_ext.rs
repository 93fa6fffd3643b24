//! Extensions of the debug port for the simulated probe (hil-virtual-probe).
//!
//! The probe's AHB-AP model needs two things the plain [`crate::DebugPort`] calls do not give:
//! - the state of the physical debug link (powered, disabled by RDP level 2, NRST held), so the
//!   SW-DP can answer with no acknowledge or a FAULT like a real one;
//! - transfers of many accesses in one round trip to the board thread that stop at the first
//!   failing access: once an AP access fails, the DP's STICKYERR blocks every further AP access
//!   (ADIv5.2 "Sticky flags and DP error responses"), so the accesses after it must not reach the bus.
//!
//! Both are methods of [`Machine`]; the probe reaches them through [`crate::Board::exec`] (one
//! message to the board thread per transfer, like one USB packet of a CMSIS-DAP probe).

use hil_cortex_m::{BusFault, BusFaultKind, Size};

use crate::board::DebugOp;
use crate::error::BoardError;
use crate::machine::Machine;
use crate::shared::{BootTargetName, RdpLevel};

/// What the debug link sees of the chip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DapLink {
    /// No power: the SW-DP does not answer (no acknowledge on the wire).
    Off,
    /// The debug port is disabled (RDP level 2 disables SWD for good, RM0444 3.5.1): no answer.
    Disabled(String),
    /// The SW-DP answers.
    Up {
        /// NRST is held low: the system is in reset, the debug domain is not (ARMv6-M C1.4: the
        /// debug registers are reset by power-on only).
        nrst_low: bool,
        /// The AHB-AP may issue transactions (its CSW.DeviceEn): false while FLASH_ACR.DBG_SWEN is 0
        /// (RM0444 3.7.1, debugger access disabled by software).
        device_enabled: bool,
    },
}

/// How a debugger access to the system bus (outside the PPB) is answered while NRST is held low.
///
/// Not verified on a G0 in the lab. Evidence that it is served: probe-rs issue #4113 (STM32G0B1,
/// H5, L5 with ST-Link, connect under reset): probe-rs's STM32G0 `debug_device_unlock` reads and
/// writes RCC_APBENR1 and DBGMCU_CR while NRST is low and that step passes on real chips; RM0444
/// 40.4 says DBGMCU_CR is reset by power-on only and can be written by the debugger under system
/// reset. Evidence the other way: the Black Magic Probe firmware notes (PR #454) that an STM32F0
/// does not answer MCU ID reads while NRST is asserted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InResetBus {
    /// The access is performed against the peripherals in their reset state (what they hold is
    /// lost at the release unless they are reset by power-on only, like DBGMCU).
    #[default]
    Serve,
    /// The access fails (the AP raises STICKYERR), as [`Machine::debug_read`] does.
    Fault,
}

/// Result of a transfer: the values of the accesses that completed (0 for writes), and the first
/// failure with its index. Accesses after a failure are not performed.
#[derive(Clone, Debug)]
pub struct TransferOutcome {
    pub values: Vec<u32>,
    pub error: Option<(usize, BoardError)>,
}

impl Machine {
    /// The state of the debug link, for the SW-DP model.
    pub fn dap_link(&self) -> DapLink {
        if !self.powered() {
            return DapLink::Off;
        }
        if self.soc.sys.shared.faults.probe_link_dropped() {
            // Injected: the SWD wires stopped carrying (issue 19 fault `probe-link-drop-after`).
            return DapLink::Disabled("the SWD link dropped (injected fault: probe-link-drop-after)".into());
        }
        let f = &self.soc.sys.shared.flash;
        if f.rdp == RdpLevel::Level2 {
            return DapLink::Disabled("RDP level 2: the debug port is disabled (RM0444 3.5.1)".into());
        }
        DapLink::Up { nrst_low: self.nrst_low(), device_enabled: f.dbg_swen }
    }

    /// Perform debugger accesses in order, stopping at the first that fails.
    pub fn debug_transfer(&mut self, ops: &[DebugOp], in_reset: InResetBus) -> TransferOutcome {
        if !self.soc.sys.shared.faults.probe_transfer() {
            return TransferOutcome {
                values: Vec::new(),
                error: Some((
                    0,
                    BoardError::DebugRefused {
                        board: self.name.clone(),
                        why: "the SWD link dropped (injected fault: probe-link-drop-after)".into(),
                    },
                )),
            };
        }
        let mut values = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let r = match *op {
                DebugOp::Read { addr, size } => self.debug_read_policy(addr, size, in_reset),
                DebugOp::Write { addr, size, value } => {
                    self.debug_write_policy(addr, size, value, in_reset).map(|()| 0)
                }
            };
            match r {
                Ok(v) => values.push(v),
                Err(e) => return TransferOutcome { values, error: Some((i, e)) },
            }
        }
        TransferOutcome { values, error: None }
    }

    fn debug_read_policy(&mut self, addr: u32, size: Size, in_reset: InResetBus) -> Result<u32, BoardError> {
        match self.debug_read(addr, size) {
            Err(BoardError::InReset { .. }) if in_reset == InResetBus::Serve => {
                self.in_reset_check(addr, size)?;
                let r = self.cpu.debug_read(&mut self.soc.sys, addr, size);
                r.map_err(|fault| BoardError::Bus { board: self.name.clone(), fault })
            }
            r => r,
        }
    }

    fn debug_write_policy(
        &mut self,
        addr: u32,
        size: Size,
        value: u32,
        in_reset: InResetBus,
    ) -> Result<(), BoardError> {
        match self.debug_write(addr, size, value) {
            Err(BoardError::InReset { .. }) if in_reset == InResetBus::Serve => {
                self.in_reset_check(addr, size)?;
                let r = self.cpu.debug_write(&mut self.soc.sys, addr, size, value);
                r.map_err(|fault| BoardError::Bus { board: self.name.clone(), fault })
            }
            r => r,
        }
    }

    /// RDP level 1 still hides flash from the debugger under reset (RM0444 3.5.1); the other
    /// checks of [`Machine::debug_read`] ran before it reported the reset.
    fn in_reset_check(&self, addr: u32, size: Size) -> Result<(), BoardError> {
        if self.soc.sys.shared.flash.rdp != RdpLevel::Level1 {
            return Ok(());
        }
        let m = &self.soc.chip.memory;
        let in_flash = m.flash.area().contains(addr)
            || m.otp.as_ref().is_some_and(|a| a.contains(addr))
            || (addr < m.flash.size && self.soc.syscfg().alias_target() == BootTargetName::MainFlash);
        if in_flash {
            let kind = BusFaultKind::Device("RDP level 1: flash not accessible to the debugger");
            return Err(BoardError::Bus { board: self.name.clone(), fault: BusFault::new(addr, size, kind) });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BoardConfig;

    fn machine() -> Machine {
        let mut m = Machine::new(&BoardConfig::g071("debug-ext"), None).unwrap();
        m.power_on();
        m
    }

    const RAM: u32 = 0x2000_0100;
    const DBGMCU_CR: u32 = 0x4001_5804;
    const RCC_APBENR1: u32 = 0x4002_103C;

    #[test]
    fn transfer_stops_at_the_first_failing_access() {
        let mut m = machine();
        let ops = [
            DebugOp::Write { addr: RAM, size: Size::Word, value: 0x1234_5678 },
            DebugOp::Read { addr: 0x3000_0000, size: Size::Word },
            DebugOp::Write { addr: RAM + 4, size: Size::Word, value: 0xAAAA_5555 },
        ];
        let out = m.debug_transfer(&ops, InResetBus::Serve);
        assert_eq!(out.values, vec![0]);
        let (i, e) = out.error.expect("unmapped read fails");
        assert_eq!(i, 1);
        assert!(e.to_string().contains("0x30000000"), "{e}");
        assert_eq!(m.debug_read(RAM, Size::Word).unwrap(), 0x1234_5678);
        assert_ne!(m.debug_read(RAM + 4, Size::Word).unwrap(), 0xAAAA_5555, "not written after the failure");
    }

    #[test]
    fn bus_accesses_under_reset_follow_the_policy_and_dbgmcu_keeps_its_value() {
        let mut m = machine();
        m.set_nrst(true);
        assert_eq!(m.dap_link(), DapLink::Up { nrst_low: true, device_enabled: true });
        let unlock = [
            DebugOp::Write { addr: RCC_APBENR1, size: Size::Word, value: 1 << 27 },
            DebugOp::Write { addr: DBGMCU_CR, size: Size::Word, value: 0b110 },
            DebugOp::Read { addr: DBGMCU_CR, size: Size::Word },
        ];
        let refused = m.debug_transfer(&unlock, InResetBus::Fault);
        assert!(matches!(refused.error, Some((0, BoardError::InReset { .. }))), "{refused:?}");
        let served = m.debug_transfer(&unlock, InResetBus::Serve);
        assert!(served.error.is_none(), "{served:?}");
        assert_eq!(served.values[2], 0b110);
        // PPB (debug registers) is reachable under reset in both policies.
        let ppb = m.debug_transfer(&[DebugOp::Read { addr: 0xE000_ED00, size: Size::Word }], InResetBus::Fault);
        assert_eq!(ppb.values, vec![0x410C_C601]);
        // Release: RCC is reset (DBGEN cleared), DBGMCU_CR (power-on reset only) keeps its bits.
        m.set_nrst(false);
        assert_eq!(m.debug_read(RCC_APBENR1, Size::Word).unwrap() & (1 << 27), 0);
        let after = m.debug_transfer(
            &[
                DebugOp::Write { addr: RCC_APBENR1, size: Size::Word, value: 1 << 27 },
                DebugOp::Read { addr: DBGMCU_CR, size: Size::Word },
            ],
            InResetBus::Serve,
        );
        assert_eq!(after.values[1], 0b110);
    }

    #[test]
    fn link_state_follows_power() {
        let mut m = machine();
        m.power_off();
        assert_eq!(m.dap_link(), DapLink::Off);
        let out = m.debug_transfer(&[DebugOp::Read { addr: RAM, size: Size::Word }], InResetBus::Serve);
        assert!(matches!(out.error, Some((0, BoardError::PoweredOff { .. }))));
    }
}
