//! `tessera privacy erase | export | list | suppress | unsuppress | resume`: the
//! data-subject operations of `tessera_privacy`.

use clap::{Args, Subcommand};
use tessera_privacy::{EraseOptions, Subject, requests, suppress};

use super::Opened;
use crate::output::thousands;

#[derive(Debug, Args)]
pub struct PrivacyArgs {
    #[command(subcommand)]
    pub command: PrivacyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Erase people (TYPE:VALUE, e.g. email:jane@example.com) — their whole identity
    /// cluster: every row of every table, the old files and log entries that held them —
    /// and put their identifiers on the suppression list.
    Erase {
        #[arg(required = true, value_name = "TYPE:VALUE")]
        subjects: Vec<String>,
        /// Why (kept with the request).
        #[arg(long)]
        reason: Option<String>,
        /// Count what would be erased; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Erase without suppressing later events of these identifiers.
        #[arg(long)]
        no_suppress: bool,
        #[arg(long)]
        json: bool,
    },
    /// Export everything held about a person into a folder: bundle.json and one Parquet
    /// file per table.
    Export {
        #[arg(required = true, value_name = "TYPE:VALUE")]
        subjects: Vec<String>,
        /// The folder (new or empty) or object-store URL (`s3://bucket/prefix`, nothing
        /// stored under it yet) to write.
        #[arg(long, value_name = "DIR|URL")]
        out: String,
        #[arg(long)]
        json: bool,
    },
    /// Every privacy request: kind, state, days left of its 30.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop storing events that carry these identifiers (they are acknowledged and
    /// dropped), without erasing anything.
    Suppress {
        #[arg(required = true, value_name = "TYPE:VALUE")]
        subjects: Vec<String>,
    },
    /// Store new events of these identifiers again (what was erased stays erased).
    Unsuppress {
        #[arg(required = true, value_name = "TYPE:VALUE")]
        subjects: Vec<String>,
    },
    /// Finish every erasure that stopped before its end (a crash, a killed process).
    Resume {
        #[arg(long)]
        json: bool,
    },
}

const ACTOR: &str = "tessera privacy";

pub async fn run(opened: &Opened, args: PrivacyArgs) -> anyhow::Result<()> {
    let engine = &opened.engine;
    match args.command {
        PrivacyCommand::Erase {
            subjects,
            reason,
            dry_run,
            no_suppress,
            json,
        } => {
            let options = EraseOptions {
                reason,
                dry_run,
                suppress: !no_suppress,
                actor: ACTOR.into(),
                settle: opened.project.config.server.erasure_settle(),
                exports: file_exports(&opened.project)?,
            };
            let mut options = options;
            let held = if dry_run {
                None
            } else {
                commit_stopped_wal(opened).await?
            };
            if held.is_some() {
                // No collector can run on this log meanwhile: nothing to wait for.
                options.settle = std::time::Duration::ZERO;
            }
            let report = tessera_privacy::erase(engine, &subjects, &options).await?;
            drop(held);
            print_erasure(&report, json);
        }
        PrivacyCommand::Resume { json } => {
            let held = commit_stopped_wal(opened).await?;
            let reports = tessera_privacy::resume(
                engine,
                &EraseOptions {
                    actor: ACTOR.into(),
                    settle: if held.is_some() {
                        std::time::Duration::ZERO
                    } else {
                        opened.project.config.server.erasure_settle()
                    },
                    exports: file_exports(&opened.project)?,
                    ..EraseOptions::default()
                },
            )
            .await?;
            drop(held);
            if reports.is_empty() && !json {
                println!("No erasure left unfinished.");
            }
            for r in &reports {
                print_erasure(r, json);
            }
        }
        PrivacyCommand::Export {
            subjects,
            out,
            json,
        } => {
            let report = tessera_privacy::export(engine, &subjects, &out, ACTOR).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "Exported {} rows about {} profile(s) to {} (request {})",
                    thousands(report.counts.values().sum()),
                    report.profiles.len(),
                    report.out,
                    report.request_id
                );
                for (table, rows) in &report.counts {
                    println!("  {table:<22} {:>10}", thousands(*rows));
                }
            }
        }
        PrivacyCommand::List { json } => {
            let list = requests::list(engine).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            if list.is_empty() {
                println!("No privacy requests.");
                return Ok(());
            }
            let now = chrono::Utc::now().timestamp_micros();
            println!(
                "{:<20} {:<10} {:<9} {:<20} {:>9} {:>9}",
                "request", "kind", "state", "received", "subjects", "days left"
            );
            for r in list {
                let received = chrono::DateTime::from_timestamp_micros(r.received_at)
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                let left = if r.is_done() {
                    "-".to_owned()
                } else {
                    r.days_left(now).to_string()
                };
                println!(
                    "{:<20} {:<10} {:<9} {:<20} {:>9} {:>9}",
                    r.request_id,
                    r.kind,
                    r.state,
                    received,
                    r.subjects.as_array().map_or(0, |a| a.len()),
                    left
                );
                if let Some(e) = &r.error {
                    println!("    error: {e}");
                }
            }
        }
        PrivacyCommand::Suppress { subjects } => set_suppression(opened, &subjects, true).await?,
        PrivacyCommand::Unsuppress { subjects } => {
            set_suppression(opened, &subjects, false).await?
        }
    }
    Ok(())
}

