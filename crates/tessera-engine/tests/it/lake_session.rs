//! Sessions over a real lake in a temporary folder.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use tessera_core::batch::EventBatchBuilder;
use tessera_core::event::{ParseContext, parse_event};
use tessera_core::schema;
use tessera_engine::{Engine, EngineConfig, EngineError};
use tessera_lake::{CommitNote, Lake};

/// An engine over a fresh, empty lake (the folder lives until the process ends).
pub fn empty_engine() -> Engine {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let lake = Lake::new(dir.to_str().expect("utf-8 path"), HashMap::new()).expect("lake");
    Engine::new(Arc::new(lake), EngineConfig::deterministic())
}

async fn collect(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    engine
        .query(sql, tessera_engine::Policy::ReadOnly)
        .await
        .expect(sql)
        .try_collect()
        .await
        .expect(sql)
}

#[tokio::test]
async fn lake_tables_are_queryable_with_json_and_cdp_functions() {
    let engine = empty_engine();
    let lake = engine.lake().clone();
    lake.create_missing_tables().await.unwrap();

    let mut b = EventBatchBuilder::new("web", 4);
    let ctx = ParseContext::import(chrono::Utc::now().timestamp_micros());
    for line in [
        r#"{"type":"identify","messageId":"1","userId":"u1","traits":{"email":" Ann@X.com "},"timestamp":"2024-01-01T00:00:00Z"}"#,
        r#"{"type":"track","messageId":"2","userId":"u1","event":"Order Completed","properties":{"revenue":30.5},"timestamp":"2024-01-02T00:00:00Z"}"#,
        r#"{"type":"track","messageId":"3","anonymousId":"a9","event":"Order Completed","properties":{"revenue":10},"timestamp":"2024-01-02T05:00:00Z"}"#,
    ] {
        b.append(&parse_event(line, &ctx).unwrap());
    }
    let mut w = lake
        .append_writer(&schema::table(schema::EVENTS).unwrap())
        .await
        .unwrap();
    w.write(b.finish()).await.unwrap();
    w.commit(CommitNote::new("test", "it")).await.unwrap();

    let batches = collect(
        &engine,
        "SELECT count(*) AS n, CAST(sum(json_get_float(properties, 'revenue')) AS BIGINT) AS revenue \
         FROM events WHERE event = 'Order Completed'",
    )
    .await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    assert_eq!(
        batches[0].column(1).as_primitive::<Int64Type>().value(0),
        40
    );

    let batches = collect(
        &engine,
        "SELECT normalize_email(json_get_str(traits, 'email')) FROM events WHERE type = 'identify'",
    )
    .await;
    assert_eq!(
        batches[0].column(0).as_string::<i32>().value(0),
        "ann@x.com"
    );

    // Partition pruning on event_date works as a plain predicate.
    let batches = collect(
        &engine,
        "SELECT count(*) FROM events WHERE event_date = DATE '2024-01-02'",
    )
    .await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 2);
}

#[tokio::test]
async fn sql_errors_are_reported_as_such() {
    let engine = empty_engine();
    engine.lake().create_missing_tables().await.unwrap();
    for (sql, needle) in [
        ("SELEC 1", "SELEC"),
        ("SELECT * FROM nope", "nope"),
        ("SELECT missing_col FROM events", "missing_col"),
    ] {
        match engine.query(sql, tessera_engine::Policy::ReadOnly).await {
            Err(EngineError::Sql(msg)) => assert!(msg.contains(needle), "{sql}: {msg}"),
            Err(other) => panic!("{sql}: expected a SQL error, got {other:?}"),
            Ok(_) => panic!("{sql}: expected an error"),
        }
    }
}

/// `identity_map_at` shows identifier values in clear: refused to callers without the
/// `pii` grant or with a row filter, answered for the others.
#[tokio::test]
async fn past_identity_maps_need_the_pii_grant() {
    let engine = empty_engine();
    engine.lake().create_missing_tables().await.unwrap();
    let run = |access: tessera_engine::Access| {
        let engine = &engine;
        async move {
            let ctx = engine.session_for(&access).await.unwrap();
            match tessera_engine::execute(
                &ctx,
                "SELECT count(*) AS n FROM identity_map_at(0)",
                tessera_engine::Policy::ReadOnly,
            )
            .await
            {
                Ok(stream) => stream
                    .try_collect::<Vec<_>>()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    assert_eq!(run(tessera_engine::Access::owner()).await, Ok(()));
    let masked = tessera_engine::Access {
        pii: false,
        ..tessera_engine::Access::owner()
    };
    let e = run(masked).await.unwrap_err();
    assert!(e.contains("needs the pii grant"), "{e}");
    let filtered = tessera_engine::Access {
        rows: Some("user_id = 'u1'".into()),
        ..tessera_engine::Access::owner()
    };
    let e = run(filtered).await.unwrap_err();
    assert!(e.contains("needs the pii grant"), "{e}");
    // A bad argument is named.
    let ctx = engine.session().await.unwrap();
    let e = tessera_engine::execute(
        &ctx,
        "SELECT * FROM identity_map_at('soon')",
        tessera_engine::Policy::ReadOnly,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("not a time"), "{e}");
    let e = match tessera_engine::execute(
        &ctx,
        "SELECT * FROM identity_map_at(7)",
        tessera_engine::Policy::ReadOnly,
    )
    .await
    {
        Ok(s) => s.try_collect::<Vec<_>>().await.err().unwrap().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("no version 7"), "{e}");
}
