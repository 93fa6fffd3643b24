//! The exact exchanges the reference peers produce: stm32flash 0.7 ([SF] stm32.c / main.c at
//! cae1bb8, bootloader-protocols.md section 2) and dfu-util 0.11 ([DU] dfuse.c / main.c at e190d89,
//! sections 3.5-3.7). Each host step is written as the peer performs it, with the reply it expects.

mod common;

use common::{Call, FakeTarget, address_frame};
use hil_bootloader_device::dfu::request;
use hil_bootloader_device::{
    ACK, ControlResponse, DfuEngine, DfuState, DfuStatus, Jump, NACK, RomAction, SetupPacket, UsartEngine, UsartOutput,
};

// ================================================================== stm32flash 0.7 over the UART

/// The host side of a UART session: bytes out, bytes the device sent back.
struct Wire {
    engine: UsartEngine,
    target: FakeTarget,
    rx: Vec<u8>,
    actions: Vec<RomAction>,
}

impl Wire {
    fn new(chip: &str) -> Self {
        let engine = UsartEngine::new(FakeTarget::config(chip)).unwrap();
        Wire { engine, target: FakeTarget::for_chip(chip), rx: Vec::new(), actions: Vec::new() }
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            for out in self.engine.receive(b, &mut self.target) {
                match out {
                    UsartOutput::Tx(t) => self.rx.push(t),
                    UsartOutput::Busy(_) => {}
                    UsartOutput::Action(a) => self.actions.push(a),
                }
            }
        }
    }
    /// Reads `n` bytes; `None` models the host's 0.5 s read timeout (nothing sent).
    fn read(&mut self, n: usize) -> Option<Vec<u8>> {
        (self.rx.len() >= n).then(|| self.rx.drain(..n).collect())
    }
    fn get_ack(&mut self) -> u8 {
        self.read(1).expect("device sent nothing")[0]
    }
    /// [SF] stm32_send_command: cmd, cmd ^ 0xFF, expect ACK.
    fn send_command(&mut self, cmd: u8) {
        self.write(&[cmd, cmd ^ 0xFF]);
        assert_eq!(self.get_ack(), ACK, "command {cmd:#04x}");
    }

    /// [SF] stm32_init: init sequence, GVR, GET, GID.
    fn stm32_init(&mut self) -> (u8, Vec<u8>, u16) {
        // stm32_send_init_seq
        self.write(&[0x7F]);
        match self.read(1) {
            Some(b) if b[0] == ACK => {}
            Some(b) => panic!("init answered {b:02x?}"),
            None => {
                // Timeout: the device was already synced and took 0x7F as a command byte. A second
                // 0x7F must be answered with NACK.
                self.write(&[0x7F]);
                assert_eq!(self.read(1), Some(vec![NACK]), "init retry");
            }
        }
        // GVR: 3 bytes (PORT_GVR_ETX) then ACK.
        self.send_command(0x01);
        let gvr = self.read(3).unwrap();
        assert_eq!(self.get_ack(), ACK);
        // GET: byte-by-byte port (PORT_BYTE): len, then len + 1 bytes, then ACK.
        self.send_command(0x00);
        let len = self.read(1).unwrap()[0];
        let get = self.read(usize::from(len) + 1).unwrap();
        assert_eq!(self.get_ack(), ACK);
        assert_eq!(get[0], gvr[0], "GET and GVR report the same version");
        // GID: len (must be >= 1), len + 1 bytes, ACK.
        self.send_command(0x02);
        let len = self.read(1).unwrap()[0];
        assert!(len >= 1);
        let pid = self.read(usize::from(len) + 1).unwrap();
        assert_eq!(self.get_ack(), ACK);
        (gvr[0], get[1..].to_vec(), u16::from_be_bytes([pid[0], pid[1]]))
    }

    /// [SF] stm32_read_memory.
    fn read_memory(&mut self, address: u32, len: usize) -> Vec<u8> {
        self.send_command(0x11);
        self.write(&address_frame(address));
        assert_eq!(self.get_ack(), ACK);
        self.send_command((len - 1) as u8);
        self.read(len).expect("read data")
    }

    /// [SF] stm32_write_memory: pads to a multiple of 4 with 0xFF, N = aligned_len - 1.
    fn write_memory(&mut self, address: u32, data: &[u8]) -> u8 {
        self.send_command(0x31);
        self.write(&address_frame(address));
        assert_eq!(self.get_ack(), ACK);
        let aligned = (data.len() + 3) & !3;
        let mut frame = vec![(aligned - 1) as u8];
        frame.extend_from_slice(data);
        frame.resize(aligned + 1, 0xFF);
        let cs = frame.iter().fold(0, |x, b| x ^ b);
        frame.push(cs);
        self.write(&frame);
        self.get_ack()
    }

    /// [SF] stm32_pages_erase, extended (0x44) and legacy (0x43) forms.
    fn pages_erase(&mut self, erase_cmd: u8, first: u16, pages: u16) -> u8 {
        self.send_command(erase_cmd);
        let mut buf = Vec::new();
        if erase_cmd == 0x43 {
            buf.push((pages - 1) as u8);
            buf.extend((first..first + pages).map(|p| p as u8));
        } else {
            buf.extend_from_slice(&(pages - 1).to_be_bytes());
            for p in first..first + pages {
                buf.extend_from_slice(&p.to_be_bytes());
            }
        }
        let cs = buf.iter().fold(0, |x, b| x ^ b);
        buf.push(cs);
        self.write(&buf);
        self.get_ack()
    }

    /// [SF] stm32_mass_erase for extended erase: FF FF 00.
    fn mass_erase(&mut self) -> u8 {
        self.send_command(0x44);
        self.write(&[0xFF, 0xFF, 0x00]);
        self.get_ack()
    }

    /// [SF] stm32_go.
    fn go(&mut self, address: u32) -> u8 {
        self.send_command(0x21);
        self.write(&address_frame(address));
        self.get_ack()
    }

    /// [SF] stm32_resync: 0xFF 0x00 until NACK.
    fn resync(&mut self) {
        for _ in 0..1000 {
            self.write(&[0xFF, 0x00]);
            if self.read(1) == Some(vec![NACK]) {
                return;
            }
        }
        panic!("no resync");
    }
}

