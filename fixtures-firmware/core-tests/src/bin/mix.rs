//! A realistic instruction mix for the core's benchmark and a whole-program correctness check:
//! LCG fill, memcpy, bitwise CRC-32, insertion sort, software division, calls, and SysTick
//! interrupts every 10000 cycles. Exits with a checksum the host recomputes.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile};
use core::sync::atomic::{AtomicU32, Ordering};
use core_tests::{exit, log, scs};
use cortex_m_rt::{entry, exception};

/// The seed and round count, read volatile so the compiler cannot fold the work away.
#[unsafe(no_mangle)]
static PARAMS: [u32; 2] = [1, 20];

static TICKS: AtomicU32 = AtomicU32::new(0);
static mut BUF: [u8; 256] = [0; 256];
static mut COPY: [u8; 256] = [0; 256];
static mut ARR: [u32; 64] = [0; 64];

#[inline(never)]
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[inline(never)]
fn insertion_sort(a: &mut [u32]) {
    for i in 1..a.len() {
        let mut j = i;
        while j > 0 && a[j - 1] > a[j] {
            a.swap(j - 1, j);
            j -= 1;
        }
    }
}

#[entry]
fn main() -> ! {
    // SAFETY: PARAMS is a plain static; volatile keeps its value unknown to the optimizer.
    let (mut seed, rounds) = unsafe { (read_volatile(addr_of!(PARAMS[0])), read_volatile(addr_of!(PARAMS[1]))) };
    scs::write(scs::SYST_RVR, 9_999);
    scs::write(scs::SYST_CVR, 0);
    scs::write(scs::SYST_CSR, 0b111);
    // SAFETY: single-threaded; the SysTick handler touches only TICKS.
    let (buf, copy, arr) = unsafe { (&mut *addr_of_mut!(BUF), &mut *addr_of_mut!(COPY), &mut *addr_of_mut!(ARR)) };
    let mut acc = 0u32;
    for round in 0..rounds {
        for b in buf.iter_mut() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (seed >> 16) as u8;
        }
        copy.copy_from_slice(buf);
        acc ^= crc32(copy);
        for (i, a) in arr.iter_mut().enumerate() {
            *a = u32::from_le_bytes([copy[4 * i], copy[4 * i + 1], copy[4 * i + 2], copy[4 * i + 3]]);
        }
        insertion_sort(arr);
        acc = acc.wrapping_add(arr[0] ^ arr[63]);
        acc = acc.wrapping_add((seed / (round + 3)) % 1000);
    }
    scs::write(scs::SYST_CSR, 0);
    log(TICKS.load(Ordering::Relaxed));
    exit(acc)
}

#[exception]
fn SysTick() {
    TICKS.store(TICKS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}
