//! The `tessera.v1` gRPC services of `proto/tessera/v1/`, on the gRPC port beside
//! Arrow Flight SQL:
//!
//! - `AuthService.Login`: user and password → bearer token ([`crate::auth`]).
//! - `ProfileService.GetProfile` / `BatchGetProfiles`: a profile by any identifier,
//!   answered from the in-memory [`crate::index`] (no query per request).
//! - `AudienceService.ListSegments` / `CheckMembership` / `StreamAudience`: segments,
//!   membership, and members or entries/exits since a refresh version.
//! - `AdminService.Stitch` / `RefreshSegments` (role `admin`): run now, then reload the
//!   index.
//!
//! Roles: `admin`, `analyst` and `marketer` read profiles and audiences; `ingest` may
//! not (`PERMISSION_DENIED`). Callers without the `pii` grant get e-mail and phone
//! identifiers and personal-data traits as `***`. Every call is written to
//! `audit_log` (identifier values of personal-data types are never written there).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use futures::{Stream, StreamExt};
use tessera_core::config::{IdentitySection, Role};
use tessera_engine::Engine;
use tonic::{Request, Response, Status};

use crate::audit::{AuditLog, Entry, StreamAudit};
use crate::auth::{Auth, Principal};
use crate::index::{IndexHandle, masked_identifier, timestamp};

/// The generated `tessera.v1` messages, clients and servers.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("tessera.v1");

    /// The encoded descriptors of `proto/tessera/v1/`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tessera_v1_descriptor.bin"));
}

/// `ProfileService` as this server answers it: replies carrying each profile already
/// encoded ([`ProfileIndex::encoded_profile`](crate::index::ProfileIndex::encoded_profile)).
/// A field holding an encoded message and the message itself are the same bytes on
/// the wire, so clients decode these replies as `GetProfileResponse` and
/// `BatchGetProfilesResponse` of `proto/tessera/v1/profile.proto`.
pub mod wire {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    use super::v1;
    use prost::bytes::Bytes;

    /// `tessera.v1.GetProfileResponse` with `profile` encoded.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetProfileReply {
        /// An encoded `tessera.v1.Profile`.
        #[prost(bytes = "bytes", tag = "1")]
        pub profile: Bytes,
        #[prost(message, optional, tag = "2")]
        pub identifier: Option<v1::Identifier>,
        #[prost(string, tag = "3")]
        pub merged_from: String,
        #[prost(message, optional, tag = "4")]
        pub snapshot: Option<v1::Snapshot>,
    }

    /// `tessera.v1.ProfileResult` with `profile` encoded (empty: no profile).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProfileResultReply {
        #[prost(message, optional, tag = "1")]
        pub identifier: Option<v1::Identifier>,
        /// An encoded `tessera.v1.Profile`; empty (not sent) when none holds the
        /// identifier.
        #[prost(bytes = "bytes", tag = "2")]
        pub profile: Bytes,
        #[prost(string, tag = "3")]
        pub merged_from: String,
        #[prost(string, tag = "4")]
        pub error: String,
    }

    /// `tessera.v1.BatchGetProfilesResponse` with each profile encoded.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchGetProfilesReply {
        #[prost(message, repeated, tag = "1")]
        pub results: Vec<ProfileResultReply>,
        #[prost(message, optional, tag = "2")]
        pub snapshot: Option<v1::Snapshot>,
    }

    include!(concat!(env!("OUT_DIR"), "/tessera.v1.ProfileService.rs"));
}

use v1::admin_service_server::AdminService;
use v1::audience_service_server::AudienceService;
use v1::auth_service_server::AuthService;
use wire::profile_service_server::ProfileService;

/// Most identifiers one `BatchGetProfiles` call may ask for.
pub const MAX_BATCH: usize = 1000;
/// Members or changes per `StreamAudience` message.
const CHUNK: usize = 1000;

