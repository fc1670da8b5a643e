//! End-to-end tests: the real `tessera` binary on real Delta tables in temporary
//! folders, read back by real third-party clients (Python `deltalake`, DuckDB).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod activate;
#[cfg(feature = "cluster")]
mod cluster;
mod common;
mod console;
mod examples;
mod flight;
mod grpc;
mod identity;
mod import;
mod lake;
mod matching;
mod predict;
mod privacy;
mod quickstart;
mod readers;
mod s3;
mod security;
mod segments;
mod serve;
mod sql;
