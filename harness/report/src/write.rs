//! Writing a run's reports: one directory per run, each file replaced atomically (temp file +
//! rename in the same directory), so a reader never sees a half-written report and an interrupted
//! run still leaves a valid one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::model::RunReport;

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
