//! `tessera stitch [--full]`

use std::time::Instant;

use clap::Args;
use tessera_identity::stitch::Predicted;
use tessera_identity::{StitchOptions, StitchReport};
use tessera_segments::preview::Preview;

use super::Opened;
use crate::output::thousands;
use crate::progress::Stages;

#[derive(Debug, Args)]
pub struct StitchArgs {
    /// Rebuild from every event instead of only those that arrived since the last run.
    #[arg(long)]
    pub full: bool,
    /// Report which profiles would merge, split or move, how many identifiers would
    /// move and who would enter or exit each segment, with the current rules and
    /// limits; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs stitching and returns its report.
pub async fn stitch(opened: &Opened, full: bool, quiet: bool) -> anyhow::Result<StitchReport> {
    stitch_with(opened, full, false, quiet).await
}

async fn stitch_with(
    opened: &Opened,
    full: bool,
    dry_run: bool,
    quiet: bool,
) -> anyhow::Result<StitchReport> {
    let stages = Stages::new(quiet);
    let report = tessera_identity::stitch(
        &opened.engine,
        &opened.project.dir,
        &opened.project.config.identity,
        &StitchOptions {
            full,
            actor: "tessera stitch".into(),
            dry_run,
            ..StitchOptions::default()
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
        "  edges {}: {} merged profiles, {} rejected by limits, {} held, {} revoked",
        thousands(report.edges),
        thousands(report.edges_merged),
        thousands(report.edges_rejected),
        thousands(report.edges_held),
        thousands(report.edges_revoked)
    );
    let would = if report.dry_run {
        "would change"
    } else {
        "changed"
    };
    println!(
        "  identifiers {} ({} new), profiles {}; {would}: {} merges, {} splits, {} moves, {} identifiers moved",
        thousands(report.identifiers),
        thousands(report.new_identifiers),
        thousands(report.profiles),
        thousands(report.merges),
        thousands(report.splits),
        thousands(report.moves),
        thousands(report.identifiers_moved)
    );
    if !report.blocked.is_empty() {
        println!(
            "  ALERT: {} identifier value(s) blocked (they would fuse people; their edges are held, see blocked_values):",
            report.blocked.len()
        );
        for b in report.blocked.iter().take(10) {
            println!("    {}:{}  {}", b.id_type, b.id_value, b.reason);
        }
    }
    if report.dry_run {
        for c in report.changes.iter().take(20) {
            println!(
                "  {:<6} {} -> {} ({} identifiers)",
                c.kind.as_str(),
                c.from,
                c.into,
                c.identifiers
            );
        }
        println!("  dry run: nothing was written");
    }
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
    let report = stitch_with(opened, args.full, args.dry_run, args.json).await?;
    let previews = match &report.predicted {
        Some(predicted) => segment_previews(opened, predicted).await?,
        None => Vec::new(),
    };
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if report.dry_run {
            value["segments"] = serde_json::to_value(&previews)?;
        }
        println!("{value}");
    } else {
        print_report(&report, started.elapsed().as_secs_f64());
        print_previews(&previews);
    }
    Ok(())
}

/// Who would enter and exit each segment over the identity map and profiles a dry run
/// predicts (scores and consent as they are now; a dry run does not re-score).
async fn segment_previews(opened: &Opened, predicted: &Predicted) -> anyhow::Result<Vec<Preview>> {
    let set = tessera_segments::SegmentSet::load(&opened.project.dir)?;
    if set.segments().is_empty() {
        return Ok(Vec::new());
    }
    let as_of = opened.project.config.segments.as_of_micros()?;
    Ok(tessera_segments::preview::preview(&opened.engine, &set, as_of, &predicted.tables).await?)
}

fn print_previews(previews: &[Preview]) {
    if previews.is_empty() {
        return;
    }
    println!("  segments (scores as they are now):");
    for p in previews {
        let sample = |ids: &[String]| {
            let mut s = ids.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if ids.len() > 3 {
                s.push_str(", ...");
            }
            s
        };
        let mut line = format!(
            "    {:<28} {:>10} members, would enter {}, exit {}",
            p.segment,
            thousands(p.members),
            thousands(p.entered.len() as u64),
            thousands(p.exited.len() as u64)
        );
        if !p.entered.is_empty() {
            line.push_str(&format!("; enter: {}", sample(&p.entered)));
        }
        if !p.exited.is_empty() {
            line.push_str(&format!("; exit: {}", sample(&p.exited)));
        }
        println!("{line}");
    }
}
