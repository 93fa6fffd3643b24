//! What each command does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hil_config::scenario::FlashTarget;
use hil_config::{Config, Diagnostic, ValidationContext, load_and_validate};

use crate::cli::{BenchCommand, Cli, Command, ConfigArgs, ImageCommand, ListWhat, SchemaWhat, SimCommand};
use crate::discover::Project;
use crate::output::table;
use crate::signals::{StopSignal, StopSignals};

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
/// `hil run`: no scenario failed, but the rig could not carry at least one out (board unreachable,
/// probe lost, safety net): the verdict is missing, not negative.
pub const EXIT_INFRASTRUCTURE: u8 = 3;
/// `hil run`: nothing ran (every scenario skipped, or none selected): a green light would be a lie.
pub const EXIT_NOTHING_RAN: u8 = 4;

/// What a finished run tells CI: a failure first (the board is broken), then a rig error (the
/// answer is missing), then nothing run at all.
pub fn run_exit_code(r: &hil_report::RunReport) -> u8 {
    let m = &r.summary;
    if m.failed > 0 {
        EXIT_FAILED
    } else if m.errors > 0 {
        EXIT_INFRASTRUCTURE
    } else if m.passed == 0 {
        EXIT_NOTHING_RAN
    } else {
        0
    }
}

/// The project a command works in (see [`crate::discover`]); `Err` carries exit 2 after saying
/// why none was found.
pub fn project(boards: Option<&Path>) -> Result<Project, ExitCode> {
    Project::from_cwd(boards).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The boards file for a command that takes `--boards` (or exit 2).
macro_rules! boards_file {
    ($arg:expr) => {
        match project($arg.as_deref()) {
            Ok(p) => p.boards,
            Err(code) => return Ok(code),
        }
    };
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate(cfg) => validate(&cfg),
        Command::List { what, json, config } => match crate::hardware::list(what, json)? {
            Some(code) => Ok(code),
            None => list(what, &config),
        },
        Command::Run {
            mut config,
            board_names,
            report_dir,
            lock_wait,
            audit_diagnosis,
            quiet,
            scenario_names,
            tags,
            class,
            dry_run,
            fail_fast,
            rerun_failed,
            jobs,
            retries,
        } => {
            let report_dir = match report_dir {
                Some(d) => d,
                None => match project(config.boards.as_deref()) {
                    Ok(p) => p.reports(),
                    Err(code) => return Ok(code),
                },
            };
            let rerun = match rerun_failed {
                None => None,
                Some(p) => {
                    let path = p.unwrap_or_else(|| report_dir.join("latest"));
                    match failed_in(&path) {
                        Ok(pairs) => Some(pairs),
                        Err(e) => {
                            eprintln!("error: --rerun-failed: {e:#}");
                            return Ok(ExitCode::from(EXIT_CONFIG));
                        }
                    }
                }
            };
            // Positional arguments: paths, or scenario names and globs.
            let (paths, mut names) = paths_and_names(std::mem::take(&mut config.paths));
            config.paths = paths;
            names.extend(scenario_names);
            run(
                &config,
                &board_names,
                &report_dir,
                &lock_wait,
                RunOutput { audit_diagnosis, quiet, dry_run },
                &Selection { names, tags, class, rerun },
                RunPolicy { fail_fast, jobs: jobs.into(), retries },
            )
        }
        Command::Doctor { boards, board, json } => crate::doctor::doctor(&boards_file!(boards), &board, json),
        Command::Info { boards, board } => crate::doctor::info(&boards_file!(boards), &board),
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "hil", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { what } => {
            let schema = match what {
                SchemaWhat::Boards => hil_config::schema::boards_schema(),
                SchemaWhat::Scenario => hil_config::schema::scenario_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { run, scenario, board, all } => explain(
            run.as_deref(),
            scenario.as_deref(),
            board.as_deref(),
            if all { ExplainScope::All } else { ExplainScope::Failures },
        ),
        Command::Flash { boards, board, via, verify, go, base, target, file } => {
            let boards = boards_file!(boards);
            let request = crate::flash::FlashRequest {
                via,
                verify,
                go,
                base: base.as_deref(),
                target: target.into(),
                file: &file,
            };
            crate::flash::flash(&boards, &board, request)
        }
        Command::Image { command: ImageCommand::Check { boards, board, base, target, file } } => {
            let boards = boards_file!(boards);
            image_check(&boards, &board, base.as_deref(), target.into(), &file)
        }
        Command::Sim { command: SimCommand::Power { adapter, state } } => {
            crate::sim::power(&adapter, state == crate::cli::PowerState::On)
        }
        Command::Sim {
            command: SimCommand::Serve { boards, board, uart_link, image, boot0, usbredir, usbredir_adapter },
        } => crate::sim::serve(
            &boards_file!(boards),
            &board,
            uart_link.as_deref(),
            image.as_deref(),
            boot0,
            crate::sim::UsbSockets { target: usbredir.as_deref(), adapter: usbredir_adapter.as_deref() },
        ),
        Command::Bench { command } => match command {
            BenchCommand::FlashUart { boards, board, size, baud } => {
                crate::bench::flash_uart(&boards_file!(boards), &board, &size, baud)
            }
            BenchCommand::FlashDfu { boards, board, size } => {
                crate::bench::flash_dfu(&boards_file!(boards), &board, &size)
            }
            BenchCommand::FlashProbe { boards, board } => crate::bench::flash_probe(&boards_file!(boards), &board),
            BenchCommand::Suite { config, board_count } => crate::bench::suite(&config, board_count),
        },
    }
}

/// What names in the config are checked against.
pub fn validation_context() -> ValidationContext {
    ValidationContext {
        fixtures: hil_fixtures::all().iter().map(|f| (f.name.to_string(), f.base)).collect(),
        causes: hil_rig::diagnosis::cause_ids(),
    }
}

/// Load and validate; print every problem and fail with exit 2 if there is any.
pub fn load_config(cfg: &ConfigArgs) -> Result<Config, ExitCode> {
    let project = project(cfg.boards.as_deref())?;
    let paths = if cfg.paths.is_empty() { vec![project.scenarios()] } else { cfg.paths.clone() };
    let (config, diags) = load_and_validate(&project.boards, &paths, &validation_context());
    match config {
        Some(c) if diags.is_empty() => Ok(c),
        _ => {
            print_diagnostics(&diags);
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
    let files: std::collections::BTreeSet<&Path> = diags.iter().map(|d| d.path.as_path()).collect();
    eprintln!(
        "{} problem{} in {} file{}",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    );
}

fn validate(cfg: &ConfigArgs) -> Result<ExitCode> {
    match load_config(cfg) {
        Ok(c) => {
            println!(
                "ok: {} ({} boards), {} scenario{}",
                c.boards.path.display(),
                c.boards.file.boards.len(),
                c.scenarios.len(),
                if c.scenarios.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

fn list(what: ListWhat, cfg: &ConfigArgs) -> Result<ExitCode> {
    if what == ListWhat::Boards {
        // The inventory alone: no scenarios needed.
        let path = match project(cfg.boards.as_deref()) {
            Ok(p) => p.boards,
            Err(code) => return Ok(code),
        };
        let loaded = match load_boards_checked(&path) {
            Ok(l) => l,
            Err(code) => return Ok(code),
        };
        print_boards(&loaded);
        return Ok(ExitCode::SUCCESS);
    }
    let config = match load_config(cfg) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match what {
        // Hardware listings never get here (crate::hardware answers them); boards above.
        ListWhat::Probes | ListWhat::Ports | ListWhat::Dfu | ListWhat::Boards => {}
        ListWhat::Scenarios => {
            let rows: Vec<Vec<String>> = config
                .scenarios
                .iter()
                .map(|s| {
                    let needs: std::collections::BTreeSet<_> = s
                        .scenario
                        .all_steps()
                        .flat_map(|st| st.value.action.needs())
                        .chain(s.scenario.requires.iter().map(|r| r.value))
                        .collect();
                    vec![
                        s.scenario.name.value.clone(),
                        s.path.display().to_string(),
                        s.scenario.steps.len().to_string(),
                        needs.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
                    ]
                })
                .collect();
            print!("{}", table(&["NAME", "FILE", "STEPS", "NEEDS"], &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_boards(loaded: &hil_config::LoadedBoards) {
    let rows: Vec<Vec<String>> = loaded
        .file
        .boards
        .iter()
        .map(|b| {
            let chip = Config::chip_of(&b.value);
            let caps: Vec<&str> = b.value.capabilities(chip).iter().map(|c| c.name()).collect();
            vec![
                b.value.name.value.clone(),
                chip.name.clone(),
                if b.value.virtual_board.is_some() { "virtual" } else { "lab" }.to_string(),
                if b.value.default { "yes" } else { "" }.to_string(),
                caps.join(","),
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "CHIP", "KIND", "DEFAULT", "CAPABILITIES"], &rows));
}

/// How `hil run` reports.
struct RunOutput {
    audit_diagnosis: bool,
    /// Totals only.
    quiet: bool,
    /// The plan, nothing run.
    dry_run: bool,
}

/// Which scenarios of the files a run takes.
struct Selection {
    names: Vec<String>,
    tags: Vec<String>,
    class: Option<String>,
    /// `--rerun-failed`: only these (scenario, board) pairs.
    rerun: Option<FailedRuns>,
}

/// How a run goes on after failures, and how wide.
struct RunPolicy {
    fail_fast: bool,
    jobs: usize,
    retries: u32,
}

/// The (scenario, board) pairs a run did not pass (failed, errored, interrupted), and its id.
struct FailedRuns {
    run_id: String,
    pairs: std::collections::BTreeSet<(String, String)>,
}

/// What did not pass in the run at `path` (a run directory, `latest`, or a report.json).
fn failed_in(path: &Path) -> Result<FailedRuns> {
    // A run whose process died still names what finished (from its journal).
    let report = hil_report::read_run(path)?;
    let pairs = report
        .scenarios
        .iter()
        .filter(|r| {
            matches!(r.status, hil_report::Status::Failed | hil_report::Status::Error | hil_report::Status::Interrupted)
        })
        .map(|r| (r.scenario.clone(), r.board.clone()))
        .collect();
    Ok(FailedRuns { run_id: report.run_id, pairs })
}

/// Splits `hil run`'s positional arguments: an existing file or directory, or anything that looks
/// like a path (a `/`, a `.yaml` / `.yml` ending), is a scenario path, so a mistyped path is reported
/// as a missing file; everything else is a scenario name or glob.
fn paths_and_names(args: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<String>) {
    let mut paths = Vec::new();
    let mut names = Vec::new();
    for arg in args {
        let text = arg.to_string_lossy();
        let looks_like_path = arg.exists()
            || text.contains('/')
            || text.contains(std::path::MAIN_SEPARATOR)
            || [".yaml", ".yml"].iter().any(|ext| text.ends_with(ext));
        if looks_like_path {
            paths.push(arg);
        } else {
            names.push(text.into_owned());
        }
    }
    (paths, names)
}

impl Selection {
    /// The name patterns that match no scenario of the loaded files, each with a did-you-mean.
    fn unmatched_names(&self, config: &Config) -> Vec<String> {
        let names = || config.scenarios.iter().map(|ls| ls.scenario.name.value.as_str());
        self.names
            .iter()
            .filter(|p| !names().any(|n| glob_match(p, n)))
            .map(|p| format!("`{p}`{}", did_you_mean(p, names())))
            .collect()
    }

    fn takes(&self, s: &hil_config::Scenario) -> bool {
        (self.names.is_empty() || self.names.iter().any(|p| glob_match(p, &s.name.value)))
            && (self.tags.is_empty() || s.tags.iter().any(|t| self.tags.contains(t)))
            && self.class.as_ref().is_none_or(|c| s.class.as_ref().is_some_and(|k| k.contains(c.as_str())))
    }
}

/// `*` matches any run of characters (possibly none); everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn run(
    cfg: &ConfigArgs,
    boards: &[String],
    report_dir: &Path,
    lock_wait: &str,
    out: RunOutput,
    selection: &Selection,
    policy: RunPolicy,
) -> Result<ExitCode> {
    let RunOutput { audit_diagnosis, quiet, dry_run } = out;
    let lock_wait: hil_config::Duration = lock_wait.parse().map_err(|e: String| anyhow::anyhow!("--lock-wait: {e}"))?;
    let mut config = match load_config(cfg) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let unmatched = selection.unmatched_names(&config);
    if !unmatched.is_empty() {
        eprintln!("error: no scenario is named {} (hil list scenarios)", unmatched.join(", "));
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    config.scenarios.retain(|ls| selection.takes(&ls.scenario));
    // --rerun-failed: the boards of the failed pairs (unless --board narrows them further).
    let mut boards = boards.to_vec();
    if let Some(rerun) = &selection.rerun {
        if rerun.pairs.is_empty() {
            println!("nothing to rerun: every scenario of run {} passed or was skipped", rerun.run_id);
            return Ok(ExitCode::SUCCESS);
        }
        if boards.is_empty() {
            boards = rerun
                .pairs
                .iter()
                .map(|(_, b)| b.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
        }
    }
    let selected = match select_boards(&config, &boards) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let joined = joined_boards(&config, &boards);
    let mut plans = hil_rig::plan::plan_with(&config, &selected, &joined);
    if let Some(rerun) = &selection.rerun {
        for p in &mut plans {
            let board = p.board.name.value.clone();
            p.scenarios.retain(|s| rerun.pairs.contains(&(s.loaded.scenario.name.value.clone(), board.clone())));
        }
        plans.retain(|p| !p.scenarios.is_empty());
        let missing: Vec<String> = rerun
            .pairs
            .iter()
            .filter(|(s, b)| {
                !plans
                    .iter()
                    .any(|p| &p.board.name.value == b && p.scenarios.iter().any(|x| &x.loaded.scenario.name.value == s))
            })
            .map(|(s, b)| format!("{s} on {b}"))
            .collect();
        if !missing.is_empty() {
            eprintln!("warning: not in the current files or selection, not rerun: {}", missing.join(", "));
        }
    }
    let total: usize = plans.iter().map(|p| p.scenarios.len()).sum();
    if total == 0 {
        eprintln!(
            "error: no scenario runs on the selected boards ({})",
            selected.iter().map(|b| b.name.value.as_str()).collect::<Vec<_>>().join(", ")
        );
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    if dry_run {
        for p in &plans {
            println!("{} ({}):", p.board.name.value, p.board.chip.value);
            for s in &p.scenarios {
                match &s.skip {
                    None => println!("  run   {:<40} {}", s.loaded.scenario.name.value, s.loaded.path.display()),
                    Some(why) => println!("  skip  {:<40} {why}", s.loaded.scenario.name.value),
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let cancel = hil_rig::CancelFlag::new();
    let abandon = hil_rig::CancelFlag::new();
    let stopped_by = std::sync::Arc::new(std::sync::OnceLock::<StopSignal>::new());
    let outcome = runtime.block_on(async {
        let mut signals = StopSignals::install().context("installing the Ctrl-C / SIGTERM handlers")?;
        let (c, a, stopped) = (cancel.clone(), abandon.clone(), stopped_by.clone());
        tokio::spawn(async move {
            let first = signals.next().await;
            let _ = stopped.set(first);
            eprintln!(
                "{}: stopping: finishing the current steps and writing the report (again to force)",
                first.name()
            );
            c.cancel();
            let again = signals.next().await;
            eprintln!("{}: abandoning the running steps; writing the report", again.name());
            a.cancel();
            // The report is written within a few hundred milliseconds; a stuck disk must not keep
            // the process alive.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            std::process::exit(again.exit_code().into());
        });
        let progress = crate::output::progress(None, format!("running {total} scenario runs"));
        // Each scenario's line as it finishes (flushed, so CI logs stream); above the spinner on a
        // terminal, which counts done/total.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let running = hil_rig::engine::RunningSteps::default();
        // On a terminal: done/total and what each board is on, refreshed a few times a second.
        if !progress.is_hidden() {
            let (progress, done, running) = (progress.clone(), done.clone(), running.clone());
            tokio::spawn(async move {
                while !progress.is_finished() {
                    let n = done.load(std::sync::atomic::Ordering::Relaxed);
                    let boards: Vec<String> =
                        running.current().into_iter().map(|(b, s, step)| format!("{b}: {s} {step}")).collect();
                    progress.set_message(format!("{n}/{total} done | {}", boards.join(" | ")));
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            });
        }
        let on_result: Option<hil_rig::engine::ResultSink> = {
            let (progress, done) = (progress.clone(), done.clone());
            Some(std::sync::Arc::new(move |r: &hil_report::ScenarioResult| {
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if quiet {
                    return;
                }
                let line = scenario_line(r);
                if progress.is_hidden() {
                    use std::io::Write as _;
                    let mut o = std::io::stdout().lock();
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                } else {
                    progress.println(line);
                }
            }) as hil_rig::engine::ResultSink)
        };
        let opts = hil_rig::EngineOptions {
            lock_wait: lock_wait.std(),
            audit_diagnosis,
            on_result,
            parallel_boards: policy.jobs,
            fail_fast: policy.fail_fast,
            retries: policy.retries,
            abandon: abandon.clone(),
            running: running.clone(),
            ..Default::default()
        };
        let r = hil_rig::engine::run(
            plans,
            std::sync::Arc::new(hil_rig::opener::rig_opener()),
            report_dir,
            opts,
            cancel.clone(),
        )
        .await;
        progress.finish_and_clear();
        r.context("writing the report")
    });
    // Every board task has ended unless a second signal abandoned them: do not wait for their
    // blocking steps (dropping the runtime would), the report is written.
    runtime.shutdown_background();
    let (report, dir) = outcome?;
    // The scenario lines went out as the scenarios finished; the totals close the run.
    print!("{}", run_totals(&report));
    println!("reports: {}", dir.path().display());
    if let Some(signal) = stopped_by.get() {
        return Ok(ExitCode::from(signal.exit_code()));
    }
    Ok(ExitCode::from(run_exit_code(&report)))
}

/// One scenario run on one line: status, scenario, board, wall time, message, named cause.
fn scenario_line(x: &hil_report::ScenarioResult) -> String {
    use std::fmt::Write as _;
    let mut s = format!("{:<8} {:<40} {:<24} {:>7} ms", x.status.as_str(), x.scenario, x.board, x.wall_duration_ms);
    if let Some(m) = &x.message {
        let _ = write!(s, "  {m}");
    }
    if let Some(d) = &x.diagnosis {
        let _ = write!(s, "  [cause: {}]", d.cause);
    }
    s
}

/// The totals line.
fn run_totals(r: &hil_report::RunReport) -> String {
    let m = &r.summary;
    format!(
        "{}: {} passed, {} failed, {} errors, {} skipped{} ({:.1} s)\n",
        if run_exit_code(r) == EXIT_NOTHING_RAN && r.status == hil_report::RunStatus::Passed {
            "NOTHING RAN".to_string()
        } else {
            format!("{:?}", r.status).to_uppercase()
        },
        m.passed,
        m.failed,
        m.errors,
        m.skipped,
        if m.interrupted == 0 { String::new() } else { format!(", {} interrupted", m.interrupted) },
        r.wall_duration_ms as f64 / 1000.0
    )
}

/// Lock a lab board's hardware for a command that drives the board itself, as `hil run` does
/// (a virtual board needs none). `Err` carries exit 1 after naming the resource and its holder.
pub fn lock_board(board: &hil_config::Board) -> Result<hil_rig::lock::BoardLock, ExitCode> {
    let dir = hil_rig::lock::default_lock_dir();
    hil_rig::lock::BoardLock::acquire(&dir, board, std::time::Duration::ZERO, &|| false).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_FAILED)
    })
}

/// Load and validate boards.yaml alone; `Err` carries exit 2 after printing the problems.
pub fn load_boards_checked(boards_path: &Path) -> Result<hil_config::LoadedBoards, ExitCode> {
    let loaded = match hil_config::load_boards(boards_path) {
        Ok(b) => b,
        Err(d) => {
            print_diagnostics(&[d]);
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    let diags = hil_config::validate::validate_boards(&loaded);
    if !diags.is_empty() {
        print_diagnostics(&diags);
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(loaded)
}

/// Load boards.yaml alone (for commands that take `--board` but no scenarios) and find a board.
pub fn board_from(boards_path: &Path, name: &str) -> Result<(hil_config::LoadedBoards, String), ExitCode> {
    let loaded = load_boards_checked(boards_path)?;
    if loaded.get(name).is_none() {
        eprintln!(
            "error: unknown board `{name}`{}; boards in {}: {}",
            did_you_mean(name, loaded.names()),
            boards_path.display(),
            loaded.names().join(", ")
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok((loaded, name.to_string()))
}

/// What preflight checks an image against, from a board's chip and layout.
/// Preflight `image` for `board` in its role; `Err` carries the exit code for a board that cannot
/// take the role (no bootloader region).
pub fn preflight(
    board: &hil_config::Board,
    image: &hil_image::Image,
    what: FlashTarget,
) -> std::result::Result<hil_image::preflight::Report, ExitCode> {
    hil_rig::session::preflight_report(board, Config::chip_of(board), image, what).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn parse_base(base: Option<&str>) -> Result<Option<u32>> {
    base.map(|b| hil_config::values::parse_u32(b, "--base address").map_err(anyhow::Error::msg)).transpose()
}

/// `hil image check`: 0 when the image may be flashed (warnings allowed), 1 when preflight refuses
/// it, 2 when the board or file cannot be used at all.
fn image_check(boards: &Path, board: &str, base: Option<&str>, what: FlashTarget, file: &Path) -> Result<ExitCode> {
    let (loaded, name) = match board_from(boards, board) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    let board = loaded.get(&name).expect("checked by board_from");
    let image =
        hil_image::Image::load(file, parse_base(base)?).with_context(|| format!("loading {}", file.display()))?;
    let report = match preflight(board, &image, what) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    for seg in &image.segments {
        println!("segment {:#010x}..{:#010x} ({} bytes): {}", seg.address, seg.end(), seg.data.len(), seg.describe());
    }
    print!("{report}");
    if report.passed() {
        println!("ok: {} may be flashed on {} ({})", file.display(), name, board.chip.value);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("refused: {} must not be flashed on {}", file.display(), name);
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

/// " (did you mean `x`?)" when a candidate is close to `name`.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    hil_config::validate::closest(name, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

/// Boards that are in a default run only because scenarios name them (not `default: true`, no
/// `--board`): they run just the scenarios that name them.
pub fn joined_boards<'a>(config: &'a Config, names: &[String]) -> Vec<&'a str> {
    if !names.is_empty() {
        return Vec::new();
    }
    config.boards.file.boards.iter().map(|b| &b.value).filter(|b| !b.default).map(|b| b.name.value.as_str()).collect()
}

/// `--board` names; without them the default boards plus the boards scenarios name explicitly
/// (a scenario written for one board's layout brings that board into the run).
pub fn select_boards<'a>(config: &'a Config, names: &[String]) -> Result<Vec<&'a hil_config::Board>> {
    if names.is_empty() {
        let named: std::collections::BTreeSet<&str> =
            config.scenarios.iter().flat_map(|s| s.scenario.boards.iter().map(|b| b.value.as_str())).collect();
        let d: Vec<_> = config
            .boards
            .file
            .boards
            .iter()
            .map(|b| &b.value)
            .filter(|b| b.default || named.contains(b.name.value.as_str()))
            .collect();
        if d.is_empty() {
            bail!(
                "no board selected: {} marks no board `default: true`; pass --board NAME",
                config.boards.path.display()
            );
        }
        return Ok(d);
    }
    names
        .iter()
        .map(|n| {
            config.boards.get(n).with_context(|| {
                let names = config.boards.names();
                format!(
                    "unknown board `{n}`{}; boards in {}: {}",
                    did_you_mean(n, names.iter().copied()),
                    config.boards.path.display(),
                    names.join(", ")
                )
            })
        })
        .collect()
}

/// `hil explain`: the reasoning behind each diagnosis of a run.
fn explain(run: Option<&Path>, scenario: Option<&str>, board: Option<&str>, scope: ExplainScope) -> Result<ExitCode> {
    let path = match run {
        Some(p) if p.is_dir() => p.join(hil_report::write::JSON),
        Some(p) => p.to_path_buf(),
        None => match project(None) {
            Ok(p) => p.reports().join("latest").join(hil_report::write::JSON),
            Err(code) => return Ok(code),
        },
    };
    let report = hil_report::read_run(&path)?;
    print!("{}", explain_text(&report, scenario, board, scope));
    Ok(ExitCode::SUCCESS)
}

/// What `hil explain` shows: failures (and flaky passes) by default, or every scenario with a
/// diagnosis, including expected failures that passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExplainScope {
    Failures,
    All,
}

pub fn explain_text(
    report: &hil_report::RunReport,
    scenario: Option<&str>,
    board: Option<&str>,
    scope: ExplainScope,
) -> String {
    use hil_report::Status;
    use std::fmt::Write as _;
    let mut s = String::new();
    let mut shown = 0;
    let is_failure = |r: &hil_report::ScenarioResult| {
        matches!(r.status, Status::Failed | Status::Error | Status::Interrupted) || r.flaky
    };
    // Failures first, then (with --all) the diagnosed passes.
    let ordered = report.scenarios.iter().filter(|r| is_failure(r)).chain(
        report.scenarios.iter().filter(|r| scope == ExplainScope::All && !is_failure(r) && r.diagnosis.is_some()),
    );
    for r in ordered {
        if scenario.is_some_and(|n| n != r.scenario) || board.is_some_and(|b| b != r.board) {
            continue;
        }
        shown += 1;
        let _ = writeln!(
            s,
            "{} on {}: {}{}",
            r.scenario,
            r.board,
            r.status.as_str(),
            if r.flaky { " (flaky)" } else { "" }
        );
        if let Some(m) = &r.message {
            let _ = writeln!(s, "  failure:  {m}");
        }
        for (n, a) in r.retried.iter().enumerate() {
            let _ = writeln!(s, "  attempt {}: {} {}", n + 1, a.status.as_str(), a.message.as_deref().unwrap_or(""));
        }
        if let Some(e) = &r.expected {
            let _ = writeln!(
                s,
                "  expected: {}{}",
                e.outcome,
                e.cause.as_ref().map(|c| format!(" with cause {c}")).unwrap_or_default()
            );
        }
        // The failed step and what the board actually said (the serial text an expect-serial got).
        for step in r.steps.iter().filter(|st| matches!(st.status, Status::Failed | Status::Error)) {
            let _ = writeln!(
                s,
                "  step {}:   {} {}: {}",
                step.index + 1,
                step.summary,
                step.status.as_str(),
                step.message.as_deref().unwrap_or("")
            );
            for e in &step.evidence {
                if let hil_report::Evidence::Text { label, text } = e {
                    let _ = writeln!(s, "  {label}:");
                    for line in text.lines() {
                        let _ = writeln!(s, "    | {line}");
                    }
                }
            }
        }
        match &r.diagnosis {
            Some(d) => {
                let _ = writeln!(s, "  cause:    {} ({})", d.title, d.cause);
                let _ = writeln!(s, "  because:  {}", d.explanation);
                if !d.facts.is_empty() {
                    let _ = writeln!(s, "  evidence (+ supports the cause, - checked and does not):");
                    for f in &d.facts {
                        let _ = writeln!(s, "    {} {:<36} {}", if f.supports { "+" } else { "-" }, f.name, f.value);
                    }
                }
                if let Some(fix) = &d.fix {
                    let _ = writeln!(s, "  fix:      {fix}");
                }
                if !d.snapshot.is_empty() {
                    let _ = writeln!(s, "  registers at failure:");
                    for (k, v) in &d.snapshot {
                        let _ = writeln!(s, "    {k:<14} {v:#010x}");
                    }
                }
            }
            None if r.status == Status::Failed => {
                let _ = writeln!(s, "  cause:    none named (no diagnosis rule matched the snapshot)");
            }
            None => {}
        }
        s.push('\n');
    }
    if shown == 0 {
        let _ = writeln!(
            s,
            "no {} in run {}",
            if scope == ExplainScope::All {
                "failures or diagnoses"
            } else {
                "failures (--all shows diagnosed passes)"
            },
            report.run_id
        );
    }
    s
}

#[cfg(test)]
mod selection_tests {
    use super::glob_match;

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob_match("c09-*", "c09-option-bits"));
        assert!(glob_match("*dfu", "flash-over-dfu"));
        assert!(glob_match("*over*", "flash-over-uart"));
        assert!(glob_match("reset-verify-pc", "reset-verify-pc"));
        assert!(!glob_match("c09-*", "c10-watchdog"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(!glob_match("ab*ba", "aba"), "the ends may not overlap");
    }
}
