//! Running the models over the lake: `tessera predict`.
//!
//! 1. `sql/predict/orders.sql` finds the order events (who, when, revenue); the rules
//!    below turn them into `purchases`; `summary.sql` summarizes each profile's
//!    purchases in the calibration window (frequency, recency, age, spend) and
//!    `rfm.sql` scores it in quintiles. A project may edit any of these files; the
//!    defaults are used where it has none.
//! 2. The models are fitted in Rust ([`crate::bgnbd`], [`crate::gamma_gamma`],
//!    [`crate::logistic`]) and every profile scored.
//! 3. Each model's scores replace its partition of `scores` in one commit (readers see
//!    the previous fit or the new one, never a mix), and one row per model goes to
//!    `model_runs`. A fit that does not converge writes its `model_runs` row with
//!    status `not_converged` and no scores; the previous scores stay.
//!
//! Data rules, each counted in [`DataQuality`] and stored with every run:
//! - an order without a `profile_id` (identity not stitched) is left out;
//! - an order after the calibration end is left out of the window (it may be a
//!   propensity label); one dated after the time of the run is in the future and left
//!   out entirely;
//! - a negative revenue is a refund or correction, not a purchase: left out;
//! - a missing or zero revenue is a purchase that adds nothing to spend;
//! - several orders on one day are one purchase day (frequency counts days) whose
//!   spend is their sum;
//! - a one-purchase profile has frequency 0: the BG/NBD model scores it, the spend
//!   model uses the population's mean spend for it;
//! - a score that is not a finite number is not written (counted; none are expected).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use tessera_core::config::{PredictSection, TimeUnit};
use tessera_core::schema::{self, EVENTS, IDENTITY_MAP, MODEL_RUNS, SCORES};
use tessera_engine::Engine;
use tessera_lake::CommitNote;

use crate::error::{PredictError, Result};
use crate::{FitReport, bgnbd, gamma_gamma, logistic};

/// Folder of the model queries inside a project.
pub const PREDICT_DIR: &str = "sql/predict";

/// The model queries and their defaults (what `tessera init` writes).
pub const DEFAULT_SQL: &[(&str, &str)] = &[
    (
        "orders.sql",
        include_str!("../../../sql/predict/orders.sql"),
    ),
    (
        "summary.sql",
        include_str!("../../../sql/predict/summary.sql"),
    ),
    ("rfm.sql", include_str!("../../../sql/predict/rfm.sql")),
    (
        "features.sql",
        include_str!("../../../sql/predict/features.sql"),
    ),
];

/// Days of the short and long purchase horizons (`expected_purchases_30d`, `_90d`).
const HORIZONS_DAYS: [(f64, &str); 2] = [
    (30.0, "expected_purchases_30d"),
    (90.0, "expected_purchases_90d"),
];

/// Months of `clv_12m`.
const CLV_MONTHS: u32 = 12;

/// One model of `tessera predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Model {
    Rfm,
    Bgnbd,
    GammaGamma,
    Propensity,
}

impl Model {
    pub const ALL: [Model; 4] = [
        Model::Rfm,
        Model::Bgnbd,
        Model::GammaGamma,
        Model::Propensity,
    ];

    /// The name used in `scores.model`, `model_runs.model` and `--model`.
    pub fn name(self) -> &'static str {
        match self {
            Model::Rfm => "rfm",
            Model::Bgnbd => "bgnbd",
            Model::GammaGamma => "gamma_gamma",
            Model::Propensity => "propensity",
        }
    }
}

impl std::str::FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("unknown model {s:?}: choose bgnbd, gamma_gamma, propensity or rfm")
            })
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct PredictOptions {
    /// Models to fit; empty is all of them.
    pub models: Vec<Model>,
    /// End of the calibration window; `None` takes `[predict] calibration_end`, else
    /// the engine's `as_of`, else now.
    pub calibration_end_micros: Option<i64>,
    /// Overrides `[predict] time_unit`.
    pub time_unit: Option<TimeUnit>,
    /// Who runs it (recorded in the commits).
    pub actor: String,
}

/// Counts of the data rules (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DataQuality {
    /// Order events found.
    pub orders: u64,
    /// Orders without a profile (not stitched).
    pub unattributed: u64,
    /// Orders after the calibration end (outside the window).
    pub after_calibration_end: u64,
    /// Orders dated after the time of the run (left out entirely).
    pub in_the_future: u64,
    /// Orders without a numeric revenue (purchases with no spend).
    pub missing_revenue: u64,
    /// Orders with revenue 0 (purchases with no spend).
    pub zero_revenue: u64,
    /// Orders with a negative revenue (not purchases).
    pub negative_revenue: u64,
    /// Profiles with a purchase in the calibration window.
    pub customers: u64,
    /// Of those, profiles with a single purchase day (frequency 0).
    pub single_purchase: u64,
    /// Repeat buyers none of whose repeat days has a positive spend (population mean
    /// spend used).
    pub repeat_without_spend: u64,
    /// Scores left out because they were not finite numbers.
    pub non_finite_scores: u64,
}

