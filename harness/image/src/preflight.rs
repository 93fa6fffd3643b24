//! Preflight: what must hold before an image is flashed onto a board (DESIGN.md "Safety rails").
//! `hil image check --board NAME FILE` prints these findings, and every flash step runs them first.
//!
//! Messages are stable (snapshot-tested): they name the segment, the address and the fix.

use std::fmt;

use hil_chips::Chip;
use serde::Serialize;

use crate::image::{Format, Image, Segment};

/// A flash range reserved for something other than the application (a custom bootloader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Region {
    pub base: u32,
    pub size: u32,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.base as u64 + self.size as u64
    }

    fn overlaps(&self, seg: &Segment) -> bool {
        self.size > 0 && (seg.address as u64) < self.end() && seg.end() > self.base as u64
    }
}

/// What an image is checked against: the chip, where the application's vector table must be, and a
/// bootloader that must not be overwritten. (Board files map onto this; see hil-config.)
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub chip: &'a Chip,
    /// Address of the application's vector table: the flash base, or where a custom bootloader
    /// jumps to.
    pub app_base: u32,
    /// Flash held by a custom bootloader (not the ST ROM, which lives in system memory).
    pub bootloader: Option<Region>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The image must not be flashed.
    Error,
    /// Suspicious but flashable.
    Warning,
}

/// Stable identifiers of the checks (used in reports and to filter findings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    AppBaseOutsideFlash,
    EmptyImage,
    OutsideFlash,
    BootloaderOverlap,
    VectorTableNotAtAppBase,
    VtorMisaligned,
    NoVectorTable,
    InitialSpOutsideRam,
    InitialSpUnaligned,
    ResetVectorNotThumb,
    ResetVectorOutsideImage,
    EntryPointMismatch,
    BeyondBootloaderRegion,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::AppBaseOutsideFlash => "app-base-outside-flash",
            Check::EmptyImage => "empty-image",
            Check::OutsideFlash => "outside-flash",
            Check::BootloaderOverlap => "bootloader-overlap",
            Check::VectorTableNotAtAppBase => "vector-table-not-at-app-base",
            Check::VtorMisaligned => "vtor-misaligned",
            Check::NoVectorTable => "no-vector-table",
            Check::InitialSpOutsideRam => "initial-sp-outside-ram",
            Check::InitialSpUnaligned => "initial-sp-unaligned",
            Check::ResetVectorNotThumb => "reset-vector-not-thumb",
            Check::ResetVectorOutsideImage => "reset-vector-outside-image",
            Check::EntryPointMismatch => "entry-point-mismatch",
            Check::BeyondBootloaderRegion => "beyond-bootloader-region",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: Check,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}[{}]: {}", self.check.as_str(), self.message)
    }
}

/// All findings for one image and target, in check order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when nothing forbids flashing (warnings allowed).
    pub fn passed(&self) -> bool {
        self.errors().next().is_none()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Warning)
    }

    fn error(&mut self, check: Check, message: String) {
        self.findings.push(Finding { severity: Severity::Error, check, message });
    }

    fn warning(&mut self, check: Check, message: String) {
        self.findings.push(Finding { severity: Severity::Warning, check, message });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}

fn range(first: u32, last: u32) -> String {
    format!("0x{first:08X}-0x{last:08X}")
}

fn area_range(base: u32, size: u32) -> String {
    range(base, (base as u64 + size as u64).saturating_sub(1).max(base as u64) as u32)
}

/// Checks a board's custom bootloader image: the same checks with its vector table at the start
/// of `region`, and nothing written past the region's end (that is the application's flash).
pub fn check_bootloader(image: &Image, chip: &Chip, region: Region) -> Report {
    let mut report = check(image, &Target { chip, app_base: region.base, bootloader: None });
    let flash = chip.memory.flash.area();
    for seg in image.segments.iter().filter(|s| flash.contains(s.address) && s.end() > region.end()) {
        report.error(
            Check::BeyondBootloaderRegion,
            format!(
                "{} at {} runs past the end of the bootloader region {}: flashing it would overwrite the \
                 application's flash. Check the bootloader's linker script against the board's layout.bootloader size.",
                seg.describe(),
                range(seg.address, seg.last()),
                area_range(region.base, region.size)
            ),
        );
    }
    report
}

