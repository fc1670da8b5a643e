//! `within_days(ts, n) -> boolean`

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_DATETIME;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::clock::{Clock, DAY_MICROS, check_temporal, map_micros};

/// Whether a date or timestamp falls in the trailing window of `n` days that ends at the
/// session's [`as_of`](super::as_of::AsOf) time: `as_of() - n days < ts <= as_of()`.
/// Counts of an event in a trailing window read naturally with it:
///
/// ```sql
/// SELECT profile_id, count(*) FILTER (WHERE within_days(timestamp, 30)) AS orders_30d
/// FROM profile_events WHERE event = 'Order Completed' GROUP BY profile_id;
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WithinDays {
    signature: Signature,
    clock: Clock,
}

impl WithinDays {
    pub fn new(clock: Clock) -> Self {
        WithinDays {
            signature: Signature::any(2, Volatility::Stable),
            clock,
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_DATETIME,
        "True when ts is in the n days up to the session's as_of() time \
         (as_of() - n days < ts <= as_of()).",
        "within_days(ts, n)",
    )
    .with_sql_example("SELECT count(*) FROM events WHERE within_days(timestamp, 7);")
    .with_argument("ts", "a timestamp or date")
    .with_argument(
        "n",
        "the window's length in days (a number, fractions allowed)",
    )
    .build()
});

impl ScalarUDFImpl for WithinDays {
    fn name(&self) -> &str {
        "within_days"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [t, n] => {
                check_temporal("within_days", t)?;
                if !(n.is_numeric() || n == &DataType::Null) {
                    return plan_err!(
                        "within_days expects a number of days as its second argument, got {n}"
                    );
                }
            }
            _ => return plan_err!("within_days takes two arguments: a timestamp and days"),
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let window = match &args.args[1] {
            ColumnarValue::Scalar(s) if s.is_null() => {
                return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
            }
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Float64)? {
                ScalarValue::Float64(Some(days)) => days,
                _ => return exec_err!("within_days: the number of days is not a number"),
            },
            ColumnarValue::Array(_) => {
                return exec_err!("within_days expects a constant number of days, not a column");
            }
        };
        let end = self.clock.as_of_micros;
        let start = end.saturating_sub((window * DAY_MICROS as f64) as i64);
        map_micros(
            &args.args[0],
            args.number_rows,
            &DataType::Boolean,
            |micros| {
                let inside: BooleanArray = micros
                    .iter()
                    .map(|t| t.map(|t| t > start && t <= end))
                    .collect();
                Arc::new(inside)
            },
        )
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
