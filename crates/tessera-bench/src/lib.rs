//! Synthetic customer data with ground truth, and Tessera's benchmarks.
//!
//! [`synth`] produces deterministic multi-channel Segment events, a CRM export and the
//! truth of who is who; `tessera quickstart` uses it for sample data, tests use it for
//! realistic inputs, and the `tessera-bench` binary measures Tessera against the
//! reference tools on it.

pub mod accuracy;
pub mod synth;
