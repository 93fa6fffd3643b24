//! `hil flash`: preflight an image, bring the board into the bootloader the path needs, flash,
//! verify, and optionally start the image. The same steps a scenario's `flash` runs.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hil_config::scenario::{Action, BoardState, EraseMode, Flash, FlashTarget, ImageRef, Via};
use hil_config::{Located, Step};
use hil_report::{Evidence, Status};
use hil_rig::engine::{BoardSession, CancelFlag, StepCx};

use crate::cli::FlashVia;
use crate::commands::{EXIT_CONFIG, EXIT_FAILED, board_from, preflight};

fn step(action: Action) -> Step {
    Step { action, timeout: None, name: None }
}

/// What `hil flash` was asked to do, from its command line.
pub struct FlashRequest<'a> {
    pub via: FlashVia,
    pub verify: bool,
    pub go: bool,
    /// Load address of a raw .bin file (`--base`).
    pub base: Option<&'a str>,
    pub target: FlashTarget,
    pub file: &'a Path,
}

pub fn flash(boards: &Path, board: &str, request: FlashRequest<'_>) -> Result<ExitCode> {
    let FlashRequest { via, verify, go, base, target, file } = request;
    let (loaded, name) = match board_from(boards, board) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    let board = loaded.get(&name).expect("checked by board_from").clone();
    let bin_base =
        base.map(|b| hil_config::values::parse_u32(b, "--base address").map_err(anyhow::Error::msg)).transpose()?;
    let image = hil_image::Image::load(file, bin_base).with_context(|| format!("loading {}", file.display()))?;
    let report = match preflight(&board, &image, target) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    print!("{report}");
    if !report.passed() {
        println!("refused: {} must not be flashed on {name}", file.display());
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let image_base = image.segments.first().map(|s| s.address).context("empty image")?;
    let via = match via {
        FlashVia::Uart => Via::Uart,
        FlashVia::Dfu => Via::Dfu,
        FlashVia::Probe => Via::Probe,
    };
    let chip = hil_config::Config::chip_of(&board);
    let caps = board.capabilities(chip);
    if !caps.contains(&via.capability()) {
        eprintln!(
            "error: board `{name}` has no {} (it has: {})",
            via.capability(),
            caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
        );
        return Ok(ExitCode::from(EXIT_CONFIG));
    }

    // The hardware `hil run` would lock; held until the board is closed.
    let _lock = match crate::commands::lock_board(&board) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let mut session = hil_rig::opener::rig_opener().open_session(&board)?;
    // From here on a failure is the operation failing (exit 1), not a configuration problem.
    let plan = FlashPlan { via, verify, go, bin_base, target, image_base };
    let result = flash_session(&mut session, &name, &plan, &image, file);
    session.close();
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// The checked request: the backend chosen, the image's load address known.
struct FlashPlan {
    via: Via,
    verify: bool,
    go: bool,
    bin_base: Option<u32>,
    target: FlashTarget,
    image_base: u32,
}

fn flash_session(
    session: &mut hil_rig::session::RigSession,
    name: &str,
    plan: &FlashPlan,
    image: &hil_image::Image,
    file: &Path,
) -> Result<()> {
    let &FlashPlan { via, verify, go, bin_base, target, image_base } = plan;
    let cancel = CancelFlag::new();
    let clock = hil_rig::engine::BoardSession::clock(session);
    let cx = |limit: Duration| {
        StepCx::new(&clock, limit, cancel.clone(), std::env::current_dir().unwrap_or_default().join("cli"), 0)
    };
    let run = |session: &mut hil_rig::session::RigSession, action: Action, limit: Duration| -> Result<Vec<Evidence>> {
        let o = session.run_step(&step(action.clone()), &cx(limit));
        if o.status != Status::Passed {
            anyhow::bail!("{}: {}", action.summary(), o.message.unwrap_or_default());
        }
        Ok(o.evidence)
    };

    if via != Via::Probe {
        run(
            session,
            Action::Enter(hil_config::scenario::Enter { state: BoardState::SystemBootloader, via: None }),
            Duration::from_secs(10),
        )
        .context("entering the system bootloader")?;
    }
    let total: u64 = image.segments.iter().map(|s| s.data.len() as u64).sum();
    let bar = crate::output::progress_bytes(total, format!("flashing {} via {}", file.display(), via_name(via)));
    let b = bar.clone();
    session.progress = Some(Box::new(move |done, _| b.set_position(done)));
    let started = Instant::now();
    let action = Action::Flash(Flash {
        image: Located::new(ImageRef::File(std::fs::canonicalize(file)?)),
        via,
        verify,
        base: bin_base.map(hil_config::Address),
        erase: EraseMode::Touched,
        target,
    });
    let evidence = run(session, action, Duration::from_secs(600));
    bar.finish_and_clear();
    let evidence = evidence?;
    let phases: Vec<String> = evidence
        .iter()
        .filter_map(|e| match e {
            Evidence::Measurement { label, value, unit } if unit == "s" && label != "flash time" => {
                Some(format!("{label} {value:.2} s"))
            }
            _ => None,
        })
        .collect();
    // A flash that got through a noisy link says what it took.
    let retries = evidence.iter().find_map(|e| match e {
        Evidence::Measurement { label, value, .. } if label == "AN3155 retries" && *value > 0.0 => Some(*value),
        _ => None,
    });
    println!(
        "flashed {total} bytes to {name} via {} in {:.3} s{}{}{}",
        via_name(via),
        started.elapsed().as_secs_f64(),
        if phases.is_empty() { String::new() } else { format!(" ({})", phases.join(", ")) },
        if verify { "; verified" } else { "" },
        retries.map(|n| format!("; {n} AN3155 retries on link errors")).unwrap_or_default()
    );
    if go {
        let addr = hil_config::scenario::ValueRef::Literal(image_base);
        match via {
            Via::Uart => run(
                session,
                Action::Go(hil_config::scenario::Go { address: Located::new(addr) }),
                Duration::from_secs(10),
            )?,
            Via::Dfu => run(
                session,
                Action::Leave(hil_config::scenario::Leave { address: Some(Located::new(addr)) }),
                Duration::from_secs(10),
            )?,
            Via::Probe => run(
                session,
                Action::Reset(hil_config::scenario::Reset { via: hil_config::scenario::ResetVia::Probe }),
                Duration::from_secs(10),
            )?,
        };
        println!("started the image at {image_base:#010x}");
    }
    Ok(())
}

fn via_name(v: Via) -> &'static str {
    match v {
        Via::Uart => "uart",
        Via::Dfu => "dfu",
        Via::Probe => "probe",
    }
}
