//! `tessera serve`

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tessera_ingest::collector::CollectorConfig;
use tessera_server::schedule::{PredictSchedule, SegmentSchedule};
use tessera_server::{ServeOptions, Server};

use super::Opened;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP listen address (overrides [server] http).
    #[arg(long)]
    pub http: Option<String>,
    /// gRPC listen address (overrides [server] grpc).
    #[arg(long)]
    pub grpc: Option<String>,
    /// The collector's write-ahead log folder (overrides [server] wal_dir): each
    /// collector on one lake has its own.
    #[arg(long)]
    pub wal_dir: Option<String>,
}

fn addr(value: &str, what: &str) -> anyhow::Result<SocketAddr> {
    value
        .parse()
        .with_context(|| format!("{what} {value:?} is not a listen address such as 127.0.0.1:8088"))
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// The machine's physical memory in bytes (Linux `/proc/meminfo`; 8 GiB assumed
/// elsewhere), for memory limits given as a share.
fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(8 << 30)
}

/// The limits of API queries from `[server]` (validated when the project loaded).
fn query_limits(
    project: &tessera_core::config::Project,
) -> anyhow::Result<tessera_engine::query::QueryLimits> {
    use tessera_core::config::{parse_duration, parse_memory};
    let server = &project.config.server;
    let memory = parse_memory(&server.query_memory)
        .map_err(anyhow::Error::msg)
        .context("[server] query_memory")?
        .bytes(physical_memory());
    let timeout = parse_duration(&server.query_timeout)
        .map_err(anyhow::Error::msg)
        .context("[server] query_timeout")?;
    let spill_dir = server.spill_dir.as_ref().map(|d| {
        let d = Path::new(d);
        if d.is_absolute() {
            d.to_owned()
        } else {
            project.dir.join(d)
        }
    });
    if let Some(d) = &spill_dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("[server] spill_dir: creating {}", d.display()))?;
    }
    Ok(tessera_engine::query::QueryLimits {
        memory: Some(memory),
        timeout: (!timeout.is_zero()).then_some(timeout),
        max_concurrent: server.max_concurrent_queries,
        queue_timeout: parse_duration(&server.query_queue_timeout)
            .map_err(anyhow::Error::msg)
            .context("[server] query_queue_timeout")?,
        spill_dir,
    })
}

/// The collector's settings from `[server]` (`wal_dir` overriding its `wal_dir`), with
/// tracking plans `plans`.
pub(crate) fn collector_config(
    opened: &Opened,
    wal_dir: Option<&str>,
    plans: tessera_ingest::plan::TrackingPlans,
) -> anyhow::Result<CollectorConfig> {
    let config = &opened.project.config;
    let wal = Path::new(wal_dir.unwrap_or(&config.server.wal_dir));
    let wal_dir = if wal.is_absolute() {
        wal.to_owned()
    } else {
        opened.project.dir.join(wal)
    };
    let collector_id = match &config.server.collector_id {
        Some(id) => id.clone(),
        None => tessera_ingest::collector::collector_id_for(&wal_dir)
            .with_context(|| format!("the collector id of {}", wal_dir.display()))?,
    };
    Ok(CollectorConfig {
        wal_dir,
        flush_interval: Duration::from_millis(config.server.flush_interval_ms),
        max_event_bytes: config.server.max_event_bytes,
        max_batch_bytes: config.server.max_batch_bytes,
        dedup_window: Duration::from_secs(config.server.dedup_window_hours * 3600),
        window: config.events.window()?,
        collector_id,
        max_buffered_events: config.server.max_buffered_events,
        max_buffered_bytes: tessera_core::config::parse_memory(&config.server.max_buffered_bytes)
            .map_err(anyhow::Error::msg)
            .context("[server] max_buffered_bytes")?
            .bytes(physical_memory()) as usize,
        max_wal_bytes: config
            .server
            .max_wal_bytes()
            .map_err(anyhow::Error::msg)
            .context("[server] max_wal_bytes")?,
        plans: std::sync::Arc::new(plans),
        ..CollectorConfig::default()
    })
}