async fn set_suppression(
    opened: &Opened,
    subjects: &[String],
    suppressing: bool,
) -> anyhow::Result<()> {
    let engine = &opened.engine;
    let parsed: Vec<Subject> = subjects
        .iter()
        .map(|s| Subject::parse(s))
        .collect::<Result<_, _>>()?;
    let hashes = suppress::hashes_of(&suppress::hasher(engine).await?, &parsed);
    if hashes.is_empty() {
        anyhow::bail!(
            "profile ids cannot be suppressed: name the identifiers (email:, user_id:, \
             anonymous_id:, phone:) whose events should not be stored"
        );
    }
    let (kind, state) = if suppressing {
        ("suppress", "suppressed")
    } else {
        ("unsuppress", "unsuppressed")
    };
    let request = requests::Request::received(kind, &hashes, Vec::new(), None, ACTOR)?;
    requests::record(engine, &request).await?;
    let n = suppress::set_state(engine, &hashes, state, Some(&request.request_id), ACTOR).await?;
    requests::record(engine, &request.at_state("finished")).await?;
    if suppressing {
        println!(
            "{n} identifier(s) suppressed: their events are acknowledged and not stored \
             (tessera serve picks this up within seconds)"
        );
    } else {
        println!(
            "{n} identifier(s) unsuppressed: new events of them are stored again; what was \
             erased stays erased"
        );
    }
    Ok(())
}

fn print_erasure(report: &tessera_privacy::ErasureReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
        return;
    }
    for s in &report.unknown {
        println!(
            "No profile has {}:{} (its rows are still looked for)",
            s.id_type, s.value
        );
    }
    let verb = if report.dry_run {
        "Would erase"
    } else {
        "Erased"
    };
    println!(
        "{verb} {} rows of {} profile(s) ({} identifiers){}",
        thousands(report.rows()),
        report.profiles,
        report.identifiers,
        report
            .request_id
            .as_ref()
            .map(|r| format!(", request {r}"))
            .unwrap_or_default()
    );
    for t in &report.tables {
        if t.rows > 0 {
            println!("  {:<22} {:>10}", t.table, thousands(t.rows));
        }
    }
    if !report.dry_run {
        let files: usize = report.expunged.iter().map(|e| e.files).sum();
        let logs: usize = report.expunged.iter().map(|e| e.log_entries).sum();
        println!(
            "  {} old files and {} log entries removed from storage; versions before the \
             erasure can no longer be read",
            thousands(files as u64),
            thousands(logs as u64)
        );
        if report.suppressed > 0 {
            println!(
                "  {} identifier(s) on the suppression list (tessera privacy unsuppress to undo)",
                report.suppressed
            );
        }
    }
}

/// The project's file destinations, whose exports an erasure rewrites.
fn file_exports(
    project: &tessera_core::config::Project,
) -> anyhow::Result<Vec<(String, std::sync::Arc<tessera_activate::file::Target>)>> {
    Ok(
        tessera_activate::file::targets(&project.config.destinations, &project.dir)?
            .into_iter()
            .map(|(name, target)| (name, std::sync::Arc::new(target)))
            .collect(),
    )
}

/// Commits what a stopped server's write-ahead log still holds, so the erasure that
/// follows finds the people's acknowledged events in `events` and the log keeps none of
/// them: the log is replayed into the lake as `tessera serve` would at start, then its
/// segments are released (deleted). Returns the closed collector, which keeps the log
/// locked (no server can start collecting on it) until dropped. `None` when a running
/// server holds the log — its collector commits and releases within the erasure's
/// settle wait — or when there is no log folder.
async fn commit_stopped_wal(
    opened: &Opened,
) -> anyhow::Result<Option<std::sync::Arc<tessera_ingest::collector::Collector>>> {
    let wal = std::path::Path::new(&opened.project.config.server.wal_dir);
    if !opened.project.dir.join(wal).is_dir() {
        return Ok(None);
    }
    let config =
        super::serve::collector_config(opened, None, super::import::tracking_plans(opened)?)?;
    let dir = config.wal_dir.display().to_string();
    match tessera_ingest::collector::Collector::start(opened.engine.clone(), config).await {
        Ok(collector) => {
            let committed = collector.shutdown().await?;
            if committed > 0 {
                eprintln!("Committed {committed} events the write-ahead log {dir} still held.");
            }
            Ok(Some(collector))
        }
        Err(tessera_ingest::ImportError::Lake(tessera_lake::LakeError::WalInUse { .. })) => {
            Ok(None)
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("replaying the write-ahead log {dir}")))
        }
    }
}
