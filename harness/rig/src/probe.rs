//! The harness's probe layer: a blocking wrapper over a probe-rs `Session` that scenario steps use,
//! the same for a real probe and the virtual board's simulated one.
