//! `tessera-bench`: synthetic data and benchmarks against the reference tools.
//!
//! ```text
//! tessera-bench gen --out DIR [--events N] [--seed S] [--days D]
//! tessera-bench import [--events N] [--work DIR]     # Tessera vs DuckDB, NDJSON → Parquet
//! tessera-bench identity [--events N] [--edges M]    # accuracy; stitching vs Splink and SciPy
//! tessera-bench collect [--clients C] [--seconds S]  # `tessera serve` ingest vs parse-only
//! tessera-bench segments [--events N] [--runs R]     # example segments, Tessera vs DuckDB
//! tessera-bench predict [--customers N]              # BG/NBD + Gamma-Gamma vs lifetimes
//! tessera-bench match [--dataset febrl1] [--records N] # probabilistic matching vs Splink
//! tessera-bench flight | profile [--project P]        # Flight streaming; GetProfile latency
//! tessera-bench isolation [--project P]               # collector and GetProfile under a heavy query
//! tessera-bench activate [--members N]                # a segment delivered to a webhook receiver
//! tessera-bench export [--members N]                  # an audience to Parquet on S3 vs DuckDB COPY
//! tessera-bench ui [--events N] [--views V]           # the web console's pages: time and weight
//! tessera-bench cluster [--events N] [--runs R]      # segments and traits in-process vs on a Ballista cluster
//! ```
//!
//! Every benchmark measures Tessera and its reference side by side in the same run, on
//! the same input, and prints the ratio. The reference tools run from the pinned Python
//! clients (`tests/clients/requirements.txt`), installed by `tests/clients/venv.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tessera_sample::synth::{GenConfig, generate_with_progress, is_current};

mod activate;
mod cluster;
mod collect;
mod flight;
mod identity;
mod isolation;
mod lakelog;
mod matching;
mod predict;
mod privacy;
mod profile;
mod segments;
mod ui;

