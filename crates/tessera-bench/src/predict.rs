//! `tessera-bench predict`: fitting and scoring BG/NBD + Gamma-Gamma on simulated
//! customers, Tessera vs `lifetimes` on the same summary data, side by side.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use tessera_predict::{bgnbd, gamma_gamma, simulate};

use super::python;

pub fn run(customers: usize, work: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    // Whole-day summaries (as purchase days are): CDNOW-like rates, ages of 30 to 365
    // days, spend from Gamma-Gamma for repeat buyers.
    let truth = bgnbd::Params {
        r: 0.243,
        alpha: 4.414 * 7.0,
        a: 0.793,
        b: 2.426,
    };
    let spend = gamma_gamma::Params {
        p: 6.25,
        q: 3.74,
        gamma: 15.44,
    };
    let mut rng = simulate::Rng::new(5);
    let mut rows = Vec::with_capacity(customers);
    let chunk = 10_000;
    for start in (0..customers).step_by(chunk) {
        let n = chunk.min(customers - start);
        let age = (30.0 + (rng.uniform() * 336.0).floor()).min(365.0);
        for c in simulate::bgnbd(&truth, age, n, start as u64) {
            let (x, t_x) = (
                c.x,
                if c.x > 0.0 {
                    c.t_x.ceil().min(age)
                } else {
                    0.0
                },
            );
            let m = if x > 0.0 {
                let nu = rng.gamma(spend.q, spend.gamma);
                let total: f64 = (0..x as usize).map(|_| rng.gamma(spend.p, nu)).sum();
                (total / x * 100.0).round() / 100.0
            } else {
                0.0
            };
            rows.push((bgnbd::Customer { x, t_x, t: age }, m));
        }
    }
    let csv = work.join("summary.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(f, "frequency,recency,T,monetary_value")?;
        for (c, m) in &rows {
            writeln!(f, "{},{},{},{}", c.x, c.t_x, c.t, m)?;
        }
    }

    // Tessera: group, fit both models, score every customer.
    let started = Instant::now();
    let summaries: Vec<bgnbd::Customer> = rows.iter().map(|(c, _)| *c).collect();
    let grouped = bgnbd::group(&summaries);
    let group_secs = started.elapsed().as_secs_f64();
    let (bg, bg_report) = bgnbd::fit(&grouped);
    let bg_secs = started.elapsed().as_secs_f64() - group_secs;
    let buyers: Vec<(f64, f64)> = rows
        .iter()
        .filter(|(c, m)| c.x > 0.0 && *m > 0.0)
        .map(|(c, m)| (c.x, *m))
        .collect();
    let gg_started = Instant::now();
    let (gg, gg_report) = gamma_gamma::fit(&buyers);
    let gg_secs = gg_started.elapsed().as_secs_f64();
    let fit_secs = started.elapsed().as_secs_f64();
    let scored = Instant::now();
    // As `tessera predict` scores: every customer, on every core.
    let checksum: f64 = tessera_predict::parallel_map(&rows, |(c, m)| {
        let e = bgnbd::expected_purchases(&bg, c, 30.0);
        let alive = bgnbd::p_alive(&bg, c);
        let value = gamma_gamma::expected_average_value(&gg, c.x, *m);
        e + alive + value
    })
    .into_iter()
    .sum();
    let score_secs = scored.elapsed().as_secs_f64();
    let tessera_secs = started.elapsed().as_secs_f64();
    if !bg_report.converged || !gg_report.converged || !checksum.is_finite() {
        bail!("Tessera's fit did not converge: {bg_report:?} {gg_report:?}");
    }

    // lifetimes on the same CSV (reading it is not timed).
    let script = format!(
        r#"
import json, time
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
d = pd.read_csv({csv:?})
t = time.perf_counter()
bg = BetaGeoFitter(penalizer_coef=0.0).fit(d["frequency"], d["recency"], d["T"])
rep = d[(d["frequency"] > 0) & (d["monetary_value"] > 0)]
gg = GammaGammaFitter(penalizer_coef=0.0).fit(rep["frequency"], rep["monetary_value"])
fit = time.perf_counter() - t
s = time.perf_counter()
e = bg.conditional_expected_number_of_purchases_up_to_time(30, d["frequency"], d["recency"], d["T"])
a = bg.conditional_probability_alive(d["frequency"], d["recency"], d["T"])
v = gg.conditional_expected_average_profit(d["frequency"], d["monetary_value"])
score = time.perf_counter() - s
print(json.dumps({{"bgnbd": bg.params_.to_dict(), "gamma_gamma": gg.params_.to_dict(), "fit": fit, "score": score}}))
"#,
        csv = csv.to_string_lossy()
    );
    let python = python()?;
    let out = Command::new(&python).arg("-c").arg(&script).output()?;
    if !out.status.success() {
        bail!("lifetimes failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let lt: serde_json::Value = serde_json::from_slice(&out.stdout).context("lifetimes output")?;
    let lt_fit = lt["fit"].as_f64().unwrap_or(f64::NAN);
    let lt_score = lt["score"].as_f64().unwrap_or(f64::NAN);

    println!(
        "{} customers ({} distinct summaries, {} repeat buyers); BFGS iterations: BG/NBD {}, Gamma-Gamma {}",
        rows.len(),
        grouped.len(),
        buyers.len(),
        bg_report.iterations,
        gg_report.iterations
    );
    println!(
        "{:<8} {:>12} {:>12} {:>8}",
        "param", "tessera", "lifetimes", "diff %"
    );
    let mut worst: f64 = 0.0;
    for (name, ours, key) in [
        ("r", bg.r, &lt["bgnbd"]["r"]),
        ("alpha", bg.alpha, &lt["bgnbd"]["alpha"]),
        ("a", bg.a, &lt["bgnbd"]["a"]),
        ("b", bg.b, &lt["bgnbd"]["b"]),
        ("p", gg.p, &lt["gamma_gamma"]["p"]),
        ("q", gg.q, &lt["gamma_gamma"]["q"]),
        ("gamma", gg.gamma, &lt["gamma_gamma"]["v"]),
    ] {
        let theirs = key.as_f64().unwrap_or(f64::NAN);
        let diff = (ours - theirs).abs() / theirs.abs() * 100.0;
        worst = worst.max(diff);
        println!("{name:<8} {ours:>12.5} {theirs:>12.5} {diff:>8.3}");
    }
    println!(
        "Tessera fit steps: grouping {group_secs:.3} s, BG/NBD {bg_secs:.3} s, Gamma-Gamma {gg_secs:.3} s"
    );
    println!(
        "fit: Tessera {fit_secs:.3} s, lifetimes {lt_fit:.3} s; scoring every customer: Tessera {score_secs:.3} s, lifetimes {lt_score:.3} s"
    );
    println!(
        "fit + score: Tessera {tessera_secs:.3} s, lifetimes {:.3} s → {:.1}× faster (goal ≥ 20×); parameters within {worst:.3}% (goal 1%)",
        lt_fit + lt_score,
        (lt_fit + lt_score) / tessera_secs
    );
    Ok(())
}
