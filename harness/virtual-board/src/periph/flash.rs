//! FLASH: the embedded flash controller of the STM32G0 (RM0444 chapter 3).
//!
//! Modelled: FLASH_ACR (latency bits stored, EMPTY, DBG_SWEN), the KEYR/OPTKEYR unlock sequences
//! with lock-until-reset and a bus error on a wrong key (RM0444 3.3.6), FLASH_SR flags and BSY1/
//! CFGBSY timing, FLASH_CR (PG, PER, PNB, MER1/MER2, STRT, OPTSTRT, EOPIE, ERRIE, OBL_LAUNCH,
//! OPTLOCK, LOCK), standard double-word programming and its errors (RM0444 3.3.7: PGSERR,
//! SIZERR, PGAERR, PROGERR, WRPERR), page and mass erase (RM0444 3.3.6), the OTP area (written
//! once, RM0444 3.3.1), write protection areas (RM0444 3.4.3), option registers with option
//! byte programming and loading (RM0444 3.4.2), RDP level regression 1 -> 0 mass erase
//! (RM0444 3.5.1), the FLASH interrupt (RM0444 3.6).
//!
//! Not modelled: fast programming timing (FSTPG rows program like PG double words), ECC
//! (FLASH_ECCR reads 0), PCROP read protection (registers are stored and loaded only), the
//! securable memory area (SEC_SIZE stored; BOOT_LOCK is used by boot selection).

use std::collections::BTreeMap;

use hil_chips::{Chip, FlashController, LoadEvent, OptionBytesLayout, OptionWord};
use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, StoreId, VirtualDuration};

use super::{merge_lane, read_lane};
use crate::config::FlashSpeed;
use crate::shared::{RdpLevel, Shared};

pub const ACR: u32 = 0x00;
pub const KEYR: u32 = 0x08;
pub const OPTKEYR: u32 = 0x0C;
pub const SR: u32 = 0x10;
pub const CR: u32 = 0x14;
pub const ECCR: u32 = 0x18;
pub const OPTR: u32 = 0x20;
pub const SECR: u32 = 0x80;

// FLASH_SR (RM0444 3.7.4).
pub const SR_EOP: u32 = 1 << 0;
pub const SR_OPERR: u32 = 1 << 1;
pub const SR_PROGERR: u32 = 1 << 3;
pub const SR_WRPERR: u32 = 1 << 4;
pub const SR_PGAERR: u32 = 1 << 5;
pub const SR_SIZERR: u32 = 1 << 6;
pub const SR_PGSERR: u32 = 1 << 7;
pub const SR_MISSERR: u32 = 1 << 8;
pub const SR_FASTERR: u32 = 1 << 9;
pub const SR_RDERR: u32 = 1 << 14;
pub const SR_OPTVERR: u32 = 1 << 15;
pub const SR_BSY1: u32 = 1 << 16;
pub const SR_CFGBSY: u32 = 1 << 18;
/// Flags cleared by writing 1.
const SR_W1C: u32 = SR_EOP
    | SR_OPERR
    | SR_PROGERR
    | SR_WRPERR
    | SR_PGAERR
    | SR_SIZERR
    | SR_PGSERR
    | SR_MISSERR
    | SR_FASTERR
    | SR_RDERR
    | SR_OPTVERR;
/// Programming errors that must be cleared before a new operation (RM0444 3.3.7 step 2: "Check
/// and clear all error programming flags due to a previous programming. If not, PGSERR is set").
const SR_PROG_ERRORS: u32 = SR_PROGERR | SR_WRPERR | SR_PGAERR | SR_SIZERR | SR_PGSERR | SR_MISSERR | SR_FASTERR;

// FLASH_CR (RM0444 3.7.5).
pub const CR_PG: u32 = 1 << 0;
pub const CR_PER: u32 = 1 << 1;
pub const CR_MER1: u32 = 1 << 2;
pub const CR_STRT: u32 = 1 << 16;
pub const CR_OPTSTRT: u32 = 1 << 17;
pub const CR_FSTPG: u32 = 1 << 18;
pub const CR_EOPIE: u32 = 1 << 24;
pub const CR_ERRIE: u32 = 1 << 25;
pub const CR_RDERRIE: u32 = 1 << 26;
pub const CR_OBL_LAUNCH: u32 = 1 << 27;
pub const CR_SEC_PROT: u32 = 1 << 28;
pub const CR_OPTLOCK: u32 = 1 << 30;
pub const CR_LOCK: u32 = 1 << 31;

