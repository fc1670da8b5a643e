//! The BG/NBD model ("beta-geometric / negative binomial distribution", Fader, Hardie &
//! Lee 2005, "Counting your customers the easy way").
//!
//! While active, a customer buys at Poisson rate `λ`, with `λ ~ Gamma(r, α)` across
//! customers; after each repeat purchase she becomes inactive with probability `p`,
//! `p ~ Beta(a, b)`. A customer is summarized by `x` (repeat purchases), `t_x` (time of
//! the last one since the first purchase) and `T` (time since the first purchase), all
//! in one time unit (days or weeks).

use crate::FitReport;
use crate::optimize::{Settings, nelder_mead};
use crate::special::{hyp2f1, ln_gamma, log_add_exp};

/// A customer's purchase history summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Customer {
    /// Repeat purchases (distinct purchase periods after the first).
    pub x: f64,
    /// Age at the last repeat purchase (0 when `x = 0`).
    pub t_x: f64,
    /// Age at the end of the calibration window.
    pub t: f64,
}

/// The model's parameters, named as in the paper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// One customer's log-likelihood (equation 6 of the paper, in logs, with the two
/// terms of the sum combined by log-sum-exp).
pub fn log_likelihood(p: &Params, c: &Customer) -> f64 {
    let Params { r, alpha, a, b } = *p;
    let x = c.x;
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
    let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
    let a3 = -(r + x) * (alpha + c.t).ln();
    if x > 0.0 {
        let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + c.t_x).ln();
        a1 + a2 + log_add_exp(a3, a4)
    } else {
        a1 + a2 + a3
    }
}

/// Total log-likelihood of `customers` (each with a weight: how many identical ones).
///
/// The log-gamma terms depend on `x` alone, so they are computed once per distinct
/// `x` (purchase counts are small integers); each customer then costs two logarithms.
/// Large inputs are summed on every core.
pub fn total_log_likelihood(p: &Params, customers: &[(Customer, f64)]) -> f64 {
    crate::parallel_sum(customers, |chunk| chunk_log_likelihood(p, chunk))
}

fn chunk_log_likelihood(p: &Params, customers: &[(Customer, f64)]) -> f64 {
    let Params { r, alpha, a, b } = *p;
    let mut cache: Vec<(f64, f64)> = Vec::new();
    let base = r * alpha.ln() - ln_gamma(r) + ln_gamma(a + b) - ln_gamma(b);
    let ln_a = a.ln();
    let terms = |x: f64| {
        (
            ln_gamma(r + x) + ln_gamma(b + x) - ln_gamma(a + b + x),
            if x > 0.0 {
                ln_a - (b + x - 1.0).ln()
            } else {
                0.0
            },
        )
    };
    let mut total = 0.0;
    for (c, w) in customers {
        let x = c.x;
        // lnΓ(r+x) + lnΓ(b+x) − lnΓ(a+b+x), once per integer x.
        let gammas = if x >= 0.0 && x.fract() == 0.0 && x < 100_000.0 {
            let i = x as usize;
            if cache.len() <= i {
                cache.resize(i + 1, (f64::NAN, 0.0));
            }
            if cache[i].0.is_nan() {
                cache[i] = terms(x);
            }
            cache[i]
        } else {
            terms(x)
        };
        let a3 = -(r + x) * (alpha + c.t).ln();
        let ll = if x > 0.0 {
            let a4 = gammas.1 - (r + x) * (alpha + c.t_x).ln();
            base + gammas.0 + log_add_exp(a3, a4)
        } else {
            base + gammas.0 + a3
        };
        total += w * ll;
    }
    total
}

/// Groups identical summaries (as whole-day data has many) into `(summary, count)`
/// pairs, so that a fit costs one likelihood term per distinct summary.
pub fn group(customers: &[Customer]) -> Vec<(Customer, f64)> {
    let mut index: std::collections::HashMap<[u64; 3], usize> = std::collections::HashMap::new();
    let mut out: Vec<(Customer, f64)> = Vec::new();
    for c in customers {
        let key = [c.x.to_bits(), c.t_x.to_bits(), c.t.to_bits()];
        match index.get(&key) {
            Some(&i) => out[i].1 += 1.0,
            None => {
                index.insert(key, out.len());
                out.push((*c, 1.0));
            }
        }
    }
    out
}

/// Fits the parameters by maximum likelihood (Nelder–Mead on their logs, starting at
/// 1, 1, 1, 1). `customers` may be grouped: identical summaries with a count.
pub fn fit(customers: &[(Customer, f64)]) -> (Params, FitReport) {
    let n: f64 = customers.iter().map(|(_, w)| w).sum::<f64>().max(1.0);
    let params = |v: &[f64]| Params {
        r: v[0].exp(),
        alpha: v[1].exp(),
        a: v[2].exp(),
        b: v[3].exp(),
    };
    let objective = |v: &[f64]| -total_log_likelihood(&params(v), customers) / n;
    let min = nelder_mead(objective, &[0.0; 4], Settings::default());
    let p = params(&min.x);
    let report = FitReport {
        log_likelihood: -min.value * n,
        iterations: min.iterations,
        converged: min.converged && min.value.is_finite(),
    };
    (p, report)
}