fn image(len: usize) -> Vec<u8> {
    // A plausible vector table first: SP at the end of the G0B1 RAM, reset handler at 0x080000C1.
    let mut v = vec![0x00, 0x40, 0x02, 0x20, 0xC1, 0x00, 0x00, 0x08];
    v.extend((8..len).map(|i| (i * 13 + 5) as u8));
    v
}

#[test]
fn stm32flash_write_verify_go_on_g0b1() {
    // stm32flash -b 115200 -m 8n1 -w image.bin -v -g 0x0 <pty>
    let mut w = Wire::new("STM32G0B1RE");
    let (version, commands, pid) = w.stm32_init();
    assert_eq!(version, 0x31);
    assert_eq!(pid, 0x467, "dev_table.c: STM32G0B0/B1/C1xx");
    // [SF] takes the highest erase code listed: 0x44 -> two-byte protocol.
    assert!(commands.contains(&0x44) && !commands.contains(&0x43));
    let data = image(600);
    // main.c: page erase of the pages the file covers (600 bytes -> page 0).
    assert_eq!(w.pages_erase(0x44, 0, 1), ACK);
    // Writes of 256 (tx_frame_max 258 - 2, rounded to 4) with read-back verify.
    let mut addr = 0x0800_0000u32;
    for chunk in data.chunks(256) {
        assert_eq!(w.write_memory(addr, chunk), ACK, "write at {addr:#x}");
        assert_eq!(w.read_memory(addr, chunk.len()), chunk, "verify at {addr:#x}");
        addr += chunk.len() as u32;
    }
    // -g 0x0 -> flash start.
    assert_eq!(w.go(0x0800_0000), ACK);
    assert_eq!(
        w.actions,
        [RomAction::Jump(Jump {
            address: 0x0800_0000,
            msp: Some(0x2002_4000),
            pc: 0x0800_00C1,
            reset_peripherals: false,
            usb_disconnect: false
        })]
    );
    assert!(w.rx.is_empty(), "nothing but the expected bytes came back");
    assert_eq!(w.target.flash_at(0x0800_0000, 600), &data[..]);
}