#[derive(Debug, Parser)]
#[command(
    name = "tessera-bench",
    about = "Synthetic customers and Tessera's benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Generate synthetic customers (events, CRM export, ground truth).
    Gen {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Approximate number of events.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Days of history.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// NDJSON → events import throughput, Tessera vs DuckDB (read_json → Parquet).
    Import {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Working folder (generated data is reused between runs).
        #[arg(long, default_value = "target/bench-import")]
        work: PathBuf,
        /// Timed repetitions of each side (the best is reported).
        #[arg(long, default_value_t = 1)]
        runs: u32,
    },
    /// Sustained ingest into `tessera serve` over loopback: events/s, ack latency, RSS,
    /// against a serde_json parse-only ceiling.
    Collect {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value = "target/bench-collect")]
        work: PathBuf,
    },
    /// Identity resolution: accuracy against the ground truth and full/incremental
    /// `tessera stitch` times on generated events; connected components over string
    /// edges, Tessera vs Splink's SQL on DuckDB vs SciPy.
    Identity {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Identifier edges for the connected-components comparison (0 skips it).
        #[arg(long, default_value_t = 10_000_000)]
        edges: u64,
        /// Skip Splink (slow on large inputs).
        #[arg(long)]
        no_splink: bool,
        #[arg(long, default_value = "target/bench-identity")]
        work: PathBuf,
    },
    /// BG/NBD + Gamma-Gamma fit and scoring on simulated customers, Tessera vs
    /// lifetimes on the same summary data.
    Predict {
        #[arg(long, default_value_t = 1_000_000)]
        customers: usize,
        #[arg(long, default_value = "target/bench-predict")]
        work: PathBuf,
    },
    /// Probabilistic matching: FEBRL F1 and time, Tessera vs Splink (DuckDB) with the same
    /// blocking and comparisons; deduplicating generated records at scale.
    Match {
        /// FEBRL data sets to deduplicate (febrl1, febrl2, febrl3; comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = ["febrl1".to_owned(), "febrl2".to_owned()])]
        dataset: Vec<String>,
        /// Generated records to deduplicate at scale (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        #[arg(long, default_value = "target/bench-match")]
        work: PathBuf,
    },
    /// Streaming `events` over Arrow Flight SQL (ADBC against `tessera serve`) vs
    /// pyarrow reading the same Parquet files locally.
    Flight {
        /// A project with a large `events` table (the segments benchmark builds one).
        #[arg(long, default_value = "target/bench-segments/project")]
        project: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// `tessera.v1` GetProfile latency and throughput with concurrent clients over
    /// loopback against `tessera serve`.
    Profile {
        /// A stitched project (the segments benchmark builds one).
        #[arg(long, default_value = "target/bench-segments/project")]
        project: PathBuf,
        /// Concurrent callers, each with one request in flight at a time.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// HTTP/2 connections the callers share (gRPC multiplexes calls on one).
        #[arg(long, default_value_t = 2)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Server on the first core, clients on the second (so that neither waits for
        /// the other to be scheduled).
        #[arg(long)]
        pin: bool,
    },
    /// The example segments and traits through `tessera sql` in-process and on a
    /// Ballista cluster (a scheduler and two executors on this machine) over the same
    /// lake; needs `tessera` built with `--features cluster`.
    Cluster {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 3)]
        runs: u32,
        #[arg(long, default_value = "target/bench-cluster")]
        work: PathBuf,
    },
    /// Activation: a generated audience delivered to a signature-verifying webhook
    /// receiver on loopback, members per second.
    Activate {
        #[arg(long, default_value_t = 200_000)]
        members: u64,
        #[arg(long, default_value = "target/bench-activate")]
        work: PathBuf,
    },
    /// Activation to files: a generated audience exported as Parquet to S3 (moto on
    /// loopback) by a file destination, and by DuckDB's `COPY ... TO` of the same rows.
    Export {
        #[arg(long, default_value_t = 1_000_000)]
        members: u64,
        #[arg(long, default_value = "target/bench-export")]
        work: PathBuf,
    },
    /// The collector's acknowledgements and GetProfile look-ups at a steady rate, with
    /// and without a heavy Flight SQL query running; DataFusion on its own runtime and
    /// on the request runtime.
    Isolation {
        /// A stitched project (the segments benchmark builds one).
        #[arg(long, default_value = "target/bench-segments/project")]
        project: PathBuf,
        /// Seconds per phase.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// The example segments over generated customers: Tessera's refresh vs DuckDB
    /// running the same SQL on the same Parquet files; a refresh with nothing new.
    Segments {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Timed repetitions of each side (the best is reported).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        #[arg(long, default_value = "target/bench-segments")]
        work: PathBuf,
        /// Compact the lake (`tessera optimize`) before measuring; both sides then read
        /// the compacted files.
        #[arg(long)]
        optimize: bool,
    },
    /// `tessera privacy erase`: one person, then many in one request, on a generated
    /// scored and segmented lake; a byte-level scan for the one person afterwards.
    Privacy {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// People erased in the batched request.
        #[arg(long, default_value_t = 1_000)]
        subjects: usize,
        #[arg(long, default_value = "target/bench-privacy")]
        work: PathBuf,
    },
    /// The web console's pages on the segments benchmark's lake: server time (first
    /// view, p50, p95) and weight against the 200 ms and 300 KB budgets.
    Ui {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Timed views of each page.
        #[arg(long, default_value_t = 40)]
        views: usize,
        #[arg(long, default_value = "target/bench-segments")]
        work: PathBuf,
    },
    /// Opening a table after many small commits (checkpoints every 100): open time at
    /// 100, 1,000, ... commits.
    LakeLog {
        #[arg(long, default_value_t = 100_000)]
        commits: u64,
        /// Commits made through Tessera's writer; the rest replay the last of them (its
        /// actions, a new hard link of its file, the next transaction number).
        #[arg(long, default_value_t = 1_000)]
        written: u64,
        #[arg(long, default_value = "target/bench-lake-log")]
        work: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Gen {
            out,
            events,
            seed,
            days,
        } => {
            let config = GenConfig {
                events,
                seed,
                days,
                ..GenConfig::default()
            };
            let started = Instant::now();
            let s = generate_with_progress(&config, &out, |_, _| {})?;
            println!(
                "generated {} events ({} persons, {} registered, {} orders, {} CRM rows, {} shared devices, {} shared mailboxes), {} MB in {:.1}s into {}",
                s.events,
                s.persons,
                s.registered,
                s.orders,
                s.crm_rows,
                s.shared_devices,
                s.shared_mailboxes,
                s.bytes >> 20,
                started.elapsed().as_secs_f64(),
                out.display()
            );
            Ok(())
        }
        Cmd::Import { events, work, runs } => bench_import(events, &work, runs),
        Cmd::Collect {
            clients,
            seconds,
            work,
        } => collect::run(clients, seconds, &work),
        Cmd::Identity {
            events,
            edges,
            no_splink,
            work,
        } => identity::run(events, edges, !no_splink, &work),
        Cmd::Segments {
            events,
            runs,
            work,
            optimize,
        } => segments::run(events, runs, &work, optimize),
        Cmd::LakeLog {
            commits,
            written,
            work,
        } => lakelog::run(commits, written, &work),
        Cmd::Ui {
            events,
            views,
            work,
        } => ui::run(events, views, &work),
        Cmd::Privacy {
            events,
            subjects,
            work,
        } => privacy::run(events, subjects, &work),
        Cmd::Isolation { project, seconds } => isolation::run(&project, seconds),
        Cmd::Activate { members, work } => activate::run(members, &work),
        Cmd::Cluster { events, runs, work } => cluster::run(events, runs, &work),
        Cmd::Export { members, work } => activate::export(members, &work),
        Cmd::Predict { customers, work } => predict::run(customers, &work),
        Cmd::Match {
            dataset,
            records,
            work,
        } => matching::run(&dataset, records, &work),
        Cmd::Flight { project, runs } => flight::run(&project, runs),
        Cmd::Profile {
            project,
            clients,
            connections,
            seconds,
            pin,
        } => profile::run(&project, clients, connections, seconds, pin),
    }
}

