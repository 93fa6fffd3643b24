//! Every kind of problem `hil validate` reports, with its exact FILE:LINE:COL message.

use std::path::{Path, PathBuf};

use hil_config::{ValidationContext, load_and_validate};

const BOARDS: &str = "\
boards:
  - name: g071
    chip: STM32G071RB
    default: true
    virtual: { timing: fast }
  - name: g0b1
    chip: STM32G0B1RE
    virtual: {}
  - name: lab-f103
    chip: STM32F103CB
    lab:
      serial: { port: /dev/ttyUSB0 }
      boot0: { via: serial-dtr }
      nrst: { via: serial-rts }
";

const GOOD_SCENARIO: &str = "\
name: ok
steps:
  - set-boot0: high
  - reset
  - expect-bootloader: { via: uart }
";

fn ctx() -> ValidationContext {
    ValidationContext {
        fixtures: vec![("app".into(), 0x0800_0000), ("app".into(), 0x0800_8000), ("bootloader".into(), 0x0800_0000)],
        causes: vec!["primask-set-at-jump".into(), "remap-not-done".into()],
    }
}

/// Write `files` into a temp dir, validate boards.yaml + the scenario files, return the printed
/// diagnostics with the temp dir replaced by `<dir>`.
fn check(files: &[(&str, &[u8])]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut scenarios = Vec::new();
    for (name, content) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        if *name != "boards.yaml" {
            scenarios.push(p);
        }
    }
    if !files.iter().any(|(n, _)| *n == "boards.yaml") {
        std::fs::write(dir.path().join("boards.yaml"), BOARDS).unwrap();
    }
    if scenarios.is_empty() {
        std::fs::write(dir.path().join("ok.yaml"), GOOD_SCENARIO).unwrap();
        scenarios.push(dir.path().join("ok.yaml"));
    }
    render(dir.path(), &dir.path().join("boards.yaml"), &scenarios)
}

fn render(dir: &Path, boards: &Path, scenarios: &[PathBuf]) -> String {
    let (config, diags) = load_and_validate(boards, scenarios, &ctx());
    assert_eq!(config.is_some(), diags.is_empty(), "a config is returned exactly when there is no problem");
    diags.iter().map(|d| d.to_string().replace(&dir.display().to_string(), "<dir>")).collect::<Vec<_>>().join("\n")
}

fn scenario(body: &str) -> String {
    format!("name: s\nsteps:\n{body}")
}

#[test]
fn the_baseline_is_valid() {
    assert_eq!(check(&[]), "");
}

#[test]
fn unknown_key_in_a_scenario() {
    insta::assert_snapshot!(check(&[("s.yaml", b"name: s\nstep:\n  - reset\n")]), @"<dir>/s.yaml:2:1: unknown field `step`, expected one of name, description, requires, boards, timeout, expect, tags, class, steps, cleanup");
}

#[test]
fn unknown_key_inside_a_step() {
    insta::assert_snapshot!(check(&[("s.yaml", scenario("  - reset: { via: nrst, hard: true }\n").as_bytes())]), @"<dir>/s.yaml:3:25: unknown field `hard`, expected one of via");
}

#[test]
fn unknown_step_keyword_with_a_hint() {
    insta::assert_snapshot!(check(&[("s.yaml", scenario("  - rest: {}\n").as_bytes())]), @"<dir>/s.yaml:3:5: unknown step `rest` (did you mean `reset`?)");
}

#[test]
fn two_actions_in_one_step() {
    insta::assert_snapshot!(check(&[("s.yaml", scenario("  - halt: {}\n    resume: {}\n").as_bytes())]), @"<dir>/s.yaml:3:5: a step has exactly one action, but this one has `halt` and `resume`");
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(check(&[("s.yaml", scenario("  - flash: { image: [1, 2], via: uart }\n").as_bytes())]), @"<dir>/s.yaml:3:21: expected a string here");
}

#[test]
fn wrong_enum_value() {
    insta::assert_snapshot!(check(&[("s.yaml", scenario("  - set-boot0: middle\n").as_bytes())]), @"<dir>/s.yaml:3:16: unknown variant `middle`, expected one of high, low");
}

#[test]
fn missing_field() {
    insta::assert_snapshot!(check(&[("s.yaml", scenario("  - flash: { via: uart }\n").as_bytes())]), @"<dir>/s.yaml:3:14: missing field `image`");
}

