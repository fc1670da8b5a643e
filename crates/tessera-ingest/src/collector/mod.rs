//! Live collection: Segment-shaped requests → validated events → the write-ahead log
//! (acknowledged once fsynced) → `events` through periodic Delta commits.
//!
//! Exactly once: each WAL record is one request's accepted events as an Arrow IPC
//! batch with a sequence number. The flusher commits records to `events` with Delta
//! application transaction `tessera-collector-<id>` = the last sequence included, in the
//! same commit as the rows, so after a crash the records above the committed sequence
//! are replayed and the ones below are not. `messageId`s are deduplicated over a
//! window (24 h by default) across retries and restarts.
//!
//! This module knows nothing of HTTP: the server hands it request bodies and maps its
//! results and [`CollectError`]s to responses.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tessera_core::batch::EventBatchBuilder;
use tessera_core::event::{BatchDefaults, Event, ParseContext, parse_event_with, parse_timestamp};
use tessera_core::schema::{self, EVENTS, PLAN_VIOLATIONS, QUARANTINE, SUPPRESSIONS, events_col};
use tessera_engine::Engine;
use tessera_lake::CommitNote;
use tessera_lake::wal::Wal;
use tokio::sync::{mpsc, oneshot};

use crate::hash::id_hash;
use crate::plan::{BLOCKED_CODE, Check, TrackingPlan, TrackingPlans, ViolationCounts};
use crate::quarantine::{QuarantineBuilder, Refused};
use crate::suppress::SuppressionList;

mod body;
mod dedup;
mod metrics;
mod wal_writer;

pub use body::body_write_key;
use body::{BatchBody, SingleBody, sent_at};
use dedup::{Dedup, refused_hash, remember, remember_refused};
pub use metrics::Metrics;
use wal_writer::{
    QUARANTINE_RECORD, VIOLATIONS_RECORD, WalCommand, WalWrite, decode, decode_as, encode,
    wal_writer,
};

/// Settings of a collector.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Folder of the write-ahead log (local disk).
    pub wal_dir: PathBuf,
    /// How often buffered events are committed to `events`.
    pub flush_interval: Duration,
    /// Largest accepted event (JSON bytes).
    pub max_event_bytes: usize,
    /// Largest accepted request body (JSON bytes, after decompression).
    pub max_batch_bytes: usize,
    /// `messageId`s seen within this window are dropped as duplicates.
    pub dedup_window: Duration,
    /// At most this many recent `messageId`s are remembered (bounds memory: ~40 bytes
    /// each); the window is the shorter of `dedup_window` and this many ids.
    pub dedup_capacity: usize,
    /// Names this collector's transactions (`tessera-collector-<id>`).
    pub collector_id: String,
    /// Which event times are accepted (`[events]`).
    pub window: tessera_core::event::TimeWindow,
    /// Requests are refused (`503` with `Retry-After`) while this many events are
    /// acknowledged and not yet committed...
    pub max_buffered_events: usize,
    /// ... or while they hold this many bytes of memory.
    pub max_buffered_bytes: usize,
    /// Requests are refused (`503` with `Retry-After`) while the write-ahead log holds
    /// this many bytes: the lake's store has been unreachable for long.
    pub max_wal_bytes: u64,
    /// The tracking plans of the sources (`sql/plans/`).
    pub plans: Arc<TrackingPlans>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            wal_dir: PathBuf::from("wal"),
            flush_interval: Duration::from_secs(2),
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            dedup_window: Duration::from_secs(24 * 3600),
            dedup_capacity: 5_000_000,
            collector_id: "default".into(),
            window: tessera_core::event::TimeWindow::default(),
            max_buffered_events: 1_000_000,
            max_buffered_bytes: 512 << 20,
            max_wal_bytes: 4 << 30,
            plans: Arc::default(),
        }
    }
}

/// Runs `sql` on `ctx` and hands each result batch, text columns as `Utf8`, to `each`.
async fn recent_rows(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    doing: &'static str,
    mut each: impl FnMut(&RecordBatch),
) -> crate::Result<()> {
    let mut stream = tessera_engine::execute(ctx, sql, tessera_engine::Policy::ReadOnly).await?;
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|source| crate::ImportError::DataFusion { doing, source })?
    {
        let columns = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                arrow::datatypes::DataType::Utf8View | arrow::datatypes::DataType::LargeUtf8 => {
                    arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
                }
                _ => Ok(c.clone()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| crate::ImportError::Arrow { doing, source })?;
        let batch = RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::new(
                batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(&columns)
                    .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
                    .collect::<Vec<_>>(),
            )),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(|source| crate::ImportError::Arrow { doing, source })?;
        each(&batch);
    }
    Ok(())
}

/// A flush of at least this many events encodes Parquet on several cores (fewer stay
/// on one, so that a quiet collector does not write several small files per commit).
const PARALLEL_FLUSH_ROWS: usize = 50_000;

/// File in a WAL folder naming the collector that owns it.
const COLLECTOR_ID_FILE: &str = "collector-id";

