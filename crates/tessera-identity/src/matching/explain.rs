//! Explanations: why two records score what they do, term by term.

use super::*;

impl Matcher {
    /// Why two records score what they do (whether or not a blocking rule pairs them).
    pub async fn explain(&self, model: &Model, a: &str, b: &str) -> Result<PairExplanation> {
        self.check_model(model)?;
        let id = quote_ident(&self.spec.id);
        let literal = tessera_core::sql::literal;
        for x in [a, b] {
            let sql = format!("SELECT count(*) FROM {RECORDS} WHERE {id} = {}", literal(x));
            let batches = collect(&self.ctx, &sql, "explain").await?;
            let n = batches
                .first()
                .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0));
            if n == 0 {
                return Err(IdentityError::BadIdentifier(format!(
                    "no record has {} = {x:?}",
                    self.spec.id
                )));
            }
        }
        let tf = self.term_frequencies(model).await?;
        let mut carry = Vec::new();
        for (j, c) in self.spec.comparisons.iter().enumerate() {
            let col = quote_ident(&c.column);
            carry.push((format!("l.{col}"), format!("a{j}")));
            carry.push((format!("r.{col}"), format!("b{j}")));
        }
        let sql = self.vector_query(
            &format!(
                "FROM {RECORDS} AS l, {RECORDS} AS r WHERE l.{id} = {} AND r.{id} = {}",
                literal(a),
                literal(b)
            ),
            &[],
            &carry,
            false,
            "",
            "",
        );
        let batches = collect(&self.ctx, &sql, "explain").await?;
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| IdentityError::BadIdentifier(format!("no pair {a}, {b}")))?;
        let k = model.comparisons.len();
        let text = |name: &str| -> Option<String> {
            let c = text(batch.column_by_name(name)?).ok()?;
            c.is_valid(0).then(|| c.value(0).to_owned())
        };
        let v: Vec<u8> = (0..k)
            .map(|j| {
                cast(batch.column(j), &DataType::Int64)
                    .map(|c| c.as_primitive::<Int64Type>().value(0) as u8)
            })
            .collect::<std::result::Result<_, _>>()?;
        let lefts: Vec<Option<String>> = (0..k).map(|j| text(&format!("a{j}"))).collect();
        let weights = term_weights(model, &v, &tf, |j| lefts[j].as_deref());
        let terms = model
            .comparisons
            .iter()
            .enumerate()
            .map(|(j, c)| Term {
                comparison: c.name.clone(),
                level: level_label(c, v[j]),
                weight: weights[j],
                left: lefts[j].clone(),
                right: text(&format!("b{j}")),
            })
            .collect();
        let weight = model.prior_weight() + weights.iter().sum::<f64>();
        let p = probability(weight);
        Ok(PairExplanation {
            id_l: a.to_owned(),
            id_r: b.to_owned(),
            prior_weight: model.prior_weight(),
            terms,
            weight,
            probability: p,
            decision: decision(p, &self.spec.predict)
                .unwrap_or("non-match")
                .into(),
        })
    }
}
