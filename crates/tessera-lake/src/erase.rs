//! What erasing a person needs from the lake: deleting rows by a predicate (Delta's
//! copy-on-write delete: every file holding a matching row is rewritten without it),
//! then **expunging** — removing from storage every file and log entry that still
//! holds the old rows, so that no reader, time travel or byte scan finds them — and
//! the lake's privacy salt.
//!
//! Expunging a table: vacuum of every file no longer in the latest version, whatever
//! its age (read leases do not hold it: an erasure is owed; a reader still on an older
//! version gets [`LakeError::VersionGone`] or a missing-file error, never silently
//! fewer rows), vacuum of unreferenced files older than an hour (leftovers of crashed
//! writers; younger ones may belong to a commit in flight), a checkpoint of the latest
//! version, and removal of every log entry and checkpoint before it. Versions before
//! the erasure can then no longer be loaded.
//!
//! Personal columns never get min/max statistics in the log
//! ([`tessera_core::schema::stats_columns`]): tables are created with
//! `delta.dataSkippingStatsColumns`, [`Lake::migrate_stats_columns`] sets it on tables
//! made before and re-records their files without such statistics (the old log
//! entries then go with an expunge), and every Tessera commit strips such statistics
//! from the files it adds (`writer.rs`).

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::Expr;
use deltalake::operations::vacuum::VacuumMode;
use object_store::{ObjectStoreExt as _, PutMode, PutOptions};
use serde::Serialize;
use tessera_core::schema;

use crate::{CommitNote, Lake, LakeError, Result};

/// Where the lake's privacy salt lives, under the root.
pub const SALT_PATH: &str = "_tessera/privacy/salt";

/// The Delta property naming the columns with data-skipping statistics.
pub const STATS_COLUMNS_PROPERTY: &str = "delta.dataSkippingStatsColumns";

/// Attempts at a delete or update that conflicts with concurrent commits.
const WRITE_ATTEMPTS: usize = 8;

/// What expunging one table removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Expunged {
    pub table: String,
    /// Data files deleted from storage.
    pub files: usize,
    /// Log entries (commits, old checkpoints) deleted.
    pub log_entries: usize,
    /// The version every older version was folded into.
    pub version: u64,
}

