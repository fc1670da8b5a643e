//! Prediction: every candidate pair's match weight (term frequencies where asked) and
//! probability, decisions and clusters.

use super::*;

impl Matcher {
    /// Term frequencies (share of records holding each value) of the comparisons that
    /// adjust for them.
    pub(super) async fn term_frequencies(
        &self,
        model: &Model,
    ) -> Result<Vec<Option<HashMap<String, f64>>>> {
        let mut out = Vec::new();
        for (c, spec) in model.comparisons.iter().zip(&self.spec.comparisons) {
            if !c.tf_adjust {
                out.push(None);
                continue;
            }
            let col = quote_ident(&spec.column);
            let sql = format!(
                "SELECT {col}, count(*) FROM {RECORDS} WHERE {col} IS NOT NULL GROUP BY {col}"
            );
            let mut counts = HashMap::new();
            let mut total = 0.0;
            for batch in collect(&self.ctx, &sql, "term frequencies").await? {
                let values = text(batch.column(0))?;
                let n = batch.column(1).as_primitive::<Int64Type>();
                for row in 0..batch.num_rows() {
                    counts.insert(values.value(row).to_owned(), n.value(row) as f64);
                    total += n.value(row) as f64;
                }
            }
            counts.values_mut().for_each(|n| *n /= total.max(1.0));
            out.push(Some(counts));
        }
        Ok(out)
    }

    /// Scores every candidate pair; keeps those at or above the review band.
    pub async fn predict(&self, model: &Model, stage: &dyn Fn(&str)) -> Result<Prediction> {
        self.check_model(model)?;
        let tf = self.term_frequencies(model).await?;
        let k = model.comparisons.len();
        let (threshold, review) = (self.spec.predict.threshold, self.spec.predict.review);
        let id = quote_ident(&self.spec.id);
        let mut carry = vec![
            (format!("l.{id}"), "id_l".to_owned()),
            (format!("r.{id}"), "id_r".to_owned()),
        ];
        for (j, c) in self.spec.comparisons.iter().enumerate() {
            if tf[j].is_some() {
                carry.push((format!("l.{}", quote_ident(&c.column)), format!("t{j}")));
            }
        }
        let mut pairs = Vec::new();
        let mut candidates = 0u64;
        for (i, rule) in self.rules.iter().enumerate() {
            stage(&format!("scoring the pairs of rule {}", rule.name));
            let what = format!("blocking rule {}", rule.name);
            let from = blocking::rule_from(RECORDS, &self.spec.id, &self.rules, i, true);
            let sql = self.vector_query(&from, &[], &carry, false, "", "");
            let err = query_err(&what);
            let mut stream = self
                .ctx
                .sql(&sql)
                .await
                .map_err(&err)?
                .execute_stream()
                .await
                .map_err(&err)?;
            while let Some(batch) = stream.try_next().await.map_err(&err)? {
                candidates += batch.num_rows() as u64;
                let ids_l = text(batch.column(k))?;
                let ids_r = text(batch.column(k + 1))?;
                let levels: Vec<ArrayRef> = (0..k)
                    .map(|j| cast(batch.column(j), &DataType::Int64))
                    .collect::<std::result::Result<_, _>>()?;
                let mut values: HashMap<usize, StringArray> = HashMap::new();
                for (j, t) in tf.iter().enumerate() {
                    if let (Some(_), Some(c)) = (t, batch.column_by_name(&format!("t{j}"))) {
                        values.insert(j, text(c)?);
                    }
                }
                let mut v = vec![0u8; k];
                for row in 0..batch.num_rows() {
                    for (j, l) in levels.iter().enumerate() {
                        v[j] = l.as_primitive::<Int64Type>().value(row) as u8;
                    }
                    let weights = term_weights(model, &v, &tf, |j| {
                        values
                            .get(&j)
                            .filter(|a| a.is_valid(row))
                            .map(|a| a.value(row))
                    });
                    let weight = model.prior_weight() + weights.iter().sum::<f64>();
                    let p = probability(weight);
                    if p >= review {
                        pairs.push(ScoredPair {
                            id_l: ids_l.value(row).to_owned(),
                            id_r: ids_r.value(row).to_owned(),
                            rule: i,
                            levels: v.clone(),
                            weights,
                            weight,
                            probability: p,
                            is_match: p >= threshold,
                        });
                    }
                }
            }
        }
        pairs.sort_by(|a, b| {
            b.weight
                .total_cmp(&a.weight)
                .then_with(|| (&a.id_l, &a.id_r).cmp(&(&b.id_l, &b.id_r)))
        });
        if self.spec.predict.one_to_one {
            one_to_one(&mut pairs, self.spec.predict.margin);
        }
        let clusters = clusters(
            pairs
                .iter()
                .filter(|p| p.is_match)
                .map(|p| (p.id_l.as_str(), p.id_r.as_str())),
        );
        Ok(Prediction {
            candidates,
            pairs,
            threshold,
            review,
            clusters,
        })
    }
}

