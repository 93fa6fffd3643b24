//! A virtual board's USART as a [`serialport::SerialPort`], in process, on the board's clock.
//!
//! Why not the PTY: a PTY's reader is a wall-clock wait the board cannot see, and a background
//! thread draining it makes the board's clock run on the host's schedule. This port turns every
//! read timeout into a wait on the board's clock (the board runs until bytes arrive or the
//! timeout passes in virtual time) and every write into bytes that reach the board at its current
//! virtual time, in order with the host's other requests. The code above it (the AN3155 client,
//! the serial link) is the code that drives a tty in the lab; only the time source differs, and
//! it comes with the port ([`crate::virtual_backend::VirtualBoardClock`]).

use std::io;
use std::time::Duration;

use hil_virtual_board::{BoardError, UartPort};
use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits};

/// The host side of one USART of a virtual board, as a serial port.
pub struct VirtualSerialPort {
    uart: UartPort,
    board: String,
    baud: u32,
    data_bits: DataBits,
    parity: Parity,
    stop_bits: StopBits,
    timeout: Duration,
}

impl VirtualSerialPort {
    pub fn new(board: &str, uart: UartPort, baud: u32) -> VirtualSerialPort {
        VirtualSerialPort {
            uart,
            board: board.to_string(),
            baud,
            data_bits: DataBits::Eight,
            parity: Parity::Even,
            stop_bits: StopBits::One,
            timeout: Duration::from_millis(500),
        }
    }

    fn io_error(e: BoardError) -> io::Error {
        let kind = if e.is_infrastructure() { io::ErrorKind::BrokenPipe } else { io::ErrorKind::Other };
        io::Error::new(kind, e)
    }

    fn sp_error(e: BoardError) -> serialport::Error {
        serialport::Error::new(serialport::ErrorKind::Io(io::ErrorKind::BrokenPipe), e.to_string())
    }
}

impl io::Read for VirtualSerialPort {
    /// Bytes the device sent: as soon as there is at least one, or `TimedOut` once the port's
    /// timeout has passed on the board's clock.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let got = self.uart.read(buf.len(), self.timeout).wait().map_err(Self::io_error)?;
        if got.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} of {}: nothing within {:?} on the board's clock",
                    self.uart.name(),
                    self.board,
                    self.timeout
                ),
            ));
        }
        buf[..got.len()].copy_from_slice(&got);
        Ok(got.len())
    }
}

impl io::Write for VirtualSerialPort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.uart.write(buf).wait().map_err(Self::io_error)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SerialPort for VirtualSerialPort {
    fn name(&self) -> Option<String> {
        Some(format!("{}:{}", self.board, self.uart.name()))
    }
    fn baud_rate(&self) -> serialport::Result<u32> {
        Ok(self.baud)
    }
    fn data_bits(&self) -> serialport::Result<DataBits> {
        Ok(self.data_bits)
    }
    fn flow_control(&self) -> serialport::Result<FlowControl> {
        Ok(FlowControl::None)
    }
    fn parity(&self) -> serialport::Result<Parity> {
        Ok(self.parity)
    }
    fn stop_bits(&self) -> serialport::Result<StopBits> {
        Ok(self.stop_bits)
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    /// The host's rate on the wire: a device at another rate receives garbled frames, as on a
    /// real line.
    fn set_baud_rate(&mut self, baud_rate: u32) -> serialport::Result<()> {
        self.uart.set_host_baud(Some(baud_rate)).wait().map_err(Self::sp_error)?;
        self.baud = baud_rate;
        Ok(())
    }
    fn set_data_bits(&mut self, data_bits: DataBits) -> serialport::Result<()> {
        self.data_bits = data_bits;
        Ok(())
    }
    fn set_flow_control(&mut self, flow_control: FlowControl) -> serialport::Result<()> {
        if flow_control == FlowControl::None {
            Ok(())
        } else {
            Err(serialport::Error::new(
                serialport::ErrorKind::InvalidInput,
                "the virtual board's USART has no flow-control lines",
            ))
        }
    }
    fn set_parity(&mut self, parity: Parity) -> serialport::Result<()> {
        self.parity = parity;
        Ok(())
    }
    fn set_stop_bits(&mut self, stop_bits: StopBits) -> serialport::Result<()> {
        self.stop_bits = stop_bits;
        Ok(())
    }
    fn set_timeout(&mut self, timeout: Duration) -> serialport::Result<()> {
        self.timeout = timeout;
        Ok(())
    }
    // Modem lines: the virtual board's BOOT0/NRST are driven as pins (VirtualPins), not through a
    // USB-UART adapter's DTR/RTS; the port has none.
    fn write_request_to_send(&mut self, _level: bool) -> serialport::Result<()> {
        Err(no_modem_lines())
    }
    fn write_data_terminal_ready(&mut self, _level: bool) -> serialport::Result<()> {
        Err(no_modem_lines())
    }
    fn read_clear_to_send(&mut self) -> serialport::Result<bool> {
        Err(no_modem_lines())
    }
    fn read_data_set_ready(&mut self) -> serialport::Result<bool> {
        Err(no_modem_lines())
    }
    fn read_ring_indicator(&mut self) -> serialport::Result<bool> {
        Err(no_modem_lines())
    }
    fn read_carrier_detect(&mut self) -> serialport::Result<bool> {
        Err(no_modem_lines())
    }
    fn bytes_to_read(&self) -> serialport::Result<u32> {
        let n = self.uart.available().wait().map_err(Self::sp_error)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
    fn bytes_to_write(&self) -> serialport::Result<u32> {
        // Writes are handed to the board before `write` returns.
        Ok(0)
    }
    fn clear(&self, buffer_to_clear: ClearBuffer) -> serialport::Result<()> {
        if matches!(buffer_to_clear, ClearBuffer::Input | ClearBuffer::All) {
            self.uart.discard_input().wait().map_err(Self::sp_error)?;
        }
        Ok(())
    }
    fn try_clone(&self) -> serialport::Result<Box<dyn SerialPort>> {
        Ok(Box::new(VirtualSerialPort {
            uart: self.uart.clone(),
            board: self.board.clone(),
            baud: self.baud,
            data_bits: self.data_bits,
            parity: self.parity,
            stop_bits: self.stop_bits,
            timeout: self.timeout,
        }))
    }
    fn set_break(&self) -> serialport::Result<()> {
        Err(serialport::Error::new(serialport::ErrorKind::InvalidInput, "break is not modelled on the virtual USART"))
    }
    fn clear_break(&self) -> serialport::Result<()> {
        Ok(())
    }
}

fn no_modem_lines() -> serialport::Error {
    serialport::Error::new(
        serialport::ErrorKind::InvalidInput,
        "the virtual board's USART has no modem lines (its BOOT0/NRST are pins of the board)",
    )
}
