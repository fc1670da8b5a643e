//! Tessera's lake: Delta tables on any object store.
//!
//! A [`Lake`] is a root location — a local folder by default, or an `s3://`, `gs://` or
//! `az://` URL with credentials from the usual environment variables — under which every
//! table of [`tessera_core::schema::tables`] lives as a Delta table named after it.
//! Every other tool that reads Delta (DuckDB, polars, pandas, Spark, Trino) can read
//! these tables without Tessera running.
//!
//! Writes go through [`AppendWriter`]: Parquet files are streamed to storage as batches
//! arrive (bounded memory), and become visible in one atomic Delta commit that may carry
//! an application transaction id, so that a retried write is recognised and never lands
//! twice. Every commit records who wrote it and why.
//!
//! This crate knows nothing of HTTP, gRPC or SQL files.

pub mod changes;
mod cloud;
pub mod erase;
mod error;
pub mod lease;
pub mod maintain;
pub mod pinned;
pub mod wal;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt as _;

use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::{DeltaTable, DeltaTableBuilder};
use tessera_core::schema::{self, TableDef};
use url::Url;

pub use changes::Changes;
pub use deltalake;
pub use error::{LakeError, Result};
pub use maintain::{Layout, OptimizeOptions, OptimizeReport, VacuumOptions, VacuumReport};
pub use pinned::PinnedTable;
pub use writer::{AppendWriter, CommitNote, transaction_version};

/// The object store for a cloud URL (`s3://`, `gs://`, `az://`), credentials from the
/// environment and `options`.
pub fn object_store_for(
    url: &Url,
    options: &HashMap<String, String>,
) -> std::result::Result<Arc<dyn object_store::ObjectStore>, deltalake::DeltaTableError> {
    cloud::build_store(url, options)
}

/// The root of a lake and the options used to reach it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    options: HashMap<String, String>,
    /// This process's read leases ([`lease`]), shared by every clone.
    leases: Arc<lease::Book>,
}

/// Size facts about one table, read from its Delta log (no data file is opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    pub name: String,
    pub version: u64,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

impl Lake {
    /// A lake at `location`: a local path (created if missing) or an object-store URL.
    pub fn new(location: &str, options: HashMap<String, String>) -> Result<Lake> {
        cloud::register_handlers();
        let root = location_url(location)?;
        if root.scheme() == "file" {
            let path = root
                .to_file_path()
                .map_err(|_| LakeError::InvalidLocation {
                    location: location.to_owned(),
                    reason: "not a usable local path".into(),
                })?;
            std::fs::create_dir_all(&path).map_err(|source| LakeError::Io {
                what: format!("creating the lake folder {}", path.display()),
                source,
            })?;
        }
        Ok(Lake {
            root,
            options,
            leases: lease::Book::new(),
        })
    }

    /// The object store at the lake's root.
    fn root_store(&self) -> Result<Arc<dyn object_store::ObjectStore>> {
        let table = DeltaTableBuilder::from_url(self.root.clone())
            .map_err(|e| LakeError::delta("(root)", "open", e))?
            .with_storage_options(self.options.clone())
            .build()
            .map_err(|e| LakeError::delta("(root)", "open", e))?;
        Ok(table.log_store().object_store(None))
    }

    /// Notes an open of table `name` in this process's read lease, writing the lease
    /// object when due. A lake this process may not write to (read-only credentials)
    /// gets no lease: vacuum then relies on its retention alone.
    async fn note_open(&self, name: &str, at: i64) {
        let Some(lease) = self.leases.note(name, at) else {
            return;
        };
        let written = match self.root_store() {
            Ok(store) => lease::write(&store, &lease)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot write the read lease of {}", lease.holder);
        }
    }

    /// Ends this process's read lease (it has finished reading): vacuum need no longer
    /// wait for it.
    pub async fn release_leases(&self) {
        self.leases.release();
        if let Ok(store) = self.root_store() {
            let _ = lease::remove(&store, self.leases.holder()).await;
        }
    }

