//! Checks that need more than one value: names that must exist or be unique, chip facts, board
//! capabilities versus what scenario steps need, images that must exist, safety rails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hil_chips::Chip;

use crate::boards::{Board, BoardsFile, Capability, LineDriver};
use crate::load::{Diagnostic, collect_scenario_files, parse_yaml, read_yaml_text};
use crate::scenario::{Action, ImageRef, Outcome, Scenario};
use crate::values::Located;

/// What validation checks names against. The `hil` binary fills it from the fixture build and the
/// rig's diagnosis rules; empty lists skip those checks (for library users without them).
#[derive(Clone, Debug, Default)]
pub struct ValidationContext {
    /// (fixture name, flash base) of every built fixture image.
    pub fixtures: Vec<(String, u32)>,
    /// Diagnosis causes a failing scenario may name.
    pub causes: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct LoadedBoards {
    pub path: PathBuf,
    pub file: BoardsFile,
}

#[derive(Clone, Debug)]
pub struct LoadedScenario {
    pub path: PathBuf,
    pub scenario: Scenario,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub boards: LoadedBoards,
    pub scenarios: Vec<LoadedScenario>,
}

impl LoadedBoards {
    pub fn get(&self, name: &str) -> Option<&Board> {
        self.file.boards.iter().map(|b| &b.value).find(|b| b.name.value == name)
    }
    pub fn names(&self) -> Vec<&str> {
        self.file.boards.iter().map(|b| b.name.value.as_str()).collect()
    }
    pub fn defaults(&self) -> impl Iterator<Item = &Board> {
        self.file.boards.iter().map(|b| &b.value).filter(|b| b.default)
    }
}

impl Config {
    /// The chip of a validated board (validation guarantees it exists).
    pub fn chip_of(board: &Board) -> &'static Chip {
        Chip::by_name(&board.chip.value).expect("validated board has a known chip")
    }
}

/// Load and validate a boards file and scenario paths (files or directories). Returns the config
/// when there is no problem, and every problem found.
pub fn load_and_validate(
    boards_path: &Path,
    scenario_paths: &[PathBuf],
    ctx: &ValidationContext,
) -> (Option<Config>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let boards = match load_boards(boards_path) {
        Ok(b) => {
            diags.extend(validate_boards(&b));
            Some(b)
        }
        Err(d) => {
            diags.push(d);
            None
        }
    };
    let (files, missing) = collect_scenario_files(scenario_paths);
    diags.extend(missing);
    let mut scenarios = Vec::new();
    for path in files {
        match load_scenario(&path) {
            Ok(s) => scenarios.push(s),
            Err(d) => diags.push(d),
        }
    }
    diags.extend(validate_scenarios(&scenarios, boards.as_ref(), ctx));
    diags.sort();
    diags.dedup();
    let config = match (diags.is_empty(), boards) {
        (true, Some(boards)) => Some(Config { boards, scenarios }),
        _ => None,
    };
    (config, diags)
}

pub fn load_boards(path: &Path) -> Result<LoadedBoards, Diagnostic> {
    let text = read_yaml_text(path, "a boards file")?;
    let file: BoardsFile = parse_yaml(path, &text)?;
    Ok(LoadedBoards { path: path.to_path_buf(), file })
}

pub fn load_scenario(path: &Path) -> Result<LoadedScenario, Diagnostic> {
    let text = read_yaml_text(path, "a scenario")?;
    let scenario: Scenario = parse_yaml(path, &text)?;
    Ok(LoadedScenario { path: path.to_path_buf(), scenario })
}

/// A diagnosis cause named by a scenario must be one the rules can name.
fn check_cause(path: &Path, c: &Located<String>, ctx: &ValidationContext, d: &mut Vec<Diagnostic>) {
    if ctx.causes.is_empty() || ctx.causes.contains(&c.value) {
        return;
    }
    let hint = closest(&c.value, ctx.causes.iter().map(String::as_str))
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    d.push(Diagnostic::at(
        path,
        c,
        format!("unknown diagnosis cause `{}`{hint}; known causes: {}", c.value, ctx.causes.join(", ")),
    ));
}

