//! Chip-level tests without a core: boot selection, remap, reset flags, flash controller, USART,
//! watchdog, GPIO. Each drives registers through the System bus as the CPU would.

use hil_cortex_m::{Bus, BusFault, BusFaultKind, Initiator, ResetCause, Size};

use super::Soc;
use crate::config::{BoardConfig, FaultConfig, Quirks, RamInit};
use crate::periph::usart::RxFrame;
use crate::periph::{flash as f, rcc, usart as u};
use crate::shared::BootTargetName;

const FLASH: u32 = 0x4002_2000;
const RCC: u32 = 0x4002_1000;
const SYSCFG: u32 = 0x4001_0000;
const USART2: u32 = 0x4000_4400;
const IWDG: u32 = 0x4000_3000;
const GPIOA: u32 = 0x5000_0000;

/// A G071 without a core, with a cycle cursor for virtual time (16 MHz after reset).
struct T {
    soc: Soc,
    cycle: u64,
}

impl T {
    fn with(cfg: BoardConfig) -> T {
        let mut soc = Soc::new(&cfg).unwrap();
        soc.power_on(0);
        T { soc, cycle: 0 }
    }
    fn new() -> T {
        Self::with(BoardConfig { ram_init: RamInit::Zero, ..Default::default() })
    }
    fn r(&mut self, addr: u32) -> u32 {
        self.soc.sys.read(addr, Size::Word, Initiator::Cpu, self.cycle).unwrap_or_else(|e| panic!("read: {e}"))
    }
    fn w(&mut self, addr: u32, v: u32) {
        self.try_w(addr, v).unwrap_or_else(|e| panic!("write: {e}"))
    }
    fn try_w(&mut self, addr: u32, v: u32) -> Result<(), BusFault> {
        self.soc.sys.write(addr, Size::Word, v, Initiator::Cpu, self.cycle)
    }
    fn advance_us(&mut self, us: u64) {
        let hz = self.soc.sys.clock().hz as u64;
        self.cycle += us * hz / 1_000_000;
        self.soc.sys.dispatch_due_events(self.cycle);
    }
    fn reset_request(&mut self) -> Option<ResetCause> {
        self.soc.sys.take_attention().reset
    }
    fn reset(&mut self, cause: ResetCause) -> crate::BootInfo {
        self.soc.reset(cause, self.cycle)
    }
    fn power_cycle(&mut self) -> crate::BootInfo {
        self.soc.power_on(self.cycle)
    }
    fn unlock(&mut self) {
        self.w(FLASH + f::KEYR, 0x4567_0123);
        self.w(FLASH + f::KEYR, 0xCDEF_89AB);
        assert_eq!(self.r(FLASH + f::CR) & f::CR_LOCK, 0);
    }
    fn unlock_options(&mut self) {
        self.unlock();
        self.w(FLASH + f::OPTKEYR, 0x0819_2A3B);
        self.w(FLASH + f::OPTKEYR, 0x4C5D_6E7F);
        assert_eq!(self.r(FLASH + f::CR) & f::CR_OPTLOCK, 0);
    }
    /// Program one double word and wait for it (85 us typical).
    fn program(&mut self, addr: u32, lo: u32, hi: u32) -> u32 {
        self.w(FLASH + f::CR, f::CR_PG);
        self.w(addr, lo);
        self.w(addr + 4, hi);
        self.advance_us(200);
        self.w(FLASH + f::CR, 0);
        self.r(FLASH + f::SR)
    }
    fn user_word(&self) -> u32 {
        self.soc.sys.shared.flash.words["USER"]
    }
}

/// USER option word with the boot bits set as given (factory 0xFFFFFEAA otherwise).
fn user(nboot_sel: u32, nboot1: u32, nboot0: u32) -> u32 {
    (0xFFFF_FEAA & !(7 << 24)) | (nboot_sel << 24) | (nboot1 << 25) | (nboot0 << 26)
}

fn vector_table() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x2000_9000u32.to_le_bytes());
    v.extend_from_slice(&0x0800_0101u32.to_le_bytes());
    v
}

#[test]
fn new_chip_boots_the_rom_through_the_empty_check() {
    let mut t = T::new();
    let b = t.soc.boot().unwrap().clone();
    assert_eq!(b.table_target, BootTargetName::MainFlash, "factory options select main flash");
    assert!(b.empty_redirect);
    assert_eq!(b.target, BootTargetName::SystemMemory);
    // The alias shows system memory: the ROM's SP and reset vector.
    assert_eq!(t.r(0x0), 0x2000_2700);
    assert_eq!(t.r(0x4), t.soc.layout.rom.entry | 1);
    assert_eq!(t.r(FLASH + f::ACR) & (1 << 16), 1 << 16, "FLASH_ACR.EMPTY");
    // MEM_MODE reflects the boot mode (RM0444 9.1.1); readable once the SYSCFG clock is on.
    t.w(RCC + rcc::APBENR2, 1);
    assert_eq!(t.r(SYSCFG) & 3, 1);
}

#[test]
fn empty_check_is_evaluated_at_power_on_and_obl_only() {
    let mut t = T::new();
    t.soc.load_flash(0x0800_0000, &vector_table()).unwrap();
    for cause in [ResetCause::Pin, ResetCause::Software, ResetCause::IndependentWatchdog] {
        let b = t.reset(cause);
        assert_eq!(b.target, BootTargetName::SystemMemory, "{cause:?} keeps the EMPTY latch (KB-empty)");
    }
    let b = t.reset(ResetCause::OptionByteLoad);
    assert_eq!(b.target, BootTargetName::MainFlash, "OBL re-evaluates the empty check");
    assert_eq!(t.r(0x0), 0x2000_9000, "alias shows main flash");
    // Erase again: a plain reset still boots flash, a power cycle goes back to the ROM.
    t.soc.factory_reset();
    assert_eq!(t.reset(ResetCause::Pin).target, BootTargetName::MainFlash);
    assert_eq!(t.power_cycle().target, BootTargetName::SystemMemory);
    // Software may clear EMPTY itself (RM0444 3.3.2); the next plain reset then boots flash.
    t.soc.load_flash(0x0800_0000, &vector_table()).unwrap();
    let acr = t.r(FLASH + f::ACR);
    t.w(FLASH + f::ACR, acr & !(1 << 16));
    assert_eq!(t.reset(ResetCause::Software).target, BootTargetName::MainFlash);
}

