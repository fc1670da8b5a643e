//! `tessera match pairs|train|predict|explain|evaluate|review`: probabilistic matching of
//! records that share no exact identifier, as the project's `match.toml` says.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tessera_identity::fellegi_sunter::Model;
use tessera_identity::matching::{
    self, MatchSpec, Matcher, Metrics, PairExplanation, Prediction, SPEC_FILE, TrainReport,
};

use super::Opened;
use crate::output::thousands;
use crate::progress::Stages;

#[derive(Debug, Args)]
pub struct MatchArgs {
    #[command(subcommand)]
    pub command: MatchCommand,
    /// The matching spec (default: match.toml in the project).
    #[arg(long, global = true)]
    pub spec: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum MatchCommand {
    /// How many candidate pairs each blocking rule adds (nothing is compared).
    Pairs,
    /// Learn the model (u from random pairs, m by EM, the share of matches) and store it
    /// in `match_models`.
    Train,
    /// Score every candidate pair with the latest model; write `match_pairs` (matches
    /// and the review band) with clusters.
    Predict,
    /// Why two records score what they do, comparison by comparison.
    Explain {
        /// Id of one record.
        a: String,
        /// Id of the other.
        b: String,
    },
    /// The review band: the pairs awaiting a person's decision, best first; or record a
    /// decision (the next `tessera stitch` links accepted pairs and never rejected ones).
    Review {
        /// The two records are the same person: `--accept ID_L ID_R`.
        #[arg(long, num_args = 2, value_names = ["ID_L", "ID_R"], conflicts_with = "reject")]
        accept: Option<Vec<String>>,
        /// They are not: `--reject ID_L ID_R`.
        #[arg(long, num_args = 2, value_names = ["ID_L", "ID_R"])]
        reject: Option<Vec<String>>,
        /// How many pairs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Precision, recall and F1 of `match_pairs` against known matches.
    Evaluate {
        /// CSV with a header: two id columns (one matching pair per line), or `id,cluster`.
        #[arg(long)]
        truth: PathBuf,
        /// Probability from which a pair counts as a match (default: the spec's).
        #[arg(long)]
        threshold: Option<f64>,
    },
}

fn load_spec(opened: &Opened, path: Option<&PathBuf>) -> anyhow::Result<MatchSpec> {
    let path = path
        .cloned()
        .unwrap_or_else(|| opened.project.dir.join(SPEC_FILE));
    if !path.exists() {
        anyhow::bail!(
            "no matching spec at {}: write one (records, [[blocking]], [[comparison]]; see \
             ARCHITECTURE.md, \"Probabilistic matching\") or pass --spec FILE",
            path.display()
        );
    }
    Ok(MatchSpec::load(&path)?)
}

async fn open(opened: &Opened, spec: MatchSpec, stages: &Stages) -> anyhow::Result<Matcher> {
    stages.set("reading the records");
    Ok(Matcher::open(&opened.engine, &opened.project.dir, spec).await?)
}

/// `tessera match review`: lists the undecided pairs or records one decision.
async fn review(
    opened: &Opened,
    accept: Option<Vec<String>>,
    reject: Option<Vec<String>>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    use tessera_identity::matching::review::{self, Decision};
    let decided = match (accept, reject) {
        (Some(ids), _) => Some((ids, Decision::Accept)),
        (_, Some(ids)) => Some((ids, Decision::Reject)),
        _ => None,
    };
    if let Some((ids, decision)) = decided {
        let key = review::pair_key(&ids[0], &ids[1]);
        let pair = review::decide(&opened.engine, &key, decision, "tessera match review")
            .await
            .with_context(|| format!("deciding {} / {}", ids[0], ids[1]))?;
        if json {
            println!(
                "{}",
                serde_json::json!({"decision": decision.as_str(), "pair": pair})
            );
        } else {
            println!(
                "Recorded: {} {} / {} (probability {:.4}). The next `tessera stitch` applies it.",
                decision.as_str(),
                pair.id_l,
                pair.id_r,
                pair.probability
            );
        }
        return Ok(());
    }
    let (pairs, total) = review::queue(&opened.engine, limit, true).await?;
    if json {
        println!("{}", serde_json::json!({"total": total, "pairs": pairs}));
        return Ok(());
    }
    if pairs.is_empty() {
        println!("Nothing to review.");
        return Ok(());
    }
    println!(
        "{} pairs await a decision; the {} most likely:",
        thousands(total),
        pairs.len()
    );
    for p in &pairs {
        let terms: Vec<String> = p
            .terms
            .iter()
            .map(|t| format!("{} {} ({:+.2})", t.comparison, t.level, t.weight))
            .collect();
        println!(
            "  {:.4}  {}  {}\n          {}",
            p.probability,
            p.id_l,
            p.id_r,
            terms.join(", ")
        );
    }
    println!("Decide with `tessera match review --accept ID_L ID_R` or `--reject ID_L ID_R`.");
    Ok(())
}

pub async fn run(opened: &Opened, args: MatchArgs) -> anyhow::Result<()> {
    if let MatchCommand::Review {
        accept,
        reject,
        limit,
    } = args.command
    {
        return review(opened, accept, reject, limit, args.json).await;
    }
    let started = Instant::now();
    let spec = load_spec(opened, args.spec.as_ref())?;
    let stages = Stages::new(args.json);
    let out = run_command(opened, spec, &args, &stages, started).await;
    stages.finish();
    let text = out?;
    println!("{text}");
    Ok(())
}

async fn run_command(
    opened: &Opened,
    spec: MatchSpec,
    args: &MatchArgs,
    stages: &Stages,
    started: Instant,
) -> anyhow::Result<String> {
    let stage = |s: &str| stages.set(s);
    match &args.command {
        MatchCommand::Pairs => {
            let matcher = open(opened, spec, stages).await?;
            stages.set("counting candidate pairs");
            let counts = matcher.count_pairs().await?;
            let total: u64 = counts.iter().map(|c| c.1).sum();
            if args.json {
                return Ok(serde_json::json!({
                    "records": matcher.records(),
                    "all_pairs": matcher.all_pairs(),
                    "rules": counts.iter().map(|(r, n)| serde_json::json!({"rule": r, "pairs": n})).collect::<Vec<_>>(),
                    "candidate_pairs": total,
                })
                .to_string());
            }
            let mut s = format!(
                "{} records, {} possible pairs; blocking keeps {} ({:.4}%):\n",
                thousands(matcher.records()),
                thousands(matcher.all_pairs()),
                thousands(total),
                100.0 * total as f64 / matcher.all_pairs().max(1) as f64
            );
            for (rule, n) in &counts {
                s.push_str(&format!("  {rule:<28} {:>14} new pairs\n", thousands(*n)));
            }
            Ok(s.trim_end().to_owned())
        }
        MatchCommand::Train => {
            let matcher = open(opened, spec, stages).await?;
            let (model, report) = matcher.train(&stage).await?;
            stages.set("writing match_models");
            let ms = started.elapsed().as_millis() as i64;
            let version =
                matching::save_model(&opened.engine, &model, &report, ms, "tessera match train")
                    .await?;
            if args.json {
                return Ok(serde_json::json!({
                    "version": version,
                    "model": serde_json::from_str::<serde_json::Value>(&model.to_json())?,
                    "report": report,
                    "seconds": started.elapsed().as_secs_f64(),
                })
                .to_string());
            }
            Ok(train_text(&model, &report, version, started))
        }
        MatchCommand::Predict => {
            let (version, model) = matching::load_model(&opened.engine).await?;
            let matcher = open(opened, spec, stages).await?;
            let prediction = matcher.predict(&model, &stage).await?;
            stages.set("writing match_pairs");
            matcher
                .write_pairs(
                    &opened.engine,
                    &model,
                    &prediction,
                    version,
                    "tessera match predict",
                )
                .await?;
            let (clusters, largest) = prediction.cluster_sizes();
            if args.json {
                return Ok(serde_json::json!({
                    "model_version": version,
                    "records": matcher.records(),
                    "candidate_pairs": prediction.candidates,
                    "matches": prediction.matches(),
                    "review": prediction.in_review(),
                    "clusters": clusters,
                    "largest_cluster": largest,
                    "seconds": started.elapsed().as_secs_f64(),
                })
                .to_string());
            }
            Ok(predict_text(
                &prediction,
                version,
                matcher.records(),
                started,
            ))
        }
        MatchCommand::Explain { a, b } => {
            let (_, model) = matching::load_model(&opened.engine).await?;
            let matcher = open(opened, spec, stages).await?;
            stages.set("comparing");
            let why = matcher.explain(&model, a, b).await?;
            if args.json {
                return Ok(serde_json::to_string(&why)?);
            }
            Ok(explain_text(&why))
        }
        MatchCommand::Review { .. } => unreachable!("answered above"),
        MatchCommand::Evaluate { truth, threshold } => {
            let known = matching::read_truth(truth)
                .with_context(|| format!("reading the known matches {}", truth.display()))?;
            let scored = matching::stored_pairs(&opened.engine).await?;
            let chosen = threshold.unwrap_or(spec.predict.threshold);
            if !(chosen > 0.0 && chosen < 1.0) {
                anyhow::bail!("--threshold must be in (0, 1), not {chosen}");
            }
            let main = matching::evaluate(&scored, &known, chosen);
            let decided = matching::evaluate(
                &matching::stored_decisions(&opened.engine).await?,
                &known,
                1.0,
            );
            let sweep: Vec<Metrics> = [0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
                .into_iter()
                .filter(|t| *t >= spec.predict.review)
                .map(|t| matching::evaluate(&scored, &known, t))
                .collect();
            if args.json {
                return Ok(
                    serde_json::json!({ "metrics": main, "decided": decided, "by_threshold": sweep })
                        .to_string(),
                );
            }
            let mut s = format!(
                "At probability >= {chosen}: precision {:.4}, recall {:.4}, F1 {:.4} \
                 ({} predicted, {} known, {} both)\n",
                main.precision,
                main.recall,
                main.f1,
                thousands(main.predicted),
                thousands(main.truth),
                thousands(main.true_positives)
            );
            s.push_str(&format!(
                "  decided matches (match_pairs.decision): precision {:.4}, recall {:.4}, F1 {:.4}\n\n  threshold  precision  recall      F1\n",
                decided.precision, decided.recall, decided.f1
            ));
            for m in &sweep {
                s.push_str(&format!(
                    "  {:>9}  {:>9.4}  {:>6.4}  {:>6.4}\n",
                    m.threshold, m.precision, m.recall, m.f1
                ));
            }
            Ok(s.trim_end().to_owned())
        }
    }
}

fn train_text(model: &Model, report: &TrainReport, version: i64, started: Instant) -> String {
    let mut s = format!(
        "Trained match model version {version} on {} records in {:.1} s\n  candidate pairs: {} ({})\n  u: exact from value counts for {}; from {} random pairs for the others\n",
        thousands(report.records),
        started.elapsed().as_secs_f64(),
        thousands(report.candidates()),
        report
            .candidate_pairs
            .iter()
            .map(|(r, n)| format!("{r} {}", thousands(*n)))
            .collect::<Vec<_>>()
            .join(", "),
        if report.u_exact.is_empty() {
            "none".to_owned()
        } else {
            report.u_exact.join(", ")
        },
        thousands(report.random_pairs),
    );
    for session in &report.sessions {
        s.push_str(&format!(
            "  EM on {} ({} pairs): m of {} in {} iterations{}\n",
            session.rule,
            thousands(session.pairs),
            if session.trained.is_empty() {
                "nothing".to_owned()
            } else {
                session.trained.join(", ")
            },
            session.iterations,
            if session.converged {
                ""
            } else {
                " (not converged)"
            }
        ));
    }
    if !report.untrained.is_empty() {
        s.push_str(&format!(
            "  warning: every blocking rule reads {}: their m stays at the starting guess; \
             add a rule that does not read them\n",
            report.untrained.join(", ")
        ));
    }
    s.push_str(&format!(
        "  time: {}\n",
        report
            .stages
            .iter()
            .map(|(n, t)| format!("{n} {t:.2}s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s.push_str(&format!(
        "  share of matches among all pairs: {:.3e} (about {} matches among the candidates)\n\n",
        model.lambda,
        thousands(report.expected_matches.round() as u64)
    ));
    s.push_str("  comparison      level                          m         u    weight\n");
    for c in &model.comparisons {
        for (l, label) in c.levels.iter().enumerate().rev() {
            s.push_str(&format!(
                "  {:<15} {:<26} {:>9.4} {:>9.5} {:>+9.2}\n",
                if l + 1 == c.levels.len() {
                    c.name.as_str()
                } else {
                    ""
                },
                label,
                c.m[l],
                c.u[l],
                c.weight(l as u8)
            ));
        }
    }
    s.trim_end().to_owned()
}

fn predict_text(p: &Prediction, version: i64, records: u64, started: Instant) -> String {
    let (clusters, largest) = p.cluster_sizes();
    let mut s = format!(
        "Scored {} candidate pairs of {} records with model version {version} in {:.1} s\n  \
         matches (p >= {}): {}, in {} clusters (largest {largest})\n  review (p >= {}): {}\n  \
         written to match_pairs",
        thousands(p.candidates),
        thousands(records),
        started.elapsed().as_secs_f64(),
        p.threshold,
        thousands(p.matches() as u64),
        thousands(clusters as u64),
        p.review,
        thousands(p.in_review() as u64),
    );
    let review: Vec<_> = p
        .pairs
        .iter()
        .filter(|x| x.probability < p.threshold)
        .take(5)
        .collect();
    if !review.is_empty() {
        s.push_str("\n  to review first (tessera match explain A B says why):");
        for x in review {
            s.push_str(&format!(
                "\n    {} {}  p = {:.3}",
                x.id_l, x.id_r, x.probability
            ));
        }
    }
    s
}

fn explain_text(why: &PairExplanation) -> String {
    let mut s = format!(
        "{} and {}: {} (probability {:.4}, match weight {:+.2})\n  prior (share of matches)                     {:+.2}\n",
        why.id_l, why.id_r, why.decision, why.probability, why.weight, why.prior_weight
    );
    for t in &why.terms {
        s.push_str(&format!(
            "  {:<15} {:<28} {:+.2}   {:?} / {:?}\n",
            t.comparison,
            t.level,
            t.weight,
            t.left.as_deref().unwrap_or("-"),
            t.right.as_deref().unwrap_or("-")
        ));
    }
    s.trim_end().to_owned()
}
