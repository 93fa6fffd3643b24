//! Errors of the virtual probe. Each names the board, and the address or register it is about.

use hil_virtual_board::BoardError;

#[derive(Debug, thiserror::Error)]
pub enum VirtualProbeError {
    #[error("no virtual board named {name:?} is running (running: {running})")]
    NoSuchBoard { name: String, running: String },
    #[error(
        "selector {selector} names no board and {count} virtual boards are running ({running}); \
         add the board name as the serial: {selector}:NAME"
    )]
    Ambiguous { selector: String, count: usize, running: String },
    #[error("the virtual probe of board {board:?} is already open (a debug port has one probe)")]
    InUse { board: String },
    #[error("board {board:?} runs chip {chip:?}, which has no chip data (shipped: {known})")]
    UnknownChip { board: String, chip: String, known: String },
    /// The board thread did not answer (gone, or past its deadline): the probe lost its target.
    #[error("virtual probe of board {board:?}: {what}: {source}")]
    Link { board: String, what: &'static str, source: Box<BoardError> },
    #[error("the virtual board has a SW-DP only: {0} is not supported")]
    Protocol(&'static str),
}

impl probe_rs::probe::ProbeError for VirtualProbeError {}
