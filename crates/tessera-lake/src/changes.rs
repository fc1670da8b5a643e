//! Which commits changed a table's rows.
//!
//! Compaction ([`Lake::optimize`](crate::Lake::optimize)) and vacuum commit new table
//! versions without changing a single row: every file they add or remove carries
//! `dataChange = false`. Incremental readers — stitching's "events appended since", segment
//! fingerprints, predict's input versions, the server's profile index — ask the questions
//! of this module instead of comparing version numbers or file lists, so that such commits
//! are never taken for new data (no re-processing, no double counting).

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::Action;
use futures::{StreamExt as _, TryStreamExt as _};

use crate::Lake;
use crate::error::{LakeError, Result};

/// Commit entries read at once when walking a log.
const READ_AHEAD: usize = 16;
/// How far back [`Lake::data_version`] walks over maintenance commits before it gives up
/// and answers the version it reached (conservative: taken for a change).
const MAX_WALK: u64 = 10_000;

/// What one commit did, as far as readers of rows care.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct CommitKind {
    /// Files added with rows new to the table.
    appended: Vec<String>,
    /// Files removed with their rows (delete, overwrite).
    removed_rows: bool,
    /// Files removed without a change of rows (compaction), by path.
    compacted: Vec<String>,
    /// Schema, partitioning or protocol changed.
    metadata: bool,
}

impl CommitKind {
    fn parse(table: &str, version: u64, bytes: &bytes::Bytes) -> Result<CommitKind> {
        let actions = deltalake::logstore::get_actions(version, bytes)
            .map_err(|e| LakeError::delta(table, &format!("read commit {version} of"), e))?;
        let mut kind = CommitKind::default();
        for action in actions {
            match action {
                Action::Add(add) if add.data_change => kind.appended.push(add.path),
                Action::Remove(remove) if remove.data_change => kind.removed_rows = true,
                Action::Remove(remove) => kind.compacted.push(remove.path),
                Action::Metadata(_) | Action::Protocol(_) => kind.metadata = true,
                _ => {}
            }
        }
        Ok(kind)
    }

    /// Whether the commit changed what a query over the table returns.
    fn changes_rows(&self) -> bool {
        !self.appended.is_empty() || self.removed_rows || self.metadata
    }
}

/// What changed in a table between two versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The version compared from.
    pub from: u64,
    /// The version compared to (the latest when asked).
    pub to: u64,
    /// Files appended with new rows after `from`, grouped by a version at which every file
    /// of the group is part of the table: `to` for files still there, or the version just
    /// before the compaction that folded them into larger files (which stay readable until
    /// vacuum removes them).
    pub appended: BTreeMap<u64, Vec<String>>,
    /// Rows were deleted or rewritten, or the schema changed: an incremental reader cannot
    /// take only the appended files and must read the table whole.
    pub rewritten: bool,
    /// Commits that only rearranged files (compaction) or vacuumed.
    pub maintenance_commits: u64,
    /// Of the appended files, those a commit that also removed rows added (a delete or
    /// an erasure rewriting files): their rows are not new, only rewritten.
    pub rewrites: std::collections::HashSet<String>,
}

impl Changes {
    /// Whether no row was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.appended.is_empty() && !self.rewritten
    }

    /// How many appended files there are.
    pub fn appended_files(&self) -> usize {
        self.appended.values().map(Vec::len).sum()
    }
}

