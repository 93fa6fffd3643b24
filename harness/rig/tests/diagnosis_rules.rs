//! The diagnosis rules in isolation: synthetic evidence (what a probe reads on an STM32G071 /
//! G0B1, and what the rig did) for each failure class, the facts that make a rule name its cause,
//! and the neighbouring states in which it must stay silent. The healthy states at the end are the
//! "no false alarm" cases: a board doing what it should never gets a named cause.

use std::collections::BTreeMap;

use hil_chips::Chip;
use hil_rig::diagnosis::{CAUSES, Evidence, cause_ids, exception_frame, run_rules};

/// The G071 ROM's vector table as the virtual board builds it (`hil_virtual_board::system_memory`): what a
/// probe reads at 0x1FFF0000. Park loop, the exception stub of the ROM's own interrupts, the
/// default handler.
const ROM_SP: u32 = 0x2000_2700;
const ROM_RESET: u32 = 0x1FFF_0201;
const ROM_PARK: u32 = 0x1FFF_0214;
const ROM_EXC: u32 = 0x1FFF_0221;
const ROM_DEFAULT: u32 = 0x1FFF_0231;
/// The app fixture's words at 0x08000000 (initial SP, reset vector) and a PC inside it.
const APP_SP: u32 = 0x2000_9000;
const APP_RESET: u32 = 0x0800_0211;
const APP_PC: u32 = 0x0800_05BE;
/// FLASH_OPTR of the shipped virtual boards: RDP level 0, software IWDG, nBOOT_SEL = 0 (BOOT0
/// pin), nBOOT0 = 1, nBOOT1 = 1 (RM0444 3.7.8).
const OPTR: u32 = 0xFEFF_FEAA;
const NBOOT_SEL: u32 = 1 << 24;
const NBOOT0: u32 = 1 << 26;
/// RCC_CSR reset flags (RM0444 5.4.27).
const CSR_PIN: u32 = 1 << 26;
const CSR_PWR: u32 = 1 << 27;
const CSR_SFT: u32 = 1 << 28;
const CSR_IWDG: u32 = 1 << 29;

fn g071() -> &'static Chip {
    Chip::by_name("STM32G071RB").unwrap()
}

/// A board state: core registers and the chip's diagnosis registers, plus what the rig did.
struct State {
    regs: BTreeMap<String, u32>,
    app_base: u32,
    failure: String,
    last_go: Option<u32>,
    go_words: Option<(u32, u32)>,
    stacked_pc: Option<u32>,
    stacked_on_psp: bool,
    boot0_driven: Option<bool>,
    app_vectors: Option<(u32, u32)>,
    alias_words: Option<(u32, u32)>,
    rom_handler: Option<u32>,
    chip: &'static Chip,
    usb_step_failed: bool,
}

