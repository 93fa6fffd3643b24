//! Lab hardware is locked while a command uses it, across processes: one OS file lock (flock) per
//! physical resource a board uses, `<lock dir>/<resource>.lock`. Keys are the resources, not the
//! board names, so two boards.yaml entries that share a serial port (or probe, or USB device)
//! exclude each other. A virtual board lives inside one process and locks nothing.
//!
//! The OS releases a lock when its holder dies, so a lock can never be held by a dead process;
//! the file's content (holder's pid and command) is what a dead holder leaves behind, and taking
//! over such a file is logged.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hil_config::Board;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("board `{board}`: {resource} is in use by {holder} (lock file {path}); waited {waited:?}")]
    Busy { board: String, resource: Resource, holder: String, path: PathBuf, waited: Duration },
    #[error("cannot use lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("board `{board}`: the wait for {resource} was cancelled")]
    Cancelled { board: String, resource: Resource },
}

/// A physical thing a lab board uses. The derived order is the order locks are taken in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// A debug probe, by its probe-rs selector (VID:PID in lower case, the serial as written).
    Probe(String),
    /// A tty, by its canonical path when it exists (a /dev/serial/by-id link and its target are
    /// one port), else by its absolute path.
    SerialPort(PathBuf),
    /// The ROM's USB DFU device, by its `VID:PID[:serial]` selector (VID:PID in lower case).
    Usb(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Probe(s) => write!(f, "probe {s}"),
            Resource::SerialPort(p) => write!(f, "serial port {}", p.display()),
            Resource::Usb(s) => write!(f, "USB device {s}"),
        }
    }
}

impl Resource {
    /// The lock file's name: readable, plus a hash of the whole key, because sanitising the
    /// readable part alone could give two resources one file.
    pub fn file_name(&self) -> String {
        let (kind, key) = match self {
            Resource::Probe(s) => ("probe", s.clone()),
            Resource::SerialPort(p) => ("serial", p.to_string_lossy().into_owned()),
            Resource::Usb(s) => ("usb", s.clone()),
        };
        let safe: String =
            key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        let safe: String = safe.trim_matches('_').chars().take(80).collect();
        format!("{kind}-{safe}-{:016x}.lock", fnv1a(format!("{kind}\0{key}").as_bytes()))
    }
}

/// FNV-1a 64: stable across processes and Rust versions (std's hasher promises neither), and
/// every process that locks a resource must name the same file.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// `VID:PID[:serial]` with VID and PID in lower case: hex digits, so `0483:DF11` is `0483:df11`.
/// Serial numbers stay as written (probe-rs matches them exactly).
fn selector_key(selector: &str) -> String {
    let mut parts = selector.trim().splitn(3, ':');
    let vid = parts.next().unwrap_or_default().to_ascii_lowercase();
    let pid = parts.next().map(str::to_ascii_lowercase);
    let serial = parts.next();
    match (pid, serial) {
        (Some(pid), Some(serial)) => format!("{vid}:{pid}:{serial}"),
        (Some(pid), None) => format!("{vid}:{pid}"),
        _ => vid,
    }
}

fn port_key(port: &str) -> PathBuf {
    let path = Path::new(port.trim());
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// What `board` must hold exclusively, in locking order, without duplicates. Nothing for a
/// virtual board. Selectors are compared as written (after case folding of VID:PID): a probe
/// named once with and once without its serial number counts as two probes.
pub fn board_resources(board: &Board) -> Vec<Resource> {
    let Some(lab) = &board.lab else { return Vec::new() };
    let lab = &lab.value;
    let mut r = Vec::new();
    if let Some(p) = &lab.probe {
        r.push(Resource::Probe(selector_key(&p.selector.value)));
    }
    if let Some(s) = &lab.serial {
        r.push(Resource::SerialPort(port_key(&s.port.value)));
    }
    if let Some(u) = &lab.usb {
        r.push(Resource::Usb(selector_key(&u.value)));
    }
    r.sort();
    r.dedup();
    r
}

/// Where lock files live: `$HIL_LOCK_DIR`, else `$XDG_RUNTIME_DIR/hil-locks`, else the temp dir.
pub fn default_lock_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HIL_LOCK_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("hil-locks");
    }
    std::env::temp_dir().join("hil-locks")
}

/// Held while a command uses a board's hardware; dropping it releases every resource.
#[derive(Debug)]
pub struct BoardLock {
    held: Vec<ResourceLock>,
}

