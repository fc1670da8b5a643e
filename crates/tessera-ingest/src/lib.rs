//! Getting events into the lake from files: `tessera import`.
//!
//! An import takes a file, a folder or a glob, local or in an object store, and lands
//! its events in the `events` table:
//!
//! - **Segment-shaped NDJSON** (`.ndjson`, `.jsonl`, `.json`, optionally `.gz`) is parsed
//!   directly, in parallel blocks, with bounded memory however large the file;
//! - **CSV, Parquet and other JSON** go through a *mapping query*: SQL over a table named
//!   `input` whose result has the event's columns (`messageId`/`message_id`, `type`,
//!   `userId`, `timestamp`, `properties`, ...). Without `--mapping` the query is
//!   `SELECT * FROM input`.
//!
//! Imports are incremental and idempotent. A file already imported (same location,
//! size and modification time or etag) is skipped; each file lands in one Delta commit
//! carrying a transaction id derived from that fingerprint, so a crash mid-import never
//! leaves half a file and a retry never lands it twice; and events are deduplicated on
//! `message_id` against the lake and within the import. Bad rows are reported with file,
//! line and reason while the good rows land, and kept in `quarantine` ([`quarantine`]);
//! `max_errors` aborts a file, uncommitted, once it has more bad rows than allowed.

pub mod collector;
mod error;
mod hash;
mod input;
mod mapping;
mod ndjson;
pub mod plan;
pub mod quarantine;
mod sink;
pub mod stats;
pub mod suppress;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_engine::Engine;
use tessera_lake::Lake;

pub use error::RowError;
pub use error::{ImportError, Result};
pub use input::{Format, InputFile, resolve_inputs};

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The input format; inferred from each file's name when `None`.
    pub format: Option<Format>,
    /// The source recorded on every event.
    pub source: String,
    /// A mapping query over the table `input`.
    pub mapping: Option<String>,
    /// Abort a file (without committing any of it) once it has more bad rows than this.
    pub max_errors: Option<u64>,
    /// Rows per Arrow batch.
    pub batch_rows: usize,
    /// Import files again even when they were imported before (events are still
    /// deduplicated on `message_id`).
    pub force: bool,
    /// Parser threads for NDJSON; `None` uses every core.
    pub threads: Option<usize>,
    /// Keep bad rows in `quarantine` (off when replaying quarantine itself).
    pub quarantine: bool,
    /// Which event times are accepted (`[events]`).
    pub window: tessera_core::event::TimeWindow,
    /// The tracking plans of the sources (`sql/plans/`): the plan of `source` applies.
    pub plans: Arc<plan::TrackingPlans>,
    /// Count plan violations in `plan_violations` (off when replaying quarantine: the
    /// events were counted when they first arrived).
    pub count_violations: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            format: None,
            source: "import".into(),
            mapping: None,
            max_errors: None,
            batch_rows: 16_384,
            force: false,
            threads: None,
            quarantine: true,
            window: tessera_core::event::TimeWindow::default(),
            plans: Arc::default(),
            count_violations: true,
        }
    }
}

/// What happened to one input file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileReport {
    pub location: String,
    pub format: String,
    /// Skipped because it was imported before.
    pub skipped: bool,
    pub bytes: u64,
    pub rows_read: u64,
    pub rows_imported: u64,
    pub rows_duplicate: u64,
    /// Rows carrying a suppressed identifier (`tessera privacy`), not stored.
    pub rows_suppressed: u64,
    pub rows_rejected: u64,
    /// Of the bad rows, those kept in `quarantine`.
    pub rows_quarantined: u64,
    /// The first bad rows (at most [`MAX_REPORTED_ERRORS`] per file).
    pub errors: Vec<RowError>,
    /// The line (or row) of every bad row.
    pub rejected_lines: Vec<u64>,
    /// The `events` version that holds this file's rows.
    pub events_version: Option<u64>,
}

