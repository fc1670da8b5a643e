//! Training: `u` from random pairs (or exactly from value counts), `m` by EM per
//! blocking rule on the comparisons the rule does not read, λ over all pairs.

use super::*;

impl Matcher {
    /// `u` from random pairs (all pairs when there are no more than the spec asks for).
    /// `u` of every comparison: exact over all pairs from the column's value counts
    /// when its distinct values make no more pairs than the random-pair budget (names,
    /// cities, postcodes: far fewer comparisons than pairs of records), from random
    /// pairs of records otherwise. Returns `u` and the random pairs drawn.
    pub(super) async fn estimate_u(&self) -> Result<(Vec<Vec<f64>>, u64, Vec<String>)> {
        let k = self.spec.comparisons.len();
        let level_counts: Vec<usize> = self.labels().iter().map(Vec::len).collect();
        let mut u: Vec<Option<Vec<f64>>> = Vec::with_capacity(k);
        for j in 0..k {
            u.push(self.u_exact(j, &level_counts).await?);
        }
        let sampled: Vec<bool> = u.iter().map(Option::is_none).collect();
        let mut drawn = 0;
        if sampled.iter().any(|s| *s) {
            let masked: Vec<bool> = sampled.iter().map(|s| !s).collect();
            let (shares, pairs) = self.u_from_random_pairs(&masked).await?;
            drawn = pairs;
            for ((slot, share), sampled) in u.iter_mut().zip(shares).zip(&sampled) {
                if *sampled {
                    *slot = Some(share);
                }
            }
        }
        let exact = self
            .spec
            .comparisons
            .iter()
            .zip(&sampled)
            .filter(|(_, s)| !**s)
            .map(|(c, _)| c.name().to_owned())
            .collect();
        Ok((
            u.into_iter().map(Option::unwrap_or_default).collect(),
            drawn,
            exact,
        ))
    }

