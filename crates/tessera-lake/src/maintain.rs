//! Keeping tables fast as they grow: compaction, vacuum, checkpoints and the file layout.
//!
//! - [`Lake::optimize`] bin-packs a table's small files, partition by partition, into files
//!   of [`TARGET_FILE_BYTES`] (optionally Z-ordered by columns), in one commit whose files
//!   all carry `dataChange = false`: readers of rows see no change ([`crate::changes`]).
//! - [`Lake::vacuum`] deletes files no version within the retention needs (default
//!   [`DEFAULT_RETENTION_HOURS`]), never earlier than the earliest open a running reader
//!   holds ([`crate::lease`]), and refuses a retention shorter than the default unless
//!   forced.
//! - [`Lake::checkpoint`] writes a Delta checkpoint of the latest version and removes log
//!   entries older than the log retention that the checkpoint makes unnecessary. Every
//!   commit Tessera makes also checkpoints every [`CHECKPOINT_INTERVAL`] versions (Delta's
//!   post-commit hook), so opening a table reads one checkpoint and fewer than that many
//!   commits, however many commits it has had.

use std::num::NonZeroU64;

use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;

use crate::error::{LakeError, Result};
use crate::writer::{CommitNote, TARGET_FILE_BYTES, writer_properties};
use crate::{Lake, lease};

/// Retention of removed files that vacuum keeps by default (hours): a week of time travel.
pub const DEFAULT_RETENTION_HOURS: u64 = 7 * 24;
/// Delta's checkpoint interval (commits), which Tessera's tables keep.
pub const CHECKPOINT_INTERVAL: u64 = 100;
/// A file smaller than this counts as small: compaction takes it up.
pub const SMALL_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Below this retention, uncommitted leftovers of writes are not looked for (a write in
/// progress has such files): only files removed by commits are vacuumed.
pub(crate) const ORPHAN_MIN_HOURS: u64 = 1;

/// How a table's files are laid out (read from the Delta log; no data file is opened).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub table: String,
    pub version: u64,
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
    /// Files under [`SMALL_FILE_BYTES`].
    pub small_files: usize,
    pub smallest: u64,
    pub median: u64,
    pub largest: u64,
    pub partitions: usize,
}

/// What to compact and how.
#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    /// Size compacted files are packed to.
    pub target_file_bytes: u64,
    /// Columns to Z-order the rows of each partition by (empty: bin-packing only, which
    /// rewrites only small files).
    pub zorder: Vec<String>,
    /// Who asks (recorded in the commit).
    pub actor: String,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            target_file_bytes: TARGET_FILE_BYTES,
            zorder: Vec::new(),
            actor: "tessera".into(),
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptimizeReport {
    pub table: String,
    pub before: Layout,
    pub after: Layout,
    pub files_removed: u64,
    pub files_added: u64,
    pub bytes_removed: u64,
    pub bytes_added: u64,
    pub partitions_optimized: u64,
    /// The version committed (`None`: nothing was worth rewriting).
    pub version: Option<u64>,
}

/// What to vacuum.
#[derive(Debug, Clone)]
pub struct VacuumOptions {
    /// Files removed from the table longer ago than this are deleted (hours).
    pub retain_hours: u64,
    /// Accept a retention under [`DEFAULT_RETENTION_HOURS`] (time travel to older versions
    /// then fails).
    pub force: bool,
    /// Only report what would be deleted.
    pub dry_run: bool,
    pub actor: String,
}

impl Default for VacuumOptions {
    fn default() -> Self {
        VacuumOptions {
            retain_hours: DEFAULT_RETENTION_HOURS,
            force: false,
            dry_run: false,
            actor: "tessera".into(),
        }
    }
}

/// What a vacuum deleted (or would delete).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VacuumReport {
    pub table: String,
    pub dry_run: bool,
    pub files: Vec<String>,
    pub bytes: u64,
    /// The retention applied (hours, fractional when a reader's lease held it back).
    pub retained_hours: f64,
    /// The reader whose lease held files back, if one did.
    pub held_by: Option<String>,
}

impl Lake {
    /// The file layout of table `name`.
    pub async fn layout(&self, name: &str) -> Result<Layout> {
        layout_of(name, &self.open(name).await?)
    }

    /// Compacts table `name`: small files of each partition are packed into files of
    /// `options.target_file_bytes`, in one commit that changes no row. Appends committed
    /// meanwhile are kept (they touch other files); a concurrent delete or overwrite of the
    /// same files makes this commit fail, and nothing is changed.
    pub async fn optimize(&self, name: &str, options: &OptimizeOptions) -> Result<OptimizeReport> {
        let table = self.open(name).await?;
        let before = layout_of(name, &table)?;
        let target =
            NonZeroU64::new(options.target_file_bytes.max(1024 * 1024)).unwrap_or(NonZeroU64::MIN);
        let kind = if options.zorder.is_empty() {
            OptimizeType::Compact
        } else {
            OptimizeType::ZOrder(options.zorder.clone())
        };
        let mut note = CommitNote::new("optimize", &options.actor)
            .detail("target_file_bytes", options.target_file_bytes);
        if !options.zorder.is_empty() {
            note = note.detail("zorder", options.zorder.join(","));
        }
        let (optimized, metrics) = table
            .optimize()
            .with_type(kind)
            .with_target_size(target)
            .with_writer_properties(writer_properties())
            .with_max_concurrent_tasks(2)
            .with_commit_properties(note.into_properties())
            .await
            .map_err(|e| LakeError::delta(name, "optimize", e))?;
        // The table as the compaction committed it (the same snapshot when it had nothing
        // to rewrite).
        let after = layout_of(name, &optimized)?;
        let committed = after.version != before.version && metrics.num_files_removed > 0;
        Ok(OptimizeReport {
            table: name.to_owned(),
            version: committed.then_some(after.version),
            before,
            after,
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            bytes_removed: metrics.files_removed.total_size.max(0) as u64,
            bytes_added: metrics.files_added.total_size.max(0) as u64,
            partitions_optimized: metrics.partitions_optimized,
        })
    }

