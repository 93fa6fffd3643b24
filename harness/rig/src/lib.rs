//! The rig: board facade and backends, strategy, scenario engine, diagnosis.

pub mod backend;
pub mod diagnosis;
pub mod engine;
pub mod family;
pub mod inspect;
pub mod lock;
pub mod opener;
pub mod option_bits;
pub mod plan;
pub mod probe;
pub mod probe_adapter;
pub mod probe_ops;
pub mod serial_link;
pub mod session;
pub mod step_error;
pub mod strategy;
pub mod usb;
#[cfg(feature = "virtual")]
pub mod virtual_backend;
#[cfg(feature = "virtual")]
pub mod virtual_serial;

pub use engine::{BoardOpener, BoardSession, CancelFlag, EngineOptions, StepCx, StepOutcome};

/// The git revision this build comes from (`unknown` outside a checkout).
pub const GIT_REVISION: &str = env!("HIL_GIT_REVISION");
/// `hil --version`: the package version and the git revision.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HIL_GIT_REVISION"), ")");
