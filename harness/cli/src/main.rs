//! `hil`: the bootloader conformance rig's command line.
//!
//! Exit codes: 0 everything passed / valid; 1 a scenario failed; 2 configuration, usage or
//! "not yet supported" errors (the run never started); `hil run` stopped by SIGINT 130, by
//! SIGTERM 143 (128 + the signal number).

mod bench;
mod cli;
mod commands;
mod discover;
mod doctor;
mod flash;
mod hardware;
mod output;
mod serial_adapter;
mod signals;
mod sim;
mod usbredir_bridge;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    output::init_logging(args.verbose);
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::EXIT_CONFIG)
        }
    }
}
