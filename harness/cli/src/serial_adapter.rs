//! The virtual board's debug adapter, served over usbredir (`hil sim serve --usbredir-adapter
//! PATH`), like the ST-LINK of a NUCLEO: a CMSIS-DAP v2 probe (vendor interface, bulk OUT/IN,
//! "CMSIS-DAP" in its interface string, [`hil_virtual_probe::cmsis_dap`] executing the commands on
//! the board's SW-DP model) and a CDC-ACM virtual COM port bridged to the ROM's USART. In a Linux
//! guest they are a probe that probe-rs's own CMSIS-DAP driver opens and /dev/ttyACM0: the code a
//! bench runs - USB probe, line settings with real parity, DTR/RTS - runs against the virtual board.
//!
//! - SET_LINE_CODING (CDC PSTN 6.3.10) sets the host's side of the wire: its baud rate reaches the
//!   USART model (a mismatch garbles frames there), and its parity is compared with the device's
//!   USART framing bit by bit (a host at 8N1 sends its stop bit where an 8E1 device samples parity).
//!   Device to host, bytes pass as they are: Linux's cdc-acm driver only counts the framing and
//!   parity errors a VCP reports in SERIAL_STATE (CDC PSTN 6.5.4), and what an ST-LINK's VCP does
//!   with a frame it received with an error is not documented (UNVERIFIED, not modelled).
//! - SET_CONTROL_LINE_STATE (6.3.12) drives BOOT0 and NRST as a USB-UART adapter wired for
//!   stm32flash's `-i` sequences does: DTR to BOOT0, RTS to NRST, both asserted low (an asserted
//!   DTR# pin is low), unless the board entry says otherwise.

use std::time::Duration;

use hil_usbredir::{ControlOutcome, DeviceIdentity, Endpoint, Interface, RedirDevice};
use hil_virtual_board::{Board, RxFrame, UartPort};

/// pid.codes' test IDs (see hil_virtual_probe::VENDOR_ID): never a product's.
const VID: u16 = 0x1209;
const PID: u16 = 0x0001;
const EP_NOTIFY: u8 = 0x83;
const EP_OUT: u8 = 0x02;
const EP_IN: u8 = 0x81;
const EP_DAP_OUT: u8 = 0x04;
const EP_DAP_IN: u8 = 0x85;
/// Vendor request of the adapter: switch the target's power (wValue 1 on, 0 off).
pub const POWER_REQUEST: u8 = 0x01;

/// How a modem line is wired to a target pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wiring {
    /// The pin's level while the line is asserted (`false`: low, as on an adapter's DTR#/RTS#).
    pub asserted_high: bool,
}

pub struct SerialAdapter {
    board: Board,
    uart: UartPort,
    usart: String,
    serial: String,
    /// dwDTERate, bCharFormat, bParityType, bDataBits.
    line_coding: [u8; 7],
    configuration: u8,
    boot0: Wiring,
    nrst: Wiring,
    dap: hil_virtual_probe::cmsis_dap::CmsisDap,
    /// Responses to the CMSIS-DAP commands, in order.
    dap_responses: std::collections::VecDeque<Vec<u8>>,
}

impl SerialAdapter {
    pub fn new(board: Board, usart: &str, serial: &str) -> Result<Self, hil_virtual_board::BoardError> {
        let uart = board.uart(usart)?;
        let dap = hil_virtual_probe::cmsis_dap::CmsisDap::new(board.clone(), serial).map_err(|e| {
            hil_virtual_board::BoardError::Other { board: board.name().to_string(), message: e.to_string() }
        })?;
        let mut line_coding = [0u8; 7];
        line_coding[..4].copy_from_slice(&115_200u32.to_le_bytes());
        line_coding[6] = 8;
        Ok(SerialAdapter {
            board,
            uart,
            usart: usart.to_string(),
            serial: serial.to_string(),
            line_coding,
            configuration: 0,
            boot0: Wiring { asserted_high: false },
            nrst: Wiring { asserted_high: false },
            dap,
            dap_responses: Default::default(),
        })
    }

    fn device_descriptor(&self) -> Vec<u8> {
        let mut d = vec![18, 1, 0x00, 0x02, 0xEF, 0x02, 0x01, 64];
        d.extend_from_slice(&VID.to_le_bytes());
        d.extend_from_slice(&PID.to_le_bytes());
        d.extend_from_slice(&[0x00, 0x01, 1, 2, 3, 1]);
        d
    }

