//! Errors of the segments crate.

use std::fmt;
use std::path::PathBuf;

use tessera_engine::EngineError;
use tessera_lake::LakeError;

/// Result alias for this crate.
pub type Result<T, E = SegmentsError> = std::result::Result<T, E>;

/// A problem in one segment file, located: `sql/segments/x.sql:3:7: message`, then how
/// to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file as shown to the user.
    pub file: String,
    /// 1-based line, 0 when the problem is the whole file.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl FileError {
    pub fn new(file: &str, line: u64, column: u64, message: impl Into<String>) -> Self {
        FileError {
            file: file.to_owned(),
            line,
            column,
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message)?,
            (l, 0) => write!(f, "{}:{l}: {}", self.file, self.message)?,
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file, self.message)?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Why segments could not be validated or refreshed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentsError {
    /// A segment file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// One or more segment files are invalid; nothing was run or written.
    #[error("{}", render_invalid(.0))]
    Invalid(Vec<FileError>),

    /// A segment named on the command line does not exist.
    #[error("no segment named {name:?}; known segments: {known}")]
    UnknownSegment { name: String, known: String },

    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] LakeError),

    /// A query failed.
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// DataFusion failed while evaluating a segment.
    #[error("segment {segment}: {source}")]
    Query {
        segment: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// DataFusion failed while setting up or reading state.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// Arrow failed while building a batch.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

fn render_invalid(errors: &[FileError]) -> String {
    let mut s = format!(
        "{} problem{} in segment files; nothing was run or written:",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        s.push('\n');
        s.push_str(&e.to_string());
    }
    s
}
