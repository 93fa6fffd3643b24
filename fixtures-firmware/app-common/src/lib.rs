//! What the application fixtures of every chip share (`app` for the G0, `app-f1`, `app-g4`): the
//! no-init marker, the receive ring the console interrupt fills, the jump into the ROM done right
//! and with each of its classic mistakes (the conformance classes, reference
//! bootloader-protocols.md section 5), the process-stack task, the trampoline's reset handler, the
//! banner and the one-byte commands that behave alike on every chip.
//!
//! What differs per chip comes in as data ([`Chip`], [`Console`]) or stays in the chip's fixture:
//! the `__pre_init` jump, the vector tables, the console interrupt handler, the LED, the task
//! stack (its place in RAM matters: inside the RAM the ROM reserves for itself).
#![no_std]

use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use board_common::scs::*;
use board_common::{modify, rd, wr};

/// The no-init marker: [magic, boot count, jump request]. It survives every reset but power-on
/// (cortex-m-rt leaves `.uninit` alone); each fixture's `__pre_init` reads the jump request.
pub mod marker {
    use core::mem::MaybeUninit;
    use core::ptr::{addr_of_mut, read_volatile, write_volatile};

    pub const MAGIC: u32 = 0xB007_C0DE;
    /// Word 2 holds this when `b` asked for the jump at the next reset.
    pub const JUMP_MAGIC: u32 = 0x0B00_710A;

    #[unsafe(link_section = ".uninit.MARKER")]
    pub static mut MARKER: MaybeUninit<[u32; 3]> = MaybeUninit::uninit();

    /// Word `i` (volatile: the static has no initial value, so the compiler must not assume what
    /// it holds).
    pub fn get(i: usize) -> u32 {
        assert!(i < 3);
        // SAFETY: in bounds; the marker is plain RAM.
        unsafe { read_volatile(addr_of_mut!(MARKER).cast::<u32>().add(i)) }
    }

    pub fn set(i: usize, v: u32) {
        assert!(i < 3);
        // SAFETY: as above.
        unsafe { write_volatile(addr_of_mut!(MARKER).cast::<u32>().add(i), v) }
    }

    /// Counts this boot: 1 after a power-on (the marker is garbage then), one more after every
    /// other reset.
    pub fn count_boot() {
        if get(0) == MAGIC {
            set(1, get(1).wrapping_add(1));
        } else {
            set(0, MAGIC);
            set(1, 1);
            set(2, 0);
        }
    }
}

/// For [`pre_init_jump!`]: what its expansion names in this crate.
#[doc(hidden)]
pub mod __pre_init {
    pub use crate::marker::{JUMP_MAGIC, MARKER};
    pub use board_common::scs::SCB_VTOR;
}

