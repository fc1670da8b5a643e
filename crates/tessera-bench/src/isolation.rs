//! `tessera-bench isolation`: do the collector and the profile API keep answering while
//! an analyst's heavy query runs? `tessera serve` on a stitched project; a steady load
//! of collector batches and `GetProfile` look-ups at a fixed rate over loopback, with
//! every request's latency recorded — first with nothing else running, then while a
//! Flight SQL client (ADBC) runs CPU- and memory-heavy aggregations back to back. Run
//! with DataFusion on its own runtime (the default) and, for comparison, on the
//! runtime that answers requests (`TESSERA_QUERY_RUNTIME=shared`).

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tessera_client::{Client, v1};

use super::collect::{add_source, auth, send, template};

const PASSWORD: &str = "bench-password-0";

/// Collector batches per second (each of 100 events) and look-ups per second.
const BATCHES_PER_SECOND: u64 = 200;
const LOOKUPS_PER_SECOND: u64 = 2000;

/// The heavy query: a million groups over two billion generated rows (CPU and the
/// memory of a hash aggregation), run again and again.
const HEAVY: &str = r#"
import sys
import adbc_driver_flightsql.dbapi as adbc
conn = adbc.connect("grpc://" + sys.argv[1], db_kwargs={"username": "bench", "password": sys.argv[2]})
cur = conn.cursor()
while True:
    try:
        cur.execute("SELECT count(*) FROM (SELECT value % 1000003 AS k, count(*) AS n FROM generate_series(1, 2000000000) GROUP BY 1)")
        cur.fetchall()
    except Exception as e:
        print(e, file=sys.stderr)
"#;

/// Latencies in microseconds, sorted.
struct Latencies(Vec<u64>);

impl Latencies {
    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((self.0.len() as f64 * p).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[i] as f64 / 1000.0
    }
}

/// Sends collector batches at a fixed rate until `stop`; latencies of the acknowledged
/// ones (failures counted).
fn collector_load(addr: SocketAddr, stop: &AtomicBool) -> anyhow::Result<(Latencies, u64)> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let auth = auth();
    let mut t = template(7);
    let base = chrono::Utc::now().timestamp_micros() as u64;
    let every = Duration::from_micros(1_000_000 / BATCHES_PER_SECOND);
    let mut next = Instant::now();
    let (mut latencies, mut failures, mut n) = (Vec::new(), 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        // Distinct message ids in every phase and run (the collector deduplicates).
        t.stamp(base + n);
        n += 1;
        let t0 = Instant::now();
        match send(&mut stream, addr, &auth, &t.body) {
            Ok(200) => latencies.push(t0.elapsed().as_micros() as u64),
            _ => failures += 1,
        }
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
    }
    latencies.sort_unstable();
    Ok((Latencies(latencies), failures))
}

/// Looks profiles up at a fixed rate until `stop`.
async fn profile_load(
    grpc: String,
    ids: Arc<Vec<v1::Identifier>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Latencies, u64)> {
    let endpoint = format!("http://{grpc}");
    let mut client =
        Client::login(tessera_client::connect(&endpoint).await?, "bench", PASSWORD).await?;
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / LOOKUPS_PER_SECOND));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut latencies, mut errors, mut i) = (Vec::new(), 0u64, 0usize);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let id = &ids[i % ids.len()];
        i += 7919;
        let t0 = Instant::now();
        match client.get_profile(&id.r#type, &id.value).await {
            Ok(_) => latencies.push(t0.elapsed().as_micros() as u64),
            Err(_) => errors += 1,
        }
    }
    latencies.sort_unstable();
    Ok((Latencies(latencies), errors))
}

/// One phase: both loads for `seconds`.
struct Phase {
    collector: Latencies,
    collector_failures: u64,
    profiles: Latencies,
    profile_errors: u64,
}

fn phase(
    runtime: &tokio::runtime::Runtime,
    http: SocketAddr,
    grpc: &str,
    ids: &Arc<Vec<v1::Identifier>>,
    seconds: u64,
) -> anyhow::Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = runtime.spawn(profile_load(grpc.to_owned(), ids.clone(), stop.clone()));
    let collected = std::thread::scope(|scope| {
        let handle = scope.spawn(|| collector_load(http, &stop));
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        handle.join()
    })
    .map_err(|_| anyhow::anyhow!("the collector load panicked"))??;
    let (profiles, profile_errors) = runtime.block_on(lookups)??;
    Ok(Phase {
        collector: collected.0,
        collector_failures: collected.1,
        profiles,
        profile_errors,
    })
}

/// Stops a `tessera serve` (SIGTERM) and waits for it.
pub(crate) fn stop(child: &mut Child) {
    kill(child);
}

fn kill(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

pub fn run(project: &Path, seconds: u64) -> anyhow::Result<()> {
    if !project.join("tessera.toml").exists() {
        bail!(
            "{} is not a project: run `tessera-bench segments` first (it builds one), or pass --project",
            project.display()
        );
    }
    add_source(project)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let ids = Arc::new(runtime.block_on(super::profile::identifiers(project, 20_000))?);
    if ids.is_empty() {
        bail!("the project has no identifiers: run `tessera stitch` first");
    }
    println!(
        "isolation: {BATCHES_PER_SECOND} collector batches/s (100 events each) and {LOOKUPS_PER_SECOND} GetProfile/s over loopback, {seconds} s per phase; heavy query: a 1M-group aggregation over 2e9 generated rows, back to back over ADBC"
    );
    println!(
        "| DataFusion runs on | heavy query | collector p50 / p99 / p99.9 (ms) | GetProfile p50 / p99 / p99.9 (ms) | failures |"
    );
    println!("| --- | --- | ---: | ---: | ---: |");
    for mode in ["its own runtime", "the request runtime"] {
        let env: &[(&str, &str)] = if mode == "the request runtime" {
            &[("TESSERA_QUERY_RUNTIME", "shared")]
        } else {
            &[]
        };
        let (mut server, grpc, http) = super::flight::start_server_with(project, PASSWORD, env)?;
        let http: SocketAddr = http.parse().context("the HTTP address")?;
        let result = (|| -> anyhow::Result<()> {
            // Warm the index and the connections.
            phase(&runtime, http, &grpc, &ids, 2)?;
            let quiet = phase(&runtime, http, &grpc, &ids, seconds)?;
            let mut heavy = Command::new(super::python()?)
                .arg("-c")
                .arg(HEAVY)
                .args([&grpc, PASSWORD])
                .stdout(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_secs(2));
            let loaded = phase(&runtime, http, &grpc, &ids, seconds);
            let _ = heavy.kill();
            let _ = heavy.wait();
            let loaded = loaded?;
            for (label, p) in [("no", &quiet), ("yes", &loaded)] {
                println!(
                    "| {mode} | {label} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {} |",
                    p.collector.pct(0.5),
                    p.collector.pct(0.99),
                    p.collector.pct(0.999),
                    p.profiles.pct(0.5),
                    p.profiles.pct(0.99),
                    p.profiles.pct(0.999),
                    p.collector_failures + p.profile_errors,
                );
            }
            Ok(())
        })();
        kill(&mut server);
        result?;
    }
    Ok(())
}
