//! Host side of the ST ROM bootloaders, the same code for lab boards and the virtual board:
//!
//! - [`uart`]: an AN3155 client over any [`serialport::SerialPort`] (a tty in the lab, the virtual
//!   board's PTY in CI);
//! - [`dfu`]: a DfuSe (AN3156 / UM0391) client over the small [`dfu::ControlTransfer`] trait, with
//!   an nusb implementation for real USB devices, plus descriptor, memory-layout and .dfu file
//!   handling;
//! - [`control`]: BOOT0 / NRST as a trait, implemented over a serial adapter's DTR/RTS;
//! - [`transcript`]: a hook that sees every byte and control transfer, for protocol transcripts
//!   in reports.
//!
//! Protocol facts come from the project's reference (bootloader-protocols.md), which cites
//! AN3155, AN3156, UM0391, stm32flash (\[SF\]) and dfu-util (\[DU\]). Every device read has a deadline;
//! device bytes never cause a panic.
//!
//! # AN3155 over a serial port
//!
//! ```no_run
//! use hil_bootloader_host::uart::{self, UartClient};
//! use hil_bootloader_host::transcript::Transcript;
//!
//! // 8E1 is requested; a PTY keeps 8N1, which `settings.parity_applied` reports (not an error).
//! let (port, _settings) = uart::open_port("/dev/ttyUSB0", 115_200)?;
//! let mut client = UartClient::new(port, uart::Config::default());
//! let transcript = Transcript::new();
//! client.set_transcript(Some(Box::new(transcript.clone())));
//!
//! let info = client.connect()?; // sync, Get Version, Get, Get ID
//! println!("PID 0x{:03X}, bootloader {:#04x}", info.id.pid, info.get.version);
//! let image = std::fs::read("app.bin").expect("image");
//! let pages = uart::pages_touched(0x0800_0000, 0x800, [(0x0800_0000, image.len())]).expect("in flash");
//! client.erase_pages(&pages)?; // Erase or Extended Erase, whichever Get lists
//! client.write(0x0800_0000, &image)?;
//! assert_eq!(client.read(0x0800_0000, image.len())?, image);
//! client.go(0x0800_0000)?;
//! print!("{}", transcript.render());
//! # Ok::<(), hil_bootloader_host::uart::UartError>(())
//! ```
//!
//! # DfuSe over USB
//!
//! ```no_run
//! use hil_bootloader_host::dfu::{DfuConfig, DfuSeClient, NusbDevice};
//!
//! let device = NusbDevice::open(&"0483:df11".parse()?)?;
//! let mut dfu = DfuSeClient::open(device, 0, DfuConfig::default(), None)?; // alt 0: internal flash
//! println!("{}", dfu.target().layout);
//! dfu.download(0x0800_0000, &std::fs::read("app.bin")?)?; // erases only the touched pages
//! dfu.leave(Some(0x0800_0000))?; // MSP = [0x08000000], PC = [0x08000004]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Entering the bootloader with DTR/RTS
//!
//! ```no_run
//! use hil_bootloader_host::control::{self, ModemSignal, Polarity, SerialControlLines, Wiring};
//! use hil_bootloader_host::uart::{self, UartClient};
//!
//! let (port, _) = uart::open_port("/dev/ttyUSB0", 115_200)?;
//! let mut lines = SerialControlLines::new(
//!     port.try_clone().expect("second handle"),
//!     Some(Wiring { signal: ModemSignal::Dtr, polarity: Polarity::DeassertedIsActive }),
//!     Some(Wiring { signal: ModemSignal::Rts, polarity: Polarity::AssertedIsActive }),
//! );
//! control::enter_bootloader(&mut lines, &control::EntryTiming::default())?;
//! let mut client = UartClient::new(port, uart::Config::default());
//! client.sync()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod clock;
pub mod control;
pub mod dfu;
pub mod transcript;
pub mod uart;

#[cfg(test)]
mod testing;
