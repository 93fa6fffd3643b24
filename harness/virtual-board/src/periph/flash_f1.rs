//! FLASH: the flash program / erase controller (FPEC) of the STM32F1 (RM0008 3.3, PM0075).
//! Selected by `version: flash-f1` in the chip data.
//!
//! Modelled: FLASH_ACR (LATENCY, HLFCYA, PRFTBE stored; PRFTBS follows PRFTBE; PM0075 3.1),
//! KEYR unlock (KEY1 then KEY2; a wrong sequence locks the FPEC until the next reset with a bus
//! error, PM0075 2.3.1), OPTKEYR (the same keys set CR.OPTWRE, PM0075 2.3.1), FLASH_SR (BSY, PGERR,
//! WRPRTERR, EOP; EOP and the errors cleared by writing 1, PM0075 3.4), FLASH_CR (PG, PER, MER,
//! OPTPG, OPTER, STRT, LOCK, OPTWRE, ERRIE, EOPIE; PM0075 3.5), FLASH_AR (PM0075 3.6),
//! half-word programming with its checks (PM0075 2.3.3: PGERR when the half word is not erased
//! unless 0x0000 is written, WRPRTERR on a protected page), page erase (PER + AR + STRT) and mass
//! erase (MER + STRT) with 1 KiB pages (PM0075 2.3.4), the option bytes at 0x1FFFF800 as byte /
//! complement pairs (RDP, USER, Data0, Data1, WRP0..3; PM0075 2.5) erased with OPTER and
//! programmed a half word at a time with OPTPG (the complement byte made by the controller),
//! option loading at every reset into FLASH_OBR (OPTERR, RDPRT, WDG_SW, nRST_STOP, nRST_STDBY,
//! Data0, Data1) and FLASH_WRPR (PM0075 3.7, 3.8), readout protection (RDP = 0xA5: unprotected,
//! any other value protected; RM0008 / PM0075 2.4.1) with the mass erase an option erase causes
//! while protected (PM0075 2.4.1 "unprotection"), and the FLASH interrupt (EOP with EOPIE, errors
//! with ERRIE; RM0008 10.1.2 IRQ 4).
//!
//! Not modelled: the automatic write protection of pages 0-3 while read protected, bus stalls of
//! flash reads during an operation, the prefetch buffer.

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, StoreId, VirtualDuration};

use super::{merge_lane, read_lane};
use crate::config::FlashSpeed;
use crate::periph::flash::KeyState;
use crate::shared::{RdpLevel, Shared};
use hil_chips::Chip;

pub const ACR: u32 = 0x00;
pub const KEYR: u32 = 0x04;
pub const OPTKEYR: u32 = 0x08;
pub const SR: u32 = 0x0C;
pub const CR: u32 = 0x10;
pub const AR: u32 = 0x14;
pub const OBR: u32 = 0x1C;
pub const WRPR: u32 = 0x20;

// FLASH_SR (PM0075 3.4).
pub const SR_BSY: u32 = 1 << 0;
pub const SR_PGERR: u32 = 1 << 2;
pub const SR_WRPRTERR: u32 = 1 << 4;
pub const SR_EOP: u32 = 1 << 5;
const SR_W1C: u32 = SR_PGERR | SR_WRPRTERR | SR_EOP;

// FLASH_CR (PM0075 3.5).
pub const CR_PG: u32 = 1 << 0;
pub const CR_PER: u32 = 1 << 1;
pub const CR_MER: u32 = 1 << 2;
pub const CR_OPTPG: u32 = 1 << 4;
pub const CR_OPTER: u32 = 1 << 5;
pub const CR_STRT: u32 = 1 << 6;
pub const CR_LOCK: u32 = 1 << 7;
pub const CR_OPTWRE: u32 = 1 << 9;
pub const CR_ERRIE: u32 = 1 << 10;
pub const CR_EOPIE: u32 = 1 << 12;
const CR_STORED: u32 = CR_PG | CR_PER | CR_MER | CR_OPTPG | CR_OPTER | CR_ERRIE | CR_EOPIE;

