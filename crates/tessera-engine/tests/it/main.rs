//! Integration tests of the engine: sqllogictest files in `tests/slt/`, and sessions
//! over a real lake.

mod lake_session;
mod slt;
