//! Tessera's SQL on an Apache DataFusion Ballista cluster.
//!
//! One `tessera` binary built with the `cluster` feature plays every part:
//!
//! - [`scheduler`]: `tessera cluster scheduler` — Ballista's scheduler, which cuts the
//!   plans it is given into stages at their shuffles and hands the tasks out;
//! - [`executor`]: `tessera cluster executor` — a Ballista executor with Tessera's SQL
//!   functions and the lake's object stores, so that it can run any stage of a plan
//!   Tessera made;
//! - [`client`]: the planner a project with `[engine] cluster = "df://host:port"`
//!   installs in its sessions.
//!
//! The client plans every statement in full before anything leaves the process: the
//! read-only policy, the caller's row filters and masks and `as_of()` (a literal in the
//! plan) are applied there, and each lake table is a [`tessera_lake::PinnedTable`] — a
//! Parquet scan of exactly the files of the version the session opened, so a commit
//! during the query, or files removed but not yet vacuumed, cannot change what the
//! executors read. The physical plan is what is sent (Ballista's physical plan
//! submission); nothing on the cluster opens a Delta log.

pub mod client;
pub mod executor;
pub mod scheduler;

mod functions;

pub use client::{ClusterExec, ClusterPlanner, install};
