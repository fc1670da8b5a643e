//! Checks segments against the lake: every table, view and function they name exists,
//! the query plans, and it returns a text `profile_id` column. Nothing runs.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{SetExpr, Spanned, Statement};
use tessera_engine::functions::segment::SegmentSources;

use crate::error::FileError;
use crate::file::Segment;

/// The schema of a segment's members: one `profile_id` column.
pub fn members_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new(
        "profile_id",
        DataType::Utf8,
        false,
    )]))
}

/// Points every segment of `segments` at an empty member table, so that segments
/// referencing others can be planned before anything is refreshed.
pub fn empty_members<'a>(
    sources: &SegmentSources,
    segments: impl IntoIterator<Item = &'a Segment>,
) -> datafusion::common::Result<()> {
    for s in segments {
        let table = MemTable::try_new(members_schema(), vec![vec![]])?;
        sources.set(&s.name, Arc::new(table));
    }
    Ok(())
}

/// Plans every one of `segments` in `ctx` (with spans collected for locations) and
/// reports all problems together.
pub async fn check_all(ctx: &SessionContext, segments: &[&Segment]) -> crate::Result<()> {
    ctx.sql("SET datafusion.sql_parser.collect_spans = true")
        .await?;
    let mut errors = Vec::new();
    for s in segments {
        if let Err(e) = plan(ctx, s).await {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::SegmentsError::Invalid(errors))
    }
}

/// Plans `segment` in `ctx`: its logical plan, or every problem found, located.
pub async fn plan(ctx: &SessionContext, segment: &Segment) -> Result<LogicalPlan, FileError> {
    let statement = DfStatement::Statement(Box::new(Statement::Query(segment.query.clone())));
    let plan = match ctx.state().statement_to_plan(statement).await {
        Ok(plan) => plan,
        Err(e) => return Err(locate(ctx, segment, &e).await),
    };
    let schema = plan.schema();
    let profile_id = schema.fields().iter().find(|f| f.name() == "profile_id");
    let at = projection_start(segment);
    match profile_id {
        None => {
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(FileError::new(
                &segment.file,
                at.0,
                at.1,
                format!(
                    "the query returns no profile_id column (it returns {})",
                    columns.join(", ")
                ),
            )
            .help("select the profile id as profile_id, e.g. SELECT p.profile_id FROM profiles AS p ..."))
        }
        Some(f)
            if !matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            Err(FileError::new(
                &segment.file,
                at.0,
                at.1,
                format!("profile_id is {}, not text", f.data_type()),
            )
            .help("return the profile id itself (a text such as p_1a2b...), not a count or a flag"))
        }
        Some(_) => Ok(plan),
    }
}

/// Where the outermost SELECT list starts.
fn projection_start(segment: &Segment) -> (u64, u64) {
    let at = match segment.query.body.as_ref() {
        SetExpr::Select(s) => s
            .projection
            .first()
            .map(|p| p.span().start)
            .unwrap_or_else(|| segment.query.span().start),
        other => other.span().start,
    };
    (at.line, at.column)
}

/// Turns a planning error into a located file error: an unknown table or function is
/// pointed at where the query names it; other errors at DataFusion's diagnostic span.
async fn locate(ctx: &SessionContext, segment: &Segment, e: &DataFusionError) -> FileError {
    let message = e.find_root().strip_backtrace();
    let lower = message.to_ascii_lowercase();
    let state = ctx.state();
    for (table, at) in &segment.table_at {
        let exists = ctx.table_exist(table.as_str()).unwrap_or(false);
        if !exists && lower.contains(&format!("{table}'")) {
            let mut tables: Vec<String> = ctx
                .catalog_names()
                .into_iter()
                .filter_map(|c| ctx.catalog(&c))
                .flat_map(|c| {
                    c.schema_names()
                        .into_iter()
                        .filter(|s| s != "information_schema")
                        .filter_map(move |s| c.schema(&s))
                        .flat_map(|s| s.table_names())
                        .collect::<Vec<_>>()
                })
                .collect();
            tables.sort();
            return FileError::new(
                &segment.file,
                at.line,
                at.column,
                format!("unknown table or view {table:?}"),
            )
            .help(format!("the lake has: {}", tables.join(", ")));
        }
    }
    for (function, at) in &segment.function_at {
        let known = state.scalar_functions().contains_key(function)
            || state.aggregate_functions().contains_key(function)
            || state.window_functions().contains_key(function);
        if !known && lower.contains(function.as_str()) {
            let mut help = "see `tessera sql \"SHOW FUNCTIONS\"` for every function".to_owned();
            if let Some(i) = message.find("Did you mean") {
                help = format!("{}; {help}", message[i..].trim_end_matches('.'));
            }
            return FileError::new(
                &segment.file,
                at.line,
                at.column,
                format!("unknown function {function:?}"),
            )
            .help(help);
        }
    }
    let span = e.diagnostic().and_then(|d| d.span);
    let (line, column) = match span {
        Some(s) => (s.start.line, s.start.column),
        None => {
            let at = segment.query.span().start;
            (at.line, at.column)
        }
    };
    let first_line = message.lines().next().unwrap_or_default().to_owned();
    let help = if first_line.contains("No field named") {
        let mut columns = Vec::new();
        for t in segment.tables.iter() {
            if let Ok(table) = ctx.table_provider(t.as_str()).await {
                columns.push(format!(
                    "{t} has {}",
                    table
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if columns.is_empty() {
            "check the column names".to_owned()
        } else {
            columns.join("; ")
        }
    } else {
        "fix the query; `tessera sql` runs it on its own to try changes".to_owned()
    };
    FileError::new(&segment.file, line, column, first_line).help(help)
}
