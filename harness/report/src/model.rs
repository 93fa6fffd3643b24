//! The report document. JSON is the source of truth; every other format is rendered from it.
//! Bump [`SCHEMA_VERSION`] on any change that is not a pure addition of optional fields.
//!
//! Wall-clock values (durations, offsets, timestamps measured on the host) live only under keys
//! that start with `wall_`, besides the run id, the run's `started_at` and the report directory.
//! Everything else about a virtual board is a function of the scenarios, boards.yaml and the
//! images (DESIGN.md, virtual time and determinism): two runs compare equal once those are
//! dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// 2: wall-clock keys renamed `wall_*`; steps carry the board's virtual time; `interrupted`
/// step and scenario status, `summary.interrupted`.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub run_id: String,
    pub tool: Tool,
    /// RFC 3339, UTC.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_finished_at: Option<String>,
    pub wall_duration_ms: u64,
    pub status: RunStatus,
    /// The command line that produced this run.
    #[serde(default)]
    pub command: Vec<String>,
    pub boards: Vec<BoardInfo>,
    pub scenarios: Vec<ScenarioResult>,
    pub summary: Summary,
    /// Rows: failure classes; columns: boards (conformance scenarios only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conformance: Vec<ConformanceRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
    /// The git revision hil was built from (`unknown` outside a checkout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The machine the run ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// This machine's host name (JUnit's `hostname`, the report's `tool.host`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// State of the whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Still going (the report on disk is rewritten as scenarios finish).
    Running,
    Passed,
    Failed,
    /// Stopped by Ctrl-C / SIGTERM: what ran is reported, the rest is missing.
    Interrupted,
    /// The rig itself failed (not the firmware).
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardInfo {
    pub name: String,
    pub chip: String,
    /// `virtual` or `lab`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the run saw of the board (traceability): the probe, the bootloader, the images.
    #[serde(default, skip_serializing_if = "Seen::is_empty")]
    pub seen: Seen,
}

/// What a run saw of a board, so a verdict can be traced to the hardware and the firmware.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The debug probe the rig opened (`VID:PID:serial`, as probe-rs lists it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// The ROM bootloader's answer over AN3155: PID and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<String>,
    /// Every image flashed during the run, in first-flash order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRecord>,
}

impl Seen {
    pub fn is_empty(&self) -> bool {
        self.probe.is_none() && self.bootloader.is_none() && self.images.is_empty()
    }

