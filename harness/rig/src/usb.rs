//! USB DFU connectors: nusb for real devices (by VID:PID[:serial]).

use hil_bootloader_host::dfu::{ControlTransfer, NusbDevice, UsbSelector};

use crate::backend::UsbConnector;

pub struct NusbConnector {
    pub selector: String,
}

impl UsbConnector for NusbConnector {
    fn present(&mut self) -> Result<bool, String> {
        let sel: UsbSelector = self.selector.parse().map_err(|e| format!("USB selector {}: {e}", self.selector))?;
        Ok(NusbDevice::open(&sel).is_ok())
    }
    fn open(&mut self) -> Result<Box<dyn ControlTransfer + Send>, String> {
        let sel: UsbSelector = self.selector.parse().map_err(|e| format!("USB selector {}: {e}", self.selector))?;
        NusbDevice::open(&sel).map(|d| Box::new(d) as Box<dyn ControlTransfer + Send>).map_err(|e| e.to_string())
    }
}