/// The candidate nearest to `name` (case-insensitive edit distance at most 3): a "did you mean".
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (crate::scenario::strsim_distance(&c.to_lowercase(), &name.to_lowercase()), c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c)
}

fn loc_string<T>(path: &Path, l: &Located<T>) -> String {
    format!("{}:{}:{}", path.display(), l.line.max(1), l.column.max(1))
}

/// Problems in boards.yaml.
pub fn validate_boards(boards: &LoadedBoards) -> Vec<Diagnostic> {
    let path = boards.path.as_path();
    let mut d = Vec::new();
    if boards.file.boards.is_empty() {
        d.push(Diagnostic::file(path, "no boards defined: `boards:` is an empty list"));
    }
    let mut seen: BTreeMap<&str, &Located<String>> = BTreeMap::new();
    for entry in &boards.file.boards {
        let b = &entry.value;
        if let Some(first) = seen.get(b.name.value.as_str()) {
            d.push(Diagnostic::at(
                path,
                &b.name,
                format!("duplicate board name `{}` (first defined at {})", b.name.value, loc_string(path, first)),
            ));
        } else {
            seen.insert(&b.name.value, &b.name);
        }
        if b.name.value.trim().is_empty() || b.name.value.contains(char::is_whitespace) {
            d.push(Diagnostic::at(
                path,
                &b.name,
                format!("board name `{}` must be non-empty without spaces", b.name.value),
            ));
        }
        let chip = Chip::by_name(&b.chip.value);
        if chip.is_none() {
            let hint = closest(&b.chip.value, hil_chips::names())
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            d.push(Diagnostic::at(
                path,
                &b.chip,
                format!("unknown chip `{}`{hint}; known chips: {}", b.chip.value, hil_chips::names().join(", ")),
            ));
        }
        match (&b.virtual_board, &b.lab) {
            (None, None) => d.push(Diagnostic::at(
                path,
                entry,
                format!("board `{}` needs exactly one of `virtual:` or `lab:`, it has neither", b.name.value),
            )),
            (Some(_), Some(lab)) => d.push(Diagnostic::at(
                path,
                lab,
                format!("board `{}` has both `virtual:` and `lab:`; a board is one or the other", b.name.value),
            )),
            _ => {}
        }
        if let Some(v) = &b.virtual_board {
            check_virtual(path, b, &v.value, chip, &mut d);
        }
        if let (Some(v), Some(chip)) = (&b.virtual_board, chip)
            && !chip.virtual_board
        {
            let modelled: Vec<_> = hil_chips::all().filter(|c| c.virtual_board).map(|c| c.name.as_str()).collect();
            d.push(Diagnostic::at(
                path,
                v,
                format!("the virtual board does not model {} yet (modelled chips: {})", chip.name, modelled.join(", ")),
            ));
        }
        if let Some(lab) = &b.lab {
            check_lab(path, &lab.value, &mut d);
        }
        if let Some(chip) = chip {
            check_layout(path, b, chip, &mut d);
        }
    }
    d
}

fn check_virtual(
    path: &Path,
    b: &Board,
    v: &crate::boards::VirtualBoard,
    chip: Option<&Chip>,
    d: &mut Vec<Diagnostic>,
) {
    let at = b.virtual_board.as_ref().expect("virtual board present");
    if let Some(ob) = &v.option_bytes
        && let Some(rdp) = ob.rdp
    {
        if rdp > 2 {
            d.push(Diagnostic::at(path, at, format!("option-bytes.rdp must be 0, 1 or 2, not {rdp}")));
        } else if rdp == 2 && !b.allow_rdp_level2 {
            d.push(Diagnostic::at(
                path,
                at,
                "option-bytes.rdp 2 is irreversible on real silicon: set `allow-rdp-level2: true` on the board to allow it",
            ));
        }
    }
    for (name, n) in v.faults.periods() {
        if n == Some(0) {
            d.push(Diagnostic::at(path, at, {
                let unit = if name.starts_with("usb") { "request" } else { "byte" };
                format!("faults.{name} must be at least 1 (every Nth {unit})")
            }));
        }
    }
    if let (Some(addr), Some(chip)) = (v.faults.flash_program_error_at, chip)
        && !chip.memory.flash.area().contains(addr.0)
    {
        d.push(Diagnostic::at(
            path,
            at,
            format!(
                "faults.flash-program-error-at {addr} is outside {}'s flash {:#010x}..{:#010x}",
                chip.name,
                chip.memory.flash.base,
                chip.memory.flash.area().end()
            ),
        ));
    }
}