/// Probability the customer is still active at the end of the window.
pub fn p_alive(p: &Params, c: &Customer) -> f64 {
    if c.x <= 0.0 {
        return 1.0;
    }
    let log_div =
        (p.r + c.x) * ((p.alpha + c.t) / (p.alpha + c.t_x)).ln() + (p.a / (p.b + c.x - 1.0)).ln();
    // 1 / (1 + e^log_div), stable for large log_div.
    (-log_div.exp().ln_1p()).exp()
}

/// Expected repeat purchases in the next `horizon` time units (equation 10).
pub fn expected_purchases(p: &Params, c: &Customer, horizon: f64) -> f64 {
    let Params { r, alpha, a, b } = *p;
    let x = c.x;
    let z = horizon / (alpha + c.t + horizon);
    let (ha, hb, hc) = (r + x, b + x, a + b + x - 1.0);
    // 2F1 directly, or through Euler's transformation when the series misbehaves.
    let ln_hyp = match hyp2f1(ha, hb, hc, z) {
        Some(v) if v > 0.0 => v.ln(),
        _ => match hyp2f1(hc - ha, hc - hb, hc, z) {
            Some(v) if v > 0.0 => v.ln() + (hc - ha - hb) * (1.0 - z).ln(),
            _ => return f64::NAN,
        },
    };
    let first = (a + b + x - 1.0) / (a - 1.0);
    let second = 1.0 - (ln_hyp + (r + x) * ((alpha + c.t) / (alpha + c.t + horizon)).ln()).exp();
    let denominator = if x > 0.0 {
        1.0 + (a / (b + x - 1.0)) * ((alpha + c.t) / (alpha + c.t_x)).powf(r + x)
    } else {
        1.0
    };
    first * second / denominator
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate;

    #[test]
    fn recovers_the_parameters_it_was_simulated_with() {
        // The CDNOW estimates of the paper (weeks).
        let truth = Params {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        let customers = simulate::bgnbd(&truth, 39.0, 40_000, 7);
        let grouped: Vec<(Customer, f64)> = customers.iter().map(|c| (*c, 1.0)).collect();
        let (fitted, report) = fit(&grouped);
        assert!(report.converged, "{report:?}");
        for (name, got, want, tolerance) in [
            ("r", fitted.r, truth.r, 0.08),
            ("alpha", fitted.alpha, truth.alpha, 0.10),
            ("a", fitted.a, truth.a, 0.15),
            ("b", fitted.b, truth.b, 0.20),
        ] {
            let rel = (got - want).abs() / want;
            assert!(
                rel < tolerance,
                "{name}: fitted {got}, simulated with {want} ({rel:.3} off)"
            );
        }
        // The fast total (log-gamma per distinct x) equals the sum of the textbook terms.
        let reference: f64 = grouped
            .iter()
            .map(|(c, w)| w * log_likelihood(&fitted, c))
            .sum();
        let fast = total_log_likelihood(&fitted, &grouped);
        assert!(
            (fast - reference).abs() < 1e-6 * reference.abs(),
            "{fast} vs {reference}"
        );
        // The fit is a maximum: nudging any parameter lowers the likelihood.
        let best = total_log_likelihood(&fitted, &grouped);
        for i in 0..4 {
            let mut v = [fitted.r, fitted.alpha, fitted.a, fitted.b];
            v[i] *= 1.01;
            let nudged = Params {
                r: v[0],
                alpha: v[1],
                a: v[2],
                b: v[3],
            };
            assert!(total_log_likelihood(&nudged, &grouped) < best);
        }
    }

    #[test]
    fn predictions_behave() {
        let p = Params {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        let new = Customer {
            x: 0.0,
            t_x: 0.0,
            t: 39.0,
        };
        let loyal = Customer {
            x: 10.0,
            t_x: 38.0,
            t: 39.0,
        };
        let lapsed = Customer {
            x: 10.0,
            t_x: 5.0,
            t: 39.0,
        };
        assert_eq!(p_alive(&p, &new), 1.0);
        assert!(p_alive(&p, &loyal) > 0.9);
        assert!(p_alive(&p, &lapsed) < 0.01);
        let e_loyal = expected_purchases(&p, &loyal, 39.0);
        let e_lapsed = expected_purchases(&p, &lapsed, 39.0);
        assert!(e_loyal > 5.0 && e_lapsed < 0.1, "{e_loyal} {e_lapsed}");
        assert!(expected_purchases(&p, &new, 0.0).abs() < 1e-12);
        // More time, more purchases.
        assert!(expected_purchases(&p, &loyal, 52.0) > e_loyal);
    }
}
