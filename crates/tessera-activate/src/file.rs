//! The file destination: each sync run written as files to an object store (`s3://`,
//! `gs://`, `az://`) or a local folder, for warehouses, data teams and tools that load
//! audiences from a bucket.
//!
//! A run goes to `URL/SYNC/SEGMENT/v=VERSION/KIND/`, `KIND` being `full` (the first run,
//! and every run of a `full` sync: the whole membership) or `delta` (the changes since
//! the previous run). In it, in this order:
//!
//! 1. `_SUCCESS` of an earlier attempt is removed, so a folder being written never
//!    looks finished;
//! 2. `part-NNNNN.parquet` (or `.csv`, `.csv.gz`), one per planned batch, `NNNNN` its
//!    number in the run: one row per member change — `profile_id`, `change`
//!    (`entered`/`exited`), `refresh_version`, `changed_at`, `merged_into`,
//!    `message_id` (the same id the webhook destination sends), `user_id`, then the
//!    columns of the sync's `fields` query with their own types;
//! 3. objects of earlier attempts that this one did not write are deleted;
//! 4. `_manifest.json`: the run, its refresh versions, row counts, the schema, and each
//!    part's rows, bytes and SHA-256;
//! 5. `_SUCCESS` (empty), last.
//!
//! Everything written is a function of the planned run and the members' traits: keys,
//! row order (the plan's), the Parquet writer's settings, gzip without a timestamp, a
//! manifest without clocks. Writing the same run again (a crash before its delivery was
//! recorded, or `tessera activate resend`) produces byte-identical objects.
//!
//! A run is delivered as a whole ([`crate::deliver`]): every batch of it is recorded
//! `delivered` once `_SUCCESS` is written, or `retry` (with backoff) when the store
//! failed.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{Column, JoinType};
use datafusion::prelude::{DataFrame, Expr, SessionContext};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, compute_leaves};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde_json::{Value, json};
use sha2::Digest;
use tessera_core::config::{
    DestinationSection, ExportCompression, ExportFormat, SyncMode, SyncSection, is_url,
};
use tessera_core::schema::PROFILES;
use tessera_engine::Engine;

use crate::error::{ActivateError, Result};
use crate::ledger::BatchState;
use crate::member::{Change, MESSAGE_ID_LEN, Member, MessageIds, hex};

/// The columns every export row starts with; a `fields` column may not take one of
/// these names.
pub const BASE_COLUMNS: &[&str] = &[
    "profile_id",
    "change",
    "refresh_version",
    "changed_at",
    "merged_into",
    "message_id",
    "user_id",
];

/// Where and how a file destination writes.
pub struct Target {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    /// The destination's URL as configured (for messages).
    pub url: String,
    pub format: ExportFormat,
    pub gzip: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("format", &self.format)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The target of `[destinations.NAME]`; a relative path is taken from `dir`.
    pub fn new(name: &str, section: &DestinationSection, dir: &Path) -> Result<Target> {
        let bad = |message: String| ActivateError::BadDestination {
            key: format!("destinations.{name}.url"),
            message,
        };
        let url_text = section.url.trim();
        let (store, prefix): (Arc<dyn ObjectStore>, StorePath) = if is_url(url_text)
            && !url_text.starts_with("file://")
        {
            let url = url::Url::parse(url_text).map_err(|e| bad(format!("{url_text:?}: {e}")))?;
            let options = section
                .storage_options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let store =
                tessera_lake::object_store_for(&url, &options).map_err(|e| bad(e.to_string()))?;
            let prefix = StorePath::from_url_path(url.path())
                .map_err(|e| bad(format!("{url_text:?}: {e}")))?;
            (store, prefix)
        } else {
            let path = match url_text.strip_prefix("file://") {
                Some(p) => Path::new(p).to_owned(),
                None if Path::new(url_text).is_absolute() => Path::new(url_text).to_owned(),
                None => dir.join(url_text),
            };
            std::fs::create_dir_all(&path)
                .map_err(|e| bad(format!("cannot create {}: {e}", path.display())))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            (Arc::new(store), StorePath::default())
        };
        Ok(Target {
            store,
            prefix,
            url: url_text.to_owned(),
            format: section.format.unwrap_or_default(),
            gzip: section.compression == Some(ExportCompression::Gzip),
        })
    }

