use std::sync::Arc;

use deltalake::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use tessera_core::schema::{IMPORTED_FILES, imported_files_schema};

use super::*;

fn row(fingerprint: &str) -> RecordBatch {
    let s = |v: &str| Arc::new(StringArray::from(vec![v])) as _;
    let n = |v: i64| Arc::new(Int64Array::from(vec![v])) as _;
    let t = || {
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_000)]).with_timezone("UTC"),
        ) as _
    };
    RecordBatch::try_new(
        imported_files_schema(),
        vec![
            s(fingerprint),
            s("file:///x"),
            n(1),
            t(),
            s("e"),
            s("ndjson"),
            s("import"),
            n(1),
            n(1),
            n(0),
            n(0),
            n(1),
            t(),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn create_append_and_transaction_ids() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let created = lake.create_missing_tables().await.unwrap();
    assert!(created.contains(&"events"));
    assert!(
        lake.create_missing_tables().await.unwrap().is_empty(),
        "second call creates nothing"
    );

    let def = schema::table(IMPORTED_FILES).unwrap();
    let mut w = lake.append_writer(&def).await.unwrap();
    w.write(row("a")).await.unwrap();
    let v = w
        .commit(
            CommitNote::new("test", "unit")
                .transaction("app-1", 7)
                .transaction("app-3", 9),
        )
        .await
        .unwrap();
    assert_eq!(v, Some(1));
    // One commit, two applications' transactions.
    assert_eq!(
        lake.transaction_version(IMPORTED_FILES, "app-3")
            .await
            .unwrap(),
        Some(9)
    );
    assert_eq!(
        lake.transaction_version(IMPORTED_FILES, "app-1")
            .await
            .unwrap(),
        Some(7)
    );
    assert_eq!(
        lake.transaction_version(IMPORTED_FILES, "app-2")
            .await
            .unwrap(),
        None
    );

    let stats = lake.stats(IMPORTED_FILES).await.unwrap();
    assert_eq!((stats.rows, stats.files, stats.version), (1, 1, 1));

    // An aborted append leaves the table as it was.
    let mut w = lake.append_writer(&def).await.unwrap();
    w.write(row("b")).await.unwrap();
    w.abort();
    assert_eq!(lake.stats(IMPORTED_FILES).await.unwrap().rows, 1);

    // Time travel.
    let old = lake.open_version(IMPORTED_FILES, 0).await.unwrap();
    assert_eq!(table_stats(IMPORTED_FILES, &old).unwrap().rows, 0);
}

#[tokio::test]
async fn wrong_schema_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let def = schema::table(IMPORTED_FILES).unwrap();
    let mut w = lake.append_writer(&def).await.unwrap();
    let batch =
        RecordBatch::try_from_iter(vec![("x", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
    let err = w.write(batch).await.unwrap_err().to_string();
    assert!(err.contains(IMPORTED_FILES), "{err}");
}

#[tokio::test]
async fn missing_table_and_bad_locations() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let err = lake.open("events").await.unwrap_err().to_string();
    assert!(
        err.contains("does not exist") && err.contains("tessera init"),
        "{err}"
    );
    let err = location_url("ftp://host/x").unwrap_err().to_string();
    assert!(err.contains("unsupported scheme"), "{err}");
    assert_eq!(
        location_url("s3://bucket/prefix").unwrap().as_str(),
        "s3://bucket/prefix/"
    );
}

/// `n` rows of table `scores` for `model`: profiles `p0`… with score 0.5.
fn scores(model: &str, n: usize) -> RecordBatch {
    use deltalake::arrow::array::Float64Array;
    let s = |v: &str| Arc::new(StringArray::from(vec![v; n])) as _;
    RecordBatch::try_new(
        tessera_core::schema::scores_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("p{i}")),
            )) as _,
            s(model),
            Arc::new(Int64Array::from(vec![1; n])) as _,
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_700_000_000_000_000; n])
                    .with_timezone("UTC"),
            ) as _,
            s("value"),
            Arc::new(Float64Array::from(vec![0.5; n])) as _,
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn replacing_one_partition_keeps_the_others() {
    use tessera_core::schema::SCORES;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let def = schema::table(SCORES).unwrap();
    for (model, n) in [("a", 3), ("b", 5)] {
        let mut w = lake
            .replace_partition_writer(&def, "model", model)
            .await
            .unwrap();
        w.write(scores(model, n)).await.unwrap();
        w.commit(CommitNote::new("test", "unit")).await.unwrap();
    }
    assert_eq!(lake.stats(SCORES).await.unwrap().rows, 8);
    // Model `a` again, with 2 rows: its 3 go, `b`'s 5 stay.
    let mut w = lake
        .replace_partition_writer(&def, "model", "a")
        .await
        .unwrap();
    w.write(scores("a", 2)).await.unwrap();
    w.commit(CommitNote::new("test", "unit")).await.unwrap();
    assert_eq!(lake.stats(SCORES).await.unwrap().rows, 7);
    // Not a partition column: refused before anything is written.
    let err = lake
        .replace_partition_writer(&def, "score", "x")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a partition column"), "{err}");
}

