//! Writes: each model's scores replacing its `scores` partition, and the run's
//! `model_runs` rows.

use super::*;

pub(super) const WRITE_ROWS: usize = 65_536;

pub(super) async fn write_scores(
    lake: &tessera_lake::Lake,
    model: Model,
    version: i64,
    trained_at: i64,
    scores: Scores,
    actor: &str,
) -> Result<()> {
    let def = table_def(SCORES)?;
    let mut writer = lake
        .replace_partition_writer(&def, "model", model.name())
        .await?;
    let rows = scores.len();
    for chunk in scores.chunks(WRITE_ROWS) {
        let n = chunk.len();
        let batch = RecordBatch::try_new(
            def.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|(p, _, _)| p),
                )) as ArrayRef,
                Arc::new(StringArray::from(vec![model.name(); n])),
                Arc::new(Int64Array::from(vec![version; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![trained_at; n]).with_timezone("UTC")),
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|(_, s, _)| *s),
                )),
                Arc::new(Float64Array::from_iter_values(
                    chunk.iter().map(|(_, _, v)| *v),
                )),
            ],
        )?;
        writer.write(batch).await?;
    }
    writer
        .commit(
            CommitNote::new("predict", actor)
                .detail("model", model.name())
                .detail("version", version)
                .detail("rows", rows as u64),
        )
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn write_runs(
    lake: &tessera_lake::Lake,
    runs: &[ModelRun],
    trained_at: i64,
    calibration_end: i64,
    unit: TimeUnit,
    quality: &DataQuality,
    inputs: &Value,
    actor: &str,
) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let def = table_def(MODEL_RUNS)?;
    let n = runs.len();
    let quality = serde_json::to_string(quality)?;
    let metrics: Vec<String> = runs
        .iter()
        .map(|r| {
            let mut m = r.metrics.clone();
            if let (Some(message), Value::Object(map)) = (&r.message, &mut m) {
                map.insert("message".into(), json!(message));
            }
            m.to_string()
        })
        .collect();
    let times = |t: i64| Arc::new(TimestampMicrosecondArray::from(vec![t; n]).with_timezone("UTC"));
    let batch = RecordBatch::try_new(
        def.schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| r.model.name()),
            )) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(runs.iter().map(|r| r.version))),
            times(trained_at),
            times(calibration_end),
            Arc::new(StringArray::from(vec![unit.name(); n])),
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| r.status.name()),
            )),
            Arc::new(Int64Array::from_iter_values(
                runs.iter().map(|r| r.customers as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                runs.iter().map(|r| r.scored as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| r.parameters.to_string()),
            )),
            Arc::new(Float64Array::from_iter(
                runs.iter().map(|r| r.fit.map(|f| f.log_likelihood)),
            )),
            Arc::new(Int64Array::from_iter(
                runs.iter().map(|r| r.fit.map(|f| f.iterations as i64)),
            )),
            Arc::new(arrow::array::BooleanArray::from_iter(
                runs.iter().map(|r| Some(r.fit.is_none_or(|f| f.converged))),
            )),
            Arc::new(StringArray::from_iter_values(metrics)),
            Arc::new(StringArray::from(vec![quality.as_str(); n])),
            Arc::new(StringArray::from(vec![inputs.to_string(); n])),
            Arc::new(Int64Array::from_iter_values(
                runs.iter().map(|r| r.duration_ms as i64),
            )),
        ],
    )?;
    let mut writer = lake.append_writer(&def).await?;
    writer.write(batch).await?;
    writer
        .commit(CommitNote::new("predict", actor).detail("models", n as u64))
        .await?;
    Ok(())
}

pub(super) fn table_def(name: &str) -> Result<schema::TableDef> {
    schema::table(name).ok_or_else(|| PredictError::Undefined(format!("table {name}")))
}