#[test]
fn stm32flash_software_reset_runs_code_from_ram_start() {
    // -R without an exit sequence: [SF] stm32_reset_device -> stm32_run_raw_code(ram_start).
    let mut w = Wire::new("STM32G0B1RE");
    w.stm32_init();
    let ram_start = 0x2000_4000u32; // dev_table.c 0x467
    let reset_code = [0x01, 0x49, 0x02, 0x4A, 0x0A, 0x60, 0xFE, 0xE7, 0x0C, 0xED, 0x00, 0xE0, 0x04, 0x00, 0xFA, 0x05];
    let mut mem = 0x2000_2000u32.to_le_bytes().to_vec();
    mem.extend_from_slice(&(ram_start + 8 + 1).to_le_bytes());
    mem.extend_from_slice(&reset_code);
    assert_eq!(w.write_memory(ram_start, &mem), ACK);
    assert_eq!(w.go(ram_start), ACK);
    let [RomAction::Jump(jump)] = &w.actions[..] else { panic!("{:?}", w.actions) };
    assert_eq!((jump.msp, jump.pc), (Some(0x2000_2000), ram_start + 9));
    assert_eq!(w.target.ram_at(ram_start, 24), &mem[..]);
}

#[test]
fn stm32flash_full_image_uses_mass_erase() {
    let mut w = Wire::new("STM32G071RB");
    w.stm32_init();
    // A file covering the whole flash from page 0: mass erase FF FF 00.
    assert_eq!(w.mass_erase(), ACK);
    assert_eq!(w.target.calls, [Call::MassErase]);
}

#[test]
fn stm32flash_on_the_f1_uses_one_byte_page_numbers() {
    let mut w = Wire::new("STM32F103CB");
    let (version, commands, pid) = w.stm32_init();
    assert_eq!((version, pid), (0x22, 0x410));
    assert!(commands.contains(&0x43));
    assert_eq!(w.pages_erase(0x43, 2, 3), ACK);
    assert_eq!(w.target.calls, [Call::ErasePage(2), Call::ErasePage(3), Call::ErasePage(4)]);
    // The F1 programs half words: a 6-byte tail (padded to 8 by stm32flash) needs no more padding.
    assert_eq!(w.write_memory(0x0800_0800, &[1, 2, 3, 4, 5, 6]), ACK);
    assert_eq!(w.target.writes(), [(0x0800_0800, 8)]);
}

#[test]
fn stm32flash_second_run_without_reset() {
    // First run leaves the ROM synced; the next stm32flash (no -c) sends 0x7F again: no answer,
    // retry, NACK, then it carries on (bootloader-protocols.md 1.1).
    let mut w = Wire::new("STM32G0B1RE");
    w.stm32_init();
    let (_, _, pid) = w.stm32_init();
    assert_eq!(pid, 0x467);
}

#[test]
fn stm32flash_resync_after_an_interrupted_write() {
    // A host that died in the middle of a Write Memory; [SF] stm32_resync recovers.
    let mut w = Wire::new("STM32G0B1RE");
    w.stm32_init();
    w.send_command(0x31);
    w.write(&address_frame(0x2000_4000));
    assert_eq!(w.get_ack(), ACK);
    w.write(&[0x0F, 1, 2, 3]); // 16 bytes announced, 3 sent
    w.resync();
    assert!(w.engine.is_idle());
    assert_eq!(w.read_memory(0x0800_0000, 4), [0xFF; 4]);
}

// ================================================================== dfu-util 0.11 over USB

struct Bus {
    engine: DfuEngine,
    target: FakeTarget,
    actions: Vec<RomAction>,
    /// Every GETSTATUS answer as (bStatus, bwPollTimeout, bState).
    polls: Vec<(u8, u32, u8)>,
}

const IFACE: u16 = 0;

