//! SVC: the handler reads its arguments from the stacked frame, returns a value through it and
//! decodes the SVC number from the instruction; then SVC with PRIMASK set escalates to HardFault
//! (ARMv6-M B1.5.4), whose stacked PC is the instruction after the SVC.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, Ordering};
use core_tests::{check, exit, log};
use cortex_m_rt::{ExceptionFrame, entry, exception};

static LAST_SVC: AtomicU32 = AtomicU32::new(0);

// Naked SVCall: hand the frame (on MSP: thread mode uses MSP here) to Rust and return with the
// EXC_RETURN still in LR.
global_asm!(
    ".section .text.SVCall,\"ax\",%progbits",
    ".global SVCall",
    ".type SVCall,%function",
    ".thumb_func",
    "SVCall:",
    "mrs r0, msp",
    "ldr r1, =svc_rust",
    "bx r1",
);

#[unsafe(no_mangle)]
extern "C" fn svc_rust(frame: *mut u32) {
    // SAFETY: the core stacked 8 words at `frame`; the stacked PC follows the SVC instruction.
    unsafe {
        let pc = *frame.add(6);
        let number = *((pc - 2) as *const u8) as u32;
        LAST_SVC.store(number, Ordering::Relaxed);
        *frame += number;
    }
}

#[entry]
fn main() -> ! {
    let mut r: u32 = 35;
    // SAFETY: the handler only rewrites the stacked r0.
    unsafe { asm!("svc #7", inout("r0") r) };
    check!(r == 42 && LAST_SVC.load(Ordering::Relaxed) == 7);
    log(r);
    let mut r: u32 = 100;
    // SAFETY: as above.
    unsafe { asm!("svc #9", inout("r0") r) };
    check!(r == 109 && LAST_SVC.load(Ordering::Relaxed) == 9);
    log(r);
    cortex_m::interrupt::disable();
    log(0xE0);
    // SAFETY: escalates to HardFault, which ends the program.
    unsafe { asm!("svc #3") };
    exit(0xBAD2_0000)
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    // SAFETY: the stacked PC is a valid code address in this image.
    let insn = unsafe { *((ef.pc() - 2) as *const u16) };
    log(0xF0);
    log(insn as u32);
    check!(LAST_SVC.load(Ordering::Relaxed) == 9);
    exit(0)
}
