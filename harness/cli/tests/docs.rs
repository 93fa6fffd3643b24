//! The lab documentation holds what it promises: the CI workflows are valid YAML that runs the
//! suite and publishes its reports, the README links them, the udev rules cover the devices the
//! rig talks to, and the shipped NUCLEO entry runs every scenario its chip allows.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

/// Every `run:` / `script:` line of a workflow, joined.
fn commands(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if matches!(k.as_str(), "run" | "script" | "after_script") {
                    match x {
                        serde_json::Value::String(s) => out.push_str(s),
                        serde_json::Value::Array(a) => a.iter().filter_map(|l| l.as_str()).for_each(|l| {
                            out.push_str(l);
                            out.push('\n');
                        }),
                        _ => {}
                    }
                    out.push('\n');
                }
                commands(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| commands(x, out)),
        _ => {}
    }
}

#[test]
fn the_nightly_workflows_run_the_suite_and_publish_its_reports() {
    let gh = yaml("docs/ci/github-nightly-lab.yml");
    let job = &gh["jobs"]["conformance"];
    assert_eq!(job["runs-on"][0], "self-hosted", "{gh}");
    let mut cmds = String::new();
    commands(&gh, &mut cmds);
    for want in ["hil doctor", "hil run --board", "--retries", "GITHUB_STEP_SUMMARY", "summary.md"] {
        assert!(cmds.contains(want), "github workflow lacks `{want}`:\n{cmds}");
    }
    let uploads = gh.to_string();
    assert!(uploads.contains("junit.xml") && uploads.contains("report.html"), "uploads JUnit and HTML");
    assert!(gh["on"]["schedule"][0]["cron"].is_string(), "nightly schedule");

    let gl = yaml("docs/ci/gitlab-nightly-lab.yml");
    let job = &gl["hil-lab-nightly"];
    assert_eq!(job["tags"][0], "hil-lab");
    assert_eq!(job["artifacts"]["reports"]["junit"], "reports/nightly/junit.xml");
    let mut cmds = String::new();
    commands(&gl, &mut cmds);
    assert!(cmds.contains("hil doctor") && cmds.contains("hil run --board"), "{cmds}");
    // The files the workflows upload are the ones a run writes.
    for f in [hil_report::write::JUNIT, hil_report::write::HTML, hil_report::write::JSON, hil_report::write::MARKDOWN] {
        assert!(uploads.contains(f), "the GitHub workflow does not upload {f}");
    }
}

#[test]
fn the_readme_links_the_lab_docs_and_the_workflows() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for link in
        ["docs/lab.md", "docs/ci/github-nightly-lab.yml", "docs/ci/gitlab-nightly-lab.yml", "docs/lab/99-hil.rules"]
    {
        assert!(readme.contains(&format!("]({link})")), "README does not link {link}");
        assert!(repo().join(link).is_file(), "{link} is missing");
    }
    let lab = std::fs::read_to_string(repo().join("docs/lab.md")).unwrap();
    for topic in ["udev", "uhubctl", "DTR", "RTS", "serial number", "hil doctor", "--dry-run"] {
        assert!(lab.contains(topic), "docs/lab.md says nothing about {topic}");
    }
}

#[test]
fn the_udev_rules_cover_the_probes_and_the_rom_dfu_device() {
    let rules = std::fs::read_to_string(repo().join("docs/lab/99-hil.rules")).unwrap();
    for (vid, pid) in [("0483", "374b"), ("0483", "3748"), ("0483", "374e"), ("0483", "df11"), ("2e8a", "000c")] {
        assert!(
            rules.lines().any(|l| !l.starts_with('#')
                && l.contains(&format!("ATTRS{{idVendor}}==\"{vid}\""))
                && l.contains(&format!("ATTRS{{idProduct}}==\"{pid}\""))),
            "no rule for {vid}:{pid}"
        );
    }
    for l in rules.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        assert!(l.contains("SUBSYSTEM==") && l.contains("MODE=\"0660\""), "malformed rule: {l}");
    }
}

#[test]
fn the_shipped_nucleo_entry_runs_every_scenario_its_chip_allows() {
    let o = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--board", "nucleo-g071rb", "--dry-run"])
        .current_dir(repo())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let skips: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("skip")).collect();
    assert!(
        skips.iter().all(|l| l.contains("STM32G071RB's ROM bootloader has no USB DFU")),
        "skipped for a wiring the entry lacks: {skips:#?}"
    );
    assert!(out.lines().filter(|l| l.trim_start().starts_with("run")).count() >= 25, "{out}");
}
