//! The hand-off contract a ROM bootloader model builds on: entry, polling on device events and
//! timers, exceptions through the ROM's vector table, USART access as the CPU, Go and reset.

use std::any::Any;
use std::time::Duration;

use hil_cortex_m::{Reg, ResetCause, Size, VirtualDuration};
use hil_virtual_board::{
    Board, BoardConfig, EventKind, ImageFormat, RamInit, RomControl, RomCx, RomEntry, RomEntryKind, SystemBootloader,
};

const T: Duration = Duration::from_secs(20);
const USART2: u32 = 0x4000_4400;

/// A toy ROM: echoes each byte + 1 on USART2, `g` = Go 0x08000000, `R` = reset; takes the USART2
/// transmission-complete interrupt through its own vector table and wakes itself every 10 ms.
#[derive(Default)]
struct EchoRom {
    entries: Vec<RomEntry>,
    polls: u64,
    timer_polls: u64,
    usart_irqs: u64,
}

impl SystemBootloader for EchoRom {
    fn name(&self) -> &str {
        "echo ROM (test)"
    }
    fn on_entry(&mut self, entry: &RomEntry, cx: &mut RomCx<'_>) -> RomControl {
        self.entries.push(entry.clone());
        let vt = cx.layout().vector_table;
        cx.set_vtor(vt).unwrap();
        // USART2 115200 8N1, received bytes polled; the TC interrupt (TCIE) enabled in the NVIC
        // (line 28): its exceptions vector through the ROM's table into the model.
        cx.write(0x4002_103C, Size::Word, 1 << 17).unwrap();
        cx.write(USART2 + 0x0C, Size::Word, 139).unwrap();
        cx.write(USART2, Size::Word, 0b1101 | 1 << 6).unwrap();
        cx.write(0xE000_E100, Size::Word, 1 << 28).unwrap();
        cx.set_primask(false);
        RomControl::Idle { wake_at: Some(cx.now() + VirtualDuration::from_ms(10)) }
    }
    fn poll(&mut self, cx: &mut RomCx<'_>) -> RomControl {
        self.polls += 1;
        let isr = cx.read(USART2 + 0x1C, Size::Word).unwrap();
        if isr & (1 << 5) == 0 {
            self.timer_polls += 1;
            return RomControl::Idle { wake_at: Some(cx.now() + VirtualDuration::from_ms(10)) };
        }
        let b = cx.read(USART2 + 0x24, Size::Word).unwrap() as u8;
        match b {
            b'g' => {
                cx.write(USART2 + 0x28, Size::Word, b'G' as u32).unwrap();
                // Stop the USART2 interrupt as a ROM de-initialising its peripherals would, then Go.
                cx.write(0xE000_E180, Size::Word, 1 << 28).unwrap();
                cx.go(0x0800_0000).unwrap();
                RomControl::Jumped
            }
            b'R' => RomControl::Reset(ResetCause::Software),
            _ => {
                cx.write(USART2 + 0x28, Size::Word, b.wrapping_add(1) as u32).unwrap();
                RomControl::Idle { wake_at: None }
            }
        }
    }
    fn on_exception(&mut self, exception: u32, cx: &mut RomCx<'_>) -> RomControl {
        if exception == 16 + 28 {
            self.usart_irqs += 1;
            // TCCF: clear the transmission-complete flag (RM0444 33.8.9).
            cx.write(USART2 + 0x20, Size::Word, 1 << 6).unwrap();
        }
        RomControl::Return
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

fn rom_stats(b: &Board) -> (usize, u64, u64, u64) {
    b.exec("ROM stats", |m| {
        let r = m.rom().as_any().downcast_mut::<EchoRom>().expect("EchoRom");
        Ok((r.entries.len(), r.polls, r.timer_polls, r.usart_irqs))
    })
    .wait()
    .unwrap()
}

#[test]
fn rom_model_polls_echoes_takes_exceptions_and_goes_back() {
    let cfg = BoardConfig { name: "rom-echo".into(), power_on: false, ram_init: RamInit::Zero, ..Default::default() };
    let b = Board::start_with_rom(cfg, Some(Box::new(EchoRom::default()))).unwrap();
    let app = hil_fixtures::get("app", 0x0800_0000).unwrap().elf.to_vec();
    b.load_image(app, ImageFormat::Elf).wait().unwrap();
    b.power_on().wait().unwrap();
    let u = b.uart("USART2").unwrap();
    u.read_until(b" ]\r\n", T).wait().unwrap();
    // Jump into the ROM from the application.
    u.write(b"j").wait().unwrap();
    u.read_until(b"jump\r\n", T).wait().unwrap();
    let e = b.wait_event(0, T, |e| matches!(e.kind, EventKind::RomEntered(_))).unwrap();
    let EventKind::RomEntered(entry) = e.kind else { unreachable!() };
    assert_eq!(entry.via, RomEntryKind::Jump);
    // Device events (received frames) wake the idle loop; the model answers through USART2.
    u.write(b"ab").wait().unwrap();
    assert_eq!(u.read_until(b"bc", T).wait().unwrap(), b"bc");
    // Its timer wakes it too, and the USART2 interrupt vectors through the ROM's table (100 ms on
    // the board's clock: a fast board runs only while the host waits on it).
    b.sleep(Duration::from_millis(100)).wait().unwrap();
    let (entries, polls, timer_polls, usart_irqs) = rom_stats(&b);
    assert_eq!(entries, 1);
    assert!(polls >= 2 && timer_polls >= 1, "polls {polls}, timer polls {timer_polls}");
    assert!(usart_irqs >= 2, "USART2 interrupts through the ROM's vector table: {usart_irqs}");
    let snap = b.snapshot().wait().unwrap();
    assert!(snap.rom_active);
    assert_eq!(snap.core.unwrap().vtor, 0x1FFF_0000);
    // Go 0x08000000: MSP and PC from the application's vector table; the app starts again.
    let cur = b.event_cursor().wait().unwrap();
    u.write(b"g").wait().unwrap();
    let text = String::from_utf8_lossy(&u.read_until(b" ]\r\n", T).wait().unwrap()).into_owned();
    assert!(text.starts_with('G'), "{text}");
    assert!(text.contains("boots=2") && text.contains("vtor=0x08000000"), "{text}");
    let left = b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomLeft { .. })).unwrap();
    let reset_handler = b.peek(0x0800_0004, 4).wait().unwrap();
    let rh = u32::from_le_bytes(reset_handler.try_into().unwrap()) & !1;
    assert!(matches!(left.kind, EventKind::RomLeft { pc, msp: 0x2000_9000 } if pc == rh), "{left:?}");
    // Back in the ROM, then a reset requested by the model.
    u.write(b"j").wait().unwrap();
    u.read_until(b"jump\r\n", T).wait().unwrap();
    u.write(b"R").wait().unwrap();
    let text = String::from_utf8_lossy(&u.read_until(b" ]\r\n", T).wait().unwrap()).into_owned();
    assert!(text.contains("[ PIN SFT ]") && text.contains("boots=3"), "{text}");
    b.shutdown().unwrap();
}