/// What the admin service needs to run stitching and refreshes.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub project_dir: PathBuf,
    pub identity: IdentitySection,
    /// Pinned evaluation time of segments, if configured.
    pub as_of_micros: Option<i64>,
}

/// The four `tessera.v1` services (one value, cloned into each tonic server).
#[derive(Clone)]
pub struct Api {
    engine: Engine,
    auth: Arc<Auth>,
    audit: Arc<AuditLog>,
    index: Arc<IndexHandle>,
    admin: Option<Arc<AdminOptions>>,
    /// One admin job (stitch or refresh) at a time.
    admin_job: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Profiles and audiences: admin, analyst, marketer.
    Read,
    /// Stitching and refreshes: admin.
    Admin,
}

/// An identifier as the audit log may hold it (personal-data values masked).
fn audit_identifier(id: &v1::Identifier) -> String {
    let shown = masked_identifier(id, false);
    format!("{}:{}", shown.r#type, shown.value)
}

impl Api {
    pub fn new(
        engine: Engine,
        auth: Arc<Auth>,
        audit: Arc<AuditLog>,
        index: Arc<IndexHandle>,
        admin: Option<AdminOptions>,
    ) -> Api {
        Api {
            engine,
            auth,
            audit,
            index,
            admin: admin.map(Arc::new),
            admin_job: Arc::default(),
        }
    }

    /// The caller, allowed `access`; refusals are audited.
    fn caller<T>(
        &self,
        request: &Request<T>,
        action: &str,
        access: Access,
    ) -> Result<Principal, Status> {
        let principal = self
            .auth
            .authenticate(request.metadata())
            .inspect_err(|s| {
                self.audit.record(
                    Entry::of(request, None, action, "unauthenticated").detail(s.message()),
                );
            })?;
        let allowed = match access {
            Access::Read => matches!(principal.role, Role::Admin | Role::Analyst | Role::Marketer),
            Access::Admin => principal.role == Role::Admin,
        };
        if !allowed {
            self.audit.record(Entry::of(
                request,
                Some(&principal),
                action,
                "permission_denied",
            ));
            let what = match access {
                Access::Read => "read profiles and audiences (admin, analyst and marketer may)",
                Access::Admin => "run stitching or refreshes (admin may)",
            };
            return Err(Status::permission_denied(format!(
                "user {} has role {}, which may not {what}",
                principal.user,
                principal.role.name()
            )));
        }
        Ok(principal)
    }

    fn admin_options(&self) -> Result<Arc<AdminOptions>, Status> {
        self.admin.clone().ok_or_else(|| {
            Status::failed_precondition("this server was started without a project folder")
        })
    }

    async fn reload_index(&self) -> Result<v1::Snapshot, Status> {
        self.index
            .refresh(true)
            .await
            .map_err(|e| Status::internal(format!("reloading the profile index: {e}")))?;
        Ok(*self.index.get().snapshot())
    }
}

#[tonic::async_trait]
impl AuthService for Api {
    async fn login(
        &self,
        request: Request<v1::LoginRequest>,
    ) -> Result<Response<v1::LoginResponse>, Status> {
        let v1::LoginRequest { user, password } = request.get_ref();
        let from = request.remote_addr().map(|a| a.ip());
        match self.auth.login(user, password, from) {
            Ok(login) => {
                self.audit
                    .record(Entry::of(&request, Some(&login.principal), "login", "ok"));
                let micros = login
                    .expires_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                Ok(Response::new(v1::LoginResponse {
                    token: login.token,
                    expires_at: Some(timestamp(micros)),
                    role: login.principal.role.name().into(),
                    pii: login.principal.pii,
                }))
            }
            Err(refused) => {
                let mut e = Entry::of(&request, None, "login", refused.audit);
                e.user = user.clone();
                e.detail = Some(refused.status.message().to_owned());
                self.audit.record(e);
                Err(refused.status)
            }
        }
    }
}

#[tonic::async_trait]
impl ProfileService for Api {
    async fn get_profile(
        &self,
        request: Request<v1::GetProfileRequest>,
    ) -> Result<Response<wire::GetProfileReply>, Status> {
        let who = self.caller(&request, "get_profile", Access::Read)?;
        let Some(id) = request.get_ref().identifier.as_ref() else {
            return Err(Status::invalid_argument(
                "`identifier` is required: {type: \"email\", value: \"jane@example.com\"}",
            ));
        };
        let index = self.index.get();
        let resolved = match index.resolve(id) {
            Ok(r) => r,
            Err(bad) => {
                self.audit.record(
                    Entry::of(&request, Some(&who), "get_profile", "invalid")
                        .target(audit_identifier(id))
                        .detail(bad.0.clone()),
                );
                return Err(Status::invalid_argument(bad.0));
            }
        };
        let mut e = Entry::of(&request, Some(&who), "get_profile", "ok");
        let target = audit_identifier(&resolved.identifier);
        // A row-filtered caller never learns that a profile outside its rows exists.
        let visible = resolved
            .profile
            .filter(|&i| index.visible(i, who.rows.as_deref()));
        let Some(i) = visible else {
            e.status = "not_found".into();
            e.target = Some(target);
            e.rows = Some(0);
            self.audit.record(e);
            let shown = masked_identifier(&resolved.identifier, who.pii);
            return Err(Status::not_found(format!(
                "no profile holds {}:{} (snapshot of identity_map version {})",
                shown.r#type,
                shown.value,
                index.snapshot().identity_map_version
            )));
        };
        let profile = index.profile(i);
        e.target = Some(format!("{target} -> {}", profile.profile_id));
        e.rows = Some(1);
        self.audit.record(e);
        Ok(Response::new(wire::GetProfileReply {
            profile: index.encoded_profile(i, who.pii),
            identifier: Some(masked_identifier(&resolved.identifier, who.pii)),
            merged_from: resolved.merged_from.unwrap_or_default(),
            snapshot: Some(*index.snapshot()),
        }))
    }

    async fn batch_get_profiles(
        &self,
        request: Request<v1::BatchGetProfilesRequest>,
    ) -> Result<Response<wire::BatchGetProfilesReply>, Status> {
        let who = self.caller(&request, "batch_get_profiles", Access::Read)?;
        let asked = &request.get_ref().identifiers;
        if asked.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} identifiers asked for; at most {MAX_BATCH} per call",
                asked.len()
            )));
        }
        let index = self.index.get();
        let results: Vec<wire::ProfileResultReply> = asked
            .iter()
            .map(|id| match index.resolve(id) {
                Err(bad) => wire::ProfileResultReply {
                    identifier: Some(masked_identifier(id, who.pii)),
                    error: bad.0,
                    ..Default::default()
                },
                Ok(r) => {
                    let visible = r.profile.filter(|&i| index.visible(i, who.rows.as_deref()));
                    wire::ProfileResultReply {
                        identifier: Some(masked_identifier(&r.identifier, who.pii)),
                        profile: visible
                            .map(|i| index.encoded_profile(i, who.pii))
                            .unwrap_or_default(),
                        merged_from: visible.and(r.merged_from).unwrap_or_default(),
                        error: String::new(),
                    }
                }
            })
            .collect();
        self.audit.record(
            Entry::of(&request, Some(&who), "batch_get_profiles", "ok")
                .target(format!("{} identifiers", asked.len()))
                .rows(results.iter().filter(|r| !r.profile.is_empty()).count() as i64),
        );
        Ok(Response::new(wire::BatchGetProfilesReply {
            results,
            snapshot: Some(*index.snapshot()),
        }))
    }
}

type AudienceStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<v1::StreamAudienceResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AudienceService for Api {
    async fn list_segments(
        &self,
        request: Request<v1::ListSegmentsRequest>,
    ) -> Result<Response<v1::ListSegmentsResponse>, Status> {
        let who = self.caller(&request, "list_segments", Access::Read)?;
        let index = self.index.get();
        let rows = who.rows.as_deref();
        let segments: Vec<v1::Segment> = index
            .segments()
            .iter()
            .map(|s| {
                let mut info = s.info.clone();
                if rows.is_some() {
                    // Sizes count only the caller's rows.
                    info.members = s
                        .members
                        .iter()
                        .filter(|&&i| index.visible(i, rows))
                        .count() as i64;
                }
                info
            })
            .collect();
        self.audit.record(
            Entry::of(&request, Some(&who), "list_segments", "ok").rows(segments.len() as i64),
        );
        Ok(Response::new(v1::ListSegmentsResponse {
            segments,
            snapshot: Some(*index.snapshot()),
        }))
    }

    async fn check_membership(
        &self,
        request: Request<v1::CheckMembershipRequest>,
    ) -> Result<Response<v1::CheckMembershipResponse>, Status> {
        let who = self.caller(&request, "check_membership", Access::Read)?;
        let v1::CheckMembershipRequest {
            segment,
            identifier,
        } = request.get_ref();
        let index = self.index.get();
        let Some(entry) = index.segment(segment) else {
            return Err(unknown_segment(segment, &index));
        };
        let id = identifier
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("`identifier` is required"))?;
        let resolved = index
            .resolve(id)
            .map_err(|bad| Status::invalid_argument(bad.0))?;
        let mut out = v1::CheckMembershipResponse {
            refresh_version: entry.info.refresh_version,
            ..v1::CheckMembershipResponse::default()
        };
        if let Some(i) = resolved
            .profile
            .filter(|&i| index.visible(i, who.rows.as_deref()))
        {
            let p = index.profile(i);
            out.profile_id = p.profile_id.clone();
            if let Some(m) = p.segments.iter().find(|m| &m.segment == segment) {
                out.member = true;
                out.since = m.since;
            }
        }
        self.audit.record(
            Entry::of(&request, Some(&who), "check_membership", "ok")
                .target(format!(
                    "{segment} {}",
                    audit_identifier(&resolved.identifier)
                ))
                .rows(i64::from(out.member)),
        );
        Ok(Response::new(out))
    }

    type StreamAudienceStream = AudienceStream;

    async fn stream_audience(
        &self,
        request: Request<v1::StreamAudienceRequest>,
    ) -> Result<Response<AudienceStream>, Status> {
        let who = self.caller(&request, "stream_audience", Access::Read)?;
        let v1::StreamAudienceRequest {
            segment,
            since_version,
        } = request.get_ref().clone();
        let index = self.index.get();
        let Some(entry) = index.segment(&segment) else {
            return Err(unknown_segment(&segment, &index));
        };
        if since_version < 0 {
            return Err(Status::invalid_argument(
                "since_version must be 0 (current members) or a refresh version",
            ));
        }
        let mut e = Entry::of(&request, Some(&who), "stream_audience", "ok");
        e.target = Some(format!("{segment} since {since_version}"));
        let audit = StreamAudit::new(self.audit.clone(), e);
        let (rows, finished) = (audit.rows.clone(), audit.finished.clone());
        let chunks: AudienceStream = if since_version == 0 {
            let version = entry.info.refresh_version;
            let rows = who.rows.clone();
            let members: Vec<u32> = entry
                .members
                .iter()
                .copied()
                .filter(|&i| index.visible(i, rows.as_deref()))
                .collect();
            let at = entry.info.refreshed_at;
            let index = index.clone();
            Box::pin(futures::stream::iter(
                members
                    .chunks(CHUNK)
                    .map(|chunk| {
                        Ok(v1::StreamAudienceResponse {
                            changes: chunk
                                .iter()
                                .map(|&i| v1::AudienceChange {
                                    profile_id: index.profile(i).profile_id.clone(),
                                    kind: v1::audience_change::Kind::Member as i32,
                                    refresh_version: version,
                                    at,
                                    merged_into: String::new(),
                                })
                                .collect(),
                        })
                    })
                    .collect::<Vec<_>>(),
            ))
        } else {
            let changes = changes_since(&self.engine, &segment, since_version).await?;
            match who.rows.clone() {
                None => changes,
                Some(rows) => {
                    // Only changes of profiles the caller may see (a merged-away
                    // profile by its survivor).
                    let index = index.clone();
                    Box::pin(changes.map(move |chunk| {
                        chunk.map(|mut c| {
                            c.changes.retain(|change| {
                                index
                                    .profile_of(&change.profile_id)
                                    .is_some_and(|i| index.visible(i, Some(&rows)))
                            });
                            c
                        })
                    }))
                }
            }
        };
        let counted = chunks.map(move |chunk| {
            if let Ok(c) = &chunk {
                rows.fetch_add(c.changes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            chunk
        });
        let end = futures::stream::once(async move {
            finished.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(audit);
            None
        })
        .filter_map(|x: Option<Result<v1::StreamAudienceResponse, Status>>| async move { x });
        Ok(Response::new(Box::pin(counted.chain(end))))
    }
}

fn unknown_segment(name: &str, index: &crate::index::ProfileIndex) -> Status {
    let known: Vec<&str> = index
        .segments()
        .iter()
        .map(|s| s.info.name.as_str())
        .collect();
    Status::not_found(if known.is_empty() {
        format!("unknown segment {name:?}: no segment has been refreshed yet")
    } else {
        format!("unknown segment {name:?}; known: {}", known.join(", "))
    })
}

/// Entries and exits of `segment` in refreshes after `since`, streamed from
/// `audience_changes` in (refresh_version, profile_id) order.
async fn changes_since(
    engine: &Engine,
    segment: &str,
    since: i64,
) -> Result<AudienceStream, Status> {
    let ctx = engine
        .session_of(&[tessera_core::schema::AUDIENCE_CHANGES])
        .await
        .map_err(|e| Status::unavailable(format!("cannot open the lake: {e}")))?;
    if !ctx
        .table_exist(tessera_core::schema::AUDIENCE_CHANGES)
        .unwrap_or(false)
    {
        return Ok(Box::pin(futures::stream::empty()));
    }
    let sql = format!(
        "SELECT profile_id, change, refresh_version, CAST(changed_at AS BIGINT) AS at_us, merged_into \
         FROM audience_changes WHERE segment = '{}' AND refresh_version > {since} \
         ORDER BY refresh_version, profile_id",
        segment.replace('\'', "''")
    );
    let stream = ctx
        .sql(&sql)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .execute_stream()
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(Box::pin(stream.map(|batch| {
        let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
        let text = |name: &str| -> Result<_, Status> {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| Status::internal(format!("{name} missing")))?;
            Ok(cast(col, &DataType::Utf8)
                .map_err(|e| Status::internal(e.to_string()))?
                .as_string::<i32>()
                .clone())
        };
        let int = |name: &str| -> Result<_, Status> {
            let col = batch
                .column_by_name(name)
                .ok_or_else(|| Status::internal(format!("{name} missing")))?;
            Ok(cast(col, &DataType::Int64)
                .map_err(|e| Status::internal(e.to_string()))?
                .as_primitive::<Int64Type>()
                .clone())
        };
        let (pid, change, merged) = (text("profile_id")?, text("change")?, text("merged_into")?);
        let (version, at) = (int("refresh_version")?, int("at_us")?);
        use datafusion::arrow::array::Array;
        Ok(v1::StreamAudienceResponse {
            changes: (0..batch.num_rows())
                .map(|r| v1::AudienceChange {
                    profile_id: pid.value(r).to_owned(),
                    kind: match change.value(r) {
                        "entered" => v1::audience_change::Kind::Entered,
                        "exited" => v1::audience_change::Kind::Exited,
                        _ => v1::audience_change::Kind::Unspecified,
                    } as i32,
                    refresh_version: version.value(r),
                    at: Some(timestamp(at.value(r))),
                    merged_into: if merged.is_valid(r) {
                        merged.value(r).to_owned()
                    } else {
                        String::new()
                    },
                })
                .collect(),
        })
    })))
}

