//! The foundation every other Tessera crate stands on: the Segment event model and its
//! validation, the Arrow schema of every lake table, identifier normalization, the
//! project configuration (`tessera.toml`) and the core error type.
//!
//! Its only I/O is reading the configuration file the caller names and drawing random
//! bytes for tokens and password salts: no object stores, no networking, no DataFusion.
//! Everything else here is a pure function of its inputs, which keeps it fast to test
//! and safe to use from any layer above.

pub mod auth;
pub mod batch;
pub mod config;
pub mod error;
pub mod event;
pub mod identifier;
pub mod phonetic;
pub mod privacy;
pub mod random;
pub mod schema;
pub mod similarity;
pub mod sql;
pub mod stages;

pub use error::{CoreError, Result};
