use crate::image::Format;

/// Why an image file could not be read. Every message starts with the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{file}: cannot read: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}: is {what}, not a regular file: an image is read from a file")]
    NotRegularFile { file: String, what: &'static str },
    #[error("{file}: is a symlink loop")]
    SymlinkLoop { file: String },
    #[error("{file}: is {size} bytes; an image file is at most {max} bytes (no STM32 holds more)")]
    TooLarge { file: String, size: u64, max: u64 },
    #[error("{file}: not a usable ELF file: {reason}")]
    Elf { file: String, reason: String },
    #[error("{file}:{line}: invalid Intel HEX record: {reason}")]
    Hex { file: String, line: usize, reason: String },
    #[error("{file}: Intel HEX file has no end-of-file record (truncated?)")]
    HexNoEndOfFile { file: String },
    #[error("{file}: {second} overlaps {first} at 0x{address:08X}")]
    Overlap { file: String, first: String, second: String, address: u32 },
    #[error("{file}: {what} at 0x{address:08X} ({len} bytes) runs past the end of the 32-bit address space")]
    AddressOverflow { file: String, what: String, address: u32, len: u64 },
    #[error(
        "{file}: unknown image format: expected an ELF file, Intel HEX (.hex) or a raw binary (.bin) with a base address"
    )]
    UnknownFormat { file: String },
    #[error("{file}: a raw binary has no addresses: give the base address it is linked at (e.g. 0x08000000)")]
    BinNeedsBase { file: String },
    #[error(
        "{file}: is {format}, which carries its own addresses: the base address 0x{base:08X} applies to raw binaries only"
    )]
    BaseNotApplicable { file: String, format: Format, base: u32 },
}
