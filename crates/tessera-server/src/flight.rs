//! Arrow Flight SQL on the gRPC port: BI tools and notebooks (ADBC, JDBC, `pyarrow.flight`)
//! reach every lake table and view with SQL.
//!
//! - **Authentication** ([`crate::auth`]): the Flight handshake with HTTP basic
//!   credentials of a `[users.NAME]` account returns a bearer token; every other call
//!   must carry it (or an API token of `[tokens.NAME]`).
//!   Missing, wrong, forged or expired credentials get `UNAUTHENTICATED`; a role that
//!   may not run SQL (`marketer`, `ingest`) gets `PERMISSION_DENIED`.
//! - **Metadata**: `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables` (with
//!   schemas), `GetTableTypes`, from the same DataFusion session queries run in.
//! - **Statements**: planned once, when the client asks for their `FlightInfo`; the
//!   plan waits for the ticket (a minute at most) and is executed as a stream of record
//!   batches when it is redeemed — results are never materialized. Both go through the query boundary
//!   ([`tessera_engine::query::QueryService`]): read-only statements only (anything
//!   else is `PERMISSION_DENIED` naming the statement kind, `CommandStatementUpdate`
//!   included), memory, time and concurrency limits (`RESOURCE_EXHAUSTED`,
//!   `DEADLINE_EXCEEDED`), and a client that goes away cancels its query.
//! - **Prepared statements** with bound parameters: `?` (DB-API's qmark, JDBC) or `$1`,
//!   `$2`, …; the parameter schema lists them in order. Parameters may come as plain
//!   columns (ADBC) or as dense unions (flightsql-dbapi). A user keeps at most 256 open;
//!   creating more closes their oldest.
//! - **What a caller sees** ([`tessera_engine::access`]): personal data masked without
//!   the `pii` grant, only the rows of a row-filtered user, `audit_log` only for admins
//!   — in results and in the metadata alike.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tessera_engine::query::QueryService;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{AuditLog, Entry, StreamAudit};
use crate::auth::{Auth, Principal as Session};

/// A prepared statement: its SQL and the parameters bound so far.
#[derive(Debug, Clone)]
struct Prepared {
    user: String,
    sql: String,
    params: Vec<ScalarValue>,
    created: std::time::Instant,
}

/// Prepared statements one user keeps open at most: a client that never closes its
/// statements has its oldest ones closed rather than the server's memory taken.
const PREPARED_PER_USER: usize = 256;

/// Keeps `p` under `handle`, closing its user's oldest statement when they have
/// [`PREPARED_PER_USER`] open.
fn keep_prepared(all: &mut HashMap<String, Prepared>, handle: String, p: Prepared) {
    let theirs = all.values().filter(|o| o.user == p.user).count();
    if theirs >= PREPARED_PER_USER
        && let Some(oldest) = all
            .iter()
            .filter(|(_, o)| o.user == p.user)
            .min_by_key(|(_, o)| o.created)
            .map(|(k, _)| k.clone())
    {
        all.remove(&oldest);
    }
    all.insert(handle, p);
}

/// How long a statement planned for a `FlightInfo` waits for its `DoGet`.
const PLANNED_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Most statements waiting for their `DoGet` (the oldest gives way).
const PLANNED_MAX: usize = 256;

/// What a plan waiting for its `DoGet` was made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PlanKey {
    /// A statement, by the id in its ticket.
    Statement(String),
    /// A prepared statement, by its handle.
    Prepared(String),
}

struct Waiting {
    user: String,
    params: Vec<ScalarValue>,
    at: std::time::Instant,
    df: DataFrame,
}

/// Statements planned at `GetFlightInfo`, kept for their `DoGet`: it runs the plan the
/// `FlightInfo`'s schema came from — the same table versions — instead of opening the
/// tables and planning again. A plan is taken once, by the user it was made for, with
/// the parameters it was made with, within [`PLANNED_TTL`]; a ticket redeemed again,
/// late, or on another server is planned again from what it carries.
#[derive(Default)]
struct PlannedStatements {
    waiting: HashMap<PlanKey, Waiting>,
}

