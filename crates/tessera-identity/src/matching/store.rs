//! Storage: models in `match_models`, scored pairs in `match_pairs`.

use super::*;

impl Matcher {
    /// Replaces `match_pairs` with a prediction's pairs (by `model`, stored as
    /// `model_version`); returns the rows written.
    pub async fn write_pairs(
        &self,
        engine: &Engine,
        model: &Model,
        prediction: &Prediction,
        model_version: i64,
        actor: &str,
    ) -> Result<u64> {
        let rules = &self.rules;
        let def = schema::table(MATCH_PAIRS).ok_or_else(|| bad("no match_pairs table"))?;
        let mut writer = engine.lake().replace_writer(&def).await?;
        let now = chrono::Utc::now().timestamp_micros();
        for chunk in prediction.pairs.chunks(65_536) {
            let comparisons: Vec<String> = chunk
                .iter()
                .map(|p| {
                    let terms: serde_json::Map<String, serde_json::Value> = model
                        .comparisons
                        .iter()
                        .enumerate()
                        .map(|(j, c)| {
                            (
                                c.name.clone(),
                                serde_json::json!({
                                    "level": level_label(c, p.levels[j]),
                                    "weight": (p.weights[j] * 1000.0).round() / 1000.0,
                                }),
                            )
                        })
                        .collect();
                    serde_json::Value::Object(terms).to_string()
                })
                .collect();
            let n = chunk.len();
            let batch = RecordBatch::try_new(
                def.schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(chunk.iter().map(|p| &p.id_l)))
                        as ArrayRef,
                    Arc::new(StringArray::from_iter_values(chunk.iter().map(|p| &p.id_r))),
                    Arc::new(StringArray::from_iter_values(
                        chunk.iter().map(|p| rules[p.rule].name.as_str()),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        chunk.iter().map(|p| p.weight),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        chunk.iter().map(|p| p.probability),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        chunk
                            .iter()
                            .map(|p| if p.is_match { "match" } else { "review" }),
                    )),
                    Arc::new(StringArray::from(
                        chunk
                            .iter()
                            .map(|p| prediction.clusters.get(&p.id_l).cloned())
                            .collect::<Vec<_>>(),
                    )),
                    Arc::new(StringArray::from(comparisons)),
                    Arc::new(Int64Array::from(vec![model_version; n])),
                    Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
                ],
            )?;
            writer.write(batch).await?;
        }
        writer
            .commit(
                CommitNote::new("match predict", actor)
                    .detail("model_version", model_version)
                    .detail("pairs", prediction.pairs.len() as u64),
            )
            .await?;
        Ok(prediction.pairs.len() as u64)
    }
}

/// Stores a trained model as the next version of `match_models`; returns the version.
pub async fn save_model(
    engine: &Engine,
    model: &Model,
    report: &TrainReport,
    duration_ms: i64,
    actor: &str,
) -> Result<i64> {
    let version = latest_model(engine).await?.map_or(1, |(v, _)| v + 1);
    let def = schema::table(MATCH_MODELS).ok_or_else(|| bad("no match_models table"))?;
    let batch = RecordBatch::try_new(
        def.schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![version])) as ArrayRef,
            Arc::new(
                TimestampMicrosecondArray::from(vec![chrono::Utc::now().timestamp_micros()])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![model.to_json()])),
            Arc::new(Int64Array::from(vec![report.records as i64])),
            Arc::new(Int64Array::from(vec![report.candidates() as i64])),
            Arc::new(Int64Array::from(vec![report.random_pairs as i64])),
            Arc::new(Int64Array::from(vec![report.iterations() as i64])),
            Arc::new(BooleanArray::from(vec![report.converged()])),
            Arc::new(StringArray::from(vec![
                serde_json::to_string(report).unwrap_or_default(),
            ])),
            Arc::new(Int64Array::from(vec![duration_ms])),
        ],
    )?;
    let mut writer = engine.lake().append_writer(&def).await?;
    writer.write(batch).await?;
    writer
        .commit(CommitNote::new("match train", actor).detail("version", version))
        .await?;
    Ok(version)
}

pub(super) async fn latest_model(engine: &Engine) -> Result<Option<(i64, String)>> {
    if !engine.lake().exists(MATCH_MODELS).await? {
        return Ok(None);
    }
    let ctx = engine.session_of(&[MATCH_MODELS]).await?;
    let batches = collect(
        &ctx,
        "SELECT version, model FROM match_models ORDER BY version DESC LIMIT 1",
        MATCH_MODELS,
    )
    .await?;
    match batches.iter().find(|b| b.num_rows() > 0) {
        Some(b) => Ok(Some((
            b.column(0).as_primitive::<Int64Type>().value(0),
            text(b.column(1))?.value(0).to_owned(),
        ))),
        None => Ok(None),
    }
}

/// The latest trained model and its version.
pub async fn load_model(engine: &Engine) -> Result<(i64, Model)> {
    let (version, json) = latest_model(engine)
        .await?
        .ok_or_else(|| bad("no trained model yet: run `tessera match train` first"))?;
    let model =
        Model::from_json(&json).map_err(|e| bad(format!("match_models version {version}: {e}")))?;
    Ok((version, model))
}

/// The scored pairs stored in `match_pairs`: (id_l, id_r, probability).
pub async fn stored_pairs(engine: &Engine) -> Result<Vec<(String, String, f64)>> {
    stored(engine, "SELECT id_l, id_r, probability FROM match_pairs").await
}

/// The stored pairs with 1 for those decided `match` and 0 for the review band (the
/// decisions, one-to-one assignment included, for [`evaluate`] at any threshold in
/// (0, 1]).
pub async fn stored_decisions(engine: &Engine) -> Result<Vec<(String, String, f64)>> {
    stored(
        engine,
        "SELECT id_l, id_r, CAST(CASE WHEN decision = 'match' THEN 1.0 ELSE 0.0 END AS DOUBLE) \
         FROM match_pairs",
    )
    .await
}

async fn stored(engine: &Engine, sql: &str) -> Result<Vec<(String, String, f64)>> {
    if !engine.lake().exists(MATCH_PAIRS).await? {
        return Err(bad("no match_pairs yet: run `tessera match predict` first"));
    }
    let ctx = engine.session_of(&[MATCH_PAIRS]).await?;
    let mut out = Vec::new();
    for b in collect(&ctx, sql, MATCH_PAIRS).await? {
        let (l, r) = (text(b.column(0))?, text(b.column(1))?);
        let p = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            out.push((l.value(i).to_owned(), r.value(i).to_owned(), p.value(i)));
        }
    }
    Ok(out)
}
