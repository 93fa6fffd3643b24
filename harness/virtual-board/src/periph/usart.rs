//! USART of the STM32G0 (RM0444 chapter 33) in its non-FIFO mode, as the fixtures and the ROM
//! bootloader use it.
//!
//! Modelled: CR1 (UE, RE, TE, RXNEIE, TCIE, TXEIE, IDLEIE, PEIE, PCE/PS parity, M1:M0 word length,
//! OVER8), CR2 STOP bits, ABREN and ABRMOD (auto baud rate detection), CR3 (EIE, OVRDIS), BRR and PRESC
//! (baud rate, RM0444 33.5.7), ISR flags (PE, FE, NE, ORE, IDLE, RXNE, TC, TXE, BUSY, ABRF,
//! TEACK, REACK), ICR, RQR (ABRRQ, RXFRQ, TXFRQ), RDR/TDR with the parity bit in the MSB
//! (RM0444 33.5.8), frame timing on virtual time from the kernel clock (RCC_CCIPR), the
//! interrupt line (RM0444 33.7 Table "USART interrupt requests"), clock gating and RCC reset.
//!
//! Host side: the board delivers each host byte as one frame after a frame time at the host's
//! baud rate (`None` = "the host matches the device's rate"); a frame arriving while the
//! receiver is off is lost; a frame arriving while RXNE is still set is lost with ORE (unless
//! OVRDIS). A baud rate mismatch beyond the receiver tolerance (RM0444 33.5.9: 3.75 % for 16x
//! oversampling) delivers the frame with FE set and its bits garbled.
//!
//! Not modelled: FIFO mode (FIFOEN is stored; the USART keeps single-buffer behaviour), LIN,
//! IrDA, smartcard, synchronous mode, hardware flow control, DMA requests, wake-up from Stop.

use std::collections::VecDeque;

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, VirtualDuration};

use super::{gate_open, merge_lane, read_lane};
use crate::shared::{Gate, RxFate, Shared, UartOut};

pub const CR1: u32 = 0x00;
pub const CR2: u32 = 0x04;
pub const CR3: u32 = 0x08;
pub const BRR: u32 = 0x0C;
pub const GTPR: u32 = 0x10;
pub const RTOR: u32 = 0x14;
pub const RQR: u32 = 0x18;
pub const ISR: u32 = 0x1C;
pub const ICR: u32 = 0x20;
pub const RDR: u32 = 0x24;
pub const TDR: u32 = 0x28;
pub const PRESC: u32 = 0x2C;

pub const CR1_UE: u32 = 1 << 0;
pub const CR1_RE: u32 = 1 << 2;
pub const CR1_TE: u32 = 1 << 3;
pub const CR1_IDLEIE: u32 = 1 << 4;
pub const CR1_RXNEIE: u32 = 1 << 5;
pub const CR1_TCIE: u32 = 1 << 6;
pub const CR1_TXEIE: u32 = 1 << 7;
pub const CR1_PEIE: u32 = 1 << 8;
pub const CR1_PS: u32 = 1 << 9;
pub const CR1_PCE: u32 = 1 << 10;
pub const CR1_M0: u32 = 1 << 12;
pub const CR1_OVER8: u32 = 1 << 15;
pub const CR1_M1: u32 = 1 << 28;
pub const CR2_ABREN: u32 = 1 << 20;
/// ABRMOD[1:0] (RM0444 33.8.2): 00 start bit, 01 falling edge, 10 0x7F frame, 11 0x55 frame.
pub const CR2_ABRMOD: u32 = 3 << 21;
pub const CR3_EIE: u32 = 1 << 0;
pub const CR3_OVRDIS: u32 = 1 << 12;

