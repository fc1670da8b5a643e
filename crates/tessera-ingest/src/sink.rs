//! Where parsed events go: deduplication on `message_id`, bad-row accounting, the
//! streaming append to `events` and the record in `imported_files`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BooleanArray, BooleanBufferBuilder, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Date32Type, Int64Type};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use tessera_core::schema::{self, EVENTS, IMPORTED_FILES, PLAN_VIOLATIONS, QUARANTINE, events_col};
use tessera_engine::Engine;
use tessera_lake::{AppendWriter, CommitNote, Lake};

use crate::error::{ImportError, Result, RowError};
use crate::hash::id_hash;
use crate::input::{Format, InputFile};
use crate::plan::ViolationCounts;
use crate::quarantine::{QuarantineBuilder, Refused};
use crate::{FileReport, ImportOptions, MAX_REPORTED_ERRORS};

/// What a parser hands the sink: batches of valid events and the bad rows.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub batches: Vec<RecordBatch>,
    pub errors: Vec<RowError>,
    pub rows_read: u64,
    /// Tracking-plan violations of the rows.
    pub violations: ViolationCounts,
}

/// Message ids already in the lake or already imported in this run, as 128-bit hashes.
struct Dedup {
    seen: HashSet<u128>,
    loaded_dates: HashSet<i32>,
    /// A session over `events` as it was when the import started; `None` when empty.
    events: Option<SessionContext>,
}

impl Dedup {
    /// Loads the ids of the lake's events on `dates` not loaded yet.
    async fn load_dates(&mut self, dates: &[i32]) -> Result<()> {
        let new: Vec<i32> = dates
            .iter()
            .copied()
            .filter(|d| !self.loaded_dates.contains(d))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.loaded_dates.extend(&new);
        let Some(ctx) = &self.events else {
            return Ok(());
        };
        let list: Vec<String> = new.iter().map(|d| format!("CAST({d} AS DATE)")).collect();
        let sql = format!(
            "SELECT message_id FROM {EVENTS} WHERE event_date IN ({})",
            list.join(", ")
        );
        let batches: Vec<RecordBatch> =
            tessera_engine::execute(ctx, &sql, tessera_engine::Policy::ReadOnly)
                .await?
                .try_collect()
                .await
                .map_err(tessera_engine::EngineError::from)?;
        for batch in batches {
            let ids = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|source| ImportError::Arrow {
                    doing: "reading message ids of events",
                    source,
                })?;
            for id in ids.as_string::<i32>().iter().flatten() {
                self.seen.insert(id_hash(id));
            }
        }
        Ok(())
    }

    /// Removes rows whose message id was seen; returns the rest and how many were dropped.
    async fn filter(&mut self, batch: RecordBatch) -> Result<(RecordBatch, u64)> {
        let dates: Vec<i32> = batch
            .column(events_col::EVENT_DATE)
            .as_primitive::<Date32Type>()
            .values()
            .iter()
            .copied()
            .collect();
        self.load_dates(&dates).await?;
        let ids: &StringArray = batch.column(events_col::MESSAGE_ID).as_string::<i32>();
        let mut keep = BooleanBufferBuilder::new(ids.len());
        let mut dropped = 0;
        for id in ids.iter() {
            let fresh = self.seen.insert(id_hash(id.unwrap_or("")));
            keep.append(fresh);
            dropped += u64::from(!fresh);
        }
        if dropped == 0 {
            return Ok((batch, 0));
        }
        let mask = BooleanArray::new(keep.finish(), None);
        let kept = filter_record_batch(&batch, &mask).map_err(|source| ImportError::Arrow {
            doing: "dropping duplicate events",
            source,
        })?;
        Ok((kept, dropped))
    }
}

/// State shared by every file of one import.
pub(crate) struct EventSink {
    lake: Arc<Lake>,
    suppressions: Arc<crate::suppress::SuppressionList>,
    dedup: Option<Dedup>,
    /// Fingerprint → events version, from `imported_files`.
    imported: HashMap<String, u64>,
    events_table: tessera_lake::deltalake::DeltaTable,
    source: String,
    max_errors: Option<u64>,
    /// Keep bad rows in `quarantine`.
    quarantine: bool,
    /// Commit plan violations to `plan_violations`.
    count_violations: bool,
}

fn app_id(fingerprint: &str) -> String {
    format!("tessera-import-{fingerprint}")
}

