//! The debug unit's side of CMSIS-DAP (Arm's CMSIS-DAP specification, "Commands"): the commands a
//! host's CMSIS-DAP driver - probe-rs's, in the lab path tests - sends in v2 bulk packets,
//! executed on the same SW-DP / AHB-AP model the probe-rs plugin drives ([`crate::dap`]), reaching
//! the virtual board through the same link. The USB device that carries the packets is the debug
//! adapter of `hil sim serve --usbredir-adapter`.
//!
//! What is modelled: DAP_Info, DAP_HostStatus, DAP_Connect (SWD), DAP_Disconnect,
//! DAP_TransferConfigure, DAP_Transfer (with value match), DAP_TransferBlock, DAP_WriteABORT,
//! DAP_Delay, DAP_ResetTarget (no device-specific sequence), DAP_SWJ_Pins (nRESET),
//! DAP_SWJ_Clock, DAP_SWJ_Sequence, DAP_SWD_Configure. JTAG and SWO commands answer DAP_ERROR
//! (the virtual board has a SW-DP only).

use hil_virtual_board::Board;

use crate::dap::{Ack, Dap, DapConfig, Port};
use crate::driver::BoardLink;
use crate::error::VirtualProbeError;

/// Largest command or response: one full-speed bulk packet.
pub const PACKET_SIZE: u16 = 64;
const DAP_OK: u8 = 0x00;
const DAP_ERROR: u8 = 0xFF;

/// One CMSIS-DAP debug unit wired to a virtual board's SWD pins and NRST.
pub struct CmsisDap {
    link: BoardLink,
    dap: Dap,
    serial: String,
    /// The mask of value-match reads (DAP_Transfer with the match-mask bit).
    match_mask: u32,
}

impl CmsisDap {
    pub fn new(board: Board, serial: &str) -> Result<CmsisDap, VirtualProbeError> {
        let chip = hil_chips::Chip::by_name(board.chip()).ok_or_else(|| VirtualProbeError::UnknownChip {
            board: board.name().to_string(),
            chip: board.chip().to_string(),
            known: hil_chips::names().join(", "),
        })?;
        Ok(CmsisDap {
            link: BoardLink { board, in_reset: Default::default() },
            dap: Dap::new(DapConfig::for_chip(chip)),
            serial: serial.to_string(),
            match_mask: u32::MAX,
        })
    }

    /// Execute one command packet; the response packet.
    pub fn execute(&mut self, req: &[u8]) -> Vec<u8> {
        let Some(&cmd) = req.first() else { return vec![DAP_ERROR] };
        let arg = &req[1..];
        match cmd {
            0x00 => self.info(arg.first().copied().unwrap_or(0)),
            0x01 | 0x03 | 0x04 | 0x09 | 0x11 | 0x13 => vec![cmd, DAP_OK],
            // DAP_Connect: default (0) or SWD (1) connects SWD; JTAG (2) fails with 0.
            0x02 => vec![cmd, if matches!(arg.first(), None | Some(0) | Some(1)) { 1 } else { 0 }],
            0x05 => self.transfer(arg),
            0x06 => self.transfer_block(arg),
            0x08 => {
                let v = word(arg, 1).unwrap_or(0);
                let ok = matches!(self.dap.write(&mut self.link, Port::Dp, 0x0, v), Ok(Ack::Ok(_)));
                vec![cmd, if ok { DAP_OK } else { DAP_ERROR }]
            }
            0x0A => vec![cmd, DAP_OK, 0],
            0x10 => self.swj_pins(arg),
            0x12 => {
                let bits = match arg.first() {
                    Some(0) => 256,
                    Some(&n) => usize::from(n),
                    None => 0,
                };
                let data = &arg[1.min(arg.len())..];
                let mut left = bits;
                for chunk in data.chunks(8) {
                    let n = left.min(64);
                    let mut v = 0u64;
                    for (i, b) in chunk.iter().enumerate() {
                        v |= u64::from(*b) << (8 * i);
                    }
                    self.dap.swj_sequence(n as u8, v);
                    left -= n;
                    if left == 0 {
                        break;
                    }
                }
                vec![cmd, DAP_OK]
            }
            0x07 => Vec::new(), // DAP_TransferAbort has no response
            _ => vec![DAP_ERROR],
        }
    }

    fn info(&self, id: u8) -> Vec<u8> {
        let text = |s: &str| {
            let mut v = vec![0x00, (s.len() + 1) as u8];
            v.extend_from_slice(s.as_bytes());
            v.push(0);
            v
        };
        match id {
            0x01 => text("hil"),
            0x02 => text("hil virtual debug adapter CMSIS-DAP"),
            0x03 => text(&self.serial),
            0x04 => text("2.1.0"),
            0x09 => text("0.1.0"),
            // Capabilities: SWD only.
            0xF0 => vec![0x00, 1, 0x01],
            0xFE => vec![0x00, 1, 1],
            0xFF => {
                let [lo, hi] = PACKET_SIZE.to_le_bytes();
                vec![0x00, 2, lo, hi]
            }
            _ => vec![0x00, 0],
        }
    }

