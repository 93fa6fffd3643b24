//! The board's serial link. One port carries both the application's console and, at other times,
//! the ROM bootloader's AN3155 protocol, so one owner arbitrates: a background reader collects the
//! console while no bootloader session runs, and a bootloader session gets the port to itself.
//!
//! The same code serves a tty in the lab and the virtual board's PTY in CI.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serialport::SerialPort;

use crate::engine::CancelFlag;

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

#[derive(Default)]
struct Console {
    /// Everything the console reader received since the link was opened or cleared.
    bytes: Vec<u8>,
    /// Where the next `expect` starts looking.
    cursor: usize,
    /// When the reader last received anything.
    last_rx: Option<Instant>,
}

#[derive(Default)]
struct ReaderState {
    paused: bool,
    /// The reader acknowledged the pause (it is not touching the port).
    idle: bool,
}

struct Shared {
    console: Mutex<Console>,
    data: Condvar,
    state: Mutex<ReaderState>,
    state_changed: Condvar,
    stop: AtomicBool,
}

/// Owner of a serial port: console capture plus exclusive bootloader sessions.
pub struct SerialLink {
    name: String,
    port: Box<dyn SerialPort>,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

impl SerialLink {
    /// Open `path` at `baud` (8E1, as the ROM needs; a PTY keeps 8N1, which is fine).
    pub fn open(path: &str, baud: u32) -> Result<SerialLink, LinkError> {
        let (port, _) = hil_bootloader_host::uart::open_port(path, baud)
            .map_err(|e| LinkError::Io { port: path.to_string(), source: std::io::Error::other(e.to_string()) })?;
        Self::from_port(path, port)
    }

    /// Wrap an already configured port.
    pub fn from_port(name: &str, port: Box<dyn SerialPort>) -> Result<SerialLink, LinkError> {
        let shared = Arc::new(Shared {
            console: Mutex::new(Console::default()),
            data: Condvar::new(),
            state: Mutex::new(ReaderState::default()),
            state_changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut reader_port = port.try_clone().map_err(|source| LinkError::Port { port: name.into(), source })?;
        reader_port
            .set_timeout(Duration::from_millis(20))
            .map_err(|source| LinkError::Port { port: name.into(), source })?;
        let s = shared.clone();
        let reader = std::thread::Builder::new()
            .name(format!("console {name}"))
            .spawn(move || console_reader(reader_port, s))
            .map_err(|source| LinkError::Io { port: name.into(), source })?;
        Ok(SerialLink { name: name.into(), port, shared, reader: Some(reader) })
    }

    pub fn name(&self) -> &str {
        &self.name
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

    /// Wait until `needle` appears in the console output after the cursor; move the cursor past it.
    /// Returns the text from the cursor to the end of the match.
    pub fn expect(&self, needle: &str, deadline: Instant, cancel: &CancelFlag) -> Result<String, LinkError> {
        let start = Instant::now();
        let mut c = self.shared.console.lock().expect("console lock");
        loop {
            if let Some(pos) = find(&c.bytes[c.cursor..], needle.as_bytes()) {
                let end = c.cursor + pos + needle.len();
                let seen = String::from_utf8_lossy(&c.bytes[c.cursor..end]).into_owned();
                c.cursor = end;
                return Ok(seen);
            }
            if cancel.is_cancelled() {
                return Err(LinkError::Cancelled { port: self.name.clone() });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LinkError::NotSeen { port: self.name.clone(), needle: needle.into(), waited: now - start });
            }
            c = self
                .shared
                .data
                .wait_timeout(c, (deadline - now).min(Duration::from_millis(50)))
                .expect("console lock")
                .0;
        }
    }

    /// Console output not yet consumed by [`SerialLink::expect`].
    pub fn unread(&self) -> String {
        let c = self.shared.console.lock().expect("console lock");
        String::from_utf8_lossy(&c.bytes[c.cursor..]).into_owned()
    }

    /// Everything received on the console since the last [`SerialLink::clear`].
    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&self.shared.console.lock().expect("console lock").bytes).into_owned()
    }

    /// Forget the console so far (start of a scenario).
    pub fn clear(&self) {
        let mut c = self.shared.console.lock().expect("console lock");
        c.bytes.clear();
        c.cursor = 0;
    }

    /// Wait until the board has been silent for `quiet` (at most `max`), then forget the console:
    /// the tail of what a previous scenario started printing must not be read by the next one.
    /// Returns whether the line went quiet within `max`.
    pub fn clear_when_quiet(&self, quiet: Duration, max: Duration) -> bool {
        let give_up = Instant::now() + max;
        let mut c = self.shared.console.lock().expect("console lock");
        let went_quiet = loop {
            let now = Instant::now();
            let quiet_since = c.last_rx.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            if quiet_since >= quiet {
                break true;
            }
            if now >= give_up {
                break false;
            }
            let wait = (quiet - quiet_since).min(give_up - now);
            c = self.shared.data.wait_timeout(c, wait).expect("console lock").0;
        };
        c.bytes.clear();
        c.cursor = 0;
        went_quiet
    }

