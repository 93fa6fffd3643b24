//! Reset, power and DfuSe leave: what moves the board between states.

use super::*;

impl RigSession {
    /// Reset the board (what the strategy and the `reset` step do): where it is is unknown after.
    pub fn reset_board(&mut self, via: ResetVia) -> Result<(), StepError> {
        self.state = None;
        self.last_go = None;
        self.reset(via)
    }

    /// DfuSe leave (to `addr`, else where the ROM's manifestation goes).
    pub fn leave_dfu(&mut self, addr: Option<u32>) -> Result<(), StepError> {
        let r = self.open_dfu().and_then(|mut d| Ok(d.leave(addr).map(|_| ())?));
        self.state = None;
        self.last_go = addr.or(Some(self.application_base()));
        r
    }

    pub(super) fn reset(&mut self, via: ResetVia) -> Result<(), StepError> {
        match via {
            ResetVia::Nrst => {
                let lines = self.lines()?;
                lines.set_reset(true)?;
                // NRST pulse: well above the 20 us minimum (DS12232 NRST characteristics).
                lines.wait(Duration::from_millis(1));
                lines.set_reset(false).map_err(StepError::from)
            }
            ResetVia::Probe => self.with_probe(|p| p.reset_run()),
            ResetVia::Power => self.power_cycle(Duration::from_millis(10)),
        }
    }

    pub(super) fn power_cycle(&mut self, off: Duration) -> Result<(), StepError> {
        let name = self.board.name.value.clone();
        // Detach first, as a probe loses its target when power goes.
        self.forget_probe();
        let power = self
            .backends
            .power
            .as_mut()
            .ok_or_else(|| StepError::unsupported(format!("board `{name}` cannot switch its power")))?;
        Ok(power.power_cycle(off)?)
    }
}