impl State {
    /// Thread mode, nothing active, the reset values of the diagnosis registers.
    fn new(pc: u32) -> State {
        let regs = [
            ("pc", pc),
            ("lr", 0xFFFF_FFFF),
            ("sp", ROM_SP),
            ("msp", ROM_SP),
            ("psp", 0),
            ("control", 0),
            ("primask", 0),
            ("xpsr", 0x0100_0000),
            ("vtor", 0),
            ("systick_csr", 0),
            ("nvic_iser0", 0),
            ("nvic_ispr0", 0),
            ("SYSCFG_CFGR1", 0),
            ("RCC_APBENR2", 0),
            ("RCC_CSR", 0),
            ("FLASH_ACR", 0x0004_0600),
            ("FLASH_OPTR", OPTR),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        State {
            regs,
            app_base: 0x0800_0000,
            failure: "no bootloader answer on /dev/pts/0: sync: no ACK or NACK to 0x7F after 3 attempts".into(),
            last_go: None,
            go_words: None,
            stacked_pc: None,
            stacked_on_psp: false,
            boot0_driven: None,
            app_vectors: Some((APP_SP, APP_RESET)),
            alias_words: Some((ROM_SP, ROM_RESET)),
            rom_handler: None,
            chip: g071(),
            usb_step_failed: false,
        }
    }
    fn set(mut self, name: &str, v: u32) -> State {
        self.regs.insert(name.into(), v);
        self
    }
    /// Handler mode in exception `n`, the frame's PC, and what the ROM's table has for `n`.
    fn handling(mut self, n: u32, stacked: u32) -> State {
        self.regs.insert("xpsr".into(), 0x0100_0000 | n);
        self.regs.insert("lr".into(), 0xFFFF_FFF9);
        self.stacked_pc = Some(stacked);
        self.rom_handler = Some(if n == 44 || n == 43 { ROM_EXC } else { ROM_DEFAULT });
        self
    }
    fn flash_at_zero(mut self) -> State {
        self.alias_words = Some((APP_SP, APP_RESET));
        self
    }
    fn failing(mut self, f: &str) -> State {
        self.failure = f.into();
        self
    }
    fn evidence(self) -> Evidence {
        let chip = self.chip;
        self.evidence_on(chip)
    }
    /// The same state read on another chip (its register names must be in `regs`).
    fn evidence_on(self, chip: &'static Chip) -> Evidence {
        Evidence {
            snapshot: self.regs,
            chip,
            app_base: self.app_base,
            failed_keyword: "expect-bootloader".into(),
            failure: self.failure,
            last_go: self.last_go,
            go_words: self.go_words,
            stacked_pc: self.stacked_pc,
            stacked_on_psp: self.stacked_on_psp,
            boot0_driven: self.boot0_driven,
            app_vectors: self.app_vectors,
            alias_words: self.alias_words,
            rom_words: Some((ROM_SP, ROM_RESET)),
            rom_handler: self.rom_handler,
            usb_step_failed: self.usb_step_failed,
        }
    }
    fn cause(self) -> String {
        run_rules(&self.evidence()).cause
    }
}

/// The named cause, and the facts that support it.
fn diagnose(s: State) -> (String, Vec<String>) {
    let d = run_rules(&s.evidence());
    let supporting = d.facts.iter().filter(|f| f.supports).map(|f| format!("{}: {}", f.name, f.value)).collect();
    (d.cause, supporting)
}

fn has(facts: &[String], needle: &str) -> bool {
    facts.iter().any(|f| f.contains(needle))
}

#[test]
fn causes_are_unique_and_listed_for_validation() {
    let ids = cause_ids();
    let mut seen = std::collections::BTreeSet::new();
    for c in CAUSES {
        assert!(seen.insert(c.id), "duplicate cause {}", c.id);
        assert!(!c.title.is_empty() && !c.fix.is_empty(), "{} needs a title and a fix", c.id);
    }
    assert!(ids.contains(&"unknown".to_string()));
    assert!(ids.contains(&"vtor-offset-not-updated".to_string()));
}

// ----- 1. PRIMASK -------------------------------------------------------------------------------

#[test]
fn primask_set_in_the_rom_after_a_jump() {
    // G0B1 after app command `p`: the ROM parks in Thread mode, PRIMASK = 1, its USART2
    // interrupt pending forever.
    let s = State::new(ROM_PARK).set("primask", 1).set("nvic_iser0", 1 << 28).set("nvic_ispr0", 1 << 28);
    let (cause, facts) = diagnose(s.flash_at_zero());
    assert_eq!(cause, "primask-set-at-jump");
    assert!(has(&facts, "PRIMASK: 1"), "{facts:?}");
    // PRIMASK beats the missing remap: with interrupts masked nothing is vectored at all.
    // After a Go the ROM is not what runs the application: another rule.
    let mut s = State::new(ROM_PARK).set("primask", 1);
    s.last_go = Some(0x0800_0000);
    s.go_words = Some((APP_SP, APP_RESET));
    assert_ne!(s.cause(), "primask-set-at-jump");
}

// ----- 2. PSP / ISR -----------------------------------------------------------------------------

#[test]
fn process_stack_at_the_jump() {
    // The ROM crashed (HardFault into its default handler); the frame sits on the PSP, which lies
    // in the RAM the ROM reserves for itself.
    let mut s = State::new(ROM_DEFAULT - 1).handling(3, 0x1FFF_0240).set("psp", 0x2000_01E0).set("lr", 0xFFFF_FFFD);
    s.stacked_on_psp = true;
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "psp-active-at-jump");
    assert!(has(&facts, "inside the RAM the ROM reserves"), "{facts:?}");
    // Still running on the PSP (a ROM that survives it) in Thread mode.
    let s = State::new(ROM_PARK).set("control", 0b10).set("psp", 0x2000_5000);
    assert_eq!(s.cause(), "psp-active-at-jump");
    // A HardFault whose frame is on the main stack is not this cause.
    let s = State::new(ROM_DEFAULT - 1).handling(3, 0x1FFF_0240);
    assert_ne!(s.cause(), "psp-active-at-jump");
}

