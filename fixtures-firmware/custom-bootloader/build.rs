include!("../memory_x.rs");

fn main() {
    // The bootloader's slot: 32 KiB at the start of flash (seed 003's layout; boards.yaml
    // g071-custom-bootloader). A bigger image fails to link instead of running into the application.
    write_memory_x_capped(32 * 1024);
    println!("cargo:rerun-if-changed=build.rs");
}
