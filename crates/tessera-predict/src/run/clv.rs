//! Purchases and value: BG/NBD fits and their scores (P(alive), expected purchases),
//! Gamma-Gamma spend and CLV, and RFM.

use super::*;

/// Days of the short and long purchase horizons (`expected_purchases_30d`, `_90d`).
pub(super) const HORIZONS_DAYS: [(f64, &str); 2] = [
    (30.0, "expected_purchases_30d"),
    (90.0, "expected_purchases_90d"),
];

/// Months of `clv_12m`.
pub(super) const CLV_MONTHS: u32 = 12;

/// The BG/NBD customer of a summary row, in `unit`s.
pub(super) fn customer(s: &Summary, unit: TimeUnit) -> bgnbd::Customer {
    bgnbd::Customer {
        x: s.frequency,
        t_x: s.recency_days / unit.days(),
        t: s.age_days / unit.days(),
    }
}

/// The BG/NBD fit of this run (fitted once, shared by the purchase and spend models).
pub(super) fn fit_purchases(
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

pub(super) fn no_purchases() -> Outcome {
    Outcome::nothing(
        Status::NoData,
        "no purchases in the calibration window".into(),
        0,
    )
}

pub(super) fn bgnbd_parameters(p: &bgnbd::Params) -> Value {
    json!({"r": p.r, "alpha": p.alpha, "a": p.a, "b": p.b})
}

pub(super) fn not_converged(
    model: &str,
    report: &FitReport,
    customers: u64,
    parameters: Value,
) -> Outcome {
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

pub(super) fn bgnbd_scores(
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

pub(super) fn spend_scores(
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

pub(super) async fn rfm(
    ctx: &SessionContext,
    sql: &Queries,
    summary: &[Summary],
) -> Result<Outcome> {
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
