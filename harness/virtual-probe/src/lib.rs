//! A probe-rs probe driver (SW-DP + AHB-AP) for the virtual board, opened by selector like a real
//! probe.
//!
//! The virtual board is the target; this crate is the probe wired to its SWD pins and NRST. It
//! plugs into probe-rs as a probe driver ([`register`]), so the harness opens it with a selector
//! exactly like an ST-Link (`0483:374b:SERIAL`): `1209:0001:BOARD-NAME` ([`selector_for`]). From
//! probe-rs's ARM debug interface up (session, cores, ST's debug sequences, flash algorithms) the
//! code that runs is the code that runs against a CMSIS-DAP or J-Link probe.
//!
//! - [`dap`]: the target side of the wire: SW-DP, AHB-AP, the STM32 system ROM table (ADIv5.2).
//!   The Cortex-M debug registers (DHCSR, DCRSR/DCRDR, DEMCR, DFSR, FPB, AIRCR) are the core's
//!   own (hil-cortex-m); the AP reaches them, and the bus, through the board's debug port.
//! - [`driver`]: the probe-rs `DebugProbe` + `RawDapAccess` implementation and its factory.
//! - [`bench`]: flashing a 64 KiB image through probe-rs, with emulator figures.
//!
//! NRST: `target_reset_assert`/`deassert`, `target_reset` and DAP_SWJ_Pins bit 7 drive the board's
//! NRST pin (open-drain: the level read back is the pin's). While NRST is low the SW-DP and the
//! core's debug registers answer (ARMv6-M C1.4: debug registers are reset by power-on only);
//! system-bus accesses are served against the peripherals in reset by default, or refused
//! ([`InResetBus`], switchable, see there for the evidence). Vector catch needs DHCSR.C_DEBUGEN
//! (ARMv6-M C1.6.5, enforced by the core), so probe-rs 0.32's `attach_under_reset` times out on
//! the first attempt after power-on and succeeds afterwards, as on real STM32G0 parts (probe-rs
//! issue #4113); the harness's probe layer retries once.
//!
//! ```no_run
//! use probe_rs::{Permissions, probe::list::Lister};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let board = hil_virtual_board::Board::start(hil_virtual_board::BoardConfig::g071("bench-1"))?;
//! hil_virtual_probe::register();
//! let probe = Lister::new().open(hil_virtual_probe::probe_selector(board.name()))?;
//! let mut session = probe.attach("STM32G071RBTx", Permissions::default())?;
//! # let _ = session.core(0)?; Ok(()) }
//! ```

pub mod bench;
pub mod cmsis_dap;
pub mod dap;
pub mod driver;
pub mod error;

pub use dap::{DapConfig, DapStats, RomTable, StickyFault, TarIncrement};
pub use driver::{ProbeConfig, ProbeStats, VirtualProbe, VirtualProbeFactory, configure, probe_stats};
pub use error::VirtualProbeError;
pub use hil_virtual_board::debug_ext::InResetBus;

/// USB vendor ID of the virtual probe: pid.codes (0x1209), the open registry of USB IDs.
///
/// Product 0x0001 is pid.codes' "Test PID", reserved for testing and never allowed in a product
/// (pid.codes policy), so no real debug probe that probe-rs's USB drivers (ST-Link, CMSIS-DAP,
/// J-Link ...) could find answers to it. The serial (the board's name) makes the selector
/// unambiguous even on a bench where a home-made device uses the test PID.
pub const VENDOR_ID: u16 = 0x1209;
/// USB product ID of the virtual probe (see [`VENDOR_ID`]).
pub const PRODUCT_ID: u16 = 0x0001;

/// Register the virtual probe driver with probe-rs (idempotent; cheap after the first call).
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        probe_rs::plugin::register_plugin(probe_rs::plugin::Plugin {
            probe_drivers: &[&driver::FACTORY],
            ..Default::default()
        });
    });
}

/// The probe-rs selector of a running virtual board's probe: `1209:0001:<board name>`.
pub fn selector_for(board_name: &str) -> String {
    format!("{VENDOR_ID:04x}:{PRODUCT_ID:04x}:{board_name}")
}

/// [`selector_for`] as a parsed probe-rs selector.
pub fn probe_selector(board_name: &str) -> probe_rs::probe::DebugProbeSelector {
    probe_rs::probe::DebugProbeSelector {
        vendor_id: VENDOR_ID,
        product_id: PRODUCT_ID,
        interface: None,
        serial_number: Some(board_name.to_string()),
    }
}
