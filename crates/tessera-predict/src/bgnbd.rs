//! The BG/NBD model ("beta-geometric / negative binomial distribution", Fader, Hardie &
//! Lee 2005, "Counting your customers the easy way").
//!
//! While active, a customer buys at Poisson rate `λ`, with `λ ~ Gamma(r, α)` across
//! customers; after each repeat purchase she becomes inactive with probability `p`,
//! `p ~ Beta(a, b)`. A customer is summarized by `x` (repeat purchases), `t_x` (time of
//! the last one since the first purchase) and `T` (time since the first purchase), all
//! in one time unit (days or weeks).

use crate::FitReport;
use crate::optimize::{BfgsSettings, bfgs};
use crate::special::{digamma, hyp2f1, ln_gamma, log_add_exp};

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
pub fn total_log_likelihood(p: &Params, customers: &[(Customer, f64)]) -> f64 {
    log_likelihood_gradient(p, customers).0
}

/// Total log-likelihood and its gradient with respect to `(r, alpha, a, b)`.
///
/// With `A3 = −(r+x) ln(α+T)`, `A4 = ln a − ln(b+x−1) − (r+x) ln(α+t_x)` and the
/// weights `w3, w4` of the two terms of the log-sum-exp, the derivatives are
/// `∂r = ln α + ψ(r+x) − ψ(r) − w3 ln(α+T) − w4 ln(α+t_x)`,
/// `∂α = r/α − (r+x) (w3/(α+T) + w4/(α+t_x))`, `∂a = ψ(a+b) − ψ(a+b+x) + w4/a`,
/// `∂b = ψ(a+b) − ψ(b) + ψ(b+x) − ψ(a+b+x) − w4/(b+x−1)`.
///
/// The gamma-function terms depend on `x` alone. For whole `x` (purchase counts) they
/// are finite sums — `lnΓ(r+x) − lnΓ(r) = Σ ln(r+k)`, `ψ(b+x) − ψ(b) = Σ 1/(b+k)`, … for
/// `k < x` — tabulated once per evaluation: exact where differences of log-gammas of
/// huge arguments would cancel to noise (`a, b → ∞` when dropout barely varies between
/// customers). Large inputs are summed on every core.
pub fn log_likelihood_gradient(p: &Params, customers: &[(Customer, f64)]) -> (f64, [f64; 4]) {
    let sums = crate::parallel_fold(customers, |chunk| chunk_gradient(p, chunk));
    (sums[0], [sums[1], sums[2], sums[3], sums[4]])
}

/// The terms of the likelihood and its gradient that depend on `x` alone.
#[derive(Clone, Copy)]
struct XTerms {
    /// `lnΓ(r+x) − lnΓ(r)`.
    ln_r: f64,
    /// `lnΓ(a+b) − lnΓ(b) + lnΓ(b+x) − lnΓ(a+b+x)`.
    ln_ab: f64,
    /// `ln a − ln(b+x−1)` (0 for `x = 0`).
    ln_a_over: f64,
    /// `ψ(r+x) − ψ(r)`.
    psi_r: f64,
    /// `ψ(b+x) − ψ(b)`.
    psi_b: f64,
    /// `ψ(a+b+x) − ψ(a+b)`.
    psi_ab: f64,
    /// `1/(b+x−1)` (0 for `x = 0`).
    inv_b_x1: f64,
}

/// Whole purchase counts up to this are tabulated; others use log-gamma directly.
const TABLE_LIMIT: f64 = 100_000.0;

/// `XTerms` for every whole `x` in `0..=max`, by running sums.
fn x_table(p: &Params, max: usize) -> Vec<XTerms> {
    let Params { r, a, b, .. } = *p;
    let mut out = Vec::with_capacity(max + 1);
    let (mut ln_r, mut ln_ab, mut psi_r, mut psi_b, mut psi_ab) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for x in 0..=max {
        let xf = x as f64;
        out.push(XTerms {
            ln_r,
            ln_ab,
            ln_a_over: if x > 0 {
                a.ln() - (b + xf - 1.0).ln()
            } else {
                0.0
            },
            psi_r,
            psi_b,
            psi_ab,
            inv_b_x1: if x > 0 { 1.0 / (b + xf - 1.0) } else { 0.0 },
        });
        ln_r += (r + xf).ln();
        ln_ab += ((b + xf) / (a + b + xf)).ln();
        psi_r += 1.0 / (r + xf);
        psi_b += 1.0 / (b + xf);
        psi_ab += 1.0 / (a + b + xf);
    }
    out
}

/// `XTerms` of a fractional (or huge) `x`, from log-gamma and digamma.
fn x_terms_direct(p: &Params, x: f64) -> XTerms {
    let Params { r, a, b, .. } = *p;
    XTerms {
        ln_r: ln_gamma(r + x) - ln_gamma(r),
        ln_ab: ln_gamma(a + b) - ln_gamma(b) + ln_gamma(b + x) - ln_gamma(a + b + x),
        ln_a_over: if x > 0.0 {
            a.ln() - (b + x - 1.0).ln()
        } else {
            0.0
        },
        psi_r: digamma(r + x) - digamma(r),
        psi_b: digamma(b + x) - digamma(b),
        psi_ab: digamma(a + b + x) - digamma(a + b),
        inv_b_x1: if x > 0.0 { 1.0 / (b + x - 1.0) } else { 0.0 },
    }
}

