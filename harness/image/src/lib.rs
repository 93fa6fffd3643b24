//! Firmware images (ELF, Intel HEX, raw BIN) and the preflight checks run before every flash.
//!
//! Loading normalizes every format to an [`Image`]: sorted, merged [`Segment`]s at their load
//! addresses, each remembering its [`Origin`] (ELF program header and section names, HEX lines,
//! BIN offset) so findings can say what to fix. ELF files contribute the file contents of their
//! `PT_LOAD` program headers at the **physical** (load) address; `.bss` and `NOLOAD` memory is never
//! part of an image.
//!
//! [`preflight::check`] refuses images the ROM bootloader cannot or must not flash: data outside
//! flash (seed 001: a RAM segment in the ELF), a vector table that is not at the board's
//! application base or not aligned for VTOR (seed 000), overlap with a bootloader, a bad initial
//! stack pointer or reset vector.
//!
//! ```no_run
//! use hil_image::{Image, preflight};
//!
//! let image = Image::load("app.elf".as_ref(), None)?;
//! let chip = hil_chips::Chip::by_name("STM32G071RB").expect("shipped chip");
//! let target = preflight::Target { chip, app_base: 0x0800_0000, bootloader: None };
//! let report = preflight::check(&image, &target);
//! print!("{report}");
//! if !report.passed() {
//!     std::process::exit(1);
//! }
//! # Ok::<(), hil_image::ImageError>(())
//! ```

mod elf;
mod error;
mod hex;
mod image;
pub mod preflight;

pub use error::ImageError;
pub use image::{Format, Image, MAX_IMAGE_FILE, Origin, Segment, file_kind, read_image_file};

#[cfg(test)]
mod preflight_tests;
