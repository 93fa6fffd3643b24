//! DfuSe engine: descriptors, standard requests, the DFU 1.1 state machine and the DfuSe commands,
//! with their error and state-error paths.

mod common;

use common::{Call, ERASE_TIME, FakeTarget, MASS_ERASE_TIME, OPTION_TIME, PROGRAM_TIME};
use hil_bootloader_device::dfu::request;
use hil_bootloader_device::{
    ControlOutcome, ControlResponse, DfuEngine, DfuState, DfuStatus, Jump, LeaveJump, RdpLevel, RomAction, RomConfig,
    SetupPacket, TargetError,
};

const G0B1: &str = "STM32G0B1RE";

struct Usb {
    engine: DfuEngine,
    target: FakeTarget,
}

fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> SetupPacket {
    SetupPacket { request_type, request, value, index, length }
}

impl Usb {
    fn with_config(config: RomConfig) -> Self {
        Usb { engine: DfuEngine::new(config).unwrap(), target: FakeTarget::for_chip(G0B1) }
    }
    /// Enumerated and configured (what the kernel does before dfu-util runs).
    fn configured_with(config: RomConfig) -> Self {
        let mut usb = Self::with_config(config);
        assert_eq!(usb.out(0x00, 5, 7, 0, &[]).response, ControlResponse::Ack, "SET_ADDRESS");
        assert_eq!(usb.out(0x00, 9, 1, 0, &[]).response, ControlResponse::Ack, "SET_CONFIGURATION");
        usb
    }
    fn configured() -> Self {
        Self::configured_with(FakeTarget::config(G0B1))
    }
    fn out(&mut self, request_type: u8, request: u8, value: u16, index: u16, data: &[u8]) -> ControlOutcome {
        let s = setup(request_type, request, value, index, data.len() as u16);
        self.engine.control(s, data, &mut self.target)
    }
    fn input(&mut self, request_type: u8, request: u8, value: u16, index: u16, length: u16) -> ControlOutcome {
        self.engine.control(setup(request_type, request, value, index, length), &[], &mut self.target)
    }
    fn data(&mut self, request_type: u8, request: u8, value: u16, index: u16, length: u16) -> Vec<u8> {
        match self.input(request_type, request, value, index, length).response {
            ControlResponse::Data(d) => d,
            other => panic!("expected data, got {other:?}"),
        }
    }
    fn descriptor(&mut self, kind: u8, index: u8, length: u16) -> Option<Vec<u8>> {
        match self.input(0x80, 6, u16::from(kind) << 8 | u16::from(index), 0, length).response {
            ControlResponse::Data(d) => Some(d),
            _ => None,
        }
    }
    // DFU class requests on interface 0.
    fn dnload(&mut self, block: u16, data: &[u8]) -> ControlOutcome {
        self.out(0x21, request::DNLOAD, block, 0, data)
    }
    fn upload(&mut self, block: u16, length: u16) -> ControlOutcome {
        self.input(0xA1, request::UPLOAD, block, 0, length)
    }
    fn get_status_outcome(&mut self) -> ControlOutcome {
        self.input(0xA1, request::GETSTATUS, 0, 0, 6)
    }
    /// (bStatus, bwPollTimeout, bState)
    fn get_status(&mut self) -> (u8, u32, u8) {
        let ControlResponse::Data(d) = self.get_status_outcome().response else { panic!("GETSTATUS stalled") };
        assert_eq!(d.len(), 6);
        (d[0], u32::from_le_bytes([d[1], d[2], d[3], 0]), d[4])
    }
    fn get_state(&mut self) -> u8 {
        self.data(0xA1, request::GETSTATE, 0, 0, 1)[0]
    }
    fn clear_status(&mut self) -> ControlResponse {
        self.out(0x21, request::CLRSTATUS, 0, 0, &[]).response
    }
    fn abort(&mut self) -> ControlResponse {
        self.out(0x21, request::ABORT, 0, 0, &[]).response
    }
    /// DfuSe command: DNLOAD block 0, then the two polls. Returns the final (status, state).
    fn special(&mut self, payload: &[u8]) -> (u8, u32, u8, u8) {
        assert_eq!(self.dnload(0, payload).response, ControlResponse::Ack);
        let (_, poll, busy_state) = self.get_status();
        let (status, _, state) = self.get_status();
        (status, poll, busy_state, state)
    }
    fn set_address(&mut self, address: u32) -> (u8, u8) {
        let mut payload = vec![0x21];
        payload.extend_from_slice(&address.to_le_bytes());
        let (status, _, busy, state) = self.special(&payload);
        assert_eq!(busy, DfuState::DnBusy as u8, "first poll reports dfuDNBUSY");
        (status, state)
    }
}