    fn extension(&self) -> &'static str {
        match (self.format, self.gzip) {
            (ExportFormat::Parquet, _) => "parquet",
            (ExportFormat::Csv, false) => "csv",
            (ExportFormat::Csv, true) => "csv.gz",
        }
    }

    /// The folder of one run, under the destination's prefix.
    pub fn folder(&self, sync: &str, segment: &str, to_version: i64, full: bool) -> StorePath {
        let kind = if full { "full" } else { "delta" };
        let mut p = self.prefix.clone();
        for part in [
            sync.to_owned(),
            segment.to_owned(),
            format!("v={to_version}"),
            kind.to_owned(),
        ] {
            p = p.clone().join(part);
        }
        p
    }
}

/// Why writing a run failed: `retry` when the store may do better later.
#[derive(Debug)]
pub struct Failure {
    pub retry: bool,
    pub message: String,
}

fn fatal(message: impl Into<String>) -> Failure {
    Failure {
        retry: false,
        message: message.into(),
    }
}

fn store_failure(what: &str, e: object_store::Error) -> Failure {
    Failure {
        retry: true,
        message: format!("{what}: {e}"),
    }
}

/// What one written run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The run's folder, as a key under the store.
    pub folder: String,
    pub rows: u64,
    pub parts: usize,
    pub bytes: u64,
}

/// Checks the `fields` columns of a sync to a file destination: none may take a base
/// column's name, and CSV holds only flat values.
pub fn check_columns(schema: &Schema, format: ExportFormat) -> std::result::Result<(), String> {
    for f in schema.fields() {
        if f.name() == "profile_id" {
            continue;
        }
        if BASE_COLUMNS.contains(&f.name().as_str()) {
            return Err(format!(
                "column {:?} is one every exported row has already: rename it (AS ...)",
                f.name()
            ));
        }
        if format == ExportFormat::Csv && f.data_type().is_nested() {
            return Err(format!(
                "column {:?} is {}, which CSV cannot hold: use format = \"parquet\", or turn it into text in the query",
                f.name(),
                f.data_type()
            ));
        }
    }
    Ok(())
}

