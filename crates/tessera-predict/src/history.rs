//! When the models were last fitted (`model_runs`), for the refit schedule.

use tessera_core::schema::MODEL_RUNS;
use tessera_engine::Engine;
use tessera_engine::columns::{collect, int64s};

use crate::error::Result;

/// When the latest model fit was trained (microseconds since the epoch), `None` when
/// no model ever ran. Opens only `model_runs`.
pub async fn last_fit(engine: &Engine) -> Result<Option<i64>> {
    use datafusion::arrow::array::Array;
    let ctx = engine.session_of(&[MODEL_RUNS]).await?;
    if !ctx.table_exist(MODEL_RUNS)? {
        return Ok(None);
    }
    let batches = collect(
        &ctx,
        "SELECT CAST(max(trained_at) AS BIGINT) AS last FROM model_runs",
    )
    .await?;
    let Some(b) = batches.first().filter(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let last = int64s(b, "last")?;
    Ok(last.is_valid(0).then(|| last.value(0)))
}
