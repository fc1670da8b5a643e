//! `tessera-bench profile`: `tessera.v1.ProfileService/GetProfile` latency and
//! throughput. `tessera serve` runs as its own process; concurrent clients (one HTTP/2
//! connection each) look up random identifiers of the lake (e-mail, user id,
//! anonymous id) over loopback for a fixed time after a warm-up, recording every
//! request's latency.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::TryStreamExt;
use tessera_engine::{Engine, EngineConfig};
use tessera_server::api::v1;
use tessera_server::api::v1::profile_service_client::ProfileServiceClient;

const PASSWORD: &str = "bench-password-0";

/// Up to `n` identifiers of the lake, spread over its types.
async fn identifiers(project: &Path, n: usize) -> anyhow::Result<Vec<v1::Identifier>> {
    let lake = tessera_lake::Lake::new(
        project
            .join("tessera-data")
            .to_str()
            .context("project path")?,
        Default::default(),
    )?;
    let engine = Engine::new(Arc::new(lake), EngineConfig::default());
    let ctx = engine.session_of(&["identity_map"]).await?;
    let batches: Vec<_> = ctx
        .sql(&format!(
            "SELECT id_type, id_value FROM identity_map ORDER BY md5(id_value) LIMIT {n}"
        ))
        .await?
        .execute_stream()
        .await?
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for b in batches {
        use datafusion::arrow::array::AsArray;
        let cast = |i: usize| {
            datafusion::arrow::compute::cast(
                b.column(i),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
        };
        let (t, v) = (cast(0)?, cast(1)?);
        let (t, v) = (t.as_string::<i32>(), v.as_string::<i32>());
        for r in 0..b.num_rows() {
            out.push(v1::Identifier {
                r#type: t.value(r).to_owned(),
                value: v.value(r).to_owned(),
            });
        }
    }
    Ok(out)
}

pub fn run(
    project: &Path,
    clients: usize,
    connections: usize,
    seconds: u64,
    pin: bool,
) -> anyhow::Result<()> {
    if clients == 0 || connections == 0 || connections > clients {
        bail!("--clients and --connections must be at least 1, and connections at most clients");
    }
    if !project.join("tessera.toml").exists() {
        bail!(
            "{} is not a project: run `tessera-bench segments` first (it builds one), or pass --project",
            project.display()
        );
    }
    // Threads and child processes inherit the affinity of the thread creating them.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if pin {
        if cores.len() < 2 {
            bail!("--pin needs two cores, this machine offers {}", cores.len());
        }
        if !core_affinity::set_for_current(cores[0]) {
            bail!("cannot pin to core {}", cores[0].id);
        }
    }
    let started = super::flight::start_server(project, PASSWORD);
    if pin && !core_affinity::set_for_current(cores[1]) {
        bail!("cannot pin to core {}", cores[1].id);
    }
    let (mut server, grpc) = started?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime
        .block_on(identifiers(project, 100_000))
        .and_then(|ids| {
            if ids.is_empty() {
                bail!("the project has no identifiers: run `tessera stitch` first");
            }
            runtime.block_on(drive(&grpc, ids, clients, connections, seconds))
        });
    let _ = server.kill();
    let _ = server.wait();
    let (mut latencies, errors, wall, profiles, bytes) = result?;
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    println!(
        "GetProfile over loopback: {clients} clients on {connections} HTTP/2 connections, {seconds} s after a 2 s warm-up, index of {profiles} profiles"
    );
    if pin {
        println!(
            "  server pinned to core {}, clients to core {}",
            cores[0].id, cores[1].id
        );
    }
    println!(
        "  {} requests ({errors} errors) = {:.0} requests/s, answers of {:.0} bytes on average",
        latencies.len(),
        latencies.len() as f64 / wall,
        bytes as f64 / latencies.len().max(1) as f64
    );
    println!(
        "  latency: p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!(
        "  goal p99 < 1000 µs at >= 20000 requests/s: {}",
        if pct(0.99) < 1000.0 && latencies.len() as f64 / wall >= 20_000.0 {
            "met"
        } else {
            "not met"
        }
    );
    Ok(())
}

/// Latencies (ns), errors, seconds, profiles in the index, answer bytes.
type Outcome = (Vec<u64>, u64, f64, i64, u64);

async fn drive(
    grpc: &str,
    ids: Vec<v1::Identifier>,
    clients: usize,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let endpoint = format!("http://{grpc}");
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())?
        .connect()
        .await?;
    let token = v1::auth_service_client::AuthServiceClient::new(channel)
        .login(v1::LoginRequest {
            user: "bench".into(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner()
        .token;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let ids = Arc::new(ids);
    let warm_until = Instant::now() + Duration::from_secs(2);
    let stop_at = warm_until + Duration::from_secs(seconds);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(
            tonic::transport::Endpoint::from_shared(endpoint.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = ProfileServiceClient::new(channels[c % connections].clone());
        let (ids, bearer) = (ids.clone(), bearer.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let (mut errors, mut profiles, mut bytes) = (0u64, 0i64, 0u64);
            let mut i = c * 7919;
            loop {
                let id = ids[i % ids.len()].clone();
                i += 1;
                let mut request = tonic::Request::new(v1::GetProfileRequest {
                    identifier: Some(id),
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                let started = Instant::now();
                let response = client.get_profile(request).await;
                let done = Instant::now();
                if done >= stop_at {
                    break;
                }
                match response {
                    Ok(r) => {
                        let r = r.into_inner();
                        if done >= warm_until {
                            latencies.push((done - started).as_nanos() as u64);
                            bytes += prost::Message::encoded_len(&r) as u64;
                        }
                        if let Some(s) = r.snapshot {
                            profiles = s.profiles;
                        }
                    }
                    Err(_) if done >= warm_until => errors += 1,
                    Err(_) => {}
                }
            }
            (latencies, errors, profiles, bytes)
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut profiles, mut bytes) = (0, 0, 0);
    for t in tasks {
        let (l, e, p, b) = t.await?;
        bytes += b;
        all.extend(l);
        errors += e;
        profiles = profiles.max(p);
    }
    Ok((all, errors, seconds as f64, profiles, bytes))
}
