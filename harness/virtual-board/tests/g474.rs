//! The virtual STM32G474RE: the `app-g474` fixture on the ARMv7E-M core with the G4 RCC and the
//! G0-layout USART / GPIO / SYSCFG models, boot selection from PB8 (RM0440 2.6 Table 8), and the
//! ROM bootloader answering AN3155 on USART2 with the dual-bank flash (BKER page selection,
//! RM0440 5.3.6).

use std::time::Duration;

use hil_virtual_board::{Board, BoardConfig, EventKind, ImageFormat, RamInit, UartPort};

const T: Duration = Duration::from_secs(20);
const CHIP: &str = "STM32G474RE";

fn app(base: u32) -> Vec<u8> {
    hil_fixtures::get("app-g474", base).unwrap_or_else(|| panic!("app-g474 fixture at {base:#x} built")).elf.to_vec()
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
    let u = b.uart("USART2").unwrap();
    String::from_utf8_lossy(&u.read_until(b" ]\r\n", T).wait().unwrap()).into_owned()
}

fn read_n(u: &UartPort, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let chunk = u.read(n - got.len(), T).wait().unwrap();
        assert!(!chunk.is_empty(), "no reply; got {got:02x?}");
        got.extend(chunk);
    }
    got
}

fn xor(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |a, b| a ^ b)
}

fn send_address(u: &UartPort, addr: u32) {
    let a = addr.to_be_bytes();
    u.write(&[a[0], a[1], a[2], a[3], xor(&a)]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79], "address {addr:#010x} acknowledged");
}

/// AN3155 Read Memory of `n` bytes at `addr`.
fn read_memory(u: &UartPort, addr: u32, n: usize) -> Vec<u8> {
    u.write(&[0x11, 0xEE]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79]);
    send_address(u, addr);
    let l = (n - 1) as u8;
    u.write(&[l, !l]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79]);
    read_n(u, n)
}

/// AN3155 Write Memory; returns the final ACK / NACK byte.
fn write_memory(u: &UartPort, addr: u32, data: &[u8]) -> u8 {
    u.write(&[0x31, 0xCE]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79]);
    send_address(u, addr);
    let mut frame = vec![(data.len() - 1) as u8];
    frame.extend_from_slice(data);
    frame.push(xor(&frame));
    u.write(&frame).wait().unwrap();
    read_n(u, 1)[0]
}

/// AN3155 Extended Erase of the pages `pages` (linear page numbers); returns the final ACK / NACK.
fn extended_erase(u: &UartPort, pages: &[u16]) -> u8 {
    u.write(&[0x44, 0xBB]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79]);
    let mut frame = ((pages.len() - 1) as u16).to_be_bytes().to_vec();
    for p in pages {
        frame.extend_from_slice(&p.to_be_bytes());
    }
    frame.push(xor(&frame));
    u.write(&frame).wait().unwrap();
    read_n(u, 1)[0]
}

#[test]
fn g474_app_prints_banner_on_usart2_and_blinks_pa5() {
    let b = board("g474-app", false);
    let first = banner(&b);
    assert!(first.contains("hil-app 0.1.0 base=0x08000000 vtor=0x08000000 boots=1"), "{first}");
    assert!(first.contains("[ PIN PWR ]"), "power-on flags (RM0440 7.4.29 BORRSTF/PINRSTF): {first}");
    // SysTick toggles PA5 every 100 ms of virtual time (HSI16 core clock).
    let e1 = b.wait_event(0, T, |e| matches!(&e.kind, EventKind::Pin { pin, level: true, .. } if pin == "PA5"));
    let e1 = e1.unwrap();
    let e2 = b.wait_event(e1.seq + 1, T, |e| matches!(&e.kind, EventKind::Pin { pin, .. } if pin == "PA5")).unwrap();
    let gap_us = (e2.at.as_ps() - e1.at.as_ps()) / 1_000_000;
    assert!(gap_us.abs_diff(100_000) < 100, "LED toggles every 100 ms: {gap_us} us");
    // 'r': SYSRESETREQ; RCC_CSR shows SFTRSTF and the RAM marker counts the boot.
    let u = b.uart("USART2").unwrap();
    u.write(b"r").wait().unwrap();
    let second = banner(&b);
    assert!(second.contains("boots=2"), "{second}");
    assert!(second.contains("SFT ]"), "{second}");
    // 'j': the jump into the ROM done right; the ROM answers AN3155 on USART2.
    u.write(b"j").wait().unwrap();
    assert!(String::from_utf8_lossy(&u.read_until(b"jump\r\n", T).wait().unwrap()).contains("jump"));
    b.sleep(Duration::from_millis(20)).wait().unwrap();
    u.write(&[0x7F]).wait().unwrap();
    assert_eq!(read_n(&u, 1), [0x79], "the ROM acknowledges the sync byte after the jump");
}

