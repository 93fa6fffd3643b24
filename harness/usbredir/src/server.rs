//! One usbredir connection, served from the device's side.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use crate::proto::{self, ControlHeader, IdWidth, Packet, ProtoError, packet, status};

/// One interface of the active configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    pub number: u8,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
}

/// One endpoint besides endpoint 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub address: u8,
    /// [`proto::ep_type`].
    pub kind: u8,
    pub interval: u8,
    pub interface: u8,
    pub max_packet_size: u16,
}

/// What the peer learns when the device connects (its device descriptor's identity, the
/// interfaces and endpoints of its configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub vendor_id: u16,
    pub product_id: u16,
    pub device_version_bcd: u16,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    /// bMaxPacketSize0.
    pub ep0_max_packet: u16,
    pub interfaces: Vec<Interface>,
    pub endpoints: Vec<Endpoint>,
}

/// How a control transfer ended on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlOutcome {
    /// IN data, or the OUT data accepted (empty).
    Done(Vec<u8>),
    Stall,
    /// The device NAKed until the transfer's time ran out.
    Timeout,
    /// The device is gone.
    Disconnected,
}

/// A USB device as the server needs it.
pub trait RedirDevice {
    /// The device's identity while it is on the bus (its D+ pull-up on), else `None`.
    fn identity(&mut self) -> Option<DeviceIdentity>;
    /// One control transfer: the 8 setup bytes' fields and, for OUT requests, the data stage.
    fn control(
        &mut self,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
        data: &[u8],
    ) -> ControlOutcome;
    /// The host resets the bus.
    fn bus_reset(&mut self);
    /// Data the host sent to a bulk OUT endpoint; how many bytes the device took, or `None` when
    /// it has no such endpoint.
    fn bulk_out(&mut self, _endpoint: u8, _data: &[u8]) -> Option<usize> {
        None
    }
    /// Data for a bulk IN endpoint, at most `max` bytes, if the device has any now (`Some(empty)`
    /// is a zero-length packet; `None`: nothing yet, ask again).
    fn bulk_in(&mut self, _endpoint: u8, _max: usize) -> Option<Vec<u8>> {
        None
    }
}

/// A bulk IN request the peer keeps pending until the device has data (a URB in the guest).
struct PendingIn {
    id: u64,
    endpoint: u8,
    max: usize,
    stream_id: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("usbredir peer closed the connection")]
    Closed,
}

/// Serves one device to one peer (QEMU's usb-redir is the socket client: the device side listens
/// first, QEMU connects at start-up).
pub struct Server<S: Read + Write + Send + 'static> {
    write: S,
    width: IdWidth,
    peer_caps: u32,
    connected: bool,
    /// Presence is polled this often while the peer is quiet.
    poll: Duration,
    pending_in: Vec<PendingIn>,
}