#[tokio::test]
async fn latest_version_without_loading_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    assert_eq!(
        lake.latest_version(IMPORTED_FILES, None).await.unwrap(),
        None
    );
    let def = schema::table(IMPORTED_FILES).unwrap();
    lake.create_missing_tables().await.unwrap();
    assert_eq!(
        lake.latest_version(IMPORTED_FILES, None).await.unwrap(),
        Some(0)
    );
    for (i, fingerprint) in ["a", "b", "c"].into_iter().enumerate() {
        let mut w = lake.append_writer(&def).await.unwrap();
        w.write(row(fingerprint)).await.unwrap();
        w.commit(CommitNote::new("test", "unit")).await.unwrap();
        let now = Some(i as i64 + 1);
        for known in [None, Some(0), Some(i as i64), now] {
            assert_eq!(
                lake.latest_version(IMPORTED_FILES, known).await.unwrap(),
                now,
                "known {known:?}"
            );
        }
    }
    // A version the log never had (a table replaced by a younger one): opened in full.
    assert_eq!(
        lake.latest_version(IMPORTED_FILES, Some(40)).await.unwrap(),
        Some(3)
    );
}

async fn append(lake: &Lake, fingerprint: &str, txn: Option<i64>) -> u64 {
    let def = schema::table(IMPORTED_FILES).unwrap();
    let mut w = lake.append_writer(&def).await.unwrap();
    w.write(row(fingerprint)).await.unwrap();
    let mut note = CommitNote::new("test", "unit");
    if let Some(t) = txn {
        note = note.transaction("collector", t);
    }
    w.commit(note).await.unwrap().unwrap()
}

fn files_on_disk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(IMPORTED_FILES))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".parquet")
        })
        .count()
}