    /// One configuration: an interface association over the CDC communication interface (with its
    /// notification endpoint) and the data interface (bulk OUT / IN). CDC 1.2 and PSTN 1.2.
    fn config_descriptor(&self) -> Vec<u8> {
        let mut c = vec![9, 2, 0, 0, 3, 1, 0, 0x80, 50];
        c.extend_from_slice(&[8, 0x0B, 0, 2, 0x02, 0x02, 0x01, 0]);
        c.extend_from_slice(&[9, 4, 0, 0, 1, 0x02, 0x02, 0x01, 4]);
        c.extend_from_slice(&[5, 0x24, 0x00, 0x10, 0x01]);
        c.extend_from_slice(&[5, 0x24, 0x01, 0x00, 0x01]);
        c.extend_from_slice(&[4, 0x24, 0x02, 0x02]);
        c.extend_from_slice(&[5, 0x24, 0x06, 0x00, 0x01]);
        c.extend_from_slice(&[7, 5, EP_NOTIFY, 0x03, 8, 0, 16]);
        c.extend_from_slice(&[9, 4, 1, 0, 2, 0x0A, 0x00, 0x00, 0]);
        c.extend_from_slice(&[7, 5, EP_OUT, 0x02, 64, 0, 0]);
        c.extend_from_slice(&[7, 5, EP_IN, 0x02, 64, 0, 0]);
        // CMSIS-DAP v2: vendor class, bulk OUT then bulk IN (the order the specification fixes).
        c.extend_from_slice(&[9, 4, 2, 0, 2, 0xFF, 0x00, 0x00, 5]);
        c.extend_from_slice(&[7, 5, EP_DAP_OUT, 0x02, 64, 0, 0]);
        c.extend_from_slice(&[7, 5, EP_DAP_IN, 0x02, 64, 0, 0]);
        let total = c.len() as u16;
        c[2..4].copy_from_slice(&total.to_le_bytes());
        c
    }

    fn string(&self, index: u8) -> Option<Vec<u8>> {
        let text = match index {
            0 => return Some(vec![4, 3, 0x09, 0x04]),
            1 => "hil".to_string(),
            2 => "hil virtual debug adapter (CMSIS-DAP, VCP)".to_string(),
            3 => self.serial.clone(),
            4 => format!("VCP to {}", self.usart),
            5 => "hil CMSIS-DAP".to_string(),
            _ => return None,
        };
        let mut s = vec![0, 3];
        for u in text.encode_utf16() {
            s.extend_from_slice(&u.to_le_bytes());
        }
        s[0] = s.len() as u8;
        Some(s)
    }

    fn set_lines(&mut self, dtr: bool, rts: bool) {
        let boot0_high = dtr == self.boot0.asserted_high;
        let nrst_high = rts == self.nrst.asserted_high;
        let _ = self.board.set_boot0(boot0_high).wait();
        let _ = self.board.set_nrst(!nrst_high).wait();
    }