#[test]
fn jump_from_inside_an_interrupt_handler() {
    // G0B1 after app command `i`: ROM code (its park loop) runs with USART2 (exception 44) active;
    // the ROM's vector for 44 is its USART handler, not where the core is. The frame found on
    // the ROM's fresh stack is junk (no plausible frame): no stacked PC.
    let mut s = State::new(ROM_PARK).handling(44, 0);
    s.stacked_pc = None;
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "jump-from-interrupt-handler");
    assert!(has(&facts, "IRQ 28 still active"), "{facts:?}");
    // The same exception number, but the core sits in the ROM's handler for it: the ROM took
    // the interrupt itself (not a jump from a handler).
    let s = State::new(ROM_DEFAULT - 1).handling(15, ROM_PARK);
    assert_ne!(s.cause(), "jump-from-interrupt-handler");
}

// ----- 3. remap / SYSCFG clock ------------------------------------------------------------------

#[test]
fn rom_interrupt_ran_the_applications_handler_without_the_remap() {
    // G0B1 after app command `n`: the USB interrupt (IRQ 8) taken in the ROM's park loop went
    // through VTOR = 0, where flash is mapped, into the application's default handler.
    let s = State::new(0x0800_037A).handling(24, ROM_PARK).set("RCC_APBENR2", 1).flash_at_zero();
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "remap-not-done");
    assert!(has(&facts, "flash is mapped there"), "{facts:?}");
    // App command `k`: the same, with the SYSCFG clock off.
    let s = State::new(0x0800_037A).handling(24, ROM_PARK).flash_at_zero();
    assert_eq!(s.cause(), "remap-with-syscfg-clock-off");
    // VTOR left at the application's table (a ROM that does not set VTOR).
    let s = State::new(0x0800_037A).handling(24, ROM_PARK).set("vtor", 0x0800_0000);
    assert_eq!(s.cause(), "vtor-points-to-application");
}

#[test]
fn rom_waiting_with_flash_at_zero_before_any_interrupt() {
    // Thread mode in the ROM, VTOR = 0, 0x0 shows the application: its interrupts will run the
    // application's handlers.
    let s = State::new(ROM_PARK).set("RCC_APBENR2", 1).flash_at_zero();
    assert_eq!(s.cause(), "remap-not-done");
    // The SYSCFG_CFGR1 register alone does not decide: with the clock off it reads 0 even when
    // system memory is mapped (BOOT0 boot); the words at 0x0 show the ROM here.
    let s = State::new(ROM_PARK).set("SYSCFG_CFGR1", 0);
    assert_eq!(s.cause(), "unknown");
}

// ----- 4. interrupt left enabled ----------------------------------------------------------------

#[test]
fn systick_or_a_peripheral_interrupt_left_enabled() {
    // App command `t`: SysTick taken through the ROM's table, the core loops in its default
    // handler, the frame shows the ROM's park loop.
    let s = State::new(ROM_DEFAULT + 1).handling(15, ROM_PARK).set("systick_csr", 0x0001_0007);
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "irq-left-enabled-at-jump");
    assert!(has(&facts, "SysTick CSR"), "{facts:?}");
    // App command `q`: EXTI4_15 (IRQ 7) enabled and pending.
    let s = State::new(ROM_DEFAULT - 1).handling(23, ROM_PARK).set("nvic_iser0", 1 << 7);
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "irq-left-enabled-at-jump");
    assert!(has(&facts, "NVIC ISER"), "{facts:?}");
    // SysTick taken while the jump code still ran (frame PC in the application): still this.
    let s = State::new(ROM_DEFAULT - 1).handling(15, APP_PC).set("systick_csr", 7);
    assert_eq!(s.cause(), "irq-left-enabled-at-jump");
    // A HardFault in the ROM is no interrupt left enabled.
    let s = State::new(ROM_DEFAULT - 1).handling(3, ROM_PARK);
    assert_ne!(s.cause(), "irq-left-enabled-at-jump");
}