    /// `u` of comparison `j` over every pair of records, from value counts, or `None`
    /// when the column has too many distinct values for that.
    pub(super) async fn u_exact(
        &self,
        j: usize,
        level_counts: &[usize],
    ) -> Result<Option<Vec<f64>>> {
        let c = &self.spec.comparisons[j];
        let Some(column) = self.compared.column_by_name(&c.column) else {
            return Ok(None);
        };
        let values = text(column)?;
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for v in values.iter().flatten() {
            *counts.entry(v).or_default() += 1;
        }
        let d = counts.len() as u64;
        if d * d.saturating_sub(1) / 2 > self.spec.train.random_pairs {
            return Ok(None);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new(&c.column, DataType::Utf8, false),
            Field::new("__n", DataType::Int64, false),
        ]));
        let (names, ns): (Vec<&str>, Vec<i64>) = counts.iter().map(|(v, n)| (*v, *n)).unzip();
        let same: i64 = ns.iter().map(|n| n * (n - 1) / 2).sum();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(names)) as ArrayRef,
                Arc::new(Int64Array::from(ns)),
            ],
        )?;
        let table = format!("match_values_{j}");
        let _ = self.ctx.deregister_table(&table)?;
        self.ctx.register_table(
            &table,
            Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
        )?;
        let col = quote_ident(&c.column);
        let masked: Vec<bool> = (0..self.spec.comparisons.len()).map(|i| i != j).collect();
        let mut patterns = self
            .weighted_patterns(
                &format!("FROM {table} AS l JOIN {table} AS r ON l.{col} < r.{col}"),
                &masked,
                &[("l.__n * r.__n".to_owned(), "w".to_owned())],
                "sum(w)",
                &format!("value pairs of {}", c.column),
            )
            .await?;
        let _ = self.ctx.deregister_table(&table)?;
        // Records sharing a value: exact agreement.
        let mut exact = vec![NULL_LEVEL; self.spec.comparisons.len()];
        exact[j] = (level_counts[j] - 1) as u8;
        patterns.push(&exact, same.max(0) as u64);
        Ok(Some(level_shares(&patterns, level_counts).swap_remove(j)))
    }

    pub(super) async fn u_from_random_pairs(
        &self,
        masked: &[bool],
    ) -> Result<(Vec<Vec<f64>>, u64)> {
        let n = self.records;
        let all = self.all_pairs();
        let wanted = self.spec.train.random_pairs.min(all);
        // Each pair is one row of two structs `l` and `r` holding the compared columns
        // (those not masked), gathered here: the comparisons then run with no join, on
        // every core.
        let needed: Vec<usize> = self
            .spec
            .comparisons
            .iter()
            .zip(masked.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, m)| !**m)
            .filter_map(|(c, _)| self.compared.schema().index_of(&c.column).ok())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let compared = self.compared.project(&needed)?;
        let side = DataType::Struct(compared.schema().fields().clone());
        let schema = Arc::new(Schema::new(vec![
            Field::new("l", side.clone(), false),
            Field::new("r", side, false),
        ]));
        let mut batches = Vec::new();
        let (mut left, mut right): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        let mut flush = |left: &mut Vec<u32>, right: &mut Vec<u32>| -> Result<()> {
            let gather = |rows: Vec<u32>| -> Result<ArrayRef> {
                let rows = arrow::array::UInt32Array::from(rows);
                let columns = compared
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c.as_ref(), &rows, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Arc::new(arrow::array::StructArray::try_new(
                    compared.schema().fields().clone(),
                    columns,
                    None,
                )?))
            };
            batches.push(RecordBatch::try_new(
                schema.clone(),
                vec![
                    gather(std::mem::take(left))?,
                    gather(std::mem::take(right))?,
                ],
            )?);
            Ok(())
        };
        if wanted == all {
            for i in 0..n as u32 {
                for j in i + 1..n as u32 {
                    left.push(i);
                    right.push(j);
                    if left.len() == 16_384 {
                        flush(&mut left, &mut right)?;
                    }
                }
            }
        } else {
            let mut rng = Rng::new(self.spec.train.seed);
            for _ in 0..wanted {
                let i = rng.below(n);
                let mut j = rng.below(n - 1);
                if j >= i {
                    j += 1;
                }
                left.push(i as u32);
                right.push(j as u32);
                if left.len() == 16_384 {
                    flush(&mut left, &mut right)?;
                }
            }
        }
        flush(&mut left, &mut right)?;
        let _ = self.ctx.deregister_table(RANDOM)?;
        self.ctx.register_table(
            RANDOM,
            Arc::new(MemTable::try_new(
                schema,
                spread(batches, self.ctx.state().config().target_partitions()),
            )?),
        )?;
        let patterns = self
            .patterns(&format!("FROM {RANDOM}"), masked, "random pairs for u")
            .await?;
        let counts: Vec<usize> = self.labels().iter().map(Vec::len).collect();
        Ok((level_shares(&patterns, &counts), wanted))
    }

    /// Trains a model: `u` from random pairs, `m` by EM per blocking rule, λ over all
    /// pairs. `stage` hears what is running.
    pub async fn train(&self, stage: &dyn Fn(&str)) -> Result<(Model, TrainReport)> {
        let clock = std::sync::Mutex::new(tessera_core::stages::Stages::default());
        let stage = |name: &str| {
            if let Ok(mut c) = clock.lock() {
                c.start(name);
            }
            stage(name);
        };
        if self.records < 2 {
            return Err(bad(format!(
                "the records query returned {} record(s): at least 2 are needed",
                self.records
            )));
        }
        stage("estimating u");
        let (u, random_pairs, u_exact) = self.estimate_u().await?;
        let names = self.names();
        let start = Model::initial(&names, &self.labels(), u, SESSION_LAMBDA);
        let options = EmOptions {
            max_iterations: self.spec.train.max_iterations,
            ..EmOptions::default()
        };

        // One EM session per rule, on the comparisons it does not read.
        let k = names.len();
        let mut m_sum: Vec<Option<Vec<f64>>> = vec![None; k];
        let mut trained_in = vec![0usize; k];
        let mut sessions = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            stage(&format!("EM on the pairs of rule {}", rule.name));
            let masked: Vec<bool> = self
                .spec
                .comparisons
                .iter()
                .map(|c| c.used_by(&rule.condition))
                .collect();
            let from = blocking::rule_from(RECORDS, &self.spec.id, &self.rules, i, false);
            let patterns = self
                .patterns(&from, &masked, &format!("blocking rule {}", rule.name))
                .await?;
            let mut model = start.clone();
            let report = model.train(&patterns, options);
            let mut trained = Vec::new();
            if patterns.pairs() > 0 {
                for (j, c) in model.comparisons.iter().enumerate() {
                    if masked[j] {
                        continue;
                    }
                    trained.push(c.name.clone());
                    trained_in[j] += 1;
                    let sum = m_sum[j].get_or_insert_with(|| vec![0.0; c.m.len()]);
                    sum.iter_mut().zip(&c.m).for_each(|(s, m)| *s += m);
                }
            }
            sessions.push(Session {
                rule: rule.name.clone(),
                pairs: patterns.pairs(),
                trained,
                lambda: model.lambda,
                iterations: report.iterations,
                converged: report.converged || patterns.pairs() == 0,
            });
        }
        let mut model = start;
        let mut untrained = Vec::new();
        for (j, c) in model.comparisons.iter_mut().enumerate() {
            match &m_sum[j] {
                Some(sum) => {
                    let total: f64 = sum.iter().sum();
                    c.m = sum.iter().map(|s| s / total).collect();
                }
                None => untrained.push(c.name.clone()),
            }
            c.tf_adjust = self.spec.comparisons[j].tf_adjust;
        }

        // λ over all pairs: the candidates' expected matches.
        stage("estimating the share of matches");
        let mut candidates = Patterns::new(k);
        // The candidate pairs, each counted for the first rule admitting it.
        let mut candidate_pairs = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let from = blocking::rule_from(RECORDS, &self.spec.id, &self.rules, i, true);
            let p = self
                .patterns(&from, &[], &format!("blocking rule {}", rule.name))
                .await?;
            for x in 0..p.len() {
                candidates.push(p.vector(x), p.counts[x]);
            }
            candidate_pairs.push((rule.name.clone(), p.pairs()));
        }
        let (expected_matches, lambda_iterations) =
            estimate_lambda(&mut model, &candidates, self.all_pairs() as f64);
        let stages = clock
            .into_inner()
            .map(tessera_core::stages::Stages::finish)
            .unwrap_or_default();
        Ok((
            model,
            TrainReport {
                records: self.records,
                candidate_pairs,
                random_pairs,
                u_exact,
                sessions,
                untrained,
                expected_matches,
                lambda_iterations,
                stages,
            },
        ))
    }
}

