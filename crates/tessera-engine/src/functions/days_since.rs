//! `days_since(ts) -> bigint`

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_DATETIME;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};

use super::clock::{Clock, DAY_MICROS, check_temporal, instant_arg, instant_literal, map_micros};

/// Whole days from a date or timestamp to the session's [`as_of`](super::as_of::AsOf)
/// time, rounded down (negative for times after it; NULL for NULL). Recency in days:
///
/// ```sql
/// SELECT profile_id FROM profiles WHERE days_since(last_order_at) > 90;
/// ```
///
/// `days_since(ts, at)` counts to the instant `at` instead; the one-argument form is
/// planned as `days_since(ts, <as_of() of the session>)`, so the instant travels with
/// the plan.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DaysSince {
    signature: Signature,
    clock: Clock,
}

impl DaysSince {
    pub fn new(clock: Clock) -> Self {
        DaysSince {
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Stable,
            ),
            clock,
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_DATETIME,
        "Whole days from a date or timestamp to the session's as_of() time (rounded down).",
        "days_since(ts [, at])",
    )
    .with_sql_example("SELECT days_since(last_order_at) FROM profiles;")
    .with_argument("ts", "a timestamp or date")
    .with_argument("at", "the instant to count to (default: as_of())")
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
            [t, at] => {
                check_temporal("days_since", t)?;
                check_temporal("days_since", at)?;
            }
            _ => {
                return plan_err!(
                    "days_since takes a timestamp or a date, and optionally the instant to count to"
                );
            }
        }
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let as_of = match args.args.get(1) {
            None => self.clock.as_of_micros,
            Some(at) => match instant_arg("days_since", at)? {
                Some(micros) => micros,
                None => return Ok(ColumnarValue::Scalar(ScalarValue::Int64(None))),
            },
        };
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

    fn simplify(&self, mut args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        if args.len() != 1 {
            return Ok(ExprSimplifyResult::Original(args));
        }
        args.push(instant_literal(self.clock));
        Ok(ExprSimplifyResult::Simplified(
            ScalarUDF::from(DaysSince::new(self.clock)).call(args),
        ))
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
