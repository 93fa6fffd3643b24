//! Application fixture for the STM32G071 (runs on the virtual board and on a Nucleo-G071RB).
//!
//! - Prints a banner on USART2 (115200 8N1, PA2/PA3: the Nucleo's ST-Link virtual COM port,
//!   UM2324) with its link base, VTOR, a boot counter kept in a no-init RAM marker, and the
//!   RCC_CSR reset flags (then clears them with RMVF).
//! - Blinks the LED (PA5) from the SysTick interrupt: toggles every 100 ms, and refreshes the
//!   independent watchdog there (a no-op unless the IWDG runs, e.g. with the hardware watchdog
//!   option IWDG_SW = 0, RM0444 26.3.2).
//! - A second vector table at base + 0x200, the **trampoline** (seed 004): same initial SP, its
//!   reset handler only requests a system reset. The ROM's Go / DFU leave to it restarts the chip
//!   into this application from a clean reset.
//! - Answers one-byte commands received by the USART2 interrupt:
//!   `v` version and base, `r` reset (SYSRESETREQ), `m` marker, `b` the robust way into the
//!   system bootloader (magic word in no-init RAM, SYSRESETREQ, jump first thing in Reset_Handler
//!   with the remap), `j` the direct jump done right (NVIC sources off and pending cleared, SysTick
//!   off, system memory remapped with the SYSCFG clock on, VTOR = 0, MSP selected, PRIMASK
//!   cleared), `S` the same jump from a task running on the process stack, done right (CONTROL
//!   cleared first), `J` the jump as ST's KB article publishes it (as `j`, but VTOR left at the
//!   application's table: right only with a ROM that sets VTOR itself), `w` let the IWDG reset the
//!   chip, `o` option byte reload (OBL_LAUNCH), `?` help.
//! - The direct jump with one mistake each (conformance failure classes, reference
//!   bootloader-protocols.md section 5): `p` PRIMASK left set (the ST KB code without the final
//!   `__enable_irq()`, and without the remap or stopping SysTick: pitfall P2, seed 002), `s` from a
//!   task on the PSP with CONTROL.SPSEL left at 1 (P5), `i` from inside the USART2 interrupt handler
//!   (P5), `n` system memory not remapped (P1/P4), `k` remap written with the SYSCFG clock off (P4),
//!   `t` SysTick left running (P2), `q` a peripheral interrupt (EXTI4_15) left enabled and pending
//!   (P2).
//!
//! Build variants (cargo features, fixtures.toml): without `set-vtor` the image never sets VTOR
//! (seed 004's application); `stale-vtor-offset` sets VTOR = FLASH_BASE + VECT_TAB_OFFSET with the
//! offset left at 0 although the image is linked behind a bootloader (pitfall P10);
//! `ram-segment` adds a loaded section in RAM (seed 001); `no-watchdog-refresh` never refreshes
//! the IWDG.
//!
//! Direct register access (RM0444); no HAL.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use cortex_m_rt::{entry, exception};

use g0_board::reg::*;
use g0_board::{HCLK, LED_PIN, flush, modify, put_dec, put_hex, puts, rd, wr};

/// RM0444 9.1.1 SYSCFG_CFGR1 (MEM_MODE[1:0]: 00 main flash, 01 system memory at 0x00000000).
const SYSCFG_CFGR1: u32 = 0x4001_0000;
/// RM0444 26.4.1 IWDG_KR.
const IWDG_KR: u32 = 0x4000_3000;
const FLASH_KEYR: u32 = 0x4002_2008;
const FLASH_OPTKEYR: u32 = 0x4002_200C;
const FLASH_CR: u32 = 0x4002_2014;
/// Main flash (RM0444 2.2 memory map): FLASH_BASE of the CMSIS device header.
#[cfg(feature = "stale-vtor-offset")]
const FLASH_BASE: u32 = 0x0800_0000;
/// System memory (the ROM bootloader's vector table), AN2606 / RM0444 3.3.1.
const SYSTEM_MEMORY: u32 = 0x1FFF_0000;
/// RM0444 12.3 Table 55: EXTI lines 4..15 (the Nucleo's user button B1 is PC13) and USART2.
const EXTI4_15_IRQ: u32 = 7;
const USART2_IRQ: u32 = 28;

