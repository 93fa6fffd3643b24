//! The server against a scripted peer that speaks the guest side of usbredir the way QEMU 7.2 does
//! (hello with 64-bit ids, then configuration and control packets). QEMU itself referees the server
//! in the guest tests (harness/cli/tests/guest_dfu.rs); this pins the packet layouts.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hil_usbredir::proto::{self, ControlHeader, IdWidth, Packet, packet, status};
use hil_usbredir::{ControlOutcome, DeviceIdentity, Interface, RedirDevice, Server};

struct FakeDfu {
    present: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
}

impl RedirDevice for FakeDfu {
    fn identity(&mut self) -> Option<DeviceIdentity> {
        self.present.load(Ordering::SeqCst).then(|| DeviceIdentity {
            vendor_id: 0x0483,
            product_id: 0xDF11,
            device_version_bcd: 0x2200,
            class: 0,
            subclass: 0,
            protocol: 0,
            ep0_max_packet: 64,
            interfaces: vec![Interface { number: 0, class: 0xFE, subclass: 1, protocol: 2 }],
            endpoints: vec![],
        })
    }
    fn control(&mut self, rt: u8, req: u8, value: u16, index: u16, length: u16, data: &[u8]) -> ControlOutcome {
        self.log.lock().unwrap().push(format!("{rt:02x} {req} {value} {index} {length} {data:?}"));
        match (rt, req) {
            (0x80, 6) => ControlOutcome::Done(vec![18, 1, 0, 2]),
            (0x00, 9) => ControlOutcome::Done(vec![]),
            (0x21, 1) => ControlOutcome::Done(vec![]),
            _ => ControlOutcome::Stall,
        }
    }
    fn bus_reset(&mut self) {
        self.log.lock().unwrap().push("reset".into());
    }
}

fn read(s: &mut UnixStream, w: IdWidth) -> Packet {
    proto::read_packet(s, w).unwrap()
}

#[test]
fn hello_connect_configuration_control_and_disconnect() {
    let (mut peer, ours) = UnixStream::pair().unwrap();
    let present = Arc::new(AtomicBool::new(true));
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (present, log, stop) = (present.clone(), log.clone(), stop.clone());
        let read = ours.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut dev = FakeDfu { present, log };
            Server::new(ours).run(read, &mut dev, &|| stop.load(Ordering::SeqCst))
        })
    };
    // Our hello comes first, with the 12-byte header.
    let hello = read(&mut peer, IdWidth::Bits32);
    assert_eq!(hello.kind, packet::HELLO);
    assert_eq!(proto::hello_caps(&hello.body), proto::OUR_CAPS);
    let caps = 1 << proto::CAP_CONNECT_DEVICE_VERSION
        | 1 << proto::CAP_EP_INFO_MAX_PACKET_SIZE
        | 1 << proto::CAP_64BITS_IDS
        | 1 << proto::CAP_32BITS_BULK_LENGTH;
    proto::write_packet(
        &mut peer,
        &Packet { kind: packet::HELLO, id: 0, body: proto::hello("qemu", caps) },
        IdWidth::Bits32,
    )
    .unwrap();
    // From now on both sides use 64-bit ids: interface_info, ep_info, device_connect.
    let w = IdWidth::Bits64;
    let ii = read(&mut peer, w);
    assert_eq!(ii.kind, packet::INTERFACE_INFO);
    assert_eq!(ii.body.len(), 132);
    assert_eq!((ii.body[0], ii.body[4], ii.body[4 + 32], ii.body[4 + 64], ii.body[4 + 96]), (1, 0, 0xFE, 1, 2));
    let ei = read(&mut peer, w);
    assert_eq!(ei.kind, packet::EP_INFO);
    assert_eq!(ei.body.len(), 160, "type, interval, interface, max_packet_size; no max_streams");
    assert_eq!((ei.body[0], ei.body[16], ei.body[1]), (0, 0, 255), "EP0 OUT and IN are control, EP1 OUT unused");
    assert_eq!(u16::from_le_bytes([ei.body[96], ei.body[97]]), 64);
    let dc = read(&mut peer, w);
    assert_eq!(dc.kind, packet::DEVICE_CONNECT);
    assert_eq!(dc.body, vec![1, 0, 0, 0, 0x83, 0x04, 0x11, 0xDF, 0x00, 0x22], "full speed, 0483:df11, bcdDevice 2.00");

    // SET_CONFIGURATION through its own packet, answered with configuration_status and the id.
    proto::write_packet(&mut peer, &Packet { kind: packet::SET_CONFIGURATION, id: 0x1_0000_0001, body: vec![1] }, w)
        .unwrap();
    let cs = read(&mut peer, w);
    assert_eq!(
        (cs.kind, cs.id, cs.body.clone()),
        (packet::CONFIGURATION_STATUS, 0x1_0000_0001, vec![status::SUCCESS, 1])
    );

    // A control IN transfer: the data comes back after the header, truncated to wLength.
    let h =
        ControlHeader { endpoint: 0x80, request: 6, request_type: 0x80, status: 0, value: 0x100, index: 0, length: 2 };
    proto::write_packet(&mut peer, &Packet { kind: packet::CONTROL_PACKET, id: 7, body: h.encode().to_vec() }, w)
        .unwrap();
    let r = read(&mut peer, w);
    let rh = ControlHeader::parse(&r.body, r.id).unwrap();
    assert_eq!((r.id, rh.status, rh.length, &r.body[10..]), (7, status::SUCCESS, 2, &[18u8, 1][..]));
    // An OUT transfer with data; a request the device stalls.
    let h = ControlHeader { endpoint: 0, request: 1, request_type: 0x21, status: 0, value: 0, index: 0, length: 3 };
    let mut body = h.encode().to_vec();
    body.extend_from_slice(&[9, 8, 7]);
    proto::write_packet(&mut peer, &Packet { kind: packet::CONTROL_PACKET, id: 8, body }, w).unwrap();
    let r = read(&mut peer, w);
    assert_eq!(ControlHeader::parse(&r.body, 8).unwrap().length, 3);
    let h =
        ControlHeader { endpoint: 0x80, request: 0x55, request_type: 0xC0, status: 0, value: 0, index: 0, length: 4 };
    proto::write_packet(&mut peer, &Packet { kind: packet::CONTROL_PACKET, id: 9, body: h.encode().to_vec() }, w)
        .unwrap();
    let r = read(&mut peer, w);
    assert_eq!(ControlHeader::parse(&r.body, 9).unwrap().status, status::STALL);
    assert!(log.lock().unwrap().iter().any(|l| l == "21 1 0 0 3 [9, 8, 7]"), "{:?}", log.lock().unwrap());

    // The device leaves the bus: a disconnect follows.
    present.store(false, Ordering::SeqCst);
    let d = read(&mut peer, w);
    assert_eq!(d.kind, packet::DEVICE_DISCONNECT);
    stop.store(true, Ordering::SeqCst);
    drop(peer);
    server.join().unwrap().unwrap();
}
