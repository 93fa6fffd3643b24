//! `hil sim serve`: a virtual board on its own, its USART on a PTY.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::Level;

pub fn serve(
    boards: &Path,
    board: &str,
    uart_link: Option<&Path>,
    image: Option<&Path>,
    boot0: Option<Level>,
) -> Result<ExitCode> {
    let _ = (boards, board, uart_link, image, boot0);
    Err(crate::commands::not_yet_supported("running a standalone virtual board (`hil sim serve`)"))
}
