//! `within_days(ts, n) -> boolean`

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_DATETIME;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};

use super::clock::{Clock, DAY_MICROS, check_temporal, instant_arg, instant_literal, map_micros};

/// Whether a date or timestamp falls in the trailing window of `n` days that ends at the
/// session's [`as_of`](super::as_of::AsOf) time: `as_of() - n days < ts <= as_of()`.
/// Counts of an event in a trailing window read naturally with it:
///
/// ```sql
/// SELECT profile_id, count(*) FILTER (WHERE within_days(timestamp, 30)) AS orders_30d
/// FROM profile_events WHERE event = 'Order Completed' GROUP BY profile_id;
/// ```
///
/// `within_days(ts, n, at)` ends the window at the instant `at` instead; the
/// two-argument form is planned as `within_days(ts, n, <as_of() of the session>)`, so the
/// instant travels with the plan.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WithinDays {
    signature: Signature,
    clock: Clock,
}

impl WithinDays {
    pub fn new(clock: Clock) -> Self {
        WithinDays {
            signature: Signature::one_of(
                vec![TypeSignature::Any(2), TypeSignature::Any(3)],
                Volatility::Stable,
            ),
            clock,
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_DATETIME,
        "True when ts is in the n days up to the session's as_of() time \
         (as_of() - n days < ts <= as_of()).",
        "within_days(ts, n [, at])",
    )
    .with_sql_example("SELECT count(*) FROM events WHERE within_days(timestamp, 7);")
    .with_argument("ts", "a timestamp or date")
    .with_argument(
        "n",
        "the window's length in days (a number, fractions allowed)",
    )
    .with_argument("at", "the instant the window ends at (default: as_of())")
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
            [t, n] | [t, n, _] => {
                check_temporal("within_days", t)?;
                if let [_, _, at] = args {
                    check_temporal("within_days", at)?;
                }
                if !(n.is_numeric() || n == &DataType::Null) {
                    return plan_err!(
                        "within_days expects a number of days as its second argument, got {n}"
                    );
                }
            }
            _ => {
                return plan_err!(
                    "within_days takes a timestamp and a number of days, and optionally the \
                     instant the window ends at"
                );
            }
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
        let end = match args.args.get(2) {
            None => self.clock.as_of_micros,
            Some(at) => match instant_arg("within_days", at)? {
                Some(micros) => micros,
                None => return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None))),
            },
        };
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

    fn simplify(&self, mut args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        if args.len() != 2 {
            return Ok(ExprSimplifyResult::Original(args));
        }
        args.push(instant_literal(self.clock));
        Ok(ExprSimplifyResult::Simplified(
            ScalarUDF::from(WithinDays::new(self.clock)).call(args),
        ))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::ScalarUDF;
    use datafusion::prelude::SessionContext;

    use super::super::days_since::DaysSince;
    use super::*;

    /// The short forms are planned with the session's instant as a literal, so a plan
    /// shipped to a cluster's executors carries the client's `as_of()`.
    #[tokio::test]
    async fn the_session_instant_is_planned_as_a_literal() {
        let clock = Clock::at(1_793_448_000_000_000);
        let ctx = SessionContext::new();
        ctx.register_udf(ScalarUDF::from(DaysSince::new(clock)));
        ctx.register_udf(ScalarUDF::from(WithinDays::new(clock)));
        let plan = ctx
            .sql("SELECT days_since(ts), within_days(ts, 7) FROM (VALUES (TIMESTAMP '2026-01-01 00:00:00')) AS t(ts)")
            .await
            .expect("plans")
            .into_optimized_plan()
            .expect("optimizes");
        let text = plan.display_indent().to_string();
        let instant = r#"TimestampMicrosecond(1793448000000000, Some("UTC"))"#;
        assert!(
            text.contains(&format!("days_since(t.ts, {instant})")),
            "{text}"
        );
        assert!(
            text.contains(&format!("within_days(t.ts, Int64(7), {instant})")),
            "{text}"
        );
    }
}