    /// Deletes the files of table `name` that no version within the retention needs.
    pub async fn vacuum(&self, name: &str, options: &VacuumOptions) -> Result<VacuumReport> {
        const LEASE_MARGIN_MS: i64 = 60_000;
        if options.retain_hours < DEFAULT_RETENTION_HOURS && !options.force {
            return Err(LakeError::Refused {
                table: name.to_owned(),
                message: format!(
                    "a retention of {} h is shorter than the default {DEFAULT_RETENTION_HOURS} h \
                     (7 days): versions older than it could no longer be read; pass --force to \
                     vacuum anyway",
                    options.retain_hours
                ),
            });
        }
        let table = self.open(name).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut retain_ms = options.retain_hours as i64 * 3_600_000;
        // A reader that opened the table at `t` needs files that were live at `t`: never
        // delete files removed after the earliest open a live lease holds.
        let leases = lease::live(&self.root_store()?, now, self.leases.holder())
            .await
            .map_err(|e| LakeError::Io {
                what: format!(
                    "reading the read leases under {}{}",
                    self.root,
                    lease::FOLDER
                ),
                source: std::io::Error::other(e),
            })?;
        let mut held_by = None;
        // delta-rs measures the retention from its own clock reading, a moment later
        // than `now`: a minute of margin keeps that moment from uncovering files.
        if let Some((at, holder)) = lease::earliest(&leases, name)
            && now - at + LEASE_MARGIN_MS > retain_ms
        {
            retain_ms = now - at + LEASE_MARGIN_MS;
            held_by = Some(holder);
        }
        let mode = if options.retain_hours >= ORPHAN_MIN_HOURS && held_by.is_none() {
            VacuumMode::Full
        } else {
            VacuumMode::Lite
        };
        let plan = |dry_run: bool| {
            table
                .clone()
                .vacuum()
                .with_retention_period(chrono::Duration::milliseconds(retain_ms))
                .with_enforce_retention_duration(false)
                .with_mode(mode.clone())
                .with_dry_run(dry_run)
                .with_commit_properties(
                    CommitNote::new("vacuum", &options.actor)
                        .detail("retain_hours", options.retain_hours)
                        .into_properties(),
                )
        };
        // Sizes are read before anything is deleted.
        let (_, planned) = plan(true)
            .await
            .map_err(|e| LakeError::delta(name, "vacuum", e))?;
        let store = table.log_store().object_store(None);
        let bytes = crate::file_sizes(&store, &planned.files_deleted)
            .await
            .into_iter()
            .flatten()
            .sum();
        let files = if options.dry_run {
            planned.files_deleted
        } else {
            plan(false)
                .await
                .map_err(|e| LakeError::delta(name, "vacuum", e))?
                .1
                .files_deleted
        };
        Ok(VacuumReport {
            table: name.to_owned(),
            dry_run: options.dry_run,
            bytes,
            files,
            retained_hours: retain_ms as f64 / 3_600_000.0,
            held_by,
        })
    }

    /// Writes a checkpoint of table `name`'s latest version and removes log entries older
    /// than the log retention (30 days) that it makes unnecessary; returns how many.
    pub async fn checkpoint(&self, name: &str) -> Result<usize> {
        let table = self.open(name).await?;
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(|e| LakeError::delta(name, "checkpoint", e))?;
        deltalake::checkpoints::cleanup_metadata(&table, None)
            .await
            .map_err(|e| LakeError::delta(name, "clean the log of", e))
    }
}

/// The file layout of an open table.
pub fn layout_of(name: &str, table: &deltalake::DeltaTable) -> Result<Layout> {
    let snapshot = table
        .snapshot()
        .map_err(|e| LakeError::delta(name, "read", e))?;
    let mut sizes = Vec::new();
    let mut rows = 0;
    let mut partitions = std::collections::HashSet::new();
    for file in snapshot.log_data().iter() {
        sizes.push(file.size().max(0) as u64);
        rows += file.num_records().unwrap_or(0) as u64;
        let mut values: Vec<(String, Option<String>)> =
            file.partition_values_map().into_iter().collect();
        values.sort();
        partitions.insert(format!("{values:?}"));
    }
    sizes.sort_unstable();
    Ok(Layout {
        table: name.to_owned(),
        version: snapshot.version(),
        files: sizes.len(),
        bytes: sizes.iter().sum(),
        rows,
        small_files: sizes.iter().filter(|s| **s < SMALL_FILE_BYTES).count(),
        smallest: sizes.first().copied().unwrap_or(0),
        median: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        largest: sizes.last().copied().unwrap_or(0),
        partitions: partitions.len(),
    })
}