#[tokio::test]
async fn compaction_changes_no_rows_and_readers_see_no_new_data() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    for i in 0..6 {
        append(&lake, &format!("f{i}"), Some(i)).await;
    }
    let seen = lake.data_version(IMPORTED_FILES).await.unwrap().unwrap() as u64;
    assert_eq!(seen, 6);
    // Two more appends after the reader's version, then a compaction of everything.
    append(&lake, "g0", Some(6)).await;
    append(&lake, "g1", Some(7)).await;
    let report = lake
        .optimize(IMPORTED_FILES, &maintain::OptimizeOptions::default())
        .await
        .unwrap();
    assert_eq!((report.before.files, report.after.files), (8, 1));
    assert_eq!((report.files_removed, report.files_added), (8, 1));
    assert_eq!(report.before.rows, report.after.rows);
    assert_eq!(report.version, Some(9));
    // The compaction is no new data...
    assert_eq!(lake.data_version(IMPORTED_FILES).await.unwrap(), Some(8));
    assert!(
        !lake
            .rows_changed_between(IMPORTED_FILES, 8, 9)
            .await
            .unwrap()
    );
    assert!(
        lake.rows_changed_between(IMPORTED_FILES, 7, 9)
            .await
            .unwrap()
    );
    // ...the two appended files are still found, in the version before the compaction.
    let changes = lake
        .changes_since(IMPORTED_FILES, seen)
        .await
        .unwrap()
        .unwrap();
    assert!(!changes.rewritten);
    assert_eq!(changes.maintenance_commits, 1);
    assert_eq!(
        changes.appended.keys().copied().collect::<Vec<_>>(),
        vec![8]
    );
    assert_eq!(changes.appended_files(), 2);
    let before = lake.open_version(IMPORTED_FILES, 8).await.unwrap();
    let live: Vec<String> = before
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect();
    assert!(changes.appended[&8].iter().all(|p| live.contains(p)));
    // Nothing since the compaction; an append after it is live at the latest version.
    assert!(
        lake.changes_since(IMPORTED_FILES, 9)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    append(&lake, "h", None).await;
    let changes = lake
        .changes_since(IMPORTED_FILES, 9)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        changes.appended.keys().copied().collect::<Vec<_>>(),
        vec![10]
    );
    // Application transactions survive compaction.
    assert_eq!(
        lake.transaction_version(IMPORTED_FILES, "collector")
            .await
            .unwrap(),
        Some(7)
    );
    // A second optimize has nothing worth rewriting... but two files now: it packs them.
    let again = lake
        .optimize(IMPORTED_FILES, &maintain::OptimizeOptions::default())
        .await
        .unwrap();
    assert_eq!(again.after.files, 1);
    let idle = lake
        .optimize(IMPORTED_FILES, &maintain::OptimizeOptions::default())
        .await
        .unwrap();
    assert_eq!(idle.version, None);
    assert_eq!(idle.files_removed, 0);
}

#[tokio::test]
async fn vacuum_keeps_the_retention_refuses_short_ones_and_waits_for_leases() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    for i in 0..3 {
        append(&lake, &format!("f{i}"), None).await;
    }
    // Another process reads the table before it is compacted.
    let reader = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    reader.open(IMPORTED_FILES).await.unwrap();
    lake.optimize(IMPORTED_FILES, &maintain::OptimizeOptions::default())
        .await
        .unwrap();
    assert_eq!(files_on_disk(dir.path()), 4);
    // The default retention keeps the compacted files (a week of time travel).
    let kept = lake
        .vacuum(IMPORTED_FILES, &maintain::VacuumOptions::default())
        .await
        .unwrap();
    assert!(kept.files.is_empty());
    // A shorter retention is refused unless forced.
    let short = maintain::VacuumOptions {
        retain_hours: 0,
        ..maintain::VacuumOptions::default()
    };
    let err = lake
        .vacuum(IMPORTED_FILES, &short)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--force") && err.contains("168 h"), "{err}");
    // The reader's lease holds back the files it may still read.
    let forced = maintain::VacuumOptions {
        retain_hours: 0,
        force: true,
        ..maintain::VacuumOptions::default()
    };
    let held = lake.vacuum(IMPORTED_FILES, &forced).await.unwrap();
    assert!(held.files.is_empty(), "{held:?}");
    assert_eq!(held.held_by.as_deref(), Some(reader.leases.holder()));
    assert_eq!(files_on_disk(dir.path()), 4);
    // Once it is done, the dry run names the three files and their bytes; then they go.
    reader.release_leases().await;
    let dry = lake
        .vacuum(
            IMPORTED_FILES,
            &maintain::VacuumOptions {
                dry_run: true,
                ..forced.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(dry.files.len(), 3);
    assert!(dry.bytes > 0);
    assert_eq!(files_on_disk(dir.path()), 4);
    let done = lake.vacuum(IMPORTED_FILES, &forced).await.unwrap();
    assert_eq!(done.files.len(), 3);
    assert_eq!(done.bytes, dry.bytes);
    assert_eq!(files_on_disk(dir.path()), 1);
    // The latest version reads; a version whose files are gone is refused by name.
    assert_eq!(lake.stats(IMPORTED_FILES).await.unwrap().rows, 3);
    let err = lake
        .open_version(IMPORTED_FILES, 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("version 2") && err.contains("vacuum"), "{err}");
    // Vacuum commits are not new data either.
    assert_eq!(lake.data_version(IMPORTED_FILES).await.unwrap(), Some(3));
}

#[tokio::test]
async fn checkpoints_keep_opening_cheap() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    for i in 0..(maintain::CHECKPOINT_INTERVAL + 5) {
        append(&lake, &format!("f{i}"), Some(i as i64)).await;
    }
    let log = dir.path().join(IMPORTED_FILES).join("_delta_log");
    // Delta's post-commit hook wrote a checkpoint at version 99 (the 100th commit).
    assert!(log.join("00000000000000000099.checkpoint.parquet").exists());
    assert!(log.join("_last_checkpoint").exists());
    lake.checkpoint(IMPORTED_FILES).await.unwrap();
    assert!(log.join("00000000000000000105.checkpoint.parquet").exists());
    assert_eq!(lake.stats(IMPORTED_FILES).await.unwrap().rows, 105);
    assert_eq!(
        lake.transaction_version(IMPORTED_FILES, "collector")
            .await
            .unwrap(),
        Some(104)
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::write(&target, std::fs::read(entry.path()).unwrap()).unwrap();
        }
    }
}

