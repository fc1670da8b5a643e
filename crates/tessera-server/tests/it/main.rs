//! The server in process: events are queryable the moment they are acknowledged,
//! before any commit to the lake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use tessera_engine::datafusion::arrow::array::AsArray;
use tessera_engine::datafusion::arrow::datatypes::Int64Type;
use tessera_engine::{Engine, EngineConfig};
use tessera_ingest::collector::CollectorConfig;
use tessera_lake::Lake;
use tessera_server::{ServeOptions, Server};

async fn count(ctx: &tessera_engine::datafusion::prelude::SessionContext) -> i64 {
    let batches: Vec<_> = ctx
        .sql("SELECT count(*) AS n FROM events")
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// A lake in `dir/lake`.
fn lake_in(dir: &Path) -> Arc<Lake> {
    Arc::new(Lake::new(dir.join("lake").to_str().unwrap(), HashMap::new()).unwrap())
}

/// Loopback ports chosen by the OS, the WAL in `dir/wal`, no sources, no schedule.
fn options(dir: &Path) -> ServeOptions {
    ServeOptions {
        http: "127.0.0.1:0".parse().unwrap(),
        grpc: "127.0.0.1:0".parse().unwrap(),
        collector: CollectorConfig {
            wal_dir: dir.join("wal"),
            ..CollectorConfig::default()
        },
        sources: HashMap::new(),
        segments: None,
        predict: None,
        users: HashMap::new(),
        tokens: HashMap::new(),
        admin: None,
        tls: None,
        index_check_every: Duration::from_millis(200),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_are_queryable_before_any_commit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(lake_in(dir.path()), EngineConfig::default());
    let defaults = options(dir.path());
    let server = Server::start(
        engine.clone(),
        ServeOptions {
            collector: CollectorConfig {
                flush_interval: Duration::from_secs(3600),
                ..defaults.collector.clone()
            },
            sources: HashMap::from([("wk_live_0123456789".to_owned(), "live".to_owned())]),
            ..defaults
        },
    )
    .await
    .unwrap();
    let addr = server.http_addr().unwrap();
    let collector = server.collector();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let body = br#"{"writeKey":"wk_live_0123456789","batch":[{"type":"track","messageId":"live-1","userId":"u","event":"e"},{"type":"track","messageId":"live-2","userId":"u","event":"e"}]}"#;
    let response = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /v1/batch HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Acknowledged: visible through the collector's session, not yet in the lake.
    assert_eq!(count(&collector.session().await.unwrap()).await, 2);
    assert_eq!(count(&engine.session().await.unwrap()).await, 0);

    // After a flush: in the lake, and still counted once.
    assert_eq!(collector.flush().await.unwrap(), 2);
    assert_eq!(count(&collector.session().await.unwrap()).await, 2);
    assert_eq!(count(&engine.session().await.unwrap()).await, 2);

    stop.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap(), 0);
}

/// A server started with `options`, running until [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<usize, tessera_server::ServerError>>,
}

async fn in_background(engine: &Engine, options: ServeOptions) -> Running {
    let server = Server::start(engine.clone(), options).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Polls the count `sql` returns until it reaches `at_least` (or ten seconds pass);
/// returns the last count.
async fn wait_for(engine: &Engine, sql: &str, at_least: i64) -> i64 {
    let mut n = 0;
    for _ in 0..200 {
        let ctx = engine.session().await.unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        n = batches[0].column(0).as_primitive::<Int64Type>().value(0);
        if n >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n
}

/// The scheduler refreshes a segment that is due, without any command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_refreshed_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_in(dir.path());
    lake.create_missing_tables().await.unwrap();
    std::fs::create_dir_all(dir.path().join("sql/segments")).unwrap();
    std::fs::write(
        dir.path().join("sql/segments/known_people.sql"),
        "-- refresh: 1s\nSELECT DISTINCT profile_id FROM identity_map",
    )
    .unwrap();
    let engine = Engine::new(lake.clone(), EngineConfig::default());
    let running = in_background(
        &engine,
        ServeOptions {
            segments: Some(tessera_server::schedule::SegmentSchedule {
                project_dir: dir.path().to_owned(),
                check_every: Duration::from_millis(100),
                as_of_micros: None,
            }),
            ..options(dir.path())
        },
    )
    .await;
    let refreshes = wait_for(
        &engine,
        "SELECT count(*) FROM segment_refreshes WHERE segment = 'known_people'",
        1,
    )
    .await;
    assert_eq!(refreshes, 1, "the scheduler refreshed the due segment once");
    running.stop().await;
}

/// The model scheduler refits every model once the latest fit is older than the
/// refit interval, without any command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_refitted_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_in(dir.path());
    lake.create_missing_tables().await.unwrap();
    let engine = Engine::new(lake.clone(), EngineConfig::default());
    let running = in_background(
        &engine,
        ServeOptions {
            predict: Some(tessera_server::schedule::PredictSchedule {
                project_dir: dir.path().to_owned(),
                config: tessera_core::config::PredictSection::default(),
                refit_every: Duration::from_millis(300),
                check_every: Duration::from_millis(50),
            }),
            ..options(dir.path())
        },
    )
    .await;
    let versions = wait_for(
        &engine,
        "SELECT count(DISTINCT version) FROM model_runs WHERE model = 'bgnbd'",
        2,
    )
    .await;
    assert!(
        versions >= 2,
        "the scheduler fitted, then refitted when due"
    );
    running.stop().await;
}
