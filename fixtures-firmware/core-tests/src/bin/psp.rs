//! Thread mode on the process stack: after CONTROL.SPSEL = 1 the thread's SP is PSP, an exception
//! stacks its frame on PSP, the handler runs on MSP with EXC_RETURN 0xFFFFFFFD in LR, and the
//! return resumes on PSP.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU32, Ordering};
use core_tests::{check, exit, log};
use cortex_m_rt::entry;

#[unsafe(no_mangle)]
static SEEN_LR: AtomicU32 = AtomicU32::new(0);
#[unsafe(no_mangle)]
static SEEN_MSP: AtomicU32 = AtomicU32::new(0);
#[unsafe(no_mangle)]
static SEEN_PSP: AtomicU32 = AtomicU32::new(0);
static MSP0: AtomicU32 = AtomicU32::new(0);

#[unsafe(no_mangle)]
static mut PSTACK: [u64; 128] = [0; 128];

// Naked SVCall: record EXC_RETURN, MSP and PSP as the core left them, then return.
global_asm!(
    ".section .text.SVCall,\"ax\",%progbits",
    ".global SVCall",
    ".type SVCall,%function",
    ".thumb_func",
    "SVCall:",
    "ldr r2, =SEEN_LR",
    "mov r3, lr",
    "str r3, [r2]",
    "ldr r2, =SEEN_MSP",
    "mrs r3, msp",
    "str r3, [r2]",
    "ldr r2, =SEEN_PSP",
    "mrs r3, psp",
    "str r3, [r2]",
    "bx lr",
);

#[entry]
fn main() -> ! {
    let msp: u32;
    // SAFETY: reads a special register.
    unsafe { asm!("mrs {}, msp", out(reg) msp) };
    MSP0.store(msp, Ordering::Relaxed);
    let top = addr_of_mut!(PSTACK) as u32 + core::mem::size_of::<[u64; 128]>() as u32;
    log(1);
    // SAFETY: switches Thread mode to PSP and continues in a function that never returns, so no
    // frame of this function is used on the new stack.
    unsafe {
        asm!(
            "msr psp, r0",
            "movs r0, #2",
            "msr control, r0",
            "isb",
            "bl {f}",
            in("r0") top,
            f = sym on_psp,
            options(noreturn),
        )
    }
}

extern "C" fn on_psp() -> ! {
    let base = addr_of_mut!(PSTACK) as u32;
    let top = base + core::mem::size_of::<[u64; 128]>() as u32;
    let (sp, control): (u32, u32);
    // SAFETY: reads registers.
    unsafe { asm!("mov {}, sp", "mrs {}, control", out(reg) sp, out(reg) control) };
    check!(sp > base && sp <= top && control & 2 != 0);
    log(2);
    let before: u32;
    // SAFETY: reads PSP, then the handler only records registers.
    unsafe { asm!("mrs {b}, psp", "svc #1", b = out(reg) before) };
    check!(SEEN_LR.load(Ordering::Relaxed) == 0xFFFF_FFFD);
    // The frame went to PSP (8-byte aligned, 8 words); MSP was untouched.
    let frame = SEEN_PSP.load(Ordering::Relaxed);
    check!(frame == (before - 32) & !7);
    check!(SEEN_MSP.load(Ordering::Relaxed) == MSP0.load(Ordering::Relaxed));
    // SAFETY: the frame lies inside PSTACK.
    let xpsr = unsafe { *((frame + 28) as *const u32) };
    check!(xpsr & (1 << 24) != 0 && xpsr & 0x3F == 0);
    let after: u32;
    // SAFETY: reads PSP.
    unsafe { asm!("mrs {}, psp", out(reg) after) };
    check!(after == before);
    log(3);
    exit(0)
}