    /// The root URL of the lake (always ends with `/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Options passed to the object store.
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The URL of table `name`.
    pub fn table_url(&self, name: &str) -> Result<Url> {
        self.root
            .join(&format!("{name}/"))
            .map_err(|e| LakeError::InvalidLocation {
                location: format!("{}{name}", self.root),
                reason: e.to_string(),
            })
    }

    fn builder(&self, name: &str) -> Result<DeltaTableBuilder> {
        let url = self.table_url(name)?;
        Ok(DeltaTableBuilder::from_url(url)
            .map_err(|e| LakeError::delta(name, "open", e))?
            .with_storage_options(self.options.clone()))
    }

    /// Whether table `name` exists (has a Delta log).
    pub async fn exists(&self, name: &str) -> Result<bool> {
        let table = self
            .builder(name)?
            .build()
            .map_err(|e| LakeError::delta(name, "open", e))?;
        table
            .verify_deltatable_existence()
            .await
            .map_err(|e| LakeError::delta(name, "open", e))
    }

    /// Opens table `name` at its latest version, or `None` when it does not exist.
    pub async fn try_open(&self, name: &str) -> Result<Option<DeltaTable>> {
        if !self.exists(name).await? {
            return Ok(None);
        }
        // The snapshot is at least as new as this instant: the lease says so.
        let at = chrono::Utc::now().timestamp_millis();
        let table = self
            .builder(name)?
            .load()
            .await
            .map_err(|e| LakeError::delta(name, "open", e))?;
        self.note_open(name, at).await;
        Ok(Some(table))
    }

    /// The latest committed version of table `name` (`None`: no such table). Given a
    /// version seen before (`known`), it lists the log from there instead of loading
    /// the table: cheap enough to ask every few seconds.
    pub async fn latest_version(&self, name: &str, known: Option<i64>) -> Result<Option<i64>> {
        if let Some(known) = known {
            let table = self
                .builder(name)?
                .build()
                .map_err(|e| LakeError::delta(name, "open", e))?;
            // Fails when that version's commit is gone (log cleanup) or the table was
            // replaced: then the table is opened in full.
            if let Ok(latest) = table.log_store().get_latest_version(known as u64).await {
                return Ok(Some(latest as i64));
            }
        }
        Ok(self
            .try_open(name)
            .await?
            .and_then(|t| t.version())
            .map(|v| v as i64))
    }

    /// Opens table `name` at its latest version.
    pub async fn open(&self, name: &str) -> Result<DeltaTable> {
        match self.try_open(name).await? {
            Some(table) => Ok(table),
            None => Err(LakeError::TableNotFound {
                name: name.to_owned(),
                location: self.table_url(name)?.to_string(),
            }),
        }
    }

    /// The object store of every standard table under the URL its scans name
    /// ([`PinnedTable::store_url`]), whether the table exists yet or not: what a process
    /// that runs plans made elsewhere (a cluster's executor) registers to read them.
    pub fn table_stores(
        &self,
    ) -> Result<
        Vec<(
            datafusion::execution::object_store::ObjectStoreUrl,
            Arc<dyn object_store::ObjectStore>,
        )>,
    > {
        schema::tables()
            .iter()
            .map(|def| {
                let table = self
                    .builder(def.name)?
                    .build()
                    .map_err(|e| LakeError::delta(def.name, "open", e))?;
                let log_store = table.log_store();
                Ok((log_store.object_store_url(), log_store.object_store(None)))
            })
            .collect()
    }

    /// Every standard table that exists, opened once, in the order of
    /// [`tessera_core::schema::tables`].
    pub async fn open_all(&self) -> Result<Vec<(&'static str, DeltaTable)>> {
        let mut tables = Vec::new();
        for def in schema::tables() {
            if let Some(table) = self.try_open(def.name).await? {
                tables.push((def.name, table));
            }
        }
        Ok(tables)
    }