impl EventSink {
    pub(crate) async fn new(engine: &Engine, options: &ImportOptions) -> Result<Self> {
        let lake = engine.lake().clone();
        let events_table = lake.open(EVENTS).await?;
        let has_events = tessera_lake::table_stats(EVENTS, &events_table)?.files > 0;
        let ctx = engine.session().await?;
        let mut imported = HashMap::new();
        let batches: Vec<RecordBatch> = tessera_engine::execute(
            &ctx,
            &format!("SELECT fingerprint, events_version FROM {IMPORTED_FILES}"),
            tessera_engine::Policy::ReadOnly,
        )
        .await?
        .try_collect()
        .await
        .map_err(tessera_engine::EngineError::from)?;
        for b in batches {
            let fp = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).map_err(
                |source| ImportError::Arrow {
                    doing: "reading imported file fingerprints",
                    source,
                },
            )?;
            let fp = fp.as_string::<i32>();
            let v = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                imported.insert(fp.value(i).to_owned(), v.value(i).max(0) as u64);
            }
        }
        let suppressions = Arc::new(crate::suppress::SuppressionList::load(engine).await?);
        Ok(EventSink {
            lake,
            suppressions,
            dedup: Some(Dedup {
                seen: HashSet::new(),
                loaded_dates: HashSet::new(),
                events: has_events.then_some(ctx),
            }),
            imported,
            events_table,
            source: options.source.clone(),
            max_errors: options.max_errors,
            quarantine: options.quarantine,
            count_violations: options.count_violations,
        })
    }

    /// The events version that already holds `file`, if it was imported before.
    /// `Some(version)` when it was recorded, `Some(None)` when its events were committed
    /// but the record was not (a crash between the two commits).
    pub(crate) async fn already_imported(&self, file: &InputFile) -> Result<Option<Option<u64>>> {
        let fp = file.fingerprint();
        if let Some(v) = self.imported.get(&fp) {
            return Ok(Some(Some(*v)));
        }
        let txn =
            tessera_lake::transaction_version(EVENTS, &self.events_table, &app_id(&fp)).await?;
        Ok(txn.map(|_| None))
    }

    pub(crate) async fn start_file(&mut self, file: &InputFile, format: Format) -> Result<FileRun> {
        let def = schema::table(EVENTS).expect("events table");
        let mut lanes = Vec::with_capacity(WRITE_LANES);
        for _ in 0..WRITE_LANES {
            lanes.push(Lane::start(self.lake.append_writer(&def).await?));
        }
        Ok(FileRun {
            lanes,
            next_lane: 0,
            dedup: self.dedup.take().expect("one file at a time"),
            suppressions: self.suppressions.clone(),
            file: file.clone(),
            max_errors: self.max_errors,
            lake: self.lake.clone(),
            report: FileReport {
                location: file.location(),
                format: format.name().into(),
                bytes: file.size,
                ..FileReport::default()
            },
            source: self.source.clone(),
            quarantine: self.quarantine.then(QuarantineRows::default),
            violations: ViolationCounts::default(),
        })
    }

    pub(crate) async fn finish_file(&mut self, mut run: FileRun) -> Result<FileReport> {
        let fp = run.file.fingerprint();
        let r = &run.report;
        let note = CommitNote::new("import", "tessera import")
            .detail("location", r.location.clone())
            .detail("format", r.format.clone())
            .detail("fingerprint", fp.clone())
            .detail("rows_imported", r.rows_imported)
            .detail("rows_rejected", r.rows_rejected)
            .transaction(app_id(&fp), 0);
        let mut writers = Vec::with_capacity(run.lanes.len());
        for lane in run.lanes.drain(..) {
            writers.push(lane.finish().await?);
        }
        let mut writer = writers.pop().expect("at least one lane");
        for other in writers {
            writer.absorb(other).await?;
        }
        // Bad rows first: a crash before the events commit imports the file again, and
        // the quarantine transaction says its rows are there already.
        if let Some(q) = run.quarantine.take()
            && let Some(w) = q.writer
        {
            if w.transaction_version(&app_id(&fp)).await?.is_some() {
                w.abort();
            } else {
                w.commit(
                    CommitNote::new("import", "tessera import")
                        .detail("location", run.report.location.clone())
                        .detail("rows", run.report.rows_quarantined)
                        .transaction(app_id(&fp), 0),
                )
                .await?;
            }
        }
        if !run.violations.is_empty() && self.count_violations {
            // Once per file: a re-import after a crash finds the transaction and skips.
            let def = schema::table(PLAN_VIOLATIONS).expect("plan_violations table");
            let note = CommitNote::new("import", "tessera import")
                .detail("location", run.report.location.clone());
            self.lake
                .append_once(&def, run.violations.finish(), note, Some((&app_id(&fp), 0)))
                .await?;
        }
        let version = writer.commit(note).await?;
        run.report.events_version = version;
        self.record_import(&run, &fp).await?;
        if let Some(v) = version {
            self.imported.insert(fp, v);
        }
        self.dedup = Some(run.dedup);
        Ok(run.report)
    }

    async fn record_import(&self, run: &FileRun, fingerprint: &str) -> Result<()> {
        let r = &run.report;
        let now = chrono::Utc::now().timestamp_micros();
        let s = |v: &str| Arc::new(StringArray::from(vec![v])) as Arc<dyn Array>;
        let n = |v: u64| Arc::new(Int64Array::from(vec![v as i64])) as Arc<dyn Array>;
        let t = |v: Option<i64>| {
            Arc::new(TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC"))
                as Arc<dyn Array>
        };
        let batch = RecordBatch::try_new(
            schema::imported_files_schema(),
            vec![
                s(fingerprint),
                s(run.file.url.as_str()),
                n(run.file.size),
                t(run.file.last_modified),
                Arc::new(StringArray::from(vec![run.file.e_tag.clone()])),
                s(&r.format),
                s(&self.source),
                n(r.rows_read),
                n(r.rows_imported),
                n(r.rows_duplicate),
                n(r.rows_rejected),
                Arc::new(Int64Array::from(vec![r.events_version.map(|v| v as i64)])),
                t(Some(now)),
            ],
        )
        .map_err(|source| ImportError::Arrow {
            doing: "recording the imported file",
            source,
        })?;
        let mut w = self
            .lake
            .append_writer(&schema::table(IMPORTED_FILES).expect("imported_files table"))
            .await?;
        w.write(batch).await?;
        w.commit(
            CommitNote::new("import", "tessera import")
                .detail("fingerprint", fingerprint.to_owned()),
        )
        .await?;
        Ok(())
    }
}

