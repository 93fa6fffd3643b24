//! Reading and parsing YAML files into the data model, with every problem reported as a
//! [`Diagnostic`] at `FILE:LINE:COL`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One problem, printed as `FILE:LINE:COL: message`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl Diagnostic {
    pub fn new(path: &Path, line: u32, column: u32, message: impl Into<String>) -> Self {
        // A value built in code (line 0) is reported at the top of the file.
        Diagnostic { path: path.to_path_buf(), line: line.max(1), column: column.max(1), message: message.into() }
    }
    /// A problem with the file as a whole.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::new(path, 1, 1, message)
    }
    pub fn at<T>(path: &Path, located: &crate::Located<T>, message: impl Into<String>) -> Self {
        Self::new(path, located.line, located.column, message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
    }
}

/// Largest boards or scenario file read (hand-written YAML is a few KiB; this stops a wrong path).
pub const MAX_CONFIG_FILE: u64 = 4 * 1024 * 1024;

fn hil_file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Read a YAML text file, refusing what cannot be one (missing, a directory, binary, empty).
/// `kind` names what the file should hold ("a boards file", "a scenario").
pub fn read_yaml_text(path: &Path, kind: &str) -> Result<String, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            // ELOOP (40 on Linux): `ErrorKind::FilesystemLoop` is not stable.
            _ if e.raw_os_error() == Some(40) => "a symlink loop".to_string(),
            _ => e.to_string(),
        };
        Diagnostic::file(path, format!("cannot read {kind}: {why}"))
    })?;
    if meta.is_dir() {
        return Err(Diagnostic::file(path, format!("is a directory, expected {kind} (a YAML file)")));
    }
    // Checked before opening: opening a FIFO blocks until a writer comes, /dev/zero never ends.
    if !meta.is_file() {
        return Err(Diagnostic::file(
            path,
            format!("is {}, expected {kind} (a regular YAML file)", hil_file_kind(&meta)),
        ));
    }
    if meta.len() > MAX_CONFIG_FILE {
        return Err(Diagnostic::file(
            path,
            format!("is {} bytes; {kind} is at most {MAX_CONFIG_FILE} bytes", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    {
        use std::io::Read as _;
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_FILE + 1).read_to_end(&mut bytes))
            .map_err(|e| Diagnostic::file(path, format!("cannot read {kind}: {e}")))?;
    }
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(Diagnostic::file(path, format!("grew past {MAX_CONFIG_FILE} bytes while being read")));
    }
    if let Some(pos) = bytes.iter().position(|b| *b == 0) {
        return Err(Diagnostic::file(
            path,
            format!("not a text file (NUL byte at offset {pos}), expected {kind} in YAML"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Diagnostic::file(
            path,
            format!(
                "not a UTF-8 text file (invalid byte at offset {}), expected {kind} in YAML",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let meaningful = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    });
    if !meaningful {
        return Err(Diagnostic::file(path, format!("empty file, expected {kind}")));
    }
    Ok(text)
}

/// Parse YAML into `T`. The parser stops at the first structural problem (unknown key, wrong type,
/// missing field, bad value, malformed YAML), which is reported at its exact position.
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Diagnostic> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_str_with_options::<T>(text, options).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line() as u32, l.column() as u32)).unwrap_or((1, 1));
        Diagnostic::new(path, line, column, clean_message(&e.without_snippet().to_string()))
    })
}

/// serde-saphyr puts the position into its messages; ours carry it in front instead.
fn clean_message(raw: &str) -> String {
    let mut m = raw.trim().to_string();
    if let Some(rest) = m.strip_prefix("error: ") {
        m = rest.to_string();
    }
    // "line 3 column 5: message"
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
        && rest.split_once(' ').is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
    {
        m = after.to_string();
    }
    // "message at line 3, column 5"
    if let Some(idx) = m.rfind(" at line ")
        && m[idx + 9..].split(", column ").count() == 2
    {
        m.truncate(idx);
    }
    let m = m
        .replace("unexpected end of input", "unexpected end of file (unclosed bracket or quote?)")
        .replace("expected mapping start", "expected a mapping (key: value pairs) here")
        .replace("expected sequence start", "expected a list here")
        .replace("expected string scalar", "expected a string here");
    m.lines().next().unwrap_or("").trim().to_string()
}

/// Expand scenario paths: files as given, directories to their `*.yaml`/`*.yml` files (sorted,
/// recursively). Missing paths become diagnostics.
pub fn collect_scenario_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let (mut files, mut diags) = (Vec::new(), Vec::new());
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found, &mut diags);
            found.sort();
            if found.is_empty() {
                diags.push(Diagnostic::file(p, "directory holds no scenario files (*.yaml, *.yml)"));
            }
            files.extend(found);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            diags.push(Diagnostic::file(p, "cannot read a scenario: file not found"));
        }
    }
    (files, diags)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::file(dir, format!("cannot list directory: {e}")));
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out, diags);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clean_message;

    #[test]
    fn positions_are_stripped_from_parser_messages() {
        assert_eq!(clean_message("error: line 2 column 1: unknown field `x`"), "unknown field `x`");
        assert_eq!(clean_message("missing field `steps` at line 2, column 1"), "missing field `steps`");
        assert_eq!(clean_message("invalid u32"), "invalid u32");
    }
}
