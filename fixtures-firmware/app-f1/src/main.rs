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
//!   no remap to do, RM0008 3.4), `?` help.
//!
//! Direct register access (RM0008); no HAL.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use cortex_m_rt::{entry, exception};

use f1_board::reg::*;
use f1_board::{HCLK, LED_PIN, SYSTEM_MEMORY, USART1_IRQ, flush, modify, put_dec, put_hex, puts, rd, wr};

const MARKER_MAGIC: u32 = 0xB007_C0DE;
/// External interrupts of the medium-density F103 (RM0008 10.1.2 Table 63).
const IRQS: usize = 43;

/// Survives every reset but power-on: [magic, boot count].
#[unsafe(link_section = ".uninit.MARKER")]
static mut MARKER: MaybeUninit<[u32; 2]> = MaybeUninit::uninit();

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
    // SAFETY: i < 2; the marker is plain RAM.
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
        // SAFETY: the ring is shared with the USART1 handler only inside critical sections.
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

/// The jump into the ROM done right (ST KB "jump to system bootloader"): interrupts off while
/// the NVIC and SysTick are cleared, VTOR at the ROM's table, interrupts on again, MSP and PC from
/// the ROM's vector table.
fn jump_to_bootloader() -> ! {
    cortex_m::interrupt::disable();
    wr(SYST_CSR, 0);
    wr(SCB_ICSR, 1 << 25); // PENDSTCLR
    for i in 0..IRQS.div_ceil(32) as u32 {
        wr(NVIC_ICER + 4 * i, 0xFFFF_FFFF);
        wr(NVIC_ICPR + 4 * i, 0xFFFF_FFFF);
    }
    wr(SCB_VTOR, SYSTEM_MEMORY);
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
    // SAFETY: interrupts are enabled again right before the branch, as the KB code does.
    unsafe {
        cortex_m::interrupt::enable();
        cortex_m::asm::bootload(SYSTEM_MEMORY as *const u32)
    }
}

#[entry]
fn main() -> ! {
    if mget(0) == MARKER_MAGIC {
        mset(1, mget(1).wrapping_add(1));
    } else {
        mset(0, MARKER_MAGIC);
        mset(1, 1);
    }
    use f1_board::cr1::{RE, RXNEIE, TE, UE};
    f1_board::console_init(true, UE | RE | TE | RXNEIE);

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
    // RM0008 7.3.10: PINRSTF 26, PORRSTF 27 (shown as PWR like the G0's), SFTRSTF 28, IWDGRSTF 29,
    // WWDGRSTF 30, LPWRRSTF 31.
    for (bit, name) in [(26, " PIN"), (27, " PWR"), (28, " SFT"), (29, " IWDG"), (30, " WWDG"), (31, " LPWR")] {
        if csr & (1 << bit) != 0 {
            puts(name);
        }
    }
    puts(" ]\r\n");
    modify(RCC_CSR, 0, 1 << 24); // RMVF

    wr(SYST_RVR, HCLK / 1000 - 1);
    wr(SYST_CVR, 0);
    wr(SYST_CSR, 0b111);
    wr(NVIC_ISER + 4 * (USART1_IRQ / 32), 1 << (USART1_IRQ % 32));
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
            puts("jump\r\n");
            flush();
            jump_to_bootloader();
        }
        b'?' => puts("cmds: v version, r reset, m marker, j jump to ROM\r\n"),
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
        let on = rd(GPIOC_ODR) & (1 << LED_PIN) != 0;
        wr(GPIOC_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
        // Reload the IWDG (RM0008 19.4.1 key 0xAAAA); without a running IWDG this does nothing.
        wr(IWDG_KR, 0xAAAA);
    }
}

extern "C" fn usart1_irq() {
    // SR then DR: the read sequence also clears ORE (RM0008 27.6.1).
    let sr = rd(USART_SR);
    if sr & ((1 << 5) | (1 << 3)) != 0 {
        let b = rd(USART_DR) as u8;
        if sr & (1 << 5) != 0 {
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

/// The 43 external interrupt vectors of the medium-density STM32F103 (RM0008 10.1.2 Table 63).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; IRQS] = {
    let mut v = [Vector { handler: default_irq }; IRQS];
    v[USART1_IRQ as usize] = Vector { handler: usart1_irq };
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
