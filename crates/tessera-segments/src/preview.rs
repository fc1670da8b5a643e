//! Predicting what a change would do to audiences, writing nothing: every segment is
//! evaluated (dependencies first) over the lake with some tables replaced by rows held
//! in memory — what a dry run of stitching predicts `identity_map` and `profiles` would
//! become — and compared with the members `audience_membership` holds now.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use tessera_engine::Engine;
use tessera_engine::functions::segment::SegmentSources;

use crate::SegmentSet;
use crate::error::Result;
use crate::refresh::{evaluate, members_batch, read_membership};
use crate::validate::{self, members_schema};

/// What one segment would become.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Preview {
    pub segment: String,
    /// Members it would have.
    pub members: u64,
    /// Profiles that would enter (not members now), sorted.
    pub entered: Vec<String>,
    /// Current members that would exit, sorted.
    pub exited: Vec<String>,
}

/// Evaluates every segment of `set` at `as_of_micros` (now when `None`) with each
/// `(table, schema, rows)` of `replaced` standing in for that lake table, and returns
/// who would enter and exit each one, in refresh order.
pub async fn preview(
    engine: &Engine,
    set: &SegmentSet,
    as_of_micros: Option<i64>,
    replaced: &[(&str, SchemaRef, Vec<RecordBatch>)],
) -> Result<Vec<Preview>> {
    let as_of = as_of_micros.unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
    let engine = engine.with_as_of(as_of);
    let segments = set.with_dependencies(&[])?;
    let sources = Arc::new(SegmentSources::default());
    validate::empty_members(&sources, segments.iter().copied())?;
    let ctx = engine.session_with(sources.clone()).await?;
    let current = read_membership(&ctx).await?;
    for (name, schema, rows) in replaced {
        ctx.deregister_table(*name)?;
        let table = MemTable::try_new(schema.clone(), vec![rows.clone()])?;
        ctx.register_table(*name, Arc::new(table))?;
    }
    tessera_engine::register_views(&ctx).await?;
    validate::check_all(&ctx, &segments).await?;

    let mut out = Vec::with_capacity(segments.len());
    for segment in segments {
        let members = evaluate(&ctx, segment).await?;
        let table = MemTable::try_new(members_schema(), vec![vec![members_batch(&members)?]])?;
        sources.set(&segment.name, Arc::new(table));
        let before: HashSet<&str> = current
            .get(&segment.name)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let after: HashSet<&str> = members.iter().map(String::as_str).collect();
        let mut exited: Vec<String> = before.difference(&after).map(|p| (*p).to_owned()).collect();
        exited.sort_unstable();
        out.push(Preview {
            segment: segment.name.clone(),
            members: members.len() as u64,
            entered: members
                .iter()
                .filter(|p| !before.contains(p.as_str()))
                .cloned()
                .collect(),
            exited,
        });
    }
    Ok(out)
}
