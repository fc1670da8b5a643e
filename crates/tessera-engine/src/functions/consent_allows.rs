//! `consent_allows(profile_id, category) -> boolean`

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue, Spans, exec_err, plan_err};
use datafusion::logical_expr::expr::{InSubquery, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Subquery, Volatility, col, lit,
};

use super::segment::SegmentSources;

/// Whether a profile's stated consent lets its data go to a destination of `category`,
/// by Segment's rule: a profile that never stated a preference (no row in `consent`)
/// is allowed everywhere; one that did is allowed only for categories it granted
/// (empty preferences grant none).
///
/// ```sql
/// SELECT profile_id FROM profiles WHERE consent_allows(profile_id, 'Advertising');
/// ```
///
/// It is planned as `profile_id NOT IN (SELECT profile_id FROM consent) OR profile_id IN
/// (SELECT profile_id FROM consent WHERE category = 'Advertising' AND granted)`; with no
/// `consent` table every profile is allowed.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConsentAllows {
    signature: Signature,
}

impl ConsentAllows {
    pub fn new() -> Self {
        ConsentAllows {
            signature: Signature::any(2, Volatility::Stable),
        }
    }
}

impl Default for ConsentAllows {
    fn default() -> Self {
        Self::new()
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "True when the profile's stated consent (or the absence of one) allows the category.",
        "consent_allows(profile_id, category)",
    )
    .with_sql_example(
        "SELECT count(*) FROM profiles WHERE consent_allows(profile_id, 'Advertising');",
    )
    .with_argument("profile_id", "a profile id")
    .with_argument(
        "category",
        "a consent category in quotes, as the consent manager names it",
    )
    .build()
});

impl ScalarUDFImpl for ConsentAllows {
    fn name(&self) -> &str {
        "consent_allows"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args.len() != 2 {
            return plan_err!("consent_allows takes two arguments: a profile id and a category");
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("consent_allows can only be used in sessions built by Tessera's engine")
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// Rewrites `consent_allows(x, 'category')` into its two semi joins.
#[derive(Debug)]
pub struct ConsentRewrite {
    sources: Arc<SegmentSources>,
}

impl ConsentRewrite {
    pub fn new(sources: Arc<SegmentSources>) -> Self {
        ConsentRewrite { sources }
    }
}

fn subquery(plan: LogicalPlanBuilder) -> Result<Subquery> {
    Ok(Subquery {
        subquery: Arc::new(plan.project(vec![col("profile_id")])?.build()?),
        outer_ref_columns: vec![],
        spans: Spans::new(),
    })
}

impl FunctionRewrite for ConsentRewrite {
    fn name(&self) -> &str {
        "consent_allows_to_semi_joins"
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
        if func.name() != "consent_allows" {
            return Ok(Transformed::no(Expr::ScalarFunction(ScalarFunction {
                func,
                args,
            })));
        }
        let category = match args.get(1) {
            Some(Expr::Literal(ScalarValue::Utf8(Some(c)), _))
            | Some(Expr::Literal(ScalarValue::Utf8View(Some(c)), _))
            | Some(Expr::Literal(ScalarValue::LargeUtf8(Some(c)), _)) => c.clone(),
            _ => {
                return plan_err!(
                    "consent_allows takes the category as a quoted literal: \
                     consent_allows(profile_id, 'Advertising')"
                );
            }
        };
        let Some(profile) = args.into_iter().next() else {
            return plan_err!("consent_allows takes two arguments: a profile id and a category");
        };
        let Some(scan) = self.sources.consent_plan()? else {
            // Nobody stated a preference.
            return Ok(Transformed::yes(lit(true)));
        };
        let stated = subquery(scan.clone())?;
        let granted =
            subquery(scan.filter(col("category").eq(lit(category)).and(col("granted")))?)?;
        let not_stated = Expr::InSubquery(InSubquery::new(Box::new(profile.clone()), stated, true));
        let allowed = Expr::InSubquery(InSubquery::new(Box::new(profile), granted, false));
        Ok(Transformed::yes(not_stated.or(allowed)))
    }
}