#[test]
fn every_row_of_the_g0_boot_table() {
    // (BOOT0 pin, nBOOT_SEL, nBOOT1, nBOOT0, BOOT_LOCK, flash programmed) -> boot target.
    use BootTargetName::*;
    let rows: &[(bool, u32, u32, u32, u32, bool, BootTargetName)] = &[
        (false, 0, 1, 1, 0, true, MainFlash),
        (false, 0, 1, 1, 0, false, SystemMemory), // empty check
        (true, 0, 1, 1, 0, true, SystemMemory),
        (true, 0, 0, 1, 0, true, Sram),
        (true, 1, 1, 1, 0, true, MainFlash),      // pin ignored with nBOOT_SEL = 1
        (false, 1, 1, 1, 0, false, SystemMemory), // empty check
        (false, 1, 1, 0, 0, true, SystemMemory),
        (true, 1, 0, 0, 0, true, Sram),
        (true, 0, 1, 1, 1, false, MainFlash), // BOOT_LOCK: main flash, no empty check
        (false, 1, 1, 0, 1, true, MainFlash),
    ];
    for (i, &(boot0, sel, n1, n0, lock, programmed, want)) in rows.iter().enumerate() {
        let mut t = T::new();
        t.soc.set_option_word("USER", user(sel, n1, n0)).unwrap();
        t.soc.set_option_word("SECURITY", lock << 16).unwrap();
        if programmed {
            t.soc.load_flash(0x0800_0000, &vector_table()).unwrap();
        }
        t.soc.set_boot0(boot0);
        let b = t.power_cycle();
        assert_eq!(b.target, want, "row {i}: {b:?}");
        let alias_sp = t.r(0x0);
        let expect_sp = match want {
            MainFlash if programmed => 0x2000_9000,
            MainFlash => 0xFFFF_FFFF,
            SystemMemory => 0x2000_2700,
            Sram => 0,
        };
        assert_eq!(alias_sp, expect_sp, "row {i}: what 0x00000000 shows");
    }
}

#[test]
fn boot0_pin_is_latched_at_reset_not_live() {
    let mut t = T::new();
    t.soc.set_option_word("USER", user(0, 1, 1)).unwrap();
    t.soc.load_flash(0x0800_0000, &vector_table()).unwrap();
    assert_eq!(t.power_cycle().target, BootTargetName::MainFlash);
    t.soc.set_boot0(true);
    assert_eq!(t.soc.boot().unwrap().target, BootTargetName::MainFlash, "no effect before a reset");
    let b = t.reset(ResetCause::Pin);
    assert_eq!(b.target, BootTargetName::SystemMemory);
    assert!(b.boot0);
}

#[test]
fn remap_needs_the_syscfg_clock() {
    let mut t = T::new();
    t.soc.load_flash(0x0800_0000, &vector_table()).unwrap();
    t.reset(ResetCause::OptionByteLoad);
    assert_eq!(t.r(0x0), 0x2000_9000);
    // SYSCFG clock off: the write is lost, CFGR1 reads 0, the alias still shows flash (P4).
    t.w(SYSCFG, 1);
    assert_eq!(t.r(0x0), 0x2000_9000);
    assert_eq!(t.r(SYSCFG), 0);
    // With RCC_APBENR2.SYSCFGEN: MEM_MODE = 01 maps system memory at 0.
    t.w(RCC + rcc::APBENR2, 1);
    assert_eq!(t.r(SYSCFG) & 3, 0, "booted from main flash");
    t.w(SYSCFG, 1);
    assert_eq!(t.r(SYSCFG) & 3, 1);
    assert_eq!(t.r(0x0), 0x2000_2700);
    assert_eq!(t.r(0x4), t.soc.layout.rom.entry | 1);
    assert_eq!(t.soc.syscfg().alias_target(), BootTargetName::SystemMemory);
    // 11: SRAM at 0.
    t.w(0x2000_0000, 0xA5A5_5A5A);
    t.w(SYSCFG, 3);
    assert_eq!(t.r(0x0), 0xA5A5_5A5A);
    // 00: flash again; a system reset restores the boot mode's value.
    t.w(SYSCFG, 1);
    t.reset(ResetCause::Software);
    assert_eq!(t.r(0x0), 0x2000_9000);
}

#[test]
fn gated_clock_can_be_a_bus_error_instead() {
    let cfg = BoardConfig {
        quirks: Quirks { gated_registers_read_zero: false, ..Default::default() },
        ram_init: RamInit::Zero,
        ..Default::default()
    };
    let mut t = T::with(cfg);
    let e = t.try_w(SYSCFG, 1).unwrap_err();
    assert_eq!(e.addr, SYSCFG);
    assert!(matches!(e.kind, BusFaultKind::Device(_)));
}