pub(super) fn describe(list: &[(String, Vec<String>)]) -> String {
    list.iter()
        .map(|(n, l)| format!("{n} ({})", l.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// λ — the share of matches among all `total` pairs — by EM with `m` and `u` fixed:
/// each candidate pair counts its match probability, every other pair none.
/// Returns the expected matches among the candidates and the iterations.
pub(super) fn estimate_lambda(
    model: &mut Model,
    candidates: &Patterns,
    total: f64,
) -> (f64, usize) {
    let weights: Vec<f64> = (0..candidates.len())
        .map(|i| model.weight(candidates.vector(i)) - model.prior_weight())
        .collect();
    let mut lambda = (candidates.pairs() as f64 / total.max(1.0)).clamp(1e-12, 0.5);
    let mut expected = 0.0;
    for iteration in 1..=500 {
        let prior = (lambda / (1.0 - lambda)).log2();
        expected = weights
            .iter()
            .zip(&candidates.counts)
            .map(|(w, &c)| c as f64 * probability(prior + w))
            .sum::<f64>();
        let next = (expected / total.max(1.0)).clamp(1e-12, 0.5);
        let moved = ((next - lambda) / lambda).abs();
        lambda = next;
        if moved < 1e-9 {
            model.lambda = lambda;
            return (expected, iteration);
        }
    }
    model.lambda = lambda;
    (expected, 500)
}
