#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use tessera_lake::Lake;

use super::*;
use crate::EngineConfig;

fn queries(limits: QueryLimits) -> (Queries, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    let engine = Engine::new(Arc::new(lake), EngineConfig::default());
    let spill = dir.path().join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    let limits = QueryLimits {
        spill_dir: Some(spill),
        ..limits
    };
    (Queries::new(&engine, limits, None).unwrap(), dir)
}

async fn run(q: &Queries, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = q.plan(&Access::owner(), sql, &[]).await?;
    q.execute(df)
        .await?
        .try_collect()
        .await
        .map_err(|e| q.running_error(e))
}

/// Files (not folders) under `dir`.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() { files_under(&path) } else { 1 }
        })
        .sum()
}

fn mib(n: u64) -> Option<u64> {
    Some(n << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_larger_than_memory_spills_and_completes() {
    // A pool that holds the merge of what spilled (each partition's merge of its spill
    // files, and the merge across partitions, cannot spill themselves: under 16 MiB
    // they used all of it on 2 cores once in a while).
    let (q, dir) = queries(QueryLimits {
        memory: mib(24),
        ..QueryLimits::default()
    });
    // 3M rows of two BIGINTs: ~48 MB to sort, twice the pool.
    let batches = run(
        &q,
        "SELECT v, v % 7 AS k FROM (SELECT value AS v FROM generate_series(1, 3000000)) ORDER BY k, v DESC",
    )
    .await
    .unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 3_000_000);
    let first = batches[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(first, 2_999_997, "k = 0 first, v descending");
    eventually("the run is counted", || q.stats().finished == 1).await;
    assert_eq!(q.stats().memory_reserved, 0, "everything released");
    // It did spill: the sort's metrics say so.
    let analyzed = run(
        &q,
        "EXPLAIN ANALYZE SELECT v, v % 7 AS k FROM (SELECT value AS v FROM generate_series(1, 3000000)) ORDER BY k, v DESC",
    )
    .await
    .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&analyzed)
        .unwrap()
        .to_string();
    let spills: usize = text
        .split("spill_count=")
        .skip(1)
        .filter_map(|s| {
            s.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(spills > 0, "{text}");
    assert_eq!(
        files_under(&dir.path().join("spill")),
        0,
        "spill files are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_cannot_spill_fails_naming_the_limit() {
    let (q, _dir) = queries(QueryLimits {
        memory: mib(4),
        ..QueryLimits::default()
    });
    let e = run(
        &q,
        "SELECT count(*) FROM generate_series(1, 2000000) AS a JOIN generate_series(1, 2000000) AS b ON a.value = b.value",
    )
    .await
    .unwrap_err();
    match &e {
        EngineError::Memory { limit, message } => {
            assert_eq!(*limit, 4 << 20);
            assert!(message.contains("Failed to allocate"), "{message}");
        }
        other => panic!("expected a memory refusal, got {other}"),
    }
    assert!(e.to_string().contains("4194304 bytes"), "{e}");
    eventually("the refusal is counted", || q.stats().out_of_memory == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_time_is_cancelled() {
    let (q, _dir) = queries(QueryLimits {
        timeout: Some(Duration::from_millis(300)),
        ..QueryLimits::default()
    });
    // A trillion rows: never finishes on its own.
    let e = run(&q, "SELECT count(*) FROM generate_series(1, 1000000000000)")
        .await
        .unwrap_err();
    assert!(
        matches!(e, EngineError::Timeout { limit } if limit == Duration::from_millis(300)),
        "{e}"
    );
    eventually("the time-out is counted", || {
        let stats = q.stats();
        (stats.timed_out, stats.running) == (1, 0)
    })
    .await;
}

/// Waits (without timing anything) until `check` holds, or fails after a long while.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_past_the_cap_wait_then_are_refused_and_a_dropped_stream_frees_its_slot() {
    let (q, _dir) = queries(QueryLimits {
        max_concurrent: 1,
        queue_timeout: Duration::from_millis(200),
        ..QueryLimits::default()
    });
    let endless = "SELECT value FROM generate_series(1, 1000000000000)";
    let first = q
        .execute(q.plan(&Access::owner(), endless, &[]).await.unwrap())
        .await
        .unwrap();
    let second = q.plan(&Access::owner(), "SELECT 1", &[]).await.unwrap();
    match q.execute(second).await {
        Err(EngineError::Busy { running, waited }) => {
            assert_eq!((running, waited), (1, Duration::from_millis(200)));
        }
        Err(other) => panic!("expected busy, got {other}"),
        Ok(_) => panic!("expected busy"),
    }
    assert_eq!(q.stats().refused_busy, 1);
    // The client goes away: its plan stops and the slot is free again.
    drop(first);
    eventually("the dropped query stops", || q.stats().running == 0).await;
    assert_eq!(q.stats().cancelled, 1);
    let rows = run(&q, "SELECT 1 AS one").await.unwrap();
    assert_eq!(rows[0].num_rows(), 1);
}

#[tokio::test]
async fn api_callers_only_read() {
    let (q, dir) = queries(QueryLimits::default());
    let target = dir.path().join("x.csv");
    let e = q
        .plan(
            &Access::owner(),
            &format!("COPY (SELECT 1) TO '{}' STORED AS CSV", target.display()),
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, EngineError::Refused { ref statement } if statement == "COPY TO"),
        "{e}"
    );
    assert!(!target.exists());
    let e = q
        .plan(
            &Access::owner(),
            "SELECT * FROM connected_components('COPY (SELECT 1, 2) TO ''/tmp/cc.csv''')",
            &[],
        )
        .await;
    let e = match e {
        Ok(df) => df.collect().await.map(|_| ()).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("COPY TO is not allowed"), "{e}");
    // URL tables (a file path as a table name) are not enabled.
    let e = q
        .plan(&Access::owner(), "SELECT * FROM '/etc/passwd'", &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("/etc/passwd"), "{e}");
}
