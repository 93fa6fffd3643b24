//! Control lines: BOOT0 and NRST. One small trait; this module implements it over a serial
//! adapter's DTR/RTS. The rig implements it for a probe's nRST and for the virtual board's pins.

use std::fmt;
use std::time::Duration;

use serialport::SerialPort;

/// The two lines a bootloader entry needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Boot0,
    Reset,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Line::Boot0 => "BOOT0",
            Line::Reset => "NRST",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{line}: setting {signal} {}: {source}", if *.asserted { "asserted" } else { "deasserted" })]
    Serial { line: Line, signal: ModemSignal, asserted: bool, source: serialport::Error },
    #[error("{line} is not wired to anything on this board")]
    NotWired { line: Line },
    /// For implementations outside this crate (probe nRST, virtual pins).
    #[error("{line}: {message}")]
    Other { line: Line, message: String },
}

/// Drives BOOT0 and NRST in logical terms; implementations own the electrical mapping.
pub trait ControlLines {
    /// `true`: BOOT0 high, i.e. boot from system memory (the ROM bootloader) at the next reset.
    fn set_boot0(&mut self, high: bool) -> Result<(), ControlError>;
    /// `true`: hold the chip in reset (NRST low); `false`: release it.
    fn set_reset(&mut self, asserted: bool) -> Result<(), ControlError>;
    /// Waits between steps. Real lines sleep; virtual pins may advance virtual time instead.
    fn wait(&mut self, duration: Duration) {
        std::thread::sleep(duration)
    }
}

impl<T: ControlLines + ?Sized> ControlLines for &mut T {
    fn set_boot0(&mut self, high: bool) -> Result<(), ControlError> {
        (**self).set_boot0(high)
    }
    fn set_reset(&mut self, asserted: bool) -> Result<(), ControlError> {
        (**self).set_reset(asserted)
    }
    fn wait(&mut self, duration: Duration) {
        (**self).wait(duration)
    }
}

/// A modem-control output of a serial adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModemSignal {
    Dtr,
    Rts,
}

impl fmt::Display for ModemSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModemSignal::Dtr => "DTR",
            ModemSignal::Rts => "RTS",
        })
    }
}

/// How asserting a modem signal maps to the line's active state (BOOT0 high, NRST in reset).
///
/// Asserting a signal (stm32flash's `rts`/`dtr`, "high") sets the modem-control bit; most USB-UART
/// adapters have active-low RTS#/DTR# pins, so asserting drives the pin **low** (reference 2). RTS#
/// wired straight to NRST is therefore `AssertedIsActive` (asserted: pin low: in reset), and DTR#
/// wired straight to BOOT0 is `DeassertedIsActive` (BOOT0 high needs the pin high). A transistor
/// stage between adapter and board flips the choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    AssertedIsActive,
    DeassertedIsActive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wiring {
    pub signal: ModemSignal,
    pub polarity: Polarity,
}

/// BOOT0/NRST over DTR/RTS of a serial adapter. Give it its own handle to the port
/// (`port.try_clone()`), so the bootloader client keeps the data lines.
pub struct SerialControlLines {
    port: Box<dyn SerialPort>,
    boot0: Option<Wiring>,
    reset: Option<Wiring>,
}

impl SerialControlLines {
    pub fn new(port: Box<dyn SerialPort>, boot0: Option<Wiring>, reset: Option<Wiring>) -> Self {
        SerialControlLines { port, boot0, reset }
    }

    fn drive(&mut self, line: Line, wiring: Option<Wiring>, active: bool) -> Result<(), ControlError> {
        let wiring = wiring.ok_or(ControlError::NotWired { line })?;
        let asserted = match wiring.polarity {
            Polarity::AssertedIsActive => active,
            Polarity::DeassertedIsActive => !active,
        };
        match wiring.signal {
            ModemSignal::Dtr => self.port.write_data_terminal_ready(asserted),
            ModemSignal::Rts => self.port.write_request_to_send(asserted),
        }
        .map_err(|source| ControlError::Serial { line, signal: wiring.signal, asserted, source })
    }
}

impl ControlLines for SerialControlLines {
    fn set_boot0(&mut self, high: bool) -> Result<(), ControlError> {
        self.drive(Line::Boot0, self.boot0, high)
    }

    fn set_reset(&mut self, asserted: bool) -> Result<(), ControlError> {
        self.drive(Line::Reset, self.reset, asserted)
    }
}