fn whole(x: f64) -> bool {
    x >= 0.0 && x.fract() == 0.0 && x <= TABLE_LIMIT
}

fn chunk_gradient(p: &Params, customers: &[(Customer, f64)]) -> [f64; 5] {
    let Params { r, alpha, a, .. } = *p;
    let max = customers
        .iter()
        .map(|(c, _)| c.x)
        .filter(|&x| whole(x))
        .fold(0.0f64, f64::max) as usize;
    let table = x_table(p, max);
    let ln_alpha = alpha.ln();
    let mut out = [0.0; 5];
    for (c, w) in customers {
        let x = c.x;
        let t = if whole(x) {
            table[x as usize]
        } else {
            x_terms_direct(p, x)
        };
        let ln_t = (alpha + c.t).ln();
        let a3 = -(r + x) * ln_t;
        let (lse, w3, w4, ln_tx, inv_tx) = if x > 0.0 {
            let ln_tx = (alpha + c.t_x).ln();
            let a4 = t.ln_a_over - (r + x) * ln_tx;
            let lse = log_add_exp(a3, a4);
            (
                lse,
                (a3 - lse).exp(),
                (a4 - lse).exp(),
                ln_tx,
                1.0 / (alpha + c.t_x),
            )
        } else {
            (a3, 1.0, 0.0, 0.0, 0.0)
        };
        out[0] += w * (r * ln_alpha + t.ln_r + t.ln_ab + lse);
        out[1] += w * (ln_alpha + t.psi_r - w3 * ln_t - w4 * ln_tx);
        out[2] += w * (r / alpha - (r + x) * (w3 / (alpha + c.t) + w4 * inv_tx));
        out[3] += w * (-t.psi_ab + w4 / a);
        out[4] += w * (t.psi_b - t.psi_ab - w4 * t.inv_b_x1);
    }
    out
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

/// Fits the parameters by maximum likelihood: BFGS with the analytic gradient on
/// their logs, starting at 1, 1, 1, 1. `customers` may be grouped: identical
/// summaries with a count. When the data show no dropout at all, the likelihood keeps
/// rising as `b → ∞` (`a/b → 0`); the fit stops where it has flattened and reports
/// convergence with a large `b` (P(alive) ≈ 1 for everyone).
pub fn fit(customers: &[(Customer, f64)]) -> (Params, FitReport) {
    let n: f64 = customers.iter().map(|(_, w)| w).sum::<f64>().max(1.0);
    let params = |v: &[f64]| Params {
        r: v[0].exp(),
        alpha: v[1].exp(),
        a: v[2].exp(),
        b: v[3].exp(),
    };
    // Mean negative log-likelihood and its gradient in log parameters (chain rule:
    // ∂/∂ln θ = θ ∂/∂θ).
    let objective = |v: &[f64]| {
        let p = params(v);
        let (ll, g) = log_likelihood_gradient(&p, customers);
        let scale = [p.r, p.alpha, p.a, p.b];
        (
            -ll / n,
            (0..4).map(|i| -g[i] * scale[i] / n).collect::<Vec<f64>>(),
        )
    };
    let min = bfgs(objective, &[0.0; 4], BfgsSettings::default());
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
    fn converges_when_dropout_does_not_vary() {
        // Every customer drops out with probability 0.3 after each purchase: the Beta
        // of the model degenerates (a, b → ∞ at a fixed ratio). The fit must still
        // converge with finite predictions, not chase round-off.
        let truth = Params {
            r: 0.5,
            alpha: 2.0,
            a: 3e5,
            b: 7e5,
        };
        let customers = group(&simulate::bgnbd(&truth, 20.0, 4_000, 5));
        let (p, report) = fit(&customers);
        assert!(report.converged, "{p:?} {report:?}");
        assert!((p.a / (p.a + p.b) - 0.3).abs() < 0.05, "{p:?}");
        assert!(report.log_likelihood <= 0.0);
        for (c, _) in &customers {
            let alive = p_alive(&p, c);
            assert!((0.0..=1.0).contains(&alive));
            assert!(expected_purchases(&p, c, 10.0).is_finite());
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let truth = Params {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        let customers = group(&simulate::bgnbd(&truth, 39.0, 3_000, 17));
        let at = Params {
            r: 0.5,
            alpha: 3.0,
            a: 1.2,
            b: 4.0,
        };
        let (ll, g) = log_likelihood_gradient(&at, &customers);
        assert!((ll - total_log_likelihood(&at, &customers)).abs() < 1e-8 * ll.abs());
        for i in 0..4 {
            let nudged = |h: f64| {
                let mut v = [at.r, at.alpha, at.a, at.b];
                v[i] += h;
                total_log_likelihood(
                    &Params {
                        r: v[0],
                        alpha: v[1],
                        a: v[2],
                        b: v[3],
                    },
                    &customers,
                )
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