/// How a model run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fitted and its scores written.
    Written,
    /// The fit did not converge: no scores written.
    NotConverged,
    /// Nothing to fit (no purchases, or one class only for propensity).
    NoData,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Written => "written",
            Status::NotConverged => "not_converged",
            Status::NoData => "no_data",
        }
    }
}

/// One model's run.
#[derive(Debug, Clone)]
pub struct ModelRun {
    pub model: Model,
    pub version: i64,
    pub status: Status,
    /// Why nothing was written, when that is the case.
    pub message: Option<String>,
    /// Rows the model was fitted on.
    pub customers: u64,
    /// Profiles scored.
    pub scored: u64,
    /// Fitted parameters, named as in the papers.
    pub parameters: Value,
    pub fit: Option<FitReport>,
    /// Quality on held-out data (propensity) and other facts of the fit.
    pub metrics: Value,
    pub duration_ms: u64,
}

/// What [`run`] did.
#[derive(Debug, Clone)]
pub struct Report {
    pub calibration_end_micros: i64,
    pub time_unit: TimeUnit,
    pub quality: DataQuality,
    pub runs: Vec<ModelRun>,
}

/// One profile's purchase summary (`summary.sql`).
#[derive(Debug, Clone)]
struct Summary {
    profile_id: String,
    frequency: f64,
    recency_days: f64,
    age_days: f64,
    monetary: Option<f64>,
}

