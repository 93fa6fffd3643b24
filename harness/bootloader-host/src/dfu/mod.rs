//! DfuSe (AN3156 / UM0391): the client over a small control-transfer trait, descriptor and memory
//! layout parsing, .dfu files, and the nusb implementation for real devices.

mod client;
pub mod descriptors;
pub mod file;
pub mod layout;
pub mod nusb_transport;
pub mod transport;

pub use client::{DfuConfig, DfuError, DfuSeClient, DfuSeTarget, DfuStats, DfuStatus, LeaveOutcome, Op, State, Status};
pub use file::{DfuElement, DfuFile, DfuFileError, DfuFileTarget};
pub use layout::{LayoutError, MemoryLayout, MemorySegment};
pub use nusb_transport::{NusbDevice, UsbError, UsbSelector};
pub use transport::{ControlTransfer, Setup, TransferError};

#[cfg(test)]
mod tests;