fn members_batch(members: &[Member], destination: &str, segment: &str) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("profile_id", DataType::Utf8, false),
        Field::new("change", DataType::Utf8, false),
        Field::new("refresh_version", DataType::Int64, false),
        Field::new(
            "changed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("merged_into", DataType::Utf8, true),
        Field::new("message_id", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            members.iter().map(|m| m.profile_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            members.iter().map(|m| m.change.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            members.iter().map(|m| m.refresh_version),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(members.iter().map(|m| m.changed_at))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter(
            members.iter().map(|m| m.merged_into.as_deref()),
        )),
        Arc::new(message_ids(members, destination, segment)?),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The members' `messageId`s, hashed on every core into one buffer of fixed-width ids.
fn message_ids(members: &[Member], destination: &str, segment: &str) -> Result<StringArray> {
    let ids = MessageIds::new(destination, segment);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = members.len().div_ceil(threads).max(4096);
    let mut text = vec![0u8; members.len() * MESSAGE_ID_LEN];
    let tasks: Vec<(&[Member], &mut [u8])> = members
        .chunks(chunk)
        .zip(text.chunks_mut(chunk * MESSAGE_ID_LEN))
        .collect();
    crate::in_parallel(tasks, |(members, out)| {
        for (m, slot) in members.iter().zip(out.chunks_exact_mut(MESSAGE_ID_LEN)) {
            ids.write(m, slot);
        }
    });
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(MESSAGE_ID_LEN, members.len()));
    Ok(StringArray::try_new(offsets, Buffer::from_vec(text), None)?)
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

/// The rows of `df` whose `profile_id` is one of `ids` (one batch), and where each
/// member's row is in it (`None`: no row). Two rows for one profile are refused.
async fn lookup(
    df: DataFrame,
    ids: &DataFrame,
    members: &[Member],
    sync: &str,
) -> std::result::Result<(RecordBatch, UInt32Array), Failure> {
    let df_error = |e: datafusion::error::DataFusionError| {
        fatal(format!("syncs.{sync}.fields: {}", e.strip_backtrace()))
    };
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .join(
            ids.clone(),
            JoinType::LeftSemi,
            &["profile_id"],
            &["__m_pid"],
            None,
        )
        .map_err(df_error)?
        .collect()
        .await
        .map_err(df_error)?;
    let found = concat_batches(&schema, &batches).map_err(|e| fatal(e.to_string()))?;
    let pids = found
        .column_by_name("profile_id")
        .and_then(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8).ok())
        .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
        .ok_or_else(|| fatal(format!("syncs.{sync}.fields: profile_id must be text")))?;
    let mut at: HashMap<&str, u32> = HashMap::with_capacity(pids.len());
    for r in 0..pids.len() {
        if pids.is_valid(r) && at.insert(pids.value(r), r as u32).is_some() {
            return Err(fatal(format!(
                "syncs.{sync}.fields: the query returned several rows for profile_id {:?}; it must return one row per profile",
                pids.value(r)
            )));
        }
    }
    let index: UInt32Array = members
        .iter()
        .map(|m| at.get(m.profile_id.as_str()).copied())
        .collect();
    Ok((found, index))
}

/// `column` with view types as their plain counterparts (`Utf8View` → `Utf8`), so
/// files have the same schema whatever the engine's scan settings.
fn plain(column: ArrayRef) -> std::result::Result<ArrayRef, Failure> {
    let to = match column.data_type() {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        _ => return Ok(column),
    };
    datafusion::arrow::compute::cast(&column, &to).map_err(|e| fatal(e.to_string()))
}

/// The rows of one part: the members with their `user_id` and `fields`, in the plan's
/// order (looked up by profile, not joined and sorted).
async fn rows(
    ctx: &SessionContext,
    members: &[Member],
    destination: &str,
    segment: &str,
    fields: Option<&DataFrame>,
    sync: &str,
) -> std::result::Result<(SchemaRef, RecordBatch), Failure> {
    let df_error = |e: datafusion::error::DataFusionError| {
        fatal(format!("syncs.{sync}.fields: {}", e.strip_backtrace()))
    };
    let started = Instant::now();
    let base = members_batch(members, destination, segment).map_err(|e| fatal(e.to_string()))?;
    let based = started.elapsed();
    let ids = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "__m_pid",
            DataType::Utf8,
            false,
        )])),
        vec![base.column(0).clone()],
    )
    .map_err(|e| fatal(e.to_string()))?;
    let ids = ctx.read_batch(ids).map_err(df_error)?;
    let mut fields_out: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = base.columns().to_vec();
    let user_id: ArrayRef = if ctx.table_exist(PROFILES).map_err(df_error)? {
        let users = ctx
            .table(PROFILES)
            .await
            .map_err(df_error)?
            .select(vec![column("profile_id"), column("user_id")])
            .map_err(df_error)?;
        let (found, index) = lookup(users, &ids, members, sync).await?;
        plain(take(found.column(1).as_ref(), &index, None).map_err(|e| fatal(e.to_string()))?)?
    } else {
        Arc::new(StringArray::from(vec![None::<&str>; members.len()]))
    };
    fields_out.push(Field::new("user_id", DataType::Utf8, true));
    columns.push(user_id);
    if let Some(fields) = fields {
        let (found, index) = lookup(fields.clone(), &ids, members, sync).await?;
        for (f, c) in found.schema().fields().iter().zip(found.columns()) {
            if f.name() == "profile_id" {
                continue;
            }
            let taken = plain(take(c.as_ref(), &index, None).map_err(|e| fatal(e.to_string()))?)?;
            fields_out.push(Field::new(f.name(), taken.data_type().clone(), true));
            columns.push(taken);
        }
    }
    tracing::debug!(
        "rows: members and message ids {based:?}, lookups {:?}",
        started.elapsed() - based
    );
    let schema = Arc::new(Schema::new(fields_out));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| fatal(e.to_string()))?;
    Ok((schema, batch))
}

