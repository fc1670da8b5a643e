//! Minimizers, used on the log of positive model parameters so that every point they
//! try is valid: BFGS (quasi-Newton with an Armijo backtracking line search) for
//! objectives with an analytic gradient, Nelder–Mead (adaptive parameters of Gao &
//! Han, 2012) for the others.

/// Settings of [`nelder_mead`].
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Stop when the simplex's function values differ by less than this.
    pub f_tolerance: f64,
    /// ... and its vertices by less than this in every coordinate.
    pub x_tolerance: f64,
    /// Give up (not converged) after this many iterations.
    pub max_iterations: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            f_tolerance: 1e-10,
            x_tolerance: 1e-8,
            max_iterations: 20_000,
        }
    }
}

/// The minimum found: where, its value, iterations, and whether tolerances were met.
#[derive(Debug, Clone)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// Minimizes `f` from `start`. Non-finite values are treated as +infinity (a wall).
pub fn nelder_mead(f: impl Fn(&[f64]) -> f64, start: &[f64], settings: Settings) -> Minimum {
    let n = start.len();
    let dim = n as f64;
    let (alpha, gamma, rho, sigma) = (
        1.0,
        1.0 + 2.0 / dim,
        0.75 - 1.0 / (2.0 * dim),
        1.0 - 1.0 / dim,
    );
    let eval = |x: &[f64]| {
        let v = f(x);
        if v.is_finite() { v } else { f64::INFINITY }
    };
    let mut simplex: Vec<Vec<f64>> = vec![start.to_vec()];
    for i in 0..n {
        let mut v = start.to_vec();
        v[i] += if v[i] == 0.0 {
            0.25
        } else {
            0.25 * v[i].abs().max(1.0)
        };
        simplex.push(v);
    }
    let mut values: Vec<f64> = simplex.iter().map(|x| eval(x)).collect();
    let mut iterations = 0;
    let mut converged = false;
    while iterations < settings.max_iterations {
        iterations += 1;
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        simplex = order.iter().map(|&i| simplex[i].clone()).collect();
        values = order.iter().map(|&i| values[i]).collect();

        let spread_f = (values[n] - values[0]).abs();
        let spread_x = simplex[1..]
            .iter()
            .flat_map(|v| v.iter().zip(&simplex[0]).map(|(a, b)| (a - b).abs()))
            .fold(0.0, f64::max);
        if spread_f <= settings.f_tolerance && spread_x <= settings.x_tolerance {
            converged = true;
            break;
        }

        let centroid: Vec<f64> = (0..n)
            .map(|j| simplex[..n].iter().map(|v| v[j]).sum::<f64>() / dim)
            .collect();
        let towards = |coef: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[n])
                .map(|(c, w)| c + coef * (c - w))
                .collect()
        };
        let reflected = towards(alpha);
        let fr = eval(&reflected);
        if fr < values[0] {
            let expanded = towards(alpha * gamma);
            let fe = eval(&expanded);
            if fe < fr {
                simplex[n] = expanded;
                values[n] = fe;
            } else {
                simplex[n] = reflected;
                values[n] = fr;
            }
            continue;
        }
        if fr < values[n - 1] {
            simplex[n] = reflected;
            values[n] = fr;
            continue;
        }
        let (contracted, fc) = if fr < values[n] {
            let c = towards(alpha * rho);
            let v = eval(&c);
            (c, v)
        } else {
            let c = towards(-rho);
            let v = eval(&c);
            (c, v)
        };
        if fc < values[n].min(fr) {
            simplex[n] = contracted;
            values[n] = fc;
            continue;
        }
        // Shrink towards the best vertex.
        for i in 1..=n {
            let shrunk: Vec<f64> = simplex[0]
                .iter()
                .zip(&simplex[i])
                .map(|(b, v)| b + sigma * (v - b))
                .collect();
            values[i] = eval(&shrunk);
            simplex[i] = shrunk;
        }
    }
    let best = (0..=n)
        .min_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap_or(0);
    Minimum {
        x: simplex[best].clone(),
        value: values[best],
        iterations,
        converged,
    }
}

/// Settings of [`bfgs`].
#[derive(Debug, Clone, Copy)]
pub struct BfgsSettings {
    /// Converged when every gradient component is at most this in magnitude.
    pub g_tolerance: f64,
    /// ... or when an iteration improves the value by less than this, relatively.
    pub f_tolerance: f64,
    pub max_iterations: usize,
    /// Largest step in any coordinate (log parameters: a factor of e^5).
    pub max_step: f64,
}

impl Default for BfgsSettings {
    fn default() -> Self {
        BfgsSettings {
            g_tolerance: 1e-9,
            f_tolerance: 1e-15,
            max_iterations: 500,
            max_step: 5.0,
        }
    }
}