impl Bus {
    fn new() -> Self {
        let engine = DfuEngine::new(FakeTarget::config("STM32G0B1RE")).unwrap();
        Bus { engine, target: FakeTarget::for_chip("STM32G0B1RE"), actions: Vec::new(), polls: Vec::new() }
    }
    fn transfer(&mut self, request_type: u8, request: u8, value: u16, length: u16, data: &[u8]) -> ControlResponse {
        let setup = SetupPacket { request_type, request, value, index: IFACE, length };
        let outcome = self.engine.control(setup, data, &mut self.target);
        if let Some(a) = outcome.action {
            self.actions.push(a);
        }
        outcome.response
    }
    fn descriptor(&mut self, kind: u8, index: u8, langid: u16, length: u16) -> Vec<u8> {
        let setup = SetupPacket {
            request_type: 0x80,
            request: 6,
            value: u16::from(kind) << 8 | u16::from(index),
            index: langid,
            length,
        };
        match self.engine.control(setup, &[], &mut self.target).response {
            ControlResponse::Data(d) => d,
            other => panic!("descriptor {kind}/{index}: {other:?}"),
        }
    }
    /// What the Linux kernel does before any tool runs: device descriptor, address, configuration,
    /// strings, SET_CONFIGURATION(1).
    fn enumerate(&mut self) {
        assert_eq!(self.descriptor(1, 0, 0, 64).len(), 18);
        let setup = SetupPacket { request_type: 0, request: 5, value: 3, index: 0, length: 0 };
        assert_eq!(self.engine.control(setup, &[], &mut self.target).response, ControlResponse::Ack);
        self.descriptor(1, 0, 0, 18);
        let head = self.descriptor(2, 0, 0, 9);
        let config = self.descriptor(2, 0, 0, u16::from_le_bytes([head[2], head[3]]));
        assert_eq!(config.len(), usize::from(u16::from_le_bytes([head[2], head[3]])));
        assert_eq!(self.descriptor(3, 0, 0, 255), [4, 3, 0x09, 0x04]);
        for i in [2, 1, 3, 4, 5, 6] {
            self.descriptor(3, i, 0x0409, 255);
        }
        let setup = SetupPacket { request_type: 0, request: 9, value: 1, index: 0, length: 0 };
        assert_eq!(self.engine.control(setup, &[], &mut self.target).response, ControlResponse::Ack);
    }

    // ---- [DU] dfu.c
    fn get_status(&mut self) -> (u8, u32, u8) {
        let ControlResponse::Data(d) = self.transfer(0xA1, request::GETSTATUS, 0, 6, &[]) else {
            panic!("GETSTATUS did not return data")
        };
        let status = (d[0], u32::from_le_bytes([d[1], d[2], d[3], 0]), d[4]);
        self.polls.push(status);
        status
    }
    fn clear_status(&mut self) {
        assert_eq!(self.transfer(0x21, request::CLRSTATUS, 0, 0, &[]), ControlResponse::Ack);
    }
    fn abort(&mut self) {
        assert_eq!(self.transfer(0x21, request::ABORT, 0, 0, &[]), ControlResponse::Ack);
    }
    /// dfu_abort_to_idle: ABORT, GETSTATUS must say dfuIDLE.
    fn abort_to_idle(&mut self) {
        self.abort();
        assert_eq!(self.get_status().2, DfuState::Idle as u8, "Failed to enter idle state on abort");
    }

    // ---- [DU] main.c: claim, SET_INTERFACE, status loop
    fn open(&mut self, alt: u16) {
        let setup = SetupPacket { request_type: 0x01, request: 11, value: alt, index: IFACE, length: 0 };
        assert_eq!(self.engine.control(setup, &[], &mut self.target).response, ControlResponse::Ack);
        loop {
            let (status, _, state) = self.get_status();
            match state {
                s if s == DfuState::Error as u8 => self.clear_status(),
                s if s == DfuState::DnloadIdle as u8 || s == DfuState::UploadIdle as u8 => self.abort(),
                s if s == DfuState::Idle as u8 => {
                    assert_eq!(status, DfuStatus::Ok as u8);
                    break;
                }
                other => panic!("unexpected state {other}"),
            }
        }
    }