const IDLE: u8 = DfuState::Idle as u8;
const DNBUSY: u8 = DfuState::DnBusy as u8;
const DNLOAD_IDLE: u8 = DfuState::DnloadIdle as u8;
const ERROR: u8 = DfuState::Error as u8;
const MANIFEST: u8 = DfuState::Manifest as u8;
const OK: u8 = DfuStatus::Ok as u8;

// ------------------------------------------------------------------ descriptors and standard requests

#[test]
fn device_descriptor_identifies_the_rom() {
    let mut usb = Usb::with_config(FakeTarget::config(G0B1));
    let d = usb.descriptor(1, 0, 64).unwrap();
    assert_eq!(d, [18, 1, 0x00, 0x01, 0, 0, 0, 64, 0x83, 0x04, 0x11, 0xDF, 0x00, 0x22, 1, 2, 3, 1]);
    // Truncated to wLength (the kernel's first 8-byte read).
    assert_eq!(usb.descriptor(1, 0, 8).unwrap(), d[..8]);
}

#[test]
fn configuration_descriptor_has_one_alt_setting_per_memory() {
    let mut usb = Usb::with_config(FakeTarget::config(G0B1));
    let head = usb.descriptor(2, 0, 9).unwrap();
    let total = u16::from_le_bytes([head[2], head[3]]);
    assert_eq!(total, 9 + 3 * 9 + 9);
    let d = usb.descriptor(2, 0, total).unwrap();
    assert_eq!(d[..9], [9, 2, 45, 0, 1, 1, 0, 0xC0, 50]);
    for alt in 0..3u8 {
        let i = 9 + 9 * usize::from(alt);
        assert_eq!(d[i..i + 9], [9, 4, 0, alt, 0, 0xFE, 0x01, 0x02, 4 + alt]);
    }
    // DFU functional descriptor: 0x0B, 255 ms, 2048 bytes, DfuSe 1.1a.
    assert_eq!(d[36..], [9, 0x21, 0x0B, 255, 0, 0x00, 0x08, 0x1A, 0x01]);
    // Also readable on its own (dfu-util's fallback).
    assert_eq!(usb.descriptor(0x21, 0, 9).unwrap(), d[36..]);
}

#[test]
fn strings_name_the_memories() {
    let mut usb = Usb::with_config(FakeTarget::config(G0B1));
    assert_eq!(usb.descriptor(3, 0, 255).unwrap(), [4, 3, 0x09, 0x04]);
    let text = |d: Vec<u8>| {
        assert_eq!(usize::from(d[0]), d.len());
        String::from_utf16(&d[2..].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>()).unwrap()
    };
    assert_eq!(text(usb.descriptor(3, 1, 255).unwrap()), "STMicroelectronics");
    assert_eq!(text(usb.descriptor(3, 2, 255).unwrap()), "STM32  BOOTLOADER");
    assert_eq!(text(usb.descriptor(3, 3, 255).unwrap()), "000000000000");
    assert_eq!(text(usb.descriptor(3, 4, 255).unwrap()), "@Internal Flash  /0x08000000/256*02Kg");
    assert_eq!(text(usb.descriptor(3, 5, 255).unwrap()), "@Option Bytes  /0x1FFF7800/01*128 e");
    assert_eq!(text(usb.descriptor(3, 6, 255).unwrap()), "@OTP Memory  /0x1FFF7000/01*01Ke");
    assert!(usb.descriptor(3, 7, 255).is_none());
    assert!(usb.descriptor(6, 0, 10).is_none(), "no device qualifier: full speed only");
}

