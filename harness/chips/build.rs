//! Chip files are discovered: every `chips/*.yaml` is compiled in (sorted by name), so adding a
//! chip is adding a file.
//!
//! Each file is also compiled in as JSON, converted here: a command reads its chip at start-up,
//! and serde_yaml spends 14 times the instructions serde_json does on the same chip (callgrind,
//! 6.9 M against 0.5 M for the G0B1), which is most of `hil flash`'s start-up in an emulated
//! guest. The YAML stays the source and the error path: a file that does not convert gets no JSON,
//! and the library parses its YAML for an error that names the line.

use std::fmt::Write as _;

fn main() {
    let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("chips");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = String::from("/// The chip files shipped with the rig (file name, contents), found in chips/.\n");
    out.push_str("const CHIP_FILES: &[(&str, &str)] = &[\n");
    let mut json = String::from("/// The same files as JSON, where they convert (index for index with CHIP_FILES).\n");
    json.push_str("const CHIP_JSON: &[Option<&str>] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().and_then(|n| n.to_str()).expect("UTF-8 file name");
        let _ = writeln!(out, "    ({name:?}, include_str!({:?})),", f.display().to_string());
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        let converted =
            serde_yaml::from_str::<serde_yaml::Value>(&text).ok().and_then(|v| serde_json::to_string(&v).ok());
        match converted {
            Some(text) => {
                let dest = out_dir.join(format!("{name}.json"));
                std::fs::write(&dest, text).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
                let _ = writeln!(json, "    Some(include_str!({:?})),", dest.display().to_string());
            }
            None => json.push_str("    None,\n"),
        }
    }
    out.push_str("];\n");
    json.push_str("];\n");
    out.push_str(&json);
    let dest = out_dir.join("chip_files.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}
