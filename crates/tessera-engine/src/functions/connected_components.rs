//! `connected_components(query) -> TABLE(node, component)`

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
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
        let plan = state.create_logical_plan(&self.query).await?;
        if plan.schema().fields().len() < 2 {
            return plan_err!(
                "connected_components: the edge query must return two columns (the ends of \
                 each edge), it returns {}",
                plan.schema().fields().len()
            );
        }
        let physical = state.create_physical_plan(&plan).await?;
        let batches = collect(physical, state.task_ctx()).await?;
        let mut ends: Vec<(Arc<dyn Array>, Arc<dyn Array>)> = Vec::with_capacity(batches.len());
        for batch in &batches {
            ends.push((
                cast(batch.column(0), &DataType::Utf8)?,
                cast(batch.column(1), &DataType::Utf8)?,
            ));
        }
        let edges = ends.iter().flat_map(|(a, b)| {
            let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
            (0..a.len()).filter_map(move |i| {
                let first = a.is_valid(i).then(|| a.value(i));
                let second = b.is_valid(i).then(|| b.value(i));
                match (first, second) {
                    (Some(x), y) | (y, Some(x)) => Some((x, y)),
                    (None, None) => None,
                }
            })
        });
        let rows = graph::connected_components(edges);
        let nodes: StringArray = rows.iter().map(|(n, _)| Some(n.as_str())).collect();
        let labels: StringArray = rows.iter().map(|(_, c)| Some(c.as_str())).collect();
        let batch =
            RecordBatch::try_new(self.schema.clone(), vec![Arc::new(nodes), Arc::new(labels)])?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