/// Scores of one model: `(profile_id, score, value)`.
type Scores = Vec<(String, &'static str, f64)>;

/// Fits the requested models and writes their scores and runs.
pub async fn run(
    engine: &Engine,
    project_dir: &Path,
    config: &PredictSection,
    options: &PredictOptions,
) -> Result<Report> {
    let now = chrono::Utc::now().timestamp_micros();
    let calibration_end = match options.calibration_end_micros {
        Some(t) => t,
        None => config
            .calibration_end_micros()
            .map_err(|e| PredictError::Other(e.to_string()))?
            .or(engine.as_of_micros())
            .unwrap_or(now),
    };
    let time_unit = options.time_unit.unwrap_or(config.time_unit);
    let models: Vec<Model> = if options.models.is_empty() {
        Model::ALL.to_vec()
    } else {
        let mut m = options.models.clone();
        m.sort();
        m.dedup();
        m
    };
    let sql = Queries::load(project_dir)?;

    let ctx = engine.session().await?;
    if !ctx.table_exist("profile_events")? {
        return Err(PredictError::NotReady(
            "no profiles yet: the lake has no events or identities; run `tessera import` and `tessera stitch` first".into(),
        ));
    }
    let common = [
        ("order_event", Literal::Text(config.order_event.clone())),
        (
            "revenue_property",
            Literal::Text(config.revenue_property.clone()),
        ),
        ("calibration_end", Literal::Time(calibration_end)),
        ("now", Literal::Time(now)),
    ];
    // The orders are read by every step (quality counts, summary, labels): one scan of
    // the events, kept in memory (orders are a small part of the events).
    register_result(
        &ctx,
        "orders",
        &sql.bind("orders.sql", &common)?,
        "orders.sql",
    )
    .await?;
    ctx.sql(&format!(
        "CREATE VIEW purchases AS \
         SELECT profile_id, timestamp, CASE WHEN revenue > 0 THEN revenue END AS revenue \
         FROM orders \
         WHERE profile_id IS NOT NULL AND timestamp <= {} AND (revenue IS NULL OR revenue >= 0)",
        Literal::Time(now).sql()
    ))
    .await?;
    let mut quality = data_quality(&ctx, calibration_end, now).await?;

    // The summary is read by the models and by rfm.sql: computed once.
    let summary_batches = register_result(
        &ctx,
        "summary",
        &sql.bind("summary.sql", &common)?,
        "summary.sql",
    )
    .await?;
    let summary = read_summary(&summary_batches)?;
    quality.customers = summary.len() as u64;
    quality.single_purchase = summary.iter().filter(|s| s.frequency == 0.0).count() as u64;
    quality.repeat_without_spend = summary
        .iter()
        .filter(|s| s.frequency > 0.0 && s.monetary.is_none())
        .count() as u64;

    let versions = next_versions(&ctx).await?;
    let inputs = input_versions(engine).await?;
    let mut runs = Vec::new();
    let mut written: Vec<(Model, i64, Scores)> = Vec::new();
    let mut purchase_model: Option<(bgnbd::Params, FitReport)> = None;
    for model in models {
        let started = Instant::now();
        let version = versions.get(model.name()).copied().unwrap_or(1);
        let mut outcome = match model {
            Model::Rfm => rfm(&ctx, &sql, &summary).await?,
            Model::Bgnbd => {
                let fit = fit_purchases(&summary, time_unit, &mut purchase_model);
                bgnbd_scores(&summary, time_unit, fit)
            }
            Model::GammaGamma => {
                let fit = fit_purchases(&summary, time_unit, &mut purchase_model);
                spend_scores(&summary, time_unit, fit, config.monthly_discount_rate)
            }
            Model::Propensity => propensity(&ctx, &sql, &common, config, calibration_end).await?,
        };
        let before = outcome.scores.len();
        outcome.scores.retain(|(_, _, v)| v.is_finite());
        quality.non_finite_scores += (before - outcome.scores.len()) as u64;
        let scored = outcome
            .scores
            .iter()
            .map(|(p, _, _)| p.as_str())
            .collect::<HashSet<_>>()
            .len() as u64;
        runs.push(ModelRun {
            model,
            version,
            status: outcome.status,
            message: outcome.message,
            customers: outcome.customers,
            scored: if outcome.status == Status::Written {
                scored
            } else {
                0
            },
            parameters: outcome.parameters,
            fit: outcome.fit,
            metrics: outcome.metrics,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        if outcome.status == Status::Written {
            written.push((model, version, outcome.scores));
        }
    }

    // Scores first, then the runs that describe them.
    let lake = engine.lake();
    let trained_at = now;
    for (model, version, scores) in written {
        write_scores(lake, model, version, trained_at, scores, &options.actor).await?;
    }
    write_runs(
        lake,
        &runs,
        trained_at,
        calibration_end,
        time_unit,
        &quality,
        &inputs,
        &options.actor,
    )
    .await?;
    Ok(Report {
        calibration_end_micros: calibration_end,
        time_unit,
        quality,
        runs,
    })
}

/// What fitting one model produced.
struct Outcome {
    status: Status,
    message: Option<String>,
    customers: u64,
    parameters: Value,
    fit: Option<FitReport>,
    metrics: Value,
    scores: Scores,
}

impl Outcome {
    fn nothing(status: Status, message: String, customers: u64) -> Self {
        Outcome {
            status,
            message: Some(message),
            customers,
            parameters: json!({}),
            fit: None,
            metrics: json!({}),
            scores: Vec::new(),
        }
    }
}

/// The BG/NBD customer of a summary row, in `unit`s.
fn customer(s: &Summary, unit: TimeUnit) -> bgnbd::Customer {
    bgnbd::Customer {
        x: s.frequency,
        t_x: s.recency_days / unit.days(),
        t: s.age_days / unit.days(),
    }
}

/// The BG/NBD fit of this run (fitted once, shared by the purchase and spend models).
fn fit_purchases(
    summary: &[Summary],
    unit: TimeUnit,
    cache: &mut Option<(bgnbd::Params, FitReport)>,
) -> Option<(bgnbd::Params, FitReport)> {
    if summary.is_empty() {
        return None;
    }
    if cache.is_none() {
        let customers: Vec<bgnbd::Customer> = summary.iter().map(|s| customer(s, unit)).collect();
        *cache = Some(bgnbd::fit(&bgnbd::group(&customers)));
    }
    *cache
}

fn no_purchases() -> Outcome {
    Outcome::nothing(
        Status::NoData,
        "no purchases in the calibration window".into(),
        0,
    )
}

fn bgnbd_parameters(p: &bgnbd::Params) -> Value {
    json!({"r": p.r, "alpha": p.alpha, "a": p.a, "b": p.b})
}

fn not_converged(model: &str, report: &FitReport, customers: u64, parameters: Value) -> Outcome {
    Outcome {
        status: Status::NotConverged,
        message: Some(format!(
            "the {model} fit did not converge after {} iterations (log-likelihood {:.3}); no scores written, the previous ones are kept",
            report.iterations, report.log_likelihood
        )),
        customers,
        parameters,
        fit: Some(*report),
        metrics: json!({}),
        scores: Vec::new(),
    }
}

fn bgnbd_scores(
    summary: &[Summary],
    unit: TimeUnit,
    fit: Option<(bgnbd::Params, FitReport)>,
) -> Outcome {
    let Some((params, report)) = fit else {
        return no_purchases();
    };
    let customers = summary.len() as u64;
    if !report.converged {
        return not_converged("BG/NBD", &report, customers, bgnbd_parameters(&params));
    }
    // The model's predictions for everyone, on every core; then the rows.
    let predicted = crate::parallel_map(summary, |s| {
        let c = customer(s, unit);
        let horizons = HORIZONS_DAYS
            .map(|(days, _)| bgnbd::expected_purchases(&params, &c, days / unit.days()));
        (bgnbd::p_alive(&params, &c), horizons)
    });
    let mut scores = Vec::with_capacity(summary.len() * 7);
    for (s, (alive, horizons)) in summary.iter().zip(predicted) {
        scores.push((s.profile_id.clone(), "p_alive", alive));
        scores.push((s.profile_id.clone(), "churn_risk", 1.0 - alive));
        for ((_, name), value) in HORIZONS_DAYS.iter().zip(horizons) {
            scores.push((s.profile_id.clone(), *name, value));
        }
        // The summary the scores come from, in days whatever the model's unit.
        scores.push((s.profile_id.clone(), "purchase_frequency", s.frequency));
        scores.push((s.profile_id.clone(), "recency_days", s.recency_days));
        scores.push((s.profile_id.clone(), "age_days", s.age_days));
    }
    Outcome {
        status: Status::Written,
        message: None,
        customers,
        parameters: bgnbd_parameters(&params),
        fit: Some(report),
        metrics: json!({"time_unit": unit.name()}),
        scores,
    }
}

fn spend_scores(
    summary: &[Summary],
    unit: TimeUnit,
    fit: Option<(bgnbd::Params, FitReport)>,
    monthly_discount: f64,
) -> Outcome {
    let Some((purchases, purchase_report)) = fit else {
        return no_purchases();
    };
    if !purchase_report.converged {
        return not_converged(
            "BG/NBD (needed by gamma_gamma)",
            &purchase_report,
            summary.len() as u64,
            bgnbd_parameters(&purchases),
        );
    }
    let buyers: Vec<(f64, f64)> = summary
        .iter()
        .filter_map(|s| match s.monetary {
            Some(m) if s.frequency > 0.0 => Some((s.frequency, m)),
            _ => None,
        })
        .collect();
    if buyers.len() < 2 {
        return Outcome::nothing(
            Status::NoData,
            "fewer than two repeat buyers with a positive spend: the spend model cannot be fitted"
                .into(),
            buyers.len() as u64,
        );
    }
    let (params, report) = gamma_gamma::fit(&buyers);
    let mut parameters = json!({"p": params.p, "q": params.q, "gamma": params.gamma});
    parameters["bgnbd"] = bgnbd_parameters(&purchases);
    if !report.converged || params.q <= 1.0 {
        let mut outcome = not_converged("Gamma-Gamma", &report, buyers.len() as u64, parameters);
        if report.converged {
            outcome.message = Some(format!(
                "the Gamma-Gamma fit has q = {:.4} ≤ 1: the mean spend is infinite and no value can be scored",
                params.q
            ));
        }
        return outcome;
    }
    let units_per_month = match unit {
        TimeUnit::Day => 30.0,
        TimeUnit::Week => 4.345,
    };
    let predicted = crate::parallel_map(summary, |s| {
        let (x, m) = match s.monetary {
            Some(m) if s.frequency > 0.0 => (s.frequency, m),
            _ => (0.0, 0.0),
        };
        let spend = gamma_gamma::expected_average_value(&params, x, m);
        let clv = gamma_gamma::customer_lifetime_value(
            &purchases,
            &customer(s, unit),
            spend,
            CLV_MONTHS,
            monthly_discount,
            units_per_month,
        );
        (spend, clv)
    });
    let mut scores = Vec::with_capacity(summary.len() * 3);
    for (s, (spend, clv)) in summary.iter().zip(predicted) {
        if let Some(m) = s.monetary.filter(|_| s.frequency > 0.0) {
            scores.push((s.profile_id.clone(), "average_spend", m));
        }
        scores.push((s.profile_id.clone(), "expected_order_value", spend));
        scores.push((s.profile_id.clone(), "clv_12m", clv));
    }
    Outcome {
        status: Status::Written,
        message: None,
        customers: buyers.len() as u64,
        parameters,
        fit: Some(report),
        metrics: json!({
            "population_mean_spend": params.gamma * params.p / (params.q - 1.0),
            "clv_months": CLV_MONTHS,
            "monthly_discount_rate": monthly_discount,
        }),
        scores,
    }
}

async fn rfm(ctx: &SessionContext, sql: &Queries, summary: &[Summary]) -> Result<Outcome> {
    if summary.is_empty() {
        return Ok(no_purchases());
    }
    let batches = collect(ctx, &sql.bind("rfm.sql", &[])?, "rfm.sql").await?;
    let mut scores = Vec::new();
    for batch in &batches {
        let ids = text_column(batch, "profile_id", "rfm.sql")?;
        let columns = ["rfm_recency", "rfm_frequency", "rfm_monetary"]
            .map(|name| float_column(batch, name, "rfm.sql"));
        let [r, f, m] = columns;
        let (r, f, m) = (r?, f?, m?);
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                continue;
            }
            let id = ids.value(i).to_owned();
            let (rv, fv, mv) = (r.value(i), f.value(i), m.value(i));
            scores.push((id.clone(), "rfm_recency", rv));
            scores.push((id.clone(), "rfm_frequency", fv));
            scores.push((id.clone(), "rfm_monetary", mv));
            scores.push((id, "rfm_score", rv * 100.0 + fv * 10.0 + mv));
        }
    }
    Ok(Outcome {
        status: Status::Written,
        message: None,
        customers: summary.len() as u64,
        parameters: json!({"quintiles": 5}),
        fit: None,
        metrics: json!({}),
        scores,
    })
}

/// Features of every profile at `cutoff` (`features.sql`): ids, feature names, rows.
async fn features(
    ctx: &SessionContext,
    sql: &Queries,
    common: &[(&str, Literal)],
    cutoff: i64,
) -> Result<(Vec<String>, Vec<String>, Vec<Vec<f64>>)> {
    let mut params = common.to_vec();
    params.push(("cutoff", Literal::Time(cutoff)));
    let batches = collect(ctx, &sql.bind("features.sql", &params)?, "features.sql").await?;
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    let mut names = Vec::new();
    for batch in &batches {
        let schema = batch.schema();
        names = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != "profile_id")
            .collect();
        let id = text_column(batch, "profile_id", "features.sql")?;
        let columns = names
            .iter()
            .map(|n| float_column(batch, n, "features.sql"))
            .collect::<Result<Vec<_>>>()?;
        for i in 0..batch.num_rows() {
            if id.is_null(i) {
                continue;
            }
            ids.push(id.value(i).to_owned());
            rows.push(
                columns
                    .iter()
                    .map(|c| if c.is_null(i) { 0.0 } else { c.value(i) })
                    .map(|v| if v.is_finite() { v } else { 0.0 })
                    .collect(),
            );
        }
    }
    Ok((ids, names, rows))
}