// ----- 5. Go / leave without VTOR ---------------------------------------------------------------

#[test]
fn application_started_by_go_runs_the_roms_handlers() {
    let mut s = State::new(ROM_DEFAULT - 1).handling(15, APP_PC);
    s.last_go = Some(0x0800_0000);
    s.go_words = Some((APP_SP, APP_RESET));
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "vector-table-not-set-after-go");
    assert!(has(&facts, "the ROM's vector table"), "{facts:?}");
    // After Go the ROM in Thread mode (no exception) is not this cause.
    let mut s = State::new(ROM_PARK);
    s.last_go = Some(0x0800_0000);
    s.go_words = Some((APP_SP, APP_RESET));
    assert_ne!(s.cause(), "vector-table-not-set-after-go");
}

// ----- 6. Go to base + 4 ------------------------------------------------------------------------

#[test]
fn go_to_the_reset_vector_instead_of_the_table() {
    let mut s = State::new(0x0800_0B20);
    s.last_go = Some(0x0800_0004);
    s.go_words = Some((APP_RESET, 0x0800_0B1D));
    let d = run_rules(&s.evidence());
    assert_eq!(d.cause, "go-address-not-vector-table");
    assert!(d.explanation.contains("Go was given base + 4"), "{}", d.explanation);
    // A Go to a real vector table (SP word in SRAM) is not.
    let mut s = State::new(APP_PC);
    s.last_go = Some(0x0800_0200);
    s.go_words = Some((APP_SP, 0x0800_03B5));
    assert_ne!(s.cause(), "go-address-not-vector-table");
}

// ----- 7. behind a custom bootloader ------------------------------------------------------------

#[test]
fn application_behind_a_bootloader_with_vtor_on_the_bootloaders_table() {
    // app-stale-vtor at 0x08008000: VTOR = 0x08000000, its USART2 interrupt runs the
    // bootloader's default handler.
    let mut s = State::new(0x0800_0116).handling(44, 0x0800_85D4).set("vtor", 0x0800_0000);
    s.app_base = 0x0800_8000;
    s.app_vectors = Some((APP_SP, 0x0800_8211));
    s.rom_handler = Some(ROM_EXC);
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "vtor-offset-not-updated");
    assert!(has(&facts, "VTOR: 0x08000000"), "{facts:?}");
    // The bootloader itself waiting in its SysTick handler (no application): the interrupted
    // code is the bootloader's, VTOR = its own table.
    let mut s = State::new(0x0800_0120).handling(15, 0x0800_0300).set("vtor", 0x0800_0000);
    s.app_base = 0x0800_8000;
    s.app_vectors = Some((0xFFFF_FFFF, 0xFFFF_FFFF));
    s.rom_handler = Some(ROM_DEFAULT);
    assert_eq!(s.cause(), "unknown");
}

#[test]
fn words_at_the_application_base_are_no_table_for_it() {
    // Running from flash, the application base holds an image linked for 0x08000000.
    let mut s = State::new(0x0800_8400);
    s.app_base = 0x0800_8000;
    s.app_vectors = Some((APP_SP, APP_RESET));
    assert_eq!(s.cause(), "image-linked-for-another-base");
}

// ----- 9. boot latches --------------------------------------------------------------------------

#[test]
fn option_bits_select_the_rom() {
    let s = State::new(ROM_PARK).set("FLASH_OPTR", (OPTR | NBOOT_SEL) & !NBOOT0).set("RCC_CSR", CSR_PIN);
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "option-bits-select-rom");
    assert!(has(&facts, "nBOOT0: 0"), "{facts:?}");
    // Option bits for a flash boot, the ROM after a power-on (flash was blank then): no cause.
    let mut s = State::new(ROM_PARK).set("FLASH_OPTR", OPTR | NBOOT_SEL | NBOOT0).set("RCC_CSR", CSR_PIN | CSR_PWR);
    s.app_vectors = Some((0xFFFF_FFFF, 0xFFFF_FFFF));
    assert_eq!(s.cause(), "unknown");
}