#[test]
fn reset_flags_accumulate_until_rmvf() {
    let mut t = T::new();
    assert_eq!(t.soc.rcc_csr() & 0xFE00_0000, rcc::CSR_PWRRSTF | rcc::CSR_PINRSTF);
    t.w(RCC + rcc::CSR, rcc::CSR_RMVF);
    assert_eq!(t.r(RCC + rcc::CSR) & 0xFE00_0000, 0);
    t.reset(ResetCause::Software);
    assert_eq!(t.r(RCC + rcc::CSR) & 0xFE00_0000, rcc::CSR_SFTRSTF | rcc::CSR_PINRSTF);
    t.reset(ResetCause::IndependentWatchdog);
    let csr = t.r(RCC + rcc::CSR);
    assert_eq!(rcc::reset_flag_names(csr), vec!["PIN", "SFT", "IWDG"]);
    t.reset(ResetCause::OptionByteLoad);
    assert!(t.r(RCC + rcc::CSR) & rcc::CSR_OBLRSTF != 0);
    assert_eq!(t.power_cycle().cause, crate::ResetCauseName::PowerOn);
    assert_eq!(t.r(RCC + rcc::CSR) & 0xFE00_0000, rcc::CSR_PWRRSTF | rcc::CSR_PINRSTF);
    // Switch: internal resets without PINRSTF.
    let cfg = BoardConfig {
        quirks: Quirks { internal_reset_sets_pin_flag: false, ..Default::default() },
        ..Default::default()
    };
    let mut t = T::with(cfg);
    t.w(RCC + rcc::CSR, rcc::CSR_RMVF);
    t.reset(ResetCause::Software);
    assert_eq!(t.r(RCC + rcc::CSR) & 0xFE00_0000, rcc::CSR_SFTRSTF);
    t.reset(ResetCause::Pin);
    assert_eq!(t.r(RCC + rcc::CSR) & 0xFE00_0000, rcc::CSR_SFTRSTF | rcc::CSR_PINRSTF);
}

#[test]
fn sram_survives_system_resets_but_not_power_on() {
    let mut t = T::with(BoardConfig { ram_init: RamInit::Random { seed: 7 }, ..Default::default() });
    t.w(0x2000_8000, 0xC0DE_F00D);
    for cause in [ResetCause::Pin, ResetCause::Software, ResetCause::IndependentWatchdog, ResetCause::OptionByteLoad] {
        t.reset(cause);
        assert_eq!(t.r(0x2000_8000), 0xC0DE_F00D, "{cause:?}");
    }
    t.power_cycle();
    assert_ne!(t.r(0x2000_8000), 0xC0DE_F00D);
}

#[test]
fn flash_unlock_sequence_and_wrong_key_lock_until_reset() {
    let mut t = T::new();
    assert_eq!(t.r(FLASH + f::CR), f::CR_LOCK | f::CR_OPTLOCK, "reset value");
    // CR is write-protected while locked.
    t.w(FLASH + f::CR, f::CR_PG);
    assert_eq!(t.r(FLASH + f::CR) & f::CR_PG, 0);
    t.unlock();
    t.w(FLASH + f::CR, f::CR_PG);
    assert_eq!(t.r(FLASH + f::CR) & f::CR_PG, f::CR_PG);
    // LOCK set by software locks again; a correct sequence unlocks again.
    t.w(FLASH + f::CR, f::CR_LOCK);
    assert_ne!(t.r(FLASH + f::CR) & f::CR_LOCK, 0);
    t.unlock();
    t.w(FLASH + f::CR, f::CR_LOCK);
    // A wrong second key: bus error (HardFault on the CPU), and locked until reset.
    t.w(FLASH + f::KEYR, 0x4567_0123);
    let e = t.try_w(FLASH + f::KEYR, 0x1234_5678).unwrap_err();
    assert_eq!(e.addr, FLASH + f::KEYR);
    assert!(e.to_string().contains("wrong key sequence"), "{e}");
    assert_eq!(t.soc.flash().unwrap().key_state(), f::KeyState::LockedUntilReset);
    assert!(t.try_w(FLASH + f::KEYR, 0x4567_0123).is_err(), "even the right keys fault now");
    assert!(t.try_w(FLASH + f::KEYR, 0xCDEF_89AB).is_err());
    assert_ne!(t.r(FLASH + f::CR) & f::CR_LOCK, 0);
    t.reset(ResetCause::Pin);
    t.unlock();
    // Wrong first key.
    t.reset(ResetCause::Pin);
    assert!(t.try_w(FLASH + f::KEYR, 0xCDEF_89AB).is_err());
    assert_eq!(t.soc.flash().unwrap().key_state(), f::KeyState::LockedUntilReset);
}

#[test]
fn option_unlock_needs_flash_unlocked_and_right_keys() {
    let mut t = T::new();
    t.w(FLASH + f::OPTKEYR, 0x0819_2A3B);
    t.w(FLASH + f::OPTKEYR, 0x4C5D_6E7F);
    assert_ne!(t.r(FLASH + f::CR) & f::CR_OPTLOCK, 0, "ignored while LOCK is set");
    t.unlock_options();
    t.reset(ResetCause::Pin);
    t.unlock();
    t.w(FLASH + f::OPTKEYR, 0x0819_2A3B);
    assert!(t.try_w(FLASH + f::OPTKEYR, 0).is_err());
    assert_eq!(t.soc.flash().unwrap().option_key_state(), f::KeyState::LockedUntilReset);
    assert_eq!(t.r(FLASH + f::CR) & f::CR_LOCK, 0, "FLASH_CR itself stays unlocked");
}

