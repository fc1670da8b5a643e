//! `identity_map_at(version | 'timestamp') -> TABLE(id_type, id_value, profile_id,
//! first_seen, last_seen)`: the identity map as a past stitching run left it — at a
//! Delta version of `identity_map`, or the latest version committed at or before an
//! RFC 3339 time or a date — so an analyst can see who was who when a campaign ran:
//!
//! ```sql
//! SELECT profile_id FROM identity_map_at('2026-11-01T00:00:00Z')
//! WHERE id_type = 'email' AND id_value = 'jane@example.com'
//! ```
//!
//! Identifier values are personal data: sessions without the `pii` grant, or with a
//! row filter, get [`Refused`] in its place.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use tessera_core::schema::{IDENTITY_MAP, identity_map_schema};
use tessera_lake::Lake;

/// Which version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Version(u64),
    /// Microseconds since the epoch.
    Time(i64),
}

/// The table function.
#[derive(Debug)]
pub struct IdentityMapAt {
    lake: Arc<Lake>,
}

impl IdentityMapAt {
    pub fn new(lake: Arc<Lake>) -> Self {
        IdentityMapAt { lake }
    }
}

/// Parses the argument: a version number, or an RFC 3339 time or date.
pub fn parse_at(args: &[Expr]) -> Result<At> {
    let usage = "identity_map_at takes one argument: a version of identity_map (a number) \
                 or a time ('2026-11-01T00:00:00Z' or '2026-11-01')";
    match args {
        [Expr::Literal(v, _)] => match v {
            ScalarValue::Int64(Some(n)) if *n >= 0 => Ok(At::Version(*n as u64)),
            ScalarValue::Int64(Some(n)) => plan_err!("identity_map_at: no version {n}; {usage}"),
            ScalarValue::Utf8(Some(t))
            | ScalarValue::LargeUtf8(Some(t))
            | ScalarValue::Utf8View(Some(t)) => match tessera_core::config::parse_instant(t) {
                Some(m) => Ok(At::Time(m)),
                None => plan_err!("identity_map_at: {t:?} is not a time; {usage}"),
            },
            other => plan_err!("identity_map_at: {other} is neither a version nor a time; {usage}"),
        },
        _ => plan_err!("{usage}"),
    }
}

impl TableFunctionImpl for IdentityMapAt {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(MapAt {
            lake: self.lake.clone(),
            at: parse_at(args)?,
        }))
    }
}

/// `identity_map` at one version, opened when scanned.
#[derive(Debug)]
struct MapAt {
    lake: Arc<Lake>,
    at: At,
}

fn external(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(e.to_string())
}

#[async_trait]
impl TableProvider for MapAt {
    fn schema(&self) -> SchemaRef {
        // As the Delta provider reads it: strings as views.
        let fields: Vec<Field> = identity_map_schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => f.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let version = match self.at {
            At::Version(v) => v,
            At::Time(t) => match self
                .lake
                .version_at(IDENTITY_MAP, t)
                .await
                .map_err(external)?
            {
                Some(v) => v,
                None => {
                    return plan_err!(
                        "identity_map_at: identity_map has no version at or before that time \
                         (stitching had not run yet)"
                    );
                }
            },
        };
        let latest = self
            .lake
            .open(IDENTITY_MAP)
            .await
            .map_err(external)?
            .version()
            .unwrap_or(0);
        if version > latest {
            return plan_err!(
                "identity_map_at: identity_map has no version {version} (the latest is {latest})"
            );
        }
        let table = self
            .lake
            .open_version(IDENTITY_MAP, version)
            .await
            .map_err(external)?;
        // A plain Parquet scan of that version's files: a plan other processes can run.
        let provider = tessera_lake::PinnedTable::of(IDENTITY_MAP, &table).map_err(external)?;
        provider.scan(state, projection, filters, limit).await
    }
}

/// What sessions that may not see identifier values get as `identity_map_at`.
#[derive(Debug)]
pub struct Refused;

impl TableFunctionImpl for Refused {
    fn call(&self, _: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        plan_err!(
            "identity_map_at reads identifier values in clear: it needs the pii grant and no \
             row filter"
        )
    }
}