/// Profiles with a purchase in `(from, to]`.
async fn buyers_between(ctx: &SessionContext, from: i64, to: i64) -> Result<HashSet<String>> {
    let batches = collect(
        ctx,
        &format!(
            "SELECT DISTINCT profile_id FROM purchases WHERE timestamp > {} AND timestamp <= {}",
            Literal::Time(from).sql(),
            Literal::Time(to).sql()
        ),
        "purchases",
    )
    .await?;
    let mut out = HashSet::new();
    for batch in &batches {
        let ids = text_column(batch, "profile_id", "purchases")?;
        out.extend(ids.iter().flatten().map(str::to_owned));
    }
    Ok(out)
}

const DAY_MICROS: i64 = 86_400_000_000;

/// Regularized logistic regression of "buys within the next N days": trained on the
/// features at `end − 2N` against purchases in `(end − 2N, end − N]`, judged on the
/// features at `end − N` against purchases in `(end − N, end]` (the holdout), then
/// refitted on the holdout period and applied to the features at `end`.
async fn propensity(
    ctx: &SessionContext,
    sql: &Queries,
    common: &[(&str, Literal)],
    config: &PredictSection,
    end: i64,
) -> Result<Outcome> {
    let window = i64::from(config.propensity_days) * DAY_MICROS;
    let (train_cutoff, holdout_cutoff) = (end - 2 * window, end - window);
    let labelled = |ids: &[String], buyers: &HashSet<String>| -> Vec<bool> {
        ids.iter().map(|id| buyers.contains(id)).collect()
    };
    let (train_ids, names, train_rows) = features(ctx, sql, common, train_cutoff).await?;
    let train_labels = labelled(
        &train_ids,
        &buyers_between(ctx, train_cutoff, holdout_cutoff).await?,
    );
    let (holdout_ids, _, holdout_rows) = features(ctx, sql, common, holdout_cutoff).await?;
    let holdout_labels = labelled(
        &holdout_ids,
        &buyers_between(ctx, holdout_cutoff, end).await?,
    );
    let positives = |labels: &[bool]| labels.iter().filter(|&&l| l).count();
    for (what, labels, cutoff) in [
        ("training", &train_labels, train_cutoff),
        ("holdout", &holdout_labels, holdout_cutoff),
    ] {
        let p = positives(labels);
        if p == 0 || p == labels.len() {
            return Ok(Outcome::nothing(
                Status::NoData,
                format!(
                    "the {what} period (profiles at {}, purchases in the {} days after) has {} profiles of whom {p} bought: both buyers and non-buyers are needed; propensity needs {} days of history before the calibration end",
                    micros_text(cutoff),
                    config.propensity_days,
                    labels.len(),
                    2 * config.propensity_days
                ),
                labels.len() as u64,
            ));
        }
    }
    let trained = logistic::fit(&train_rows, &train_labels, config.l2);
    let report = |m: &logistic::Model, rows: usize| FitReport {
        log_likelihood: -m.loss * rows as f64,
        iterations: m.iterations,
        converged: m.converged,
    };
    let parameters = |m: &logistic::Model| {
        let weights: serde_json::Map<String, Value> = names
            .iter()
            .zip(&m.weights)
            .zip(&m.scales)
            .map(|((n, w), s)| (n.clone(), json!(w / s)))
            .collect();
        let standardized: serde_json::Map<String, Value> = names
            .iter()
            .zip(&m.weights)
            .map(|(n, w)| (n.clone(), json!(w)))
            .collect();
        json!({
            "intercept": m.intercept,
            "weights_standardized": standardized,
            "weights": weights,
            "means": names.iter().cloned().zip(m.means.iter().map(|&v| json!(v))).collect::<serde_json::Map<_, _>>(),
            "l2": config.l2,
            "target_days": config.propensity_days,
        })
    };
    if !trained.converged {
        return Ok(not_converged(
            "propensity",
            &report(&trained, train_rows.len()),
            train_rows.len() as u64,
            parameters(&trained),
        ));
    }
    let holdout_scores: Vec<f64> = holdout_rows.iter().map(|r| trained.predict(r)).collect();
    let train_scores: Vec<f64> = train_rows.iter().map(|r| trained.predict(r)).collect();
    let calibration: Vec<Value> = logistic::calibration(&holdout_scores, &holdout_labels, 10)
        .into_iter()
        .map(|b| json!({"rows": b.rows, "predicted": b.predicted, "observed": b.observed}))
        .collect();
    let metrics = json!({
        "holdout_auc": logistic::auc(&holdout_scores, &holdout_labels),
        "train_auc": logistic::auc(&train_scores, &train_labels),
        "holdout_brier": logistic::brier(&holdout_scores, &holdout_labels),
        "holdout_log_loss": logistic::log_loss(&holdout_scores, &holdout_labels),
        "holdout_base_rate": positives(&holdout_labels) as f64 / holdout_labels.len() as f64,
        "holdout_mean_predicted": holdout_scores.iter().sum::<f64>() / holdout_scores.len() as f64,
        "holdout_calibration": calibration,
        "train_rows": train_rows.len(),
        "holdout_rows": holdout_rows.len(),
        "train_cutoff": micros_text(train_cutoff),
        "holdout_cutoff": micros_text(holdout_cutoff),
        "features": names,
    });
    // The model that scores is refitted on the latest complete period.
    let model = logistic::fit(&holdout_rows, &holdout_labels, config.l2);
    if !model.converged {
        return Ok(not_converged(
            "propensity",
            &report(&model, holdout_rows.len()),
            holdout_rows.len() as u64,
            parameters(&model),
        ));
    }
    let (ids, _, rows) = features(ctx, sql, common, end).await?;
    let scores = ids
        .into_iter()
        .zip(&rows)
        .map(|(id, row)| (id, "purchase_propensity", model.predict(row)))
        .collect();
    Ok(Outcome {
        status: Status::Written,
        message: None,
        customers: holdout_rows.len() as u64,
        parameters: parameters(&model),
        fit: Some(report(&model, holdout_rows.len())),
        metrics,
        scores,
    })
}