const MARKER_MAGIC: u32 = 0xB007_C0DE;
const JUMP_MAGIC: u32 = 0x0B00_710A;

/// Survives every reset but power-on (cortex-m-rt leaves `.uninit` alone): [magic, boot count,
/// jump request].
#[unsafe(link_section = ".uninit.MARKER")]
static mut MARKER: MaybeUninit<[u32; 3]> = MaybeUninit::uninit();

static mut TICKS: u32 = 0;
/// Set by `w`: stop refreshing the IWDG so that it resets the chip.
static mut LET_WATCHDOG_EXPIRE: bool = false;
const RX_LEN: usize = 16;
static mut RX: [u8; RX_LEN] = [0; RX_LEN];
static mut RX_HEAD: usize = 0;
static mut RX_TAIL: usize = 0;
/// The stack of the "RTOS task" for `s` / `S`: in .bss, low in SRAM, as task stacks allocated by
/// an RTOS are (inside the RAM the ROM reserves for itself: 0x20000000-0x20002700 on G071,
/// -0x20004000 on G0B1, stm32flash dev_table ram_start).
static mut TASK_STACK: [u64; 64] = [0; 64];

/// The VECT_TAB_OFFSET of a CubeMX SystemInit that nobody updated when the application moved
/// behind a bootloader (pitfall P10).
#[cfg(feature = "stale-vtor-offset")]
const VECT_TAB_OFFSET: u32 = 0x0;

/// Seed 001: a variable in a RAM section the linker script forgot to mark NOLOAD, so the ELF
/// carries a load segment at a RAM address (build.rs adds the section for this feature).
#[cfg(feature = "ram-segment")]
#[used]
#[unsafe(link_section = ".uninit_data")]
static mut BOOT_KEY: [u32; 3] = [0x4B45_5931, 0, 0];

unsafe extern "C" {
    static __vector_table: u32;
    /// Initial stack pointer of the main vector table (cortex-m-rt link.x).
    static _stack_start: u32;
}

/// Marker word `i` (volatile: the static has no initial value, so the compiler must not assume
/// what it holds).
fn mget(i: usize) -> u32 {
    // SAFETY: i < 3; the marker is plain RAM.
    unsafe { read_volatile(addr_of_mut!(MARKER).cast::<u32>().add(i)) }
}

fn mset(i: usize, v: u32) {
    // SAFETY: as above.
    unsafe { write_volatile(addr_of_mut!(MARKER).cast::<u32>().add(i), v) }
}

fn base() -> u32 {
    // Only the address of the linker-provided symbol is taken.
    addr_of!(__vector_table) as u32
}

