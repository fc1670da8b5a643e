//! Tessera's query engine: the one place that builds a DataFusion session.
//!
//! [`Engine::session`] returns a `SessionContext` with every lake table registered
//! under its own name, the JSON functions of `datafusion-functions-json`
//! (`json_get_str(properties, 'plan')`, `json_get_float(properties, 'revenue')`, ...)
//! and every CDP function of [`functions`]. The CLI, the server, the importers, the
//! tests and the benchmarks all query through it, so a function or table registered
//! here is available everywhere.
//!
//! What a caller may run and see is decided here too: [`policy`] (read-only
//! statements, `?` placeholders), [`access`] (row filters, masked personal data, the
//! audit log) and [`query`] (the query boundary of API callers, with memory, time and
//! concurrency limits).
//!
//! This crate knows nothing of HTTP or gRPC; it hands out DataFusion streams.

pub mod access;
pub mod cluster;
pub mod columns;
pub mod functions;
pub mod graph;
pub mod policy;
pub mod query;

mod error;

use std::sync::Arc;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};
use functions::FunctionContext;
use functions::clock::Clock;
use functions::segment::SegmentSources;
use tessera_core::schema::{AUDIENCE_MEMBERSHIP, EVENTS, IDENTITY_MAP, SCORE_COLUMNS, SCORES};
use tessera_lake::Lake;

pub use access::{Access, mask_pii};
pub use datafusion;
pub use error::{EngineError, Result};
pub use policy::Policy;

/// Session settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Parallelism of plans; `None` uses every core.
    pub target_partitions: Option<usize>,
    /// Rows per batch inside plans.
    pub batch_size: usize,
    /// The evaluation time of `as_of()`, `days_since()` and `within_days()`, in
    /// microseconds since the epoch; `None` takes the time each session is built.
    pub as_of_micros: Option<i64>,
    /// Memory each sort sets aside up front for merging what it spilled (`None`:
    /// DataFusion's 10 MiB); smaller under a small memory pool, since every partition
    /// of every sort holds one.
    pub sort_spill_reservation_bytes: Option<usize>,
    /// Plan every lake table as a [`tessera_lake::PinnedTable`] — a plain Parquet scan of
    /// exactly its version's files, the plan a cluster's executors are given — instead
    /// of delta-rs' scan. The results are the same (tests hold them to it); a table with
    /// deletion vectors or column mapping is refused.
    pub pinned_scans: bool,
    /// The scheduler of a cluster (`http://host:port`) that runs the sessions' plans
    /// ([`cluster`]); tables are then always [pinned](EngineConfig::pinned_scans).
    pub cluster: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            target_partitions: None,
            batch_size: 8192,
            as_of_micros: None,
            sort_spill_reservation_bytes: None,
            pinned_scans: false,
            cluster: None,
        }
    }
}

impl EngineConfig {
    /// Deterministic plans for tests: one partition.
    pub fn deterministic() -> Self {
        EngineConfig {
            target_partitions: Some(1),
            ..EngineConfig::default()
        }
    }
}

/// Builds sessions over one lake.
#[derive(Debug, Clone)]
pub struct Engine {
    lake: Arc<Lake>,
    config: EngineConfig,
    /// Memory pool and spill folder of the sessions (`None`: DataFusion's default,
    /// unbounded).
    runtime: Option<Arc<RuntimeEnv>>,
}

impl Engine {
    /// An engine over `lake`.
    pub fn new(lake: Arc<Lake>, config: EngineConfig) -> Self {
        Engine {
            lake,
            config,
            runtime: None,
        }
    }

    /// The same engine with `as_of()` pinned to `micros` (microseconds since the epoch).
    pub fn with_as_of(&self, micros: i64) -> Engine {
        let mut engine = self.clone();
        engine.config.as_of_micros = Some(micros);
        engine
    }

    /// The same engine whose sessions draw memory and spill space from `runtime`,
    /// each sort setting aside `sort_reservation` bytes for its merge (`None`:
    /// DataFusion's default).
    pub fn with_runtime(
        &self,
        runtime: Arc<RuntimeEnv>,
        sort_reservation: Option<usize>,
    ) -> Engine {
        let mut engine = self.clone();
        engine.runtime = Some(runtime);
        engine.config.sort_spill_reservation_bytes = sort_reservation;
        engine
    }