#[test]
fn empty_check_latched_after_programming() {
    // G0B1: EMPTY still 1 from the power-on with blank flash, flash programmed since.
    let s = State::new(ROM_PARK).set("FLASH_ACR", 0x0005_0600).set("RCC_CSR", CSR_PIN);
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "empty-check-latched");
    assert!(has(&facts, "FLASH_ACR.EMPTY"), "{facts:?}");
    // Blank flash: the ROM is right to run.
    let mut s = State::new(ROM_PARK).set("FLASH_ACR", 0x0005_0600);
    s.app_vectors = Some((0xFFFF_FFFF, 0xFFFF_FFFF));
    assert_eq!(s.cause(), "unknown");
    // A ROM that cleared EMPTY (G07x V11.3), BOOT0 driven low, pin reset only: still the latch.
    let mut s = State::new(ROM_PARK).set("RCC_CSR", CSR_PIN);
    s.boot0_driven = Some(false);
    assert_eq!(s.cause(), "empty-check-latched");
    // ... but not after a power-on reset, which evaluates the empty check again.
    let mut s = State::new(ROM_PARK).set("RCC_CSR", CSR_PIN | CSR_PWR);
    s.boot0_driven = Some(false);
    assert_eq!(s.cause(), "unknown");
    // ... nor after a software reset (which pulses NRST as well): the application's reset
    // handler entering the ROM on purpose (the robust jump `b`) looks just like this.
    let mut s = State::new(ROM_PARK).set("RCC_CSR", CSR_PIN | CSR_SFT);
    s.boot0_driven = Some(false);
    assert_eq!(s.cause(), "unknown");
}

// ----- 10. watchdog -----------------------------------------------------------------------------

#[test]
fn independent_watchdog_reset() {
    // Hardware watchdog (IWDG_SW = 0): the LSI is forced on (LSIRDY without LSION).
    let s = State::new(ROM_PARK).set("RCC_CSR", CSR_PIN | CSR_IWDG | 0b10).set("FLASH_OPTR", OPTR & !(1 << 16));
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "watchdog-not-refreshed");
    assert!(has(&facts, "hardware watchdog"), "{facts:?}");
    assert!(has(&facts, "LSION / LSIRDY"), "{facts:?}");
    let s = State::new(ROM_PARK).set("RCC_CSR", CSR_PIN | 0b10).set("FLASH_OPTR", OPTR & !(1 << 16));
    assert_ne!(s.cause(), "watchdog-not-refreshed");
}

/// The remap causes' fix names the chip's own remap field, value and clock (chip data `remap`):
/// SYSCFG_CFGR1.MEM_MODE = 01 / RCC_APBENR2 on the G0 (RM0444 9.1.1), SYSCFG_MEMRMP.MEM_MODE = 001
/// / RCC_APB2ENR on the G4 (RM0440 9.1.1).
#[test]
fn remap_fix_names_the_chips_registers() {
    let d = run_rules(&State::new(ROM_PARK).flash_at_zero().evidence());
    assert_eq!(d.cause, "remap-with-syscfg-clock-off");
    assert_eq!(
        d.fix.as_deref(),
        Some("Enable the SYSCFG clock (RCC_APBENR2.SYSCFGEN) before writing SYSCFG_CFGR1.MEM_MODE = 01.")
    );
    let g474 = Chip::by_name("STM32G474RE").unwrap();
    let d = run_rules(&State::new(ROM_PARK).set("RCC_APB2ENR", 1).flash_at_zero().evidence_on(g474));
    assert_eq!(d.cause, "remap-not-done");
    assert_eq!(
        d.fix.as_deref(),
        Some(
            "Remap system memory to 0x0 (SYSCFG_MEMRMP.MEM_MODE = 001, with RCC_APB2ENR.SYSCFGEN set) before the jump."
        )
    );
}

// ----- 11. readout protection -------------------------------------------------------------------

