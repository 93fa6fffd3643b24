//! A Linux guest in QEMU with a real USB stack (issue 14): `hil sim serve --usbredir` serves the
//! virtual board's USB device, QEMU's usb-redir attaches it to the guest's xHCI, and commands run in
//! the guest over its second serial port. Built from Debian packages by harness/cli/guest/build.sh;
//! no network in the guest. Every wait has a deadline; on failure the guest's console is part of
//! the panic message.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Whether the guest's tools are here; with CI=true a missing one fails the test.
pub fn tools_available() -> bool {
    ["qemu-system-x86_64", "busybox", "dfu-util", "cpio"]
        .iter()
        .all(|p| hil_fixtures::peer_available(p, "apt-get install qemu-system-x86 busybox-static dfu-util cpio"))
}

/// Build the guest into `out` with `extra` files (`HOST_PATH:GUEST_PATH`).
pub fn build(out: &Path, extra: &[String]) {
    let o = Command::new("bash")
        .env("HIL_GUEST_CACHE", repo().join("target/guest-cache"))
        .arg(repo().join("harness/cli/guest/build.sh"))
        .arg(out)
        .args(extra)
        .output()
        .expect("run harness/cli/guest/build.sh");
    assert!(
        o.status.success(),
        "building the guest failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `hil sim serve` with the board's USB on a usbredir socket; its stdout lines on a channel.
pub struct SimServe {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl SimServe {
    pub fn start(board: &str, socket: &Path, image: Option<&Path>) -> SimServe {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hil"));
        cmd.args(["sim", "serve", "--board", board, "--usbredir"]).arg(socket).current_dir(repo());
        if let Some(i) = image {
            cmd.arg("--image").arg(i);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start hil sim serve");
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut s = SimServe { child, lines, seen: Vec::new() };
        s.wait_for("ready:", Duration::from_secs(30));
        s
    }

    /// Wait for an output line containing `needle` (lines already seen count).
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let end = Instant::now() + within;
        loop {
            match self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => {
                    panic!("`{needle}` not in hil sim serve's output within {within:?}:\n{}", self.seen.join("\n"))
                }
            }
        }
    }
}

impl Drop for SimServe {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A booted guest.
pub struct Guest {
    qemu: Child,
    cmd: UnixStream,
    buf: Vec<u8>,
    console: PathBuf,
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
    /// Boot `dir`'s kernel and initramfs with the usbredir device at `usb_socket` attached.
    pub fn boot(dir: &Path, usb_socket: &Path) -> Guest {
        let cmd_sock = dir.join("cmd.sock");
        let console = dir.join("console.log");
        let t0 = Instant::now();
        let qemu = Command::new("qemu-system-x86_64")
            .args(["-nodefaults", "-nographic", "-m", "512", "-no-reboot", "-kernel"])
            .arg(dir.join("kernel"))
            .arg("-initrd")
            .arg(dir.join("initramfs.cpio.gz"))
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("unix:{},server=on,wait=off", cmd_sock.display()))
            .args(["-device", "qemu-xhci,id=xhci", "-chardev"])
            .arg(format!("socket,id=usbredir0,path={}", usb_socket.display()))
            .args(["-device", "usb-redir,chardev=usbredir0,bus=xhci.0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64");
        let end = Instant::now() + Duration::from_secs(60);
        let cmd = loop {
            match UnixStream::connect(&cmd_sock) {
                Ok(s) => break s,
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("QEMU's command serial port {}: {e}", cmd_sock.display()),
            }
        };
        cmd.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut g = Guest { qemu, cmd, buf: Vec::new(), console, boot: Duration::ZERO };
        g.read_until("__GUEST_READY", Duration::from_secs(120));
        g.boot = t0.elapsed();
        g
    }

    fn read_until(&mut self, marker: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            if let Some(i) = find(&self.buf, marker.as_bytes()) {
                let out: Vec<u8> = self.buf.drain(..i + marker.len()).collect();
                return String::from_utf8_lossy(&out).into_owned();
            }
            if Instant::now() >= end {
                panic!(
                    "`{marker}` not seen from the guest within {within:?}; got:\n{}\n--- guest console ---\n{}",
                    String::from_utf8_lossy(&self.buf),
                    self.console()
                );
            }
            let mut chunk = [0u8; 4096];
            match self.cmd.read(&mut chunk) {
                Ok(0) => panic!("the guest's command port closed\n--- guest console ---\n{}", self.console()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading the guest's command port: {e}"),
            }
        }
    }

    /// Run a shell command in the guest (one line), with a deadline.
    pub fn run(&mut self, command: &str, within: Duration) -> Output {
        let t0 = Instant::now();
        self.cmd.write_all(command.as_bytes()).unwrap();
        self.cmd.write_all(b"\n").unwrap();
        let text = self.read_until("__RC=", within);
        let rc_line = self.read_until("\n", Duration::from_secs(5));
        let rc = rc_line.trim().parse().unwrap_or(-1);
        Output { text: text.trim_end_matches("__RC=").to_string(), rc, took: t0.elapsed() }
    }

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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
