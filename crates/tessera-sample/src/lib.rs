//! Sample customers with ground truth, a product crate.
//!
//! [`synth`] produces deterministic multi-channel Segment events (web, app, point of
//! sale), a CRM export with no shared key and the truth of who is who; `tessera
//! quickstart` uses it for its sample data, tests use it for realistic inputs, and
//! the benchmarks measure Tessera against the reference tools on it. [`accuracy`]
//! scores an identity map against that truth.
//!
//! This crate knows nothing of HTTP or gRPC.

pub mod accuracy;
pub mod synth;
