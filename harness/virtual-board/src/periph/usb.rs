//! USB full-speed device of the STM32G0B1 (RM0444 "USB full-speed host/device interface"), reduced
//! to what decides whether a host can talk to the ROM's DFU device: the device's presence on the
//! bus (D+ pull-up, USB_BCDR.DPPU, with the peripheral clocked), bus resets, and control transfers
//! on endpoint 0 signalled through USB_ISTR and the USB interrupt line.
//!
//! Modelled registers: USB_CNTR (USBRST bit 0, PDWN bit 1, RESETM bit 10, CTRM bit 15), USB_ISTR
//! (RESET bit 10, CTR bit 15; write 0 to clear), USB_FNR (reads 0), USB_DADDR, USB_BCDR (DPPU bit
//! 15), with the RCC clock gate. UNVERIFIED: the bit positions are those of the STM32 USB device
//! peripheral family (RM0444's USB chapter could not be read here); only the ROM model uses them.
//!
//! Not modelled: the packet memory and the endpoint registers. A control transfer reaches firmware
//! whole: [`UsbDevice::take_transfer`] hands the setup packet and its OUT data to the ROM model,
//! [`UsbDevice::complete`] takes the IN data / status. Bulk, interrupt and isochronous endpoints,
//! suspend/resume, LPM and battery charging detection are not modelled.
//!
//! Host side: the board thread submits transfers ([`UsbDevice::submit`]); each is presented to the
//! firmware after its bus time at 12 Mbit/s. A device that is not attached gets none (the host sees
//! no device); detaching fails the transfers in flight. When the device attaches, the host resets
//! the bus after the attach debounce (USB 2.0 7.1.7.3: 100 ms, then a reset of at least 10 ms).

use std::collections::{BTreeMap, VecDeque};

use hil_cortex_m::{BusFaultKind, Device, DeviceCx, Initiator, ResetCause, Size, VirtualDuration, VirtualTime};

use super::{gate_open, merge_lane, read_lane};
use crate::shared::{Gate, Shared, UsbFate};

pub const CNTR: u32 = 0x40;
pub const ISTR: u32 = 0x44;
pub const FNR: u32 = 0x48;
pub const DADDR: u32 = 0x4C;
pub const BCDR: u32 = 0x58;

pub const CNTR_USBRST: u32 = 1 << 0;
pub const CNTR_PDWN: u32 = 1 << 1;
pub const CNTR_RESETM: u32 = 1 << 10;
pub const CNTR_CTRM: u32 = 1 << 15;
pub const ISTR_RESET: u32 = 1 << 10;
pub const ISTR_CTR: u32 = 1 << 15;
pub const DADDR_EF: u32 = 1 << 7;
pub const BCDR_DPPU: u32 = 1 << 15;

/// USB 2.0 7.1.7.3 (attach debounce, 100 ms) plus 7.1.7.5 (reset, at least 10 ms).
const ATTACH_TO_RESET: VirtualDuration = VirtualDuration::from_ms(110);
/// Full-speed signalling rate (USB 2.0 7.1.11).
const FULL_SPEED_BPS: u64 = 12_000_000;

const TAG_BUS_RESET: u32 = 1;
const TAG_PRESENT: u32 = 2;

/// A control request's setup stage as the host sends it (USB 2.0 9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UsbSetup {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl UsbSetup {
    /// The direction bit of bmRequestType: device to host.
    pub fn is_in(&self) -> bool {
        self.request_type & 0x80 != 0
    }
}

/// How the device ended a control transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsbReply {
    /// IN data stage (at most wLength bytes; fewer is a short transfer).
    Data(Vec<u8>),
    /// Status stage of an OUT or no-data request.
    Ack,
    /// The device stalled the request.
    Stall,
}

/// Why a control transfer did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsbFailure {
    /// The device is not on the bus (not attached, or it detached before answering).
    #[error("the USB device is not attached")]
    Detached,
}

/// A control transfer the host submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTransfer {
    pub id: u64,
    pub setup: UsbSetup,
    /// OUT data stage (empty for IN and no-data requests).
    pub data: Vec<u8>,
}

/// An attach or detach, for the board's event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsbChange {
    pub attached: bool,
    pub at: VirtualTime,
}

