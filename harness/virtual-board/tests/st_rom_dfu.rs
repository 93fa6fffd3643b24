//! The ROM model's USB DFU on the G0B1 through the board's USB endpoint: presence (D+ pull-up while
//! the ROM's DFU is up), enumeration, DfuSe commands and data blocks through the FLASH controller,
//! state errors, and leave to an application. The host here is a scripted control-transfer client
//! written from DFU 1.1 / AN3156 for this test (nothing shared with the rig's DfuSe client).

mod romhost;

use std::time::Duration;

use hil_virtual_board::{Board, BoardConfig, BoardError, EventKind, ImageFormat, RamInit, UsbPort, UsbReply, UsbSetup};
use romhost::{ACK, Host, T};

const CT: Duration = Duration::from_secs(5);

// DFU 1.1 states and requests.
const DFU_IDLE: u8 = 2;
const DFU_DNBUSY: u8 = 4;
const DFU_DNLOAD_IDLE: u8 = 5;
const DFU_MANIFEST: u8 = 7;
const DFU_UPLOAD_IDLE: u8 = 9;
const DFU_ERROR: u8 = 10;

struct Dfu {
    usb: UsbPort,
}

impl Dfu {
    fn ctl(
        &self,
        request_type: u8,
        request: u8,
        value: u16,
        length: u16,
        data: Vec<u8>,
    ) -> Result<UsbReply, BoardError> {
        let setup = UsbSetup { request_type, request, value, index: 0, length };
        self.usb.control(setup, data, CT).wait()
    }
    fn ok(&self, request_type: u8, request: u8, value: u16, length: u16, data: Vec<u8>) -> UsbReply {
        self.ctl(request_type, request, value, length, data).unwrap()
    }
    fn data(&self, request_type: u8, request: u8, value: u16, length: u16) -> Vec<u8> {
        match self.ok(request_type, request, value, length, Vec::new()) {
            UsbReply::Data(d) => d,
            other => panic!("expected data, got {other:?}"),
        }
    }
    /// GET_DESCRIPTOR (device), SET_ADDRESS, SET_CONFIGURATION, SET_INTERFACE 0 (USB 2.0 9.4).
    fn enumerate(&self) {
        let dev = self.data(0x80, 6, 0x0100, 18);
        assert_eq!((dev[8], dev[9], dev[10], dev[11]), (0x83, 0x04, 0x11, 0xDF), "0483:DF11");
        assert_eq!(self.ok(0x00, 5, 9, 0, vec![]), UsbReply::Ack);
        assert_eq!(self.ok(0x00, 9, 1, 0, vec![]), UsbReply::Ack);
        assert_eq!(self.ok(0x01, 11, 0, 0, vec![]), UsbReply::Ack);
    }
    /// GETSTATUS: (bStatus, bwPollTimeout ms, bState).
    fn status(&self) -> (u8, u32, u8) {
        let s = self.data(0xA1, 3, 0, 6);
        (s[0], u32::from_le_bytes([s[1], s[2], s[3], 0]), s[4])
    }
    fn dnload(&self, block: u16, data: &[u8]) -> UsbReply {
        self.ok(0x21, 1, block, data.len() as u16, data.to_vec())
    }
    /// A DfuSe command or data block: DNLOAD, then GETSTATUS reports dfuDNBUSY while it runs and
    /// dfuDNLOAD-IDLE when done (AN3156).
    fn run(&self, block: u16, data: &[u8]) -> (u8, u8) {
        assert_eq!(self.dnload(block, data), UsbReply::Ack);
        let (status, _poll, state) = self.status();
        if state != DFU_DNBUSY {
            return (status, state);
        }
        let (status, _, state) = self.status();
        (status, state)
    }
    fn set_address(&self, a: u32) {
        let mut cmd = vec![0x21];
        cmd.extend_from_slice(&a.to_le_bytes());
        assert_eq!(self.run(0, &cmd), (0, DFU_DNLOAD_IDLE));
    }
    fn abort(&self) {
        assert_eq!(self.ok(0x21, 6, 0, 0, vec![]), UsbReply::Ack);
    }
}