async fn data_quality(ctx: &SessionContext, calibration_end: i64, now: i64) -> Result<DataQuality> {
    let sql = format!(
        "SELECT count(*) AS orders, \
                count(*) FILTER (WHERE profile_id IS NULL) AS unattributed, \
                count(*) FILTER (WHERE timestamp > {end} AND timestamp <= {now}) AS after_end, \
                count(*) FILTER (WHERE timestamp > {now}) AS future, \
                count(*) FILTER (WHERE revenue IS NULL OR isnan(revenue)) AS missing, \
                count(*) FILTER (WHERE revenue = 0) AS zero, \
                count(*) FILTER (WHERE revenue < 0) AS negative \
         FROM orders",
        end = Literal::Time(calibration_end).sql(),
        now = Literal::Time(now).sql()
    );
    let batches = collect(ctx, &sql, "orders.sql").await?;
    let value = |name: &str| -> Result<u64> {
        let Some(batch) = batches.first() else {
            return Ok(0);
        };
        let column = int_column(batch, name, "orders.sql")?;
        Ok(column.value(0).max(0) as u64)
    };
    Ok(DataQuality {
        orders: value("orders")?,
        unattributed: value("unattributed")?,
        after_calibration_end: value("after_end")?,
        in_the_future: value("future")?,
        missing_revenue: value("missing")?,
        zero_revenue: value("zero")?,
        negative_revenue: value("negative")?,
        ..DataQuality::default()
    })
}

