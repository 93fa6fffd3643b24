//! DBGMCU of the STM32F1 (RM0008 31.6): DBGMCU_IDCODE at 0xE0042000 (DEV_ID, REV_ID; readable by
//! the core and the debugger, RM0008 31.6.1) and DBGMCU_CR at 0xE0042004 (DBG_SLEEP/STOP/STANDBY,
//! TRACE bits stored; DBG_IWDG_STOP bit 8 and DBG_WWDG_STOP bit 9 freeze the watchdogs while the
//! core is halted, RM0008 31.16.3). DBGMCU_CR is reset by power-on only. Unlike the G0 there is
//! no clock gate: the block sits on the external PPB.

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size};

use crate::periph::{merge_lane, read_lane};
use crate::shared::Shared;

pub const IDCODE: u32 = 0x00;
pub const CR: u32 = 0x04;
const CR_DBG_IWDG_STOP: u32 = 1 << 8;
const CR_DBG_WWDG_STOP: u32 = 1 << 9;
/// Writable bits of DBGMCU_CR (RM0008 31.16.3): DBG_SLEEP/STOP/STANDBY, TRACE_IOEN, TRACE_MODE,
/// DBG_IWDG_STOP .. DBG_TIM7_STOP (bits 8..20).
const CR_WRITABLE: u32 = 0x001F_FF27;

pub struct DbgmcuF1 {
    idcode: u32,
}

impl DbgmcuF1 {
    pub fn new(dev_id: u16, rev_id: u16) -> Self {
        DbgmcuF1 { idcode: (dev_id as u32 & 0xFFF) | ((rev_id as u32) << 16) }
    }
    pub fn idcode(&self) -> u32 {
        self.idcode
    }
}

impl Device<Shared> for DbgmcuF1 {
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
        let v = match offset & !3 {
            IDCODE => self.idcode,
            CR => cx.shared.debug.cr,
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
        if offset & !3 == CR {
            let d = &mut cx.shared.debug;
            d.cr = merge_lane(d.cr, offset, size, value) & CR_WRITABLE;
            d.iwdg_stop = d.cr & CR_DBG_IWDG_STOP != 0;
            d.wwdg_stop = d.cr & CR_DBG_WWDG_STOP != 0;
            d.freeze_written = true;
        }
        Ok(())
    }

    fn reset(&mut self, cause: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        if cause == ResetCause::PowerOn {
            let d = &mut cx.shared.debug;
            d.cr = 0;
            d.iwdg_stop = false;
            d.wwdg_stop = false;
        }
    }
}
