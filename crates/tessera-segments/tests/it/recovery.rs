//! A refresh interrupted between its commits is finished by the next run.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::Int64Type;
use tessera_core::schema;
use tessera_engine::{Engine, EngineConfig};
use tessera_lake::{CommitNote, Lake};
use tessera_segments::SegmentSet;
use tessera_segments::refresh::{RefreshOptions, SEGMENTS_APP, refresh};

async fn count(engine: &Engine, sql: &str) -> i64 {
    let ctx = engine.session().await.unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn change(profile: &str, kind: &str, run: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema::audience_changes_schema(),
        vec![
            Arc::new(StringArray::from(vec!["everyone"])),
            Arc::new(StringArray::from(vec![profile])),
            Arc::new(StringArray::from(vec![kind])),
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(TimestampMicrosecondArray::from(vec![1_000_000]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(Int64Array::from(vec![run])),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn interrupted_runs_are_finished_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap());
    lake.create_missing_tables().await.unwrap();
    let engine = Engine::new(lake.clone(), EngineConfig::deterministic());
    let set = SegmentSet::from_texts(vec![(
        "everyone".into(),
        "everyone.sql".into(),
        "SELECT id_value AS profile_id FROM identity_map".into(),
    )])
    .unwrap();
    let options = RefreshOptions {
        actor: "test".into(),
        ..RefreshOptions::default()
    };
    assert_eq!(refresh(&engine, &set, &options).await.unwrap().run, 1);

    // Run 2 wrote its change rows, then stopped before logging: the rows are removed.
    let mut w = lake
        .append_writer(&schema::table(schema::AUDIENCE_CHANGES).unwrap())
        .await
        .unwrap();
    w.write(change("ghost", "entered", 2)).await.unwrap();
    w.commit(CommitNote::new("test", "test").transaction(SEGMENTS_APP, 2))
        .await
        .unwrap();
    let report = refresh(&engine, &set, &options).await.unwrap();
    assert_eq!(
        report.recovered.as_deref(),
        Some("removed 1 change rows of interrupted refresh run 2")
    );
    assert_eq!(
        count(
            &engine,
            "SELECT count(*) FROM audience_changes WHERE profile_id = 'ghost'"
        )
        .await,
        0
    );

    // Run 3 wrote its changes and its log, then stopped before the membership: the
    // membership is rebuilt from the logged changes.
    let mut w = lake
        .append_writer(&schema::table(schema::AUDIENCE_CHANGES).unwrap())
        .await
        .unwrap();
    w.write(change("late", "entered", 3)).await.unwrap();
    w.commit(CommitNote::new("test", "test").transaction(SEGMENTS_APP, 3))
        .await
        .unwrap();
    let w = lake
        .append_writer(&schema::table(schema::SEGMENT_REFRESHES).unwrap())
        .await
        .unwrap();
    w.commit(CommitNote::new("test", "test").transaction(SEGMENTS_APP, 3))
        .await
        .unwrap();
    assert_eq!(
        lake.transaction_version(schema::SEGMENT_REFRESHES, SEGMENTS_APP)
            .await
            .unwrap(),
        Some(3),
        "an empty commit still records the transaction"
    );
    let report = refresh(&engine, &set, &options).await.unwrap();
    assert_eq!(
        report.recovered.as_deref(),
        Some("rebuilt audience_membership from the changes of interrupted refresh run 3")
    );
    assert_eq!(
        count(
            &engine,
            "SELECT count(*) FROM audience_membership WHERE profile_id = 'late'"
        )
        .await,
        1
    );
}
