//! When the models were last fitted (`model_runs`), for the refit schedule.

use tessera_core::schema::MODEL_RUNS;
use tessera_engine::Engine;
use tessera_engine::columns::{collect, int64s};

use crate::error::Result;

/// When the latest model fit was trained (microseconds since the epoch), `None` when
/// no model ever ran. Opens only `model_runs`.
pub async fn last_fit(engine: &Engine) -> Result<Option<i64>> {
    use datafusion::arrow::array::Array;
    let ctx = engine.session_of(&[MODEL_RUNS]).await?;
    if !ctx.table_exist(MODEL_RUNS)? {
        return Ok(None);
    }
    let batches = collect(
        &ctx,
        "SELECT CAST(max(trained_at) AS BIGINT) AS last FROM model_runs",
    )
    .await?;
    let Some(b) = batches.first().filter(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let last = int64s(b, "last")?;
    Ok(last.is_valid(0).then(|| last.value(0)))
}

/// The latest run of each model (`model_runs`), by model name: the console's Models
/// page. Each row: `model`, `version`, `trained_at` (RFC 3339), `status`, `customers`,
/// `scored`, `converged`, `duration_ms` and `metrics` (parsed JSON: holdout AUC,
/// calibration by decile, ... as the model records them).
pub async fn latest_runs(engine: &Engine) -> Result<Vec<serde_json::Value>> {
    let ctx = engine.session_of(&[MODEL_RUNS]).await?;
    if !ctx.table_exist(MODEL_RUNS)? {
        return Ok(Vec::new());
    }
    let rows = tessera_engine::columns::collect_json(
        &ctx,
        "SELECT model, version, trained_at, status, customers, scored, converged, duration_ms, \
                metrics FROM (SELECT *, row_number() OVER (PARTITION BY model ORDER BY version DESC) AS n \
                              FROM model_runs) AS r WHERE n = 1 ORDER BY model",
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            if let Some(serde_json::Value::String(m)) = r.get("metrics") {
                let parsed = serde_json::from_str(m).unwrap_or(serde_json::Value::Null);
                r.insert("metrics".into(), parsed);
            }
            serde_json::Value::Object(r)
        })
        .collect())
}

/// How the latest values of each score spread: per `(model, score)` ten equal-width
/// bins between its minimum and maximum, `(model, score, min, max, counts)`.
pub async fn score_distributions(
    engine: &Engine,
) -> Result<Vec<(String, String, f64, f64, Vec<i64>)>> {
    use tessera_core::schema::SCORES;
    use tessera_engine::columns::{float64s, strings};
    let ctx = engine.session_of(&[SCORES]).await?;
    if !ctx.table_exist(SCORES)? {
        return Ok(Vec::new());
    }
    let batches = collect(
        &ctx,
        "WITH latest AS (SELECT model, max(version) AS v FROM scores GROUP BY model), \
              s AS (SELECT s.model, s.score, s.value FROM scores s JOIN latest l \
                    ON s.model = l.model AND s.version = l.v WHERE NOT isnan(s.value) AND abs(s.value) < 1e300), \
              r AS (SELECT model, score, min(value) AS lo, max(value) AS hi FROM s GROUP BY 1, 2) \
         SELECT s.model, s.score, r.lo, r.hi, \
                CAST(least(9, CASE WHEN r.hi > r.lo THEN floor((s.value - r.lo) / (r.hi - r.lo) * 10) ELSE 0 END) AS BIGINT) AS bin, \
                count(*) AS n \
         FROM s JOIN r ON s.model = r.model AND s.score = r.score \
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 5",
    )
    .await?;
    let mut out: Vec<(String, String, f64, f64, Vec<i64>)> = Vec::new();
    for b in &batches {
        let (m, s, lo, hi, bin, n) = (
            strings(b, "model")?,
            strings(b, "score")?,
            float64s(b, "lo")?,
            float64s(b, "hi")?,
            int64s(b, "bin")?,
            int64s(b, "n")?,
        );
        for i in 0..b.num_rows() {
            let same = out
                .last()
                .is_some_and(|(om, os, ..)| om == m.value(i) && os == s.value(i));
            if !same {
                out.push((
                    m.value(i).to_owned(),
                    s.value(i).to_owned(),
                    lo.value(i),
                    hi.value(i),
                    vec![0; 10],
                ));
            }
            if let Some(last) = out.last_mut() {
                let k = usize::try_from(bin.value(i)).unwrap_or(0).min(9);
                last.4[k] += n.value(i);
            }
        }
    }
    Ok(out)
}