fn check_selector(path: &Path, sel: &Located<String>, what: &str, d: &mut Vec<Diagnostic>) {
    let parts: Vec<&str> = sel.value.split(':').collect();
    let hex4 = |s: &str| s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit());
    let ok = (parts.len() == 2 || parts.len() == 3)
        && hex4(parts[0])
        && hex4(parts[1])
        && parts.get(2).is_none_or(|s| !s.is_empty());
    if !ok {
        d.push(Diagnostic::at(
            path,
            sel,
            format!(
                "bad {what} `{}`: expected VID:PID[:serial] with 4-digit hex VID and PID, e.g. 0483:374b",
                sel.value
            ),
        ));
    }
}

fn check_lab(path: &Path, lab: &crate::boards::LabBoard, d: &mut Vec<Diagnostic>) {
    if let Some(p) = &lab.probe {
        check_selector(path, &p.selector, "probe selector", d);
    }
    if let Some(u) = &lab.usb {
        check_selector(path, u, "USB selector", d);
    }
    if let Some(s) = &lab.serial {
        if s.port.value.trim().is_empty() {
            d.push(Diagnostic::at(path, &s.port, "serial.port is empty"));
        }
        if !(1200..=4_000_000).contains(&s.baud.value) {
            d.push(Diagnostic::at(path, &s.baud, format!("serial.baud {} is outside 1200..4000000", s.baud.value)));
        }
    }
    for (line, ctl) in [("boot0", &lab.boot0), ("nrst", &lab.nrst)] {
        let via = ctl.via.value;
        match via {
            LineDriver::SerialDtr | LineDriver::SerialRts if lab.serial.is_none() => d.push(Diagnostic::at(
                path,
                &ctl.via,
                format!("{line}.via uses the serial adapter's modem lines, but the board has no `serial:`"),
            )),
            LineDriver::Probe if line == "boot0" => d.push(Diagnostic::at(
                path,
                &ctl.via,
                "boot0.via: probe is not possible: a probe drives NRST, not BOOT0",
            )),
            LineDriver::Probe if lab.probe.is_none() => {
                d.push(Diagnostic::at(path, &ctl.via, "nrst.via: probe needs a `probe:` on this board"))
            }
            LineDriver::OptionBytes if line == "nrst" => d.push(Diagnostic::at(
                path,
                &ctl.via,
                "nrst.via: option-bytes is not possible: option bits select the boot mode only",
            )),
            _ => {}
        }
        if ctl.asserted_level.is_some() && !matches!(via, LineDriver::SerialDtr | LineDriver::SerialRts) {
            d.push(Diagnostic::at(
                path,
                &ctl.via,
                format!("{line}.asserted-level only applies to serial-dtr / serial-rts"),
            ));
        }
    }
    if let Some(p) = &lab.power
        && (p.on.is_empty() || p.off.is_empty())
    {
        d.push(Diagnostic::file(
            path,
            "power.on and power.off must each be a non-empty command (program and arguments)",
        ));
    }
}