impl PlannedStatements {
    fn put(&mut self, key: PlanKey, user: &str, params: &[ScalarValue], df: DataFrame) {
        let now = std::time::Instant::now();
        self.waiting
            .retain(|_, w| now.duration_since(w.at) < PLANNED_TTL);
        if self.waiting.len() >= PLANNED_MAX
            && let Some(oldest) = self
                .waiting
                .iter()
                .min_by_key(|(_, w)| w.at)
                .map(|(k, _)| k.clone())
        {
            self.waiting.remove(&oldest);
        }
        self.waiting.insert(
            key,
            Waiting {
                user: user.to_owned(),
                params: params.to_vec(),
                at: now,
                df,
            },
        );
    }

    fn take(&mut self, key: &PlanKey, user: &str, params: &[ScalarValue]) -> Option<DataFrame> {
        let w = self.waiting.remove(key)?;
        (w.user == user && w.params == params && w.at.elapsed() < PLANNED_TTL).then_some(w.df)
    }
}

/// A statement ticket: `\0`, the id of its waiting plan, then the SQL (to plan again
/// when the plan is gone). A ticket of only SQL (an older server's) is planned again.
fn statement_ticket(id: &str, sql: &str) -> Vec<u8> {
    format!("\0{id}\0{sql}").into_bytes()
}

/// The plan id (if any) and the SQL of a statement ticket.
fn read_statement_ticket(handle: &[u8]) -> Result<(Option<String>, String), Status> {
    let text = std::str::from_utf8(handle)
        .map_err(|_| Status::invalid_argument("the ticket is not a statement of this server"))?;
    Ok(
        match text.strip_prefix('\0').and_then(|t| t.split_once('\0')) {
            Some((id, sql)) => (Some(id.to_owned()), sql.to_owned()),
            None => (None, text.to_owned()),
        },
    )
}

/// The Flight SQL service.
#[derive(Clone)]
pub struct TesseraFlightSql {
    queries: Arc<dyn QueryService>,
    auth: Arc<Auth>,
    prepared: Arc<Mutex<HashMap<String, Prepared>>>,
    planned: Arc<Mutex<PlannedStatements>>,
    sql_info: Arc<SqlInfoData>,
    audit: Arc<AuditLog>,
}

impl std::fmt::Debug for TesseraFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TesseraFlightSql")
            .field("auth", &self.auth)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sql_error(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A bound parameter as a plain value: flightsql-dbapi sends each one as a dense union
/// of one row (so that every parameter may have its own type).
fn parameter(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Union(Some((_, inner)), _, _) => parameter(*inner),
        ScalarValue::Union(None, _, _) => ScalarValue::Null,
        other => other,
    }
}

