//! Diagnosis of failed scenarios: snapshot the board through the probe (what a real probe sees
//! too), then run rules in order. Each rule names a cause only when its facts hold, and reports the
//! facts it looked at, so an engineer can check the reasoning (`Diagnosis::facts`).
//!
//! The causes are the failure catalog of the project (reference bootloader-protocols.md section 5,
//! the seeds): every known way the bootloader flows break.
//!
//! The evidence is what a debug probe on a real board reads too: core registers, VTOR, SysTick,
//! NVIC, the chip's diagnosis registers (SYSCFG, RCC, FLASH, IWDG), the exception frame on the
//! stacks, and a few memory words (the Go address, the application base, 0x00000000 against the
//! ROM's vector table, the ROM's vector for the active exception); plus what the rig did (last
//! Go / leave, BOOT0 level, the failure message). Rules run most specific first: readout
//! protection, watchdog reset, Go address, the CPU state the application jumped into the ROM with
//! (PRIMASK, PSP, Handler mode, the vector table its interrupts use, an interrupt left enabled),
//! Go / leave without VTOR, the boot latches (option bits, empty check), then the layouts with a
//! bootloader in front of the application.

use std::collections::BTreeMap;

use hil_config::Step;
use hil_config::scenario::Action;
use hil_report::{Diagnosis, Fact};

use crate::engine::StepOutcome;
use crate::session::RigSession;

/// A cause the rig can name: id, title, fix.
pub struct Cause {
    pub id: &'static str,
    pub title: &'static str,
    pub fix: &'static str,
}

/// Every cause, in the order rules try them.
pub const CAUSES: &[Cause] = &[
    Cause {
        id: "image-has-ram-segment",
        title: "The image carries a load segment outside flash (RAM), which a bootloader cannot write",
        fix: "Fix the linker script (NOLOAD for RAM sections) or flash a .hex/.bin with only the flash contents (seed 001).",
    },
    Cause {
        id: "image-linked-for-another-base",
        title: "The image's vector table is not at the board's application base",
        fix: "Link the application at the base the bootloader starts it from (FLASH origin in the linker script, VECT_TAB_OFFSET).",
    },
    Cause {
        id: "vtor-misaligned",
        title: "The vector table address is not aligned as VTOR requires",
        fix: "Place the vector table on a boundary of its size rounded up to a power of two (seed 000: 0x08003080 is not).",
    },
    Cause {
        id: "vtor-offset-not-updated",
        title: "The application behind a bootloader points VTOR at another vector table",
        fix: "Point VTOR at the application's own table (VECT_TAB_OFFSET = application base - FLASH_BASE, or USER_VECT_TAB_ADDRESS), in step with the linker script's FLASH origin (pitfall P10).",
    },
    Cause {
        id: "readout-protection-active",
        title: "Readout protection (RDP level 1) blocks the access",
        fix: "Remove it with Readout Unprotect (mass erase) before reading or writing flash.",
    },
    Cause {
        id: "primask-set-at-jump",
        title: "Interrupts were disabled (PRIMASK=1) when the application jumped to the ROM",
        fix: "Disable the NVIC sources you used, then clear PRIMASK (__enable_irq) before the jump: the ROM needs interrupts.",
    },
    Cause {
        id: "jump-from-interrupt-handler",
        title: "The application jumped to the ROM from inside an interrupt handler",
        fix: "Jump from thread mode: set a flag in the handler and jump from the main loop, or reset and jump in Reset_Handler.",
    },
    Cause {
        id: "psp-active-at-jump",
        title: "The ROM was entered on the process stack (CONTROL.SPSEL=1, RTOS task)",
        fix: "Select the main stack (CONTROL = 0, ISB) before loading MSP and jumping.",
    },
    Cause {
        id: "remap-with-syscfg-clock-off",
        title: "System memory is not mapped at 0x0 and the SYSCFG clock is off: the remap write was ignored",
        // The rule names the chip's remap field and clock (chip data `remap`) in the fix it reports.
        fix: "Enable the SYSCFG clock before writing the remap field that maps system memory at 0x0.",
    },
    Cause {
        id: "remap-not-done",
        title: "System memory is not mapped at 0x0 when the ROM runs: its interrupts use the application's vectors",
        fix: "Remap system memory to 0x0 (the remap field, SYSCFG clock on) before the jump.",
    },
    Cause {
        id: "vtor-points-to-application",
        title: "VTOR still points at the application's vector table while the ROM runs",
        fix: "Set VTOR to the ROM's table (or 0 with the remap) before the jump.",
    },
    Cause {
        id: "irq-left-enabled-at-jump",
        title: "An interrupt the application left enabled fired in the ROM and hung it in a default handler",
        fix: "Before the jump: stop SysTick, clear every NVIC enable (ICER) and pending bit (ICPR).",
    },
    Cause {
        id: "vector-table-not-set-after-go",
        title: "The application started by Go / DFU leave runs with the ROM's vector table",
        fix: "Set VTOR (or remap flash to 0x0) first thing in the application, or Go to a trampoline that resets (seed 004).",
    },
    Cause {
        id: "go-address-not-vector-table",
        title: "Go was given an address that is not a vector table (e.g. base + 4)",
        fix: "Go to the vector table base: the ROM loads MSP from [address] and PC from [address + 4].",
    },
    Cause {
        id: "option-bits-select-rom",
        title: "The option bits select the system bootloader at every reset",
        fix: "Program nBOOT_SEL/nBOOT0 for a flash boot and reload the option bytes (OBL_LAUNCH).",
    },
    Cause {
        id: "empty-check-latched",
        title: "The flash was empty at the last power-on: the chip keeps booting the ROM until POR or OBL_LAUNCH",
        fix: "After programming an empty chip, power-cycle it or launch the option byte loading (OBL_LAUNCH).",
    },
    Cause {
        id: "usb-left-enabled",
        title: "The application jumped to the ROM with its own USB device still enabled and on the bus: the ROM's DFU device does not come up",
        fix: "Detach USB before the jump: clear the D+ pull-up, hold the USB peripheral in forced reset and power-down, pulse its RCC reset and turn its clock off, then jump (seed 004; the register bits are in the evidence).",
    },
    Cause {
        id: "watchdog-not-refreshed",
        title: "The independent watchdog reset the chip: it runs (hardware option or started) and nobody refreshed it",
        fix: "Refresh the IWDG in the application and in bootloader sessions, or clear the hardware watchdog option.",
    },
];