/// The robust way into the ROM, part 2 (pitfall P3; ST KB "jump to system bootloader", seed 002's
/// FreeRTOS answer): defines `__pre_init`, which cortex-m-rt calls first thing in Reset_Handler,
/// before RAM is initialised and before any clock or peripheral is touched. When `b` left the jump
/// request in the marker, it clears it, maps system memory at 0x0 where the chip needs that (the
/// SYSCFG clock first; the ROM's interrupts then vector into the ROM, P4), points VTOR at the ROM's
/// table (0 through the alias, else the ROM's address) and branches with MSP and PC from it. The
/// core comes straight from reset: thread mode on the MSP, PRIMASK clear, NVIC and SysTick off.
/// Thumb-1 instructions only, so one body serves the M0+, the M3 and the M4.
///
/// `pre_init_jump!(rom: ADDR, remap: (CLOCK_ENABLE_REG, BIT, REMAP_REG, MASK, VALUE))`, or
/// `pre_init_jump!(rom: ADDR)` on a chip without a remap.
#[macro_export]
macro_rules! pre_init_jump {
    (rom: $rom:expr, remap: ($enable:expr, $bit:expr, $register:expr, $mask:expr, $value:expr $(,)?)) => {
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
            // The SYSCFG clock on.
            "ldr r0, ={enable}",
            "ldr r1, [r0]",
            "ldr r2, ={enable_bit}",
            "orrs r1, r2",
            "str r1, [r0]",
            // The remap field to system memory.
            "ldr r0, ={register}",
            "ldr r1, [r0]",
            "ldr r2, ={mask}",
            "bics r1, r2",
            "ldr r2, ={value}",
            "orrs r1, r2",
            "str r1, [r0]",
            "dsb",
            "isb",
            // VTOR = 0x00000000: the ROM's table through the alias.
            "ldr r0, ={vtor}",
            "movs r1, #0",
            "str r1, [r0]",
            // MSP = [ROM], PC = [ROM + 4].
            "ldr r0, ={rom}",
            "ldr r1, [r0]",
            "msr msp, r1",
            "ldr r1, [r0, #4]",
            "bx r1",
            "1:",
            "bx lr",
            ".ltorg",
            ".size __pre_init, . - __pre_init",
            marker = sym $crate::__pre_init::MARKER,
            magic = const $crate::__pre_init::JUMP_MAGIC,
            enable = const $enable,
            enable_bit = const 1u32 << $bit,
            register = const $register,
            mask = const $mask,
            value = const $value,
            vtor = const $crate::__pre_init::SCB_VTOR,
            rom = const $rom,
        );
    };
    (rom: $rom:expr) => {
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
            // VTOR = the ROM's table at its own address.
            "ldr r0, ={vtor}",
            "ldr r1, ={rom}",
            "str r1, [r0]",
            "dsb",
            "isb",
            "ldr r0, ={rom}",
            "ldr r1, [r0]",
            "msr msp, r1",
            "ldr r1, [r0, #4]",
            "bx r1",
            "1:",
            "bx lr",
            ".ltorg",
            ".size __pre_init, . - __pre_init",
            marker = sym $crate::__pre_init::MARKER,
            magic = const $crate::__pre_init::JUMP_MAGIC,
            vtor = const $crate::__pre_init::SCB_VTOR,
            rom = const $rom,
        );
    };
}

/// The bytes the console interrupt received, for the main loop.
pub mod rx {
    const LEN: usize = 16;
    static mut RING: [u8; LEN] = [0; LEN];
    static mut HEAD: usize = 0;
    static mut TAIL: usize = 0;

    /// From the console interrupt handler: keeps `b` unless the ring is full.
    pub fn push(b: u8) {
        // SAFETY: only the console interrupt pushes (an exception handler does not nest with
        // itself); the main loop pops inside a critical section.
        unsafe {
            let next = (HEAD + 1) % LEN;
            if next != TAIL {
                RING[HEAD] = b;
                HEAD = next;
            }
        }
    }

    pub fn pop() -> Option<u8> {
        cortex_m::interrupt::free(|_| {
            // SAFETY: the console interrupt cannot run inside the critical section.
            unsafe {
                if TAIL == HEAD {
                    None
                } else {
                    let b = RING[TAIL];
                    TAIL = (TAIL + 1) % LEN;
                    Some(b)
                }
            }
        })
    }
}

/// The chip's console: its USART's output functions (in the chip's board crate).
pub struct Console {
    pub puts: fn(&str),
    pub put_hex: fn(u32),
    pub put_dec: fn(u32),
    /// Waits until the last byte has left the shift register.
    pub flush: fn(),
}

/// Mapping system memory at 0x00000000 (the G0's SYSCFG_CFGR1.MEM_MODE, the G4's
/// SYSCFG_MEMRMP.MEM_MODE): the SYSCFG clock first, then the field.
pub struct Remap {
    /// RCC enable register and bit of the SYSCFG clock.
    pub clock: (u32, u32),
    pub register: u32,
    pub mask: u32,
    /// The field's value for system memory.
    pub value: u32,
}