impl<S: Read + Write + Send + 'static> Server<S> {
    /// `read` and `write` are the two halves of one stream (e.g. a cloned UnixStream).
    pub fn new(write: S) -> Self {
        Server {
            write,
            width: IdWidth::Bits32,
            peer_caps: 0,
            connected: false,
            poll: Duration::from_millis(20),
            pending_in: Vec::new(),
        }
    }

    fn send(&mut self, kind: u32, id: u64, body: Vec<u8>) -> Result<(), ServerError> {
        proto::write_packet(&mut self.write, &Packet { kind, id, body }, self.width)?;
        Ok(())
    }

    /// Run until the peer goes away or `stop()` says so: hello, then the device's connects and
    /// disconnects as it comes and goes, and the peer's requests answered by `device`.
    pub fn run(
        mut self,
        read: impl Read + Send + 'static,
        device: &mut dyn RedirDevice,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), ServerError> {
        // Our hello goes first, with the 32-bit header every peer reads before hellos are known.
        self.send(packet::HELLO, 0, proto::hello(concat!("hil ", env!("CARGO_PKG_VERSION")), proto::OUR_CAPS))?;
        let rx = spawn_reader(read);
        loop {
            if stop() {
                return Ok(());
            }
            // Pending bulk IN requests are answered as the device produces data: poll briskly then
            // (a serial bridge's latency), else at the presence rate.
            let wait = if self.pending_in.is_empty() { self.poll } else { Duration::from_millis(1) };
            match rx.recv_timeout(wait) {
                Ok(Ok(p)) => self.handle(p, device)?,
                Ok(Err(ServerError::Closed)) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.peer_caps != 0 || self.width == IdWidth::Bits64 {
                self.follow_presence(device)?;
            }
            self.serve_pending_in(device)?;
        }
    }

    /// Answer pending bulk IN requests that the device has data for, oldest first on each endpoint:
    /// the peer completes an endpoint's transfers in the order it queued them (QEMU asserts it), so
    /// a later request is never answered while an earlier one on the same endpoint still waits.
    fn serve_pending_in(&mut self, device: &mut dyn RedirDevice) -> Result<(), ServerError> {
        let mut waiting: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < self.pending_in.len() {
            let p = &self.pending_in[i];
            if waiting.contains(&p.endpoint) {
                i += 1;
                continue;
            }
            match device.bulk_in(p.endpoint, p.max) {
                Some(data) => {
                    let p = self.pending_in.remove(i);
                    let body = bulk_header(p.endpoint, status::SUCCESS, data.len(), p.stream_id, &data);
                    self.send(packet::BULK_PACKET, p.id, body)?;
                }
                None => {
                    waiting.push(p.endpoint);
                    i += 1;
                }
            }
        }
        Ok(())
    }

    fn follow_presence(&mut self, device: &mut dyn RedirDevice) -> Result<(), ServerError> {
        match (device.identity(), self.connected) {
            (Some(id), false) => {
                tracing::info!(vid = id.vendor_id, pid = id.product_id, "usbredir: device connect");
                self.connect(&id)?;
                self.connected = true;
            }
            (None, true) => {
                tracing::info!("usbredir: device disconnect");
                self.pending_in.clear();
                self.send(packet::DEVICE_DISCONNECT, 0, Vec::new())?;
                self.connected = false;
            }
            _ => {}
        }
        Ok(())
    }

    /// interface_info, ep_info, device_connect (the order usbredirhost uses).
    fn connect(&mut self, id: &DeviceIdentity) -> Result<(), ServerError> {
        let mut ii = vec![0u8; 4 + 4 * 32];
        let n = id.interfaces.len().min(32);
        ii[..4].copy_from_slice(&(n as u32).to_le_bytes());
        for (i, itf) in id.interfaces.iter().take(32).enumerate() {
            ii[4 + i] = itf.number;
            ii[4 + 32 + i] = itf.class;
            ii[4 + 64 + i] = itf.subclass;
            ii[4 + 96 + i] = itf.protocol;
        }
        self.send(packet::INTERFACE_INFO, 0, ii)?;

        // type[32], interval[32], interface[32], max_packet_size[32] (u16; cap 4). No max_streams:
        // that field exists only when both sides have bulk streams (cap 0), which we do not offer.
        let mut kind = [proto::ep_type::INVALID; 32];
        let mut interval = [0u8; 32];
        let mut interface = [0u8; 32];
        let mut mps = [0u16; 32];
        for ep0 in [0x00u8, 0x80] {
            kind[proto::ep_index(ep0)] = proto::ep_type::CONTROL;
            mps[proto::ep_index(ep0)] = id.ep0_max_packet;
        }
        for ep in &id.endpoints {
            let i = proto::ep_index(ep.address);
            kind[i] = ep.kind;
            interval[i] = ep.interval;
            interface[i] = ep.interface;
            mps[i] = ep.max_packet_size;
        }
        let mut ei = Vec::with_capacity(160);
        ei.extend_from_slice(&kind);
        ei.extend_from_slice(&interval);
        ei.extend_from_slice(&interface);
        if self.peer_caps & 1 << proto::CAP_EP_INFO_MAX_PACKET_SIZE != 0 {
            for m in mps {
                ei.extend_from_slice(&m.to_le_bytes());
            }
        }
        self.send(packet::EP_INFO, 0, ei)?;

        let mut dc = vec![proto::SPEED_FULL, id.class, id.subclass, id.protocol];
        dc.extend_from_slice(&id.vendor_id.to_le_bytes());
        dc.extend_from_slice(&id.product_id.to_le_bytes());
        if self.peer_caps & 1 << proto::CAP_CONNECT_DEVICE_VERSION != 0 {
            dc.extend_from_slice(&id.device_version_bcd.to_le_bytes());
        }
        self.send(packet::DEVICE_CONNECT, 0, dc)
    }

    fn handle(&mut self, p: Packet, device: &mut dyn RedirDevice) -> Result<(), ServerError> {
        match p.kind {
            packet::HELLO => {
                self.peer_caps = proto::hello_caps(&p.body);
                if self.peer_caps & 1 << proto::CAP_64BITS_IDS != 0 {
                    self.width = IdWidth::Bits64;
                }
                tracing::debug!(caps = format_args!("{:#x}", self.peer_caps), "usbredir: peer hello");
                Ok(())
            }
            packet::RESET => {
                device.bus_reset();
                Ok(())
            }
            packet::SET_CONFIGURATION => {
                let cfg = *p.body.first().ok_or(ProtoError::Short {
                    what: "set_configuration",
                    id: p.id,
                    got: 0,
                    need: 1,
                })?;
                let st = status_of(&device.control(0x00, 9, u16::from(cfg), 0, 0, &[]));
                self.send(packet::CONFIGURATION_STATUS, p.id, vec![st, cfg])
            }
            packet::GET_CONFIGURATION => {
                let (st, cfg) = match device.control(0x80, 8, 0, 0, 1, &[]) {
                    ControlOutcome::Done(d) => (status::SUCCESS, d.first().copied().unwrap_or(0)),
                    other => (status_of(&other), 0),
                };
                self.send(packet::CONFIGURATION_STATUS, p.id, vec![st, cfg])
            }
            packet::SET_ALT_SETTING => {
                let (itf, alt) = match p.body.get(..2) {
                    Some(b) => (b[0], b[1]),
                    None => {
                        return Err(ProtoError::Short {
                            what: "set_alt_setting",
                            id: p.id,
                            got: p.body.len(),
                            need: 2,
                        }
                        .into());
                    }
                };
                let st = status_of(&device.control(0x01, 11, u16::from(alt), u16::from(itf), 0, &[]));
                self.send(packet::ALT_SETTING_STATUS, p.id, vec![st, itf, alt])
            }
            packet::GET_ALT_SETTING => {
                let itf = p.body.first().copied().unwrap_or(0);
                let (st, alt) = match device.control(0x81, 10, 0, u16::from(itf), 1, &[]) {
                    ControlOutcome::Done(d) => (status::SUCCESS, d.first().copied().unwrap_or(0)),
                    other => (status_of(&other), 0),
                };
                self.send(packet::ALT_SETTING_STATUS, p.id, vec![st, itf, alt])
            }
            packet::CONTROL_PACKET => {
                let h = ControlHeader::parse(&p.body, p.id)?;
                let out_data = &p.body[ControlHeader::LEN..];
                tracing::trace!(id = p.id, rt = h.request_type, req = h.request, len = h.length, "control in");
                let outcome = if h.request_type & 0x80 != 0 {
                    device.control(h.request_type, h.request, h.value, h.index, h.length, &[])
                } else {
                    device.control(h.request_type, h.request, h.value, h.index, h.length, out_data)
                };
                let (st, data) = match outcome {
                    ControlOutcome::Done(d) if h.request_type & 0x80 != 0 => {
                        let mut d = d;
                        d.truncate(usize::from(h.length));
                        (status::SUCCESS, d)
                    }
                    ControlOutcome::Done(_) => (status::SUCCESS, Vec::new()),
                    other => (status_of(&other), Vec::new()),
                };
                let done = if h.request_type & 0x80 != 0 { data.len() } else { out_data.len() };
                let reply = ControlHeader { status: st, length: done as u16, ..h };
                let mut body = reply.encode().to_vec();
                body.extend_from_slice(&data);
                tracing::trace!(id = p.id, "control out");
                self.send(packet::CONTROL_PACKET, p.id, body)
            }
            packet::START_INTERRUPT_RECEIVING | packet::STOP_INTERRUPT_RECEIVING => {
                // Interrupt IN endpoints (a CDC notification endpoint) are accepted and stay quiet:
                // the device has no notification to send.
                let ep = p.body.first().copied().unwrap_or(0);
                self.send(packet::INTERRUPT_RECEIVING_STATUS, p.id, vec![status::SUCCESS, ep])
            }
            packet::BULK_PACKET => {
                let b = p.body.get(..10).ok_or(ProtoError::Short {
                    what: "bulk",
                    id: p.id,
                    got: p.body.len(),
                    need: 10,
                })?;
                let endpoint = b[0];
                let length =
                    usize::from(u16::from_le_bytes([b[2], b[3]])) | usize::from(u16::from_le_bytes([b[8], b[9]])) << 16;
                let stream_id = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                if endpoint & 0x80 != 0 {
                    self.pending_in.push(PendingIn { id: p.id, endpoint, max: length, stream_id });
                    self.serve_pending_in(device)
                } else {
                    let data = &p.body[10..];
                    let (st, took) = match device.bulk_out(endpoint, data) {
                        Some(n) => (status::SUCCESS, n),
                        None => (status::INVAL, 0),
                    };
                    self.send(packet::BULK_PACKET, p.id, bulk_header(endpoint, st, took, stream_id, &[]))
                }
            }
            packet::CANCEL_DATA_PACKET => {
                // A pending bulk IN the peer gives up on is answered as cancelled.
                if let Some(i) = self.pending_in.iter().position(|q| q.id == p.id) {
                    let q = self.pending_in.remove(i);
                    self.send(
                        packet::BULK_PACKET,
                        q.id,
                        bulk_header(q.endpoint, status::CANCELLED, 0, q.stream_id, &[]),
                    )?;
                }
                Ok(())
            }
            packet::INTERRUPT_PACKET | packet::ISO_PACKET => {
                // No such endpoints on this device: answer with the same header and INVAL.
                let mut body = p.body.clone();
                body.truncate(4);
                if let Some(s) = body.get_mut(1) {
                    *s = status::INVAL;
                }
                self.send(p.kind, p.id, body)
            }
            // Filters and disconnect acks need no answer.
            packet::FILTER_REJECT | packet::FILTER_FILTER | packet::DEVICE_DISCONNECT_ACK => Ok(()),
            other => {
                tracing::debug!(kind = other, id = p.id, "usbredir: ignoring packet");
                Ok(())
            }
        }
    }
}