/// An engine over the lake of `project` (its `tessera-data` folder).
fn project_engine(project: &Path) -> anyhow::Result<tessera_engine::Engine> {
    let lake = tessera_lake::Lake::new(
        project
            .join("tessera-data")
            .to_str()
            .context("the project path is not UTF-8")?,
        Default::default(),
    )?;
    Ok(tessera_engine::Engine::new(
        std::sync::Arc::new(lake),
        tessera_engine::EngineConfig::default(),
    ))
}

/// The `tessera` binary next to this one.
fn tessera_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("tessera");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p tessera-cli)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Runs `tessera --project PROJECT ARGS...`; returns its JSON output (or null) and the
/// wall time.
pub(crate) fn tessera(project: &Path, args: &[&str]) -> anyhow::Result<(serde_json::Value, f64)> {
    let started = Instant::now();
    let out = Command::new(tessera_binary()?)
        .arg("--project")
        .arg(project)
        .args(args)
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "tessera {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    Ok((v, secs))
}

/// Imports the generated data's three channels (web, app, POS) into `project`, each as
/// its source.
fn import_channels(project: &Path, data: &Path) -> anyhow::Result<()> {
    for (f, s) in [
        ("events-web.ndjson", "web"),
        ("events-app.ndjson", "app"),
        ("events-pos.ndjson", "pos"),
    ] {
        eprintln!("importing {f} ...");
        let path = data.join(f);
        tessera(
            project,
            &[
                "import",
                "--json",
                "--source",
                s,
                path.to_str().unwrap_or_default(),
            ],
        )?;
    }
    Ok(())
}