/// Option byte loading through FLASH_CR.OBL_LAUNCH after the KEYR and OPTKEYR unlock sequences
/// (RM0444 3.4.2, RM0440 5.4.2).
pub struct OptionByteLoading {
    pub keyr: u32,
    pub optkeyr: u32,
    pub cr: u32,
    pub launch_bit: u32,
}

/// What the jump and the commands need to know of a chip.
pub struct Chip {
    /// The ROM's vector table (AN2606).
    pub system_memory: u32,
    /// External interrupt lines of the NVIC.
    pub irqs: u32,
    /// The line `q` leaves enabled and pending (a user button's EXTI line).
    pub button_irq: u32,
    /// RCC reset register and bit of the console USART, pulsed so that the ROM starts its
    /// interface from reset values.
    pub console_reset: (u32, u32),
    /// `None` on a chip that boots its ROM without a remap (the F1: VTOR at system memory, RM0008
    /// 3.4).
    pub remap: Option<Remap>,
    /// IWDG_KR (the other IWDG registers follow it: PR at +4, RLR at +8).
    pub iwdg_kr: u32,
    /// `None` where option bytes load only at a reset (the F1).
    pub option_byte_loading: Option<OptionByteLoading>,
}

/// One fixture: its chip, its console, its help text and its task stack.
pub struct App {
    pub chip: Chip,
    pub console: Console,
    /// `?`: the main commands (the faulty jumps are in each fixture's documentation).
    pub help: &'static str,
    /// One past the top of the "RTOS task" stack `s` / `S` run on.
    pub task_stack_top: fn() -> u32,
}