// FLASH_ACR (RM0444 3.7.1): LATENCY[2:0], PRFTEN 8, ICEN 9, ICRST 11, EMPTY 16, DBG_SWEN 18.
const ACR_EMPTY: u32 = 1 << 16;
const ACR_DBG_SWEN: u32 = 1 << 18;
const ACR_STORED: u32 = 0x7 | (1 << 8) | (1 << 9);
/// RM0444 3.7.1 reset value 0x0004_0600 (ICEN, DBG_SWEN; bit 10 reads 1).
const ACR_RESET: u32 = 0x0000_0600;

const TAG_DONE: u32 = 1;

/// State of one unlock sequence (RM0444 3.3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    Locked,
    FirstKeySeen,
    Unlocked,
    /// A wrong key was written: locked until the next system reset.
    LockedUntilReset,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Program { store: StoreId, offset: usize, data: [u8; 8], addr: u32 },
    PageErase { first: u32, len: u32 },
    MassErase { first: u32, len: u32 },
    Options { image: Vec<(u32, u32)>, regression: bool },
}

/// Where the flash controller's memories live.
#[derive(Clone, Copy, Debug)]
pub struct FlashStores {
    pub main: StoreId,
    pub otp: Option<StoreId>,
    pub options: StoreId,
}

/// The flash controller.
pub struct Flash {
    fc: FlashController,
    ob: OptionBytesLayout,
    stores: FlashStores,
    main_base: u32,
    main_size: u32,
    page_size: u32,
    banks: u32,
    otp: Option<(u32, u32)>,
    opt_base: u32,
    empty_check: Option<(u32, Vec<LoadEvent>)>,
    t_program: VirtualDuration,
    t_page_erase: VirtualDuration,
    t_mass_erase: VirtualDuration,
    irq: u32,
    acr: u32,
    key: KeyState,
    optkey: KeyState,
    sr: u32,
    cr: u32,
    /// Option registers by offset (FLASH_OPTR, WRPxyR, PCROPxyR, SECR).
    regs: BTreeMap<u32, u32>,
    first_word: Option<(u32, u32)>,
    op: Option<Op>,
}

impl Flash {
    pub fn new(chip: &Chip, stores: FlashStores, speed: FlashSpeed) -> Option<Flash> {
        let fc = chip.flash_controller.clone()?;
        let ob = chip.option_bytes.clone()?;
        let t = chip.flash_timing.as_ref()?;
        let pick = |f: hil_chips::TimingFigure| match speed {
            FlashSpeed::Typical => f.typ,
            FlashSpeed::Maximum => f.max,
        };
        let empty_check = chip
            .boot
            .as_ref()
            .and_then(|b| b.empty_check.as_ref())
            .map(|e| (e.first_word_address, e.evaluated_at.clone()));
        let regs = ob.words.iter().map(|w| (w.register, w.factory)).collect();
        Some(Flash {
            irq: fc.irq,
            fc,
            ob,
            stores,
            main_base: chip.memory.flash.base,
            main_size: chip.memory.flash.size,
            page_size: chip.memory.flash.page_size,
            banks: chip.memory.flash.banks,
            otp: chip.memory.otp.as_ref().map(|a| (a.base, a.size)),
            opt_base: chip.memory.option_bytes.base,
            empty_check,
            t_program: VirtualDuration::from_us(pick(t.program_double_word_us) as u64),
            t_page_erase: VirtualDuration::from_us(pick(t.page_erase_us) as u64),
            t_mass_erase: VirtualDuration::from_us(pick(t.mass_erase_us) as u64),
            acr: ACR_RESET,
            key: KeyState::Locked,
            optkey: KeyState::Locked,
            sr: 0,
            cr: CR_LOCK | CR_OPTLOCK,
            regs,
            first_word: None,
            op: None,
        })
    }

    /// FLASH_ACR as software reads it (EMPTY and DBG_SWEN live in the shared state).
    pub fn acr_value(&self, shared: &Shared) -> u32 {
        let mut v = self.acr;
        if shared.flash.empty {
            v |= ACR_EMPTY;
        }
        if shared.flash.dbg_swen {
            v |= ACR_DBG_SWEN;
        }
        v
    }

