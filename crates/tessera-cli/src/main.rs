//! `tessera`: the command-line entry point of the Tessera customer data platform.

mod commands;
mod output;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: DataFusion plans allocate and free many small buffers (per file, per
/// batch); glibc's allocator spent ~15% of segment refreshes in malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tessera: an open-source, SQL-first customer data platform in one binary.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, long_about = None)]
pub struct Cli {
    /// The project folder (holds tessera.toml and sql/).
    #[arg(long, global = true, env = "TESSERA_PROJECT", default_value = ".")]
    pub project: PathBuf,

    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a project: tessera.toml, sql/ and an empty lake.
    Init(commands::init::InitArgs),
    /// Import events from files (NDJSON, JSON, CSV, Parquet), local or in an object store.
    Import(commands::import::ImportArgs),
    /// Resolve identities into profiles (incremental; --full rebuilds), then rebuild
    /// the golden profiles.
    Stitch(commands::stitch::StitchArgs),
    /// Show the profile holding an identifier (TYPE:VALUE), with its identifiers,
    /// traits and merge history.
    Profile(commands::profile::ProfileArgs),
    /// Correct the identity graph: split an identifier or an edge off a profile.
    Identity(commands::identity::IdentityArgs),
    /// Probabilistic matching of records that share no exact identifier (match.toml):
    /// pairs, train, predict, explain, evaluate.
    Match(commands::matching::MatchArgs),
    /// Predictive scores: RFM, BG/NBD purchases and churn, Gamma-Gamma spend and CLV,
    /// purchase propensity; written to `scores` and `model_runs`.
    Predict(commands::predict::PredictArgs),
    /// Segments: list, validate, refresh (who entered and exited), diff, show.
    Segments(commands::segments::SegmentsArgs),
    /// Send segments to their destinations: run, status, retry, preview.
    Activate(commands::activate::ActivateArgs),
    /// Events refused by validation (collector and importer): list them, replay them
    /// once fixed or once the rules changed.
    Quarantine(commands::quarantine::QuarantineArgs),
    /// Run the server: the Segment-compatible HTTP collector (with its write-ahead log),
    /// /health, /metrics, and the gRPC port.
    Serve(commands::serve::ServeArgs),
    /// Run a SQL query over the lake.
    Sql(commands::sql::SqlArgs),
    /// List the lake's tables with rows, files, size and version.
    Tables(commands::tables::TablesArgs),
    /// Compact tables' small files into large ones (no row changes; readers see no new data).
    Optimize(commands::maintain::OptimizeArgs),
    /// Delete files no table version within the retention needs (default 7 days).
    Vacuum(commands::maintain::VacuumArgs),
    /// Privacy: erase a person's whole identity cluster with proof, export what is held
    /// about them, suppress and unsuppress identifiers, list requests.
    Privacy(commands::privacy::PrivacyArgs),
    /// Manage the sources (write keys) events are collected from.
    Source(commands::source::SourceArgs),
    /// Manage the users of the gRPC services (Flight SQL): roles, PII grant, password.
    User(commands::user::UserArgs),
    /// Manage API tokens of applications (tessera.v1, Flight SQL): role, PII grant.
    Token(commands::user::TokenArgs),
    /// Generate sample customers into a fresh project and run every stage on them.
    Quickstart(commands::quickstart::QuickstartArgs),
    /// Run a part of a Ballista cluster (scheduler or executor) that projects with
    /// `[engine] cluster` run their queries on (builds with `--features cluster`).
    Cluster(commands::cluster::ClusterArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,tessera=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The error and its causes, each said once (wrapped errors often repeat their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if text.contains(&s) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    text
}

/// Whether the error is the reader of our output going away (`tessera sql … | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause.to_string().contains("Broken pipe (os error 32)")
    })
}

fn main() -> ExitCode {
    // `println!` panics when stdout is a closed pipe; like other command-line tools,
    // stop quietly instead.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Sessions of a project with `[engine] cluster` plan here and run on the cluster.
    #[cfg(feature = "cluster")]
    tessera_cluster::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-io")
        // Planning walks expression trees recursively (an erasure's delete of thousands
        // of message ids is one): as much stack as the main thread has.
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // DataFusion's work for API callers runs on threads of its own, in the idle
    // scheduling class, so that a heavy query never holds up the threads answering the
    // collector and the profile API.
    let cpu = match tessera_server::query_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the query runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // TESSERA_QUERY_RUNTIME=shared runs them on the request runtime instead: only for
    // measuring what the separation buys (`tessera-bench isolation`).
    let query_runtime = if std::env::var("TESSERA_QUERY_RUNTIME").as_deref() == Ok("shared") {
        runtime.handle().clone()
    } else {
        cpu.handle().clone()
    };
    let result = runtime.block_on(commands::run(cli, query_runtime));
    cpu.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
