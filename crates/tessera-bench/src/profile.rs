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
use tessera_client::{Client, Message as _, v1};

const PASSWORD: &str = "bench-password-0";

/// Up to `n` identifiers of the lake, spread over its types.
pub(crate) async fn identifiers(project: &Path, n: usize) -> anyhow::Result<Vec<v1::Identifier>> {
    let engine = super::project_engine(project)?;
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
    let since_micros = chrono::Utc::now().timestamp_micros();
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
    // Stopped as an operator would (SIGTERM): it commits what `audit_log` still buffers.
    let stopped = stop(&mut server);
    let (mut latencies, errors, wall, profiles, bytes, calls) = result?;
    stopped?;
    let audited = runtime.block_on(audited_calls(project, since_micros))?;
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
        "  audit_log: {audited} get_profile rows for {calls} calls (warm-up included): {}",
        if audited == calls {
            "every call audited"
        } else {
            "MISMATCH"
        }
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

/// Stops `tessera serve` with SIGTERM and waits for it to finish (killed after a
/// minute).
fn stop(server: &mut std::process::Child) -> anyhow::Result<()> {
    let term = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while term.as_ref().is_ok_and(|s| s.success()) && Instant::now() < deadline {
        if server.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill()?;
    server.wait()?;
    bail!("tessera serve did not stop on SIGTERM within a minute (killed)")
}

/// `get_profile` rows of `audit_log` written since `since_micros`.
async fn audited_calls(project: &Path, since_micros: i64) -> anyhow::Result<u64> {
    let engine = super::project_engine(project)?;
    let ctx = engine.session_of(&["audit_log"]).await?;
    let batches = ctx
        .sql(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'get_profile' \
             AND at >= to_timestamp_micros({since_micros})"
        ))
        .await?
        .collect()
        .await?;
    use datafusion::arrow::array::AsArray;
    let count = batches
        .first()
        .context("no count")?
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .value(0);
    Ok(count as u64)
}

/// Latencies (ns), errors, seconds, profiles in the index, answer bytes, calls
/// answered (warm-up and errors included).
type Outcome = (Vec<u64>, u64, f64, i64, u64, u64);

async fn drive(
    grpc: &str,
    ids: Vec<v1::Identifier>,
    clients: usize,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let endpoint = format!("http://{grpc}");
    let signed =
        Client::login(tessera_client::connect(&endpoint).await?, "bench", PASSWORD).await?;
    let ids = Arc::new(ids);
    let warm_until = Instant::now() + Duration::from_secs(2);
    let stop_at = warm_until + Duration::from_secs(seconds);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(tessera_client::connect(&endpoint).await?);
    }
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = signed.on(channels[c % connections].clone());
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let (mut errors, mut profiles, mut bytes, mut calls) = (0u64, 0i64, 0u64, 0u64);
            let mut i = c * 7919;
            loop {
                let id = &ids[i % ids.len()];
                i += 1;
                let started = Instant::now();
                let response = client.get_profile(&id.r#type, &id.value).await;
                let done = Instant::now();
                calls += 1;
                if done >= stop_at {
                    break;
                }
                match response {
                    Ok(r) => {
                        if done >= warm_until {
                            latencies.push((done - started).as_nanos() as u64);
                            bytes += r.encoded_len() as u64;
                        }
                        if let Some(s) = r.snapshot {
                            profiles = s.profiles;
                        }
                    }
                    Err(_) if done >= warm_until => errors += 1,
                    Err(_) => {}
                }
            }
            (latencies, errors, profiles, bytes, calls)
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut profiles, mut bytes, mut calls) = (0, 0, 0, 0);
    for t in tasks {
        let (l, e, p, b, n) = t.await?;
        bytes += b;
        calls += n;
        all.extend(l);
        errors += e;
        profiles = profiles.max(p);
    }
    Ok((all, errors, seconds as f64, profiles, bytes, calls))
}
