//! Where the configuration is: boards.yaml found by walking up from the working directory (as
//! cargo finds Cargo.toml), or named by `--boards` / `HIL_BOARDS`. The directory that holds it is
//! the project: its `scenarios/` and `reports/` are the defaults.

use std::path::{Path, PathBuf};

/// The file name looked for in each directory.
pub const BOARDS_FILE: &str = "boards.yaml";

/// The boards file a command uses, and the project directory around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub boards: PathBuf,
    /// The directory of the boards file: `scenarios/` and `reports/` are found here by default.
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(
        "no {BOARDS_FILE} in {} or any parent directory; run hil inside a rig project, pass --boards FILE or set HIL_BOARDS",
        start.display()
    )]
    NotFound { start: PathBuf },
    #[error("cannot tell the working directory: {0}")]
    Cwd(std::io::Error),
}

impl Project {
    /// `explicit` (from `--boards` / `HIL_BOARDS`) as given; otherwise the nearest boards.yaml at or
    /// above `start`.
    pub fn locate(explicit: Option<&Path>, start: &Path) -> Result<Project, DiscoverError> {
        if let Some(file) = explicit {
            let root = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            return Ok(Project { boards: file.to_path_buf(), root });
        }
        for dir in start.ancestors() {
            let candidate = dir.join(BOARDS_FILE);
            if candidate.is_file() {
                // Shown relative to the working directory when it is the working directory.
                let (boards, root) = if dir == start {
                    (PathBuf::from(BOARDS_FILE), PathBuf::from("."))
                } else {
                    (candidate, dir.to_path_buf())
                };
                return Ok(Project { boards, root });
            }
        }
        Err(DiscoverError::NotFound { start: start.to_path_buf() })
    }

    /// From the working directory.
    pub fn from_cwd(explicit: Option<&Path>) -> Result<Project, DiscoverError> {
        let cwd = std::env::current_dir().map_err(DiscoverError::Cwd)?;
        Self::locate(explicit, &cwd)
    }

    pub fn scenarios(&self) -> PathBuf {
        self.root.join("scenarios")
    }

    pub fn reports(&self) -> PathBuf {
        self.root.join("reports")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_boards_file_above_the_working_directory_is_the_project() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("scenarios/sub");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(tmp.path().join(BOARDS_FILE), "boards: []\n").unwrap();
        let p = Project::locate(None, &deep).unwrap();
        assert_eq!(p.boards, tmp.path().join(BOARDS_FILE));
        assert_eq!(p.scenarios(), tmp.path().join("scenarios"));
        assert_eq!(p.reports(), tmp.path().join("reports"));
        // In the project directory itself, paths stay short.
        let p = Project::locate(None, tmp.path()).unwrap();
        assert_eq!(p.boards, PathBuf::from(BOARDS_FILE));
        assert_eq!(p.scenarios(), PathBuf::from("./scenarios"));
        // A nearer one wins; an explicit file wins over both.
        std::fs::write(deep.join(BOARDS_FILE), "boards: []\n").unwrap();
        assert_eq!(Project::locate(None, &deep).unwrap().boards, PathBuf::from(BOARDS_FILE));
        let p = Project::locate(Some(Path::new("/etc/rig/lab.yaml")), &deep).unwrap();
        assert_eq!((p.boards, p.root), (PathBuf::from("/etc/rig/lab.yaml"), PathBuf::from("/etc/rig")));
    }

    #[test]
    fn no_boards_file_anywhere_says_how_to_name_one() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory tree without boards.yaml (tmp's parents may hold one on a dev machine, so
        // only the message is checked when one is found).
        match Project::locate(None, tmp.path()) {
            Err(e) => {
                let m = e.to_string();
                assert!(
                    m.contains("no boards.yaml in") && m.contains("--boards FILE") && m.contains("HIL_BOARDS"),
                    "{m}"
                );
            }
            Ok(p) => assert!(p.boards.is_file()),
        }
    }
}
