//! USART v1: the USART of the STM32F1 (RM0008 chapter 27), in the asynchronous mode the fixtures
//! and the ROM bootloader use. Selected by `version: usart-v1` in the chip data.
//!
//! Modelled: SR (PE, FE, NE, ORE, IDLE, RXNE, TC, TXE; reset 0x00C0, RM0008 27.6.1) with the
//! clearing sequences of RM0008 27.6.1 (PE/FE/NE/ORE/IDLE: an SR read followed by a DR read;
//! RXNE: a DR read or writing 0; TC: a DR write or writing 0), DR (RDR / TDR behind one address,
//! the parity bit in the MSB, RM0008 27.6.2), BRR (mantissa and fraction: baud = fPCLK / BRR at
//! 16x oversampling, RM0008 27.3.4), CR1 (UE, M, PCE, PS, PEIE, TXEIE, TCIE, RXNEIE, IDLEIE, TE,
//! RE; RM0008 27.6.4), CR2 STOP bits, CR3 EIE, frame timing on virtual time from PCLK2 (USART1)
//! or PCLK1 (the others; RM0008 7.2), the interrupt line (RM0008 27.5 Table 193), APB clock gate
//! and RCC reset.
//!
//! Host side as the v2 model: frames on the RX wire take a frame time at the host's rate; a frame
//! arriving while RXNE is set is lost with ORE; a rate mismatch beyond the receiver tolerance
//! (RM0008 27.3.5) arrives with FE and garbled bits.
//!
//! Not modelled: LIN, IrDA, smartcard, synchronous mode, hardware flow control, DMA, mute mode.

use std::collections::VecDeque;

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, VirtualDuration};

use super::usart::{RxFrame, UsartParams};
use super::{HostUart, UsartView, gate_open, merge_lane, read_lane};
use crate::shared::{GateReg, RxFate, Shared, UartOut};

pub const SR: u32 = 0x00;
pub const DR: u32 = 0x04;
pub const BRR: u32 = 0x08;
pub const CR1: u32 = 0x0C;
pub const CR2: u32 = 0x10;
pub const CR3: u32 = 0x14;
pub const GTPR: u32 = 0x18;

pub const SR_PE: u32 = 1 << 0;
pub const SR_FE: u32 = 1 << 1;
pub const SR_NE: u32 = 1 << 2;
pub const SR_ORE: u32 = 1 << 3;
pub const SR_IDLE: u32 = 1 << 4;
pub const SR_RXNE: u32 = 1 << 5;
pub const SR_TC: u32 = 1 << 6;
pub const SR_TXE: u32 = 1 << 7;
const SR_RESET: u32 = SR_TXE | SR_TC;
/// Flags an SR read followed by a DR read clears.
const SR_SEQ_CLEARED: u32 = SR_PE | SR_FE | SR_NE | SR_ORE | SR_IDLE;

pub const CR1_RE: u32 = 1 << 2;
pub const CR1_TE: u32 = 1 << 3;
pub const CR1_IDLEIE: u32 = 1 << 4;
pub const CR1_RXNEIE: u32 = 1 << 5;
pub const CR1_TCIE: u32 = 1 << 6;
pub const CR1_TXEIE: u32 = 1 << 7;
pub const CR1_PEIE: u32 = 1 << 8;
pub const CR1_PS: u32 = 1 << 9;
pub const CR1_PCE: u32 = 1 << 10;
pub const CR1_M: u32 = 1 << 12;
pub const CR1_UE: u32 = 1 << 13;
pub const CR3_EIE: u32 = 1 << 0;

const TAG_TX_DONE: u32 = 1;
const TAG_RX_DONE: u32 = 2;
const TAG_IDLE: u32 = 3;

pub struct UsartV1 {
    p: UsartParams,
    sr: u32,
    cr1: u32,
    cr2: u32,
    cr3: u32,
    brr: u32,
    gtpr: u32,
    rdr: u16,
    tdr: Option<u16>,
    shifting: Option<u16>,
    /// SR was read: the next DR read clears PE/FE/NE/ORE/IDLE (RM0008 27.6.1).
    sr_read: bool,
    rx_wire: VecDeque<RxFrame>,
    rx_active: bool,
    host_baud: Option<u32>,
    seen_reset: u32,
    pub lost_while_off: u64,
    pub overruns: u64,
}

impl UsartV1 {
    pub fn new(p: UsartParams) -> Self {
        UsartV1 {
            p,
            sr: SR_RESET,
            cr1: 0,
            cr2: 0,
            cr3: 0,
            brr: 0,
            gtpr: 0,
            rdr: 0,
            tdr: None,
            shifting: None,
            sr_read: false,
            rx_wire: VecDeque::new(),
            rx_active: false,
            host_baud: None,
            seen_reset: 0,
            lost_while_off: 0,
            overruns: 0,
        }
    }

    pub fn sr(&self) -> u32 {
        self.sr
    }
    pub fn cr1(&self) -> u32 {
        self.cr1
    }
    pub fn brr(&self) -> u32 {
        self.brr
    }

