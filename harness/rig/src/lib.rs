//! The rig: board facade and backends, strategy, scenario engine, diagnosis.

pub mod engine;
pub mod lock;
pub mod plan;
pub mod probe;
pub mod serial_link;

pub use engine::{BoardOpener, BoardSession, CancelFlag, EngineOptions, StepCx, StepOutcome};
