//! The Fellegi–Sunter model of record linkage (pure, no I/O).
//!
//! A candidate pair of records is compared field by field; each comparison yields a
//! *level* (`0` = the lowest agreement, "else", up to `levels - 1` = exact) or no
//! information when a value is missing. For matching pairs the levels follow the
//! `m` distributions, for non-matching ones the `u` distributions, and a fraction `λ` of
//! the candidate pairs are matches. Assuming the comparisons independent given the
//! match status, a pair's *match weight* is
//!
//! ```text
//!   w = log2(λ / (1 − λ)) + Σ_j log2(m_j[level_j] / u_j[level_j])
//! ```
//!
//! (missing comparisons add nothing) and its match probability `2^w / (1 + 2^w)`.
//!
//! Training follows the practice of Splink: `u` from pairs drawn at random (nearly all
//! of them non-matches), then `m` and `λ` by expectation–maximisation over the blocked
//! candidate pairs with `u` held fixed. Pairs are grouped by their *comparison vector*
//! first: EM iterates over the distinct vectors with their counts, so its cost does not
//! grow with the number of pairs.
//!
//! **Term frequencies**: agreeing on a common value ("Smith") is weaker evidence than
//! agreeing on a rare one ("Zyzzyva"). For a comparison with term-frequency
//! adjustment, an exact agreement on value `v` uses `u = tf(v)`, the share of records
//! holding `v` (the chance that two records picked at random agree on `v`, given one
//! holds it), instead of the average `u` of exact agreement — as Splink does.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A missing comparison (either value null).
pub const NULL_LEVEL: u8 = u8::MAX;

/// Distributions of one comparison's levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub name: String,
    /// Level labels, lowest ("else") first; the last one is exact agreement.
    pub levels: Vec<String>,
    /// P(level | match).
    pub m: Vec<f64>,
    /// P(level | non-match).
    pub u: Vec<f64>,
    /// Whether an exact agreement is weighted by the agreed value's frequency.
    pub tf_adjust: bool,
}

impl Comparison {
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// log2(m / u) of `level` (0 for a missing comparison).
    pub fn weight(&self, level: u8) -> f64 {
        if level == NULL_LEVEL {
            return 0.0;
        }
        let l = level as usize;
        (self.m[l] / self.u[l]).log2()
    }

    /// The weight of an exact agreement on a value whose frequency is `tf` (its share
    /// of the records), when this comparison adjusts for term frequency.
    pub fn exact_weight_tf(&self, tf: f64) -> f64 {
        let exact = self.level_count() - 1;
        let u = tf.max(f64::MIN_POSITIVE);
        (self.m[exact] / u).log2()
    }
}

/// A trained (or initial) model; stored as JSON so that `predict` reuses what `train`
/// learnt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Prior share of matches among candidate pairs.
    pub lambda: f64,
    pub comparisons: Vec<Comparison>,
}

/// Why a pair scored what it did: the prior and each comparison's level and weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub prior_weight: f64,
    /// (comparison, level label or `null`, weight), in model order.
    pub terms: Vec<(String, String, f64)>,
    pub weight: f64,
    pub probability: f64,
}

/// Distinct comparison vectors and how many pairs have each.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    /// Number of comparisons per vector.
    pub width: usize,
    /// Vectors, `width` levels each, concatenated.
    pub levels: Vec<u8>,
    pub counts: Vec<u64>,
}

impl Patterns {
    pub fn new(width: usize) -> Patterns {
        Patterns {
            width,
            ..Patterns::default()
        }
    }

    /// Groups pair vectors (`width` levels each, concatenated).
    pub fn from_pairs(width: usize, pairs: &[u8]) -> Patterns {
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut out = Patterns::new(width);
        if width == 0 {
            return out;
        }
        for v in pairs.chunks_exact(width) {
            match index.get(v) {
                Some(&i) => out.counts[i] += 1,
                None => {
                    index.insert(v, out.counts.len());
                    out.levels.extend_from_slice(v);
                    out.counts.push(1);
                }
            }
        }
        out
    }

