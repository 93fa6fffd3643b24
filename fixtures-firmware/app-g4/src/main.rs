//! Application fixture for the STM32G474 (runs on the virtual G474 and on a NUCLEO-G474RE).
//! Built for thumbv7em-none-eabi (soft float: no FPU instructions).
//!
//! - Prints the same banner as the G0 `app` fixture, on USART2 (115200 8N1, PA2/PA3: the
//!   Nucleo's virtual COM port and a ROM bootloader port, AN2606), with its link base, VTOR, a
//!   boot counter kept in a no-init RAM marker, and the RCC_CSR reset flags (then clears them
//!   with RMVF, RM0440 7.4.29).
//! - Blinks the LED (PA5) from SysTick every 100 ms and refreshes the IWDG there.
//! - A trampoline vector table at base + 0x200 (seed 004): the application's initial SP and a
//!   reset handler that requests a system reset.
//! - One-byte commands from the USART2 receive interrupt: `v` version and base, `r` reset
//!   (SYSRESETREQ), `m` marker, `j` the jump into the ROM done right (NVIC sources off and pending
//!   cleared, SysTick off, system memory remapped at 0 with SYSCFG_MEMRMP (RM0440 9.1.1), VTOR = 0
//!   (the ROM's table through the alias), MSP and PC from the ROM's vector table), `S` the same from a task on the process stack (CONTROL cleared),
//!   `b` reset then jump first thing in Reset_Handler, `w` let the IWDG reset the chip, `?` help.
//! - `n` the jump without the remap, `k` the remap written with the SYSCFG clock off (P4).
//! - The jump with one mistake each, as the G0 `app` fixture has them (conformance classes): `p`
//!   PRIMASK left set, `J` VTOR left at the application's table, `t` SysTick left running, `q` a
//!   peripheral interrupt (EXTI15_10) left enabled and pending, `s` CONTROL.SPSEL left at 1.
//! - `o`: option byte loading (OBL_LAUNCH). Feature `no-watchdog-refresh`: never reloads the IWDG.
//! - Seed 004 (USB left enabled at the jump): `u` starts the application's USB device as a USB
//!   stack leaves it once enumerated (RCC_APB1ENR1.USBEN, USB_CNTR out of power-down and reset,
//!   D+ pull-up USB_BCDR.DPPU on: RM0440 45.6.1); the jump commands above leave it as it is. `d`
//!   detaches it first (pull-up off, USB_CNTR FRES | PDWN, RCC_APB1RSTR1.USBRST pulse, USBEN off)
//!   and then jumps the recommended way.
//! - Feature `set-vtor` (default): cortex-m-rt points VTOR at this image; without it the image
//!   never sets VTOR (seed 004's application).
//!
//! Direct register access (RM0440); no HAL.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use cortex_m_rt::{entry, exception};

use g4_board::reg::*;
use g4_board::{HCLK, LED_PIN, SYSTEM_MEMORY, USART2_IRQ, flush, modify, put_dec, put_hex, puts, rd, wr};

/// RM0440 5.7 FLASH registers.
const FLASH_KEYR: u32 = 0x4002_2008;
const FLASH_OPTKEYR: u32 = 0x4002_200C;
const FLASH_CR: u32 = 0x4002_2014;
const MARKER_MAGIC: u32 = 0xB007_C0DE;
const JUMP_MAGIC: u32 = 0x0B00_710A;
/// RM0440 16.3 Table 97: EXTI lines 15..10 (the Nucleo's user button is PC13).
const EXTI15_10_IRQ: u32 = 40;
/// External interrupts of the STM32G474 (RM0440 16.3 Table 97: up to FMAC, IRQ 101).
const IRQS: usize = 102;

/// Survives every reset but power-on: [magic, boot count, jump request].
#[unsafe(link_section = ".uninit.MARKER")]
static mut MARKER: MaybeUninit<[u32; 3]> = MaybeUninit::uninit();
/// Set by `w`: stop refreshing the IWDG.
static mut LET_WATCHDOG_EXPIRE: bool = false;
/// The stack of the "RTOS task" for `s` / `S`: in .bss, low in SRAM as RTOS task stacks are
/// (inside the RAM the ROM reserves for itself, stm32flash dev_table ram_start 0x20004000).
static mut TASK_STACK: [u64; 32] = [0; 32];

static mut TICKS: u32 = 0;
const RX_LEN: usize = 16;
static mut RX: [u8; RX_LEN] = [0; RX_LEN];
static mut RX_HEAD: usize = 0;
static mut RX_TAIL: usize = 0;

unsafe extern "C" {
    static __vector_table: u32;
    static _stack_start: u32;
}