    pub fn sr(&self) -> u32 {
        self.sr
    }
    pub fn cr(&self) -> u32 {
        self.cr_value()
    }
    pub fn key_state(&self) -> KeyState {
        self.key
    }
    pub fn option_key_state(&self) -> KeyState {
        self.optkey
    }
    /// Option registers as currently written (before OPTSTRT/OBL they may differ from loaded).
    pub fn option_registers(&self) -> &BTreeMap<u32, u32> {
        &self.regs
    }
    pub fn busy(&self) -> bool {
        self.op.is_some()
    }

    fn cr_value(&self) -> u32 {
        let mut v = self.cr & !(CR_LOCK | CR_OPTLOCK);
        if self.key != KeyState::Unlocked {
            v |= CR_LOCK;
        }
        if self.optkey != KeyState::Unlocked || self.key != KeyState::Unlocked {
            v |= CR_OPTLOCK;
        }
        v
    }

    fn pages_per_bank(&self) -> u32 {
        self.main_size / self.page_size / self.banks.max(1)
    }

    fn bsy_bits(&self, bank: u32) -> u32 {
        match (bank, self.fc.bsy2_bit) {
            (2, Some(b)) => SR_BSY1 | (1 << b),
            _ => SR_BSY1,
        }
    }

    fn bank_of(&self, addr: u32) -> u32 {
        if self.banks > 1 && addr - self.main_base >= self.main_size / self.banks { 2 } else { 1 }
    }

    /// (first address, length) of page number `pnb` (RM0444 3.3.1: bank 2 pages are numbered
    /// from `bank2_first_page` on dual-bank parts; RM0440 5.3.6: on parts with a BKER bit, PNB
    /// numbers the pages of the bank BKER selects).
    fn page_range(&self, pnb: u32) -> Option<(u32, u32)> {
        let per_bank = self.pages_per_bank();
        if let Some(b) = self.fc.bker_bit.filter(|_| self.banks > 1) {
            if pnb >= per_bank {
                return None;
            }
            let bank2 = self.cr & (1 << b) != 0;
            let index = if bank2 { per_bank + pnb } else { pnb };
            return Some((self.main_base + index * self.page_size, self.page_size));
        }
        let index = match self.fc.bank2_first_page {
            Some(first2) if self.banks > 1 => {
                if pnb < per_bank {
                    pnb
                } else if pnb >= first2 && pnb - first2 < per_bank {
                    per_bank + pnb - first2
                } else {
                    return None;
                }
            }
            _ if pnb < per_bank * self.banks.max(1) => pnb,
            _ => return None,
        };
        Some((self.main_base + index * self.page_size, self.page_size))
    }

    /// Page number (as written to PNB) of the page holding `addr` (inside its bank on parts
    /// with a BKER bit).
    pub fn page_number(&self, addr: u32) -> u32 {
        let index = (addr - self.main_base) / self.page_size;
        let per_bank = self.pages_per_bank();
        match self.fc.bank2_first_page {
            _ if self.fc.bker_bit.is_some() && index >= per_bank => index - per_bank,
            Some(first2) if index >= per_bank => first2 + index - per_bank,
            _ => index,
        }
    }

    /// Write-protected page ranges (RM0444 3.4.3: pages start..=end of each WRPxy area with
    /// start <= end), from the loaded option registers.
    fn wrp_protects(&self, shared: &Shared, addr: u32, len: u32) -> bool {
        let per_bank = self.pages_per_bank();
        self.ob.wrp.iter().any(|area| {
            let Some(word) = self.ob.word(&area.word) else { return false };
            let v = shared.flash.loaded.get(&word.register).copied().unwrap_or(word.factory);
            let mask = (1u32 << area.width) - 1;
            let (start, end) = ((v >> area.start_shift) & mask, (v >> area.end_shift) & mask);
            if start > end {
                return false;
            }
            let bank_off = if area.bank == 2 { per_bank } else { 0 };
            let lo = self.main_base + (bank_off + start) * self.page_size;
            let hi = self.main_base + (bank_off + end + 1) * self.page_size;
            addr < hi && addr + len > lo
        })
    }

