//! USB DFU connectors: nusb for real devices (by VID:PID[:serial]).

use hil_bootloader_host::dfu::{ControlTransfer, NusbDevice, UsbSelector};

use crate::backend::UsbConnector;
use crate::step_error::StepError;

pub struct NusbConnector {
    pub selector: String,
}

impl UsbConnector for NusbConnector {
    fn present(&mut self) -> Result<bool, StepError> {
        let sel: UsbSelector = self.selector.parse()?;
        Ok(NusbDevice::present(&sel)?)
    }
    fn open(&mut self) -> Result<Box<dyn ControlTransfer + Send>, StepError> {
        let sel: UsbSelector = self.selector.parse()?;
        Ok(NusbDevice::open(&sel).map(|d| Box::new(d) as Box<dyn ControlTransfer + Send>)?)
    }
}

#[cfg(feature = "virtual")]
pub use virtual_usb::VirtualUsbConnector;

#[cfg(feature = "virtual")]
mod virtual_usb {
    use super::*;

    /// The virtual board's USB device as the DfuSe host client sees a USB device: control transfers
    /// in process, the same requests nusb sends on a real bus.
    pub struct VirtualUsbConnector {
        pub board: hil_virtual_board::Board,
    }

    impl UsbConnector for VirtualUsbConnector {
        fn present(&mut self) -> Result<bool, StepError> {
            match self.board.usb() {
                Ok(port) => Ok(port.attached().wait()?),
                Err(_) => Ok(false),
            }
        }
        fn open(&mut self) -> Result<Box<dyn ControlTransfer + Send>, StepError> {
            let port = self.board.usb()?;
            if !port.attached().wait()? {
                return Err(StepError::expectation(
                    "the DFU device is not attached (is the board in its system bootloader?)",
                ));
            }
            let mut dev = VirtualUsbDevice { port, board: self.board.clone() };
            // What the host OS does when a device enumerates, before any program opens it: select
            // configuration 1 (SET_CONFIGURATION, USB 2.0 9.4.7). nusb finds real devices configured.
            let set_configuration =
                hil_bootloader_host::dfu::Setup { request_type: 0x00, request: 9, value: 1, index: 0, length: 0 };
            dev.control_out(set_configuration, &[], std::time::Duration::from_secs(1)).map_err(|source| {
                StepError::Dfu(hil_bootloader_host::dfu::DfuError::Transfer {
                    op: hil_bootloader_host::dfu::Op::Open,
                    setup: set_configuration,
                    source,
                })
            })?;
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

    /// The host client's setup packet as the board's USB port takes it (same fields; the two sides
    /// keep their own types, DESIGN.md independence rule).
    fn board_setup(setup: hil_bootloader_host::dfu::Setup) -> hil_virtual_board::UsbSetup {
        hil_virtual_board::UsbSetup {
            request_type: setup.request_type,
            request: setup.request,
            value: setup.value,
            index: setup.index,
            length: setup.length,
        }
    }

    impl ControlTransfer for VirtualUsbDevice {
        fn control_in(
            &mut self,
            setup: hil_bootloader_host::dfu::Setup,
            timeout: std::time::Duration,
        ) -> Result<Vec<u8>, hil_bootloader_host::dfu::TransferError> {
            use hil_virtual_board::UsbReply;
            let s = board_setup(setup);
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
            let s = board_setup(setup);
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
}