fn mget(i: usize) -> u32 {
    // SAFETY: i < 3; the marker is plain RAM.
    unsafe { read_volatile(addr_of_mut!(MARKER).cast::<u32>().add(i)) }
}

fn mset(i: usize, v: u32) {
    // SAFETY: as above.
    unsafe { write_volatile(addr_of_mut!(MARKER).cast::<u32>().add(i), v) }
}

fn base() -> u32 {
    addr_of!(__vector_table) as u32
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

// The robust way into the ROM, part 2: cortex-m-rt calls `__pre_init` first thing in
// Reset_Handler. When `b` left the jump request in the no-init marker, clear it, map system memory
// at 0x0 (SYSCFG clock on first, RM0440 7.4.20 / 9.1.1 MEM_MODE = 001; the ROM's interrupts then
// vector into the ROM), point VTOR at that table, and branch with MSP and PC from the ROM's vector
// table.
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
    // RCC_APB2ENR.SYSCFGEN = 1
    "ldr r0, ={apb2enr}",
    "ldr r1, [r0]",
    "orr r1, r1, #1",
    "str r1, [r0]",
    // SYSCFG_MEMRMP.MEM_MODE = 001
    "ldr r0, ={memrmp}",
    "ldr r1, [r0]",
    "bic r1, r1, #7",
    "orr r1, r1, #1",
    "str r1, [r0]",
    "dsb",
    "isb",
    // VTOR = 0x00000000: the ROM's table through the alias
    "ldr r0, ={vtor}",
    "movs r1, #0",
    "str r1, [r0]",
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
    apb2enr = const RCC_APB2ENR,
    memrmp = const SYSCFG_MEMRMP,
    vtor = const SCB_VTOR,
    rom = const SYSTEM_MEMORY,
);

/// How the direct jump enters the ROM: the recommended way, or with one mistake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Jump {
    Recommended,
    VtorUntouched,
    SysTickLeftOn,
    IrqLeftPending,
    KeepPsp,
    NoRemap,
    RemapClockOff,
}

/// The jump into the ROM (ST KB "jump to system bootloader"): interrupts off while the NVIC and
/// SysTick are cleared, VTOR at the ROM's table, interrupts on again, MSP and PC from the ROM's
/// vector table - or one of its classic mistakes.
fn jump_to_bootloader(how: Jump) -> ! {
    cortex_m::interrupt::disable();
    if how != Jump::SysTickLeftOn {
        wr(SYST_CSR, 0);
        wr(SYST_RVR, 0);
        wr(SYST_CVR, 0);
        wr(SCB_ICSR, 1 << 25); // PENDSTCLR
    }
    for i in 0..IRQS.div_ceil(32) as u32 {
        wr(NVIC_ICER + 4 * i, 0xFFFF_FFFF);
        wr(NVIC_ICPR + 4 * i, 0xFFFF_FFFF);
    }
    if how == Jump::IrqLeftPending {
        wr(NVIC_ISER + 4 * (EXTI15_10_IRQ / 32), 1 << (EXTI15_10_IRQ % 32));
        wr(NVIC_ISPR + 4 * (EXTI15_10_IRQ / 32), 1 << (EXTI15_10_IRQ % 32));
    }
    // USART2 back to its reset state (RM0440 7.4.12 APB1RSTR1.USART2RST) for the ROM.
    modify(RCC_APB1RSTR1, 0, 1 << 17);
    modify(RCC_APB1RSTR1, 1 << 17, 0);
    // System memory at 0x00000000 (RM0440 9.1.1 MEM_MODE = 001; needs SYSCFGEN, 7.4.20), or one
    // of the two remap mistakes (pitfall P4); then VTOR = 0, the ROM's table through the alias.
    if how != Jump::RemapClockOff {
        modify(RCC_APB2ENR, 0, 1);
    }
    if how != Jump::NoRemap {
        modify(SYSCFG_MEMRMP, 7, 1);
    }
    if how != Jump::VtorUntouched {
        wr(SCB_VTOR, 0);
    }
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
    // SAFETY: interrupts are enabled again right before the branch, as the KB code does.
    unsafe { cortex_m::interrupt::enable() };
    let sp = rd(SYSTEM_MEMORY);
    let pc = rd(SYSTEM_MEMORY + 4);
    if how == Jump::KeepPsp {
        // MSP loaded, thread mode still on the PSP (seed 002's code).
        // SAFETY: branches into the ROM for good.
        unsafe {
            core::arch::asm!("msr msp, {sp}", "bx {pc}", sp = in(reg) sp, pc = in(reg) pc | 1, options(noreturn, nostack))
        }
    }
    // SAFETY: clears CONTROL.SPSEL, loads MSP and branches to the ROM's reset handler.
    unsafe { cortex_m::asm::bootstrap(sp as *const u32, pc as *const u32) }
}

