//! Writing a run's reports: one directory per run, each file replaced atomically (temp file +
//! rename in the same directory), so a reader never sees a half-written report and an interrupted
//! run still leaves a valid one.
//!
//! While a run goes on, each finished scenario is appended to a journal (`results.jsonl`, one
//! result per line) and the full formats are rewritten only now and then: rewriting every format
//! after every scenario cost time quadratic in the suite (a 171-run suite rendered ~500 MB). A
//! run whose process died keeps every finished result in the journal; [`read_run`] merges it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::model::{RunReport, RunStatus, ScenarioResult, Summary};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot create report directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode report.json: {0}")]
    Encode(#[from] serde_json::Error),
}

/// File names inside a run directory.
pub const JSON: &str = "report.json";
pub const JUNIT: &str = "junit.xml";
pub const MARKDOWN: &str = "summary.md";
pub const HTML: &str = "report.html";
/// One finished scenario per line while the run goes on; removed once report.json holds them all.
pub const JOURNAL: &str = "results.jsonl";

/// The directory of one run.
#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// Create `<root>/<started>-<run_id>/` (root is reports/ or --report-dir).
    pub fn create(root: &Path, report: &RunReport) -> Result<RunDir, ReportError> {
        let stamp: String = report.started_at.chars().filter(|c| c.is_ascii_digit()).take(14).collect();
        let dir = root.join(format!("{stamp}-{}", report.run_id));
        std::fs::create_dir_all(&dir).map_err(|source| ReportError::CreateDir { path: dir.clone(), source })?;
        Ok(RunDir { dir })
    }

    /// Use an existing directory as is.
    pub fn at(dir: impl Into<PathBuf>) -> RunDir {
        RunDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Write every format. report.json goes last, so its presence means the others match it.
    pub fn write_all(&self, report: &RunReport) -> Result<(), ReportError> {
        write_atomic(&self.dir.join(JUNIT), crate::render_junit(report).as_bytes())?;
        write_atomic(&self.dir.join(MARKDOWN), crate::render_markdown(report).as_bytes())?;
        write_atomic(&self.dir.join(HTML), crate::render_html(report).as_bytes())?;
        write_atomic(&self.dir.join(JSON), crate::render_json(report)?.as_bytes())?;
        Ok(())
    }

    /// Append one finished scenario to the journal (a single write of one line, so a reader sees
    /// whole lines only, except perhaps a last line cut short by a crash).
    pub fn append_result(&self, result: &ScenarioResult) -> Result<(), ReportError> {
        let path = self.dir.join(JOURNAL);
        let err = |source| ReportError::Write { path: path.clone(), source };
        let mut line = serde_json::to_string(result)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(err)?;
        file.write_all(line.as_bytes()).map_err(err)
    }

    /// The final report is written: the journal says nothing report.json does not.
    pub fn remove_journal(&self) {
        let _ = std::fs::remove_file(self.dir.join(JOURNAL));
    }

    /// Point `<root>/latest` at this run (best effort: a symlink where the OS allows it).
    pub fn mark_latest(&self, root: &Path) {
        #[cfg(unix)]
        {
            let Some(name) = self.dir.file_name() else { return };
            let tmp = root.join(format!(".latest-{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            if std::os::unix::fs::symlink(name, &tmp).is_ok() && std::fs::rename(&tmp, root.join("latest")).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        #[cfg(not(unix))]
        let _ = root;
    }
}

/// Replace `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    // A temp file is created 0600; reports are shared with the lab group and CI's uploader.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a hil report: {source}")]
    NotAReport { path: PathBuf, source: serde_json::Error },
    #[error("{path}:{line}: not a scenario result: {source}")]
    Journal { path: PathBuf, line: usize, source: serde_json::Error },
}

/// A run's report from `path` (a run directory, `latest`, or a report.json). A run still marked
/// running (its process is running, or died) gets the finished results of its journal that
/// report.json does not have yet, and a summary that counts them.
pub fn read_run(path: &Path) -> Result<RunReport, ReadError> {
    let file = if path.is_dir() { path.join(JSON) } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|source| ReadError::Io { path: file.clone(), source })?;
    let mut report: RunReport =
        serde_json::from_str(&text).map_err(|source| ReadError::NotAReport { path: file.clone(), source })?;
    if report.status != RunStatus::Running {
        return Ok(report);
    }
    let journal = file.parent().unwrap_or(Path::new(".")).join(JOURNAL);
    let text = match std::fs::read_to_string(&journal) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(source) => return Err(ReadError::Io { path: journal, source }),
    };
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<ScenarioResult>(line) {
            Ok(r) => {
                if !report.scenarios.iter().any(|s| s.scenario == r.scenario && s.board == r.board) {
                    report.scenarios.push(r);
                }
            }
            // A crash can cut the last line short; anything else is damage worth naming.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(source) => return Err(ReadError::Journal { path: journal, line: i + 1, source }),
        }
    }
    report.summary = Summary::of(&report.scenarios);
    Ok(report)
}
