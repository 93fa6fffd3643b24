//! What each command does.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hil_config::{Config, Diagnostic, ValidationContext, load_and_validate};

use crate::cli::{BenchCommand, Cli, Command, ConfigArgs, ImageCommand, ListWhat, SchemaWhat, SimCommand};
use crate::output::table;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

/// An error that means "this path is not built yet": exit 2 with a clear message.
pub fn not_yet_supported(what: &str) -> anyhow::Error {
    anyhow::anyhow!("not yet supported: {what}")
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate(cfg) => validate(&cfg),
        Command::List { what, config } => list(what, &config),
        Command::Run { config, board_names, report_dir } => run(&config, &board_names, &report_dir),
        Command::Schema { what } => {
            let schema = match what {
                SchemaWhat::Boards => hil_config::schema::boards_schema(),
                SchemaWhat::Scenario => hil_config::schema::scenario_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Flash { .. } => Err(not_yet_supported("flashing through a board's bootloader or probe (`hil flash`)")),
        Command::Image { command: ImageCommand::Check { .. } } => {
            Err(not_yet_supported("image preflight (`hil image check`)"))
        }
        Command::Sim { command: SimCommand::Serve { .. } } => {
            Err(not_yet_supported("running a standalone virtual board (`hil sim serve`)"))
        }
        Command::Bench { command } => Err(not_yet_supported(match command {
            BenchCommand::FlashUart { .. } => "the UART flashing benchmark (`hil bench flash-uart`)",
            BenchCommand::FlashProbe { .. } => "the probe flashing benchmark (`hil bench flash-probe`)",
            BenchCommand::Suite { .. } => "the suite benchmark (`hil bench suite`)",
        })),
    }
}

/// What names in the config are checked against.
pub fn validation_context() -> ValidationContext {
    ValidationContext {
        fixtures: hil_fixtures::all().iter().map(|f| (f.name.to_string(), f.base)).collect(),
        causes: Vec::new(),
    }
}

/// Load and validate; print every problem and fail with exit 2 if there is any.
pub fn load_config(cfg: &ConfigArgs) -> Result<Config, ExitCode> {
    let (config, diags) = load_and_validate(&cfg.boards, &cfg.scenario_paths(), &validation_context());
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
    let config = match load_config(cfg) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match what {
        ListWhat::Boards => {
            let rows: Vec<Vec<String>> = config
                .boards
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
        ListWhat::Scenarios => {
            let rows: Vec<Vec<String>> = config
                .scenarios
                .iter()
                .map(|s| {
                    let needs: std::collections::BTreeSet<_> = s
                        .scenario
                        .steps
                        .iter()
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

fn run(cfg: &ConfigArgs, boards: &[String], report_dir: &Path) -> Result<ExitCode> {
    let config = match load_config(cfg) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let selected = select_boards(&config, boards)?;
    let _ = (selected, report_dir);
    Err(not_yet_supported("running scenarios (the scenario engine)")).context("hil run")
}

/// `--board` names, or the default boards.
pub fn select_boards<'a>(config: &'a Config, names: &[String]) -> Result<Vec<&'a hil_config::Board>> {
    if names.is_empty() {
        let d: Vec<_> = config.boards.defaults().collect();
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
                format!(
                    "unknown board `{n}`; boards in {}: {}",
                    config.boards.path.display(),
                    config.boards.names().join(", ")
                )
            })
        })
        .collect()
}

#[allow(dead_code)]
const _: () = {
    let _ = EXIT_OK;
    let _ = EXIT_FAILED;
};
