//! `days_since(ts) -> bigint`

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_DATETIME;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::clock::{Clock, DAY_MICROS, check_temporal, map_micros};

/// Whole days from a date or timestamp to the session's [`as_of`](super::as_of::AsOf)
/// time, rounded down (negative for times after it; NULL for NULL). Recency in days:
///
/// ```sql
/// SELECT profile_id FROM profiles WHERE days_since(last_order_at) > 90;
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DaysSince {
    signature: Signature,
    clock: Clock,
}

impl DaysSince {
    pub fn new(clock: Clock) -> Self {
        DaysSince {
            signature: Signature::any(1, Volatility::Stable),
            clock,
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_DATETIME,
        "Whole days from a date or timestamp to the session's as_of() time (rounded down).",
        "days_since(ts)",
    )
    .with_sql_example("SELECT days_since(last_order_at) FROM profiles;")
    .with_argument("ts", "a timestamp or date")
    .build()
});

impl ScalarUDFImpl for DaysSince {
    fn name(&self) -> &str {
        "days_since"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [t] => check_temporal("days_since", t)?,
            _ => return plan_err!("days_since takes one argument: a timestamp or a date"),
        }
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let as_of = self.clock.as_of_micros;
        map_micros(
            &args.args[0],
            args.number_rows,
            &DataType::Int64,
            |micros| {
                let days: Int64Array = micros.unary(|t| days_between(t, as_of));
                Arc::new(days)
            },
        )
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// Whole days from `t` to `as_of`, rounded towards minus infinity.
pub(crate) fn days_between(t: i64, as_of: i64) -> i64 {
    as_of.saturating_sub(t).div_euclid(DAY_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_down() {
        let day = DAY_MICROS;
        assert_eq!(days_between(0, 0), 0);
        assert_eq!(days_between(0, day - 1), 0);
        assert_eq!(days_between(0, day), 1);
        assert_eq!(days_between(day, 0), -1);
        assert_eq!(days_between(1, 0), -1);
    }
}