pub async fn run(
    opened: &Opened,
    args: ServeArgs,
    cpu: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let config = &opened.project.config;
    let http = addr(
        args.http.as_deref().unwrap_or(&config.server.http),
        "--http",
    )?;
    let grpc = addr(
        args.grpc.as_deref().unwrap_or(&config.server.grpc),
        "--grpc",
    )?;
    let sources = config
        .sources
        .iter()
        .map(|(name, s)| (s.write_key.clone(), name.clone()))
        .collect::<std::collections::HashMap<_, _>>();
    if sources.is_empty() {
        eprintln!(
            "warning: no sources in tessera.toml: every request will get 401; add one with `tessera source add NAME`"
        );
    }
    let plans_dir = opened.project.dir.join(super::import::PLANS_DIR);
    let plans = super::import::tracking_plans(opened)?;
    for source in plans.sources() {
        if !config.sources.contains_key(source) {
            eprintln!(
                "warning: {}/{source}.toml is the tracking plan of source {source:?}, which is not in \
                 tessera.toml's [sources]: it applies to nothing collected here",
                plans_dir.display()
            );
        }
    }
    let planned = plans.sources().join(", ");
    let options = ServeOptions {
        http,
        grpc,
        collector: collector_config(opened, args.wal_dir.as_deref(), plans)?,
        sources,
        segments: config.segments.schedule.then(|| SegmentSchedule {
            project_dir: opened.project.dir.clone(),
            check_every: Duration::from_secs(config.segments.check_interval_seconds),
            as_of_micros: config.segments.as_of_micros().ok().flatten(),
        }),
        users: config.users.clone().into_iter().collect(),
        tokens: config.tokens.clone().into_iter().collect(),
        admin: Some(tessera_server::api::AdminOptions {
            project_dir: opened.project.dir.clone(),
            identity: config.identity.clone(),
            as_of_micros: config.segments.as_of_micros().ok().flatten(),
            settle: config.server.erasure_settle(),
        }),
        tls: config
            .server
            .tls
            .as_ref()
            .map(|t| tessera_server::tls::TlsFiles {
                cert: opened.project.dir.join(&t.cert),
                key: opened.project.dir.join(&t.key),
            }),
        index_check_every: Duration::from_secs(2),
        queries: query_limits(&opened.project)?,
        cpu: Some(cpu),
        config_file: Some(opened.project.dir.join(tessera_core::config::CONFIG_FILE)),
        activation: {
            let a = tessera_activate::Activation::new(
                &opened.engine,
                &opened.project,
                &|v| std::env::var(v).ok(),
                "tessera serve",
            )?;
            (!a.is_empty()).then(|| std::sync::Arc::new(a))
        },
        activation_every: Duration::from_secs(1),
        oidc: config.server.oidc.clone(),
        predict: config.predict.schedule.then(|| PredictSchedule {
            project_dir: opened.project.dir.clone(),
            config: config.predict.clone(),
            refit_every: Duration::from_secs(config.predict.refit_hours * 3600),
            check_every: Duration::from_secs(config.segments.check_interval_seconds),
        }),
        maintenance: {
            let every = tessera_core::config::parse_duration(&config.server.optimize_every)
                .map_err(anyhow::Error::msg)
                .context("[server] optimize_every")?;
            (!every.is_zero()).then_some(tessera_server::schedule::MaintenanceSchedule {
                check_every: every,
                small_files: config.server.optimize_small_files,
            })
        },
    };
    let server = Server::start(opened.engine.clone(), options).await?;
    let http = server
        .http_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let grpc = server
        .grpc_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (web, secure) = if config.server.tls.is_some() {
        ("https", " with TLS")
    } else {
        ("http", "")
    };
    println!(
        "HTTP collector listening on {web}://{http} (POST /v1/batch, /v1/track, ...; GET /health, /metrics)"
    );
    println!(
        "gRPC listening on {grpc}{secure}: Arrow Flight SQL and tessera.v1 (profiles, audiences, admin) \
         ({} user{}, {} API token{}; `tessera user add`, `tessera token add`), health, reflection",
        config.users.len(),
        if config.users.len() == 1 { "" } else { "s" },
        config.tokens.len(),
        if config.tokens.len() == 1 { "" } else { "s" },
    );
    if config.segments.schedule {
        println!(
            "segments: refreshed on their -- refresh: schedule (checked every {} s)",
            config.segments.check_interval_seconds
        );
    }
    if !config.syncs.is_empty() {
        println!(
            "activation: {} sync{} to {} destination{}, planned after refreshes and delivered in the background (tessera activate status)",
            config.syncs.len(),
            if config.syncs.len() == 1 { "" } else { "s" },
            config.destinations.len(),
            if config.destinations.len() == 1 {
                ""
            } else {
                "s"
            },
        );
    }
    let streams: Vec<&str> = config
        .destinations
        .iter()
        .filter(|(_, d)| d.kind == tessera_core::config::DestinationKind::EventStream)
        .map(|(n, _)| n.as_str())
        .collect();
    if !streams.is_empty() {
        println!(
            "event streams: {} (collected events forwarded once committed; ledger in stream_deliveries)",
            streams.join(", ")
        );
    }
    if config.predict.schedule {
        println!(
            "predictive models: refitted every {} h (tessera predict)",
            config.predict.refit_hours
        );
    }
    if !planned.is_empty() {
        println!(
            "tracking plans (sql/plans/, read at start): {planned}; violations in plan_violations, blocked events in quarantine"
        );
    }
    println!("lake: {}", opened.lake.root());
    let _ = std::io::stdout().flush();
    let flushed = server.run(stop_signal()).await?;
    println!("Stopped: committed the last {flushed} buffered events to events.");
    Ok(())
}
