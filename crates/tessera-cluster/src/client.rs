//! The client side: sessions of a project with `[engine] cluster` plan here and run on
//! the cluster.
//!
//! [`ClusterPlanner`] is the sessions' query planner. It plans each statement locally
//! in full (DataFusion's planner, the session's optimizer rules), and when the plan
//! reads lake files and can be serialized it returns a [`ClusterExec`] in its place:
//! a leaf that submits the whole physical plan to the scheduler when it is executed
//! and streams back what the cluster returns. Everything else — `EXPLAIN`, `SHOW`,
//! `VALUES`, `information_schema`, and plans with an operator Ballista cannot carry
//! (logged once per statement) — runs in this process, with the same result.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, displayable,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::TryStreamExt;

/// Installs [`ClusterPlanner`] as the engine's planner of cluster sessions (once per
/// process; `false` if one was already installed).
pub fn install() -> bool {
    tessera_engine::cluster::install(Arc::new(|endpoint: &str| {
        Ok(Arc::new(ClusterPlanner::new(endpoint)) as Arc<dyn QueryPlanner + Send + Sync>)
    }))
}

/// Plans locally, runs on the cluster whose scheduler is at `endpoint`.
#[derive(Debug, Clone)]
pub struct ClusterPlanner {
    endpoint: String,
}

impl ClusterPlanner {
    /// A planner for the scheduler at `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str) -> Self {
        ClusterPlanner {
            endpoint: endpoint.to_owned(),
        }
    }
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = DefaultPhysicalPlanner::default()
            .create_physical_plan(logical_plan, session_state)
            .await?;
        if !reads_files(&plan)? {
            return Ok(plan);
        }
        if let Err(e) = encode(&plan) {
            tracing::warn!(
                cluster = %self.endpoint,
                "a statement runs in this process: its plan cannot be sent to the cluster ({e})"
            );
            return Ok(plan);
        }
        Ok(Arc::new(ClusterExec::new(&self.endpoint, plan)))
    }
}

/// Whether `plan` scans files (a lake table); plans that don't are not worth a job.
fn reads_files(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let mut found = false;
    plan.apply(|node| {
        let scans = node
            .downcast_ref::<DataSourceExec>()
            .is_some_and(|s| s.data_source().downcast_ref::<FileScanConfig>().is_some());
        if scans {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// The plan as the scheduler receives it, or why it cannot be.
fn encode(plan: &Arc<dyn ExecutionPlan>) -> Result<PhysicalPlanNode> {
    PhysicalPlanNode::try_from_physical_plan(
        plan.clone(),
        &BallistaPhysicalExtensionCodec::default(),
    )
}

/// A whole physical plan run on the cluster: one output partition, the cluster's
/// result stream.
#[derive(Debug)]
pub struct ClusterExec {
    endpoint: String,
    plan: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ClusterExec {
    /// `plan` to be run by the scheduler at `endpoint`.
    pub fn new(endpoint: &str, plan: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(plan.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ClusterExec {
            endpoint: endpoint.to_owned(),
            plan,
            properties: Arc::new(properties),
        }
    }

    /// The plan the cluster runs.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }
}

impl DisplayAs for ClusterExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                writeln!(f, "ClusterExec: scheduler={}", self.endpoint)?;
                write!(f, "{}", displayable(self.plan.as_ref()).indent(false))
            }
            DisplayFormatType::TreeRender => write!(f, "scheduler={}", self.endpoint),
        }
    }
}

impl ExecutionPlan for ClusterExec {
    fn name(&self) -> &str {
        "ClusterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ClusterExec has one partition, not {partition}"
            )));
        }
        let endpoint = self.endpoint.clone();
        let plan = self.plan.clone();
        let config = context.session_config().clone().upgrade_for_ballista();
        let session_id = context.session_id();
        let about = format!("the cluster at {endpoint}");
        let submit = async move {
            let codec = BallistaPhysicalExtensionCodec::default();
            let ballista = config.ballista_config();
            execute_physical_plan::<PhysicalPlanNode>(
                endpoint, &ballista, plan, &codec, session_id, config,
            )
            .await
        };
        let rows = futures::stream::once(submit)
            .try_flatten()
            .map_err(move |e| e.context(about.clone()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.plan.schema(),
            rows,
        )))
    }
}

impl fmt::Display for ClusterExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ClusterExec: scheduler={}", self.endpoint)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn session() -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_query_planner(Arc::new(ClusterPlanner::new("http://127.0.0.1:9")))
            .build();
        SessionContext::new_with_state(state)
    }

    #[tokio::test]
    async fn plans_that_read_files_go_to_the_cluster_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.parquet");
        let ctx = session();
        ctx.sql(&format!(
            "COPY (VALUES (1, 'a'), (2, 'b')) TO '{}' STORED AS PARQUET",
            file.display()
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        ctx.register_parquet("t", file.to_str().unwrap(), Default::default())
            .await
            .unwrap();

        let plan = ctx
            .sql("SELECT column2, count(*) FROM t GROUP BY column2")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let sent = plan
            .downcast_ref::<ClusterExec>()
            .expect("a file scan goes to the cluster");
        assert!(encode(sent.plan()).is_ok());
        assert_eq!(sent.plan().schema(), plan.schema());

        // Nothing to read: it runs here, and gives its answer with no scheduler.
        let local = ctx.sql("SELECT 1 AS one").await.unwrap();
        let plan = local.clone().create_physical_plan().await.unwrap();
        assert!(plan.downcast_ref::<ClusterExec>().is_none());
        assert_eq!(local.collect().await.unwrap()[0].num_rows(), 1);

        // A scheduler that is not there: an error naming it, not an empty answer.
        let e = ctx
            .sql("SELECT column2 FROM t WHERE column1 > 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("the cluster at http://127.0.0.1:9"), "{e}");
    }
}
