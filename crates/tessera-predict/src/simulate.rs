//! The models' generative processes with a seeded generator: customers drawn from known
//! parameters, for parameter-recovery tests and benchmarks.

use crate::{bgnbd, gamma_gamma};

/// A seeded pseudo-random generator (SplitMix64) with the draws the models need.
#[derive(Debug, Clone)]
pub struct Rng(tessera_core::random::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(tessera_core::random::SplitMix64::new(
            seed ^ 0x9E37_79B9_7F4A_7C15,
        ))
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform on (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Exponential with the given rate.
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -self.uniform().ln() / rate
    }

    /// Gamma with `shape` and `rate` (Marsaglia & Tsang; boosted for shape < 1).
    pub fn gamma(&mut self, shape: f64, rate: f64) -> f64 {
        if shape < 1.0 {
            let boost = self.uniform().powf(1.0 / shape);
            return self.gamma(shape + 1.0, rate) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let z = self.normal();
            let v = (1.0 + c * z).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
                return d * v / rate;
            }
        }
    }

    /// Beta(a, b).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a, 1.0);
        let y = self.gamma(b, 1.0);
        x / (x + y)
    }
}

/// `n` customers observed for `t` time units from their first purchase under BG/NBD.
pub fn bgnbd(params: &bgnbd::Params, t: f64, n: usize, seed: u64) -> Vec<bgnbd::Customer> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let lambda = rng.gamma(params.r, params.alpha);
            let p = rng.beta(params.a, params.b);
            let (mut x, mut t_x, mut now) = (0.0, 0.0, 0.0);
            loop {
                now += rng.exponential(lambda);
                if now >= t {
                    break;
                }
                x += 1.0;
                t_x = now;
                if rng.uniform() < p {
                    break;
                }
            }
            bgnbd::Customer { x, t_x, t }
        })
        .collect()
}

/// `n` repeat buyers under Gamma-Gamma: `(x, average value)`, with `x` from 1 to 10.
pub fn gamma_gamma(params: &gamma_gamma::Params, n: usize, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let nu = rng.gamma(params.q, params.gamma);
            let x = 1 + (rng.next_u64() % 10) as usize;
            let total: f64 = (0..x).map(|_| rng.gamma(params.p, nu)).sum();
            (x as f64, total / x as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_have_the_right_moments() {
        let mut rng = Rng::new(3);
        let n = 200_000;
        for (shape, rate) in [(0.3, 2.0), (4.0, 0.5)] {
            let xs: Vec<f64> = (0..n).map(|_| rng.gamma(shape, rate)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            assert!(
                (mean - shape / rate).abs() / (shape / rate) < 0.02,
                "{shape} {rate} mean {mean}"
            );
            assert!(
                (var - shape / rate / rate).abs() / (shape / rate / rate) < 0.05,
                "{shape} {rate} var {var}"
            );
        }
        let bs: Vec<f64> = (0..n).map(|_| rng.beta(0.8, 2.4)).collect();
        let mean = bs.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.8 / 3.2).abs() < 0.005, "beta mean {mean}");
    }
}