fn check_layout(path: &Path, b: &Board, chip: &Chip, d: &mut Vec<Diagnostic>) {
    let flash = chip.memory.flash.area();
    if let Some(base) = &b.layout.application_base {
        let a = base.value.0;
        if !flash.contains(a) {
            d.push(Diagnostic::at(
                path,
                base,
                format!(
                    "application-base {} is outside {}'s flash {:#010x}..{:#010x}",
                    base.value,
                    chip.name,
                    flash.base,
                    flash.end()
                ),
            ));
        } else if a % chip.vtor_alignment() != 0 {
            d.push(Diagnostic::at(
                path,
                base,
                format!(
                    "application-base {} is not a multiple of {} bytes: VTOR needs the vector table ({} entries on {}) aligned to its size rounded up to a power of two",
                    base.value,
                    chip.vtor_alignment(),
                    chip.vector_entries(),
                    chip.name
                ),
            ));
        }
    }
    if let Some(bl) = &b.layout.bootloader {
        let r = bl.value;
        if !flash.contains_range(r.base.0, r.size.0 as u64) || r.size.0 == 0 {
            d.push(Diagnostic::at(
                path,
                bl,
                format!("bootloader region {}+{:#x} is not inside {}'s flash", r.base, r.size.0, chip.name),
            ));
        } else if r.base.0 % chip.memory.flash.page_size != 0 || r.size.0 % chip.memory.flash.page_size != 0 {
            d.push(Diagnostic::at(
                path,
                bl,
                format!("bootloader region must start and end on {}-byte flash pages", chip.memory.flash.page_size),
            ));
        }
        let app = b.application_base(chip);
        if r.contains(app) {
            d.push(Diagnostic::at(
                path,
                bl,
                format!("application base {app:#010x} lies inside the bootloader region; set layout.application-base behind it"),
            ));
        }
    }
}

/// Problems in scenarios, alone and against the boards.
pub fn validate_scenarios(
    scenarios: &[LoadedScenario],
    boards: Option<&LoadedBoards>,
    ctx: &ValidationContext,
) -> Vec<Diagnostic> {
    let mut d = Vec::new();
    let mut names: BTreeMap<&str, (&Path, &Located<String>)> = BTreeMap::new();
    for ls in scenarios {
        let (path, s) = (ls.path.as_path(), &ls.scenario);
        if let Some((first_path, first)) = names.get(s.name.value.as_str()) {
            d.push(Diagnostic::at(
                path,
                &s.name,
                format!(
                    "duplicate scenario name `{}` (first defined at {})",
                    s.name.value,
                    loc_string(first_path, first)
                ),
            ));
        } else {
            names.insert(&s.name.value, (path, &s.name));
        }
        check_scenario(path, s, boards, ctx, &mut d);
    }
    d
}

