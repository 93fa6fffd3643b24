//! The rig: board facade and backends, strategy, scenario engine, diagnosis.

pub mod engine;
pub mod lock;
pub mod plan;

pub use engine::{BoardOpener, BoardSession, CancelFlag, EngineOptions, StepCx, StepOutcome};