extern "C" fn jump_from_task_keeping_psp() -> ! {
    jump_to_bootloader(Jump::KeepPsp)
}

extern "C" fn jump_from_task() -> ! {
    jump_to_bootloader(Jump::Recommended)
}

/// Thread mode on the process stack (CONTROL.SPSEL = 1, ISB: PM0214 2.1.3), continuing in `task`.
fn run_on_process_stack(task: extern "C" fn() -> !) -> ! {
    let top = addr_of_mut!(TASK_STACK) as u32 + core::mem::size_of::<[u64; 32]>() as u32;
    // SAFETY: the task never returns; the task stack is used by nothing else.
    unsafe {
        core::arch::asm!(
            "msr psp, {top}",
            "movs {t}, #2",
            "msr control, {t}",
            "isb",
            "bx {task}",
            top = in(reg) top,
            t = in(reg) 0,
            task = in(reg) task as usize | 1,
            options(noreturn),
        )
    }
}

/// The application's USB device on the bus (seed 004): clock on, out of power-down and forced
/// reset (RM0440 45.6.1 USB_CNTR: PDWN then FRES cleared), D+ pull-up on (USB_BCDR.DPPU). The
/// fixture has no USB stack: the peripheral is left as a running CDC stack leaves it attached.
fn usb_attach() {
    modify(RCC_APB1ENR1, 0, RCC_APB1_USB);
    wr(USB_CNTR, 1 << 0); // FRES only: PDWN cleared first (analog transceiver on)
    wr(USB_CNTR, 0); // FRES cleared
    modify(USB_BCDR, 0, 1 << 15); // DPPU
}

/// Off the bus and back to reset before the ROM takes over (the fix the seed 004 thread reports
/// for an STM32L433: reset the USB port before starting the bootloader): D+ pull-up off, forced
/// reset and power-down, the RCC reset pulse (RM0440 7.4.12 USBRST), clock off.
fn usb_detach() {
    modify(RCC_APB1ENR1, 0, RCC_APB1_USB);
    modify(USB_BCDR, 1 << 15, 0);
    wr(USB_CNTR, (1 << 0) | (1 << 1));
    modify(RCC_APB1RSTR1, 0, RCC_APB1_USB);
    modify(RCC_APB1RSTR1, RCC_APB1_USB, 0);
    modify(RCC_APB1ENR1, RCC_APB1_USB, 0);
}

fn announce_jump() {
    puts("jump\r\n");
    flush();
}

