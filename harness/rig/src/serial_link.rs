//! The board's serial link. One port carries both the application's console and, at other times,
//! the ROM bootloader's AN3155 protocol, so one owner arbitrates: console text is read when a step
//! waits for it, and a bootloader session gets the port to itself.
//!
//! The same code serves a tty in the lab and a virtual board's USART (in process, or its PTY in
//! `timing: realistic`). Every wait counts on the link's clock, which comes with the port: wall
//! time for a tty, the board's clock for a virtual board, whose clock runs only while the link
//! waits on it. That is also why nothing reads in the background: a background reader would let a
//! virtual board run on the host's schedule. A tty buffers what arrives between two reads (the
//! kernel keeps several KiB; consoles print a few lines between steps).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use hil_bootloader_host::clock::{Clock, Deadline, WallClock};
use serialport::SerialPort;

use crate::engine::CancelFlag;

/// Longest single read while waiting, so that cancellation is noticed (on the link's clock).
const READ_CHUNK: Duration = Duration::from_millis(100);
/// What one drain of buffered output takes at most (a board that never stops talking).
const DRAIN_LIMIT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("serial port {port}: {source}")]
    Port { port: String, source: serialport::Error },
    #[error("serial port {port}: {source}")]
    Io { port: String, source: std::io::Error },
    #[error("`{needle}` did not appear on {port} within {waited:?}")]
    NotSeen { port: String, needle: String, waited: Duration },
    #[error("cancelled while waiting on {port}")]
    Cancelled { port: String },
}

impl LinkError {
    /// The port itself failed (vanished, board thread gone), as opposed to the board not saying
    /// what was expected.
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, LinkError::Port { .. } | LinkError::Io { .. })
    }
}

#[derive(Default)]
struct Console {
    /// Everything read as console since the link was opened or cleared.
    bytes: Vec<u8>,
    /// Where the next `expect` starts looking.
    cursor: usize,
}

/// Owner of a serial port: console reads on demand plus exclusive bootloader sessions.
pub struct SerialLink {
    name: String,
    port: Box<dyn SerialPort>,
    clock: Arc<dyn Clock>,
    console: Console,
}

impl SerialLink {
    /// Open the tty at `path` at `baud` (8E1, as the ROM needs; a PTY keeps 8N1, which is fine);
    /// its timeouts are wall time.
    pub fn open(path: &str, baud: u32) -> Result<SerialLink, LinkError> {
        let (port, _) = hil_bootloader_host::uart::open_port(path, baud)
            .map_err(|e| LinkError::Io { port: path.to_string(), source: std::io::Error::other(e.to_string()) })?;
        Ok(Self::from_port(path, port, WallClock::shared()))
    }

