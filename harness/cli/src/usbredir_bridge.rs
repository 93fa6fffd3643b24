//! The virtual board's USB device on a usbredir socket (`hil sim serve --usbredir PATH`): QEMU's
//! usb-redir connects to the listening socket and attaches the device to a guest's USB stack, where
//! dfu-util and the lab code (nusb) see it as a real device. The device is whatever the board
//! presents at the moment - the ROM's DfuSe device while the bootloader runs, nothing otherwise -
//! with a connect or disconnect as its D+ pull-up comes and goes.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use hil_usbredir::{ControlOutcome, DeviceIdentity, Endpoint, Interface, RedirDevice, Server};
use hil_virtual_board::{Board, BoardError, UsbReply, UsbSetup};

/// A control transfer's time limit (USB 2.0 9.2.6.4: a device completes a request within 5 s).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// The board's USB device as a [`RedirDevice`]: presence from the pull-up, identity from its
/// descriptors (read once per attach, as a host enumerates), control transfers in process.
pub struct BoardUsb {
    board: Board,
    identity: Option<DeviceIdentity>,
    /// The board's events not looked at yet (for detaches between two presence polls).
    events_from: Option<u64>,
}

impl BoardUsb {
    pub fn new(board: Board) -> Self {
        BoardUsb { board, identity: None, events_from: None }
    }

    /// Whether the device left the bus since the last look, even if it is back already: a ROM
    /// that resets (option byte loading, Read Unprotect) pulls D+ up again within ~12 ms, between
    /// two presence polls, and the host must still see a disconnect and enumerate it again.
    fn left_since_last_look(&mut self) -> bool {
        let from = match self.events_from {
            Some(f) => f,
            None => match self.board.event_cursor().wait() {
                Ok(c) => c,
                Err(_) => return false,
            },
        };
        let events = self.board.events(from, Duration::ZERO).wait().unwrap_or_default();
        self.events_from = Some(events.last().map_or(from, |e| e.seq + 1));
        events.iter().any(|e| matches!(e.kind, hil_virtual_board::EventKind::Usb { attached: false }))
    }

    fn transfer(&self, setup: UsbSetup, data: Vec<u8>) -> Result<UsbReply, BoardError> {
        self.board.usb()?.control(setup, data, CONTROL_TIMEOUT).wait()
    }

    fn descriptor(&self, kind: u8, length: u16) -> Option<Vec<u8>> {
        let setup = UsbSetup { request_type: 0x80, request: 6, value: u16::from(kind) << 8, index: 0, length };
        match self.transfer(setup, Vec::new()) {
            Ok(UsbReply::Data(d)) => Some(d),
            _ => None,
        }
    }

    /// Device and configuration descriptors (USB 2.0 9.6.1, 9.6.3, 9.6.5, 9.6.6).
    fn read_identity(&self) -> Option<DeviceIdentity> {
        let dev = self.descriptor(1, 18)?;
        if dev.len() < 18 {
            return None;
        }
        let head = self.descriptor(2, 9)?;
        let total = u16::from_le_bytes([*head.get(2)?, *head.get(3)?]);
        let cfg = self.descriptor(2, total)?;
        let mut interfaces = Vec::new();
        let mut endpoints = Vec::new();
        let mut current_itf = 0u8;
        let mut at = 0;
        while at + 2 <= cfg.len() {
            let (len, kind) = (usize::from(cfg[at]), cfg[at + 1]);
            if len < 2 || at + len > cfg.len() {
                break;
            }
            let d = &cfg[at..at + len];
            match kind {
                4 if len >= 9 && d[3] == 0 => {
                    current_itf = d[2];
                    interfaces.push(Interface { number: d[2], class: d[5], subclass: d[6], protocol: d[7] });
                }
                4 if len >= 9 => current_itf = d[2],
                5 if len >= 7 => endpoints.push(Endpoint {
                    address: d[2],
                    kind: d[3] & 3,
                    interval: d[6],
                    interface: current_itf,
                    max_packet_size: u16::from_le_bytes([d[4], d[5]]),
                }),
                _ => {}
            }
            at += len;
        }
        Some(DeviceIdentity {
            vendor_id: u16::from_le_bytes([dev[8], dev[9]]),
            product_id: u16::from_le_bytes([dev[10], dev[11]]),
            device_version_bcd: u16::from_le_bytes([dev[12], dev[13]]),
            class: dev[4],
            subclass: dev[5],
            protocol: dev[6],
            ep0_max_packet: u16::from(dev[7]),
            interfaces,
            endpoints,
        })
    }
}

impl RedirDevice for BoardUsb {
    fn identity(&mut self) -> Option<DeviceIdentity> {
        let left = self.left_since_last_look();
        let attached = self.board.usb().ok().and_then(|u| u.attached().wait().ok()).unwrap_or(false);
        if !attached || (left && self.identity.is_some()) {
            self.identity = None;
            return None;
        }
        if self.identity.is_none() {
            self.identity = self.read_identity();
        }
        self.identity.clone()
    }

    fn control(
        &mut self,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
        data: &[u8],
    ) -> ControlOutcome {
        let setup = UsbSetup { request_type, request, value, index, length };
        let out = if request_type & 0x80 == 0 { data.to_vec() } else { Vec::new() };
        match self.transfer(setup, out) {
            Ok(UsbReply::Data(d)) => ControlOutcome::Done(d),
            Ok(UsbReply::Ack) => ControlOutcome::Done(Vec::new()),
            Ok(UsbReply::Stall) => ControlOutcome::Stall,
            Err(BoardError::UsbTimeout { .. }) => ControlOutcome::Timeout,
            Err(_) => ControlOutcome::Disconnected,
        }
    }

    fn bus_reset(&mut self) {
        if let Ok(u) = self.board.usb() {
            let _ = u.bus_reset().wait();
        }
    }
}

/// Listen on `path` and serve the board's USB device to each peer in turn, until `stop`.
pub fn serve(board: Board, path: &Path, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
    serve_device(Box::new(BoardUsb::new(board)), path, stop)
}

/// Listen on `path` and serve `device` to each peer in turn, until `stop`.
pub fn serve_device(
    mut device: Box<dyn RedirDevice + Send>,
    path: &Path,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let path: PathBuf = path.to_path_buf();
    Ok(std::thread::Builder::new().name("usbredir".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let Ok(read) = stream.try_clone() else { continue };
                    tracing::info!("usbredir: peer connected on {}", path.display());
                    let s = stop.clone();
                    if let Err(e) = Server::new(stream).run(read, device.as_mut(), &|| s.load(Ordering::Relaxed)) {
                        tracing::warn!("usbredir on {}: {e}", path.display());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!("usbredir accept on {}: {e}", path.display());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    })?)
}
