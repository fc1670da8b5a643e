//! Streaming, atomic, idempotent appends.

use deltalake::DeltaTable;
use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Metadata, Transaction};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use serde_json::{Map, Value};

use crate::error::{LakeError, Result};

/// Rows written between two flushes of open Parquet files: bounds the memory an append
/// holds no matter how large its input.
const FLUSH_ROWS: u64 = 200_000;
/// Rows per Parquet row group.
pub(crate) const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Columns of high-cardinality text (raw JSON, unique ids) in any table.
const UNIQUE_TEXT_COLUMNS: &[&str] = &[
    "message_id",
    "properties",
    "traits",
    "context",
    "integrations",
    "extra",
];
/// Files roll over at this size.
pub const TARGET_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Who wrote a commit and why, plus optional application transactions that make the
/// commit idempotent: a second commit with the same `(app_id, version)` is recognised
/// through [`transaction_version`] before it is attempted.
#[derive(Debug, Clone)]
pub struct CommitNote {
    details: Map<String, Value>,
    transactions: Vec<(String, i64)>,
}

impl CommitNote {
    /// A note for `operation` (`import`, `collect`, `stitch`, …) performed by `actor`.
    pub fn new(operation: &str, actor: &str) -> Self {
        let mut details = Map::new();
        details.insert("tessera.operation".into(), operation.into());
        details.insert("tessera.actor".into(), actor.into());
        details.insert("tessera.version".into(), env!("CARGO_PKG_VERSION").into());
        CommitNote {
            details,
            transactions: Vec::new(),
        }
    }

    /// Adds a detail recorded in the commit (`tessera.<key>`).
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(format!("tessera.{key}"), value.into());
        self
    }

    /// Makes the commit carry application transaction `(app_id, version)` (one per
    /// application; a commit may carry several).
    pub fn transaction(mut self, app_id: impl Into<String>, version: i64) -> Self {
        self.transactions.push((app_id.into(), version));
        self
    }

    /// The Delta commit properties carrying this note.
    pub fn into_properties(self) -> CommitProperties {
        let mut props = CommitProperties::default().with_metadata(self.details);
        let now = chrono::Utc::now().timestamp_millis();
        for (app_id, version) in self.transactions {
            props = props.with_application_transaction(Transaction::new_with_last_update(
                app_id,
                version,
                Some(now),
            ));
        }
        props
    }
}

/// The version recorded for application transaction `app_id` in `table`.
pub async fn transaction_version(
    name: &str,
    table: &DeltaTable,
    app_id: &str,
) -> Result<Option<i64>> {
    let snapshot = table
        .snapshot()
        .map_err(|e| LakeError::delta(name, "read", e))?;
    snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| LakeError::delta(name, "read transactions of", e))
}

/// An append in progress: batches are encoded to Parquet and streamed to storage as
/// they arrive; nothing is visible to readers until [`commit`](Self::commit), which
/// adds every file in one Delta commit. Dropping the writer (or [`abort`](Self::abort))
/// leaves only unreferenced files, which `VACUUM` removes.
pub struct AppendWriter {
    name: String,
    table: DeltaTable,
    writer: RecordBatchWriter,
    adds: Vec<Add>,
    rows: u64,
    rows_since_flush: u64,
    /// Which files of the table the commit removes.
    replace: Replace,
    /// A new table schema committed with the files (overwrite with schema change).
    new_metadata: Option<Metadata>,
}

/// Which existing files a commit removes.
#[derive(Debug, Clone, PartialEq)]
enum Replace {
    /// None: an append.
    Nothing,
    /// Every file: an overwrite.
    All,
    /// The files of one partition (`column` = `value`).
    Partition { column: String, value: String },
    /// These files, rewritten without some of their rows: a delete whose predicate
    /// (what a concurrent writer's conflict check reads) is `predicate`.
    Files {
        removes: Vec<deltalake::kernel::Remove>,
        predicate: String,
    },
}

impl std::fmt::Debug for AppendWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendWriter")
            .field("table", &self.name)
            .field("rows", &self.rows)
            .field("files", &self.adds.len())
            .finish()
    }
}

pub(crate) fn writer_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    // Raw JSON text and unique ids never repeat enough for a dictionary, and min/max
    // statistics over them help no query: skip both work items for such columns.
    for column in UNIQUE_TEXT_COLUMNS {
        let path = ColumnPath::from(*column);
        builder = builder
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    builder.build()
}

