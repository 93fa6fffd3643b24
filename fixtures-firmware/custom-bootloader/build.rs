include!("../memory_x.rs");

fn main() {
    // Where the application starts: FIXTURE_APP_BASE (fixtures.toml `env`), by default seed 003's
    // 0x08008000 behind a 32 KiB slot. The bootloader's slot is everything below it, so a bigger
    // image fails to link instead of running into the application. The application's flash ends
    // where the layout's flash ends (FIXTURE_FLASH_ORIGIN + FIXTURE_FLASH_LENGTH, the G071's 128 KiB
    // by default).
    let hex = fixture_var;
    let origin = hex("FIXTURE_FLASH_ORIGIN", 0x0800_0000);
    let flash_end = origin + hex("FIXTURE_FLASH_LENGTH", 128 * 1024);
    let app_base = hex("FIXTURE_APP_BASE", 0x0800_8000);
    assert!(
        app_base > origin && app_base < flash_end,
        "FIXTURE_APP_BASE {app_base:#x} is not inside the flash above the bootloader"
    );
    write_memory_x_capped(app_base - origin);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(
        out.join("layout.rs"),
        format!(
            "/// The application's vector table: right behind the bootloader's slot.\npub const APP_BASE: u32 = {app_base:#010x};\n/// End of main flash.\npub const FLASH_END: u32 = {flash_end:#010x};\n"
        ),
    )
    .unwrap();
    println!("cargo:rerun-if-changed=build.rs");
}