#[test]
fn double_word_programming_rules() {
    let mut t = T::new();
    t.unlock();
    // No PG: PGSERR, nothing written.
    t.w(0x0800_1000, 0x1111_1111);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_PGSERR, f::SR_PGSERR);
    assert_eq!(t.r(0x0800_1000), 0xFFFF_FFFF);
    // Error flags not cleared: the next program is refused with PGSERR.
    t.w(FLASH + f::CR, f::CR_PG);
    t.w(0x0800_1000, 0x1111_1111);
    t.w(0x0800_1004, 0x2222_2222);
    t.advance_us(200);
    assert_eq!(t.r(0x0800_1000), 0xFFFF_FFFF);
    t.w(FLASH + f::SR, 0xFFFF_FFFF);
    assert_eq!(t.r(FLASH + f::SR), 0);
    // Byte access: SIZERR.
    t.soc.sys.write(0x0800_1000, Size::Byte, 0x11, Initiator::Cpu, t.cycle).unwrap();
    assert_eq!(t.r(FLASH + f::SR) & f::SR_SIZERR, f::SR_SIZERR);
    t.w(FLASH + f::SR, 0xFFFF);
    // First word not double-word aligned: PGAERR.
    t.w(0x0800_1004, 0x1111_1111);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_PGAERR, f::SR_PGAERR);
    t.w(FLASH + f::SR, 0xFFFF);
    // Second word not in the same double word: PGAERR.
    t.w(0x0800_1000, 0x1111_1111);
    t.w(0x0800_1010, 0x2222_2222);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_PGAERR, f::SR_PGAERR);
    t.w(FLASH + f::SR, 0xFFFF);
    // A proper double word: BSY1 during tprog (85 us typical, DS12232), then written.
    t.w(FLASH + f::CR, f::CR_PG | f::CR_EOPIE);
    t.w(0x0800_1000, 0x1111_1111);
    assert_ne!(t.r(FLASH + f::SR) & f::SR_CFGBSY, 0, "CFGBSY after the first word");
    t.w(0x0800_1004, 0x2222_2222);
    assert_ne!(t.r(FLASH + f::SR) & f::SR_BSY1, 0);
    assert_eq!(t.r(0x0800_1000), 0xFFFF_FFFF, "cells change when the operation completes");
    t.advance_us(80);
    assert_ne!(t.r(FLASH + f::SR) & f::SR_BSY1, 0, "still busy at 80 us");
    t.advance_us(10);
    assert_eq!(t.r(FLASH + f::SR) & (f::SR_BSY1 | f::SR_CFGBSY), 0);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_EOP, f::SR_EOP, "EOP with EOPIE");
    assert!(t.soc.sys.irq.is_high(3), "FLASH interrupt line (EOPIE)");
    assert_eq!((t.r(0x0800_1000), t.r(0x0800_1004)), (0x1111_1111, 0x2222_2222));
    t.w(FLASH + f::SR, f::SR_EOP);
    assert!(!t.soc.sys.irq.is_high(3));
    // Programming a programmed double word: PROGERR, unless writing all zeros.
    assert_eq!(t.program(0x0800_1000, 0x3333_3333, 0) & f::SR_PROGERR, f::SR_PROGERR);
    assert_eq!(t.r(0x0800_1000), 0x1111_1111);
    t.w(FLASH + f::SR, 0xFFFF);
    assert_eq!(
        t.program(0x0800_1000, 0, 0) & 0xFFFF,
        0,
        "zeros over programmed cells are allowed (no error, EOPIE off)"
    );
    assert_eq!(t.r(0x0800_1000), 0);
    assert_eq!(t.soc.sys.shared.counters.flash_programs, 2);
}

#[test]
fn erase_rules_and_timing() {
    let mut t = T::new();
    t.unlock();
    assert_eq!(t.program(0x0800_0800, 1, 2) & 0xFFFF, 0);
    assert_eq!(t.program(0x0800_1000, 3, 4) & 0xFFFF, 0);
    // STRT without PER/MER: PGSERR.
    t.w(FLASH + f::CR, f::CR_STRT);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_PGSERR, f::SR_PGSERR);
    t.w(FLASH + f::SR, 0xFFFF);
    // Page erase of page 1 (PNB = 1): 22 ms typical.
    t.w(FLASH + f::CR, f::CR_PER | (1 << 3));
    t.w(FLASH + f::CR, f::CR_PER | (1 << 3) | f::CR_STRT);
    assert_ne!(t.r(FLASH + f::SR) & f::SR_BSY1, 0);
    t.advance_us(21_000);
    assert_eq!(t.r(0x0800_0800), 1, "not yet erased");
    t.advance_us(2_000);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_BSY1, 0);
    assert_eq!(t.r(FLASH + f::CR) & f::CR_STRT, 0, "STRT clears with BSY1");
    assert_eq!(t.r(0x0800_0800), 0xFFFF_FFFF);
    assert_eq!(t.r(0x0800_1000), 3, "other pages untouched");
    // Page number beyond the 64 pages: refused.
    t.w(FLASH + f::CR, f::CR_PER | (63 << 3) | f::CR_STRT);
    t.advance_us(23_000);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_PGSERR, 0, "page 63 is the last valid page");
    // Mass erase.
    t.w(FLASH + f::CR, f::CR_MER1);
    t.w(FLASH + f::CR, f::CR_MER1 | f::CR_STRT);
    t.advance_us(23_000);
    assert_eq!(t.r(0x0800_1000), 0xFFFF_FFFF);
    assert_eq!(t.soc.sys.shared.counters.flash_mass_erases, 1);
}

#[test]
fn write_protection_blocks_program_and_erase() {
    let mut t = T::new();
    // WRP1A protects pages 2..=3 (start 2, end 3), loaded by OBL.
    t.soc.set_option_word("WRP1A", 2 | (3 << 16)).unwrap();
    t.power_cycle();
    t.unlock();
    assert_eq!(t.program(0x0800_1000, 1, 2) & f::SR_WRPERR, f::SR_WRPERR);
    t.w(FLASH + f::SR, 0xFFFF);
    assert_eq!(t.program(0x0800_2000, 1, 2) & 0xFFFF, 0, "page 4 is not protected");
    t.w(FLASH + f::CR, f::CR_PER | (3 << 3) | f::CR_STRT);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_WRPERR, f::SR_WRPERR);
    t.w(FLASH + f::SR, 0xFFFF);
    t.w(FLASH + f::CR, f::CR_MER1 | f::CR_STRT);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_WRPERR, f::SR_WRPERR, "mass erase refused with a WRP area");
}

#[test]
fn otp_is_written_once() {
    let mut t = T::new();
    t.unlock();
    assert_eq!(t.program(0x1FFF_7000, 0xAAAA_0000, 0x0000_BBBB) & 0xFFFF, 0);
    assert_eq!(t.r(0x1FFF_7000), 0xAAAA_0000);
    assert_eq!(t.program(0x1FFF_7000, 0, 0) & f::SR_PROGERR, f::SR_PROGERR, "not even zeros (RM0444 3.3.1)");
}

