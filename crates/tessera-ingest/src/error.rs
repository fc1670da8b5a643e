//! Errors of the ingest crate.

use tessera_core::event::EventError;

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line (NDJSON, CSV) or row (Parquet) in the input file.
    pub line: u64,
    /// Stable reason code (`missing_identity`, `malformed_json`, ...).
    pub code: &'static str,
    /// What was wrong, in words.
    pub reason: String,
    /// The row as the parser saw it (JSON text), for `quarantine`.
    pub payload: Option<String>,
}

impl RowError {
    pub(crate) fn new(line: u64, e: &EventError, payload: Option<String>) -> Self {
        RowError {
            line,
            code: e.code(),
            reason: e.to_string(),
            payload,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ImportError> = std::result::Result<T, E>;

/// Why an import stopped. Bad rows do not stop an import (they are reported); these do.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Nothing matched the input.
    #[error("no input files found at {0}")]
    NoInput(String),

    /// The input location cannot be read.
    #[error("cannot read {location}: {message}")]
    Input { location: String, message: String },

    /// The format cannot be told from the file name.
    #[error(
        "cannot tell the format of {location} from its name: pass --format ndjson|json|csv|parquet"
    )]
    UnknownFormat { location: String },

    /// An option is not acceptable.
    #[error("{0}")]
    BadOption(String),

    /// The mapping query is wrong.
    #[error("mapping query over {location}: {message}")]
    Mapping { location: String, message: String },

    /// A file had more bad rows than `--max-errors` allows; nothing of it was committed.
    #[error(
        "{location}: {rejected} bad rows, more than --max-errors {max}; nothing of this file was imported. First errors:\n{}",
        first.iter().map(|e| format!("  line {}: {}", e.line, e.reason)).collect::<Vec<_>>().join("\n")
    )]
    TooManyErrors {
        location: String,
        rejected: u64,
        max: u64,
        first: Vec<RowError>,
    },

    /// The lake failed.
    #[error(transparent)]
    Lake(#[from] tessera_lake::LakeError),

    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] tessera_engine::EngineError),

    /// A worker thread or task died (a bug, not user input).
    #[error("{what} failed: {message}")]
    Worker { what: &'static str, message: String },

    /// A record of the collector's write-ahead log cannot be decoded.
    #[error("write-ahead log record {seq} in {dir} is unreadable: {message}")]
    WalRecord {
        seq: u64,
        dir: String,
        message: String,
    },

    /// A thread of the collector could not be started.
    #[error("cannot start {what}: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A lock was poisoned by a panicking thread (a bug, not user input).
    #[error("the collector's {0} lock was poisoned by a failed thread")]
    Poisoned(&'static str),

    /// DataFusion failed while reading the lake or building a batch.
    #[error("{doing}: {source}")]
    DataFusion {
        doing: &'static str,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// Arrow failed while converting a column (a bug, not user input).
    #[error("{doing}: {source}")]
    Arrow {
        doing: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
}

impl ImportError {
    /// A worker (thread or blocking task) that could not be joined.
    pub(crate) fn worker(what: &'static str, e: impl std::fmt::Display) -> Self {
        ImportError::Worker {
            what,
            message: e.to_string(),
        }
    }
}