    /// Skip what is already in the console (a new expectation window starts now).
    pub fn mark(&self) {
        let mut c = self.shared.console.lock().expect("console lock");
        c.cursor = c.bytes.len();
    }

    /// Run `f` with the port to itself (an AN3155 session): the console reader pauses first and
    /// resumes afterwards. Console input not yet read is discarded before the session (the client
    /// needs a clean line); what arrives after it (an application started by Go) is console again.
    pub fn exclusive<R>(&mut self, f: impl FnOnce(Box<dyn SerialPort>) -> R) -> Result<R, LinkError> {
        self.pause(true);
        let result = (|| {
            let port = self.port.try_clone().map_err(|source| LinkError::Port { port: self.name.clone(), source })?;
            let _ = port.clear(serialport::ClearBuffer::Input);
            Ok(f(port))
        })();
        self.pause(false);
        result
    }

    fn pause(&self, paused: bool) {
        let mut st = self.shared.state.lock().expect("reader state");
        st.paused = paused;
        self.shared.state_changed.notify_all();
        if paused {
            // The reader polls with a 20 ms timeout: it acknowledges well within a second.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !st.idle && Instant::now() < deadline {
                st = self.shared.state_changed.wait_timeout(st, Duration::from_millis(50)).expect("reader state").0;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn console_reader(mut port: Box<dyn SerialPort>, s: Arc<Shared>) {
    let mut buf = [0u8; 512];
    while !s.stop.load(Ordering::SeqCst) {
        {
            let mut st = s.state.lock().expect("reader state");
            while st.paused && !s.stop.load(Ordering::SeqCst) {
                st.idle = true;
                s.state_changed.notify_all();
                st = s.state_changed.wait_timeout(st, Duration::from_millis(100)).expect("reader state").0;
            }
            st.idle = false;
        }
        match port.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                let mut c = s.console.lock().expect("console lock");
                c.bytes.extend_from_slice(&buf[..n]);
                c.last_rx = Some(Instant::now());
                s.data.notify_all();
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // A PTY whose other side is gone reads EIO; keep trying slowly (the board may come back).
                tracing::debug!("console read: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for SerialLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.pause(false);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn console_expectations_consume_output_in_order() {
        let (mut board, path) = pty();
        let link = SerialLink::open(&path, 115_200).unwrap();
        board.write_all(b"boot\r\napp v1 ready\r\nblink\r\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = link.expect("ready", deadline, &CancelFlag::new()).unwrap();
        assert_eq!(seen, "boot\r\napp v1 ready");
        // "boot" was consumed: it is not found again.
        let e = link.expect("boot", Instant::now() + Duration::from_millis(200), &CancelFlag::new()).unwrap_err();
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
        let got = link
            .exclusive(|mut port| {
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
        assert_eq!(link.console_text(), "", "the ACK was not taken as console output");
        board.write_all(b"after").unwrap();
        link.expect("after", Instant::now() + Duration::from_secs(5), &CancelFlag::new()).unwrap();
    }

    #[test]
    fn clearing_waits_for_the_board_to_finish_its_line() {
        let (mut board, path) = pty();
        let link = SerialLink::open(&path, 115_200).unwrap();
        board.write_all(b"reset+jump").unwrap();
        link.expect("jump", Instant::now() + Duration::from_secs(5), &CancelFlag::new()).unwrap();
        // The rest of the line arrives while the next scenario starts.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            board.write_all(b"\r\n").unwrap();
            board
        });
        assert!(link.clear_when_quiet(Duration::from_millis(150), Duration::from_secs(5)));
        let _board = writer.join().unwrap();
        assert_eq!(link.console_text(), "", "the tail of the old line was cleared with it");
    }

    #[test]
    fn clearing_gives_up_on_a_board_that_never_stops_talking() {
        let (mut board, path) = pty();
        let link = SerialLink::open(&path, 115_200).unwrap();
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
        assert!(!link.clear_when_quiet(Duration::from_millis(100), Duration::from_millis(300)));
        stop.store(true, Ordering::SeqCst);
        let _board = chatter.join().unwrap();
    }

    #[test]
    fn cancellation_ends_a_wait() {
        let (_board, path) = pty();
        let link = SerialLink::open(&path, 115_200).unwrap();
        let c = CancelFlag::new();
        c.cancel();
        let e = link.expect("never", Instant::now() + Duration::from_secs(30), &c).unwrap_err();
        assert!(matches!(e, LinkError::Cancelled { .. }));
    }
}
