//! The query boundary of API callers: plan a statement for a caller, run it as a
//! stream — within the limits that keep one analyst's query from taking the process.
//!
//! [`QueryService`] is what the Flight SQL service (and later the console) talk to;
//! [`Queries`] implements it over the [`Engine`]:
//!
//! - **Policy**: statements are planned through [`crate::policy`] (read-only, one
//!   statement, `?` placeholders) in the session of the caller's [`Access`].
//! - **Memory**: every API query draws on one memory pool of [`QueryLimits::memory`]
//!   bytes (DataFusion's fair spill pool): sorts, aggregations and sort-merge joins
//!   spill to disk when their share is used up; an operator that cannot spill fails
//!   the query with [`EngineError::Memory`].
//! - **Time**: a query running longer than [`QueryLimits::timeout`] is cancelled (its
//!   plan dropped) and its stream ends with [`EngineError::Timeout`].
//! - **Concurrency**: at most [`QueryLimits::max_concurrent`] queries run at once;
//!   others wait up to [`QueryLimits::queue_timeout`] for a slot, then get
//!   [`EngineError::Busy`].
//! - **Where it runs**: plans execute on the CPU runtime handed in (the binary makes one
//!   for DataFusion, apart from the runtime answering requests), and the batches come
//!   back through a small channel. A caller that drops the stream (a client that
//!   disconnects) drops the plan with it.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::Engine;
use crate::access::Access;
use crate::error::{EngineError, Result};
use crate::policy::Policy;

/// What API queries may use.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Bytes the running queries may hold together (`None`: unbounded).
    pub memory: Option<u64>,
    /// Longest a query may run (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Queries running at once.
    pub max_concurrent: usize,
    /// Longest a query waits for a free slot before it is refused.
    pub queue_timeout: Duration,
    /// Where sorts and aggregations spill (`None`: the system's temporary folder).
    pub spill_dir: Option<PathBuf>,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            memory: None,
            timeout: None,
            max_concurrent: 8,
            queue_timeout: Duration::from_secs(30),
            spill_dir: None,
        }
    }
}

/// Plans and runs the statements of API callers.
#[async_trait]
pub trait QueryService: Send + Sync + std::fmt::Debug {
    /// A session with no tables (catalog and schema names, no lake I/O).
    fn names(&self) -> Result<SessionContext>;

    /// A session narrowed to what `access` may see (for metadata: catalogs, tables,
    /// schemas).
    async fn session(&self, access: &Access) -> Result<SessionContext>;

    /// Plans one read-only statement for `access`, with `params` bound to its
    /// placeholders (`$1`, `$2`, ... or `?` in order); with no parameters, the
    /// placeholders stay unbound (a prepared statement's schema).
    async fn plan(&self, access: &Access, sql: &str, params: &[ScalarValue]) -> Result<DataFrame>;

    /// Runs a planned statement within the limits.
    async fn execute(&self, plan: DataFrame) -> Result<SendableRecordBatchStream>;

    /// Classifies an error a running statement's stream yielded.
    fn running_error(&self, e: DataFusionError) -> EngineError;
}

/// Counters of API queries, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    running: AtomicUsize,
    waiting: AtomicUsize,
    finished: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    out_of_memory: AtomicU64,
    refused_busy: AtomicU64,
    planned: AtomicU64,
}

/// A reading of the query counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    pub running: usize,
    pub waiting: usize,
    pub finished: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub timed_out: u64,
    pub out_of_memory: u64,
    pub refused_busy: u64,
    /// Statements planned (a Flight SQL statement once, at `GetFlightInfo`).
    pub planned: u64,
    /// Bytes the running queries hold in the memory pool now.
    pub memory_reserved: u64,
    /// The pool's size (`None`: unbounded).
    pub memory_limit: Option<u64>,
}

/// How a query's run ended.
enum Outcome {
    Finished,
    Failed,
    OutOfMemory,
    Cancelled,
    TimedOut,
}

/// [`QueryService`] over an [`Engine`], with [`QueryLimits`].
#[derive(Debug, Clone)]
pub struct Queries {
    engine: Engine,
    limits: QueryLimits,
    pool: Arc<dyn MemoryPool>,
    slots: Arc<Semaphore>,
    cpu: Option<tokio::runtime::Handle>,
    counters: Arc<Counters>,
}