fn g0b1(name: &str, power_on: bool) -> Board {
    Board::start(BoardConfig {
        name: name.into(),
        chip: "STM32G0B1RE".into(),
        ram_init: RamInit::Zero,
        power_on,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn dfuse_download_upload_state_errors_and_leave_to_the_application() {
    let b = g0b1("dfu-flow", true);
    let usb = b.usb().unwrap();
    usb.wait_attached(true, T).unwrap();
    let dfu = Dfu { usb: usb.clone() };
    dfu.enumerate();
    // USB became active first: the ROM shut its USARTs down.
    let h = Host::new(&b, "USART2");
    h.send(&[0x7F]);
    assert!(h.silent_for(Duration::from_millis(200)));
    assert!(b.snapshot().wait().unwrap().rom_notes.iter().any(|n| n.contains("USB DFU became active first")));
    // Get Commands (UPLOAD block 0): 00 21 41 92.
    assert_eq!(dfu.data(0xA1, 2, 0, 4), vec![0x00, 0x21, 0x41, 0x92]);
    dfu.abort();
    // Erase page 0, write one 2048-byte block, read it back.
    dfu.set_address(0x0800_0000);
    let before = b.debug().counters().wait().unwrap();
    let mut erase = vec![0x41];
    erase.extend_from_slice(&0x0800_0000u32.to_le_bytes());
    assert_eq!(dfu.dnload(0, &erase), UsbReply::Ack);
    let (status, poll_ms, state) = dfu.status();
    assert_eq!((status, state), (0, DFU_DNBUSY));
    assert_eq!(poll_ms, 22, "bwPollTimeout: the page erase's time (DS13560 22 ms typical)");
    assert_eq!(dfu.status(), (0, 0, DFU_DNLOAD_IDLE));
    let block: Vec<u8> = (0..2048u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(dfu.run(2, &block), (0, DFU_DNLOAD_IDLE));
    let after = b.debug().counters().wait().unwrap();
    assert_eq!(after.accesses.flash_page_erases - before.accesses.flash_page_erases, 1);
    assert_eq!(after.accesses.flash_programs - before.accesses.flash_programs, 256, "through the controller");
    // Block 3 lands at pointer + 2048 (AN3156 block addressing).
    assert_eq!(dfu.run(3, &[0xA5; 16]), (0, DFU_DNLOAD_IDLE));
    assert_eq!(b.peek(0x0800_0800, 4).wait().unwrap(), vec![0xA5; 4]);
    // State error: UPLOAD in dfuDNLOAD-IDLE stalls and enters dfuERROR / errSTALLEDPKT.
    assert_eq!(dfu.ok(0xA1, 2, 2, 2048, vec![]), UsbReply::Stall);
    assert_eq!(dfu.status(), (0x0F, 0, DFU_ERROR));
    assert_eq!(dfu.ok(0x21, 4, 0, 0, vec![]), UsbReply::Ack, "CLRSTATUS");
    assert_eq!(dfu.status(), (0, 0, DFU_IDLE));
    dfu.set_address(0x0800_0000);
    dfu.abort();
    assert_eq!(dfu.data(0xA1, 2, 2, 2048), block);
    assert_eq!(dfu.status().2, DFU_UPLOAD_IDLE);
    dfu.abort();
    // An address the device does not have: errTARGET.
    let mut bad = vec![0x21];
    bad.extend_from_slice(&0x3000_0000u32.to_le_bytes());
    assert_eq!(dfu.run(0, &bad), (0x01, DFU_ERROR));
    assert_eq!(dfu.ok(0x21, 4, 0, 0, vec![]), UsbReply::Ack);

    // Mass erase, then the app fixture in 2048-byte blocks as dfu-util sends them (Set Address
    // Pointer + block 2 each time), then leave: the device detaches and jumps to 0x08000000.
    assert_eq!(dfu.run(0, &[0x41]), (0, DFU_DNLOAD_IDLE));
    let f = hil_fixtures::get("app", 0x0800_0000).unwrap();
    let segs = hil_virtual_board::image::segments(f.elf, ImageFormat::Elf).unwrap();
    let end = segs.iter().map(|s| s.addr as usize + s.data.len()).max().unwrap();
    let mut bin = vec![0xFF; end - 0x0800_0000];
    for s in &segs {
        let o = s.addr as usize - 0x0800_0000;
        bin[o..o + s.data.len()].copy_from_slice(&s.data);
    }
    for (i, chunk) in bin.chunks(2048).enumerate() {
        dfu.set_address(0x0800_0000 + 2048 * i as u32);
        assert_eq!(dfu.run(2, chunk), (0, DFU_DNLOAD_IDLE), "block at {:#x}", 2048 * i);
    }
    dfu.set_address(0x0800_0000);
    let cur = b.event_cursor().wait().unwrap();
    assert_eq!(dfu.dnload(2, &[]), UsbReply::Ack, "zero-length DNLOAD: leave");
    assert_eq!(dfu.status().2, DFU_MANIFEST);
    usb.wait_attached(false, T).unwrap();
    let left = b.wait_event(cur, T, |e| matches!(e.kind, EventKind::RomLeft { .. })).unwrap();
    assert!(matches!(left.kind, EventKind::RomLeft { msp: 0x2000_9000, .. }), "{left:?}");
    let banner =
        String::from_utf8_lossy(&b.uart("USART2").unwrap().read_until(b" ]\r\n", T).wait().unwrap()).into_owned();
    assert!(banner.contains("hil-app 0.1.0 base=0x08000000 vtor=0x08000000"), "{banner}");
    // Gone from the bus: the host sees no device.
    assert!(matches!(dfu.ctl(0x80, 6, 0x0100, 18, vec![]), Err(BoardError::UsbDetached { .. })));
    b.shutdown().unwrap();
}

#[test]
fn a_usart_that_wins_the_selection_takes_the_usb_device_off_the_bus() {
    let b = g0b1("dfu-usart-wins", true);
    let usb = b.usb().unwrap();
    usb.wait_attached(true, T).unwrap();
    let h = Host::new(&b, "USART2");
    assert_eq!(h.sync(), Some(ACK));
    usb.wait_attached(false, T).unwrap();
    let e = usb.control(UsbSetup { request_type: 0x80, request: 6, value: 0x100, index: 0, length: 18 }, vec![], CT);
    assert!(matches!(e.wait(), Err(BoardError::UsbDetached { .. })));
    // The G071's ROM has no USB DFU.
    let g071 = Board::start(BoardConfig::g071("dfu-g071")).unwrap();
    assert!(matches!(g071.usb(), Err(BoardError::NoUsb { .. })));
    g071.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn entered_with_primask_set_the_dfu_device_never_answers() {
    // P2 (a C071 USB DFU session needs interrupts enabled): the app's 'p' jump leaves PRIMASK set.
    // The pull-up comes on (the ROM's start-up code runs), but the USB interrupt is never taken:
    // the host's control transfer times out, as it does on a device that NAKs forever.
    let b = g0b1("dfu-primask", false);
    let app = hil_fixtures::get("app", 0x0800_0000).unwrap().elf.to_vec();
    b.load_image(app, ImageFormat::Elf).wait().unwrap();
    b.power_on().wait().unwrap();
    let u = b.uart("USART2").unwrap();
    u.read_until(b" ]\r\n", T).wait().unwrap();
    u.write(b"p").wait().unwrap();
    u.read_until(b"jump\r\n", T).wait().unwrap();
    let usb = b.usb().unwrap();
    usb.wait_attached(true, T).unwrap();
    let setup = UsbSetup { request_type: 0x80, request: 6, value: 0x100, index: 0, length: 18 };
    let e = usb.control(setup, vec![], Duration::from_millis(500)).wait().unwrap_err();
    assert!(matches!(e, BoardError::UsbTimeout { .. }), "{e}");
    assert!(e.to_string().contains("bRequest 6"), "{e}");
    let core = b.snapshot().wait().unwrap().core.unwrap();
    assert!(core.primask);
    assert_ne!(core.nvic_ispr[0] & (1 << 8), 0, "the USB interrupt is pending, never taken");
    b.shutdown().unwrap();
}
