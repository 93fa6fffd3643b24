//! Preflight tests. The seed stories are reproduced from their inputs; every message is snapshotted
//! (src/snapshots/) so wording changes are reviewed.

use hil_chips::Chip;
use insta::assert_snapshot;

use crate::elf::testelf::{Seg, build};
use crate::image::Image;
use crate::preflight::{Check, Region, Severity, Target, check, check_bootloader};

fn chip(name: &str) -> &'static Chip {
    Chip::by_name(name).expect("shipped chip")
}

/// A vector table (initial SP, reset vector) followed by `len - 8` bytes of code.
fn vectors(sp: u32, reset: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&sp.to_le_bytes());
    v.extend_from_slice(&reset.to_le_bytes());
    v.resize(len, 0xBF);
    v
}

fn checks(report: &crate::preflight::Report) -> Vec<Check> {
    report.findings.iter().map(|f| f.check).collect()
}

/// Seed 000: an STM32F103CB application linked at 0x08003080 because the uTasker USB-disk
/// bootloader starts applications there. 59 vectors need 256-byte alignment, so VTOR cannot point
/// at that table.
#[test]
fn seed_000_f103_app_at_0x08003080_is_misaligned_for_vtor() {
    let code = vectors(0x2000_5000, 0x0800_3131, 0x400);
    let elf = build(0x0800_3131, &[Seg::at(0x0800_3080, &code, &[(".isr_vector", 0, 0xEC), (".text", 0xEC, 0x314)])]);
    let image = Image::from_elf("firmware.elf", &elf).unwrap();
    let target = Target {
        chip: chip("STM32F103CB"),
        app_base: 0x0800_3080,
        bootloader: Some(Region { base: 0x0800_0000, size: 0x3080 }),
    };
    let report = check(&image, &target);
    assert!(!report.passed());
    assert_eq!(checks(&report), [Check::VtorMisaligned]);
    assert_snapshot!("seed_000_vtor_misaligned", report.to_string());
}

/// Seed 001: an ELF whose linker script left `._user_heap_stack` as a loaded (PROGBITS) section at
/// 0x2000235C; the ROM bootloader NACKs writes there. The NOLOAD `.uninit_data` has no file bytes
/// and is not part of the image.
#[test]
fn seed_001_elf_with_a_ram_load_segment_is_refused_naming_the_segment() {
    let code = vectors(0x2002_0000, 0x0800_00C1, 0x2000);
    let id = [0x42u8; 0x10];
    let heap = vec![0u8; 0xA04];
    let elf = build(
        0x0800_00C1,
        &[
            Seg::at(0x0800_0000, &code, &[(".isr_vector", 0, 0xC0), (".text", 0xC0, 0x1F40)]),
            Seg::at(0x0800_FF00, &id, &[(".idsection", 0, 0x10)]),
            Seg { paddr: 0x2000_0000, vaddr: 0x2000_0000, data: &[], memsz: 0xC, sections: &[] },
            Seg::at(0x2000_235C, &heap, &[("._user_heap_stack", 0, 0xA04)]),
        ],
    );
    let image = Image::from_elf("bootloader.elf", &elf).unwrap();
    let target = Target { chip: chip("STM32G0B1RE"), app_base: 0x0800_0000, bootloader: None };
    let report = check(&image, &target);
    assert_eq!(checks(&report), [Check::OutsideFlash]);
    assert!(report.findings[0].message.starts_with("ELF segment 3 (._user_heap_stack) at 0x2000235C-0x20002D5F"));
    assert_snapshot!("seed_001_ram_segment", report.to_string());
}

