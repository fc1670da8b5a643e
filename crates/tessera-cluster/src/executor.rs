//! `tessera cluster executor`: a Ballista executor that runs stages of Tessera's plans.
//!
//! It knows every SQL function a Tessera session has (resolved by name when a stage is
//! decoded) and registers the lake's object stores in every task's runtime, under the
//! URLs the pinned table scans name. It reads Parquet files only: the files of each
//! scan are listed in the plan the client made.

use std::sync::Arc;

use anyhow::Context as _;
use ballista_core::RuntimeProducer;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use tessera_engine::Engine;

use crate::functions::Known;

/// How the executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The address it listens on.
    pub bind_host: String,
    /// The host the scheduler and other executors reach it at (default: `bind_host`).
    pub external_host: Option<String>,
    /// Its Arrow Flight port (shuffle data is fetched from it).
    pub port: u16,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// The scheduler: host and port.
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// Tasks at once (0: one per core).
    pub vcores: usize,
    /// Shuffle files and spills (default: a temporary folder).
    pub work_dir: Option<String>,
    /// Its id at the scheduler (default: generated).
    pub id: Option<String>,
}

/// Runs the executor until the process is stopped.
pub async fn run(options: ExecutorOptions, engine: &Engine) -> anyhow::Result<()> {
    let known = Known::of(engine)?;
    let work_dir = match &options.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
            dir.clone()
        }
        None => {
            let dir = std::env::temp_dir().join(format!("tessera-executor-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.to_string_lossy().into_owned()
        }
    };
    let runtime_known = known.clone();
    let temp = work_dir.clone();
    let runtime: RuntimeProducer = Arc::new(move |_| runtime_known.runtime(Some(&temp)));
    let mut config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: options.external_host.clone(),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        vcores: options.vcores,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: Some(work_dir),
        print_thread_info: false,
        override_function_registry: Some(Arc::new(known.registry())),
        override_runtime_producer: Some(runtime),
        ..ExecutorProcessConfig::default()
    };
    if let Some(id) = &options.id {
        config.executor_id = id.clone();
    }
    tracing::info!(
        "cluster executor {} on {}:{} for the scheduler at {}:{}",
        config.executor_id,
        options.bind_host,
        options.port,
        options.scheduler_host,
        options.scheduler_port
    );
    start_executor_process(Arc::new(config))
        .await
        .context("running the executor")?;
    Ok(())
}