    // ---- [DU] dfuse.c
    /// dfuse_special_command: DNLOAD block 0, poll; the first poll must be dfuDNBUSY; loop while
    /// dfuDNBUSY; the status must end OK.
    fn special_command(&mut self, payload: &[u8]) -> Result<(), (u8, u8)> {
        assert_eq!(self.transfer(0x21, request::DNLOAD, 0, payload.len() as u16, payload), ControlResponse::Ack);
        let mut first = true;
        loop {
            let (status, _poll, state) = self.get_status();
            if first {
                assert_eq!(state, DfuState::DnBusy as u8, "Wrong state after command download");
                first = false;
                if payload[0] == 0x92 {
                    return Ok(());
                }
                continue;
            }
            if state != DfuState::DnBusy as u8 {
                return if status == DfuStatus::Ok as u8 { Ok(()) } else { Err((status, state)) };
            }
        }
    }
    fn set_address(&mut self, address: u32) {
        let mut p = vec![0x21];
        p.extend_from_slice(&address.to_le_bytes());
        self.special_command(&p).expect("SET_ADDRESS");
    }
    fn erase_page(&mut self, address: u32) {
        let mut p = vec![0x41];
        p.extend_from_slice(&address.to_le_bytes());
        self.special_command(&p).expect("ERASE_PAGE");
    }
    /// dfuse_dnload_chunk: DNLOAD, poll until dfuDNLOAD-IDLE, dfuERROR or dfuMANIFEST.
    fn dnload_chunk(&mut self, data: &[u8], transaction: u16) -> (u8, u8) {
        assert_eq!(self.transfer(0x21, request::DNLOAD, transaction, data.len() as u16, data), ControlResponse::Ack);
        loop {
            let (status, _, state) = self.get_status();
            if [DfuState::DnloadIdle, DfuState::Error, DfuState::Manifest].iter().any(|s| *s as u8 == state) {
                return (status, state);
            }
        }
    }
    /// dfuse_dnload_element: erase pass (no page twice), then SET_ADDRESS + DNLOAD(2) per chunk.
    fn dnload_element(&mut self, address: u32, data: &[u8], xfer: usize) {
        let page_size = 2048u32;
        let mut last_erased = 1u32;
        for (i, chunk) in data.chunks(xfer).enumerate() {
            let a = address + (i * xfer) as u32;
            let mut e = a;
            while e < a + chunk.len() as u32 {
                if e & !(page_size - 1) != last_erased {
                    self.erase_page(e);
                    last_erased = e & !(page_size - 1);
                }
                e += page_size;
            }
            let end = a + chunk.len() as u32 - 1;
            if end & !(page_size - 1) != last_erased {
                self.erase_page(end);
                last_erased = end & !(page_size - 1);
            }
        }
        for (i, chunk) in data.chunks(xfer).enumerate() {
            self.set_address(address + (i * xfer) as u32);
            assert_eq!(self.dnload_chunk(chunk, 2), (DfuStatus::Ok as u8, DfuState::DnloadIdle as u8));
        }
    }
    /// dfuse_do_leave (no GD32 quirk): optional SET_ADDRESS, then a zero-length DNLOAD(2).
    fn leave(&mut self, address: Option<u32>) -> (u8, u8) {
        if let Some(a) = address {
            self.set_address(a);
        }
        self.dnload_chunk(&[], 2)
    }
}

