//! A Linux guest in QEMU with a real USB stack (issue 14): `hil sim serve --usbredir` serves the
//! virtual board's USB device, QEMU's usb-redir attaches it to the guest's xHCI, and commands run in
//! the guest over its second serial port. Built from Debian packages by harness/cli/guest/build.sh;
//! no network in the guest. Every wait has a deadline; on failure the guest's console is part of
//! the panic message.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
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

/// Build the guest into `out` with `extra` files (`HOST_PATH:GUEST_PATH`); the kernel package is
/// cached in target/guest-cache.
pub fn build(out: &Path, extra: &[String]) {
    if let Err(e) = hil_guest::build(out, &repo().join("target/guest-cache"), extra) {
        panic!("{e}");
    }
}

/// Boot the guest in `dir` with the usbredir device at `usb_socket`.
pub fn boot(dir: &Path, usb_socket: &Path) -> Guest {
    hil_guest::Guest::boot(dir, usb_socket).unwrap_or_else(|e| panic!("{e}"))
}

pub use hil_guest::Guest;

/// `hil sim serve` of `board` with its USB on `socket`, then the guest in `guest_dir` booted with
/// that device attached.
pub fn serve_and_boot(board: &str, guest_dir: &Path, socket: &Path) -> (SimServe, Guest) {
    let sim = SimServe::start(board, socket, None);
    let g = boot(guest_dir, socket);
    eprintln!("guest boot to the command prompt: {:.2?}", g.boot);
    (sim, g)
}

/// Run a command in the guest; a guest that does not answer fails the test with its console.
pub fn run(g: &mut Guest, command: &str, within: Duration) -> hil_guest::Output {
    g.run(command, within).unwrap_or_else(|e| panic!("{e}"))
}

/// `hil sim serve` with the board's USB on a usbredir socket; its stdout lines on a channel.
pub struct SimServe {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    /// Where the next [`SimServe::wait_for`] starts looking.
    cursor: usize,
}

impl SimServe {
    pub fn start(board: &str, socket: &Path, image: Option<&Path>) -> SimServe {
        Self::start_with(board, &["--usbredir".into(), socket.display().to_string()], image)
    }

    /// With other options (`--usbredir-adapter PATH` ...).
    pub fn start_with(board: &str, options: &[String], image: Option<&Path>) -> SimServe {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hil"));
        cmd.args(["sim", "serve", "--board", board]).args(options).current_dir(repo());
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
        let mut s = SimServe { child, lines, seen: Vec::new(), cursor: 0 };
        // Ready before anything else; later waits still see the lines printed before it.
        s.find_from(0, "ready:", Duration::from_secs(30));
        s
    }

    /// Everything it has printed so far (for a failure's evidence).
    pub fn output(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// Wait for an output line containing `needle` after the last line a wait matched (lines
    /// already read count); the next wait starts after it.
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let i = self.find_from(self.cursor, needle, within);
        self.cursor = i + 1;
        self.seen[i].clone()
    }