#[test]
fn standard_requests() {
    let mut usb = Usb::with_config(FakeTarget::config(G0B1));
    assert_eq!(usb.data(0x80, 0, 0, 0, 2), [1, 0], "self powered");
    assert_eq!(usb.data(0x80, 8, 0, 0, 1), [0], "not configured yet");
    // Class requests need a configured device; the DFU state is not touched.
    assert_eq!(usb.get_status_outcome().response, ControlResponse::Stall);
    assert_eq!(usb.out(0x00, 5, 12, 0, &[]).response, ControlResponse::Ack);
    assert_eq!(usb.engine.usb_address(), 12);
    assert_eq!(usb.out(0x00, 9, 2, 0, &[]).response, ControlResponse::Stall, "one configuration");
    assert_eq!(usb.out(0x00, 9, 1, 0, &[]).response, ControlResponse::Ack);
    assert_eq!(usb.data(0x80, 8, 0, 0, 1), [1]);
    // Alternate settings: 0..3.
    assert_eq!(usb.out(0x01, 11, 2, 0, &[]).response, ControlResponse::Ack);
    assert_eq!(usb.data(0x81, 10, 0, 0, 1), [2]);
    assert_eq!(usb.out(0x01, 11, 3, 0, &[]).response, ControlResponse::Stall);
    assert_eq!(usb.out(0x01, 11, 0, 1, &[]).response, ControlResponse::Stall, "no interface 1");
    assert_eq!(usb.engine.alt_setting(), 2);
    assert_eq!(usb.data(0x81, 0, 0, 0, 2), [0, 0]);
    assert_eq!(usb.out(0x02, 1, 0, 0x80, &[]).response, ControlResponse::Ack, "CLEAR_FEATURE(ENDPOINT_HALT)");
    assert_eq!(usb.out(0x00, 3, 1, 0, &[]).response, ControlResponse::Stall, "no remote wakeup");
    assert_eq!(usb.engine.state(), DfuState::Idle);
    // Vendor requests and class requests to another interface stall.
    assert_eq!(usb.input(0xC0, 1, 0, 0, 4).response, ControlResponse::Stall);
    assert_eq!(usb.input(0xA1, request::GETSTATUS, 0, 1, 6).response, ControlResponse::Stall);
    assert_eq!(usb.engine.state(), DfuState::Idle);
    // A data stage that does not match wLength is refused.
    let s = setup(0x21, request::DNLOAD, 2, 0, 16);
    assert_eq!(usb.engine.control(s, &[0; 8], &mut usb.target).response, ControlResponse::Stall);
}

#[test]
fn bus_reset_returns_to_the_default_state() {
    let mut usb = Usb::configured();
    usb.set_address(0x0800_4000);
    usb.engine.bus_reset();
    assert!(!usb.engine.is_configured());
    assert_eq!(usb.engine.usb_address(), 0);
    assert_eq!(usb.out(0x00, 9, 1, 0, &[]).response, ControlResponse::Ack);
    assert_eq!(usb.engine.address_pointer(), 0x0800_0000, "class re-initialised");
    assert_eq!(usb.get_status(), (OK, 0, IDLE));
}

// ------------------------------------------------------------------ DFU state machine

#[test]
fn status_state_and_clear_status() {
    let mut usb = Usb::configured();
    assert_eq!(usb.get_status(), (OK, 0, IDLE));
    assert_eq!(usb.get_state(), IDLE);
    // CLRSTATUS outside dfuERROR is a state error: STALL, dfuERROR / errSTALLEDPKT.
    assert_eq!(usb.clear_status(), ControlResponse::Stall);
    assert_eq!(usb.get_status(), (DfuStatus::ErrStalledPkt as u8, 0, ERROR));
    // In dfuERROR everything but GETSTATUS / GETSTATE / CLRSTATUS stalls and keeps the status.
    assert_eq!(usb.abort(), ControlResponse::Stall);
    assert_eq!(usb.upload(0, 4).response, ControlResponse::Stall);
    assert_eq!(usb.get_state(), ERROR);
    assert_eq!(usb.clear_status(), ControlResponse::Ack);
    assert_eq!(usb.get_status(), (OK, 0, IDLE));
}

#[test]
fn wrong_direction_and_unknown_class_requests_are_state_errors() {
    let mut usb = Usb::configured();
    assert_eq!(usb.input(0xA1, request::DNLOAD, 2, 0, 16).response, ControlResponse::Stall);
    assert_eq!(usb.engine.state(), DfuState::Error);
    assert_eq!(usb.clear_status(), ControlResponse::Ack);
    assert_eq!(usb.out(0x21, 7, 0, 0, &[]).response, ControlResponse::Stall);
    assert_eq!(usb.engine.status(), DfuStatus::ErrStalledPkt);
}