    /// The host's parity from the line coding: `None`, or `Some(odd)`.
    fn host_parity(&self) -> Option<bool> {
        match self.line_coding[5] {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// The device's parity from its USART_CR1 (PCE bit 10, PS bit 9; RM0444 33.8.1).
    fn device_parity(&self) -> Option<bool> {
        let snap = self.board.snapshot().wait().ok()?;
        let cr1 = snap.usarts.iter().find(|u| u.name == self.usart)?.cr1;
        (cr1 & 1 << 10 != 0).then_some(cr1 & 1 << 9 != 0)
    }

    /// Host bytes as the device's receiver samples them: when the host frames without parity and
    /// the device expects it, the device reads the host's stop bit (1) as the parity bit; when the
    /// host adds a parity bit the device does not expect, the device's stop-bit sample falls on it.
    fn frames(&self, data: &[u8]) -> Vec<RxFrame> {
        let host = self.host_parity();
        let device = self.device_parity();
        data.iter()
            .map(|&b| {
                let ones = b.count_ones() % 2 == 1;
                let parity_bit = |odd: bool| if odd { !ones } else { ones };
                let mut f = RxFrame::byte(b);
                match (host, device) {
                    (None, Some(odd)) => f.parity_error = !parity_bit(odd),
                    (Some(odd), None) => f.framing_error = !parity_bit(odd),
                    (Some(h), Some(d)) if h != d => f.parity_error = true,
                    _ => {}
                }
                f
            })
            .collect()
    }
}

impl RedirDevice for SerialAdapter {
    /// An adapter powered from the host's USB is always there.
    fn identity(&mut self) -> Option<DeviceIdentity> {
        Some(DeviceIdentity {
            vendor_id: VID,
            product_id: PID,
            device_version_bcd: 0x0100,
            class: 0xEF,
            subclass: 2,
            protocol: 1,
            ep0_max_packet: 64,
            interfaces: vec![
                Interface { number: 0, class: 0x02, subclass: 0x02, protocol: 0x01 },
                Interface { number: 1, class: 0x0A, subclass: 0, protocol: 0 },
                Interface { number: 2, class: 0xFF, subclass: 0, protocol: 0 },
            ],
            endpoints: vec![
                Endpoint { address: EP_NOTIFY, kind: 3, interval: 16, interface: 0, max_packet_size: 8 },
                Endpoint { address: EP_OUT, kind: 2, interval: 0, interface: 1, max_packet_size: 64 },
                Endpoint { address: EP_IN, kind: 2, interval: 0, interface: 1, max_packet_size: 64 },
                Endpoint { address: EP_DAP_OUT, kind: 2, interval: 0, interface: 2, max_packet_size: 64 },
                Endpoint { address: EP_DAP_IN, kind: 2, interval: 0, interface: 2, max_packet_size: 64 },
            ],
        })
    }

    fn control(
        &mut self,
        request_type: u8,
        request: u8,
        value: u16,
        _index: u16,
        length: u16,
        data: &[u8],
    ) -> ControlOutcome {
        let reply = |mut d: Vec<u8>| {
            d.truncate(usize::from(length));
            ControlOutcome::Done(d)
        };
        match (request_type, request) {
            (0x80, 6) => {
                let d = match (value >> 8) as u8 {
                    1 => Some(self.device_descriptor()),
                    2 => Some(self.config_descriptor()),
                    3 => self.string(value as u8),
                    _ => None,
                };
                d.map_or(ControlOutcome::Stall, reply)
            }
            (0x00, 9) => {
                self.configuration = value as u8;
                ControlOutcome::Done(Vec::new())
            }
            (0x80, 8) => reply(vec![self.configuration]),
            (0x80, 0) | (0x81, 0) | (0x82, 0) => reply(vec![0, 0]),
            (0x01, 11) | (0x02, 1) | (0x00, 1) | (0x00, 3) => ControlOutcome::Done(Vec::new()),
            (0x81, 10) => reply(vec![0]),
            // CDC PSTN class requests to the communication interface.
            (0x21, 0x20) if data.len() >= 7 => {
                self.line_coding.copy_from_slice(&data[..7]);
                let baud = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                let _ = self.uart.set_host_baud(Some(baud)).wait();
                ControlOutcome::Done(Vec::new())
            }
            (0xA1, 0x21) => reply(self.line_coding.to_vec()),
            (0x21, 0x22) => {
                self.set_lines(value & 1 != 0, value & 2 != 0);
                ControlOutcome::Done(Vec::new())
            }
            (0x21, 0x23) => ControlOutcome::Done(Vec::new()),
            // The harness's bench power switch (what uhubctl or a relay is on a bench): a vendor
            // request to the device, wValue 1 = target power on, 0 = off. `hil sim power` sends it.
            (0x40, POWER_REQUEST) => {
                let r = if value != 0 { self.board.power_on().wait() } else { self.board.power_off().wait() };
                if r.is_ok() { ControlOutcome::Done(Vec::new()) } else { ControlOutcome::Stall }
            }
            _ => ControlOutcome::Stall,
        }
    }

    fn bus_reset(&mut self) {
        self.configuration = 0;
    }

    fn bulk_out(&mut self, endpoint: u8, data: &[u8]) -> Option<usize> {
        if endpoint == EP_DAP_OUT {
            let response = self.dap.execute(data);
            if !response.is_empty() {
                self.dap_responses.push_back(response);
            }
            return Some(data.len());
        }
        if endpoint != EP_OUT {
            return None;
        }
        let frames = self.frames(data);
        self.uart.inject(frames).wait().ok()?;
        Some(data.len())
    }

    fn bulk_in(&mut self, endpoint: u8, max: usize) -> Option<Vec<u8>> {
        if endpoint == EP_DAP_IN {
            let mut r = self.dap_responses.pop_front()?;
            r.truncate(max);
            return Some(r);
        }
        if endpoint != EP_IN {
            return None;
        }
        match self.uart.read(max.clamp(1, 64), Duration::ZERO).wait() {
            Ok(d) if !d.is_empty() => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Line coding against the ROM's 8E1 USART, without a guest: what the device's receiver makes
    //! of the host's frames when the two framings differ.

    use super::*;
    use hil_virtual_board::{BoardConfig, RamInit, StRom};

    const ACK: u8 = 0x79;

    /// SET_LINE_CODING (CDC PSTN 6.3.10): 115200 Bd, 1 stop bit, `parity` (0 none, 1 odd, 2 even),
    /// 8 data bits.
    fn set_line_coding(a: &mut SerialAdapter, parity: u8) {
        let mut coding = 115_200u32.to_le_bytes().to_vec();
        coding.extend_from_slice(&[0, parity, 8]);
        assert!(matches!(a.control(0x21, 0x20, 0, 0, 7, &coding), ControlOutcome::Done(_)));
    }

    /// An erased G071 in its ROM, the adapter on USART2, the host's line coding `parity`.
    fn rom_with_host_parity(name: &str, parity: u8) -> (Board, SerialAdapter) {
        let board = Board::start(BoardConfig { name: name.into(), ram_init: RamInit::Zero, ..Default::default() })
            .expect("board");
        let mut adapter = SerialAdapter::new(board.clone(), "USART2", "test").expect("adapter");
        set_line_coding(&mut adapter, parity);
        (board, adapter)
    }

    /// Send through the VCP's bulk OUT endpoint and read the ROM's reply on the wire.
    fn exchange(b: &Board, a: &mut SerialAdapter, bytes: &[u8], reply_len: usize) -> Vec<u8> {
        assert_eq!(a.bulk_out(EP_OUT, bytes), Some(bytes.len()));
        let uart = b.uart("USART2").expect("USART2");
        let mut got = Vec::new();
        while got.len() < reply_len {
            let chunk = uart.read(reply_len - got.len(), Duration::from_millis(20)).wait().expect("read");
            if chunk.is_empty() {
                break;
            }
            got.extend(chunk);
        }
        got
    }

    fn rom_line_errors(b: &Board) -> u64 {
        b.exec("ROM line errors", |m| {
            Ok(m.rom().as_any().downcast_mut::<StRom>().map(|r| r.line_errors()).unwrap_or(u64::MAX))
        })
        .wait()
        .expect("line errors")
    }

    #[test]
    fn a_host_at_8n1_sends_its_stop_bit_where_the_8e1_rom_samples_parity() {
        let (b, mut a) = rom_with_host_parity("adapter-8n1", 0);
        // 0x7F has seven ones: its even-parity bit is 1, which the host's stop bit happens to be.
        assert_eq!(exchange(&b, &mut a, &[0x7F], 1), [ACK]);
        assert_eq!(rom_line_errors(&b), 0);
        // Get (0x00 0xFF): both bytes have an even number of ones, their parity bit is 0, and the
        // ROM samples the host's stop bit (1) there: two parity errors, which the ROM ignores
        // ([OBL] OPENBL_USART_ReadByte), so the command still runs.
        let reply = exchange(&b, &mut a, &[0x00, 0xFF], 2);
        assert_eq!(reply.first(), Some(&ACK), "{reply:02x?}");
        assert_eq!(rom_line_errors(&b), 2);
        b.shutdown().expect("shutdown");
    }

    #[test]
    fn a_host_at_8e1_frames_as_the_rom_does_and_a_host_at_8o1_gets_every_byte_flagged() {
        let (b, mut a) = rom_with_host_parity("adapter-8e1", 2);
        assert_eq!(exchange(&b, &mut a, &[0x7F], 1), [ACK]);
        assert_eq!(exchange(&b, &mut a, &[0x00, 0xFF], 1), [ACK]);
        assert_eq!(rom_line_errors(&b), 0, "matching framing: no error");
        b.shutdown().expect("shutdown");

        let (b, mut a) = rom_with_host_parity("adapter-8o1", 1);
        assert_eq!(exchange(&b, &mut a, &[0x7F], 1), [ACK], "the ROM ignores PE, even on the sync byte");
        let _ = exchange(&b, &mut a, &[0x00, 0xFF], 1);
        assert_eq!(rom_line_errors(&b), 3, "odd against even: every byte's parity is wrong");
        b.shutdown().expect("shutdown");
    }

    #[test]
    fn the_vcp_line_coding_is_what_the_host_set() {
        let (b, mut a) = rom_with_host_parity("adapter-coding", 2);
        let ControlOutcome::Done(coding) = a.control(0xA1, 0x21, 0, 0, 7, &[]) else {
            panic!("GET_LINE_CODING stalled")
        };
        assert_eq!(coding, [0x00, 0xC2, 0x01, 0x00, 0, 2, 8]);
        b.shutdown().expect("shutdown");
    }
}
