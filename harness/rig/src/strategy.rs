//! The strategy layer: the states a board can be in and how to get from one to another on this
//! board, with what it has (labgrid's strategies, in Rust). Scenario steps say what they want
//! (`enter: { state: system-bootloader }`); the strategy picks the transition the board supports,
//! or the one the step names.
//!
//! States: off, application, system-bootloader, custom-bootloader, halted. The trampoline is not a
//! state one stays in: Go to it resets into the application.

use std::time::Duration;

use hil_bootloader_host::clock::Deadline;

use hil_config::Capability;
use hil_config::scenario::{BoardState, ResetVia, Transition};

use crate::engine::{StepCx, StepOutcome};
use crate::session::RigSession;
use crate::step_error::StepError;

/// The application fixture's command byte asking for a jump into the ROM (fixtures-firmware/app).
pub const JUMP_COMMAND: u8 = b'j';

fn caps(s: &RigSession) -> std::collections::BTreeSet<Capability> {
    s.board.capabilities(s.chip)
}

/// Which transition reaches `state` when the step does not say.
pub fn default_transition(s: &RigSession, state: BoardState) -> Option<Transition> {
    let c = caps(s);
    match state {
        BoardState::SystemBootloader if c.contains(&Capability::Boot0) && c.contains(&Capability::Nrst) => {
            Some(Transition::Boot0Pin)
        }
        BoardState::SystemBootloader if c.contains(&Capability::Probe) => Some(Transition::OptionBits),
        BoardState::SystemBootloader if c.contains(&Capability::Uart) => Some(Transition::Jump),
        BoardState::Application | BoardState::CustomBootloader if c.contains(&Capability::Power) => {
            Some(Transition::PowerCycle)
        }
        BoardState::Application | BoardState::CustomBootloader if c.contains(&Capability::Nrst) => {
            Some(Transition::Reset)
        }
        _ => None,
    }
}

pub fn enter(s: &mut RigSession, state: BoardState, via: Option<Transition>, cx: &StepCx) -> StepOutcome {
    let r = enter_inner(s, state, via, cx);
    match r {
        Ok(()) => {
            s.state = Some(state);
            StepOutcome::passed()
        }
        Err(e) => e.outcome(Some(&format!("entering {}", name(state)))),
    }
}

fn name(state: BoardState) -> &'static str {
    match state {
        BoardState::Off => "off",
        BoardState::Application => "the application",
        BoardState::SystemBootloader => "the system bootloader",
        BoardState::CustomBootloader => "the custom bootloader",
        BoardState::Halted => "halted",
    }
}

fn set_boot0(s: &mut RigSession, high: bool) -> Result<(), StepError> {
    match s.backends.lines.as_mut() {
        Some(l) => {
            l.set_boot0(high)?;
            s.boot0_driven = Some(high);
            Ok(())
        }
        None => Ok(()),
    }
}

