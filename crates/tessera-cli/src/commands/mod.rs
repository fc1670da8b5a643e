//! One module per subcommand.

pub mod activate;
pub mod cluster;
pub mod identity;
pub mod import;
pub mod init;
pub mod maintain;
pub mod matching;
pub mod predict;
pub mod privacy;
pub mod profile;
pub mod quarantine;
pub mod quickstart;
pub mod segments;
pub mod serve;
pub mod source;
pub mod sql;
pub mod stitch;
pub mod tables;
pub mod user;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tessera_core::config::Project;
use tessera_engine::{Engine, EngineConfig};
use tessera_lake::Lake;

use crate::{Cli, Command};

/// Runs the chosen subcommand. `cpu` is the runtime DataFusion executes the queries of
/// API callers on (`tessera serve`), apart from the one answering requests.
pub async fn run(cli: Cli, cpu: tokio::runtime::Handle) -> anyhow::Result<()> {
    let command = match cli.command {
        Command::Init(args) => return init::run(&cli.project, args).await,
        Command::Quickstart(args) => return quickstart::run(args, cpu).await,
        Command::Source(args) => return source::run(&cli.project, args),
        Command::User(args) => return user::run(&cli.project, args),
        Command::Token(args) => return user::run_token(&cli.project, args),
        other => other,
    };
    let opened = open_project(&cli.project)?;
    let result = match command {
        Command::Import(args) => import::run(&opened, args).await,
        Command::Sql(args) => sql::run(&opened, args).await,
        Command::Serve(args) => serve::run(&opened, args, cpu).await,
        Command::Stitch(args) => stitch::run(&opened, args).await,
        Command::Profile(args) => profile::run(&opened, args).await,
        Command::Identity(args) => identity::run(&opened, args).await,
        Command::Quarantine(args) => quarantine::run(&opened, args).await,
        Command::Match(args) => matching::run(&opened, args).await,
        Command::Predict(args) => predict::run(&opened, args).await,
        Command::Segments(args) => segments::run(&opened, args).await,
        Command::Activate(args) => activate::run(&opened, args).await,
        Command::Tables(args) => tables::run(&opened, args).await,
        Command::Optimize(args) => maintain::optimize(&opened, args).await,
        Command::Vacuum(args) => maintain::vacuum(&opened, args).await,
        Command::Privacy(args) => privacy::run(&opened, args).await,
        Command::Cluster(args) => cluster::run(&opened, args).await,
        Command::Init(_)
        | Command::Quickstart(_)
        | Command::Source(_)
        | Command::User(_)
        | Command::Token(_) => unreachable!("handled above"),
    };
    // Done reading: vacuum need not wait for this process's read lease.
    opened.lake.release_leases().await;
    result
}

/// A project with its lake and engine, ready to use.
pub struct Opened {
    pub project: Project,
    pub lake: Arc<Lake>,
    pub engine: Engine,
}

/// Loads the project at `dir` and opens its lake.
pub fn open_project(dir: &Path) -> anyhow::Result<Opened> {
    let project = Project::load(dir)?;
    let location = project.lake_location();
    let options = project
        .config
        .lake
        .storage_options
        .clone()
        .into_iter()
        .collect();
    let lake = Arc::new(
        Lake::new(&location, options).with_context(|| format!("opening the lake at {location}"))?,
    );
    // A pinned [segments] as_of applies to every query of the project, so that a
    // segment's SQL tried in `tessera sql` gives what a refresh gives.
    let engine = Engine::new(
        lake.clone(),
        EngineConfig {
            as_of_micros: project.config.segments.as_of_micros()?,
            cluster: project.config.engine.cluster_endpoint()?,
            ..EngineConfig::default()
        },
    );
    Ok(Opened {
        project,
        lake,
        engine,
    })
}

/// Peak resident memory of this process in bytes (Linux), for reports.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
