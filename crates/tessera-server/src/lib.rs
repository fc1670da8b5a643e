//! Tessera's network face: the only crate that knows HTTP and gRPC.
//!
//! - [`http`]: the Segment-compatible collector (`/v1/batch`, `/v1/import`,
//!   `/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias`)
//!   with write-key auth, gzip bodies and limits; `/health`; Prometheus `/metrics`. It
//!   hands bodies to [`tessera_ingest::collector::Collector`] and maps its results to
//!   responses.
//! - the gRPC port: [`flight`], Arrow Flight SQL for BI tools (password handshake,
//!   bearer tokens, metadata, streamed statements, prepared statements); [`api`], the
//!   `tessera.v1` services (profiles, audiences, admin, sign-in) answered from the
//!   in-memory [`index`]; the standard health service and gRPC reflection.
//! - [`console`]: the web console at `/ui/` on the HTTP port (sign-in, pages, match
//!   review).
//! - [`auth`]: accounts, API tokens and sign-in tokens shared by both gRPC APIs.
//! - [`audit`]: the `audit_log` of the gRPC services.
//! - [`tls`]: TLS on both ports from `[server.tls]`.
//! - [`schedule`]: refreshes segments on their `-- refresh:` interval and refits the
//!   predictive models every `[predict] refit_hours`.
//!
//! [`Server::run`] runs the periodic work (audit commits, index checks and rebuilds,
//! schedules) on threads of their own in the idle scheduling class, apart from the
//! threads answering requests.