// The robust way into the ROM, part 2 (pitfall P3; ST KB "jump to system bootloader", seed 002's
// FreeRTOS answer): cortex-m-rt calls `__pre_init` first thing in Reset_Handler, before RAM is
// initialised and before any clock or peripheral is touched. When the `b` command left the jump
// request in the no-init marker, clear it, map system memory at 0x0 (SYSCFG clock on first,
// RM0444 5.4.15 / 9.1.1; the ROM's interrupts then vector into the ROM, P4), point VTOR at that
// table, and branch with MSP and PC from the ROM's vector table. The core comes straight from
// reset: thread mode on the MSP, PRIMASK clear, NVIC and SysTick off.
#[cfg(target_arch = "arm")]
core::arch::global_asm!(
    ".section .text.__pre_init,\"ax\"",
    ".global __pre_init",
    ".type __pre_init,%function",
    ".thumb_func",
    "__pre_init:",
    "ldr r0, ={marker}",
    "ldr r1, [r0, #8]",
    "ldr r2, ={magic}",
    "cmp r1, r2",
    "bne 1f",
    "movs r1, #0",
    "str r1, [r0, #8]",
    // RCC_APBENR2.SYSCFGEN = 1
    "ldr r0, ={apbenr2}",
    "ldr r1, [r0]",
    "movs r2, #1",
    "orrs r1, r2",
    "str r1, [r0]",
    // SYSCFG_CFGR1.MEM_MODE = 01
    "ldr r0, ={cfgr1}",
    "ldr r1, [r0]",
    "movs r2, #3",
    "bics r1, r2",
    "movs r2, #1",
    "orrs r1, r2",
    "str r1, [r0]",
    "dsb",
    "isb",
    // VTOR = 0x00000000: the ROM's table through the alias
    "ldr r0, ={vtor}",
    "movs r1, #0",
    "str r1, [r0]",
    // MSP = [ROM], PC = [ROM + 4]
    "ldr r0, ={rom}",
    "ldr r1, [r0]",
    "msr msp, r1",
    "ldr r1, [r0, #4]",
    "bx r1",
    "1:",
    "bx lr",
    ".ltorg",
    ".size __pre_init, . - __pre_init",
    marker = sym MARKER,
    magic = const JUMP_MAGIC,
    apbenr2 = const RCC_APBENR2,
    cfgr1 = const SYSCFG_CFGR1,
    vtor = const SCB_VTOR,
    rom = const SYSTEM_MEMORY,
);

/// How the direct jump enters the ROM: the recommended way, or with one mistake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Jump {
    /// `j` / `S`: everything right.
    Recommended,
    /// `J`: as ST's KB article publishes it: everything of `j` but VTOR, which keeps pointing at
    /// the application's table (right only with a ROM that sets VTOR itself).
    KbVtorUntouched,
    /// `n`: SYSCFG clock on (as CubeMX's HAL_MspInit leaves it) but MEM_MODE never written.
    NoRemap,
    /// `k`: MEM_MODE written while the SYSCFG clock is off: the write is lost (P4).
    RemapClockOff,
    /// `t`: SysTick left counting with its interrupt enabled.
    SysTickLeftOn,
    /// `q`: a peripheral interrupt line left enabled and pending.
    IrqLeftPending,
    /// `s`: CONTROL.SPSEL left at 1: the ROM runs on the task's stack.
    KeepPsp,
}

/// The direct jump into the ROM (ST KB "How to jump to system bootloader from application code";
/// pitfalls P2, P4, P5 of the bootloader notes), or one of its classic mistakes.
fn jump_to_bootloader(how: Jump) -> ! {
    // Nothing may interrupt the teardown.
    cortex_m::interrupt::disable();
    if how != Jump::SysTickLeftOn {
        wr(SYST_CSR, 0);
        wr(SYST_RVR, 0);
        wr(SYST_CVR, 0);
        wr(SCB_ICSR, 1 << 25); // PENDSTCLR
    }
    // Every NVIC source off, nothing pending (P2: "clear the Interrupt Enable and Pending
    // registers").
    wr(NVIC_ICER, 0xFFFF_FFFF);
    wr(NVIC_ICPR, 0xFFFF_FFFF);
    if how == Jump::IrqLeftPending {
        // Stands for the user button's EXTI line, enabled by the application and hit just before
        // the jump.
        wr(NVIC_ISER, 1 << EXTI4_15_IRQ);
        wr(NVIC_ISPR, 1 << EXTI4_15_IRQ);
    }
    // The application's USART back to its reset state (RM0444 5.4.11), so the ROM starts its
    // interface from defaults.
    modify(RCC_APBRSTR1, 0, 1 << 17);
    modify(RCC_APBRSTR1, 1 << 17, 0);
    if how != Jump::RemapClockOff {
        modify(RCC_APBENR2, 0, 1); // SYSCFGEN
    }
    if how != Jump::NoRemap {
        modify(SYSCFG_CFGR1, 3, 1); // MEM_MODE = system flash
    }
    // The table at 0x0 is the ROM's once system memory is mapped there.
    if how != Jump::KbVtorUntouched {
        wr(SCB_VTOR, 0);
    }
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
    // SAFETY: every interrupt source is off (except the deliberate mistakes); the ROM's USART and
    // USB interfaces need interrupts (pitfall P2).
    unsafe { cortex_m::interrupt::enable() };
    let sp = rd(SYSTEM_MEMORY);
    let pc = rd(SYSTEM_MEMORY + 4);
    if how == Jump::KeepPsp {
        // `__set_MSP(sp); SysMemBootJump();` as in seed 002's code: MSP is loaded, but thread
        // mode keeps running on the PSP.
        // SAFETY: branches into the ROM for good.
        unsafe {
            core::arch::asm!("msr msp, {sp}", "bx {pc}", sp = in(reg) sp, pc = in(reg) pc | 1, options(noreturn, nostack))
        }
    }
    // SAFETY: clears CONTROL.SPSEL (MSP), loads MSP and branches: the ROM's reset handler.
    unsafe { cortex_m::asm::bootstrap(sp as *const u32, pc as *const u32) }
}

