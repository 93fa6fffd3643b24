//! The device side ("usb-host" in usbredir's terms) of the usbredir protocol, version 0.7: one USB
//! device served over a stream socket to a peer that attaches it to a (virtual) USB bus - QEMU's
//! `usb-redir` device, which then presents it to a Linux guest's real USB stack.
//!
//! Written here rather than bound to the usbredir C library: the protocol is small (a fixed header
//! and a dozen packet types), the project builds on machines with only cargo, and the device behind
//! it is our virtual board, not a libusb handle. Facts come from usbredir's protocol description
//! and its `usbredirproto.h` (packet numbers, header layouts, capability bits) and from measuring
//! QEMU 7.2 (see [`Server`]): what this crate sends is checked by QEMU and the guest's kernel.
//!
//! - [`proto`]: packet types, capability bits, the main header (32-bit ids until both hellos say
//!   64), encoding and decoding with errors that name the packet.
//! - [`Server`]: one connection; it bridges a [`RedirDevice`] (what the device offers: presence,
//!   identity, control transfers) to the peer, with connect / disconnect as the device comes and
//!   goes.

pub mod proto;
mod server;

pub use server::{ControlOutcome, DeviceIdentity, Endpoint, Interface, RedirDevice, Server, ServerError};