fn read_summary(batches: &[RecordBatch]) -> Result<Vec<Summary>> {
    let file = "summary.sql";
    let mut out = Vec::new();
    for batch in batches {
        let id = text_column(batch, "profile_id", file)?;
        let frequency = float_column(batch, "frequency", file)?;
        let recency = float_column(batch, "recency_days", file)?;
        let age = float_column(batch, "age_days", file)?;
        let monetary = float_column(batch, "monetary", file)?;
        for i in 0..batch.num_rows() {
            if id.is_null(i) || frequency.is_null(i) || recency.is_null(i) || age.is_null(i) {
                continue;
            }
            let (x, t_x, t) = (frequency.value(i), recency.value(i), age.value(i));
            if !(x >= 0.0 && t_x >= 0.0 && t >= t_x) {
                return Err(PredictError::sql(
                    file,
                    format!(
                        "profile {}: frequency {x}, recency_days {t_x}, age_days {t} break 0 ≤ recency ≤ age",
                        id.value(i)
                    ),
                ));
            }
            out.push(Summary {
                profile_id: id.value(i).to_owned(),
                frequency: x,
                recency_days: t_x,
                age_days: t,
                monetary: (!monetary.is_null(i))
                    .then(|| monetary.value(i))
                    .filter(|m| *m > 0.0 && m.is_finite()),
            });
        }
    }
    Ok(out)
}

/// The next version of each model (1 for a model never run).
async fn next_versions(ctx: &SessionContext) -> Result<HashMap<String, i64>> {
    if !ctx.table_exist(MODEL_RUNS)? {
        return Ok(HashMap::new());
    }
    let batches = collect(
        ctx,
        "SELECT model, max(version) AS version FROM model_runs GROUP BY model",
        MODEL_RUNS,
    )
    .await?;
    let mut out = HashMap::new();
    for batch in &batches {
        let model = text_column(batch, "model", MODEL_RUNS)?;
        let version = int_column(batch, "version", MODEL_RUNS)?;
        for i in 0..batch.num_rows() {
            out.insert(model.value(i).to_owned(), version.value(i) + 1);
        }
    }
    Ok(out)
}

async fn input_versions(engine: &Engine) -> Result<Value> {
    let mut inputs = serde_json::Map::new();
    for name in [EVENTS, IDENTITY_MAP] {
        let version = engine.lake().stats(name).await?.version;
        inputs.insert(name.to_owned(), json!(version));
    }
    Ok(Value::Object(inputs))
}

const WRITE_ROWS: usize = 65_536;

