//! L2-regularized logistic regression (the purchase-propensity model) and the metrics
//! that judge a probability model on held-out data: ROC AUC, calibration by decile,
//! Brier score and log loss.
//!
//! Features are standardized (mean 0, standard deviation 1) before fitting, so one
//! penalty suits features of any scale; the intercept is not penalized. The fit is
//! Newton's method (iteratively reweighted least squares) with step halving, which
//! converges in a handful of iterations for the few features a propensity model has.

// Small dense matrix code (Hessian, Cholesky) reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Weights on standardized features.
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Per-feature mean and standard deviation used for standardizing.
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
    /// Penalized negative log-likelihood per row at the optimum.
    pub loss: f64,
}

impl Model {
    /// Probability of the positive class for one row of raw (unstandardized) features.
    pub fn predict(&self, row: &[f64]) -> f64 {
        let mut z = self.intercept;
        for (j, &v) in row.iter().enumerate() {
            z += self.weights[j] * (v - self.means[j]) / self.scales[j];
        }
        sigmoid(z)
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 30.0 { z } else { z.exp().ln_1p() }
}

/// Fits the model to `rows` (each of the same length) and 0/1 `labels` with L2
/// penalty `l2` (sum of squared weights times `l2 / 2`, per row average loss).
pub fn fit(rows: &[Vec<f64>], labels: &[bool], l2: f64) -> Model {
    let n = rows.len();
    let d = rows.first().map_or(0, Vec::len);
    let (means, scales) = standardization(rows, d);
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| (0..d).map(|j| (r[j] - means[j]) / scales[j]).collect())
        .collect();
    let y: Vec<f64> = labels.iter().map(|&l| if l { 1.0 } else { 0.0 }).collect();
    // theta = [intercept, weights...]
    let base_rate = (y.iter().sum::<f64>() + 0.5) / (n as f64 + 1.0);
    let mut theta = vec![0.0; d + 1];
    theta[0] = (base_rate / (1.0 - base_rate)).ln();
    let penalty = l2 / n.max(1) as f64;
    let loss_at = |theta: &[f64]| -> f64 {
        let mut total = 0.0;
        for (xi, &yi) in x.iter().zip(&y) {
            let z = theta[0] + dot(&theta[1..], xi);
            total += softplus(z) - yi * z;
        }
        total / n.max(1) as f64 + 0.5 * penalty * theta[1..].iter().map(|w| w * w).sum::<f64>()
    };
    let mut loss = loss_at(&theta);
    let mut converged = false;
    let mut iterations = 0;
    for iteration in 1..=100 {
        iterations = iteration;
        // Gradient and Hessian of the mean loss.
        let mut grad = vec![0.0; d + 1];
        let mut hess = vec![vec![0.0; d + 1]; d + 1];
        for (xi, &yi) in x.iter().zip(&y) {
            let p = sigmoid(theta[0] + dot(&theta[1..], xi));
            let w = (p * (1.0 - p)).max(1e-12);
            let r = p - yi;
            grad[0] += r;
            hess[0][0] += w;
            for j in 0..d {
                grad[j + 1] += r * xi[j];
                hess[0][j + 1] += w * xi[j];
                for k in j..d {
                    hess[j + 1][k + 1] += w * xi[j] * xi[k];
                }
            }
        }
        let inv_n = 1.0 / n.max(1) as f64;
        for j in 0..=d {
            grad[j] *= inv_n;
            for k in j..=d {
                hess[j][k] *= inv_n;
                hess[k][j] = hess[j][k];
            }
        }
        for j in 1..=d {
            grad[j] += penalty * theta[j];
            hess[j][j] += penalty;
        }
        for (j, row) in hess.iter_mut().enumerate() {
            row[j] += 1e-10;
        }
        let Some(step) = solve(hess, &grad) else {
            break;
        };
        // Step halving keeps every accepted step a descent.
        let mut scale = 1.0;
        let mut accepted = false;
        for _ in 0..30 {
            let candidate: Vec<f64> = theta
                .iter()
                .zip(&step)
                .map(|(t, s)| t - scale * s)
                .collect();
            let candidate_loss = loss_at(&candidate);
            if candidate_loss <= loss + 1e-12 {
                theta = candidate;
                let improvement = loss - candidate_loss;
                loss = candidate_loss;
                accepted = true;
                let largest = step.iter().fold(0.0f64, |m, s| m.max((s * scale).abs()));
                if largest < 1e-8 || improvement < 1e-12 {
                    converged = true;
                }
                break;
            }
            scale *= 0.5;
        }
        if !accepted {
            // No descent direction left: at the optimum to machine precision.
            converged = grad.iter().all(|g| g.abs() < 1e-6);
            break;
        }
        if converged {
            break;
        }
    }
    Model {
        intercept: theta[0],
        weights: theta[1..].to_vec(),
        means,
        scales,
        iterations,
        converged,
        loss,
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn standardization(rows: &[Vec<f64>], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len().max(1) as f64;
    let mut means = vec![0.0; d];
    for r in rows {
        for j in 0..d {
            means[j] += r[j];
        }
    }
    means.iter_mut().for_each(|m| *m /= n);
    let mut scales = vec![0.0; d];
    for r in rows {
        for j in 0..d {
            scales[j] += (r[j] - means[j]).powi(2);
        }
    }
    // A constant feature keeps scale 1 (its standardized value is always 0).
    scales
        .iter_mut()
        .for_each(|s| *s = if *s > 0.0 { (*s / n).sqrt() } else { 1.0 });
    (means, scales)
}

/// Solves `a x = b` for a symmetric positive-definite `a` (Cholesky).
fn solve(mut a: Vec<Vec<f64>>, b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    for j in 0..n {
        let mut diag = a[j][j];
        for k in 0..j {
            diag -= a[j][k] * a[j][k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return None;
        }
        let diag = diag.sqrt();
        a[j][j] = diag;
        for i in j + 1..n {
            let mut v = a[i][j];
            for k in 0..j {
                v -= a[i][k] * a[j][k];
            }
            a[i][j] = v / diag;
        }
    }
    let mut y = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= a[i][k] * y[k];
        }
        y[i] /= a[i][i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= a[k][i] * y[k];
        }
        y[i] /= a[i][i];
    }
    Some(y)
}

/// Area under the ROC curve: the probability that a random positive scores above a
/// random negative (ties count one half). `None` when either class is empty.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[i].total_cmp(&scores[j]));
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the (average, 1-based) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// One bin of a calibration table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationBin {
    /// Rows in the bin.
    pub rows: usize,
    /// Mean predicted probability.
    pub predicted: f64,
    /// Observed rate of positives.
    pub observed: f64,
}

