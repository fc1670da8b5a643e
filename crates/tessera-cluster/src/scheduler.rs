//! `tessera cluster scheduler`: Ballista's scheduler, able to decode Tessera's plans.
//!
//! It receives whole physical plans from Tessera clients, cuts them into stages at
//! their shuffles and hands the tasks to the executors that poll it. Its REST API
//! (`/api/executors`, `/api/jobs`, `/api/job/{id}/stages`) is served on the same port,
//! and with an event log folder every task's end — with the executor that ran it — is
//! written per job as JSON lines.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tessera_engine::Engine;

use crate::functions::Known;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where it listens (gRPC and REST).
    pub listen: SocketAddr,
    /// The host executors and clients reach it at (default: the listen address).
    pub external_host: Option<String>,
    /// An executor silent for this long is taken as lost: its tasks run elsewhere.
    pub executor_timeout_seconds: u64,
    /// Where each job's events (stages, tasks and their executors) are written.
    pub event_log_dir: Option<String>,
}

/// Runs the scheduler until the process is stopped.
pub async fn run(options: SchedulerOptions, engine: &Engine) -> anyhow::Result<()> {
    let known = Known::of(engine)?;
    let mut config = SchedulerConfig::default()
        .with_scheduler_policy(TaskSchedulingPolicy::PullStaged)
        .with_event_log_dir(options.event_log_dir.clone());
    config.bind_host = options.listen.ip().to_string();
    config.bind_port = options.listen.port();
    config.external_host = options
        .external_host
        .clone()
        .unwrap_or_else(|| options.listen.ip().to_string());
    config.executor_timeout_seconds = options.executor_timeout_seconds.max(1);
    config.expire_dead_executor_interval_seconds = (options.executor_timeout_seconds / 3).max(1);
    let builder_known = known.clone();
    let config = config.with_override_session_builder(Arc::new(move |session: SessionConfig| {
        Ok(SessionStateBuilder::new()
            .with_default_features()
            .with_config(session)
            .with_runtime_env(builder_known.runtime(None)?)
            .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
            .with_scalar_functions(builder_known.distinct_scalar())
            .with_aggregate_functions(builder_known.distinct_aggregate())
            .with_window_functions(builder_known.distinct_window())
            .build())
    }));
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .context("setting up the scheduler's state")?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .context("starting the scheduler")?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    tracing::info!(
        "cluster scheduler on df://{} ({} functions, {} table stores)",
        listener.local_addr()?,
        known.scalar.len() + known.aggregate.len() + known.window.len(),
        known.stores.len()
    );
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .context("serving the scheduler")?;
    Ok(())
}