    /// Wrap an already configured port whose read timeouts count on `clock`.
    pub fn from_port(name: &str, port: Box<dyn SerialPort>, clock: Arc<dyn Clock>) -> SerialLink {
        SerialLink { name: name.into(), port, clock, console: Console::default() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clock the link's waits count on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Another handle to the port (for its modem-control lines: DTR/RTS driving BOOT0/NRST).
    pub fn clone_port(&self) -> Result<Box<dyn SerialPort>, LinkError> {
        self.port.try_clone().map_err(|source| LinkError::Port { port: self.name.clone(), source })
    }

    /// Send bytes to the board (the application's command protocol).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        let port = self.name.clone();
        self.port.write_all(bytes).and_then(|_| self.port.flush()).map_err(|source| LinkError::Io { port, source })
    }

    /// One read of at most `timeout` into the console; the number of bytes read (0: none came).
    fn pump(&mut self, timeout: Duration) -> Result<usize, LinkError> {
        let mut buf = [0u8; 512];
        self.port.set_timeout(timeout).map_err(|source| LinkError::Port { port: self.name.clone(), source })?;
        match self.port.read(&mut buf) {
            Ok(n) => {
                self.console.bytes.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(source) => Err(LinkError::Io { port: self.name.clone(), source }),
        }
    }

    /// Take what the port has already received, without waiting.
    pub fn drain(&mut self) -> Result<(), LinkError> {
        let mut taken = 0;
        while taken < DRAIN_LIMIT {
            match self.pump(Duration::ZERO)? {
                0 => break,
                n => taken += n,
            }
        }
        Ok(())
    }

    /// Wait until `needle` appears in the console output after the cursor; move the cursor past it.
    /// Returns the text from the cursor to the end of the match. `deadline` is on the link's clock.
    pub fn expect(&mut self, needle: &str, deadline: &Deadline, cancel: &CancelFlag) -> Result<String, LinkError> {
        let start = self.clock.now();
        let mut looked_last = false;
        loop {
            let c = &mut self.console;
            if let Some(pos) = find(&c.bytes[c.cursor..], needle.as_bytes()) {
                let end = c.cursor + pos + needle.len();
                let seen = String::from_utf8_lossy(&c.bytes[c.cursor..end]).into_owned();
                c.cursor = end;
                return Ok(seen);
            }
            if cancel.is_cancelled() {
                return Err(LinkError::Cancelled { port: self.name.clone() });
            }
            let left = deadline.remaining();
            if left.is_zero() {
                // A last look at what already arrived; it also surfaces a port that is gone (whose
                // clock reads as the end of time) as the port's error, not as a board that kept
                // quiet.
                if !looked_last && self.pump(Duration::ZERO)? > 0 {
                    looked_last = true;
                    continue;
                }
                let waited = self.clock.now().saturating_sub(start);
                return Err(LinkError::NotSeen { port: self.name.clone(), needle: needle.into(), waited });
            }
            self.pump(left.min(READ_CHUNK))?;
        }
    }

    /// Console output not yet consumed by [`SerialLink::expect`].
    pub fn unread(&self) -> String {
        let c = &self.console;
        String::from_utf8_lossy(&c.bytes[c.cursor..]).into_owned()
    }

    /// Everything read on the console since the last [`SerialLink::clear`].
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&self.console.bytes).into_owned()
    }

    /// Forget the console so far (start of a scenario).
    pub fn clear(&mut self) {
        self.console.bytes.clear();
        self.console.cursor = 0;
    }

    /// Wait until the board has been silent for `quiet` (at most `max`), then forget the console:
    /// the tail of what a previous scenario started printing must not be read by the next one.
    /// Returns whether the line went quiet within `max`. Both on the link's clock.
    pub fn clear_when_quiet(&mut self, quiet: Duration, max: Duration) -> Result<bool, LinkError> {
        let give_up = Deadline::after(&self.clock, max);
        let mut quiet_since = self.clock.now();
        let went_quiet = loop {
            let silent = self.clock.now().saturating_sub(quiet_since);
            if silent >= quiet {
                break true;
            }
            if give_up.passed() {
                break false;
            }
            if self.pump((quiet - silent).min(give_up.remaining()))? > 0 {
                quiet_since = self.clock.now();
            }
        };
        self.clear();
        Ok(went_quiet)
    }

    /// Skip what is already in the console (a new expectation window starts now).
    pub fn mark(&mut self) -> Result<(), LinkError> {
        self.drain()?;
        self.console.cursor = self.console.bytes.len();
        Ok(())
    }

