//! Errors of running the models over the lake.

use tessera_engine::EngineError;
use tessera_lake::LakeError;

/// Result alias for this crate.
pub type Result<T, E = PredictError> = std::result::Result<T, E>;

/// Why `tessera predict` could not run. A model that ran but could not be fitted is
/// not an error: it is reported in its [`crate::run::ModelRun`] and writes no scores.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// A query of `sql/predict/` failed; `file` names it.
    #[error("{file}: {message}")]
    Sql { file: String, message: String },
    /// The lake has nothing to predict from yet.
    #[error("{0}")]
    NotReady(String),
    /// `[predict]` of `tessera.toml` is wrong.
    #[error(transparent)]
    Config(#[from] tessera_core::CoreError),
    /// Data-quality counts could not be written as JSON.
    #[error("writing data-quality counts: {0}")]
    Json(#[from] serde_json::Error),
    /// Building an Arrow batch failed (a bug, not user input).
    #[error("building an Arrow batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A table or query the models need is not defined (a bug, not user input).
    #[error("no definition of {0}")]
    Undefined(String),
}

impl PredictError {
    pub(crate) fn sql(file: &str, e: impl std::fmt::Display) -> Self {
        PredictError::Sql {
            file: file.to_owned(),
            message: e.to_string(),
        }
    }
}

impl From<datafusion::error::DataFusionError> for PredictError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        PredictError::Engine(EngineError::sql(e))
    }
}