#[tonic::async_trait]
impl AdminService for Api {
    async fn stitch(
        &self,
        request: Request<v1::StitchRequest>,
    ) -> Result<Response<v1::StitchResponse>, Status> {
        let who = self.caller(&request, "stitch", Access::Admin)?;
        let options = self.admin_options()?;
        let _one = self.admin_job.lock().await;
        let started = Instant::now();
        let report = tessera_identity::stitch(
            &self.engine,
            &options.project_dir,
            &options.identity,
            &tessera_identity::StitchOptions {
                full: request.get_ref().full,
                actor: format!("tessera.v1 AdminService ({})", who.user),
            },
            &(),
        )
        .await;
        let mut e = Entry::of(&request, Some(&who), "stitch", "ok");
        let report = match report {
            Ok(r) => r,
            Err(err) => {
                e.status = "failed".into();
                e.detail = Some(err.to_string());
                self.audit.record(e);
                return Err(match err {
                    tessera_identity::IdentityError::NoEvents => {
                        Status::failed_precondition(err.to_string())
                    }
                    other => Status::internal(other.to_string()),
                });
            }
        };
        e.rows = Some(report.identifiers as i64);
        self.audit.record(e);
        let snapshot = self.reload_index().await?;
        Ok(Response::new(v1::StitchResponse {
            up_to_date: report.up_to_date,
            events_version: report.events_version as i64,
            identifiers: report.identifiers as i64,
            profiles: report.profiles as i64,
            merges: report.merges as i64,
            seconds: started.elapsed().as_secs_f64(),
            snapshot: Some(snapshot),
        }))
    }

