//! `tessera predict [--model M]... [--calibration-end DATE] [--time-unit day|week]`

use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};
use tessera_core::config::{TimeUnit, parse_instant};
use tessera_predict::{Model, PredictOptions, Report, Status};

use super::Opened;
use crate::output::thousands;

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Fit only this model (repeatable): bgnbd, gamma_gamma, propensity, rfm. Default:
    /// all of them.
    #[arg(long = "model", value_name = "MODEL")]
    pub models: Vec<Model>,
    /// End of the calibration window (RFC 3339 or a date); defaults to
    /// [predict] calibration_end, else [segments] as_of, else now.
    #[arg(long)]
    pub calibration_end: Option<String>,
    /// Time unit of recency and age in the purchase models (default [predict]
    /// time_unit).
    #[arg(long)]
    pub time_unit: Option<TimeUnit>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Fits the models and writes their scores; returns the report.
pub async fn predict(opened: &Opened, args: &PredictArgs) -> anyhow::Result<Report> {
    let calibration_end_micros = args
        .calibration_end
        .as_deref()
        .map(|t| {
            parse_instant(t).with_context(|| {
                format!("--calibration-end {t:?} is not a time such as 2026-10-31T23:59:59Z or 2026-10-31")
            })
        })
        .transpose()?;
    Ok(tessera_predict::run::run(
        &opened.engine,
        &opened.project.dir,
        &opened.project.config.predict,
        &PredictOptions {
            models: args.models.clone(),
            calibration_end_micros,
            time_unit: args.time_unit,
            actor: "tessera predict".into(),
        },
    )
    .await?)
}

pub async fn run(opened: &Opened, args: PredictArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if !args.json {
        eprintln!("Fitting predictive models…");
    }
    let report = predict(opened, &args).await?;
    if args.json {
        println!("{}", report_json(&report));
    } else {
        print_report(&report, started.elapsed().as_secs_f64());
    }
    let failed: Vec<&str> = report
        .runs
        .iter()
        .filter(|r| r.status == Status::NotConverged)
        .map(|r| r.model.name())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} did not converge: no scores written for {}",
            failed.join(", "),
            if failed.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

fn time_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(
        || micros.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

pub fn report_json(report: &Report) -> Value {
    json!({
        "calibration_end": time_text(report.calibration_end_micros),
        "time_unit": report.time_unit.name(),
        "data_quality": report.quality,
        "models": report.runs.iter().map(|r| json!({
            "model": r.model.name(),
            "version": r.version,
            "status": r.status.name(),
            "message": r.message,
            "customers": r.customers,
            "scored": r.scored,
            "parameters": r.parameters,
            "log_likelihood": r.fit.map(|f| f.log_likelihood),
            "iterations": r.fit.map(|f| f.iterations),
            "converged": r.fit.map(|f| f.converged),
            "metrics": r.metrics,
            "duration_ms": r.duration_ms,
        })).collect::<Vec<_>>(),
    })
}

fn number(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| v.to_string(), |f| format!("{f:.4}"))
}

pub fn print_report(report: &Report, seconds: f64) {
    let q = &report.quality;
    println!(
        "Calibration window ends {} (time unit: {}); {} orders, {} customers",
        time_text(report.calibration_end_micros),
        report.time_unit.name(),
        thousands(q.orders),
        thousands(q.customers)
    );
    let rules = [
        (
            q.unattributed,
            "orders without a profile (not stitched): left out",
        ),
        (
            q.after_calibration_end,
            "orders after the calibration end: outside the window",
        ),
        (q.in_the_future, "orders dated in the future: left out"),
        (
            q.negative_revenue,
            "orders with a negative revenue (refunds): not purchases",
        ),
        (
            q.missing_revenue,
            "orders without a numeric revenue: purchases with no spend",
        ),
        (
            q.zero_revenue,
            "orders with revenue 0: purchases with no spend",
        ),
        (
            q.single_purchase,
            "customers with one purchase day: population mean spend",
        ),
        (
            q.repeat_without_spend,
            "repeat buyers with no positive spend: population mean spend",
        ),
        (q.non_finite_scores, "scores not finite: not written"),
    ];
    for (count, rule) in rules {
        if count > 0 {
            println!("  {:>10}  {rule}", thousands(count));
        }
    }
    for r in &report.runs {
        let params = r
            .parameters
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.is_number())
                    .map(|(k, v)| format!("{k}={}", number(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        match r.status {
            Status::Written => {
                let fit = r.fit.map_or_else(String::new, |f| {
                    format!(
                        "; log-likelihood {:.2}, {} iterations, converged",
                        f.log_likelihood, f.iterations
                    )
                });
                println!(
                    "{:<12} v{}: {} profiles scored from {} rows{fit}",
                    r.model.name(),
                    r.version,
                    thousands(r.scored),
                    thousands(r.customers)
                );
                if r.model != Model::Propensity && !params.is_empty() {
                    println!("             {params}");
                }
                if let Some(auc) = r.metrics.get("holdout_auc").and_then(Value::as_f64) {
                    println!(
                        "             holdout AUC {auc:.3}, Brier {}, base rate {}, mean predicted {}",
                        number(&r.metrics["holdout_brier"]),
                        number(&r.metrics["holdout_base_rate"]),
                        number(&r.metrics["holdout_mean_predicted"])
                    );
                }
            }
            Status::NotConverged | Status::NoData => println!(
                "{:<12} v{}: {} — {}",
                r.model.name(),
                r.version,
                r.status.name(),
                r.message.as_deref().unwrap_or("")
            ),
        }
    }
    println!(
        "Done in {seconds:.1} s. Scores are in `scores` and, one column each, in the `profile_scores` view:\n  tessera sql \"SELECT * FROM profile_scores WHERE p_alive < 0.3 ORDER BY clv_12m DESC LIMIT 10\""
    );
}