#[test]
fn the_smoke_fixture_passes_as_elf_hex_and_bin() {
    let f = hil_fixtures::get("smoke", 0x0800_0000).expect("smoke fixture is built");
    let target = Target { chip: chip("STM32G071RB"), app_base: 0x0800_0000, bootloader: None };
    let elf = Image::from_elf(f.path, f.elf).unwrap();
    let report = check(&elf, &target);
    assert!(report.findings.is_empty(), "{report}");

    // The same bytes as Intel HEX (what objcopy -O ihex makes) and as a flat BIN.
    let mut records = Vec::new();
    for seg in &elf.segments {
        for (i, chunk) in seg.data.chunks(16).enumerate() {
            let addr = seg.address + 16 * i as u32;
            records.push(ihex::Record::ExtendedLinearAddress((addr >> 16) as u16));
            records.push(ihex::Record::Data { offset: addr as u16, value: chunk.to_vec() });
        }
    }
    records.push(ihex::Record::EndOfFile);
    let hex = ihex::create_object_file_representation(&records).unwrap();
    let hex = Image::from_hex("smoke.hex", hex.as_bytes()).unwrap();
    assert_eq!(
        hex.segments.iter().map(|s| &s.data).collect::<Vec<_>>(),
        elf.segments.iter().map(|s| &s.data).collect::<Vec<_>>()
    );
    assert!(check(&hex, &target).findings.is_empty());

    assert_eq!(elf.segments.len(), 1, "smoke is one contiguous flash run");
    let bin = Image::from_bin("smoke.bin", &elf.segments[0].data, 0x0800_0000).unwrap();
    assert!(check(&bin, &target).findings.is_empty());
}

#[test]
fn app_linked_at_flash_start_on_a_board_with_a_bootloader() {
    let code = vectors(0x2000_9000, 0x0800_0101, 0x200);
    let image = Image::from_bin("app.bin", &code, 0x0800_0000).unwrap();
    let target = Target {
        chip: chip("STM32G071RB"),
        app_base: 0x0800_4000,
        bootloader: Some(Region { base: 0x0800_0000, size: 0x4000 }),
    };
    let report = check(&image, &target);
    assert_eq!(checks(&report), [Check::BootloaderOverlap, Check::VectorTableNotAtAppBase]);
    assert_snapshot!("bootloader_overlap", report.to_string());
}

#[test]
fn bad_vector_words() {
    let g071 = Target { chip: chip("STM32G071RB"), app_base: 0x0800_0000, bootloader: None };

    // SP in flash (a .bin of something else), reset vector even.
    let image = Image::from_bin("x.bin", &vectors(0x0800_1000, 0x0800_0100, 0x200), 0x0800_0000).unwrap();
    let report = check(&image, &g071);
    assert_eq!(checks(&report), [Check::InitialSpOutsideRam, Check::ResetVectorNotThumb]);
    assert_snapshot!("sp_outside_ram_reset_even", report.to_string());

    // SP just past the end of SRAM is the normal value; one word further is not.
    let end = Image::from_bin("x.bin", &vectors(0x2000_9000, 0x0800_0101, 0x200), 0x0800_0000).unwrap();
    assert!(check(&end, &g071).findings.is_empty());
    let past = Image::from_bin("x.bin", &vectors(0x2000_9004, 0x0800_0101, 0x200), 0x0800_0000).unwrap();
    assert_eq!(checks(&check(&past, &g071)), [Check::InitialSpOutsideRam]);

    // Reset handler not in the image; SP not 8-byte aligned (a warning only).
    let image = Image::from_bin("x.bin", &vectors(0x2000_8FFC, 0x0801_0001, 0x200), 0x0800_0000).unwrap();
    let report = check(&image, &g071);
    assert_eq!(checks(&report), [Check::InitialSpUnaligned, Check::ResetVectorOutsideImage]);
    assert_eq!(report.findings[0].severity, Severity::Warning);
    assert!(!report.passed());
    assert_snapshot!("reset_outside_image_sp_unaligned", report.to_string());

    // Too short to hold a vector table.
    let image = Image::from_bin("x.bin", &[0; 6], 0x0800_0000).unwrap();
    assert_eq!(checks(&check(&image, &g071)), [Check::NoVectorTable]);
    assert_snapshot!("no_vector_table", check(&image, &g071).to_string());
}

