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

use core::ptr::addr_of_mut;

use app_common::{App, Chip, Console, Jump, OptionByteLoading, Remap, Vector, marker};
use cortex_m_rt::{entry, exception};

use g0_board::reg::*;
use g0_board::{HCLK, LED_PIN, flush, modify, put_dec, put_hex, puts, rd, wr};

/// RM0444 9.1.1 SYSCFG_CFGR1 (MEM_MODE[1:0]: 00 main flash, 01 system memory at 0x00000000).
const SYSCFG_CFGR1: u32 = 0x4001_0000;
/// Main flash (RM0444 2.2 memory map): FLASH_BASE of the CMSIS device header.
#[cfg(feature = "stale-vtor-offset")]
const FLASH_BASE: u32 = 0x0800_0000;
/// System memory (the ROM bootloader's vector table), AN2606 / RM0444 3.3.1.
const SYSTEM_MEMORY: u32 = 0x1FFF_0000;
/// RM0444 12.3 Table 55: EXTI lines 4..15 (the Nucleo's user button B1 is PC13) and USART2.
const EXTI4_15_IRQ: u32 = 7;
const USART2_IRQ: u32 = 28;
/// External interrupt lines of the STM32G071 (RM0444 12.3 Table 55).
const IRQS: usize = 32;

/// System memory at 0x00000000: RM0444 5.4.15 RCC_APBENR2.SYSCFGEN, 9.1.1 SYSCFG_CFGR1.MEM_MODE = 01.
const REMAP: Remap = Remap { clock: (RCC_APBENR2, 0), register: SYSCFG_CFGR1, mask: 3, value: 1 };

static APP: App = App {
    chip: Chip {
        system_memory: SYSTEM_MEMORY,
        irqs: IRQS as u32,
        button_irq: EXTI4_15_IRQ,
        // RM0444 5.4.11 RCC_APBRSTR1.USART2RST.
        console_reset: (RCC_APBRSTR1, 17),
        remap: Some(REMAP),
        // RM0444 26.4.1 IWDG_KR.
        iwdg_kr: 0x4000_3000,
        // RM0444 3.7: FLASH_KEYR, FLASH_OPTKEYR, FLASH_CR.OBL_LAUNCH (bit 27).
        option_byte_loading: Some(OptionByteLoading {
            keyr: 0x4002_2008,
            optkeyr: 0x4002_200C,
            cr: 0x4002_2014,
            launch_bit: 27,
        }),
    },
    console: Console { puts, put_hex, put_dec, flush },
    help: "cmds: v version, r reset, m marker, j jump to ROM, p jump with PRIMASK=1, b reset+jump, w watchdog, o OBL\r\n",
    task_stack_top,
};

/// The stack of the "RTOS task" for `s` / `S`: in .bss, low in SRAM, as task stacks allocated by
/// an RTOS are (inside the RAM the ROM reserves for itself: 0x20000000-0x20002700 on G071,
/// -0x20004000 on G0B1, stm32flash dev_table ram_start).
static mut TASK_STACK: [u64; 64] = [0; 64];

fn task_stack_top() -> u32 {
    addr_of_mut!(TASK_STACK) as u32 + core::mem::size_of::<[u64; 64]>() as u32
}

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
    /// Initial stack pointer of the main vector table (cortex-m-rt link.x).
    static _stack_start: u32;
}

// `b`, part 2: the jump first thing in Reset_Handler, with the remap.
app_common::pre_init_jump!(
    rom: SYSTEM_MEMORY,
    remap: (REMAP.clock.0, REMAP.clock.1, REMAP.register, REMAP.mask, REMAP.value)
);

#[entry]
fn main() -> ! {
    // SystemInit of a CubeMX project (system_stm32xxxx.c) that was not told the application
    // moved: SCB->VTOR = FLASH_BASE | VECT_TAB_OFFSET.
    #[cfg(feature = "stale-vtor-offset")]
    wr(SCB_VTOR, FLASH_BASE | VECT_TAB_OFFSET);

    marker::count_boot();

    // USART2 115200 8N1 with its receive interrupt, PA5 output (LED).
    use g0_board::cr1::{RE, RXNEIE, TE, UE};
    g0_board::console_init(true, UE | RE | TE | RXNEIE);

    let csr = rd(RCC_CSR);
    // RM0444 5.4.27 RCC_CSR: OBLRSTF 25, PINRSTF 26, PWRRSTF 27, SFTRSTF 28, IWDGRSTF 29,
    // WWDGRSTF 30, LPWRRSTF 31.
    app_common::banner(
        &APP,
        csr,
        &[(25, " OBL"), (26, " PIN"), (27, " PWR"), (28, " SFT"), (29, " IWDG"), (30, " WWDG"), (31, " LPWR")],
    );
    modify(RCC_CSR, 0, 1 << 23); // RMVF

    // SysTick: 1 ms from the core clock.
    wr(SYST_RVR, HCLK / 1000 - 1);
    wr(SYST_CVR, 0);
    wr(SYST_CSR, 0b111); // CLKSOURCE = core, TICKINT, ENABLE
    wr(NVIC_ISER, 1 << USART2_IRQ);
    // SAFETY: handlers and main share data only in critical sections.
    unsafe { cortex_m::interrupt::enable() };

    loop {
        while let Some(c) = app_common::rx::pop() {
            if !app_common::command(&APP, c) && c != b'\r' && c != b'\n' {
                puts("?\r\n");
            }
        }
        cortex_m::asm::wfi();
    }
}

#[exception]
fn SysTick() {
    // The LED on PA5 (RM0444 7.4.6 GPIOx_ODR, 7.4.7 GPIOx_BSRR).
    app_common::systick(&APP, !cfg!(feature = "no-watchdog-refresh"), || {
        let on = rd(GPIOA_ODR) & (1 << LED_PIN) != 0;
        wr(GPIOA_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
    });
}

extern "C" fn usart2_irq() {
    let isr = rd(USART_ISR);
    if isr & (1 << 5) != 0 {
        let b = rd(USART_RDR) as u8;
        if b == b'i' {
            // The jump from inside the interrupt handler (pitfall P5): the USART2 exception stays
            // active while the ROM runs.
            puts("jump\r\n");
            flush();
            app_common::jump_to_bootloader(&APP.chip, Jump::Recommended);
        }
        app_common::rx::push(b);
    }
    if isr & (1 << 3) != 0 {
        wr(USART_ICR, 1 << 3); // ORECF
    }
}

/// The 32 external interrupt vectors of the STM32G071 (RM0444 12.3 Table 55).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; IRQS] = {
    let mut v = [Vector { handler: app_common::default_irq }; IRQS];
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
    [Vector { stack: &raw const _stack_start }, Vector { diverging: app_common::trampoline_reset }];