/// How the direct jump enters the ROM: the recommended way, or with one mistake.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Jump {
    /// `j` / `S`: everything right.
    Recommended,
    /// `J`: as ST's KB article publishes it: everything of `j` but VTOR, which keeps pointing at
    /// the application's table (right only with a ROM that sets VTOR itself).
    VtorUntouched,
    /// `n`: SYSCFG clock on (as CubeMX's HAL_MspInit leaves it) but the remap never written.
    NoRemap,
    /// `k`: the remap written while the SYSCFG clock is off: the write is lost (P4).
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
pub fn jump_to_bootloader(chip: &Chip, how: Jump) -> ! {
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
    for i in 0..chip.irqs.div_ceil(32) {
        wr(NVIC_ICER + 4 * i, 0xFFFF_FFFF);
        wr(NVIC_ICPR + 4 * i, 0xFFFF_FFFF);
    }
    if how == Jump::IrqLeftPending {
        // Stands for the user button's EXTI line, enabled by the application and hit just before
        // the jump.
        let (word, bit) = (4 * (chip.button_irq / 32), 1 << (chip.button_irq % 32));
        wr(NVIC_ISER + word, bit);
        wr(NVIC_ISPR + word, bit);
    }
    // The application's USART back to its reset state, so the ROM starts its interface from
    // defaults.
    let (reset, bit) = chip.console_reset;
    modify(reset, 0, 1 << bit);
    modify(reset, 1 << bit, 0);
    let vtor = match &chip.remap {
        Some(remap) => {
            if how != Jump::RemapClockOff {
                modify(remap.clock.0, 0, 1 << remap.clock.1);
            }
            if how != Jump::NoRemap {
                modify(remap.register, remap.mask, remap.value);
            }
            // The table at 0x0 is the ROM's once system memory is mapped there.
            0
        }
        None => chip.system_memory,
    };
    if how != Jump::VtorUntouched {
        wr(SCB_VTOR, vtor);
    }
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
    // SAFETY: every interrupt source is off (except the deliberate mistakes); the ROM's USART and
    // USB interfaces need interrupts (pitfall P2), and the KB code enables them right before the
    // branch.
    unsafe { cortex_m::interrupt::enable() };
    let sp = rd(chip.system_memory);
    let pc = rd(chip.system_memory + 4);
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
extern "C" fn jump_from_task(chip: &'static Chip, how: Jump) -> ! {
    jump_to_bootloader(chip, how)
}

/// Switch thread mode to the process stack (CONTROL.SPSEL = 1, ISB: PM0223 / PM0056 / PM0214
/// 2.1.3) at `top` and jump from there.
fn jump_on_process_stack(chip: &'static Chip, top: u32, how: Jump) -> ! {
    let task: extern "C" fn(&'static Chip, Jump) -> ! = jump_from_task;
    // Every operand in a register of its own: LLVM may give two `in(reg)` operands of equal
    // value one register, and a scratch register written here could then be the argument
    // register (`how` = 0 and a scratch 0 shared r1, and `S` jumped as `n`).
    // SAFETY: the task never returns; the task stack is used by nothing else.
    unsafe {
        core::arch::asm!(
            "msr psp, r3",
            "msr control, r2",
            "isb",
            "bx r4",
            in("r0") chip as *const Chip,
            in("r1") how as u32,
            // CONTROL.SPSEL = 1.
            in("r2") 2u32,
            in("r3") top,
            in("r4") task as usize | 1,
            options(noreturn),
        )
    }
}

/// The trampoline's reset handler (seed 004): request a system reset (AIRCR.SYSRESETREQ with the
/// VECTKEY, PM0223 4.3.5) and wait for it. It needs nothing but the stack the trampoline's SP
/// word provides.
pub extern "C" fn trampoline_reset() -> ! {
    wr(SCB_AIRCR, 0x05FA_0004);
    cortex_m::asm::dsb();
    loop {
        cortex_m::asm::nop();
    }
}

/// For the vector tables' unused lines.
pub extern "C" fn default_irq() {
    loop {
        cortex_m::asm::wfi();
    }
}

/// One entry of a vector table.
#[derive(Clone, Copy)]
#[repr(C)]
pub union Vector {
    pub handler: unsafe extern "C" fn(),
    pub diverging: extern "C" fn() -> !,
    pub stack: *const u32,
}

// SAFETY: the vector tables are read-only data in flash.
unsafe impl Sync for Vector {}

unsafe extern "C" {
    static __vector_table: u32;
}

/// The image's link base: where its vector table is.
pub fn base() -> u32 {
    // Only the address of the linker-provided symbol is taken.
    addr_of!(__vector_table) as u32
}

/// The first line after a reset: link base, VTOR, boot count and the reset flags of `csr` that
/// `flags` names, as `hil-app 0.1.0 base=0x08000000 vtor=0x08000000 boots=1 csr=0x0C000000 [ PIN
/// PWR ]`.
pub fn banner(app: &App, csr: u32, flags: &[(u32, &str)]) {
    let c = &app.console;
    (c.puts)("\r\nhil-app ");
    (c.puts)(env!("CARGO_PKG_VERSION"));
    (c.puts)(" base=");
    (c.put_hex)(base());
    (c.puts)(" vtor=");
    (c.put_hex)(rd(SCB_VTOR));
    (c.puts)(" boots=");
    (c.put_dec)(marker::get(1));
    (c.puts)(" csr=");
    (c.put_hex)(csr);
    (c.puts)(" [");
    for &(bit, name) in flags {
        if csr & (1 << bit) != 0 {
            (c.puts)(name);
        }
    }
    (c.puts)(" ]\r\n");
}

/// Set by `w`: stop refreshing the IWDG so that it resets the chip.
static mut LET_WATCHDOG_EXPIRE: bool = false;
static mut TICKS: u32 = 0;

/// From the SysTick handler, every millisecond: every 100 ms, `toggle_led` and a reload of the
/// IWDG (key 0xAAAA; without a running IWDG this does nothing) unless `w` let it expire or the
/// fixture is built not to.
pub fn systick(app: &App, refresh_watchdog: bool, toggle_led: fn()) {
    // SAFETY: TICKS is only used here (SysTick does not nest with itself); the flag is one that
    // main sets once.
    let (t, expire) = unsafe {
        TICKS = TICKS.wrapping_add(1);
        (TICKS, read_volatile(addr_of!(LET_WATCHDOG_EXPIRE)))
    };
    if t % 100 == 0 {
        toggle_led();
        if !expire && refresh_watchdog {
            wr(app.chip.iwdg_kr, 0xAAAA);
        }
    }
}

fn announce_jump(app: &App) {
    (app.console.puts)("jump\r\n");
    (app.console.flush)();
}

/// The one-byte commands every fixture answers alike; `false` for the others (the fixture's own
/// commands, and `n` / `k` on a chip without a remap, `o` on one without option byte loading).
pub fn command(app: &'static App, c: u8) -> bool {
    let con = &app.console;
    let chip = &app.chip;
    let jump = |how| -> ! {
        announce_jump(app);
        jump_to_bootloader(chip, how)
    };
    match c {
        b'v' => {
            (con.puts)("hil-app ");
            (con.puts)(env!("CARGO_PKG_VERSION"));
            (con.puts)(" base=");
            (con.put_hex)(base());
            (con.puts)("\r\n");
        }
        b'r' => {
            (con.puts)("reset\r\n");
            (con.flush)();
            cortex_m::peripheral::SCB::sys_reset();
        }
        b'm' => {
            (con.puts)("marker ");
            (con.put_hex)(marker::get(0));
            (con.puts)(" boots=");
            (con.put_dec)(marker::get(1));
            (con.puts)("\r\n");
        }
        b'j' => jump(Jump::Recommended),
        b'J' => jump(Jump::VtorUntouched),
        b'n' if chip.remap.is_some() => jump(Jump::NoRemap),
        b'k' if chip.remap.is_some() => jump(Jump::RemapClockOff),
        b't' => jump(Jump::SysTickLeftOn),
        b'q' => jump(Jump::IrqLeftPending),
        b'p' => {
            announce_jump(app);
            // `__disable_irq()` and the jump, nothing else (pitfall P2).
            cortex_m::interrupt::disable();
            // SAFETY: system memory holds the ROM's vector table.
            unsafe { cortex_m::asm::bootload(chip.system_memory as *const u32) }
        }
        b's' => {
            announce_jump(app);
            jump_on_process_stack(chip, (app.task_stack_top)(), Jump::KeepPsp);
        }
        b'S' => {
            announce_jump(app);
            jump_on_process_stack(chip, (app.task_stack_top)(), Jump::Recommended);
        }
        b'b' => {
            (con.puts)("reset+jump\r\n");
            (con.flush)();
            marker::set(2, marker::JUMP_MAGIC);
            cortex_m::peripheral::SCB::sys_reset();
        }
        b'w' => {
            (con.puts)("watchdog\r\n");
            (con.flush)();
            // SAFETY: only main writes it; SysTick only reads it.
            unsafe { write_volatile(addr_of_mut!(LET_WATCHDOG_EXPIRE), true) };
            // IWDG: /4 prescaler, reload 0x40 (about 8 ms at 32 kHz, 6 ms at the F1's 40 kHz),
            // then never refreshed.
            let kr = chip.iwdg_kr;
            wr(kr, 0xCCCC);
            wr(kr, 0x5555);
            wr(kr + 0x04, 0);
            wr(kr + 0x08, 0x40);
            wr(kr, 0xAAAA);
        }
        b'o' if chip.option_byte_loading.is_some() => {
            let Some(obl) = &chip.option_byte_loading else { return false };
            (con.puts)("obl\r\n");
            (con.flush)();
            wr(obl.keyr, 0x4567_0123);
            wr(obl.keyr, 0xCDEF_89AB);
            wr(obl.optkeyr, 0x0819_2A3B);
            wr(obl.optkeyr, 0x4C5D_6E7F);
            modify(obl.cr, 0, 1 << obl.launch_bit);
        }
        b'?' => (con.puts)(app.help),
        _ => return false,
    }
    true
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    cortex_m::asm::udf()
}
