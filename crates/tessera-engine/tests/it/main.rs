//! Integration tests of the engine: sqllogictest files in `tests/slt/`, and sessions
//! over a real lake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lake_session;
mod slt;
