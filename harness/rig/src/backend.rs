//! The seams below the steps: what a board offers, as small traits. Lab hardware and the virtual
//! board implement the same traits; nothing above this module knows which it talks to.

use std::time::Duration;

pub use hil_bootloader_host::control::{ControlError, ControlLines};

/// Switches a board's power.
pub trait PowerSwitch: Send {
    fn power_cycle(&mut self, off_for: Duration) -> Result<(), PowerError>;
}

/// The power switch failed (the rig's hardware, never the board's fault).
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("empty power command")]
    EmptyCommand,
    #[error("power command `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("power command `{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: std::process::ExitStatus, stderr: String },
    #[cfg(feature = "virtual")]
    #[error("virtual board power: {0}")]
    Virtual(#[from] hil_virtual_board::BoardError),
}

pub use hil_bootloader_host::clock::{Clock, ClockKind, Deadline, WallClock};

/// Opens the ROM's USB DFU device when it is there.
pub trait UsbConnector: Send {
    /// Whether the DFU device is enumerated right now.
    fn present(&mut self) -> Result<bool, crate::step_error::StepError>;
    /// Open it (fails if it is not present).
    fn open(
        &mut self,
    ) -> Result<Box<dyn hil_bootloader_host::dfu::ControlTransfer + Send>, crate::step_error::StepError>;
}

/// Attaches to a board's debug probe. Every call is a fresh attach: a power cycle ends a debug
/// session on real hardware (the core's debug registers reset at power-on), so the rig attaches
/// again after one. A lab probe (by VID:PID:serial) and the virtual board's probe both go through
/// probe-rs ([`crate::probe::ProbeRsConnector`]); the steps see only this seam and [`ProbeOps`].
pub trait ProbeConnector: Send {
    fn connect(&self) -> Result<Box<dyn crate::probe_ops::ProbeOps>, crate::probe::ProbeError>;
    /// Which probe, for messages (its selector).
    fn selector(&self) -> &str;
}

/// Everything one board offers the steps. Missing capabilities are `None`.
pub struct Backends {
    pub serial: Option<crate::serial_link::SerialLink>,
    pub lines: Option<Box<dyn ControlLines + Send>>,
    pub power: Option<Box<dyn PowerSwitch>>,
    pub usb: Option<Box<dyn UsbConnector>>,
    /// The board's time: wall time in the lab, the board's own clock for a virtual board (every
    /// step deadline and every wait of the steps count on it; DESIGN.md symmetry rule).
    pub clock: std::sync::Arc<dyn Clock>,
    pub probe: Option<Box<dyn ProbeConnector>>,
    /// Keeps the backend alive (e.g. the virtual board's thread) until the session closes.
    pub keep_alive: Option<Box<dyn std::any::Any + Send>>,
    /// What the backend is, for logs ("virtual board g071-virtual.3", "lab").
    pub description: String,
}

/// Power through external commands (uhubctl, a relay CLI), run without a shell.
pub struct CommandPower {
    pub on: Vec<String>,
    pub off: Vec<String>,
}

impl PowerSwitch for CommandPower {
    fn power_cycle(&mut self, off_for: Duration) -> Result<(), PowerError> {
        run_command(&self.off)?;
        std::thread::sleep(off_for);
        run_command(&self.on)
    }
}

fn run_command(argv: &[String]) -> Result<(), PowerError> {
    let (program, args) = argv.split_first().ok_or(PowerError::EmptyCommand)?;
    let command = argv.join(" ");
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|source| PowerError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PowerError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_commands_report_their_failures() {
        let mut ok = CommandPower { on: vec!["true".into()], off: vec!["true".into()] };
        ok.power_cycle(Duration::from_millis(1)).unwrap();
        let mut bad = CommandPower { on: vec!["true".into()], off: vec!["false".into()] };
        let e = bad.power_cycle(Duration::ZERO).unwrap_err().to_string();
        assert!(e.starts_with("power command `false` failed"), "{e}");
        let mut missing = CommandPower { on: vec![], off: vec!["/nonexistent/uhubctl".into()] };
        assert!(missing.power_cycle(Duration::ZERO).unwrap_err().to_string().contains("/nonexistent/uhubctl"));
    }
}
