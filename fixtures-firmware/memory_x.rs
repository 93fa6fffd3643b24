// Shared by the fixtures' build scripts (`include!`d): writes memory.x for the layout the host
// build asks for through FIXTURE_* variables, so one source builds at several flash bases.
#[allow(dead_code)]
fn write_memory_x() {
    write_memory_x_capped(u32::MAX);
}

/// As `write_memory_x`, with the FLASH region at most `max_flash` bytes long (an image that must
/// fit a fixed slot, e.g. a bootloader in front of the application).
#[allow(dead_code)]
fn write_memory_x_capped(max_flash: u32) {
    use std::io::Write;
    let var = fixture_var;
    // Defaults: STM32G071RB, application at the start of flash.
    let flash = var("FIXTURE_FLASH_ORIGIN", 0x0800_0000);
    let flash_len = var("FIXTURE_FLASH_LENGTH", 128 * 1024).min(max_flash);
    let ram = var("FIXTURE_RAM_ORIGIN", 0x2000_0000);
    let ram_len = var("FIXTURE_RAM_LENGTH", 36 * 1024);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut f = std::fs::File::create(out.join("memory.x")).unwrap();
    writeln!(
        f,
        "MEMORY\n{{\n  FLASH : ORIGIN = {flash:#010x}, LENGTH = {flash_len:#x}\n  RAM : ORIGIN = {ram:#010x}, LENGTH = {ram_len:#x}\n}}"
    )
    .unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=../memory_x.rs");
}

/// A FIXTURE_* build variable (hex, `0x` and `_` allowed), or `default` when unset; the build
/// reruns when it changes.
#[allow(dead_code)]
fn fixture_var(name: &str, default: u32) -> u32 {
    println!("cargo:rerun-if-env-changed={name}");
    match std::env::var(name) {
        Ok(v) => {
            let t = v.trim().trim_start_matches("0x").replace('_', "");
            u32::from_str_radix(&t, 16).unwrap_or_else(|e| panic!("{name}={v:?} is not a hex number: {e}"))
        }
        Err(_) => default,
    }
}