/// On the F103 the level shows in FLASH_OBR.RDPRT (bit 1, PM0075 3.7; chip data
/// `readout_protection`), not in a G0 FLASH_OPTR.
#[test]
fn readout_protection_on_the_f1_reads_flash_obr() {
    let f103 = Chip::by_name("STM32F103CB").unwrap();
    let refused = "Read Memory (0x11): device answered NACK after the command bytes";
    let s = State::new(ROM_PARK).set("FLASH_OBR", 0x03FF_FFFE).failing(refused);
    let d = run_rules(&s.evidence_on(f103));
    assert_eq!(d.cause, "readout-protection-active");
    assert!(d.explanation.starts_with("FLASH_OBR.RDPRT = 0x01 is not level 0"), "{}", d.explanation);
    let s = State::new(ROM_PARK).set("FLASH_OBR", 0x03FF_FFFC).failing(refused);
    assert_ne!(run_rules(&s.evidence_on(f103)).cause, "readout-protection-active", "RDPRT clear");
}

#[test]
fn readout_protection_refuses_access() {
    let s = State::new(ROM_PARK)
        .set("FLASH_OPTR", (OPTR & !0xFF) | 0xBB)
        .failing("Extended Erase (0x44): device answered NACK after the command bytes");
    let (cause, facts) = diagnose(s);
    assert_eq!(cause, "readout-protection-active");
    assert!(has(&facts, "0xbb (level 1)"), "{facts:?}");
    // Level 1, but the failure was no refused access (a timeout): look further.
    let s = State::new(ROM_PARK).set("FLASH_OPTR", (OPTR & !0xFF) | 0xBB);
    assert_ne!(s.cause(), "readout-protection-active");
    // Level 0 and a NACK: not protection.
    let s = State::new(ROM_PARK).failing("Write Memory (0x31): device answered NACK after the address");
    assert_ne!(s.cause(), "readout-protection-active");
}

// ----- 12. USB left enabled at the jump (seed 004) ------------------------------------------------

/// The G474 after the application's jump, as a probe reads it: in the ROM, remapped, and the
/// USB registers (chip data `diagnosis.usb`: RCC_APB1ENR1.USBEN 23, USB_BCDR.DPPU 15, USB_CNTR
/// PDWN 1 / FRES 0) and the NVIC word of the USB interrupt (IRQ 20, RM0440 Table 97) as given.
fn g474_in_rom(usben: bool, cntr: u32, bcdr: u32, usb_irq_enabled: bool) -> State {
    let mut s = State::new(ROM_PARK)
        .set("SYSCFG_MEMRMP", 1)
        .set("RCC_APB2ENR", 1)
        .set("FLASH_OPTR", 0xFFEF_F8AA)
        .set("RCC_APB1ENR1", if usben { 1 << 23 } else { 0 })
        .set("USB_CNTR", cntr)
        .set("USB_BCDR", bcdr)
        .set("nvic_iser0", if usb_irq_enabled { 1 << 20 } else { 0 })
        .failing("no DfuSe device answered: GET_STATUS timed out");
    s.chip = Chip::by_name("STM32G474RE").unwrap();
    s.usb_step_failed = true;
    s
}

#[test]
fn usb_device_left_attached_by_the_application() {
    let (cause, facts) = diagnose(g474_in_rom(true, 0, 1 << 15, false));
    assert_eq!(cause, "usb-left-enabled");
    assert!(has(&facts, "RCC_APB1ENR1.USBEN: 1"), "{facts:?}");
    assert!(has(&facts, "USB_BCDR.DPPU: 1"), "{facts:?}");
    assert!(has(&facts, "USB_CNTR.PDWN: 0") && has(&facts, "USB_CNTR.FRES: 0"), "{facts:?}");
    assert!(has(&facts, "USB interrupt (IRQ 20): disabled"), "{facts:?}");
    // Detached first (pull-up off, FRES | PDWN, clock off): not this cause.
    assert_ne!(g474_in_rom(false, 0b11, 0, false).cause(), "usb-left-enabled");
    // Pull-up still on but the peripheral held in reset and powered down: not attached.
    assert_ne!(g474_in_rom(true, 0b11, 1 << 15, false).cause(), "usb-left-enabled");
    // The ROM's own DFU device (its interrupt enabled): the USB device is served.
    assert_ne!(g474_in_rom(true, (1 << 15) | (1 << 10), 1 << 15, true).cause(), "usb-left-enabled");
    // A USART step that failed, or the audit of a passing scenario: not a DFU failure.
    let mut s = g474_in_rom(true, 0, 1 << 15, false);
    s.usb_step_failed = false;
    assert_ne!(s.cause(), "usb-left-enabled");
    // The same registers on a chip without `diagnosis.usb` in its data: the rule cannot look.
    let mut s = g474_in_rom(true, 0, 1 << 15, false);
    s.chip = g071();
    assert_ne!(s.cause(), "usb-left-enabled");
}