    fn update_irq(&self, cx: &mut DeviceCx<'_, Shared>) {
        // RM0444 3.6: EOP with EOPIE, OPERR with ERRIE, RDERR with RDERRIE.
        let high = (self.cr & CR_EOPIE != 0 && self.sr & SR_EOP != 0)
            || (self.cr & CR_ERRIE != 0 && self.sr & SR_OPERR != 0)
            || (self.cr & CR_RDERRIE != 0 && self.sr & SR_RDERR != 0);
        cx.set_irq(self.irq, high);
    }

    /// An operation ended with `error` flags (OPERR joins them with ERRIE, RM0444 3.7.4).
    fn fail(&mut self, error: u32, cx: &mut DeviceCx<'_, Shared>) {
        self.sr |= error;
        if self.cr & CR_ERRIE != 0 {
            self.sr |= SR_OPERR;
        }
        self.sr &= !SR_CFGBSY;
        self.first_word = None;
        self.update_irq(cx);
    }

    fn start(&mut self, op: Op, bank: u32, t: VirtualDuration, cx: &mut DeviceCx<'_, Shared>) {
        self.op = Some(op);
        self.sr |= self.bsy_bits(bank) | SR_CFGBSY;
        cx.schedule_in(t, TAG_DONE);
    }

    /// Complete the operation in flight (its time has come, or a stalled bus access forces it).
    fn finish(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let Some(op) = self.op.take() else { return };
        cx.cancel(TAG_DONE);
        let mut error = 0;
        match op {
            Op::Program { store, offset, data, addr } => {
                if cx.shared.faults.program_browns_out() {
                    // Injected brown-out mid-write. What an interrupted program leaves is not
                    // published (RM0444 3.3.7 only forbids it): UNVERIFIED model - the cells of
                    // the first word are written, the second word still erased (ECC not
                    // modelled) - then the power-on reset a BOR causes (RM0444 4.1.2).
                    cx.memory.store_mut(store)[offset..offset + 4].copy_from_slice(&data[..4]);
                    cx.shared.counters.flash_brownouts += 1;
                    cx.request_reset(ResetCause::PowerOn);
                    return;
                }
                if cx.shared.faults.program_fails(addr) {
                    // Injected failure: the cells keep their old content.
                    error = SR_PROGERR;
                } else {
                    cx.memory.store_mut(store)[offset..offset + 8].copy_from_slice(&data);
                    cx.shared.counters.flash_programs += 1;
                }
            }
            Op::PageErase { first, len } => {
                let off = (first - self.main_base) as usize;
                cx.memory.store_mut(self.stores.main)[off..off + len as usize].fill(0xFF);
                cx.shared.counters.flash_page_erases += 1;
            }
            Op::MassErase { first, len } => {
                let off = (first - self.main_base) as usize;
                cx.memory.store_mut(self.stores.main)[off..off + len as usize].fill(0xFF);
                cx.shared.counters.flash_mass_erases += 1;
            }
            Op::Options { image, regression } => {
                let opts = cx.memory.store_mut(self.stores.options);
                for (off, v) in image {
                    if let Some(d) = opts.get_mut(off as usize..off as usize + 4) {
                        d.copy_from_slice(&v.to_le_bytes());
                    }
                }
                if regression {
                    // RM0444 3.5.1: leaving level 1 for level 0 mass-erases the main flash.
                    cx.memory.store_mut(self.stores.main).fill(0xFF);
                    cx.shared.counters.flash_mass_erases += 1;
                }
                cx.shared.counters.option_programs += 1;
            }
        }
        self.sr &= !(SR_BSY1 | SR_CFGBSY | self.bsy_bits(2));
        // STRT and OPTSTRT clear when BSY1 clears (RM0444 3.7.5).
        self.cr &= !(CR_STRT | CR_OPTSTRT);
        if error != 0 {
            self.fail(error, cx);
            return;
        }
        // EOP is set only with EOPIE (RM0444 3.7.4).
        if self.cr & CR_EOPIE != 0 {
            self.sr |= SR_EOP;
        }
        self.update_irq(cx);
    }

