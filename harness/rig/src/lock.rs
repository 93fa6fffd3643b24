//! A board is locked for the duration of a run, across processes: an OS file lock (flock) on
//! `<lock dir>/<board>.lock`. The OS releases it when the holder dies, so a lock can never be held
//! by a dead process; the file's content (holder's pid and command) is what a dead holder leaves
//! behind, and taking over such a file is logged.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("board `{board}` is in use by {holder} (lock file {path}); waited {waited:?}")]
    Busy { board: String, holder: String, path: PathBuf, waited: Duration },
    #[error("cannot use lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("lock wait for board `{board}` was cancelled")]
    Cancelled { board: String },
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

/// Held while a run uses a board; dropping it releases the lock.
#[derive(Debug)]
pub struct BoardLock {
    file: File,
    path: PathBuf,
    board: String,
}

impl BoardLock {
    /// Take the lock of `board` in `dir`, waiting up to `wait` for another holder (polling), or
    /// until `cancelled()` says stop.
    pub fn acquire(
        dir: &Path,
        board: &str,
        wait: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<BoardLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io { path: dir.to_path_buf(), source })?;
        let safe: String =
            board.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let path = dir.join(format!("{safe}.lock"));
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
                    if start.elapsed() >= wait {
                        return Err(LockError::Busy { board: board.into(), holder, path, waited: start.elapsed() });
                    }
                    if !logged_wait {
                        tracing::warn!(board, %holder, "board is locked by another run; waiting up to {wait:?}");
                        logged_wait = true;
                    }
                    if cancelled() {
                        return Err(LockError::Cancelled { board: board.into() });
                    }
                    std::thread::sleep(Duration::from_millis(100).min(wait.saturating_sub(start.elapsed())));
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let previous = read_holder(&mut file);
        if !previous.is_empty() && previous != "nobody" {
            tracing::warn!(board, %previous, "taking over a lock file left by a process that is gone");
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
        Ok(BoardLock { file, path, board: board.into() })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

impl Drop for BoardLock {
    fn drop(&mut self) {
        // Clear the holder line first, so a later reader does not report a live holder.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
        tracing::debug!(board = %self.board, "board lock released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_fails_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = BoardLock::acquire(dir.path(), "g071", Duration::ZERO, &|| false).unwrap();
        let e = BoardLock::acquire(dir.path(), "g071", Duration::from_millis(250), &|| false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("board `g071` is in use by pid "), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        BoardLock::acquire(dir.path(), "g071", Duration::ZERO, &|| false).expect("free after release");
    }

    #[test]
    fn waiting_holder_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = BoardLock::acquire(dir.path(), "b", Duration::ZERO, &|| false).unwrap();
        let d = dir.path().to_path_buf();
        let waiter =
            std::thread::spawn(move || BoardLock::acquire(&d, "b", Duration::from_secs(10), &|| false).map(|_| ()));
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        waiter.join().unwrap().expect("acquired after release");
    }

    #[test]
    fn cancellation_stops_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _first = BoardLock::acquire(dir.path(), "b", Duration::ZERO, &|| false).unwrap();
        let e = BoardLock::acquire(dir.path(), "b", Duration::from_secs(30), &|| true).unwrap_err();
        assert!(matches!(e, LockError::Cancelled { .. }), "{e}");
    }

    #[test]
    fn a_file_left_by_a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.lock"), "pid 999999 (hil run)").unwrap();
        let lock = BoardLock::acquire(dir.path(), "b", Duration::ZERO, &|| false).unwrap();
        let content = std::fs::read_to_string(lock.path()).unwrap();
        assert!(content.starts_with(&format!("pid {}", std::process::id())), "{content}");
    }
}
