//! Firmware images (ELF, Intel HEX, BIN) and the preflight checks run before every flash