pub const ISR_PE: u32 = 1 << 0;
pub const ISR_FE: u32 = 1 << 1;
pub const ISR_NE: u32 = 1 << 2;
pub const ISR_ORE: u32 = 1 << 3;
pub const ISR_IDLE: u32 = 1 << 4;
pub const ISR_RXNE: u32 = 1 << 5;
pub const ISR_TC: u32 = 1 << 6;
pub const ISR_TXE: u32 = 1 << 7;
pub const ISR_ABRE: u32 = 1 << 14;
pub const ISR_ABRF: u32 = 1 << 15;
pub const ICR_PECF: u32 = 1 << 0;
pub const ICR_FECF: u32 = 1 << 1;
pub const ICR_NECF: u32 = 1 << 2;
pub const ICR_ORECF: u32 = 1 << 3;
pub const RQR_ABRRQ: u32 = 1 << 0;
pub const ISR_BUSY: u32 = 1 << 16;
pub const ISR_TEACK: u32 = 1 << 21;
pub const ISR_REACK: u32 = 1 << 22;
/// Reset value with FIFO disabled: TXE and TC set (RM0444 33.8.8).
const ISR_RESET: u32 = ISR_TXE | ISR_TC;

const TAG_TX_DONE: u32 = 1;
const TAG_RX_DONE: u32 = 2;
const TAG_IDLE: u32 = 3;

/// USART prescaler table (RM0444 33.8.12 USART_PRESC).
const PRESC_DIV: [u32; 12] = [1, 2, 4, 6, 8, 10, 12, 16, 32, 64, 128, 256];

/// One frame as the host side puts it on the RX wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RxFrame {
    pub byte: u8,
    /// Send the parity bit inverted (in-process injection only: PTYs carry no parity).
    pub parity_error: bool,
    /// Stop bit sampled low.
    pub framing_error: bool,
    /// Noise detected on the frame.
    pub noise: bool,
}

impl RxFrame {
    pub fn byte(byte: u8) -> Self {
        RxFrame { byte, ..Default::default() }
    }
}

/// What the board needs to know about a USART instance.
#[derive(Clone, Debug)]
pub struct UsartParams {
    pub name: String,
    /// Index in the board's USART list (tags its output).
    pub index: usize,
    pub irq: Option<u32>,
    pub gate: Option<Gate>,
    pub reset: Option<Gate>,
    /// RCC_CCIPR field position of its kernel clock selection.
    pub kernel_select: Option<u8>,
}

pub struct Usart {
    p: UsartParams,
    cr1: u32,
    cr2: u32,
    cr3: u32,
    brr: u32,
    gtpr: u32,
    rtor: u32,
    presc: u32,
    isr: u32,
    rdr: u16,
    tdr: Option<u16>,
    shifting: Option<u16>,
    rx_wire: VecDeque<RxFrame>,
    rx_active: bool,
    /// The host's baud rate (`None`: matches the device).
    host_baud: Option<u32>,
    seen_reset: u32,
    /// Frames lost because the receiver was off.
    pub lost_while_off: u64,
    pub overruns: u64,
}

impl Usart {
    pub fn new(p: UsartParams) -> Self {
        Usart {
            p,
            cr1: 0,
            cr2: 0,
            cr3: 0,
            brr: 0,
            gtpr: 0,
            rtor: 0,
            presc: 0,
            isr: ISR_RESET,
            rdr: 0,
            tdr: None,
            shifting: None,
            rx_wire: VecDeque::new(),
            rx_active: false,
            host_baud: None,
            seen_reset: 0,
            lost_while_off: 0,
            overruns: 0,
        }
    }

    pub fn params(&self) -> &UsartParams {
        &self.p
    }
    pub fn isr(&self) -> u32 {
        self.isr_value()
    }
    pub fn cr1(&self) -> u32 {
        self.cr1
    }
    pub fn brr(&self) -> u32 {
        self.brr
    }
    /// Frames waiting on the wire (not yet received).
    pub fn rx_pending(&self) -> usize {
        self.rx_wire.len()
    }
    pub fn set_host_baud(&mut self, baud: Option<u32>) {
        self.host_baud = baud.filter(|b| *b > 0);
    }

