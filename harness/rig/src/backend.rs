//! The seams below the steps: what a board offers, as small traits. Lab hardware and the virtual
//! board implement the same traits; nothing above this module knows which it talks to.

use std::time::Duration;

pub use hil_bootloader_host::control::{ControlError, ControlLines};

/// Switches a board's power.
pub trait PowerSwitch: Send {
    fn power_cycle(&mut self, off_for: Duration) -> Result<(), String>;
}

/// Time as the board experiences it: `wait` lets `d` pass on the board (wall time in the lab;
/// virtual time on a virtual board, which in `timing: fast` may take less wall time).
pub trait BoardClock: Send {
    fn wait(&mut self, d: Duration);
    /// `wait`, cut short once `stop()` says so (Ctrl-C must not sit out a long `wait` step).
    /// Returns whether it was cut short. The default waits in slices of at most 50 ms; a clock
    /// whose slices would not add up to `d` exactly overrides it.
    fn wait_unless(&mut self, d: Duration, stop: &dyn Fn() -> bool) -> bool {
        let end = std::time::Instant::now() + d;
        loop {
            if stop() {
                return true;
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.wait(left.min(Duration::from_millis(50)));
        }
    }
}

/// Opens the ROM's USB DFU device when it is there.
pub trait UsbConnector: Send {
    /// Whether the DFU device is enumerated right now.
    fn present(&mut self) -> Result<bool, String>;
    /// Open it (fails if it is not present).
    fn open(&mut self) -> Result<Box<dyn hil_bootloader_host::dfu::ControlTransfer + Send>, String>;
}

/// Everything one board offers the steps. Missing capabilities are `None`.
pub struct Backends {
    pub serial: Option<crate::serial_link::SerialLink>,
    pub lines: Option<Box<dyn ControlLines + Send>>,
    pub power: Option<Box<dyn PowerSwitch>>,
    pub usb: Option<Box<dyn UsbConnector>>,
    pub clock: Box<dyn BoardClock>,
    /// Opened by the caller (probe-rs), for the steps that need the probe.
    pub probe_selector: Option<String>,
    pub probe_speed_khz: Option<u32>,
    pub connect_under_reset: bool,
    /// Keeps the backend alive (e.g. the virtual board's thread) until the session closes.
    pub keep_alive: Option<Box<dyn std::any::Any + Send>>,
    /// What the backend is, for logs ("virtual board g071-virtual.3", "lab").
    pub description: String,
}

/// Wall-clock time (lab boards).
pub struct WallClock;

impl BoardClock for WallClock {
    fn wait(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Power through external commands (uhubctl, a relay CLI), run without a shell.
pub struct CommandPower {
    pub on: Vec<String>,
    pub off: Vec<String>,
}

impl PowerSwitch for CommandPower {
    fn power_cycle(&mut self, off_for: Duration) -> Result<(), String> {
        run_command(&self.off)?;
        std::thread::sleep(off_for);
        run_command(&self.on)
    }
}

fn run_command(argv: &[String]) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty power command")?;
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("power command `{}`: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "power command `{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
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
        let e = bad.power_cycle(Duration::ZERO).unwrap_err();
        assert!(e.starts_with("power command `false` failed"), "{e}");
        let mut missing = CommandPower { on: vec![], off: vec!["/nonexistent/uhubctl".into()] };
        assert!(missing.power_cycle(Duration::ZERO).unwrap_err().contains("/nonexistent/uhubctl"));
    }

    #[test]
    fn a_wall_clock_wait_ends_when_told_to_stop() {
        let t0 = std::time::Instant::now();
        let stop_at = t0 + Duration::from_millis(100);
        let cut = WallClock.wait_unless(Duration::from_secs(30), &|| std::time::Instant::now() >= stop_at);
        assert!(cut);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(!WallClock.wait_unless(Duration::from_millis(20), &|| false), "a wait left alone runs out");
    }
}