#[test]
fn f4_quirk_starts_in_dfu_error() {
    let mut config = FakeTarget::config(G0B1);
    config.dfu.as_mut().unwrap().start_in_error = true;
    let mut usb = Usb::configured_with(config);
    // dfu-util: dfuERROR -> CLRSTATUS -> dfuIDLE ([DU] stm32f4discovery log).
    assert_eq!(usb.get_status(), (DfuStatus::ErrFirmware as u8, 0, ERROR));
    assert_eq!(usb.clear_status(), ControlResponse::Ack);
    assert_eq!(usb.get_status(), (OK, 0, IDLE));
}

#[test]
fn get_commands_upload() {
    let mut usb = Usb::configured();
    assert_eq!(usb.upload(0, 2048).response, ControlResponse::Data(vec![0x00, 0x21, 0x41, 0x92]));
    assert_eq!(usb.engine.state(), DfuState::Idle, "short frame ends the upload");
    assert_eq!(usb.upload(0, 4).response, ControlResponse::Data(vec![0x00, 0x21, 0x41, 0x92]));
    assert_eq!(usb.engine.state(), DfuState::UploadIdle);
    assert_eq!(usb.abort(), ControlResponse::Ack);
    assert_eq!(usb.engine.state(), DfuState::Idle);
}

#[test]
fn block_one_and_oversized_transfers_stall() {
    let mut usb = Usb::configured();
    assert_eq!(usb.dnload(1, &[0; 16]).response, ControlResponse::Stall);
    assert_eq!((usb.engine.state(), usb.engine.status()), (DfuState::Error, DfuStatus::ErrStalledPkt));
    usb.clear_status();
    assert_eq!(usb.upload(1, 16).response, ControlResponse::Stall);
    usb.clear_status();
    assert_eq!(usb.dnload(2, &vec![0; 2049]).response, ControlResponse::Stall);
    usb.clear_status();
    assert_eq!(usb.upload(2, 2049).response, ControlResponse::Stall);
    usb.clear_status();
    assert!(usb.target.calls.is_empty());
}

#[test]
fn unsupported_dfuse_commands_stall() {
    let mut usb = Usb::configured();
    for payload in [&[0x55][..], &[0x21, 0, 0], &[0x41, 0, 0, 0x08], &[0x92, 0], &[0x00]] {
        assert_eq!(usb.dnload(0, payload).response, ControlResponse::Stall, "{payload:02x?}");
        assert_eq!(usb.get_status(), (DfuStatus::ErrStalledPkt as u8, 0, ERROR));
        usb.clear_status();
    }
}

#[test]
fn set_address_pointer() {
    let mut usb = Usb::configured();
    assert_eq!(usb.engine.address_pointer(), 0x0800_0000, "default: flash base (AN2662 4.4.1)");
    assert_eq!(usb.set_address(0x0800_4000), (OK, DNLOAD_IDLE));
    assert_eq!(usb.engine.address_pointer(), 0x0800_4000);
    // An address the device does not have: errTARGET, pointer unchanged.
    assert_eq!(usb.set_address(0x0000_0000), (DfuStatus::ErrTarget as u8, ERROR));
    assert_eq!(usb.engine.address_pointer(), 0x0800_4000);
}

#[test]
fn erase_page_reports_busy_with_the_erase_time() {
    let mut usb = Usb::configured();
    usb.target.preload_flash(0x0800_0800, &[0; 8]);
    let (status, poll, busy, state) = usb.special(&[0x41, 0x10, 0x08, 0x00, 0x08]);
    assert_eq!((status, busy, state), (OK, DNBUSY, DNLOAD_IDLE));
    assert_eq!(poll, ERASE_TIME.as_millis() as u32);
    assert_eq!(usb.target.calls, [Call::ErasePage(1)]);
    assert_eq!(usb.target.flash_at(0x0800_0800, 8), [0xFF; 8]);
}

#[test]
fn erase_errors() {
    let mut usb = Usb::configured();
    // Not a flash address.
    let (status, _, _, state) = usb.special(&[0x41, 0x00, 0x40, 0x00, 0x20]);
    assert_eq!((status, state), (DfuStatus::ErrTarget as u8, ERROR));
    usb.clear_status();
    // Write-protected page: no error (AN2662 4.5.3) ...
    usb.target.protected_pages.insert(0);
    let (status, _, _, state) = usb.special(&[0x41, 0, 0, 0, 0x08]);
    assert_eq!((status, state), (OK, DNLOAD_IDLE));
    // ... unless switched on; other controller failures are errERASE.
    let mut config = FakeTarget::config(G0B1);
    config.dfu.as_mut().unwrap().report_write_protected_erase = true;
    let mut usb = Usb::configured_with(config);
    usb.target.protected_pages.insert(0);
    assert_eq!(usb.special(&[0x41, 0, 0, 0, 0x08]).0, DfuStatus::ErrErase as u8);
    usb.clear_status();
    usb.target.fail_next = Some(TargetError::Controller("injected".into()));
    assert_eq!(usb.special(&[0x41]).0, DfuStatus::ErrErase as u8);
}

