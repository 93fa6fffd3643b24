include!("../memory_x.rs");

// cortex-m-rt's link.x refuses a vector table that is not aligned to its size (128 bytes at least),
// which is exactly the image seed 000 needs: this package brings its own `link.x` (found first: it
// has no cortex-m-rt dependency that would provide another), the smallest script that places the
// vector table at the FLASH origin, code and constants after it, and no RAM data.
const LINK_X: &str = "INCLUDE memory.x
ENTRY(Reset);
EXTERN(__VECTORS);
_stack_start = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS
{
  .vector_table ORIGIN(FLASH) : { KEEP(*(.vector_table)); } > FLASH
  .text : { *(.text .text.*); } > FLASH
  .rodata : ALIGN(4) { *(.rodata .rodata.*); } > FLASH
  .bss (NOLOAD) : { *(.bss .bss.*); } > RAM
  /DISCARD/ : { *(.ARM.exidx .ARM.exidx.* .ARM.extab.*); }
}
ASSERT(SIZEOF(.bss) == 0, \"seed000 keeps no RAM state: its startup does not initialise .bss\");
";

fn main() {
    write_memory_x();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("link.x"), LINK_X).unwrap();
    println!("cargo:rerun-if-changed=build.rs");
}
