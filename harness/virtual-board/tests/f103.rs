//! The virtual STM32F103CB: the `app-f103` fixture on the ARMv7-M core with the F1 peripherals
//! (RCC, GPIO, USART v1), boot selection from the BOOT0 pin (RM0008 3.4) and the ROM bootloader
//! answering AN3155 on USART1.

use std::time::Duration;

use hil_virtual_board::{Board, BoardConfig, EventKind, ImageFormat, RamInit};

const T: Duration = Duration::from_secs(20);
const CHIP: &str = "STM32F103CB";

fn app(base: u32) -> Vec<u8> {
    hil_fixtures::get("app-f103", base).unwrap_or_else(|| panic!("app-f103 fixture at {base:#x} built")).elf.to_vec()
}

fn board(name: &str, boot0: bool) -> Board {
    let cfg = BoardConfig {
        name: name.into(),
        chip: CHIP.into(),
        power_on: false,
        boot0,
        ram_init: RamInit::Random { seed: 7 },
        ..Default::default()
    };
    let b = Board::start(cfg).unwrap();
    b.load_image(app(0x0800_0000), ImageFormat::Elf).wait().unwrap();
    b.power_on().wait().unwrap();
    b
}

fn banner(b: &Board) -> String {
    let u = b.uart("USART1").unwrap();
    String::from_utf8_lossy(&u.read_until(b" ]\r\n", T).wait().unwrap()).into_owned()
}

#[test]
fn f103_app_prints_banner_on_usart1_and_blinks_pc13() {
    let b = board("f103-app", false);
    let first = banner(&b);
    assert!(first.contains("hil-app 0.1.0 base=0x08000000 vtor=0x08000000 boots=1"), "{first}");
    assert!(first.contains("[ PIN PWR ]"), "power-on flags (RM0008 7.3.10 PORRSTF/PINRSTF): {first}");
    // SysTick toggles PC13 every 100 ms of virtual time (8 MHz HSI core clock).
    let e1 = b.wait_event(0, T, |e| matches!(&e.kind, EventKind::Pin { pin, level: false, .. } if pin == "PC13"));
    let e1 = e1.unwrap();
    let e2 = b.wait_event(e1.seq + 1, T, |e| matches!(&e.kind, EventKind::Pin { pin, .. } if pin == "PC13")).unwrap();
    let gap_us = (e2.at.as_ps() - e1.at.as_ps()) / 1_000_000;
    assert!(gap_us.abs_diff(100_000) < 100, "LED toggles every 100 ms: {gap_us} us");
    // 'r': SYSRESETREQ; RCC_CSR shows SFTRSTF (+ PINRSTF) and the RAM marker counts the boot.
    let u = b.uart("USART1").unwrap();
    u.write(b"r").wait().unwrap();
    let second = banner(&b);
    assert!(second.contains("boots=2"), "{second}");
    assert!(second.contains("SFT ]"), "{second}");
}

#[test]
fn f103_boot0_high_starts_the_rom_which_answers_an3155_on_usart1() {
    let b = board("f103-rom", true);
    let u = b.uart("USART1").unwrap();
    // AN3155 2: 0x7F (8E1 at the host's rate) is answered with ACK 0x79.
    u.write(&[0x7F]).wait().unwrap();
    assert_eq!(u.read(1, T).wait().unwrap(), [0x79]);
    // Get ID (0x02 0xFD): PID 0x0410 (AN2606 / RM0008 31.6.1 DEV_ID).
    u.write(&[0x02, 0xFD]).wait().unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        got.extend(u.read(5 - got.len(), T).wait().unwrap());
    }
    assert_eq!(got, [0x79, 0x01, 0x04, 0x10, 0x79]);
    // Get Version (0x01 0xFE): protocol version 0x22.
    u.write(&[0x01, 0xFE]).wait().unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        got.extend(u.read(5 - got.len(), T).wait().unwrap());
    }
    assert_eq!(got[..2], [0x79, 0x22], "{got:02x?}");
    // BOOT0 low and a reset: the application again (the alias follows the pins, RM0008 3.4).
    b.set_boot0(false).wait().unwrap();
    b.pulse_nrst().wait().unwrap();
    let text = banner(&b);
    assert!(text.contains("hil-app"), "{text}");
}

fn read_n(u: &hil_virtual_board::UartPort, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let chunk = u.read(n - got.len(), T).wait().unwrap();
        assert!(!chunk.is_empty(), "no reply; got {got:02x?}");
        got.extend(chunk);
    }
    got
}

/// AN3155 Read Memory of 16 bytes at `addr`: `None` when the command is refused (NACK).
fn read_memory(u: &hil_virtual_board::UartPort, addr: u32) -> Option<Vec<u8>> {
    u.write(&[0x11, 0xEE]).wait().unwrap();
    if read_n(u, 1) != [0x79] {
        return None;
    }
    let a = addr.to_be_bytes();
    u.write(&[a[0], a[1], a[2], a[3], a[0] ^ a[1] ^ a[2] ^ a[3]]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79]);
    u.write(&[15, !15]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79]);
    Some(read_n(u, 16))
}

fn sync(b: &Board, u: &hil_virtual_board::UartPort) {
    // The ROM needs a moment after the reset that follows an option change.
    b.sleep(Duration::from_millis(50)).wait().unwrap();
    u.write(&[0x7F]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79]);
}

/// Readout protection through the F1 ROM (AN3155 Readout Protect / Unprotect; PM0075 2.4.1):
/// protect writes RDP != 0xA5 and resets, Read Memory is then refused; unprotect erases the option
/// bytes, which mass-erases the flash of a protected part, and resets with RDP = 0xA5.
#[test]
fn f103_rom_readout_protect_and_unprotect_follow_rdp_0xa5() {
    let b = board("f103-rdp", true);
    let u = b.uart("USART1").unwrap();
    sync(&b, &u);
    let app = read_memory(&u, 0x0800_0000).expect("readable while unprotected");
    assert_ne!(app, [0xFF; 16], "the application is in flash");
    u.write(&[0x82, 0x7D]).wait().unwrap();
    assert_eq!(read_n(&u, 2), [0x79, 0x79], "Readout Protect acknowledged twice");
    sync(&b, &u);
    assert_eq!(read_memory(&u, 0x0800_0000), None, "Read Memory refused with RDP != 0xA5");
    let snap = b.snapshot().wait().unwrap();
    assert_eq!(snap.option_bytes[0], 0x00, "RDP byte");
    u.write(&[0x92, 0x6D]).wait().unwrap();
    assert_eq!(read_n(&u, 2), [0x79, 0x79], "Readout Unprotect acknowledged twice");
    sync(&b, &u);
    assert_eq!(read_memory(&u, 0x0800_0000), Some(vec![0xFF; 16]), "unprotecting mass-erased the flash");
    let snap = b.snapshot().wait().unwrap();
    assert_eq!(&snap.option_bytes[..2], &[0xA5, 0x5A], "RDP 0xA5 and its complement");
}
