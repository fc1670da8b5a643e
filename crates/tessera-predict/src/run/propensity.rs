//! Purchase propensity: features of a calibration window, labels of the window after
//! it, a logistic regression with AUC and calibration.

use super::*;

/// Features of every profile at `cutoff` (`features.sql`): ids, feature names, rows.
pub(super) async fn features(
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
pub(super) async fn buyers_between(
    ctx: &SessionContext,
    from: i64,
    to: i64,
) -> Result<HashSet<String>> {
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

pub(super) const DAY_MICROS: i64 = 86_400_000_000;

/// Regularized logistic regression of "buys within the next N days": trained on the
/// features at `end − 2N` against purchases in `(end − 2N, end − N]`, judged on the
/// features at `end − N` against purchases in `(end − N, end]` (the holdout), then
/// refitted on the holdout period and applied to the features at `end`.
pub(super) async fn propensity(
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