#[test]
fn mass_erase() {
    let mut usb = Usb::configured();
    usb.target.preload_flash(0x0807_0000, &[0; 4]);
    let (status, poll, busy, state) = usb.special(&[0x41]);
    assert_eq!((status, busy, state), (OK, DNBUSY, DNLOAD_IDLE));
    assert_eq!(poll, MASS_ERASE_TIME.as_millis() as u32);
    assert_eq!(usb.target.calls, [Call::MassErase]);
    assert_eq!(usb.target.flash_at(0x0807_0000, 4), [0xFF; 4]);
}

#[test]
fn download_blocks_are_addressed_from_the_pointer() {
    let mut usb = Usb::configured();
    usb.set_address(0x0800_1000);
    // wValue = 3: (3 - 2) * 2048 + pointer.
    assert_eq!(usb.dnload(3, &[0xA5; 64]).response, ControlResponse::Ack);
    assert_eq!(usb.engine.state(), DfuState::DnloadSync);
    let outcome = usb.get_status_outcome();
    assert_eq!(outcome.busy, PROGRAM_TIME * 8);
    assert_eq!(usb.get_status(), (OK, 0, DNLOAD_IDLE));
    assert_eq!(usb.target.flash_at(0x0800_1800, 64), [0xA5; 64]);
    assert_eq!(usb.engine.address_pointer(), 0x0800_1000, "writes do not move the pointer");
    // wValue = 2 writes at the pointer; a 13-byte tail is padded to a double word.
    usb.dnload(2, &[0x5A; 13]);
    usb.get_status();
    assert_eq!(usb.get_status(), (OK, 0, DNLOAD_IDLE));
    assert_eq!(usb.target.writes().last(), Some(&(0x0800_1000, 16)));
    // RAM is writable too.
    usb.set_address(0x2000_8000);
    usb.dnload(2, &[1, 2, 3, 4]);
    usb.get_status();
    assert_eq!(usb.get_status(), (OK, 0, DNLOAD_IDLE));
    assert_eq!(usb.target.ram_at(0x2000_8000, 4), [1, 2, 3, 4]);
}

#[test]
fn download_errors() {
    let mut usb = Usb::configured();
    let check = |usb: &mut Usb, status: DfuStatus| {
        let (_, _, state) = usb.get_status();
        assert_eq!(state, DNBUSY);
        assert_eq!(usb.get_status(), (status as u8, 0, ERROR));
        usb.clear_status();
    };
    // Past the end of the flash.
    usb.set_address(0x0807_F800);
    usb.dnload(3, &[0; 8]);
    check(&mut usb, DfuStatus::ErrTarget);
    // System memory is not writable; the bootloader's RAM is no memory at all.
    usb.set_address(0x1FFF_0000);
    usb.dnload(2, &[0; 8]);
    check(&mut usb, DfuStatus::ErrTarget);
    // Programming a non-erased double word (PROGERR) -> errPROG; write protection -> errWRITE.
    usb.target.preload_flash(0x0800_0000, &[0; 8]);
    usb.set_address(0x0800_0000);
    usb.dnload(2, &[1; 8]);
    check(&mut usb, DfuStatus::ErrProg);
    usb.target.protected_pages.insert(1);
    usb.set_address(0x0800_0800);
    usb.dnload(2, &[1; 8]);
    check(&mut usb, DfuStatus::ErrWrite);
}

#[test]
fn abort_discards_a_pending_download() {
    let mut usb = Usb::configured();
    usb.dnload(2, &[0; 8]);
    assert_eq!(usb.abort(), ControlResponse::Ack);
    assert_eq!(usb.get_status(), (OK, 0, IDLE));
    assert!(usb.target.calls.is_empty(), "nothing was written");
}