// ----- no false alarms --------------------------------------------------------------------------

#[test]
fn healthy_states_name_no_cause() {
    // The ROM after a BOOT0 boot: system memory at 0x0, VTOR 0, Thread mode on MSP.
    let mut s = State::new(ROM_PARK).set("RCC_CSR", CSR_PIN | CSR_PWR);
    s.boot0_driven = Some(true);
    assert_eq!(s.cause(), "unknown", "ROM after a BOOT0 boot");
    // The ROM after the recommended jump (`j`): remapped, SYSCFG clock on.
    let s = State::new(ROM_PARK).set("SYSCFG_CFGR1", 1).set("RCC_APBENR2", 1);
    assert_eq!(s.cause(), "unknown", "ROM after the recommended jump");
    // The ROM serving its own USART interrupt (the core caught in its handler).
    let s = State::new(ROM_EXC - 1).handling(44, ROM_PARK);
    assert_eq!(s.cause(), "unknown", "ROM in its USART handler");
    // The application running from flash, in its SysTick handler, VTOR on its table.
    let s = State::new(0x0800_0400).handling(15, APP_PC).set("vtor", 0x0800_0000).flash_at_zero();
    assert_eq!(s.cause(), "unknown", "application in its SysTick handler");
    // The application behind the custom bootloader, VTOR on its own table.
    let mut s = State::new(0x0800_8400).handling(15, 0x0800_85D4).set("vtor", 0x0800_8000);
    s.app_base = 0x0800_8000;
    s.app_vectors = Some((APP_SP, 0x0800_8211));
    assert_eq!(s.cause(), "unknown", "application behind the bootloader");
    // The application started by Go to its trampoline: a fresh reset, VTOR 0 with flash at 0x0.
    let mut s = State::new(APP_PC).flash_at_zero();
    s.last_go = Some(0x0800_0200);
    s.go_words = Some((APP_SP, 0x0800_03B5));
    assert_eq!(s.cause(), "unknown", "application after the trampoline");
}

// ----- the exception frame ----------------------------------------------------------------------

fn memory(words: &[(u32, u32)]) -> impl FnMut(u32) -> Option<u32> + '_ {
    move |a| words.iter().find(|(at, _)| *at == a).map(|(_, v)| *v).or(Some(0))
}

#[test]
fn exception_frame_at_entry_after_pushes_and_on_the_process_stack() {
    // Right at entry: EXC_RETURN in LR, frame at MSP (PC at +24, xPSR with T at +28).
    let m = [(0x2000_3FE0 + 24, ROM_PARK), (0x2000_3FE0 + 28, 0x0100_0000)];
    let f = exception_frame(0xFFFF_FFF9, 0x2000_3FE0, 0, 24, memory(&m)).unwrap();
    assert_eq!((f.address, f.pc, f.on_psp), (0x2000_3FE0, ROM_PARK, false));
    // The handler pushed {r7, lr}: SP moved 8 bytes down, EXC_RETURN saved at SP + 4.
    let m = [(0x2000_3FD8 + 4, 0xFFFF_FFF9), (0x2000_3FE0 + 24, ROM_PARK), (0x2000_3FE0 + 28, 0x0100_0000)];
    let f = exception_frame(0x0800_0123, 0x2000_3FD8, 0, 24, memory(&m)).unwrap();
    assert_eq!((f.address, f.pc), (0x2000_3FE0, ROM_PARK));
    // Thread mode on the PSP interrupted: the frame is on the PSP.
    let m = [(0x2000_01C0 + 24, 0x1FFF_0240), (0x2000_01C0 + 28, 0x0100_0000)];
    let f = exception_frame(0xFFFF_FFFD, 0x2000_2700, 0x2000_01C0, 3, memory(&m)).unwrap();
    assert_eq!((f.pc, f.on_psp), (0x1FFF_0240, true));
    // No EXC_RETURN anywhere (the MSP was reloaded by a jump from a handler): no frame.
    assert_eq!(exception_frame(0x0800_0123, 0x2000_4000, 0, 44, memory(&[])), None);
}