    /// The latest version of table `name` committed at or before `micros` (since the
    /// epoch); `None` when the table had no version yet then.
    pub async fn version_at(&self, name: &str, micros: i64) -> Result<Option<u64>> {
        let mut table = self.open(name).await?;
        let Some(at) = chrono::DateTime::from_timestamp_micros(micros) else {
            return Ok(None);
        };
        table
            .load_with_datetime(at)
            .await
            .map_err(|e| LakeError::delta(name, "time travel in", e))?;
        let Some(version) = table.version() else {
            return Ok(None);
        };
        // Before the first version, Delta answers with the first one.
        if commit_time_of(&table, version).await? > micros {
            return Ok(None);
        }
        Ok(Some(version))
    }

    /// When version `version` of table `name` was committed (microseconds since the
    /// epoch, to the millisecond: the log entry's write time).
    pub async fn commit_time(&self, name: &str, version: u64) -> Result<i64> {
        let table = self.open(name).await?;
        commit_time_of(&table, version).await
    }

    /// Opens table `name` as of `version` (time travel).
    pub async fn open_version(&self, name: &str, version: u64) -> Result<DeltaTable> {
        let mut table = self.open(name).await?;
        table
            .load_version(version)
            .await
            .map_err(|e| LakeError::delta(name, &format!("load version {version} of"), e))?;
        // Vacuum deletes the files of versions older than its retention while their log
        // entries stay: such a version is refused here, not when a scan hits a hole.
        let snapshot = table
            .snapshot()
            .map_err(|e| LakeError::delta(name, "read", e))?;
        let paths: Vec<String> = snapshot
            .log_data()
            .iter()
            .map(|f| f.path().into_owned())
            .collect();
        let store = table.log_store().object_store(None);
        let missing = file_sizes(&store, &paths)
            .await
            .iter()
            .filter(|s| s.is_none())
            .count();
        if missing > 0 {
            return Err(LakeError::VersionGone {
                table: name.to_owned(),
                version,
                missing,
            });
        }
        Ok(table)
    }

    /// Opens table `def.name`, creating it with its schema if it does not exist yet.
    pub async fn open_or_create(&self, def: &TableDef) -> Result<DeltaTable> {
        match self.try_open(def.name).await? {
            Some(table) => Ok(table),
            None => self.create(def).await,
        }
    }

    async fn create(&self, def: &TableDef) -> Result<DeltaTable> {
        let struct_type = kernel_schema(def)?;
        let table = self
            .builder(def.name)?
            .build()
            .map_err(|e| LakeError::delta(def.name, "create", e))?;
        let created = table
            .create()
            .with_table_name(def.name)
            .with_comment(def.description)
            .with_columns(struct_type.fields().cloned())
            .with_partition_columns(def.partition_columns.iter().copied())
            .with_configuration([(
                erase::STATS_COLUMNS_PROPERTY,
                Some(schema::stats_columns(def).join(",")),
            )])
            .with_save_mode(deltalake::protocol::SaveMode::Ignore)
            .with_commit_properties(CommitNote::new("create", "tessera").into_properties())
            .await;
        match created {
            Ok(t) => Ok(t),
            // Another process created it between our check and our commit.
            Err(_) if self.exists(def.name).await? => self.open(def.name).await,
            Err(e) => Err(LakeError::delta(def.name, "create", e)),
        }
    }

