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
        maintenance: None,
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
        queries: tessera_engine::query::QueryLimits::default(),
        cpu: None,
        config_file: None,
        activation: None,
        activation_every: Duration::from_secs(1),
        oidc: None,
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

/// Appends `(id_type, id_value, profile_id)` rows to `identity_map`.
async fn map_rows(lake: &Lake, rows: &[(&str, &str, &str)]) {
    use tessera_engine::datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
    let def = tessera_core::schema::table(tessera_core::schema::IDENTITY_MAP).unwrap();
    let text = |i: usize| -> Arc<dyn tessera_engine::datafusion::arrow::array::Array> {
        Arc::new(StringArray::from(
            rows.iter().map(|r| [r.0, r.1, r.2][i]).collect::<Vec<_>>(),
        ))
    };
    let at = || -> Arc<dyn tessera_engine::datafusion::arrow::array::Array> {
        Arc::new(
            TimestampMicrosecondArray::from(vec![1_700_000_000_000_000i64; rows.len()])
                .with_timezone("UTC"),
        )
    };
    let batch = tessera_engine::datafusion::arrow::array::RecordBatch::try_new(
        def.schema.clone(),
        vec![text(0), text(1), text(2), at(), at()],
    )
    .unwrap();
    let mut w = lake.append_writer(&def).await.unwrap();
    w.write(batch).await.unwrap();
    w.commit(tessera_lake::CommitNote::new("test", "test"))
        .await
        .unwrap();
}

/// The profile index follows the lake without any request planning a query: a new
/// `identity_map` version is picked up by the background check and swapped in whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_index_follows_new_snapshots() {
    use tessera_server::api::v1;
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_in(dir.path());
    lake.create_missing_tables().await.unwrap();
    map_rows(&lake, &[("user_id", "u1", "p_1")]).await;
    let engine = Engine::new(lake.clone(), EngineConfig::default());
    let users = HashMap::from([(
        "app".to_owned(),
        tessera_core::config::UserSection {
            role: tessera_core::config::Role::Marketer,
            pii: false,
            password_hash: tessera_core::auth::hash_password("app-password").unwrap(),
            disabled: false,
            rows: None,
        },
    )]);
    let server = Server::start(
        engine.clone(),
        ServeOptions {
            users,
            ..options(dir.path())
        },
    )
    .await
    .unwrap();
    let grpc = format!("http://{}", server.grpc_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let channel = tonic::transport::Endpoint::from_shared(grpc)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = v1::auth_service_client::AuthServiceClient::new(channel.clone())
        .login(v1::LoginRequest {
            user: "app".into(),
            password: "app-password".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut profiles = v1::profile_service_client::ProfileServiceClient::new(channel);
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let get = |id_type: &str, value: &str| {
        let mut r = tonic::Request::new(v1::GetProfileRequest {
            identifier: Some(v1::Identifier {
                r#type: id_type.into(),
                value: value.into(),
            }),
        });
        r.metadata_mut().insert("authorization", bearer.clone());
        r
    };
    let first = profiles
        .get_profile(get("user_id", "u1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.profile.unwrap().profile_id, "p_1");
    let v0 = first.snapshot.unwrap().identity_map_version;
    let missing = profiles
        .get_profile(get("user_id", "u2"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    map_rows(
        &lake,
        &[("user_id", "u2", "p_1"), ("email", "x@example.com", "p_1")],
    )
    .await;
    let mut found = None;
    for _ in 0..100 {
        match profiles.get_profile(get("user_id", "u2")).await {
            Ok(r) => {
                found = Some(r.into_inner());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let found = found.expect("the new snapshot was loaded");
    let snapshot = found.snapshot.unwrap();
    assert_eq!(snapshot.identity_map_version, v0 + 1);
    assert_eq!(snapshot.identifiers, 3);
    let profile = found.profile.unwrap();
    assert_eq!(profile.identifiers.len(), 3, "one snapshot, whole");
    assert!(
        profile
            .identifiers
            .iter()
            .any(|i| i.r#type == "email" && i.value == "***"),
        "masked for a user without pii: {profile:?}"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