/// One file being imported.
pub(crate) struct FileRun {
    lanes: Vec<Lane>,
    next_lane: usize,
    dedup: Dedup,
    suppressions: Arc<crate::suppress::SuppressionList>,
    file: InputFile,
    max_errors: Option<u64>,
    lake: Arc<Lake>,
    pub(crate) report: FileReport,
    pub(crate) source: String,
    /// Where bad rows go (`None` when the import keeps none).
    quarantine: Option<QuarantineRows>,
    /// The file's tracking-plan violations, committed with it.
    violations: ViolationCounts,
}

/// The bad rows of a file on their way to `quarantine`.
#[derive(Default)]
struct QuarantineRows {
    builder: QuarantineBuilder,
    writer: Option<AppendWriter>,
}

impl FileRun {
    /// Takes a parser's output: counts and keeps bad rows, deduplicates and writes the rest.
    pub(crate) async fn accept(&mut self, mut parsed: Parsed) -> Result<()> {
        self.violations
            .merge(std::mem::take(&mut parsed.violations));
        self.report.rows_read += parsed.rows_read;
        self.report.rows_rejected += parsed.errors.len() as u64;
        self.report
            .rejected_lines
            .extend(parsed.errors.iter().map(|e| e.line));
        if let Some(q) = &mut self.quarantine
            && !parsed.errors.is_empty()
        {
            let now = chrono::Utc::now().timestamp_micros();
            let origin = self.report.location.clone();
            for e in &parsed.errors {
                q.builder.push(&Refused {
                    received_at: now,
                    source: &self.source,
                    origin: &origin,
                    position: Some(e.line as i64),
                    code: e.code,
                    message: &e.reason,
                    payload: e.payload.as_deref(),
                });
            }
            self.report.rows_quarantined += parsed.errors.len() as u64;
            if q.writer.is_none() {
                let def = schema::table(QUARANTINE).expect("quarantine table");
                q.writer = Some(self.lake.append_writer(&def).await?);
            }
            if let Some(w) = &mut q.writer {
                w.write(q.builder.finish()).await?;
            }
        }
        let room = MAX_REPORTED_ERRORS.saturating_sub(self.report.errors.len());
        self.report
            .errors
            .extend(parsed.errors.into_iter().take(room));
        if let Some(max) = self.max_errors
            && self.report.rows_rejected > max
        {
            return Err(ImportError::TooManyErrors {
                location: self.report.location.clone(),
                rejected: self.report.rows_rejected,
                max,
                first: self.report.errors.clone(),
            });
        }
        for batch in parsed.batches {
            let (batch, suppressed) = self.suppressions.filter_batch(batch)?;
            self.report.rows_suppressed += suppressed;
            let (batch, dropped) = self.dedup.filter(batch).await?;
            self.report.rows_duplicate += dropped;
            self.report.rows_imported += batch.num_rows() as u64;
            let lane = self.next_lane % self.lanes.len();
            self.next_lane += 1;
            self.lanes[lane].write(batch).await?;
        }
        Ok(())
    }

    /// Abandons this file: nothing of it is committed.
    pub(crate) fn abort(self) {
        for lane in self.lanes {
            lane.task.abort();
        }
        if let Some(w) = self.quarantine.and_then(|q| q.writer) {
            w.abort();
        }
    }
}

/// Parquet encoding is the costliest step of an import, so batches are spread over
/// several appends that encode in parallel; their files land in one commit.
const WRITE_LANES: usize = 2;

/// One parallel append: a task that writes the batches it is sent.
pub(crate) struct Lane {
    tx: tokio::sync::mpsc::Sender<RecordBatch>,
    task: tokio::task::JoinHandle<Result<AppendWriter>>,
}

impl Lane {
    pub(crate) fn start(mut writer: AppendWriter) -> Lane {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
        let task = tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                writer.write(batch).await?;
            }
            Ok(writer)
        });
        Lane { tx, task }
    }

    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if self.tx.send(batch).await.is_err() {
            // The task ended early: its error says why.
            return Err(self.failure().await);
        }
        Ok(())
    }

    async fn failure(&mut self) -> ImportError {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => ImportError::worker("a Parquet writer", "stopped early"),
            Err(e) => ImportError::worker("a Parquet writer", e),
        }
    }

    pub(crate) async fn finish(self) -> Result<AppendWriter> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| ImportError::worker("a Parquet writer", e))?
    }
}
