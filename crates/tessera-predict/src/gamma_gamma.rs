//! The Gamma-Gamma model of spend (Fader & Hardie 2013, "The Gamma-Gamma model of
//! monetary value"): a customer's transaction values are `Gamma(p, ν)` around her own
//! mean, and `ν ~ Gamma(q, γ)` across customers. Fitted on repeat buyers: `x` repeat
//! transactions with average value `m`.

use crate::FitReport;
use crate::optimize::{BfgsSettings, bfgs};
use crate::special::{digamma, digamma_difference, ln_gamma, ln_gamma_ratio};

/// The model's parameters, named as in the paper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

/// One repeat buyer's log-likelihood of average value `m` over `x` transactions.
pub fn log_likelihood(params: &Params, x: f64, m: f64) -> f64 {
    let Params { p, q, gamma } = *params;
    ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q)
        + q * gamma.ln()
        + (p * x - 1.0) * m.ln()
        + (p * x) * x.ln()
        - (p * x + q) * (x * m + gamma).ln()
}

/// Total log-likelihood of `(x, m)` repeat buyers and its gradient with respect to
/// `(p, q, gamma)`:
/// `∂p = x (ψ(px+q) − ψ(px) + ln m + ln x − ln(xm+γ))`,
/// `∂q = ψ(px+q) − ψ(q) + ln γ − ln(xm+γ)`, `∂γ = q/γ − (px+q)/(xm+γ)`.
/// The gamma-function terms depend on `x` alone and are computed once per distinct
/// (integer) `x`; large inputs are summed on every core.
pub fn log_likelihood_gradient(params: &Params, buyers: &[(f64, f64)]) -> (f64, [f64; 3]) {
    gradient_of(params, &prepare(buyers))
}

/// A buyer with the logarithms every evaluation needs, taken once.
struct Buyer {
    x: f64,
    m: f64,
    ln_m: f64,
    ln_x: f64,
}

fn prepare(buyers: &[(f64, f64)]) -> Vec<Buyer> {
    buyers
        .iter()
        .map(|&(x, m)| Buyer {
            x,
            m,
            ln_m: m.ln(),
            ln_x: x.ln(),
        })
        .collect()
}

fn gradient_of(params: &Params, buyers: &[Buyer]) -> (f64, [f64; 3]) {
    let sums = crate::parallel_fold(buyers, |chunk| chunk_gradient(params, chunk));
    (sums[0], [sums[1], sums[2], sums[3]])
}

fn chunk_gradient(params: &Params, buyers: &[Buyer]) -> [f64; 4] {
    let Params { p, q, gamma } = *params;
    // Written so that nothing cancels when q and γ grow large together (buyers whose
    // mean spends do not differ): lnΓ(px+q) − lnΓ(q) and ψ(px+q) − ψ(q) by their
    // asymptotic differences, q ln γ − (px+q) ln(xm+γ) as −q log1p(xm/γ) − px ln(xm+γ).
    let terms = |x: f64| {
        let px = p * x;
        (
            ln_gamma_ratio(q, px) - ln_gamma(px),
            digamma_difference(q, px),
            digamma(px) - digamma(px + q),
        )
    };
    let mut cache: Vec<Option<(f64, f64, f64)>> = Vec::new();
    let ln_gamma_param = gamma.ln();
    let mut out = [0.0; 4];
    for &Buyer { x, m, ln_m, ln_x } in buyers {
        let (g, psi_diff, psi_p) = if x.fract() == 0.0 && (0.0..100_000.0).contains(&x) {
            let i = x as usize;
            if cache.len() <= i {
                cache.resize(i + 1, None);
            }
            *cache[i].get_or_insert_with(|| terms(x))
        } else {
            terms(x)
        };
        let px = p * x;
        let spent = x * m;
        // ln(xm+γ) = ln γ + log1p(xm/γ): one logarithm per buyer and evaluation.
        let log1p_ratio = (spent / gamma).ln_1p();
        let ln_total = ln_gamma_param + log1p_ratio;
        out[0] += g + (px - 1.0) * ln_m + px * ln_x - q * log1p_ratio - px * ln_total;
        // ψ(px+q) − ψ(px) = −psi_p.
        out[1] += x * (-psi_p + ln_m + ln_x - ln_total);
        out[2] += psi_diff - log1p_ratio;
        out[3] += (q * spent - px * gamma) / (gamma * (spent + gamma));
    }
    out
}