/// Every value of column `value` in every Parquet file under `dir`, referenced or not.
fn values_on_storage(dir: &std::path::Path) -> Vec<i32> {
    use deltalake::arrow::array::AsArray as _;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(&path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let column = batch.column_by_name("value").unwrap();
                out.extend(
                    column
                        .as_primitive::<deltalake::arrow::datatypes::Int32Type>()
                        .iter()
                        .flatten(),
                );
            }
        }
    }
    out.sort_unstable();
    out
}

async fn visible_values(lake: &Lake, name: &str) -> Vec<i32> {
    use deltalake::arrow::array::AsArray as _;
    let ctx = datafusion::prelude::SessionContext::new();
    let table = lake.open(name).await.unwrap();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx
        .sql("SELECT value FROM t ORDER BY value")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<deltalake::arrow::datatypes::Int32Type>()
                .iter()
                .flatten()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A table another engine wrote with a deletion vector (Spark; delta-rs's test data):
/// the rows it marks deleted are hidden, and a delete rewrites the file without them,
/// so that after expunging no file on storage holds the deleted rows — neither the one
/// deleted now nor the two the vector only hid.
#[tokio::test]
async fn deletion_vectors_are_honoured_and_a_delete_purges_them_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/table-with-dv-small");
    copy_dir(&fixture, &dir.path().join("dv"));
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    assert_eq!(
        visible_values(&lake, "dv").await,
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(
        values_on_storage(&dir.path().join("dv")),
        (0..=9).collect::<Vec<_>>(),
        "the vector only hides 0 and 9"
    );
    let deleted = lake
        .delete_rows(
            "dv",
            datafusion::prelude::col("value").eq(datafusion::prelude::lit(5)),
            CommitNote::new("erase", "test"),
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(visible_values(&lake, "dv").await, vec![1, 2, 3, 4, 6, 7, 8]);
    let expunged = lake.expunge("dv", "test").await.unwrap();
    assert!(expunged.files >= 1, "{expunged:?}");
    assert_eq!(
        values_on_storage(&dir.path().join("dv")),
        vec![1, 2, 3, 4, 6, 7, 8],
        "no file holds a deleted row"
    );
    assert_eq!(visible_values(&lake, "dv").await, vec![1, 2, 3, 4, 6, 7, 8]);
    assert!(
        lake.open_version("dv", 1).await.is_err(),
        "the old versions are gone"
    );
}

#[tokio::test]
async fn a_rewrite_removes_only_the_rows_in_scope_in_one_commit_naming_the_scope() {
    use datafusion::prelude::{col, lit};
    use tessera_core::schema::SCORES;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let def = schema::table(SCORES).unwrap();
    let mut w = lake.append_writer(&def).await.unwrap();
    w.write(scores("a", 10)).await.unwrap();
    w.write(scores("b", 10)).await.unwrap();
    w.commit(CommitNote::new("test", "unit")).await.unwrap();
    let version = |lake: &Lake| {
        let lake = lake.clone();
        async move { lake.open(SCORES).await.unwrap().version().unwrap() }
    };
    let v0 = version(&lake).await;
    let doomed = || col("profile_id").in_list(vec![lit("p1"), lit("p3")], false);

    let removed = lake
        .rewrite_without(
            SCORES,
            "model = 'a'",
            doomed(),
            CommitNote::new("erase", "unit"),
        )
        .await
        .unwrap();
    assert_eq!(removed, 2, "p1 and p3 of model a only");
    assert_eq!(lake.stats(SCORES).await.unwrap().rows, 18);
    let table = lake.open(SCORES).await.unwrap();
    assert_eq!(table.version(), Some(v0 + 1), "one commit");
    let log = std::fs::read_to_string(
        dir.path()
            .join("scores/_delta_log")
            .join(format!("{:020}.json", v0 + 1)),
    )
    .unwrap();
    assert!(log.contains(r#""operation":"DELETE""#), "{log}");
    assert!(
        log.contains(r#"model = 'a'"#),
        "the scope is the predicate: {log}"
    );
    let removes = log
        .lines()
        .filter(|l| l.starts_with(r#"{"remove""#))
        .count();
    assert_eq!(removes, 1, "model b's file is not rewritten: {log}");
    let changes = lake
        .changes_between(SCORES, v0, v0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert!(changes.rewritten, "readers see the rewrite as removed rows");

    // Nothing to remove: no commit.
    let none = lake
        .rewrite_without(
            SCORES,
            "model = 'b'",
            col("profile_id").eq(lit("zz")),
            CommitNote::new("erase", "unit"),
        )
        .await
        .unwrap();
    assert_eq!(none, 0);
    assert_eq!(version(&lake).await, v0 + 1);
    // A scope over an unknown column is an error naming it; nothing changes.
    let err = lake
        .rewrite_without(
            SCORES,
            "modell = 'a'",
            doomed(),
            CommitNote::new("erase", "unit"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("modell"), "{err}");
    assert_eq!(version(&lake).await, v0 + 1);
    assert_eq!(lake.stats(SCORES).await.unwrap().rows, 18);
}

/// Every byte of a table's log: commits and checkpoints.
fn log_bytes(table_dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(table_dir.join("_delta_log")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            out.extend(std::fs::read(path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_table_made_before_keeps_no_personal_statistics_after_migration_and_expunge() {
    use tessera_core::schema::SCORES;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let def = schema::table(SCORES).unwrap();
    // As tables were made before: no statistics property, files with statistics of
    // every column (written by delta-rs itself), a checkpoint of them.
    let table = lake
        .builder(SCORES)
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_table_name(SCORES)
        .with_columns(kernel_schema(&def).unwrap().fields().cloned())
        .with_partition_columns(def.partition_columns.iter().copied())
        .await
        .unwrap();
    let table = table.write(vec![scores("a", 10)]).await.unwrap();
    let table = table.write(vec![scores("b", 10)]).await.unwrap();
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .unwrap();
    let table_dir = dir.path().join(SCORES);
    // `p9` is the largest profile id of each file: its maximum.
    assert!(
        contains(&log_bytes(&table_dir), "p9"),
        "the old log names people"
    );
    let v0 = table.version().unwrap() as u64;

    let changed = lake.migrate_stats_columns().await.unwrap();
    assert_eq!(changed, vec![SCORES]);
    let v1 = lake.open(SCORES).await.unwrap().version().unwrap() as u64;
    assert_eq!(v1, v0 + 2, "the property, then the files re-recorded");
    // (A property change makes incremental readers read the table whole once.)
    let changes = lake
        .changes_between(SCORES, v1 - 1, v1)
        .await
        .unwrap()
        .unwrap();
    assert!(
        changes.appended.is_empty() && !changes.rewritten,
        "readers see no new data: {changes:?}"
    );
    assert_eq!(lake.stats(SCORES).await.unwrap().rows, 20, "no row changed");
    let latest =
        std::fs::read_to_string(table_dir.join(format!("_delta_log/{v1:020}.json"))).unwrap();
    assert_eq!(
        latest.matches(r#""add""#).count(),
        2,
        "both files re-recorded: {latest}"
    );
    assert!(
        !latest.contains("p9") && latest.contains("model"),
        "{latest}"
    );
    assert!(
        lake.migrate_stats_columns().await.unwrap().is_empty(),
        "a second migration changes nothing"
    );

    lake.expunge(SCORES, "test").await.unwrap();
    assert!(
        !contains(&log_bytes(&table_dir), "p9"),
        "no commit or checkpoint names a person"
    );
    assert_eq!(lake.stats(SCORES).await.unwrap().rows, 20);
    let mut w = lake.append_writer(&def).await.unwrap();
    w.write(scores("c", 3)).await.unwrap();
    w.commit(CommitNote::new("test", "unit")).await.unwrap();
    assert_eq!(
        lake.stats(SCORES).await.unwrap().rows,
        23,
        "the table takes new rows"
    );
}

fn events_of(day: &str, ids: std::ops::Range<u32>) -> RecordBatch {
    use tessera_core::batch::EventBatchBuilder;
    use tessera_core::event::{ParseContext, parse_event};
    let ctx = ParseContext::import(1_800_000_000_000_000);
    let mut b = EventBatchBuilder::new("web", ids.len());
    let texts: Vec<String> = ids
        .map(|i| {
            format!(
                r#"{{"type":"track","event":"E{}","messageId":"m-{i:04}","userId":"u-{}","timestamp":"{day}T10:00:00Z","properties":{{"n":{i}}}}}"#,
                i % 3,
                i % 7
            )
        })
        .collect();
    for text in &texts {
        b.append(&parse_event(text, &ctx).unwrap());
    }
    b.finish()
}

/// What `sql` returns over table `t` served by `provider`, as text.
async fn shown(provider: Arc<dyn datafusion::catalog::TableProvider>, sql: &str) -> String {
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("t", provider).unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

/// An empty table's pinned scan is one empty partition, so that a sort-preserving merge
/// above it (in a stage of its own, on a cluster) has an input.
#[tokio::test]
async fn an_empty_pinned_table_is_one_empty_partition() {
    use datafusion::physical_plan::ExecutionPlanProperties as _;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let table = lake
        .open_or_create(&schema::table(schema::EVENTS).unwrap())
        .await
        .unwrap();
    let pinned = Arc::new(PinnedTable::of(schema::EVENTS, &table).unwrap());
    assert_eq!(pinned.files(), 0);
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("t", pinned).unwrap();
    let df = ctx.sql("SELECT message_id FROM t").await.unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    assert_eq!(plan.output_partitioning().partition_count(), 1);
    assert!(
        df.collect()
            .await
            .unwrap()
            .iter()
            .all(|b| b.num_rows() == 0)
    );
}

/// The pinned Parquet scan returns what delta-rs' scan returns, at the version it was
/// pinned at: later appends and deletes do not change it, removed-but-not-vacuumed files
/// are never read, and a table with deletion vectors is refused.
#[tokio::test]
async fn a_pinned_scan_reads_exactly_its_versions_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let def = schema::table(schema::EVENTS).unwrap();
    for (day, ids) in [
        ("2026-11-01", 0..40),
        ("2026-11-02", 40..90),
        ("2026-11-01", 90..100),
    ] {
        let mut w = lake.append_writer(&def).await.unwrap();
        w.write(events_of(day, ids)).await.unwrap();
        w.commit(CommitNote::new("test", "unit")).await.unwrap();
    }
    let queries = [
        "SELECT * FROM t ORDER BY message_id",
        "SELECT event, count(*) AS n FROM t WHERE event_date = DATE '2026-11-02' GROUP BY event ORDER BY event",
        "SELECT event_date, message_id, user_id FROM t WHERE user_id = 'u-3' ORDER BY message_id",
        "SELECT count(*) AS n FROM (SELECT message_id FROM t LIMIT 7)",
        "SELECT event_date, count(*) AS n FROM t GROUP BY event_date ORDER BY event_date",
    ];
    let table = lake.open(schema::EVENTS).await.unwrap();
    let pinned = Arc::new(PinnedTable::of(schema::EVENTS, &table).unwrap());
    assert_eq!(pinned.version(), table.version().unwrap());
    assert_eq!(
        pinned.files(),
        table.snapshot().unwrap().log_data().num_files()
    );
    {
        use datafusion::catalog::TableProvider as _;
        assert_eq!(
            pinned.schema(),
            table.table_provider().await.unwrap().schema(),
            "the same schema as delta-rs' scan"
        );
    }
    let mut before = Vec::new();
    for q in queries {
        let delta = shown(table.table_provider().await.unwrap(), q).await;
        let ours = shown(pinned.clone(), q).await;
        assert_eq!(ours, delta, "{q}");
        before.push(ours);
    }
    assert!(before[0].contains("m-0099") && before[2].contains("m-0003"));

    // The physical plan is DataFusion's own nodes: it goes to bytes and back (what a
    // distributed engine does to ship it) and, where the lake's store is known, runs to
    // the same rows.
    for q in queries {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", pinned.clone()).unwrap();
        let plan = ctx
            .sql(q)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let bytes = datafusion_proto::bytes::physical_plan_to_bytes(plan).unwrap();
        let elsewhere = datafusion::prelude::SessionContext::new();
        elsewhere
            .runtime_env()
            .register_object_store(pinned.store_url().as_ref(), pinned.store());
        let shipped =
            datafusion_proto::bytes::physical_plan_from_bytes(&bytes, &elsewhere.task_ctx())
                .unwrap();
        let batches = datafusion::physical_plan::collect(shipped, elsewhere.task_ctx())
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert_eq!(&text, &shown(pinned.clone(), q).await, "shipped: {q}");
    }

    // An append and a delete after pinning change nothing the pinned scan returns.
    let mut w = lake.append_writer(&def).await.unwrap();
    w.write(events_of("2026-11-03", 100..120)).await.unwrap();
    w.commit(CommitNote::new("test", "unit")).await.unwrap();
    let deleted = lake
        .delete_where(schema::EVENTS, "user_id = 'u-3'", "unit")
        .await
        .unwrap();
    assert_eq!(deleted, 17);
    for (q, was) in queries.iter().zip(&before) {
        assert_eq!(&shown(pinned.clone(), q).await, was, "pinned: {q}");
    }
    // Pinned anew: the deleted rows stay hidden although their old files are still on
    // storage (nothing was vacuumed), and the appended ones are there.
    let table = lake.open(schema::EVENTS).await.unwrap();
    let latest = Arc::new(PinnedTable::of(schema::EVENTS, &table).unwrap());
    let on_storage = walk_parquet(&dir.path().join(schema::EVENTS));
    assert!(on_storage > latest.files(), "{on_storage} files on storage");
    for q in queries {
        let delta = shown(table.table_provider().await.unwrap(), q).await;
        assert_eq!(shown(latest.clone(), q).await, delta, "latest: {q}");
    }
    let users = shown(
        latest.clone(),
        "SELECT count(*) AS n FROM t WHERE user_id = 'u-3'",
    )
    .await;
    assert!(users.contains("| 0 "), "{users}");
    let all = shown(latest.clone(), "SELECT count(*) AS n FROM t").await;
    assert!(all.contains("| 103 "), "{all}");

    // Deletion vectors would need applying: refused, naming the table and the file.
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/table-with-dv-small");
    copy_dir(&fixture, &dir.path().join("dv"));
    let dv = lake.open("dv").await.unwrap();
    let err = PinnedTable::of("dv", &dv).unwrap_err().to_string();
    assert!(
        err.contains("dv") && err.contains("deletion vector"),
        "{err}"
    );
}

fn walk_parquet(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += walk_parquet(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            n += 1;
        }
    }
    n
}
