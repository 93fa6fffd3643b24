//! A scripted AN3155 host for the board-level ROM tests: raw bytes on the board's USART, written
//! here from AN3155 (ACK 0x79, NACK 0x1F; command + complement; address + XOR; N-1 lengths). Test
//! code only: the rig's client (hil-bootloader-host) is not used (DESIGN.md independence rule).
#![allow(dead_code)]

use std::time::Duration;

use hil_virtual_board::{Board, RxFrame, UartPort};

pub const ACK: u8 = 0x79;
pub const NACK: u8 = 0x1F;
pub const T: Duration = Duration::from_secs(20);

pub struct Host {
    pub uart: UartPort,
    pub timeout: Duration,
}

fn xor(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |x, b| x ^ b)
}

impl Host {
    pub fn new(board: &Board, usart: &str) -> Host {
        Host { uart: board.uart(usart).unwrap(), timeout: Duration::from_secs(5) }
    }

    pub fn send(&self, bytes: &[u8]) {
        self.uart.write(bytes).wait().unwrap();
    }

    /// Exactly `n` bytes, or whatever came before the timeout.
    pub fn recv(&self, n: usize) -> Vec<u8> {
        let end = std::time::Instant::now() + self.timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            got.extend(self.uart.read(n - got.len(), left).wait().unwrap());
        }
        got
    }

    /// Nothing arrives within `d`.
    pub fn silent_for(&self, d: Duration) -> bool {
        self.uart.read(64, d).wait().unwrap().is_empty()
    }

    pub fn byte(&self) -> Option<u8> {
        self.recv(1).first().copied()
    }

    pub fn sync(&self) -> Option<u8> {
        self.send(&[0x7F]);
        self.byte()
    }

    /// Command byte + complement; the first answer byte.
    pub fn command(&self, code: u8) -> Option<u8> {
        self.send(&[code, !code]);
        self.byte()
    }

    pub fn address(&self, a: u32) -> Option<u8> {
        let b = a.to_be_bytes();
        self.send(&[b[0], b[1], b[2], b[3], xor(&b)]);
        self.byte()
    }

    pub fn get_id(&self) -> Option<u16> {
        if self.command(0x02)? != ACK {
            return None;
        }
        let r = self.recv(4);
        (r.len() == 4 && r[0] == 1 && r[3] == ACK).then(|| u16::from_be_bytes([r[1], r[2]]))
    }

    pub fn read(&self, address: u32, len: usize) -> Result<Vec<u8>, &'static str> {
        if self.command(0x11) != Some(ACK) {
            return Err("read command refused");
        }
        if self.address(address) != Some(ACK) {
            return Err("read address refused");
        }
        let n = (len - 1) as u8;
        self.send(&[n, !n]);
        if self.byte() != Some(ACK) {
            return Err("read length refused");
        }
        Ok(self.recv(len))
    }

    pub fn write(&self, address: u32, data: &[u8]) -> Result<(), &'static str> {
        if self.command(0x31) != Some(ACK) {
            return Err("write command refused");
        }
        if self.address(address) != Some(ACK) {
            return Err("write address refused");
        }
        let mut frame = vec![(data.len() - 1) as u8];
        frame.extend_from_slice(data);
        frame.push(xor(&frame));
        self.send(&frame);
        match self.byte() {
            Some(ACK) => Ok(()),
            Some(_) => Err("write data refused"),
            None => Err("no answer to the write data"),
        }
    }

    /// Extended erase of pages (or a special code when `pages` is empty and `special` given).
    pub fn erase_pages(&self, pages: &[u16]) -> Option<u8> {
        if self.command(0x44)? != ACK {
            return Some(NACK);
        }
        let mut frame = ((pages.len() - 1) as u16).to_be_bytes().to_vec();
        for p in pages {
            frame.extend_from_slice(&p.to_be_bytes());
        }
        frame.push(xor(&frame));
        self.send(&frame);
        self.byte()
    }

    pub fn mass_erase(&self) -> Option<u8> {
        if self.command(0x44)? != ACK {
            return Some(NACK);
        }
        self.send(&[0xFF, 0xFF, 0x00]);
        self.byte()
    }

    pub fn go(&self, address: u32) -> Option<u8> {
        if self.command(0x21)? != ACK {
            return Some(NACK);
        }
        self.address(address)
    }

    /// Send `bytes` with the parity bit of frame `bad` inverted (in process only).
    pub fn send_with_parity_error(&self, bytes: &[u8], bad: usize) {
        let frames = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| RxFrame { byte: *b, parity_error: i == bad, ..Default::default() })
            .collect();
        self.uart.inject(frames).wait().unwrap();
    }
}
