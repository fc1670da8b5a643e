//! Errors of the lake crate.

/// Result alias for this crate.
pub type Result<T, E = LakeError> = std::result::Result<T, E>;

/// What can go wrong reading or writing the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The lake location cannot be used.
    #[error("invalid lake location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },

    /// A table that should exist does not.
    #[error(
        "table {name} does not exist at {location}: run `tessera init` or import some events first"
    )]
    TableNotFound { name: String, location: String },

    /// A schema could not be expressed in Delta.
    #[error("schema of table {table}: {message}")]
    Schema { table: String, message: String },

    /// A batch does not match the table's schema.
    #[error("cannot write to table {table}: {message}")]
    BadBatch { table: String, message: String },

    /// Delta Lake reported an error.
    #[error("cannot {action} table {table}: {source}")]
    Delta {
        table: String,
        action: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// A maintenance request that would lose something it should not.
    #[error("cannot vacuum table {table}: {message}")]
    Refused { table: String, message: String },

    /// A past version whose files vacuum has removed.
    #[error(
        "version {version} of table {table} can no longer be read: {missing} of its files were \
         removed by `tessera vacuum` (versions older than the vacuum retention are gone; the \
         latest version and those within the retention can be read)"
    )]
    VersionGone {
        table: String,
        version: u64,
        missing: usize,
    },

    /// Another process has the write-ahead log open.
    #[error(
        "the write-ahead log {dir} is in use by another process (a running `tessera serve`); \
         one collector per log"
    )]
    WalInUse { dir: String },

    /// A local file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl LakeError {
    pub fn delta(table: &str, action: &str, source: deltalake::DeltaTableError) -> Self {
        LakeError::Delta {
            table: table.to_owned(),
            action: action.to_owned(),
            source: Box::new(source),
        }
    }
}