    /// FLASH_CR.STRT set: page or mass erase (RM0444 3.3.6).
    fn start_erase(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        if self.sr & SR_PROG_ERRORS != 0 {
            return self.fail(SR_PGSERR, cx);
        }
        let mer2 = self.fc.mer2_bit.map_or(0, |b| 1u32 << b);
        let per = self.cr & CR_PER != 0;
        let mer1 = self.cr & CR_MER1 != 0;
        let mer2 = mer2 != 0 && self.cr & mer2 != 0;
        // "If MER1, MER2 and PER bits are reset and the STRT bit is set, the PGSERR bit in
        // FLASH_SR is set" (RM0444 3.7.5). Page erase together with mass erase or programming
        // is treated the same way (UNVERIFIED combination).
        if (!per && !mer1 && !mer2) || (per && (mer1 || mer2)) || self.cr & CR_PG != 0 {
            self.cr &= !CR_STRT;
            return self.fail(SR_PGSERR, cx);
        }
        if per {
            let pnb = (self.cr >> self.fc.pnb_shift) & ((1 << self.fc.pnb_width) - 1);
            let Some((first, len)) = self.page_range(pnb) else {
                self.cr &= !CR_STRT;
                // UNVERIFIED: a page number beyond the flash is reported as a sequence error.
                return self.fail(SR_PGSERR, cx);
            };
            if self.wrp_protects(cx.shared, first, len) {
                self.cr &= !CR_STRT;
                return self.fail(SR_WRPERR, cx);
            }
            let bank = self.bank_of(first);
            let t = self.t_page_erase;
            self.start(Op::PageErase { first, len }, bank, t, cx);
        } else {
            let half = self.main_size / self.banks.max(1);
            let (first, len, bank) = if self.banks <= 1 || (mer1 && mer2) {
                (self.main_base, self.main_size, if self.banks > 1 { 2 } else { 1 })
            } else if mer1 {
                (self.main_base, half, 1)
            } else {
                (self.main_base + half, half, 2)
            };
            // A mass erase does not run while a write-protected area lies in the erased range.
            if self.wrp_protects(cx.shared, first, len) {
                self.cr &= !CR_STRT;
                return self.fail(SR_WRPERR, cx);
            }
            let t = self.t_mass_erase;
            self.start(Op::MassErase { first, len }, bank, t, cx);
        }
    }

    /// FLASH_CR.OPTSTRT set: program the option registers into the option area (RM0444 3.4.2).
    fn start_options(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        if self.sr & SR_PROG_ERRORS != 0 {
            return self.fail(SR_PGSERR, cx);
        }
        if cx.shared.flash.rdp == RdpLevel::Level2 {
            // RM0444 3.5.1: at level 2 the option bytes can no longer be changed.
            self.cr &= !CR_OPTSTRT;
            return;
        }
        let rdp = self.ob.field("RDP").cloned();
        let comp = self.ob.complement_offset;
        let mut image = Vec::new();
        for w in &self.ob.words {
            let v = self.regs.get(&w.register).copied().unwrap_or(w.factory);
            image.push((w.offset, v));
            image.push((w.offset + comp, !v));
        }
        let regression = match (&rdp, self.ob.word("USER")) {
            (Some(f), Some(user)) => {
                let new = f.get(self.regs.get(&user.register).copied().unwrap_or(user.factory)) as u8;
                cx.shared.flash.rdp == RdpLevel::Level1 && new == self.ob.rdp_levels.level0
            }
            _ => false,
        };
        // UNVERIFIED duration: the option page is erased and reprogrammed; one page erase time.
        let t = self.t_page_erase;
        self.start(Op::Options { image, regression }, 1, t, cx);
    }