#[test]
fn bad_address() {
    insta::assert_snapshot!(check(&[("s.yaml", scenario("  - go: { address: 0x0800_000G }\n").as_bytes())]), @"<dir>/s.yaml:3:20: bad value `0x0800_000G`: `G` is not a hexadecimal digit");
}

#[test]
fn bad_address_in_boards() {
    let boards =
        "boards:\n  - name: b\n    chip: STM32G071RB\n    virtual: {}\n    layout: { application-base: 0x0800_000G }\n";
    insta::assert_snapshot!(check(&[("boards.yaml", boards.as_bytes())]), @"<dir>/boards.yaml:5:33: bad address `0x0800_000G`: `G` is not a hexadecimal digit");
}

#[test]
fn bad_duration() {
    insta::assert_snapshot!(check(&[("s.yaml", scenario("  - wait: 500\n").as_bytes())]), @"<dir>/s.yaml:3:11: bad duration `500`: needs a unit (us, ms, s, m), e.g. `500ms`");
}

#[test]
fn duplicate_key() {
    insta::assert_snapshot!(check(&[("s.yaml", b"name: a\nname: b\nsteps: [reset]\n")]), @"<dir>/s.yaml:2:1: duplicate mapping key: name, set DuplicateKeyPolicy in Options if acceptable");
}

#[test]
fn unknown_board_name() {
    insta::assert_snapshot!(check(&[("s.yaml", b"name: s\nboards: [g07]\nsteps: [reset]\n")]), @"<dir>/s.yaml:2:10: unknown board `g07` (did you mean `g071`?); boards in <dir>/boards.yaml: g071, g0b1, lab-f103");
}

#[test]
fn unknown_chip_name() {
    let boards = "boards:\n  - name: b\n    chip: STM32G071RX\n    virtual: {}\n";
    insta::assert_snapshot!(check(&[("boards.yaml", boards.as_bytes())]), @"<dir>/boards.yaml:3:11: unknown chip `STM32G071RX` (did you mean `STM32G071RB`?); known chips: STM32F103CB, STM32G071RB, STM32G0B1RE, STM32G474RE");
}

#[test]
fn duplicate_scenario_names_across_files() {
    insta::assert_snapshot!(check(&[("a.yaml", b"name: same\nsteps: [reset]\n"), ("b.yaml", b"name: same\nsteps: [halt]\n")]), @"<dir>/b.yaml:1:7: duplicate scenario name `same` (first defined at <dir>/a.yaml:1:7)");
}

#[test]
fn duplicate_board_names() {
    let boards = "boards:\n  - name: b\n    chip: STM32G071RB\n    virtual: {}\n  - name: b\n    chip: STM32G0B1RE\n    virtual: {}\n";
    insta::assert_snapshot!(check(&[("boards.yaml", boards.as_bytes())]), @"<dir>/boards.yaml:5:11: duplicate board name `b` (first defined at <dir>/boards.yaml:2:11)");
}

#[test]
fn step_needs_a_capability_the_board_lacks() {
    let s = "name: s\nboards: [g071]\nsteps:\n  - flash: { image: 'fixture:app', via: dfu }\n";
    insta::assert_snapshot!(check(&[("s.yaml", s.as_bytes())]), @"<dir>/s.yaml:4:5: step `flash` needs `usb`, which board `g071` lacks (STM32G071RB's ROM bootloader has no USB DFU)");
}

#[test]
fn bootloader_image_for_a_board_without_a_bootloader_region() {
    let s =
        "name: s\nboards: [g071]\nsteps:\n  - flash: { image: 'fixture:bootloader', target: bootloader, via: probe }\n";
    insta::assert_snapshot!(check(&[("s.yaml", s.as_bytes())]), @"<dir>/s.yaml:4:5: `target: bootloader` flashes the board's custom bootloader, but board `g071` has no `layout.bootloader` region");
}

