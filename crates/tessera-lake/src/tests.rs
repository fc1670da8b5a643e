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

#[tokio::test]
async fn replacing_one_partition_keeps_the_others() {
    use deltalake::arrow::array::Float64Array;
    use tessera_core::schema::{SCORES, scores_schema};
    let scores = |model: &str, n: usize| {
        let s = |v: &str| Arc::new(StringArray::from(vec![v; n])) as _;
        RecordBatch::try_new(
            scores_schema(),
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
    };
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
