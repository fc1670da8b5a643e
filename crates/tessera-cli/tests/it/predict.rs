//! `tessera predict` end to end with the real binary: generated customers plus orders
//! that break the rules (negative, zero and missing revenue, several orders a day, a
//! future date, an order not yet stitched) — every rule counted, no score NaN, the
//! summary the scores come from is what the rules say; versions, partial refits,
//! broken queries and bad arguments.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{TestProject, fails, ok, sample_data};

fn order(user: &str, at: &str, revenue: Option<&str>) -> String {
    let properties = match revenue {
        Some(r) => format!(r#"{{"revenue":{r}}}"#),
        None => r#"{"currency":"USD"}"#.to_owned(),
    };
    format!(
        r#"{{"type":"track","userId":"{user}","event":"Order Completed","properties":{properties},"timestamp":"{at}"}}"#
    ) + "\n"
}

fn predict(p: &TestProject, args: &[&str]) -> Value {
    let mut all = vec!["predict", "--json"];
    all.extend_from_slice(args);
    let out = ok(&mut p.cmd(&all));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The scores of the profile of `user`, by score name.
fn scores_of(p: &TestProject, user: &str) -> BTreeMap<String, f64> {
    p.sql(&format!(
        "SELECT s.score, s.value FROM scores s JOIN identity_map m ON m.profile_id = s.profile_id \
         WHERE m.id_type = 'user_id' AND m.id_value = '{user}'"
    ))
    .into_iter()
    .map(|r| {
        (
            r["score"].as_str().unwrap().to_owned(),
            r["value"].as_f64().unwrap(),
        )
    })
    .collect()
}

#[test]
fn scores_follow_the_stated_rules_and_are_never_nan() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import_sample_channels(data);
    let odd = p.path().join("odd-orders.ndjson");
    let mut text = String::new();
    // zz-sameday: three orders on one day, one a week later → 1 repeat day, spend 40.
    for (at, r) in [
        ("2026-10-07T09:00:00Z", "10"),
        ("2026-10-07T12:00:00Z", "20"),
        ("2026-10-07T18:00:00Z", "30"),
        ("2026-10-14T10:00:00Z", "40"),
    ] {
        text += &order("zz-sameday", at, Some(r));
    }
    // zz-refund: a refund (negative) is not a purchase: one purchase day only.
    text += &order("zz-refund", "2026-10-01T10:00:00Z", Some("-20"));
    text += &order("zz-refund", "2026-10-02T10:00:00Z", Some("30"));
    // zz-zero: a zero-revenue repeat purchase counts as a purchase day with no spend.
    text += &order("zz-zero", "2026-10-03T10:00:00Z", Some("50"));
    text += &order("zz-zero", "2026-10-10T10:00:00Z", Some("0"));
    // zz-missing: an order without revenue, then one with.
    text += &order("zz-missing", "2026-10-05T10:00:00Z", None);
    text += &order("zz-missing", "2026-10-06T10:00:00Z", Some("25"));
    // zz-future: dated later today (in the accepted window): left out entirely.
    let soon = (chrono::Utc::now() + chrono::Duration::hours(12))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    text += &order("zz-future", &soon, Some("10"));
    // zz-2099: outside the accepted window: never an event, kept in quarantine.
    text += &order("zz-2099", "2099-01-01T10:00:00Z", Some("10"));
    std::fs::write(&odd, text).unwrap();
    p.import(&[odd.to_str().unwrap(), "--source", "web"]);
    ok(&mut p.cmd(&["stitch"]));
    // Arrives after stitching: no profile yet.
    let late = p.path().join("late.ndjson");
    std::fs::write(&late, order("zz-late", "2026-10-20T10:00:00Z", Some("99"))).unwrap();
    p.import(&[late.to_str().unwrap(), "--source", "web"]);

    let report = predict(&p, &["--calibration-end", "2026-10-31T23:59:59Z"]);
    let q = &report["data_quality"];
    let all_orders = p.count("SELECT count(*) AS n FROM events WHERE event = 'Order Completed'");
    assert_eq!(q["orders"], all_orders, "{q}");
    assert_eq!(
        p.count(
            "SELECT count(*) AS n FROM quarantine WHERE reason_code = 'timestamp_out_of_range'"
        ),
        1
    );
    assert_eq!(q["negative_revenue"], 1, "{q}");
    assert_eq!(q["zero_revenue"], 1, "{q}");
    assert_eq!(q["missing_revenue"], 1, "{q}");
    assert_eq!(q["in_the_future"], 1, "{q}");
    assert_eq!(q["unattributed"], 1, "{q}");
    assert_eq!(q["after_calibration_end"], 0, "{q}");
    assert_eq!(q["non_finite_scores"], 0, "{q}");
    let customers = q["customers"].as_u64().unwrap();
    assert!(customers > 100, "{q}");
    assert!(q["single_purchase"].as_u64().unwrap() > 0, "{q}");

    let models: BTreeMap<String, Value> = report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["model"].as_str().unwrap().to_owned(), m.clone()))
        .collect();
    assert_eq!(models.len(), 4);
    for (name, m) in &models {
        assert_eq!(m["status"], "written", "{name}: {m}");
        assert_eq!(m["version"], 1, "{m}");
    }
    for key in ["r", "alpha", "a", "b"] {
        assert!(models["bgnbd"]["parameters"][key].as_f64().unwrap() > 0.0);
    }
    for key in ["p", "q", "gamma"] {
        assert!(models["gamma_gamma"]["parameters"][key].as_f64().unwrap() > 0.0);
    }
    assert_eq!(models["bgnbd"]["converged"], true);
    assert_eq!(models["bgnbd"]["scored"], customers);
    let auc = models["propensity"]["metrics"]["holdout_auc"]
        .as_f64()
        .unwrap();
    assert!(auc > 0.5 && auc <= 1.0, "{auc}");
    assert_eq!(
        models["propensity"]["metrics"]["holdout_calibration"]
            .as_array()
            .unwrap()
            .len(),
        10
    );

    // Never NaN, and every value in its range.
    assert_eq!(
        p.count("SELECT count(*) AS n FROM scores WHERE isnan(value)"),
        0
    );
    assert_eq!(
        p.count(
            "SELECT count(*) AS n FROM profile_scores WHERE p_alive < 0 OR p_alive > 1 \
             OR abs(churn_risk - (1 - p_alive)) > 1e-12 OR expected_purchases_30d < 0 \
             OR expected_purchases_90d < expected_purchases_30d OR clv_12m < 0 \
             OR purchase_propensity <= 0 OR purchase_propensity >= 1 \
             OR rfm_recency NOT IN (1, 2, 3, 4, 5) OR rfm_score < 111 OR rfm_score > 555"
        ),
        0
    );

    // The summary follows the rules.
    let same = scores_of(&p, "zz-sameday");
    assert_eq!(same["purchase_frequency"], 1.0, "{same:?}");
    assert_eq!(same["recency_days"], 7.0);
    assert_eq!(same["average_spend"], 40.0);
    let refund = scores_of(&p, "zz-refund");
    assert_eq!(refund["purchase_frequency"], 0.0, "{refund:?}");
    assert!(!refund.contains_key("average_spend"));
    let zero = scores_of(&p, "zz-zero");
    assert_eq!(zero["purchase_frequency"], 1.0, "{zero:?}");
    assert!(
        !zero.contains_key("average_spend"),
        "no positive repeat spend"
    );
    let population = models["gamma_gamma"]["metrics"]["population_mean_spend"]
        .as_f64()
        .unwrap();
    assert!((zero["expected_order_value"] - population).abs() < 1e-6 * population);
    let missing = scores_of(&p, "zz-missing");
    assert_eq!(missing["purchase_frequency"], 1.0, "{missing:?}");
    assert_eq!(missing["average_spend"], 25.0);
    assert_eq!(
        scores_of(&p, "zz-future").get("p_alive"),
        None,
        "future orders are left out"
    );
    // Whoever lapsed long ago is less likely alive than a recent buyer with the same count.
    assert!(same["p_alive"] > 0.0 && same["p_alive"] <= 1.0);

    // The profile look-up shows them.
    let out = ok(&mut p.cmd(&["profile", "user_id:zz-sameday", "--json"]));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown: BTreeMap<String, f64> = view["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["score"].as_str().unwrap().to_owned(),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, same);

    // model_runs: one row per model, parameters as JSON, data quality stored.
    let runs = p.sql("SELECT model, version, status, converged, parameters, data_quality FROM model_runs ORDER BY model");
    assert_eq!(runs.len(), 4);
    let stored: Value = serde_json::from_str(runs[0]["data_quality"].as_str().unwrap()).unwrap();
    assert_eq!(&stored, q);

    // Refit one model: its version moves on, the others' scores stay.
    let before = p.count("SELECT count(*) AS n FROM scores WHERE model <> 'rfm'");
    let again = predict(
        &p,
        &[
            "--model",
            "rfm",
            "--calibration-end",
            "2026-10-31T23:59:59Z",
        ],
    );
    assert_eq!(again["models"][0]["version"], 2);
    assert_eq!(
        p.count("SELECT count(*) AS n FROM scores WHERE model <> 'rfm'"),
        before
    );
    assert_eq!(
        p.count("SELECT count(DISTINCT version) AS n FROM scores WHERE model = 'rfm'"),
        1
    );
    assert_eq!(p.count("SELECT count(*) AS n FROM model_runs"), 5);

    // Days as the time unit: the same customers, the rates per day.
    let daily = predict(
        &p,
        &[
            "--model",
            "bgnbd",
            "--time-unit",
            "day",
            "--calibration-end",
            "2026-10-31T23:59:59Z",
        ],
    );
    assert_eq!(daily["time_unit"], "day");
    let weekly_alpha = models["bgnbd"]["parameters"]["alpha"].as_f64().unwrap();
    let daily_alpha = daily["models"][0]["parameters"]["alpha"].as_f64().unwrap();
    assert!(
        (daily_alpha / weekly_alpha - 7.0).abs() < 0.05,
        "{daily_alpha} vs {weekly_alpha}"
    );
}