    /// Program path for a CPU write into main flash or OTP (RM0444 3.3.7).
    fn program_write(
        &mut self,
        addr: u32,
        size: Size,
        value: u32,
        store: StoreId,
        offset: usize,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        if self.op.is_some() {
            if cx.shared.quirks.flash_write_while_busy_stalls {
                // The bus stalls until the operation ends; modelled as completing it now.
                self.finish(cx);
            } else {
                self.fail(SR_PGSERR, cx);
                return Ok(());
            }
        }
        // RM0444 3.7.4 PGSERR: "write access to the flash memory ... while PG or FSTPG have not
        // been set previously".
        if self.cr & (CR_PG | CR_FSTPG) == 0 {
            self.fail(SR_PGSERR, cx);
            return Ok(());
        }
        if self.sr & SR_PROG_ERRORS != 0 {
            self.fail(SR_PGSERR, cx);
            return Ok(());
        }
        // SIZERR: "the size of the access is a byte or half-word during a program sequence".
        if size != Size::Word {
            self.fail(SR_SIZERR, cx);
            return Ok(());
        }
        match self.first_word.take() {
            None => {
                // The first word must start a double word (PGAERR: data "cannot be contained in
                // the same double word").
                if !addr.is_multiple_of(8) {
                    self.fail(SR_PGAERR, cx);
                    return Ok(());
                }
                self.first_word = Some((addr, value));
                self.sr |= SR_CFGBSY;
            }
            Some((a0, v0)) => {
                if addr != a0.wrapping_add(4) {
                    self.fail(SR_PGAERR, cx);
                    return Ok(());
                }
                let base = offset - 4;
                let in_main = a0 >= self.main_base && a0 < self.main_base + self.main_size;
                if in_main && self.wrp_protects(cx.shared, a0, 8) {
                    self.fail(SR_WRPERR, cx);
                    return Ok(());
                }
                let mut data = [0u8; 8];
                data[..4].copy_from_slice(&v0.to_le_bytes());
                data[4..].copy_from_slice(&value.to_le_bytes());
                let old = &cx.memory.store(store)[base..base + 8];
                let erased = old.iter().all(|b| *b == 0xFF);
                // PROGERR: the double word is not erased, "except if the data to write is
                // 0x0000 0000"; OTP double words can be written only once (RM0444 3.3.1).
                if !erased && (!in_main || data.iter().any(|b| *b != 0)) {
                    self.fail(SR_PROGERR, cx);
                    return Ok(());
                }
                let bank = if in_main { self.bank_of(a0) } else { 1 };
                let t = self.t_program;
                self.start(Op::Program { store, offset: base, data, addr: a0 }, bank, t, cx);
            }
        }
        Ok(())
    }

