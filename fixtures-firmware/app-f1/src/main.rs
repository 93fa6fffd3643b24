//! Application fixture for the STM32F103 (runs on the virtual F103 and on a Blue Pill).
//!
//! - Prints the same banner as the G0 `app` fixture, on USART1 (115200 8N1, PA9/PA10: the pins
//!   of the ROM bootloader, AN2606), with its link base, VTOR, a boot counter kept in a no-init
//!   RAM marker, and the RCC_CSR reset flags (then clears them with RMVF, RM0008 7.3.10).
//! - Blinks the LED (PC13) from SysTick every 100 ms and refreshes the IWDG there.
//! - A trampoline vector table at base + 0x200 (seed 004): the application's initial SP and a
//!   reset handler that requests a system reset.
//! - One-byte commands from the USART1 receive interrupt: `v` version and base, `r` reset
//!   (SYSRESETREQ), `m` marker, `j` the jump into the ROM done right (NVIC sources off and pending
//!   cleared, SysTick off, VTOR = system memory, MSP and PC from the ROM's vector table; the F1 has
//!   no remap to do, RM0008 3.4), `S` the same from a task on the process stack (CONTROL cleared),
//!   `b` reset then jump first thing in Reset_Handler, `w` let the IWDG reset the chip, `?` help.
//! - The jump with one mistake each, as the G0 `app` fixture has them (conformance classes): `p`
//!   PRIMASK left set, `J` VTOR left at the application's table, `t` SysTick left running, `q` a
//!   peripheral interrupt (EXTI15_10) left enabled and pending, `s` CONTROL.SPSEL left at 1.
//! - Feature `set-vtor` (default): cortex-m-rt points VTOR at this image; without it the image
//!   never sets VTOR (seed 004's application).
//!
//! Direct register access (RM0008); no HAL.
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use app_common::{App, Chip, Console, Vector, marker};
use cortex_m_rt::{entry, exception};

use f1_board::reg::*;
use f1_board::{HCLK, LED_PIN, SYSTEM_MEMORY, USART1_IRQ, flush, modify, put_dec, put_hex, puts, rd, wr};

/// RM0008 10.1.2 Table 63: EXTI lines 15..10 (stands for a user button).
const EXTI15_10_IRQ: u32 = 40;
/// External interrupts of the medium-density F103 (RM0008 10.1.2 Table 63).
const IRQS: usize = 43;

static APP: App = App {
    chip: Chip {
        system_memory: SYSTEM_MEMORY,
        irqs: IRQS as u32,
        button_irq: EXTI15_10_IRQ,
        // RM0008 7.3.4 RCC_APB2RSTR.USART1RST.
        console_reset: (RCC_APB2RSTR, 14),
        // No remap: the F1 boots its ROM with VTOR at system memory (RM0008 3.4).
        remap: None,
        // RM0008 19.4.1 IWDG_KR.
        iwdg_kr: IWDG_KR,
        // Option bytes load at a reset only (PM0075 2.5).
        option_byte_loading: None,
    },
    console: Console { puts, put_hex, put_dec, flush },
    help: "cmds: v version, r reset, m marker, j jump to ROM, S jump from a task, b reset+jump, w watchdog\r\n",
    task_stack_top,
};

/// The stack of the "RTOS task" for `s` / `S`: in .bss, low in SRAM as RTOS task stacks are, and
/// small enough to lie inside the 512 bytes the F1 ROM reserves for itself (0x20000000-0x200001FF,
/// stm32flash dev_table ram_start).
static mut TASK_STACK: [u64; 32] = [0; 32];

fn task_stack_top() -> u32 {
    addr_of_mut!(TASK_STACK) as u32 + core::mem::size_of::<[u64; 32]>() as u32
}

unsafe extern "C" {
    static _stack_start: u32;
}

// `b`, part 2: the jump first thing in Reset_Handler; no remap on the F1 (RM0008 3.4).
app_common::pre_init_jump!(rom: SYSTEM_MEMORY);

#[entry]
fn main() -> ! {
    marker::count_boot();
    use f1_board::cr1::{RE, RXNEIE, TE, UE};
    f1_board::console_init(true, UE | RE | TE | RXNEIE);

    let csr = rd(RCC_CSR);
    // RM0008 7.3.10: PINRSTF 26, PORRSTF 27 (shown as PWR like the G0's), SFTRSTF 28, IWDGRSTF 29,
    // WWDGRSTF 30, LPWRRSTF 31.
    app_common::banner(
        &APP,
        csr,
        &[(26, " PIN"), (27, " PWR"), (28, " SFT"), (29, " IWDG"), (30, " WWDG"), (31, " LPWR")],
    );
    modify(RCC_CSR, 0, 1 << 24); // RMVF

    wr(SYST_RVR, HCLK / 1000 - 1);
    wr(SYST_CVR, 0);
    wr(SYST_CSR, 0b111);
    wr(NVIC_ISER + 4 * (USART1_IRQ / 32), 1 << (USART1_IRQ % 32));
    // SAFETY: handlers and main share data only in critical sections.
    unsafe { cortex_m::interrupt::enable() };

    loop {
        while let Some(c) = app_common::rx::pop() {
            app_common::command(&APP, c);
        }
        cortex_m::asm::wfi();
    }
}

#[exception]
fn SysTick() {
    // The Blue Pill's LED on PC13 (RM0008 9.2.4 GPIOx_ODR, 9.2.5 GPIOx_BSRR).
    app_common::systick(&APP, true, || {
        let on = rd(GPIOC_ODR) & (1 << LED_PIN) != 0;
        wr(GPIOC_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
    });
}

extern "C" fn usart1_irq() {
    // SR then DR: the read sequence also clears ORE (RM0008 27.6.1).
    let sr = rd(USART_SR);
    if sr & ((1 << 5) | (1 << 3)) != 0 {
        let b = rd(USART_DR) as u8;
        if sr & (1 << 5) != 0 {
            app_common::rx::push(b);
        }
    }
}

/// The 43 external interrupt vectors of the medium-density STM32F103 (RM0008 10.1.2 Table 63).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; IRQS] = {
    let mut v = [Vector { handler: app_common::default_irq }; IRQS];
    v[USART1_IRQ as usize] = Vector { handler: usart1_irq };
    v
};

/// The trampoline (seed 004), placed at base + 0x200 by build.rs.
#[unsafe(link_section = ".trampoline")]
#[unsafe(no_mangle)]
#[used]
pub static __TRAMPOLINE: [Vector; 2] =
    [Vector { stack: &raw const _stack_start }, Vector { diverging: app_common::trampoline_reset }];
