//! `tessera import PATH_OR_URL`

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tessera_ingest::{Format, ImportOptions, ImportReport, Importer};

use super::{Opened, peak_rss_bytes};
use crate::output::{bytes, thousands};
use crate::progress::ImportBars;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A file, a folder or a glob; a local path or an s3://, gs://, az:// URL.
    pub input: String,
    /// Input format (default: from each file's extension).
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// Source name recorded on the events (default: [import] default_source).
    #[arg(long)]
    pub source: Option<String>,
    /// A SQL file mapping the input (table `input`) to event columns.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Abort a file, committing none of it, once it has more bad rows than this.
    #[arg(long)]
    pub max_errors: Option<u64>,
    /// Import files again even if they were imported before (events still deduplicate).
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Parser threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s)
        .ok_or_else(|| format!("unknown format {s:?}: use ndjson, json, csv or parquet"))
}

pub async fn run(opened: &Opened, args: ImportArgs) -> anyhow::Result<()> {
    let report = import(opened, &args).await?;
    if args.json {
        println!("{}", report_json(&report));
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Runs an import with progress bars.
/// The project's tracking plans (`sql/plans/<source>.toml`).
pub fn tracking_plans(opened: &Opened) -> anyhow::Result<tessera_ingest::plan::TrackingPlans> {
    Ok(tessera_ingest::plan::TrackingPlans::load(
        &opened.project.dir.join(PLANS_DIR),
    )?)
}

/// Where the tracking plans are, in a project.
pub const PLANS_DIR: &str = "sql/plans";

pub async fn import(opened: &Opened, args: &ImportArgs) -> anyhow::Result<ImportReport> {
    let mapping = match &args.mapping {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the mapping {}", path.display()))?,
        ),
        None => None,
    };
    let config = &opened.project.config;
    let options = ImportOptions {
        format: args.format,
        source: args
            .source
            .clone()
            .unwrap_or_else(|| config.import.default_source.clone()),
        mapping,
        max_errors: args.max_errors,
        batch_rows: config.import.batch_rows,
        force: args.force,
        threads: args.threads,
        quarantine: true,
        window: config.events.window()?,
        plans: std::sync::Arc::new(tracking_plans(opened)?),
        count_violations: true,
    };
    let importer = Importer::new(opened.engine.clone(), options);
    let bars = ImportBars::new(args.json);
    Ok(importer.import(&args.input, &bars).await?)
}

pub fn report_json(report: &ImportReport) -> serde_json::Value {
    let files: Vec<serde_json::Value> = report
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "location": f.location,
                "format": f.format,
                "skipped": f.skipped,
                "bytes": f.bytes,
                "rows_read": f.rows_read,
                "rows_imported": f.rows_imported,
                "rows_duplicate": f.rows_duplicate,
                "rows_suppressed": f.rows_suppressed,
                "rows_rejected": f.rows_rejected,
                "rows_quarantined": f.rows_quarantined,
                "events_version": f.events_version,
                "errors": f.errors.iter().map(|e| serde_json::json!({"line": e.line, "code": e.code, "reason": e.reason})).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "files": files,
        "rows_read": report.rows_read(),
        "rows_imported": report.rows_imported(),
        "rows_duplicate": report.rows_duplicate(),
        "rows_suppressed": report.rows_suppressed(),
        "rows_rejected": report.rows_rejected(),
        "files_skipped": report.files_skipped(),
        "bytes": report.bytes(),
        "elapsed_seconds": report.elapsed.as_secs_f64(),
        "peak_rss_bytes": peak_rss_bytes(),
    })
}

pub fn print_report(report: &ImportReport) {
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "Imported {} events from {} file(s) in {:.1}s ({} events/s, {}/s)",
        thousands(report.rows_imported()),
        report.files.len() - report.files_skipped(),
        secs,
        thousands((report.rows_read() as f64 / secs) as u64),
        bytes((report.bytes() as f64 / secs) as u64),
    );
    if report.files_skipped() > 0 {
        println!(
            "  {} file(s) skipped: imported before (use --force to re-read them)",
            report.files_skipped()
        );
    }
    if report.rows_duplicate() > 0 {
        println!(
            "  {} duplicate events skipped (same message_id)",
            thousands(report.rows_duplicate())
        );
    }
    if report.rows_suppressed() > 0 {
        println!(
            "  {} events not stored: they carry an identifier on the suppression list \
             (tessera privacy list)",
            thousands(report.rows_suppressed())
        );
    }
    if report.rows_rejected() > 0 {
        println!(
            "  {} rows rejected, kept in quarantine (tessera quarantine list; replay once fixed):",
            thousands(report.rows_rejected())
        );
        for f in &report.files {
            for e in &f.errors {
                println!("    {}:{}: {}", f.location, e.line, e.reason);
            }
            let hidden = f.rows_rejected.saturating_sub(f.errors.len() as u64);
            if hidden > 0 {
                println!("    {}: … and {} more", f.location, thousands(hidden));
            }
        }
    }
}
