//! A small test board for the core: flash at 0x08000000 (aliased at 0), SRAM at 0x20000000 and a
//! test device at 0x40000000 through which programs report progress, raise interrupts and exit.
#![allow(dead_code)]

use hil_cortex_m::{
    Bus, BusFaultKind, Cpu, CpuConfig, Device, DeviceCx, DeviceId, Initiator, ResetCause, Size, Stop, StoreId, System,
    VirtualDuration, WritePolicy,
};

pub const FLASH: u32 = 0x0800_0000;
pub const FLASH_LEN: u32 = 128 * 1024;
pub const SRAM: u32 = 0x2000_0000;
pub const SRAM_LEN: u32 = 36 * 1024;
pub const TESTDEV: u32 = 0x4000_0000;
pub const CORE_HZ: u32 = 64_000_000;

/// Test device registers (offsets from TESTDEV).
pub mod reg {
    /// W: append to the log. R: number of log entries.
    pub const LOG: u32 = 0x00;
    /// W: the program is done, with this exit code.
    pub const EXIT: u32 = 0x04;
    /// W: drive the IRQ lines in the mask high / low.
    pub const IRQ_SET: u32 = 0x08;
    pub const IRQ_CLR: u32 = 0x0C;
    /// W: pulse the IRQ lines in the mask.
    pub const IRQ_PULSE: u32 = 0x10;
    /// W: raise line TIMER_IRQ this many nanoseconds from now (a scheduler event).
    pub const TIMER_NS: u32 = 0x14;
    pub const TIMER_IRQ: u32 = 0x18;
    /// W: signal an event (wakes WFE).
    pub const EVENT: u32 = 0x1C;
    /// W: request a watchdog reset.
    pub const RESET: u32 = 0x20;
}

#[derive(Default)]
pub struct TestDev {
    pub log: Vec<u32>,
    pub exit: Option<u32>,
    /// Virtual time of the EXIT write.
    pub exit_at: Option<hil_cortex_m::VirtualTime>,
    timer_irq: u32,
    /// Virtual time at which each timer event fired.
    pub fired_at: Vec<hil_cortex_m::VirtualTime>,
}

impl Device<()> for TestDev {
    fn name(&self) -> &str {
        "TESTDEV"
    }
    fn read(&mut self, offset: u32, _: Size, _: Initiator, _: &mut DeviceCx<'_, ()>) -> Result<u32, BusFaultKind> {
        match offset {
            reg::LOG => Ok(self.log.len() as u32),
            _ => Err(BusFaultKind::Device("TESTDEV: no such register")),
        }
    }
    fn write(
        &mut self,
        offset: u32,
        size: Size,
        value: u32,
        _: Initiator,
        cx: &mut DeviceCx<'_, ()>,
    ) -> Result<(), BusFaultKind> {
        if size != Size::Word {
            return Err(BusFaultKind::Device("TESTDEV: word access only"));
        }
        match offset {
            reg::LOG => self.log.push(value),
            reg::EXIT => {
                self.exit = Some(value);
                self.exit_at = Some(cx.now);
            }
            reg::IRQ_SET | reg::IRQ_CLR | reg::IRQ_PULSE => {
                for irq in 0..32 {
                    if value & (1 << irq) != 0 {
                        match offset {
                            reg::IRQ_SET => cx.set_irq(irq, true),
                            reg::IRQ_CLR => cx.set_irq(irq, false),
                            _ => cx.pulse_irq(irq),
                        }
                    }
                }
            }
            reg::TIMER_NS => cx.schedule_in(VirtualDuration::from_ns(value as u64), 1),
            reg::TIMER_IRQ => self.timer_irq = value,
            reg::EVENT => cx.signal_event(),
            reg::RESET => cx.request_reset(ResetCause::IndependentWatchdog),
            _ => return Err(BusFaultKind::Device("TESTDEV: no such register")),
        }
        Ok(())
    }
    fn event(&mut self, _tag: u32, cx: &mut DeviceCx<'_, ()>) {
        self.fired_at.push(cx.now);
        cx.pulse_irq(self.timer_irq);
    }
    fn reset(&mut self, _: ResetCause, _: &mut DeviceCx<'_, ()>) {
        self.timer_irq = 0;
    }
}

