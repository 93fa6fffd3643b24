//! A self-contained HTML page (no network, no scripts): run summary, board x scenario matrix,
//! conformance matrix, and per scenario a step timeline, protocol transcripts and the registers
//! at failure.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::model::{Evidence, RunReport, ScenarioResult, Status};

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn anchor(r: &ScenarioResult) -> String {
    let raw = format!("s-{}-{}", r.board, r.scenario);
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

fn badge(status: Status) -> String {
    format!("<span class=\"badge {}\">{}</span>", status.as_str(), status.as_str())
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2228;background:#f6f7f9}
header{background:#1d2228;color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}
header .meta{opacity:.8;margin-top:4px}main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px;margin-bottom:16px}
h2{font-size:16px;margin:4px 0 10px}h3{font-size:15px;margin:0}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #eceef1;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f6f8fa;padding:8px;border-radius:4px;overflow:auto;max-height:320px;margin:6px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.passed{background:#1f883d}.failed{background:#cf222e}.error{background:#9a6700}.skipped,.not-run{background:#8c959f}
.running,.interrupted{background:#9a6700}
td.cell a{color:#fff;text-decoration:none}.bar{height:10px;background:#54aeff;border-radius:2px;min-width:1px}
.bar.failed{background:#cf222e}.diag{border-left:4px solid #cf222e;background:#fff5f5;padding:8px 12px;margin:8px 0}
.diag .cause{color:#6e7781}.fact-yes{color:#1f883d}.fact-no{color:#6e7781}details{margin:6px 0}
summary{cursor:pointer}.tx{color:#0969da}.rx{color:#8250df}.muted{color:#6e7781}
"#;

pub fn render_html(r: &RunReport) -> String {
    let mut h = String::new();
    let status = format!("{:?}", r.status).to_lowercase();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>hil run {id} - {status}</title><style>{STYLE}</style></head><body>\n",
        id = esc(&r.run_id),
    );
    let _ = writeln!(
        h,
        "<header><h1>hil run <span class=\"mono\">{}</span> <span class=\"badge {status}\">{status}</span></h1>\
         <div class=\"meta\">started {} &middot; {:.1} s &middot; {} {}{} &middot; {} &middot; schema v{}</div></header><main>",
        esc(&r.run_id),
        esc(&r.started_at),
        r.wall_duration_ms as f64 / 1000.0,
        esc(&r.tool.name),
        esc(&r.tool.version),
        r.tool.revision.as_deref().map(|v| format!(" ({})", esc(v))).unwrap_or_default(),
        esc(r.tool.host.as_deref().unwrap_or("unknown host")),
        r.schema_version
    );
    // Summary.
    let s = &r.summary;
    let _ = write!(
        h,
        "<section id=\"summary\"><h2>Summary</h2><p>{} scenario runs: <b>{}</b> passed, <b>{}</b> failed, <b>{}</b> errors, <b>{}</b> skipped{}.</p>",
        s.total,
        s.passed,
        s.failed,
        s.errors,
        s.skipped,
        if s.interrupted == 0 { String::new() } else { format!(", <b>{}</b> interrupted", s.interrupted) }
    );
    if s.flaky > 0 {
        let _ = write!(h, "<p><b>{}</b> flaky: passed only after a retry.</p>", s.flaky);
    }
    // What a reader came for, before the matrices: the failures, each a link to its section.
    let needs_look: Vec<&ScenarioResult> = r.scenarios.iter().filter(|x| needs_attention(x)).collect();
    if !needs_look.is_empty() {
        h.push_str("<h3>Failures</h3><ul>");
        for x in &needs_look {
            let _ = write!(
                h,
                "<li><a href=\"#{}\">{} on {}</a> {}{} {}</li>",
                anchor(x),
                esc(&x.scenario),
                esc(&x.board),
                badge(x.status),
                if x.flaky { " <span class=\"badge skipped\">flaky</span>" } else { "" },
                esc(x.message.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</ul>");
    }
    if !r.command.is_empty() {
        let _ = write!(h, "<p class=\"muted\">command: <code>{}</code></p>", esc(&r.command.join(" ")));
    }
    h.push_str("<table><tr><th>board</th><th>chip</th><th>kind</th><th>description</th><th>probe</th><th>bootloader</th><th>images (SHA-256)</th></tr>");
    for b in &r.boards {
        let images: Vec<String> = b
            .seen
            .images
            .iter()
            .map(|i| format!("{} <span class=\"mono muted\">{}</span>", esc(&i.name), esc(&i.sha256)))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.name),
            esc(&b.chip),
            esc(&b.kind),
            esc(b.description.as_deref().unwrap_or("")),
            esc(b.seen.probe.as_deref().unwrap_or("")),
            esc(b.seen.bootloader.as_deref().unwrap_or("")),
            images.join("<br>")
        );
    }
    h.push_str("</table></section>\n");
    // Matrix.
    let boards: Vec<&str> = r.boards.iter().map(|b| b.name.as_str()).collect();
    let scenarios: BTreeSet<&str> = r.scenarios.iter().map(|x| x.scenario.as_str()).collect();
    h.push_str("<section id=\"matrix\"><h2>Boards &times; scenarios</h2><table><tr><th>scenario</th>");
    for b in &boards {
        let _ = write!(h, "<th>{}</th>", esc(b));
    }
    h.push_str("</tr>");
    for sc in &scenarios {
        let _ = write!(h, "<tr><td>{}</td>", esc(sc));
        for b in &boards {
            match r.scenarios.iter().find(|x| x.scenario == *sc && x.board == *b) {
                Some(x) => {
                    let _ = write!(
                        h,
                        "<td class=\"cell\"><a href=\"#{}\"><span class=\"badge {}\">{}</span></a> <span class=\"muted\">{} ms</span></td>",
                        anchor(x),
                        x.status.as_str(),
                        x.status.as_str(),
                        x.wall_duration_ms
                    );
                }
                None => h.push_str("<td class=\"muted\">-</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></section>\n");
    if !r.conformance.is_empty() {
        h.push_str("<section id=\"conformance\"><h2>Conformance: failure classes &times; boards</h2><table><tr><th>failure class</th>");
        for b in &boards {
            let _ = write!(h, "<th>{}</th>", esc(b));
        }
        h.push_str("</tr>");
        for row in &r.conformance {
            let _ = write!(h, "<tr><td>{}</td>", esc(&row.class));
            for b in &boards {
                match row.cells.get(*b) {
                    Some(c) => {
                        let _ = write!(
                            h,
                            "<td><span class=\"badge {}\">{}</span> expected {}, seen {}</td>",
                            if c.ok { "passed" } else { "failed" },
                            if c.ok { "ok" } else { "mismatch" },
                            esc(&c.expected),
                            esc(&c.seen)
                        );
                    }
                    None => h.push_str("<td class=\"muted\">-</td>"),
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</table></section>\n");
    }
    // Failures first, then the rest in run order.
    for x in r.scenarios.iter().filter(|x| needs_attention(x)).chain(r.scenarios.iter().filter(|x| !needs_attention(x)))
    {
        scenario_section(&mut h, x);
    }
    h.push_str("</main></body></html>\n");
    h
}

/// Failed, errored, interrupted, or passed only after a retry.
fn needs_attention(x: &ScenarioResult) -> bool {
    matches!(x.status, Status::Failed | Status::Error | Status::Interrupted) || x.flaky
}

fn scenario_section(h: &mut String, x: &ScenarioResult) {
    // Open where a reader must look: what failed, and where an interrupted run stopped.
    let open = if matches!(x.status, Status::Failed | Status::Error | Status::Interrupted) { " open" } else { "" };
    let _ = write!(
        h,
        "<section id=\"{}\"><details{open}><summary><h3 style=\"display:inline\">{} on {}</h3> {} <span class=\"muted\">{} ms &middot; {}</span></summary>",
        anchor(x),
        esc(&x.scenario),
        esc(&x.board),
        badge(x.status),
        x.wall_duration_ms,
        esc(&x.file)
    );
    if let Some(d) = &x.description {
        let _ = write!(h, "<p>{}</p>", esc(d));
    }
    if let Some(e) = &x.expected {
        let _ = write!(
            h,
            "<p>Expected outcome: <b>{}</b>{}; observed: <b>{}</b>{}</p>",
            esc(&e.outcome),
            e.cause.as_ref().map(|c| format!(" with cause <code>{}</code>", esc(c))).unwrap_or_default(),
            esc(&e.observed_outcome),
            e.observed_cause.as_ref().map(|c| format!(" with cause <code>{}</code>", esc(c))).unwrap_or_default()
        );
    }
    if let Some(m) = &x.message {
        let _ = write!(h, "<p><b>{}</b></p>", esc(m));
    }
    for (n, a) in x.retried.iter().enumerate() {
        let _ = write!(
            h,
            "<p class=\"muted\">attempt {}: {} {}</p>",
            n + 1,
            badge(a.status),
            esc(a.message.as_deref().unwrap_or(""))
        );
    }
    // Timeline.
    let total = x.steps.iter().map(|s| s.wall_offset_ms + s.wall_duration_ms).max().unwrap_or(0).max(1);
    h.push_str("<table><tr><th>#</th><th>step</th><th>status</th><th class=\"num\">start</th><th class=\"num\">duration</th><th style=\"width:30%\">timeline</th></tr>");
    for s in &x.steps {
        let left = s.wall_offset_ms as f64 * 100.0 / total as f64;
        let width = (s.wall_duration_ms as f64 * 100.0 / total as f64).max(0.2);
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td><code>{}</code>{}{}</td><td>{}</td><td class=\"num\">{} ms</td><td class=\"num\">{} ms</td>\
             <td><div class=\"bar {}\" style=\"margin-left:{left:.2}%;width:{width:.2}%\"></div></td></tr>",
            s.index + 1,
            esc(&s.summary),
            s.name.as_ref().map(|n| format!(" <span class=\"muted\">{}</span>", esc(n))).unwrap_or_default(),
            s.message.as_ref().map(|m| format!("<br><span class=\"muted\">{}</span>", esc(m))).unwrap_or_default(),
            badge(s.status),
            s.wall_offset_ms,
            s.wall_duration_ms,
            if s.status == Status::Failed { "failed" } else { "" }
        );
    }
    h.push_str("</table>");
    // Evidence.
    for s in &x.steps {
        for e in &s.evidence {
            evidence(h, s.index + 1, &s.keyword, e);
        }
    }
    if let Some(d) = &x.diagnosis {
        let _ = write!(
            h,
            "<div class=\"diag\"><b>Likely cause: {}</b> <span class=\"cause mono\">{}</span><p>{}</p>",
            esc(&d.title),
            esc(&d.cause),
            esc(&d.explanation)
        );
        if !d.facts.is_empty() {
            h.push_str("<table><tr><th>evidence</th><th>value</th><th>supports the cause</th></tr>");
            for f in &d.facts {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"mono\">{}</td><td class=\"{}\">{}</td></tr>",
                    esc(&f.name),
                    esc(&f.value),
                    if f.supports { "fact-yes" } else { "fact-no" },
                    if f.supports { "yes" } else { "no" }
                );
            }
            h.push_str("</table>");
        }
        if let Some(fix) = &d.fix {
            let _ = write!(h, "<p><b>Fix:</b> {}</p>", esc(fix));
        }
        if !d.snapshot.is_empty() {
            h.push_str(
                "<details><summary>registers at failure</summary><table><tr><th>register</th><th>value</th></tr>",
            );
            for (k, v) in &d.snapshot {
                let _ = write!(h, "<tr><td>{}</td><td class=\"mono\">{v:#010x}</td></tr>", esc(k));
            }
            h.push_str("</table></details>");
        }
        h.push_str("</div>");
    }
    h.push_str("</details></section>\n");
}

fn evidence(h: &mut String, step: usize, keyword: &str, e: &Evidence) {
    match e {
        Evidence::Transcript { channel, entries } => {
            let _ = write!(
                h,
                "<details><summary>step {step} <code>{}</code>: {} transcript ({} entries)</summary><table><tr><th class=\"num\">t</th><th>dir</th><th>bytes</th><th>decoded</th></tr>",
                esc(keyword),
                esc(channel),
                entries.len()
            );
            for t in entries {
                let _ = write!(
                    h,
                    "<tr><td class=\"num\">{} ms</td><td class=\"{}\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                    t.wall_offset_ms,
                    if t.direction == "tx" { "tx" } else { "rx" },
                    esc(&t.direction),
                    esc(&t.bytes),
                    esc(t.decoded.as_deref().unwrap_or(""))
                );
            }
            h.push_str("</table></details>");
        }
        Evidence::Text { label, text } => {
            let _ = write!(
                h,
                "<details><summary>step {step} <code>{}</code>: {}</summary><pre>{}</pre></details>",
                esc(keyword),
                esc(label),
                esc(text)
            );
        }
        Evidence::Registers { label, values } => {
            let _ = write!(
                h,
                "<details><summary>step {step} <code>{}</code>: {}</summary><table>",
                esc(keyword),
                esc(label)
            );
            for (k, v) in values {
                let _ = write!(h, "<tr><td>{}</td><td class=\"mono\">{v:#010x}</td></tr>", esc(k));
            }
            h.push_str("</table></details>");
        }
        Evidence::Measurement { label, value, unit } => {
            let _ = write!(
                h,
                "<p class=\"muted\">step {step} {}: {} = {value} {}</p>",
                esc(keyword),
                esc(label),
                esc(unit)
            );
        }
    }
}
