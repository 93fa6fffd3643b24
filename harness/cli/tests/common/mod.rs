//! `hil run` as a child process: started, watched through its log lines, signalled, awaited, all
//! with deadlines (a test must fail, not hang, when the run misbehaves).

#![allow(dead_code)] // each test file uses part of this

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A `hil` command in `dir` with its own lock directory, logging the engine's step starts
/// ("running wait 30s") so tests can tell when a step is under way.
pub fn hil(dir: &Path, locks: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hil"));
    c.args(args).current_dir(dir).env("RUST_LOG", "warn,hil_rig::engine=debug").env("HIL_LOCK_DIR", locks);
    c
}

/// A running `hil`, its stderr read line by line on a thread (a full pipe would stall it).
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start hil");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Wait for a stderr line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("no line with {needle:?} within {within:?}; stderr so far:\n{}", self.seen.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!("hil ended ({status:?}) without {needle:?}; stderr:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    pub fn still_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Wait for the exit; returns the status, stdout and stderr.
    pub fn finish(mut self, within: Duration) -> (ExitStatus, String, String) {
        let end = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                panic!("hil did not exit within {within:?}; stderr:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, out, self.seen.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave a 30 s run behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// report.json of the latest run under `report_dir`.
pub fn latest_report(report_dir: &Path) -> serde_json::Value {
    let path: PathBuf = report_dir.join("latest").join("report.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// A virtual board whose time runs at wall speed, so a `wait` step takes as long as it says.
pub const REALISTIC_BOARD: &str =
    "boards:\n  - { name: v, chip: STM32G071RB, default: true, virtual: { timing: realistic, seed: 1 } }\n";

/// Waits far longer than any test runs, unless something stops it.
pub const LONG_WAIT: &str = "name: long\nsteps:\n  - wait: 60s\n    timeout: 90s\n  - wait: 1ms\n";

pub const QUICK: &str = "name: quick\nsteps:\n  - wait: 1ms\n";