pub struct Board {
    pub cpu: Cpu,
    pub sys: System<()>,
    pub flash: StoreId,
    pub sram: StoreId,
    pub dev: DeviceId,
}

impl Board {
    pub fn new() -> Self {
        Self::with_config(CpuConfig::cortex_m0plus(32))
    }

    pub fn with_config(cfg: CpuConfig) -> Self {
        let mut sys = System::new((), CORE_HZ);
        let flash = sys.memory.add_store("flash", FLASH_LEN as usize, 0xFF);
        let sram = sys.memory.add_store("sram", SRAM_LEN as usize, 0);
        sys.memory.map_store("flash", FLASH, FLASH_LEN, flash, 0, WritePolicy::Fault, true).unwrap();
        sys.memory.map_store("boot alias", 0, FLASH_LEN, flash, 0, WritePolicy::Fault, true).unwrap();
        sys.memory.map_store("sram", SRAM, SRAM_LEN, sram, 0, WritePolicy::Direct, true).unwrap();
        let dev = sys.add_device(Box::new(TestDev::default()));
        sys.memory.map_device("TESTDEV", TESTDEV, 0x400, dev).unwrap();
        Board { cpu: Cpu::new(cfg), sys, flash, sram, dev }
    }

    /// Put `code` (halfwords) in flash at FLASH + 0x100 behind a vector table whose SP is the top
    /// of SRAM and whose handlers all point at `handler` (an offset into `code`, in halfwords)
    /// or, for the reset vector, at the start of `code`.
    pub fn load_program(&mut self, code: &[u16], handler_hw: Option<usize>) {
        let code_base = FLASH + 0x100;
        let mut image = vec![0u8; 0x100];
        let put = |img: &mut Vec<u8>, off: usize, v: u32| img[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut image, 0, SRAM + SRAM_LEN);
        put(&mut image, 4, code_base | 1);
        if let Some(h) = handler_hw {
            for v in 2..48 {
                put(&mut image, 4 * v, (code_base + 2 * h as u32) | 1);
            }
        }
        for hw in code {
            image.extend_from_slice(&hw.to_le_bytes());
        }
        self.load_flash(0, &image);
    }