    async fn refresh_segments(
        &self,
        request: Request<v1::RefreshSegmentsRequest>,
    ) -> Result<Response<v1::RefreshSegmentsResponse>, Status> {
        let who = self.caller(&request, "refresh_segments", Access::Admin)?;
        let options = self.admin_options()?;
        let _one = self.admin_job.lock().await;
        let started = Instant::now();
        let set = tessera_segments::SegmentSet::load(&options.project_dir)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let v1::RefreshSegmentsRequest { segments, force } = request.get_ref().clone();
        let report = tessera_segments::refresh::refresh(
            &self.engine,
            &set,
            &tessera_segments::refresh::RefreshOptions {
                names: segments.clone(),
                force,
                as_of_micros: options.as_of_micros,
                due_only: false,
                actor: format!("tessera.v1 AdminService ({})", who.user),
            },
        )
        .await;
        let mut e = Entry::of(&request, Some(&who), "refresh_segments", "ok");
        e.target = Some(if segments.is_empty() {
            "all".into()
        } else {
            segments.join(",")
        });
        let report = match report {
            Ok(r) => r,
            Err(err) => {
                e.status = "failed".into();
                e.detail = Some(err.to_string());
                self.audit.record(e);
                return Err(Status::failed_precondition(err.to_string()));
            }
        };
        e.rows = Some(report.outcomes.len() as i64);
        self.audit.record(e);
        let snapshot = self.reload_index().await?;
        Ok(Response::new(v1::RefreshSegmentsResponse {
            segments: report
                .outcomes
                .iter()
                .map(|o| v1::SegmentRefresh {
                    segment: o.segment.clone(),
                    status: match o.status {
                        tessera_segments::refresh::Status::Refreshed => "refreshed",
                        tessera_segments::refresh::Status::Unchanged => "unchanged",
                        tessera_segments::refresh::Status::NotDue => "not_due",
                    }
                    .into(),
                    refresh_version: o.refresh_version,
                    members: o.members as i64,
                    entered: o.entered as i64,
                    exited: o.exited as i64,
                })
                .collect(),
            seconds: started.elapsed().as_secs_f64(),
            snapshot: Some(snapshot),
        }))
    }
}