    fn isr_value(&self) -> u32 {
        let mut v = self.isr;
        if self.cr1 & CR1_UE != 0 {
            if self.cr1 & CR1_TE != 0 {
                v |= ISR_TEACK;
            }
            if self.cr1 & CR1_RE != 0 {
                v |= ISR_REACK;
            }
        }
        if self.rx_active {
            v |= ISR_BUSY;
        }
        v
    }

    fn enabled(&self, bit: u32) -> bool {
        self.cr1 & CR1_UE != 0 && self.cr1 & bit != 0
    }

    /// Word length in bits (M1:M0 = 00: 8, 01: 9, 10: 7; RM0444 33.5.3).
    fn word_bits(&self) -> u32 {
        match (self.cr1 & CR1_M1 != 0, self.cr1 & CR1_M0 != 0) {
            (false, false) => 8,
            (false, true) => 9,
            (true, _) => 7,
        }
    }

    fn data_bits(&self) -> u32 {
        self.word_bits() - (self.cr1 & CR1_PCE != 0) as u32
    }

    /// Stop bits in half bits (CR2.STOP: 00 1, 01 0.5, 10 2, 11 1.5).
    fn stop_half_bits(&self) -> u64 {
        match (self.cr2 >> 12) & 3 {
            0 => 2,
            1 => 1,
            2 => 4,
            _ => 3,
        }
    }

    /// The device's baud rate (RM0444 33.5.7): usart_ker_ck_pres / USARTDIV, 16x or 8x
    /// oversampling. `None` when the kernel clock does not run or BRR is not valid.
    pub fn device_baud(&self, shared: &Shared) -> Option<u32> {
        let presc = PRESC_DIV.get((self.presc & 0xF) as usize).copied().unwrap_or(256);
        let ker = shared.rcc.usart_kernel_hz(self.p.kernel_select) / presc;
        let div = if self.cr1 & CR1_OVER8 != 0 {
            ((self.brr & 0xFFF0) | ((self.brr & 7) << 1)) / 2
        } else {
            self.brr & 0xFFFF
        };
        if ker == 0 || div < 16 && self.cr1 & CR1_OVER8 == 0 || div < 8 {
            return None;
        }
        Some(ker / div)
    }

    fn frame_time(&self, baud: u32) -> VirtualDuration {
        let half_bits = 2 * (1 + self.word_bits() as u64) + self.stop_half_bits();
        VirtualDuration::from_ps(half_bits * 1_000_000_000_000 / (2 * baud.max(1) as u64))
    }

    fn tx_frame_time(&self, shared: &Shared) -> VirtualDuration {
        // An invalid BRR still shifts (garbage on the real wire); 115200 Bd keeps time moving.
        self.frame_time(self.device_baud(shared).unwrap_or(115_200))
    }

    fn rx_frame_time(&self, shared: &Shared) -> VirtualDuration {
        self.frame_time(self.host_baud.or(self.device_baud(shared)).unwrap_or(115_200))
    }

    fn update_irq(&self, cx: &mut DeviceCx<'_, Shared>) {
        let Some(irq) = self.p.irq else { return };
        let isr = self.isr;
        let (c1, c3) = (self.cr1, self.cr3);
        let high = c1 & CR1_UE != 0
            && ((c1 & CR1_TXEIE != 0 && isr & ISR_TXE != 0)
                || (c1 & CR1_TCIE != 0 && isr & ISR_TC != 0)
                || (c1 & CR1_RXNEIE != 0 && isr & (ISR_RXNE | ISR_ORE) != 0)
                || (c1 & CR1_IDLEIE != 0 && isr & ISR_IDLE != 0)
                || (c1 & CR1_PEIE != 0 && isr & ISR_PE != 0)
                || (c3 & CR3_EIE != 0 && isr & (ISR_FE | ISR_NE | ISR_ORE) != 0));
        cx.set_irq(irq, high);
    }

    /// RCC reset pulse seen since the last access: back to reset values.
    fn check_rcc_reset(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let n = cx.shared.rcc.reset_pulses(self.p.reset);
        if n != self.seen_reset {
            self.seen_reset = n;
            self.reset_registers(cx);
        }
    }