impl Lake {
    /// The lake's privacy salt: 64 hex digits made from the system's random bytes on
    /// first use and stored at [`SALT_PATH`] (two processes racing agree on one).
    pub async fn privacy_salt(&self) -> Result<String> {
        let store = self.root_store()?;
        let path = object_store::path::Path::from(SALT_PATH);
        let io = |what: &str, e: object_store::Error| LakeError::Io {
            what: format!("{what} the privacy salt {}{SALT_PATH}", self.root),
            source: std::io::Error::other(e),
        };
        for _ in 0..2 {
            match store.get(&path).await {
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(|e| io("reading", e))?;
                    let salt = String::from_utf8_lossy(&bytes).trim().to_owned();
                    if salt.len() < 32 {
                        return Err(LakeError::Refused {
                            table: "(lake)".into(),
                            message: format!(
                                "the privacy salt {}{SALT_PATH} is damaged ({} characters); \
                                 restore it from a backup: every suppression hash depends on it",
                                self.root,
                                salt.len()
                            ),
                        });
                    }
                    return Ok(salt);
                }
                Err(object_store::Error::NotFound { .. }) => {
                    let salt = tessera_core::auth::random_token().map_err(|e| LakeError::Io {
                        what: "drawing a privacy salt".into(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                    let put = store
                        .put_opts(
                            &path,
                            salt.clone().into_bytes().into(),
                            PutOptions::from(PutMode::Create),
                        )
                        .await;
                    match put {
                        Ok(_) => return Ok(salt),
                        Err(object_store::Error::AlreadyExists { .. }) => continue,
                        Err(e) => return Err(io("writing", e)),
                    }
                }
                Err(e) => return Err(io("reading", e)),
            }
        }
        Err(LakeError::Io {
            what: format!("reading the privacy salt {}{SALT_PATH}", self.root),
            source: std::io::Error::other("it was created and is still not readable"),
        })
    }

    /// Deletes the rows of table `name` where `predicate` is true, in one commit
    /// (retried on a conflict with concurrent writers); returns the rows deleted. The
    /// predicate is recorded in the log as SQL: it must not hold personal values
    /// (match through a function holding them, as erasure does).
    pub async fn delete_rows(&self, name: &str, predicate: Expr, note: CommitNote) -> Result<u64> {
        self.retrying(name, "delete from", |table| {
            let (predicate, note) = (predicate.clone(), note.clone());
            async move {
                let (_, metrics) = table
                    .delete()
                    .with_predicate(predicate)
                    .with_writer_properties(crate::writer::writer_properties())
                    .with_commit_properties(note.into_properties())
                    .await?;
                Ok(metrics.num_deleted_rows.unwrap_or(0) as u64)
            }
        })
        .await
    }

    /// Deletes the rows of table `name` where both `scope` and `drop` are true, in one
    /// copy-on-write rewrite: one scan finds the files holding such rows, a second reads
    /// those files without them, and one commit replaces the files. `scope` is SQL over
    /// the table's columns and is recorded as the commit's predicate — what Delta's
    /// conflict check re-parses (without Tessera's functions) when a concurrent commit
    /// landed meanwhile, so a blind append outside it does not conflict; `drop` may call
    /// in-memory functions and is evaluated once per row, whatever the number of values
    /// it tests (a delete's `IN` list of thousands of literals cost ids × files read).
    /// Retried on conflicts; returns the rows removed. Fails, committing nothing, when
    /// the rows written back are not the files' rows minus those removed.
    pub async fn rewrite_without(
        &self,
        name: &str,
        scope: &str,
        drop: Expr,
        note: CommitNote,
    ) -> Result<u64> {
        let mut attempt = 0;
        loop {
            let table = self.open(name).await?;
            match rewrite_once(name, table, scope, drop.clone(), note.clone()).await {
                Err(LakeError::Delta { source, .. })
                    if is_conflict(&source) && attempt + 1 < WRITE_ATTEMPTS =>
                {
                    tracing::debug!(
                        table = name,
                        attempt,
                        "rewrite conflicted; retrying: {source}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(5)))
                        .await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sets `updates` (column, expression) on the rows of table `name` where `predicate`
    /// is true, in one commit (retried on conflicts); returns the rows updated.
    pub async fn update_rows(
        &self,
        name: &str,
        predicate: Expr,
        updates: &[(&str, Expr)],
        note: CommitNote,
    ) -> Result<u64> {
        self.retrying(name, "update", |table| {
            let (predicate, note) = (predicate.clone(), note.clone());
            let updates: Vec<(String, Expr)> = updates
                .iter()
                .map(|(c, e)| ((*c).to_owned(), e.clone()))
                .collect();
            async move {
                let mut update = table
                    .update()
                    .with_predicate(predicate)
                    .with_writer_properties(crate::writer::writer_properties())
                    .with_commit_properties(note.into_properties());
                for (column, expr) in updates {
                    update = update.with_update(column, expr);
                }
                let (_, metrics) = update.await?;
                Ok(metrics.num_updated_rows as u64)
            }
        })
        .await
    }

    /// Runs `write` on the latest version of table `name`, again on a newer one when
    /// it lost to a concurrent commit (up to [`WRITE_ATTEMPTS`] times, backing off).
    async fn retrying<F, Fut>(&self, name: &str, action: &str, write: F) -> Result<u64>
    where
        F: Fn(deltalake::DeltaTable) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<u64, deltalake::DeltaTableError>>,
    {
        let mut attempt = 0;
        loop {
            match write(self.open(name).await?).await {
                Ok(rows) => return Ok(rows),
                Err(e) if is_conflict(&e) && attempt + 1 < WRITE_ATTEMPTS => {
                    tracing::debug!(table = name, attempt, "{action} conflicted; retrying: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(5)))
                        .await;
                    attempt += 1;
                }
                Err(e) => return Err(LakeError::delta(name, action, e)),
            }
        }
    }

    /// Removes from storage every file and log entry of table `name` that only versions
    /// before the latest need (see the module docs).
    pub async fn expunge(&self, name: &str, actor: &str) -> Result<Expunged> {
        let table = self.open(name).await?;
        let vacuum = |table: deltalake::DeltaTable, mode: VacuumMode, hours: i64| {
            table
                .vacuum()
                .with_retention_period(chrono::Duration::hours(hours))
                .with_enforce_retention_duration(false)
                .with_mode(mode)
                .with_commit_properties(
                    CommitNote::new("expunge", actor)
                        .detail("retain_hours", hours)
                        .into_properties(),
                )
        };
        let (table, removed) = vacuum(table, VacuumMode::Lite, 0)
            .await
            .map_err(|e| LakeError::delta(name, "vacuum", e))?;
        let (_, orphans) = vacuum(
            table,
            VacuumMode::Full,
            crate::maintain::ORPHAN_MIN_HOURS as i64,
        )
        .await
        .map_err(|e| LakeError::delta(name, "vacuum", e))?;
        let files = removed.files_deleted.len() + orphans.files_deleted.len();
        let table = self.open(name).await?;
        let version = table.version().unwrap_or(0);
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(|e| LakeError::delta(name, "checkpoint", e))?;
        // Every entry before the checkpoint just written, whatever its age.
        let cutoff = chrono::Utc::now().timestamp_millis() + 60_000;
        let log_entries = deltalake::checkpoints::cleanup_expired_logs_for(
            version,
            table.log_store().as_ref(),
            cutoff,
            None,
        )
        .await
        .map_err(|e| LakeError::delta(name, "clean the log of", e))?;
        Ok(Expunged {
            table: name.to_owned(),
            files,
            log_entries,
            version,
        })
    }

    /// Sets `delta.dataSkippingStatsColumns` ([`schema::stats_columns`]) on every
    /// standard table that exists without it, and re-records without their personal
    /// statistics the files written before ([`Lake::strip_personal_stats`]); returns
    /// the tables changed. Their older log entries and checkpoints still hold those
    /// statistics until [`Lake::expunge`] (which erasure runs on every table returned).
    pub async fn migrate_stats_columns(&self) -> Result<Vec<&'static str>> {
        let mut changed = Vec::new();
        for def in schema::tables() {
            let Some(table) = self.try_open(def.name).await? else {
                continue;
            };
            let wanted = schema::stats_columns(&def).join(",");
            let current = table
                .snapshot()
                .map_err(|e| LakeError::delta(def.name, "read", e))?
                .metadata()
                .configuration()
                .get(STATS_COLUMNS_PROPERTY)
                .cloned();
            if current.as_deref() != Some(wanted.as_str()) {
                table
                    .set_tbl_properties()
                    .with_properties([(STATS_COLUMNS_PROPERTY.to_owned(), wanted)].into())
                    .with_raise_if_not_exists(false)
                    .with_commit_properties(
                        CommitNote::new("set_properties", "tessera").into_properties(),
                    )
                    .await
                    .map_err(|e| LakeError::delta(def.name, "set the properties of", e))?;
                changed.push(def.name);
            }
            if self.strip_personal_stats(def.name).await? > 0 && !changed.contains(&def.name) {
                changed.push(def.name);
            }
        }
        Ok(changed)
    }

    /// Re-records every active file of table `name` whose statistics name a personal
    /// column ([`schema::is_personal_column`]) without those statistics, in one commit
    /// of `add` actions with `dataChange = false` (a later `add` of a path replaces the
    /// earlier one; readers of rows see no change). The commit is made on exactly the
    /// version read — never rebased, which could re-add a file a concurrent commit
    /// removed — and re-planned when another commit landed first. Returns the files
    /// re-recorded.
    pub async fn strip_personal_stats(&self, name: &str) -> Result<usize> {
        use deltalake::kernel::Action;
        use deltalake::kernel::transaction::CommitBuilder;
        use deltalake::protocol::DeltaOperation;
        let mut attempt = 0;
        loop {
            let table = self.open(name).await?;
            let snapshot = table
                .snapshot()
                .map_err(|e| LakeError::delta(name, "read", e))?;
            let adds: Vec<Action> = snapshot
                .log_data()
                .iter()
                .filter_map(|file| {
                    let stripped = crate::writer::strip_personal_stats(name, &file.stats()?)?;
                    #[allow(deprecated)] // the whole action is what is re-recorded
                    let mut add = file.add_action();
                    add.data_change = false;
                    add.stats = Some(stripped);
                    Some(Action::Add(add))
                })
                .collect();
            if adds.is_empty() {
                return Ok(0);
            }
            let files = adds.len();
            let committed = CommitBuilder::from(
                CommitNote::new("strip_statistics", "tessera")
                    .detail("files", files)
                    .into_properties()
                    .with_max_retries(0),
            )
            .with_actions(adds)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: 0,
                },
            )
            .await;
            match committed {
                Ok(_) => return Ok(files),
                Err(e) if is_conflict(&e) && attempt + 1 < WRITE_ATTEMPTS => {
                    tracing::debug!(
                        table = name,
                        attempt,
                        "re-recording statistics lost to a commit; again: {e}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(5)))
                        .await;
                    attempt += 1;
                }
                Err(e) => return Err(LakeError::delta(name, "re-record the statistics of", e)),
            }
        }
    }
}

/// One attempt of [`Lake::rewrite_without`] on `table`'s snapshot.
async fn rewrite_once(
    name: &str,
    table: deltalake::DeltaTable,
    scope: &str,
    drop: Expr,
    note: CommitNote,
) -> Result<u64> {
    use datafusion::arrow::array::AsArray as _;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::prelude::{SessionContext, cast, col, lit};
    const FILE: &str = "__tessera_file";
    let delta = |e: deltalake::DeltaTableError| LakeError::delta(name, "rewrite", e);
    let df = |e: datafusion::error::DataFusionError| delta(e.into());
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(delta)?;
    let all = ctx
        .read_table(
            table
                .table_provider()
                .with_file_column(FILE)
                .await
                .map_err(df)?,
        )
        .map_err(df)?;
    let scope_expr = all.parse_sql_expr(scope).map_err(df)?;
    let doomed = scope_expr.and(drop);
    let found = all
        .filter(doomed.clone())
        .and_then(|rows| rows.aggregate(vec![col(FILE)], vec![count(lit(1)).alias("rows")]))
        .map_err(df)?
        .collect()
        .await
        .map_err(df)?;
    let mut hit: std::collections::HashMap<String, u64> = Default::default();
    for batch in &found {
        let file = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .map_err(|e| df(e.into()))?;
        let rows = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for (i, file) in file.as_string::<i32>().iter().enumerate() {
            if let Some(file) = file {
                hit.insert(file.to_owned(), rows.value(i) as u64);
            }
        }
    }
    if hit.is_empty() {
        return Ok(0);
    }
    let removed: u64 = hit.values().sum();
    // The snapshot's files for the ids the scan names (table root + path).
    let snapshot = table.snapshot().map_err(delta)?;
    let mut root = table.table_url().clone();
    if !root.path().ends_with('/') {
        root.set_path(&format!("{}/", root.path()));
    }
    let (mut removes, mut before) = (Vec::new(), Some(0u64));
    for file in snapshot.log_data().iter() {
        let id = root
            .join(&file.path())
            .map_or_else(|_| file.path().into_owned(), String::from);
        if hit.contains_key(&id) {
            before = before.zip(file.num_records()).map(|(b, n)| b + n as u64);
            removes.push(file.remove_action(true));
        }
    }
    if removes.len() != hit.len() {
        return Err(delta(deltalake::DeltaTableError::Generic(format!(
            "{} of the {} files holding rows to delete are not in the table's version {}",
            hit.len() - removes.len(),
            hit.len(),
            snapshot.version()
        ))));
    }
    let paths: Vec<String> = hit.into_keys().collect();
    let mut writer = crate::writer::AppendWriter::replacing_files(
        name,
        table.clone(),
        removes,
        scope.to_owned(),
    )?;
    let schema = writer.schema();
    let kept = ctx
        .read_table(
            table
                .table_provider()
                .with_file_paths(paths)
                .await
                .map_err(df)?,
        )
        .and_then(|rows| rows.filter(doomed.is_not_true()))
        .and_then(|rows| {
            rows.select(
                schema
                    .fields()
                    .iter()
                    .map(|f| cast(col(f.name()), f.data_type().clone()).alias(f.name()))
                    .collect::<Vec<_>>(),
            )
        })
        .map_err(df)?;
    let mut stream = kept.execute_stream().await.map_err(df)?;
    use futures::StreamExt as _;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df)?;
        let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
            .map_err(|e| df(e.into()))?;
        writer.write(batch).await?;
    }
    let written = writer.rows();
    if let Some(before) = before.filter(|b| written + removed != *b) {
        writer.abort();
        return Err(delta(deltalake::DeltaTableError::Generic(format!(
            "the rewrite would keep {written} of the files' {before} rows while removing \
             {removed}; nothing was committed"
        ))));
    }
    writer.commit(note).await?;
    Ok(removed)
}

/// Whether `e` is a commit lost to a concurrent one — also when Delta's conflict check
/// could not re-read the predicate (it parses the predicate's SQL in a session without
/// the caller's functions): a retry on the new version then usually meets no commit in
/// between.
fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    let text = e.to_string().to_lowercase();
    matches!(
        e,
        deltalake::DeltaTableError::Transaction { .. }
            | deltalake::DeltaTableError::VersionAlreadyExists(_)
    ) || text.contains("conflict")
        || text.contains("invalid function")
}