// FLASH_OBR (PM0075 3.7).
pub const OBR_OPTERR: u32 = 1 << 0;
pub const OBR_RDPRT: u32 = 1 << 1;

/// RDP byte of an unprotected part (PM0075 2.4.1 / 2.5: RDP = 0xA5).
pub const RDP_KEY: u8 = 0xA5;
/// Option bytes as shipped (PM0075 2.5): RDP = 0xA5, every other byte 0xFF, complements beside.
pub const FACTORY_OPTIONS: [u8; 16] =
    [0xA5, 0x5A, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00];
/// Names of the eight option bytes, in address order.
const OPTION_NAMES: [&str; 8] = ["RDP", "USER", "DATA0", "DATA1", "WRP0", "WRP1", "WRP2", "WRP3"];

const TAG_DONE: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Program { store: StoreId, offset: usize, value: u16, addr: u32 },
    PageErase { offset: usize },
    MassErase,
    OptionErase { with_main: bool },
}

/// The F1 flash controller.
pub struct FlashF1 {
    keys: [u32; 2],
    main: StoreId,
    options: StoreId,
    main_base: u32,
    main_size: u32,
    page_size: u32,
    opt_base: u32,
    irq: u32,
    t_program: VirtualDuration,
    t_page_erase: VirtualDuration,
    t_mass_erase: VirtualDuration,
    acr: u32,
    key: KeyState,
    optkey: KeyState,
    sr: u32,
    cr: u32,
    ar: u32,
    obr: u32,
    wrpr: u32,
    op: Option<Op>,
}

impl FlashF1 {
    pub fn new(chip: &Chip, main: StoreId, options: StoreId, speed: FlashSpeed) -> Option<FlashF1> {
        let fc = chip.flash_controller.as_ref()?;
        let t = chip.flash_timing.as_ref()?;
        let pick = |f: hil_chips::TimingFigure| match speed {
            FlashSpeed::Typical => f.typ,
            FlashSpeed::Maximum => f.max,
        };
        Some(FlashF1 {
            keys: fc.keys,
            main,
            options,
            main_base: chip.memory.flash.base,
            main_size: chip.memory.flash.size,
            page_size: chip.memory.flash.page_size,
            opt_base: chip.memory.option_bytes.base,
            irq: fc.irq,
            t_program: VirtualDuration::from_us(pick(t.program_double_word_us) as u64),
            t_page_erase: VirtualDuration::from_us(pick(t.page_erase_us) as u64),
            t_mass_erase: VirtualDuration::from_us(pick(t.mass_erase_us) as u64),
            acr: 0x30,
            key: KeyState::Locked,
            optkey: KeyState::Locked,
            sr: 0,
            cr: CR_LOCK,
            ar: 0,
            obr: 0x03FF_FFFC,
            wrpr: 0xFFFF_FFFF,
            op: None,
        })
    }

    pub fn sr(&self) -> u32 {
        self.sr
    }
    pub fn cr(&self) -> u32 {
        self.cr_value()
    }
    pub fn acr(&self) -> u32 {
        self.acr
    }
    pub fn obr(&self) -> u32 {
        self.obr
    }
    pub fn wrpr(&self) -> u32 {
        self.wrpr
    }
    pub fn key_state(&self) -> KeyState {
        self.key
    }
    pub fn busy(&self) -> bool {
        self.op.is_some()
    }

    fn cr_value(&self) -> u32 {
        let mut v = self.cr & !(CR_LOCK | CR_OPTWRE | CR_STRT);
        if self.key != KeyState::Unlocked {
            v |= CR_LOCK;
        }
        if self.optkey == KeyState::Unlocked {
            v |= CR_OPTWRE;
        }
        if self.op.as_ref().is_some_and(|o| !matches!(o, Op::Program { .. })) {
            v |= CR_STRT;
        }
        v
    }