    /// Option byte loading (RM0444 3.4.2): registers from the option area, OPTVERR on a word
    /// whose complement does not match, and the empty check (RM0444 3.3.2).
    fn load_options(&mut self, event: LoadEvent, cx: &mut DeviceCx<'_, Shared>) {
        let comp = self.ob.complement_offset;
        let mut words = BTreeMap::new();
        let opts = cx.memory.store(self.stores.options).to_vec();
        let word_at = |off: u32| -> Option<u32> {
            opts.get(off as usize..off as usize + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0xFF; 4])))
        };
        let mut mismatch = false;
        for w in self.ob.words.clone() {
            let (v, c) = (word_at(w.offset), word_at(w.offset + comp));
            let value = match (v, c) {
                (Some(v), Some(c)) if v == !c => v,
                (Some(v), _) => {
                    mismatch = true;
                    self.mismatch_value(&w, v, cx.shared)
                }
                _ => w.factory,
            };
            self.regs.insert(w.register, value);
            words.insert(w.name.clone(), value);
        }
        if mismatch {
            self.sr |= SR_OPTVERR;
        }
        cx.shared.flash.loaded = self.regs.clone();
        cx.shared.flash.words = words;
        cx.shared.flash.rdp = self.rdp_of(&self.regs);
        if let Some((addr, at)) = &self.empty_check
            && at.contains(&event)
        {
            let off = (addr - self.main_base) as usize;
            let first = &cx.memory.store(self.stores.main)[off..off + 4];
            cx.shared.flash.empty = first == [0xFF; 4];
        }
    }

    fn mismatch_value(&self, w: &OptionWord, stored: u32, shared: &Shared) -> u32 {
        match (self.ob.field("RDP"), w.name.as_str()) {
            // UNVERIFIED (Quirks::option_mismatch_forces_rdp1): a corrupted user word loads as
            // RDP level 1 so that protection never weakens.
            (Some(f), "USER") if shared.quirks.option_mismatch_forces_rdp1 => f.set(stored, 0xFF),
            _ => stored,
        }
    }

    fn rdp_of(&self, regs: &BTreeMap<u32, u32>) -> RdpLevel {
        let (Some(f), Some(user)) = (self.ob.field("RDP"), self.ob.word("USER")) else { return RdpLevel::Level0 };
        let rdp = f.get(regs.get(&user.register).copied().unwrap_or(user.factory)) as u8;
        if rdp == self.ob.rdp_levels.level0 {
            RdpLevel::Level0
        } else if rdp == self.ob.rdp_levels.level2 {
            RdpLevel::Level2
        } else {
            RdpLevel::Level1
        }
    }

    fn key_write(
        state: KeyState,
        keys: [u32; 2],
        value: u32,
        relock_when_unlocked: bool,
    ) -> (KeyState, Result<(), BusFaultKind>) {
        const WRONG: BusFaultKind = BusFaultKind::Device("wrong key sequence: locked until the next reset");
        match state {
            KeyState::LockedUntilReset => (state, Err(WRONG)),
            KeyState::Locked if value == keys[0] => (KeyState::FirstKeySeen, Ok(())),
            KeyState::FirstKeySeen if value == keys[1] => (KeyState::Unlocked, Ok(())),
            KeyState::Unlocked if !relock_when_unlocked => (state, Ok(())),
            // RM0444 3.3.6: "Any wrong sequence locks up the FLASH_CR register until the next
            // system reset. In the case of a wrong key sequence, a bus error is detected and a
            // HardFault interrupt is generated."
            _ => (KeyState::LockedUntilReset, Err(WRONG)),
        }
    }

    fn write_cr(&mut self, value: u32, cx: &mut DeviceCx<'_, Shared>) {
        // FLASH_CR is write-protected while LOCK is set (RM0444 3.3.6).
        if self.key != KeyState::Unlocked {
            return;
        }
        // UNVERIFIED: writes while an operation is busy are ignored (CFGBSY, RM0444 3.7.4).
        if self.op.is_some() {
            return;
        }
        let opt_unlocked = self.optkey == KeyState::Unlocked;
        if value & CR_LOCK != 0 {
            self.key = KeyState::Locked;
            self.optkey = KeyState::Locked;
        }
        if value & CR_OPTLOCK != 0 {
            self.optkey = KeyState::Locked;
        }
        let mut mask = CR_PG
            | CR_PER
            | CR_MER1
            | (((1u32 << self.fc.pnb_width) - 1) << self.fc.pnb_shift)
            | CR_STRT
            | CR_FSTPG
            | CR_EOPIE
            | CR_ERRIE
            | CR_RDERRIE
            | CR_SEC_PROT;
        for b in [self.fc.mer2_bit, self.fc.bker_bit].into_iter().flatten() {
            mask |= 1 << b;
        }
        // OPTSTRT and OBL_LAUNCH cannot be written while OPTLOCK is set (RM0444 3.7.5).
        if opt_unlocked {
            mask |= CR_OPTSTRT | CR_OBL_LAUNCH;
        }
        let old = self.cr;
        self.cr = (self.cr & !mask) | (value & mask);
        if self.cr & CR_PG == 0 {
            self.first_word = None;
            self.sr &= !SR_CFGBSY;
        }
        if self.cr & CR_STRT != 0 && old & CR_STRT == 0 {
            self.start_erase(cx);
        }
        if self.cr & CR_OPTSTRT != 0 && old & CR_OPTSTRT == 0 {
            self.start_options(cx);
        }
        if self.cr & CR_OBL_LAUNCH != 0 {
            // RM0444 3.4.2: OBL_LAUNCH reloads the option bytes and resets the device.
            cx.request_reset(ResetCause::OptionByteLoad);
        }
        self.update_irq(cx);
    }

    fn count(&self, write: bool, initiator: Initiator, shared: &mut Shared) {
        let c = &mut shared.counters;
        match (write, initiator) {
            (false, Initiator::Cpu) => c.flash_reg_reads_cpu += 1,
            (true, Initiator::Cpu) => c.flash_reg_writes_cpu += 1,
            (false, Initiator::Debug) => c.flash_reg_reads_debug += 1,
            (true, Initiator::Debug) => c.flash_reg_writes_debug += 1,
        }
    }
}

impl Device<Shared> for Flash {
    fn name(&self) -> &str {
        "FLASH"
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        initiator: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        self.count(false, initiator, cx.shared);
        let reg = offset & !3;
        let v = match reg {
            ACR => self.acr_value(cx.shared),
            KEYR | OPTKEYR | ECCR => 0,
            SR => self.sr,
            CR => self.cr_value(),
            r => self.regs.get(&r).copied().unwrap_or(0),
        };
        Ok(read_lane(v, offset, size))
    }

