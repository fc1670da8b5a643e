//! `tessera cluster scheduler` and `tessera cluster executor`: the parts of an Apache
//! DataFusion Ballista cluster, from the same binary (built with `--features cluster`).
//!
//! Both open the project (`--project`) for what they must know: the lake's object
//! stores and credentials, and Tessera's SQL functions. A project whose `tessera.toml`
//! has `[engine] cluster = "df://host:port"` then plans its statements itself and runs
//! them on that scheduler's executors.

use std::net::SocketAddr;

use clap::{Args, Subcommand};

use super::Opened;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Run a scheduler: takes the plans of Tessera clients, cuts them into stages and
    /// hands their tasks to the executors.
    Scheduler(SchedulerArgs),
    /// Run an executor: polls the scheduler for tasks and runs them over the lake.
    Executor(ExecutorArgs),
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Where to listen (gRPC for clients and executors, and the REST API under /api).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub listen: SocketAddr,
    /// The host executors and clients reach this scheduler at (default: the listen
    /// address).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Seconds without a heartbeat after which an executor is taken as lost and its
    /// tasks are run elsewhere.
    #[arg(long, default_value_t = 180)]
    pub executor_timeout: u64,
    /// A folder for each job's event log (its stages and tasks, and the executors that
    /// ran them), as JSON lines.
    #[arg(long)]
    pub event_log_dir: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler to work for (host:port).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// The host the scheduler and the other executors reach this one at (default: the
    /// bind address).
    #[arg(long)]
    pub external_host: Option<String>,
    /// The Arrow Flight port other executors fetch shuffle data from.
    #[arg(long, default_value_t = 50052)]
    pub port: u16,
    /// The gRPC port.
    #[arg(long, default_value_t = 50062)]
    pub grpc_port: u16,
    /// Tasks run at once (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub vcores: usize,
    /// A folder for shuffle files and spills (default: a new temporary folder).
    #[arg(long)]
    pub work_dir: Option<String>,
    /// This executor's id at the scheduler (default: a generated one).
    #[arg(long)]
    pub id: Option<String>,
}

/// `host:port` split, with an error naming the flag.
fn host_port(flag: &str, value: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = value
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{flag} {value:?}: expected host:port"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow::anyhow!("{flag} {value:?}: {port:?} is not a port number"))?;
    Ok((host.to_owned(), port))
}

#[cfg(feature = "cluster")]
pub async fn run(opened: &Opened, args: ClusterArgs) -> anyhow::Result<()> {
    use tessera_cluster::executor::ExecutorOptions;
    use tessera_cluster::scheduler::SchedulerOptions;
    match args.command {
        ClusterCommand::Scheduler(a) => {
            let options = SchedulerOptions {
                listen: a.listen,
                external_host: a.external_host,
                executor_timeout_seconds: a.executor_timeout,
                event_log_dir: a.event_log_dir,
            };
            eprintln!("tessera cluster scheduler on df://{}", a.listen);
            tessera_cluster::scheduler::run(options, &opened.engine).await
        }
        ClusterCommand::Executor(a) => {
            let (scheduler_host, scheduler_port) = host_port("--scheduler", &a.scheduler)?;
            let options = ExecutorOptions {
                bind_host: a.bind_host,
                external_host: a.external_host,
                port: a.port,
                grpc_port: a.grpc_port,
                scheduler_host,
                scheduler_port,
                vcores: a.vcores,
                work_dir: a.work_dir,
                id: a.id,
            };
            eprintln!(
                "tessera cluster executor on {}:{} for the scheduler at {}",
                options.bind_host, options.port, a.scheduler
            );
            tessera_cluster::executor::run(options, &opened.engine).await
        }
    }
}

#[cfg(not(feature = "cluster"))]
pub async fn run(_opened: &Opened, args: ClusterArgs) -> anyhow::Result<()> {
    if let ClusterCommand::Executor(a) = &args.command {
        host_port("--scheduler", &a.scheduler)?;
    }
    anyhow::bail!(
        "this tessera binary was built without the `cluster` feature; build it with \
         `cargo build --release --features cluster` to run a scheduler or an executor"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_are_checked() {
        assert_eq!(
            host_port("--scheduler", "10.0.0.5:50050").expect("valid"),
            ("10.0.0.5".to_owned(), 50050)
        );
        for bad in [
            "localhost",
            ":50050",
            "host:",
            "host:0",
            "host:99999",
            "host:x",
        ] {
            let err = host_port("--scheduler", bad).expect_err(bad).to_string();
            assert!(err.contains("--scheduler") && err.contains(bad), "{err}");
        }
    }
}
