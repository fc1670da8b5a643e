//! `tessera segments list|validate|refresh|diff|show`

use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use tessera_core::config::parse_instant;
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
            let report = refresh(
                opened,
                &set,
                names,
                force,
                as_of,
                "tessera segments refresh",
            )
            .await?;
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
    set: &SegmentSet,
    names: Vec<String>,
    force: bool,
    as_of_micros: Option<i64>,
    actor: &str,
) -> anyhow::Result<RefreshReport> {
    opened.lake.create_missing_tables().await?;
    let report = tessera_segments::refresh::refresh(
        &opened.engine,
        set,
        &RefreshOptions {
            names,
            force,
            as_of_micros,
            due_only: false,
            actor: actor.into(),
        },
    )
    .await?;
    Ok(report)
}

fn status_text(s: Status) -> &'static str {
    match s {
        Status::Refreshed => "refreshed",
        Status::Unchanged => "unchanged",
        Status::NotDue => "not due",
    }
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
            status_text(o.status),
            o.refresh_version,
            thousands(o.members),
            thousands(o.entered),
            exited,
            o.seconds
        );
    }
}

fn report_json(report: &RefreshReport) -> serde_json::Value {
    serde_json::json!({
        "run": report.run,
        "as_of": micros_text(report.as_of_micros),
        "written": report.written,
        "recovered": report.recovered,
        "segments": report.outcomes.iter().map(|o| serde_json::json!({
            "segment": o.segment,
            "status": status_text(o.status),
            "refresh_version": o.refresh_version,
            "members": o.members,
            "entered": o.entered,
            "exited": o.exited,
            "merged": o.merged,
            "seconds": o.seconds,
        })).collect::<Vec<_>>(),
    })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn query(ctx: &SessionContext, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Column `i` of the first row as an integer (NULL or no row: `None`).
fn first_i64(batches: &[RecordBatch], i: usize) -> Option<i64> {
    let b = batches.first()?;
    let a = b
        .column(i)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()?;
    (b.num_rows() > 0 && !datafusion::arrow::array::Array::is_null(a, 0)).then(|| a.value(0))
}

fn print_batches(batches: &[RecordBatch], json: bool) -> anyhow::Result<()> {
    if json {
        let mut out = Vec::new();
        {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        print!("{}", String::from_utf8_lossy(&out));
    } else {
        println!("{}", pretty_format_batches(batches)?);
    }
    Ok(())
}

async fn list(opened: &Opened, set: &SegmentSet, json: bool) -> anyhow::Result<()> {
    if set.segments().is_empty() {
        println!("No segments: add SQL files to sql/segments/ (see `tessera init`).");
        return Ok(());
    }
    let rows: Vec<String> = set
        .segments()
        .iter()
        .map(|s| {
            format!(
                "({}, {}, {}, {})",
                quote(&s.name),
                quote(&format_interval(s.refresh)),
                quote(s.owner.as_deref().unwrap_or("")),
                quote(s.description.as_deref().unwrap_or(""))
            )
        })
        .collect();
    let ctx = opened.engine.session().await?;
    let last = if ctx.table_exist(tessera_core::schema::SEGMENT_REFRESHES)? {
        "LEFT JOIN (SELECT s.segment, s.refresh_version AS version, s.members, \
                 s.refreshed_at AS last_refresh \
          FROM segment_refreshes AS s \
          JOIN (SELECT segment, max(refresh_version) AS v FROM segment_refreshes GROUP BY segment) AS l \
            ON l.segment = s.segment AND l.v = s.refresh_version) AS r ON r.segment = d.name"
    } else {
        "LEFT JOIN (SELECT CAST(NULL AS TEXT) AS segment, CAST(NULL AS BIGINT) AS version, \
                 CAST(NULL AS BIGINT) AS members, CAST(NULL AS TIMESTAMP) AS last_refresh) AS r \
          ON r.segment = d.name"
    };
    let sql = format!(
        "SELECT d.name AS segment, d.refresh, r.members, r.version, r.last_refresh, d.owner, d.description \
         FROM (VALUES {}) AS d(name, refresh, owner, description) {last} ORDER BY d.name",
        rows.join(", ")
    );
    print_batches(&query(&ctx, &sql).await?, json)
}

fn require<'a>(set: &'a SegmentSet, name: &str) -> anyhow::Result<&'a tessera_segments::Segment> {
    match set.get(name) {
        Some(s) => Ok(s),
        None => bail!("no segment named {name:?}; known segments: {}", set.known()),
    }
}

async fn latest_version(ctx: &SessionContext, name: &str) -> anyhow::Result<Option<i64>> {
    if !ctx.table_exist(tessera_core::schema::SEGMENT_REFRESHES)? {
        return Ok(None);
    }
    let batches = query(
        ctx,
        &format!(
            "SELECT max(refresh_version) FROM segment_refreshes WHERE segment = {}",
            quote(name)
        ),
    )
    .await?;
    Ok(first_i64(&batches, 0))
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
    let ctx = opened.engine.session().await?;
    let Some(latest) = latest_version(&ctx, name).await? else {
        bail!("segment {name} has not been refreshed yet: run `tessera segments refresh {name}`");
    };
    let since = since.unwrap_or(latest - 1);
    if since >= latest {
        if !json {
            println!("No changes: {name} is at refresh version {latest}.");
        }
        return Ok(());
    }
    let filter = format!("segment = {} AND refresh_version > {since}", quote(name));
    let counts = query(
        &ctx,
        &format!(
            "SELECT count(*) FILTER (WHERE change = 'entered') AS entered, \
                    count(*) FILTER (WHERE change = 'exited') AS exited \
             FROM audience_changes WHERE {filter}"
        ),
    )
    .await?;
    let rows = query(
        &ctx,
        &format!(
            "SELECT refresh_version, change, profile_id, changed_at, merged_into \
             FROM audience_changes WHERE {filter} \
             ORDER BY refresh_version, change, profile_id LIMIT {limit}"
        ),
    )
    .await?;
    if json {
        return print_batches(&rows, true);
    }
    let count = |i: usize| first_i64(&counts, i).unwrap_or(0);
    println!(
        "{name}: refresh versions {}..={latest}: {} entered, {} exited",
        since + 1,
        thousands(count(0) as u64),
        thousands(count(1) as u64)
    );
    print_batches(&rows, false)?;
    let shown: usize = rows.iter().map(RecordBatch::num_rows).sum();
    let total = (count(0) + count(1)) as usize;
    if shown < total {
        println!("({shown} of {total} rows shown; --limit N or --json for more)");
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
    let ctx = opened.engine.session().await?;
    if latest_version(&ctx, name).await?.is_none() {
        println!("Not refreshed yet: run `tessera segments refresh {name}`.");
        return Ok(());
    }
    println!("Refreshes (size over time):");
    let history = query(
        &ctx,
        &format!(
            "SELECT refresh_version AS version, refreshed_at, as_of, members, entered, exited, duration_ms \
             FROM segment_refreshes WHERE segment = {} ORDER BY refresh_version DESC LIMIT 20",
            quote(name)
        ),
    )
    .await?;
    print_batches(&history, false)?;
    println!("Members (first {limit}):");
    let members = query(
        &ctx,
        &format!(
            "SELECT m.profile_id, m.since, p.user_id, p.email \
             FROM audience_membership AS m LEFT JOIN profiles AS p USING (profile_id) \
             WHERE m.segment = {} ORDER BY m.profile_id LIMIT {limit}",
            quote(name)
        ),
    )
    .await?;
    print_batches(&members, false)
}