pub mod api;
pub mod audit;
pub mod auth;
pub mod console;
pub mod flight;
pub mod http;
pub mod index;
pub mod proto;
pub mod schedule;
pub mod status;
pub mod tls;
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1;
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tessera_engine::query::{Queries, QueryLimits};
use tessera_ingest::collector::{Collector, CollectorConfig};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The collector could not start (WAL, lake).
    #[error(transparent)]
    Collector(#[from] tessera_ingest::ImportError),
    /// The certificate and key of `[server.tls]` cannot serve.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The lake could not be read, or a row filter does not plan.
    #[error(transparent)]
    Engine(#[from] tessera_engine::EngineError),
    /// The profile index could not be loaded.
    #[error("loading the profile index: {0}")]
    Index(#[from] tessera_identity::IdentityError),
    /// A gRPC service could not be set up.
    #[error("{service}: {message}")]
    Setup {
        service: &'static str,
        message: String,
    },
    /// A runtime or thread could not be started.
    #[error("cannot start {what}: {source}")]
    Runtime {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP port failed while serving.
    #[error("HTTP: {0}")]
    Http(#[source] std::io::Error),
    /// The gRPC port failed while serving.
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A serving task died (a bug, not user input).
    #[error("a serving task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where to listen and how to collect.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub collector: CollectorConfig,
    /// Write key → source name.
    pub sources: HashMap<String, String>,
    /// Refresh segments on their schedule (`None`: never).
    pub segments: Option<schedule::SegmentSchedule>,
    /// Refit the predictive models on a schedule (`None`: never).
    pub predict: Option<schedule::PredictSchedule>,
    /// Compact tables with many small files in the background (`None`: never).
    pub maintenance: Option<schedule::MaintenanceSchedule>,
    /// Accounts of the gRPC services (`[users.NAME]`).
    pub users: HashMap<String, tessera_core::config::UserSection>,
    /// API tokens (`[tokens.NAME]`).
    pub tokens: HashMap<String, tessera_core::config::TokenSection>,
    /// The project, for `AdminService` and segment descriptions (`None`: admin calls
    /// fail with `FAILED_PRECONDITION`).
    pub admin: Option<api::AdminOptions>,
    /// TLS on both ports (`None`: plain text).
    pub tls: Option<tls::TlsFiles>,
    /// How often the profile index looks for a newer snapshot.
    pub index_check_every: std::time::Duration,
    /// Limits of the SQL queries of API callers.
    pub queries: QueryLimits,
    /// The runtime DataFusion executes API queries on (`None`: the request runtime).
    pub cpu: Option<tokio::runtime::Handle>,
    /// The project's `tessera.toml`, re-read when it changes so that disabled users,
    /// revoked tokens and new grants take effect at once (`None`: never re-read).
    pub config_file: Option<std::path::PathBuf>,
    /// Syncs of segments to destinations, planned after refreshes and delivered in the
    /// background (`None`: no activation).
    pub activation: Option<Arc<tessera_activate::Activation>>,
    /// How often activation looks for new refreshes and due batches.
    pub activation_every: std::time::Duration,
    /// The console's single sign-on (`[server.oidc]`; `None`: passwords only).
    pub oidc: Option<tessera_core::config::OidcSection>,
}

/// A started server: ports bound, collector running.
pub struct Server {
    http: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    state: Arc<http::AppState>,
    engine: tessera_engine::Engine,
    segments: Option<schedule::SegmentSchedule>,
    predict: Option<schedule::PredictSchedule>,
    maintenance: Option<schedule::MaintenanceSchedule>,
    flight: flight::TesseraFlightSql,
    api: api::Api,
    index: Arc<index::IndexHandle>,
    index_check_every: std::time::Duration,
    tls: Option<tls::Tls>,
    audit: Arc<audit::AuditLog>,
    auth: Arc<auth::Auth>,
    queries: Queries,
    config_file: Option<std::path::PathBuf>,
    activation: Option<(Arc<tessera_activate::Activation>, std::time::Duration)>,
    console: Arc<console::Console>,
}

/// Checks every row filter of `auth`'s accounts against the lake (a filter that does
/// not plan over `profiles` would hide every row), naming the first that fails.
async fn check_row_filters(queries: &Queries, filters: &[Arc<str>]) -> Result<(), ServerError> {
    if filters.is_empty() {
        return Ok(());
    }
    let ctx = queries
        .engine()
        .session_of(&[tessera_core::schema::PROFILES])
        .await?;
    if !ctx
        .table_exist(tessera_core::schema::PROFILES)
        .unwrap_or(false)
    {
        return Ok(());
    }
    for filter in filters {
        tessera_engine::access::check_row_filter(&ctx, filter).await?;
    }
    Ok(())
}

impl Server {
    /// Binds both ports and starts the collector (replaying its write-ahead log).
    pub async fn start(
        engine: tessera_engine::Engine,
        options: ServeOptions,
    ) -> Result<Server, ServerError> {
        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        let tls = options.tls.as_ref().map(tls::Tls::load).transpose()?;
        let http = bind(options.http).await?;
        let grpc = bind(options.grpc).await?;
        let max_body = options.collector.max_batch_bytes;
        let collector = Collector::start(engine.clone(), options.collector).await?;
        let audit = audit::AuditLog::new(engine.lake().clone());
        let auth = Arc::new(auth::Auth::new(options.users, options.tokens));
        let queries = Queries::new(&engine, options.queries, options.cpu)?;
        check_row_filters(&queries, &auth.row_filters()).await?;
        let flight =
            flight::TesseraFlightSql::new(Arc::new(queries.clone()), auth.clone(), audit.clone())
                .map_err(|e| ServerError::Setup {
                service: "Flight SQL",
                message: e.message().to_owned(),
            })?;
        let project_dir = options.admin.as_ref().map(|a| a.project_dir.clone());
        let index = Arc::new(index::IndexHandle::new(engine.clone(), project_dir.clone()));
        index.set_filters(auth.row_filters());
        index.refresh(true).await?;
        let api = api::Api::new(
            engine.clone(),
            auth.clone(),
            audit.clone(),
            index.clone(),
            options.admin,
            options.activation.clone(),
        );
        let oidc = options
            .oidc
            .clone()
            .map(console::oidc::Oidc::new)
            .transpose()
            .map_err(|message| ServerError::Setup {
                service: "console single sign-on",
                message,
            })?;
        let console = Arc::new(console::Console::new(
            engine.clone(),
            auth.clone(),
            audit.clone(),
            index.clone(),
            tls.is_some(),
            oidc,
            project_dir,
        ));
        Ok(Server {
            console,
            http,
            grpc,
            engine,
            segments: options.segments,
            predict: options.predict,
            maintenance: options.maintenance,
            flight,
            api,
            index,
            index_check_every: options.index_check_every,
            tls,
            audit,
            auth,
            config_file: options.config_file,
            activation: options.activation.map(|a| (a, options.activation_every)),
            state: Arc::new(http::AppState {
                collector,
                sources: options.sources,
                max_body,
                queries: Some(queries.clone()),
            }),
            queries,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    /// The collector (for in-process queries over buffered events).
    pub fn collector(&self) -> Arc<Collector> {
        self.state.collector.clone()
    }

    /// Serves until `shutdown` completes; then stops accepting, commits buffered events
    /// and returns how many the final commit wrote.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<usize, ServerError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut http_stop = stop_rx.clone();
        let mut grpc_stop = stop_rx.clone();
        // Periodic work runs on threads of its own, so that an `audit_log` commit, an
        // index rebuild or a scheduled refresh never holds up a request.
        let background = Background::start()?;
        let scheduler = self
            .segments
            .clone()
            .map(|s| background.spawn(schedule::run(self.engine.clone(), s, stop_rx.clone())));
        let auditor = background.spawn(
            self.audit
                .clone()
                .run(std::time::Duration::from_secs(1), stop_rx.clone()),
        );
        let audit_backlog = tokio::spawn(self.audit.clone().run_backlog(stop_rx.clone()));
        let refitter = self.predict.clone().map(|s| {
            background.spawn(schedule::run_models(
                self.engine.clone(),
                s,
                stop_rx.clone(),
            ))
        });
        let compactor = self.maintenance.clone().map(|s| {
            background.spawn(schedule::run_maintenance(
                self.engine.clone(),
                s,
                stop_rx.clone(),
            ))
        });
        let indexer = background.spawn(
            self.index
                .clone()
                .run(self.index_check_every, stop_rx.clone()),
        );
        let activation = self.activation.clone().map(|(a, every)| {
            background.spawn(activate(
                a,
                self.engine.clone(),
                self.audit.clone(),
                every,
                stop_rx.clone(),
            ))
        });
        let accounts = self.config_file.clone().map(|file| {
            background.spawn(watch_accounts(
                file,
                self.auth.clone(),
                self.index.clone(),
                self.queries.clone(),
                stop_rx.clone(),
            ))
        });
        let warming = background.spawn(self.console.clone().warm());
        let app = http::router(self.state.clone()).merge(console::router(self.console.clone()));
        let http_listener = self.http;
        let http_tls = self.tls.as_ref().map(|t| t.acceptor.clone());
        let http = tokio::spawn(async move {
            match http_tls {
                Some(acceptor) => tls::serve_https(http_listener, app, acceptor, http_stop).await,
                None => {
                    axum::serve(
                        http_listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(async move {
                        let _ = http_stop.wait_for(|s| *s).await;
                    })
                    .await
                }
            }
        });
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        // Both reflection versions: grpcurl asks v1 first, many clients only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error = |e: tonic_reflection::server::Error| ServerError::Setup {
            service: "gRPC reflection",
            message: e.to_string(),
        };
        let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
        // No Nagle: small unary answers (a profile) must not wait for a delayed ACK.
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let flight = self.flight.clone();
        let api = self.api.clone();
        let mut builder = tonic::transport::Server::builder();
        if let Some(t) = &self.tls {
            builder = builder.tls_config(t.grpc())?;
        }
        let grpc = tokio::spawn(async move {
            use crate::v1::{
                admin_service_server::AdminServiceServer,
                audience_service_server::AudienceServiceServer,
                auth_service_server::AuthServiceServer,
            };
            use crate::wire::profile_service_server::ProfileServiceServer;
            builder
                .add_service(health)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(arrow_flight::flight_service_server::FlightServiceServer::new(flight))
                .add_service(AuthServiceServer::new(api.clone()))
                .add_service(ProfileServiceServer::new(api.clone()))
                .add_service(AudienceServiceServer::new(api.clone()))
                .add_service(AdminServiceServer::new(api.clone()))
                .add_service(v1::privacy_service_server::PrivacyServiceServer::new(api))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_stop.wait_for(|s| *s).await;
                })
                .await
        });
        shutdown.await;
        let _ = stop_tx.send(true);
        let http_result = http.await;
        let flushed = self.state.collector.shutdown().await?;
        let grpc_result = grpc.await;
        let _ = indexer.await;
        warming.abort();
        for task in [scheduler, refitter, compactor, accounts, activation]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        let _ = audit_backlog.await;
        let _ = auditor.await;
        http_result?.map_err(ServerError::Http)?;
        grpc_result??;
        Ok(flushed)
    }
}

/// Plans the scheduled syncs whose segments were refreshed and keeps every destination
/// delivering, each by a worker of its own (a slow destination never holds up another),
/// until `stop`; every planned run is audited with its size.
async fn activate(
    activation: Arc<tessera_activate::Activation>,
    engine: tessera_engine::Engine,
    audit: Arc<audit::AuditLog>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let ledger = tokio::spawn(
        activation
            .ledger()
            .clone()
            .run(std::time::Duration::from_millis(250), stop.clone()),
    );
    let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        match activation.plan(&engine, &[], true).await {
            Ok(planned) => {
                for p in planned.iter().filter(|p| p.written) {
                    if let Some(x) = &p.plan {
                        tracing::info!(
                            sync = p.sync,
                            run = x.run,
                            "planned {} changes in {} batches (refresh versions {}..={}){}",
                            x.members(),
                            x.batches.len(),
                            x.from_version + 1,
                            x.to_version,
                            if x.held {
                                ", held for confirmation"
                            } else {
                                ""
                            }
                        );
                        audit.record(
                            audit::Entry::new("tessera serve", "activate", if x.held { "held" } else { "ok" })
                                .target(format!("{} run {} -> {}", p.sync, x.run, x.destination))
                                .rows(x.members() as i64)
                                .detail(format!(
                                    "refresh versions {}..={}, {} batches, {} left out for want of consent",
                                    x.from_version + 1,
                                    x.to_version,
                                    x.batches.len(),
                                    x.skipped
                                )),
                        );
                    }
                }
            }
            Err(e) => tracing::warn!("activation not planned: {e}"),
        }
        for name in activation.destinations().keys() {
            if workers.get(name).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            let (a, engine, name) = (activation.clone(), engine.clone(), name.clone());
            workers.insert(
                name.clone(),
                tokio::spawn(async move {
                    let Some(d) = a.destinations().get(&name) else {
                        return;
                    };
                    match a.deliver_to(&engine, d, std::time::Duration::ZERO).await {
                        Ok(r) if r.attempts > 0 => tracing::info!(
                            destination = name,
                            "delivered {} batches ({} members), {} retries, {} dead",
                            r.batches,
                            r.members,
                            r.retries,
                            r.dead
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(destination = name, "delivery failed: {e}"),
                    }
                }),
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, w) in workers {
        w.abort();
    }
    let _ = ledger.await;
}

/// How often `tessera.toml` is looked at for changed accounts.
const ACCOUNTS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Re-reads the accounts, API tokens and row filters of `file` whenever it changes
/// (size or modification time), until `stop`. A file that no longer parses, or a row
/// filter that does not plan, keeps the accounts as they were (logged once per
/// change). Also sweeps expired sign-ins.
async fn watch_accounts(
    file: std::path::PathBuf,
    auth: Arc<auth::Auth>,
    index: Arc<index::IndexHandle>,
    queries: Queries,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stamp = |f: &std::path::Path| {
        std::fs::metadata(f)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut seen = stamp(&file);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ACCOUNTS_CHECK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        auth.sweep();
        let now = stamp(&file);
        if now == seen {
            continue;
        }
        seen = now;
        let dir = file.parent().unwrap_or(std::path::Path::new("."));
        let config = match tessera_core::config::Project::load(dir) {
            Ok(p) => p.config,
            Err(e) => {
                tracing::warn!("tessera.toml changed but cannot be read; accounts unchanged: {e}");
                continue;
            }
        };
        let users = config.users.into_iter().collect();
        let tokens = config.tokens.into_iter().collect();
        let filters = auth::row_filters(&users, &tokens);
        if filters != auth.row_filters()
            && let Err(e) = check_row_filters(&queries, &filters).await
        {
            tracing::warn!("tessera.toml changed; accounts unchanged: {e}");
            continue;
        }
        auth.reload(users, tokens);
        tracing::info!("accounts reloaded from {}", file.display());
        if index.set_filters(filters)
            && let Err(e) = index.refresh(true).await
        {
            tracing::warn!("profile index not rebuilt for the new row filters: {e}");
        }
    }
}

/// The runtime DataFusion executes the SQL queries of API callers on: one thread per
/// core in Linux's idle scheduling class, like the server's periodic work. A heavy
/// query then takes only the CPU that requests leave: the collector's
/// acknowledgements and profile look-ups take a core back the moment they wake
/// (measured in BENCHMARKS.md, "Isolation"). Created once, by the binary.
pub fn query_runtime() -> Result<tokio::runtime::Runtime, ServerError> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("tessera-cpu")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        .map_err(|source| ServerError::Runtime {
            what: "the query runtime",
            source,
        })
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs when no request
/// thread wants the core, and a request thread waking up takes the core from it at
/// once (a lower nice value alone still lets it finish a time slice of milliseconds
/// first). Best effort: a system refusing it leaves the thread as it was.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::debug!("background thread keeps its priority: {e:?}");
    }
}

/// The runtime of the server's periodic work (`audit_log` commits, index checks and
/// rebuilds, scheduled refreshes and refits): threads of their own in the idle
/// scheduling class, so that none of it holds up a request. Shut down without blocking when
/// dropped (also from async code).
struct Background {
    /// Taken on drop, to shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Background {
    fn start() -> Result<Background, ServerError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("tessera-bg")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map(|runtime| Background {
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
            })
            .map_err(|source| ServerError::Runtime {
                what: "the background runtime",
                source,
            })
    }

    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[cfg(target_os = "linux")]
    /// The scheduling policy of the calling thread (field 41 of `/proc/thread-self/stat`).
    fn policy() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) is parenthesized and may hold spaces.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(38).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn background_work_runs_in_the_idle_scheduling_class() {
        const SCHED_OTHER: u32 = 0;
        const SCHED_IDLE: u32 = 5;
        assert_eq!(policy(), SCHED_OTHER);
        let background = Background::start().unwrap();
        let (there, name) = background
            .spawn(async { (policy(), std::thread::current().name().map(str::to_owned)) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("tessera-bg"));
        assert_eq!(there, SCHED_IDLE);
        assert_eq!(policy(), SCHED_OTHER, "the caller's class is untouched");
        drop(background); // from async code: must not block or panic
    }
}