    /// The plans' parallelism: the configured partitions, else every core.
    pub fn target_partitions(&self) -> usize {
        self.config.target_partitions.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// The scheduler endpoint of the cluster the sessions' plans run on, if any.
    pub fn cluster(&self) -> Option<&str> {
        self.config.cluster.as_deref()
    }

    /// The pinned evaluation time of `as_of()`, if any.
    pub fn as_of_micros(&self) -> Option<i64> {
        self.config.as_of_micros
    }

    /// The lake this engine reads.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// A session with no tables, only Tessera's functions (for queries over inputs that
    /// are not in the lake, such as an importer's mapping query).
    pub fn bare_session(&self) -> Result<SessionContext> {
        self.bare_session_with(Arc::new(SegmentSources::default()))
    }

    fn function_context(&self, segments: Arc<SegmentSources>) -> FunctionContext {
        let now = self
            .config
            .as_of_micros
            .unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
        FunctionContext {
            clock: Clock::at(now),
            segments,
            lake: self.lake.clone(),
        }
    }

    fn bare_session_with(&self, segments: Arc<SegmentSources>) -> Result<SessionContext> {
        // DataFusion's own settings can be given as DATAFUSION_* environment variables
        // (DATAFUSION_EXECUTION_TARGET_PARTITIONS=8, ...); Tessera's come on top.
        let mut config = SessionConfig::from_env()?
            .with_batch_size(self.config.batch_size)
            .with_information_schema(true)
            // What BI tools show as the catalog (`tessera.public.events`).
            .with_default_catalog_and_schema("tessera", "public");
        if let Some(n) = self.config.target_partitions {
            config = config.with_target_partitions(n);
        }
        if let Some(bytes) = self.config.sort_spill_reservation_bytes {
            config.options_mut().execution.sort_spill_reservation_bytes = bytes;
        }
        // DataFusion 55's leaf-expression pushdown fails to plan JSON functions over a
        // view that joins (`profile_events`): "Schema contains qualified field name
        // e.__datafusion_extracted_1 and unqualified field name ...". Off until fixed.
        config
            .options_mut()
            .optimizer
            .enable_leaf_expression_pushdown = false;
        if self.config.cluster.is_some() {
            // A dynamic filter links a join (or TopK) to a scan in one process; a cluster
            // runs them in different stages, and its scheduler re-plans joins between
            // stages, which a plan carrying dynamic filters refuses ("Cannot swap
            // HashJoinExec inputs after dynamic filters have been constructed").
            let optimizer = &mut config.options_mut().optimizer;
            optimizer.enable_dynamic_filter_pushdown = false;
            optimizer.enable_join_dynamic_filter_pushdown = false;
            optimizer.enable_topk_dynamic_filter_pushdown = false;
            optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        }
        let mut ctx = match &self.runtime {
            Some(runtime) => SessionContext::new_with_config_rt(config, runtime.clone()),
            None => SessionContext::new_with_config(config),
        };
        if let Some(endpoint) = &self.config.cluster {
            let state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
                .with_query_planner(cluster::planner(endpoint)?)
                .build();
            ctx = SessionContext::new_with_state(state);
        }
        datafusion_functions_json::register_all(&mut ctx)?;
        functions::register(&mut ctx, &self.function_context(segments))?;
        Ok(ctx)
    }

    /// The scan of table `name` as opened: delta-rs' provider, or the pinned Parquet scan
    /// when [`EngineConfig::pinned_scans`] is set.
    async fn provider(
        &self,
        name: &str,
        table: &tessera_lake::deltalake::DeltaTable,
    ) -> std::result::Result<Arc<dyn datafusion::catalog::TableProvider>, String> {
        if self.config.pinned_scans || self.config.cluster.is_some() {
            return tessera_lake::PinnedTable::of(name, table)
                .map(|p| Arc::new(p) as Arc<dyn datafusion::catalog::TableProvider>)
                .map_err(|e| e.to_string());
        }
        table.table_provider().await.map_err(|e| e.to_string())
    }

    /// A session with every lake table registered at its latest version, plus the
    /// `profile_events` view once identities have been stitched.
    pub async fn session(&self) -> Result<SessionContext> {
        self.session_with(Arc::new(SegmentSources::default())).await
    }

    /// [`Engine::session`] whose `segment()` / `in_segment()` read members through
    /// `segments` (a segment refresh points them at the members it has just computed).
    pub async fn session_with(&self, segments: Arc<SegmentSources>) -> Result<SessionContext> {
        let ctx = self.bare_session_with(segments.clone())?;
        let mut registered = Vec::new();
        for (name, table) in self.lake.open_all().await? {
            registered.push(name);
            let register = |message: String| EngineError::Register {
                table: name.to_owned(),
                message,
            };
            table
                .update_datafusion_session(&ctx.state())
                .map_err(|e| register(e.to_string()))?;
            let provider = self
                .provider(name, &table)
                .await
                .map_err(|e| register(e.to_string()))?;
            ctx.register_table(name, provider)?;
        }
        if registered.contains(&AUDIENCE_MEMBERSHIP)
            && let Some(provider) = ctx.table_provider(AUDIENCE_MEMBERSHIP).await.ok()
        {
            segments.set_membership(provider);
        }
        if registered.contains(&tessera_core::schema::CONSENT)
            && let Some(provider) = ctx.table_provider(tessera_core::schema::CONSENT).await.ok()
        {
            segments.set_consent(provider);
        }
        register_views(&ctx).await?;
        Ok(ctx)
    }

    /// [`Engine::session`] narrowed to what `access` may see ([`access::narrow`]):
    /// the session of one API caller.
    pub async fn session_for(&self, access: &Access) -> Result<SessionContext> {
        let segments = Arc::new(SegmentSources::default());
        let ctx = self.session_with(segments.clone()).await?;
        access::narrow(&ctx, access, &segments).await?;
        Ok(ctx)
    }

    /// A session with only the lake tables `names` (those that exist) registered: for
    /// reading a small state table without opening every table of the lake.
    pub async fn session_of(&self, names: &[&str]) -> Result<SessionContext> {
        Ok(self.session_of_versions(names).await?.0)
    }

    /// [`Engine::session_of`], also returning the version each table was opened at
    /// (`None` for a table that does not exist yet), in the order of `names`.
    pub async fn session_of_versions(
        &self,
        names: &[&str],
    ) -> Result<(SessionContext, Vec<Option<i64>>)> {
        self.session_of_versions_at(names, None).await
    }

    /// [`Engine::session_of_versions`] as of a time (microseconds since the epoch):
    /// each table at its latest version committed then, absent if it had none.
    pub async fn session_of_versions_at(
        &self,
        names: &[&str],
        at: Option<i64>,
    ) -> Result<(SessionContext, Vec<Option<i64>>)> {
        let ctx = self.bare_session()?;
        let mut versions = Vec::with_capacity(names.len());
        for name in names {
            let table = match at {
                None => self.lake.try_open(name).await?,
                Some(t) => match self.lake.try_open(name).await? {
                    None => None,
                    Some(_) => match self.lake.version_at(name, t).await? {
                        Some(v) => Some(self.lake.open_version(name, v).await?),
                        None => None,
                    },
                },
            };
            versions.push(table.as_ref().and_then(|t| t.version()).map(|v| v as i64));
            if let Some(table) = table {
                let provider =
                    self.provider(name, &table)
                        .await
                        .map_err(|e| EngineError::Register {
                            table: (*name).to_owned(),
                            message: e.to_string(),
                        })?;
                ctx.register_table(*name, provider)?;
            }
        }
        Ok((ctx, versions))
    }

    /// Plans and starts one SQL statement under `policy` over every lake table, in
    /// clear, returning its result as a stream.
    pub async fn query(&self, sql: &str, policy: Policy) -> Result<SendableRecordBatchStream> {
        let ctx = self.session().await?;
        execute(&ctx, sql, policy).await
    }
}

/// Plans and starts `sql` on `ctx` under `policy`. Planning errors (syntax, unknown
/// table or column, wrong types) come back as [`EngineError::Sql`] with DataFusion's
/// message; refused statements as [`EngineError::Refused`].
pub async fn execute(
    ctx: &SessionContext,
    sql: &str,
    policy: Policy,
) -> Result<SendableRecordBatchStream> {
    let df = policy::plan(ctx, sql, policy).await?;
    df.execute_stream().await.map_err(EngineError::sql)
}

/// Registers as `events` in `ctx` only the files appended in `changes` (but those of
/// `skip`): those still in the table from its latest version (`events`, opened at
/// `changes.to`), those compacted since from the version just before their compaction
/// (their files stay until vacuum). What incremental readers of events read.
pub async fn register_appended_events(
    ctx: &SessionContext,
    lake: &tessera_lake::Lake,
    events: &tessera_lake::deltalake::DeltaTable,
    changes: &tessera_lake::Changes,
    skip: &std::collections::HashSet<String>,
) -> Result<()> {
    ctx.deregister_table(EVENTS)?;
    let mut parts = Vec::new();
    for (i, (version, paths)) in changes.appended.iter().enumerate() {
        let paths: Vec<String> = paths
            .iter()
            .filter(|p| !skip.contains(*p))
            .cloned()
            .collect();
        if paths.is_empty() {
            continue;
        }
        let table = if *version == changes.to {
            events.clone()
        } else {
            lake.open_version(EVENTS, *version).await?
        };
        let provider = table.table_provider().with_file_paths(paths).await?;
        let name = format!("__events_appended_{i}");
        ctx.register_table(name.as_str(), provider)?;
        parts.push(format!("SELECT * FROM {name}"));
    }
    if parts.is_empty() {
        let provider = events
            .table_provider()
            .with_file_paths(Vec::<String>::new())
            .await?;
        ctx.register_table(EVENTS, provider)?;
        return Ok(());
    }
    ctx.sql(&format!(
        "CREATE VIEW {EVENTS} AS {}",
        parts.join(" UNION ALL ")
    ))
    .await?;
    Ok(())
}

/// (Re-)creates the `profile_events` view over the `events` and `identity_map` tables
/// currently registered in `ctx`.
pub async fn register_profile_events(ctx: &SessionContext) -> Result<()> {
    ctx.deregister_table("profile_events")?;
    ctx.sql(PROFILE_EVENTS_VIEW).await?;
    Ok(())
}

/// (Re-)creates the views over the tables registered in `ctx` now: `profile_events`
/// (over `events` and `identity_map`) and `profile_scores` (over `scores`); a view
/// whose tables are gone is dropped.
pub async fn register_views(ctx: &SessionContext) -> Result<()> {
    if ctx.table_exist(EVENTS)? && ctx.table_exist(IDENTITY_MAP)? {
        register_profile_events(ctx).await?;
    } else {
        ctx.deregister_table("profile_events")?;
    }
    ctx.deregister_table("profile_scores")?;
    if ctx.table_exist(SCORES)? {
        ctx.sql(&profile_scores_view()).await?;
    }
    Ok(())
}

/// One row per scored profile with one column per score of [`SCORE_COLUMNS`] (NULL
/// when its model has not scored the profile), so that segments can say
/// `SELECT profile_id FROM profile_scores WHERE p_alive < 0.3 AND clv_12m > 200`.
pub fn profile_scores_view() -> String {
    let columns: Vec<String> = SCORE_COLUMNS
        .iter()
        .map(|(model, score)| {
            format!("max(value) FILTER (WHERE model = '{model}' AND score = '{score}') AS {score}")
        })
        .collect();
    format!(
        "CREATE VIEW profile_scores AS SELECT profile_id, {} FROM scores GROUP BY profile_id",
        columns.join(", ")
    )
}

/// Every event with the `profile_id` of its person: the event's `user_id` when it has
/// one, else its `anonymous_id`, looked up in `identity_map`.
const PROFILE_EVENTS_VIEW: &str = "CREATE VIEW profile_events AS \
SELECT m.profile_id, e.* \
FROM events AS e \
LEFT JOIN identity_map AS m \
  ON m.id_type = CASE WHEN e.user_id IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' END \
 AND m.id_value = trim(coalesce(e.user_id, e.anonymous_id))";
