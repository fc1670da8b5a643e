//! One module per subcommand.

pub mod activate;
pub mod import;
pub mod init;
pub mod matching;
pub mod predict;
pub mod profile;
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
    match cli.command {
        Command::Init(args) => init::run(&cli.project, args).await,
        Command::Import(args) => import::run(&open_project(&cli.project)?, args).await,
        Command::Sql(args) => sql::run(&open_project(&cli.project)?, args).await,
        Command::Serve(args) => serve::run(&open_project(&cli.project)?, args, cpu).await,
        Command::Stitch(args) => stitch::run(&open_project(&cli.project)?, args).await,
        Command::Profile(args) => profile::run(&open_project(&cli.project)?, args).await,
        Command::Match(args) => matching::run(&open_project(&cli.project)?, args).await,
        Command::Predict(args) => predict::run(&open_project(&cli.project)?, args).await,
        Command::Segments(args) => segments::run(&open_project(&cli.project)?, args).await,
        Command::Activate(args) => activate::run(&open_project(&cli.project)?, args).await,
        Command::Tables(args) => tables::run(&open_project(&cli.project)?, args).await,
        Command::Quickstart(args) => quickstart::run(args, cpu).await,
        Command::Source(args) => source::run(&cli.project, args),
        Command::User(args) => user::run(&cli.project, args),
        Command::Token(args) => user::run_token(&cli.project, args),
    }
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