/// The `s` / `S` jumps run here, in thread mode on the process stack (an RTOS task).
extern "C" fn jump_from_task_keeping_psp() -> ! {
    jump_to_bootloader(Jump::KeepPsp)
}

extern "C" fn jump_from_task() -> ! {
    jump_to_bootloader(Jump::Recommended)
}

/// Switch thread mode to the process stack (CONTROL.SPSEL = 1, ISB: PM0223 2.1.3) on the task
/// stack and continue in `task`.
fn run_on_process_stack(task: extern "C" fn() -> !) -> ! {
    let top = addr_of_mut!(TASK_STACK) as u32 + core::mem::size_of::<[u64; 64]>() as u32;
    // SAFETY: the task never returns; the task stack is used by nothing else.
    unsafe {
        core::arch::asm!(
            "msr psp, {top}",
            "movs {t}, #2",
            "msr control, {t}",
            "isb",
            "bx {task}",
            top = in(reg) top,
            // A scratch register: `out(reg) _` is not allowed with `noreturn` (as in cortex-m's
            // `bootstrap`); nothing runs after this block to see it changed.
            t = in(reg) 0,
            task = in(reg) task as usize | 1,
            options(noreturn),
        )
    }
}

/// The trampoline's reset handler (seed 004): request a system reset (AIRCR.SYSRESETREQ with the
/// VECTKEY, PM0223 4.3.5) and wait for it. It needs nothing but the stack the trampoline's SP
/// word provides.
extern "C" fn trampoline_reset() -> ! {
    wr(SCB_AIRCR, 0x05FA_0004);
    cortex_m::asm::dsb();
    loop {
        cortex_m::asm::nop();
    }
}

/// The main commands (`?`); the faulty jumps are listed in the module documentation.
fn help() {
    puts(
        "cmds: v version, r reset, m marker, j jump to ROM, p jump with PRIMASK=1, b reset+jump, w watchdog, o OBL\r\n",
    );
}

fn announce_jump() {
    puts("jump\r\n");
    flush();
}

