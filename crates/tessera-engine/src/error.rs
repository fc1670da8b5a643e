//! Errors of the engine crate.

use datafusion::error::DataFusionError;
use tessera_lake::LakeError;

/// Result alias for this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What can go wrong building a session or running a query.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The lake could not be read.
    #[error(transparent)]
    Lake(#[from] LakeError),

    /// A table could not be registered with the session.
    #[error("cannot register table {table}: {message}")]
    Register { table: String, message: String },

    /// The query is wrong: syntax, unknown names, types.
    #[error("SQL error: {0}")]
    Sql(String),

    /// DataFusion failed while setting up or running.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl EngineError {
    /// Wraps a DataFusion error raised by a user's query, keeping only its message.
    pub fn sql(e: DataFusionError) -> Self {
        // Planning errors arrive wrapped (diagnostics, context); classify by the root.
        match e.find_root() {
            root @ (DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)) => EngineError::Sql(root.strip_backtrace()),
            _ => EngineError::DataFusion(e),
        }
    }
}