#[test]
fn images_outside_flash_are_refused_with_the_segment() {
    let b = Board::start(BoardConfig { name: "rom-image".into(), ..Default::default() }).unwrap();
    let e = b.load_image(vec![0; 16], ImageFormat::Bin { base: 0x2000_0000 }).wait().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("segment 0") && msg.contains("0x20000000") && msg.contains("STM32G071RB"), "{msg}");
    let e = b.load_image(vec![0; 16], ImageFormat::Bin { base: 0x0801_FFF8 }).wait().unwrap_err();
    assert!(e.to_string().contains("0x0801fff8"), "{e}");
    b.shutdown().unwrap();
}

/// Code executed by the core programs flash through the FLASH model, polling BSY1 on virtual
/// time: unlock, PG, two word stores, wait, BKPT (hand-assembled Thumb, loaded over the debug
/// port like a flash algorithm).
#[test]
fn core_executed_flash_programming_through_the_debug_port() {
    use hil_cortex_m::HaltReason;
    use hil_virtual_board::CoreState;
    let b = Board::start(BoardConfig { name: "rom-flashalgo".into(), ram_init: RamInit::Zero, ..Default::default() })
        .unwrap();
    let d = b.debug();
    d.halt().wait().unwrap();
    let code: [u16; 16] = [
        0x4807, // ldr r0, =0x40022000
        0x4908, // ldr r1, =KEY1
        0x6081, // str r1, [r0, #8]   FLASH_KEYR
        0x4908, // ldr r1, =KEY2
        0x6081, // str r1, [r0, #8]
        0x2101, // movs r1, #1
        0x6141, // str r1, [r0, #0x14] FLASH_CR = PG
        0x4A07, // ldr r2, =0x08010000
        0x4B07, // ldr r3, =lo
        0x6013, // str r3, [r2]
        0x4B07, // ldr r3, =hi
        0x6053, // str r3, [r2, #4]
        0x6901, // wait: ldr r1, [r0, #0x10] FLASH_SR
        0x0C49, // lsrs r1, r1, #17 (carry = BSY1)
        0xD2FC, // bcs wait
        0xBE00, // bkpt #0
    ];
    let mut words: Vec<u32> = code.chunks(2).map(|c| c[0] as u32 | (c[1] as u32) << 16).collect();
    words.extend([0x4002_2000, 0x4567_0123, 0xCDEF_89AB, 0x0801_0000, 0x1122_3344, 0x5566_7788]);
    d.write_words(0x2000_1000, words).wait().unwrap();
    d.set_reg(Reg::SpecialPacked, 1).wait().unwrap(); // PRIMASK
    d.set_reg(Reg::Xpsr, 1 << 24).wait().unwrap();
    d.set_reg(Reg::Pc, 0x2000_1000).wait().unwrap();
    let before = d.counters().wait().unwrap();
    d.resume().wait().unwrap();
    let end = std::time::Instant::now() + T;
    while d.state().wait().unwrap() != CoreState::Halted(HaltReason::Breakpoint) {
        assert!(std::time::Instant::now() < end, "the routine did not reach its BKPT");
        b.sleep(Duration::from_millis(5)).wait().unwrap();
    }
    assert_eq!(d.read(0x0801_0000, Size::Word).wait().unwrap(), 0x1122_3344);
    assert_eq!(d.read(0x0801_0004, Size::Word).wait().unwrap(), 0x5566_7788);
    let after = d.counters().wait().unwrap();
    assert_eq!(after.accesses.flash_reg_writes_cpu - before.accesses.flash_reg_writes_cpu, 3);
    assert!(after.accesses.flash_reg_reads_cpu - before.accesses.flash_reg_reads_cpu > 10, "BSY1 polled");
    assert_eq!(after.accesses.flash_programs - before.accesses.flash_programs, 1);
    // 85 us of programming at 16 MHz: the polling loop ran for at least 1360 cycles.
    assert!(after.cycles - before.cycles >= 1360, "{} cycles", after.cycles - before.cycles);
    b.shutdown().unwrap();
}