impl AppendWriter {
    pub(crate) fn new(name: &str, table: DeltaTable) -> Result<Self> {
        let writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| LakeError::delta(name, "write to", e))?
            .with_writer_properties(writer_properties())
            .with_target_file_size(TARGET_FILE_BYTES);
        Ok(AppendWriter {
            name: name.to_owned(),
            table,
            writer,
            adds: Vec::new(),
            rows: 0,
            rows_since_flush: 0,
            replace: Replace::Nothing,
            new_metadata: None,
        })
    }

    /// A writer whose commit replaces every file of `table` with the rows written. When
    /// `new_schema` is given, the commit also changes the table's schema to it.
    pub(crate) fn replacing(
        name: &str,
        table: DeltaTable,
        new_schema: Option<(deltalake::arrow::datatypes::SchemaRef, Metadata)>,
        options: &std::collections::HashMap<String, String>,
    ) -> Result<Self> {
        let (writer, new_metadata) = match new_schema {
            None => (
                RecordBatchWriter::for_table(&table)
                    .map_err(|e| LakeError::delta(name, "write to", e))?,
                None,
            ),
            Some((schema, metadata)) => (
                RecordBatchWriter::try_new(
                    table.table_url().as_str(),
                    schema,
                    None,
                    Some(options.clone()),
                )
                .map_err(|e| LakeError::delta(name, "write to", e))?,
                Some(metadata),
            ),
        };
        Ok(AppendWriter {
            name: name.to_owned(),
            table,
            writer: writer
                .with_writer_properties(writer_properties())
                .with_target_file_size(TARGET_FILE_BYTES),
            adds: Vec::new(),
            rows: 0,
            rows_since_flush: 0,
            replace: Replace::All,
            new_metadata,
        })
    }

    /// A writer whose commit replaces the files of one partition (`column` = `value`)
    /// with the rows written, which must all belong to that partition.
    pub(crate) fn replacing_partition(
        name: &str,
        table: DeltaTable,
        column: &str,
        value: &str,
    ) -> Result<Self> {
        let mut writer = AppendWriter::new(name, table)?;
        writer.replace = Replace::Partition {
            column: column.to_owned(),
            value: value.to_owned(),
        };
        Ok(writer)
    }

    /// A writer whose commit removes `removes` (files of `table`'s snapshot) and adds the
    /// rows written — a copy-on-write delete of the rows not written again, recorded as
    /// `DELETE` with `predicate`.
    pub(crate) fn replacing_files(
        name: &str,
        table: DeltaTable,
        removes: Vec<deltalake::kernel::Remove>,
        predicate: String,
    ) -> Result<Self> {
        let mut writer = AppendWriter::new(name, table)?;
        writer.replace = Replace::Files { removes, predicate };
        Ok(writer)
    }

    /// The schema of the batches [`write`](Self::write) takes.
    pub(crate) fn schema(&self) -> deltalake::arrow::datatypes::SchemaRef {
        self.writer.arrow_schema()
    }

    /// The version recorded for application transaction `app_id` in the table
    /// version this writer commits on top of.
    pub fn transaction_version(
        &self,
        app_id: &str,
    ) -> impl std::future::Future<Output = Result<Option<i64>>> + Send + 'static {
        let (name, table, app_id) = (self.name.clone(), self.table.clone(), app_id.to_owned());
        async move { transaction_version(&name, &table, &app_id).await }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Streams one batch to storage. Its schema must be the table's.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let rows = batch.num_rows() as u64;
        self.writer.write(batch).await.map_err(|e| match e {
            deltalake::DeltaTableError::SchemaMismatch { msg } => LakeError::BadBatch {
                table: self.name.clone(),
                message: msg,
            },
            other => LakeError::delta(&self.name, "write to", other),
        })?;
        self.rows += rows;
        self.rows_since_flush += rows;
        if self.rows_since_flush >= FLUSH_ROWS {
            self.flush_files().await?;
        }
        Ok(())
    }

    /// Finalizes the open Parquet files (still uncommitted) to release their buffers.
    pub async fn flush_files(&mut self) -> Result<()> {
        let adds = self
            .writer
            .flush()
            .await
            .map_err(|e| LakeError::delta(&self.name, "write to", e))?;
        self.adds.extend(adds);
        self.rows_since_flush = 0;
        Ok(())
    }

    /// Takes over the files `other` wrote (same table), so that one commit adds the files
    /// of appends that ran in parallel.
    pub async fn absorb(&mut self, mut other: AppendWriter) -> Result<()> {
        other.flush_files().await?;
        self.rows += other.rows;
        self.adds.append(&mut other.adds);
        Ok(())
    }

    /// Commits every file written, atomically, with `note`. Returns the new table
    /// version. A note with a transaction is committed even when no row was written, so
    /// that the transaction is recorded.
    pub async fn commit(mut self, note: CommitNote) -> Result<Option<u64>> {
        self.flush_files().await?;
        if self.adds.is_empty() && note.transactions.is_empty() && self.replace == Replace::Nothing
        {
            return Ok(None);
        }
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| LakeError::delta(&self.name, "commit to", e))?;
        let partition_cols: Vec<String> = snapshot.metadata().partition_columns().to_vec();
        let predicate = match &self.replace {
            Replace::Partition { column, value } => {
                Some(format!("{column} = {}", tessera_core::sql::literal(value)))
            }
            _ => None,
        };
        let operation = match &self.replace {
            Replace::Files { predicate, .. } => DeltaOperation::Delete {
                predicate: Some(predicate.clone()),
            },
            _ => DeltaOperation::Write {
                mode: if self.replace == Replace::Nothing {
                    SaveMode::Append
                } else {
                    SaveMode::Overwrite
                },
                partition_by: (!partition_cols.is_empty()).then_some(partition_cols),
                predicate,
            },
        };
        let mut actions: Vec<Action> = Vec::new();
        if let Some(metadata) = self.new_metadata.take() {
            actions.push(Action::Metadata(metadata));
        }
        match &mut self.replace {
            Replace::Nothing => {}
            Replace::Files { removes, .. } => {
                actions.extend(removes.drain(..).map(Action::Remove));
            }
            Replace::All => actions.extend(
                snapshot
                    .log_data()
                    .iter()
                    .map(|file| Action::Remove(file.remove_action(true))),
            ),
            Replace::Partition { column, value } => actions.extend(
                snapshot
                    .log_data()
                    .iter()
                    .filter(|file| {
                        file.partition_values_map()
                            .get(column)
                            .cloned()
                            .flatten()
                            .as_deref()
                            == Some(value.as_str())
                    })
                    .map(|file| Action::Remove(file.remove_action(true))),
            ),
        }
        // No file's statistics name a person (see `erase`).
        let name = self.name.clone();
        actions.extend(self.adds.drain(..).map(|mut add| {
            if let Some(stripped) = add
                .stats
                .as_deref()
                .and_then(|s| strip_personal_stats(&name, s))
            {
                add.stats = Some(stripped);
            }
            Action::Add(add)
        }));
        let finalized = CommitBuilder::from(note.into_properties())
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(|e| LakeError::delta(&self.name, "commit to", e))?;
        Ok(Some(finalized.version()))
    }

    /// Abandons the append: nothing becomes visible.
    pub fn abort(mut self) {
        self.writer.reset();
    }
}

/// Removes the statistics of personal columns ([`tessera_core::schema::is_personal_column`]) from a
/// file's Delta `stats` JSON.
pub(crate) fn strip_personal_stats(table: &str, stats: &str) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(stats).ok()?;
    let mut changed = false;
    for key in ["minValues", "maxValues", "nullCount"] {
        if let Some(map) = value.get_mut(key).and_then(|v| v.as_object_mut()) {
            let before = map.len();
            map.retain(|column, _| !tessera_core::schema::is_personal_column(table, column));
            changed |= map.len() != before;
        }
    }
    changed.then(|| value.to_string())
}

#[cfg(test)]
mod stats_tests {
    use super::strip_personal_stats;

    #[test]
    fn personal_statistics_are_stripped() {
        let stats = r#"{"numRecords":2,"minValues":{"user_id":"a","timestamp":"t"},"maxValues":{"user_id":"z","timestamp":"u"},"nullCount":{"user_id":0,"timestamp":0}}"#;
        let out = strip_personal_stats("events", stats).unwrap();
        assert!(!out.contains("user_id"), "{out}");
        assert!(out.contains("timestamp") && out.contains("numRecords"));
        assert_eq!(strip_personal_stats("events", r#"{"numRecords":1}"#), None);
    }
}
