//! The Gamma-Gamma model of spend (Fader & Hardie 2013, "The Gamma-Gamma model of
//! monetary value"): a customer's transaction values are `Gamma(p, ν)` around her own
//! mean, and `ν ~ Gamma(q, γ)` across customers. Fitted on repeat buyers: `x` repeat
//! transactions with average value `m`.

use crate::FitReport;
use crate::optimize::{Settings, nelder_mead};
use crate::special::ln_gamma;

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

/// Fits `p`, `q`, `gamma` on `(x, m)` pairs of repeat buyers (`x > 0`, `m > 0`).
pub fn fit(buyers: &[(f64, f64)]) -> (Params, FitReport) {
    let n = buyers.len().max(1) as f64;
    let params = |v: &[f64]| Params {
        p: v[0].exp(),
        q: v[1].exp(),
        gamma: v[2].exp(),
    };
    // Per-buyer constants (x, m, ln m, x ln x); the log-gamma terms once per distinct
    // integer x; large inputs summed on every core.
    let rows: Vec<[f64; 4]> = buyers
        .iter()
        .map(|(x, m)| [*x, *m, m.ln(), x * x.ln()])
        .collect();
    let objective = |v: &[f64]| {
        let Params { p, q, gamma } = params(v);
        let common = -ln_gamma(q) + q * gamma.ln();
        let chunk_sum = |chunk: &[[f64; 4]]| {
            let mut cache: Vec<f64> = Vec::new();
            let mut total = 0.0;
            for [x, m, ln_m, x_ln_x] in chunk {
                let terms = || ln_gamma(p * x + q) - ln_gamma(p * x);
                let g = if x.fract() == 0.0 && *x < 100_000.0 {
                    let i = *x as usize;
                    if cache.len() <= i {
                        cache.resize(i + 1, f64::NAN);
                    }
                    if cache[i].is_nan() {
                        cache[i] = terms();
                    }
                    cache[i]
                } else {
                    terms()
                };
                total += g + common + (p * x - 1.0) * ln_m + p * x_ln_x
                    - (p * x + q) * (x * m + gamma).ln();
            }
            total
        };
        -crate::parallel_sum(&rows, chunk_sum) / n
    };
    let min = nelder_mead(objective, &[0.0; 3], Settings::default());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate;

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
