//! Locks across `hil` processes. Lab hardware is locked by resource: two boards.yaml entries on
//! one serial port exclude each other (the second run fails at once naming the port and the
//! holder, or waits with --lock-wait; `hil flash` takes the same lock). Virtual boards live inside
//! one process and lock nothing: two runs of one virtual board go side by side.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{LONG_WAIT, QUICK, REALISTIC_BOARD, Running, hil, latest_report};
use nix::sys::signal::{Signal, kill};

/// A lab board's serial port without hardware: the slave side of a PTY this test holds open.
fn pty() -> (nix::pty::OpenptyResult, std::path::PathBuf) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let path = nix::unistd::ttyname(&pty.slave).expect("ttyname");
    (pty, path)
}

/// The lock file a run holds, once its holder line is written.
fn wait_for_held_lock(locks: &Path, prefix: &str, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let held = std::fs::read_dir(locks).into_iter().flatten().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(prefix)
                && std::fs::read_to_string(e.path()).is_ok_and(|s| s.starts_with("pid "))
        });
        if held {
            return;
        }
        assert!(Instant::now() < end, "no held `{prefix}*` lock in {} within {within:?}", locks.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lab_boards_sharing_a_serial_port_exclude_each_other_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    let (_pty, tty) = pty();
    // The second entry names the port through a link, as /dev/serial/by-id does.
    let link = dir.path().join("usb-adapter-if00");
    std::os::unix::fs::symlink(&tty, &link).unwrap();
    std::fs::write(
        dir.path().join("boards.yaml"),
        format!(
            "boards:\n  - {{ name: bench-a, chip: STM32G071RB, lab: {{ serial: {{ port: '{}' }} }} }}\n  \
             - {{ name: bench-b, chip: STM32G071RB, lab: {{ serial: {{ port: '{}' }} }} }}\n",
            tty.display(),
            link.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("long.yaml"), LONG_WAIT).unwrap();
    std::fs::write(dir.path().join("quick.yaml"), QUICK).unwrap();

    let mut first =
        Running::spawn(hil(dir.path(), &locks, &["run", "--board", "bench-a", "--report-dir", "r1", "long.yaml"]));
    first.wait_for_line("running wait 60s", Duration::from_secs(60));
    wait_for_held_lock(&locks, "serial-", Duration::from_secs(5));
    let busy = format!("board `bench-b`: serial port {} is in use by pid {}", tty.display(), first.child.id());

    let second =
        hil(dir.path(), &locks, &["run", "--board", "bench-b", "--report-dir", "r2", "quick.yaml"]).output().unwrap();
    let out = String::from_utf8_lossy(&second.stdout);
    // The board could not be had: no verdict, an infrastructure error (exit 3), not a failure.
    assert_eq!(second.status.code(), Some(3), "{out}");
    assert!(out.contains(&busy), "{out}");

    // `hil flash` on the other entry: the same lock, refused before it touches the port.
    let image = dir.path().join("app.bin");
    let mut bin = vec![0u8; 512];
    bin[0..4].copy_from_slice(&0x2000_9000u32.to_le_bytes());
    bin[4..8].copy_from_slice(&0x0800_0101u32.to_le_bytes());
    std::fs::write(&image, &bin).unwrap();
    let flash = hil(
        dir.path(),
        &locks,
        &["flash", "--board", "bench-b", "--via", "uart", "--base", "0x08000000", image.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let err = format!("{}{}", String::from_utf8_lossy(&flash.stdout), String::from_utf8_lossy(&flash.stderr));
    assert_eq!(flash.status.code(), Some(1), "{err}");
    assert!(err.contains(&busy), "{err}");

    // A run that may wait gets the port once the first run lets go of it.
    let mut third = Running::spawn(hil(
        dir.path(),
        &locks,
        &["run", "--board", "bench-b", "--lock-wait", "60s", "--report-dir", "r3", "quick.yaml"],
    ));
    third.wait_for_line("in use by another run; waiting", Duration::from_secs(30));
    kill(first.pid(), Signal::SIGTERM).unwrap();
    let (status, out, err) = first.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(143), "{out}\n{err}");
    assert_eq!(latest_report(&dir.path().join("r1"))["scenarios"][0]["status"], "interrupted");
    let (status, out, err) = third.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "the waiting run gets the port once it is free: {out}\n{err}");
    assert!(out.contains("passed   quick"), "{out}");
}

#[test]
fn two_runs_of_one_virtual_board_go_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    std::fs::write(dir.path().join("boards.yaml"), REALISTIC_BOARD).unwrap();
    std::fs::write(dir.path().join("long.yaml"), LONG_WAIT).unwrap();
    std::fs::write(dir.path().join("quick.yaml"), QUICK).unwrap();

    let mut first = Running::spawn(hil(dir.path(), &locks, &["run", "--report-dir", "r1", "long.yaml"]));
    first.wait_for_line("running wait 60s", Duration::from_secs(60));
    let second = hil(dir.path(), &locks, &["run", "--report-dir", "r2", "quick.yaml"]).output().unwrap();
    let out = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{out}\n{}", String::from_utf8_lossy(&second.stderr));
    assert!(out.contains("passed   quick"), "{out}");
    assert!(first.still_running(), "both runs used the board at the same time");
    assert!(std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) == 0, "no lock files for virtual boards");
    kill(first.pid(), Signal::SIGINT).unwrap();
    let (status, out, err) = first.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{out}\n{err}");
}
