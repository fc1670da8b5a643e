//! `tessera optimize` and `tessera vacuum`: keeping the lake's files few and large, and
//! deleting the files no version within the retention needs.

use anyhow::{Context as _, bail};
use clap::Args;
use tessera_core::schema;
use tessera_lake::maintain::{DEFAULT_RETENTION_HOURS, OptimizeOptions, VacuumOptions};

use super::Opened;
use crate::output::{bytes, thousands};

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// The table to compact (default: every table of the lake).
    pub table: Option<String>,
    /// Z-order the rows of each partition by these columns (comma-separated), so that
    /// Parquet statistics prune filters on them; rewrites every file of the table, not
    /// only small ones.
    #[arg(long, value_delimiter = ',')]
    pub zorder: Vec<String>,
    /// Size files are packed to ("256MiB", "1GB", bytes).
    #[arg(long, default_value = "256MiB")]
    pub target_size: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// The table to vacuum (default: every table of the lake).
    pub table: Option<String>,
    /// Keep the files of versions from the last HOURS (time travel within them works).
    #[arg(long, value_name = "HOURS", default_value_t = DEFAULT_RETENTION_HOURS)]
    pub retain: u64,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Accept a retention under the default 168 hours (7 days).
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The tables a command applies to: `table`, checked, or every table that exists.
async fn tables(opened: &Opened, table: Option<&str>) -> anyhow::Result<Vec<String>> {
    match table {
        Some(name) => {
            if schema::table(name).is_none() {
                let known: Vec<&str> = schema::tables().iter().map(|t| t.name).collect();
                bail!(
                    "unknown table {name:?}: the lake's tables are {}",
                    known.join(", ")
                );
            }
            if !opened.lake.exists(name).await? {
                bail!(
                    "table {name} does not exist yet in the lake at {}",
                    opened.lake.root()
                );
            }
            Ok(vec![name.to_owned()])
        }
        None => {
            let mut names = Vec::new();
            for def in schema::tables() {
                if opened.lake.exists(def.name).await? {
                    names.push(def.name.to_owned());
                }
            }
            Ok(names)
        }
    }
}

pub async fn optimize(opened: &Opened, args: OptimizeArgs) -> anyhow::Result<()> {
    let target = match tessera_core::config::parse_memory(&args.target_size) {
        Ok(tessera_core::config::MemorySize::Bytes(b)) if b >= 1 << 20 => b,
        Ok(_) => bail!(
            "--target-size {:?}: give a size of at least 1MiB, such as \"256MiB\"",
            args.target_size
        ),
        Err(e) => bail!("--target-size: {e}"),
    };
    let names = tables(opened, args.table.as_deref()).await?;
    if !args.zorder.is_empty() {
        let [name] = names.as_slice() else {
            bail!("--zorder needs one table: the columns are that table's");
        };
        let def = schema::table(name).context("a known table")?;
        for column in &args.zorder {
            if def.schema.field_with_name(column).is_err() {
                let columns: Vec<&str> = def
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                bail!(
                    "--zorder {column}: table {name} has no such column (its columns: {})",
                    columns.join(", ")
                );
            }
            if def.partition_columns.contains(&column.as_str()) {
                bail!("--zorder {column}: {name} is partitioned by it; order by other columns");
            }
        }
    }
    let options = OptimizeOptions {
        target_file_bytes: target,
        zorder: args.zorder.clone(),
        actor: "tessera optimize".into(),
    };
    let mut reports = Vec::new();
    for name in &names {
        if !args.json {
            eprintln!("optimizing {name}…");
        }
        let report = opened
            .lake
            .optimize(name, &options)
            .await
            .with_context(|| format!("optimizing {name}"))?;
        if !args.json {
            let (b, a) = (&report.before, &report.after);
            match report.version {
                Some(v) => println!(
                    "{name:<20} {} files ({}, median {}) → {} files ({}, median {}), {} rows unchanged, version {v}",
                    b.files,
                    bytes(b.bytes),
                    bytes(b.median),
                    a.files,
                    bytes(a.bytes),
                    bytes(a.median),
                    thousands(a.rows),
                ),
                None => println!(
                    "{name:<20} {} files ({}): nothing worth rewriting",
                    b.files,
                    bytes(b.bytes)
                ),
            }
        }
        reports.push(report);
    }
    if args.json {
        let v: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                let layout = |l: &tessera_lake::Layout| {
                    serde_json::json!({"files": l.files, "bytes": l.bytes, "rows": l.rows,
                        "small_files": l.small_files, "smallest": l.smallest, "median": l.median,
                        "largest": l.largest, "partitions": l.partitions, "version": l.version})
                };
                serde_json::json!({"table": r.table, "before": layout(&r.before),
                    "after": layout(&r.after), "files_removed": r.files_removed,
                    "files_added": r.files_added, "partitions_optimized": r.partitions_optimized,
                    "version": r.version})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    }
    Ok(())
}

pub async fn vacuum(opened: &Opened, args: VacuumArgs) -> anyhow::Result<()> {
    let names = tables(opened, args.table.as_deref()).await?;
    let options = VacuumOptions {
        retain_hours: args.retain,
        force: args.force,
        dry_run: args.dry_run,
        actor: "tessera vacuum".into(),
    };
    let mut reports = Vec::new();
    for name in &names {
        let report = opened.lake.vacuum(name, &options).await?;
        if !args.json {
            let verb = if report.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            print!(
                "{name:<20} {verb} {} files ({})",
                report.files.len(),
                bytes(report.bytes)
            );
            if let Some(holder) = &report.held_by {
                print!(
                    "; kept {:.1} h of history for reader {holder} (its read lease)",
                    report.retained_hours
                );
            }
            println!();
        }
        reports.push(report);
    }
    if args.json {
        let v: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({"table": r.table, "dry_run": r.dry_run, "files": r.files,
                    "bytes": r.bytes, "retained_hours": r.retained_hours, "held_by": r.held_by})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    }
    Ok(())
}
