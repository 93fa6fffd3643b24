//! usbredir 0.7 wire format. All integers are little-endian. A packet is the main header
//! `{ type: u32, length: u32, id: u32 | u64 }` (the id is 64 bits once both peers' hellos carry
//! capability [`CAP_64BITS_IDS`]), then `length` bytes: the type's own header and any data.

use std::io::{self, Read, Write};

/// Packet types (usbredirproto.h, enum of control and data packets).
pub mod packet {
    pub const HELLO: u32 = 0;
    pub const DEVICE_CONNECT: u32 = 1;
    pub const DEVICE_DISCONNECT: u32 = 2;
    pub const RESET: u32 = 3;
    pub const INTERFACE_INFO: u32 = 4;
    pub const EP_INFO: u32 = 5;
    pub const SET_CONFIGURATION: u32 = 6;
    pub const GET_CONFIGURATION: u32 = 7;
    pub const CONFIGURATION_STATUS: u32 = 8;
    pub const SET_ALT_SETTING: u32 = 9;
    pub const GET_ALT_SETTING: u32 = 10;
    pub const ALT_SETTING_STATUS: u32 = 11;
    pub const START_INTERRUPT_RECEIVING: u32 = 15;
    pub const STOP_INTERRUPT_RECEIVING: u32 = 16;
    pub const INTERRUPT_RECEIVING_STATUS: u32 = 17;
    pub const CANCEL_DATA_PACKET: u32 = 21;
    pub const FILTER_REJECT: u32 = 22;
    pub const FILTER_FILTER: u32 = 23;
    pub const DEVICE_DISCONNECT_ACK: u32 = 24;
    pub const CONTROL_PACKET: u32 = 100;
    pub const BULK_PACKET: u32 = 101;
    pub const ISO_PACKET: u32 = 102;
    pub const INTERRUPT_PACKET: u32 = 103;
}

/// Transfer status values.
pub mod status {
    pub const SUCCESS: u8 = 0;
    pub const CANCELLED: u8 = 1;
    pub const INVAL: u8 = 2;
    pub const IOERROR: u8 = 3;
    pub const STALL: u8 = 4;
    pub const TIMEOUT: u8 = 5;
}

/// Capability bits of the hello packet.
pub const CAP_CONNECT_DEVICE_VERSION: u32 = 1;
pub const CAP_EP_INFO_MAX_PACKET_SIZE: u32 = 4;
pub const CAP_64BITS_IDS: u32 = 5;
pub const CAP_32BITS_BULK_LENGTH: u32 = 6;

/// What we advertise. QEMU's xHCI refuses a device whose host side lacks 4-6 ("usb-redir-host
/// lacks capabilities needed for use with XHCI", measured with QEMU 7.2).
pub const OUR_CAPS: u32 = 1 << CAP_CONNECT_DEVICE_VERSION
    | 1 << CAP_EP_INFO_MAX_PACKET_SIZE
    | 1 << CAP_64BITS_IDS
    | 1 << CAP_32BITS_BULK_LENGTH;

/// Endpoint types, as in USB (usbredirproto.h: "these 4 match the usb spec").
pub mod ep_type {
    pub const CONTROL: u8 = 0;
    pub const BULK: u8 = 2;
    pub const INTERRUPT: u8 = 3;
    pub const INVALID: u8 = 255;
}

/// Speeds of device_connect.
pub const SPEED_FULL: u8 = 1;

/// Index of an endpoint address in the 32-entry ep_info arrays: OUT endpoints 0-15, IN 16-31.
pub fn ep_index(address: u8) -> usize {
    (((address & 0x80) >> 3) | (address & 0x0F)) as usize
}

/// A packet as read from or written to the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub kind: u32,
    pub id: u64,
    /// The type's header and data, `length` bytes.
    pub body: Vec<u8>,
}

/// Largest body accepted from the peer: a control transfer carries at most 64 KiB of data, bulk
/// packets for the debug adapter far less; anything bigger is a broken stream, not a packet.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("usbredir socket: {0}")]
    Io(#[from] io::Error),
    #[error("usbredir packet type {kind} (id {id}) announces {length} bytes, more than the {MAX_BODY} accepted")]
    TooLong { kind: u32, id: u64, length: u32 },
    #[error("usbredir {what} packet (id {id}) is {got} bytes, needs {need}")]
    Short { what: &'static str, id: u64, got: usize, need: usize },
    #[error("usbredir peer's first packet is type {0}, not hello")]
    NoHello(u32),
}

/// The main header's id width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdWidth {
    Bits32,
    Bits64,
}

impl IdWidth {
    pub fn header_len(self) -> usize {
        match self {
            IdWidth::Bits32 => 12,
            IdWidth::Bits64 => 16,
        }
    }
}

