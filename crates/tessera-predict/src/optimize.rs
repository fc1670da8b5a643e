//! Nelder–Mead minimization (adaptive parameters of Gao & Han, 2012), used on the log
//! of positive model parameters so that every point it tries is valid.

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

#[cfg(test)]
mod tests {
    use super::*;

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
