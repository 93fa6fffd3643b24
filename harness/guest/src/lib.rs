//! A Linux guest in QEMU (TCG; no KVM needed) with a real USB stack and no network: the board's
//! USB device comes in over a usbredir socket (QEMU's `usb-redir` on a `qemu-xhci`), commands go
//! in over the guest's second serial port, one line each, and come back with their exit status.
//! The guest is built from Debian packages by `build.sh` next to this crate (kernel extracted
//! from its package, busybox initramfs, dfu-util with its libraries, any extra files).
//!
//! Every wait has a deadline; errors carry the guest's console, which is what explains a guest
//! that did not come up.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("building the guest ({script}) failed: {status}\n{output}")]
    Build { script: PathBuf, status: String, output: String },
    #[error("starting {program}: {source}")]
    Spawn { program: &'static str, source: std::io::Error },
    #[error("the guest's command port {path}: {source}")]
    Port { path: PathBuf, source: std::io::Error },
    #[error(
        "`{marker}` not seen from the guest within {within:?}; last output:\n{output}\n--- guest console ---\n{console}"
    )]
    Timeout { marker: String, within: Duration, output: String, console: String },
    #[error("the guest's command port closed\n--- guest console ---\n{console}")]
    Closed { console: String },
}

/// The build script shipped with this crate.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("build.sh")
}

/// Build the guest into `out` (kernel, initramfs) with `extra` files (`HOST_PATH:GUEST_PATH`,
/// libraries of executables included); the kernel package is downloaded once into `cache`.
pub fn build(out: &Path, cache: &Path, extra: &[String]) -> Result<(), GuestError> {
    let script = build_script();
    let o = Command::new("bash")
        .env("HIL_GUEST_CACHE", cache)
        .arg(&script)
        .arg(out)
        .args(extra)
        .output()
        .map_err(|source| GuestError::Spawn { program: "bash", source })?;
    if o.status.success() {
        Ok(())
    } else {
        Err(GuestError::Build {
            script,
            status: o.status.to_string(),
            output: format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        })
    }
}

/// A booted guest; dropping it stops QEMU.
pub struct Guest {
    qemu: Child,
    cmd: UnixStream,
    buf: Vec<u8>,
    console: PathBuf,
    /// From starting QEMU to the guest's command prompt.
    pub boot: Duration,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub text: String,
    pub rc: i32,
    pub took: Duration,
}

impl Guest {
    /// Boot the kernel and initramfs in `dir` with the usbredir device served at `usb_socket`
    /// (which must be listening: QEMU connects at start-up).
    pub fn boot(dir: &Path, usb_socket: &Path) -> Result<Guest, GuestError> {
        Self::boot_with(dir, &[usb_socket])
    }

    /// Boot with several usbredir devices on the guest's xHCI (the target's USB, a debug adapter).
    pub fn boot_with(dir: &Path, usb_sockets: &[&Path]) -> Result<Guest, GuestError> {
        let cmd_sock = dir.join("cmd.sock");
        let console = dir.join("console.log");
        let t0 = Instant::now();
        let qemu = Command::new("qemu-system-x86_64")
            .args(["-nodefaults", "-nographic", "-m", "512", "-no-reboot", "-kernel"])
            .arg(dir.join("kernel"))
            .arg("-initrd")
            .arg(dir.join("initramfs.cpio.gz"))
            // norandmaps: no address-space randomisation in the guest. QEMU's TCG keys the code
            // it has translated by virtual address, so with ASLR every process start translates
            // its program again: `hil list boards` took 0.17 s each time, 0.01 s once warm
            // without it (measured in this guest).
            .args(["-append", "console=ttyS0 panic=-1 quiet norandmaps"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("unix:{},server=on,wait=off", cmd_sock.display()))
            .args(["-device", "qemu-xhci,id=xhci"])
            .args(usb_sockets.iter().enumerate().flat_map(|(i, s)| {
                [
                    "-chardev".to_string(),
                    format!("socket,id=usbredir{i},path={}", s.display()),
                    "-device".to_string(),
                    format!("usb-redir,chardev=usbredir{i},bus=xhci.0"),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| GuestError::Spawn { program: "qemu-system-x86_64", source })?;
        let end = Instant::now() + Duration::from_secs(60);
        let cmd = loop {
            match UnixStream::connect(&cmd_sock) {
                Ok(s) => break s,
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => return Err(GuestError::Port { path: cmd_sock, source }),
            }
        };
        cmd.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|source| GuestError::Port { path: cmd_sock.clone(), source })?;
        let mut g = Guest { qemu, cmd, buf: Vec::new(), console, boot: Duration::ZERO };
        g.read_until("__GUEST_READY", Duration::from_secs(120))?;
        g.boot = t0.elapsed();
        Ok(g)
    }

    fn read_until(&mut self, marker: &str, within: Duration) -> Result<String, GuestError> {
        let end = Instant::now() + within;
        loop {
            if let Some(i) = self.buf.windows(marker.len()).position(|w| w == marker.as_bytes()) {
                let out: Vec<u8> = self.buf.drain(..i + marker.len()).collect();
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            if Instant::now() >= end {
                return Err(GuestError::Timeout {
                    marker: marker.into(),
                    within,
                    output: String::from_utf8_lossy(&self.buf).into_owned(),
                    console: self.console(),
                });
            }
            let mut chunk = [0u8; 4096];
            match self.cmd.read(&mut chunk) {
                Ok(0) => return Err(GuestError::Closed { console: self.console() }),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(source) => return Err(GuestError::Port { path: PathBuf::from("guest command port"), source }),
            }
        }
    }

    /// Run one shell command line in the guest, with a deadline.
    pub fn run(&mut self, command: &str, within: Duration) -> Result<Output, GuestError> {
        let t0 = Instant::now();
        let port = |source| GuestError::Port { path: PathBuf::from("guest command port"), source };
        self.cmd.write_all(command.as_bytes()).map_err(port)?;
        self.cmd.write_all(b"\n").map_err(port)?;
        let text = self.read_until("__RC=", within)?;
        let rc_line = self.read_until("\n", Duration::from_secs(5))?;
        Ok(Output {
            text: text.trim_end_matches("__RC=").to_string(),
            rc: rc_line.trim().parse().unwrap_or(-1),
            took: t0.elapsed(),
        })
    }

    /// The guest's console (kernel messages, init's own lines).
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}