#[test]
fn g474_boot0_pb8_high_starts_the_rom_which_answers_an3155_on_usart2() {
    let b = board("g474-rom", true);
    let u = b.uart("USART2").unwrap();
    u.write(&[0x7F]).wait().unwrap();
    assert_eq!(read_n(&u, 1), [0x79]);
    // Get ID: PID 0x0469 (RM0440 46.6.1 DEV_ID; AN2606 STM32G47xxx/48xxx).
    u.write(&[0x02, 0xFD]).wait().unwrap();
    assert_eq!(read_n(&u, 5), [0x79, 0x01, 0x04, 0x69, 0x79]);
    // Get: the command list has Extended Erase (0x44), not Erase (0x43).
    u.write(&[0x00, 0xFF]).wait().unwrap();
    let head = read_n(&u, 2);
    assert_eq!(head[0], 0x79);
    let rest = read_n(&u, head[1] as usize + 2);
    let cmds = &rest[1..rest.len() - 1];
    assert!(cmds.contains(&0x44) && !cmds.contains(&0x43), "{cmds:02x?}");
    // The ROM's ID byte at 0x1FFF6FFE is 0xD5 (AN2606 Table 3).
    assert_eq!(read_memory(&u, 0x1FFF_6FFE, 1), [0xD5]);
    // Bank 2 (DBANK = 1): write, read back, erase linear page 128 = bank 2 page 0 (BKER).
    let bank2 = 0x0804_0000;
    let data: Vec<u8> = (0..32u8).collect();
    assert_eq!(write_memory(&u, bank2, &data), 0x79);
    assert_eq!(read_memory(&u, bank2, 32), data);
    // Something in bank 1 page 0 (the application) must survive the bank 2 page erase.
    let app_head = read_memory(&u, 0x0800_0000, 8);
    assert_ne!(app_head, [0xFF; 8]);
    assert_eq!(extended_erase(&u, &[128]), 0x79);
    assert_eq!(read_memory(&u, bank2, 32), vec![0xFF; 32], "bank 2 page 0 erased");
    assert_eq!(read_memory(&u, 0x0800_0000, 8), app_head, "bank 1 page 0 untouched");
    // BOOT0 low and a reset: the application again.
    b.set_boot0(false).wait().unwrap();
    b.pulse_nrst().wait().unwrap();
    assert!(banner(&b).contains("hil-app"));
}

fn sync(b: &Board, u: &UartPort) {
    // The ROM needs a moment after the reset that follows an option change.
    b.sleep(Duration::from_millis(50)).wait().unwrap();
    u.write(&[0x7F]).wait().unwrap();
    assert_eq!(read_n(u, 1), [0x79], "sync after the option change");
}

/// Readout protection through the G4 ROM (AN3155 Readout Protect / Unprotect; RM0440 5.5.1):
/// protect sets level 1 and reloads the options, unprotect goes back to level 0 with a mass
/// erase of both banks; the ROM (BOOT0 still high) answers after each reload.
#[test]
fn g474_rom_readout_protect_and_unprotect() {
    let b = board("g474-rdp", true);
    let u = b.uart("USART2").unwrap();
    sync(&b, &u);
    assert_ne!(read_memory(&u, 0x0800_0000, 8), [0xFF; 8], "the application is in flash");
    u.write(&[0x82, 0x7D]).wait().unwrap();
    assert_eq!(read_n(&u, 2), [0x79, 0x79], "Readout Protect acknowledged twice");
    sync(&b, &u);
    u.write(&[0x92, 0x6D]).wait().unwrap();
    assert_eq!(read_n(&u, 2), [0x79, 0x79], "Readout Unprotect acknowledged twice");
    sync(&b, &u);
    assert_eq!(read_memory(&u, 0x0800_0000, 8), [0xFF; 8], "unprotecting mass-erased the flash");
}

/// Seed 004 (chip data `bootloader.usb_left_enabled_blocks_dfu`, unverified): the application's
/// USB device left attached (USB clock on, USB_BCDR.DPPU set) when it jumps to the ROM, and the
/// ROM's DFU device never answers; the USART interface still does. Without the USB left up, the
/// same jump gives a DFU device that answers GET_DESCRIPTOR.
#[test]
fn g474_rom_dfu_does_not_come_up_after_a_jump_with_the_app_usb_attached() {
    use hil_cortex_m::Size;
    use hil_virtual_board::{UsbReply, UsbSetup};
    let get_device = UsbSetup { request_type: 0x80, request: 6, value: 0x0100, index: 0, length: 18 };
    for usb_left_up in [false, true] {
        let b = board(if usb_left_up { "g474-usb-left" } else { "g474-usb-off" }, false);
        assert!(banner(&b).contains("hil-app"));
        if usb_left_up {
            // What the application's USB stack leaves: RCC_APB1ENR1.USBEN (bit 23), BCDR.DPPU.
            let d = b.debug();
            let en = d.read(0x4002_1058, Size::Word).wait().unwrap();
            d.write(0x4002_1058, Size::Word, en | (1 << 23)).wait().unwrap();
            d.write(0x4000_5C58, Size::Word, 1 << 15).wait().unwrap();
        }
        let u = b.uart("USART2").unwrap();
        u.write(b"j").wait().unwrap();
        u.read_until(b"jump\r\n", T).wait().unwrap();
        b.sleep(Duration::from_millis(300)).wait().unwrap();
        let reply = b.usb().unwrap().control(get_device, Vec::new(), Duration::from_secs(2)).wait();
        if usb_left_up {
            assert!(!matches!(reply, Ok(UsbReply::Data(_))), "no DFU device: {reply:?}");
        } else {
            assert!(matches!(&reply, Ok(UsbReply::Data(d)) if d.len() == 18), "DFU device: {reply:?}");
        }
        u.write(&[0x7F]).wait().unwrap();
        assert_eq!(read_n(&u, 1), [0x79], "the USART interface answers either way");
    }
}
