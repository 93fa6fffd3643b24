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

use core::ptr::addr_of_mut;

use app_common::{App, Chip, Console, Jump, OptionByteLoading, Remap, Vector, marker};
use cortex_m_rt::{entry, exception};

use g4_board::reg::*;
use g4_board::{HCLK, LED_PIN, SYSTEM_MEMORY, USART2_IRQ, flush, modify, put_dec, put_hex, puts, rd, wr};

/// RM0440 16.3 Table 97: EXTI lines 15..10 (the Nucleo's user button is PC13).
const EXTI15_10_IRQ: u32 = 40;
/// External interrupts of the STM32G474 (RM0440 16.3 Table 97: up to FMAC, IRQ 101).
const IRQS: usize = 102;

/// System memory at 0x00000000: RM0440 7.4.20 RCC_APB2ENR.SYSCFGEN, 9.1.1 SYSCFG_MEMRMP.MEM_MODE = 001.
const REMAP: Remap = Remap { clock: (RCC_APB2ENR, 0), register: SYSCFG_MEMRMP, mask: 7, value: 1 };

static APP: App = App {
    chip: Chip {
        system_memory: SYSTEM_MEMORY,
        irqs: IRQS as u32,
        button_irq: EXTI15_10_IRQ,
        // RM0440 7.4.12 RCC_APB1RSTR1.USART2RST.
        console_reset: (RCC_APB1RSTR1, 17),
        remap: Some(REMAP),
        // RM0440 41.3 IWDG_KR.
        iwdg_kr: IWDG_KR,
        // RM0440 5.7: FLASH_KEYR, FLASH_OPTKEYR, FLASH_CR.OBL_LAUNCH (bit 27), 5.4.2.
        option_byte_loading: Some(OptionByteLoading {
            keyr: 0x4002_2008,
            optkeyr: 0x4002_200C,
            cr: 0x4002_2014,
            launch_bit: 27,
        }),
    },
    console: Console { puts, put_hex, put_dec, flush },
    help: "cmds: v version, r reset, m marker, j jump to ROM, S jump from a task, b reset+jump, w watchdog, o option byte loading, u USB on, d USB off+jump\r\n",
    task_stack_top,
};

/// The stack of the "RTOS task" for `s` / `S`: in .bss, low in SRAM as RTOS task stacks are
/// (inside the RAM the ROM reserves for itself, stm32flash dev_table ram_start 0x20004000).
static mut TASK_STACK: [u64; 32] = [0; 32];

fn task_stack_top() -> u32 {
    addr_of_mut!(TASK_STACK) as u32 + core::mem::size_of::<[u64; 32]>() as u32
}

unsafe extern "C" {
    static _stack_start: u32;
}

// `b`, part 2: the jump first thing in Reset_Handler, with the remap.
app_common::pre_init_jump!(
    rom: SYSTEM_MEMORY,
    remap: (REMAP.clock.0, REMAP.clock.1, REMAP.register, REMAP.mask, REMAP.value)
);

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

#[entry]
fn main() -> ! {
    marker::count_boot();
    use g4_board::cr1::{RE, RXNEIE, TE, UE};
    g4_board::console_init(true, UE | RE | TE | RXNEIE);

    let csr = rd(RCC_CSR);
    // RM0440 7.4.29: OBLRSTF 25, PINRSTF 26, BORRSTF 27 (shown as PWR like the G0's PWRRSTF),
    // SFTRSTF 28, IWDGRSTF 29, WWDGRSTF 30, LPWRRSTF 31.
    app_common::banner(
        &APP,
        csr,
        &[(25, " OBL"), (26, " PIN"), (27, " PWR"), (28, " SFT"), (29, " IWDG"), (30, " WWDG"), (31, " LPWR")],
    );
    modify(RCC_CSR, 0, 1 << 23); // RMVF

    wr(SYST_RVR, HCLK / 1000 - 1);
    wr(SYST_CVR, 0);
    wr(SYST_CSR, 0b111);
    wr(NVIC_ISER + 4 * (USART2_IRQ / 32), 1 << (USART2_IRQ % 32));
    // SAFETY: handlers and main share data only in critical sections.
    unsafe { cortex_m::interrupt::enable() };

    loop {
        while let Some(c) = app_common::rx::pop() {
            if !app_common::command(&APP, c) {
                command(c);
            }
        }
        cortex_m::asm::wfi();
    }
}

/// The G474's own commands: its USB device (seed 004).
fn command(c: u8) {
    match c {
        b'u' => {
            usb_attach();
            puts("usb on\r\n");
        }
        b'd' => {
            // Off the bus before `jump` is announced: a host that sees `jump` finds no stale device.
            usb_detach();
            puts("jump\r\n");
            flush();
            app_common::jump_to_bootloader(&APP.chip, Jump::Recommended);
        }
        _ => {}
    }
}

#[exception]
fn SysTick() {
    // The LED on PA5 (RM0440 9.4.6 GPIOx_ODR, 9.4.7 GPIOx_BSRR).
    app_common::systick(&APP, !cfg!(feature = "no-watchdog-refresh"), || {
        let on = rd(GPIOA_ODR) & (1 << LED_PIN) != 0;
        wr(GPIOA_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
    });
}

extern "C" fn usart2_irq() {
    // RXNE (ISR bit 5) is cleared by reading RDR; an overrun (ORE, bit 3) by ICR.ORECF
    // (RM0440 37.8.8, 37.8.9).
    let isr = rd(USART_ISR);
    if isr & (1 << 3) != 0 {
        wr(USART_ICR, 1 << 3);
    }
    if isr & (1 << 5) != 0 {
        app_common::rx::push(rd(USART_RDR) as u8);
    }
}

/// The 102 external interrupt vectors of the STM32G474 (RM0440 16.3 Table 97).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; IRQS] = {
    let mut v = [Vector { handler: app_common::default_irq }; IRQS];
    v[USART2_IRQ as usize] = Vector { handler: usart2_irq };
    v
};

/// The trampoline (seed 004), placed at base + 0x200 by build.rs.
#[unsafe(link_section = ".trampoline")]
#[unsafe(no_mangle)]
#[used]
pub static __TRAMPOLINE: [Vector; 2] =
    [Vector { stack: &raw const _stack_start }, Vector { diverging: app_common::trampoline_reset }];
