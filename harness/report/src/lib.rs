//! Run reports: a versioned JSON document (the source of truth), JUnit XML for CI, a Markdown
//! summary and a self-contained HTML page, written atomically into one directory per run.

pub mod html;
pub mod junit;
pub mod markdown;
pub mod model;
mod text;
pub mod write;

pub use html::render_html;
pub use junit::render_junit;
pub use markdown::render_markdown;
pub use model::*;
pub use write::{ReadError, ReportError, RunDir, read_run, write_atomic};

/// report.json: pretty JSON with a trailing newline.
pub fn render_json(report: &RunReport) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(report)?;
    s.push('\n');
    Ok(s)
}

/// Current time as RFC 3339 UTC with millisecond precision.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}
