//! Tessera's predictive models, as pure functions over per-customer summaries.
//!
//! - [`bgnbd`]: the BG/NBD model (Fader, Hardie & Lee, 2005) of repeat purchasing:
//!   maximum-likelihood fit of `r`, `alpha`, `a`, `b`; expected purchases over a horizon
//!   and the probability a customer is still active ("alive").
//! - [`gamma_gamma`]: the Gamma-Gamma model of spend per transaction (Fader & Hardie,
//!   2013): fit of `p`, `q`, `gamma`; expected average order value.
//! - [`optimize`]: the Nelder–Mead minimizer the fits use (on log parameters).
//! - [`special`]: log-gamma, log-beta and the Gauss hypergeometric function.
//! - [`simulate`]: the models' generative processes, for parameter-recovery tests and
//!   benchmarks.
//!
//! - [`logistic`]: L2-regularized logistic regression (purchase propensity) with AUC
//!   and calibration.
//! - [`run`]: `tessera predict` — summaries in SQL over the lake, the fits, and the
//!   `scores` and `model_runs` tables. Everything else is pure functions.

pub mod bgnbd;
pub mod error;
pub mod gamma_gamma;
pub mod history;
pub mod logistic;
pub mod optimize;
pub mod run;
pub mod simulate;
pub mod special;

pub use error::{PredictError, Result};
pub use run::{DataQuality, Model, ModelRun, PredictOptions, Report, Status};

/// What a fit reports besides its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitReport {
    /// Total log-likelihood of the data at the optimum.
    pub log_likelihood: f64,
    /// Minimizer iterations used.
    pub iterations: usize,
    /// Whether the minimizer met its tolerance (a fit that did not must not be used).
    pub converged: bool,
}

/// `f` (returning several sums) summed over chunks of `items`, on every core when
/// there are enough items to pay for the threads.
pub(crate) fn parallel_fold<T: Sync, const K: usize>(
    items: &[T],
    f: impl Fn(&[T]) -> [f64; K] + Sync,
) -> [f64; K] {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    if threads < 2 || items.len() < 20_000 {
        return f(items);
    }
    let size = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(size)
            .map(|chunk| scope.spawn(|| f(chunk)))
            .collect();
        let mut total = [0.0; K];
        for h in handles {
            let part = h.join().unwrap_or([f64::NAN; K]);
            for (t, p) in total.iter_mut().zip(part) {
                *t += p;
            }
        }
        total
    })
}

/// `f` applied to every item, in order, on every core when there are enough items.
pub fn parallel_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    if threads < 2 || items.len() < 20_000 {
        return items.iter().map(&f).collect();
    }
    let size = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(size)
            .map(|chunk| scope.spawn(|| chunk.iter().map(&f).collect::<Vec<U>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
