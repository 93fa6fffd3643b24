//! Whose fault a failed step is. A scenario is `failed` when the board (its firmware or chip) did
//! not do what the step expects, and `error` when the rig could not carry the step out (a probe
//! lost, a port vanished, a board thread gone, a wall-clock safety net tripped, a step this board
//! cannot do). The seams below the steps return typed errors; [`StepError::blame`] decides from
//! them, so the verdict never depends on how an error message is worded.

use hil_bootloader_host::control::ControlError;
use hil_bootloader_host::dfu::{DfuError, TransferError, UsbError};
use hil_bootloader_host::uart::UartError;

use crate::probe::ProbeError;
use crate::serial_link::LinkError;

/// Who a failed step blames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The board did not do what was expected: a verdict on the firmware or the chip (`failed`).
    Board,
    /// The rig, its hardware or the scenario's fit to this board (`error`).
    Rig,
}

/// Why a step could not pass.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Uart(#[from] UartError),
    #[error(transparent)]
    Dfu(#[from] DfuError),
    #[error(transparent)]
    Usb(#[from] UsbError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Lines(#[from] ControlError),
    #[error(transparent)]
    Power(#[from] crate::backend::PowerError),
    /// The scenario asks for option bits the chip data does not describe.
    #[error(transparent)]
    OptionBits(#[from] crate::option_bits::OptionBitsError),
    /// The board did not meet an expectation; the message says what was seen.
    #[error("{0}")]
    Expectation(String),
    /// The step cannot be carried out on this board or with this scenario (a capability the
    /// board lacks, a value that needs an image flashed first, an image that cannot be loaded).
    #[error("{0}")]
    Unsupported(String),
    /// The virtual board's USB device as the rig's virtual host reaches it.
    #[cfg(feature = "virtual")]
    #[error("{0}")]
    VirtualUsb(#[from] hil_virtual_board::BoardError),
}

impl StepError {
    pub fn blame(&self) -> Blame {
        match self {
            StepError::Uart(e) => match e {
                // The host's side of the line: the port or the OS.
                UartError::Io { .. } | UartError::Port { .. } | UartError::InvalidArgument { .. } => Blame::Rig,
                _ => Blame::Board,
            },
            StepError::Dfu(e) => match e {
                DfuError::Transfer { source: TransferError::Other(_), .. } | DfuError::InvalidArgument { .. } => {
                    Blame::Rig
                }
                _ => Blame::Board,
            },
            // Not found, ambiguous or refused by the OS: the bench, not the chip. (A ROM that never
            // enumerates is caught by `expect-usb`, which asks whether the device is present.)
            StepError::Usb(_) => Blame::Rig,
            StepError::Link(e) => {
                if matches!(e, LinkError::NotSeen { .. }) {
                    Blame::Board
                } else {
                    Blame::Rig
                }
            }
            StepError::Probe(e) => {
                if e.is_link_failure() {
                    Blame::Rig
                } else {
                    Blame::Board
                }
            }
            StepError::Lines(_) | StepError::Power(_) | StepError::OptionBits(_) | StepError::Unsupported(_) => {
                Blame::Rig
            }
            #[cfg(feature = "virtual")]
            StepError::VirtualUsb(e) => {
                if e.is_infrastructure() {
                    Blame::Rig
                } else {
                    Blame::Board
                }
            }
            StepError::Expectation(_) => Blame::Board,
        }
    }

    /// The step's outcome for this error, its message prefixed with `context` when given:
    /// `failed` when the board is to blame, `error` when the rig is.
    pub fn outcome(&self, context: Option<&str>) -> crate::engine::StepOutcome {
        let message = match context {
            Some(c) => format!("{c}: {self}"),
            None => self.to_string(),
        };
        match self.blame() {
            Blame::Board => crate::engine::StepOutcome::failed(message),
            Blame::Rig => crate::engine::StepOutcome::error(message),
        }
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        StepError::Unsupported(message.into())
    }

    pub(crate) fn expectation(message: impl Into<String>) -> Self {
        StepError::Expectation(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hil_bootloader_host::uart::{Command, Stage, Subject};

    #[test]
    fn the_board_is_blamed_for_what_it_answered_and_the_rig_for_its_own_side() {
        let nack = UartError::Nack {
            command: Command::Go,
            subject: Subject::Address(0x0800_0000),
            stage: Stage::Address,
            sent: vec![0x08, 0, 0, 0, 0x08],
            hint: None,
        };
        assert_eq!(StepError::from(nack).blame(), Blame::Board);
        let io = UartError::Io { during: "Go".into(), source: std::io::Error::other("port vanished") };
        assert_eq!(StepError::from(io).blame(), Blame::Rig);
        let unseen = LinkError::NotSeen { port: "p".into(), needle: "hil-app".into(), waited: Default::default() };
        assert_eq!(StepError::from(unseen).blame(), Blame::Board);
        #[cfg(feature = "virtual")]
        {
            let gone = hil_virtual_board::BoardError::Gone("b".into());
            assert_eq!(StepError::from(gone).blame(), Blame::Rig);
            let detached = hil_virtual_board::BoardError::UsbDetached { board: "b".into() };
            assert_eq!(StepError::from(detached).blame(), Blame::Board);
        }
        assert_eq!(StepError::unsupported("board `x` has no debug probe").blame(), Blame::Rig);
        assert_eq!(StepError::expectation("pc outside").blame(), Blame::Board);
    }
}
