//! Opens the boards of boards.yaml for a run: lab boards through their tty, probe and USB; virtual
//! boards by starting them and then opening them the same way (PTY, probe-rs selector).

use hil_bootloader_host::control::{ModemSignal, Polarity, SerialControlLines, Wiring};
use hil_config::boards::{LabBoard, LineControl, LineDriver};
use hil_config::{Board, PinLevel};

use crate::backend::{Backends, CommandPower};
use crate::engine::{BoardOpener, BoardSession, CancelFlag};
use crate::session::RigSession;
use crate::step_error::StepError;

/// Why a board of boards.yaml could not be opened; names the board and the seam that failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("board `{board}`: unknown chip `{chip}`")]
    UnknownChip { board: String, chip: String },
    #[error("board `{0}` is neither virtual nor lab")]
    NoBackend(String),
    #[error("board `{0}` is virtual, and this build has no virtual boards (the `virtual` feature is off)")]
    VirtualUnavailable(String),
    #[error("board `{board}`: {source}")]
    Serial {
        board: String,
        #[source]
        source: crate::serial_link::LinkError,
    },
    #[error("board `{board}`: {what} through the serial adapter: {source}")]
    ControlLine {
        board: String,
        what: &'static str,
        #[source]
        source: hil_bootloader_host::control::ControlError,
    },
    #[error("board `{board}`: option bytes: {source}")]
    OptionBits {
        board: String,
        #[source]
        source: crate::option_bits::OptionBitsError,
    },
    #[cfg(feature = "virtual")]
    #[error("board `{board}`: virtual board: {source}")]
    VirtualBoard {
        board: String,
        #[source]
        source: Box<hil_virtual_board::BoardError>,
    },
    #[error("board `{board}`: {source}")]
    Session {
        board: String,
        #[source]
        source: Box<StepError>,
    },
}

/// Opens the boards of boards.yaml (`hil run`, `hil flash`, `hil doctor`).
pub struct RigOpener;

impl RigOpener {
    /// Open a board as a [`RigSession`] (for commands that drive it directly, like `hil flash`).
    pub fn open_session(&self, board: &Board) -> Result<RigSession, OpenError> {
        let name = &board.name.value;
        let chip = hil_chips::Chip::by_name(&board.chip.value)
            .ok_or_else(|| OpenError::UnknownChip { board: name.clone(), chip: board.chip.value.clone() })?;
        let backends = if board.virtual_board.is_some() {
            open_virtual(board)?
        } else if let Some(lab) = &board.lab {
            open_lab(name, chip, &lab.value)?
        } else {
            return Err(OpenError::NoBackend(name.clone()));
        };
        tracing::info!(board = %board.name.value, "opened {}", backends.description);
        RigSession::new(board.clone(), backends)
            .map_err(|source| OpenError::Session { board: name.clone(), source: Box::new(source) })
    }
}

impl BoardOpener for RigOpener {
    fn open(&self, board: &Board, _cancel: &CancelFlag) -> Result<Box<dyn BoardSession>, OpenError> {
        Ok(Box::new(self.open_session(board)?))
    }
}

/// How a modem line maps to a target line, from boards.yaml's `asserted-level` (default low:
/// most adapters' RTS#/DTR# are active low).
fn wiring(ctl: &LineControl, active_level: PinLevel) -> Option<Wiring> {
    let signal = match ctl.via.value {
        LineDriver::SerialDtr => ModemSignal::Dtr,
        LineDriver::SerialRts => ModemSignal::Rts,
        _ => return None,
    };
    let asserted = ctl.asserted_level.unwrap_or(PinLevel::Low);
    let polarity = if asserted == active_level { Polarity::AssertedIsActive } else { Polarity::DeassertedIsActive };
    Some(Wiring { signal, polarity })
}

#[cfg(feature = "virtual")]
fn open_virtual(board: &Board) -> Result<Backends, OpenError> {
    crate::virtual_backend::open(board)
}