#[test]
fn option_bytes_program_then_load_at_obl() {
    let mut t = T::new();
    t.soc.load_flash(0x0800_0000, &vector_table()).unwrap();
    t.unlock_options();
    let optr = t.r(FLASH + f::OPTR);
    assert_eq!(optr, 0xFFFF_FEAA, "factory USER word");
    // nBOOT0 = 0: boot system memory (nBOOT_SEL = 1, nBOOT1 = 1).
    t.w(FLASH + f::OPTR, optr & !(1 << 26));
    t.w(FLASH + f::CR, f::CR_OPTSTRT);
    assert_ne!(t.r(FLASH + f::SR) & f::SR_BSY1, 0);
    t.advance_us(40_000);
    assert_eq!(t.r(FLASH + f::SR) & f::SR_BSY1, 0);
    // Stored with its complement, but not effective before option byte loading.
    let ob = t.soc.option_bytes();
    assert_eq!(u32::from_le_bytes(ob[0..4].try_into().unwrap()), optr & !(1 << 26));
    assert_eq!(u32::from_le_bytes(ob[4..8].try_into().unwrap()), !(optr & !(1 << 26)));
    assert_eq!(t.user_word(), optr);
    // A plain reset drops the unsaved register edits and keeps the loaded values.
    assert_eq!(t.reset(ResetCause::Pin).target, BootTargetName::SystemMemory, "still EMPTY");
    assert_eq!(t.r(FLASH + f::OPTR), optr);
    // OBL_LAUNCH needs OPTLOCK cleared, then requests an option-byte-load reset.
    t.unlock();
    t.w(FLASH + f::CR, f::CR_OBL_LAUNCH);
    assert_eq!(t.reset_request(), None, "OPTLOCK set: OBL_LAUNCH cannot be written");
    t.unlock_options();
    t.w(FLASH + f::CR, f::CR_OBL_LAUNCH);
    assert_eq!(t.reset_request(), Some(ResetCause::OptionByteLoad));
    let b = t.reset(ResetCause::OptionByteLoad);
    assert_eq!(t.user_word(), optr & !(1 << 26));
    assert_eq!(b.target, BootTargetName::SystemMemory, "nBOOT0 = 0 selects system memory");
    assert!(!b.empty_redirect);
    assert!(t.r(RCC + rcc::CSR) & rcc::CSR_OBLRSTF != 0);
}

#[test]
fn corrupted_option_word_sets_optverr_and_rdp1() {
    let mut t = T::new();
    t.soc.set_option_bytes(4, &0u32.to_le_bytes()).unwrap();
    t.power_cycle();
    assert_ne!(t.r(FLASH + f::SR) & f::SR_OPTVERR, 0);
    assert_eq!(t.soc.sys.shared.flash.rdp, crate::RdpLevel::Level1);
}

#[test]
fn rdp_regression_mass_erases_flash() {
    let mut t = T::new();
    t.soc.set_option_word("USER", 0xFFFF_FEBB).unwrap();
    t.soc.load_flash(0x0800_0000, &vector_table()).unwrap();
    t.power_cycle();
    assert_eq!(t.soc.sys.shared.flash.rdp, crate::RdpLevel::Level1);
    t.unlock_options();
    t.w(FLASH + f::OPTR, 0xFFFF_FEAA);
    t.w(FLASH + f::CR, f::CR_OPTSTRT);
    t.advance_us(40_000);
    assert_eq!(t.r(0x0800_0000), 0xFFFF_FFFF, "level 1 -> 0 erases the main flash (RM0444 3.5.1)");
    t.reset(ResetCause::OptionByteLoad);
    assert_eq!(t.soc.sys.shared.flash.rdp, crate::RdpLevel::Level0);
}

#[test]
fn injected_program_failures() {
    let fail = 0x0800_4000..0x0800_4800;
    let faults = FaultConfig { flash_program_fail: vec![fail], ..Default::default() };
    let mut t = T::with(BoardConfig { faults, ..Default::default() });
    t.unlock();
    assert_eq!(t.program(0x0800_3FF8, 1, 2) & 0xFFFF, 0);
    t.w(FLASH + f::CR, f::CR_PG | f::CR_ERRIE);
    t.w(0x0800_4000, 1);
    t.w(0x0800_4004, 2);
    t.advance_us(200);
    let sr = t.r(FLASH + f::SR);
    assert_eq!(sr & (f::SR_PROGERR | f::SR_OPERR), f::SR_PROGERR | f::SR_OPERR);
    assert_eq!(t.r(0x0800_4000), 0xFFFF_FFFF);
}

fn usart2_on(t: &mut T, cr1_extra: u32) {
    t.w(RCC + 0x3C, 1 << 17); // APBENR1.USART2EN
    t.w(USART2 + u::BRR, 139); // 16 MHz / 139 = 115108 Bd
    t.w(USART2 + u::CR1, u::CR1_UE | u::CR1_TE | u::CR1_RE | cr1_extra);
}

fn host_send(t: &mut T, frames: &[RxFrame]) {
    let id = t.soc.layout.usarts.iter().find(|(n, _)| n == "USART2").unwrap().1;
    let cycle = t.cycle;
    t.soc.sys.with_device(id, cycle, None, |d, cx| {
        let any: &mut dyn std::any::Any = d;
        any.downcast_mut::<crate::periph::usart::Usart>().unwrap().host_send(frames, cx);
    });
}

#[test]
fn usart_transmits_frames_on_virtual_time() {
    let mut t = T::new();
    assert_eq!(t.r(USART2 + u::ISR), 0, "clock off: reads 0");
    usart2_on(&mut t, 0);
    let isr = t.r(USART2 + u::ISR);
    assert_eq!(
        isr & (u::ISR_TXE | u::ISR_TC | u::ISR_TEACK | u::ISR_REACK),
        u::ISR_TXE | u::ISR_TC | u::ISR_TEACK | u::ISR_REACK
    );
    t.w(USART2 + u::TDR, b'H' as u32);
    t.w(USART2 + u::TDR, b'i' as u32);
    assert_eq!(t.r(USART2 + u::ISR) & (u::ISR_TXE | u::ISR_TC), 0, "TDR full, shifting");
    // 10 bits at 115108 Bd = 86.9 us per frame.
    t.advance_us(80);
    assert!(t.soc.sys.shared.uart_out.is_empty());
    t.advance_us(10);
    assert_eq!(t.soc.sys.shared.uart_out.iter().map(|o| o.byte).collect::<Vec<_>>(), b"H");
    assert_eq!(t.r(USART2 + u::ISR) & (u::ISR_TXE | u::ISR_TC), u::ISR_TXE);
    t.advance_us(90);
    assert_eq!(t.soc.sys.shared.uart_out.iter().map(|o| o.byte).collect::<Vec<_>>(), b"Hi");
    assert_eq!(t.r(USART2 + u::ISR) & u::ISR_TC, u::ISR_TC);
    assert_eq!(t.soc.sys.shared.uart_out[0].usart, t.soc.usart_index("USART2").unwrap());
}

