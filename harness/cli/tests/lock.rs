//! Two `hil run` processes on one board: the second fails at once naming the first, or waits with
//! --lock-wait and runs when the board is free.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn hil(dir: &Path, locks: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hil"));
    c.args(args).current_dir(dir).env_remove("RUST_LOG").env("HIL_LOCK_DIR", locks);
    c
}

#[test]
fn a_second_run_on_a_locked_board_fails_clearly_or_waits() {
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    std::fs::write(
        dir.path().join("boards.yaml"),
        "boards:\n  - { name: b, chip: STM32G071RB, default: true, virtual: {} }\n",
    )
    .unwrap();
    // Holds the board ~2 s: waits for text that never comes.
    std::fs::write(
        dir.path().join("slow.yaml"),
        "name: slow\nsteps:\n  - expect-serial: { contains: never }\n    timeout: 2s\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("quick.yaml"), "name: quick\nsteps:\n  - wait: 1ms\n").unwrap();

    let mut first =
        hil(dir.path(), &locks, &["run", "--report-dir", "r1", "slow.yaml"]).stdout(Stdio::null()).spawn().unwrap();
    let lock = locks.join("b.lock");
    let until = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("pid ")) {
        assert!(Instant::now() < until, "the first run never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }

    let second = hil(dir.path(), &locks, &["run", "--report-dir", "r2", "quick.yaml"]).output().unwrap();
    let out = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("board `b` is in use by pid {}", first.id())), "{out}");

    let third =
        hil(dir.path(), &locks, &["run", "--lock-wait", "60s", "--report-dir", "r3", "quick.yaml"]).output().unwrap();
    let out = String::from_utf8_lossy(&third.stdout);
    assert_eq!(third.status.code(), Some(0), "the waiting run gets the board once it is free: {out}");
    assert!(out.contains("passed   quick"), "{out}");
    assert_eq!(first.wait().unwrap().code(), Some(1), "the first run's scenario fails by design");
}
