//! [`ControlTransfer`] for real USB devices through nusb (no libusb, no runtime).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use nusb::MaybeFuture;
use nusb::transfer::{ControlIn, ControlOut, ControlType, Recipient};

use super::transport::{ControlTransfer, Setup, TransferError, request_type};

/// Selects a device by `VID:PID[:SERIAL]`, hex IDs as lsusb prints them (`0483:df11`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbSelector {
    pub vendor_id: u16,
    pub product_id: u16,
    pub serial: Option<String>,
}

impl fmt::Display for UsbSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor_id, self.product_id)?;
        if let Some(s) = &self.serial {
            write!(f, ":{s}")?;
        }
        Ok(())
    }
}

impl FromStr for UsbSelector {
    type Err = UsbError;

    fn from_str(s: &str) -> Result<Self, UsbError> {
        let bad = || UsbError::Selector(s.to_string());
        let mut parts = s.splitn(3, ':');
        let vid = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let pid = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let parse = |p: &str| u16::from_str_radix(p.trim_start_matches("0x"), 16).map_err(|_| bad());
        Ok(UsbSelector {
            vendor_id: parse(vid)?,
            product_id: parse(pid)?,
            serial: parts.next().filter(|p| !p.is_empty()).map(str::to_string),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsbError {
    #[error("USB selector {0:?}: expected VID:PID[:SERIAL] in hex, e.g. 0483:df11")]
    Selector(String),
    #[error("no USB device matches {selector}{}", if .others.is_empty() { String::new() } else { format!(" (same VID:PID, serials: {})", .others.join(", ")) })]
    NotFound { selector: UsbSelector, others: Vec<String> },
    #[error("{count} USB devices match {selector}; add the serial number (serials: {})", .serials.join(", "))]
    Ambiguous { selector: UsbSelector, count: usize, serials: Vec<String> },
    #[error("{selector}: no DFU interface (class 0xFE, subclass 0x01) in the active configuration")]
    NoDfuInterface { selector: UsbSelector },
    #[error("{selector}: {what}: {source}")]
    Os { selector: UsbSelector, what: &'static str, source: nusb::Error },
}

/// One opened USB device with its DFU interface claimed.
pub struct NusbDevice {
    device: nusb::Device,
    interface: nusb::Interface,
    /// bwPollTimeout waits, cut to what the device asked for.
    poll_wait: crate::clock::PreciseSleep,
}

impl NusbDevice {
    /// Finds the single device matching `selector`, opens it and claims its DFU interface
    /// (detaching a kernel driver on Linux).
    pub fn open(selector: &UsbSelector) -> Result<NusbDevice, UsbError> {
        let os = |what, source| UsbError::Os { selector: selector.clone(), what, source };
        let info = Self::find(selector)?;
        let number = info
            .interfaces()
            .find(|i| i.class() == 0xFE && i.subclass() == 0x01)
            .map(|i| i.interface_number())
            .ok_or_else(|| UsbError::NoDfuInterface { selector: selector.clone() })?;
        let device = info.open().wait().map_err(|e| os("opening the device", e))?;
        let interface =
            device.detach_and_claim_interface(number).wait().map_err(|e| os("claiming the DFU interface", e))?;
        Ok(NusbDevice { device, interface, poll_wait: crate::clock::PreciseSleep::new() })
    }

    /// Whether exactly one device matches `selector` now (listed, not opened: asking does not
    /// disturb a device another program uses).
    pub fn present(selector: &UsbSelector) -> Result<bool, UsbError> {
        match Self::find(selector) {
            Ok(_) => Ok(true),
            Err(UsbError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The single device matching `selector`.
    fn find(selector: &UsbSelector) -> Result<nusb::DeviceInfo, UsbError> {
        let os = |what, source| UsbError::Os { selector: selector.clone(), what, source };
        let same_ids: Vec<nusb::DeviceInfo> = nusb::list_devices()
            .wait()
            .map_err(|e| os("listing USB devices", e))?
            .filter(|d| d.vendor_id() == selector.vendor_id && d.product_id() == selector.product_id)
            .collect();
        let serial_of = |d: &nusb::DeviceInfo| d.serial_number().unwrap_or("(none)").to_string();
        let matching: Vec<&nusb::DeviceInfo> = same_ids
            .iter()
            .filter(|d| selector.serial.as_deref().is_none_or(|s| d.serial_number() == Some(s)))
            .collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => {
                Err(UsbError::NotFound { selector: selector.clone(), others: same_ids.iter().map(serial_of).collect() })
            }
            many => Err(UsbError::Ambiguous {
                selector: selector.clone(),
                count: many.len(),
                serials: many.iter().map(|d| serial_of(d)).collect(),
            }),
        }
    }

    pub fn device(&self) -> &nusb::Device {
        &self.device
    }
}

fn map_error(e: nusb::transfer::TransferError, timeout: Duration) -> TransferError {
    use nusb::transfer::TransferError as E;
    match e {
        E::Stall => TransferError::Stall,
        // nusb reports an expired timeout as a cancelled transfer.
        E::Cancelled => TransferError::Timeout(timeout),
        E::Disconnected => TransferError::Disconnected,
        other => TransferError::Other(other.to_string()),
    }
}

fn split(setup: &Setup) -> (ControlType, Recipient) {
    let kind = match setup.request_type & request_type::TYPE_MASK {
        request_type::CLASS => ControlType::Class,
        request_type::VENDOR => ControlType::Vendor,
        _ => ControlType::Standard,
    };
    let recipient = match setup.request_type & request_type::RECIPIENT_MASK {
        0 => Recipient::Device,
        1 => Recipient::Interface,
        2 => Recipient::Endpoint,
        _ => Recipient::Other,
    };
    (kind, recipient)
}

impl ControlTransfer for NusbDevice {
    fn control_in(&mut self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        let (control_type, recipient) = split(&setup);
        let request = ControlIn {
            control_type,
            recipient,
            request: setup.request,
            value: setup.value,
            index: setup.index,
            length: setup.length,
        };
        // Interface requests go through the claimed interface (WinUSB requires it).
        let result = if recipient == Recipient::Interface {
            self.interface.control_in(request, timeout).wait()
        } else {
            self.device.control_in(request, timeout).wait()
        };
        result.map_err(|e| map_error(e, timeout))
    }

    fn control_out(&mut self, setup: Setup, data: &[u8], timeout: Duration) -> Result<(), TransferError> {
        let (control_type, recipient) = split(&setup);
        let request = ControlOut {
            control_type,
            recipient,
            request: setup.request,
            value: setup.value,
            index: setup.index,
            data,
        };
        let result = if recipient == Recipient::Interface {
            self.interface.control_out(request, timeout).wait()
        } else {
            self.device.control_out(request, timeout).wait()
        };
        result.map_err(|e| map_error(e, timeout))
    }

    fn set_alt_setting(&mut self, interface: u8, alt_setting: u8, _timeout: Duration) -> Result<(), TransferError> {
        if interface != self.interface.interface_number() {
            return Err(TransferError::Other(format!(
                "interface {interface} is not the claimed interface {}",
                self.interface.interface_number()
            )));
        }
        self.interface.set_alt_setting(alt_setting).wait().map_err(|e| TransferError::Other(e.to_string()))
    }

    fn wait(&mut self, duration: Duration) {
        self.poll_wait.sleep(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let s: UsbSelector = "0483:df11".parse().unwrap();
        assert_eq!((s.vendor_id, s.product_id, s.serial), (0x0483, 0xDF11, None));
        let s: UsbSelector = "0483:DF11:206A36A35633".parse().unwrap();
        assert_eq!(s.serial.as_deref(), Some("206A36A35633"));
        assert_eq!(s.to_string(), "0483:df11:206A36A35633");
        for bad in ["", "0483", "0483:", "xyz:df11", "10000:1"] {
            assert!(bad.parse::<UsbSelector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn request_type_mapping() {
        let s = Setup { request_type: 0xA1, request: 3, value: 0, index: 0, length: 6 };
        assert_eq!(split(&s), (ControlType::Class, Recipient::Interface));
        let s = Setup { request_type: 0x80, request: 6, value: 0x200, index: 0, length: 9 };
        assert_eq!(split(&s), (ControlType::Standard, Recipient::Device));
    }

    /// This machine may have no USB at all: opening must fail with an error, never panic.
    #[test]
    fn opening_an_absent_device_is_an_error() {
        let s: UsbSelector = "0483:df11:no-such-serial".parse().unwrap();
        assert!(NusbDevice::open(&s).is_err());
    }
}