    fn ack_code(ack: &Result<Ack, VirtualProbeError>) -> u8 {
        match ack {
            Ok(Ack::Ok(_)) => 1,
            Ok(Ack::Fault) => 4,
            Ok(Ack::NoAck) | Err(_) => 7,
        }
    }

    /// DAP_Transfer: [index, count, {request, [data]}...] -> [count done, last response, reads...].
    fn transfer(&mut self, arg: &[u8]) -> Vec<u8> {
        let count = usize::from(arg.get(1).copied().unwrap_or(0));
        let mut at = 2;
        let mut done = 0u8;
        let mut response = 1u8;
        let mut data = Vec::new();
        for _ in 0..count {
            let Some(&req) = arg.get(at) else {
                response = 1 << 3; // protocol error: the request list is short
                break;
            };
            at += 1;
            let port = if req & 1 != 0 { Port::Ap } else { Port::Dp };
            let a = req & 0x0C;
            let read = req & 2 != 0;
            let ack = if read && req & 0x10 != 0 {
                // Read with value match: compare under the match mask.
                let Some(want) = word(arg, at) else {
                    response = 1 << 3;
                    break;
                };
                at += 4;
                let r = self.dap.read(&mut self.link, port, a);
                if let Ok(Ack::Ok(v)) = r
                    && v & self.match_mask != want & self.match_mask
                {
                    response = 1 | 1 << 4;
                    break;
                }
                r
            } else if read {
                let r = self.dap.read(&mut self.link, port, a);
                if let Ok(Ack::Ok(v)) = r {
                    data.extend_from_slice(&v.to_le_bytes());
                }
                r
            } else if req & 0x20 != 0 {
                let Some(mask) = word(arg, at) else {
                    response = 1 << 3;
                    break;
                };
                at += 4;
                self.match_mask = mask;
                Ok(Ack::Ok(0))
            } else {
                let Some(v) = word(arg, at) else {
                    response = 1 << 3;
                    break;
                };
                at += 4;
                self.dap.write(&mut self.link, port, a, v)
            };
            response = Self::ack_code(&ack);
            if response != 1 {
                break;
            }
            done += 1;
        }
        let mut out = vec![0x05, done, response];
        out.extend_from_slice(&data);
        out
    }

    /// DAP_TransferBlock: [index, count u16, request, data...] -> [count u16, response, reads...].
    fn transfer_block(&mut self, arg: &[u8]) -> Vec<u8> {
        let count =
            usize::from(u16::from_le_bytes([arg.get(1).copied().unwrap_or(0), arg.get(2).copied().unwrap_or(0)]));
        let req = arg.get(3).copied().unwrap_or(0);
        let port = if req & 1 != 0 { Port::Ap } else { Port::Dp };
        let a = req & 0x0C;
        let (ack, data) = if req & 2 != 0 {
            let mut values = vec![0u32; count];
            let ack = self.dap.read_block(&mut self.link, port, a, &mut values);
            let bytes = if matches!(ack, Ok(Ack::Ok(_))) {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            } else {
                Vec::new()
            };
            (ack, bytes)
        } else {
            let values: Vec<u32> = (0..count).filter_map(|i| word(arg, 4 + 4 * i)).collect();
            if values.len() != count {
                return vec![0x06, 0, 0, 1 << 3];
            }
            (self.dap.write_block(&mut self.link, port, a, &values), Vec::new())
        };
        let code = Self::ack_code(&ack);
        let done = if code == 1 { count as u16 } else { 0 };
        let mut out = vec![0x06];
        out.extend_from_slice(&done.to_le_bytes());
        out.push(code);
        out.extend_from_slice(&data);
        out
    }

    /// DAP_SWJ_Pins: [output, select, wait u32] -> [pin input]; nRESET (bit 7) drives NRST.
    fn swj_pins(&mut self, arg: &[u8]) -> Vec<u8> {
        const NRESET: u8 = 1 << 7;
        let (out, select) = (arg.first().copied().unwrap_or(0), arg.get(1).copied().unwrap_or(0));
        if select & NRESET != 0 {
            let _ = self.link.set_nrst_pin(out & NRESET == 0);
        }
        let high = !self.link.nrst_pin_low().unwrap_or(false);
        vec![0x10, 1 << 1 | (high as u8) << 7]
    }
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