pub fn read_packet(r: &mut impl Read, width: IdWidth) -> Result<Packet, ProtoError> {
    let mut h = [0u8; 16];
    r.read_exact(&mut h[..width.header_len()])?;
    let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let length = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let id = match width {
        IdWidth::Bits32 => u64::from(u32::from_le_bytes([h[8], h[9], h[10], h[11]])),
        IdWidth::Bits64 => u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
    };
    if length as usize > MAX_BODY {
        return Err(ProtoError::TooLong { kind, id, length });
    }
    let mut body = vec![0u8; length as usize];
    r.read_exact(&mut body)?;
    Ok(Packet { kind, id, body })
}

pub fn encode(p: &Packet, width: IdWidth) -> Vec<u8> {
    let mut out = Vec::with_capacity(width.header_len() + p.body.len());
    out.extend_from_slice(&p.kind.to_le_bytes());
    out.extend_from_slice(&(p.body.len() as u32).to_le_bytes());
    match width {
        IdWidth::Bits32 => out.extend_from_slice(&(p.id as u32).to_le_bytes()),
        IdWidth::Bits64 => out.extend_from_slice(&p.id.to_le_bytes()),
    }
    out.extend_from_slice(&p.body);
    out
}

pub fn write_packet(w: &mut impl Write, p: &Packet, width: IdWidth) -> Result<(), ProtoError> {
    w.write_all(&encode(p, width))?;
    w.flush()?;
    Ok(())
}

/// The hello body: a 64-byte NUL-padded version string, then capability words.
pub fn hello(version: &str, caps: u32) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    let v = version.as_bytes();
    let n = v.len().min(63);
    b[..n].copy_from_slice(&v[..n]);
    b.extend_from_slice(&caps.to_le_bytes());
    b
}

/// The peer's capability word from its hello body (0 when it sent none).
pub fn hello_caps(body: &[u8]) -> u32 {
    body.get(64..68).map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// The control_packet header: endpoint, request, requesttype, status, value, index, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlHeader {
    pub endpoint: u8,
    pub request: u8,
    pub request_type: u8,
    pub status: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl ControlHeader {
    pub const LEN: usize = 10;

    pub fn parse(body: &[u8], id: u64) -> Result<ControlHeader, ProtoError> {
        let b =
            body.get(..Self::LEN).ok_or(ProtoError::Short { what: "control", id, got: body.len(), need: Self::LEN })?;
        Ok(ControlHeader {
            endpoint: b[0],
            request: b[1],
            request_type: b[2],
            status: b[3],
            value: u16::from_le_bytes([b[4], b[5]]),
            index: u16::from_le_bytes([b[6], b[7]]),
            length: u16::from_le_bytes([b[8], b[9]]),
        })
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let v = self.value.to_le_bytes();
        let i = self.index.to_le_bytes();
        let l = self.length.to_le_bytes();
        [self.endpoint, self.request, self.request_type, self.status, v[0], v[1], i[0], i[1], l[0], l[1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_in_both_id_widths() {
        for width in [IdWidth::Bits32, IdWidth::Bits64] {
            let p = Packet { kind: packet::CONTROL_PACKET, id: 7, body: vec![1, 2, 3] };
            let bytes = encode(&p, width);
            assert_eq!(bytes.len(), width.header_len() + 3);
            assert_eq!(read_packet(&mut bytes.as_slice(), width).unwrap(), p);
        }
    }

    #[test]
    fn hello_carries_version_and_caps() {
        let b = hello("hil", OUR_CAPS);
        assert_eq!(b.len(), 68);
        assert_eq!(&b[..3], b"hil");
        assert_eq!(hello_caps(&b), OUR_CAPS);
        assert_eq!(OUR_CAPS, 0b111_0010, "connect_device_version, ep_info_max_packet_size, 64-bit ids, 32-bit bulk");
    }

    #[test]
    fn endpoint_indices_put_in_endpoints_in_the_upper_half() {
        assert_eq!(ep_index(0x00), 0);
        assert_eq!(ep_index(0x80), 16);
        assert_eq!(ep_index(0x81), 17);
        assert_eq!(ep_index(0x02), 2);
    }

    #[test]
    fn oversized_and_short_packets_are_errors_not_panics() {
        let mut bytes = encode(&Packet { kind: 100, id: 1, body: vec![] }, IdWidth::Bits32);
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_packet(&mut bytes.as_slice(), IdWidth::Bits32), Err(ProtoError::TooLong { .. })));
        assert!(matches!(ControlHeader::parse(&[1, 2], 9), Err(ProtoError::Short { need: 10, .. })));
        let truncated = &encode(&Packet { kind: 0, id: 1, body: vec![0; 10] }, IdWidth::Bits32)[..15];
        assert!(matches!(read_packet(&mut &truncated[..], IdWidth::Bits32), Err(ProtoError::Io(_))));
    }
}
