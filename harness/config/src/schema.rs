//! JSON Schemas of the two file formats (`hil schema boards|scenario`), for editors.

use crate::{BoardsFile, Scenario};

/// JSON Schema of boards.yaml.
pub fn boards_schema() -> serde_json::Value {
    let mut s = serde_json::to_value(schemars::schema_for!(BoardsFile)).expect("schema serializes");
    s["title"] = "hil boards.yaml".into();
    s
}

/// JSON Schema of a scenario file.
pub fn scenario_schema() -> serde_json::Value {
    let mut s = serde_json::to_value(schemars::schema_for!(Scenario)).expect("schema serializes");
    s["title"] = "hil scenario".into();
    s
}