    fn enabled(&self, bit: u32) -> bool {
        self.cr1 & CR1_UE != 0 && self.cr1 & bit != 0
    }

    /// Word length: M = 0 8 bits, M = 1 9 bits, parity included (RM0008 27.3.2).
    fn word_bits(&self) -> u32 {
        if self.cr1 & CR1_M != 0 { 9 } else { 8 }
    }

    fn data_bits(&self) -> u32 {
        self.word_bits() - (self.cr1 & CR1_PCE != 0) as u32
    }

    /// Stop bits in half bits (CR2.STOP: 00 1, 01 0.5, 10 2, 11 1.5; RM0008 27.6.5).
    fn stop_half_bits(&self) -> u64 {
        match (self.cr2 >> 12) & 3 {
            0 => 2,
            1 => 1,
            2 => 4,
            _ => 3,
        }
    }

    /// PCLK2 for instances on APB2 (USART1), PCLK1 otherwise (RM0008 7.2 clock tree).
    fn pclk(&self, shared: &Shared) -> u32 {
        match self.p.gate.map(|g| g.reg) {
            Some(GateReg::Apb2EnrF1) => shared.rcc.pclk2_hz,
            _ => shared.rcc.pclk_hz,
        }
    }

    /// baud = fPCLK / (16 * USARTDIV), USARTDIV = BRR / 16 (RM0008 27.3.4). `None`: BRR = 0.
    pub fn device_baud(&self, shared: &Shared) -> Option<u32> {
        let div = self.brr & 0xFFFF;
        (div >= 16).then(|| self.pclk(shared) / div)
    }

    /// BRR value that gives `baud` from this instance's clock (what the ROM computes).
    pub fn brr_for(&self, shared: &Shared, baud: u32) -> u32 {
        (self.pclk(shared) + baud.max(1) / 2) / baud.max(1)
    }

    fn frame_time(&self, baud: u32) -> VirtualDuration {
        let half_bits = 2 * (1 + self.word_bits() as u64) + self.stop_half_bits();
        VirtualDuration::from_ps(half_bits * 1_000_000_000_000 / (2 * baud.max(1) as u64))
    }

    fn tx_frame_time(&self, shared: &Shared) -> VirtualDuration {
        self.frame_time(self.device_baud(shared).unwrap_or(115_200))
    }

    fn rx_frame_time(&self, shared: &Shared) -> VirtualDuration {
        self.frame_time(self.host_baud.or(self.device_baud(shared)).unwrap_or(115_200))
    }

    fn update_irq(&self, cx: &mut DeviceCx<'_, Shared>) {
        let Some(irq) = self.p.irq else { return };
        let (sr, c1, c3) = (self.sr, self.cr1, self.cr3);
        // RM0008 27.5 Table 193: TXE/TXEIE, TC/TCIE, RXNE or ORE/RXNEIE, IDLE/IDLEIE, PE/PEIE,
        // NE/ORE/FE with EIE (multibuffer; modelled for single buffer too).
        let high = c1 & CR1_UE != 0
            && ((c1 & CR1_TXEIE != 0 && sr & SR_TXE != 0)
                || (c1 & CR1_TCIE != 0 && sr & SR_TC != 0)
                || (c1 & CR1_RXNEIE != 0 && sr & (SR_RXNE | SR_ORE) != 0)
                || (c1 & CR1_IDLEIE != 0 && sr & SR_IDLE != 0)
                || (c1 & CR1_PEIE != 0 && sr & SR_PE != 0)
                || (c3 & CR3_EIE != 0 && sr & (SR_FE | SR_NE | SR_ORE) != 0));
        cx.set_irq(irq, high);
    }

    fn check_rcc_reset(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let n = cx.shared.rcc.reset_pulses(self.p.reset);
        if n != self.seen_reset {
            self.seen_reset = n;
            cx.cancel(TAG_TX_DONE);
            cx.cancel(TAG_RX_DONE);
            cx.cancel(TAG_IDLE);
            self.reinit(cx);
            self.update_irq(cx);
        }
    }

    /// Registers to reset values; the wire, the host's rate and the counters stay.
    fn reinit(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let wire = std::mem::take(&mut self.rx_wire);
        let (host, lost, ovr) = (self.host_baud, self.lost_while_off, self.overruns);
        *self = UsartV1::new(self.p.clone());
        self.seen_reset = cx.shared.rcc.reset_pulses(self.p.reset);
        (self.rx_wire, self.host_baud, self.lost_while_off, self.overruns) = (wire, host, lost, ovr);
        if !self.rx_wire.is_empty() {
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
            self.sr |= SR_TXE;
            self.sr &= !SR_TC;
            let t = self.tx_frame_time(cx.shared);
            cx.schedule_in(t, TAG_TX_DONE);
        }
    }

