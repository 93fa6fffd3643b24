//! SYSCFG of the STM32G0 (RM0444 chapter 9): CFGR1.MEM_MODE memory remap of the 0x00000000
//! alias (RM0444 9.1.1), CFGR2 stored, ITLINEx interrupt line status (RM0444 9.1.x).
//!
//! At reset MEM_MODE reflects the boot mode (RM0444 9.1.1 reset value 0x0000 000X), which this
//! model computes from the boot table (`crate::boot`) - the FLASH model has loaded the option
//! bytes before (device order of the board). MEM_MODE writes are ignored while the SYSCFG clock
//! is off (RCC_APBENR2.SYSCFGEN; pitfall P4 of the bootloader notes).
//!
//! Parts without a remap register (STM32F1: the alias follows the BOOT pins latched at reset,
//! RM0008 3.4) get this model without `remap`: not mapped on the bus, it only points the alias at
//! the boot target at each reset.

use hil_chips::{BootTarget, Remap};
use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, RegionId, ResetCause, Size, StoreId, WritePolicy};

use super::{gate_open, merge_lane, read_lane};
use crate::shared::{BootTargetName, Gate, Shared};

pub const CFGR1: u32 = 0x00;
pub const CFGR2: u32 = 0x18;
const ITLINE0: u32 = 0x80;

/// What the alias can show: (store, length, write policy) per target.
#[derive(Clone, Copy, Debug)]
pub struct AliasTargets {
    pub region: RegionId,
    pub main: (StoreId, u32, WritePolicy),
    pub system: (StoreId, u32, WritePolicy),
    pub sram: (StoreId, u32, WritePolicy),
}

pub struct Syscfg {
    remap: Option<Remap>,
    gate: Option<Gate>,
    alias: AliasTargets,
    cfgr1: u32,
    cfgr2: u32,
    /// What the alias currently shows.
    showing: BootTarget,
}

impl Syscfg {
    pub fn new(remap: Option<Remap>, gate: Option<Gate>, alias: AliasTargets) -> Self {
        Syscfg { remap, gate, alias, cfgr1: 0, cfgr2: 0, showing: BootTarget::MainFlash }
    }

    pub fn cfgr1(&self) -> u32 {
        self.cfgr1
    }

    /// What 0x00000000 shows now.
    pub fn alias_target(&self) -> BootTargetName {
        self.showing.into()
    }

    /// What MEM_MODE selects (`None` on parts without a remap register).
    fn selected(&self) -> Option<BootTarget> {
        let r = self.remap.as_ref()?;
        let mode = ((self.cfgr1 >> r.shift) & ((1 << r.width) - 1)) as u8;
        Some(r.values.get(&mode).copied().unwrap_or(BootTarget::MainFlash))
    }

    fn apply(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let Some(target) = self.selected() else { return };
        self.point(target, cx);
    }

    fn point(&mut self, target: BootTarget, cx: &mut DeviceCx<'_, Shared>) {
        if target == self.showing {
            return;
        }
        let (store, len, writes) = match target {
            BootTarget::MainFlash => self.alias.main,
            BootTarget::SystemMemory => self.alias.system,
            BootTarget::Sram => self.alias.sram,
        };
        // The alias region was created large enough for every target (board construction), so
        // retargeting cannot fail; if it ever did the alias keeps its old target.
        if cx.memory.retarget(self.alias.region, store, 0, len, writes, true).is_ok() {
            self.showing = target;
        } else {
            tracing::error!(target: "hil_virtual_board", "SYSCFG: remap of the boot alias failed");
        }
    }
}

impl Device<Shared> for Syscfg {
    fn name(&self) -> &str {
        "SYSCFG"
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        if !gate_open(cx.shared, self.gate)? {
            return Ok(0);
        }
        let reg = offset & !3;
        let v = match reg {
            CFGR1 => self.cfgr1,
            CFGR2 => self.cfgr2,
            // ITLINEx (RM0444 9.1.x): bit 0 shows the first source of interrupt line x; the
            // model reports the line level itself.
            r if (ITLINE0..ITLINE0 + 32 * 4).contains(&r) => cx.irq_is_high((r - ITLINE0) / 4) as u32,
            _ => 0,
        };
        Ok(read_lane(v, offset, size))
    }

    fn write(
        &mut self,
        offset: u32,
        size: Size,
        value: u32,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        if !gate_open(cx.shared, self.gate)? {
            // SYSCFG clock off: the write is lost (P4).
            return Ok(());
        }
        match offset & !3 {
            CFGR1 => {
                // MEM_MODE[1:0], PA11/PA12_RMP, IR_POL, IR_MOD, BOOSTEN, UCPDx_STROBE, I2C FM+
                // bits (RM0444 9.1.1).
                self.cfgr1 = merge_lane(self.cfgr1, offset, size, value) & 0x00FF_07FB;
                self.apply(cx);
            }
            CFGR2 => self.cfgr2 = merge_lane(self.cfgr2, offset, size, value),
            _ => {}
        }
        Ok(())
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        let boot = crate::boot::select(cx.shared);
        let target = match boot.target {
            BootTargetName::MainFlash => BootTarget::MainFlash,
            BootTargetName::SystemMemory => BootTarget::SystemMemory,
            BootTargetName::Sram => BootTarget::Sram,
        };
        self.cfgr1 = self.remap.as_ref().map_or(0, |r| (r.value_of(target).unwrap_or(0) as u32) << r.shift);
        self.cfgr2 = 0;
        // Force the retarget even if the alias already shows the target (lengths are fixed).
        self.showing = if target == BootTarget::MainFlash { BootTarget::Sram } else { BootTarget::MainFlash };
        self.point(target, cx);
        cx.shared.boot = Some(boot);
    }
}