pub fn cause(id: &str) -> Option<&'static Cause> {
    CAUSES.iter().find(|c| c.id == id)
}

/// Ids of every cause (for validation of `expect.cause`).
pub fn cause_ids() -> Vec<String> {
    CAUSES.iter().map(|c| c.id.to_string()).chain(["unknown".to_string()]).collect()
}

fn fact(name: impl Into<String>, value: impl Into<String>, supports: bool) -> Fact {
    Fact { name: name.into(), value: value.into(), supports }
}

fn named(id: &str, explanation: String, facts: Vec<Fact>, snapshot: BTreeMap<String, u32>) -> Diagnosis {
    let c = cause(id).expect("rules name known causes");
    Diagnosis { cause: c.id.into(), title: c.title.into(), explanation, facts, snapshot, fix: Some(c.fix.into()) }
}

/// Evidence about the board at the failure, gathered once for all rules: what a debug probe reads
/// (core registers, system and peripheral registers, memory words) and what the rig did.
pub struct Evidence {
    /// Core and memory-mapped registers by name (`pc`, `lr`, `msp`, `psp`, `control`, `primask`,
    /// `xpsr`, `vtor`, `systick_csr`, `nvic_iser0` ... and the chip's diagnosis registers).
    pub snapshot: BTreeMap<String, u32>,
    pub chip: &'static hil_chips::Chip,
    pub app_base: u32,
    pub failed_keyword: String,
    pub failure: String,
    /// The address of the last Go / leave in this scenario, if any.
    pub last_go: Option<u32>,
    /// Words at the Go address (as the ROM would have loaded them), when readable.
    pub go_words: Option<(u32, u32)>,
    /// The interrupted PC from the active exception's frame (Handler mode only), as
    /// [`exception_frame`] finds it.
    pub stacked_pc: Option<u32>,
    /// The exception frame is on the process stack (the interrupted code ran in Thread mode on
    /// the PSP).
    pub stacked_on_psp: bool,
    /// The level the rig last drove BOOT0 to, if it drove it.
    pub boot0_driven: Option<bool>,
    /// Initial SP and reset vector at the application base.
    pub app_vectors: Option<(u32, u32)>,
    /// The two words at 0x00000000: what the boot alias shows (system memory or flash).
    pub alias_words: Option<(u32, u32)>,
    /// The two words at the ROM's vector table (the chip's bootloader jump address).
    pub rom_words: Option<(u32, u32)>,
    /// The ROM vector table's entry for the active exception (Handler mode only).
    pub rom_handler: Option<u32>,
    /// The failed step talked to the board over USB (DfuSe): a step that failed, not an audit.
    pub usb_step_failed: bool,
}