#[test]
fn usart_receives_with_flags_and_interrupts() {
    let mut t = T::new();
    usart2_on(&mut t, u::CR1_RXNEIE);
    host_send(&mut t, &[RxFrame::byte(0x7F), RxFrame::byte(0x01), RxFrame::byte(0x02)]);
    assert_ne!(t.r(USART2 + u::ISR) & u::ISR_BUSY, 0);
    t.advance_us(90);
    assert_ne!(t.r(USART2 + u::ISR) & u::ISR_RXNE, 0);
    assert!(t.soc.sys.irq.is_high(28), "USART2 IRQ 28 with RXNEIE");
    assert_eq!(t.r(USART2 + u::RDR), 0x7F);
    assert_eq!(t.r(USART2 + u::ISR) & u::ISR_RXNE, 0, "reading RDR clears RXNE");
    assert!(!t.soc.sys.irq.is_high(28));
    // Next two frames without reading: overrun, the third frame is lost.
    t.advance_us(180);
    let isr = t.r(USART2 + u::ISR);
    assert_ne!(isr & u::ISR_ORE, 0);
    assert_eq!(t.r(USART2 + u::RDR), 0x01);
    t.w(USART2 + u::ICR, 1 << 3);
    assert_eq!(t.r(USART2 + u::ISR) & u::ISR_ORE, 0);
    // IDLE one frame after the line went quiet.
    t.advance_us(100);
    assert_ne!(t.r(USART2 + u::ISR) & u::ISR_IDLE, 0);
}

#[test]
fn usart_8e1_parity_bit_and_injected_parity_error() {
    let mut t = T::new();
    // 8E1: M0 = 1 (9-bit word), PCE = 1, PS = 0 (RM0444 33.5.8).
    usart2_on(&mut t, u::CR1_M0 | u::CR1_PCE);
    host_send(&mut t, &[RxFrame::byte(0x31)]);
    t.advance_us(120);
    // 0x31 has three ones: even parity bit 1 in bit 8.
    assert_eq!(t.r(USART2 + u::ISR) & u::ISR_PE, 0);
    assert_eq!(t.r(USART2 + u::RDR), 0x131);
    host_send(&mut t, &[RxFrame { byte: 0x31, parity_error: true, ..Default::default() }]);
    t.advance_us(120);
    assert_ne!(t.r(USART2 + u::ISR) & u::ISR_PE, 0);
    assert_eq!(t.r(USART2 + u::RDR) & 0xFF, 0x31);
    // TX of a 9-bit word with parity: the host sees the 8 data bits.
    t.w(USART2 + u::TDR, 0x1A5);
    t.advance_us(120);
    assert_eq!(t.soc.sys.shared.uart_out.last().map(|o| o.byte), Some(0xA5));
}

#[test]
fn usart_receiver_off_loses_frames_and_baud_mismatch_garbles() {
    let mut t = T::new();
    t.w(RCC + 0x3C, 1 << 17);
    t.w(USART2 + u::BRR, 139);
    t.w(USART2 + u::CR1, u::CR1_UE | u::CR1_TE);
    host_send(&mut t, &[RxFrame::byte(1)]);
    t.advance_us(100);
    assert_eq!(t.soc.usart("USART2").unwrap().lost_while_off, 1);
    t.w(USART2 + u::CR1, u::CR1_UE | u::CR1_TE | u::CR1_RE);
    let id = t.soc.layout.usarts.iter().find(|(n, _)| n == "USART2").unwrap().1;
    t.soc.sys.device_mut::<crate::periph::usart::Usart>(id).unwrap().set_host_baud(Some(57_600));
    host_send(&mut t, &[RxFrame::byte(0x7F)]);
    t.advance_us(300);
    assert_ne!(t.r(USART2 + u::ISR) & u::ISR_FE, 0, "57600 Bd host vs 115200 Bd device");
    assert_ne!(t.r(USART2 + u::RDR), 0x7F);
}

#[test]
fn usart_rcc_reset_returns_to_reset_values() {
    let mut t = T::new();
    usart2_on(&mut t, 0);
    t.w(RCC + 0x2C, 1 << 17); // APBRSTR1.USART2RST
    t.w(RCC + 0x2C, 0);
    assert_eq!(t.r(USART2 + u::CR1), 0);
    assert_eq!(t.r(USART2 + u::BRR), 0);
}

#[test]
fn iwdg_resets_on_lsi_time_and_reload_postpones() {
    let mut t = T::new();
    // PR = 0 (/4), RLR = 0xFFF: 4 * 4095 / 32 kHz = 511.9 ms.
    t.w(IWDG, 0xCCCC);
    assert_ne!(t.r(RCC + rcc::CSR) & rcc::CSR_LSIRDY, 0, "IWDG start forces the LSI on");
    t.advance_us(500_000);
    assert_eq!(t.reset_request(), None);
    t.w(IWDG, 0xAAAA);
    t.advance_us(500_000);
    assert_eq!(t.reset_request(), None, "reloaded at 500 ms");
    t.advance_us(20_000);
    assert_eq!(t.reset_request(), Some(ResetCause::IndependentWatchdog));
    // Prescaler / reload need the 0x5555 key; updates show PVU/RVU for 5 LSI cycles.
    t.reset(ResetCause::IndependentWatchdog);
    t.w(IWDG + 0x08, 0x10);
    assert_eq!(t.r(IWDG + 0x08), 0xFFF, "RLR write without access key ignored");
    t.w(IWDG, 0x5555);
    t.w(IWDG + 0x08, 0x10);
    assert_eq!(t.r(IWDG + 0x0C) & 2, 2, "RVU");
    t.advance_us(200);
    assert_eq!(t.r(IWDG + 0x0C), 0);
    t.w(IWDG, 0xCCCC);
    t.advance_us(1_900);
    assert_eq!(t.reset_request(), None);
    t.advance_us(200);
    assert_eq!(t.reset_request(), Some(ResetCause::IndependentWatchdog), "16 ticks of 125 us = 2 ms");
}

