//! `tessera segments list|validate|refresh|diff|show`

use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use tessera_core::config::parse_instant;
use tessera_segments::audience::{self, Refresh};
use tessera_segments::refresh::{RefreshOptions, RefreshReport, Status};
use tessera_segments::{SegmentSet, file::format_interval};

use super::Opened;
use crate::output::thousands;

#[derive(Debug, Args)]
pub struct SegmentsArgs {
    #[command(subcommand)]
    pub command: SegmentsCommand,
}

#[derive(Debug, Subcommand)]
pub enum SegmentsCommand {
    /// Every segment with its schedule, size and last refresh.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Check every segment file against the lake (nothing runs).
    Validate,
    /// Evaluate segments (all, or NAME... with the segments they read) and record who
    /// entered and exited; segments whose inputs have not changed are skipped.
    Refresh {
        /// Segments to refresh.
        names: Vec<String>,
        /// Re-evaluate even when inputs are unchanged.
        #[arg(long)]
        force: bool,
        /// Judge time-relative conditions at this time (RFC 3339 or a date) instead of
        /// now; defaults to [segments] as_of.
        #[arg(long)]
        as_of: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Who entered and exited a segment, by refresh version.
    Diff {
        /// The segment.
        name: String,
        /// Changes after this refresh version (default: those of the latest refresh).
        #[arg(long)]
        since: Option<i64>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// A segment's definition, size over time and some members.
    Show {
        /// The segment.
        name: String,
        /// Members shown.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}

pub async fn run(opened: &Opened, args: SegmentsArgs) -> anyhow::Result<()> {
    let set = SegmentSet::load(&opened.project.dir)?;
    match args.command {
        SegmentsCommand::List { json } => list(opened, &set, json).await,
        SegmentsCommand::Validate => {
            set.validate(&opened.engine).await?;
            println!(
                "{} segment{} valid: {}",
                set.segments().len(),
                if set.segments().len() == 1 { "" } else { "s" },
                set.known()
            );
            Ok(())
        }
        SegmentsCommand::Refresh {
            names,
            force,
            as_of,
            json,
        } => {
            let as_of = match as_of {
                Some(t) => Some(parse_instant(&t).with_context(|| {
                    format!(
                        "--as-of {t:?} is not a time such as 2026-10-31T23:59:59Z or 2026-10-31"
                    )
                })?),
                None => opened.project.config.segments.as_of_micros()?,
            };
            let started = Instant::now();
            let report = refresh(opened, names, force, as_of, "tessera segments refresh").await?;
            if json {
                println!("{}", report_json(&report));
            } else {
                print_report(&report, started.elapsed().as_secs_f64());
            }
            Ok(())
        }
        SegmentsCommand::Diff {
            name,
            since,
            limit,
            json,
        } => diff(opened, &set, &name, since, limit, json).await,
        SegmentsCommand::Show { name, limit } => show(opened, &set, &name, limit).await,
    }
}

/// Refreshes segments of `set` (the quickstart and the server use this too).
pub async fn refresh(
    opened: &Opened,
    names: Vec<String>,
    force: bool,
    as_of_micros: Option<i64>,
    actor: &str,
) -> anyhow::Result<RefreshReport> {
    Ok(tessera_segments::refresh::refresh_project(
        &opened.engine,
        &opened.project.dir,
        &RefreshOptions::now(names, force, as_of_micros, actor),
    )
    .await?)
}

fn micros_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| micros.to_string())
}

pub fn print_report(report: &RefreshReport, seconds: f64) {
    if let Some(r) = &report.recovered {
        println!("Recovered an interrupted refresh: {r}");
    }
    if report.outcomes.is_empty() {
        println!("No segments: add SQL files to sql/segments/ (see `tessera init`).");
        return;
    }
    let refreshed = report
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Refreshed)
        .count();
    if report.written {
        println!(
            "Refreshed {refreshed} of {} segments (run {}, as of {}) in {seconds:.2} s",
            report.outcomes.len(),
            report.run,
            micros_text(report.as_of_micros)
        );
    } else {
        println!(
            "All {} segments are up to date (inputs unchanged); nothing written ({seconds:.2} s)",
            report.outcomes.len()
        );
    }
    println!(
        "  {:<24} {:<10} {:>7} {:>10} {:>9} {:>9} {:>8}",
        "segment", "status", "version", "members", "entered", "exited", "seconds"
    );
    for o in &report.outcomes {
        let exited = if o.merged > 0 {
            format!("{} ({} merged)", thousands(o.exited), thousands(o.merged))
        } else {
            thousands(o.exited)
        };
        println!(
            "  {:<24} {:<10} {:>7} {:>10} {:>9} {:>9} {:>8.2}",
            o.segment,
            o.status.as_str(),
            o.refresh_version,
            thousands(o.members),
            thousands(o.entered),
            exited,
            o.seconds
        );
    }
}

pub fn report_json(report: &RefreshReport) -> serde_json::Value {
    serde_json::json!({
        "run": report.run,
        "as_of": micros_text(report.as_of_micros),
        "written": report.written,
        "recovered": report.recovered,
        "segments": report.outcomes.iter().map(|o| serde_json::json!({
            "segment": o.segment,
            "status": o.status.as_str(),
            "refresh_version": o.refresh_version,
            "members": o.members,
            "entered": o.entered,
            "exited": o.exited,
            "merged": o.merged,
            "seconds": o.seconds,
        })).collect::<Vec<_>>(),
    })
}

/// One JSON object per line.
fn print_json_lines<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<()> {
    for r in rows {
        println!("{}", serde_json::to_string(r)?);
    }
    Ok(())
}

/// Rows as an aligned text table with a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn optional<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// One row of `tessera segments list`.
#[derive(Debug, serde::Serialize)]
struct Listed<'a> {
    segment: &'a str,
    refresh: String,
    members: Option<i64>,
    version: Option<i64>,
    last_refresh: Option<String>,
    owner: &'a str,
    description: &'a str,
}

