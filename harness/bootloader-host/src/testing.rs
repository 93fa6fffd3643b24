//! Test doubles (compiled for tests only): a scripted serial port.
//!
//! `ScriptedPort` plays a device from a script of steps: `Host(bytes)` is what the host must write
//! next, `Device(bytes)` what the device sends once every earlier `Host` step was written. It is no
//! bootloader model: it checks the host's bytes and replays canned answers. The end-to-end runs
//! against the virtual ROM live in the rig.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits};

#[derive(Clone, Debug)]
pub enum Step {
    Host(Vec<u8>),
    Device(Vec<u8>),
}

pub use Step::{Device, Host};

#[derive(Debug)]
pub struct State {
    script: VecDeque<Step>,
    matched: usize,
    rx: VecDeque<u8>,
    pub written: Vec<u8>,
    pub mismatch: Option<String>,
    pub parity: Parity,
    pub baud: u32,
    timeout: Duration,
    /// Behave like a Linux PTY: accept a parity setting and keep `Parity::None`.
    pub drops_parity: bool,
    /// (time, "DTR"/"RTS", asserted)
    pub modem: Vec<(Instant, &'static str, bool)>,
    /// When set, a read that finds nothing lets the read timeout pass on this clock instead of
    /// sleeping (what a gated virtual board does), so tests measure waits on it.
    pub clock: Option<Arc<crate::clock::testing::ManualClock>>,
    /// Answers host bytes once the script is done: a tiny device model for one test.
    pub responder: Option<Responder>,
}

/// A closure from each host byte to the device's answer.
pub struct Responder(pub Box<dyn FnMut(u8) -> Vec<u8> + Send>);

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

#[derive(Clone)]
pub struct Handle(Arc<Mutex<State>>);

impl Handle {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Panics unless the host wrote exactly the script.
    pub fn assert_done(&self) {
        let s = self.state();
        assert!(s.mismatch.is_none(), "{}", s.mismatch.as_deref().unwrap_or_default());
        assert!(s.script.is_empty(), "script not finished, next: {:02X?}", s.script.front());
    }

    pub fn written(&self) -> Vec<u8> {
        self.state().written.clone()
    }
}

pub struct ScriptedPort(Arc<Mutex<State>>);

impl ScriptedPort {
    /// The port for the client and a handle for the test.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(script: Vec<Step>) -> (Box<dyn SerialPort>, Handle) {
        let mut state = State {
            script: script.into(),
            matched: 0,
            rx: VecDeque::new(),
            written: Vec::new(),
            mismatch: None,
            parity: Parity::None,
            baud: 115_200,
            timeout: Duration::from_millis(10),
            drops_parity: false,
            modem: Vec::new(),
            clock: None,
            responder: None,
        };
        release(&mut state);
        let shared = Arc::new(Mutex::new(state));
        (Box::new(ScriptedPort(shared.clone())), Handle(shared))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Moves leading `Device` steps into the receive buffer.
fn release(s: &mut State) {
    while let Some(Step::Device(bytes)) = s.script.front() {
        s.rx.extend(bytes.iter().copied());
        s.script.pop_front();
    }
}

impl io::Write for ScriptedPort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.lock();
        for &b in buf {
            s.written.push(b);
            if s.mismatch.is_some() {
                continue;
            }
            if s.script.is_empty()
                && let Some(r) = s.responder.as_mut()
            {
                let answer = (r.0)(b);
                s.rx.extend(answer);
                continue;
            }
            let at = s.written.len() - 1;
            let expected = match s.script.front() {
                Some(Step::Host(bytes)) => bytes.get(s.matched).copied(),
                _ => None,
            };
            match expected {
                Some(e) if e == b => {
                    s.matched += 1;
                    if let Some(Step::Host(bytes)) = s.script.front()
                        && s.matched == bytes.len()
                    {
                        s.script.pop_front();
                        s.matched = 0;
                        release(&mut s);
                    }
                }
                Some(e) => s.mismatch = Some(format!("host byte {at} is {b:02X}, script expects {e:02X}")),
                None => s.mismatch = Some(format!("host byte {at} ({b:02X}) is not in the script")),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Read for ScriptedPort {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = {
            let mut s = self.lock();
            if !s.rx.is_empty() {
                let n = buf.len().min(s.rx.len());
                for slot in buf.iter_mut().take(n) {
                    *slot = s.rx.pop_front().unwrap_or_default();
                }
                return Ok(n);
            }
            if let Some(clock) = &s.clock {
                crate::clock::Clock::sleep(clock.as_ref(), s.timeout);
                return Err(io::ErrorKind::TimedOut.into());
            }
            s.timeout
        };
        std::thread::sleep(timeout.min(Duration::from_millis(2)));
        Err(io::ErrorKind::TimedOut.into())
    }
}

impl SerialPort for ScriptedPort {
    fn name(&self) -> Option<String> {
        Some("scripted".into())
    }
    fn baud_rate(&self) -> serialport::Result<u32> {
        Ok(self.lock().baud)
    }
    fn data_bits(&self) -> serialport::Result<DataBits> {
        Ok(DataBits::Eight)
    }
    fn flow_control(&self) -> serialport::Result<FlowControl> {
        Ok(FlowControl::None)
    }
    fn parity(&self) -> serialport::Result<Parity> {
        Ok(self.lock().parity)
    }
    fn stop_bits(&self) -> serialport::Result<StopBits> {
        Ok(StopBits::One)
    }
    fn timeout(&self) -> Duration {
        self.lock().timeout
    }
    fn set_baud_rate(&mut self, baud_rate: u32) -> serialport::Result<()> {
        self.lock().baud = baud_rate;
        Ok(())
    }
    fn set_data_bits(&mut self, _: DataBits) -> serialport::Result<()> {
        Ok(())
    }
    fn set_flow_control(&mut self, _: FlowControl) -> serialport::Result<()> {
        Ok(())
    }
    fn set_parity(&mut self, parity: Parity) -> serialport::Result<()> {
        let mut s = self.lock();
        if !s.drops_parity {
            s.parity = parity;
        }
        Ok(())
    }
    fn set_stop_bits(&mut self, _: StopBits) -> serialport::Result<()> {
        Ok(())
    }
    fn set_timeout(&mut self, timeout: Duration) -> serialport::Result<()> {
        self.lock().timeout = timeout;
        Ok(())
    }
    fn write_request_to_send(&mut self, level: bool) -> serialport::Result<()> {
        self.lock().modem.push((Instant::now(), "RTS", level));
        Ok(())
    }
    fn write_data_terminal_ready(&mut self, level: bool) -> serialport::Result<()> {
        self.lock().modem.push((Instant::now(), "DTR", level));
        Ok(())
    }
    fn read_clear_to_send(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn read_data_set_ready(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn read_ring_indicator(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn read_carrier_detect(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn bytes_to_read(&self) -> serialport::Result<u32> {
        Ok(self.lock().rx.len() as u32)
    }
    fn bytes_to_write(&self) -> serialport::Result<u32> {
        Ok(0)
    }
    fn clear(&self, buffer: ClearBuffer) -> serialport::Result<()> {
        if matches!(buffer, ClearBuffer::Input | ClearBuffer::All) {
            self.lock().rx.clear();
        }
        Ok(())
    }
    fn try_clone(&self) -> serialport::Result<Box<dyn SerialPort>> {
        Ok(Box::new(ScriptedPort(self.0.clone())))
    }
    fn set_break(&self) -> serialport::Result<()> {
        Ok(())
    }
    fn clear_break(&self) -> serialport::Result<()> {
        Ok(())
    }
}
