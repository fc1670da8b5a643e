//! Errors of the identity crate.

use std::path::PathBuf;

use tessera_engine::EngineError;
use tessera_lake::LakeError;

/// Result alias for this crate.
pub type Result<T, E = IdentityError> = std::result::Result<T, E>;

/// Why stitching or a profile look-up could not run.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A rule or trait file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A rule or trait file is not what it must be.
    #[error("{file}: {message}")]
    BadFile { file: String, message: String },

    /// A rule produced an identifier type that is not configured.
    #[error(
        "{file}: identifier type {id_type:?} is not configured; known types: {known}. Add [identity.types.{id_type}] to tessera.toml or fix the rule"
    )]
    UnknownType {
        file: String,
        id_type: String,
        known: String,
    },

    /// There are no events to stitch.
    #[error("the lake has no events yet: import events first (tessera import FILE)")]
    NoEvents,

    /// An identifier given on the command line is malformed.
    #[error("{0}")]
    BadIdentifier(String),

    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] LakeError),

    /// A query failed.
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// DataFusion failed while running a query of a rule or trait file.
    #[error("{file}: {source}")]
    Query {
        file: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// DataFusion failed while setting up a session.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// Building a batch failed (a bug, not user input).
    #[error("building an Arrow batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
