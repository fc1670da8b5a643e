//! `tessera stitch [--full]`

use std::time::Instant;

use clap::Args;
use tessera_identity::{StitchOptions, StitchReport};

use super::Opened;
use crate::output::thousands;
use crate::progress::Stages;

#[derive(Debug, Args)]
pub struct StitchArgs {
    /// Rebuild from every event instead of only those that arrived since the last run.
    #[arg(long)]
    pub full: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs stitching and returns its report.
pub async fn stitch(opened: &Opened, full: bool, quiet: bool) -> anyhow::Result<StitchReport> {
    let stages = Stages::new(quiet);
    let report = tessera_identity::stitch(
        &opened.engine,
        &opened.project.dir,
        &opened.project.config.identity,
        &StitchOptions {
            full,
            actor: "tessera stitch".into(),
        },
        &stages,
    )
    .await;
    stages.finish();
    Ok(report?)
}

pub fn print_report(report: &StitchReport, seconds: f64) {
    if report.up_to_date {
        println!(
            "Identities are up to date with events version {} ({} identifiers); nothing to do.",
            report.events_version,
            thousands(report.identifiers)
        );
        return;
    }
    let mode = if report.full {
        "full rebuild".to_owned()
    } else {
        format!(
            "incremental since events version {}",
            report.previous_events_version.unwrap_or_default()
        )
    };
    println!(
        "Stitched events version {} ({mode}, {} event files) in {seconds:.1} s",
        report.events_version, report.event_files
    );
    for r in &report.rules {
        let invalid = if r.invalid_values > 0 {
            format!(", {} invalid values skipped", thousands(r.invalid_values))
        } else {
            String::new()
        };
        println!(
            "  {:<40} {:>12} identifier pairs{invalid}",
            r.rule,
            thousands(r.observations)
        );
    }
    println!(
        "  edges {}: {} merged profiles, {} rejected by limits",
        thousands(report.edges),
        thousands(report.edges_merged),
        thousands(report.edges_rejected)
    );
    println!(
        "  identifiers {} ({} new), profiles {}, merges recorded {}",
        thousands(report.identifiers),
        thousands(report.new_identifiers),
        thousands(report.profiles),
        thousands(report.merges)
    );
    if !report.traits.is_empty() {
        println!("  computed traits: {}", report.traits.join(", "));
    }
    let stages: Vec<String> = report
        .stages
        .iter()
        .map(|(name, secs)| format!("{name} {secs:.2}s"))
        .collect();
    println!("  time: {}", stages.join(", "));
}

pub async fn run(opened: &Opened, args: StitchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let report = stitch(opened, args.full, args.json).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report, started.elapsed().as_secs_f64());
    }
    Ok(())
}
