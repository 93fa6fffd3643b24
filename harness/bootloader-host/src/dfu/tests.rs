//! DfuSe client against `FakeDfu`, a test double: a few dozen lines of DfuSe state machine over a
//! 64 KiB flash array, strict about request order (UPLOAD only from the idle states, DNLOAD only
//! from dfuIDLE/dfuDNLOAD-IDLE, programming only erased bytes) so the tests catch a client that
//! skips a step. It records waits instead of sleeping. It is not the virtual ROM.

use std::time::Duration;

use super::descriptors::tests::{dfuse_configuration, string_descriptor};
use super::*;
use crate::transcript::Transcript;

const BASE: u32 = 0x0800_0000;
const PAGE: u32 = 0x800;
const FLASH_LEN: usize = 64 * 1024;
const LAYOUT: &str = "@Internal Flash  /0x08000000/32*002Kg";

struct FakeDfu {
    log: Vec<String>,
    waits: Vec<Duration>,
    state: State,
    status: Status,
    pointer: u32,
    pending: Option<Vec<u8>>,
    busy_left: u32,
    stalls_left: u32,
    flash: Vec<u8>,
    erased: Vec<u32>,
    /// Knobs for the cases under test.
    poll_ms: u32,
    busy_polls: u32,
    stall_polls: u32,
    reject: Option<u32>,
    protected: bool,
    disconnect_on_leave: bool,
    upload_limit: usize,
    config: Vec<u8>,
    immediate_idle: bool,
    /// Stall every n-th class request before acting on it (a transaction lost on the cable).
    stall_class_every: Option<u32>,
    class_requests: u32,
    /// The next n block writes end in dfuERROR / errPROG without programming.
    write_errors: u32,
    /// The GETSTATUS that programs the next n blocks programs them, then its reply is lost.
    lose_status_after_write: u32,
    /// Waits pass on this clock too (the device's clock, for deadline tests).
    clock: Option<std::sync::Arc<crate::clock::testing::ManualClock>>,
}

impl FakeDfu {
    fn new() -> Self {
        FakeDfu {
            log: Vec::new(),
            waits: Vec::new(),
            state: State::IDLE,
            status: Status::OK,
            pointer: BASE,
            pending: None,
            busy_left: 0,
            stalls_left: 0,
            flash: vec![0xFF; FLASH_LEN],
            erased: Vec::new(),
            poll_ms: 7,
            busy_polls: 1,
            stall_polls: 0,
            reject: None,
            protected: false,
            disconnect_on_leave: false,
            upload_limit: usize::MAX,
            config: dfuse_configuration(2, 2048),
            immediate_idle: false,
            stall_class_every: None,
            class_requests: 0,
            write_errors: 0,
            lose_status_after_write: 0,
            clock: None,
        }
    }

    fn status_bytes(&self) -> Vec<u8> {
        let p = self.poll_ms.to_le_bytes();
        vec![self.status.0, p[0], p[1], p[2], self.state.0, 0]
    }

    fn offset(&self, address: u32, len: usize) -> Option<usize> {
        let off = address.checked_sub(BASE)? as usize;
        (off + len <= FLASH_LEN).then_some(off)
    }

    /// Runs a queued DNLOAD on the first GETSTATUS after it.
    fn execute(&mut self, payload: Vec<u8>) -> Result<(), Status> {
        if self.protected {
            return Err(Status::ERR_VENDOR);
        }
        let addr = |p: &[u8]| u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
        match payload.as_slice() {
            [0x21, ..] if payload.len() == 5 => {
                let a = addr(&payload);
                if self.reject == Some(a) || self.offset(a, 0).is_none() {
                    return Err(Status::ERR_TARGET);
                }
                self.pointer = a;
            }
            [0x41, ..] if payload.len() == 5 => {
                let page = (addr(&payload) - BASE) / PAGE * PAGE;
                let off = self.offset(BASE + page, PAGE as usize).ok_or(Status::ERR_TARGET)?;
                self.flash[off..off + PAGE as usize].fill(0xFF);
                self.erased.push(BASE + page);
            }
            [0x41] => {
                self.flash.fill(0xFF);
                self.erased.push(0);
            }
            [0x92] => {}
            _ => return Err(Status(0x0E)),
        }
        Ok(())
    }