    fn reset_registers(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        cx.cancel(TAG_TX_DONE);
        cx.cancel(TAG_RX_DONE);
        cx.cancel(TAG_IDLE);
        self.reinit(cx);
        self.update_irq(cx);
    }

    /// Registers to reset values; the wire (host side), the host's rate and counters stay.
    fn reinit(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let wire = std::mem::take(&mut self.rx_wire);
        let (host, lost, ovr) = (self.host_baud, self.lost_while_off, self.overruns);
        *self = Usart::new(self.p.clone());
        self.seen_reset = cx.shared.rcc.reset_pulses(self.p.reset);
        (self.rx_wire, self.host_baud, self.lost_while_off, self.overruns) = (wire, host, lost, ovr);
        if !self.rx_wire.is_empty() {
            // Frames keep arriving from the host while the USART is reset.
            self.rx_active = true;
            let t = self.rx_frame_time(cx.shared);
            cx.schedule_in(t, TAG_RX_DONE);
        }
    }

    fn start_tx(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        if self.shifting.is_none()
            && self.enabled(CR1_TE)
            && let Some(w) = self.tdr.take()
        {
            self.shifting = Some(w);
            self.isr |= ISR_TXE;
            self.isr &= !ISR_TC;
            let t = self.tx_frame_time(cx.shared);
            cx.schedule_in(t, TAG_TX_DONE);
        }
    }

    fn tx_done(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        if let Some(w) = self.shifting.take() {
            let mask = (1u16 << self.data_bits()) - 1;
            let byte = (w & mask) as u8;
            // Noise on the TX wire: the frame is sent (TC as usual) but the host gets it dropped
            // or with a bit flipped.
            match cx.shared.faults.tx_fate(self.p.index, &self.p.name) {
                RxFate::Deliver => cx.shared.uart_out.push(UartOut { usart: self.p.index, byte, at: cx.now }),
                RxFate::Drop => cx.shared.counters.uart_tx_dropped += 1,
                RxFate::Corrupt(flip) => {
                    cx.shared.counters.uart_tx_corrupted += 1;
                    cx.shared.uart_out.push(UartOut { usart: self.p.index, byte: byte ^ flip, at: cx.now });
                }
            }
        }
        if self.tdr.is_some() {
            self.start_tx(cx);
        } else {
            self.isr |= ISR_TC;
        }
        self.update_irq(cx);
    }

    /// The host put frames on the RX wire (board side).
    pub fn host_send(&mut self, frames: &[RxFrame], cx: &mut DeviceCx<'_, Shared>) {
        self.check_rcc_reset(cx);
        self.rx_wire.extend(frames.iter().copied());
        if !self.rx_active && !self.rx_wire.is_empty() {
            self.rx_active = true;
            cx.cancel(TAG_IDLE);
            let t = self.rx_frame_time(cx.shared);
            cx.schedule_in(t, TAG_RX_DONE);
        }
    }

    fn rx_done(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let Some(mut f) = self.rx_wire.pop_front() else {
            self.rx_active = false;
            return;
        };
        cx.shared.counters.uart_rx_frames += 1;
        let fate = cx.shared.faults.rx_fate(self.p.index, &self.p.name);
        let receiving = self.enabled(CR1_RE) && cx.shared.rcc.clocked(self.p.gate);
        match fate {
            RxFate::Drop => cx.shared.counters.uart_rx_dropped += 1,
            _ if !receiving => {
                self.lost_while_off += 1;
                cx.shared.counters.uart_rx_dropped += 1;
            }
            RxFate::Corrupt(mask) => {
                f.byte ^= mask;
                self.receive(f, cx);
            }
            RxFate::Deliver => self.receive(f, cx),
        }
        if self.rx_wire.is_empty() {
            self.rx_active = false;
            if receiving {
                // IDLE: the line stays idle for a frame after the last one (RM0444 33.8.8).
                let t = self.rx_frame_time(cx.shared);
                cx.schedule_in(t, TAG_IDLE);
            }
        } else {
            let t = self.rx_frame_time(cx.shared);
            cx.schedule_in(t, TAG_RX_DONE);
        }
        self.update_irq(cx);
    }