impl Evidence {
    fn get(&self, name: &str) -> Option<u32> {
        self.snapshot.get(name).copied()
    }
    fn in_sysmem(&self, a: u32) -> bool {
        self.chip.memory.system_memory.contains(a)
    }
    fn in_flash(&self, a: u32) -> bool {
        self.chip.memory.flash.area().contains(a)
    }
    fn in_app(&self, a: u32) -> bool {
        self.in_flash(a) && a >= self.app_base
    }
    fn in_ram(&self, a: u32) -> bool {
        let r = &self.chip.memory.sram;
        a >= r.base && (a as u64) <= r.end()
    }
    fn ipsr(&self) -> u32 {
        self.get("xpsr").unwrap_or(0) & 0x1FF
    }
    /// The chip's remap field (chip data `remap`, e.g. SYSCFG_CFGR1.MEM_MODE) selects system
    /// memory. With its clock off the register reads 0 whatever the mapping, so the alias words
    /// are the better witness.
    fn mem_mode_sysmem(&self) -> Option<bool> {
        let r = self.chip.remap.as_ref()?;
        let name = self.chip.diagnosis.as_ref()?.registers.iter().find(|x| x.address == r.register)?.name.as_str();
        let mask = if r.width >= 32 { u32::MAX } else { (1u32 << r.width) - 1 };
        let field = (self.get(name)? >> r.shift) & mask;
        Some(r.values.get(&(field as u8)) == Some(&hil_chips::BootTarget::SystemMemory))
    }
    /// The remap register's clock gate (chip data `remap.clock`, an RCC register and bit).
    fn syscfg_clock(&self) -> Option<bool> {
        let g = &self.chip.remap.as_ref()?.clock;
        self.get(&format!("RCC_{}", g.register)).map(|v| v & (1 << g.bit) != 0)
    }
    /// The empty-check flag (chip data `boot.empty_check.flag`).
    fn empty_flag(&self) -> Option<bool> {
        let f = self.chip.boot.as_ref()?.empty_check.as_ref()?.flag.as_ref()?;
        self.get(&f.register).map(|v| v & (1 << f.bit) != 0)
    }
    fn remap_field_name(&self) -> String {
        self.chip.remap.as_ref().and_then(|r| r.field_name.clone()).unwrap_or_else(|| "remap field".into())
    }
    fn remap_clock_name(&self) -> String {
        self.chip
            .remap
            .as_ref()
            .map(|r| r.clock_name.clone().unwrap_or_else(|| format!("RCC_{}.{}", r.clock.register, r.clock.bit)))
            .unwrap_or_default()
    }
    /// The remap field's value that maps system memory at 0x0, in binary as the manuals write it
    /// (`01` for the G0's 2-bit MEM_MODE, `001` for the G4's 3 bits).
    fn remap_sysmem_value(&self) -> Option<String> {
        let r = self.chip.remap.as_ref()?;
        let v = r.value_of(hil_chips::BootTarget::SystemMemory)?;
        Some(format!("{v:0width$b}", width = usize::from(r.width)))
    }
    /// The fix of the remap causes with this chip's register names (chip data `remap`).
    fn remap_fix(&self, clock_off: bool) -> Option<String> {
        let (field, clock) = (self.remap_field_name(), self.remap_clock_name());
        let value = self.remap_sysmem_value()?;
        Some(if clock_off {
            format!("Enable the SYSCFG clock ({clock}) before writing {field} = {value}.")
        } else {
            format!("Remap system memory to 0x0 ({field} = {value}, with {clock} set) before the jump.")
        })
    }
    fn empty_flag_name(&self) -> String {
        let check = self.chip.boot.as_ref().and_then(|b| b.empty_check.as_ref());
        check
            .and_then(|c| c.flag_name.clone().or_else(|| c.flag.as_ref().map(|f| format!("{}.{}", f.register, f.bit))))
            .unwrap_or_else(|| "empty flag".into())
    }
    /// Whether 0x00000000 shows the ROM's vector table (system memory mapped there).
    fn alias_shows_rom(&self) -> Option<bool> {
        Some(self.alias_words? == self.rom_words?)
    }
    /// Whether the PC sits in the handler the ROM's vector table names for the active exception:
    /// the exception was taken through the ROM's table and its handler runs (or loops).
    fn in_rom_handler(&self, pc: u32) -> Option<bool> {
        let h = self.rom_handler? & !1;
        Some(self.in_sysmem(h) && (h..h.saturating_add(8)).contains(&(pc & !1)))
    }
    /// The ROM serves interrupt line `irq` itself: its USARTs and, where it has DFU, USB (chip
    /// data: AN2606 bootloader configuration of the part).
    fn rom_serves(&self, irq: u32) -> bool {
        let b = &self.chip.bootloader;
        b.usart
            .iter()
            .map(|u| u.instance.as_str())
            .chain(b.usb_dfu.then_some("USB"))
            .filter_map(|n| self.chip.peripheral(n).and_then(|p| p.irq))
            .any(|i| i == irq)
    }
    fn reset_flag(&self, bit: impl Fn(&hil_chips::ResetFlags) -> u8) -> Option<bool> {
        let d = self.chip.diagnosis.as_ref()?;
        self.get(&d.reset_flags.register).map(|v| v & (1 << bit(&d.reset_flags)) != 0)
    }
    /// An option field as loaded, from the snapshot of the register its word loads into (chip
    /// data: G0/G4 USER word -> FLASH_OPTR).
    fn option_field(&self, field: &str) -> Option<u32> {
        let f = self.chip.option_bytes.as_ref()?.field(field)?;
        self.get(self.chip.option_word_register(&f.word)?).map(|v| f.get(v))
    }
    /// The readout protection field and whether it shows level 0 (chip data `readout_protection`).
    fn readout_level(&self) -> Option<(u32, bool)> {
        let rp = self.chip.readout_protection.as_ref()?;
        self.get(&rp.register).map(|v| (rp.field().get(v), rp.is_level0(v)))
    }
}

fn hex(v: u32) -> String {
    format!("{v:#010x}")
}