#[entry]
fn main() -> ! {
    if mget(0) == MARKER_MAGIC {
        mset(1, mget(1).wrapping_add(1));
    } else {
        mset(0, MARKER_MAGIC);
        mset(1, 1);
        mset(2, 0);
    }
    use g4_board::cr1::{RE, RXNEIE, TE, UE};
    g4_board::console_init(true, UE | RE | TE | RXNEIE);

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
    // RM0440 7.4.29: OBLRSTF 25, PINRSTF 26, BORRSTF 27 (shown as PWR like the G0's PWRRSTF),
    // SFTRSTF 28, IWDGRSTF 29, WWDGRSTF 30, LPWRRSTF 31.
    for (bit, name) in
        [(25, " OBL"), (26, " PIN"), (27, " PWR"), (28, " SFT"), (29, " IWDG"), (30, " WWDG"), (31, " LPWR")]
    {
        if csr & (1 << bit) != 0 {
            puts(name);
        }
    }
    puts(" ]\r\n");
    modify(RCC_CSR, 0, 1 << 23); // RMVF

    wr(SYST_RVR, HCLK / 1000 - 1);
    wr(SYST_CVR, 0);
    wr(SYST_CSR, 0b111);
    wr(NVIC_ISER + 4 * (USART2_IRQ / 32), 1 << (USART2_IRQ % 32));
    // SAFETY: handlers and main share data only in critical sections.
    unsafe { cortex_m::interrupt::enable() };

    loop {
        while let Some(c) = pop() {
            command(c);
        }
        cortex_m::asm::wfi();
    }
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
        b'n' => {
            announce_jump();
            jump_to_bootloader(Jump::NoRemap);
        }
        b'k' => {
            announce_jump();
            jump_to_bootloader(Jump::RemapClockOff);
        }
        b'J' => {
            announce_jump();
            jump_to_bootloader(Jump::VtorUntouched);
        }
        b'p' => {
            announce_jump();
            // `__disable_irq()` and the jump, nothing else (pitfall P2).
            cortex_m::interrupt::disable();
            // SAFETY: system memory holds the ROM's vector table.
            unsafe { cortex_m::asm::bootload(SYSTEM_MEMORY as *const u32) }
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
            // SAFETY: only main writes it; SysTick only reads it.
            unsafe { write_volatile(addr_of_mut!(LET_WATCHDOG_EXPIRE), true) };
            // IWDG (RM0440 41.3): /4 prescaler, reload 0x40 (about 8 ms at 32 kHz), never refreshed.
            wr(IWDG_KR, 0xCCCC);
            wr(IWDG_KR, 0x5555);
            wr(IWDG_KR + 0x04, 0);
            wr(IWDG_KR + 0x08, 0x40);
            wr(IWDG_KR, 0xAAAA);
        }
        b'u' => {
            usb_attach();
            puts("usb on\r\n");
        }
        b'd' => {
            // Off the bus before `jump` is announced: a host that sees `jump` finds no stale device.
            usb_detach();
            announce_jump();
            jump_to_bootloader(Jump::Recommended);
        }
        b'o' => {
            // Option byte loading (RM0440 5.4.2: FLASH_CR.OBL_LAUNCH after the KEYR and OPTKEYR
            // sequences); the chip resets with OBLRSTF.
            puts("obl\r\n");
            flush();
            wr(FLASH_KEYR, 0x4567_0123);
            wr(FLASH_KEYR, 0xCDEF_89AB);
            wr(FLASH_OPTKEYR, 0x0819_2A3B);
            wr(FLASH_OPTKEYR, 0x4C5D_6E7F);
            modify(FLASH_CR, 0, 1 << 27);
        }
        b'?' => puts(
            "cmds: v version, r reset, m marker, j jump to ROM, S jump from a task, b reset+jump, w watchdog, o option byte loading, u USB on, d USB off+jump\r\n",
        ),
        _ => {}
    }
}

#[exception]
fn SysTick() {
    // SAFETY: TICKS is only used here.
    let t = unsafe {
        TICKS = TICKS.wrapping_add(1);
        TICKS
    };
    if t % 100 == 0 {
        let on = rd(GPIOA_ODR) & (1 << LED_PIN) != 0;
        wr(GPIOA_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
        // Reload the IWDG (RM0440 41.3 key 0xAAAA); without a running IWDG this does nothing.
        // SAFETY: a flag main sets once.
        if !unsafe { read_volatile(addr_of!(LET_WATCHDOG_EXPIRE)) } && !cfg!(feature = "no-watchdog-refresh") {
            wr(IWDG_KR, 0xAAAA);
        }
    }
}

extern "C" fn usart2_irq() {
    // RXNE (ISR bit 5) is cleared by reading RDR; an overrun (ORE, bit 3) by ICR.ORECF
    // (RM0440 37.8.8, 37.8.9).
    let isr = rd(USART_ISR);
    if isr & (1 << 3) != 0 {
        wr(USART_ICR, 1 << 3);
    }
    if isr & (1 << 5) != 0 {
        let b = rd(USART_RDR) as u8;
        // SAFETY: exception handlers do not nest with themselves; main reads in a critical section.
        unsafe {
            let next = (RX_HEAD + 1) % RX_LEN;
            if next != RX_TAIL {
                RX[RX_HEAD] = b;
                RX_HEAD = next;
            }
        }
    }
}

extern "C" fn default_irq() {
    loop {
        cortex_m::asm::wfi();
    }
}

extern "C" fn trampoline_reset() -> ! {
    wr(SCB_AIRCR, 0x05FA_0004);
    cortex_m::asm::dsb();
    loop {
        cortex_m::asm::nop();
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
pub union Vector {
    handler: unsafe extern "C" fn(),
    diverging: extern "C" fn() -> !,
    stack: *const u32,
}

// SAFETY: the vector tables are read-only data in flash.
unsafe impl Sync for Vector {}

/// The 102 external interrupt vectors of the STM32G474 (RM0440 16.3 Table 97).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; IRQS] = {
    let mut v = [Vector { handler: default_irq }; IRQS];
    v[USART2_IRQ as usize] = Vector { handler: usart2_irq };
    v
};

/// The trampoline (seed 004), placed at base + 0x200 by build.rs.
#[unsafe(link_section = ".trampoline")]
#[unsafe(no_mangle)]
#[used]
pub static __TRAMPOLINE: [Vector; 2] =
    [Vector { stack: &raw const _stack_start }, Vector { diverging: trampoline_reset }];

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    cortex_m::asm::udf()
}
