//! `tessera activate run [SYNC...] | plan | status | retry [SYNC] | resend SYNC | preview SYNC`: send segments
//! to their destinations (`[syncs.NAME]`, `[destinations.NAME]` of tessera.toml).

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tessera_activate::{Activation, status};
use tessera_core::config::parse_duration;

use super::Opened;
use crate::output::thousands;

#[derive(Debug, Args)]
pub struct ActivateArgs {
    #[command(subcommand)]
    pub command: ActivateCommand,
}

#[derive(Debug, Subcommand)]
pub enum ActivateCommand {
    /// Plan the next run of each sync (all, or those named) and deliver what is due.
    Run {
        names: Vec<String>,
        /// Keep retrying failed batches for this long before returning ("0" to return
        /// after the first attempts; `tessera serve` retries in the background).
        #[arg(long, default_value = "60s")]
        wait: String,
        /// Release held mirror runs of the named syncs (an audience that shrank below
        /// `min_ratio`) and send them.
        #[arg(long)]
        confirm: bool,
        #[arg(long)]
        json: bool,
    },
    /// How values are normalized (and hashed) for an ad platform: one value per line
    /// on standard input, one JSON line out each (`normalized` null when unusable).
    Normalize {
        /// `google` or `meta`.
        #[arg(long)]
        platform: String,
        /// email, phone, first_name, last_name, country, zip or external_id.
        #[arg(long)]
        key: String,
        /// The region national phone numbers are read in (and zips' country).
        #[arg(long)]
        region: Option<String>,
    },
    /// Plan the next run of each sync (all, or those named) into the ledger without
    /// sending anything (`tessera serve` or `tessera activate run` delivers it).
    Plan {
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every sync's runs and batches: planned, retrying, delivered, dead, held.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Send the dead batches of a sync (all syncs without a name) again, with their
    /// members' current traits.
    Retry { sync: Option<String> },
    /// Send a delivered run of a sync again as it was planned (the same batch ids and
    /// message ids, so receivers deduplicate; a file destination rewrites the same
    /// objects): the latest delivered run, or `--run N`.
    Resend {
        sync: String,
        #[arg(long)]
        run: Option<i64>,
    },
    /// What the next run of a sync would send; nothing is written or sent.
    Preview {
        sync: String,
        /// Events to show.
        #[arg(long, default_value_t = 3)]
        limit: usize,
    },
}

fn activation(opened: &Opened) -> anyhow::Result<Activation> {
    Ok(Activation::new(
        &opened.engine,
        &opened.project,
        &|v| std::env::var(v).ok(),
        "tessera activate",
    )?)
}

fn micros_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

pub async fn run(opened: &Opened, args: ActivateArgs) -> anyhow::Result<()> {
    match args.command {
        ActivateCommand::Run {
            names,
            wait,
            confirm,
            json,
        } => {
            let wait: Duration = parse_duration(&wait)
                .map_err(anyhow::Error::msg)
                .context("--wait")?;
            let a = activation(opened)?;
            if a.is_empty() {
                println!("No syncs: add [destinations.NAME] and [syncs.NAME] to tessera.toml.");
                return Ok(());
            }
            if confirm {
                anyhow::ensure!(!names.is_empty(), "--confirm names the syncs to release");
                for n in &names {
                    let released = a.confirm(&opened.engine, n).await?;
                    eprintln!("{n}: released {released} held batches");
                }
            }
            let started = std::time::Instant::now();
            let planned = a.plan(&opened.engine, &names, false).await?;
            let delivered = a.deliver(&opened.engine, wait).await?;
            if json {
                let out = serde_json::json!({
                    "planned": planned.iter().map(|p| serde_json::json!({
                        "sync": p.sync,
                        "run": p.plan.as_ref().map(|x| x.run),
                        "from_version": p.plan.as_ref().map(|x| x.from_version),
                        "to_version": p.plan.as_ref().map(|x| x.to_version),
                        "members": p.plan.as_ref().map(|x| x.members()),
                        "batches": p.plan.as_ref().map(|x| x.batches.len()),
                        "skipped": p.plan.as_ref().map(|x| x.skipped),
                        "held": p.plan.as_ref().is_some_and(|x| x.held),
                        "written": p.written,
                    })).collect::<Vec<_>>(),
                    "delivered": delivered.iter().map(|d| serde_json::json!({
                        "destination": d.destination,
                        "batches": d.batches,
                        "members": d.members,
                        "attempts": d.attempts,
                        "retries": d.retries,
                        "dead": d.dead,
                        "pending": d.pending,
                    })).collect::<Vec<_>>(),
                });
                println!("{out}");
                return Ok(());
            }
            for p in &planned {
                match &p.plan {
                    None => println!("{}: up to date (no newer refresh of its segment)", p.sync),
                    Some(x) if x.held => println!(
                        "{}: run {} HELD: the audience would shrink from {} to {} (below min_ratio); release with `tessera activate run {} --confirm`",
                        p.sync,
                        x.run,
                        thousands(x.previous_size.unwrap_or(0) as u64),
                        thousands(x.size as u64),
                        p.sync
                    ),
                    Some(x) => println!(
                        "{}: run {} planned, refresh versions {}..={}: {} changes in {} batches{}",
                        p.sync,
                        x.run,
                        x.from_version + 1,
                        x.to_version,
                        thousands(x.members() as u64),
                        x.batches.len(),
                        if x.skipped > 0 {
                            format!(", {} left out for want of consent", thousands(x.skipped))
                        } else {
                            String::new()
                        }
                    ),
                }
            }
            for d in &delivered {
                println!(
                    "{}: {} batches delivered ({} members), {} attempts, {} retries, {} dead, {} waiting for a retry",
                    d.destination,
                    d.batches,
                    thousands(d.members),
                    d.attempts,
                    d.retries,
                    d.dead,
                    d.pending
                );
            }
            println!("({:.1} s)", started.elapsed().as_secs_f64());
            Ok(())
        }
        ActivateCommand::Status { json } => {
            let rows = status(&opened.engine).await?;
            if json {
                for s in &rows {
                    println!(
                        "{}",
                        serde_json::json!({
                            "sync": s.sync, "destination": s.destination, "segment": s.segment,
                            "run": s.run, "to_version": s.to_version, "planned": s.planned,
                            "retrying": s.retrying, "delivered": s.delivered, "dead": s.dead,
                            "held": s.held, "members_delivered": s.members_delivered,
                            "skipped": s.skipped, "last_error": s.last_error,
                        })
                    );
                }
                return Ok(());
            }
            if rows.is_empty() {
                println!("Nothing planned yet: tessera activate run");
                return Ok(());
            }
            for s in &rows {
                println!(
                    "{} ({} → {}): run {} at refresh {}: {} delivered ({} members), {} planned, {} retrying, {} dead, {} held{}{}",
                    s.sync,
                    s.segment,
                    s.destination,
                    s.run,
                    s.to_version,
                    s.delivered,
                    thousands(s.members_delivered),
                    s.planned,
                    s.retrying,
                    s.dead,
                    s.held,
                    s.last_attempt_at
                        .map(|t| format!("; last attempt {}", micros_text(t)))
                        .unwrap_or_default(),
                    s.last_error
                        .as_ref()
                        .map(|e| format!("; last failure: {e}"))
                        .unwrap_or_default(),
                );
            }
            Ok(())
        }
        ActivateCommand::Retry { sync } => {
            let a = activation(opened)?;
            let n = a.retry(&opened.engine, sync.as_deref()).await?;
            println!(
                "{n} dead batches planned again; `tessera activate run` or `tessera serve` sends them"
            );
            Ok(())
        }
        ActivateCommand::Normalize {
            platform,
            key,
            region,
        } => {
            use std::io::{BufRead as _, Write as _};
            let p = tessera_activate::ads::Platform::parse(&platform)
                .with_context(|| format!("--platform {platform:?}: expected google or meta"))?;
            let stdin = std::io::stdin();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for line in stdin.lock().lines() {
                let value = line?;
                let normalized =
                    tessera_activate::ads::normalize(p, &key, &value, region.as_deref())
                        .map_err(anyhow::Error::msg)
                        .context("--key")?;
                let sha = normalized.as_deref().map(tessera_activate::ads::sha256_hex);
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"value": value, "normalized": normalized, "sha256": sha})
                )?;
            }
            out.flush()?;
            Ok(())
        }
        ActivateCommand::Plan { names, json } => {
            let a = activation(opened)?;
            let planned = a.plan(&opened.engine, &names, false).await?;
            for p in &planned {
                let members = p.plan.as_ref().map_or(0, |x| x.members());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "sync": p.sync,
                            "run": p.plan.as_ref().map(|x| x.run),
                            "members": members,
                            "batches": p.plan.as_ref().map(|x| x.batches.len()),
                            "held": p.plan.as_ref().is_some_and(|x| x.held),
                            "written": p.written,
                        })
                    );
                } else if let Some(x) = &p.plan {
                    println!(
                        "{}: run {} planned: {} changes in {} batches{}",
                        p.sync,
                        x.run,
                        thousands(members as u64),
                        x.batches.len(),
                        if x.held { " (HELD)" } else { "" }
                    );
                } else {
                    println!("{}: up to date (no newer refresh of its segment)", p.sync);
                }
            }
            Ok(())
        }
        ActivateCommand::Resend { sync, run } => {
            let a = activation(opened)?;
            let n = a.resend(&opened.engine, &sync, run).await?;
            if n == 0 {
                println!("{sync}: no delivered run to send again");
            } else {
                println!(
                    "{sync}: {n} batches planned again as they were; `tessera activate run` or `tessera serve` sends them"
                );
            }
            Ok(())
        }
        ActivateCommand::Preview { sync, limit } => {
            let a = activation(opened)?;
            let Some(p) = a.preview(&opened.engine, &sync).await? else {
                println!("{sync}: up to date (no newer refresh of its segment)");
                return Ok(());
            };
            println!(
                "{sync}: run {} would send refresh versions {}..={}: {} changes in {} batches to {}{}{}",
                p.run,
                p.from_version + 1,
                p.to_version,
                thousands(p.members() as u64),
                p.batches.len(),
                p.destination,
                if p.skipped > 0 {
                    format!(" ({} left out for want of consent)", thousands(p.skipped))
                } else {
                    String::new()
                },
                if p.held {
                    " — would be HELD (audience shrinks below min_ratio)"
                } else {
                    ""
                },
            );
            for m in p.batches.iter().flatten().take(limit) {
                let e = tessera_activate::webhook::event(
                    &sync,
                    &p.destination,
                    &p.segment,
                    m,
                    None,
                    None,
                );
                println!("{e}");
            }
            Ok(())
        }
    }
}
