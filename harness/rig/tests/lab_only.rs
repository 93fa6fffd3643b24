//! Issue 15: the compiler holds the symmetry rule. The virtual boards' backends are behind the
//! rig's `virtual` feature; a lab-only build (`--no-default-features`) must not link the emulator:
//! no virtual board, no virtual probe, no Cortex-M core in its dependency graph.

#[test]
fn a_lab_only_rig_does_not_depend_on_the_emulator() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "hil-rig", "--no-default-features", "-e", "normal", "--offline", "--locked"])
        .current_dir(&root)
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.contains("probe-rs") && tree.contains("hil-bootloader-host"), "the lab backends are there:\n{tree}");
    for emulator in ["hil-virtual-board", "hil-virtual-probe", "hil-cortex-m", "hil-bootloader-device"] {
        assert!(!tree.contains(emulator), "{emulator} is linked into a lab-only rig:\n{tree}");
    }
    // And with the default features the virtual backends are in (the graph above is not empty by
    // accident).
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "hil-rig", "-e", "normal", "--offline", "--locked"])
        .current_dir(&root)
        .output()
        .expect("run cargo tree");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hil-virtual-board"));
}
