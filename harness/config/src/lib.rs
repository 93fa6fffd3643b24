//! boards.yaml and scenario files: serde data model, validation with FILE:LINE:COL errors, JSON Schema