    fn receive(&mut self, f: RxFrame, cx: &mut DeviceCx<'_, Shared>) {
        // Auto baud rate detection (RM0444 33.5.10): the host's rate is measured on this frame.
        if self.cr2 & CR2_ABREN != 0 && self.isr & ISR_ABRF == 0 {
            self.isr |= ISR_ABRF;
            // ABRMOD = 10 / 11 measure on a 0x7F / 0x55 frame: another character gives a wrong
            // measurement, flagged with ABRE and the rate left alone (UNVERIFIED detail of RM0444
            // 33.5.10, which describes the modes by the bit edges they time).
            let expected = match self.cr2 & CR2_ABRMOD {
                m if m == 2 << 21 => Some(0x7F),
                m if m == 3 << 21 => Some(0x55),
                _ => None,
            };
            if expected.is_some_and(|e| e != f.byte) {
                self.isr |= ISR_ABRE;
            } else {
                // An in-process host that never set its rate is measured as 115200 Bd.
                let hb = self.host_baud.unwrap_or(115_200);
                let ker = cx.shared.rcc.usart_kernel_hz(self.p.kernel_select);
                let div = ker / hb.max(1);
                if div >= 16 {
                    self.brr = div;
                } else {
                    self.isr |= ISR_ABRE;
                }
            }
        }
        let data_bits = self.data_bits();
        let mask = (1u32 << data_bits) - 1;
        let mut data = f.byte as u32 & mask;
        let mut fe = f.framing_error;
        // Baud mismatch beyond the receiver tolerance garbles the frame (RM0444 33.5.9).
        if let (Some(hb), Some(db)) = (self.host_baud, self.device_baud(cx.shared)) {
            let dev = (hb as f64 - db as f64).abs() / db as f64;
            if dev > 0.0375 {
                fe = true;
                data = (data.rotate_left(1) ^ 0x55) & mask;
            }
        }
        let mut word = data;
        let mut pe = false;
        if self.cr1 & CR1_PCE != 0 {
            // Even parity (PS=0): the parity bit makes the number of ones even (RM0444 33.5.8).
            let odd = self.cr1 & CR1_PS != 0;
            let mut p = (data.count_ones() & 1 == 1) ^ odd;
            if f.parity_error {
                p = !p;
            }
            let ones = data.count_ones() + p as u32;
            pe = (ones & 1 == 1) != odd;
            word |= (p as u32) << data_bits;
        }
        if self.isr & ISR_RXNE != 0 && self.cr3 & CR3_OVRDIS == 0 {
            // Overrun: the new frame is lost (RM0444 33.5.8).
            self.isr |= ISR_ORE;
            self.overruns += 1;
            return;
        }
        self.rdr = word as u16;
        self.isr |= ISR_RXNE;
        if pe {
            self.isr |= ISR_PE;
        }
        if fe {
            self.isr |= ISR_FE;
        }
        if f.noise {
            self.isr |= ISR_NE;
        }
    }
}

impl super::HostUart for Usart {
    fn host_send(&mut self, frames: &[RxFrame], cx: &mut DeviceCx<'_, Shared>) {
        Usart::host_send(self, frames, cx)
    }
    fn set_host_baud(&mut self, baud: Option<u32>) {
        Usart::set_host_baud(self, baud)
    }
    fn host_baud(&self) -> Option<u32> {
        self.host_baud
    }
    fn rx_pending(&self) -> usize {
        Usart::rx_pending(self)
    }
    fn view(&self, shared: &Shared) -> super::UsartView {
        super::UsartView {
            cr1: self.cr1,
            brr: self.brr,
            isr: self.isr_value(),
            baud: self.device_baud(shared),
            lost_while_off: self.lost_while_off,
            overruns: self.overruns,
        }
    }
}