/// Bad rows listed per file in a report; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub files: Vec<FileReport>,
    pub elapsed: Duration,
}

impl ImportReport {
    fn sum(&self, f: impl Fn(&FileReport) -> u64) -> u64 {
        self.files.iter().map(f).sum()
    }
    pub fn rows_read(&self) -> u64 {
        self.sum(|f| f.rows_read)
    }
    pub fn rows_imported(&self) -> u64 {
        self.sum(|f| f.rows_imported)
    }
    pub fn rows_duplicate(&self) -> u64 {
        self.sum(|f| f.rows_duplicate)
    }
    pub fn rows_suppressed(&self) -> u64 {
        self.sum(|f| f.rows_suppressed)
    }
    pub fn rows_rejected(&self) -> u64 {
        self.sum(|f| f.rows_rejected)
    }
    pub fn bytes(&self) -> u64 {
        self.sum(|f| if f.skipped { 0 } else { f.bytes })
    }
    pub fn files_skipped(&self) -> usize {
        self.files.iter().filter(|f| f.skipped).count()
    }
}

/// Receives progress while importing (the CLI draws progress bars with it).
pub trait ImportProgress: Send + Sync {
    /// The list of files is known.
    fn files(&self, _files: &[InputFile]) {}
    /// A file starts.
    fn start_file(&self, _file: &InputFile) {}
    /// Bytes of the current file consumed so far (absolute).
    fn bytes(&self, _done: u64) {}
    /// A file is done (imported, skipped or failed).
    fn finish_file(&self, _report: &FileReport) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ImportProgress for NoProgress {}

/// Imports files into a lake.
#[derive(Debug, Clone)]
pub struct Importer {
    engine: Engine,
    options: ImportOptions,
}

impl Importer {
    /// An importer writing through `engine`'s lake.
    pub fn new(engine: Engine, options: ImportOptions) -> Self {
        Importer { engine, options }
    }

    fn lake(&self) -> &Arc<Lake> {
        self.engine.lake()
    }

    /// Imports everything `input` names (a file, a folder, a glob; a path or a URL).
    pub async fn import(&self, input: &str, progress: &dyn ImportProgress) -> Result<ImportReport> {
        let started = Instant::now();
        if !tessera_core::config::valid_name(&self.options.source) {
            return Err(ImportError::BadOption(format!(
                "source name {:?}: use letters, digits, '_' and '-' only",
                self.options.source
            )));
        }
        let files = resolve_inputs(input, self.lake().storage_options()).await?;
        if files.is_empty() {
            return Err(ImportError::NoInput(input.to_owned()));
        }
        progress.files(&files);
        self.lake().create_missing_tables().await?;
        let mut sink = sink::EventSink::new(&self.engine, &self.options).await?;
        let mut report = ImportReport::default();
        for file in &files {
            progress.start_file(file);
            let format = match self.options.format {
                Some(f) => f,
                None => file.format_from_name()?,
            };
            if !self.options.force
                && let Some(version) = sink.already_imported(file).await?
            {
                let r = FileReport {
                    location: file.location(),
                    format: format.name().into(),
                    skipped: true,
                    bytes: file.size,
                    events_version: version,
                    ..FileReport::default()
                };
                progress.finish_file(&r);
                report.files.push(r);
                continue;
            }
            let mut run = sink.start_file(file, format).await?;
            let outcome = match format {
                Format::Ndjson | Format::Json if self.options.mapping.is_none() => {
                    ndjson::import_file(file, format, &self.options, &mut run, progress).await
                }
                _ => {
                    mapping::import_file(
                        &self.engine,
                        file,
                        format,
                        &self.options,
                        &mut run,
                        progress,
                    )
                    .await
                }
            };
            let file_report = match outcome {
                Ok(()) => sink.finish_file(run).await?,
                Err(e) => {
                    run.abort();
                    return Err(e);
                }
            };
            progress.finish_file(&file_report);
            report.files.push(file_report);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }
}