/// The bytes of one part.
fn encode(
    target: &Target,
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> std::result::Result<Vec<u8>, Failure> {
    encode_as(target.format, target.gzip, schema, batch)
}

/// The bytes of one part in `format` (CSV gzipped when `gzip`).
fn encode_as(
    format: ExportFormat,
    gzip: bool,
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> std::result::Result<Vec<u8>, Failure> {
    let failed = |e: &dyn std::fmt::Display| fatal(format!("encoding the file: {e}"));
    match format {
        ExportFormat::Parquet => {
            parquet_columns_in_parallel(schema, batch, ROW_GROUP_ROWS).map_err(|e| failed(&e))
        }
        ExportFormat::Csv => {
            let mut text = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut text);
                w.write(batch).map_err(|e| failed(&e))?;
            }
            if !gzip {
                return Ok(text);
            }
            // No file name and a zero modification time: the same rows, the same bytes.
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::default());
            gz.write_all(&text).map_err(|e| failed(&e))?;
            gz.finish().map_err(|e| failed(&e))
        }
    }
}

/// Rows per Parquet row group of an export part: 256 Ki, so that a large part's row
/// groups are encoded side by side (and readers can split it).
const ROW_GROUP_ROWS: usize = 1 << 18;

/// How export parts are written: Snappy, no dictionary for the unique ids.
fn parquet_properties(row_group_rows: usize) -> WriterProperties {
    // Ids are unique: a dictionary would only be tried and dropped.
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_column_dictionary_enabled(ColumnPath::from("profile_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("message_id"), false)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_created_by(format!("tessera {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The Parquet bytes of `batch`, its column chunks (one per row group and leaf column)
/// encoded on every core.
///
/// The file is the one [`ArrowWriter`] writes with the same properties, byte for byte (a
/// test holds it to that): same schema metadata, row groups of `row_group_rows`, column
/// chunks in schema order. Only the encoding runs side by side — the ids, hashes and
/// timestamps of a million-member part take about the same time each.
fn parquet_columns_in_parallel(
    schema: &SchemaRef,
    batch: &RecordBatch,
    row_group_rows: usize,
) -> parquet::errors::Result<Vec<u8>> {
    let mut out = Vec::new();
    let writer = ArrowWriter::try_new(
        &mut out,
        schema.clone(),
        Some(parquet_properties(row_group_rows)),
    )?;
    let (mut file, factory) = writer.into_serialized_writer()?;
    let rows = batch.num_rows();
    // Each row group's writers, one per leaf, taken group by group in schema order.
    let mut work = Vec::new();
    let mut groups = 0;
    let mut offset = 0;
    while offset < rows {
        let len = row_group_rows.min(rows - offset);
        let slice = batch.slice(offset, len);
        let mut writers = factory.create_column_writers(groups)?.into_iter();
        for (field, column) in schema.fields().iter().zip(slice.columns()) {
            // A nested column has several leaves, each with its writer.
            for leaf in compute_leaves(field, column)? {
                let Some(w) = writers.next() else {
                    return Err(parquet::errors::ParquetError::General(format!(
                        "no column writer for a leaf of {}",
                        field.name()
                    )));
                };
                work.push((w, leaf));
            }
        }
        offset += len;
        groups += 1;
    }
    let leaves_per_group = work.len() / groups.max(1);
    let encoded: Vec<parquet::errors::Result<ArrowColumnChunk>> =
        crate::in_parallel(work, |(mut w, leaf)| {
            w.write(&leaf)?;
            w.close()
        });
    let mut encoded = encoded.into_iter();
    for _ in 0..groups {
        let mut row_group = file.next_row_group()?;
        for chunk in encoded.by_ref().take(leaves_per_group) {
            chunk?.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    file.close()?;
    Ok(out)
}

/// What erasing people did to one file destination's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportsErased {
    pub destination: String,
    /// Parts rewritten without the people's rows.
    pub files: usize,
    pub rows: u64,
}

/// The rows of one part, decoded by its extension; `None` for an object that is no part.
fn decode_part<B>(key: &str, bytes: B) -> std::result::Result<Option<Vec<RecordBatch>>, String>
where
    B: parquet::file::reader::ChunkReader + AsRef<[u8]> + 'static,
{
    use std::io::Read as _;
    if key.ends_with(".parquet") {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| e.to_string())?;
        return reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|e| e.to_string());
    }
    let text = if key.ends_with(".csv.gz") {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_ref())
            .read_to_end(&mut text)
            .map_err(|e| e.to_string())?;
        text
    } else if key.ends_with(".csv") {
        bytes.as_ref().to_vec()
    } else {
        return Ok(None);
    };
    // Every column as text: written back, each value is the same characters.
    let (inferred, _) = datafusion::arrow::csv::reader::Format::default()
        .with_header(true)
        .infer_schema(std::io::Cursor::new(&text), Some(0))
        .map_err(|e| e.to_string())?;
    let schema = Arc::new(Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    datafusion::arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .build(std::io::Cursor::new(text))
        .map_err(|e| e.to_string())?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Some)
        .map_err(|e| e.to_string())
}

impl Target {
    /// Rewrites every part this destination holds without the rows of the people
    /// `is_theirs` recognises (by `profile_id`, `merged_into` or `user_id`), and each
    /// touched run's `_manifest.json` (rows, entered/exited, each part's bytes and
    /// SHA-256), so what was exported before an erasure no longer holds them. Parts are
    /// recognised by extension (`.parquet`, `.csv`, `.csv.gz`) whatever the destination's
    /// format is now.
    pub async fn erase(
        &self,
        destination: &str,
        is_theirs: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<ExportsErased> {
        let bad = |m: String| ActivateError::BadDestination {
            key: format!("destinations.{destination}.url"),
            message: m,
        };
        let mut out = ExportsErased {
            destination: destination.to_owned(),
            ..ExportsErased::default()
        };
        let listed: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| bad(format!("listing {}: {e}", self.url)))?;
        // Folder → (part name → (rows kept, bytes, sha256), entered and exited removed).
        type Touched = (HashMap<String, (usize, u64, String)>, u64, u64);
        let mut touched: HashMap<StorePath, Touched> = HashMap::new();
        for meta in listed {
            let key = meta.location.to_string();
            let Some(name) = key.rsplit('/').next().filter(|n| n.starts_with("part-")) else {
                continue;
            };
            let bytes = match self.store.get(&meta.location).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            }
            .map_err(|e| bad(format!("reading {key}: {e}")))?;
            let Some(batches) = decode_part(&key, bytes).map_err(|e| bad(format!("{key}: {e}")))?
            else {
                continue;
            };
            let Some(first) = batches.first() else {
                continue;
            };
            let schema = first.schema();
            let batch = concat_batches(&schema, &batches).map_err(|e| bad(e.to_string()))?;
            let text = |name: &str| -> Option<StringArray> {
                let c = batch.column_by_name(name)?;
                let c = datafusion::arrow::compute::cast(c, &DataType::Utf8).ok()?;
                c.as_any().downcast_ref::<StringArray>().cloned()
            };
            let (ids, merged, users, change) = (
                text("profile_id"),
                text("merged_into"),
                text("user_id"),
                text("change"),
            );
            fn value(c: &Option<StringArray>, i: usize) -> Option<&str> {
                c.as_ref().filter(|c| !c.is_null(i)).map(|c| c.value(i))
            }
            let mut keep = Vec::with_capacity(batch.num_rows());
            let (mut entered, mut exited) = (0u64, 0u64);
            for i in 0..batch.num_rows() {
                let theirs = [&ids, &merged, &users]
                    .into_iter()
                    .any(|c| value(c, i).is_some_and(is_theirs));
                if theirs {
                    match value(&change, i) {
                        Some("entered") => entered += 1,
                        Some("exited") => exited += 1,
                        _ => {}
                    }
                }
                keep.push(!theirs);
            }
            let removed = keep.iter().filter(|k| !**k).count();
            if removed == 0 {
                continue;
            }
            let kept = datafusion::arrow::compute::filter_record_batch(
                &batch,
                &datafusion::arrow::array::BooleanArray::from(keep),
            )
            .map_err(|e| bad(e.to_string()))?;
            let (format, gzip) = if key.ends_with(".parquet") {
                (ExportFormat::Parquet, false)
            } else {
                (ExportFormat::Csv, key.ends_with(".gz"))
            };
            let encoded = encode_as(format, gzip, &schema, &kept).map_err(|f| bad(f.message))?;
            let (size, digest) = (encoded.len() as u64, hex(&sha2::Sha256::digest(&encoded)));
            self.store
                .put(&meta.location, PutPayload::from(encoded))
                .await
                .map_err(|e| bad(format!("writing {key}: {e}")))?;
            out.files += 1;
            out.rows += removed as u64;
            let folder = StorePath::from(key.rsplit_once('/').map_or("", |(f, _)| f));
            let entry = touched.entry(folder).or_default();
            entry
                .0
                .insert(name.to_owned(), (kept.num_rows(), size, digest));
            entry.1 += entered;
            entry.2 += exited;
        }
        for (folder, (parts, entered, exited)) in touched {
            let key = folder.clone().join("_manifest.json");
            let Ok(got) = self.store.get(&key).await else {
                continue;
            };
            let bytes = got
                .bytes()
                .await
                .map_err(|e| bad(format!("reading {key}: {e}")))?;
            let Ok(mut manifest) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let mut rows = 0u64;
            if let Some(list) = manifest["parts"].as_array_mut() {
                for part in list.iter_mut() {
                    if let Some((kept, size, digest)) =
                        part["key"].as_str().and_then(|k| parts.get(k))
                    {
                        part["rows"] = json!(kept);
                        part["bytes"] = json!(size);
                        part["sha256"] = json!(digest);
                    }
                    rows += part["rows"].as_u64().unwrap_or(0);
                }
            }
            manifest["rows"] = json!(rows);
            for (field, minus) in [("entered", entered), ("exited", exited)] {
                let n = manifest[field].as_u64().unwrap_or(0);
                manifest[field] = json!(n.saturating_sub(minus));
            }
            let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
            self.store
                .put(&key, PutPayload::from(text))
                .await
                .map_err(|e| bad(format!("writing {key}: {e}")))?;
        }
        Ok(out)
    }
}

/// The file destinations of a project's `[destinations]` (relative folders taken from
/// `dir`), for erasure.
pub fn targets(
    destinations: &std::collections::BTreeMap<String, DestinationSection>,
    dir: &Path,
) -> Result<Vec<(String, Target)>> {
    destinations
        .iter()
        .filter(|(_, d)| d.kind == tessera_core::config::DestinationKind::File)
        .map(|(name, d)| Ok((name.clone(), Target::new(name, d, dir)?)))
        .collect()
}

/// Writes one run (its batches in `run`, of one sync) to `target`.
pub async fn write_run(
    engine: &Engine,
    target: &Target,
    destination: &str,
    sync: &str,
    section: &SyncSection,
    run: &[&BatchState],
) -> std::result::Result<Written, Failure> {
    let Some(first) = run.first() else {
        return Err(fatal("a run without batches"));
    };
    let full = first.from_version == 0 || section.mode == SyncMode::Full;
    let folder = target.folder(sync, &first.segment, first.to_version, full);
    let success = folder.clone().join("_SUCCESS");
    match target.store.delete(&success).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store_failure(&format!("removing {success}"), e)),
    }
    let ctx = engine.session().await.map_err(|e| Failure {
        retry: true,
        message: e.to_string(),
    })?;
    let fields = match &section.fields {
        Some(q) => {
            let df = crate::fields::fields_frame(&ctx, sync, q)
                .await
                .map_err(|e| fatal(e.to_string()))?;
            check_columns(df.schema().as_arrow(), target.format)
                .map_err(|m| fatal(format!("syncs.{sync}.fields: {m}")))?;
            Some(df)
        }
        None => None,
    };
    let mut parts = Vec::new();
    let mut schema_out: Option<SchemaRef> = None;
    let (mut rows_total, mut entered, mut exited, mut bytes_total) = (0u64, 0u64, 0u64, 0u64);
    let mut written: HashSet<StorePath> = HashSet::new();
    let mut ordered: Vec<&&BatchState> = run.iter().collect();
    ordered.sort_by_key(|b| b.seq);
    for b in ordered {
        if b.members.is_empty() {
            continue;
        }
        let started = Instant::now();
        let (schema, rows) = rows(
            &ctx,
            &b.members,
            destination,
            &b.segment,
            fields.as_ref(),
            sync,
        )
        .await?;
        let joined = started.elapsed();
        let bytes = encode(target, &schema, &rows)?;
        let encoded = started.elapsed();
        let name = format!("part-{:05}.{}", b.seq, target.extension());
        let key = folder.clone().join(name.as_str());
        let digest = hex(&sha2::Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        target
            .store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| store_failure(&format!("writing {key}"), e))?;
        tracing::debug!(
            part = %key, rows = rows.num_rows(), bytes = size,
            "rows {:?}, encoded {:?}, written {:?}",
            joined,
            encoded - joined,
            started.elapsed() - encoded
        );
        written.insert(key);
        rows_total += rows.num_rows() as u64;
        for m in &b.members {
            match m.change {
                Change::Entered => entered += 1,
                Change::Exited => exited += 1,
            }
        }
        bytes_total += size;
        parts.push(json!({"key": name, "batch_id": b.batch_id, "rows": rows.num_rows(), "bytes": size, "sha256": digest}));
        schema_out.get_or_insert(schema);
    }
    // What an earlier attempt wrote and this one did not is not part of the run.
    let manifest_key = folder.clone().join("_manifest.json");
    let listed: Vec<_> = target
        .store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| store_failure(&format!("listing {folder}"), e))?;
    for meta in listed {
        if !written.contains(&meta.location) && meta.location != manifest_key {
            match target.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_failure(&format!("removing {}", meta.location), e)),
            }
        }
    }
    let schema: Vec<Value> = schema_out
        .map(|s| {
            s.fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
                .collect()
        })
        .unwrap_or_default();
    let skipped: i64 = run.iter().map(|b| b.skipped).sum();
    let manifest = json!({
        "sync": sync,
        "destination": destination,
        "segment": first.segment,
        "run": first.run,
        "kind": if full { "full" } else { "delta" },
        "format": match target.format { ExportFormat::Parquet => "parquet", ExportFormat::Csv => "csv" },
        "compression": match (target.format, target.gzip) {
            (ExportFormat::Parquet, _) => "snappy",
            (ExportFormat::Csv, true) => "gzip",
            (ExportFormat::Csv, false) => "none",
        },
        "source": {
            "table": "audience_changes",
            "segment": first.segment,
            "from_refresh_version": first.from_version,
            "to_refresh_version": first.to_version,
        },
        "rows": rows_total,
        "entered": entered,
        "exited": exited,
        "skipped_without_consent": skipped,
        "schema": schema,
        "parts": parts,
    });
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| fatal(e.to_string()))?;
    target
        .store
        .put(&manifest_key, PutPayload::from(text))
        .await
        .map_err(|e| store_failure(&format!("writing {manifest_key}"), e))?;
    target
        .store
        .put(&success, PutPayload::from_static(b""))
        .await
        .map_err(|e| store_failure(&format!("writing {success}"), e))?;
    Ok(Written {
        folder: folder.to_string(),
        rows: rows_total,
        parts: parts.len(),
        bytes: bytes_total,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn member(p: &str, c: Change) -> Member {
        Member {
            profile_id: p.into(),
            change: c,
            refresh_version: 3,
            changed_at: 1_700_000_000_000_000,
            merged_into: None,
            identifiers: None,
        }
    }

    fn target(format: ExportFormat, gzip: bool, dir: &Path) -> Target {
        let section: DestinationSection =
            toml::from_str(&format!("kind = \"file\"\nurl = \"{}\"\n", dir.display())).unwrap();
        let mut t = Target::new("files", &section, dir).unwrap();
        t.format = format;
        t.gzip = gzip;
        t
    }

    #[test]
    fn folders_are_deterministic_and_say_full_or_delta() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(ExportFormat::Parquet, false, dir.path());
        assert_eq!(
            t.folder("crm", "vip", 12, true).to_string(),
            "crm/vip/v=12/full"
        );
        assert_eq!(
            t.folder("crm", "vip", 13, false).to_string(),
            "crm/vip/v=13/delta"
        );
    }

    #[test]
    fn the_same_rows_encode_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![member("p1", Change::Entered), member("p2", Change::Exited)];
        let batch = members_batch(&members, "files", "vip").unwrap();
        let schema = batch.schema();
        for (format, gzip) in [
            (ExportFormat::Parquet, false),
            (ExportFormat::Csv, false),
            (ExportFormat::Csv, true),
        ] {
            let t = target(format, gzip, dir.path());
            let a = encode(&t, &schema, &batch).unwrap();
            let b = encode(&t, &schema, &batch).unwrap();
            assert_eq!(a, b, "{format:?} gzip={gzip}");
            assert!(!a.is_empty());
        }
        let csv = encode(
            &target(ExportFormat::Csv, false, dir.path()),
            &schema,
            &batch,
        )
        .unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert!(text.starts_with("profile_id,change,"), "{text}");
        assert!(text.contains("\np2,exited,3,"), "{text}");
    }

    #[test]
    fn fields_columns_may_not_shadow_the_base_ones_and_csv_holds_flat_values() {
        let ok = Schema::new(vec![
            Field::new("profile_id", DataType::Utf8, false),
            Field::new("email", DataType::Utf8, true),
        ]);
        assert!(check_columns(&ok, ExportFormat::Csv).is_ok());
        let shadow = Schema::new(vec![Field::new("change", DataType::Utf8, true)]);
        assert!(
            check_columns(&shadow, ExportFormat::Parquet)
                .unwrap_err()
                .contains("\"change\"")
        );
        let nested = Schema::new(vec![Field::new(
            "channels",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        )]);
        assert!(check_columns(&nested, ExportFormat::Parquet).is_ok());
        assert!(
            check_columns(&nested, ExportFormat::Csv)
                .unwrap_err()
                .contains("CSV cannot hold")
        );
    }

    #[test]
    fn parts_encoded_column_by_column_are_what_arrow_writer_writes() {
        use datafusion::arrow::array::{ListBuilder, StringBuilder};
        let members: Vec<Member> = (0..2500)
            .map(|i| {
                let c = if i % 3 == 0 {
                    Change::Exited
                } else {
                    Change::Entered
                };
                member(&format!("p{i:05}"), c)
            })
            .collect();
        let base = members_batch(&members, "files", "vip").unwrap();
        // A nested column (several leaves' worth of levels) and nulls travel too.
        let mut channels = ListBuilder::new(StringBuilder::new());
        for i in 0..base.num_rows() {
            if i % 7 == 0 {
                channels.append_null();
            } else {
                for c in 0..(i % 3) {
                    channels.values().append_value(format!("c{c}"));
                }
                channels.append(true);
            }
        }
        let mut fields: Vec<Field> = base
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let channels = Arc::new(channels.finish()) as ArrayRef;
        fields.push(Field::new("channels", channels.data_type().clone(), true));
        let schema = Arc::new(Schema::new(fields));
        let mut columns = base.columns().to_vec();
        columns.push(channels);
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        for (rows, group_rows) in [(2500, ROW_GROUP_ROWS), (2500, 1000), (20, 7), (0, 7)] {
            let batch = batch.slice(0, rows);
            let mut expected = Vec::new();
            let mut w = ArrowWriter::try_new(
                &mut expected,
                schema.clone(),
                Some(parquet_properties(group_rows)),
            )
            .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            let got = parquet_columns_in_parallel(&schema, &batch, group_rows).unwrap();
            assert_eq!(got, expected, "{rows} rows in groups of {group_rows}");
            let read = decode_part("part-0.parquet", bytes::Bytes::from(got))
                .unwrap()
                .unwrap();
            let read_rows: usize = read.iter().map(|b| b.num_rows()).sum();
            assert_eq!(read_rows, rows);
        }
    }
}