impl Device<Shared> for Usart {
    fn name(&self) -> &str {
        &self.p.name
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        if !gate_open(cx.shared, self.p.gate)? {
            return Ok(0);
        }
        self.check_rcc_reset(cx);
        let v = match offset & !3 {
            CR1 => self.cr1,
            CR2 => self.cr2,
            CR3 => self.cr3,
            BRR => self.brr,
            GTPR => self.gtpr,
            RTOR => self.rtor,
            ISR => self.isr_value(),
            RDR => {
                // Reading RDR clears RXNE (RM0444 33.8.10).
                self.isr &= !ISR_RXNE;
                self.update_irq(cx);
                self.rdr as u32
            }
            TDR => self.tdr.unwrap_or(0) as u32,
            PRESC => self.presc,
            _ => 0,
        };
        Ok(read_lane(v, offset, size))
    }

    fn write(
        &mut self,
        offset: u32,
        size: Size,
        value: u32,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<(), BusFaultKind> {
        if !gate_open(cx.shared, self.p.gate)? {
            return Ok(());
        }
        self.check_rcc_reset(cx);
        let reg = offset & !3;
        match reg {
            CR1 => {
                let old = self.cr1;
                self.cr1 = merge_lane(self.cr1, offset, size, value);
                if old & CR1_UE != 0 && self.cr1 & CR1_UE == 0 {
                    // "When UE is cleared ... all current operations are discarded ... all the
                    // USART_ISR status flags are reset" (RM0444 33.8.1).
                    cx.cancel(TAG_TX_DONE);
                    cx.cancel(TAG_IDLE);
                    self.isr = ISR_RESET;
                    self.tdr = None;
                    self.shifting = None;
                }
                self.start_tx(cx);
            }
            CR2 => self.cr2 = merge_lane(self.cr2, offset, size, value),
            CR3 => self.cr3 = merge_lane(self.cr3, offset, size, value),
            BRR => self.brr = merge_lane(self.brr, offset, size, value) & 0xFFFF,
            GTPR => self.gtpr = merge_lane(self.gtpr, offset, size, value) & 0xFFFF,
            RTOR => self.rtor = merge_lane(self.rtor, offset, size, value),
            PRESC => self.presc = merge_lane(self.presc, offset, size, value) & 0xF,
            RQR => {
                let v = merge_lane(0, offset, size, value);
                if v & 1 != 0 {
                    // ABRRQ: new auto baud rate measurement on the next frame.
                    self.isr &= !(ISR_ABRF | ISR_ABRE);
                }
                if v & (1 << 3) != 0 {
                    // RXFRQ: flush RDR (clears RXNE).
                    self.isr &= !ISR_RXNE;
                }
                if v & (1 << 4) != 0 {
                    // TXFRQ: TXE set (TDR content discarded).
                    self.tdr = None;
                    self.isr |= ISR_TXE;
                }
            }
            ICR => {
                // PECF 0, FECF 1, NECF 2, ORECF 3, IDLECF 4, TCCF 6 (RM0444 33.8.9).
                let v = merge_lane(0, offset, size, value);
                self.isr &= !(v & (ISR_PE | ISR_FE | ISR_NE | ISR_ORE | ISR_IDLE | ISR_TC));
            }
            TDR => {
                // Writing TDR clears TXE; the frame starts once the shift register is free.
                let mask = (1u32 << self.word_bits()) - 1;
                self.tdr = Some((value & mask) as u16);
                self.isr &= !(ISR_TXE | ISR_TC);
                self.start_tx(cx);
            }
            _ => {}
        }
        self.update_irq(cx);
        Ok(())
    }

    fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, Shared>) {
        match tag {
            TAG_TX_DONE => self.tx_done(cx),
            TAG_RX_DONE => self.rx_done(cx),
            TAG_IDLE if self.enabled(CR1_RE) => {
                self.isr |= ISR_IDLE;
                self.update_irq(cx);
            }
            _ => {}
        }
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        self.reinit(cx);
    }
}