/// Gather evidence and run the rules. Preflight refusals need no board access.
pub fn diagnose(s: &mut RigSession, step: &Step, outcome: &StepOutcome) -> Option<Diagnosis> {
    let msg = outcome.message.clone().unwrap_or_default();
    if let Action::Flash(_) = &step.action
        && msg.starts_with("preflight refused")
    {
        // The message names the first finding; the evidence holds them all.
        let report = outcome
            .evidence
            .iter()
            .find_map(|e| match e {
                hil_report::Evidence::Text { label, text } if label == "preflight" => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or("");
        return Some(preflight_cause(&msg, report));
    }
    let chip = s.chip;
    let extra: Vec<(String, u32)> = chip
        .diagnosis
        .as_ref()
        .map(|d| d.registers.iter().map(|r| (r.name.clone(), r.address)).collect())
        .unwrap_or_default();
    let last_go = s.last_go;
    let boot0_driven = s.boot0_driven;
    let app_base = s.board.application_base(chip);
    let Ok(probe) = s.probe() else {
        return Some(Diagnosis {
            cause: "unknown".into(),
            title: "No probe on this board to look at the core".into(),
            explanation: msg,
            facts: vec![],
            snapshot: BTreeMap::new(),
            fix: None,
        });
    };
    let snapshot = match probe.snapshot(&extra) {
        Ok(s) => s,
        Err(e) => {
            let e = e.to_string();
            return Some(Diagnosis {
                cause: if msg.contains("RDP") || e.contains("protect") {
                    "readout-protection-active".into()
                } else {
                    "unknown".into()
                },
                title: format!("The board could not be inspected: {e}"),
                explanation: msg,
                facts: vec![fact("probe", e, false)],
                snapshot: BTreeMap::new(),
                fix: None,
            });
        }
    };
    let read_word = |p: &mut Box<dyn crate::probe_ops::ProbeOps>, a: u32| -> Option<u32> {
        let b = p.read_memory(a, 4).ok()?;
        Some(u32::from_le_bytes(b.get(0..4)?.try_into().ok()?))
    };
    let read_pair = |p: &mut Box<dyn crate::probe_ops::ProbeOps>, a: u32| -> Option<(u32, u32)> {
        Some((read_word(p, a)?, read_word(p, a.wrapping_add(4))?))
    };
    let reg = |n: &str| snapshot.get(n).copied().unwrap_or(0);
    // Under readout protection the debugger cannot read flash (RM0444 3.5.1), nor the boot alias
    // at 0x0 when it shows flash: do not try.
    let protected = match chip.readout_protection.as_ref() {
        Some(rp) => snapshot.get(&rp.register).is_some_and(|v| !rp.is_level0(*v)),
        None => false,
    };
    let flash = chip.memory.flash.area();
    let flash_pair = |p: &mut Box<dyn crate::probe_ops::ProbeOps>, a: u32| {
        if protected && (flash.contains(a) || a < flash.size) { None } else { read_pair(p, a) }
    };
    let go_words = last_go.and_then(|a| flash_pair(probe, a));
    let app_vectors = flash_pair(probe, app_base);
    let alias_words = flash_pair(probe, 0);
    let rom = chip.bootloader.jump_address;
    let rom_words = read_pair(probe, rom);
    let ipsr = reg("xpsr") & 0x1FF;
    let (frame, rom_handler) = if ipsr != 0 {
        let (lr, msp, psp) = (reg("lr"), reg("msp"), reg("psp"));
        let frame = exception_frame(lr, msp, psp, ipsr, |a| read_word(probe, a));
        (frame, read_word(probe, rom.wrapping_add(4 * ipsr)))
    } else {
        (None, None)
    };
    let ev = Evidence {
        snapshot,
        chip,
        app_base,
        failed_keyword: step.action.keyword().into(),
        failure: msg,
        last_go,
        go_words,
        stacked_pc: frame.map(|f| f.pc),
        stacked_on_psp: frame.is_some_and(|f| f.on_psp),
        boot0_driven,
        app_vectors,
        alias_words,
        rom_words,
        rom_handler,
        usb_step_failed: outcome.status == hil_report::Status::Failed
            && step.action.needs().contains(&hil_config::Capability::Usb),
    };
    Some(run_rules(&ev))
}

/// The exception frame of the active exception, as far as the stacks show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Where the frame starts (R0).
    pub address: u32,
    /// The interrupted PC (frame + 24).
    pub pc: u32,
    /// On the process stack (EXC_RETURN 0xFFFFFFFD).
    pub on_psp: bool,
}

fn is_exc_return(v: u32) -> bool {
    matches!(v, 0xFFFF_FFF1 | 0xFFFF_FFF9 | 0xFFFF_FFFD)
}

/// Find the exception frame of the active exception `ipsr` (ARMv6-M ARM B1.5.6: R0-R3, R12, LR,
/// PC, xPSR pushed on the stack EXC_RETURN names). Right at entry it is at SP; a handler that
/// pushed registers moved SP below it, with EXC_RETURN among the pushed words (`push {r7, lr}`).
/// So: LR = EXC_RETURN with a plausible frame at SP, else the first plausible frame right above a
/// saved EXC_RETURN within 32 words of SP. Plausible: xPSR has the Thumb bit and an exception
/// number other than the active one, the PC is halfword aligned.
pub fn exception_frame(
    lr: u32,
    msp: u32,
    psp: u32,
    ipsr: u32,
    mut read: impl FnMut(u32) -> Option<u32>,
) -> Option<Frame> {
    let plausible = |read: &mut dyn FnMut(u32) -> Option<u32>, at: u32| -> Option<u32> {
        let xpsr = read(at.wrapping_add(28))?;
        let pc = read(at.wrapping_add(24))?;
        (xpsr & (1 << 24) != 0 && xpsr & 0x1FF != ipsr && pc & 1 == 0).then_some(pc)
    };
    if is_exc_return(lr) {
        let on_psp = lr == 0xFFFF_FFFD;
        let at = if on_psp { psp } else { msp };
        if let Some(pc) = plausible(&mut read, at) {
            return Some(Frame { address: at, pc, on_psp });
        }
    }
    for i in 0..32 {
        let Some(v) = read(msp.wrapping_add(4 * i)) else { continue };
        if !is_exc_return(v) {
            continue;
        }
        let on_psp = v == 0xFFFF_FFFD;
        let at = if on_psp { psp } else { msp.wrapping_add(4 * (i + 1)) };
        if let Some(pc) = plausible(&mut read, at) {
            return Some(Frame { address: at, pc, on_psp });
        }
    }
    None
}

/// The most specific cause among all preflight findings: a segment outside flash, then a
/// vector table VTOR cannot point at, then any placement problem.
fn preflight_cause(msg: &str, report: &str) -> Diagnosis {
    let found = |check: &str| msg.contains(check) || report.contains(check);
    let (id, why) = if found("[outside-flash]") {
        ("image-has-ram-segment", "Preflight found a load segment outside flash.")
    } else if found("[vtor-misaligned]") {
        ("vtor-misaligned", "Preflight found the vector table misaligned for VTOR.")
    } else {
        ("image-linked-for-another-base", "Preflight refused the image's placement.")
    };
    named(id, format!("{why} {msg}"), vec![fact("preflight", msg, true)], BTreeMap::new())
}

fn exception_name(n: u32) -> String {
    match n {
        2 => "NMI".into(),
        3 => "HardFault".into(),
        11 => "SVCall".into(),
        14 => "PendSV".into(),
        15 => "SysTick".into(),
        n if n >= 16 => format!("IRQ {}", n - 16),
        n => format!("exception {n}"),
    }
}

/// A rule: a diagnosis when its facts hold; the facts it checked are added either way.
type Rule = fn(&Evidence, &mut Vec<Fact>) -> Option<Diagnosis>;

/// The rules, most specific first. Each returns a diagnosis only when its facts hold.
pub fn run_rules(e: &Evidence) -> Diagnosis {
    let pc = e.get("pc").unwrap_or(0);
    let mut facts = vec![fact("PC", format!("{} ({})", hex(pc), region(e, pc)), false)];
    // Facts of rules that did not match stay in the list: they show what was ruled out.
    let rules: [Rule; 9] = [
        readout_protection,
        watchdog,
        go_address,
        jump_into_rom,
        after_go,
        boot_latches,
        rom_vectors_elsewhere,
        usb_left_enabled,
        behind_bootloader,
    ];
    for rule in rules {
        if let Some(d) = rule(e, &mut facts) {
            return d;
        }
    }
    Diagnosis {
        cause: "unknown".into(),
        title: "No rule matched the evidence".into(),
        explanation: format!("The failure ({}) does not match a known cause; the raw evidence is attached.", e.failure),
        facts,
        snapshot: e.snapshot.clone(),
        fix: None,
    }
}

/// Class 11, RDP level 1: the option byte shows it and the failure was a refused access.
fn readout_protection(e: &Evidence, _: &mut Vec<Fact>) -> Option<Diagnosis> {
    let rp = e.chip.readout_protection.as_ref()?;
    let (r, level0) = e.readout_level()?;
    let field = format!("{}.{}", rp.register, rp.field_name);
    // Refusals as the hosts report them: an AN3155 NACK, DfuSe errVENDOR (AN3156 / AN2662 4.5.3:
    // readout protection), a probe access the chip refused.
    let refused = ["answered NACK", "errVENDOR", "protect", "refused", "RDP"].iter().any(|w| e.failure.contains(w));
    (!level0 && refused).then(|| {
        named(
            "readout-protection-active",
            format!("{field} = {r:#04x} is not level 0, and the failure was a refused access: {}", e.failure),
            vec![fact(&field, format!("{r:#04x} (level 1)"), true), fact("failure", &e.failure, true)],
            e.snapshot.clone(),
        )
    })
}

/// Class 10: the last reset was an independent watchdog reset.
fn watchdog(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    if e.reset_flag(|f| f.independent_watchdog) != Some(true) {
        return None;
    }
    facts.push(fact("reset flags", "independent watchdog", true));
    if let Some(sw) = e.option_field("IWDG_SW") {
        let hw = sw == 0;
        facts.push(fact(
            "IWDG_SW option",
            if hw { "0: hardware watchdog, running from reset" } else { "1: software watchdog" },
            hw,
        ));
    }
    if let Some(csr) = e.get("RCC_CSR") {
        // A running IWDG forces the LSI on (RM0444 5.2.8): LSIRDY without LSION.
        let forced = csr & 0b11 == 0b10;
        facts.push(fact("RCC_CSR LSION / LSIRDY", format!("{} / {}", csr & 1, (csr >> 1) & 1), forced));
    }
    if let Some(pc) = e.get("pc") {
        facts.push(fact("core now", region(e, pc), e.in_sysmem(pc)));
    }
    Some(named(
        "watchdog-not-refreshed",
        "The last reset was an independent watchdog reset: the watchdog ran while nobody refreshed it.".into(),
        std::mem::take(facts),
        e.snapshot.clone(),
    ))
}

/// Class 6: Go / leave to an address whose first word is no stack pointer.
fn go_address(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    let (addr, (sp, pcw)) = (e.last_go?, e.go_words?);
    if e.in_ram(sp) {
        return None;
    }
    facts.push(fact("Go / leave address", hex(addr), true));
    facts.push(fact(format!("[{}] (loaded into MSP)", hex(addr)), format!("{} ({})", hex(sp), region(e, sp)), true));
    facts.push(fact(format!("[{}] (loaded into PC)", hex(addr.wrapping_add(4))), hex(pcw), false));
    let hint = match e.app_vectors {
        Some((app_sp, _)) if addr == e.app_base.wrapping_add(4) && e.in_ram(app_sp) => {
            format!(" The vector table is at {}: Go was given base + 4.", hex(e.app_base))
        }
        _ => String::new(),
    };
    Some(named(
        "go-address-not-vector-table",
        format!("The ROM loads MSP from the Go address, and {} is no RAM address.{hint}", hex(sp)),
        std::mem::take(facts),
        e.snapshot.clone(),
    ))
}

/// Which vector table the ROM's interrupts use, and why it is not the ROM's: VTOR pointing into
/// the application, or VTOR = 0 with flash (not system memory) at 0x0 (P1, P4).
fn foreign_table(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    let vtor = e.get("vtor").unwrap_or(0);
    let alias = e.alias_shows_rom();
    facts.push(fact("VTOR", hex(vtor), vtor != 0 && !e.in_sysmem(vtor)));
    if vtor != 0 && !e.in_sysmem(vtor) {
        return Some(named(
            "vtor-points-to-application",
            format!("The ROM's interrupts vector through VTOR = {}, the application's table.", hex(vtor)),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    if vtor != 0 || alias != Some(false) {
        return None;
    }
    if let (Some(a), Some(r)) = (e.alias_words, e.rom_words) {
        facts.push(fact(
            "words at 0x00000000",
            format!("{} {} (the ROM's table: {} {}): flash is mapped there", hex(a.0), hex(a.1), hex(r.0), hex(r.1)),
            true,
        ));
    }
    let clock = e.syscfg_clock();
    if let Some(m) = e.mem_mode_sysmem() {
        let value = match (m, clock) {
            (true, _) => "01 (system memory)",
            (false, Some(false)) => "reads 0 (with the SYSCFG clock off the register reads 0 whatever the mapping)",
            (false, _) => "not 01 (main flash)",
        };
        facts.push(fact(e.remap_field_name(), value, !m && clock != Some(false)));
    }
    if let Some(c) = clock {
        facts.push(fact(e.remap_clock_name(), if c { "1" } else { "0: SYSCFG clock off" }, !c));
    }
    let fix = e.remap_fix(clock == Some(false));
    let mut d = if clock == Some(false) {
        named(
            "remap-with-syscfg-clock-off",
            "VTOR = 0 and 0x00000000 shows flash, not the ROM: the ROM's interrupts run the application's handlers. The SYSCFG clock is off, so a MEM_MODE write is ignored (pitfall P4).".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        )
    } else {
        named(
            "remap-not-done",
            "VTOR = 0 and 0x00000000 shows flash, not the ROM: system memory was not remapped, so the ROM's interrupts run the application's handlers (pitfalls P1/P4).".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        )
    };
    if fix.is_some() {
        d.fix = fix;
    }
    Some(d)
}

/// Classes 1-4: the application jumped into the ROM (no Go / leave since the last reset), and the ROM does
/// not work: the CPU state it was entered with says why.
fn jump_into_rom(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    let pc = e.get("pc").unwrap_or(0);
    let stacked_in_rom = e.stacked_pc.is_some_and(|p| e.in_sysmem(p));
    if e.last_go.is_some() || !(e.in_sysmem(pc) || stacked_in_rom) {
        return None;
    }
    let ipsr = e.ipsr();
    let control = e.get("control").unwrap_or(0);
    // 1. Interrupts masked: nothing interrupt-driven can run.
    let primask = e.get("primask").unwrap_or(0) & 1 == 1;
    facts.push(fact("PRIMASK", if primask { "1" } else { "0" }, primask));
    if primask {
        return Some(named(
            "primask-set-at-jump",
            "The core runs the ROM with PRIMASK set, so none of the ROM's interrupt-driven interfaces can work.".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    // 2a. Thread mode on the process stack: running (thread mode, SPSEL = 1) or crashed (a
    // HardFault whose frame EXC_RETURN puts on the process stack, interrupting ROM code).
    let psp = e.get("psp").unwrap_or(0);
    let own_ram = &e.chip.bootloader.reserved_ram;
    let psp_fact = |facts: &mut Vec<Fact>| {
        facts.push(fact(
            "PSP",
            format!(
                "{}{}",
                hex(psp),
                if own_ram.contains(psp.wrapping_sub(4)) {
                    " (inside the RAM the ROM reserves for itself)"
                } else {
                    ""
                }
            ),
            true,
        ))
    };
    if ipsr == 0 && control & 0b10 != 0 && e.in_sysmem(pc) {
        facts.push(fact("CONTROL.SPSEL", "1 (process stack)", true));
        psp_fact(facts);
        return Some(named(
            "psp-active-at-jump",
            "The ROM runs in Thread mode on the process stack: the application jumped from an RTOS task without selecting the MSP.".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    if ipsr == 3 && e.stacked_on_psp && stacked_in_rom {
        facts.push(fact("IPSR", "3 (HardFault)", true));
        facts.push(fact(
            "exception frame",
            "on the process stack (EXC_RETURN 0xFFFFFFFD): the faulting code ran in Thread mode on the PSP",
            true,
        ));
        facts.push(fact("faulting PC (exception frame)", hex(e.stacked_pc.unwrap_or(0)), true));
        psp_fact(facts);
        return Some(named(
            "psp-active-at-jump",
            "The ROM crashed (HardFault) while running in Thread mode on the process stack: the application jumped from an RTOS task without selecting the MSP (pitfall P5).".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    facts.push(fact("CONTROL.SPSEL", if control & 0b10 != 0 { "1" } else { "0 (main stack)" }, false));
    if ipsr != 0 {
        let name = exception_name(ipsr);
        let at_handler = e.in_rom_handler(pc);
        // 2b. ROM code runs in Handler mode, not in the handler its table has for the active
        // exception: the ROM was entered from inside that exception.
        if e.in_sysmem(pc) && ipsr != 3 && (at_handler == Some(false) || (at_handler.is_none() && !stacked_in_rom)) {
            facts.push(fact("IPSR", format!("{ipsr} ({name} still active)"), true));
            if let Some(h) = e.rom_handler {
                facts.push(fact(
                    format!("the ROM's vector for {name}"),
                    format!("{} (the core is elsewhere)", hex(h)),
                    true,
                ));
            }
            return Some(named(
                "jump-from-interrupt-handler",
                format!(
                    "The ROM runs in Handler mode ({name} still active): the application jumped from inside that interrupt handler, and the ROM's own interrupts cannot preempt it."
                ),
                std::mem::take(facts),
                e.snapshot.clone(),
            ));
        }
        // 3. An interrupt the ROM took ran the application's handler (where the core is now).
        if !e.in_sysmem(pc) && stacked_in_rom {
            facts.push(fact("IPSR", format!("{ipsr} ({name})"), true));
            facts.push(fact(
                "interrupted PC (exception frame)",
                format!("{} (system memory)", hex(e.stacked_pc.unwrap_or(0))),
                true,
            ));
            facts.push(fact("handler running", format!("{} ({})", hex(pc), region(e, pc)), true));
            if let Some(d) = foreign_table(e, facts) {
                return Some(d);
            }
        }
        // 4. The ROM hangs in the handler its table has for an exception the application left
        // enabled and pending.
        let foreign = matches!(ipsr, 14 | 15) || (ipsr >= 16 && !e.rom_serves(ipsr - 16));
        if at_handler == Some(true) && foreign {
            let systick = e.get("systick_csr").unwrap_or(0);
            facts.push(fact("active exception", name.clone(), true));
            facts.push(fact(
                format!("the ROM's vector for {name}"),
                format!("{} (the core is there)", hex(e.rom_handler.unwrap_or(0))),
                true,
            ));
            facts.push(fact("SysTick CSR", hex(systick), ipsr == 15 && systick & 0b11 == 0b11));
            // The ISER word of the line (IRQ 40 of an F103 is in ISER1).
            let line = ipsr.checked_sub(16);
            let word = line.map_or(0, |l| l / 32);
            if let Some(iser) = e.get(&format!("nvic_iser{word}")) {
                let on = line.is_some_and(|l| iser & (1 << (l % 32)) != 0);
                facts.push(fact(
                    if word == 0 { "NVIC ISER".to_string() } else { format!("NVIC ISER{word}") },
                    hex(iser),
                    on,
                ));
            }
            return Some(named(
                "irq-left-enabled-at-jump",
                format!(
                    "The ROM hangs in its handler for {name}, an interrupt the application left enabled (and pending) at the jump."
                ),
                std::mem::take(facts),
                e.snapshot.clone(),
            ));
        }
    }
    None
}

/// Class 5: after Go / leave, the application's interrupt ran the ROM's handler.
fn after_go(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    let addr = e.last_go?;
    let pc = e.get("pc").unwrap_or(0);
    let ipsr = e.ipsr();
    if !e.in_sysmem(pc) || ipsr == 0 {
        return None;
    }
    let vtor = e.get("vtor").unwrap_or(0);
    facts.push(fact("Go / leave address", hex(addr), false));
    facts.push(fact("IPSR", format!("{ipsr} ({})", exception_name(ipsr)), true));
    if let Some(p) = e.stacked_pc {
        facts.push(fact("interrupted PC (exception frame)", format!("{} ({})", hex(p), region(e, p)), e.in_flash(p)));
    }
    facts.push(fact("VTOR", hex(vtor), vtor == 0 || e.in_sysmem(vtor)));
    if let Some(rom) = e.alias_shows_rom() {
        facts.push(fact("0x00000000 shows", if rom { "the ROM's vector table (system memory)" } else { "flash" }, rom));
    }
    Some(named(
        "vector-table-not-set-after-go",
        format!(
            "After Go / leave to {}, an interrupt of the application vectored into the ROM (VTOR = {}): the application never set its own vector table.",
            hex(addr),
            hex(vtor)
        ),
        std::mem::take(facts),
        e.snapshot.clone(),
    ))
}

/// Class 9: a reset landed in the ROM: option bits or the empty-check latch.
fn boot_latches(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    if !e.in_sysmem(e.get("pc").unwrap_or(0)) {
        return None;
    }
    // 1 = BOOT0 from the option bit (G0 nBOOT_SEL = 1, G4 nSWBOOT0 = 0; chip data boot_select).
    let nboot_sel = e
        .chip
        .option_bytes
        .as_ref()
        .and_then(|ob| ob.boots_from_option_bit(e.get(e.chip.option_word_register("USER")?)?))
        .map(u32::from);
    let nboot0 = e.option_field("nBOOT0");
    if nboot_sel == Some(1) && nboot0 == Some(0) {
        facts.push(fact("nBOOT_SEL", "1 (boot from option bit)", true));
        facts.push(fact("nBOOT0", "0 (system memory)", true));
        return Some(named(
            "option-bits-select-rom",
            "After reset the core runs the ROM because nBOOT_SEL = 1 and nBOOT0 = 0 select system memory.".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    let empty = e.empty_flag();
    let programmed = e.app_vectors.is_some_and(|(sp, _)| sp != 0xFFFF_FFFF);
    if empty == Some(true) && programmed {
        facts.push(fact(e.empty_flag_name(), "1 (flash was empty at power-on)", true));
        facts.push(fact(format!("word at {}", hex(e.chip.memory.flash.base)), "programmed", true));
        return Some(named(
            "empty-check-latched",
            "The EMPTY flag latched at the last power-on still selects the ROM although the flash is programmed now (evaluated at POR/OBL only).".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    // The boot inputs select flash, the flash is programmed, a plain reset landed in the ROM:
    // only the empty-check latch does that. Some ROMs clear EMPTY when they start (G07x V11.3,
    // AN2606 45.3.1), so it may read 0 by now.
    // A software reset (SYSRESETREQ) pulses NRST too, so PINRSTF alone does not make a pin reset;
    // after one the ROM may just as well have been entered by the application's own reset
    // handler (the robust jump, pitfall P3).
    let pin_reset = e.reset_flag(|f| f.pin) == Some(true)
        && e.reset_flag(|f| f.power_on) == Some(false)
        && e.reset_flag(|f| f.option_byte_load) == Some(false)
        && e.reset_flag(|f| f.software) != Some(true);
    let inputs_select_flash = match (nboot_sel, nboot0) {
        (Some(1), Some(1)) => true,
        (Some(0), _) => e.boot0_driven == Some(false),
        _ => false,
    };
    if programmed && pin_reset && inputs_select_flash && e.chip.boot.as_ref().is_some_and(|b| b.empty_check.is_some()) {
        facts.push(fact("reset", "NRST pin, no power-on since the flash was programmed", true));
        facts.push(fact(
            "boot inputs",
            match nboot_sel {
                Some(0) => "nBOOT_SEL = 0 and BOOT0 driven low by the rig: main flash",
                _ => "nBOOT_SEL = 1, nBOOT0 = 1: main flash",
            },
            true,
        ));
        facts.push(fact(format!("word at {}", hex(e.chip.memory.flash.base)), "programmed", true));
        if let Some(em) = empty {
            facts.push(fact(
                format!("{} now", e.empty_flag_name()),
                if em { "1" } else { "0 (this ROM version clears it when it starts)" },
                em,
            ));
        }
        return Some(named(
            "empty-check-latched",
            "The boot inputs select flash and the flash is programmed, yet a reset started the ROM: the empty check latched at the last power-on (the chip was blank then) still redirects to the ROM until POR or OBL_LAUNCH.".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    None
}

/// Class 3 before any interrupt: the ROM runs after the application's jump, and its interrupts would
/// vector through a table that is not the ROM's.
fn rom_vectors_elsewhere(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    let pc = e.get("pc").unwrap_or(0);
    if e.last_go.is_some() || !e.in_sysmem(pc) || e.ipsr() != 0 {
        return None;
    }
    facts.push(fact("mode", "Thread mode in the ROM", false));
    foreign_table(e, facts)
}

/// Class 7: layouts with a bootloader in front of the application: the application is not where the
/// bootloader starts it, its table is misaligned, or its VTOR points elsewhere.
fn behind_bootloader(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    let pc = e.get("pc").unwrap_or(0);
    let vtor = e.get("vtor").unwrap_or(0);
    let align = e.chip.vtor_alignment();
    if let Some((sp, reset)) = e.app_vectors
        && sp != 0xFFFF_FFFF
        && (!e.in_ram(sp) || !e.in_app(reset & !1))
        && e.in_flash(pc)
    {
        facts.push(fact(
            format!("vector table at the application base {}", hex(e.app_base)),
            format!("SP {} reset {}", hex(sp), hex(reset)),
            true,
        ));
        return Some(named(
            "image-linked-for-another-base",
            "The words at the application base are no vector table for an application there: it was linked for another base.".into(),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    if vtor != 0 && e.in_flash(vtor) && vtor != e.app_base && !e.app_base.is_multiple_of(align) {
        facts.push(fact("VTOR", hex(vtor), true));
        facts.push(fact("application base", format!("{} (not {align}-byte aligned)", hex(e.app_base)), true));
        return Some(named(
            "vtor-misaligned",
            format!(
                "VTOR reads {} but the application's table is at {}: VTOR cannot hold that address.",
                hex(vtor),
                hex(e.app_base)
            ),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    // The application runs (the interrupted code is the application's) but its exception was
    // taken through another table in flash: the bootloader's (VECT_TAB_OFFSET not updated).
    let ipsr = e.ipsr();
    let app_interrupted = e.stacked_pc.is_some_and(|p| e.in_app(p));
    if e.app_base > e.chip.memory.flash.base
        && ipsr != 0
        && app_interrupted
        && e.in_flash(vtor)
        && vtor != e.app_base
        && e.app_vectors.is_some_and(|(sp, reset)| e.in_ram(sp) && e.in_app(reset & !1))
    {
        facts.push(fact("IPSR", format!("{ipsr} ({})", exception_name(ipsr)), true));
        facts.push(fact(
            "interrupted PC (exception frame)",
            format!("{} (application)", hex(e.stacked_pc.unwrap_or(0))),
            true,
        ));
        facts.push(fact("VTOR", format!("{} ({})", hex(vtor), region(e, vtor)), true));
        facts.push(fact("application base", hex(e.app_base), true));
        facts.push(fact("handler running", format!("{} ({})", hex(pc), region(e, pc)), !e.in_app(pc)));
        return Some(named(
            "vtor-offset-not-updated",
            format!(
                "The application at {} runs, but VTOR = {}: its {} went through the vector table there instead of its own.",
                hex(e.app_base),
                hex(vtor),
                exception_name(ipsr)
            ),
            std::mem::take(facts),
            e.snapshot.clone(),
        ));
    }
    None
}

/// Seed 004: the application jumped into the ROM with its USB device still running and attached,
/// and the ROM's DFU device did not answer. The chip data (`diagnosis.usb`) names the bits: the
/// peripheral clock on, the D+ pull-up on (the host sees a device), neither power-down nor forced
/// reset (RM0440 45.6.1 on the G4). The ROM's own DFU device is interrupt-driven, so with the USB
/// interrupt disabled in the NVIC no one serves the device on the bus: it is the application's.
fn usb_left_enabled(e: &Evidence, facts: &mut Vec<Fact>) -> Option<Diagnosis> {
    let usb = e.chip.diagnosis.as_ref()?.usb.as_ref()?;
    let pc = e.get("pc").unwrap_or(0);
    if !e.usb_step_failed || e.last_go.is_some() || !e.in_sysmem(pc) {
        return None;
    }
    let bit = |g: &hil_chips::ClockGate| e.get(&g.register).map(|v| v & (1 << g.bit) != 0);
    let (clock, pullup, power_down, reset) =
        (bit(&usb.clock)?, bit(&usb.pullup)?, bit(&usb.power_down)?, bit(&usb.force_reset)?);
    let irq = e.chip.peripheral("USB").and_then(|p| p.irq);
    let irq_enabled = irq.and_then(|l| e.get(&format!("nvic_iser{}", l / 32)).map(|w| w & (1 << (l % 32)) != 0));
    let on = |b: bool| if b { "1" } else { "0" };
    let [c, p, d, r] = usb.bits().map(|(_, n)| n.to_string());
    facts.push(fact(c, on(clock), clock));
    facts.push(fact(p, format!("{} (D+ pulled up: the host sees a device)", on(pullup)), pullup));
    facts.push(fact(d, on(power_down), !power_down));
    facts.push(fact(r, on(reset), !reset));
    if let (Some(l), Some(en)) = (irq, irq_enabled) {
        facts.push(fact(
            format!("NVIC: USB interrupt (IRQ {l})"),
            if en { "enabled" } else { "disabled: nobody serves the device on the bus" },
            !en,
        ));
    }
    let attached = clock && pullup && !power_down && !reset;
    if !attached || irq_enabled == Some(true) {
        return None;
    }
    if e.chip.bootloader.usb_left_enabled_blocks_dfu {
        facts.push(fact(
            "chip data bootloader.usb_left_enabled_blocks_dfu",
            "this ROM is reported not to bring DFU up over an attached USB device (seed 004, unverified)",
            true,
        ));
    }
    Some(named(
        "usb-left-enabled",
        "The core runs the ROM, but the USB device on the bus is still the application's: clocked, D+ pulled up, out of reset and power-down, its interrupt off. The ROM did not take it over, so its DFU device never answered.".into(),
        std::mem::take(facts),
        e.snapshot.clone(),
    ))
}

fn region(e: &Evidence, a: u32) -> &'static str {
    if e.in_sysmem(a) {
        "system memory"
    } else if e.in_flash(a) {
        if a >= e.app_base { "application flash" } else { "flash below the application" }
    } else if e.in_ram(a) {
        "SRAM"
    } else {
        "unmapped"
    }
}
