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

/// The virtual board's USB device as the DfuSe host client sees a USB device: control transfers
/// in process, the same requests nusb sends on a real bus.
pub struct VirtualUsbConnector {
    pub board: hil_virtual_board::Board,
}

impl UsbConnector for VirtualUsbConnector {
    fn present(&mut self) -> Result<bool, String> {
        match self.board.usb() {
            Ok(port) => port.attached().wait().map_err(|e| e.to_string()),
            Err(_) => Ok(false),
        }
    }
    fn open(&mut self) -> Result<Box<dyn ControlTransfer + Send>, String> {
        let port = self.board.usb().map_err(|e| e.to_string())?;
        if !port.attached().wait().map_err(|e| e.to_string())? {
            return Err("the DFU device is not attached (is the board in its system bootloader?)".into());
        }
        let mut dev = VirtualUsbDevice { port, board: self.board.clone() };
        // What the host OS does when a device enumerates, before any program opens it: select
        // configuration 1 (SET_CONFIGURATION, USB 2.0 9.4.7). nusb finds real devices configured.
        let set_configuration =
            hil_bootloader_host::dfu::Setup { request_type: 0x00, request: 9, value: 1, index: 0, length: 0 };
        dev.control_out(set_configuration, &[], std::time::Duration::from_secs(1))
            .map_err(|e| format!("configuring the DFU device (SET_CONFIGURATION 1): {e}"))?;
        Ok(Box::new(dev))
    }
}

struct VirtualUsbDevice {
    port: hil_virtual_board::UsbPort,
    board: hil_virtual_board::Board,
}

fn transfer_error(
    e: hil_virtual_board::BoardError,
    timeout: std::time::Duration,
) -> hil_bootloader_host::dfu::TransferError {
    use hil_bootloader_host::dfu::TransferError;
    use hil_virtual_board::BoardError;
    match e {
        BoardError::UsbDetached { .. } => TransferError::Disconnected,
        BoardError::UsbTimeout { .. } | BoardError::Timeout { .. } => TransferError::Timeout(timeout),
        other => TransferError::Other(other.to_string()),
    }
}

impl ControlTransfer for VirtualUsbDevice {
    fn control_in(
        &mut self,
        setup: hil_bootloader_host::dfu::Setup,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, hil_bootloader_host::dfu::TransferError> {
        use hil_virtual_board::UsbReply;
        let s = hil_virtual_board::UsbSetup {
            request_type: setup.request_type,
            request: setup.request,
            value: setup.value,
            index: setup.index,
            length: setup.length,
        };
        match self.port.control(s, Vec::new(), timeout).wait().map_err(|e| transfer_error(e, timeout))? {
            UsbReply::Data(d) => Ok(d),
            UsbReply::Ack => Ok(Vec::new()),
            UsbReply::Stall => Err(hil_bootloader_host::dfu::TransferError::Stall),
        }
    }
    fn control_out(
        &mut self,
        setup: hil_bootloader_host::dfu::Setup,
        data: &[u8],
        timeout: std::time::Duration,
    ) -> Result<(), hil_bootloader_host::dfu::TransferError> {
        use hil_virtual_board::UsbReply;
        let s = hil_virtual_board::UsbSetup {
            request_type: setup.request_type,
            request: setup.request,
            value: setup.value,
            index: setup.index,
            length: setup.length,
        };
        match self.port.control(s, data.to_vec(), timeout).wait().map_err(|e| transfer_error(e, timeout))? {
            UsbReply::Ack | UsbReply::Data(_) => Ok(()),
            UsbReply::Stall => Err(hil_bootloader_host::dfu::TransferError::Stall),
        }
    }
    /// bwPollTimeout passes on the board's clock (virtual on a gated board, wall otherwise).
    fn wait(&mut self, duration: std::time::Duration) {
        if let Err(e) = self.board.sleep(duration).wait() {
            tracing::warn!(board = %self.board.name(), "waiting bwPollTimeout on the board's clock: {e}");
        }
    }
}