fn check_scenario(
    path: &Path,
    s: &Scenario,
    boards: Option<&LoadedBoards>,
    ctx: &ValidationContext,
    d: &mut Vec<Diagnostic>,
) {
    if s.name.value.trim().is_empty() {
        d.push(Diagnostic::at(path, &s.name, "scenario name is empty"));
    }
    if s.steps.is_empty() {
        d.push(Diagnostic::at(path, &s.name, format!("scenario `{}` has no steps", s.name.value)));
    }
    if let Some(expect) = &s.expect {
        if let Some(l) = &expect.value.latent {
            if expect.value.outcome == Outcome::Fail {
                d.push(Diagnostic::at(path, l, "expect.latent only applies to `outcome: pass`"));
            } else {
                check_cause(path, l, ctx, d);
            }
        }
        match (expect.value.outcome, &expect.value.cause) {
            (Outcome::Fail, None) => d.push(Diagnostic::at(
                path,
                expect,
                "expect.outcome: fail needs `cause:` naming the diagnosis the failure must get",
            )),
            (Outcome::Pass, Some(c)) => d.push(Diagnostic::at(path, c, "expect.cause only applies to `outcome: fail`")),
            (_, Some(c)) => check_cause(path, c, ctx, d),
            _ => {}
        }
    }
    if let Some(t) = s.timeout
        && t.0.is_zero()
    {
        d.push(Diagnostic::at(path, &s.name, "scenario timeout must be more than zero"));
    }
    // Boards this scenario names.
    let mut targets: Vec<&Board> = Vec::new();
    if let Some(boards) = boards {
        for b in &s.boards {
            match boards.get(&b.value) {
                Some(board) => targets.push(board),
                None => {
                    let hint = closest(&b.value, boards.names())
                        .map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default();
                    d.push(Diagnostic::at(
                        path,
                        b,
                        format!(
                            "unknown board `{}`{hint}; boards in {}: {}",
                            b.value,
                            boards.path.display(),
                            boards.names().join(", ")
                        ),
                    ));
                }
            }
        }
    }
    let board_caps: Vec<(&Board, BTreeSet<Capability>)> =
        targets.iter().filter_map(|b| Chip::by_name(&b.chip.value).map(|c| (*b, b.capabilities(c)))).collect();
    for req in &s.requires {
        for (b, caps) in &board_caps {
            if !caps.contains(&req.value) {
                d.push(Diagnostic::at(
                    path,
                    req,
                    format!(
                        "scenario requires `{}`, which board `{}` lacks{}",
                        req.value,
                        b.name.value,
                        lacks_hint(b, req.value)
                    ),
                ));
            }
        }
    }
    for step in s.all_steps() {
        for need in step.value.action.needs() {
            for (b, caps) in &board_caps {
                if !caps.contains(&need) {
                    d.push(Diagnostic::at(
                        path,
                        step,
                        format!(
                            "step `{}` needs `{need}`, which board `{}` lacks{}",
                            step.value.action.keyword(),
                            b.name.value,
                            lacks_hint(b, need)
                        ),
                    ));
                }
            }
        }
        check_step(path, s, step, &targets, ctx, d);
    }
}

fn lacks_hint(b: &Board, cap: Capability) -> String {
    match (cap, Chip::by_name(&b.chip.value)) {
        (Capability::Usb, Some(c)) if !c.bootloader.usb_dfu => format!(" ({}'s ROM bootloader has no USB DFU)", c.name),
        _ if b.lab.is_some() => " (add it to the board's `lab:` section to use it)".to_string(),
        _ => String::new(),
    }
}

