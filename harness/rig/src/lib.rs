//! The rig: board facade and backends, strategy, scenario engine, diagnosis