    fn write(
        &mut self,
        offset: u32,
        size: Size,
        value: u32,
        initiator: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        self.count(true, initiator, cx.shared);
        let reg = offset & !3;
        match reg {
            ACR => {
                let v = merge_lane(self.acr | ((cx.shared.flash.empty as u32) << 16), offset, size, value);
                self.acr = (self.acr & !ACR_STORED) | (v & ACR_STORED);
                // EMPTY is writable by software (RM0444 3.3.2); DBG_SWEN gates the debugger.
                cx.shared.flash.empty = v & ACR_EMPTY != 0;
                cx.shared.flash.dbg_swen = v & ACR_DBG_SWEN != 0;
            }
            KEYR => {
                // A partial-width key write cannot match a key: it is a wrong sequence.
                let v = if size == Size::Word { value } else { 0 };
                let (s, r) =
                    Self::key_write(self.key, self.fc.keys, v, cx.shared.quirks.keyr_write_when_unlocked_locks);
                self.key = s;
                if s == KeyState::LockedUntilReset {
                    self.optkey = KeyState::LockedUntilReset;
                }
                return r;
            }
            OPTKEYR => {
                // UNVERIFIED: OPTKEYR writes while FLASH_CR is locked are ignored (OPTLOCK can
                // only be cleared once LOCK is, RM0444 3.4.2).
                if self.key != KeyState::Unlocked {
                    return Ok(());
                }
                let v = if size == Size::Word { value } else { 0 };
                let (s, r) = Self::key_write(self.optkey, self.fc.option_keys, v, false);
                self.optkey = s;
                return r;
            }
            SR => {
                let v = merge_lane(0, offset, size, value);
                self.sr &= !(v & SR_W1C);
                self.update_irq(cx);
            }
            CR => {
                let v = merge_lane(self.cr_value(), offset, size, value);
                self.write_cr(v, cx);
            }
            ECCR => {}
            // Option registers: writable once OPTLOCK is cleared (RM0444 3.4.2).
            r if self.regs.contains_key(&r)
                && self.key == KeyState::Unlocked
                && self.optkey == KeyState::Unlocked
                && self.op.is_none() =>
            {
                let old = self.regs[&r];
                self.regs.insert(r, merge_lane(old, offset, size, value));
            }
            _ => {}
        }
        Ok(())
    }

    fn store_write(
        &mut self,
        addr: u32,
        size: Size,
        value: u32,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        if addr >= self.main_base && addr < self.main_base + self.main_size {
            let off = (addr - self.main_base) as usize;
            return self.program_write(addr, size, value, self.stores.main, off, cx);
        }
        if let (Some((base, len)), Some(store)) = (self.otp, self.stores.otp)
            && addr >= base
            && addr < base + len
        {
            return self.program_write(addr, size, value, store, (addr - base) as usize, cx);
        }
        if addr >= self.opt_base && addr < self.opt_base + 0x100 {
            // The option area is programmed only through the option registers and OPTSTRT.
            return Err(BusFaultKind::Device("option bytes are written through FLASH_OPTR and OPTSTRT"));
        }
        Err(BusFaultKind::ReadOnly)
    }

    fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, Shared>) {
        if tag == TAG_DONE {
            self.finish(cx);
        }
    }

    fn reset(&mut self, cause: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        // An operation cut by reset leaves the cells as they were (the model writes at the end).
        self.op = None;
        self.first_word = None;
        self.key = KeyState::Locked;
        self.optkey = KeyState::Locked;
        self.cr = CR_LOCK | CR_OPTLOCK;
        self.sr = 0;
        self.acr = ACR_RESET;
        match cause {
            ResetCause::PowerOn => {
                cx.shared.flash.dbg_swen = true;
                self.load_options(LoadEvent::PowerOn, cx);
            }
            ResetCause::OptionByteLoad => self.load_options(LoadEvent::OptionByteLoad, cx),
            _ => {
                // Registers return to the values of the last option byte loading; EMPTY keeps
                // its latched (or software-written) value (KB-empty: a plain reset does not
                // re-evaluate it).
                self.regs = cx.shared.flash.loaded.clone();
            }
        }
        cx.set_irq(self.irq, false);
    }
}
