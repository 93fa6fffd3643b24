//! `cargo bench -p hil-virtual-probe`: flash 64 KiB through probe-rs on a virtual STM32G071RB and
//! on a virtual STM32G0B1RE (ST's flash algorithm on the emulated core); prints one JSON object.

fn main() {
    let mut results = Vec::new();
    for chip in ["STM32G071RB", "STM32G0B1RE"] {
        match hil_virtual_probe::bench::flash_64k(chip) {
            Ok(r) => results.push(serde_json::to_value(&r).unwrap_or_default()),
            Err(e) => {
                eprintln!("flash-probe benchmark on {chip} failed: {e}");
                std::process::exit(1);
            }
        }
    }
    match serde_json::to_string_pretty(&serde_json::json!({ "flash_probe_64k": results })) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("cannot print the results: {e}");
            std::process::exit(1);
        }
    }
}