fn check_step(
    path: &Path,
    s: &Scenario,
    step: &Located<crate::scenario::Step>,
    targets: &[&Board],
    ctx: &ValidationContext,
    d: &mut Vec<Diagnostic>,
) {
    if let Some(t) = step.value.timeout
        && t.0.is_zero()
    {
        d.push(Diagnostic::at(path, step, "step timeout must be more than zero"));
    }
    // A wait cut short by its own deadline would be a wait that did not happen.
    if let (Action::Wait(w), Some(t)) = (&step.value.action, step.value.timeout)
        && w.0 >= t.0
    {
        d.push(Diagnostic::at(
            path,
            step,
            format!("wait {w} does not fit in its step timeout {t}: make the timeout longer than the wait, or drop it"),
        ));
    }
    match &step.value.action {
        Action::Flash(f) => {
            check_image(path, &f.image, ctx, d);
            if f.target == crate::scenario::FlashTarget::Bootloader {
                for b in targets.iter().filter(|b| b.layout.bootloader.is_none()) {
                    d.push(Diagnostic::at(
                        path,
                        step,
                        format!(
                            "`target: bootloader` flashes the board's custom bootloader, but board `{}` has no \
                             `layout.bootloader` region",
                            b.name.value
                        ),
                    ));
                }
            }
        }
        Action::Send(snd) if snd.text.is_some() == snd.bytes.is_some() => {
            d.push(Diagnostic::at(path, step, "send needs exactly one of `text` or `bytes`"));
        }
        Action::ExpectRegister(r) if r.equals.is_none() && r.within.is_none() => {
            d.push(Diagnostic::at(path, step, "expect-register needs `equals` and/or `in`"));
        }
        Action::ExpectMemory(m) => {
            let checks = [m.crc32.is_some(), m.equals.is_some(), m.erased.is_some(), m.matches_image.is_some()];
            if checks.iter().filter(|c| **c).count() != 1 {
                d.push(Diagnostic::at(
                    path,
                    step,
                    "expect-memory needs exactly one of `crc32`, `equals`, `erased`, `matches-image`",
                ));
            }
            if m.length.0 == 0 {
                d.push(Diagnostic::at(path, step, "expect-memory length must be more than zero"));
            }
            if let Some(eq) = &m.equals
                && eq.len() != m.length.0 as usize
            {
                d.push(Diagnostic::at(
                    path,
                    step,
                    format!("expect-memory `equals` has {} bytes but length is {}", eq.len(), m.length.0),
                ));
            }
        }
        Action::ExpectSerial(e) if e.contains.is_empty() => {
            d.push(Diagnostic::at(path, step, "expect-serial `contains` is empty"));
        }
        Action::WriteOptionBytes(w) => {
            if let Some(rdp) = &w.rdp {
                if rdp.value > 2 {
                    d.push(Diagnostic::at(path, rdp, format!("rdp must be 0, 1 or 2, not {}", rdp.value)));
                } else if rdp.value == 2 {
                    if targets.is_empty() {
                        d.push(Diagnostic::at(
                            path,
                            rdp,
                            "rdp 2 is irreversible on real silicon: the scenario must list its `boards:`, each with allow-rdp-level2: true",
                        ));
                    }
                    for b in targets.iter().filter(|b| !b.allow_rdp_level2) {
                        d.push(Diagnostic::at(
                            path,
                            rdp,
                            format!("rdp 2 is irreversible on real silicon and board `{}` does not set allow-rdp-level2: true", b.name.value),
                        ));
                    }
                }
            }
            if w.via == crate::scenario::Via::Dfu {
                d.push(Diagnostic::at(path, step, "write-option-bytes via dfu is not supported; use probe or uart"));
            }
        }
        Action::ReadoutUnprotect(r) if r.via == crate::scenario::Via::Probe => {
            d.push(Diagnostic::at(path, step, "readout-unprotect goes through a bootloader: via uart or dfu"));
        }
        Action::ExpectBootloader(b) if b.via == crate::scenario::Via::Probe => {
            d.push(Diagnostic::at(path, step, "expect-bootloader via probe makes no sense: use uart or dfu"));
        }
        _ => {}
    }
    let _ = s;
}

fn check_image(path: &Path, image: &Located<ImageRef>, ctx: &ValidationContext, d: &mut Vec<Diagnostic>) {
    match &image.value {
        ImageRef::Fixture { name, base } => {
            if ctx.fixtures.is_empty() {
                return;
            }
            let bases: Vec<u32> = ctx.fixtures.iter().filter(|(n, _)| n == name).map(|(_, b)| *b).collect();
            if bases.is_empty() {
                let mut all: Vec<&str> = ctx.fixtures.iter().map(|(n, _)| n.as_str()).collect();
                all.dedup();
                let hint =
                    closest(name, all.iter().copied()).map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default();
                d.push(Diagnostic::at(
                    path,
                    image,
                    format!("unknown fixture `{name}`{hint}; fixtures: {}", all.join(", ")),
                ));
            } else if let Some(b) = base
                && !bases.contains(b)
            {
                let list: Vec<String> = bases.iter().map(|b| format!("{b:#010x}")).collect();
                d.push(Diagnostic::at(
                    path,
                    image,
                    format!(
                        "fixture `{name}` is not built at {b:#010x} (built at {}; see fixtures-firmware/fixtures.toml)",
                        list.join(", ")
                    ),
                ));
            }
        }
        ImageRef::File(p) => {
            let full = resolve_relative(path, p);
            if !full.is_file() {
                d.push(Diagnostic::at(
                    path,
                    image,
                    format!("image file `{}` not found (looked at {})", p.display(), full.display()),
                ));
            }
        }
    }
}

/// A path in a scenario is relative to the scenario file's directory.
pub fn resolve_relative(scenario_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { scenario_path.parent().unwrap_or(Path::new(".")).join(p) }
}