    /// Whether this class request is lost to an injected stall.
    fn stalled(&mut self, setup: &Setup) -> bool {
        if setup.request_type & 0x60 != 0x20 {
            return false;
        }
        self.class_requests += 1;
        let hit = self.stall_class_every.is_some_and(|n| self.class_requests.is_multiple_of(n));
        if hit {
            self.log.push("(stalled)".into());
        }
        hit
    }

    fn write(&mut self, block: u16, data: &[u8]) -> Result<(), Status> {
        if self.write_errors > 0 {
            self.write_errors -= 1;
            return Err(Status(0x06)); // errPROG
        }
        let address = self.pointer + (block as u32 - 2) * 2048;
        let off = self.offset(address, data.len()).ok_or(Status::ERR_TARGET)?;
        // Flash programs only erased bytes: a client that forgot to erase fails here.
        if self.flash[off..off + data.len()].iter().any(|&b| b != 0xFF) {
            return Err(Status(0x03)); // errWRITE
        }
        self.flash[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

impl ControlTransfer for FakeDfu {
    fn control_in(&mut self, setup: Setup, _timeout: Duration) -> Result<Vec<u8>, TransferError> {
        let len = setup.length as usize;
        if self.stalled(&setup) {
            return Err(TransferError::Stall);
        }
        match (setup.request_type, setup.request) {
            (0x80, 6) => {
                self.log.push(format!("GET_DESCRIPTOR {:04X}", setup.value));
                let d = match setup.value {
                    0x0200 => self.config.clone(),
                    0x0300 => vec![4, 3, 0x09, 0x04],
                    0x0304 => string_descriptor(LAYOUT),
                    0x0305 => string_descriptor("@Option Bytes  /0x1FFF7800/01*040 e"),
                    _ => return Err(TransferError::Stall),
                };
                Ok(d[..d.len().min(len)].to_vec())
            }
            (0xA1, 3) => {
                self.log.push("GETSTATUS".into());
                if let Some(payload) = self.pending.take() {
                    if payload.is_empty() {
                        if self.disconnect_on_leave {
                            return Err(TransferError::Disconnected);
                        }
                        self.state = State::MANIFEST;
                        return Ok(self.status_bytes());
                    }
                    let block = u16::from_le_bytes([payload[0], payload[1]]);
                    let result =
                        if block == 0 { self.execute(payload[2..].to_vec()) } else { self.write(block, &payload[2..]) };
                    if block >= 2 && result.is_ok() && self.lose_status_after_write > 0 {
                        self.lose_status_after_write -= 1;
                        self.state = State::DNLOAD_IDLE;
                        self.log.push("(status lost)".into());
                        return Err(TransferError::Timeout(Duration::from_secs(5)));
                    }
                    match result {
                        Ok(()) if self.immediate_idle => self.state = State::DNLOAD_IDLE,
                        Ok(()) => {
                            self.state = State::DNBUSY;
                            self.busy_left = self.busy_polls;
                            self.stalls_left = self.stall_polls;
                        }
                        Err(status) => (self.state, self.status) = (State::ERROR, status),
                    }
                } else if self.state == State::DNBUSY {
                    if self.stalls_left > 0 {
                        self.stalls_left -= 1;
                        return Err(TransferError::Stall);
                    }
                    if self.busy_left > 0 {
                        self.busy_left -= 1;
                    } else {
                        self.state = State::DNLOAD_IDLE;
                    }
                }
                Ok(self.status_bytes())
            }
            (0xA1, 2) => {
                self.log.push(format!("UPLOAD {} len {}", setup.value, len));
                if !matches!(self.state, State::IDLE | State::UPLOAD_IDLE) {
                    return Err(TransferError::Stall);
                }
                self.state = State::UPLOAD_IDLE;
                if setup.value == 0 {
                    return Ok(vec![0x00, 0x21, 0x41, 0x92]);
                }
                let off = (self.pointer - BASE) as usize + (setup.value as usize - 2) * 2048;
                let end = (off + len).min(FLASH_LEN).min(self.upload_limit);
                Ok(self.flash.get(off..end).map(<[u8]>::to_vec).unwrap_or_default())
            }
            _ => Err(TransferError::Stall),
        }
    }

    fn control_out(&mut self, setup: Setup, data: &[u8], _timeout: Duration) -> Result<(), TransferError> {
        if self.stalled(&setup) {
            return Err(TransferError::Stall);
        }
        match (setup.request_type, setup.request) {
            (0x01, 11) => self.log.push(format!("SET_INTERFACE {}", setup.value)),
            (0x21, 1) => {
                self.log.push(if setup.value == 0 {
                    format!("DNLOAD 0 {:02X?}", data)
                } else {
                    format!("DNLOAD {} len {}", setup.value, data.len())
                });
                if !matches!(self.state, State::IDLE | State::DNLOAD_IDLE) {
                    return Err(TransferError::Stall);
                }
                let mut payload = if data.is_empty() { Vec::new() } else { setup.value.to_le_bytes().to_vec() };
                payload.extend_from_slice(data);
                self.pending = Some(payload);
                self.state = State::DNLOAD_SYNC;
            }
            (0x21, 4) => {
                self.log.push("CLRSTATUS".into());
                (self.state, self.status) = (State::IDLE, Status::OK);
            }
            (0x21, 6) => {
                self.log.push("ABORT".into());
                // dfuDNBUSY and the manifestation states take no ABORT: stall, dfuERROR (DFU 1.1
                // A.2.5, A.2.7).
                if matches!(self.state, State::DNBUSY | State::MANIFEST | State::MANIFEST_WAIT_RESET) {
                    (self.state, self.status) = (State::ERROR, Status(0x0F)); // errSTALLEDPKT
                    return Err(TransferError::Stall);
                }
                self.state = State::IDLE;
            }
            _ => return Err(TransferError::Stall),
        }
        Ok(())
    }

    fn wait(&mut self, duration: Duration) {
        self.waits.push(duration);
        if let Some(c) = &self.clock {
            crate::clock::Clock::sleep(c.as_ref(), duration);
        }
    }
}

fn open(dev: FakeDfu) -> DfuSeClient<FakeDfu> {
    DfuSeClient::open(dev, 0, DfuConfig::default(), None).unwrap()
}

#[test]
fn open_reads_descriptors_selects_the_alt_and_clears_a_start_in_dfu_error() {
    // The F4 Discovery ROM starts in dfuERROR / errFIRMWARE (reference 3.6).
    let mut dev = FakeDfu::new();
    (dev.state, dev.status) = (State::ERROR, Status(0x0A));
    let c = open(dev);
    let t = c.target();
    assert_eq!((t.interface, t.alt_setting, t.transfer_size), (0, 0, 2048));
    assert_eq!(t.layout.name, "Internal Flash");
    assert_eq!(t.layout.segments[0].pages, 32);
    let dev = c.into_inner();
    assert_eq!(
        dev.log,
        [
            "GET_DESCRIPTOR 0200",
            "GET_DESCRIPTOR 0200",
            "GET_DESCRIPTOR 0300",
            "GET_DESCRIPTOR 0304",
            "SET_INTERFACE 0",
            "GETSTATUS",
            "CLRSTATUS",
            "GETSTATUS"
        ]
    );
    assert_eq!(dev.state, State::IDLE);

    let c = DfuSeClient::open(FakeDfu::new(), 1, DfuConfig::default(), None).unwrap();
    assert_eq!(c.target().layout.name, "Option Bytes");
}

#[test]
fn open_finishes_what_a_client_that_died_mid_download_left_pending() {
    // The last client sent a page erase and died before its GETSTATUS (dfuDNLOAD-SYNC), or after
    // it (dfuDNBUSY). The next one polls the pending operation to its end and aborts from
    // dfuDNLOAD-IDLE; an ABORT sent in dfuDNBUSY would stall and fail the open.
    for polled_before in [false, true] {
        let mut dev = FakeDfu::new();
        dev.busy_polls = 2;
        dev.pending = Some(vec![0, 0, 0x41, 0x00, 0x08, 0x00, 0x08]);
        dev.state = State::DNLOAD_SYNC;
        if polled_before {
            let setup = Setup { request_type: 0xA1, request: 3, value: 0, index: 0, length: 6 };
            dev.control_in(setup, Duration::from_secs(1)).unwrap();
            assert_eq!(dev.state, State::DNBUSY);
        }
        dev.log.clear();
        let mut c = open(dev);
        let dev = c.device_mut();
        assert_eq!((dev.state, dev.status), (State::IDLE, Status::OK));
        assert_eq!(dev.erased, [BASE + 0x800], "the pending erase ran once");
        assert!(!dev.log.iter().any(|l| l == "CLRSTATUS"), "no stall on the way: {:?}", dev.log);
        assert_eq!(dev.log.iter().filter(|l| *l == "ABORT").count(), 1, "{:?}", dev.log);
        // And the device takes the next operation.
        c.erase_page(BASE).unwrap();
    }
}

#[test]
fn open_refuses_what_it_cannot_drive() {
    let e = DfuSeClient::open(FakeDfu::new(), 3, DfuConfig::default(), None).err().unwrap();
    assert_eq!(e.to_string(), "alternate setting 3 not found; the DFU interface offers [0, 1]");

    let mut dev = FakeDfu::new();
    let n = dev.config.len();
    dev.config[n - 2] = 0x10; // bcdDFUVersion 0x0110: plain DFU 1.1
    let e = DfuSeClient::open(dev, 0, DfuConfig::default(), None).err().unwrap();
    assert_eq!(e.to_string(), "not a DfuSe device: bcdDFUVersion 0x0110 (DfuSe is 0x011A)");

    let mut dev = FakeDfu::new();
    dev.state = State::APP_IDLE;
    let e = DfuSeClient::open(dev, 0, DfuConfig::default(), None).err().unwrap();
    assert_eq!(
        e.to_string(),
        "clearing the error state: device is in runtime mode (appIDLE); detach it into DFU mode first"
    );
}

#[test]
fn download_erases_each_touched_page_once_then_writes_in_transfer_size_chunks() {
    let mut c = open(FakeDfu::new());
    let a: Vec<u8> = (0..100u8).collect();
    let b = [0xA5u8; 8]; // crosses from page 0 into page 1, shares page 0 with `a`
    let big: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect(); // pages 6 and 7
    let ranges = [(BASE + 0x10, &a[..]), (BASE + 0x7FC, &b[..]), (BASE + 0x3000, &big[..])];
    c.device_mut().log.clear();
    c.download_ranges(&ranges).unwrap();

    let dev = c.into_inner();
    assert_eq!(dev.erased, [BASE, BASE + 0x800, BASE + 0x3000, BASE + 0x3800]);
    assert_eq!(&dev.flash[0x10..0x10 + 100], &a[..]);
    assert_eq!(&dev.flash[0x7FC..0x804], &b[..]);
    assert_eq!(&dev.flash[0x3000..0x3000 + 3000], &big[..]);
    // A range's first chunk: Set Address Pointer, then DNLOAD wValue 2; the chunks after it go
    // as blocks 3, 4, ... from the same pointer (AN3156), with no Set Address Pointer between.
    let writes: Vec<_> = dev.log.iter().filter(|l| l.starts_with("DNLOAD") && !l.starts_with("DNLOAD 0")).collect();
    assert_eq!(writes, ["DNLOAD 2 len 100", "DNLOAD 2 len 8", "DNLOAD 2 len 2048", "DNLOAD 3 len 952"]);
    let i = dev.log.iter().position(|l| l == "DNLOAD 2 len 2048").unwrap();
    let set_address = dev.log[..i].iter().rev().find(|l| l.starts_with("DNLOAD 0")).unwrap();
    assert_eq!(set_address, "DNLOAD 0 [21, 00, 30, 00, 08]");
    let j = dev.log.iter().position(|l| l == "DNLOAD 3 len 952").unwrap();
    assert!(!dev.log[i..j].iter().any(|l| l.starts_with("DNLOAD 0")), "{:?}", &dev.log[i..j]);
    // bwPollTimeout honoured: the client waited the 7 ms the device asked for.
    assert!(dev.waits.contains(&Duration::from_millis(7)));
    assert_eq!(dev.state, State::IDLE, "ABORTed back to dfuIDLE");
}

#[test]
fn writing_without_erase_fails_like_flash_does() {
    let mut dev = FakeDfu::new();
    dev.flash[0] = 0;
    let mut c = open(dev);
    let e = c.write(BASE, &[1, 2, 3, 4]).unwrap_err();
    // dfuERROR / errWRITE, then the upload before a retry shows why: the chunk is not erased.
    assert_eq!(
        e.to_string(),
        "Download of 4 bytes to 0x08000000: reads back 0x00 at offset 0 where 0x01 was sent, and is not erased (the flash needs an erase before it takes the block again)"
    );
    assert_eq!(c.stats().retries, 1);
}

#[test]
fn upload_uses_block_numbers_and_stops_at_a_short_packet() {
    let mut dev = FakeDfu::new();
    for (i, b) in dev.flash.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let expected = dev.flash[0x100..0x100 + 5000].to_vec();
    let mut c = open(dev);
    c.device_mut().log.clear();
    assert_eq!(c.upload(BASE + 0x100, 5000).unwrap(), expected);
    let uploads: Vec<_> = c.device_mut().log.iter().filter(|l| l.starts_with("UPLOAD")).cloned().collect();
    assert_eq!(uploads, ["UPLOAD 2 len 2048", "UPLOAD 3 len 2048", "UPLOAD 4 len 904"]);

    c.device_mut().upload_limit = 0x100 + 3000;
    let got = c.upload(BASE + 0x100, 5000).unwrap();
    assert_eq!(got.len(), 3000, "short packet ends the upload");
}

#[test]
fn layout_checks_happen_before_any_transfer() {
    let mut c = open(FakeDfu::new());
    c.device_mut().log.clear();
    let e = c.download(BASE + 0xFFFC, &[0; 8]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Download of 8 bytes to 0x0800FFFC: 0x08010000 is not in the memory layout (Internal Flash: 0x08000000 32x2048 rew;)"
    );
    let e = c.upload(0x2000_0000, 4).unwrap_err();
    assert!(matches!(e, DfuError::NotInLayout { .. }), "{e}");
    assert!(c.device_mut().log.is_empty(), "{:?}", c.device_mut().log);
}

#[test]
fn device_errors_are_typed_with_the_operation_and_address() {
    let mut dev = FakeDfu::new();
    dev.reject = Some(BASE + 0x8000);
    let mut c = open(dev);
    let e = c.set_address(BASE + 0x8000).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Set Address Pointer 0x08008000: device reports dfuERROR, errTARGET (address not supported by the device)"
    );
    // The next operation starts from a clean state after clear_errors.
    c.clear_errors().unwrap();
    c.device_mut().protected = true;
    let e = c.erase_page(BASE).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Erase page 0x08000000: gave up after 4 attempts; the last one: Erase page 0x08000000: device reports dfuERROR, errVENDOR (readout protection active?)"
    );
}

#[test]
fn special_commands_must_report_dnbusy_first() {
    let mut dev = FakeDfu::new();
    dev.immediate_idle = true;
    let mut c = open(dev);
    let e = c.mass_erase().unwrap_err();
    assert_eq!(
        e.to_string(),
        "Mass erase: gave up after 4 attempts; the last one: Mass erase: expected dfuDNBUSY, device is in dfuDNLOAD-IDLE (OK)"
    );
}

#[test]
fn early_poll_stalls_are_tolerated_up_to_three() {
    let mut dev = FakeDfu::new();
    dev.stall_polls = 3;
    let mut c = open(dev);
    c.erase_page(BASE + 0x800).unwrap();
    c.device_mut().stall_polls = 4;
    let e = c.erase_page(BASE + 0x800).unwrap_err();
    assert!(matches!(e.last(), DfuError::Transfer { source: TransferError::Stall, .. }), "{e}");
}

#[test]
fn busy_forever_is_bounded_without_real_sleeping() {
    let mut dev = FakeDfu::new();
    dev.busy_polls = u32::MAX;
    dev.poll_ms = 250;
    let mut c = open(dev);
    let e = c.erase_page(BASE).unwrap_err();
    assert_eq!(e.to_string(), "Erase page 0x08000000: still dfuDNBUSY after waiting 10s (limit 10s)");

    let mut dev = FakeDfu::new();
    dev.busy_polls = u32::MAX;
    dev.poll_ms = 0;
    let mut c = open(dev);
    let e = c.erase_page(BASE).unwrap_err();
    assert_eq!(e.to_string(), "Erase page 0x08000000: still dfuDNBUSY after 101 polls with a zero bwPollTimeout");
}

#[test]
fn f405_mass_erase_quirk_waits_the_full_limit() {
    let mut dev = FakeDfu::new();
    dev.poll_ms = 100;
    dev.busy_polls = 0;
    let mut c = open(dev);
    c.device_mut().waits.clear();
    c.mass_erase().unwrap();
    assert_eq!(c.device_mut().waits[0], Duration::from_secs(35));
    assert_eq!(c.device_mut().erased, [0]);
}

#[test]
fn read_unprotect_returns_after_the_first_poll() {
    let mut c = open(FakeDfu::new());
    c.device_mut().log.clear();
    c.read_unprotect().unwrap();
    assert_eq!(c.device_mut().log, ["DNLOAD 0 [92]", "GETSTATUS"]);
}

#[test]
fn leave_to_an_explicit_address_and_to_a_vanished_device() {
    let mut c = open(FakeDfu::new());
    c.device_mut().log.clear();
    assert_eq!(c.leave(Some(BASE)).unwrap(), LeaveOutcome::Manifest(State::MANIFEST));
    let log = &c.device_mut().log;
    assert_eq!(log[0], "DNLOAD 0 [21, 00, 00, 00, 08]");
    assert_eq!(log[log.len() - 2..], ["DNLOAD 2 len 0", "GETSTATUS"]);

    let mut dev = FakeDfu::new();
    dev.disconnect_on_leave = true;
    let mut c = open(dev);
    assert_eq!(c.leave(None).unwrap(), LeaveOutcome::Disconnected);
}

#[test]
fn get_commands_and_transcript() {
    let transcript = Transcript::new();
    let mut c = DfuSeClient::open(FakeDfu::new(), 0, DfuConfig::default(), Some(Box::new(transcript.clone()))).unwrap();
    assert_eq!(c.get_commands().unwrap(), [0x00, 0x21, 0x41, 0x92]);
    let text = transcript.render();
    assert!(text.contains("<< GET_DESCRIPTOR wValue=512 wIndex=0 wLength=9"), "{text}");
    assert!(text.contains("<< DFU_UPLOAD wValue=0 wIndex=0 wLength=2048 [00 21 41 92]"), "{text}");
    assert!(text.contains(">> DFU_ABORT wValue=0 wIndex=0 wLength=0 []"), "{text}");
}

#[test]
fn garbage_status_replies_are_errors() {
    struct Short;
    impl ControlTransfer for Short {
        fn control_in(&mut self, _: Setup, _: Duration) -> Result<Vec<u8>, TransferError> {
            Ok(vec![0, 0])
        }
        fn control_out(&mut self, _: Setup, _: &[u8], _: Duration) -> Result<(), TransferError> {
            Ok(())
        }
    }
    let target = DfuSeTarget {
        interface: 0,
        alt_setting: 0,
        layout: MemoryLayout::parse(LAYOUT).unwrap(),
        transfer_size: 2048,
        functional: descriptors::DfuFunctional {
            attributes: 0x0B,
            detach_timeout_ms: 255,
            transfer_size: 2048,
            dfu_version: 0x011A,
        },
    };
    let e = DfuSeClient::with_target(Short, target, DfuConfig::default(), None).err().unwrap();
    assert_eq!(e.to_string(), "clearing the error state: GETSTATUS returned 2 bytes, expected 6");
}

// ----- recovery on a bad link -----------------------------------------------------------------

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

#[test]
fn stalled_requests_mid_download_are_cleared_and_the_work_done_again() {
    let mut retries = 0;
    // One recovery and upload take about 11 requests: periods above that leave each retry a
    // chance to get through.
    for every in [13, 17, 23, 29] {
        let mut dev = FakeDfu::new();
        dev.stall_class_every = Some(every);
        let mut c = open(dev);
        let data = image(12 * 2048 + 100);
        c.download(BASE + 0x800, &data).unwrap_or_else(|e| panic!("every {every}: {e}"));
        // A stalled GETSTATUS while busy is absorbed by the poll loop (dfu-util's tolerance);
        // a stalled DNLOAD, UPLOAD or ABORT costs a retry.
        retries += c.stats().retries;
        let dev = c.device_mut();
        assert_eq!(dev.flash[0x800..0x800 + data.len()], data[..], "every {every}");
        assert!(dev.log.iter().any(|l| l == "(stalled)"));
    }
    assert!(retries >= 2, "{retries}");
    // Shorter periods hit every attempt: a clean, typed failure, never wrong content.
    for every in [4, 6] {
        let mut dev = FakeDfu::new();
        dev.stall_class_every = Some(every);
        let mut c = open(dev);
        let data = image(5 * 2048);
        match c.download(BASE + 0x800, &data) {
            Ok(()) => assert_eq!(c.device_mut().flash[0x800..0x800 + data.len()], data[..]),
            Err(e) => assert!(matches!(e, DfuError::RetriesExhausted { .. }), "every {every}: {e:?}"),
        }
    }
}

#[test]
fn a_block_that_ends_in_dfu_error_is_cleared_and_written_again() {
    let mut dev = FakeDfu::new();
    dev.write_errors = 1;
    let mut c = open(dev);
    let data = image(2048);
    c.write(BASE, &data).unwrap();
    assert_eq!(c.stats(), DfuStats { retries: 1, confirmed_by_upload: 0 });
    let dev = c.device_mut();
    assert_eq!(dev.flash[..2048], data[..]);
    // CLRSTATUS took the device out of dfuERROR before the block went again.
    let clr = dev.log.iter().position(|l| l == "CLRSTATUS").unwrap();
    assert!(dev.log[clr..].iter().any(|l| l.starts_with("DNLOAD 2")), "{:?}", dev.log);
}

#[test]
fn a_block_programmed_before_its_status_was_lost_is_confirmed_by_upload_not_written_twice() {
    let mut dev = FakeDfu::new();
    dev.lose_status_after_write = 1;
    let mut c = open(dev);
    let data = image(2048);
    c.write(BASE, &data).unwrap();
    assert_eq!(c.stats(), DfuStats { retries: 1, confirmed_by_upload: 1 });
    let dev = c.device_mut();
    assert_eq!(dev.flash[..2048], data[..]);
    assert_eq!(dev.log.iter().filter(|l| l.starts_with("DNLOAD 2")).count(), 1, "{:?}", dev.log);
}

#[test]
fn block_retries_are_bounded_and_end_in_a_typed_error() {
    let mut dev = FakeDfu::new();
    dev.write_errors = u32::MAX;
    let mut c = DfuSeClient::open(dev, 0, DfuConfig { retries: 2, ..DfuConfig::default() }, None).unwrap();
    let e = c.write(BASE, &image(16)).unwrap_err();
    assert!(
        matches!(&e, DfuError::RetriesExhausted { attempts: 3, last, .. }
            if matches!(**last, DfuError::Status { state: State::ERROR, status: Status(6), .. })),
        "{e:?}"
    );
    assert_eq!(c.stats().retries, 2);
    assert_eq!(c.device_mut().log.iter().filter(|l| l.starts_with("DNLOAD 2")).count(), 3);
    assert!(c.device_mut().flash[..16].iter().all(|b| *b == 0xFF));
}

#[test]
fn a_device_busy_forever_ends_at_the_callers_deadline_on_its_clock() {
    use crate::clock::{Clock, Deadline};
    let clock = std::sync::Arc::new(crate::clock::testing::ManualClock::default());
    let mut dev = FakeDfu::new();
    dev.busy_polls = u32::MAX;
    dev.poll_ms = 250;
    dev.clock = Some(clock.clone());
    let mut c = open(dev);
    let dyn_clock: std::sync::Arc<dyn Clock> = clock.clone();
    let start = Clock::now(clock.as_ref());
    c.set_deadline(Some(Deadline::after(&dyn_clock, Duration::from_secs(2))));
    let e = c.erase_page(BASE).unwrap_err();
    assert!(matches!(e, DfuError::DeadlineExceeded { op: Op::ErasePage(BASE) }), "{e:?}");
    assert_eq!(Clock::now(clock.as_ref()) - start, Duration::from_secs(2));
}
