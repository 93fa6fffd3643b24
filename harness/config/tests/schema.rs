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

/// Every periodic fault is "every Nth byte / request": 0 is refused by validation, so the
/// schema says minimum 1 too (it used to say 0, and editors accepted what `hil validate` refused).
#[test]
fn fault_periods_are_at_least_one_in_the_schema_as_in_validation() {
    let v = jsonschema::validator_for(&boards_schema()).unwrap();
    let names = [
        "uart-rx-drop-every",
        "uart-rx-corrupt-every",
        "uart-tx-drop-every",
        "uart-tx-corrupt-every",
        "usb-stall-every",
        "usb-timeout-every",
    ];
    let ctx = hil_config::ValidationContext::default();
    for name in names {
        let doc = |n: u32| serde_json::json!({ "boards": [{ "name": "b", "chip": "STM32G071RB", "virtual": { "faults": { name: n } } }] });
        assert!(!v.is_valid(&doc(0)), "schema accepted {name}: 0");
        assert!(v.is_valid(&doc(1)), "schema refused {name}: 1");

        let dir = tempfile::tempdir().unwrap();
        for (n, refused) in [(0, true), (1, false)] {
            let path = dir.path().join("boards.yaml");
            let yaml =
                format!("boards:\n  - {{ name: b, chip: STM32G071RB, virtual: {{ faults: {{ {name}: {n} }} }} }}\n");
            std::fs::write(&path, yaml).unwrap();
            let (_, diags) = hil_config::load_and_validate(&path, &[], &ctx);
            let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            assert_eq!(
                text.iter().any(|d| d.contains(&format!("faults.{name} must be at least 1"))),
                refused,
                "{text:?}"
            );
        }
    }
}
