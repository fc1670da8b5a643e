//! A sync's `fields` query: which traits travel with each member, in SQL; and query
//! results as the JSON objects sent.

use crate::error::{ActivateError, Result};

/// A sync's `fields` query planned under the read-only policy; errors name the sync.
pub async fn fields_frame(
    ctx: &datafusion::prelude::SessionContext,
    sync: &str,
    query: &str,
) -> Result<datafusion::prelude::DataFrame> {
    tessera_engine::policy::read_only(ctx, query)
        .await
        .map_err(|e| ActivateError::Fields {
            sync: sync.to_owned(),
            message: e.strip_backtrace(),
        })
}

/// Result rows as JSON objects (column name → value, as Arrow's JSON writer renders
/// them; NULLs left out).
pub(crate) fn json_rows(
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ActivateError::Arrow(datafusion::arrow::error::ArrowError::JsonError(
            e.to_string(),
        ))
    })
}
