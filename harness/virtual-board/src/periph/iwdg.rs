//! IWDG: independent watchdog of the STM32G0 (RM0444 chapter 26), clocked by the LSI on virtual
//! time.
//!
//! Modelled: IWDG_KR keys (0xCCCC start, 0xAAAA reload, 0x5555 register access, anything else
//! removes access; RM0444 26.4.1), prescaler /4../256 and 12-bit reload (RM0444 26.4.2-26.4.3),
//! the PVU/RVU/WVU update flags (RM0444 26.4.4), window mode (a reload while the counter is
//! above WINR resets; RM0444 26.3.5), reset on reaching 0 (RM0444 26.3.1), the hardware
//! watchdog option IWDG_SW = 0 (started at reset; RM0444 26.3.2), LSI forced on while running,
//! and the debug freeze DBG_IWDG_STOP (RM0444 40.4.3).

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, VirtualDuration, VirtualTime};

use super::{merge_lane, read_lane};
use crate::shared::Shared;

pub const KR: u32 = 0x00;
pub const PR: u32 = 0x04;
pub const RLR: u32 = 0x08;
pub const SR: u32 = 0x0C;
pub const WINR: u32 = 0x10;

const SR_PVU: u32 = 1 << 0;
const SR_RVU: u32 = 1 << 1;
const SR_WVU: u32 = 1 << 2;

const TAG_EXPIRE: u32 = 1;
const TAG_UPDATE: u32 = 2;
/// "The register update ... takes up to five LSI periods" (RM0444 26.4.4, PVU/RVU/WVU).
const UPDATE_LSI_CYCLES: u64 = 5;

pub struct Iwdg {
    lsi_hz: u32,
    running: bool,
    access: bool,
    pr: u32,
    rlr: u32,
    winr: u32,
    sr: u32,
    pending: (Option<u32>, Option<u32>, Option<u32>),
    /// Counter value at `epoch` (counts down by one per prescaled LSI tick).
    epoch: VirtualTime,
    count: u32,
    frozen: bool,
}

impl Iwdg {
    pub fn new(lsi_hz: u32) -> Self {
        Iwdg {
            lsi_hz,
            running: false,
            access: false,
            pr: 0,
            rlr: 0xFFF,
            winr: 0xFFF,
            sr: 0,
            pending: (None, None, None),
            epoch: VirtualTime::ZERO,
            count: 0xFFF,
            frozen: false,
        }
    }

    pub fn running(&self) -> bool {
        self.running
    }

    fn tick(&self) -> VirtualDuration {
        // PR: 0 -> /4, 1 -> /8 ... 6 and 7 -> /256 (RM0444 26.4.2).
        let div = 4u64 << self.pr.min(6);
        VirtualDuration::from_cycles(div, self.lsi_hz.max(1))
    }

    /// Current counter value.
    pub fn counter(&self, now: VirtualTime) -> u32 {
        if !self.running || self.frozen {
            return self.count;
        }
        let ticks = now.since(self.epoch).as_ps() / self.tick().as_ps().max(1);
        self.count.saturating_sub(ticks.min(u32::MAX as u64) as u32)
    }

    fn rebase(&mut self, cx: &mut DeviceCx<'_, Shared>, count: u32) {
        self.epoch = cx.now;
        self.count = count;
        cx.cancel(TAG_EXPIRE);
        if self.running && !self.frozen {
            let t = VirtualDuration::from_ps(self.tick().as_ps().saturating_mul(count as u64));
            cx.schedule_in(t, TAG_EXPIRE);
        }
    }

    fn start(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        self.running = true;
        cx.shared.rcc.lsi_forced = true;
        let rlr = self.rlr;
        self.rebase(cx, rlr);
    }

    /// Re-evaluate the debug freeze (the board calls this when the core halts or resumes).
    pub fn refreeze(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let frozen = cx.shared.debug.iwdg_frozen();
        if frozen == self.frozen {
            return;
        }
        let now_count = self.counter(cx.now);
        self.frozen = frozen;
        self.rebase(cx, now_count);
    }
}

impl Device<Shared> for Iwdg {
    fn name(&self) -> &str {
        "IWDG"
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        _: Initiator,
        _: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        let v = match offset & !3 {
            PR => self.pr,
            RLR => self.rlr,
            SR => self.sr,
            WINR => self.winr,
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
        let v = merge_lane(0, offset, size, value);
        match offset & !3 {
            KR => match v & 0xFFFF {
                0xCCCC => {
                    if !self.running {
                        self.start(cx);
                    }
                }
                0xAAAA => {
                    if self.running {
                        let c = self.counter(cx.now);
                        if self.winr < 0xFFF && c > self.winr {
                            cx.request_reset(ResetCause::IndependentWatchdog);
                            return Ok(());
                        }
                        let rlr = self.rlr;
                        self.rebase(cx, rlr);
                    }
                }
                0x5555 => self.access = true,
                _ => self.access = false,
            },
            PR if self.access => {
                self.pending.0 = Some(v & 7);
                self.sr |= SR_PVU;
                cx.schedule_in(VirtualDuration::from_cycles(UPDATE_LSI_CYCLES, self.lsi_hz), TAG_UPDATE);
            }
            RLR if self.access => {
                self.pending.1 = Some(v & 0xFFF);
                self.sr |= SR_RVU;
                cx.schedule_in(VirtualDuration::from_cycles(UPDATE_LSI_CYCLES, self.lsi_hz), TAG_UPDATE);
            }
            WINR if self.access => {
                self.pending.2 = Some(v & 0xFFF);
                self.sr |= SR_WVU;
                cx.schedule_in(VirtualDuration::from_cycles(UPDATE_LSI_CYCLES, self.lsi_hz), TAG_UPDATE);
            }
            _ => {}
        }
        Ok(())
    }

    fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, Shared>) {
        match tag {
            // The counter reached 0: reset (RM0444 26.3.1).
            TAG_EXPIRE if self.running && !self.frozen => cx.request_reset(ResetCause::IndependentWatchdog),
            TAG_UPDATE => {
                let now_count = self.counter(cx.now);
                if let Some(pr) = self.pending.0.take() {
                    self.pr = pr;
                }
                if let Some(rlr) = self.pending.1.take() {
                    self.rlr = rlr;
                }
                let window_written = self.pending.2.take().map(|w| self.winr = w).is_some();
                self.sr = 0;
                if self.running {
                    // UNVERIFIED: writing WINR reloads the counter (RM0444 26.3.5 "configuring
                    // the window"); a new prescaler applies from now on.
                    let c = if window_written { self.rlr } else { now_count };
                    self.rebase(cx, c);
                }
            }
            _ => {}
        }
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        *self = Iwdg::new(self.lsi_hz);
        // Hardware watchdog (IWDG_SW = 0): started automatically after reset (RM0444 26.3.2).
        let chip = cx.shared.chip;
        let sw = chip.option_bytes.as_ref().and_then(|ob| {
            let f = ob.field("IWDG_SW")?;
            let w = ob.word(&f.word)?;
            Some(f.get(cx.shared.flash.words.get(&w.name).copied().unwrap_or(w.factory)))
        });
        if sw == Some(0) {
            self.start(cx);
        }
        self.frozen = false;
        self.refreeze(cx);
    }
}
