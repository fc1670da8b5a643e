//! The evaluation time shared by `as_of()`, `days_since()` and `within_days()`.
//!
//! A session fixes one instant when it is built (or takes the one configured, for
//! reproducible segment refreshes and back-tests), so every row of every query in the
//! session is judged against the same "now".

use datafusion::arrow::array::{ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::ColumnarValue;

/// Microseconds per day.
pub(crate) const DAY_MICROS: i64 = 86_400_000_000;

/// The evaluation instant of a session, in microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Clock {
    pub as_of_micros: i64,
}

impl Clock {
    /// A clock at `as_of_micros`.
    pub fn at(as_of_micros: i64) -> Self {
        Clock { as_of_micros }
    }
}

/// Checks that `t` is a date or timestamp, naming `function` otherwise.
pub(crate) fn check_temporal(function: &str, t: &DataType) -> Result<()> {
    match t {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null => Ok(()),
        other => plan_err!(
            "{function} expects a timestamp or a date as its first argument, got {other}; \
             cast text with to_timestamp(...)"
        ),
    }
}

/// Any date or timestamp array as microseconds since the epoch (UTC).
pub(crate) fn as_micros(array: &ArrayRef) -> Result<ArrayRef> {
    let target = DataType::Timestamp(TimeUnit::Microsecond, None);
    let micros = match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, None) => array.clone(),
        // Drop the zone first: instants are stored in UTC whatever the zone says.
        DataType::Timestamp(unit, Some(_)) => {
            cast(&cast(array, &DataType::Timestamp(*unit, None))?, &target)?
        }
        _ => cast(array, &target)?,
    };
    Ok(micros)
}

/// Applies `f` to the microseconds of a date or timestamp argument, keeping its shape
/// (a scalar in gives a scalar out); a NULL-typed argument gives a NULL of `out_type`.
pub(crate) fn map_micros(
    arg: &ColumnarValue,
    rows: usize,
    out_type: &DataType,
    f: impl Fn(&PrimitiveArray<TimestampMicrosecondType>) -> ArrayRef,
) -> Result<ColumnarValue> {
    let scalar = matches!(arg, ColumnarValue::Scalar(_));
    let input = arg.to_array(if scalar { 1 } else { rows })?;
    if input.data_type() == &DataType::Null {
        return Ok(ColumnarValue::Scalar(ScalarValue::try_from(out_type)?));
    }
    let out = f(&micros_of(&input)?);
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// Any date or timestamp column (or scalar, as a one-row array) as microseconds.
fn micros_of(array: &ArrayRef) -> Result<PrimitiveArray<TimestampMicrosecondType>> {
    Ok(as_micros(array)?
        .as_primitive::<TimestampMicrosecondType>()
        .clone())
}

/// The explicit instant of `days_since(ts, at)` / `within_days(ts, n, at)`, in
/// microseconds (`None` for NULL). The one-argument forms are rewritten to these at
/// planning, with the session's instant as a literal, so that a plan carried to other
/// machines (a cluster's executors) judges every row against the client's `as_of()`.
pub(crate) fn instant_arg(function: &str, arg: &ColumnarValue) -> Result<Option<i64>> {
    let ColumnarValue::Scalar(value) = arg else {
        return plan_err!(
            "{function} expects a constant instant as its last argument, not a column"
        );
    };
    check_temporal(function, &value.data_type())?;
    if value.is_null() {
        return Ok(None);
    }
    let micros = micros_of(&value.to_array()?)?;
    Ok(Some(micros.value(0)))
}

/// `instant` as the literal the one-argument forms are rewritten with.
pub(crate) fn instant_literal(clock: Clock) -> datafusion::logical_expr::Expr {
    datafusion::logical_expr::lit(ScalarValue::TimestampMicrosecond(
        Some(clock.as_of_micros),
        Some("UTC".into()),
    ))
}