#[test]
fn bad_arguments_and_broken_queries_write_nothing() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import(&[
        data.join("events-web.ndjson").to_str().unwrap(),
        "--source",
        "web",
    ]);
    ok(&mut p.cmd(&["stitch"]));
    let e = fails(&mut p.cmd(&["predict", "--model", "arima"]));
    assert!(e.contains("unknown model \"arima\""), "{e}");
    let e = fails(&mut p.cmd(&["predict", "--calibration-end", "soon"]));
    assert!(e.contains("--calibration-end \"soon\""), "{e}");
    let e = fails(&mut p.cmd(&["predict", "--time-unit", "month"]));
    assert!(e.contains("month"), "{e}");

    let summary = p.path().join("sql/predict/summary.sql");
    let good = std::fs::read_to_string(&summary).unwrap();
    std::fs::write(
        &summary,
        good.replace("sum(orders) AS orders", "sum(orderz) AS orders"),
    )
    .unwrap();
    let e = fails(&mut p.cmd(&["predict"]));
    assert!(
        e.contains("sql/predict/summary.sql") && e.contains("orderz"),
        "{e}"
    );
    std::fs::write(
        &summary,
        good.replace("$calibration_end", "$calibration_ending"),
    )
    .unwrap();
    let e = fails(&mut p.cmd(&["predict"]));
    assert!(e.contains("unknown parameter $calibration_ending"), "{e}");
    std::fs::write(&summary, &good).unwrap();
    assert_eq!(p.count("SELECT count(*) AS n FROM model_runs"), 0);
    assert_eq!(p.count("SELECT count(*) AS n FROM scores"), 0);

    // A project with no orders yet: every model says so, nothing is scored.
    let empty = TestProject::new();
    let report = predict(&empty, &[]);
    for m in report["models"].as_array().unwrap() {
        assert_eq!(m["status"], "no_data", "{m}");
    }
    assert_eq!(empty.count("SELECT count(*) AS n FROM scores"), 0);
}