/// Fits `p`, `q`, `gamma` on `(x, m)` pairs of repeat buyers (`x > 0`, `m > 0`) by
/// maximum likelihood: BFGS with the analytic gradient on their logs. When buyers do
/// not differ in their mean spend, the likelihood keeps rising as `q, γ → ∞` with
/// `γ/(q − 1)` fixed; the fit stops where it has flattened (everyone's expected spend is
/// then the population mean).
pub fn fit(buyers: &[(f64, f64)]) -> (Params, FitReport) {
    let n = buyers.len().max(1) as f64;
    let params = |v: &[f64]| Params {
        p: v[0].exp(),
        q: v[1].exp(),
        gamma: v[2].exp(),
    };
    let prepared = prepare(buyers);
    let objective = |v: &[f64]| {
        let at = params(v);
        let (ll, g) = gradient_of(&at, &prepared);
        let scale = [at.p, at.q, at.gamma];
        (
            -ll / n,
            (0..3).map(|i| -g[i] * scale[i] / n).collect::<Vec<f64>>(),
        )
    };
    let min = bfgs(objective, &[0.0; 3], BfgsSettings::default());
    let p = params(&min.x);
    (
        p,
        FitReport {
            log_likelihood: -min.value * n,
            iterations: min.iterations,
            converged: min.converged && min.value.is_finite(),
        },
    )
}

/// Expected average transaction value of a customer with `x` repeat transactions of
/// average `m` (the population mean for `x = 0`).
pub fn expected_average_value(params: &Params, x: f64, m: f64) -> f64 {
    let Params { p, q, gamma } = *params;
    let population = gamma * p / (q - 1.0);
    if x <= 0.0 {
        return population;
    }
    let weight = p * x / (p * x + q - 1.0);
    (1.0 - weight) * population + weight * m
}

