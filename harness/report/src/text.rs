//! Plain-text renderings shared by the JUnit and Markdown writers.

use std::fmt::Write as _;

use crate::model::{Evidence, ScenarioResult, Status};

/// The failing (or interrupted) step, the steps around it and the diagnosis, as plain text.
pub fn failure_details(r: &ScenarioResult) -> String {
    let mut s = String::new();
    for step in &r.steps {
        let mark = match step.status {
            Status::Passed => "ok  ",
            Status::Failed => "FAIL",
            Status::Error => "ERR ",
            Status::Skipped => "skip",
            Status::NotRun => " -- ",
            Status::Interrupted => "INT ",
        };
        let _ = writeln!(s, "[{mark}] {:>2}. {} ({} ms)", step.index + 1, step.summary, step.wall_duration_ms);
        if let Some(m) = &step.message
            && step.status != Status::Passed
        {
            let _ = writeln!(s, "          {m}");
        }
    }
    if let Some(d) = &r.diagnosis {
        let _ = writeln!(s, "\nLikely cause: {} ({})\n{}", d.title, d.cause, d.explanation);
        for f in &d.facts {
            let _ = writeln!(s, "  {} {} = {}", if f.supports { "+" } else { "-" }, f.name, f.value);
        }
        if let Some(fix) = &d.fix {
            let _ = writeln!(s, "Fix: {fix}");
        }
    }
    s
}

/// Transcripts and text evidence of all steps, for system-out.
pub fn evidence_text(r: &ScenarioResult) -> String {
    let mut s = String::new();
    for step in &r.steps {
        for e in &step.evidence {
            match e {
                Evidence::Text { label, text } => {
                    let _ = writeln!(s, "--- step {} {}: {label}\n{text}", step.index + 1, step.keyword);
                }
                Evidence::Transcript { channel, entries } => {
                    let _ = writeln!(s, "--- step {} {}: {channel} transcript", step.index + 1, step.keyword);
                    for t in entries {
                        let _ = writeln!(
                            s,
                            "{:>8} ms {} {}{}",
                            t.wall_offset_ms,
                            t.direction,
                            t.bytes,
                            t.decoded.as_ref().map(|d| format!("  ; {d}")).unwrap_or_default()
                        );
                    }
                }
                Evidence::Registers { label, values } => {
                    let _ = writeln!(s, "--- step {} {}: {label}", step.index + 1, step.keyword);
                    for (k, v) in values {
                        let _ = writeln!(s, "  {k:<10} {v:#010x}");
                    }
                }
                Evidence::Measurement { label, value, unit } => {
                    let _ = writeln!(s, "--- step {} {}: {label} = {value} {unit}", step.index + 1, step.keyword);
                }
            }
        }
    }
    s
}
