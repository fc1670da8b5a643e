//! `in_segment(profile_id, name) -> boolean`

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Spans;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, exec_err, plan_err};
use datafusion::logical_expr::expr::{InSubquery, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, Subquery,
    Volatility,
};

use super::segment::{SegmentSources, segment_name};

/// True when the profile is a member of the segment — segments built on segments:
///
/// ```sql
/// SELECT profile_id FROM profiles
/// WHERE in_segment(profile_id, 'high_value') AND NOT in_segment(profile_id, 'at_risk');
/// ```
///
/// It is planned as `profile_id IN (SELECT profile_id FROM segment('name'))` (a semi
/// join against the segment's members), so it costs one hash join, not a lookup per row.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct InSegment {
    signature: Signature,
}

impl InSegment {
    pub fn new() -> Self {
        InSegment {
            signature: Signature::any(2, Volatility::Stable),
        }
    }
}

impl Default for InSegment {
    fn default() -> Self {
        Self::new()
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "True when the profile is a member of the named segment (at its latest refresh).",
        "in_segment(profile_id, name)",
    )
    .with_sql_example("SELECT count(*) FROM profiles WHERE in_segment(profile_id, 'high_value');")
    .with_argument("profile_id", "a profile id")
    .with_argument("name", "a segment name in quotes")
    .build()
});

impl ScalarUDFImpl for InSegment {
    fn name(&self) -> &str {
        "in_segment"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() != 2 {
            return plan_err!("in_segment takes two arguments: a profile id and a segment name");
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // Rewritten into a subquery before planning; reaching here means the session
        // was built without Tessera's rewrite.
        exec_err!("in_segment can only be used in sessions built by Tessera's engine")
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// Rewrites `in_segment(x, 'name')` into `x IN (SELECT profile_id FROM <members>)`.
#[derive(Debug)]
pub struct InSegmentRewrite {
    sources: Arc<SegmentSources>,
}

impl InSegmentRewrite {
    pub fn new(sources: Arc<SegmentSources>) -> Self {
        InSegmentRewrite { sources }
    }
}

impl FunctionRewrite for InSegmentRewrite {
    fn name(&self) -> &str {
        "in_segment_to_semi_join"
    }

    fn rewrite(
        &self,
        expr: Expr,
        _schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> Result<Transformed<Expr>> {
        let Expr::ScalarFunction(ScalarFunction { func, args }) = expr else {
            return Ok(Transformed::no(expr));
        };
        if func.name() != "in_segment" {
            return Ok(Transformed::no(Expr::ScalarFunction(ScalarFunction {
                func,
                args,
            })));
        }
        let name = segment_name("in_segment", args.get(1))?;
        let Some(profile) = args.into_iter().next() else {
            return plan_err!("in_segment takes two arguments: a profile id and a segment name");
        };
        let plan = self.sources.plan(&name)?;
        let subquery = Subquery {
            subquery: Arc::new(plan),
            outer_ref_columns: vec![],
            spans: Spans::new(),
        };
        Ok(Transformed::yes(Expr::InSubquery(InSubquery::new(
            Box::new(profile),
            subquery,
            false,
        ))))
    }
}