impl Lake {
    async fn commit_kinds(
        &self,
        name: &str,
        versions: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<Vec<(u64, CommitKind)>>> {
        let table = self
            .builder(name)?
            .build()
            .map_err(|e| LakeError::delta(name, "open", e))?;
        let store = table.log_store();
        let read: Vec<(u64, Option<bytes::Bytes>)> = futures::stream::iter(versions)
            .map(|v| {
                let store = store.clone();
                async move {
                    let bytes = store
                        .read_commit_entry(v)
                        .await
                        .map_err(|e| LakeError::delta(name, &format!("read commit {v} of"), e))?;
                    Ok::<_, LakeError>((v, bytes))
                }
            })
            .buffered(READ_AHEAD)
            .try_collect()
            .await?;
        let mut kinds = Vec::with_capacity(read.len());
        for (v, bytes) in read {
            // A commit entry removed by log cleanup: the history is no longer known.
            let Some(bytes) = bytes else { return Ok(None) };
            let kind = CommitKind::parse(name, v, &bytes)?;
            kinds.push((v, kind));
        }
        Ok(Some(kinds))
    }

    /// What changed in table `name` after version `from`, up to its latest version.
    /// `None` when that history is no longer in the log (cleaned up after its retention):
    /// the caller reads the table whole.
    pub async fn changes_since(&self, name: &str, from: u64) -> Result<Option<Changes>> {
        // Lists the log from `from` on rather than loading the table.
        let Some(to) = self.latest_version(name, Some(from as i64)).await? else {
            return Err(LakeError::TableNotFound {
                name: name.to_owned(),
                location: self.table_url(name)?.to_string(),
            });
        };
        self.changes_between(name, from, to as u64).await
    }

    /// What changed in table `name` after version `from` up to version `to` (a reader's
    /// snapshot: commits after it are not looked at). `None` as for
    /// [`changes_since`](Self::changes_since).
    pub async fn changes_between(&self, name: &str, from: u64, to: u64) -> Result<Option<Changes>> {
        let mut changes = Changes {
            from,
            to,
            ..Changes::default()
        };
        if to <= from {
            return Ok(Some(changes));
        }
        let Some(kinds) = self.commit_kinds(name, from + 1..=to).await? else {
            return Ok(None);
        };
        let mut added: HashMap<String, Option<u64>> = HashMap::new();
        for (v, kind) in kinds {
            if !kind.changes_rows() {
                changes.maintenance_commits += 1;
            }
            changes.rewritten |= kind.removed_rows || kind.metadata;
            if kind.removed_rows {
                changes.rewrites.extend(kind.appended.iter().cloned());
            }
            for path in kind.compacted {
                if let Some(gone) = added.get_mut(&path) {
                    gone.get_or_insert(v);
                }
            }
            for path in kind.appended {
                added.insert(path, None);
            }
        }
        for (path, removed_at) in added {
            let live_at = removed_at.map_or(to, |r| r - 1);
            changes.appended.entry(live_at).or_default().push(path);
        }
        for files in changes.appended.values_mut() {
            files.sort();
        }
        Ok(Some(changes))
    }

    /// Whether any commit of table `name` in `(from, to]` changed its rows (a missing
    /// history counts as a change).
    pub async fn rows_changed_between(&self, name: &str, from: u64, to: u64) -> Result<bool> {
        if to <= from {
            return Ok(false);
        }
        Ok(match self.commit_kinds(name, from + 1..=to).await? {
            Some(kinds) => kinds.iter().any(|(_, k)| k.changes_rows()),
            None => true,
        })
    }

    /// The latest version of table `name` whose commit changed rows: the table's version
    /// with trailing compaction and vacuum commits skipped (`None`: no such table). What a
    /// reader records as "the data I have seen".
    pub async fn data_version(&self, name: &str) -> Result<Option<i64>> {
        let Some(table) = self.try_open(name).await? else {
            return Ok(None);
        };
        let Some(mut v) = table.version() else {
            return Ok(None);
        };
        let floor = v.saturating_sub(MAX_WALK);
        while v > floor {
            let start = v.saturating_sub(READ_AHEAD as u64 - 1).max(floor + 1);
            let Some(kinds) = self.commit_kinds(name, start..=v).await? else {
                return Ok(Some(v as i64));
            };
            for (version, kind) in kinds.iter().rev() {
                if kind.changes_rows() {
                    return Ok(Some(*version as i64));
                }
            }
            v = start - 1;
        }
        Ok(Some(v as i64))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kind(lines: &[&str]) -> CommitKind {
        CommitKind::parse("t", 1, &bytes::Bytes::from(lines.join("\n"))).unwrap()
    }

    #[test]
    fn compaction_commits_change_no_rows() {
        let add = |path: &str, data: bool| {
            format!(
                r#"{{"add":{{"path":"{path}","partitionValues":{{}},"size":1,"modificationTime":1,"dataChange":{data}}}}}"#
            )
        };
        let remove = |path: &str, data: bool| {
            format!(r#"{{"remove":{{"path":"{path}","dataChange":{data},"deletionTimestamp":1}}}}"#)
        };
        let info = r#"{"commitInfo":{"timestamp":1,"operation":"OPTIMIZE"}}"#;
        let compaction = kind(&[
            &add("c", false),
            &remove("a", false),
            &remove("b", false),
            info,
        ]);
        assert!(!compaction.changes_rows());
        assert_eq!(compaction.compacted, vec!["a", "b"]);
        let append = kind(&[&add("d", true), info]);
        assert!(append.changes_rows());
        assert_eq!(append.appended, vec!["d"]);
        let delete = kind(&[&remove("d", true), info]);
        assert!(delete.changes_rows() && delete.removed_rows);
        let vacuum = kind(&[r#"{"commitInfo":{"timestamp":1,"operation":"VACUUM END"}}"#]);
        assert!(!vacuum.changes_rows());
    }
}