    /// Put `code` at FLASH + 0x100 (the reset vector points at its start) with the given vectors
    /// (exception number, halfword index into `code`); the others are zero.
    pub fn load(&mut self, code: &[u16], vectors: &[(u32, usize)]) {
        let code_base = FLASH + 0x100;
        let mut image = vec![0u8; 0x100];
        image[0..4].copy_from_slice(&(SRAM + SRAM_LEN).to_le_bytes());
        image[4..8].copy_from_slice(&(code_base | 1).to_le_bytes());
        for &(exc, at) in vectors {
            let v = (code_base + 2 * at as u32) | 1;
            image[4 * exc as usize..4 * exc as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        for hw in code {
            image.extend_from_slice(&hw.to_le_bytes());
        }
        self.load_flash(0, &image);
    }

    /// Address of halfword `at` of the code placed by [`Board::load`].
    pub fn addr(at: usize) -> u32 {
        FLASH + 0x100 + 2 * at as u32
    }

    pub fn load_flash(&mut self, offset: usize, bytes: &[u8]) {
        self.sys.memory.store_mut(self.flash)[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// Load an ELF's PT_LOAD segments at their load (physical) addresses, as a flasher does.
    pub fn load_elf(&mut self, elf: &[u8]) {
        use object::read::elf::{ElfFile32, ProgramHeader};
        // The object crate reads headers in place: give it a heap copy (8-byte aligned) rather
        // than include_bytes! data of arbitrary alignment.
        let elf_copy: Vec<u8> = elf.to_vec();
        let elf = elf_copy.as_slice();
        let file = ElfFile32::<object::Endianness>::parse(elf).expect("parse ELF");
        let endian = file.endian();
        for ph in file.elf_program_headers() {
            if ph.p_type(endian) != object::elf::PT_LOAD {
                continue;
            }
            let data = ph.data(endian, elf).expect("segment data");
            if data.is_empty() {
                continue;
            }
            let lma = ph.p_paddr(endian);
            self.sys.memory.poke(lma, data).unwrap_or_else(|e| panic!("loading segment at {lma:#x}: {e}"));
        }
    }

    pub fn reset(&mut self) {
        self.cpu.power_on_reset(&mut self.sys);
    }

    pub fn dev(&self) -> &TestDev {
        self.sys.device::<TestDev>(self.dev).unwrap()
    }

    /// Core cycle at which the program wrote EXIT.
    pub fn exit_cycle(&self) -> Option<u64> {
        self.dev().exit_at.map(|t| self.sys.clock().cycle_at(t))
    }

    pub fn dev_mut(&mut self) -> &mut TestDev {
        self.sys.device_mut::<TestDev>(self.dev).unwrap()
    }

    /// What a board loop does: run, dispatch due events, perform resets, until the program exits
    /// through the test device or `max_cycles` pass. Returns the exit code and every Stop seen
    /// that was not Budget/Sleeping.
    pub fn run_to_exit(&mut self, max_cycles: u64) -> (Option<u32>, Vec<Stop>) {
        let mut stops = Vec::new();
        while self.cpu.cycles() < max_cycles {
            if self.dev().exit.is_some() {
                break;
            }
            let until = (self.cpu.cycles() + 100_000).min(max_cycles);
            let stop = self.cpu.run(&mut self.sys, until);
            self.sys.dispatch_due_events(self.cpu.cycles());
            match stop {
                Stop::Budget | Stop::Sleeping => {}
                Stop::ResetRequested(cause) => {
                    stops.push(stop);
                    let c = self.cpu.cycles();
                    self.sys.reset_devices(cause, c);
                    self.cpu.system_reset(&mut self.sys);
                }
                other => {
                    stops.push(other);
                    break;
                }
            }
        }
        (self.dev().exit, stops)
    }

    pub fn read32(&mut self, addr: u32) -> u32 {
        self.cpu.debug_read(&mut self.sys, addr, Size::Word).unwrap()
    }

    pub fn write32(&mut self, addr: u32, v: u32) {
        self.cpu.debug_write(&mut self.sys, addr, Size::Word, v).unwrap()
    }
}

/// Run the bus through Bus explicitly so generic code paths are exercised in tests.
pub fn bus_read<B: Bus>(bus: &mut B, addr: u32) -> u32 {
    bus.read(addr, Size::Word, Initiator::Debug, 0).unwrap()
}

/// A tiny Thumb assembler for directed tests: instructions by name, labels for branches, and a
/// literal pool for 32-bit constants (`ldr rt, =value`).
#[derive(Default)]
pub struct Asm {
    pub code: Vec<u16>,
    /// (index of the LDR literal, constant)
    lits: Vec<(usize, u32)>,
}

/// 32-bit Thumb-2 encodings for the ARMv7-M programs (DDI0403E A7.7, encoding T1/T2 per
/// instruction).
impl Asm {
    pub fn w(&mut self, h1: u32, h2: u32) -> &mut Self {
        self.hw(h1 as u16).hw(h2 as u16)
    }
    /// MOVW/MOVT pair (A7.7.76, A7.7.79).
    pub fn mov32(&mut self, rd: u32, v: u32) -> &mut Self {
        let enc = |v: u32| ((v >> 12) & 0xF | (v >> 11 & 1) << 10, (v >> 8 & 7) << 12 | rd << 8 | v & 0xFF);
        let (a, b) = enc(v & 0xFFFF);
        self.w(0xF240 | a, b);
        let (a, b) = enc(v >> 16);
        self.w(0xF2C0 | a, b)
    }
    /// MSR <spec_reg>, Rn (A7.7.83; mask 0b10 for the APSR).
    pub fn msr(&mut self, sysm: u32, rn: u32) -> &mut Self {
        self.w(0xF380 | rn, 0x8800 | sysm)
    }
    /// MRS Rd, <spec_reg> (A7.7.82).
    pub fn mrs(&mut self, rd: u32, sysm: u32) -> &mut Self {
        self.w(0xF3EF, 0x8000 | rd << 8 | sysm)
    }
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }
    /// Halfword index of the next instruction.
    pub fn here(&self) -> usize {
        self.code.len()
    }
    pub fn hw(&mut self, h: u16) -> &mut Self {
        self.code.push(h);
        self
    }
    pub fn ldr_const(&mut self, rt: u16, value: u32) -> &mut Self {
        self.lits.push((self.code.len(), value));
        self.hw(0x4800 | rt << 8)
    }
    pub fn movs(&mut self, rd: u16, imm: u16) -> &mut Self {
        self.hw(0x2000 | rd << 8 | imm)
    }
    pub fn adds(&mut self, rd: u16, imm: u16) -> &mut Self {
        self.hw(0x3000 | rd << 8 | imm)
    }
    /// str rt, [rn, #4*imm]
    pub fn str(&mut self, rt: u16, rn: u16, imm: u16) -> &mut Self {
        self.hw(0x6000 | imm << 6 | rn << 3 | rt)
    }
    /// ldr rt, [rn, #4*imm]
    pub fn ldr(&mut self, rt: u16, rn: u16, imm: u16) -> &mut Self {
        self.hw(0x6800 | imm << 6 | rn << 3 | rt)
    }
    pub fn bx(&mut self, rm: u16) -> &mut Self {
        self.hw(0x4700 | rm << 3)
    }
    /// b to halfword index `target`.
    pub fn b_to(&mut self, target: usize) -> &mut Self {
        let off = (target as i32 - (self.code.len() as i32 + 2)) as u16 & 0x7FF;
        self.hw(0xE000 | off)
    }
    pub fn b_self(&mut self) -> &mut Self {
        self.hw(0xE7FE)
    }
    /// Align the code to a word and place the literal pool; returns the finished halfwords.
    pub fn finish(&mut self) -> Vec<u16> {
        if self.code.len() % 2 == 1 {
            self.code.push(0xBF00);
        }
        let pool = self.code.len();
        for (i, (at, value)) in self.lits.clone().into_iter().enumerate() {
            let lit = pool + 2 * i; // halfword index of the literal
            // Align(PC, 4) + 4*imm where PC = address of the LDR + 4 (halfword indices * 2).
            let pc = ((at * 2 + 4) & !3) as u32;
            let imm = ((lit * 2) as u32 - pc) / 4;
            assert!(imm < 256, "literal out of range");
            self.code[at] |= imm as u16;
            self.code.push(value as u16);
            self.code.push((value >> 16) as u16);
        }
        std::mem::take(&mut self.code)
    }
}

/// Encodings used by the directed tests.
pub mod op {
    pub const NOP: u16 = 0xBF00;
    pub const WFI: u16 = 0xBF30;
    pub const WFE: u16 = 0xBF20;
    pub const SEV: u16 = 0xBF40;
    pub const CPSID_I: u16 = 0xB672;
    pub const CPSIE_I: u16 = 0xB662;
    pub const BKPT: u16 = 0xBE00;
    pub const fn svc(n: u16) -> u16 {
        0xDF00 | n
    }
    pub const fn udf(n: u16) -> u16 {
        0xDE00 | n
    }
}