#[test]
fn lab_board_without_a_probe() {
    let s = "name: s\nboards: [lab-f103]\nrequires: [probe]\nsteps:\n  - halt\n";
    insta::assert_snapshot!(check(&[("s.yaml", s.as_bytes())]), @r"
    <dir>/s.yaml:3:12: scenario requires `probe`, which board `lab-f103` lacks (add it to the board's `lab:` section to use it)
    <dir>/s.yaml:5:5: step `halt` needs `probe`, which board `lab-f103` lacks (add it to the board's `lab:` section to use it)
    ");
}

#[test]
fn malformed_yaml() {
    insta::assert_snapshot!(check(&[("s.yaml", b"name: s\nsteps: [reset\n")]), @"<dir>/s.yaml:2:8: unclosed bracket '['");
}

#[test]
fn empty_file() {
    insta::assert_snapshot!(check(&[("s.yaml", b"# nothing here\n\n")]), @"<dir>/s.yaml:1:1: empty file, expected a scenario");
}

#[test]
fn binary_file() {
    insta::assert_snapshot!(check(&[("s.yaml", b"\x7fELF\x01\x01\x01\x00\x00\x00")]), @"<dir>/s.yaml:1:1: not a text file (NUL byte at offset 7), expected a scenario in YAML");
}

#[test]
fn not_utf8() {
    insta::assert_snapshot!(check(&[("s.yaml", b"name: \xff\xfe\nsteps: []\n")]), @"<dir>/s.yaml:1:1: not a UTF-8 text file (invalid byte at offset 6), expected a scenario in YAML");
}

#[test]
fn top_level_not_a_mapping() {
    insta::assert_snapshot!(check(&[("s.yaml", b"- reset\n- halt\n")]), @"<dir>/s.yaml:1:1: expected a mapping (key: value pairs) here");
}

#[test]
fn missing_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boards.yaml"), BOARDS).unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let out =
        render(dir.path(), &dir.path().join("boards.yaml"), &[dir.path().join("nope.yaml"), dir.path().join("empty")]);
    insta::assert_snapshot!(out, @r"
    <dir>/empty:1:1: directory holds no scenario files (*.yaml, *.yml)
    <dir>/nope.yaml:1:1: cannot read a scenario: file not found
    ");
    // The boards file itself as a directory, or missing.
    let out = render(dir.path(), &dir.path().join("empty"), &[]);
    insta::assert_snapshot!(out, @"<dir>/empty:1:1: is a directory, expected a boards file (a YAML file)");
    let out = render(dir.path(), &dir.path().join("boards-missing.yaml"), &[]);
    insta::assert_snapshot!(out, @"<dir>/boards-missing.yaml:1:1: cannot read a boards file: file not found");
}

#[test]
fn directories_expand_to_their_yaml_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boards.yaml"), BOARDS).unwrap();
    std::fs::create_dir_all(dir.path().join("sc/sub")).unwrap();
    std::fs::write(dir.path().join("sc/a.yaml"), "name: a\nsteps: [reset]\n").unwrap();
    std::fs::write(dir.path().join("sc/sub/b.yml"), "name: b\nsteps: [reset]\n").unwrap();
    std::fs::write(dir.path().join("sc/README.md"), "not yaml").unwrap();
    let (config, diags) = load_and_validate(&dir.path().join("boards.yaml"), &[dir.path().join("sc")], &ctx());
    assert!(diags.is_empty(), "{diags:?}");
    let names: Vec<_> = config.unwrap().scenarios.iter().map(|s| s.scenario.name.value.clone()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn board_problems() {
    let boards = "\
boards:
  - name: neither
    chip: STM32G071RB
  - name: both
    chip: STM32G071RB
    virtual: {}
    lab: { serial: { port: /dev/x } }
  - name: f1-virtual  # modelled since issue 18: no problem reported
    chip: STM32F103CB
    virtual: {}
  - name: misaligned
    chip: STM32F103CB
    lab: { serial: { port: /dev/x, baud: 300 } }
    layout: { application-base: 0x0800_3080 }
  - name: lines
    chip: STM32G071RB
    lab:
      boot0: { via: probe }
      nrst: { via: serial-rts }
      probe: { selector: '0483-374b' }
  - name: rdp
    chip: STM32G071RB
    virtual: { option-bytes: { rdp: 2 }, faults: { uart-rx-drop-every: 0 } }
  - name: bl
    chip: STM32G071RB
    virtual: {}
    layout: { bootloader: { base: 0x0800_0000, size: 32K }, application-base: 0x0800_4000 }
";
    insta::assert_snapshot!(check(&[("boards.yaml", boards.as_bytes())]));
}

#[test]
fn scenario_problems() {
    let s = "\
name: s
boards: [g071]
expect: { outcome: fail, cause: primask-set }
steps:
  - flash: { image: 'fixture:ap', via: uart }
  - flash: { image: 'fixture:app@0x08001000', via: probe }
  - flash: { image: 'missing.elf', via: probe }
  - send: {}
  - expect-register: { register: pc }
  - expect-memory: { address: 0x20000000, length: 4, erased: true, crc32: 0 }
  - write-option-bytes: { rdp: 2 }
";
    insta::assert_snapshot!(check(&[("s.yaml", s.as_bytes())]));
}

#[test]
fn latent_mistakes_belong_to_passing_scenarios_and_name_known_causes() {
    let on_fail =
        "name: a\nexpect: { outcome: fail, cause: remap-not-done, latent: remap-not-done }\nsteps: [reset-halt]\n";
    let unknown = "name: b\nexpect: { outcome: pass, latent: remap-missing }\nsteps: [reset-halt]\n";
    let fine = "name: c\nexpect: { outcome: pass, latent: primask-set-at-jump }\nsteps: [reset-halt]\n";
    insta::assert_snapshot!(
        check(&[("a.yaml", on_fail.as_bytes()), ("b.yaml", unknown.as_bytes()), ("c.yaml", fine.as_bytes())]),
        @r"
    <dir>/a.yaml:2:57: expect.latent only applies to `outcome: pass`
    <dir>/b.yaml:2:34: unknown diagnosis cause `remap-missing`; known causes: primask-set-at-jump, remap-not-done
    "
    );
}

#[test]
fn rdp2_needs_named_boards_that_allow_it() {
    let s = "name: s\nsteps:\n  - write-option-bytes: { rdp: 2 }\n";
    insta::assert_snapshot!(check(&[("s.yaml", s.as_bytes())]), @"<dir>/s.yaml:3:32: rdp 2 is irreversible on real silicon: the scenario must list its `boards:`, each with allow-rdp-level2: true");
}

#[test]
fn shipped_configuration_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (config, diags) =
        load_and_validate(&root.join("boards.yaml"), &[root.join("scenarios")], &ValidationContext::default());
    assert!(diags.is_empty(), "{}", diags.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"));
    assert!(config.unwrap().boards.defaults().count() >= 2);
}

/// What cannot be a config file is refused by what it is, before anything is read: a FIFO would
/// block the reader, a device never ends, a symlink loop never resolves, a huge file is a wrong
/// path.
#[test]
fn a_fifo_a_device_a_symlink_loop_or_a_huge_file_is_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("boards.yaml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let started = std::time::Instant::now();
    let (_, diags) = load_and_validate(&fifo, &[], &ctx());
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "must not block on the FIFO");
    let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("boards.yaml:1:1: is a FIFO, expected a boards file")), "{text:?}");

    let (_, diags) = load_and_validate(Path::new("/dev/zero"), &[], &ctx());
    assert!(diags.iter().any(|d| d.to_string().contains("/dev/zero:1:1: is a character device")), "{diags:?}");

    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let (_, diags) = load_and_validate(&a, &[], &ctx());
    assert!(diags.iter().any(|d| d.to_string().contains("cannot read a boards file: a symlink loop")), "{diags:?}");

    let huge = dir.path().join("huge.yaml");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(hil_config::load::MAX_CONFIG_FILE + 1).unwrap();
    let (_, diags) = load_and_validate(&huge, &[], &ctx());
    assert!(
        diags.iter().any(|d| d.to_string().contains(&format!("is {} bytes", hil_config::load::MAX_CONFIG_FILE + 1))),
        "{diags:?}"
    );
}

/// Seed 000 on its own chip: a Blue Pill layout with the application at 0x08003080 is refused,
/// because the F103's 59-entry vector table needs 256-byte alignment for VTOR.
#[test]
fn an_f103_layout_with_the_application_at_0x08003080_is_refused() {
    let boards = "boards:\n  - name: bp\n    chip: STM32F103CB\n    virtual: {}\n    layout:\n      bootloader: { base: 0x0800_0000, size: 12K }\n      application-base: 0x0800_3080\n";
    let out = check(&[("boards.yaml", boards.as_bytes())]);
    assert!(
        out.contains("application-base 0x08003080 is not a multiple of 256 bytes: VTOR needs the vector table (59 entries on STM32F103CB)"),
        "{out}"
    );
}