/// Timing of the classic entry: BOOT0 high, NRST pulse, wait for the ROM, then sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryTiming {
    /// BOOT0 settles before reset is asserted.
    pub boot0_setup: Duration,
    /// How long NRST is held low.
    pub reset_pulse: Duration,
    /// From releasing NRST until the ROM samples the line for the 0x7F autobaud byte (or the app
    /// starts). BOOT0 is sampled on the 4th SYSCLK rising edge after reset (RM0008 3.4), so it must
    /// stay high at least this long.
    pub boot_delay: Duration,
}

impl Default for EntryTiming {
    /// stm32flash's GPIO sequences step in 100 ms units (`,` in `-i`; reference 2).
    fn default() -> Self {
        EntryTiming {
            boot0_setup: Duration::from_millis(10),
            reset_pulse: Duration::from_millis(100),
            boot_delay: Duration::from_millis(100),
        }
    }
}

/// Resets the chip with BOOT0 high so it starts the ROM bootloader. BOOT0 stays high; call
/// [`reset_to_application`] (or lower it yourself) afterwards. Sync the UART client next.
pub fn enter_bootloader(lines: &mut dyn ControlLines, timing: &EntryTiming) -> Result<(), ControlError> {
    lines.set_boot0(true)?;
    lines.wait(timing.boot0_setup);
    pulse_reset(lines, timing)
}

/// Resets the chip with BOOT0 low so it starts from flash.
pub fn reset_to_application(lines: &mut dyn ControlLines, timing: &EntryTiming) -> Result<(), ControlError> {
    lines.set_boot0(false)?;
    lines.wait(timing.boot0_setup);
    pulse_reset(lines, timing)
}

fn pulse_reset(lines: &mut dyn ControlLines, timing: &EntryTiming) -> Result<(), ControlError> {
    lines.set_reset(true)?;
    lines.wait(timing.reset_pulse);
    lines.set_reset(false)?;
    lines.wait(timing.boot_delay);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScriptedPort;

    /// Records what a sequence does instead of sleeping.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl ControlLines for Log {
        fn set_boot0(&mut self, high: bool) -> Result<(), ControlError> {
            self.0.push(format!("BOOT0={}", high as u8));
            Ok(())
        }
        fn set_reset(&mut self, asserted: bool) -> Result<(), ControlError> {
            self.0.push(format!("NRST={}", if asserted { "low" } else { "high" }));
            Ok(())
        }
        fn wait(&mut self, d: Duration) {
            self.0.push(format!("wait {}ms", d.as_millis()));
        }
    }

    #[test]
    fn classic_entry_sequence_order_and_timing() {
        let mut log = Log::default();
        enter_bootloader(&mut log, &EntryTiming::default()).unwrap();
        assert_eq!(log.0, ["BOOT0=1", "wait 10ms", "NRST=low", "wait 100ms", "NRST=high", "wait 100ms"]);
        let mut log = Log::default();
        reset_to_application(&mut log, &EntryTiming::default()).unwrap();
        assert_eq!(log.0[0], "BOOT0=0");
    }

    #[test]
    fn serial_lines_apply_polarity_per_line() {
        let (port, handle) = ScriptedPort::new(vec![]);
        let mut lines = SerialControlLines::new(
            port,
            // DTR# straight to BOOT0 (asserted drives it low), RTS# straight to NRST.
            Some(Wiring { signal: ModemSignal::Dtr, polarity: Polarity::DeassertedIsActive }),
            Some(Wiring { signal: ModemSignal::Rts, polarity: Polarity::AssertedIsActive }),
        );
        let timing = EntryTiming {
            boot0_setup: Duration::ZERO,
            reset_pulse: Duration::from_millis(5),
            boot_delay: Duration::ZERO,
        };
        enter_bootloader(&mut lines, &timing).unwrap();
        let events = handle.state().modem.clone();
        let seq: Vec<_> = events.iter().map(|(_, s, v)| (*s, *v)).collect();
        assert_eq!(seq, [("DTR", false), ("RTS", true), ("RTS", false)]);
        assert!(events[2].0 - events[1].0 >= Duration::from_millis(5), "reset pulse held");

        let mut unwired = SerialControlLines::new(ScriptedPort::new(vec![]).0, None, None);
        assert_eq!(unwired.set_boot0(true).unwrap_err().to_string(), "BOOT0 is not wired to anything on this board");
    }
}
