//! `segment(name) -> TABLE(profile_id)` and the registry that says where each segment's
//! members come from.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};

use tessera_core::schema::AUDIENCE_MEMBERSHIP;

/// Where the members of each segment come from, for `segment('name')` and
/// `in_segment(profile_id, 'name')`.
///
/// By default a segment's members are its rows in the `audience_membership` table (the
/// latest refresh). A segment refresh overrides the segments it has just computed, so
/// that segments built on them in the same refresh see the new members before anything
/// is committed.
#[derive(Debug, Default)]
pub struct SegmentSources {
    membership: RwLock<Option<Arc<dyn TableProvider>>>,
    overrides: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    /// The `consent` table, for `consent_allows`.
    consent: RwLock<Option<Arc<dyn TableProvider>>>,
}

impl SegmentSources {
    /// Consent is read from this `consent` provider.
    pub fn set_consent(&self, provider: Arc<dyn TableProvider>) {
        if let Ok(mut c) = self.consent.write() {
            *c = Some(provider);
        }
    }

    /// The `consent` table's scan, when the session has one.
    pub fn consent_plan(&self) -> Result<Option<LogicalPlanBuilder>> {
        let consent = self.consent.read().ok().and_then(|c| c.clone());
        consent
            .map(|p| {
                LogicalPlanBuilder::scan(tessera_core::schema::CONSENT, provider_as_source(p), None)
            })
            .transpose()
    }

    /// Members are read from this `audience_membership` provider.
    pub fn set_membership(&self, provider: Arc<dyn TableProvider>) {
        if let Ok(mut m) = self.membership.write() {
            *m = Some(provider);
        }
    }

    /// No members can be read (a caller who may not see `audience_membership`).
    pub fn clear_membership(&self) {
        if let Ok(mut m) = self.membership.write() {
            *m = None;
        }
    }

    /// Segment `name`'s members are the `profile_id` column of `provider` from now on.
    pub fn set(&self, name: &str, provider: Arc<dyn TableProvider>) {
        if let Ok(mut o) = self.overrides.write() {
            o.insert(name.to_owned(), provider);
        }
    }

    /// The plan reading segment `name`'s members: one `profile_id` column.
    pub fn plan(&self, name: &str) -> Result<LogicalPlan> {
        let overridden = self
            .overrides
            .read()
            .ok()
            .and_then(|o| o.get(name).cloned());
        if let Some(provider) = overridden {
            return LogicalPlanBuilder::scan(
                format!("segment_{name}"),
                provider_as_source(provider),
                None,
            )?
            .project(vec![col("profile_id")])?
            .build();
        }
        let membership = self.membership.read().ok().and_then(|m| m.clone());
        match membership {
            Some(provider) => {
                LogicalPlanBuilder::scan(AUDIENCE_MEMBERSHIP, provider_as_source(provider), None)?
                    .filter(col("segment").eq(lit(name)))?
                    .project(vec![col("profile_id")])?
                    .build()
            }
            None => plan_err!(
                "segment '{name}' has no members yet: the lake has no {AUDIENCE_MEMBERSHIP} \
                 table; run `tessera segments refresh`"
            ),
        }
    }
}

/// The segment name in a function's arguments (a quoted literal), or a plan error saying
/// how to call `function`.
pub(crate) fn segment_name(function: &str, arg: Option<&Expr>) -> Result<String> {
    match arg {
        Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _))
        | Some(Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _))
        | Some(Expr::Literal(ScalarValue::Utf8View(Some(s)), _)) => Ok(s.clone()),
        _ => plan_err!(
            "{function} expects a segment name in quotes, as in {}",
            if function == "segment" {
                "segment('high_value')"
            } else {
                "in_segment(profile_id, 'high_value')"
            }
        ),
    }
}

/// The members of a segment as a table with one column, `profile_id`.
///
/// ```sql
/// SELECT p.* FROM profiles AS p JOIN segment('high_value') AS s USING (profile_id);
/// ```
#[derive(Debug)]
pub struct SegmentTable {
    sources: Arc<SegmentSources>,
}

impl SegmentTable {
    pub fn new(sources: Arc<SegmentSources>) -> Self {
        SegmentTable { sources }
    }
}

impl TableFunctionImpl for SegmentTable {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 1 {
            return plan_err!("segment takes one argument: a segment name in quotes");
        }
        let name = segment_name("segment", exprs.first())?;
        let plan = self.sources.plan(&name)?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}
