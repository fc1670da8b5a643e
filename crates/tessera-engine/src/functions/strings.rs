//! Shared plumbing for functions over strings: accepts every Arrow string type
//! (`Utf8`, `LargeUtf8`, `Utf8View`), scalars or arrays, and returns `Utf8`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;

/// Applies `f` row by row to string arguments; a NULL argument gives NULL.
pub(crate) fn map_strings<F>(args: &[ColumnarValue], rows: usize, mut f: F) -> Result<ColumnarValue>
where
    F: FnMut(&[&str]) -> Result<Option<String>>,
{
    let all_scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let n = if all_scalar { 1 } else { rows };
    let arrays: Vec<ArrayRef> = args
        .iter()
        .map(|a| {
            a.to_array(n)
                .and_then(|arr| Ok(cast(&arr, &DataType::Utf8)?))
        })
        .collect::<Result<_>>()?;
    let strings: Vec<&StringArray> = arrays
        .iter()
        .map(|a| datafusion::common::cast::as_string_array(a.as_ref()))
        .collect::<Result<_>>()?;
    let mut out = StringBuilder::with_capacity(n, n * 16);
    let mut row: Vec<&str> = Vec::with_capacity(strings.len());
    for i in 0..n {
        row.clear();
        if strings.iter().any(|s| s.is_null(i)) {
            out.append_null();
            continue;
        }
        row.extend(strings.iter().map(|s| s.value(i)));
        out.append_option(f(&row)?);
    }
    let array = out.finish();
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}