    fn tx_done(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        if let Some(w) = self.shifting.take() {
            let byte = (w & ((1u16 << self.data_bits()) - 1)) as u8;
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
            self.sr |= SR_TC;
        }
        self.update_irq(cx);
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
        let data_bits = self.data_bits();
        let mask = (1u32 << data_bits) - 1;
        let mut data = f.byte as u32 & mask;
        let mut fe = f.framing_error;
        // Baud mismatch beyond the receiver tolerance garbles the frame (RM0008 27.3.5).
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
            // PS = 0 even parity, 1 odd (RM0008 27.3.8).
            let odd = self.cr1 & CR1_PS != 0;
            let mut p = (data.count_ones() & 1 == 1) ^ odd;
            if f.parity_error {
                p = !p;
            }
            pe = ((data.count_ones() + p as u32) & 1 == 1) != odd;
            word |= (p as u32) << data_bits;
        }
        if self.sr & SR_RXNE != 0 {
            // Overrun: RDR keeps the old frame, the new one is lost (RM0008 27.6.1 ORE).
            self.sr |= SR_ORE;
            self.overruns += 1;
            return;
        }
        self.rdr = word as u16;
        self.sr |= SR_RXNE;
        if pe {
            self.sr |= SR_PE;
        }
        if fe {
            self.sr |= SR_FE;
        }
        if f.noise {
            self.sr |= SR_NE;
        }
    }
}

impl HostUart for UsartV1 {
    fn host_send(&mut self, frames: &[RxFrame], cx: &mut DeviceCx<'_, Shared>) {
        self.check_rcc_reset(cx);
        self.rx_wire.extend(frames.iter().copied());
        if !self.rx_active && !self.rx_wire.is_empty() {
            self.rx_active = true;
            cx.cancel(TAG_IDLE);
            let t = self.rx_frame_time(cx.shared);
            cx.schedule_in(t, TAG_RX_DONE);
        }
    }
    fn set_host_baud(&mut self, baud: Option<u32>) {
        self.host_baud = baud.filter(|b| *b > 0);
    }
    fn host_baud(&self) -> Option<u32> {
        self.host_baud
    }
    fn rx_pending(&self) -> usize {
        self.rx_wire.len()
    }
    fn view(&self, shared: &Shared) -> UsartView {
        UsartView {
            cr1: self.cr1,
            brr: self.brr,
            isr: self.sr,
            baud: self.device_baud(shared),
            lost_while_off: self.lost_while_off,
            overruns: self.overruns,
        }
    }
}

impl Device<Shared> for UsartV1 {
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
            SR => {
                self.sr_read = true;
                self.sr
            }
            DR => {
                // A DR read clears RXNE, and after an SR read the error and IDLE flags
                // (RM0008 27.6.1).
                self.sr &= !SR_RXNE;
                if std::mem::take(&mut self.sr_read) {
                    self.sr &= !SR_SEQ_CLEARED;
                }
                self.update_irq(cx);
                self.rdr as u32
            }
            BRR => self.brr,
            CR1 => self.cr1,
            CR2 => self.cr2,
            CR3 => self.cr3,
            GTPR => self.gtpr,
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
        match offset & !3 {
            SR => {
                // RXNE, TC, LBD, CTS are rc_w0: writing 0 clears them, 1 leaves them (RM0008 27.6.1).
                let v = merge_lane(self.sr, offset, size, value);
                let w0 = SR_RXNE | SR_TC | (1 << 8) | (1 << 9);
                self.sr &= !(w0 & !v);
            }
            DR => {
                // Writing DR clears TXE (and TC after an SR read; the new frame clears it anyway).
                self.sr_read = false;
                let mask = (1u32 << self.word_bits()) - 1;
                self.tdr = Some((value & mask) as u16);
                self.sr &= !(SR_TXE | SR_TC);
                self.start_tx(cx);
            }
            BRR => self.brr = merge_lane(self.brr, offset, size, value) & 0xFFFF,
            CR1 => {
                let old = self.cr1;
                self.cr1 = merge_lane(self.cr1, offset, size, value) & 0x3FFF;
                if old & CR1_UE != 0 && self.cr1 & CR1_UE == 0 {
                    // UE cleared: prescalers and outputs stop at the end of the current byte;
                    // modelled as the transfer discarded (RM0008 27.6.4 UE).
                    cx.cancel(TAG_TX_DONE);
                    cx.cancel(TAG_IDLE);
                    self.tdr = None;
                    self.shifting = None;
                    self.sr |= SR_TXE | SR_TC;
                }
                self.start_tx(cx);
            }
            CR2 => self.cr2 = merge_lane(self.cr2, offset, size, value) & 0x7F7F,
            CR3 => self.cr3 = merge_lane(self.cr3, offset, size, value) & 0x7FF,
            GTPR => self.gtpr = merge_lane(self.gtpr, offset, size, value) & 0xFFFF,
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
                self.sr |= SR_IDLE;
                self.update_irq(cx);
            }
            _ => {}
        }
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        self.reinit(cx);
    }
}
