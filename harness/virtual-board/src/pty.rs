//! A USART exposed as a pseudo-terminal. The peer (stm32flash, the harness's serialport client)
//! opens the slave path; the board holds the master.
//!
//! The board keeps its own slave descriptor open (in raw mode) so that the master never reads
//! EIO while no peer is connected. Linux PTYs carry no parity (the pty driver clears PARENB;
//! shared/reference/bootloader-protocols.md section 7): the board sees plain bytes, so parity
//! errors can only be injected in process. The peer's configured input speed (termios, shared
//! between both ends) is passed on as the host's baud rate.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{BaudRate, SetArg, cfgetispeed, cfmakeraw, cfsetspeed, tcgetattr, tcsetattr};

/// Bytes a PTY reader received from the peer, with the peer's baud rate.
pub struct PtyInput {
    pub usart: usize,
    pub bytes: Vec<u8>,
    pub baud: Option<u32>,
}

/// One PTY: master and the board's own slave descriptor.
pub struct Pty {
    pub usart: usize,
    pub path: PathBuf,
    pub link: Option<PathBuf>,
    master: Arc<OwnedFd>,
    _slave: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    /// Device output bytes the peer was too slow to take (PTY buffer full).
    pub dropped: u64,
}

/// Numeric value of a termios speed.
pub fn baud_value(b: BaudRate) -> Option<u32> {
    Some(match b {
        BaudRate::B1200 => 1200,
        BaudRate::B2400 => 2400,
        BaudRate::B4800 => 4800,
        BaudRate::B9600 => 9600,
        BaudRate::B19200 => 19_200,
        BaudRate::B38400 => 38_400,
        BaudRate::B57600 => 57_600,
        BaudRate::B115200 => 115_200,
        BaudRate::B230400 => 230_400,
        BaudRate::B460800 => 460_800,
        BaudRate::B500000 => 500_000,
        BaudRate::B576000 => 576_000,
        BaudRate::B921600 => 921_600,
        BaudRate::B1000000 => 1_000_000,
        BaudRate::B1152000 => 1_152_000,
        BaudRate::B1500000 => 1_500_000,
        BaudRate::B2000000 => 2_000_000,
        BaudRate::B2500000 => 2_500_000,
        BaudRate::B3000000 => 3_000_000,
        BaudRate::B3500000 => 3_500_000,
        BaudRate::B4000000 => 4_000_000,
        _ => return None,
    })
}

impl Pty {
    /// Open a PTY for USART `usart` and start its reader, which calls `deliver` with the peer's
    /// bytes (until the PTY is dropped).
    pub fn open(
        usart: usize,
        link: Option<&Path>,
        deliver: impl Fn(PtyInput) -> bool + Send + 'static,
    ) -> Result<Pty, PtyError> {
        let sys = |step: &'static str, path: Option<&Path>| {
            let path = path.map(Path::to_path_buf);
            move |source: nix::Error| PtyError::Sys { step, path: path.clone(), source }
        };
        let r = nix::pty::openpty(None, None).map_err(sys("openpty", None))?;
        let path = nix::unistd::ttyname(&r.slave).map_err(sys("ttyname", None))?;
        // Raw mode so that the line discipline neither echoes nor edits the device's bytes, and
        // 115200 Bd until the peer configures its own rate (a fresh PTY says 38400, which the
        // board would take as a rate mismatch with the fixtures' 115200 Bd USART).
        let mut t = tcgetattr(&r.slave).map_err(sys("tcgetattr", Some(&path)))?;
        cfmakeraw(&mut t);
        cfsetspeed(&mut t, BaudRate::B115200).map_err(sys("cfsetspeed", Some(&path)))?;
        tcsetattr(&r.slave, SetArg::TCSANOW, &t).map_err(sys("tcsetattr", Some(&path)))?;
        let flags = fcntl(&r.master, FcntlArg::F_GETFL).map_err(sys("fcntl F_GETFL", Some(&path)))?;
        fcntl(&r.master, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK))
            .map_err(sys("fcntl O_NONBLOCK", Some(&path)))?;
        if let Some(l) = link {
            claim_link(l)?;
            std::os::unix::fs::symlink(&path, l).map_err(|source| PtyError::Link {
                link: l.to_path_buf(),
                pty: path.clone(),
                source,
            })?;
        }
        let master = Arc::new(r.master);
        let slave = Arc::new(r.slave);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (master, slave, stop) = (master.clone(), slave.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("pty-usart{usart}"))
                .spawn(move || read_loop(usart, &master, &slave, &stop, deliver))
                .map_err(PtyError::Reader)?
        };
        Ok(Pty {
            usart,
            path,
            link: link.map(Path::to_path_buf),
            master,
            _slave: slave,
            stop,
            reader: Some(reader),
            dropped: 0,
        })
    }

    /// Write device output to the peer without blocking; bytes that do not fit are dropped.
    pub fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match nix::unistd::write(self.master.as_fd(), bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    self.dropped += bytes.len() as u64;
                    return;
                }
            }
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        // Only our own link: someone may have replaced it meanwhile.
        if let Some(l) = &self.link
            && std::fs::read_link(l).is_ok_and(|t| t == self.path)
        {
            let _ = std::fs::remove_file(l);
        }
    }
}