#[test]
fn requests_during_dnbusy_are_state_errors() {
    let mut usb = Usb::configured();
    usb.dnload(0, &[0x41]);
    assert_eq!(usb.get_status().2, DNBUSY);
    assert_eq!(usb.get_state_outcome(), ControlResponse::Stall);
    assert_eq!(usb.engine.state(), DfuState::Error);
}

impl Usb {
    fn get_state_outcome(&mut self) -> ControlResponse {
        self.input(0xA1, request::GETSTATE, 0, 0, 1).response
    }
}

#[test]
fn upload_reads_blocks_from_the_pointer() {
    let mut usb = Usb::configured();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    usb.target.preload_flash(0x0800_2000, &pattern);
    usb.set_address(0x0800_2000);
    assert_eq!(usb.abort(), ControlResponse::Ack);
    assert_eq!(usb.upload(2, 2048).response, ControlResponse::Data(pattern[..2048].to_vec()));
    assert_eq!(usb.engine.state(), DfuState::UploadIdle);
    assert_eq!(usb.upload(3, 2048).response, ControlResponse::Data(pattern[2048..].to_vec()));
    assert_eq!(usb.upload(3, 16).response, ControlResponse::Data(pattern[2048..2064].to_vec()));
    // Upload is not valid from dfuDNLOAD-IDLE (nor is a DfuSe command from dfuUPLOAD-IDLE).
    assert_eq!(usb.dnload(0, &[0x41]).response, ControlResponse::Stall);
    usb.clear_status();
    usb.set_address(0x0800_2000);
    assert_eq!(usb.upload(2, 16).response, ControlResponse::Stall);
    assert_eq!(usb.engine.status(), DfuStatus::ErrStalledPkt);
}

#[test]
fn upload_errors() {
    let mut usb = Usb::configured();
    usb.set_address(0x0807_F800);
    usb.abort();
    // (3 - 2) * 2048 past the last page.
    assert_eq!(usb.upload(3, 2048).response, ControlResponse::Stall);
    assert_eq!(usb.get_status(), (DfuStatus::ErrTarget as u8, 0, ERROR));
}

#[test]
fn readout_protection_gives_err_vendor() {
    let mut usb = Usb::configured();
    usb.target.rdp = RdpLevel::Level1;
    // Set Address Pointer touches no memory and still works.
    assert_eq!(usb.set_address(0x0800_0000), (OK, DNLOAD_IDLE));
    usb.abort();
    for payload in [&[0x41][..], &[0x41, 0, 0, 0, 0x08]] {
        assert_eq!(usb.special(payload).0, DfuStatus::ErrVendor as u8);
        usb.clear_status();
    }
    usb.dnload(2, &[0; 8]);
    usb.get_status();
    assert_eq!(usb.get_status(), (DfuStatus::ErrVendor as u8, 0, ERROR));
    usb.clear_status();
    // AN2662 4.4.1: the read is not performed, dfuERROR / errVENDOR.
    assert_eq!(usb.upload(2, 64).response, ControlResponse::Stall);
    assert_eq!(usb.get_status(), (DfuStatus::ErrVendor as u8, 0, ERROR));
    assert!(usb.target.calls.is_empty());
}

#[test]
fn read_unprotect_removes_rdp_and_resets() {
    let mut usb = Usb::configured();
    usb.target.rdp = RdpLevel::Level1;
    assert_eq!(usb.dnload(0, &[0x92]).response, ControlResponse::Ack);
    let outcome = usb.get_status_outcome();
    assert_eq!(outcome.response, ControlResponse::Data(vec![OK, 30, 0, 0, DNBUSY, 0]));
    assert_eq!(outcome.busy, OPTION_TIME);
    assert_eq!(outcome.action, Some(RomAction::LaunchOptionBytes));
    assert_eq!(usb.target.calls, [Call::SetRdp(RdpLevel::Level0)]);
    assert!(usb.engine.is_finished());
    assert_eq!(usb.get_status_outcome().response, ControlResponse::Stall, "device gone");
}