/// The bulk_packet header (endpoint, status, length low 16, stream id, length high 16 with cap 6)
/// and the data.
fn bulk_header(endpoint: u8, st: u8, length: usize, stream_id: u32, data: &[u8]) -> Vec<u8> {
    let mut b = vec![endpoint, st];
    b.extend_from_slice(&((length & 0xFFFF) as u16).to_le_bytes());
    b.extend_from_slice(&stream_id.to_le_bytes());
    b.extend_from_slice(&((length >> 16) as u16).to_le_bytes());
    b.extend_from_slice(data);
    b
}

fn status_of(o: &ControlOutcome) -> u8 {
    match o {
        ControlOutcome::Done(_) => status::SUCCESS,
        ControlOutcome::Stall => status::STALL,
        ControlOutcome::Timeout => status::TIMEOUT,
        ControlOutcome::Disconnected => status::IOERROR,
    }
}

/// Reads packets on a thread of its own (the peer's hello with a 32-bit id, then the width both
/// hellos agree on), so that the server can follow the device while the peer is quiet.
fn spawn_reader(mut read: impl Read + Send + 'static) -> Receiver<Result<Packet, ServerError>> {
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("usbredir reader".into())
        .spawn(move || {
            let hello = match proto::read_packet(&mut read, IdWidth::Bits32) {
                Ok(p) if p.kind == packet::HELLO => p,
                Ok(p) => {
                    let _ = tx.send(Err(ProtoError::NoHello(p.kind).into()));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(closed_or(e)));
                    return;
                }
            };
            let width = if proto::hello_caps(&hello.body) & 1 << proto::CAP_64BITS_IDS != 0
                && proto::OUR_CAPS & 1 << proto::CAP_64BITS_IDS != 0
            {
                IdWidth::Bits64
            } else {
                IdWidth::Bits32
            };
            if tx.send(Ok(hello)).is_err() {
                return;
            }
            loop {
                let r = proto::read_packet(&mut read, width).map_err(closed_or);
                let end = r.is_err();
                if tx.send(r).is_err() || end {
                    return;
                }
            }
        })
        .expect("spawning the usbredir reader thread");
    rx
}

fn closed_or(e: ProtoError) -> ServerError {
    match e {
        ProtoError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => ServerError::Closed,
        other => ServerError::Proto(other),
    }
}
