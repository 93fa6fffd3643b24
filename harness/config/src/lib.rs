//! boards.yaml and scenario files: the serde data model, loading with `FILE:LINE:COL` diagnostics,
//! semantic validation, and JSON Schemas for editors.
//!
//! YAML is parsed with serde-saphyr, which reports the exact position of structural problems
//! (unknown keys, wrong types, missing fields, duplicate keys) and gives values their positions
//! ([`Located`]) for the semantic checks. The parser stops at the first structural problem in a
//! file; semantic problems are all reported.

pub mod boards;
pub mod load;
pub mod scenario;
pub mod schema;
pub mod validate;
pub mod values;

pub use boards::{Board, BoardsFile, Capability, LabBoard, LineDriver, PinLevel, Timing, VirtualBoard};
pub use load::{Diagnostic, collect_scenario_files, parse_yaml, read_yaml_text};
pub use scenario::{Action, ImageRef, Scenario, Step};
pub use validate::{
    Config, LoadedBoards, LoadedScenario, ValidationContext, load_and_validate, load_boards, load_scenario,
};
pub use values::{Address, ByteSize, Duration, Located};
