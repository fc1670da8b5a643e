//! Errors of the activation crate.

use tessera_engine::EngineError;
use tessera_lake::LakeError;
use tessera_segments::SegmentsError;

/// Result alias for this crate.
pub type Result<T, E = ActivateError> = std::result::Result<T, E>;

/// Why a sync could not be planned or delivered. A destination that refuses or fails is
/// not an error: it is an attempt recorded in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// A destination's secret or header variable is not set.
    #[error("{key}: environment variable {var} is not set")]
    MissingSecret { key: String, var: String },

    /// A secret is not usable (a Standard Webhooks secret is `whsec_` + base64).
    #[error("{key}: {message}")]
    BadSecret { key: String, message: String },

    /// A destination cannot be reached as configured (a file destination's URL).
    #[error("{key}: {message}")]
    BadDestination { key: String, message: String },

    /// A header name or value cannot be sent.
    #[error("destinations.{destination}.headers: {message}")]
    BadHeader {
        destination: String,
        message: String,
    },

    /// A sync names no sync of `tessera.toml`.
    #[error("no sync named {name:?}; known syncs: {known}")]
    UnknownSync { name: String, known: String },

    /// A sync's segment has never been refreshed, or does not exist.
    #[error(
        "syncs.{sync}.segment: segment {segment:?} has not been refreshed yet (tessera segments refresh {segment})"
    )]
    NotRefreshed { sync: String, segment: String },

    /// A sync's `fields` query is wrong.
    #[error("syncs.{sync}.fields: {message}")]
    Fields { sync: String, message: String },

    /// The HTTP client could not be built.
    #[error("the HTTP client: {0}")]
    Client(#[source] reqwest::Error),

    /// A batch's members in the ledger cannot be read.
    #[error("activation_batches: batch {batch_id}: {message}")]
    Members { batch_id: String, message: String },

    /// A ledger batch could not be built (a bug, not user input).
    #[error("building an Arrow batch failed: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error(transparent)]
    Lake(#[from] LakeError),

    #[error(transparent)]
    Engine(#[from] EngineError),

    #[error(transparent)]
    Segments(#[from] SegmentsError),

    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}
