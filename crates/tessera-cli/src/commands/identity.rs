//! `tessera identity split PROFILE --identifier TYPE:VALUE | --edge A=B`

use clap::{Args, Subcommand};
use tessera_core::schema::{SCORES, SEGMENT_REFRESHES};
use tessera_identity::unmerge::{self, SplitTarget};

use super::Opened;
use crate::progress::Stages;

#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    pub command: IdentityCommand,
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Unmerge: revoke the evidence joining an identifier (or one edge) to a profile,
    /// re-resolve, and recompute traits, scores and segment memberships.
    Split {
        /// The profile: its id (p_…) or any identifier of it (TYPE:VALUE).
        profile: String,
        /// Split this identifier off (every applied edge joining it to the profile).
        #[arg(long, conflicts_with = "edge", required_unless_present = "edge")]
        identifier: Option<String>,
        /// Revoke one edge, TYPE:VALUE=TYPE:VALUE.
        #[arg(long)]
        edge: Option<String>,
        /// Why (kept in identity_revocations).
        #[arg(long)]
        reason: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(opened: &Opened, args: IdentityArgs) -> anyhow::Result<()> {
    match args.command {
        IdentityCommand::Split {
            profile,
            identifier,
            edge,
            reason,
            json,
        } => {
            let target = match (identifier, edge) {
                (Some(i), _) => SplitTarget::Identifier(i),
                (None, Some(e)) => {
                    let Some((x, y)) = e.split_once('=') else {
                        anyhow::bail!(
                            "--edge {e:?} is not TYPE:VALUE=TYPE:VALUE \
                             (for example user_id:u1=crm_id:C7)"
                        );
                    };
                    SplitTarget::Edge(x.to_owned(), y.to_owned())
                }
                (None, None) => anyhow::bail!("give --identifier TYPE:VALUE or --edge A=B"),
            };
            let stages = Stages::new(json);
            let report = unmerge::split(
                &opened.engine,
                &opened.project.dir,
                &opened.project.config.identity,
                &profile,
                &target,
                reason.as_deref(),
                "tessera identity split",
                &stages,
            )
            .await;
            stages.finish();
            let report = report?;
            // What depends on the profiles: scores (when models ran) and segments.
            let lake = &opened.lake;
            let scored = lake.exists(SCORES).await? && lake.stats(SCORES).await?.rows > 0;
            let predicted = if scored {
                Some(
                    super::predict::predict(
                        opened,
                        &super::predict::PredictArgs {
                            models: vec![],
                            calibration_end: None,
                            time_unit: None,
                            json: true,
                        },
                    )
                    .await?,
                )
            } else {
                None
            };
            let segmented = lake.exists(SEGMENT_REFRESHES).await?
                && lake.stats(SEGMENT_REFRESHES).await?.rows > 0;
            let refreshed = if segmented {
                let as_of = opened.project.config.segments.as_of_micros()?;
                Some(
                    super::segments::refresh(
                        opened,
                        vec![],
                        false,
                        as_of,
                        "tessera identity split",
                    )
                    .await?,
                )
            } else {
                None
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "split": report,
                        "scores": predicted.as_ref().map(super::predict::report_json),
                        "segments": refreshed.as_ref().map(super::segments::report_json),
                    })
                );
                return Ok(());
            }
            println!(
                "Revoked {} edge(s) of profile {}:",
                report.revoked.len(),
                report.profile_id
            );
            for [at, av, bt, bv] in &report.revoked {
                println!("  {at}:{av} = {bt}:{bv}");
            }
            if let Some(p) = &report.split_off {
                println!("The split-off part is profile {p}.");
            }
            println!(
                "Re-resolved: {} splits, {} moves, {} merges; {} profiles rebuilt.",
                report.stitch.splits,
                report.stitch.moves,
                report.stitch.merges,
                report.stitch.profiles_rebuilt
            );
            if let Some(p) = &predicted {
                super::predict::print_report(p, 0.0);
            }
            if let Some(r) = &refreshed {
                super::segments::print_report(r, 0.0);
            }
            Ok(())
        }
    }
}