    /// Whether the page holding `addr` is write protected: WRPR bit n = 0 protects pages
    /// 4n..4n+3 on medium-density parts (PM0075 2.4.2 / 3.8).
    fn protected(&self, addr: u32) -> bool {
        let page = (addr - self.main_base) / self.page_size;
        let pages_per_bit = 4;
        let bit = (page / pages_per_bit).min(31);
        self.wrpr & (1 << bit) == 0
    }

    fn update_irq(&self, cx: &mut DeviceCx<'_, Shared>) {
        let high = (self.cr & CR_EOPIE != 0 && self.sr & SR_EOP != 0)
            || (self.cr & CR_ERRIE != 0 && self.sr & (SR_PGERR | SR_WRPRTERR) != 0);
        cx.set_irq(self.irq, high);
    }

    fn fail(&mut self, error: u32, cx: &mut DeviceCx<'_, Shared>) {
        self.sr |= error;
        self.update_irq(cx);
    }

    fn start(&mut self, op: Op, t: VirtualDuration, cx: &mut DeviceCx<'_, Shared>) {
        self.op = Some(op);
        self.sr |= SR_BSY;
        cx.schedule_in(t, TAG_DONE);
    }

    fn finish(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let Some(op) = self.op.take() else { return };
        cx.cancel(TAG_DONE);
        self.sr &= !SR_BSY;
        match op {
            Op::Program { store, offset, value, addr } => {
                if cx.shared.faults.program_browns_out() {
                    // Injected brown-out mid-write: UNVERIFIED model - the cells keep their old
                    // content, then the power-on reset.
                    cx.shared.counters.flash_brownouts += 1;
                    cx.request_reset(ResetCause::PowerOn);
                    return;
                }
                if cx.shared.faults.program_fails(addr) {
                    self.fail(SR_PGERR, cx);
                    return;
                }
                cx.memory.store_mut(store)[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
                if store == self.options {
                    cx.shared.counters.option_programs += 1;
                } else {
                    cx.shared.counters.flash_programs += 1;
                }
            }
            Op::PageErase { offset } => {
                let n = self.page_size as usize;
                cx.memory.store_mut(self.main)[offset..offset + n].fill(0xFF);
                cx.shared.counters.flash_page_erases += 1;
            }
            Op::MassErase => {
                let n = self.main_size as usize;
                cx.memory.store_mut(self.main)[..n].fill(0xFF);
                cx.shared.counters.flash_mass_erases += 1;
            }
            Op::OptionErase { with_main } => {
                cx.memory.store_mut(self.options)[..16].fill(0xFF);
                if with_main {
                    // Removing read protection erases the main flash first (PM0075 2.4.1).
                    let n = self.main_size as usize;
                    cx.memory.store_mut(self.main)[..n].fill(0xFF);
                    cx.shared.counters.flash_mass_erases += 1;
                }
            }
        }
        // EOP: "set by hardware when a Flash operation (programming / erase) is completed"
        // (PM0075 3.4).
        self.sr |= SR_EOP;
        self.update_irq(cx);
    }

    /// CR.STRT: page, mass or option erase (PM0075 2.3.4, 2.5.1).
    fn start_erase(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        if self.cr & CR_PER != 0 {
            let a = self.ar;
            if a < self.main_base || a >= self.main_base + self.main_size {
                // UNVERIFIED: an address outside main flash erases nothing and raises no flag.
                self.sr |= SR_EOP;
                self.update_irq(cx);
                return;
            }
            if self.protected(a) {
                self.fail(SR_WRPRTERR, cx);
                return;
            }
            let page = (a - self.main_base) / self.page_size;
            let t = self.t_page_erase;
            self.start(Op::PageErase { offset: (page * self.page_size) as usize }, t, cx);
        } else if self.cr & CR_MER != 0 {
            let t = self.t_mass_erase;
            self.start(Op::MassErase, t, cx);
        } else if self.cr & CR_OPTER != 0 {
            if self.optkey != KeyState::Unlocked {
                return;
            }
            let with_main = cx.shared.flash.rdp != RdpLevel::Level0;
            let t = if with_main { self.t_mass_erase + self.t_page_erase } else { self.t_page_erase };
            self.start(Op::OptionErase { with_main }, t, cx);
        }
    }

    /// A half-word store into main flash (PG) or the option area (OPTPG).
    fn program_write(
        &mut self,
        addr: u32,
        size: Size,
        value: u32,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        let in_main = addr >= self.main_base && addr < self.main_base + self.main_size;
        let (store, offset, bit) = if in_main {
            (self.main, (addr - self.main_base) as usize, CR_PG)
        } else if addr >= self.opt_base && addr < self.opt_base + 16 {
            (self.options, (addr - self.opt_base) as usize, CR_OPTPG)
        } else {
            return Err(BusFaultKind::ReadOnly);
        };
        if self.op.is_some() {
            // The bus stalls until the operation in flight ends (PM0075 2.3.3 "a read / write
            // while BSY stalls the bus"), modelled as completing it now.
            self.finish(cx);
        }
        if self.cr & bit == 0 || (bit == CR_OPTPG && self.optkey != KeyState::Unlocked) {
            // UNVERIFIED: a store without PG / OPTPG is ignored (PM0075 does not say).
            return Ok(());
        }
        // The FPEC programs half words (PM0075 2.3.3). UNVERIFIED: other sizes raise PGERR.
        if size != Size::Half || !addr.is_multiple_of(2) {
            self.fail(SR_PGERR, cx);
            return Ok(());
        }
        let value = if bit == CR_OPTPG {
            // The controller writes the complement byte itself (PM0075 2.5.2).
            let b = value as u8;
            u16::from(b) | (u16::from(!b) << 8)
        } else {
            value as u16
        };
        if in_main && self.protected(addr) {
            self.fail(SR_WRPRTERR, cx);
            return Ok(());
        }
        let old = u16::from_le_bytes([cx.memory.store(store)[offset], cx.memory.store(store)[offset + 1]]);
        // PGERR: the half word is not erased, unless 0x0000 is written (PM0075 2.3.3).
        if old != 0xFFFF && !(in_main && value == 0) {
            self.fail(SR_PGERR, cx);
            return Ok(());
        }
        let t = self.t_program;
        self.start(Op::Program { store, offset, value, addr }, t, cx);
        Ok(())
    }

    /// Option byte loading at reset (PM0075 2.5, 3.7, 3.8): each byte checked against its
    /// complement; a mismatch sets OPTERR and loads the byte as 0xFF.
    fn load_options(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let raw: Vec<u8> = cx.memory.store(self.options)[..16].to_vec();
        let mut bytes = [0xFFu8; 8];
        let mut opterr = false;
        for (i, b) in bytes.iter_mut().enumerate() {
            let (v, c) = (raw[2 * i], raw[2 * i + 1]);
            if v == !c {
                *b = v;
            } else {
                opterr = true;
            }
        }
        let [rdp, user, d0, d1, w0, w1, w2, w3] = bytes;
        let rdprt = rdp != RDP_KEY;
        self.obr = (opterr as u32)
            | ((rdprt as u32) << 1)
            | ((u32::from(user) & 0xFF) << 2)
            | (u32::from(d0) << 10)
            | (u32::from(d1) << 18);
        self.wrpr = u32::from_le_bytes([w0, w1, w2, w3]);
        let f = &mut cx.shared.flash;
        f.rdp = if rdprt { RdpLevel::Level1 } else { RdpLevel::Level0 };
        f.loaded = [(OBR, self.obr), (WRPR, self.wrpr)].into_iter().collect();
        f.words = OPTION_NAMES.iter().zip(bytes).map(|(n, b)| (n.to_string(), u32::from(b))).collect();
        f.empty = false;
    }

    fn key_write(&mut self, value: u32, size: Size) -> Result<(), BusFaultKind> {
        const WRONG: BusFaultKind = BusFaultKind::Device("wrong FLASH key sequence: the FPEC is locked until reset");
        let v = if size == Size::Word { value } else { 0 };
        // PM0075 2.3.1: KEY1 then KEY2 unlock FLASH_CR; "any wrong sequence locks up the FPEC
        // and FLASH_CR until the next reset".
        self.key = match self.key {
            KeyState::Locked if v == self.keys[0] => KeyState::FirstKeySeen,
            KeyState::FirstKeySeen if v == self.keys[1] => KeyState::Unlocked,
            // UNVERIFIED: a key write while unlocked is ignored.
            KeyState::Unlocked => KeyState::Unlocked,
            _ => {
                self.key = KeyState::LockedUntilReset;
                self.optkey = KeyState::LockedUntilReset;
                return Err(WRONG);
            }
        };
        Ok(())
    }

    fn optkey_write(&mut self, value: u32) {
        // PM0075 2.5: the OPTKEYR sequence (same keys) sets OPTWRE; needs FLASH_CR unlocked.
        // UNVERIFIED: a wrong option key just restarts the sequence.
        if self.key != KeyState::Unlocked {
            return;
        }
        self.optkey = match self.optkey {
            KeyState::Unlocked => KeyState::Unlocked,
            KeyState::FirstKeySeen if value == self.keys[1] => KeyState::Unlocked,
            _ if value == self.keys[0] => KeyState::FirstKeySeen,
            _ => KeyState::Locked,
        };
    }

    fn write_cr(&mut self, value: u32, cx: &mut DeviceCx<'_, Shared>) {
        if self.key != KeyState::Unlocked {
            return;
        }
        if value & CR_LOCK != 0 {
            self.key = KeyState::Locked;
            self.optkey = KeyState::Locked;
        }
        // OPTWRE is cleared by writing 0 (PM0075 3.5).
        if value & CR_OPTWRE == 0 && self.optkey == KeyState::Unlocked {
            self.optkey = KeyState::Locked;
        }
        self.cr = (self.cr & !CR_STORED) | (value & CR_STORED);
        if value & CR_STRT != 0 && self.op.is_none() && self.key == KeyState::Unlocked {
            self.start_erase(cx);
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

impl Device<Shared> for FlashF1 {
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
        let v = match offset & !3 {
            // PRFTBS (bit 5) follows PRFTBE (bit 4).
            ACR => (self.acr & !0x20) | ((self.acr & 0x10) << 1),
            SR => self.sr,
            CR => self.cr_value(),
            AR => self.ar,
            OBR => self.obr,
            WRPR => self.wrpr,
            _ => 0,
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
        match offset & !3 {
            ACR => self.acr = merge_lane(self.acr, offset, size, value) & 0x1F,
            KEYR => return self.key_write(value, size),
            OPTKEYR => self.optkey_write(if size == Size::Word { value } else { 0 }),
            SR => {
                let v = merge_lane(0, offset, size, value);
                self.sr &= !(v & SR_W1C);
                self.update_irq(cx);
            }
            CR => {
                let v = merge_lane(self.cr_value(), offset, size, value);
                self.write_cr(v, cx);
            }
            // FLASH_AR is written by software only while unlocked and idle (PM0075 3.6).
            AR if self.key == KeyState::Unlocked && self.op.is_none() => {
                self.ar = merge_lane(self.ar, offset, size, value)
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
        self.program_write(addr, size, value, cx)
    }

    fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, Shared>) {
        if tag == TAG_DONE {
            self.finish(cx);
        }
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        // An operation cut by reset leaves the cells as they were (written at the end).
        self.op = None;
        self.key = KeyState::Locked;
        self.optkey = KeyState::Locked;
        self.cr = CR_LOCK;
        self.sr = 0;
        self.ar = 0;
        self.acr = 0x30;
        // The option bytes are loaded at every reset (PM0075 2.5: "loaded ... after reset").
        self.load_options(cx);
        cx.set_irq(self.irq, false);
    }
}

/// The factory option area image of an F1 part (`size` bytes, the rest 0xFF).
pub fn factory_image(size: u32) -> Vec<u8> {
    let mut img = vec![0xFF; size as usize];
    let n = img.len().min(16);
    img[..n].copy_from_slice(&FACTORY_OPTIONS[..n]);
    img
}