    /// Adds `count` pairs with vector `v`.
    pub fn push(&mut self, v: &[u8], count: u64) {
        debug_assert_eq!(v.len(), self.width);
        self.levels.extend_from_slice(v);
        self.counts.push(count);
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn vector(&self, i: usize) -> &[u8] {
        &self.levels[i * self.width..(i + 1) * self.width]
    }

    pub fn pairs(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Level shares over `patterns` (missing comparisons left out): the `u` estimate from
/// randomly sampled pairs. Levels never seen get a small floor so that weights stay
/// finite.
pub fn level_shares(patterns: &Patterns, level_counts: &[usize]) -> Vec<Vec<f64>> {
    let mut counts: Vec<Vec<f64>> = level_counts.iter().map(|&n| vec![0.0; n]).collect();
    for i in 0..patterns.len() {
        let c = patterns.counts[i] as f64;
        for (j, &l) in patterns.vector(i).iter().enumerate() {
            if l != NULL_LEVEL {
                counts[j][l as usize] += c;
            }
        }
    }
    counts.into_iter().map(normalize).collect()
}

/// Smallest probability a level keeps (weights stay finite on unseen levels).
const FLOOR: f64 = 1e-6;

fn normalize(mut v: Vec<f64>) -> Vec<f64> {
    let total: f64 = v.iter().sum();
    let n = v.len() as f64;
    for x in &mut v {
        *x = if total > 0.0 { *x / total } else { 1.0 / n };
        *x = x.max(FLOOR);
    }
    let total: f64 = v.iter().sum();
    v.iter_mut().for_each(|x| *x /= total);
    v
}

/// How EM went.
#[derive(Debug, Clone, PartialEq)]
pub struct EmReport {
    pub iterations: usize,
    pub converged: bool,
    /// The largest parameter change of the last iteration.
    pub last_change: f64,
}

/// EM options.
#[derive(Debug, Clone, Copy)]
pub struct EmOptions {
    pub max_iterations: usize,
    /// Stop when no parameter moves more than this.
    pub tolerance: f64,
    /// Re-estimate `u` as well (otherwise `u` stays as given, e.g. from random sampling).
    pub update_u: bool,
    /// Re-estimate `m` (otherwise only `λ` is estimated, `m` and `u` as given).
    pub update_m: bool,
}

impl Default for EmOptions {
    fn default() -> Self {
        EmOptions {
            max_iterations: 200,
            tolerance: 1e-6,
            update_u: false,
            update_m: true,
        }
    }
}

/// Why a stored model cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidModel(pub String);

impl Model {
    /// A starting point: `m` rising towards exact agreement, the given `u`.
    pub fn initial(
        names: &[String],
        labels: &[Vec<String>],
        u: Vec<Vec<f64>>,
        lambda: f64,
    ) -> Model {
        let comparisons = names
            .iter()
            .zip(labels)
            .zip(u)
            .map(|((name, levels), u)| {
                let n = levels.len();
                // Geometric: exact agreement is the likeliest level of a match.
                let m = normalize((0..n).map(|l| 2f64.powi(l as i32 * 2)).collect());
                Comparison {
                    name: name.clone(),
                    levels: levels.clone(),
                    m,
                    u,
                    tf_adjust: false,
                }
            })
            .collect();
        Model {
            lambda,
            comparisons,
        }
    }

    /// The match weight of a comparison vector (no term-frequency adjustment).
    pub fn weight(&self, levels: &[u8]) -> f64 {
        self.prior_weight()
            + self
                .comparisons
                .iter()
                .zip(levels)
                .map(|(c, &l)| c.weight(l))
                .sum::<f64>()
    }

    /// The weight of a comparison vector term by term.
    pub fn explain(&self, levels: &[u8]) -> Explanation {
        let terms: Vec<(String, String, f64)> = self
            .comparisons
            .iter()
            .zip(levels)
            .map(|(c, &l)| {
                let label = if l == NULL_LEVEL {
                    "null".to_owned()
                } else {
                    c.levels[l as usize].clone()
                };
                (c.name.clone(), label, c.weight(l))
            })
            .collect();
        let weight = self.prior_weight() + terms.iter().map(|t| t.2).sum::<f64>();
        Explanation {
            prior_weight: self.prior_weight(),
            terms,
            weight,
            probability: probability(weight),
        }
    }

    /// The model as JSON (parameters, levels, λ).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A model stored by [`Model::to_json`]; the error says what is wrong with it.
    pub fn from_json(text: &str) -> Result<Model, InvalidModel> {
        let model: Model =
            serde_json::from_str(text).map_err(|e| InvalidModel(format!("not a model: {e}")))?;
        if !(model.lambda > 0.0 && model.lambda < 1.0) {
            return Err(InvalidModel(format!(
                "lambda must be in (0, 1), not {}",
                model.lambda
            )));
        }
        for c in &model.comparisons {
            let n = c.levels.len();
            if n < 2 || c.m.len() != n || c.u.len() != n {
                return Err(InvalidModel(format!(
                    "comparison {:?}: {n} levels need {n} m and {n} u probabilities (at least 2)",
                    c.name
                )));
            }
            for (what, p) in [("m", &c.m), ("u", &c.u)] {
                let total: f64 = p.iter().sum();
                if p.iter().any(|x| !(*x > 0.0 && *x <= 1.0)) || (total - 1.0).abs() > 1e-6 {
                    return Err(InvalidModel(format!(
                        "comparison {:?}: {what} must be probabilities in (0, 1] summing to 1",
                        c.name
                    )));
                }
            }
        }
        Ok(model)
    }

    /// log2(λ / (1 − λ)).
    pub fn prior_weight(&self) -> f64 {
        (self.lambda / (1.0 - self.lambda)).log2()
    }

    /// Expectation–maximisation of `m` and `λ` (and `u` with `update_u`) over the
    /// candidate pairs' comparison vectors.
    pub fn train(&mut self, patterns: &Patterns, options: EmOptions) -> EmReport {
        let k = self.comparisons.len();
        assert_eq!(patterns.width, k, "one level per comparison");
        let mut report = EmReport {
            iterations: 0,
            converged: false,
            last_change: f64::INFINITY,
        };
        if patterns.is_empty() {
            return report;
        }
        let total: f64 = patterns.pairs() as f64;
        for iteration in 1..=options.max_iterations {
            let mut m_acc: Vec<Vec<f64>> = self
                .comparisons
                .iter()
                .map(|c| vec![0.0; c.level_count()])
                .collect();
            let mut u_acc = m_acc.clone();
            let mut matches = 0.0;
            for i in 0..patterns.len() {
                let v = patterns.vector(i);
                let p = probability(self.weight(v));
                let c = patterns.counts[i] as f64;
                matches += c * p;
                for (j, &l) in v.iter().enumerate() {
                    if l != NULL_LEVEL {
                        m_acc[j][l as usize] += c * p;
                        u_acc[j][l as usize] += c * (1.0 - p);
                    }
                }
            }
            let lambda = (matches / total).clamp(1e-9, 1.0 - 1e-9);
            let mut change = (lambda - self.lambda).abs();
            self.lambda = lambda;
            for (j, comparison) in self.comparisons.iter_mut().enumerate() {
                // A comparison missing from every vector (or held out) keeps what it has.
                let seen = m_acc[j].iter().sum::<f64>() + u_acc[j].iter().sum::<f64>() > 0.0;
                if !options.update_m || !seen {
                    continue;
                }
                let m = normalize(std::mem::take(&mut m_acc[j]));
                change = change.max(max_diff(&m, &comparison.m));
                comparison.m = m;
                if options.update_u {
                    let u = normalize(std::mem::take(&mut u_acc[j]));
                    change = change.max(max_diff(&u, &comparison.u));
                    comparison.u = u;
                }
            }
            report.iterations = iteration;
            report.last_change = change;
            if change < options.tolerance {
                report.converged = true;
                break;
            }
        }
        report
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// A match weight as a probability.
pub fn probability(weight: f64) -> f64 {
    // 1 / (1 + 2^-w), stable for large |w|.
    if weight >= 0.0 {
        1.0 / (1.0 + (-weight).exp2())
    } else {
        let e = weight.exp2();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// SplitMix64: a seeded stream for simulations.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn draw(&mut self, p: &[f64]) -> u8 {
            let mut x = self.next();
            for (i, &q) in p.iter().enumerate() {
                if x < q {
                    return i as u8;
                }
                x -= q;
            }
            (p.len() - 1) as u8
        }
    }

    /// Pairs drawn from known m, u and λ (with a share of missing values).
    fn simulate(
        m: &[Vec<f64>],
        u: &[Vec<f64>],
        lambda: f64,
        pairs: usize,
        missing: f64,
        seed: u64,
    ) -> (Patterns, Vec<bool>) {
        let mut rng = Rng(seed);
        let mut levels = Vec::with_capacity(pairs * m.len());
        let mut truth = Vec::with_capacity(pairs);
        for _ in 0..pairs {
            let is_match = rng.next() < lambda;
            truth.push(is_match);
            for j in 0..m.len() {
                if rng.next() < missing {
                    levels.push(NULL_LEVEL);
                } else {
                    levels.push(rng.draw(if is_match { &m[j] } else { &u[j] }));
                }
            }
        }
        (Patterns::from_pairs(m.len(), &levels), truth)
    }

    fn labels(k: usize, n: usize) -> (Vec<String>, Vec<Vec<String>>) {
        (
            (0..k).map(|j| format!("c{j}")).collect(),
            (0..k)
                .map(|_| (0..n).map(|l| format!("l{l}")).collect())
                .collect(),
        )
    }

    #[test]
    fn em_recovers_m_and_lambda_with_u_from_random_pairs() {
        let m = vec![
            vec![0.05, 0.15, 0.80],
            vec![0.10, 0.10, 0.80],
            vec![0.02, 0.08, 0.90],
            vec![0.20, 0.80],
        ];
        let u = vec![
            vec![0.90, 0.08, 0.02],
            vec![0.85, 0.10, 0.05],
            vec![0.97, 0.02, 0.01],
            vec![0.70, 0.30],
        ];
        let (patterns, _) = simulate(&m, &u, 0.1, 200_000, 0.05, 7);
        // u "from random sampling": non-matching pairs only.
        let (random, _) = simulate(&m, &u, 0.0, 200_000, 0.05, 8);
        let (names, mut levels) = labels(4, 3);
        levels[3].pop();
        let shares = level_shares(&random, &[3, 3, 3, 2]);
        let mut model = Model::initial(&names, &levels, shares, 0.01);
        let report = model.train(&patterns, EmOptions::default());
        assert!(report.converged, "{report:?}");
        assert!((model.lambda - 0.1).abs() < 0.01, "λ = {}", model.lambda);
        for (c, truth) in model.comparisons.iter().zip(&m) {
            for (got, want) in c.m.iter().zip(truth) {
                assert!(
                    (got - want).abs() < 0.02,
                    "{}: {:?} vs {truth:?}",
                    c.name,
                    c.m
                );
            }
        }
    }

    #[test]
    fn em_recovers_u_too_when_asked() {
        let m = vec![
            vec![0.1, 0.9],
            vec![0.2, 0.8],
            vec![0.15, 0.85],
            vec![0.05, 0.95],
        ];
        let u = vec![
            vec![0.8, 0.2],
            vec![0.9, 0.1],
            vec![0.7, 0.3],
            vec![0.95, 0.05],
        ];
        let (patterns, _) = simulate(&m, &u, 0.3, 200_000, 0.0, 11);
        let (names, levels) = labels(4, 2);
        let mut model = Model::initial(&names, &levels, vec![vec![0.5, 0.5]; 4], 0.2);
        let report = model.train(
            &patterns,
            EmOptions {
                update_u: true,
                ..EmOptions::default()
            },
        );
        assert!(report.converged, "{report:?}");
        assert!((model.lambda - 0.3).abs() < 0.02, "λ = {}", model.lambda);
        for (j, c) in model.comparisons.iter().enumerate() {
            assert!((c.m[1] - m[j][1]).abs() < 0.03, "m {j}: {:?}", c.m);
            assert!((c.u[1] - u[j][1]).abs() < 0.03, "u {j}: {:?}", c.u);
        }
    }

    /// A comparison held out of a session (every level NULL, as when the blocking rule
    /// reads its column) keeps its `m`; the others are still learnt.
    #[test]
    fn a_held_out_comparison_keeps_its_m() {
        let m = vec![vec![0.1, 0.9], vec![0.2, 0.8], vec![0.3, 0.7]];
        let u = vec![vec![0.9, 0.1], vec![0.85, 0.15], vec![0.8, 0.2]];
        let (simulated, _) = simulate(&m, &u, 0.2, 100_000, 0.0, 5);
        let mut patterns = Patterns::new(3);
        for i in 0..simulated.len() {
            let v = simulated.vector(i);
            patterns.push(&[v[0], v[1], NULL_LEVEL], simulated.counts[i]);
        }
        let (names, levels) = labels(3, 2);
        let mut model = Model::initial(&names, &levels, u.clone(), 0.1);
        let before = model.comparisons[2].m.clone();
        model.train(&patterns, EmOptions::default());
        assert_eq!(model.comparisons[2].m, before);
        for (c, truth) in model.comparisons.iter().zip(&m).take(2) {
            assert!((c.m[1] - truth[1]).abs() < 0.05, "{}: {:?}", c.name, c.m);
        }
    }

    #[test]
    fn trained_weights_separate_matches() {
        let m = vec![vec![0.05, 0.15, 0.80]; 4];
        let u = vec![vec![0.90, 0.08, 0.02]; 4];
        let (patterns, _) = simulate(&m, &u, 0.05, 50_000, 0.0, 3);
        let (names, levels) = labels(4, 3);
        let mut model = Model::initial(&names, &levels, u.clone(), 0.01);
        model.train(&patterns, EmOptions::default());
        // All exact: overwhelming evidence; all "else": none.
        assert!(probability(model.weight(&[2, 2, 2, 2])) > 0.999);
        assert!(probability(model.weight(&[0, 0, 0, 0])) < 0.001);
        // Missing comparisons add nothing.
        assert_eq!(model.weight(&[NULL_LEVEL; 4]), model.prior_weight());
    }

    #[test]
    fn common_values_weigh_less_than_rare_ones() {
        let c = Comparison {
            name: "surname".into(),
            levels: vec!["else".into(), "exact".into()],
            m: vec![0.1, 0.9],
            u: vec![0.99, 0.01],
            tf_adjust: true,
        };
        let smith = c.exact_weight_tf(0.05);
        let zyzzyva = c.exact_weight_tf(0.00001);
        // u of an agreement on a value is its frequency: Smith below the average exact
        // agreement, Zyzzyva above it.
        assert!(
            smith < c.weight(1) && zyzzyva > c.weight(1),
            "{smith} {zyzzyva}"
        );
        assert!((smith - (0.9f64 / 0.05).log2()).abs() < 1e-12);
        assert!((zyzzyva - (0.9f64 / 0.00001).log2()).abs() < 1e-9);
    }

    #[test]
    fn models_round_trip_and_explain_themselves() {
        let (names, levels) = labels(2, 3);
        let mut model = Model::initial(&names, &levels, vec![vec![0.9, 0.08, 0.02]; 2], 0.05);
        model.comparisons[1].tf_adjust = true;
        let back = Model::from_json(&model.to_json()).unwrap();
        // Equal up to the last bit of a JSON float.
        assert_eq!(back.lambda, model.lambda);
        for (b, a) in back.comparisons.iter().zip(&model.comparisons) {
            assert_eq!(
                (&b.name, &b.levels, b.tf_adjust),
                (&a.name, &a.levels, a.tf_adjust)
            );
            for (x, y) in b.m.iter().chain(&b.u).zip(a.m.iter().chain(&a.u)) {
                assert!((x - y).abs() <= 1e-15, "{x} vs {y}");
            }
        }
        let e = model.explain(&[2, NULL_LEVEL]);
        assert_eq!(e.terms[0].1, "l2");
        assert_eq!(e.terms[1], ("c1".to_owned(), "null".to_owned(), 0.0));
        assert!((e.weight - model.weight(&[2, NULL_LEVEL])).abs() < 1e-12);
        assert!((e.probability - probability(e.weight)).abs() < 1e-15);
        let mut bad = model.clone();
        bad.comparisons[0].m = vec![0.5, 0.5];
        let err = Model::from_json(&bad.to_json()).unwrap_err();
        assert!(err.0.contains("3 levels need 3 m"), "{err}");
        bad = model.clone();
        bad.lambda = 1.0;
        assert!(
            Model::from_json(&bad.to_json())
                .unwrap_err()
                .0
                .contains("lambda")
        );
        assert!(
            Model::from_json("{")
                .unwrap_err()
                .0
                .starts_with("not a model")
        );
    }

    #[test]
    fn probability_is_stable_at_the_extremes() {
        assert_eq!(probability(0.0), 0.5);
        assert!(probability(2000.0) == 1.0 && probability(-2000.0) == 0.0);
        assert!((probability(1.0) - 2.0 / 3.0).abs() < 1e-15);
    }

    proptest! {
        /// Grouping pairs into patterns keeps every pair, whatever the order.
        #[test]
        fn patterns_count_every_pair(v in prop::collection::vec(0u8..4, 0..600)) {
            let width = 3;
            let v = &v[..v.len() / width * width];
            let p = Patterns::from_pairs(width, v);
            prop_assert_eq!(p.pairs() as usize, v.len() / width);
            for i in 0..p.len() {
                let n = v.chunks_exact(width).filter(|c| *c == p.vector(i)).count();
                prop_assert_eq!(p.counts[i] as usize, n);
            }
        }

        /// The weight is the log-odds of the posterior computed directly (Bayes' rule
        /// on the products of m and u): the reference implementation.
        #[test]
        fn weight_is_posterior_log_odds(
            lambda in 0.001f64..0.999,
            m in prop::collection::vec(0.01f64..1.0, 6),
            u in prop::collection::vec(0.01f64..1.0, 6),
            levels in prop::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(NULL_LEVEL)], 3),
        ) {
            let comparisons: Vec<Comparison> = (0..3).map(|j| Comparison {
                name: format!("c{j}"),
                levels: vec!["a".into(), "b".into()],
                m: normalize(vec![m[2 * j], m[2 * j + 1]]),
                u: normalize(vec![u[2 * j], u[2 * j + 1]]),
                tf_adjust: false,
            }).collect();
            let model = Model { lambda, comparisons };
            let (mut pm, mut pu) = (lambda, 1.0 - lambda);
            for (c, &l) in model.comparisons.iter().zip(&levels) {
                if l != NULL_LEVEL {
                    pm *= c.m[l as usize];
                    pu *= c.u[l as usize];
                }
            }
            let p = probability(model.weight(&levels));
            prop_assert!((p - pm / (pm + pu)).abs() < 1e-9);
        }
    }
}