/// One-to-one assignment: a match stays one only when it is the best-scoring pair of
/// both its records and beats each one's runner-up (any other candidate at or above the
/// review band) by `margin`; the others go to the review band. `pairs` are best first.
pub(super) fn one_to_one(pairs: &mut [ScoredPair], margin: f64) {
    // Per record: its best and second-best weight.
    let mut top: HashMap<&str, (f64, f64)> = HashMap::new();
    for p in pairs.iter() {
        for id in [p.id_l.as_str(), p.id_r.as_str()] {
            let e = top
                .entry(id)
                .or_insert((f64::NEG_INFINITY, f64::NEG_INFINITY));
            if p.weight > e.0 {
                *e = (p.weight, e.0);
            } else if p.weight > e.1 {
                e.1 = p.weight;
            }
        }
    }
    let keep: Vec<bool> = pairs
        .iter()
        .map(|p| {
            p.is_match
                && [p.id_l.as_str(), p.id_r.as_str()].iter().all(|id| {
                    let (best, second) = top[id];
                    p.weight >= best && p.weight - second >= margin
                })
        })
        .collect();
    for (p, keep) in pairs.iter_mut().zip(keep) {
        p.is_match = keep;
    }
}

pub(super) fn level_label(c: &crate::fellegi_sunter::Comparison, level: u8) -> String {
    if level == NULL_LEVEL {
        "null".into()
    } else {
        c.levels[level as usize].clone()
    }
}

/// `match`, `review`, or nothing below the review band.
pub(super) fn decision(p: f64, predict: &spec::PredictSpec) -> Option<&'static str> {
    if p >= predict.threshold {
        Some("match")
    } else if p >= predict.review {
        Some("review")
    } else {
        None
    }
}

/// Each comparison's weight for vector `v`; an exact agreement of a comparison that
/// adjusts for term frequency is weighed by the agreed value's frequency.
pub(super) fn term_weights<'a>(
    model: &Model,
    v: &[u8],
    tf: &[Option<HashMap<String, f64>>],
    value: impl Fn(usize) -> Option<&'a str>,
) -> Vec<f64> {
    model
        .comparisons
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let exact = v[j] as usize == c.level_count() - 1;
            match (&tf[j], exact) {
                (Some(freq), true) => match value(j).and_then(|x| freq.get(x)) {
                    Some(&f) => c.exact_weight_tf(f),
                    None => c.weight(v[j]),
                },
                _ => c.weight(v[j]),
            }
        })
        .collect()
}

/// Connected components of the matched pairs (the union-find of the identity graph):
/// each record's cluster is its smallest id.
pub(super) fn clusters<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> HashMap<String, String> {
    let mut names: Interner<&str> = Interner::new();
    let mut sets = UnionFind::new();
    for (a, b) in pairs {
        let (a, _) = names.intern(&a);
        let (b, _) = names.intern(&b);
        sets.grow_to(names.len());
        sets.union(a, b);
    }
    let mut smallest: HashMap<u32, &str> = HashMap::new();
    for id in 0..names.len() as u32 {
        let name = *names.key(id);
        let first = smallest.entry(sets.find(id)).or_insert(name);
        if name < *first {
            *first = name;
        }
    }
    (0..names.len() as u32)
        .map(|id| {
            let root = sets.find(id);
            ((*names.key(id)).to_owned(), smallest[&root].to_owned())
        })
        .collect()
}
