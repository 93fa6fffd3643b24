//! Logging and terminal output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `-v` info, `-vv` debug, `-vvv` trace; RUST_LOG wins when set. Logs go to stderr.
pub fn init_logging(verbose: u8) {
    // probe-rs warns about states the rig creates on purpose (attaching to a running core);
    // its messages show from -vv on.
    let default = match verbose {
        0 => "warn,probe_rs=error",
        1 => "info,probe_rs=error",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(verbose >= 2)
        .try_init();
}

/// A byte progress bar on a terminal; hidden when stderr is not a TTY.
pub fn progress_bytes(total: u64, message: impl Into<String>) -> indicatif::ProgressBar {
    progress(Some(total), message)
}

/// A spinner/progress bar on a terminal; hidden when stderr is not a TTY (CI logs stay clean).
pub fn progress(len: Option<u64>, message: impl Into<String>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match len {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    pb.set_message(message.into());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// A plain text table: columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}
