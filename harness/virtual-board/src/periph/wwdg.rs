//! WWDG: window watchdog of the STM32G0 (RM0444 chapter 27).
//!
//! Modelled: the 7-bit down-counter clocked by PCLK / 4096 / 2^WDGTB (RM0444 27.3.4), WDGA
//! (set by software, cleared by reset only), reset when the counter passes from 0x40 to 0x3F or
//! when CR is written while the counter is above the window W (RM0444 27.3.2), the early wakeup
//! interrupt EWI/EWIF at 0x40 (RM0444 27.3.3), the hardware option WWDG_SW = 0 (enabled after
//! reset), RCC_APBENR1.WWDGEN gating, and the debug freeze DBG_WWDG_STOP (RM0444 40.4.3).
//!
//! Not modelled: the counter keeps running while WWDGEN is off.

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, VirtualDuration, VirtualTime};

use super::{gate_open, merge_lane, read_lane};
use crate::shared::{Gate, Shared};

pub const CR: u32 = 0x00;
pub const CFR: u32 = 0x04;
pub const SR: u32 = 0x08;

const CR_WDGA: u32 = 1 << 7;
const CFR_EWI: u32 = 1 << 9;

const TAG_EWI: u32 = 1;
const TAG_RESET: u32 = 2;

pub struct Wwdg {
    gate: Option<Gate>,
    irq: Option<u32>,
    wdga: bool,
    cfr: u32,
    sr: u32,
    epoch: VirtualTime,
    count: u32,
    frozen: bool,
}

impl Wwdg {
    pub fn new(gate: Option<Gate>, irq: Option<u32>) -> Self {
        Wwdg { gate, irq, wdga: false, cfr: 0x7F, sr: 0, epoch: VirtualTime::ZERO, count: 0x7F, frozen: false }
    }

    fn tick(&self, shared: &Shared) -> VirtualDuration {
        let div = 4096u64 << ((self.cfr >> 11) & 7);
        VirtualDuration::from_cycles(div, shared.rcc.pclk_hz.max(1))
    }

    /// 7-bit counter value now (it wraps from 0x00 to 0x7F).
    pub fn counter(&self, shared: &Shared, now: VirtualTime) -> u32 {
        if self.frozen {
            return self.count;
        }
        let ticks = now.since(self.epoch).as_ps() / self.tick(shared).as_ps().max(1);
        (self.count as u64).wrapping_sub(ticks) as u32 & 0x7F
    }

    fn rebase(&mut self, cx: &mut DeviceCx<'_, Shared>, count: u32) {
        self.epoch = cx.now;
        self.count = count & 0x7F;
        cx.cancel(TAG_EWI);
        cx.cancel(TAG_RESET);
        if self.frozen {
            return;
        }
        let tick = self.tick(cx.shared).as_ps();
        // Ticks until the counter reads 0x40 (EWI) and 0x3F (reset), counting wraps.
        let until = |target: u32| -> u64 { ((self.count + 0x80 - target) & 0x7F) as u64 };
        if self.cfr & CFR_EWI != 0 {
            let n = until(0x40);
            cx.schedule_in(VirtualDuration::from_ps(tick.saturating_mul(if n == 0 { 0x80 } else { n })), TAG_EWI);
        }
        if self.wdga {
            let n = until(0x3F);
            cx.schedule_in(VirtualDuration::from_ps(tick.saturating_mul(if n == 0 { 0x80 } else { n })), TAG_RESET);
        }
    }

    pub fn refreeze(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let frozen = cx.shared.debug.wwdg_frozen();
        if frozen != self.frozen {
            let c = self.counter(cx.shared, cx.now);
            self.frozen = frozen;
            self.rebase(cx, c);
        }
    }

    fn update_irq(&self, cx: &mut DeviceCx<'_, Shared>) {
        if let Some(irq) = self.irq {
            cx.set_irq(irq, self.cfr & CFR_EWI != 0 && self.sr & 1 != 0);
        }
    }
}

impl Device<Shared> for Wwdg {
    fn name(&self) -> &str {
        "WWDG"
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
        let v = match offset & !3 {
            CR => self.counter(cx.shared, cx.now) | if self.wdga { CR_WDGA } else { 0 },
            CFR => self.cfr,
            SR => self.sr,
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
        match offset & !3 {
            CR => {
                let v = merge_lane(0, offset, size, value);
                let c = self.counter(cx.shared, cx.now);
                // Refresh outside the window (counter above W) resets (RM0444 27.3.2).
                if self.wdga && c > (self.cfr & 0x7F) {
                    cx.request_reset(ResetCause::WindowWatchdog);
                    return Ok(());
                }
                // T6 written as 0 with WDGA resets at once.
                if v & CR_WDGA != 0 || self.wdga {
                    self.wdga = true;
                    if v & 0x40 == 0 {
                        cx.request_reset(ResetCause::WindowWatchdog);
                        return Ok(());
                    }
                }
                self.rebase(cx, v & 0x7F);
            }
            CFR => {
                let c = self.counter(cx.shared, cx.now);
                self.cfr = merge_lane(self.cfr, offset, size, value) & 0x3A7F;
                self.rebase(cx, c);
            }
            SR => {
                self.sr &= merge_lane(0, offset, size, value) & 1;
                self.update_irq(cx);
            }
            _ => {}
        }
        Ok(())
    }

    fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, Shared>) {
        match tag {
            TAG_EWI => {
                self.sr |= 1;
                self.update_irq(cx);
            }
            TAG_RESET if self.wdga => cx.request_reset(ResetCause::WindowWatchdog),
            _ => {}
        }
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        *self = Wwdg::new(self.gate, self.irq);
        self.epoch = cx.now;
        // Hardware window watchdog (WWDG_SW = 0): enabled after reset.
        let chip = cx.shared.chip;
        let sw = chip.option_bytes.as_ref().and_then(|ob| {
            let f = ob.field("WWDG_SW")?;
            let w = ob.word(&f.word)?;
            Some(f.get(cx.shared.flash.words.get(&w.name).copied().unwrap_or(w.factory)))
        });
        if sw == Some(0) {
            self.wdga = true;
        }
        self.frozen = cx.shared.debug.wwdg_frozen();
        self.rebase(cx, 0x7F);
        self.update_irq(cx);
    }
}