/// The id of the collector whose write-ahead log is `wal_dir`: the one kept in the
/// folder; for a folder that already holds a log from before ids were kept,
/// `default`; for a new folder, a random one — then kept. Several collectors on one
/// lake, each with its own folder, so never share transaction ids.
pub fn collector_id_for(wal_dir: &std::path::Path) -> std::io::Result<String> {
    let file = wal_dir.join(COLLECTOR_ID_FILE);
    match std::fs::read_to_string(&file) {
        Ok(id) if tessera_core::config::valid_name(id.trim()) => return Ok(id.trim().to_owned()),
        Ok(id) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds {id:?}, not a collector id", file.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(wal_dir)?;
    let has_log = std::fs::read_dir(wal_dir)?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("wal-"));
    let id = if has_log {
        "default".to_owned()
    } else {
        let seed = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64
            ^ (u64::from(std::process::id()) << 32);
        format!("c{:012x}", tessera_core::random::splitmix(seed) >> 16)
    };
    let tmp = wal_dir.join(format!("{COLLECTOR_ID_FILE}.tmp"));
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &file)?;
    Ok(id)
}

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/batch` or `/v1/import`: `{"batch": [...]}`.
    Batch,
    /// `/v1/track`, `/v1/identify`, ...: one event whose type is the endpoint's.
    Single(&'static str),
}

/// An event of a request that was not stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// Position in the batch (0 for single-event endpoints).
    pub index: usize,
    pub code: &'static str,
    pub message: String,
    /// The event's JSON text, for `quarantine`.
    #[serde(skip)]
    pub payload: Option<String>,
    /// The tracking plan's verdict, when the plan blocked the event.
    #[serde(skip)]
    pub plan: Option<Check>,
}

/// What happened to a request whose events were (at least partly) stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Events now durable (in the write-ahead log).
    pub accepted: usize,
    /// Events dropped because their `messageId` was already collected.
    pub duplicates: usize,
    /// Events acknowledged and dropped: they carry a suppressed identifier.
    pub suppressed: usize,
    /// Refused events, each kept in `quarantine`.
    pub rejected: Vec<Rejected>,
}

/// Why a request was refused as a whole (nothing of it stored).
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The body is larger than the batch limit.
    #[error("request body is {size} bytes, over the limit of {limit} bytes per request")]
    BatchTooLarge { size: usize, limit: usize },
    /// A single-event request is larger than the event limit.
    #[error("event is {size} bytes, over the limit of {limit} bytes per event")]
    EventTooLarge { size: usize, limit: usize },
    /// The body is not JSON, or not the JSON the endpoint takes.
    #[error("{0}")]
    BadBody(String),
    /// Every event of the request was invalid.
    #[error("no valid event in the request: {}", first_reason(.0))]
    NoValidEvent(Vec<Rejected>),
    /// The write-ahead log could not be written: nothing was acknowledged.
    #[error("cannot store events: {0}")]
    Unavailable(String),
    /// The collector is shutting down.
    #[error("the collector is shutting down")]
    ShuttingDown,
    /// More is acknowledged and not yet committed than the bounds allow: retry later.
    #[error(
        "the collector is overloaded: {events} events ({bytes} bytes) wait to be committed, \
         over the bound of {max_events} events or {max_bytes} bytes; retry shortly"
    )]
    Overloaded {
        events: usize,
        bytes: usize,
        max_events: usize,
        max_bytes: usize,
    },
    /// The write-ahead log holds as much as it may: the lake takes nothing (its store is
    /// unreachable); retry later.
    #[error(
        "the write-ahead log holds {bytes} bytes waiting for the lake, at the bound of \
         {max} bytes ([server] max_wal_bytes); retry shortly"
    )]
    WalFull { bytes: u64, max: u64 },
}

fn first_reason(r: &[Rejected]) -> String {
    r.first()
        .map(|r| format!("event {}: {}", r.index, r.message))
        .unwrap_or_default()
}

impl CollectError {
    /// A stable code for responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CollectError::BatchTooLarge { .. } => "batch_too_large",
            CollectError::EventTooLarge { .. } => "event_too_large",
            CollectError::BadBody(_) => "malformed_json",
            CollectError::NoValidEvent(r) => r.first().map_or("invalid_event", |r| r.code),
            CollectError::Unavailable(_) => "unavailable",
            CollectError::ShuttingDown => "shutting_down",
            CollectError::Overloaded { .. } => "overloaded",
            CollectError::WalFull { .. } => "wal_full",
        }
    }
}

/// Events acknowledged but not yet in `events`: `(sequence, batch)`; and refused events
/// not yet in `quarantine`.
#[derive(Default)]
struct Buffer {
    batches: VecDeque<(u64, RecordBatch)>,
    events: usize,
    /// Arrow memory of `batches` and `quarantine`.
    bytes: usize,
    quarantine: VecDeque<(u64, RecordBatch)>,
    /// Tracking-plan violations not yet in `plan_violations`.
    violations: VecDeque<(u64, RecordBatch)>,
}

/// What a request keeps until its records are durable: the id hashes it claimed in
/// the dedup window (released if the write fails) and its plan violations.
#[derive(Default)]
struct Pending {
    ids: Vec<u128>,
    counts: ViolationCounts,
}

impl Buffer {
    /// Takes a record made durable with sequence `seq`.
    fn push(&mut self, kind: Record, seq: u64, batch: RecordBatch) {
        self.bytes += batch.get_array_memory_size();
        match kind {
            Record::Events => {
                self.events += batch.num_rows();
                self.batches.push_back((seq, batch));
            }
            Record::Refused => self.quarantine.push_back((seq, batch)),
            Record::Violations => self.violations.push_back((seq, batch)),
        }
    }
}

/// What a write-ahead log record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Events,
    Refused,
    Violations,
}

/// The live collector.
pub struct Collector {
    engine: Engine,
    config: CollectorConfig,
    wal: mpsc::UnboundedSender<WalCommand>,
    buffer: Mutex<Buffer>,
    dedup: Mutex<Dedup>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Highest sequence committed to `events`.
    committed: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    /// Identifiers whose events are acknowledged and dropped; reloaded by the flusher
    /// when `suppressions` changes.
    suppressions: std::sync::RwLock<Arc<SuppressionList>>,
    pub metrics: Metrics,
    /// Why the last commit to the lake failed, while it keeps failing.
    flush_failure: Mutex<Option<String>>,
    /// Why the last write to the write-ahead log failed (a full disk), until one works.
    wal_failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("wal_dir", &self.config.wal_dir)
            .finish()
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Collector {
    /// Opens the write-ahead log, replays what the lake does not hold yet, loads the
    /// recent `messageId`s, and starts the WAL writer and the flusher.
    pub async fn start(engine: Engine, config: CollectorConfig) -> crate::Result<Arc<Collector>> {
        let lake = engine.lake().clone();
        lake.create_missing_tables().await?;
        let app = format!("tessera-collector-{}", config.collector_id);
        let committed = lake
            .transaction_version(EVENTS, &app)
            .await?
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let quarantined = lake
            .transaction_version(QUARANTINE, &app)
            .await?
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let counted = lake
            .transaction_version(PLAN_VIOLATIONS, &app)
            .await?
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let dir = config.wal_dir.clone();
        let (wal, records) = tokio::task::spawn_blocking(move || Wal::open(&dir, 64 << 20))
            .await
            .map_err(|e| crate::ImportError::worker("opening the write-ahead log", e))??;
        let mut buffer = Buffer::default();
        let mut dedup = Dedup {
            capacity: config.dedup_capacity.max(1),
            ..Dedup::default()
        };
        for r in records {
            let bad = |e: arrow::error::ArrowError| crate::ImportError::WalRecord {
                seq: r.seq,
                dir: config.wal_dir.display().to_string(),
                message: e.to_string(),
            };
            if let Some(counts) = r.payload.strip_prefix(VIOLATIONS_RECORD) {
                if r.seq > counted {
                    let batch =
                        decode_as(counts, &schema::plan_violations_schema()).map_err(bad)?;
                    buffer.push(Record::Violations, r.seq, batch);
                }
                continue;
            }
            if let Some(refused) = r.payload.strip_prefix(QUARANTINE_RECORD) {
                if r.seq > quarantined {
                    let batch = decode_as(refused, &schema::quarantine_schema()).map_err(bad)?;
                    remember_refused(
                        &mut dedup,
                        batch.column(1),
                        batch.column(2),
                        batch.column(7),
                    );
                    buffer.push(Record::Refused, r.seq, batch);
                }
                continue;
            }
            if r.seq <= committed {
                continue;
            }
            let batch = decode(&r.payload).map_err(bad)?;
            remember(&mut dedup, &batch);
            buffer.push(Record::Events, r.seq, batch);
        }
        let replayed = buffer.events + buffer.quarantine.len();
        // messageIds the lake received within the window.
        let since = now_micros() - config.dedup_window.as_micros() as i64;
        let ctx = engine.session().await?;
        recent_rows(
            &ctx,
            &format!(
                "SELECT message_id, received_at FROM events \
                 WHERE CAST(received_at AS BIGINT) >= {since}"
            ),
            "reading recent message ids",
            |b| {
                let ids = b.column(0).as_string::<i32>();
                let at = b.column(1).as_primitive::<TimestampMicrosecondType>();
                for i in 0..b.num_rows() {
                    dedup.insert(id_hash(ids.value(i)), at.value(i));
                }
            },
        )
        .await?;
        // Refused events kept within the window: a retry is not kept twice.
        recent_rows(
            &ctx,
            &format!(
                "SELECT received_at, source, payload FROM {QUARANTINE} \
                 WHERE CAST(received_at AS BIGINT) >= {since} AND origin LIKE 'collector:%'"
            ),
            "reading recent refused events",
            |b| remember_refused(&mut dedup, b.column(0), b.column(1), b.column(2)),
        )
        .await?;
        let suppressions = SuppressionList::load(&engine).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Metrics::default();
        metrics.wal_bytes.store(wal.bytes(), Ordering::Relaxed);
        metrics
            .buffered_events
            .store(replayed as u64, Ordering::Relaxed);
        let collector = Arc::new(Collector {
            engine,
            config,
            wal: tx,
            buffer: Mutex::new(buffer),
            dedup: Mutex::new(dedup),
            flush_lock: tokio::sync::Mutex::new(()),
            committed: AtomicU64::new(committed),
            closed: false.into(),
            suppressions: std::sync::RwLock::new(Arc::new(suppressions)),
            metrics,
            flush_failure: Mutex::new(None),
            wal_failure: Mutex::new(None),
        });
        let weak = Arc::downgrade(&collector);
        std::thread::Builder::new()
            .name("tessera-wal".into())
            .spawn(move || wal_writer(wal, rx, weak))
            .map_err(|source| crate::ImportError::Thread {
                what: "the write-ahead log writer",
                source,
            })?;
        let flusher = Arc::downgrade(&collector);
        let interval = collector.config.flush_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(c) = flusher.upgrade() else { break };
                if c.closed.load(Ordering::Relaxed) {
                    break;
                }
                match c.flush().await {
                    Err(e) => {
                        let message = e.to_string();
                        if let Ok(mut f) = c.flush_failure.lock() {
                            // Said once per outage, not every interval.
                            if f.is_none() {
                                tracing::error!(
                                    "committing collected events to the lake failed; they stay \
                                     in the write-ahead log and are retried: {message}"
                                );
                            }
                            *f = Some(message);
                        }
                    }
                    Ok(_) => {
                        if let Ok(mut f) = c.flush_failure.lock()
                            && f.take().is_some()
                        {
                            tracing::warn!("committing collected events works again");
                        }
                    }
                }
                if let Err(e) = c.refresh_suppressions().await {
                    tracing::warn!("reading the suppression list failed (will retry): {e}");
                }
            }
        });
        if replayed > 0 {
            tracing::info!("replayed {replayed} events from the write-ahead log");
            collector.flush().await?;
        }
        Ok(collector)
    }

    /// The transaction id of this collector's commits.
    pub fn app_id(&self) -> String {
        format!("tessera-collector-{}", self.config.collector_id)
    }

    /// The settings.
    pub fn config(&self) -> &CollectorConfig {
        &self.config
    }

    /// Validates a request body from `source` and makes its valid events durable.
    pub async fn collect(
        &self,
        source: &str,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Outcome, CollectError> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.collect_inner(source, endpoint, body).await;
        if let Err(e @ (CollectError::BadBody(_) | CollectError::EventTooLarge { .. })) = &result {
            self.quarantine_request(source, e, body).await;
        }
        match &result {
            Ok(o) => {
                self.metrics
                    .events_accepted
                    .fetch_add(o.accepted as u64, Ordering::Relaxed);
                self.metrics
                    .events_duplicate
                    .fetch_add(o.duplicates as u64, Ordering::Relaxed);
                self.metrics
                    .events_suppressed
                    .fetch_add(o.suppressed as u64, Ordering::Relaxed);
                for r in &o.rejected {
                    self.metrics.reject(r.code, 1);
                }
            }
            Err(CollectError::NoValidEvent(r)) => {
                for r in r {
                    self.metrics.reject(r.code, 1);
                }
            }
            Err(e) => self.metrics.reject(e.code(), 1),
        }
        result
    }

    async fn collect_inner(
        &self,
        source: &str,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Outcome, CollectError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(CollectError::ShuttingDown);
        }
        if let Ok(b) = self.buffer.lock()
            && (b.events >= self.config.max_buffered_events
                || b.bytes >= self.config.max_buffered_bytes)
        {
            return Err(CollectError::Overloaded {
                events: b.events,
                bytes: b.bytes,
                max_events: self.config.max_buffered_events,
                max_bytes: self.config.max_buffered_bytes,
            });
        }
        let wal_bytes = self.metrics.wal_bytes.load(Ordering::Relaxed);
        if wal_bytes >= self.config.max_wal_bytes {
            return Err(CollectError::WalFull {
                bytes: wal_bytes,
                max: self.config.max_wal_bytes,
            });
        }
        if body.len() > self.config.max_batch_bytes {
            return Err(CollectError::BatchTooLarge {
                size: body.len(),
                limit: self.config.max_batch_bytes,
            });
        }
        let text = std::str::from_utf8(body)
            .map_err(|e| CollectError::BadBody(format!("the body is not UTF-8 text: {e}")))?;
        let received_at = now_micros();
        let mut builder = EventBatchBuilder::new(source, 128);
        let mut outcome = Outcome::default();
        let mut pending = Pending::default();
        let plan = self.config.plans.get(source).map(|p| (source, p.as_ref()));
        let with_type;
        let events: Vec<(Event<'_>, Option<Check>)> = match endpoint {
            Endpoint::Batch => {
                let parsed: BatchBody<'_> = serde_json::from_str(text).map_err(|e| {
                    CollectError::BadBody(format!(
                        "the body must be a JSON object {{\"batch\": [events...]}}: {e}"
                    ))
                })?;
                self.metrics
                    .events_received
                    .fetch_add(parsed.batch.len() as u64, Ordering::Relaxed);
                let ctx = ParseContext::live(received_at, sent_at(parsed.sent_at))
                    .with_window(self.config.window);
                let defaults = BatchDefaults {
                    context: parsed.context,
                    integrations: parsed.integrations,
                };
                let events = parsed
                    .batch
                    .iter()
                    .copied()
                    .enumerate()
                    .filter_map(|(index, raw)| {
                        self.parse_one(
                            index,
                            raw.get(),
                            &ctx,
                            defaults,
                            plan,
                            &mut outcome.rejected,
                        )
                    })
                    .collect();
                // A refused event is kept with what the batch gave it, so that a
                // replay sees the event the collector saw.
                for r in &mut outcome.rejected {
                    if let Some(p) = &r.payload {
                        r.payload = Some(body::with_batch_fields(p, &parsed));
                    }
                }
                events
            }
            Endpoint::Single(kind) => {
                self.metrics.events_received.fetch_add(1, Ordering::Relaxed);
                if body.len() > self.config.max_event_bytes {
                    return Err(CollectError::EventTooLarge {
                        size: body.len(),
                        limit: self.config.max_event_bytes,
                    });
                }
                let head: SingleBody<'_> = serde_json::from_str(text).map_err(|e| {
                    CollectError::BadBody(format!("the body must be one JSON event object: {e}"))
                })?;
                let ctx = ParseContext::live(received_at, sent_at(head.sent_at))
                    .with_window(self.config.window);
                let event_text = if head.event_type.is_some() {
                    text
                } else {
                    // The endpoint names the type.
                    let rest = text.trim_start().strip_prefix('{').unwrap_or(text);
                    with_type = if rest.trim_start().starts_with('}') {
                        format!("{{\"type\":\"{kind}\"{rest}")
                    } else {
                        format!("{{\"type\":\"{kind}\",{rest}")
                    };
                    &with_type
                };
                self.parse_one(
                    0,
                    event_text,
                    &ctx,
                    BatchDefaults::default(),
                    plan,
                    &mut outcome.rejected,
                )
                .into_iter()
                .collect()
            }
        };
        self.admit(
            source,
            &events,
            received_at,
            &mut builder,
            &mut outcome,
            &mut pending,
        );
        // Refused events not kept already (a retry of the same request).
        let fresh: Vec<Rejected> = match self.dedup.lock() {
            Ok(mut d) => outcome
                .rejected
                .iter()
                .filter(|r| {
                    let Some(p) = &r.payload else { return true };
                    let h = refused_hash(source, p);
                    let new = d.insert(h, received_at);
                    if new {
                        pending.ids.push(h);
                        if let Some(check) = &r.plan {
                            pending.counts.add(received_at, source, check);
                        }
                    }
                    new
                })
                .cloned()
                .collect(),
            Err(_) => outcome.rejected.clone(),
        };
        let refused = self.refused_batch(source, received_at, &fresh);
        let events = (!builder.is_empty()).then(|| builder.finish());
        let violations = (!pending.counts.is_empty()).then(|| pending.counts.finish());
        let rows = events.as_ref().map_or(0, RecordBatch::num_rows);
        let records: Vec<(Record, RecordBatch)> = [
            (Record::Violations, violations),
            (Record::Refused, refused),
            (Record::Events, events),
        ]
        .into_iter()
        .filter_map(|(kind, b)| b.map(|b| (kind, b)))
        .collect();
        if !records.is_empty()
            && let Err(e) = self.make_durable(records).await
        {
            // Not durable: forget the ids so a retry is accepted.
            if let Ok(mut d) = self.dedup.lock() {
                for h in &pending.ids {
                    d.seen.remove(h);
                }
            }
            return Err(e);
        }
        if rows == 0
            && outcome.duplicates == 0
            && outcome.suppressed == 0
            && !outcome.rejected.is_empty()
        {
            return Err(CollectError::NoValidEvent(outcome.rejected));
        }
        outcome.accepted = rows;
        Ok(outcome)
    }

    /// The `quarantine` rows of the refused events of one request.
    fn refused_batch(
        &self,
        source: &str,
        received_at: i64,
        rejected: &[Rejected],
    ) -> Option<RecordBatch> {
        if rejected.is_empty() {
            return None;
        }
        let origin = format!("collector:{}", self.config.collector_id);
        let mut b = QuarantineBuilder::default();
        for r in rejected {
            b.push(&Refused {
                received_at,
                source,
                origin: &origin,
                position: Some(r.index as i64),
                code: r.code,
                message: &r.message,
                payload: r.payload.as_deref(),
            });
        }
        self.metrics
            .events_quarantined
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        Some(b.finish())
    }

    /// Writes a request's records (accepted events, refused events, plan violations)
    /// to the write-ahead log, fsynced together; the WAL writer buffers them for the
    /// flusher, in sequence order, before answering.
    async fn make_durable(&self, records: Vec<(Record, RecordBatch)>) -> Result<(), CollectError> {
        let unavailable = |e: arrow::error::ArrowError| CollectError::Unavailable(e.to_string());
        let mut waits = Vec::with_capacity(records.len());
        for (kind, batch) in records {
            let prefix: &[u8] = match kind {
                Record::Events => b"",
                Record::Refused => QUARANTINE_RECORD,
                Record::Violations => VIOLATIONS_RECORD,
            };
            let mut payload = prefix.to_vec();
            payload.extend(encode(&batch).map_err(unavailable)?);
            let (done, wait) = oneshot::channel();
            self.wal
                .send(WalCommand::Write(WalWrite {
                    payload,
                    record: (kind, batch),
                    done,
                }))
                .map_err(|_| CollectError::Unavailable("the WAL writer stopped".into()))?;
            waits.push(wait);
        }
        for wait in waits {
            wait.await
                .map_err(|_| CollectError::Unavailable("the WAL writer stopped".into()))
                .and_then(|r| r.map_err(CollectError::Unavailable))?;
        }
        Ok(())
    }

    /// Keeps a request refused as a whole (not JSON, an event over the size limit) in
    /// `quarantine`; a failure to do so is logged, the answer stays the refusal.
    async fn quarantine_request(&self, source: &str, error: &CollectError, body: &[u8]) {
        let rejected = [Rejected {
            index: 0,
            code: error.code(),
            message: error.to_string(),
            payload: Some(String::from_utf8_lossy(body).into_owned()),
            plan: None,
        }];
        let now = now_micros();
        let h = refused_hash(source, rejected[0].payload.as_deref().unwrap_or(""));
        if !self.dedup.lock().is_ok_and(|mut d| d.insert(h, now)) {
            return;
        }
        let refused = self.refused_batch(source, now, &rejected);
        let records = refused.map(|r| (Record::Refused, r)).into_iter().collect();
        if let Err(e) = self.make_durable(records).await {
            if let Ok(mut d) = self.dedup.lock() {
                d.seen.remove(&h);
            }
            tracing::warn!("keeping a refused request in quarantine failed: {e}");
        }
    }

    /// One event of a request, validated and checked against its source's tracking
    /// plan; a rejection (or an event the plan blocks) is recorded instead.
    fn parse_one<'t>(
        &self,
        index: usize,
        text: &'t str,
        ctx: &ParseContext,
        defaults: BatchDefaults<'_>,
        plan: Option<(&str, &TrackingPlan)>,
        rejected: &mut Vec<Rejected>,
    ) -> Option<(Event<'t>, Option<Check>)> {
        if text.len() > self.config.max_event_bytes {
            rejected.push(Rejected {
                index,
                code: "event_too_large",
                message: format!(
                    "event is {} bytes, over the limit of {} bytes per event",
                    text.len(),
                    self.config.max_event_bytes
                ),
                payload: Some(text.to_owned()),
                plan: None,
            });
            return None;
        }
        let event = parse_event_with(text, ctx, defaults)
            .map_err(|e| {
                rejected.push(Rejected {
                    index,
                    code: e.code(),
                    message: e.to_string(),
                    payload: Some(text.to_owned()),
                    plan: None,
                })
            })
            .ok()?;
        let Some((source, plan)) = plan else {
            return Some((event, None));
        };
        match plan.check(&event) {
            Some(check) if check.blocked => {
                rejected.push(Rejected {
                    index,
                    code: BLOCKED_CODE,
                    message: check.message(source),
                    payload: Some(text.to_owned()),
                    plan: Some(check),
                });
                None
            }
            check => Some((event, check)),
        }
    }

    /// Reloads the suppression list when the `suppressions` table has a new version;
    /// returns whether it did.
    pub async fn refresh_suppressions(&self) -> crate::Result<bool> {
        let known = self.suppression_list().version();
        let latest = self
            .engine
            .lake()
            .latest_version(SUPPRESSIONS, known)
            .await?;
        if latest == known {
            return Ok(false);
        }
        let list = Arc::new(SuppressionList::load(&self.engine).await?);
        if let Ok(mut s) = self.suppressions.write() {
            *s = list;
        }
        Ok(true)
    }

    /// The suppression list in force.
    pub fn suppression_list(&self) -> Arc<SuppressionList> {
        self.suppressions
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|_| Arc::new(SuppressionList::empty()))
    }

    /// Drops the events whose `messageId` is within the dedup window (one lock per
    /// request) and adds the others to `builder`, remembering their id hashes.
    fn admit(
        &self,
        source: &str,
        events: &[(Event<'_>, Option<Check>)],
        received_at: i64,
        builder: &mut EventBatchBuilder,
        outcome: &mut Outcome,
        pending: &mut Pending,
    ) {
        let suppressions = self.suppression_list();
        let suppressed = |e: &Event<'_>| {
            suppressions.suppresses(
                e.user_id.as_deref(),
                e.anonymous_id.as_deref(),
                &[
                    e.traits.as_deref(),
                    e.context.as_deref(),
                    e.properties.as_deref(),
                ],
            )
        };
        let Ok(mut dedup) = self.dedup.lock() else {
            events.iter().for_each(|(e, _)| builder.append(e));
            return;
        };
        dedup.expire(received_at - self.config.dedup_window.as_micros() as i64);
        for (event, check) in events {
            if suppressed(event) {
                outcome.suppressed += 1;
                continue;
            }
            let h = id_hash(&event.message_id);
            if dedup.insert(h, received_at) {
                pending.ids.push(h);
                builder.append(event);
                // Counted once: a retried event is a duplicate, not a second violation.
                if let Some(check) = check {
                    pending.counts.add(received_at, source, check);
                }
            } else {
                outcome.duplicates += 1;
            }
        }
    }

    /// A query session whose `events` (and `profile_events`) also hold the events
    /// acknowledged but not yet committed: the committed table at one version plus the
    /// buffered batches above that version's collector transaction, so no event is
    /// missing or counted twice while a flush is under way.
    pub async fn session(&self) -> crate::Result<datafusion::prelude::SessionContext> {
        let buffered: Vec<(u64, RecordBatch)> = self
            .buffer
            .lock()
            .map(|b| b.batches.iter().cloned().collect())
            .unwrap_or_default();
        let lake = self.engine.lake();
        let table = lake.open(EVENTS).await?;
        let committed = tessera_lake::transaction_version(EVENTS, &table, &self.app_id())
            .await?
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let ctx = self.engine.session().await?;
        let df_err = |source: datafusion::error::DataFusionError| crate::ImportError::DataFusion {
            doing: "building the live session",
            source,
        };
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| df_err(datafusion::error::DataFusionError::External(Box::new(e))))?;
        let provider = table.table_provider().await.map_err(df_err)?;
        let live: Vec<RecordBatch> = buffered
            .into_iter()
            .filter(|(seq, _)| *seq > committed)
            .map(|(_, b)| b)
            .collect();
        let memory = datafusion::datasource::MemTable::try_new(schema::events_schema(), vec![live])
            .map_err(df_err)?;
        ctx.deregister_table(EVENTS).map_err(df_err)?;
        ctx.register_table("events_committed", provider)
            .map_err(df_err)?;
        ctx.register_table("events_buffered", Arc::new(memory))
            .map_err(df_err)?;
        ctx.sql(
            "CREATE VIEW events AS \
             SELECT * FROM events_committed UNION ALL SELECT * FROM events_buffered",
        )
        .await
        .map_err(df_err)?;
        if ctx.table_exist("identity_map").map_err(df_err)? {
            tessera_engine::register_profile_events(&ctx).await?;
        }
        Ok(ctx)
    }

    /// Why the collector is not healthy, if it is not: commits to the lake failing or
    /// late (the store unreachable or slow), or more waiting than the bounds allow.
    pub fn degraded(&self) -> Option<String> {
        if let Some(e) = self.wal_failure.lock().ok().and_then(|f| f.clone()) {
            return Some(format!(
                "writing the write-ahead log fails (requests get 503 until it works): {e}"
            ));
        }
        let wal_bytes = self.metrics.wal_bytes.load(Ordering::Relaxed);
        if wal_bytes >= self.config.max_wal_bytes {
            return Some(format!(
                "the write-ahead log is full: {wal_bytes} bytes wait for the lake \
                 ([server] max_wal_bytes = {}); requests get 503 with Retry-After",
                self.config.max_wal_bytes
            ));
        }
        if let Some(e) = self.flush_failure.lock().ok().and_then(|f| f.clone()) {
            return Some(format!(
                "committing to the lake fails (events wait in the write-ahead log): {e}"
            ));
        }
        let (bytes, lag) = self.backlog();
        let events = self.metrics.buffered_events.load(Ordering::Relaxed) as usize;
        if events >= self.config.max_buffered_events || bytes >= self.config.max_buffered_bytes {
            return Some(
                "overloaded: acknowledged events wait to be committed faster than the lake \
                 takes them; requests get 503 with Retry-After"
                    .into(),
            );
        }
        let late = (self.config.flush_interval * 5).max(Duration::from_secs(10));
        if lag > late.as_micros() as i64 {
            return Some(format!(
                "commits to the lake are late: the oldest acknowledged event has waited {} s \
                 (the lake's store is slow or unreachable)",
                lag / 1_000_000
            ));
        }
        None
    }

    /// Records whether the last write to the write-ahead log failed; said once per
    /// outage.
    fn wal_written(&self, failure: Option<String>) {
        let Ok(mut f) = self.wal_failure.lock() else {
            return;
        };
        match (&*f, &failure) {
            (None, Some(e)) => tracing::error!(
                "writing the write-ahead log failed; requests get 503 until it works: {e}"
            ),
            (Some(_), None) => tracing::warn!("writing the write-ahead log works again"),
            _ => {}
        }
        *f = failure;
    }

    /// Bytes of memory held by acknowledged, uncommitted events, and how long the oldest
    /// of them has waited (microseconds; 0 when none wait): the flush lag.
    pub fn backlog(&self) -> (usize, i64) {
        let Ok(b) = self.buffer.lock() else {
            return (0, 0);
        };
        let oldest = b.batches.front().and_then(|(_, batch)| {
            let at = batch
                .column(events_col::RECEIVED_AT)
                .as_primitive::<TimestampMicrosecondType>();
            (!at.is_empty()).then(|| at.value(0))
        });
        (b.bytes, oldest.map_or(0, |t| (now_micros() - t).max(0)))
    }

    /// Acknowledged events not yet committed to `events`, for queries that must see
    /// them: every buffered batch above the committed sequence.
    pub fn buffered(&self) -> Vec<RecordBatch> {
        let committed = self.committed.load(Ordering::Acquire);
        self.buffer
            .lock()
            .map(|b| {
                b.batches
                    .iter()
                    .filter(|(seq, _)| *seq > committed)
                    .map(|(_, batch)| batch.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Commits to `table` the buffered records `records` selects with sequences up to
    /// `last` and above the table's own transaction for this collector (a crash after a
    /// commit and before the WAL release leaves records the lake holds: never commit a
    /// sequence twice, checked on the snapshot the commit builds on). Returns the rows.
    async fn commit_pending(
        &self,
        table: &str,
        last: u64,
        records: impl Fn(&Buffer) -> &VecDeque<(u64, RecordBatch)>,
    ) -> crate::Result<usize> {
        self.commit_pending_as(table, last, records, |b| b).await
    }

    /// [`commit_pending`](Self::commit_pending) with the pending batches transformed
    /// first (violation counts of many requests summed into one batch).
    async fn commit_pending_as(
        &self,
        table: &str,
        last: u64,
        records: impl Fn(&Buffer) -> &VecDeque<(u64, RecordBatch)>,
        transform: impl FnOnce(Vec<RecordBatch>) -> Vec<RecordBatch>,
    ) -> crate::Result<usize> {
        let def = schema::table(table).ok_or(crate::ImportError::Engine(
            tessera_engine::EngineError::Register {
                table: table.into(),
                message: "no table definition".into(),
            },
        ))?;
        let app = self.app_id();
        let mut writer = self.engine.lake().append_writer(&def).await?;
        let done = writer
            .transaction_version(&app)
            .await?
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        let pending: Vec<RecordBatch> = self
            .buffer
            .lock()
            .map(|b| {
                records(&b)
                    .iter()
                    .filter(|(s, _)| *s > done && *s <= last)
                    .map(|(_, x)| x.clone())
                    .collect()
            })
            .unwrap_or_default();
        if pending.is_empty() {
            writer.abort();
            return Ok(0);
        }
        let pending = transform(pending);
        let rows: usize = pending.iter().map(RecordBatch::num_rows).sum();
        if rows < PARALLEL_FLUSH_ROWS {
            for batch in pending {
                writer.write(batch).await?;
            }
        } else {
            // A large backlog (sustained load, or a store that was away): encode on
            // every core, one commit for all the files.
            let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
            let mut running = Vec::with_capacity(lanes);
            for _ in 1..lanes {
                running.push(crate::sink::Lane::start(
                    self.engine.lake().append_writer(&def).await?,
                ));
            }
            let mut mine = Vec::new();
            for (i, batch) in pending.into_iter().enumerate() {
                match running.get_mut(i % lanes) {
                    Some(lane) => lane.write(batch).await?,
                    None => mine.push(batch),
                }
            }
            for batch in mine {
                writer.write(batch).await?;
            }
            for lane in running {
                writer.absorb(lane.finish().await?).await?;
            }
        }
        writer
            .commit(
                CommitNote::new("collect", "tessera serve")
                    .detail("table", table)
                    .detail("rows", rows as u64)
                    .transaction(&app, last as i64),
            )
            .await?;
        Ok(rows)
    }

    /// Commits every buffered batch to `events`, every refused event to `quarantine`
    /// and the plan violations to `plan_violations` (one Delta commit each, carrying the last sequence as its
    /// transaction), then releases the WAL. Returns the events written.
    pub async fn flush(&self) -> crate::Result<usize> {
        let _guard = self.flush_lock.lock().await;
        let (last, (refused_pending, counted_pending)) = {
            let b = self
                .buffer
                .lock()
                .map_err(|_| crate::ImportError::Poisoned("buffer"))?;
            let last_events = b.batches.back().map(|(s, _)| *s);
            let last_refused = b.quarantine.back().map(|(s, _)| *s);
            let last_counted = b.violations.back().map(|(s, _)| *s);
            (
                last_events.max(last_refused).max(last_counted),
                (last_refused.is_some(), last_counted.is_some()),
            )
        };
        let Some(last) = last else { return Ok(0) };
        let started = Instant::now();
        // Violation counts and refused events first, then events; each commit carries
        // the last sequence.
        if counted_pending {
            self.commit_pending_as(
                PLAN_VIOLATIONS,
                last,
                |b| &b.violations,
                |batches| vec![ViolationCounts::combine(&batches)],
            )
            .await?;
        }
        if refused_pending {
            self.commit_pending(QUARANTINE, last, |b| &b.quarantine)
                .await?;
        }
        let rows = self.commit_pending(EVENTS, last, |b| &b.batches).await?;
        self.committed.store(last, Ordering::Release);
        let remaining = {
            let mut b = self
                .buffer
                .lock()
                .map_err(|_| crate::ImportError::Poisoned("buffer"))?;
            while b.batches.front().is_some_and(|(s, _)| *s <= last) {
                if let Some((_, x)) = b.batches.pop_front() {
                    b.events -= x.num_rows();
                    b.bytes = b.bytes.saturating_sub(x.get_array_memory_size());
                }
            }
            while b.quarantine.front().is_some_and(|(s, _)| *s <= last) {
                if let Some((_, x)) = b.quarantine.pop_front() {
                    b.bytes = b.bytes.saturating_sub(x.get_array_memory_size());
                }
            }
            while b.violations.front().is_some_and(|(s, _)| *s <= last) {
                if let Some((_, x)) = b.violations.pop_front() {
                    b.bytes = b.bytes.saturating_sub(x.get_array_memory_size());
                }
            }
            b.events
        };
        let _ = self.wal.send(WalCommand::Release(last));
        let micros = started.elapsed().as_micros() as u64;
        self.metrics
            .events_flushed
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.metrics.flushes.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .flush_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.metrics
            .flush_micros_last
            .store(micros, Ordering::Relaxed);
        self.metrics
            .buffered_events
            .store(remaining as u64, Ordering::Relaxed);
        Ok(rows)
    }

    /// Stops accepting, commits what is buffered.
    pub async fn shutdown(&self) -> crate::Result<usize> {
        self.closed.store(true, Ordering::Relaxed);
        self.flush().await
    }
}
