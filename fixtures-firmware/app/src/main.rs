//! Application fixture for the STM32G071 (runs on the virtual board and on a Nucleo-G071RB).
//!
//! - Prints a banner on USART2 (115200 8N1, PA2/PA3: the Nucleo's ST-Link virtual COM port,
//!   UM2324) with its link base, VTOR, a boot counter kept in a no-init RAM marker, and the
//!   RCC_CSR reset flags (then clears them with RMVF).
//! - Blinks the LED (PA5) from the SysTick interrupt: toggles every 100 ms.
//! - Answers one-byte commands received by the USART2 interrupt:
//!   `v` version and base, `r` reset (SYSRESETREQ), `m` marker, `j` jump to the system
//!   bootloader the recommended way, `p` the same jump with the PRIMASK pitfall (interrupts left
//!   disabled, no remap), `b` reset-then-branch to the bootloader, `w` let the IWDG reset the
//!   chip, `o` option byte reload (OBL_LAUNCH), `?` help.
//!
//! Direct register access (RM0444); no HAL.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use cortex_m_rt::{entry, exception};

// RM0444 2.2.2 peripheral addresses and register offsets.
const RCC: u32 = 0x4002_1000;
const RCC_IOPENR: u32 = RCC + 0x34;
const RCC_APBENR1: u32 = RCC + 0x3C;
const RCC_APBENR2: u32 = RCC + 0x40;
const RCC_CSR: u32 = RCC + 0x60;
const GPIOA: u32 = 0x5000_0000;
const GPIOA_MODER: u32 = GPIOA;
const GPIOA_AFRL: u32 = GPIOA + 0x20;
const GPIOA_BSRR: u32 = GPIOA + 0x18;
const GPIOA_ODR: u32 = GPIOA + 0x14;
const USART2: u32 = 0x4000_4400;
const USART_CR1: u32 = USART2;
const USART_BRR: u32 = USART2 + 0x0C;
const USART_ISR: u32 = USART2 + 0x1C;
const USART_ICR: u32 = USART2 + 0x20;
const USART_RDR: u32 = USART2 + 0x24;
const USART_TDR: u32 = USART2 + 0x28;
const SYSCFG_CFGR1: u32 = 0x4001_0000;
const IWDG: u32 = 0x4000_3000;
const FLASH_KEYR: u32 = 0x4002_2008;
const FLASH_OPTKEYR: u32 = 0x4002_200C;
const FLASH_CR: u32 = 0x4002_2014;
const SCB_VTOR: u32 = 0xE000_ED08;
const NVIC_ISER: u32 = 0xE000_E100;
const NVIC_ICER: u32 = 0xE000_E180;
const NVIC_ICPR: u32 = 0xE000_E280;
const SYST_CSR: u32 = 0xE000_E010;
const SYST_RVR: u32 = 0xE000_E014;
const SYST_CVR: u32 = 0xE000_E018;
/// System memory (the ROM bootloader's vector table), AN2606 / RM0444 3.3.1.
const SYSTEM_MEMORY: u32 = 0x1FFF_0000;
const USART2_IRQ: u32 = 28;
const LED_PIN: u32 = 5;
/// HSI16 after reset (RM0444 5.2): 16 MHz core clock.
const HCLK: u32 = 16_000_000;
const BAUD: u32 = 115_200;

const MARKER_MAGIC: u32 = 0xB007_C0DE;
const JUMP_MAGIC: u32 = 0x0B00_710A;

/// Survives every reset but power-on (cortex-m-rt leaves `.uninit` alone).
#[unsafe(link_section = ".uninit.MARKER")]
static mut MARKER: MaybeUninit<[u32; 3]> = MaybeUninit::uninit();

static mut TICKS: u32 = 0;
const RX_LEN: usize = 16;
static mut RX: [u8; RX_LEN] = [0; RX_LEN];
static mut RX_HEAD: usize = 0;
static mut RX_TAIL: usize = 0;

unsafe extern "C" {
    static __vector_table: u32;
}

fn rd(addr: u32) -> u32 {
    // SAFETY: `addr` is a peripheral register or memory word of this chip.
    unsafe { read_volatile(addr as *const u32) }
}

fn wr(addr: u32, v: u32) {
    // SAFETY: as above.
    unsafe { write_volatile(addr as *mut u32, v) }
}

