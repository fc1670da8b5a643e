//! Integration tests of segments: sqllogictest files in `tests/slt/` (segment semantics
//! over a real lake) and the bad-segment suite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod recovery;
mod slt;
mod validation;
