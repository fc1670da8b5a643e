//! On the CDNOW summary data that ships with `lifetimes`, and on data simulated from
//! the BG/NBD and Gamma-Gamma generative processes, Tessera's fits give the same
//! parameters, expected purchases, P(alive), expected spend and 12-month CLV as
//! `lifetimes` to within 1%.

use std::path::Path;
use std::process::Command;

use tessera_predict::{bgnbd, gamma_gamma};

fn python() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/venv.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("running venv.sh");
    assert!(
        out.status.success(),
        "venv.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const SCRIPT: &str = r#"
import json, sys
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value
if sys.argv[1] == "cdnow":
    d = load_cdnow_summary_data_with_monetary_value()
else:
    d = pd.read_csv(sys.argv[1])
bg = BetaGeoFitter(penalizer_coef=0.0).fit(d["frequency"], d["recency"], d["T"])
rep = d[d["frequency"] > 0]
gg = GammaGammaFitter(penalizer_coef=0.0).fit(rep["frequency"], rep["monetary_value"])
print(json.dumps({
    "rows": d[["frequency", "recency", "T", "monetary_value"]].values.tolist(),
    "bgnbd": bg.params_.to_dict(),
    "gamma_gamma": gg.params_.to_dict(),
    "expected_39": bg.conditional_expected_number_of_purchases_up_to_time(39, d["frequency"], d["recency"], d["T"]).tolist(),
    "p_alive": bg.conditional_probability_alive(d["frequency"], d["recency"], d["T"]).tolist(),
    "spend": gg.conditional_expected_average_profit(d["frequency"], d["monetary_value"]).tolist(),
    "clv": gg.customer_lifetime_value(bg, d["frequency"], d["recency"], d["T"], d["monetary_value"], time=12, discount_rate=0.01, freq="W").tolist(),
}))
"#;

fn close(name: &str, got: f64, want: f64) {
    let rel = (got - want).abs() / want.abs().max(1e-9);
    assert!(
        rel < 0.01 || (got - want).abs() < 1e-6,
        "{name}: Tessera {got}, lifetimes {want} ({:.3}% off)",
        rel * 100.0
    );
}

#[test]
fn fits_and_predictions_match_lifetimes_on_cdnow() {
    compare("cdnow", Some(2357));
}

#[test]
fn fits_and_predictions_match_lifetimes_on_simulated_data() {
    use tessera_predict::simulate;
    let purchases = bgnbd::Params {
        r: 0.6,
        alpha: 8.0,
        a: 0.9,
        b: 3.0,
    };
    let spend = gamma_gamma::Params {
        p: 5.0,
        q: 4.0,
        gamma: 60.0,
    };
    let customers = simulate::bgnbd(&purchases, 52.0, 5_000, 21);
    let values = simulate::gamma_gamma(&spend, 5_000, 22);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.csv");
    let mut csv = String::from("frequency,recency,T,monetary_value\n");
    for (c, (_, m)) in customers.iter().zip(&values) {
        let m = if c.x > 0.0 { *m } else { 0.0 };
        csv.push_str(&format!("{},{},{},{}\n", c.x, c.t_x, c.t, m));
    }
    std::fs::write(&path, csv).unwrap();
    compare(path.to_str().unwrap(), None);
}

/// Fits `lifetimes` on `data` ("cdnow" or a CSV of frequency, recency, T,
/// monetary_value), then Tessera on the rows `lifetimes` read, and compares.
fn compare(data: &str, expected_rows: Option<usize>) {
    let out = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(data)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<[f64; 4]> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            [0, 1, 2, 3].map(|i| r[i].as_f64().unwrap())
        })
        .collect();
    if let Some(n) = expected_rows {
        assert_eq!(rows.len(), n, "the CDNOW cohort");
    }

    let customers: Vec<(bgnbd::Customer, f64)> = rows
        .iter()
        .map(|r| {
            (
                bgnbd::Customer {
                    x: r[0],
                    t_x: r[1],
                    t: r[2],
                },
                1.0,
            )
        })
        .collect();
    let (p, report) = bgnbd::fit(&customers);
    assert!(report.converged, "{report:?}");
    let want = &v["bgnbd"];
    close("r", p.r, want["r"].as_f64().unwrap());
    close("alpha", p.alpha, want["alpha"].as_f64().unwrap());
    close("a", p.a, want["a"].as_f64().unwrap());
    close("b", p.b, want["b"].as_f64().unwrap());

    let buyers: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r[0] > 0.0)
        .map(|r| (r[0], r[3]))
        .collect();
    let (g, report) = gamma_gamma::fit(&buyers);
    assert!(report.converged, "{report:?}");
    let want = &v["gamma_gamma"];
    close("p", g.p, want["p"].as_f64().unwrap());
    close("q", g.q, want["q"].as_f64().unwrap());
    close("gamma", g.gamma, want["v"].as_f64().unwrap());

    for (i, (c, _)) in customers.iter().enumerate() {
        close(
            &format!("expected purchases of customer {i}"),
            bgnbd::expected_purchases(&p, c, 39.0),
            v["expected_39"][i].as_f64().unwrap(),
        );
        close(
            &format!("P(alive) of customer {i}"),
            bgnbd::p_alive(&p, c),
            v["p_alive"][i].as_f64().unwrap(),
        );
        let spend = gamma_gamma::expected_average_value(&g, c.x, rows[i][3]);
        close(
            &format!("expected spend of customer {i}"),
            spend,
            v["spend"][i].as_f64().unwrap(),
        );
        close(
            &format!("12-month CLV of customer {i}"),
            gamma_gamma::customer_lifetime_value(&p, c, spend, 12, 0.01, 4.345),
            v["clv"][i].as_f64().unwrap(),
        );
    }
}
