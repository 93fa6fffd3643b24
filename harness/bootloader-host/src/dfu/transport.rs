//! The seam between the DfuSe client and a USB device: control transfers on endpoint 0.
//! [`crate::dfu::nusb_transport`] implements it for real devices; the rig implements it in process
//! for the virtual board.

use std::fmt;
use std::time::Duration;

/// A SETUP packet (USB 2.0 9.3). For OUT transfers `length` is the data length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Setup {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

/// bmRequestType bits (USB 2.0 Table 9-2).
pub mod request_type {
    pub const DEVICE_TO_HOST: u8 = 0x80;
    pub const STANDARD: u8 = 0x00;
    pub const CLASS: u8 = 0x20;
    pub const VENDOR: u8 = 0x40;
    pub const TO_DEVICE: u8 = 0x00;
    pub const TO_INTERFACE: u8 = 0x01;
    pub const TYPE_MASK: u8 = 0x60;
    pub const RECIPIENT_MASK: u8 = 0x1F;
}

/// DFU 1.1 class requests (reference 3.3).
pub mod dfu_request {
    pub const DETACH: u8 = 0;
    pub const DNLOAD: u8 = 1;
    pub const UPLOAD: u8 = 2;
    pub const GETSTATUS: u8 = 3;
    pub const CLRSTATUS: u8 = 4;
    pub const GETSTATE: u8 = 5;
    pub const ABORT: u8 = 6;
}

impl Setup {
    pub fn is_in(&self) -> bool {
        self.request_type & request_type::DEVICE_TO_HOST != 0
    }

    /// e.g. `DFU_DNLOAD wValue=2 wIndex=0 wLength=2048`, or the raw fields for other requests.
    pub fn describe(&self) -> String {
        use request_type::{CLASS, TO_INTERFACE, TYPE_MASK};
        let name = if self.request_type & TYPE_MASK == CLASS && self.request_type & 0x1F == TO_INTERFACE {
            match self.request {
                dfu_request::DETACH => Some("DFU_DETACH"),
                dfu_request::DNLOAD => Some("DFU_DNLOAD"),
                dfu_request::UPLOAD => Some("DFU_UPLOAD"),
                dfu_request::GETSTATUS => Some("DFU_GETSTATUS"),
                dfu_request::CLRSTATUS => Some("DFU_CLRSTATUS"),
                dfu_request::GETSTATE => Some("DFU_GETSTATE"),
                dfu_request::ABORT => Some("DFU_ABORT"),
                _ => None,
            }
        } else if self.request_type & TYPE_MASK == 0 && self.request == 6 {
            Some("GET_DESCRIPTOR")
        } else if self.request_type & TYPE_MASK == 0 && self.request == 11 {
            Some("SET_INTERFACE")
        } else {
            None
        };
        match name {
            Some(n) => format!("{n} wValue={} wIndex={} wLength={}", self.value, self.index, self.length),
            None => format!(
                "bmRequestType=0x{:02X} bRequest={} wValue=0x{:04X} wIndex={} wLength={}",
                self.request_type, self.request, self.value, self.index, self.length
            ),
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why a control transfer failed. STALL is its own case: DfuSe devices stall requests that are
/// not allowed in their state, and some L4 ROMs stall GETSTATUS polled too early (reference 3.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("STALL")]
    Stall,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("device disconnected")]
    Disconnected,
    #[error("{0}")]
    Other(String),
}

/// Control transfers on endpoint 0 of one device, each with its own timeout.
pub trait ControlTransfer {
    /// A device-to-host transfer; returns the data stage (at most `setup.length` bytes).
    fn control_in(&mut self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError>;

    /// A host-to-device transfer with `data` as the data stage (`setup.length == data.len()`).
    fn control_out(&mut self, setup: Setup, data: &[u8], timeout: Duration) -> Result<(), TransferError>;

    /// Selects an alternate setting. The default sends the standard SET_INTERFACE request; an
    /// OS-backed device must tell the OS instead (nusb does).
    fn set_alt_setting(&mut self, interface: u8, alt_setting: u8, timeout: Duration) -> Result<(), TransferError> {
        let setup = Setup {
            request_type: request_type::STANDARD | request_type::TO_INTERFACE,
            request: 11,
            value: alt_setting as u16,
            index: interface as u16,
            length: 0,
        };
        self.control_out(setup, &[], timeout)
    }

    /// Waits `duration` (the device's bwPollTimeout). Real devices sleep; an in-process device may
    /// advance its virtual clock instead.
    fn wait(&mut self, duration: Duration) {
        std::thread::sleep(duration)
    }
}

impl<T: ControlTransfer + ?Sized> ControlTransfer for &mut T {
    fn control_in(&mut self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        (**self).control_in(setup, timeout)
    }
    fn control_out(&mut self, setup: Setup, data: &[u8], timeout: Duration) -> Result<(), TransferError> {
        (**self).control_out(setup, data, timeout)
    }
    fn set_alt_setting(&mut self, interface: u8, alt_setting: u8, timeout: Duration) -> Result<(), TransferError> {
        (**self).set_alt_setting(interface, alt_setting, timeout)
    }
    fn wait(&mut self, duration: Duration) {
        (**self).wait(duration)
    }
}

impl<T: ControlTransfer + ?Sized> ControlTransfer for Box<T> {
    fn control_in(&mut self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        (**self).control_in(setup, timeout)
    }
    fn control_out(&mut self, setup: Setup, data: &[u8], timeout: Duration) -> Result<(), TransferError> {
        (**self).control_out(setup, data, timeout)
    }
    fn set_alt_setting(&mut self, interface: u8, alt_setting: u8, timeout: Duration) -> Result<(), TransferError> {
        (**self).set_alt_setting(interface, alt_setting, timeout)
    }
    fn wait(&mut self, duration: Duration) {
        (**self).wait(duration)
    }
}