fn command(c: u8) {
    match c {
        b'v' => {
            puts("hil-app ");
            puts(env!("CARGO_PKG_VERSION"));
            puts(" base=");
            put_hex(base());
            puts("\r\n");
        }
        b'r' => {
            puts("reset\r\n");
            flush();
            cortex_m::peripheral::SCB::sys_reset();
        }
        b'm' => {
            puts("marker ");
            put_hex(mget(0));
            puts(" boots=");
            put_dec(mget(1));
            puts("\r\n");
        }
        b'j' => {
            announce_jump();
            jump_to_bootloader(Jump::Recommended);
        }
        b'J' => {
            announce_jump();
            jump_to_bootloader(Jump::KbVtorUntouched);
        }
        b'p' => {
            announce_jump();
            // `__disable_irq()` and the jump, nothing else (pitfall P2).
            cortex_m::interrupt::disable();
            // SAFETY: system memory holds the ROM's vector table.
            unsafe { cortex_m::asm::bootload(SYSTEM_MEMORY as *const u32) }
        }
        b'n' => {
            announce_jump();
            jump_to_bootloader(Jump::NoRemap);
        }
        b'k' => {
            announce_jump();
            jump_to_bootloader(Jump::RemapClockOff);
        }
        b't' => {
            announce_jump();
            jump_to_bootloader(Jump::SysTickLeftOn);
        }
        b'q' => {
            announce_jump();
            jump_to_bootloader(Jump::IrqLeftPending);
        }
        b's' => {
            announce_jump();
            run_on_process_stack(jump_from_task_keeping_psp);
        }
        b'S' => {
            announce_jump();
            run_on_process_stack(jump_from_task);
        }
        b'b' => {
            puts("reset+jump\r\n");
            flush();
            mset(2, JUMP_MAGIC);
            cortex_m::peripheral::SCB::sys_reset();
        }
        b'w' => {
            puts("watchdog\r\n");
            flush();
            // SAFETY: only main reads or writes it outside SysTick, which only reads it.
            unsafe { write_volatile(addr_of_mut!(LET_WATCHDOG_EXPIRE), true) };
            // IWDG: /4 prescaler, reload 0x40: about 8 ms at 32 kHz, then never refreshed.
            wr(IWDG_KR, 0xCCCC);
            wr(IWDG_KR, 0x5555);
            wr(IWDG_KR + 0x04, 0);
            wr(IWDG_KR + 0x08, 0x40);
            wr(IWDG_KR, 0xAAAA);
        }
        b'o' => {
            puts("obl\r\n");
            flush();
            wr(FLASH_KEYR, 0x4567_0123);
            wr(FLASH_KEYR, 0xCDEF_89AB);
            wr(FLASH_OPTKEYR, 0x0819_2A3B);
            wr(FLASH_OPTKEYR, 0x4C5D_6E7F);
            modify(FLASH_CR, 0, 1 << 27); // OBL_LAUNCH
        }
        b'?' => help(),
        b'\r' | b'\n' => {}
        _ => puts("?\r\n"),
    }
}

fn pop() -> Option<u8> {
    cortex_m::interrupt::free(|_| {
        // SAFETY: the ring is shared with the USART2 handler only inside critical sections.
        unsafe {
            if RX_TAIL == RX_HEAD {
                None
            } else {
                let b = RX[RX_TAIL];
                RX_TAIL = (RX_TAIL + 1) % RX_LEN;
                Some(b)
            }
        }
    })
}

