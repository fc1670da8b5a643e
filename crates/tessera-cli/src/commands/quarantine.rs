//! `tessera quarantine list|replay [--where CONDITION]`

use clap::{Args, Subcommand};
use tessera_ingest::ImportOptions;
use tessera_ingest::quarantine;

use super::Opened;
use crate::output::thousands;

#[derive(Debug, Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub command: QuarantineCommand,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// The refused events, oldest first: when, from where, why, and the payload.
    List {
        /// A SQL condition over quarantine's columns (reason_code, source, origin,
        /// received_at, message, payload), e.g. "reason_code = 'timestamp_out_of_range'".
        #[arg(long = "where")]
        filter: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Land the refused events again through the import path (validated with today's
    /// rules, deduplicated on messageId); those that land leave quarantine.
    Replay {
        /// Only these (a SQL condition, as for list).
        #[arg(long = "where")]
        filter: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(opened: &Opened, args: QuarantineArgs) -> anyhow::Result<()> {
    let config = &opened.project.config;
    match args.command {
        QuarantineCommand::List {
            filter,
            limit,
            json,
        } => {
            let rows = quarantine::list(&opened.engine, filter.as_deref(), Some(limit)).await?;
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
                return Ok(());
            }
            if rows.is_empty() {
                println!("Nothing in quarantine.");
                return Ok(());
            }
            for r in &rows {
                let at = r.position.map(|p| format!(":{p}")).unwrap_or_default();
                let mut payload = r.payload.clone().unwrap_or_default();
                if payload.len() > 120 {
                    let mut end = 117;
                    while !payload.is_char_boundary(end) {
                        end -= 1;
                    }
                    payload.truncate(end);
                    payload.push_str("...");
                }
                println!(
                    "{}  {}  {}{at}  [{}] {}\n    {payload}",
                    r.received_at, r.source, r.origin, r.reason_code, r.message
                );
            }
            Ok(())
        }
        QuarantineCommand::Replay { filter, json } => {
            let options = ImportOptions {
                batch_rows: config.import.batch_rows,
                window: config.events.window()?,
                plans: std::sync::Arc::new(super::import::tracking_plans(opened)?),
                ..ImportOptions::default()
            };
            let report = quarantine::replay(&opened.engine, filter.as_deref(), &options).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
                return Ok(());
            }
            println!(
                "Replayed {} quarantined events: {} landed, {} already in events, {} suppressed, {} still refused",
                thousands(report.selected),
                thousands(report.imported),
                thousands(report.duplicates),
                thousands(report.suppressed),
                thousands(report.still_refused)
            );
            for (id, reason) in &report.reasons {
                println!("  {id}: {reason}");
            }
            Ok(())
        }
    }
}
