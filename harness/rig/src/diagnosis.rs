//! Diagnosis of failed scenarios: snapshot the board through the probe (what a real probe sees
//! too), then run rules in order. Each rule names a cause only when its facts hold, and reports the
//! facts it looked at, so an engineer can check the reasoning (`Diagnosis::facts`).
//!
//! The causes are the failure catalog of the project (reference bootloader-protocols.md section 5,
//! the seeds): every known way the bootloader flows break.

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
        fix: "Enable the SYSCFG clock (RCC_APBENR2.SYSCFGEN) before writing SYSCFG_CFGR1.MEM_MODE = 01.",
    },
    Cause {
        id: "remap-not-done",
        title: "System memory is not mapped at 0x0 when the ROM runs: its interrupts use the application's vectors",
        fix: "Remap system memory to 0x0 (SYSCFG_CFGR1.MEM_MODE = 01) before the jump on Cortex-M0+ parts.",
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

/// Evidence about the board at the failure, gathered once for all rules.
pub struct Evidence {
    pub snapshot: BTreeMap<String, u32>,
    pub chip: &'static hil_chips::Chip,
    pub app_base: u32,
    pub failed_keyword: String,
    pub failure: String,
    /// The address of the last Go / leave in this scenario, if any.
    pub last_go: Option<u32>,
    /// Words at the Go address (as the ROM would have loaded them), when readable.
    pub go_words: Option<(u32, u32)>,
    /// The exception frame on the active stack, when the core is in handler mode.
    pub stacked_pc: Option<u32>,
    /// The level the rig last drove BOOT0 to, if it drove it.
    pub boot0_driven: Option<bool>,
    pub app_vectors: Option<(u32, u32)>,
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
    fn in_ram(&self, a: u32) -> bool {
        let r = &self.chip.memory.sram;
        a >= r.base && (a as u64) <= r.end()
    }
    fn ipsr(&self) -> u32 {
        self.get("xpsr").unwrap_or(0) & 0x1FF
    }
    /// MEM_MODE of SYSCFG_CFGR1 reads 01: system memory at 0x0 (RM0444 9.1.1).
    fn sysmem_at_zero(&self) -> Option<bool> {
        self.get("SYSCFG_CFGR1").map(|v| v & 0b11 == 0b01)
    }
    fn syscfg_clock(&self) -> Option<bool> {
        self.get("RCC_APBENR2").map(|v| v & 1 != 0)
    }
    fn reset_flag(&self, bit: impl Fn(&hil_chips::ResetFlags) -> u8) -> Option<bool> {
        let d = self.chip.diagnosis.as_ref()?;
        self.get(&d.reset_flags.register).map(|v| v & (1 << bit(&d.reset_flags)) != 0)
    }
    fn option_field(&self, field: &str) -> Option<u32> {
        let f = self.chip.option_bytes.as_ref()?.field(field)?;
        self.get("FLASH_OPTR").map(|v| f.get(v))
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
        return Some(preflight_cause(&msg));
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
    let read_pair = |p: &mut Box<dyn crate::probe_ops::ProbeOps>, a: u32| -> Option<(u32, u32)> {
        let b = p.read_memory(a, 8).ok()?;
        Some((u32::from_le_bytes(b[0..4].try_into().ok()?), u32::from_le_bytes(b[4..8].try_into().ok()?)))
    };
    let go_words = last_go.and_then(|a| read_pair(probe, a));
    let app_vectors = read_pair(probe, app_base);
    // In handler mode the interrupted PC sits at SP + 24 of the exception frame (ARMv6-M ARM B1.5.6).
    let ipsr = snapshot.get("xpsr").copied().unwrap_or(0) & 0x1FF;
    let stacked_pc = if ipsr != 0 {
        let sp = snapshot.get("sp").copied().unwrap_or(0);
        probe.read_memory(sp.wrapping_add(24), 4).ok().and_then(|b| b[..4].try_into().ok()).map(u32::from_le_bytes)
    } else {
        None
    };
    let ev = Evidence {
        snapshot,
        chip,
        app_base,
        failed_keyword: step.action.keyword().into(),
        failure: msg,
        last_go,
        go_words,
        stacked_pc,
        boot0_driven,
        app_vectors,
    };
    Some(run_rules(&ev))
}

fn preflight_cause(msg: &str) -> Diagnosis {
    let (id, why) = if msg.contains("[outside-flash]") {
        ("image-has-ram-segment", "Preflight found a load segment outside flash.")
    } else if msg.contains("[vtor-misaligned]") {
        ("vtor-misaligned", "Preflight found the vector table misaligned for VTOR.")
    } else {
        ("image-linked-for-another-base", "Preflight refused the image's placement.")
    };
    named(id, format!("{why} {msg}"), vec![fact("preflight", msg, true)], BTreeMap::new())
}

/// The rules, most specific first. Each returns a diagnosis only when its facts hold.
pub fn run_rules(e: &Evidence) -> Diagnosis {
    let pc = e.get("pc").unwrap_or(0);
    let mut facts = vec![fact("PC", format!("{} ({})", hex(pc), region(e, pc)), false)];

    // 11. RDP level 1: the failure says so, or the option byte shows it.
    let rdp = e.option_field("RDP");
    if let Some(r) = rdp
        && r != e.chip.option_bytes.as_ref().map(|l| l.rdp_levels.level0 as u32).unwrap_or(0xAA)
        && (e.failure.contains("NACK") || e.failure.contains("protect") || e.failure.contains("refused"))
    {
        return named(
            "readout-protection-active",
            format!("FLASH_OPTR.RDP = {r:#04x} is not level 0, and the failure was a refused access: {}", e.failure),
            vec![fact("FLASH_OPTR.RDP", format!("{r:#04x} (level 1)"), true), fact("failure", &e.failure, true)],
            e.snapshot.clone(),
        );
    }

    // 10. Watchdog reset.
    if e.reset_flag(|f| f.independent_watchdog) == Some(true) {
        let hw = e.option_field("IWDG_SW").map(|v| v == 0);
        facts.push(fact("reset flags", "independent watchdog", true));
        if let Some(hw) = hw {
            facts.push(fact(
                "IWDG_SW option",
                if hw { "0: hardware watchdog, running from reset" } else { "1: software watchdog" },
                hw,
            ));
        }
        return named(
            "watchdog-not-refreshed",
            "The last reset was an independent watchdog reset: the watchdog ran while nobody refreshed it.".into(),
            facts,
            e.snapshot.clone(),
        );
    }

    // 6. Go to an address whose first word is no stack pointer.
    if let (Some(addr), Some((sp, pcw))) = (e.last_go, e.go_words)
        && !e.in_ram(sp)
    {
        facts.push(fact("Go address", hex(addr), true));
        facts.push(fact(
            format!("[{}] (loaded into MSP)", hex(addr)),
            format!("{} ({})", hex(sp), region(e, sp)),
            true,
        ));
        facts.push(fact(format!("[{}] (loaded into PC)", hex(addr + 4)), hex(pcw), false));
        let hint = match e.app_vectors {
            Some((app_sp, _)) if addr == e.app_base + 4 && e.in_ram(app_sp) => {
                format!(" The vector table is at {}: Go was given base + 4.", hex(e.app_base))
            }
            _ => String::new(),
        };
        return named(
            "go-address-not-vector-table",
            format!("The ROM loads MSP from the Go address, and {} is no RAM address.{hint}", hex(sp)),
            facts,
            e.snapshot.clone(),
        );
    }

    let primask = e.get("primask").unwrap_or(0) & 1 == 1;
    let control = e.get("control").unwrap_or(0);
    let ipsr = e.ipsr();
    let in_rom = e.in_sysmem(pc) || e.stacked_pc.is_some_and(|p| e.in_sysmem(p));

    if in_rom && e.last_go.is_none() {
        // The application jumped (or reset) into the ROM, which does not answer.
        if primask {
            facts.push(fact("PRIMASK", "1", true));
            return named(
                "primask-set-at-jump",
                "The core runs the ROM with PRIMASK set, so none of the ROM's interrupt-driven interfaces can work."
                    .into(),
                facts,
                e.snapshot.clone(),
            );
        }
        facts.push(fact("PRIMASK", "0", false));
        let active_app_irq = ipsr >= 16 && !e.in_sysmem(pc);
        if ipsr != 0 && e.stacked_pc.is_none_or(|p| !e.in_sysmem(p)) && !active_app_irq {
            facts.push(fact("IPSR", format!("{ipsr} (handler mode in the ROM)"), true));
            return named(
                "jump-from-interrupt-handler",
                format!(
                    "The ROM runs in handler mode (exception {ipsr} still active): its own interrupts cannot preempt it."
                ),
                facts,
                e.snapshot.clone(),
            );
        }
        if control & 0b10 != 0 {
            facts.push(fact("CONTROL.SPSEL", "1 (process stack)", true));
            return named(
                "psp-active-at-jump",
                "The ROM runs in thread mode on the process stack: the application jumped from an RTOS task without selecting the MSP.".into(),
                facts,
                e.snapshot.clone(),
            );
        }
        facts.push(fact("CONTROL.SPSEL", "0 (main stack)", false));
        // An interrupt taken in the ROM went through the application's vectors?
        if let Some(stacked) = e.stacked_pc
            && e.in_sysmem(stacked)
            && !e.in_sysmem(pc)
        {
            facts.push(fact("interrupted PC (exception frame)", format!("{} (system memory)", hex(stacked)), true));
            facts.push(fact("IPSR", ipsr.to_string(), true));
            let vtor = e.get("vtor").unwrap_or(0);
            facts.push(fact("VTOR", hex(vtor), vtor != 0));
            if let Some(at0) = e.sysmem_at_zero() {
                facts.push(fact(
                    "SYSCFG_CFGR1.MEM_MODE",
                    if at0 { "01: system memory at 0x0" } else { "not 01: flash at 0x0" },
                    !at0,
                ));
            }
            if let Some(clk) = e.syscfg_clock() {
                facts.push(fact("RCC_APBENR2.SYSCFGEN", if clk { "1" } else { "0: SYSCFG clock off" }, !clk));
            }
            if vtor != 0 && !e.in_sysmem(vtor) {
                return named(
                    "vtor-points-to-application",
                    format!(
                        "An interrupt taken in the ROM at {} went through VTOR = {} into the application's handler.",
                        hex(stacked),
                        hex(vtor)
                    ),
                    facts,
                    e.snapshot.clone(),
                );
            }
            if e.sysmem_at_zero() == Some(false) {
                if e.syscfg_clock() == Some(false) {
                    return named(
                        "remap-with-syscfg-clock-off",
                        "An interrupt taken in the ROM vectored through 0x0, which still shows flash; the SYSCFG clock is off, so a MEM_MODE write would have been ignored (pitfall P4).".into(),
                        facts,
                        e.snapshot.clone(),
                    );
                }
                return named(
                    "remap-not-done",
                    "An interrupt taken in the ROM vectored through 0x0, which still shows flash: system memory was not remapped.".into(),
                    facts,
                    e.snapshot.clone(),
                );
            }
        }
        // Stuck in the ROM's own default handler for an interrupt the application left enabled.
        if ipsr != 0 && e.in_sysmem(pc) {
            let systick = e.get("systick_csr").unwrap_or(0);
            let name = if ipsr == 15 {
                "SysTick".to_string()
            } else if ipsr >= 16 {
                format!("IRQ {}", ipsr - 16)
            } else {
                format!("exception {ipsr}")
            };
            facts.push(fact("active exception", name.clone(), true));
            facts.push(fact("SysTick CSR", hex(systick), systick & 1 != 0));
            return named(
                "irq-left-enabled-at-jump",
                format!("The ROM hangs in its default handler for {name}, an interrupt the application left enabled."),
                facts,
                e.snapshot.clone(),
            );
        }
    }

    // 5. After Go / leave: the application's interrupt ran the ROM's handler.
    if let Some(addr) = e.last_go
        && e.in_sysmem(pc)
        && ipsr != 0
    {
        let vtor = e.get("vtor").unwrap_or(0);
        facts.push(fact("Go / leave address", hex(addr), false));
        facts.push(fact("IPSR", ipsr.to_string(), true));
        facts.push(fact("VTOR", hex(vtor), vtor == 0 || e.in_sysmem(vtor)));
        if let Some(at0) = e.sysmem_at_zero() {
            facts.push(fact(
                "SYSCFG_CFGR1.MEM_MODE",
                if at0 { "01: system memory at 0x0" } else { "flash at 0x0" },
                at0,
            ));
        }
        return named(
            "vector-table-not-set-after-go",
            format!(
                "After Go to {}, an interrupt of the application vectored into the ROM (VTOR = {}): the application never set its own vector table.",
                hex(addr),
                hex(vtor)
            ),
            facts,
            e.snapshot.clone(),
        );
    }

    // 9. A reset landed in the ROM: option bits or the empty-check latch.
    if e.in_sysmem(pc) {
        let nboot_sel = e.option_field("nBOOT_SEL");
        let nboot0 = e.option_field("nBOOT0");
        if nboot_sel == Some(1) && nboot0 == Some(0) {
            facts.push(fact("nBOOT_SEL", "1 (boot from option bit)", true));
            facts.push(fact("nBOOT0", "0 (system memory)", true));
            return named(
                "option-bits-select-rom",
                "After reset the core runs the ROM because nBOOT_SEL = 1 and nBOOT0 = 0 select system memory.".into(),
                facts,
                e.snapshot.clone(),
            );
        }
        let empty = e.get("FLASH_ACR").map(|v| v & (1 << 16) != 0);
        let programmed = e.app_vectors.is_some_and(|(sp, _)| sp != 0xFFFF_FFFF);
        if empty == Some(true) && programmed {
            facts.push(fact("FLASH_ACR.EMPTY", "1 (flash was empty at power-on)", true));
            facts.push(fact(format!("word at {}", hex(e.chip.memory.flash.base)), "programmed", true));
            return named(
                "empty-check-latched",
                "The EMPTY flag latched at the last power-on still selects the ROM although the flash is programmed now (evaluated at POR/OBL only).".into(),
                facts,
                e.snapshot.clone(),
            );
        }
        // The boot inputs select flash, the flash is programmed, a plain reset landed in the ROM:
        // only the empty-check latch does that. Some ROMs clear EMPTY when they start (G07x
        // V11.3, AN2606 45.3.1), so it may read 0 by now.
        let pin_reset = e.reset_flag(|f| f.pin) == Some(true)
            && e.reset_flag(|f| f.power_on) == Some(false)
            && e.reset_flag(|f| f.option_byte_load) == Some(false);
        let inputs_select_flash = match (nboot_sel, nboot0) {
            (Some(1), Some(1)) => true,
            (Some(0), _) => e.boot0_driven == Some(false),
            _ => false,
        };
        if programmed
            && pin_reset
            && inputs_select_flash
            && e.chip.boot.as_ref().is_some_and(|b| b.empty_check.is_some())
        {
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
                    "FLASH_ACR.EMPTY now",
                    if em { "1" } else { "0 (this ROM version clears it when it starts)" },
                    em,
                ));
            }
            return named(
                "empty-check-latched",
                "The boot inputs select flash and the flash is programmed, yet a reset started the ROM: the empty check latched at the last power-on (the chip was blank then) still redirects to the ROM until POR or OBL_LAUNCH.".into(),
                facts,
                e.snapshot.clone(),
            );
        }
    }

    // 7. The application is not where the bootloader starts it, or its table is misaligned.
    let vtor = e.get("vtor").unwrap_or(0);
    let align = e.chip.vtor_alignment();
    if let Some((sp, reset)) = e.app_vectors
        && (!e.in_ram(sp) || !(e.in_flash(reset & !1) && (reset & !1) >= e.app_base))
        && e.in_flash(pc)
    {
        facts.push(fact(
            format!("vector table at the application base {}", hex(e.app_base)),
            format!("SP {} reset {}", hex(sp), hex(reset)),
            true,
        ));
        return named(
            "image-linked-for-another-base",
            "The words at the application base are no vector table for an application there: it was linked for another base.".into(),
            facts,
            e.snapshot.clone(),
        );
    }
    if vtor != 0 && e.in_flash(vtor) && vtor != e.app_base && e.app_base % align != 0 {
        facts.push(fact("VTOR", hex(vtor), true));
        facts.push(fact("application base", format!("{} (not {align}-byte aligned)", hex(e.app_base)), true));
        return named(
            "vtor-misaligned",
            format!(
                "VTOR reads {} but the application's table is at {}: VTOR cannot hold that address.",
                hex(vtor),
                hex(e.app_base)
            ),
            facts,
            e.snapshot.clone(),
        );
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