/// Minimizes `f` (returning its value and gradient) from `start` by BFGS. A point
/// where `f` is not finite is a wall: the line search backs off from it.
pub fn bfgs(
    f: impl Fn(&[f64]) -> (f64, Vec<f64>),
    start: &[f64],
    settings: BfgsSettings,
) -> Minimum {
    let n = start.len();
    let mut x = start.to_vec();
    let (mut value, mut grad) = f(&x);
    let mut h = identity(n);
    let mut iterations = 0;
    let mut converged = false;
    let max_abs = |v: &[f64]| v.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    if !value.is_finite() {
        return Minimum {
            x,
            value,
            iterations,
            converged,
        };
    }
    while iterations < settings.max_iterations {
        if max_abs(&grad) <= settings.g_tolerance {
            converged = true;
            break;
        }
        iterations += 1;
        let mut direction: Vec<f64> = (0..n)
            .map(|i| -(0..n).map(|j| h[i][j] * grad[j]).sum::<f64>())
            .collect();
        let mut slope: f64 = direction.iter().zip(&grad).map(|(d, g)| d * g).sum();
        if slope >= 0.0 || !slope.is_finite() {
            // Not a descent direction: restart from steepest descent.
            h = identity(n);
            direction = grad.iter().map(|g| -g).collect();
            slope = -grad.iter().map(|g| g * g).sum::<f64>();
        }
        let longest = max_abs(&direction);
        let mut step = if longest > settings.max_step {
            settings.max_step / longest
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..60 {
            let candidate: Vec<f64> = x
                .iter()
                .zip(&direction)
                .map(|(x, d)| x + step * d)
                .collect();
            let (v, g) = f(&candidate);
            if v.is_finite() && v <= value + 1e-4 * step * slope && g.iter().all(|g| g.is_finite())
            {
                accepted = Some((candidate, v, g));
                break;
            }
            step *= 0.5;
        }
        let Some((new_x, new_value, new_grad)) = accepted else {
            // No decrease along a descent direction: at the minimum to machine precision.
            converged = max_abs(&grad) <= settings.g_tolerance.sqrt();
            break;
        };
        let s: Vec<f64> = new_x.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let improvement = value - new_value;
        x = new_x;
        grad = new_grad;
        let previous = value;
        value = new_value;
        if improvement <= settings.f_tolerance * previous.abs().max(1.0)
            && max_abs(&grad) <= settings.g_tolerance.sqrt()
        {
            converged = true;
            break;
        }
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        if sy > 1e-16 {
            if iterations == 1 {
                // Scale the first approximation to the curvature just seen.
                let yy: f64 = y.iter().map(|v| v * v).sum();
                h = identity(n);
                h.iter_mut()
                    .enumerate()
                    .for_each(|(i, row)| row[i] = sy / yy);
            }
            let rho = 1.0 / sy;
            let hy: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| h[i][j] * y[j]).sum())
                .collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    h[i][j] += -rho * (hy[i] * s[j] + s[i] * hy[j])
                        + (rho * rho * yhy + rho) * s[i] * s[j];
                }
            }
        }
    }
    Minimum {
        x,
        value,
        iterations,
        converged,
    }
}

fn identity(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfgs_finds_the_rosenbrock_minimum() {
        let rosen = |x: &[f64]| {
            let value = (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
            let grad = vec![
                -2.0 * (1.0 - x[0]) - 400.0 * x[0] * (x[1] - x[0] * x[0]),
                200.0 * (x[1] - x[0] * x[0]),
            ];
            (value, grad)
        };
        let m = bfgs(rosen, &[-1.2, 1.0], BfgsSettings::default());
        assert!(m.converged, "{m:?}");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
    }

    #[test]
    fn bfgs_converges_on_a_flat_ray() {
        // Infimum at infinity (like a BG/NBD fit whose customers never drop out): the
        // gradient vanishes along the way and the fit says it converged.
        let f = |x: &[f64]| {
            (
                (-x[0]).exp() + (x[1] - 1.0).powi(2),
                vec![-(-x[0]).exp(), 2.0 * (x[1] - 1.0)],
            )
        };
        let m = bfgs(f, &[0.0, 0.0], BfgsSettings::default());
        assert!(m.converged && (m.x[1] - 1.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn finds_the_rosenbrock_minimum() {
        let rosen = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let m = nelder_mead(rosen, &[-1.2, 1.0], Settings::default());
        assert!(m.converged);
        assert!(
            (m.x[0] - 1.0).abs() < 1e-4 && (m.x[1] - 1.0).abs() < 1e-4,
            "{m:?}"
        );
    }

    #[test]
    fn reports_no_convergence() {
        let m = nelder_mead(
            |x: &[f64]| x[0],
            &[0.0],
            Settings {
                max_iterations: 50,
                ..Settings::default()
            },
        );
        assert!(!m.converged);
    }
}