    /// Creates every standard table that does not exist yet; returns the ones created.
    pub async fn create_missing_tables(&self) -> Result<Vec<&'static str>> {
        let mut created = Vec::new();
        for def in schema::tables() {
            if !self.exists(def.name).await? {
                self.create(&def).await?;
                created.push(def.name);
            }
        }
        Ok(created)
    }

    /// Statistics of every table that exists, standard ones first.
    pub async fn stats_all(&self) -> Result<Vec<TableStats>> {
        self.open_all()
            .await?
            .iter()
            .map(|(name, table)| table_stats(name, table))
            .collect()
    }

    /// Rows, files, bytes and version of table `name`, from its Delta log.
    pub async fn stats(&self, name: &str) -> Result<TableStats> {
        let table = self.open(name).await?;
        table_stats(name, &table)
    }

    /// Starts an append to table `def.name` (created if missing). A table written
    /// before `def` gained nullable columns at its end gets them first (older rows read
    /// them as null).
    pub async fn append_writer(&self, def: &TableDef) -> Result<AppendWriter> {
        let table = self.open_or_create(def).await?;
        let table = self.add_new_columns(def, table).await?;
        AppendWriter::new(def.name, table)
    }

    /// Appends `batch` to `def` in one commit with `note`. With `once = (app, version)`
    /// the commit records that application transaction, and nothing is written when the
    /// table already holds `app` at `version` or later (another writer was first):
    /// returns whether it wrote.
    pub async fn append_once(
        &self,
        def: &TableDef,
        batch: deltalake::arrow::array::RecordBatch,
        mut note: CommitNote,
        once: Option<(&str, i64)>,
    ) -> Result<bool> {
        let mut writer = self.append_writer(def).await?;
        if let Some((app, version)) = once {
            if writer
                .transaction_version(app)
                .await?
                .is_some_and(|v| v >= version)
            {
                writer.abort();
                return Ok(false);
            }
            note = note.transaction(app, version);
        }
        writer.write(batch).await?;
        writer.commit(note).await?;
        Ok(true)
    }

    async fn add_new_columns(&self, def: &TableDef, table: DeltaTable) -> Result<DeltaTable> {
        let wanted = kernel_schema(def)?;
        let current = table
            .snapshot()
            .map_err(|e| LakeError::delta(def.name, "open", e))?
            .schema();
        if current.as_ref() == &wanted {
            return Ok(table);
        }
        let missing: Vec<_> = wanted
            .fields()
            .filter(|f| current.field(f.name()).is_none())
            .cloned()
            .collect();
        if missing.is_empty() || missing.iter().any(|f| !f.is_nullable()) {
            // Not an addition: the write reports the mismatch.
            return Ok(table);
        }
        table
            .add_columns()
            .with_fields(missing)
            .with_commit_properties(CommitNote::new("add_columns", "tessera").into_properties())
            .await
            .map_err(|e| LakeError::delta(def.name, "add columns to", e))
    }

    /// Starts a write whose commit replaces every row of table `def.name` (created if
    /// missing) with the rows written, in one atomic commit: readers see the old rows or
    /// the new ones, never a mix. The table takes `def.schema` if it had another one.
    pub async fn replace_writer(&self, def: &TableDef) -> Result<AppendWriter> {
        let table = self.open_or_create(def).await?;
        let wanted = kernel_schema(def)?;
        let current = table
            .snapshot()
            .map_err(|e| LakeError::delta(def.name, "open", e))?
            .schema();
        let new_schema = if current.as_ref() == &wanted {
            None
        } else {
            // The table's properties (statistics columns among them) stay.
            let configuration = table
                .snapshot()
                .map_err(|e| LakeError::delta(def.name, "open", e))?
                .metadata()
                .configuration()
                .clone();
            let metadata = deltalake::kernel::new_metadata(
                &wanted,
                def.partition_columns.iter().copied(),
                configuration,
            )
            .map_err(|e| LakeError::Schema {
                table: def.name.to_owned(),
                message: e.to_string(),
            })?;
            Some((def.schema.clone(), metadata))
        };
        AppendWriter::replacing(def.name, table, new_schema, &self.options)
    }

    /// Starts a write whose commit replaces the rows of one partition of table `def.name`
    /// (`column` = `value`, a partition column) with the rows written, in one atomic
    /// commit; the other partitions are untouched.
    pub async fn replace_partition_writer(
        &self,
        def: &TableDef,
        column: &str,
        value: &str,
    ) -> Result<AppendWriter> {
        if !def.partition_columns.contains(&column) {
            return Err(LakeError::Schema {
                table: def.name.to_owned(),
                message: format!("{column} is not a partition column"),
            });
        }
        let table = self.open_or_create(def).await?;
        AppendWriter::replacing_partition(def.name, table, column, value)
    }

    /// Deletes the rows of table `name` matching the SQL `predicate` (e.g. `run = 5`) in
    /// one commit; returns how many rows were deleted when Delta can tell.
    pub async fn delete_where(&self, name: &str, predicate: &str, actor: &str) -> Result<u64> {
        let table = self.open(name).await?;
        let (_, metrics) = table
            .delete()
            .with_predicate(predicate)
            .with_commit_properties(
                CommitNote::new("delete", actor)
                    .detail("predicate", predicate)
                    .into_properties(),
            )
            .await
            .map_err(|e| LakeError::delta(name, "delete from", e))?;
        Ok(metrics.num_deleted_rows.unwrap_or(0) as u64)
    }

    /// The version recorded for application transaction `app_id` in table `name`, if any.
    pub async fn transaction_version(&self, name: &str, app_id: &str) -> Result<Option<i64>> {
        let table = self.open(name).await?;
        writer::transaction_version(name, &table, app_id).await
    }
}

