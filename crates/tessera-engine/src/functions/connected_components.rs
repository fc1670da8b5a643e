//! `connected_components(query) -> TABLE(node, component)`

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, LargeStringArray, RecordBatch, StringArray, StringBuilder,
    StringViewArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::graph;

/// Connected components of a graph given as an edge query, computed with a union-find
/// (path compression, union by size) in one pass over the edges — no iterative SQL.
///
/// The argument is a query (or a table name) whose first two columns are the ends of
/// each edge; a row whose second end is NULL only declares its first end. The result
/// has one row per node: `node` and `component`, the smallest node of its component.
///
/// ```sql
/// SELECT component, count(*) AS size
/// FROM connected_components('SELECT anonymous_id, user_id FROM events')
/// GROUP BY component ORDER BY size DESC LIMIT 10;
/// ```
#[derive(Debug, Default)]
pub struct ConnectedComponents;

impl TableFunctionImpl for ConnectedComponents {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let query = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(q)), _)]
            | [Expr::Literal(ScalarValue::LargeUtf8(Some(q)), _)]
            | [Expr::Literal(ScalarValue::Utf8View(Some(q)), _)] => q.trim().to_owned(),
            _ => {
                return plan_err!(
                    "connected_components takes one text argument: an edge query such as \
                     'SELECT a, b FROM edges' or a table name"
                );
            }
        };
        let query = if query.split_whitespace().count() == 1 {
            format!("SELECT * FROM {query}")
        } else {
            query
        };
        Ok(Arc::new(ComponentsTable {
            query,
            schema: Arc::new(Schema::new(vec![
                Field::new("node", DataType::Utf8, false),
                Field::new("component", DataType::Utf8, false),
            ])),
        }))
    }
}

/// A text column as it comes (no copy for `Utf8`, `LargeUtf8`, `Utf8View`), other
/// types cast to text.
fn text(column: &ArrayRef) -> Result<ArrayRef> {
    Ok(match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => column.clone(),
        _ => cast(column, &DataType::Utf8)?,
    })
}

/// Read access to any text column.
enum Strings<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Strings<'a> {
    fn of(array: &'a ArrayRef) -> Self {
        match array.data_type() {
            DataType::LargeUtf8 => Strings::Large(array.as_string::<i64>()),
            DataType::Utf8View => Strings::View(array.as_string_view()),
            _ => Strings::Utf8(array.as_string::<i32>()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Strings::Utf8(a) => a.len(),
            Strings::Large(a) => a.len(),
            Strings::View(a) => a.len(),
        }
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

#[derive(Debug)]
struct ComponentsTable {
    query: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for ComponentsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return exec_err!("connected_components needs a full DataFusion session");
        };
        // The edge query sees what the caller's session sees, and only ever reads.
        let statement = crate::policy::parse(state, &self.query, crate::policy::Policy::ReadOnly)
            .map_err(|e| DataFusionError::Plan(format!("connected_components: {e}")))?;
        let plan = state.statement_to_plan(statement).await?;
        crate::policy::verify(&plan, crate::policy::Policy::ReadOnly, "the edge query")
            .map_err(|e| DataFusionError::Plan(format!("connected_components: {e}")))?;
        if plan.schema().fields().len() < 2 {
            return plan_err!(
                "connected_components: the edge query must return two columns (the ends of \
                 each edge), it returns {}",
                plan.schema().fields().len()
            );
        }
        let physical = state.create_physical_plan(&plan).await?;
        let batches = collect(physical, state.task_ctx()).await?;
        let mut ends: Vec<(ArrayRef, ArrayRef)> = Vec::with_capacity(batches.len());
        let mut rows = 0;
        for batch in &batches {
            rows += batch.num_rows();
            ends.push((text(batch.column(0))?, text(batch.column(1))?));
        }
        let mut edges: Vec<(&str, Option<&str>)> = Vec::with_capacity(rows);
        for (a, b) in &ends {
            let (a, b) = (Strings::of(a), Strings::of(b));
            edges.extend((0..a.len()).filter_map(|i| match (a.get(i), b.get(i)) {
                (Some(x), y) | (y, Some(x)) => Some((x, y)),
                (None, None) => None,
            }));
        }
        let (nodes, labels) = graph::components(&edges);
        let bytes: usize = nodes.iter().map(|n| n.len()).sum();
        let mut node_col = StringBuilder::with_capacity(nodes.len(), bytes);
        let mut label_col = StringBuilder::with_capacity(nodes.len(), bytes);
        for (node, label) in nodes.iter().zip(&labels) {
            node_col.append_value(node);
            label_col.append_value(nodes[*label as usize]);
        }
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![Arc::new(node_col.finish()), Arc::new(label_col.finish())],
        )?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
