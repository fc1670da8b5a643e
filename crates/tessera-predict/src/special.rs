//! Special functions: log-gamma, log-beta, and the Gauss hypergeometric function
//! `2F1(a, b; c; z)` for `0 <= z < 1`.

/// `ln Γ(x)` for `x > 0`.
pub fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// The digamma function `ψ(x) = d/dx ln Γ(x)` for `x > 0`: the recurrence
/// `ψ(x) = ψ(x + 1) − 1/x` up to `x ≥ 10`, then the asymptotic series (error < 1e-13).
pub fn digamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 10.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    result + x.ln()
        - 0.5 * inv
        - inv2
            * (1.0 / 12.0
                - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0))))
}

/// `ln Γ(q + y) − ln Γ(q)` for `q, y > 0`, accurate when `q` is huge next to `y`
/// (where the difference of two log-gammas would cancel to round-off): Stirling's
/// series with the leading terms combined through `log1p`.
pub fn ln_gamma_ratio(q: f64, y: f64) -> f64 {
    if q < 20.0 {
        return ln_gamma(q + y) - ln_gamma(q);
    }
    let z = q + y;
    let tail = |z: f64| {
        let inv = 1.0 / z;
        let inv2 = inv * inv;
        inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0))
    };
    (q - 0.5) * (y / q).ln_1p() + y * z.ln() - y + tail(z) - tail(q)
}

/// `ψ(q + y) − ψ(q)` for `q, y > 0`, accurate when `q` is huge next to `y`.
pub fn digamma_difference(q: f64, y: f64) -> f64 {
    if q < 20.0 {
        return digamma(q + y) - digamma(q);
    }
    // ψ(z) = ln z − 1/(2z) − 1/(12z²) + 1/(120z⁴) − 1/(252z⁶) + …
    let tail = |z: f64| {
        let inv = 1.0 / z;
        let inv2 = inv * inv;
        -0.5 * inv - inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 / 252.0))
    };
    (y / q).ln_1p() + tail(q + y) - tail(q)
}

/// `ln B(a, b)`.
pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `log(exp(a) + exp(b))` without overflow.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// `2F1(a, b; c; z)` by its power series, for `0 <= z < 1` and `c > 0`: the sum of
/// `(a)_n (b)_n / ((c)_n n!) z^n` until terms stop mattering. `None` when it does not
/// converge within the term budget (z too close to 1).
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(0.0..1.0).contains(&z) || c <= 0.0 {
        return None;
    }
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 0..200_000u32 {
        let n = f64::from(n);
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term.abs() <= sum.abs() * 1e-16 {
            return sum.is_finite().then_some(sum);
        }
        if !sum.is_finite() {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_agree_with_differences_and_stay_accurate() {
        for q in [20.0, 35.5, 1e3, 1e5] {
            for y in [0.3, 1.0, 7.5, 60.0] {
                let direct = ln_gamma(q + y) - ln_gamma(q);
                assert!(
                    (ln_gamma_ratio(q, y) - direct).abs() < 1e-9 * (1.0 + direct.abs()),
                    "{q} {y}"
                );
                let d = digamma(q + y) - digamma(q);
                assert!(
                    (digamma_difference(q, y) - d).abs() < 1e-9 * (1.0 + d.abs()),
                    "{q} {y}"
                );
            }
        }
        // For huge q, lnΓ(q+1) − lnΓ(q) = ln q exactly, ψ(q+1) − ψ(q) = 1/q.
        for q in [1e9, 1e12, 1e15] {
            assert!((ln_gamma_ratio(q, 1.0) - q.ln()).abs() < 1e-12 * q.ln());
            assert!((digamma_difference(q, 1.0) - 1.0 / q).abs() < 1e-9 / q);
        }
    }

    #[test]
    fn digamma_values_and_derivative_of_ln_gamma() {
        // ψ(1) = −γ (Euler–Mascheroni), ψ(1/2) = −γ − 2 ln 2.
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-13);
        assert!((digamma(0.5) + euler + 2.0 * std::f64::consts::LN_2).abs() < 1e-13);
        for x in [0.01, 0.3, 2.5, 7.0, 40.0, 1e4] {
            let h = 1e-5 * x;
            let numeric = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            assert!(
                (digamma(x) - numeric).abs() < 1e-6 * (1.0 + numeric.abs()),
                "{x}"
            );
        }
    }

    #[test]
    fn known_values() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z
        let z: f64 = 0.7;
        let exact: f64 = -(1.0f64 - z).ln() / z;
        assert!((hyp2f1(1.0, 1.0, 2.0, z).unwrap() - exact).abs() < 1e-12);
        // 2F1(a, b; b; z) = (1 - z)^-a
        assert!((hyp2f1(2.5, 3.0, 3.0, 0.4).unwrap() - 0.6f64.powf(-2.5)).abs() < 1e-12);
        assert!((log_add_exp(1000.0, 1000.0) - (1000.0 + 2f64.ln())).abs() < 1e-12);
    }
}
