//! Which scenarios run on which boards. A scenario that names boards runs only on those; otherwise
//! on every selected board. A board that lacks a capability the scenario needs gets the scenario
//! as skipped, with the reason. So does a board whose layout puts a bootloader of its own in front
//! of the application, for every scenario that does not name it: the others flash images linked
//! at the start of flash, over that bootloader, and their verdicts there would be wrong.

use std::collections::BTreeSet;

use hil_config::{Board, Capability, Config, LoadedScenario};

#[derive(Clone, Debug)]
pub struct PlannedScenario {
    pub loaded: LoadedScenario,
    /// Why it is skipped on this board, if it is.
    pub skip: Option<String>,
}

#[derive(Clone, Debug)]
pub struct BoardPlan {
    pub board: Board,
    pub scenarios: Vec<PlannedScenario>,
}

/// Everything a scenario needs: its `requires` plus what its steps need.
pub fn needs(s: &hil_config::Scenario) -> BTreeSet<Capability> {
    s.all_steps().flat_map(|st| st.value.action.needs()).chain(s.requires.iter().map(|r| r.value)).collect()
}

pub fn plan(config: &Config, boards: &[&Board]) -> Vec<BoardPlan> {
    plan_with(config, boards, &[])
}

/// Like [`plan`]; boards in `named_only` run only the scenarios that name them (a board that
/// joined a run because scenarios were written for its layout runs just those).
pub fn plan_with(config: &Config, boards: &[&Board], named_only: &[&str]) -> Vec<BoardPlan> {
    boards
        .iter()
        .map(|board| {
            let chip = Config::chip_of(board);
            let caps = board.capabilities(chip);
            let only_named = named_only.contains(&board.name.value.as_str());
            let own_layout = own_layout(board, chip);
            let scenarios = config
                .scenarios
                .iter()
                .filter(|ls| {
                    let names_it = ls.scenario.boards.iter().any(|b| b.value == board.name.value);
                    names_it || (ls.scenario.boards.is_empty() && !only_named)
                })
                .map(|ls| {
                    let names_it = ls.scenario.boards.iter().any(|b| b.value == board.name.value);
                    if let (Some(why), false) = (&own_layout, names_it) {
                        return PlannedScenario { loaded: ls.clone(), skip: Some(why.clone()) };
                    }
                    let missing: Vec<&str> = needs(&ls.scenario).difference(&caps).map(|c| c.name()).collect();
                    let skip = (!missing.is_empty()).then(|| {
                        let mut why = format!("board lacks {}", missing.join(", "));
                        if missing.contains(&"usb") && !chip.bootloader.usb_dfu {
                            why.push_str(&format!(" ({}'s ROM bootloader has no USB DFU)", chip.name));
                        }
                        if missing.contains(&"empty-check") {
                            why.push_str(&format!(" ({} has no empty check in its chip data)", chip.name));
                        }
                        if missing.contains(&"option-bytes") && chip.option_bytes.is_none() {
                            why.push_str(&format!(
                                " ({}: no option-bit boot selection, empty check or option-word layout in its chip data)",
                                chip.name
                            ));
                        }
                        why
                    });
                    PlannedScenario { loaded: ls.clone(), skip }
                })
                .collect();
            BoardPlan { board: (*board).clone(), scenarios }
        })
        .collect()
}

/// Why a scenario written for the usual layout (the application at the start of flash) does not
/// run on `board`, if the board's layout differs.
fn own_layout(board: &Board, chip: &hil_chips::Chip) -> Option<String> {
    let flash = chip.memory.flash.base;
    let app = board.layout.application_base.as_ref().map_or(flash, |a| a.value.0);
    let bootloader = board.layout.bootloader.as_ref().map(|b| b.value);
    if app == flash && bootloader.is_none() {
        return None;
    }
    let behind = bootloader.map_or(String::new(), |b| {
        format!(" behind its bootloader at {:#010x}-{:#010x}", b.base.0, u64::from(b.base.0) + u64::from(b.size.0) - 1)
    });
    Some(format!(
        "written for the application at the start of flash ({flash:#010x}); this board has it at {app:#010x}{behind}. \
         Scenarios for this layout name the board in `boards:`"
    ))
}
