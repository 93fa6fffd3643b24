//! Errors of the virtual board. Each names the register, address, pin or board it is about.

use std::time::Duration;

use hil_cortex_m::{BusFault, MapError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BoardError {
    #[error("unknown chip {name:?} (shipped chips: {known})")]
    UnknownChip { name: String, known: String },
    #[error("chip {chip} cannot be modelled: {message}")]
    ChipModel { chip: String, message: String },
    #[error("chip {chip}: memory map: {source}")]
    Map { chip: String, source: MapError },
    #[error("a virtual board named {0:?} is already running")]
    NameTaken(String),
    #[error("no virtual board named {0:?} is running")]
    NotFound(String),
    #[error("board {board}: {what} did not complete within {deadline:?}")]
    Timeout { board: String, what: String, deadline: Duration },
    /// A wait on a board in `timing: fast` counts on the board's clock; the wall clock only guards
    /// against a board thread that stopped making progress (an emulator bug, a host stalled for
    /// minutes). Tripping it is a failure of the rig or the host, never of the firmware.
    #[error(
        "board {board}: {what} (a wait of {budget:?} on the board's clock) was still unanswered after {wall:?} of wall time: the wall-clock safety net tripped (host overloaded or emulator stuck; not a board failure)"
    )]
    WallSafetyNet { board: String, what: String, budget: Duration, wall: Duration },
    #[error("board {0}: the board thread has stopped")]
    Gone(String),
    #[error("board {board}: the board is powered off ({what} needs power)")]
    PoweredOff { board: String, what: String },
    #[error("board {board}: the chip is held in reset by NRST ({what} needs it released)")]
    InReset { board: String, what: String },
    #[error("board {board}: {fault}")]
    Bus { board: String, fault: BusFault },
    #[error("board {board}: debug access refused: {why}")]
    DebugRefused { board: String, why: String },
    #[error("board {board}: no USART {usart:?} (modelled: {known})")]
    NoUsart { board: String, usart: String, known: String },
    #[error("board {board}: no pin {pin:?}")]
    NoPin { board: String, pin: String },
    #[error("image: {0}")]
    Image(String),
    #[error("board {board}: PTY for {usart}: {source}")]
    Pty { board: String, usart: String, source: std::sync::Arc<crate::pty::PtyError> },
    #[error("board {board}: the core is not halted ({what} needs a halted core)")]
    NotHalted { board: String, what: String },
    #[error("board {board}: {usart} did not send {expected:?} within {deadline:?}; received {received:?}")]
    UartTimeout { board: String, usart: String, expected: String, received: String, deadline: Duration },
    #[error("board {board}: chip {chip} has no USB device (its ROM has no USB DFU)")]
    NoUsb { board: String, chip: String },
    #[error("board {board}: the USB device is not attached (no D+ pull-up: the ROM's DFU is not running)")]
    UsbDetached { board: String },
    #[error("board {board}: USB control transfer {request} got no answer within {deadline:?} (the device NAKs)")]
    UsbTimeout { board: String, request: String, deadline: Duration },
    #[error("board {board}: {message}")]
    Other { board: String, message: String },
}

impl BoardError {
    /// Whether this error is about the rig or the host (a lost board thread, a wall-clock safety
    /// net, a reply that never came), not about what the firmware or the chip did.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            BoardError::Timeout { .. }
                | BoardError::WallSafetyNet { .. }
                | BoardError::Gone(_)
                | BoardError::NotFound(_)
                | BoardError::NameTaken(_)
                | BoardError::Pty { .. }
        )
    }
}