pub struct UsbDevice {
    irq: u32,
    gate: Option<Gate>,
    cntr: u32,
    istr: u32,
    daddr: u32,
    bcdr: u32,
    attached: bool,
    queue: VecDeque<HostTransfer>,
    /// Waiting for its bus time to pass before the firmware sees it.
    on_wire: Option<HostTransfer>,
    /// Presented to the firmware (ISTR.CTR set).
    presented: Option<HostTransfer>,
    completions: BTreeMap<u64, Result<UsbReply, UsbFailure>>,
    next_id: u64,
    /// A bus reset is signalled once the attach debounce is over.
    reset_due: bool,
}

impl UsbDevice {
    pub fn new(irq: u32, gate: Option<Gate>) -> Self {
        UsbDevice {
            irq,
            gate,
            cntr: CNTR_USBRST | CNTR_PDWN,
            istr: 0,
            daddr: 0,
            bcdr: 0,
            attached: false,
            queue: VecDeque::new(),
            on_wire: None,
            presented: None,
            completions: BTreeMap::new(),
            next_id: 1,
            reset_due: false,
        }
    }

    /// Whether the device is on the bus: D+ pull-up enabled with the peripheral clocked.
    pub fn attached(&self) -> bool {
        self.attached
    }
    pub fn istr(&self) -> u32 {
        self.istr
    }

    fn wants_attached(&self, shared: &Shared) -> bool {
        self.bcdr & BCDR_DPPU != 0 && shared.rcc.clocked(self.gate)
    }

    fn update_irq(&self, cx: &mut DeviceCx<'_, Shared>) {
        let high = (self.istr & ISTR_CTR != 0 && self.cntr & CNTR_CTRM != 0)
            || (self.istr & ISTR_RESET != 0 && self.cntr & CNTR_RESETM != 0);
        cx.set_irq(self.irq, high);
    }

    /// Re-evaluate the attach state (after register writes, clock changes, resets).
    fn sync_attach(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        let now = self.wants_attached(cx.shared);
        if now == self.attached {
            return;
        }
        self.attached = now;
        cx.shared.usb_changes.push(UsbChange { attached: now, at: cx.now });
        if now {
            self.reset_due = true;
            cx.schedule_in(ATTACH_TO_RESET, TAG_BUS_RESET);
        } else {
            self.reset_due = false;
            cx.cancel(TAG_BUS_RESET);
            cx.cancel(TAG_PRESENT);
            self.istr = 0;
            self.daddr = 0;
            let failed: Vec<u64> =
                self.queue.drain(..).chain(self.on_wire.take()).chain(self.presented.take()).map(|t| t.id).collect();
            for id in failed {
                self.completions.insert(id, Err(UsbFailure::Detached));
            }
            self.update_irq(cx);
        }
    }

    /// Bus time of a control transfer: setup, data and handshake packets with their framing
    /// (approximate: PID, CRC and handshake bytes per packet, 64-byte data packets).
    fn bus_time(t: &HostTransfer) -> VirtualDuration {
        let len = u64::from(t.setup.length);
        let packets = 2 + len.div_ceil(64);
        let bytes = 8 + len + packets * 6;
        VirtualDuration::from_ps(bytes * 8 * 1_000_000_000_000 / FULL_SPEED_BPS)
    }

    fn present_next(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        if !self.attached || self.reset_due || self.on_wire.is_some() || self.presented.is_some() {
            return;
        }
        if let Some(t) = self.queue.pop_front() {
            let d = Self::bus_time(&t);
            self.on_wire = Some(t);
            cx.schedule_in(d, TAG_PRESENT);
        }
    }

    /// Host side: queue a control transfer. Returns its id, or `Detached` when no device is on
    /// the bus.
    pub fn submit(&mut self, setup: UsbSetup, data: Vec<u8>, cx: &mut DeviceCx<'_, Shared>) -> Result<u64, UsbFailure> {
        self.sync_attach(cx);
        if !self.attached {
            return Err(UsbFailure::Detached);
        }
        let id = self.next_id;
        self.next_id += 1;
        // Injected faults hit DFU class requests (bmRequestType type = class) before the
        // firmware sees them: the device's state is untouched.
        if setup.request_type & 0x60 == 0x20 {
            match cx.shared.faults.dfu_request_fate() {
                UsbFate::Deliver => {}
                UsbFate::Stall => {
                    cx.shared.counters.usb_requests_faulted += 1;
                    self.completions.insert(id, Ok(UsbReply::Stall));
                    return Ok(id);
                }
                // Never answered: the host's transfer times out.
                UsbFate::Lose => {
                    cx.shared.counters.usb_requests_faulted += 1;
                    return Ok(id);
                }
            }
        }
        self.queue.push_back(HostTransfer { id, setup, data });
        self.present_next(cx);
        Ok(id)
    }

