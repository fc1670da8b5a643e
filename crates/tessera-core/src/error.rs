//! Errors of the core crate: configuration problems. Event validation has its own,
//! finer-grained [`crate::event::EventError`], because a bad event is data, not a failure.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// What can go wrong in the core crate.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The project has no `tessera.toml`.
    #[error(
        "no tessera.toml in {dir}: run `tessera init {dir}` to create a project there, or pass --project DIR"
    )]
    ProjectNotFound { dir: PathBuf },

    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The configuration file is not valid TOML or has a key of the wrong type.
    #[error("{path} is not a valid Tessera configuration: {message}")]
    ParseConfig { path: PathBuf, message: String },

    /// A configuration value is syntactically fine but not acceptable.
    #[error("invalid configuration: {key}: {message}")]
    InvalidConfig { key: String, message: String },

    /// Writing a file of the project failed.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The system gave no random bytes (for a token or a password salt).
    #[error("no randomness (/dev/urandom): {0}")]
    Randomness(#[source] std::io::Error),

    /// A password could not be hashed.
    #[error("cannot hash the password: {0}")]
    PasswordHash(String),

    /// Arrow refused to build a batch (a bug in a schema or builder, not user input).
    #[error("building an Arrow batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
