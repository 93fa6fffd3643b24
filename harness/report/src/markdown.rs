//! A Markdown summary for humans (CI job summaries, chat).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::model::{RunReport, Status};
use crate::text::failure_details;

pub fn render_markdown(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# hil run `{}`: {}\n", r.run_id, format!("{:?}", r.status).to_uppercase());
    let _ = writeln!(
        s,
        "Started {} - {:.1} s - {} scenario runs: {} passed, {} failed, {} errors, {} skipped{}.\n",
        r.started_at,
        r.wall_duration_ms as f64 / 1000.0,
        r.summary.total,
        r.summary.passed,
        r.summary.failed,
        r.summary.errors,
        r.summary.skipped,
        interrupted_count(r.summary.interrupted)
    );
    if r.summary.flaky > 0 {
        let _ = writeln!(s, "{} flaky (passed after a retry).\n", r.summary.flaky);
    }
    let _ = writeln!(
        s,
        "hil {}{} on {}.\n",
        r.tool.version,
        r.tool.revision.as_deref().map(|v| format!(" ({v})")).unwrap_or_default(),
        r.tool.host.as_deref().unwrap_or("an unknown host")
    );
    let failures: Vec<_> = r.scenarios.iter().filter(|x| matches!(x.status, Status::Failed | Status::Error)).collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n## Failures\n");
        for f in failures {
            let _ = writeln!(s, "### {} on {} ({})\n", md_text(&f.scenario), md_text(&f.board), md_text(&f.file));
            if let Some(m) = &f.message {
                let _ = writeln!(s, "{}\n", md_text(m));
            }
            let _ = writeln!(s, "```text\n{}```\n", failure_details(f));
        }
    }
    let interrupted: Vec<_> = r.scenarios.iter().filter(|x| x.status == Status::Interrupted).collect();
    if !interrupted.is_empty() {
        let _ = writeln!(s, "\n## Interrupted\n");
        let _ = writeln!(s, "Stopped by Ctrl-C / SIGTERM before they reached a verdict.\n");
        for x in interrupted {
            let _ = writeln!(s, "### {} on {} ({})\n", md_text(&x.scenario), md_text(&x.board), md_text(&x.file));
            if let Some(m) = &x.message {
                let _ = writeln!(s, "{}\n", md_text(m));
            }
            let _ = writeln!(s, "```text\n{}```\n", failure_details(x));
        }
    }
    // Traceability: which probe, bootloader and images gave these verdicts.
    if r.boards.iter().any(|b| !b.seen.is_empty()) {
        let _ = writeln!(s, "\n## Boards\n");
        for b in &r.boards {
            let _ = writeln!(
                s,
                "- {} ({}, {}): probe {}; bootloader {}",
                md_text(&b.name),
                md_text(&b.chip),
                b.kind,
                md_text(b.seen.probe.as_deref().unwrap_or("not opened")),
                md_text(b.seen.bootloader.as_deref().unwrap_or("not asked"))
            );
            for i in &b.seen.images {
                let _ = writeln!(s, "  - image {} ({} bytes) sha256 `{}`", md_text(&i.name), i.bytes, i.sha256);
            }
        }
    }
    let flaky: Vec<_> = r.scenarios.iter().filter(|x| x.flaky).collect();
    if !flaky.is_empty() {
        let _ = writeln!(s, "\n## Flaky\n");
        let _ = writeln!(s, "Passed only after a retry (`--retries`); the earlier attempts:\n");
        for x in flaky {
            for (n, a) in x.retried.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "- {} on {}, attempt {}: {}{}",
                    md_text(&x.scenario),
                    md_text(&x.board),
                    n + 1,
                    a.status.as_str(),
                    a.message.as_deref().map(|m| format!(": {}", md_text(m))).unwrap_or_default()
                );
            }
        }
    }
    // Board x scenario matrix.
    let _ = writeln!(s, "\n## Matrix\n");
    let boards: Vec<&str> = r.boards.iter().map(|b| b.name.as_str()).collect();
    let scenarios: BTreeSet<&str> = r.scenarios.iter().map(|x| x.scenario.as_str()).collect();
    let _ = writeln!(s, "| scenario | {} |", boards.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(boards.len()));
    for sc in &scenarios {
        let cells: Vec<String> = boards
            .iter()
            .map(|b| match r.scenarios.iter().find(|x| x.scenario == *sc && x.board == *b) {
                Some(x) => cell(x.status),
                None => "-".into(),
            })
            .collect();
        let _ = writeln!(s, "| {} | {} |", md_text(sc), cells.join(" | "));
    }
    if !r.conformance.is_empty() {
        let _ = writeln!(s, "\n## Conformance\n");
        let _ = writeln!(s, "| failure class | {} |", boards.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(boards.len()));
        for row in &r.conformance {
            let cells: Vec<String> = boards
                .iter()
                .map(|b| match row.cells.get(*b) {
                    Some(c) => {
                        format!("{} expected {}, seen {}", if c.ok { "ok" } else { "**MISMATCH**" }, c.expected, c.seen)
                    }
                    None => "-".into(),
                })
                .collect();
            let _ = writeln!(s, "| {} | {} |", md_text(&row.class), cells.join(" | "));
        }
    }
    s
}

/// ", N interrupted" when there are any (most runs finish; the line stays short then).
fn interrupted_count(n: usize) -> String {
    if n == 0 { String::new() } else { format!(", {n} interrupted") }
}

/// Text outside code blocks: no raw HTML, no table breaks.
fn md_text(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('|', "\\|")
}

fn cell(status: Status) -> String {
    match status {
        Status::Passed => "passed".into(),
        Status::Failed => "**FAILED**".into(),
        Status::Error => "**ERROR**".into(),
        Status::Interrupted => "_interrupted_".into(),
        other => other.as_str().into(),
    }
}