#[test]
fn dfu_util_download_with_leave() {
    // dfu-util -a 0 -s 0x08000000:leave -D image.bin
    let mut bus = Bus::new();
    bus.enumerate();
    bus.open(0);
    let data = image(2100);
    bus.dnload_element(0x0800_0000, &data, 2048);
    bus.abort_to_idle();
    let (status, state) = bus.leave(Some(0x0800_0000));
    assert_eq!((status, state), (DfuStatus::Ok as u8, DfuState::Manifest as u8));
    assert_eq!(bus.target.flash_at(0x0800_0000, 2100), &data[..]);
    // Two pages erased once each, two chunks programmed (2048 and 52 -> 56 bytes).
    let erases: Vec<_> = bus.target.calls.iter().filter(|c| matches!(c, Call::ErasePage(_))).cloned().collect();
    assert_eq!(erases, [Call::ErasePage(0), Call::ErasePage(1)]);
    assert_eq!(bus.target.writes(), [(0x0800_0000, 2048), (0x0800_0800, 56)]);
    // The erase polls reported the erase time.
    assert!(bus.polls.contains(&(0, 22, DfuState::DnBusy as u8)));
    assert_eq!(
        bus.actions,
        [RomAction::Jump(Jump {
            address: 0x0800_0000,
            msp: Some(0x2002_4000),
            pc: 0x0800_00C1,
            reset_peripherals: false,
            usb_disconnect: true
        })]
    );
}

#[test]
fn dfu_util_dfuse_file_leave_jumps_to_the_last_chunk() {
    // dfu-util -a 0 -s :leave -D image.dfu: since 0.10 no SET_ADDRESS before leave, so the device
    // jumps to the pointer of the last chunk (bootloader-protocols.md 3.7).
    let mut bus = Bus::new();
    bus.enumerate();
    bus.open(0);
    bus.dnload_element(0x0800_0000, &image(2100), 2048);
    bus.abort_to_idle();
    bus.leave(None);
    let [RomAction::Jump(jump)] = &bus.actions[..] else { panic!("{:?}", bus.actions) };
    assert_eq!(jump.address, 0x0800_0800, "not the image start");
}

#[test]
fn dfu_util_upload() {
    // dfu-util -a 0 -s 0x08000000:4096 -U out.bin
    let mut bus = Bus::new();
    let data = image(4096);
    bus.target.preload_flash(0x0800_0000, &data);
    bus.enumerate();
    bus.open(0);
    bus.set_address(0x0800_0000);
    bus.abort_to_idle();
    let mut got = Vec::new();
    let mut transaction = 2;
    while got.len() < 4096 {
        let ControlResponse::Data(d) = bus.transfer(0xA1, request::UPLOAD, transaction, 2048, &[]) else {
            panic!("upload stalled")
        };
        assert_eq!(d.len(), 2048);
        got.extend(d);
        transaction += 1;
    }
    bus.abort_to_idle();
    assert_eq!(got, data);
}

#[test]
fn dfu_util_mass_erase_and_unprotect() {
    // dfu-util -a 0 -s :mass-erase:force -D image.bin (mass erase part)
    let mut bus = Bus::new();
    bus.enumerate();
    bus.open(0);
    bus.special_command(&[0x41]).expect("MASS_ERASE");
    assert_eq!(bus.target.calls, [Call::MassErase]);
    // dfu-util -a 0 -s :unprotect:force -D x: returns after the first poll; the device resets.
    let mut bus = Bus::new();
    bus.target.rdp = hil_bootloader_device::RdpLevel::Level1;
    bus.enumerate();
    bus.open(0);
    bus.special_command(&[0x92]).unwrap();
    assert_eq!(bus.actions, [RomAction::LaunchOptionBytes]);
}

#[test]
fn dfu_util_reports_err_target_for_a_bad_address() {
    // P9: after an erase the tool sets the pointer to 0x00000000 -> dfuERROR / errTARGET.
    let mut bus = Bus::new();
    bus.enumerate();
    bus.open(0);
    let err = bus.special_command(&[0x21, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(err, (DfuStatus::ErrTarget as u8, DfuState::Error as u8));
    // The next dfu-util run clears it at start.
    bus.open(0);
    assert_eq!(bus.engine.state(), DfuState::Idle);
}

#[test]
fn dfu_util_final_reset_sends_detach() {
    // dfu-util -R: DETACH(1000) in dfuIDLE, then a USB reset.
    let mut bus = Bus::new();
    bus.enumerate();
    bus.open(0);
    assert_eq!(bus.transfer(0x21, request::DETACH, 1000, 0, &[]), ControlResponse::Ack);
    bus.engine.bus_reset();
    bus.enumerate();
    bus.open(0);
    assert!(bus.actions.is_empty(), "the ROM stays in DFU mode");
}