async fn write_scores(
    lake: &tessera_lake::Lake,
    model: Model,
    version: i64,
    trained_at: i64,
    scores: Scores,
    actor: &str,
) -> Result<()> {
    let def = table_def(SCORES)?;
    let mut writer = lake
        .replace_partition_writer(&def, "model", model.name())
        .await?;
    let rows = scores.len();
    for chunk in scores.chunks(WRITE_ROWS) {
        let n = chunk.len();
        let batch = RecordBatch::try_new(
            def.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|(p, _, _)| p),
                )) as ArrayRef,
                Arc::new(StringArray::from(vec![model.name(); n])),
                Arc::new(Int64Array::from(vec![version; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![trained_at; n]).with_timezone("UTC")),
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|(_, s, _)| *s),
                )),
                Arc::new(Float64Array::from_iter_values(
                    chunk.iter().map(|(_, _, v)| *v),
                )),
            ],
        )?;
        writer.write(batch).await?;
    }
    writer
        .commit(
            CommitNote::new("predict", actor)
                .detail("model", model.name())
                .detail("version", version)
                .detail("rows", rows as u64),
        )
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn write_runs(
    lake: &tessera_lake::Lake,
    runs: &[ModelRun],
    trained_at: i64,
    calibration_end: i64,
    unit: TimeUnit,
    quality: &DataQuality,
    inputs: &Value,
    actor: &str,
) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let def = table_def(MODEL_RUNS)?;
    let n = runs.len();
    let quality = serde_json::to_string(quality).map_err(|e| PredictError::Other(e.to_string()))?;
    let metrics: Vec<String> = runs
        .iter()
        .map(|r| {
            let mut m = r.metrics.clone();
            if let (Some(message), Value::Object(map)) = (&r.message, &mut m) {
                map.insert("message".into(), json!(message));
            }
            m.to_string()
        })
        .collect();
    let times = |t: i64| Arc::new(TimestampMicrosecondArray::from(vec![t; n]).with_timezone("UTC"));
    let batch = RecordBatch::try_new(
        def.schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| r.model.name()),
            )) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(runs.iter().map(|r| r.version))),
            times(trained_at),
            times(calibration_end),
            Arc::new(StringArray::from(vec![unit.name(); n])),
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| r.status.name()),
            )),
            Arc::new(Int64Array::from_iter_values(
                runs.iter().map(|r| r.customers as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                runs.iter().map(|r| r.scored as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| r.parameters.to_string()),
            )),
            Arc::new(Float64Array::from_iter(
                runs.iter().map(|r| r.fit.map(|f| f.log_likelihood)),
            )),
            Arc::new(Int64Array::from_iter(
                runs.iter().map(|r| r.fit.map(|f| f.iterations as i64)),
            )),
            Arc::new(arrow::array::BooleanArray::from_iter(
                runs.iter().map(|r| Some(r.fit.is_none_or(|f| f.converged))),
            )),
            Arc::new(StringArray::from_iter_values(metrics)),
            Arc::new(StringArray::from(vec![quality.as_str(); n])),
            Arc::new(StringArray::from(vec![inputs.to_string(); n])),
            Arc::new(Int64Array::from_iter_values(
                runs.iter().map(|r| r.duration_ms as i64),
            )),
        ],
    )?;
    let mut writer = lake.append_writer(&def).await?;
    writer.write(batch).await?;
    writer
        .commit(CommitNote::new("predict", actor).detail("models", n as u64))
        .await?;
    Ok(())
}

fn table_def(name: &str) -> Result<schema::TableDef> {
    schema::table(name)
        .ok_or_else(|| PredictError::Other(format!("no table definition for {name}")))
}

/// The model queries of a project: its own files, the defaults for any it lacks.
struct Queries {
    texts: BTreeMap<&'static str, (String, String)>,
}

impl Queries {
    fn load(project_dir: &Path) -> Result<Queries> {
        let mut texts = BTreeMap::new();
        for (file, default) in DEFAULT_SQL {
            let path = project_dir.join(PREDICT_DIR).join(file);
            let shown = format!("{PREDICT_DIR}/{file}");
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (*default).to_owned(),
                Err(e) => return Err(PredictError::sql(&shown, format!("cannot read: {e}"))),
            };
            texts.insert(*file, (shown, text));
        }
        Ok(Queries { texts })
    }

    /// The text of `file` with its `$parameters` replaced by SQL literals.
    fn bind(&self, file: &str, params: &[(&str, Literal)]) -> Result<String> {
        let (shown, text) = self
            .texts
            .get(file)
            .ok_or_else(|| PredictError::Other(format!("no query {file}")))?;
        bind(text, params).map_err(|message| PredictError::sql(shown, message))
    }
}

/// How a query is named in errors: `sql/predict/x.sql` for the files, else as given.
fn shown_file(file: &str) -> String {
    if file.ends_with(".sql") {
        format!("{PREDICT_DIR}/{file}")
    } else {
        file.to_owned()
    }
}

async fn collect(ctx: &SessionContext, sql: &str, file: &str) -> Result<Vec<RecordBatch>> {
    Ok(materialize(ctx, sql, file).await?.1)
}