    /// Host side: the result of transfer `id`, once the device answered (or failed it).
    pub fn take_completion(&mut self, id: u64) -> Option<Result<UsbReply, UsbFailure>> {
        self.completions.remove(&id)
    }

    /// Host side: give up on transfer `id` (the host's timeout).
    pub fn cancel(&mut self, id: u64, cx: &mut DeviceCx<'_, Shared>) {
        self.queue.retain(|t| t.id != id);
        self.completions.remove(&id);
        if self.on_wire.as_ref().is_some_and(|t| t.id == id) {
            self.on_wire = None;
            cx.cancel(TAG_PRESENT);
        }
        if self.presented.as_ref().is_some_and(|t| t.id == id) {
            // The firmware still sees CTR; its answer will find no taker.
            self.presented = None;
        }
        self.present_next(cx);
    }

    /// Host side: reset the bus (the device sees USB_ISTR.RESET).
    pub fn host_bus_reset(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        self.sync_attach(cx);
        if self.attached {
            self.signal_reset(cx);
        }
    }

    fn signal_reset(&mut self, cx: &mut DeviceCx<'_, Shared>) {
        self.reset_due = false;
        self.daddr = 0;
        self.istr |= ISTR_RESET;
        self.update_irq(cx);
        self.present_next(cx);
    }

    /// Firmware side: the transfer behind USB_ISTR.CTR; clears CTR.
    pub fn take_transfer(&mut self, cx: &mut DeviceCx<'_, Shared>) -> Option<HostTransfer> {
        if self.istr & ISTR_CTR == 0 {
            return None;
        }
        self.istr &= !ISTR_CTR;
        self.update_irq(cx);
        self.presented.take()
    }

    /// Firmware side: the answer to transfer `id`; the next queued transfer follows.
    pub fn complete(&mut self, id: u64, reply: UsbReply, cx: &mut DeviceCx<'_, Shared>) {
        if self.attached {
            self.completions.insert(id, Ok(reply));
        }
        self.present_next(cx);
    }
}

impl Device<Shared> for UsbDevice {
    fn name(&self) -> &str {
        "USB"
    }

    fn read(
        &mut self,
        offset: u32,
        size: Size,
        _: Initiator,
        cx: &mut DeviceCx<'_, Shared>,
    ) -> Result<u32, BusFaultKind> {
        if !gate_open(cx.shared, self.gate)? {
            return Ok(0);
        }
        let v = match offset & !3 {
            CNTR => self.cntr,
            ISTR => self.istr,
            DADDR => self.daddr,
            BCDR => self.bcdr,
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
        if !gate_open(cx.shared, self.gate)? {
            return Ok(());
        }
        match offset & !3 {
            CNTR => self.cntr = merge_lane(self.cntr, offset, size, value) & 0xFFFF,
            // rc_w0: writing 0 clears a flag, writing 1 leaves it.
            ISTR => {
                let v = merge_lane(0xFFFF_FFFF, offset, size, value);
                if v & ISTR_CTR == 0 {
                    self.presented = None;
                }
                self.istr &= v;
            }
            DADDR => self.daddr = merge_lane(self.daddr, offset, size, value) & 0xFF,
            BCDR => self.bcdr = merge_lane(self.bcdr, offset, size, value) & 0xFFFF,
            _ => {}
        }
        self.sync_attach(cx);
        self.update_irq(cx);
        Ok(())
    }

    fn event(&mut self, tag: u32, cx: &mut DeviceCx<'_, Shared>) {
        self.sync_attach(cx);
        match tag {
            TAG_BUS_RESET if self.attached && self.reset_due => self.signal_reset(cx),
            TAG_PRESENT => {
                if let Some(t) = self.on_wire.take() {
                    self.presented = Some(t);
                    self.istr |= ISTR_CTR;
                    self.update_irq(cx);
                }
            }
            _ => {}
        }
    }

    fn reset(&mut self, _: ResetCause, cx: &mut DeviceCx<'_, Shared>) {
        // Registers to their reset values: the pull-up is off, so the device leaves the bus.
        (self.cntr, self.istr, self.daddr, self.bcdr) = (CNTR_USBRST | CNTR_PDWN, 0, 0, 0);
        self.sync_attach(cx);
        cx.set_irq(self.irq, false);
    }
}
