//! JUnit XML as GitHub Actions (test reporters) and GitLab (`artifacts:reports:junit`) read it:
//! one <testsuite> per board, one <testcase> per scenario, failures with the step and diagnosis;
//! interrupted scenarios as skipped with the message `interrupted`.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};

use crate::model::{RunReport, ScenarioResult, Status};
use crate::text::{evidence_text, failure_details};

/// Output kept per test case: CI test viewers choke on megabytes; report.json and the HTML page
/// keep everything.
const SYSTEM_OUT_LIMIT: usize = 16 * 1024;

pub fn render_junit(report: &RunReport) -> String {
    let mut out = Report::new(format!("hil run {}", report.run_id));
    out.set_time(std::time::Duration::from_millis(report.wall_duration_ms));
    let host = report.tool.host.clone().unwrap_or_else(crate::model::hostname);
    for board in &report.boards {
        let mut suite = TestSuite::new(board.name.clone());
        suite.add_property(("chip", board.chip.as_str()));
        suite.add_property(("kind", board.kind.as_str()));
        suite.add_property(("hil-version", report.tool.version.as_str()));
        if let Some(rev) = &report.tool.revision {
            suite.add_property(("hil-revision", rev.as_str()));
        }
        if let Some(p) = &board.seen.probe {
            suite.add_property(("probe", p.as_str()));
        }
        if let Some(b) = &board.seen.bootloader {
            suite.add_property(("bootloader", b.as_str()));
        }
        for i in &board.seen.images {
            suite.add_property(("image", format!("{} sha256:{}", i.name, i.sha256).as_str()));
        }
        suite.extra.insert("hostname".into(), host.as_str().into());
        let runs: Vec<&ScenarioResult> = report.scenarios.iter().filter(|r| r.board == board.name).collect();
        suite.set_time(std::time::Duration::from_millis(runs.iter().map(|r| r.wall_duration_ms).sum()));
        if let Some(t) = runs
            .iter()
            .filter_map(|r| chrono::DateTime::parse_from_rfc3339(&r.wall_started_at).ok())
            .min()
            .or_else(|| chrono::DateTime::parse_from_rfc3339(&report.started_at).ok())
        {
            suite.set_timestamp(t);
        }
        for r in runs {
            suite.add_test_case(test_case(r));
        }
        out.add_test_suite(suite);
    }
    out.to_string().unwrap_or_else(|e| format!("<!-- JUnit rendering failed: {e} -->\n"))
}

fn test_case(r: &ScenarioResult) -> TestCase {
    let status = match r.status {
        Status::Passed => TestCaseStatus::success(),
        Status::Skipped | Status::NotRun => {
            let mut s = TestCaseStatus::skipped();
            if let Some(m) = &r.message {
                s.set_message(one_line(m));
            }
            s
        }
        // Skipped, not error: an interrupted scenario has no verdict, and an error would count
        // against the board (or the rig) in CI's test history although nothing went wrong. The
        // run itself still fails the job: `hil run` exits 130 / 143.
        Status::Interrupted => {
            let mut s = TestCaseStatus::skipped();
            s.set_message("interrupted");
            s.set_type("interrupted");
            s.set_description(failure_details(r));
            s
        }
        Status::Failed | Status::Error => {
            let kind = if r.status == Status::Failed { NonSuccessKind::Failure } else { NonSuccessKind::Error };
            let mut s = TestCaseStatus::non_success(kind);
            let headline = match (&r.diagnosis, &r.message) {
                (Some(d), Some(m)) => format!("{m} [likely cause: {}]", d.title),
                (None, Some(m)) => m.clone(),
                (Some(d), None) => d.title.clone(),
                (None, None) => "failed".into(),
            };
            s.set_message(one_line(&headline));
            s.set_type(match &r.diagnosis {
                Some(d) => d.cause.clone(),
                None => r.status.as_str().to_string(),
            });
            s.set_description(failure_details(r));
            s
        }
    };
    let mut status = status;
    // Earlier attempts (`--retries`): <flakyFailure> under a pass, <rerunFailure> under a failure,
    // as Surefire writes them and CI test viewers read them.
    for a in &r.retried {
        let kind = if a.status == Status::Error { NonSuccessKind::Error } else { NonSuccessKind::Failure };
        let mut rerun = TestRerun::new(kind);
        rerun.set_time(std::time::Duration::from_millis(a.wall_duration_ms));
        if let Some(m) = &a.message {
            rerun.set_message(one_line(m));
        }
        if let Some(c) = &a.cause {
            rerun.set_type(c.as_str());
        }
        status.add_rerun(rerun);
    }
    let mut tc = TestCase::new(r.scenario.clone(), status);
    tc.set_classname(format!("{}.{}", r.board, r.file));
    tc.set_time(std::time::Duration::from_millis(r.wall_duration_ms));
    let out = evidence_text(r);
    if !out.is_empty() {
        tc.set_system_out(trimmed(out));
    }
    tc
}

/// An attribute value on one line: CI viewers show attributes as one line, and a raw newline in an
/// attribute is normalised away by XML parsers anyway.
fn one_line(s: &str) -> String {
    s.split(['\r', '\n']).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" / ")
}

fn trimmed(mut s: String) -> String {
    if s.len() > SYSTEM_OUT_LIMIT {
        let mut cut = SYSTEM_OUT_LIMIT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let total = s.len();
        s.truncate(cut);
        s.push_str(&format!(
            "\n[... {} of {total} bytes not shown here; the whole output is in report.json and report.html]\n",
            total - cut
        ));
    }
    s
}
