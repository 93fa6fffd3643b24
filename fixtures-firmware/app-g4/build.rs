include!("../memory_x.rs");

fn main() {
    write_memory_x();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // cortex-m-rt with `device` INCLUDEs device.x (weak interrupt handler aliases a PAC would
    // provide). The vector table in src/main.rs names its handlers directly, so the file stays empty.
    std::fs::write(out.join("device.x"), "/* interrupt handlers are named in src/main.rs */\n").unwrap();
    // The trampoline vector table at base + 0x200 (seed 004), after cortex-m-rt's .vector_table
    // (0x1D8 bytes on the G474: 16 core entries and 102 interrupts); .text starts after it.
    std::fs::write(
        out.join("trampoline.x"),
        "SECTIONS\n{\n  .trampoline ADDR(.vector_table) + 0x200 :\n  {\n    KEEP(*(.trampoline));\n  } > FLASH\n}\nINSERT AFTER .vector_table;\nASSERT(ADDR(.vector_table) + SIZEOF(.vector_table) <= ADDR(.trampoline), \"the vector table runs into the trampoline\");\n",
    )
    .unwrap();
    println!("cargo:rustc-link-arg=-Ttrampoline.x");
    // .text after the trampoline: memory.x is included by cortex-m-rt's link.x, and this
    // definition wins over its PROVIDE(_stext = ...).
    let mut memory_x = std::fs::OpenOptions::new().append(true).open(out.join("memory.x")).unwrap();
    std::io::Write::write_all(&mut memory_x, b"_stext = ORIGIN(FLASH) + 0x210;\n").unwrap();
    println!("cargo:rerun-if-changed=build.rs");
}