impl BoardLock {
    /// Lock every resource of `board` in `dir`, in [`board_resources`] order (every process takes
    /// them in the same order, so two boards that share resources cannot deadlock). Waits up to
    /// `wait` in all for other holders (polling), or until `cancelled()` says stop; on failure
    /// whatever was taken is released.
    pub fn acquire(
        dir: &Path,
        board: &Board,
        wait: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<BoardLock, LockError> {
        let name = board.name.value.as_str();
        let deadline = Instant::now() + wait;
        let mut held = Vec::new();
        for resource in board_resources(board) {
            held.push(ResourceLock::acquire(dir, name, resource, deadline, cancelled)?);
        }
        Ok(BoardLock { held })
    }

    /// The lock files held (none for a virtual board).
    pub fn paths(&self) -> Vec<&Path> {
        self.held.iter().map(|l| l.path.as_path()).collect()
    }
}

/// One resource's lock file, held.
#[derive(Debug)]
struct ResourceLock {
    file: File,
    path: PathBuf,
    resource: Resource,
}

impl ResourceLock {
    fn acquire(
        dir: &Path,
        board: &str,
        resource: Resource,
        deadline: Instant,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ResourceLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io { path: dir.to_path_buf(), source })?;
        let path = dir.join(resource.file_name());
        let io = |source| LockError::Io { path: path.clone(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let start = Instant::now();
        let mut logged_wait = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file);
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(LockError::Busy {
                            board: board.into(),
                            resource,
                            holder,
                            path,
                            waited: start.elapsed(),
                        });
                    }
                    if !logged_wait {
                        tracing::warn!(board, %resource, %holder, "in use by another run; waiting up to {:?}", deadline - now);
                        logged_wait = true;
                    }
                    if cancelled() {
                        return Err(LockError::Cancelled { board: board.into(), resource });
                    }
                    std::thread::sleep(Duration::from_millis(100).min(deadline.saturating_duration_since(now)));
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let previous = read_holder(&mut file);
        if !previous.is_empty() && previous != "nobody" {
            tracing::warn!(%resource, %previous, "taking over a lock file left by a process that is gone");
        }
        let me = format!(
            "pid {} ({})",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ").chars().take(200).collect::<String>()
        );
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(me.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(ResourceLock { file, path, resource })
    }
}

fn read_holder(file: &mut File) -> String {
    let mut s = String::new();
    if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut s).is_ok() && !s.trim().is_empty() {
        s.trim().to_string()
    } else {
        "nobody".into()
    }
}