/// `WORK/project`, emptied and initialised with `tessera init`.
fn fresh_project(work: &Path) -> anyhow::Result<PathBuf> {
    let project = work.join("project");
    let _ = std::fs::remove_dir_all(&project);
    let out = Command::new(tessera_binary()?)
        .arg("init")
        .arg(&project)
        .output()?;
    if !out.status.success() {
        bail!("tessera init: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(project)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pinned Python of the test clients (bootstrapped on first use).
fn python() -> anyhow::Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/clients/venv.sh"))
        .output()
        .context("running tests/clients/venv.sh")?;
    if !out.status.success() {
        bail!(
            "tests/clients/venv.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Generated data for `events` in `dir` (made unless already there); returns its last day.
fn ensure_data(events: u64, dir: &Path) -> anyhow::Result<chrono::NaiveDate> {
    let config = GenConfig {
        events,
        ..GenConfig::default()
    };
    if !is_current(dir, &config) {
        eprintln!("generating {events} events into {} ...", dir.display());
        generate_with_progress(&config, dir, |_, _| {})?;
    }
    Ok(config.end_date)
}

fn bench_import(events: u64, work: &Path, runs: u32) -> anyhow::Result<()> {
    let tessera = tessera_binary()?;
    let python = python()?;
    let data = work.join("data");
    ensure_data(events, &data)?;
    let inputs: Vec<PathBuf> = [
        "events-web.ndjson",
        "events-app.ndjson",
        "events-pos.ndjson",
    ]
    .iter()
    .map(|f| data.join(f))
    .collect();
    let input_bytes: u64 = inputs
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    // The generator records how many events it wrote.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("manifest.json"))?)?;
    let lines = manifest["summary"]["events"].as_u64().unwrap_or_default();

    let mut best_tessera: Option<(f64, u64, u64)> = None;
    let mut best_duck: Option<(f64, u64)> = None;
    for run in 0..runs.max(1) {
        // Tessera: a fresh project, `tessera import` of the folder, timed around the process.
        let project = work.join(format!("project-{run}"));
        let _ = std::fs::remove_dir_all(&project);
        let status = Command::new(&tessera)
            .args(["init"])
            .arg(&project)
            .output()?;
        if !status.status.success() {
            bail!(
                "tessera init failed: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        }
        let started = Instant::now();
        let out = Command::new(&tessera)
            .arg("--project")
            .arg(&project)
            .args(["import", "--json"])
            .arg(data.join("events-*.ndjson"))
            .output()?;
        let secs = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "tessera import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rss = report["peak_rss_bytes"].as_u64().unwrap_or(0);
        let imported = report["rows_imported"].as_u64().unwrap_or(0);
        if best_tessera.is_none_or(|(b, _, _)| secs < b) {
            best_tessera = Some((secs, rss, imported));
        }
        let _ = std::fs::remove_dir_all(&project);

        // DuckDB: the same NDJSON, read_json → Parquet.
        let out_file = work.join("duckdb-out.parquet");
        let script = format!(
            r#"
import duckdb, json, time
def peak():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024
con = duckdb.connect()
con.execute("SET threads TO {threads}")
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
con.execute("COPY (SELECT * FROM read_json('{glob}', format='newline_delimited')) TO '{out}' (FORMAT parquet)")
secs = time.perf_counter() - t
rows = con.execute("SELECT count(*) FROM '{out}'").fetchone()[0]
print(json.dumps({{"seconds": secs, "rows": rows, "peak_rss_bytes": peak()}}))
"#,
            threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            glob = data.join("events-*.ndjson").display(),
            out = out_file.display(),
        );
        let out = Command::new(&python).arg("-c").arg(&script).output()?;
        if !out.status.success() {
            bail!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
        if best_duck.is_none_or(|(b, _)| secs < b) {
            best_duck = Some((secs, v["peak_rss_bytes"].as_u64().unwrap_or(0)));
        }
        let _ = std::fs::remove_file(out_file);
    }
    let (t_secs, t_rss, imported) = best_tessera.unwrap_or_default();
    let (d_secs, d_rss) = best_duck.unwrap_or_default();
    let mb = input_bytes as f64 / 1e6;
    println!(
        "import benchmark: {lines} events, {mb:.0} MB of NDJSON, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| engine | seconds | events/s | MB/s | peak RSS |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| Tessera `tessera import` → Delta `events` | {t_secs:.2} | {:.0} | {:.1} | {} MB |",
        lines as f64 / t_secs,
        mb / t_secs,
        t_rss >> 20
    );
    println!(
        "| DuckDB `read_json` → Parquet | {d_secs:.2} | {:.0} | {:.1} | {} MB |",
        lines as f64 / d_secs,
        mb / d_secs,
        d_rss >> 20
    );
    println!(
        "ratio (DuckDB time / Tessera time): {:.2}x",
        d_secs / t_secs
    );
    if imported != lines {
        bail!("Tessera imported {imported} events of {lines}");
    }
    Ok(())
}