#[cfg(not(feature = "virtual"))]
fn open_virtual(board: &Board) -> Result<Backends, OpenError> {
    Err(OpenError::VirtualUnavailable(board.name.value.clone()))
}

fn open_lab(board: &str, chip: &'static hil_chips::Chip, lab: &LabBoard) -> Result<Backends, OpenError> {
    let serial_error = |source| OpenError::Serial { board: board.to_owned(), source };
    let line_error = |what| move |source| OpenError::ControlLine { board: board.to_owned(), what, source };
    let serial = match &lab.serial {
        Some(s) => Some(crate::serial_link::SerialLink::open(&s.port.value, s.baud.value).map_err(serial_error)?),
        None => None,
    };
    // BOOT0 is active high (ROM), NRST active low (in reset).
    let boot0 = wiring(&lab.boot0, PinLevel::High);
    let reset = wiring(&lab.nrst, PinLevel::Low);
    let mut lines: Option<Box<dyn crate::backend::ControlLines + Send>> =
        match (&serial, boot0.is_some() || reset.is_some()) {
            (Some(link), true) => {
                Some(Box::new(SerialControlLines::new(link.clone_port().map_err(serial_error)?, boot0, reset)))
            }
            _ => None,
        };
    // Opening a tty asserts DTR and RTS (Linux raises them on open unless the port is told
    // otherwise): wired to NRST, that holds the target in reset and the probe cannot halt it.
    // Drive the wired lines to the run state (NRST released, BOOT0 low) before anything else.
    if let Some(l) = lines.as_mut() {
        if reset.is_some() {
            l.set_reset(false).map_err(line_error("releasing NRST"))?;
        }
        if boot0.is_some() {
            l.set_boot0(false).map_err(line_error("driving BOOT0 low"))?;
        }
    }
    Ok(Backends {
        serial,
        lines,
        power: lab.power.as_ref().map(|p| {
            Box::new(CommandPower { on: p.on.clone(), off: p.off.clone() }) as Box<dyn crate::backend::PowerSwitch>
        }),
        usb: lab.usb.as_ref().map(|u| {
            Box::new(crate::usb::NusbConnector { selector: u.value.clone() }) as Box<dyn crate::backend::UsbConnector>
        }),
        clock: crate::engine::shared_wall_clock(),
        probe: lab.probe.as_ref().map(|p| {
            Box::new(crate::probe::ProbeRsConnector {
                selector: p.selector.value.clone(),
                chip,
                options: crate::probe::ProbeOptions {
                    speed_khz: p.speed_khz,
                    connect_under_reset: p.connect_under_reset,
                    ..Default::default()
                },
            }) as Box<dyn crate::backend::ProbeConnector>
        }),
        keep_alive: None,
        description: "lab board".into(),
    })
}

/// The opener `hil run` uses: boards as configured, probes through the probe layer.
pub fn rig_opener() -> RigOpener {
    RigOpener
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(via: LineDriver, level: Option<PinLevel>) -> LineControl {
        LineControl { via: hil_config::Located::new(via), asserted_level: level }
    }

    #[test]
    fn asserted_level_maps_to_polarity() {
        // FTDI-style RTS# straight to NRST: asserting pulls NRST low = reset.
        let w = wiring(&ctl(LineDriver::SerialRts, None), PinLevel::Low).unwrap();
        assert_eq!((w.signal, w.polarity), (ModemSignal::Rts, Polarity::AssertedIsActive));
        // DTR# straight to BOOT0: BOOT0 high needs DTR deasserted.
        let w = wiring(&ctl(LineDriver::SerialDtr, None), PinLevel::High).unwrap();
        assert_eq!(w.polarity, Polarity::DeassertedIsActive);
        // Through an inverting transistor stage.
        let w = wiring(&ctl(LineDriver::SerialDtr, Some(PinLevel::High)), PinLevel::High).unwrap();
        assert_eq!(w.polarity, Polarity::AssertedIsActive);
        assert!(wiring(&ctl(LineDriver::Probe, None), PinLevel::Low).is_none());
    }
}