impl Drop for ResourceLock {
    fn drop(&mut self) {
        // Clear the holder line first, so a later reader does not report a live holder.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
        tracing::debug!(resource = %self.resource, "lock released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(yaml: &str) -> Board {
        let file: hil_config::BoardsFile =
            hil_config::parse_yaml(Path::new("boards.yaml"), &format!("boards:\n  - {yaml}\n")).unwrap();
        file.boards.into_iter().next().unwrap().value
    }

    fn serial_board(name: &str, port: &Path) -> Board {
        board(&format!("{{ name: {name}, chip: STM32G071RB, lab: {{ serial: {{ port: '{}' }} }} }}", port.display()))
    }

    #[test]
    fn a_virtual_board_uses_no_resource_and_locks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = board("{ name: v, chip: STM32G071RB, virtual: {} }");
        assert!(board_resources(&b).is_empty());
        let first = BoardLock::acquire(dir.path(), &b, Duration::ZERO, &|| false).unwrap();
        let second = BoardLock::acquire(dir.path(), &b, Duration::ZERO, &|| false).expect("no exclusion");
        assert!(first.paths().is_empty() && second.paths().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0), 0, "no lock files");
    }

    #[test]
    fn a_lab_board_uses_its_probe_port_and_usb_device_in_a_fixed_order() {
        let b = board(
            "{ name: l, chip: STM32G071RB, lab: { usb: '0483:DF11', serial: { port: /nonexistent/ttyX }, \
             probe: { selector: '0483:374B:066DFF55' } } }",
        );
        assert_eq!(
            board_resources(&b),
            [
                Resource::Probe("0483:374b:066DFF55".into()),
                Resource::SerialPort("/nonexistent/ttyX".into()),
                Resource::Usb("0483:df11".into()),
            ]
        );
        assert_eq!(board_resources(&b)[0].to_string(), "probe 0483:374b:066DFF55");
        assert_eq!(board_resources(&b)[1].to_string(), "serial port /nonexistent/ttyX");
    }

    #[test]
    fn a_serial_port_is_known_by_its_canonical_path() {
        let dir = tempfile::tempdir().unwrap();
        let tty = dir.path().join("ttyUSB0");
        std::fs::write(&tty, "").unwrap();
        let link = dir.path().join("by-id-adapter");
        std::os::unix::fs::symlink(&tty, &link).unwrap();
        let canonical = std::fs::canonicalize(&tty).unwrap();
        assert_eq!(board_resources(&serial_board("a", &link)), [Resource::SerialPort(canonical.clone())]);
        assert_eq!(board_resources(&serial_board("b", &tty)), [Resource::SerialPort(canonical)]);
    }

    #[test]
    fn two_boards_sharing_a_port_exclude_each_other_and_the_error_names_port_and_holder() {
        let dir = tempfile::tempdir().unwrap();
        let port = dir.path().join("no-such-tty");
        let (a, b) = (serial_board("a", &port), serial_board("b", &port));
        let first = BoardLock::acquire(dir.path(), &a, Duration::ZERO, &|| false).unwrap();
        let e = BoardLock::acquire(dir.path(), &b, Duration::from_millis(250), &|| false).unwrap_err();
        let msg = e.to_string();
        let want = format!("board `b`: serial port {} is in use by pid {} (", port.display(), std::process::id());
        assert!(msg.starts_with(&want), "{msg}");
        // It waited before giving up (how long is wall time: not asserted on a shared machine).
        assert!(matches!(e, LockError::Busy { waited, .. } if waited > Duration::ZERO), "{e:?}");
        drop(first);
        BoardLock::acquire(dir.path(), &b, Duration::ZERO, &|| false).expect("free after release");
    }

    #[test]
    fn boards_sharing_nothing_do_not_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let _a =
            BoardLock::acquire(dir.path(), &serial_board("a", &dir.path().join("tty0")), Duration::ZERO, &|| false)
                .unwrap();
        BoardLock::acquire(dir.path(), &serial_board("b", &dir.path().join("tty1")), Duration::ZERO, &|| false)
            .expect("another port is free");
    }

    #[test]
    fn a_busy_second_resource_releases_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let port = dir.path().join("tty0");
        let both = board(&format!(
            "{{ name: both, chip: STM32G071RB, lab: {{ probe: {{ selector: '0483:374b:1' }}, serial: {{ port: '{}' }} }} }}",
            port.display()
        ));
        let probe_only = board("{ name: p, chip: STM32G071RB, lab: { probe: { selector: '0483:374b:1' } } }");
        let _port = BoardLock::acquire(dir.path(), &serial_board("s", &port), Duration::ZERO, &|| false).unwrap();
        let e = BoardLock::acquire(dir.path(), &both, Duration::ZERO, &|| false).unwrap_err();
        assert!(matches!(&e, LockError::Busy { resource: Resource::SerialPort(_), .. }), "{e}");
        BoardLock::acquire(dir.path(), &probe_only, Duration::ZERO, &|| false).expect("the probe was released");
    }

    #[test]
    fn waiting_holder_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let b = serial_board("b", &dir.path().join("tty0"));
        let first = BoardLock::acquire(dir.path(), &b, Duration::ZERO, &|| false).unwrap();
        let (d, b2) = (dir.path().to_path_buf(), b.clone());
        let waiter = std::thread::spawn(move || {
            BoardLock::acquire(&d, &b2, Duration::from_secs(10), &|| false).map(|l| l.paths().len())
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        assert_eq!(waiter.join().unwrap().expect("acquired after release"), 1);
    }

    #[test]
    fn cancellation_stops_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let b = serial_board("b", &dir.path().join("tty0"));
        let _first = BoardLock::acquire(dir.path(), &b, Duration::ZERO, &|| false).unwrap();
        let e = BoardLock::acquire(dir.path(), &b, Duration::from_secs(30), &|| true).unwrap_err();
        assert!(matches!(e, LockError::Cancelled { .. }), "{e}");
    }

    #[test]
    fn a_file_left_by_a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let b = serial_board("b", &dir.path().join("tty0"));
        let file = dir.path().join(board_resources(&b)[0].file_name());
        std::fs::write(&file, "pid 999999 (hil run)").unwrap();
        let lock = BoardLock::acquire(dir.path(), &b, Duration::ZERO, &|| false).unwrap();
        assert_eq!(lock.paths(), [file.as_path()]);
        let content = std::fs::read_to_string(&file).unwrap();
        assert!(content.starts_with(&format!("pid {}", std::process::id())), "{content}");
    }

    #[test]
    fn lock_file_names_are_readable_and_distinct() {
        let a = Resource::SerialPort("/dev/a_b".into()).file_name();
        let b = Resource::SerialPort("/dev/a/b".into()).file_name();
        assert!(a.starts_with("serial-dev_a_b-") && a.ends_with(".lock"), "{a}");
        assert_ne!(a, b, "sanitising alone would merge them");
        assert_eq!(a, Resource::SerialPort("/dev/a_b".into()).file_name(), "stable");
    }
}