async fn list(opened: &Opened, set: &SegmentSet, json: bool) -> anyhow::Result<()> {
    if set.segments().is_empty() {
        println!("No segments: add SQL files to sql/segments/ (see `tessera init`).");
        return Ok(());
    }
    let latest: std::collections::HashMap<String, Refresh> =
        audience::latest_refreshes(&opened.engine)
            .await?
            .into_iter()
            .collect();
    let mut rows: Vec<Listed> = set
        .segments()
        .iter()
        .map(|s| {
            let r = latest.get(&s.name);
            Listed {
                segment: &s.name,
                refresh: format_interval(s.refresh),
                members: r.map(|r| r.members),
                version: r.map(|r| r.version),
                last_refresh: r.map(|r| micros_text(r.refreshed_at)),
                owner: s.owner.as_deref().unwrap_or(""),
                description: s.description.as_deref().unwrap_or(""),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.segment.cmp(b.segment));
    if json {
        return print_json_lines(&rows);
    }
    print_table(
        &[
            "segment",
            "refresh",
            "members",
            "version",
            "last refresh",
            "owner",
            "description",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.segment.to_owned(),
                    r.refresh.clone(),
                    optional(r.members.map(|m| thousands(m as u64))),
                    optional(r.version),
                    optional(r.last_refresh.clone()),
                    r.owner.to_owned(),
                    r.description.to_owned(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(())
}

fn require<'a>(set: &'a SegmentSet, name: &str) -> anyhow::Result<&'a tessera_segments::Segment> {
    match set.get(name) {
        Some(s) => Ok(s),
        None => bail!("no segment named {name:?}; known segments: {}", set.known()),
    }
}

async fn diff(
    opened: &Opened,
    set: &SegmentSet,
    name: &str,
    since: Option<i64>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    require(set, name)?;
    let Some(latest) = audience::latest_version(&opened.engine, name).await? else {
        bail!("segment {name} has not been refreshed yet: run `tessera segments refresh {name}`");
    };
    let since = since.unwrap_or(latest - 1);
    if since >= latest {
        if !json {
            println!("No changes: {name} is at refresh version {latest}.");
        }
        return Ok(());
    }
    let (rows, entered, exited) = audience::changes(&opened.engine, name, since, limit).await?;
    if json {
        return print_json_lines(&rows);
    }
    println!(
        "{name}: refresh versions {}..={latest}: {} entered, {} exited",
        since + 1,
        thousands(entered),
        thousands(exited)
    );
    print_table(
        &[
            "refresh_version",
            "change",
            "profile_id",
            "changed_at",
            "merged_into",
        ],
        &rows
            .iter()
            .map(|c| {
                vec![
                    c.refresh_version.to_string(),
                    c.change.as_str().to_owned(),
                    c.profile_id.clone(),
                    micros_text(c.changed_at),
                    optional(c.merged_into.clone()),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let total = (entered + exited) as usize;
    if rows.len() < total {
        println!(
            "({} of {total} rows shown; --limit N or --json for more)",
            rows.len()
        );
    }
    Ok(())
}

async fn show(opened: &Opened, set: &SegmentSet, name: &str, limit: usize) -> anyhow::Result<()> {
    let segment = require(set, name)?;
    println!("Segment {name}  ({})", segment.file);
    if let Some(d) = &segment.description {
        println!("  description: {d}");
    }
    println!("  refresh:     {}", format_interval(segment.refresh));
    if let Some(o) = &segment.owner {
        println!("  owner:       {o}");
    }
    if !segment.references.is_empty() {
        let refs: Vec<&str> = segment
            .references
            .iter()
            .map(|r| r.segment.as_str())
            .collect();
        println!("  reads segments: {}", refs.join(", "));
    }
    println!("\n{}\n", segment.text.trim_end());
    let history = audience::history(&opened.engine, name, 20).await?;
    if history.is_empty() {
        println!("Not refreshed yet: run `tessera segments refresh {name}`.");
        return Ok(());
    }
    println!("Refreshes (size over time):");
    print_table(
        &[
            "version",
            "refreshed_at",
            "as_of",
            "members",
            "entered",
            "exited",
            "duration_ms",
        ],
        &history
            .iter()
            .map(|r| {
                vec![
                    r.version.to_string(),
                    micros_text(r.refreshed_at),
                    micros_text(r.as_of),
                    thousands(r.members as u64),
                    thousands(r.entered as u64),
                    thousands(r.exited as u64),
                    r.duration_ms.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!("Members (first {limit}):");
    let members = audience::members(&opened.engine, name, limit).await?;
    print_table(
        &["profile_id", "since", "user_id", "email"],
        &members
            .iter()
            .map(|m| {
                vec![
                    m.profile_id.clone(),
                    micros_text(m.since),
                    optional(m.user_id.clone()),
                    optional(m.email.clone()),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(())
}
