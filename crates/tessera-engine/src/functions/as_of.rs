//! `as_of() -> timestamp`

use std::sync::LazyLock;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_DATETIME;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
    lit,
};

use super::clock::Clock;

/// The session's evaluation time: when the session was built, or the instant configured
/// for it (`tessera segments refresh --as-of`, `[segments] as_of`). Segments compare
/// against it instead of `now()` so that a refresh, a test or a back-test is
/// reproducible.
///
/// ```sql
/// SELECT profile_id FROM profiles WHERE last_seen > as_of() - INTERVAL '7 days';
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AsOf {
    signature: Signature,
    clock: Clock,
}

impl AsOf {
    pub fn new(clock: Clock) -> Self {
        AsOf {
            signature: Signature::nullary(Volatility::Stable),
            clock,
        }
    }

    fn value(&self) -> ScalarValue {
        ScalarValue::TimestampMicrosecond(Some(self.clock.as_of_micros), Some("UTC".into()))
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_DATETIME,
        "The session's evaluation time (UTC): the configured as-of instant, else when the \
         session started.",
        "as_of()",
    )
    .with_sql_example("SELECT as_of() - INTERVAL '30 days';")
    .build()
});

impl ScalarUDFImpl for AsOf {
    fn name(&self) -> &str {
        "as_of"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value()))
    }

    fn simplify(&self, _args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(ExprSimplifyResult::Simplified(lit(self.value())))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