#[test]
fn entry_point_mismatch_is_a_warning_and_flashable() {
    let code = vectors(0x2000_9000, 0x0800_0101, 0x200);
    let elf = build(0x0800_0181, &[Seg::at(0x0800_0000, &code, &[])]);
    let image = Image::from_elf("e.elf", &elf).unwrap();
    let report = check(&image, &Target { chip: chip("STM32G071RB"), app_base: 0x0800_0000, bootloader: None });
    assert_eq!(checks(&report), [Check::EntryPointMismatch]);
    assert!(report.passed());
    assert_snapshot!("entry_point_mismatch", report.to_string());
}

#[test]
fn data_past_the_end_of_flash_or_elsewhere_and_an_empty_image() {
    let g071 = Target { chip: chip("STM32G071RB"), app_base: 0x0800_0000, bootloader: None };
    let code = vectors(0x2000_9000, 0x0800_0101, 0x200);
    let tail = [0u8; 0x100];
    let option_bytes = [0xAAu8; 4];
    let elf = build(
        0x0800_0101,
        &[
            Seg::at(0x0800_0000, &code, &[(".isr_vector", 0, 0xC0)]),
            Seg::at(0x0801_FF80, &tail, &[(".rodata", 0, 0x100)]),
            Seg::at(0x1FFF_7800, &option_bytes, &[(".option_bytes", 0, 4)]),
        ],
    );
    let image = Image::from_elf("big.elf", &elf).unwrap();
    let report = check(&image, &g071);
    assert_eq!(checks(&report), [Check::OutsideFlash, Check::OutsideFlash]);
    assert_snapshot!("outside_flash_other", report.to_string());

    let empty = Image::from_bin("e.bin", &[], 0x0800_0000).unwrap();
    assert_snapshot!("empty_image", check(&empty, &g071).to_string());

    let wrong_board = Target { app_base: 0x0900_0000, ..g071 };
    let report = check(&Image::from_bin("x.bin", &code, 0x0800_0000).unwrap(), &wrong_board);
    assert_eq!(checks(&report), [Check::AppBaseOutsideFlash]);
    assert_snapshot!("app_base_outside_flash", report.to_string());
}

#[test]
fn findings_serialize_with_stable_codes() {
    let image = Image::from_bin("x.bin", &[0; 6], 0x0800_0000).unwrap();
    let report = check(&image, &Target { chip: chip("STM32G071RB"), app_base: 0x0800_0000, bootloader: None });
    insta::assert_json_snapshot!("json_shape", report);
}

#[test]
fn a_bootloader_image_is_checked_against_its_region() {
    let region = Region { base: 0x0800_0000, size: 0x4000 };
    let fits = Image::from_bin("bl.bin", &vectors(0x2000_9000, 0x0800_0101, 0x3000), 0x0800_0000).unwrap();
    assert!(check_bootloader(&fits, chip("STM32G071RB"), region).passed());
    // One byte past the region: it would overwrite the application's first page.
    let big = Image::from_bin("bl.bin", &vectors(0x2000_9000, 0x0800_0101, 0x4001), 0x0800_0000).unwrap();
    let report = check_bootloader(&big, chip("STM32G071RB"), region);
    let ids: Vec<_> = report.errors().map(|f| f.check.as_str()).collect();
    assert_eq!(ids, ["beyond-bootloader-region"], "{report}");
    assert!(report.to_string().contains("region 0x08000000-0x08003FFF"), "{report}");
    // Its vector table belongs at the region's base.
    let elsewhere = Image::from_bin("bl.bin", &vectors(0x2000_9000, 0x0800_1101, 0x200), 0x0800_1000).unwrap();
    let ids: Vec<_> =
        check_bootloader(&elsewhere, chip("STM32G071RB"), region).errors().map(|f| f.check.as_str()).collect();
    assert!(ids.contains(&"vector-table-not-at-app-base"), "{ids:?}");
}
