//! The virtual STM32 board: chip model, peripherals, boot and reset, ROM hand-off, PTY and pins