/// Why a board's PTY could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("{step}{}: {source}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Sys { step: &'static str, path: Option<PathBuf>, source: nix::Error },
    #[error(transparent)]
    Claim(#[from] LinkError),
    #[error("symlink {link} -> {pty}: {source}")]
    Link { link: PathBuf, pty: PathBuf, source: std::io::Error },
    #[error("starting the PTY reader thread: {0}")]
    Reader(std::io::Error),
}

/// Why `--uart-link` may not be created where asked.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("--uart-link {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("refusing to replace {path}: it is a link to {target}{in_use}; remove it or choose another path")]
    LiveLink { path: PathBuf, target: PathBuf, in_use: &'static str },
    #[error(
        "refusing to replace {path}: it exists and is {what}, not a link this board made; remove it or choose another path"
    )]
    Exists { path: PathBuf, what: &'static str },
}

/// Make sure a link may be created at `l`: nothing is there, or a stale link an earlier board
/// left (a symlink to a PTY that no longer exists), which is removed. Anything else - a file, a
/// directory, a link to a live PTY (another board serving) - is refused: never delete what this
/// board did not create.
pub fn claim_link(l: &Path) -> Result<(), LinkError> {
    let io = |source| LinkError::Io { path: l.to_path_buf(), source };
    let meta = match std::fs::symlink_metadata(l) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
        Ok(m) => m,
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(l).map_err(io)?;
        if target.starts_with("/dev/pts/") && !target.exists() {
            return std::fs::remove_file(l).map_err(io);
        }
        let in_use = if target.starts_with("/dev/pts/") { " (a PTY in use: another board may be serving)" } else { "" };
        return Err(LinkError::LiveLink { path: l.to_path_buf(), target, in_use });
    }
    let what = if meta.is_dir() {
        "a directory"
    } else if meta.is_file() {
        "a regular file"
    } else {
        "a special file"
    };
    Err(LinkError::Exists { path: l.to_path_buf(), what })
}

/// The baud rate the peer set on the PTY. Standard rates are termios speed codes; other tools
/// (the serialport crate on Linux, for any rate) set `BOTHER` with the rate in `termios2`
/// (TCSETS2), which the classic termios API cannot read back: read `termios2` then.
fn peer_baud(slave: &OwnedFd) -> Option<u32> {
    #[cfg(all(target_os = "linux", not(any(target_arch = "powerpc", target_arch = "powerpc64"))))]
    {
        use std::os::fd::AsRawFd;
        let mut t2: nix::libc::termios2 = unsafe { std::mem::zeroed() };
        // SAFETY: TCGETS2 fills a termios2 the kernel defines; the fd is the open PTY slave.
        let r = unsafe { nix::libc::ioctl(slave.as_raw_fd(), nix::libc::TCGETS2, &mut t2) };
        if r == 0 && t2.c_cflag & nix::libc::CBAUD == nix::libc::BOTHER {
            return (t2.c_ispeed > 0).then_some(t2.c_ispeed);
        }
    }
    tcgetattr(slave).ok().and_then(|t| baud_value(cfgetispeed(&t)))
}

fn read_loop(usart: usize, master: &OwnedFd, slave: &OwnedFd, stop: &AtomicBool, deliver: impl Fn(PtyInput) -> bool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u8)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        match nix::unistd::read(master.as_fd(), &mut buf) {
            Ok(0) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Ok(n) => {
                let baud = peer_baud(slave);
                if !deliver(PtyInput { usart, bytes: buf[..n].to_vec(), baud }) {
                    return;
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            // EIO: no peer (cannot happen while the board holds the slave open); back off.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}