/// Runs `sql` to the end: its schema (known even when no row comes back) and batches.
async fn materialize(
    ctx: &SessionContext,
    sql: &str,
    file: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let shown = shown_file(file);
    let failed = |e| PredictError::sql(&shown, tessera_engine::EngineError::sql(e));
    let df = tessera_engine::policy::read_only(ctx, sql.trim().trim_end_matches(';'))
        .await
        .map_err(failed)?;
    let schema = df.schema().inner().clone();
    Ok((schema, df.collect().await.map_err(failed)?))
}

/// Runs `sql` and registers its result as the in-memory table `name`; returns the rows.
async fn register_result(
    ctx: &SessionContext,
    name: &str,
    sql: &str,
    file: &str,
) -> Result<Vec<RecordBatch>> {
    let (schema, batches) = materialize(ctx, sql, file).await?;
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(schema, vec![batches.clone()])?),
    )?;
    Ok(batches)
}

/// A parameter value of the model queries.
#[derive(Debug, Clone)]
enum Literal {
    Text(String),
    /// Microseconds since the epoch, UTC.
    Time(i64),
}

impl Literal {
    fn sql(&self) -> String {
        match self {
            Literal::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Literal::Time(t) => {
                format!("arrow_cast({t}, 'Timestamp(Microsecond, Some(\"UTC\"))')")
            }
        }
    }
}

/// Replaces each `$name` outside string literals and comments by its literal.
fn bind(text: &str, params: &[(&str, Literal)]) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\'' {
                        break;
                    }
                }
            }
            '-' if text[i..].starts_with("--") => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '$' => {
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(|d| d.is_ascii_alphanumeric() || *d == '_')
                    .collect();
                let Some((_, value)) = params.iter().find(|(n, _)| *n == name) else {
                    let known: Vec<String> = params.iter().map(|(n, _)| format!("${n}")).collect();
                    return Err(format!(
                        "unknown parameter ${name}; this query can use {}",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                };
                out.push_str(&value.sql());
                for _ in 0..name.chars().count() {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn micros_text(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t).map_or_else(
        || t.to_string(),
        |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

fn column<'a>(batch: &'a RecordBatch, name: &str, file: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let have: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        PredictError::sql(
            &shown_file(file),
            format!(
                "the query returns no column {name} (it returns {})",
                have.join(", ")
            ),
        )
    })
}

fn text_column(batch: &RecordBatch, name: &str, file: &str) -> Result<StringArray> {
    let c = cast(column(batch, name, file)?, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

fn float_column(batch: &RecordBatch, name: &str, file: &str) -> Result<Float64Array> {
    let c = column(batch, name, file)?;
    let c = cast(c, &DataType::Float64).map_err(|e| {
        PredictError::sql(
            &shown_file(file),
            format!("column {name} is {} and not a number: {e}", c.data_type()),
        )
    })?;
    Ok(c.as_primitive::<Float64Type>().clone())
}

fn int_column(batch: &RecordBatch, name: &str, file: &str) -> Result<Int64Array> {
    let c = cast(column(batch, name, file)?, &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn summary() -> Vec<Summary> {
        vec![Summary {
            profile_id: "p1".into(),
            frequency: 2.0,
            recency_days: 20.0,
            age_days: 30.0,
            monetary: Some(40.0),
        }]
    }

    #[test]
    fn a_fit_that_did_not_converge_writes_no_scores() {
        let params = bgnbd::Params {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 1.0,
        };
        let failed = FitReport {
            log_likelihood: -10.0,
            iterations: 500,
            converged: false,
        };
        let outcome = bgnbd_scores(&summary(), TimeUnit::Week, Some((params, failed)));
        assert_eq!(outcome.status, Status::NotConverged);
        assert!(outcome.scores.is_empty());
        assert!(
            outcome
                .message
                .unwrap_or_default()
                .contains("did not converge")
        );
        // The spend model needs the purchase model: it refuses too.
        let outcome = spend_scores(&summary(), TimeUnit::Week, Some((params, failed)), 0.01);
        assert_eq!(outcome.status, Status::NotConverged);
        assert!(outcome.scores.is_empty());
        // A converged fit scores.
        let ok = FitReport {
            converged: true,
            ..failed
        };
        let outcome = bgnbd_scores(&summary(), TimeUnit::Week, Some((params, ok)));
        assert_eq!(outcome.status, Status::Written);
        assert!(
            outcome
                .scores
                .iter()
                .any(|(_, s, v)| *s == "p_alive" && v.is_finite())
        );
        // No purchases at all: nothing to fit.
        assert_eq!(
            bgnbd_scores(&[], TimeUnit::Week, None).status,
            Status::NoData
        );
    }

    #[test]
    fn binds_parameters_outside_strings_and_comments() {
        let params = [
            ("event", Literal::Text("Order 'X'".into())),
            ("end", Literal::Time(0)),
        ];
        let out = bind(
            "-- uses $event\nSELECT '$event', $event, $end -- and $end\nFROM t",
            &params,
        )
        .unwrap();
        assert_eq!(
            out,
            "-- uses $event\nSELECT '$event', 'Order ''X''', arrow_cast(0, 'Timestamp(Microsecond, Some(\"UTC\"))') -- and $end\nFROM t"
        );
        let err = bind("SELECT $nope", &params).unwrap_err();
        assert!(
            err.contains("$nope") && err.contains("$event, $end"),
            "{err}"
        );
    }
}
