//! What the steps need from a debug probe. The probe layer ([`crate::probe`]) implements it over
//! probe-rs for real and virtual boards alike; tests can implement it with a fake.

use std::collections::BTreeMap;

use hil_config::scenario::Register;

use crate::probe::ProbeError;

/// Result of flashing an image through the probe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeFlashStats {
    pub bytes: u64,
    pub seconds: f64,
}

pub trait ProbeOps: Send {
    /// Halt the core; returns the PC it stopped at.
    fn halt(&mut self) -> Result<u32, ProbeError>;
    /// The probe as probe-rs lists it (`VID:PID:serial`), when known: traceability.
    fn identity(&self) -> Option<String> {
        None
    }
    fn resume(&mut self) -> Result<(), ProbeError>;
    fn is_halted(&mut self) -> Result<bool, ProbeError>;
    /// Reset with vector catch: stop before the first instruction of the reset handler.
    fn reset_halt(&mut self) -> Result<(), ProbeError>;
    /// System reset through the probe (AIRCR.SYSRESETREQ) and let the core run.
    fn reset_run(&mut self) -> Result<(), ProbeError>;
    /// Read a core register (halting the core for the read if it runs, and resuming it).
    fn read_register(&mut self, r: Register) -> Result<u32, ProbeError>;
    fn read_memory(&mut self, address: u32, len: usize) -> Result<Vec<u8>, ProbeError>;
    fn write_memory(&mut self, address: u32, data: &[u8]) -> Result<(), ProbeError>;
    /// Program an image (already preflighted) into flash with probe-rs's flash loader; `elf` is
    /// the ELF file the image came from, when it came from one.
    fn flash(
        &mut self,
        name: &str,
        image: &hil_image::Image,
        elf: Option<&[u8]>,
        verify: bool,
    ) -> Result<ProbeFlashStats, ProbeError>;
    /// Core registers plus the listed memory-mapped registers, read at one instant (the core is
    /// halted for the read and left as it was).
    fn snapshot(&mut self, extra: &[(String, u32)]) -> Result<BTreeMap<String, u32>, ProbeError>;
}
