//! report.html renders in a real browser (headless Chromium): the page loads offline, its tables
//! are in the DOM, and a screenshot has content.

mod common;

use std::process::Command;

fn chromium(args: &[&str], html: &std::path::Path, profile: &std::path::Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium")
}

#[test]
fn report_html_renders_in_headless_chromium() {
    if !hil_fixtures::peer_available("chromium", "apt-get install chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    std::fs::write(&html, hil_report::render_html(&common::sample())).unwrap();
    let dom = chromium(&["--dump-dom"], &html, &dir.path().join("p1"));
    assert!(dom.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for needle in [
        "Boards &times; scenarios",
        "jump-from-app-primask",
        "Likely cause:",
        "primask-set-at-jump",
        "1. jump with PRIMASK set",
    ] {
        let needle = needle.replace("&times;", "×");
        assert!(dom.contains(&needle), "rendered DOM lacks {needle:?}");
    }
    let shot = dir.path().join("shot.png");
    let out = chromium(
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1600"],
        &html,
        &dir.path().join("p2"),
    );
    assert!(out.status.success(), "chromium screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[1..4], b"PNG");
    let (w, h) =
        (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((w, h), (1280, 1600));
    // A blank page compresses to a few KiB; the rendered report is far larger.
    assert!(png.len() > 40_000, "screenshot is suspiciously small ({} bytes): blank page?", png.len());
    if let Ok(keep) = std::env::var("HIL_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