impl Queries {
    /// Queries over `engine`'s lake within `limits`, executed on `cpu` (the current
    /// runtime when `None`).
    pub fn new(
        engine: &Engine,
        limits: QueryLimits,
        cpu: Option<tokio::runtime::Handle>,
    ) -> Result<Queries> {
        let pool: Arc<dyn MemoryPool> = match limits.memory {
            Some(bytes) => Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(usize::try_from(bytes).unwrap_or(usize::MAX)),
                NonZeroUsize::MIN.saturating_add(2),
            )),
            None => Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default()),
        };
        let disk = DiskManagerBuilder::default().with_mode(match &limits.spill_dir {
            Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
            None => DiskManagerMode::OsTmpDirectory,
        });
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool.clone())
            .with_disk_manager_builder(disk)
            .build_arc()?;
        // Every partition of every sort sets memory aside for merging what it holds
        // when it spills (sorting that needs about as much again). Under a small pool
        // DataFusion's 10 MiB each would leave nothing to sort with: half of a
        // partition's share of the pool when the most queries allowed run at once.
        let sort_reservation = limits.memory.map(|bytes| {
            let holders = engine.target_partitions() * limits.max_concurrent.max(1);
            let share = usize::try_from(bytes / 2).unwrap_or(usize::MAX) / holders.max(1);
            share.clamp(256 << 10, 10 << 20)
        });
        Ok(Queries {
            engine: engine.with_runtime(runtime, sort_reservation),
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            limits,
            pool,
            cpu,
            counters: Arc::default(),
        })
    }

    /// The engine queries are planned with (its sessions draw on the query pool).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits in force.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// The counters now.
    pub fn stats(&self) -> QueryStats {
        let c = &self.counters;
        QueryStats {
            running: c.running.load(Ordering::Relaxed),
            waiting: c.waiting.load(Ordering::Relaxed),
            finished: c.finished.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            out_of_memory: c.out_of_memory.load(Ordering::Relaxed),
            refused_busy: c.refused_busy.load(Ordering::Relaxed),
            planned: c.planned.load(Ordering::Relaxed),
            memory_reserved: self.pool.reserved() as u64,
            memory_limit: self.limits.memory,
        }
    }

    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let c = &self.counters;
        c.waiting.fetch_add(1, Ordering::Relaxed);
        let got = tokio::time::timeout(
            self.limits.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await;
        c.waiting.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => {
                c.refused_busy.fetch_add(1, Ordering::Relaxed);
                Err(EngineError::Busy {
                    running: self.limits.max_concurrent,
                    waited: self.limits.queue_timeout,
                })
            }
        }
    }
}

/// Decrements the running count when a run ends, however it ends.
struct Running(Arc<Counters>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl QueryService for Queries {
    fn names(&self) -> Result<SessionContext> {
        self.engine.bare_session()
    }

    async fn session(&self, access: &Access) -> Result<SessionContext> {
        self.engine.session_for(access).await
    }

    async fn plan(&self, access: &Access, sql: &str, params: &[ScalarValue]) -> Result<DataFrame> {
        self.counters.planned.fetch_add(1, Ordering::Relaxed);
        let ctx = self.engine.session_for(access).await?;
        let df = crate::policy::plan(&ctx, sql, Policy::ReadOnly).await?;
        if params.is_empty() {
            return Ok(df);
        }
        df.with_param_values(ParamValues::from(params.to_vec()))
            .map_err(EngineError::sql)
    }

    async fn execute(&self, plan: DataFrame) -> Result<SendableRecordBatchStream> {
        let permit = self.slot().await?;
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let timeout = self.limits.timeout;
        let counters = self.counters.clone();
        counters.running.fetch_add(1, Ordering::Relaxed);
        let running = Running(counters.clone());
        let task = async move {
            let _slot = permit;
            let _running = running;
            let run = async {
                let mut stream = match plan.execute_stream().await {
                    Ok(s) => s,
                    Err(e) => {
                        let oom = matches!(e.find_root(), DataFusionError::ResourcesExhausted(_));
                        let _ = tx.send(Err(e)).await;
                        return if oom {
                            Outcome::OutOfMemory
                        } else {
                            Outcome::Failed
                        };
                    }
                };
                loop {
                    tokio::select! {
                        biased;
                        _ = tx.closed() => return Outcome::Cancelled,
                        next = stream.next() => match next {
                            None => return Outcome::Finished,
                            Some(Ok(batch)) => {
                                if tx.send(Ok(batch)).await.is_err() {
                                    return Outcome::Cancelled;
                                }
                            }
                            Some(Err(e)) => {
                                let oom = matches!(e.find_root(), DataFusionError::ResourcesExhausted(_));
                                let _ = tx.send(Err(e)).await;
                                return if oom { Outcome::OutOfMemory } else { Outcome::Failed };
                            }
                        }
                    }
                }
            };
            let outcome = match timeout {
                None => run.await,
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        // The plan was dropped with `run`: it stops here.
                        let _ = tx
                            .send(Err(DataFusionError::External(Box::new(
                                EngineError::Timeout { limit },
                            ))))
                            .await;
                        Outcome::TimedOut
                    }
                },
            };
            let counter = match outcome {
                Outcome::Finished => &counters.finished,
                Outcome::Failed => &counters.failed,
                Outcome::OutOfMemory => &counters.out_of_memory,
                Outcome::Cancelled => &counters.cancelled,
                Outcome::TimedOut => &counters.timed_out,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        };
        match &self.cpu {
            Some(cpu) => drop(cpu.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
        let batches = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn running_error(&self, e: DataFusionError) -> EngineError {
        EngineError::running(e, self.limits.memory)
    }
}

#[cfg(test)]
mod tests;
