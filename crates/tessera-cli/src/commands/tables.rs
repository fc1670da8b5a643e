//! `tessera tables`

use clap::Args;

use super::Opened;
use crate::output::{bytes, thousands};

#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(opened: &Opened, args: TablesArgs) -> anyhow::Result<()> {
    let rows = opened.lake.stats_all().await?;
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|s| serde_json::json!({"table": s.name, "rows": s.rows, "files": s.files, "bytes": s.bytes, "version": s.version}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "The lake at {} has no tables yet: run `tessera init`.",
            opened.lake.root()
        );
        return Ok(());
    }
    println!(
        "{:<20} {:>14} {:>8} {:>12} {:>8}",
        "table", "rows", "files", "size", "version"
    );
    for s in rows {
        println!(
            "{:<20} {:>14} {:>8} {:>12} {:>8}",
            s.name,
            thousands(s.rows),
            s.files,
            bytes(s.bytes),
            s.version
        );
    }
    println!("\nlake: {}", opened.lake.root());
    Ok(())
}
