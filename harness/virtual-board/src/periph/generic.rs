//! A peripheral that is not modelled: a register file that reads back what was written (reset
//! value 0), behind its RCC clock gate. Enough for firmware that configures a peripheral it
//! does not depend on; the first access is traced so a diagnosis can name it.

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size};

use super::{gate_open, merge_lane, read_lane};
use crate::shared::{Gate, Shared};

pub struct Generic {
    name: String,
    gate: Option<Gate>,
    regs: Vec<u32>,
}

impl Generic {
    pub fn new(name: &str, size: u32, gate: Option<Gate>) -> Self {
        Generic { name: name.to_string(), gate, regs: vec![0; (size / 4) as usize] }
    }

    fn note(&self, shared: &mut Shared) {
        if !shared.touched_generic.iter().any(|n| n == &self.name) {
            tracing::debug!(target: "hil_virtual_board", peripheral = %self.name, "access to a peripheral the board does not model");
            shared.touched_generic.push(self.name.clone());
        }
    }
}

impl Device<Shared> for Generic {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        self.note(cx.shared);
        if !gate_open(cx.shared, self.gate)? {
            return Ok(0);
        }
        let v = self.regs.get((offset / 4) as usize).copied().unwrap_or(0);
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
        self.note(cx.shared);
        if !gate_open(cx.shared, self.gate)? {
            return Ok(());
        }
        if let Some(r) = self.regs.get_mut((offset / 4) as usize) {
            *r = merge_lane(*r, offset, size, value);
        }
        Ok(())
    }

    fn reset(&mut self, _: ResetCause, _: &mut DeviceCx<'_, Shared>) {
        self.regs.fill(0);
    }
}
