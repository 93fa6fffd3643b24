//! The exported JSON Schemas accept the shipped files and reject what validation rejects
//! structurally, so editors flag the same problems.

use std::path::Path;

use hil_config::schema::{boards_schema, scenario_schema};

fn yaml_to_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn shipped_boards_match_the_schema() {
    let v = jsonschema::validator_for(&boards_schema()).expect("boards schema compiles");
    let doc = yaml_to_json(&root().join("boards.yaml"));
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn shipped_scenarios_match_the_schema() {
    let v = jsonschema::validator_for(&scenario_schema()).expect("scenario schema compiles");
    let (files, _) = hil_config::collect_scenario_files(&[root().join("scenarios")]);
    assert!(!files.is_empty());
    for f in files {
        let doc = yaml_to_json(&f);
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
}

#[test]
fn schema_rejects_what_validation_rejects() {
    let v = jsonschema::validator_for(&scenario_schema()).unwrap();
    let bad = [
        serde_json::json!({ "name": "s", "steps": [{ "rest": {} }] }),
        serde_json::json!({ "name": "s", "steps": [{ "reset": { "via": "nrst", "hard": true } }] }),
        serde_json::json!({ "name": "s", "steps": [{ "halt": {}, "resume": {} }] }),
        serde_json::json!({ "name": "s", "steps": [{ "wait": "500" }] }),
        serde_json::json!({ "name": "s", "steps": [{ "go": { "address": "0x0800_000G" } }] }),
        serde_json::json!({ "steps": [] }),
        serde_json::json!({ "name": "s", "steps": [], "extra": 1 }),
    ];
    for doc in bad {
        assert!(!v.is_valid(&doc), "schema accepted {doc}");
    }
    let good = serde_json::json!({ "name": "s", "steps": [
        "halt",
        { "reset": { "via": "probe" }, "timeout": "2s", "name": "reset it" },
        { "go": { "address": "application.base" } },
        { "expect-register": { "register": "pc", "in": "application" } },
        { "expect-register": { "register": "msp", "in": { "base": "0x20000000", "size": "36K" } } },
    ]});
    let errors: Vec<String> = v.iter_errors(&good).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