    fn find_from(&mut self, from: usize, needle: &str, within: Duration) -> usize {
        if let Some(i) = self.seen.iter().skip(from).position(|l| l.contains(needle)) {
            return from + i;
        }
        let end = Instant::now() + within;
        loop {
            match self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    self.seen.push(l);
                    if self.seen.last().is_some_and(|l| l.contains(needle)) && self.seen.len() > from {
                        return self.seen.len() - 1;
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

/// The scenarios that can run on a board's virtual entry: the flows and the conformance suite,
/// without those that mention one of `others` (written for another board). Returns (file name,
/// text).
pub fn scenarios_for(_board: &str, others: &[&str]) -> Vec<(String, String)> {
    let repo = repo();
    let mut out = Vec::new();
    for dir in ["scenarios", "scenarios/conformance"] {
        let mut files: Vec<_> = std::fs::read_dir(repo.join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            if f.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            if others.iter().any(|o| text.contains(o)) {
                continue;
            }
            out.push((f.file_name().unwrap().to_string_lossy().into_owned(), text));
        }
    }
    out
}

/// (scenario, status, cause) of each line `hil run` printed.
pub fn verdicts(output: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = output
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let status = w.next()?;
            if !["passed", "failed", "error", "skipped", "interrupted"].contains(&status) {
                return None;
            }
            let scenario = w.next()?.to_string();
            let cause = l.split("[cause: ").nth(1).map(|c| c.trim_end_matches(']').to_string()).unwrap_or_default();
            Some((scenario, status.to_string(), cause))
        })
        .collect();
    v.sort();
    v
}

/// The application fixture as a flat binary from its base (what stm32flash writes).
pub fn app_bin(elf: &[u8]) -> Vec<u8> {
    let img = hil_image::Image::from_elf("app", elf).unwrap();
    let ranges = img.ranges();
    let (base, end) = (ranges[0].0, ranges.iter().map(|(a, d)| a + d.len() as u32).max().unwrap());
    let mut bin = vec![0xFFu8; (end - base) as usize];
    for (a, d) in ranges {
        bin[(a - base) as usize..][..d.len()].copy_from_slice(d);
    }
    bin
}

/// Our `hil` without its debug info, for the guest (its RAM holds the initramfs); the binary as it
/// is when `strip` is not there.
pub fn stripped_hil(dir: &Path) -> PathBuf {
    let hil = dir.join("hil");
    let stripped = Command::new("strip").arg("-o").arg(&hil).arg(env!("CARGO_BIN_EXE_hil")).status();
    if !stripped.is_ok_and(|s| s.success()) {
        std::fs::copy(env!("CARGO_BIN_EXE_hil"), &hil).unwrap();
    }
    hil
}

/// A board's scenarios written twice into `dir`: as they are, for its virtual entry, and for a lab
/// entry (`virtual_name` renamed `lab_name`), the latter also as `lab.tar` for the guest. Returns
/// (the virtual copies' directory, the tar).
pub fn lab_scenarios(
    dir: &Path,
    scenarios: Vec<(String, String)>,
    virtual_name: &str,
    lab_name: &str,
) -> (PathBuf, PathBuf) {
    let (virt, lab) = (dir.join("virtual"), dir.join("lab"));
    std::fs::create_dir_all(&virt).unwrap();
    std::fs::create_dir_all(&lab).unwrap();
    for (name, text) in scenarios {
        std::fs::write(virt.join(&name), &text).unwrap();
        std::fs::write(lab.join(&name), text.replace(virtual_name, lab_name)).unwrap();
    }
    let tar = dir.join("lab.tar");
    let st = Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(dir).arg("lab").status();
    assert!(st.is_ok_and(|s| s.success()), "tar of the lab scenarios");
    (virt, tar)
}

/// Run the lab copies in the guest on the lab entry, the virtual copies here on `virtual_name`,
/// and require the same verdict for every scenario. Returns the verdicts (for more checks).
pub fn same_verdicts_on_lab_and_virtual(
    g: &mut Guest,
    sim: &mut SimServe,
    virt: &Path,
    virtual_name: &str,
    reports: &Path,
) -> Vec<(String, String, String)> {
    let o = run(
        g,
        "cd /data && tar -xf lab.tar && hil run --boards /data/boards.yaml --report-dir /data/reports /data/lab/*.yaml 2>&1 | cat",
        Duration::from_secs(900),
    );
    eprintln!("hil run on the lab entry in the guest: {:.2?}", o.took);
    let on_lab = verdicts(&o.text);
    let host = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--board", virtual_name, "--report-dir"])
        .arg(reports)
        .args(std::fs::read_dir(virt).unwrap().map(|e| e.unwrap().path()))
        .current_dir(repo())
        .output()
        .unwrap();
    let on_virtual = verdicts(&String::from_utf8_lossy(&host.stdout));
    let differ: Vec<String> = on_virtual
        .iter()
        .filter(|v| !on_lab.contains(v))
        .map(|v| {
            let lab = on_lab.iter().find(|l| l.0 == v.0);
            format!("{}: virtual {} {} / lab {:?}", v.0, v.1, v.2, lab.map(|l| (&l.1, &l.2)))
        })
        .collect();
    assert!(
        differ.is_empty() && on_lab.len() == on_virtual.len(),
        "lab-entry verdicts differ from the virtual entry's:\n{}\n--- lab run ---\n{}\n--- hil sim serve ---\n{}\n\
         --- guest console ---\n{}",
        differ.join("\n"),
        o.text,
        sim.output(),
        g.console()
    );
    on_virtual
}