/// Runs every check of this module on `image` for `target`.
pub fn check(image: &Image, target: &Target) -> Report {
    let mut report = Report::default();
    let chip = target.chip;
    let flash = chip.memory.flash.area();
    let sram = &chip.memory.sram;
    let flash_range = area_range(flash.base, flash.size);
    let app = target.app_base;

    if !flash.contains(app) {
        report.error(
            Check::AppBaseOutsideFlash,
            format!(
                "The board's application base 0x{app:08X} is outside the flash of {} ({flash_range}): fix the board entry.",
                chip.name
            ),
        );
    }

    if image.is_empty() {
        report.error(
            Check::EmptyImage,
            "The image has no loadable data: nothing would be flashed. Check that this is the linked firmware \
             (an ELF with loadable segments, a HEX with data records, a non-empty BIN)."
                .into(),
        );
        return report;
    }

    for seg in &image.segments {
        if flash.contains_range(seg.address, seg.data.len() as u64) {
            continue;
        }
        let what = format!("{} at {} ({} bytes)", seg.describe(), range(seg.address, seg.last()), seg.data.len());
        let message = if sram.contains_range(seg.address, seg.data.len() as u64) {
            format!(
                "{what} is in SRAM, outside the flash of {} ({flash_range}): the ROM bootloader writes flash only, so \
                 this image cannot be flashed as it is. Fix the linker script so this section is not loaded (NOLOAD, \
                 or placed after the loaded sections), or flash a .hex/.bin that holds only the flash contents.",
                chip.name
            )
        } else if flash.contains(seg.address) {
            format!(
                "{what} runs past the end of the flash of {} ({flash_range}): the image is too large for this chip \
                 or was linked for a bigger one. Check the FLASH region in the linker script.",
                chip.name
            )
        } else {
            format!(
                "{what} is outside the flash of {} ({flash_range}): the ROM bootloader writes flash only. Check the \
                 linker script's MEMORY regions for {}, or flash a .hex/.bin that holds only the flash contents.",
                chip.name, chip.name
            )
        };
        report.error(Check::OutsideFlash, message);
    }

    if let Some(bl) = target.bootloader {
        for seg in image.segments.iter().filter(|s| bl.overlaps(s)) {
            report.error(
                Check::BootloaderOverlap,
                format!(
                    "{} at {} overlaps the bootloader at {}: flashing it would overwrite the bootloader. Link the \
                     application at the board's application base 0x{app:08X}.",
                    seg.describe(),
                    range(seg.address, seg.last()),
                    area_range(bl.base, bl.size)
                ),
            );
        }
    }

    // The vector table is the first thing the image puts into flash (startup files place it first;
    // the bootloader jumps through it: MSP from word 0, PC from word 1, AN3155 Go / reference 1.5).
    let Some(table) = image.segments.iter().find(|s| flash.contains(s.address)).map(|s| s.address) else {
        return report;
    };
    if table != app && flash.contains(app) {
        report.error(
            Check::VectorTableNotAtAppBase,
            format!(
                "The image's vector table is at 0x{table:08X}, but the board's application base is 0x{app:08X}: \
                 the bootloader starts the application from the vector table there. Link the application at \
                 0x{app:08X} (FLASH origin in the linker script)."
            ),
        );
    }
    let align = chip.vtor_alignment();
    if table % align != 0 {
        let below = table - table % align;
        report.error(
            Check::VtorMisaligned,
            format!(
                "The vector table at 0x{table:08X} is not aligned for VTOR: {} has {} vectors ({} bytes), so VTOR \
                 needs {align}-byte alignment ({} ARM B3.2.5) and 0x{table:08X} is {} bytes past a boundary: \
                 exceptions may fetch their handlers from the wrong place. Move the vector table to 0x{below:08X} or 0x{:08X} (the linker \
                 script's FLASH origin, VECT_TAB_OFFSET and the bootloader's application address together); if the \
                 bootloader insists on 0x{table:08X}, copy the table to {align}-byte aligned RAM at startup and \
                 point VTOR there.",
                chip.name,
                chip.vector_entries(),
                chip.vector_entries() * 4,
                match chip.core {
                    hil_chips::CoreKind::CortexM0Plus => "ARMv6-M",
                    _ => "ARMv7-M",
                },
                table % align,
                below as u64 + align as u64,
            ),
        );
    }

    let (Some(sp), Some(reset)) = (image.read_u32(table), image.read_u32(table.wrapping_add(4))) else {
        report.error(
            Check::NoVectorTable,
            format!(
                "The image holds no complete vector table at 0x{table:08X} (the initial stack pointer and the reset \
                 vector, 8 bytes): there is nothing for the core to start from."
            ),
        );
        return report;
    };
    // SP == end of SRAM is the usual value: the stack is full-descending, the first push goes below.
    if (sp as u64) < sram.base as u64 || sp as u64 > sram.end() {
        report.error(
            Check::InitialSpOutsideRam,
            format!(
                "The initial stack pointer 0x{sp:08X} (word 0 of the vector table at 0x{table:08X}) is outside the \
                 SRAM of {} ({}; 0x{:08X}, just past its end, is allowed): the core would fault on its first push. \
                 Check _estack and the RAM region in the linker script, and that the vector table is at the start \
                 of the image.",
                chip.name,
                area_range(sram.base, sram.size),
                sram.end()
            ),
        );
    } else if sp % 8 != 0 {
        report.warning(
            Check::InitialSpUnaligned,
            format!(
                "The initial stack pointer 0x{sp:08X} is not 8-byte aligned: the core ignores bits 1:0 at reset and \
                 the AAPCS expects an 8-byte aligned stack. Check _estack in the linker script."
            ),
        );
    }
    if reset & 1 == 0 {
        report.error(
            Check::ResetVectorNotThumb,
            format!(
                "The reset vector 0x{reset:08X} (word 1 of the vector table at 0x{table:08X}) is even: Cortex-M \
                 executes Thumb code only (bit 0 must be set), so the core would fault at reset. The vector table \
                 is probably not at the start of the image, or is corrupt."
            ),
        );
    } else if image.segment_at(reset & !1).is_none() {
        report.error(
            Check::ResetVectorOutsideImage,
            format!(
                "The reset vector 0x{reset:08X} (word 1 of the vector table at 0x{table:08X}) points to 0x{:08X}, \
                 which this image does not load: the core would run whatever is in flash there. Check that the \
                 reset handler is in a loaded section.",
                reset & !1
            ),
        );
    }
    if let (Format::Elf, Some(entry)) = (image.format, image.entry)
        && entry != reset
    {
        report.warning(
            Check::EntryPointMismatch,
            format!(
                "The ELF entry point 0x{entry:08X} differs from the reset vector 0x{reset:08X}: the core starts at \
                 the reset vector; debuggers that start at the entry point will disagree with it."
            ),
        );
    }
    report
}