fn modify(addr: u32, clear: u32, set: u32) {
    wr(addr, (rd(addr) & !clear) | set);
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

fn putc(b: u8) {
    while rd(USART_ISR) & (1 << 7) == 0 {} // TXE
    wr(USART_TDR, b as u32);
}

fn puts(s: &str) {
    s.bytes().for_each(putc);
}

fn put_hex(v: u32) {
    puts("0x");
    for i in (0..8).rev() {
        let d = ((v >> (i * 4)) & 0xF) as u8;
        putc(if d < 10 { b'0' + d } else { b'A' + d - 10 });
    }
}

fn put_dec(mut v: u32) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        buf[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while n > 0 {
        n -= 1;
        putc(buf[n]);
    }
}

fn flush() {
    while rd(USART_ISR) & (1 << 6) == 0 {} // TC
}

fn base() -> u32 {
    // Only the address of the linker-provided symbol is taken.
    addr_of!(__vector_table) as u32
}

/// Jump to the system bootloader as ST's KB recommends: SysTick off, NVIC cleared, system
/// memory remapped (SYSCFG clock on first), interrupts re-enabled, MSP/PC from its table.
fn jump_to_bootloader(clean: bool) -> ! {
    cortex_m::interrupt::disable();
    if clean {
        wr(SYST_CSR, 0);
        wr(NVIC_ICER, 0xFFFF_FFFF);
        wr(NVIC_ICPR, 0xFFFF_FFFF);
        modify(RCC_APBENR2, 0, 1); // SYSCFGEN
        modify(SYSCFG_CFGR1, 3, 1); // MEM_MODE = system flash
        // SAFETY: the ROM does not depend on interrupts being off (pitfall P2).
        unsafe { cortex_m::interrupt::enable() };
    }
    // SAFETY: system memory holds the ROM's vector table.
    unsafe { cortex_m::asm::bootload(SYSTEM_MEMORY as *const u32) }
}

fn help() {
    puts(
        "cmds: v version, r reset, m marker, j jump to ROM, p jump with PRIMASK=1, b reset+jump, w watchdog, o OBL\r\n",
    );
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
        b'j' | b'p' => {
            puts("jump\r\n");
            flush();
            jump_to_bootloader(c == b'j');
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
            // IWDG: /4 prescaler, reload 0x40: about 8 ms at 32 kHz, then never refreshed.
            wr(IWDG, 0xCCCC);
            wr(IWDG, 0x5555);
            wr(IWDG + 0x04, 0);
            wr(IWDG + 0x08, 0x40);
            wr(IWDG, 0xAAAA);
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
    // Reset-then-branch (pitfall P3): before touching any peripheral.
    if mget(2) == JUMP_MAGIC {
        mset(2, 0);
        jump_to_bootloader(true);
    }
    if mget(0) == MARKER_MAGIC {
        mset(1, mget(1).wrapping_add(1));
    } else {
        mset(0, MARKER_MAGIC);
        mset(1, 1);
        mset(2, 0);
    }

    // Clocks: GPIOA, USART2.
    modify(RCC_IOPENR, 0, 1);
    modify(RCC_APBENR1, 0, 1 << 17);
    // PA2/PA3 alternate function 1 (USART2), PA5 output (LED).
    modify(GPIOA_MODER, (3 << 4) | (3 << 6) | (3 << (2 * LED_PIN)), (2 << 4) | (2 << 6) | (1 << (2 * LED_PIN)));
    modify(GPIOA_AFRL, (0xF << 8) | (0xF << 12), (1 << 8) | (1 << 12));
    // USART2 115200 8N1, receive interrupt.
    wr(USART_BRR, (HCLK + BAUD / 2) / BAUD);
    wr(USART_CR1, (1 << 0) | (1 << 2) | (1 << 3) | (1 << 5)); // UE RE TE RXNEIE

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
    // SAFETY: TICKS is only used here.
    let t = unsafe {
        TICKS = TICKS.wrapping_add(1);
        TICKS
    };
    if t % 100 == 0 {
        let on = rd(GPIOA_ODR) & (1 << LED_PIN) != 0;
        wr(GPIOA_BSRR, if on { 1 << (LED_PIN + 16) } else { 1 << LED_PIN });
    }
}

extern "C" fn usart2_irq() {
    let isr = rd(USART_ISR);
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
    if isr & (1 << 3) != 0 {
        wr(USART_ICR, 1 << 3); // ORECF
    }
}

extern "C" fn default_irq() {
    loop {
        cortex_m::asm::wfi();
    }
}

/// One entry of the interrupt vector table.
#[derive(Clone, Copy)]
#[repr(C)]
pub union Vector {
    handler: unsafe extern "C" fn(),
    reserved: u32,
}

/// The 32 external interrupt vectors of the STM32G071 (RM0444 12.3 Table 55).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; 32] = {
    let mut v = [Vector { handler: default_irq }; 32];
    v[USART2_IRQ as usize] = Vector { handler: usart2_irq };
    v
};

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    cortex_m::asm::udf()
}
