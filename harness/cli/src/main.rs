//! The `hil` command.
fn main() {}