#[test]
fn hardware_iwdg_option_starts_the_watchdog_at_reset() {
    let mut t = T::new();
    t.soc.set_option_word("USER", 0xFFFF_FEAA & !(1 << 16)).unwrap();
    t.power_cycle();
    t.advance_us(520_000);
    assert_eq!(t.reset_request(), Some(ResetCause::IndependentWatchdog));
}

#[test]
fn iwdg_freezes_while_the_core_is_halted_with_dbg_iwdg_stop() {
    let mut t = T::new();
    t.w(RCC + 0x3C, 1 << 27); // DBGEN
    t.w(0x4001_5808, 1 << 12); // DBGMCU_APB_FZ1.DBG_IWDG_STOP
    t.w(IWDG, 0xCCCC);
    t.soc.sys.shared.debug.core_halted = true;
    let id = t.soc.layout.iwdg.unwrap();
    let cycle = t.cycle;
    t.soc.sys.with_device(id, cycle, None, |d, cx| {
        let any: &mut dyn std::any::Any = d;
        any.downcast_mut::<crate::periph::iwdg::Iwdg>().unwrap().refreeze(cx);
    });
    t.advance_us(2_000_000);
    assert_eq!(t.reset_request(), None);
}

#[test]
fn gpio_output_changes_and_inputs() {
    let mut t = T::new();
    t.w(RCC + rcc::IOPENR, 1);
    // PA5 output (LED), set and clear through BSRR / BRR.
    let moder = t.r(GPIOA);
    t.w(GPIOA, (moder & !(3 << 10)) | (1 << 10));
    t.w(GPIOA + 0x18, 1 << 5);
    t.w(GPIOA + 0x28, 1 << 5);
    let changes: Vec<bool> = t.soc.sys.shared.pin_changes.iter().filter(|c| c.pin.pin == 5).map(|c| c.level).collect();
    assert_eq!(changes, vec![false, true, false]);
    // PA14 (BOOT0) pulled down at reset; driven from outside it reads the level.
    t.w(GPIOA, 0);
    assert_eq!(t.r(GPIOA + 0x10) & (1 << 14), 0);
    assert_ne!(t.r(GPIOA + 0x10) & (1 << 13), 0, "PA13 pull-up");
    t.soc.set_boot0(true);
    assert_ne!(t.r(GPIOA + 0x10) & (1 << 14), 0);
}

#[test]
fn dbgmcu_idcode_and_generic_peripherals() {
    let mut t = T::new();
    assert_eq!(t.r(0x4001_5800), 0x2000_0460);
    // TIM2 is not modelled: a register file behind its clock gate.
    t.w(0x4000_0000, 5);
    assert_eq!(t.r(0x4000_0000), 0);
    t.w(RCC + 0x3C, 1);
    t.w(0x4000_0000, 5);
    assert_eq!(t.r(0x4000_0000), 5);
    assert!(t.soc.sys.shared.touched_generic.contains(&"TIM2".to_string()));
    // Reserved peripheral space is a bus error.
    assert!(t.soc.sys.read(0x4000_0C00, Size::Word, Initiator::Cpu, 0).is_err());
    // Flash size word and the bootloader ID byte.
    assert_eq!(t.soc.sys.read(0x1FFF_75E0, Size::Half, Initiator::Cpu, 0).unwrap(), 128);
    assert_eq!(t.soc.sys.read(0x1FFF_6FFE, Size::Byte, Initiator::Cpu, 0).unwrap(), 0xB3);
    assert!(t.try_w(0x1FFF_0000, 0).is_err(), "ROM writes fault");
    assert!(t.try_w(0x1FFF_7800, 0).is_err(), "option bytes are written through FLASH_OPTR");
}

#[test]
fn clock_switch_to_pll_changes_the_core_clock() {
    let mut t = T::new();
    assert_eq!(t.soc.sys.clock().hz, 16_000_000);
    // PLL: HSI16 / M(1) * N(8) / R(2) = 64 MHz (RM0444 5.4.4).
    t.w(RCC + 0x0C, 2 | (8 << 8) | (1 << 28) | (1 << 29));
    t.w(RCC, (1 << 8) | (1 << 24));
    assert_eq!(t.r(RCC) & (1 << 25), 0, "PLLRDY after lock time");
    t.advance_us(50);
    assert_ne!(t.r(RCC) & (1 << 25), 0);
    t.w(RCC + 0x08, 2);
    assert_eq!((t.r(RCC + 0x08) >> 3) & 7, 2, "SWS = PLLRCLK");
    assert_eq!(t.soc.sys.clock().hz, 64_000_000);
    t.reset(ResetCause::Pin);
    assert_eq!(t.soc.sys.clock().hz, 16_000_000, "HSI16 after reset");
}

#[test]
fn g0b1_builds_with_two_banks() {
    let cfg = BoardConfig { chip: "STM32G0B1RE".into(), ..Default::default() };
    let mut t = T::with(cfg);
    assert_eq!(t.r(0x4001_5800) & 0xFFF, 0x467);
    t.unlock();
    // Page 256 is the first page of bank 2 (0x08040000).
    assert_eq!(t.program(0x0804_0000, 1, 2) & 0xFFFF, 0);
    t.w(FLASH + f::CR, f::CR_PER | (256 << 3) | f::CR_STRT);
    assert_ne!(t.r(FLASH + f::SR) & (1 << 17), 0, "BSY2");
    t.advance_us(23_000);
    assert_eq!(t.r(0x0804_0000), 0xFFFF_FFFF);
    assert_eq!(t.soc.sys.read(0x1FFF_75E0, Size::Half, Initiator::Cpu, 0).unwrap(), 512);
}