/// Rows sorted by score and cut into `bins` groups of (nearly) equal size: mean
/// prediction against observed rate per group. A calibrated model has them equal.
pub fn calibration(scores: &[f64], labels: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[i].total_cmp(&scores[j]));
    let bins = bins.max(1).min(order.len().max(1));
    (0..bins)
        .filter_map(|b| {
            let slice = &order[b * order.len() / bins..(b + 1) * order.len() / bins];
            (!slice.is_empty()).then(|| {
                let n = slice.len() as f64;
                CalibrationBin {
                    rows: slice.len(),
                    predicted: slice.iter().map(|&i| scores[i]).sum::<f64>() / n,
                    observed: slice.iter().filter(|&&i| labels[i]).count() as f64 / n,
                }
            })
        })
        .collect()
}

/// Mean squared difference between the probability and the 0/1 outcome.
pub fn brier(scores: &[f64], labels: &[bool]) -> f64 {
    let n = scores.len().max(1) as f64;
    scores
        .iter()
        .zip(labels)
        .map(|(&s, &l)| (s - if l { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / n
}

/// Mean negative log-likelihood of the outcomes.
pub fn log_loss(scores: &[f64], labels: &[bool]) -> f64 {
    let n = scores.len().max(1) as f64;
    scores
        .iter()
        .zip(labels)
        .map(|(&s, &l)| {
            let s = s.clamp(1e-15, 1.0 - 1e-15);
            -(if l { s.ln() } else { (1.0 - s).ln() })
        })
        .sum::<f64>()
        / n
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::simulate::Rng;

    fn simulated(
        n: usize,
        weights: &[f64],
        intercept: f64,
        seed: u64,
    ) -> (Vec<Vec<f64>>, Vec<bool>) {
        let mut rng = Rng::new(seed);
        let mut rows = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f64> = weights.iter().map(|_| rng.normal()).collect();
            let p = sigmoid(intercept + dot(weights, &row));
            labels.push(rng.uniform() < p);
            rows.push(row);
        }
        (rows, labels)
    }

    #[test]
    fn recovers_coefficients_without_penalty() {
        let truth = [1.5, -0.8, 0.0];
        let (rows, labels) = simulated(40_000, &truth, -0.5, 7);
        let m = fit(&rows, &labels, 0.0);
        assert!(m.converged, "{m:?}");
        // Back to the raw feature scale: w_raw = w / scale.
        for (j, &t) in truth.iter().enumerate() {
            let w = m.weights[j] / m.scales[j];
            assert!((w - t).abs() < 0.05, "feature {j}: {w} vs {t}");
        }
    }

    #[test]
    fn penalty_shrinks_weights() {
        let (rows, labels) = simulated(2_000, &[1.0, 1.0], 0.0, 3);
        let free = fit(&rows, &labels, 0.0);
        let shrunk = fit(&rows, &labels, 2_000.0);
        let norm = |m: &Model| m.weights.iter().map(|w| w * w).sum::<f64>();
        assert!(norm(&shrunk) < 0.5 * norm(&free));
    }

    #[test]
    fn separable_data_stays_finite() {
        let rows: Vec<Vec<f64>> = (0..100).map(|i| vec![i as f64]).collect();
        let labels: Vec<bool> = (0..100).map(|i| i >= 50).collect();
        let m = fit(&rows, &labels, 1.0);
        assert!(m.weights[0].is_finite() && m.predict(&[99.0]) > 0.9 && m.predict(&[0.0]) < 0.1);
    }

    #[test]
    fn constant_feature_and_one_class() {
        let rows: Vec<Vec<f64>> = (0..10).map(|_| vec![3.0]).collect();
        let m = fit(&rows, &[false; 10], 1.0);
        assert!(m.predict(&[3.0]) < 0.1 && m.predict(&[3.0]).is_finite());
    }

    #[test]
    fn auc_against_pair_counting() {
        let mut rng = Rng::new(11);
        for _ in 0..20 {
            let n = 60;
            // Coarse scores so that ties happen.
            let scores: Vec<f64> = (0..n).map(|_| (rng.uniform() * 8.0).floor()).collect();
            let labels: Vec<bool> = (0..n).map(|_| rng.uniform() < 0.4).collect();
            let mut wins = 0.0;
            let mut pairs = 0.0;
            for i in 0..n {
                for j in 0..n {
                    if labels[i] && !labels[j] {
                        pairs += 1.0;
                        wins += match scores[i].total_cmp(&scores[j]) {
                            std::cmp::Ordering::Greater => 1.0,
                            std::cmp::Ordering::Equal => 0.5,
                            std::cmp::Ordering::Less => 0.0,
                        };
                    }
                }
            }
            let expected = wins / pairs;
            assert!((auc(&scores, &labels).unwrap() - expected).abs() < 1e-12);
        }
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn calibration_of_a_calibrated_model() {
        let (rows, labels) = simulated(50_000, &[1.0], 0.0, 5);
        let m = fit(&rows, &labels, 0.0);
        let scores: Vec<f64> = rows.iter().map(|r| m.predict(r)).collect();
        for bin in calibration(&scores, &labels, 10) {
            assert!((bin.predicted - bin.observed).abs() < 0.03, "{bin:?}");
        }
        assert!(brier(&scores, &labels) < 0.25);
        assert!(log_loss(&scores, &labels) < std::f64::consts::LN_2);
    }
}