#[entry]
fn main() -> ! {
    // SystemInit of a CubeMX project (system_stm32xxxx.c) that was not told the application
    // moved: SCB->VTOR = FLASH_BASE | VECT_TAB_OFFSET.
    #[cfg(feature = "stale-vtor-offset")]
    wr(SCB_VTOR, FLASH_BASE | VECT_TAB_OFFSET);

    if mget(0) == MARKER_MAGIC {
        mset(1, mget(1).wrapping_add(1));
    } else {
        mset(0, MARKER_MAGIC);
        mset(1, 1);
        mset(2, 0);
    }

    // USART2 115200 8N1 with its receive interrupt, PA5 output (LED).
    use g0_board::cr1::{RE, RXNEIE, TE, UE};
    g0_board::console_init(true, UE | RE | TE | RXNEIE);

    let csr = rd(RCC_CSR);
    puts("\r\nhil-app ");
    puts(env!("CARGO_PKG_VERSION"));
    puts(" base=");
    put_hex(base());
    puts(" vtor=");
    put_hex(rd(SCB_VTOR));
    puts(" boots=");
    put_dec(mget(1));
    puts(" csr=");
    put_hex(csr);
    puts(" [");
    for (bit, name) in
        [(25, " OBL"), (26, " PIN"), (27, " PWR"), (28, " SFT"), (29, " IWDG"), (30, " WWDG"), (31, " LPWR")]
    {
        if csr & (1 << bit) != 0 {
            puts(name);
        }
    }
    puts(" ]\r\n");
    modify(RCC_CSR, 0, 1 << 23); // RMVF

    // SysTick: 1 ms from the core clock.
    wr(SYST_RVR, HCLK / 1000 - 1);
    wr(SYST_CVR, 0);
    wr(SYST_CSR, 0b111); // CLKSOURCE = core, TICKINT, ENABLE
    wr(NVIC_ISER, 1 << USART2_IRQ);
    // SAFETY: handlers and main share data only in critical sections.
    unsafe { cortex_m::interrupt::enable() };

    loop {
        while let Some(c) = pop() {
            command(c);
        }
        cortex_m::asm::wfi();
    }
}

#[exception]
fn SysTick() {
    // SAFETY: TICKS is only used here; LET_WATCHDOG_EXPIRE is a flag main sets once.
    let (t, expire) = unsafe {
        TICKS = TICKS.wrapping_add(1);
        (TICKS, read_volatile(addr_of!(LET_WATCHDOG_EXPIRE)))
    };
    if t % 100 == 0 {
        let on = rd(GPIOA_ODR) & (1 << LED_PIN) != 0;
        wr(GPIOA_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
        // Reload the IWDG (RM0444 26.4.1 key 0xAAAA); without a running IWDG this does nothing.
        if !expire && !cfg!(feature = "no-watchdog-refresh") {
            wr(IWDG_KR, 0xAAAA);
        }
    }
}

extern "C" fn usart2_irq() {
    let isr = rd(USART_ISR);
    if isr & (1 << 5) != 0 {
        let b = rd(USART_RDR) as u8;
        if b == b'i' {
            // The jump from inside the interrupt handler (pitfall P5): the USART2 exception stays
            // active while the ROM runs.
            announce_jump();
            jump_to_bootloader(Jump::Recommended);
        }
        // SAFETY: exception handlers do not nest with themselves; main reads in a critical section.
        unsafe {
            let next = (RX_HEAD + 1) % RX_LEN;
            if next != RX_TAIL {
                RX[RX_HEAD] = b;
                RX_HEAD = next;
            }
        }
    }
    if isr & (1 << 3) != 0 {
        wr(USART_ICR, 1 << 3); // ORECF
    }
}

extern "C" fn default_irq() {
    loop {
        cortex_m::asm::wfi();
    }
}

/// One entry of a vector table.
#[derive(Clone, Copy)]
#[repr(C)]
pub union Vector {
    handler: unsafe extern "C" fn(),
    diverging: extern "C" fn() -> !,
    stack: *const u32,
    reserved: u32,
}

// SAFETY: the vector tables are read-only data in flash.
unsafe impl Sync for Vector {}

/// The 32 external interrupt vectors of the STM32G071 (RM0444 12.3 Table 55).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; 32] = {
    let mut v = [Vector { handler: default_irq }; 32];
    v[USART2_IRQ as usize] = Vector { handler: usart2_irq };
    v
};

/// The trampoline (seed 004: "a second vector table located at 0x08000200 [that] only contains
/// the stack pointer address and the reset handler"): the application's initial SP and a reset
/// handler that requests a system reset. build.rs places it at base + 0x200.
#[unsafe(link_section = ".trampoline")]
#[unsafe(no_mangle)]
#[used]
pub static __TRAMPOLINE: [Vector; 2] =
    [Vector { stack: &raw const _stack_start }, Vector { diverging: trampoline_reset }];

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    cortex_m::asm::udf()
}
