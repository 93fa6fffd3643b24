//! DBGMCU of the STM32G0 (RM0444 40.4): IDCODE (DEV_ID, REV_ID), DBGMCU_CR (DBG_STOP,
//! DBG_STANDBY), APB_FZ1/APB_FZ2 freeze bits (the watchdog models read DBG_IWDG_STOP and
//! DBG_WWDG_STOP from the shared state). The registers are reset by power-on only (RM0444
//! 40.4.2) and need the DBG clock (RCC_APBENR1.DBGEN) for writes.

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size};

use super::{gate_open, merge_lane, read_lane};
use crate::shared::{Gate, Shared};

pub const IDCODE: u32 = 0x00;
pub const CR: u32 = 0x04;
pub const APB_FZ1: u32 = 0x08;
pub const APB_FZ2: u32 = 0x0C;

pub struct Dbgmcu {
    idcode: u32,
    gate: Option<Gate>,
}

impl Dbgmcu {
    pub fn new(dev_id: u16, rev_id: u16, gate: Option<Gate>) -> Self {
        Dbgmcu { idcode: (dev_id as u32 & 0xFFF) | ((rev_id as u32) << 16), gate }
    }
    pub fn idcode(&self) -> u32 {
        self.idcode
    }
}

impl Device<Shared> for Dbgmcu {
    fn name(&self) -> &str {
        "DBGMCU"
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        let reg = offset & !3;
        if reg == IDCODE && !cx.shared.quirks.idcode_needs_dbgen {
            return Ok(read_lane(self.idcode, offset, size));
        }
        if !gate_open(cx.shared, self.gate)? {
            return Ok(0);
        }
        let d = &cx.shared.debug;
        let v = match reg {
            IDCODE => self.idcode,
            CR => d.cr,
            APB_FZ1 => d.apb_fz1,
            APB_FZ2 => d.apb_fz2,
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
            return Ok(());
        }
        let d = &mut cx.shared.debug;
        match offset & !3 {
            CR => d.cr = merge_lane(d.cr, offset, size, value) & 0x6,
            APB_FZ1 => {
                d.apb_fz1 = merge_lane(d.apb_fz1, offset, size, value);
                d.iwdg_stop = d.apb_fz1 & (1 << 12) != 0;
                d.wwdg_stop = d.apb_fz1 & (1 << 11) != 0;
                d.freeze_written = true;
            }
            APB_FZ2 => d.apb_fz2 = merge_lane(d.apb_fz2, offset, size, value),
            _ => {}
        }
        Ok(())
    }

    fn reset(&mut self, cause: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        if cause == ResetCause::PowerOn {
            let d = &mut cx.shared.debug;
            d.cr = 0;
            d.apb_fz1 = 0;
            d.apb_fz2 = 0;
            d.iwdg_stop = false;
            d.wwdg_stop = false;
        }
    }
}