impl TesseraFlightSql {
    pub fn new(
        queries: Arc<dyn QueryService>,
        auth: Arc<Auth>,
        audit: Arc<AuditLog>,
    ) -> Result<Self, Status> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Tessera");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        let sql_info = info.build().map_err(|e| Status::internal(e.to_string()))?;
        Ok(TesseraFlightSql {
            queries,
            auth,
            prepared: Arc::default(),
            planned: Arc::default(),
            sql_info: Arc::new(sql_info),
            audit,
        })
    }

    /// The session of the request's bearer token; a refusal is audited.
    fn session<T>(&self, request: &Request<T>) -> Result<Session, Status> {
        self.authenticate(request).inspect_err(|status| {
            self.audit.record(
                Entry::of(request, None, "call", "unauthenticated").detail(status.message()),
            );
        })
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<Session, Status> {
        self.auth.authenticate(request.metadata())
    }

    /// The session, which must be allowed to run SQL.
    fn querier<T>(&self, request: &Request<T>) -> Result<Session, Status> {
        let session = self.session(request)?;
        if !session.role.may_query() {
            self.audit.record(Entry::of(
                request,
                Some(&session),
                "query",
                "permission_denied",
            ));
            return Err(Status::permission_denied(format!(
                "user {} has role {}, which may not run SQL (admin and analyst may)",
                session.user,
                session.role.name()
            )));
        }
        Ok(session)
    }

    /// The caller's session (for metadata: the tables and schemas it may see).
    async fn context(&self, session: &Session) -> Result<SessionContext, Status> {
        self.queries
            .session(&session.access())
            .await
            .map_err(|e| crate::status::engine(&e))
    }

    /// A session without tables: catalog and schema names, with no lake I/O.
    fn names(&self) -> Result<SessionContext, Status> {
        self.queries.names().map_err(|e| crate::status::engine(&e))
    }

    async fn plan(
        &self,
        session: &Session,
        sql: &str,
        params: &[ScalarValue],
    ) -> Result<DataFrame, Status> {
        self.queries
            .plan(&session.access(), sql, params)
            .await
            .map_err(|e| crate::status::engine(&e))
    }

    /// Plans `sql` for `session`; a refusal or a planning error is audited as `action`.
    async fn planned<T>(
        &self,
        request: &Request<T>,
        session: &Session,
        action: &str,
        sql: &str,
        params: &[ScalarValue],
    ) -> Result<DataFrame, Status> {
        self.plan(session, sql, params).await.inspect_err(|status| {
            let outcome = match status.code() {
                tonic::Code::PermissionDenied => "permission_denied",
                _ => "invalid",
            };
            self.audit.record(
                Entry::of(request, Some(session), action, outcome)
                    .target(sql.to_owned())
                    .detail(status.message()),
            );
        })
    }

    fn info(
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor))
    }

    /// Executes `df` as a stream of Flight data; `audit` is recorded when the stream
    /// ends or is dropped, with the rows delivered.
    /// The `FlightInfo` of a metadata request (any signed-in user): its result schema
    /// and a ticket that is the command itself.
    fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: Vec<u8>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        Ok(Response::new(Self::info(
            schema,
            command,
            request.into_inner(),
        )?))
    }

    /// Runs `df` through the query boundary as a stream of Flight data; `audit` is
    /// recorded when the stream ends or is dropped, with the rows delivered and how it
    /// ended.
    async fn stream(
        &self,
        df: DataFrame,
        audit: StreamAudit,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let rows = audit.rows.clone();
        let finished = audit.finished.clone();
        let failure = audit.failure.clone();
        let started = match self.queries.execute(df).await {
            Ok(s) => s,
            Err(e) => {
                let status = crate::status::engine(&e);
                audit.fail(outcome_of(&status), status.message());
                return Err(status);
            }
        };
        let queries = self.queries.clone();
        let counted = started.map(move |batch| match batch {
            Ok(b) => {
                rows.fetch_add(b.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(b)
            }
            Err(e) => {
                let status = crate::status::engine(&queries.running_error(e));
                StreamAudit::record_failure(&failure, outcome_of(&status), status.message());
                Err(FlightError::Tonic(Box::new(status)))
            }
        });
        // The audit entry lives in the stream's last step: recorded `ok` when the
        // client read everything, `cancelled` when the stream is dropped before.
        let end = futures::stream::once(async move {
            finished.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(audit);
            None
        })
        .filter_map(
            |x: Option<Result<datafusion::arrow::array::RecordBatch, FlightError>>| async move { x },
        );
        let batches = counted.chain(end);
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    fn one_batch<E: Into<FlightError> + Send + 'static>(
        schema: SchemaRef,
        batch: Result<datafusion::arrow::array::RecordBatch, E>,
    ) -> Response<<Self as FlightService>::DoGetStream> {
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(
                async move { batch.map_err(Into::into) },
            ))
            .map_err(Status::from);
        Response::new(Box::pin(stream))
    }

    fn prepared(&self, handle: &[u8], user: &str) -> Result<Prepared, Status> {
        let key = String::from_utf8_lossy(handle).into_owned();
        let found = lock(&self.prepared).get(&key).cloned();
        match found {
            Some(p) if p.user == user => Ok(p),
            _ => Err(Status::not_found(
                "unknown prepared statement handle (closed; or one of the oldest of a user with more than 256 open; or from another session)",
            )),
        }
    }

    /// Every table and view `session` may see: (catalog, schema, table, type, Arrow
    /// schema).
    async fn tables(
        &self,
        session: &Session,
    ) -> Result<Vec<(String, String, String, &'static str, SchemaRef)>, Status> {
        let ctx = self.context(session).await?;
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                if schema_name == "information_schema" {
                    continue;
                }
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let mut names = schema.table_names();
                names.sort();
                for name in names {
                    if let Ok(Some(table)) = schema.table(&name).await {
                        let kind = match table.table_type() {
                            datafusion::datasource::TableType::View => "VIEW",
                            _ => "TABLE",
                        };
                        out.push((
                            catalog_name.clone(),
                            schema_name.clone(),
                            name,
                            kind,
                            table.schema(),
                        ));
                    }
                }
            }
        }
        Ok(out)
    }
}

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FlightSqlService for TesseraFlightSql {
    type FlightService = TesseraFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated("no credentials: send user and password (HTTP basic)")
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let encoded = header.strip_prefix("Basic ").ok_or_else(|| {
            Status::unauthenticated(
                "the handshake expects `authorization: Basic ...` (user and password)",
            )
        })?;
        // Padded or not: Go clients (ADBC's Flight SQL driver) leave the padding out.
        let encoded = encoded.trim().trim_end_matches('=');
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::unauthenticated("malformed basic credentials"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::unauthenticated("malformed basic credentials"))?;
        let from = request.remote_addr().map(|a| a.ip());
        let login = match self.auth.login(user, password, from) {
            Ok(login) => login,
            Err(refused) => {
                tracing::warn!(
                    user,
                    "Flight SQL handshake refused: {}",
                    refused.status.message()
                );
                let mut e = Entry::of(&request, None, "handshake", refused.audit);
                e.user = user.to_owned();
                e.detail = Some(refused.status.message().to_owned());
                self.audit.record(e);
                return Err(refused.status);
            }
        };
        let token = login.token;
        self.audit.record(Entry::of(
            &request,
            Some(&login.principal),
            "handshake",
            "ok",
        ));
        let output: HandshakeStream =
            Box::pin(futures::stream::iter(vec![Ok(HandshakeResponse {
                protocol_version: 0,
                payload: token.clone().into(),
            })]));
        let mut response = Response::new(output);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request)?;
        Err(Status::unimplemented(format!(
            "unsupported ticket: {}",
            message.type_url
        )))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.querier(&request)?;
        let df = self
            .planned(&request, &session, "query", &query.query, &[])
            .await?;
        tracing::info!(
            user = session.user,
            sql = query.query,
            "Flight SQL statement"
        );
        let id =
            tessera_core::auth::random_token().map_err(|e| Status::unavailable(e.to_string()))?;
        let ticket = TicketStatementQuery {
            statement_handle: statement_ticket(&id, &query.query).into(),
        };
        let info = Self::info(
            df.schema().as_arrow(),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        lock(&self.planned).put(PlanKey::Statement(id), &session.user, &[], df);
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.querier(&request)?;
        let (id, sql) = read_statement_ticket(&ticket.statement_handle)?;
        let waiting =
            id.and_then(|id| lock(&self.planned).take(&PlanKey::Statement(id), &session.user, &[]));
        let df = match waiting {
            Some(df) => df,
            None => self.planned(&request, &session, "query", &sql, &[]).await?,
        };
        let mut entry = Entry::of(&request, Some(&session), "query", "ok");
        entry.target = Some(sql);
        self.stream(df, StreamAudit::new(self.audit.clone(), entry))
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.querier(&request)?;
        let prepared = self.prepared(&cmd.prepared_statement_handle, &session.user)?;
        let df = self.plan(&session, &prepared.sql, &prepared.params).await?;
        let info = Self::info(
            df.schema().as_arrow(),
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        let key = PlanKey::Prepared(String::from_utf8_lossy(&cmd.prepared_statement_handle).into());
        lock(&self.planned).put(key, &session.user, &prepared.params, df);
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.querier(&request)?;
        let prepared = self.prepared(&cmd.prepared_statement_handle, &session.user)?;
        let key = PlanKey::Prepared(String::from_utf8_lossy(&cmd.prepared_statement_handle).into());
        let waiting = lock(&self.planned).take(&key, &session.user, &prepared.params);
        let df = match waiting {
            Some(df) => df,
            None => self.plan(&session, &prepared.sql, &prepared.params).await?,
        };
        let mut entry = Entry::of(&request, Some(&session), "prepared_query", "ok");
        entry.target = Some(prepared.sql.clone());
        entry.detail = (!prepared.params.is_empty()).then(|| {
            let shown: Vec<String> = prepared.params.iter().map(ToString::to_string).collect();
            format!("parameters: {}", shown.join(", "))
        });
        self.stream(df, StreamAudit::new(self.audit.clone(), entry))
            .await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = self.querier(&request)?;
        let df = self
            .planned(&request, &session, "prepare", &query.query, &[])
            .await?;
        let plan = df.logical_plan();
        let types = plan.get_parameter_types().map_err(sql_error)?;
        let mut names: Vec<&String> = types.keys().collect();
        names.sort_by_key(|n| {
            n.trim_start_matches('$')
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let parameters = Schema::new(
            names
                .iter()
                .map(|n| {
                    Field::new(
                        n.as_str(),
                        types[*n]
                            .clone()
                            .unwrap_or(datafusion::arrow::datatypes::DataType::Utf8),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let encode = |schema: &Schema| -> Result<_, Status> {
            let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
                .try_into()
                .map_err(|e: datafusion::arrow::error::ArrowError| {
                    Status::internal(e.to_string())
                })?;
            Ok(bytes)
        };
        let handle =
            tessera_core::auth::random_token().map_err(|e| Status::unavailable(e.to_string()))?;
        keep_prepared(
            &mut lock(&self.prepared),
            handle.clone(),
            Prepared {
                user: session.user,
                sql: query.query.clone(),
                params: Vec::new(),
                created: std::time::Instant::now(),
            },
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: encode(df.schema().as_arrow())?,
            parameter_schema: encode(&parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let session = self.querier(&request)?;
        let mut prepared = self.prepared(&cmd.prepared_statement_handle, &session.user)?;
        let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        let mut params = Vec::new();
        while let Some(batch) = batches.next().await {
            let batch =
                batch.map_err(|e| Status::invalid_argument(format!("bad parameter batch: {e}")))?;
            if batch.num_rows() == 0 {
                continue;
            }
            if batch.num_rows() > 1 || !params.is_empty() {
                return Err(Status::invalid_argument(
                    "bind one row of parameters at a time",
                ));
            }
            for column in batch.columns() {
                params.push(parameter(
                    ScalarValue::try_from_array(column, 0).map_err(sql_error)?,
                ));
            }
        }
        prepared.params = params;
        lock(&self.prepared).insert(
            String::from_utf8_lossy(&cmd.prepared_statement_handle).into_owned(),
            prepared,
        );
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(cmd.prepared_statement_handle),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let session = self.session(&request)?;
        let key = String::from_utf8_lossy(&query.prepared_statement_handle).into_owned();
        let mut prepared = lock(&self.prepared);
        if prepared.get(&key).is_some_and(|p| p.user == session.user) {
            prepared.remove(&key);
        }
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request)?;
        let mut builder = query.into_builder();
        for name in self.names()?.catalog_names() {
            builder.append(name);
        }
        Ok(Self::one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request)?;
        let mut builder = query.into_builder();
        let ctx = self.names()?;
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema in catalog.schema_names() {
                    if schema != "information_schema" {
                        builder.append(catalog_name.clone(), schema);
                    }
                }
            }
        }
        Ok(Self::one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        let session = self.session(&request)?;
        for (catalog, schema, table, kind, arrow_schema) in self.tables(&session).await? {
            builder
                .append(catalog, schema, table, kind, &arrow_schema)
                .map_err(Status::from)?;
        }
        Ok(Self::one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        Ok(Self::one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request)?;
        let builder = query.into_builder(&self.sql_info);
        Ok(Self::one_batch(builder.schema(), builder.build()))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: arrow_flight::sql::CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse_update(&request)
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: arrow_flight::sql::CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.refuse_update(&request)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl TesseraFlightSql {
    /// Updates are refused: Tessera's SQL interface is read-only.
    fn refuse_update<T>(&self, request: &Request<T>) -> Result<i64, Status> {
        let session = self.session(request)?;
        let status = Status::permission_denied(
            "updates are not allowed: Tessera's SQL interface is read-only (SELECT, WITH, EXPLAIN, SHOW and DESCRIBE)",
        );
        self.audit.record(
            Entry::of(request, Some(&session), "update", "permission_denied")
                .detail(status.message()),
        );
        Err(status)
    }
}

/// The audit outcome of a refused or failed query.
fn outcome_of(status: &Status) -> &'static str {
    match status.code() {
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::DeadlineExceeded => "timed_out",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::InvalidArgument => "invalid",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn statement_tickets_carry_the_plan_id_and_the_sql() {
        let t = statement_ticket("abc", "SELECT '\0' AS x");
        assert_eq!(
            read_statement_ticket(&t).unwrap(),
            (Some("abc".into()), "SELECT '\0' AS x".into())
        );
        // A ticket of only SQL is planned again.
        assert_eq!(
            read_statement_ticket(b"SELECT 1").unwrap(),
            (None, "SELECT 1".into())
        );
        assert!(read_statement_ticket(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn a_user_keeps_at_most_256_prepared_statements_open() {
        let mut all = HashMap::new();
        let p = |user: &str| Prepared {
            user: user.into(),
            sql: "SELECT 1".into(),
            params: Vec::new(),
            created: std::time::Instant::now(),
        };
        keep_prepared(&mut all, "bob-0".into(), p("bob"));
        for i in 0..PREPARED_PER_USER + 5 {
            keep_prepared(&mut all, format!("ana-{i}"), p("ana"));
        }
        assert_eq!(all.len(), PREPARED_PER_USER + 1);
        assert!(all.contains_key("bob-0"), "another user's statements stay");
        assert!(
            !all.contains_key("ana-0") && !all.contains_key("ana-4"),
            "oldest closed"
        );
        assert!(all.contains_key("ana-5"));
    }

    #[test]
    fn a_waiting_plan_is_taken_once_by_its_user_with_its_parameters() {
        let df = || SessionContext::new().read_empty().unwrap();
        let mut p = PlannedStatements::default();
        let key = PlanKey::Statement("a".into());
        p.put(key.clone(), "ana", &[], df());
        assert!(p.take(&key, "ana", &[]).is_some());
        assert!(p.take(&key, "ana", &[]).is_none(), "once");
        p.put(key.clone(), "ana", &[], df());
        assert!(
            p.take(&key, "bob", &[]).is_none(),
            "another user plans anew"
        );
        let prepared = PlanKey::Prepared("h".into());
        p.put(
            prepared.clone(),
            "ana",
            &[ScalarValue::Int64(Some(1))],
            df(),
        );
        assert!(
            p.take(&prepared, "ana", &[ScalarValue::Int64(Some(2))])
                .is_none(),
            "parameters bound since are planned anew"
        );
        for i in 0..PLANNED_MAX + 10 {
            p.put(PlanKey::Statement(i.to_string()), "ana", &[], df());
        }
        assert_eq!(p.waiting.len(), PLANNED_MAX, "bounded");
        assert!(
            p.take(&PlanKey::Statement("0".into()), "ana", &[])
                .is_none()
        );
        assert!(
            p.take(
                &PlanKey::Statement((PLANNED_MAX + 9).to_string()),
                "ana",
                &[]
            )
            .is_some()
        );
    }
}
