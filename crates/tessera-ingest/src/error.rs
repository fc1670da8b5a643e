//! Errors of the ingest crate.

use crate::sink::RowError;

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

    /// A worker thread died.
    #[error("import worker failed: {0}")]
    Worker(String),
}