/// The Delta schema of a table definition.
async fn commit_time_of(table: &DeltaTable, version: u64) -> Result<i64> {
    use object_store::ObjectStoreExt as _;
    let log = table.log_store();
    let path = object_store::path::Path::from(format!("_delta_log/{version:020}.json"));
    let name = log.root_url().to_string();
    let meta = log
        .object_store(None)
        .head(&path)
        .await
        .map_err(|e| LakeError::Schema {
            table: name,
            message: format!("version {version} is not in the log: {e}"),
        })?;
    Ok(meta.last_modified.timestamp_micros())
}

fn kernel_schema(def: &TableDef) -> Result<StructType> {
    def.schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| LakeError::Schema {
            table: def.name.to_owned(),
            message: e.to_string(),
        })
}

/// Statistics of an open table.
pub fn table_stats(name: &str, table: &DeltaTable) -> Result<TableStats> {
    let snapshot = table
        .snapshot()
        .map_err(|e| LakeError::delta(name, "read", e))?;
    let mut stats = TableStats {
        name: name.to_owned(),
        version: snapshot.version(),
        files: 0,
        rows: 0,
        bytes: 0,
    };
    for file in snapshot.log_data().iter() {
        stats.files += 1;
        stats.bytes += file.size().max(0) as u64;
        stats.rows += file.num_records().unwrap_or(0) as u64;
    }
    Ok(stats)
}

/// Turns a local path or URL into the lake's root URL (with a trailing `/`).
pub fn location_url(location: &str) -> Result<Url> {
    let invalid = |reason: String| LakeError::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    let mut url = if tessera_core::config::is_url(location) {
        Url::parse(location).map_err(|e| invalid(e.to_string()))?
    } else {
        let path = Path::new(location);
        let abs = if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir()
                .map_err(|e| invalid(e.to_string()))?
                .join(path)
        };
        Url::from_directory_path(&abs).map_err(|_| invalid("not an absolute path".into()))?
    };
    match url.scheme() {
        "file" | "memory" | "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl" => {}
        other => {
            return Err(invalid(format!(
                "unsupported scheme {other:?}: use a local path, s3://, gs:// or az://"
            )));
        }
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// The sizes of `paths` (relative to `store`), looked up 16 at a time: `None` for a file
/// that is not there, 0 for one that cannot be looked at.
async fn file_sizes(
    store: &Arc<dyn object_store::ObjectStore>,
    paths: &[String],
) -> Vec<Option<u64>> {
    // Owned paths: a stream of futures over borrowed ones is not `Send` for every
    // lifetime, which callers' futures need.
    let paths: Vec<object_store::path::Path> = paths
        .iter()
        .map(|p| object_store::path::Path::from(p.as_str()))
        .collect();
    futures::stream::iter(paths)
        .map(|path| {
            let store = store.clone();
            async move {
                use object_store::ObjectStoreExt as _;
                match store.head(&path).await {
                    Ok(meta) => Some(meta.size),
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(_) => Some(0),
                }
            }
        })
        .buffered(16)
        .collect()
        .await
}

/// Shared handle to a lake.
pub type LakeRef = Arc<Lake>;

#[cfg(test)]
mod tests;