/// Customer lifetime value over `months` months (Fader & Hardie): the expected
/// purchases of each month from the BG/NBD model times the expected spend, discounted
/// at `monthly_discount` per month. `units_per_month` converts months to the BG/NBD
/// time unit (30 for days, 4.345 for weeks, as `lifetimes` does).
pub fn customer_lifetime_value(
    purchases: &crate::bgnbd::Params,
    customer: &crate::bgnbd::Customer,
    spend: f64,
    months: u32,
    monthly_discount: f64,
    units_per_month: f64,
) -> f64 {
    let mut value = 0.0;
    let mut previous = 0.0;
    for month in 1..=months {
        let cumulative = crate::bgnbd::expected_purchases(
            purchases,
            customer,
            f64::from(month) * units_per_month,
        );
        value += spend * (cumulative - previous) / (1.0 + monthly_discount).powi(month as i32);
        previous = cumulative;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate;

    #[test]
    fn converges_when_mean_spend_does_not_vary() {
        // Transaction values Gamma(p, ν) with the same ν for everyone: q, γ → ∞.
        let mut rng = simulate::Rng::new(8);
        let buyers: Vec<(f64, f64)> = (0..20_000)
            .map(|_| {
                let x = 1.0 + (rng.uniform() * 10.0).floor();
                let m = (0..x as usize).map(|_| rng.gamma(3.0, 0.05)).sum::<f64>() / x;
                (x, m)
            })
            .collect();
        let (params, report) = fit(&buyers);
        assert!(report.converged, "{params:?} {report:?}");
        let mean = expected_average_value(&params, 0.0, 0.0);
        assert!((mean - 60.0).abs() < 2.0, "{mean} {params:?}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let buyers = simulate::gamma_gamma(
            &Params {
                p: 6.25,
                q: 3.74,
                gamma: 15.44,
            },
            2_000,
            9,
        );
        let at = Params {
            p: 4.0,
            q: 2.5,
            gamma: 20.0,
        };
        let (ll, g) = log_likelihood_gradient(&at, &buyers);
        let direct: f64 = buyers.iter().map(|&(x, m)| log_likelihood(&at, x, m)).sum();
        assert!((ll - direct).abs() < 1e-8 * direct.abs());
        for i in 0..3 {
            let nudged = |h: f64| {
                let mut v = [at.p, at.q, at.gamma];
                v[i] += h;
                let p = Params {
                    p: v[0],
                    q: v[1],
                    gamma: v[2],
                };
                buyers
                    .iter()
                    .map(|&(x, m)| log_likelihood(&p, x, m))
                    .sum::<f64>()
            };
            let h = 1e-6;
            let numeric = (nudged(h) - nudged(-h)) / (2.0 * h);
            assert!(
                (g[i] - numeric).abs() < 1e-5 * (1.0 + numeric.abs()),
                "{i}: {} vs {numeric}",
                g[i]
            );
        }
    }

    #[test]
    fn equal_mean_spend_converges_to_the_population_mean() {
        // Every buyer's spend drawn around the same mean: no heterogeneity to fit.
        let mut rng = simulate::Rng::new(4);
        let buyers: Vec<(f64, f64)> = (0..5_000)
            .map(|_| {
                let x = 1.0 + (rng.uniform() * 6.0).floor();
                let m = (0..x as usize)
                    .map(|_| 15.0 + rng.uniform() * 200.0)
                    .sum::<f64>()
                    / x;
                (x, m)
            })
            .collect();
        let (params, report) = fit(&buyers);
        assert!(report.converged, "{params:?} {report:?}");
        let mean = expected_average_value(&params, 0.0, 0.0);
        assert!((mean - 115.0).abs() < 3.0, "{mean}");
    }

    #[test]
    fn recovers_the_parameters_it_was_simulated_with() {
        // The CDNOW estimates of the paper.
        let truth = Params {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        let buyers = simulate::gamma_gamma(&truth, 50_000, 11);
        let (fitted, report) = fit(&buyers);
        assert!(report.converged, "{report:?}");
        // The fit's (fast) likelihood equals the sum of the textbook terms.
        let reference: f64 = buyers
            .iter()
            .map(|(x, m)| log_likelihood(&fitted, *x, *m))
            .sum();
        assert!((report.log_likelihood - reference).abs() < 1e-6 * reference.abs());
        // The optimum is at least as likely as the truth (the minimizer did its job).
        let at_truth: f64 = buyers
            .iter()
            .map(|(x, m)| log_likelihood(&truth, *x, *m))
            .sum();
        assert!(
            report.log_likelihood >= at_truth - 1e-6,
            "{report:?} vs {at_truth}"
        );
        for (name, got, want) in [
            ("p", fitted.p, truth.p),
            ("q", fitted.q, truth.q),
            ("gamma", fitted.gamma, truth.gamma),
        ] {
            let rel = (got - want).abs() / want;
            // p and q lie on a ridge of the likelihood; their sampling error is larger.
            assert!(
                rel < 0.15,
                "{name}: fitted {got}, simulated with {want} ({rel:.3} off)"
            );
        }
        // The identifiable quantity, the population mean spend, is tight.
        let mean = |p: &Params| p.gamma * p.p / (p.q - 1.0);
        assert!((mean(&fitted) - mean(&truth)).abs() / mean(&truth) < 0.03);
        // Shrinkage: a one-order customer is pulled towards the population mean.
        let population = expected_average_value(&fitted, 0.0, 0.0);
        let one = expected_average_value(&fitted, 1.0, 500.0);
        assert!(one < 500.0 && one > population);
    }
}