    /// Run `f` with the port to itself (an AN3155 session) and the link's clock. Console input not
    /// yet read is discarded before the session (the client needs a clean line); what arrives
    /// after it (an application started by Go) is console again.
    pub fn exclusive<R>(&mut self, f: impl FnOnce(Box<dyn SerialPort>, Arc<dyn Clock>) -> R) -> Result<R, LinkError> {
        let port = self.port.try_clone().map_err(|source| LinkError::Port { port: self.name.clone(), source })?;
        port.clear(serialport::ClearBuffer::Input)
            .map_err(|source| LinkError::Port { port: self.name.clone(), source })?;
        self.console.cursor = self.console.bytes.len();
        Ok(f(port, self.clock.clone()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A PTY pair: the test plays the board on the master side.
    fn pty() -> (std::fs::File, String) {
        use nix::fcntl::OFlag;
        use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname_r(&master).unwrap();
        let fd: std::os::fd::OwnedFd = master.into();
        (std::fs::File::from(fd), name)
    }

    fn within(link: &SerialLink, d: Duration) -> Deadline {
        Deadline::after(link.clock(), d)
    }

    #[test]
    fn console_expectations_consume_output_in_order() {
        let (mut board, path) = pty();
        let mut link = SerialLink::open(&path, 115_200).unwrap();
        board.write_all(b"boot\r\napp v1 ready\r\nblink\r\n").unwrap();
        let d = within(&link, Duration::from_secs(5));
        let seen = link.expect("ready", &d, &CancelFlag::new()).unwrap();
        assert_eq!(seen, "boot\r\napp v1 ready");
        // "boot" was consumed: it is not found again.
        let d = within(&link, Duration::from_millis(200));
        let e = link.expect("boot", &d, &CancelFlag::new()).unwrap_err();
        assert!(e.to_string().starts_with("`boot` did not appear on"), "{e}");
        assert!(link.console_text().starts_with("boot"));
    }

    #[test]
    fn sending_reaches_the_board() {
        let (mut board, path) = pty();
        let mut link = SerialLink::open(&path, 115_200).unwrap();
        link.send(b"v").unwrap();
        let mut b = [0u8; 1];
        board.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"v");
    }

    #[test]
    fn an_exclusive_session_sees_every_byte_and_the_console_none() {
        let (mut board, path) = pty();
        let mut link = SerialLink::open(&path, 115_200).unwrap();
        // Console text the session must not see.
        board.write_all(b"stale").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let got = link
            .exclusive(|mut port, _clock| {
                port.write_all(&[0x7F]).unwrap();
                let mut b = [0u8; 1];
                let mut tries = 0;
                // The "ROM" answers once it has seen the sync byte.
                let mut req = [0u8; 1];
                board.read_exact(&mut req).unwrap();
                board.write_all(&[0x79]).unwrap();
                port.set_timeout(Duration::from_millis(500)).unwrap();
                while port.read(&mut b).is_err() && tries < 10 {
                    tries += 1;
                }
                (req[0], b[0])
            })
            .unwrap();
        assert_eq!(got, (0x7F, 0x79));
        assert_eq!(link.console_text(), "", "neither the stale text nor the ACK was taken as console output");
        board.write_all(b"after").unwrap();
        let d = within(&link, Duration::from_secs(5));
        link.expect("after", &d, &CancelFlag::new()).unwrap();
    }

    #[test]
    fn clearing_waits_for_the_board_to_finish_its_line() {
        let (mut board, path) = pty();
        let mut link = SerialLink::open(&path, 115_200).unwrap();
        board.write_all(b"reset+jump").unwrap();
        let d = within(&link, Duration::from_secs(5));
        link.expect("jump", &d, &CancelFlag::new()).unwrap();
        // The rest of the line arrives while the next scenario starts.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            board.write_all(b"\r\n").unwrap();
            board
        });
        assert!(link.clear_when_quiet(Duration::from_millis(150), Duration::from_secs(5)).unwrap());
        let _board = writer.join().unwrap();
        assert_eq!(link.console_text(), "", "the tail of the old line was cleared with it");
    }

    #[test]
    fn clearing_gives_up_on_a_board_that_never_stops_talking() {
        let (mut board, path) = pty();
        let mut link = SerialLink::open(&path, 115_200).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let chatter = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                board.write_all(b".").unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            board
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!link.clear_when_quiet(Duration::from_millis(100), Duration::from_millis(300)).unwrap());
        stop.store(true, Ordering::SeqCst);
        let _board = chatter.join().unwrap();
    }

    #[test]
    fn cancellation_ends_a_wait() {
        let (_board, path) = pty();
        let mut link = SerialLink::open(&path, 115_200).unwrap();
        let c = CancelFlag::new();
        c.cancel();
        let d = within(&link, Duration::from_secs(30));
        let e = link.expect("never", &d, &c).unwrap_err();
        assert!(matches!(e, LinkError::Cancelled { .. }));
    }
}
