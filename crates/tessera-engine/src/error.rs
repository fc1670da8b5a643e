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

    /// The configured cluster cannot be used.
    #[error("the cluster at {endpoint}: {message}")]
    Cluster { endpoint: String, message: String },

    /// A table could not be registered with the session.
    #[error("cannot register table {table}: {message}")]
    Register { table: String, message: String },

    /// The query is wrong: syntax, unknown names, types.
    #[error("SQL error: {0}")]
    Sql(String),

    /// The statement is not a read-only query and the caller may only read
    /// ([`crate::policy`]); `statement` is its kind (`COPY TO`, `CREATE VIEW`, ...).
    #[error(
        "{statement} is not allowed: Tessera's SQL interface is read-only (SELECT, WITH, EXPLAIN, SHOW and DESCRIBE)"
    )]
    Refused { statement: String },

    /// The text holds several statements; one is run per call.
    #[error("the text holds {count} statements: send one statement per call")]
    Statements { count: usize },

    /// The query needs more memory than the shared query memory pool holds, even after
    /// spilling what can spill to disk.
    #[error("the query needs more memory than the {limit} bytes queries may use: {message}")]
    Memory { limit: u64, message: String },

    /// The query ran longer than the time limit and was cancelled.
    #[error("the query was cancelled after running longer than {limit:?}")]
    Timeout { limit: std::time::Duration },

    /// Every query slot stayed busy for as long as a query may wait for one.
    #[error(
        "{running} queries are running (the most allowed at once); waited {waited:?} for one to finish"
    )]
    Busy {
        running: usize,
        waited: std::time::Duration,
    },

    /// A result column is missing or of a type that cannot be read as asked.
    #[error("column {column}: {message}")]
    Column { column: String, message: String },

    /// A caller's row filter does not plan against `profiles`.
    #[error("row filter {filter:?}: {message}")]
    RowFilter { filter: String, message: String },

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

    /// Classifies an error raised while a query runs: the time limit (carried through
    /// DataFusion as an external error) as [`EngineError::Timeout`], a memory pool
    /// refusal as [`EngineError::Memory`] when the pool's `memory_limit` is known.
    pub fn running(e: DataFusionError, memory_limit: Option<u64>) -> Self {
        let root = e.find_root();
        if let DataFusionError::External(inner) = root
            && let Some(EngineError::Timeout { limit }) = inner.downcast_ref::<EngineError>()
        {
            return EngineError::Timeout { limit: *limit };
        }
        match (root, memory_limit) {
            (DataFusionError::ResourcesExhausted(message), Some(limit)) => EngineError::Memory {
                limit,
                message: message.clone(),
            },
            _ => EngineError::sql(e),
        }
    }
}
