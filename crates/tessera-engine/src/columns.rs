//! Columns of record batches by name, whatever their encoding: text (`Utf8`,
//! `Utf8View`, `LargeUtf8`, or anything castable), 64-bit integers (timestamps as
//! microseconds), booleans and doubles — the one place every crate reads query results through.

use datafusion::arrow::array::{
    AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use crate::error::{EngineError, Result};

fn column<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a datafusion::arrow::array::ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| EngineError::Column {
            column: name.to_owned(),
            message: "missing from the result".into(),
        })
}

fn cast_to(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<datafusion::arrow::array::ArrayRef> {
    cast(column(batch, name)?, to).map_err(|e| EngineError::Column {
        column: name.to_owned(),
        message: e.to_string(),
    })
}

/// Column `name` as text.
pub fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    Ok(cast_to(batch, name, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

/// Column `name` as 64-bit integers (timestamps: microseconds since the epoch).
pub fn int64s(batch: &RecordBatch, name: &str) -> Result<Int64Array> {
    Ok(cast_to(batch, name, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// Column `name` as booleans.
pub fn booleans(batch: &RecordBatch, name: &str) -> Result<BooleanArray> {
    Ok(cast_to(batch, name, &DataType::Boolean)?
        .as_boolean()
        .clone())
}

/// Column `name` as doubles.
pub fn float64s(batch: &RecordBatch, name: &str) -> Result<Float64Array> {
    Ok(cast_to(batch, name, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

/// Runs `sql` on `ctx` and collects the batches (for state tables and small
/// results; a query of the project's or a caller's goes through [`crate::policy`]).
pub async fn collect(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    ctx.sql(sql)
        .await
        .map_err(EngineError::sql)?
        .collect()
        .await
        .map_err(EngineError::sql)
}

/// The rows of `batches` as JSON objects (timestamps as RFC 3339 text), for small
/// results shown as they are (the console's tables, `--json` output).
pub fn json_rows(
    batches: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let err = |e: &dyn std::fmt::Display| EngineError::Column {
        column: "*".into(),
        message: format!("rows as JSON: {e}"),
    };
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b).map_err(|e| err(&e))?;
    }
    writer.finish().map_err(|e| err(&e))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| err(&e))
}

/// Runs `sql` on `ctx` and returns its rows as JSON objects ([`json_rows`]).
pub async fn collect_json(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    json_rows(&collect(ctx, sql).await?)
}