#[test]
fn option_bytes_download() {
    let mut usb = Usb::configured();
    assert_eq!(usb.out(0x01, 11, 1, 0, &[]).response, ControlResponse::Ack, "alt 1: option bytes");
    usb.set_address(0x1FFF_7800);
    // RDP level 2 is refused.
    usb.dnload(2, &[0xCC, 0xFE, 0xFF, 0xFE]);
    usb.get_status();
    assert_eq!(usb.get_status(), (DfuStatus::ErrTarget as u8, 0, ERROR));
    usb.clear_status();
    usb.set_address(0x1FFF_7800);
    usb.dnload(2, &[0xAA, 0xFE, 0xFF, 0xFE]);
    let outcome = usb.get_status_outcome();
    assert_eq!(outcome.action, Some(RomAction::LaunchOptionBytes), "option bytes load with a reset");
    assert_eq!(usb.target.calls, [Call::WriteOptionBytes(vec![0xAA, 0xFE, 0xFF, 0xFE])]);
    // Upload of the option bytes.
    let mut usb = Usb::configured();
    usb.set_address(0x1FFF_7800);
    usb.abort();
    let ControlResponse::Data(d) = usb.upload(2, 128).response else { panic!() };
    assert_eq!(d[0], 0xAA);
}

// ------------------------------------------------------------------ leave

fn vector(usb: &mut Usb, address: u32, sp: u32, pc: u32) {
    let mut v = sp.to_le_bytes().to_vec();
    v.extend_from_slice(&pc.to_le_bytes());
    usb.target.preload_flash(address, &v);
}

#[test]
fn leave_jumps_through_the_vector_at_the_pointer() {
    let mut usb = Usb::configured();
    vector(&mut usb, 0x0800_4000, 0x2002_4000, 0x0800_4101);
    usb.set_address(0x0800_4000);
    assert_eq!(usb.dnload(2, &[]).response, ControlResponse::Ack);
    assert_eq!(usb.engine.state(), DfuState::ManifestSync);
    let outcome = usb.get_status_outcome();
    assert_eq!(outcome.response, ControlResponse::Data(vec![OK, 0, 0, 0, MANIFEST, 0]));
    let jump = Jump {
        address: 0x0800_4000,
        msp: Some(0x2002_4000),
        pc: 0x0800_4101,
        reset_peripherals: false,
        usb_disconnect: true,
    };
    assert_eq!(outcome.action, Some(RomAction::Jump(jump)));
    assert!(usb.engine.is_finished());
    assert_eq!(usb.engine.state(), DfuState::ManifestWaitReset);
}

#[test]
fn leave_from_idle_uses_the_default_pointer() {
    let mut usb = Usb::configured();
    vector(&mut usb, 0x0800_0000, 0x2000_8000, 0x0800_00C1);
    assert_eq!(usb.dnload(0, &[]).response, ControlResponse::Ack);
    let Some(RomAction::Jump(jump)) = usb.get_status_outcome().action else { panic!() };
    assert_eq!((jump.address, jump.msp, jump.pc), (0x0800_0000, Some(0x2000_8000), 0x0800_00C1));
}

#[test]
fn leave_variants() {
    // Direct semantics switch: PC = pointer | 1, MSP untouched.
    let mut config = FakeTarget::config(G0B1);
    config.dfu.as_mut().unwrap().leave = LeaveJump::Direct;
    let mut usb = Usb::configured_with(config);
    usb.set_address(0x0800_8ACC);
    usb.dnload(2, &[]);
    let Some(RomAction::Jump(jump)) = usb.get_status_outcome().action else { panic!() };
    assert_eq!((jump.msp, jump.pc), (None, 0x0800_8ACD));
    // Pointer at something that cannot be executed: reset instead of a jump.
    let mut usb = Usb::configured();
    usb.set_address(0x1FFF_7800);
    usb.dnload(2, &[]);
    assert_eq!(usb.get_status_outcome().action, Some(RomAction::SystemReset));
    // Leave is not valid from dfuUPLOAD-IDLE.
    let mut usb = Usb::configured();
    usb.upload(0, 4);
    assert_eq!(usb.dnload(2, &[]).response, ControlResponse::Stall);
}

#[test]
fn detach_in_dfu_mode_returns_to_idle() {
    let mut usb = Usb::configured();
    usb.set_address(0x0800_0000);
    assert_eq!(usb.out(0x21, request::DETACH, 1000, 0, &[]).response, ControlResponse::Ack);
    assert_eq!(usb.engine.state(), DfuState::Idle);
    assert!(!usb.engine.is_finished());
}

#[test]
fn getstatus_with_short_length_is_truncated() {
    let mut usb = Usb::configured();
    let outcome = usb.input(0xA1, request::GETSTATUS, 0, 0, 2);
    assert_eq!(outcome.response, ControlResponse::Data(vec![OK, 0]));
}