fn enter_inner(s: &mut RigSession, state: BoardState, via: Option<Transition>, cx: &StepCx) -> Result<(), StepError> {
    let seen = s.seen.clone();
    if state == BoardState::Halted {
        return s.with_probe(|p| p.halt()).map(|_| ());
    }
    if state == BoardState::Off {
        return Err(StepError::unsupported("keeping a board off is not supported (power switches here only cycle)"));
    }
    let Some(via) = via.or_else(|| default_transition(s, state)) else {
        // A board the rig cannot move may already be there: a lab board wired by USB only whose
        // ROM's DFU device is on the bus is in its system bootloader.
        if state == BoardState::SystemBootloader
            && let Some(usb) = s.backends.usb.as_mut()
            && usb.present()?
        {
            return Ok(());
        }
        return Err(StepError::unsupported(format!("board `{}` has no way to reach this state", s.board.name.value)));
    };
    match (state, via) {
        (BoardState::SystemBootloader, Transition::Boot0Pin) => {
            // BOOT0 is sampled at reset (RM0444 2.5); release it afterwards so that a later reset
            // starts the application again.
            set_boot0(s, true)?;
            reset(s, ResetVia::Nrst, cx)?;
            s.backends.clock.sleep(Duration::from_millis(5));
            set_boot0(s, false)?;
        }
        (BoardState::SystemBootloader, Transition::OptionBits) => {
            let w = hil_config::scenario::WriteOptionBytes {
                via: hil_config::scenario::Via::Probe,
                nboot_sel: Some(true),
                nboot0: Some(false),
                nboot1: Some(true),
                launch: true,
                ..Default::default()
            };
            s.write_option_bytes(&w, cx)?;
        }
        (BoardState::SystemBootloader, Transition::Jump) => {
            s.backends
                .serial
                .as_mut()
                .ok_or_else(|| StepError::unsupported("jumping from the application needs a serial link"))?
                .send(&[JUMP_COMMAND])?;
            s.backends.clock.sleep(Duration::from_millis(20));
        }
        (BoardState::Application | BoardState::CustomBootloader, Transition::Reset) => {
            set_boot0(s, false)?;
            reset(s, ResetVia::Nrst, cx)?;
        }
        (BoardState::Application | BoardState::CustomBootloader, Transition::PowerCycle) => {
            set_boot0(s, false)?;
            reset(s, ResetVia::Power, cx)?;
        }
        (BoardState::Application, Transition::Go) => {
            let base = s.application_base();
            s.uart_session(cx, |c| {
                crate::session::connect_noted(c, &seen)?;
                Ok(c.go(base)?)
            })?;
        }
        (BoardState::Application, Transition::Leave) => {
            let base = s.application_base();
            s.leave_dfu(Some(base))?;
        }
        (state, via) => return Err(StepError::unsupported(format!("{via:?} does not lead to {}", name(state)))),
    }
    // Confirm where the board is when the board can tell.
    if s.backends.probe.is_some() {
        s.backends.clock.sleep(Duration::from_millis(20));
        let seen = detect(s, cx)?;
        if seen != state {
            return Err(StepError::expectation(format!("the board is in {} instead", name(seen))));
        }
    }
    Ok(())
}

fn reset(s: &mut RigSession, via: ResetVia, _cx: &StepCx) -> Result<(), StepError> {
    s.reset_board(via)
}

/// Where the board is, from the PC (through the probe); the core is left as it was.
pub fn detect(s: &mut RigSession, cx: &StepCx) -> Result<BoardState, StepError> {
    let chip = s.chip;
    let app = s.application_base();
    let bl = s.board.layout.bootloader.as_ref().map(|r| r.value);
    let _ = cx;
    let pc = s.with_probe(|p| {
        if p.is_halted()? {
            return Ok(None);
        }
        let pc = p.halt()?;
        p.resume()?;
        Ok(Some(pc))
    })?;
    let Some(pc) = pc else { return Ok(BoardState::Halted) };
    Ok(if chip.memory.system_memory.contains(pc) {
        BoardState::SystemBootloader
    } else if bl.is_some_and(|r| r.contains(pc)) {
        BoardState::CustomBootloader
    } else if pc >= app && (pc as u64) < chip.memory.flash.area().end() {
        BoardState::Application
    } else {
        return Err(StepError::expectation(format!(
            "the core runs at {pc:#010x}, in no known region (RAM code or a fault?)"
        )));
    })
}

pub fn expect_state(s: &mut RigSession, want: BoardState, cx: &StepCx) -> StepOutcome {
    let seen = s.seen.clone();
    if s.backends.probe.is_none() && want == BoardState::SystemBootloader {
        // Without a probe the ROM is recognised by its AN3155 answer.
        return match s.uart_session(cx, |c| Ok(crate::session::connect_noted(c, &seen)?)) {
            Ok(_) => StepOutcome::passed(),
            Err(e) => StepOutcome::failed(format!("the system bootloader does not answer: {e}")),
        };
    }
    // At most 2 s on the board's clock: the board settles within milliseconds after a reset.
    let deadline = Deadline::after(cx.clock(), Duration::from_secs(2).min(cx.remaining()));
    loop {
        match detect(s, cx) {
            Ok(seen) if seen == want => return StepOutcome::passed(),
            Ok(seen) if deadline.passed() || cx.cancel.is_cancelled() => {
                return StepOutcome::failed(format!("the board is in {}, not {}", name(seen), name(want)));
            }
            Err(e) if deadline.passed() || cx.cancel.is_cancelled() => return e.outcome(None),
            _ => cx.sleep(Duration::from_millis(20)),
        }
    }
}