#[test]
fn unknown_chips_are_refused_and_every_shipped_chip_builds() {
    let e = Soc::new(&BoardConfig { chip: "STM32X".into(), ..Default::default() }).err().unwrap();
    assert!(e.to_string().contains("STM32G071RB"), "{e}");
    // Every shipped chip is a virtual board now (the F103 with the F1 peripheral versions).
    for c in hil_chips::all() {
        assert!(c.virtual_board, "{}", c.name);
        Soc::new(&BoardConfig { chip: c.name.clone(), ..Default::default() }).unwrap();
    }
}

/// F1 FPEC (flash-f1, PM0075): unlock, half-word programming with its errors, page erase by
/// FLASH_AR, option bytes (RDP 0xA5 = unprotected) loaded into FLASH_OBR at reset.
#[test]
fn f103_flash_controller_programs_half_words_and_loads_option_bytes() {
    use crate::periph::flash_f1 as f1;
    let mut t = T::with(BoardConfig { chip: "STM32F103CB".into(), ram_init: RamInit::Zero, ..Default::default() });
    let half = |t: &mut T, a: u32, v: u32| t.soc.sys.write(a, Size::Half, v, Initiator::Cpu, t.cycle).unwrap();
    // Factory options: OBR.RDPRT = 0, WRPR all ones (PM0075 3.7, 3.8); flash size 128 KiB in the
    // system memory (RM0008 30.1); DBGMCU_IDCODE on the external PPB (RM0008 31.6.1).
    assert_eq!(t.r(FLASH + f1::OBR) & (f1::OBR_RDPRT | f1::OBR_OPTERR), 0);
    assert_eq!(t.r(FLASH + f1::WRPR), 0xFFFF_FFFF);
    assert_eq!(t.r(0x1FFF_F7E0) & 0xFFFF, 128);
    assert_eq!(t.r(0xE004_2000) & 0xFFF, 0x410);
    // Locked: PG cannot be set.
    t.w(FLASH + f1::CR, f1::CR_PG);
    assert_eq!(t.r(FLASH + f1::CR), f1::CR_LOCK);
    t.w(FLASH + f1::KEYR, 0x4567_0123);
    t.w(FLASH + f1::KEYR, 0xCDEF_89AB);
    assert_eq!(t.r(FLASH + f1::CR) & f1::CR_LOCK, 0);
    t.w(FLASH + f1::CR, f1::CR_PG);
    half(&mut t, 0x0800_0400, 0x1234);
    assert_ne!(t.r(FLASH + f1::SR) & f1::SR_BSY, 0);
    t.advance_us(100);
    assert_eq!(t.r(FLASH + f1::SR), f1::SR_EOP);
    half(&mut t, 0x0800_0402, 0xABCD);
    t.advance_us(100);
    assert_eq!(t.r(0x0800_0400), 0xABCD_1234);
    // Programming a non-erased half word: PGERR, the cell keeps its value (PM0075 2.3.3).
    half(&mut t, 0x0800_0400, 0x5555);
    assert_ne!(t.r(FLASH + f1::SR) & f1::SR_PGERR, 0);
    assert_eq!(t.r(0x0800_0400), 0xABCD_1234);
    // A word store in PG mode is not a half word: PGERR (UNVERIFIED model).
    t.w(FLASH + f1::SR, f1::SR_PGERR | f1::SR_EOP);
    t.w(0x0800_0800, 0);
    assert_ne!(t.r(FLASH + f1::SR) & f1::SR_PGERR, 0);
    assert_eq!(t.r(0x0800_0800), 0xFFFF_FFFF);
    // Page erase of the 1 KiB page holding 0x08000402.
    t.w(FLASH + f1::CR, f1::CR_PER);
    t.w(FLASH + f1::AR, 0x0800_0402);
    t.w(FLASH + f1::CR, f1::CR_PER | f1::CR_STRT);
    assert_ne!(t.r(FLASH + f1::SR) & f1::SR_BSY, 0);
    t.advance_us(25_000);
    assert_eq!(t.r(FLASH + f1::SR) & f1::SR_BSY, 0);
    assert_eq!(t.r(0x0800_0400), 0xFFFF_FFFF);
    // Option bytes: erase (OPTER) and program RDP = 0x00 (protected); loaded at the next reset.
    t.w(FLASH + f1::OPTKEYR, 0x4567_0123);
    t.w(FLASH + f1::OPTKEYR, 0xCDEF_89AB);
    assert_ne!(t.r(FLASH + f1::CR) & f1::CR_OPTWRE, 0);
    t.w(FLASH + f1::CR, f1::CR_OPTER | f1::CR_OPTWRE);
    t.w(FLASH + f1::CR, f1::CR_OPTER | f1::CR_OPTWRE | f1::CR_STRT);
    t.advance_us(25_000);
    t.w(FLASH + f1::CR, f1::CR_OPTPG | f1::CR_OPTWRE);
    half(&mut t, 0x1FFF_F800, 0x0000);
    t.advance_us(100);
    assert_eq!(&t.soc.option_bytes()[..4], &[0x00, 0xFF, 0xFF, 0xFF], "RDP 0x00 with its complement");
    assert_eq!(t.r(FLASH + f1::OBR) & f1::OBR_RDPRT, 0, "not before a reset");
    t.reset(ResetCause::Software);
    assert_ne!(t.r(FLASH + f1::OBR) & f1::OBR_RDPRT, 0);
    assert_eq!(t.soc.sys.shared.flash.rdp, crate::shared::RdpLevel::Level1);
    // A wrong key: bus error, locked until reset.
    assert!(t.try_w(FLASH + f1::KEYR, 0x1111_1111).is_err());
    assert!(t.try_w(FLASH + f1::KEYR, 0x4567_0123).is_err());
}