    /// Note an image (once per name and content).
    pub fn note_image(&mut self, record: ImageRecord) {
        if !self.images.contains(&record) {
            self.images.push(record);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The file, or `fixture:NAME@BASE`.
    pub name: String,
    /// SHA-256 of the file as read (the ELF for fixtures), lowercase hex.
    pub sha256: String,
    /// Bytes the image loads into the target.
    pub bytes: u64,
}

/// Outcome of a scenario or step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    /// The rig could not carry the step out (timeout of the harness itself, backend error).
    Error,
    Skipped,
    /// Not run because an earlier step failed.
    NotRun,
    /// Cut off by Ctrl-C / SIGTERM: running or not yet run when the run was stopped. No verdict.
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Error => "error",
            Status::Skipped => "skipped",
            Status::NotRun => "not-run",
            Status::Interrupted => "interrupted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub board: String,
    /// Scenario file, as given on the command line.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Failure class (conformance matrix row) the scenario checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub status: Status,
    /// For conformance scenarios: the outcome the scenario expects, and whether it was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectedResult>,
    pub wall_started_at: String,
    pub wall_duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub steps: Vec<StepResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// Earlier attempts of a lab board's scenario that `--retries` ran again, oldest first. Virtual
    /// boards are deterministic and never retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<Attempt>,
    /// Passed only after a retry: the verdict is a pass, but the bench or the firmware is flaky.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flaky: bool,
}

/// A failed attempt of a scenario that was retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub wall_duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedResult {
    /// `pass` or `fail`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// What happened: the firmware's own outcome before comparing with the expectation.
    pub observed_outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_cause: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub index: usize,
    /// A cleanup step (runs whatever happened before).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleanup: bool,
    /// The step keyword (`flash`, `expect-serial`, ...).
    pub keyword: String,
    /// One line: what the step did ("flash fixture:app via uart").
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub status: Status,
    /// Start, relative to the scenario start (host wall clock).
    pub wall_offset_ms: u64,
    pub wall_duration_ms: u64,
    /// The board's virtual clock (microseconds since the board started) when the step began and
    /// ended; only for virtual boards, whose clock runs only while the rig waits on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_start_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_end_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

/// Raw evidence a step collected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Evidence {
    /// Bytes on a link, in order.
    Transcript { channel: String, entries: Vec<TranscriptEntry> },
    /// Named register values.
    Registers { label: String, values: BTreeMap<String, u32> },
    /// Free text (serial output, tool output).
    Text { label: String, text: String },
    /// A measured quantity.
    Measurement { label: String, value: f64, unit: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    pub wall_offset_ms: u64,
    /// `tx` (host to device) or `rx`.
    pub direction: String,
    /// Hex bytes, space separated.
    pub bytes: String,
    /// What the bytes mean ("Get ID", "ACK", "PID 0x0460").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded: Option<String>,
}

/// Why a failure happened, with the evidence behind the reasoning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Stable id of the cause (`primask-set-at-jump`), or `unknown`.
    pub cause: String,
    pub title: String,
    pub explanation: String,
    /// The facts the rule looked at (name -> value as shown), in the order it checked them.
    #[serde(default)]
    pub facts: Vec<Fact>,
    /// Raw snapshot at the failure: register name -> value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshot: BTreeMap<String, u32>,
    /// How to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    pub name: String,
    pub value: String,
    /// Whether this fact supports the named cause.
    pub supports: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub skipped: usize,
    /// Cut off by Ctrl-C / SIGTERM (absent in reports written before schema 2).
    #[serde(default)]
    pub interrupted: usize,
    /// Passed after a retry (lab boards with `--retries`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flaky: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    pub fn of(results: &[ScenarioResult]) -> Summary {
        let count = |s: Status| results.iter().filter(|r| r.status == s).count();
        Summary {
            total: results.len(),
            passed: count(Status::Passed),
            failed: count(Status::Failed),
            errors: count(Status::Error),
            skipped: count(Status::Skipped),
            interrupted: count(Status::Interrupted),
            flaky: results.iter().filter(|r| r.flaky).count(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConformanceRow {
    /// Failure class ("jump with PRIMASK set").
    pub class: String,
    /// Board -> cell.
    pub cells: BTreeMap<String, ConformanceCell>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConformanceCell {
    pub expected: String,
    pub seen: String,
    pub ok: bool,
    pub scenarios: Vec<String>,
}

impl RunReport {
    /// The conformance matrix from the scenario results that carry a failure class: one row per
    /// class, one cell per board; a cell is ok when every scenario of it passed (a deliberately
    /// faulty fixture passes when it fails with the expected cause).
    pub fn conformance_matrix(&self) -> Vec<ConformanceRow> {
        let mut rows: BTreeMap<String, BTreeMap<String, ConformanceCell>> = BTreeMap::new();
        for r in &self.scenarios {
            let Some(class) = &r.class else { continue };
            // No verdict, no cell: the run's status already says it is incomplete.
            if matches!(r.status, Status::Skipped | Status::Interrupted) {
                continue;
            }
            let expected = match &r.expected {
                Some(e) => match &e.cause {
                    Some(c) => format!("{}: {c}", e.outcome),
                    None => e.outcome.clone(),
                },
                None => "pass".into(),
            };
            let seen = match (&r.expected, r.status, &r.diagnosis) {
                (Some(e), _, _) => match &e.observed_cause {
                    Some(c) => format!("{}: {c}", e.observed_outcome),
                    None => e.observed_outcome.clone(),
                },
                (None, Status::Passed, _) => "pass".into(),
                (None, _, Some(d)) => format!("fail: {}", d.cause),
                (None, s, None) => s.as_str().into(),
            };
            let cell = rows.entry(class.clone()).or_default().entry(r.board.clone()).or_insert_with(|| {
                ConformanceCell { expected: String::new(), seen: String::new(), ok: true, scenarios: vec![] }
            });
            let sep = if cell.scenarios.is_empty() { "" } else { "; " };
            cell.expected.push_str(&format!("{sep}{expected}"));
            cell.seen.push_str(&format!("{sep}{seen}"));
            cell.ok &= r.status == Status::Passed;
            cell.scenarios.push(r.scenario.clone());
        }
        let mut rows: Vec<ConformanceRow> =
            rows.into_iter().map(|(class, cells)| ConformanceRow { class, cells }).collect();
        // Classes are numbered ("2. ...", "10. ..."): numeric order, not text order.
        rows.sort_by_cached_key(|r| (class_number(&r.class), r.class.clone()));
        rows
    }

    /// Recompute the summary and the overall status from the scenario results.
    pub fn finish_status(&mut self) {
        self.summary = Summary::of(&self.scenarios);
        self.conformance = self.conformance_matrix();
        if self.status == RunStatus::Running {
            // An interrupted scenario has no verdict, so neither has the run.
            self.status = if self.summary.interrupted > 0 {
                RunStatus::Interrupted
            } else if self.summary.failed + self.summary.errors > 0 {
                RunStatus::Failed
            } else {
                RunStatus::Passed
            };
        }
    }
}

/// The leading number of a class name ("10. watchdog" -> 10); unnumbered classes sort last.
fn class_number(class: &str) -> u64 {
    let digits: String = class.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(u64::MAX)
}
