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

mod clv;
mod propensity;
mod queries;
mod store;

use clv::*;
use propensity::*;
use queries::*;
pub use queries::{DEFAULT_SQL, PREDICT_DIR};
use store::*;

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
            .calibration_end_micros()?
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
        // The last commit that changed rows: compacting a table is no new input.
        let version = engine.lake().data_version(name).await?;
        inputs.insert(name.to_owned(), json!(version));
    }
    Ok(Value::Object(inputs))
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
