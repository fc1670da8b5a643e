//! The `tessera.v1` gRPC services of `proto/tessera/v1/`, on the gRPC port beside
//! Arrow Flight SQL:
//!
//! - `AuthService.Login`: user and password → bearer token ([`crate::auth`]).
//! - `ProfileService.GetProfile` / `BatchGetProfiles`: a profile by any identifier,
//!   answered from the in-memory [`crate::index`] (no query per request).
//! - `AudienceService.ListSegments` / `CheckMembership` / `StreamAudience`: segments,
//!   membership, and members or entries/exits since a refresh version.
//! - `AdminService.Stitch` / `RefreshSegments` (role `admin`): run now, then reload the
//!   index; `RunSyncs` / `ActivationStatus` / `RetrySyncs`: plan syncs now (the
//!   server's delivery workers send them), their state, dead batches re-driven.
//!
//! - `PrivacyService.Erase` / `Export` / `ListRequests` (role `admin` or `privacy`):
//!   erasure of whole identity clusters, data-subject export, requests ([`privacy`]).
//!
//! Roles: `admin`, `analyst` and `marketer` read profiles and audiences; `ingest` and
//! `privacy` may not (`PERMISSION_DENIED`). Callers without the `pii` grant get e-mail and phone
//! identifiers and personal-data traits as `***`. Every call is written to
//! `audit_log` (identifier values of personal-data types are never written there).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use tessera_core::config::{IdentitySection, Role};
use tessera_engine::Engine;
use tonic::{Request, Response, Status};

use crate::audit::{AuditLog, Entry, StreamAudit};
use crate::auth::{Auth, Principal};
use crate::index::IndexHandle;
use crate::proto::{self, timestamp};

pub use crate::v1;
pub use crate::wire;

mod privacy;

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
    /// How long an erasure waits for the collector to see the suppression list before
    /// sweeping `events` once more (two flush intervals and a second).
    pub settle: std::time::Duration,
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
    /// The project's syncs (`None`: the project has none).
    activation: Option<Arc<tessera_activate::Activation>>,
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
    /// Privacy requests: admin, privacy.
    Privacy,
}

/// An identifier as the audit log may hold it (personal-data values masked).
fn audit_identifier(id_type: &str, value: &str) -> String {
    format!(
        "{id_type}:{}",
        tessera_identity::snapshot::shown_value(id_type, value, false)
    )
}

/// The message of an identifier the snapshot cannot resolve.
fn unresolvable(e: tessera_identity::IdentityError) -> String {
    e.to_string()
}

impl Api {
    /// The project's file destinations (what an erasure rewrites besides the lake).
    fn file_exports(&self) -> Vec<(String, Arc<tessera_activate::file::Target>)> {
        self.activation
            .as_ref()
            .map(|a| {
                a.destinations()
                    .iter()
                    .filter_map(|(n, d)| d.file_target().map(|t| (n.clone(), t.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn new(
        engine: Engine,
        auth: Arc<Auth>,
        audit: Arc<AuditLog>,
        index: Arc<IndexHandle>,
        admin: Option<AdminOptions>,
        activation: Option<Arc<tessera_activate::Activation>>,
    ) -> Api {
        Api {
            engine,
            auth,
            audit,
            index,
            admin: admin.map(Arc::new),
            admin_job: Arc::default(),
            activation,
        }
    }

    fn activation(&self) -> Result<Arc<tessera_activate::Activation>, Status> {
        self.activation.clone().ok_or_else(|| {
            Status::failed_precondition(
                "the project has no syncs: add [destinations.NAME] and [syncs.NAME] to tessera.toml",
            )
        })
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
            Access::Privacy => matches!(principal.role, Role::Admin | Role::Privacy),
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
                Access::Admin => "run stitching, refreshes or activation (admin may)",
                Access::Privacy => "erase or export people (admin and privacy may)",
            };
            return Err(Status::permission_denied(format!(
                "user {} has role {}, which may not {what}",
                principal.user,
                principal.role.name()
            )));
        }
        Ok(principal)
    }

    /// Records the call `e` as failed with `err`; the status `err` maps to.
    fn failed<E: std::fmt::Display>(
        &self,
        mut e: Entry,
        err: &E,
        status: fn(&E) -> Status,
    ) -> Status {
        e.status = "failed".into();
        e.detail = Some(err.to_string());
        self.audit.record(e);
        status(err)
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
        Ok(*self.index.get().versions())
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
        let resolved = match index.snapshot().resolve(&id.r#type, &id.value) {
            Ok(r) => r,
            Err(bad) => {
                let bad = unresolvable(bad);
                self.audit.record(
                    Entry::of(&request, Some(&who), "get_profile", "invalid")
                        .target(audit_identifier(&id.r#type, &id.value))
                        .detail(bad.clone()),
                );
                return Err(Status::invalid_argument(bad));
            }
        };
        let mut e = Entry::of(&request, Some(&who), "get_profile", "ok");
        let target = audit_identifier(&resolved.id_type, &resolved.value);
        // A row-filtered caller never learns that a profile outside its rows exists.
        let visible = resolved
            .profile
            .filter(|&i| index.snapshot().visible(i, who.rows.as_deref()));
        let shown = proto::identifier(&resolved.id_type, &resolved.value, who.pii);
        let Some(i) = visible else {
            e.status = "not_found".into();
            e.target = Some(target);
            e.rows = Some(0);
            self.audit.record(e);
            return Err(Status::not_found(format!(
                "no profile holds {}:{} (snapshot of identity_map version {})",
                shown.r#type,
                shown.value,
                index.versions().identity_map_version
            )));
        };
        let profile = index.snapshot().profile(i);
        e.target = Some(format!("{target} -> {}", profile.profile_id));
        e.rows = Some(1);
        self.audit.record(e);
        Ok(Response::new(wire::GetProfileReply {
            profile: index.encoded_profile(i, who.pii),
            identifier: Some(shown),
            merged_from: resolved.merged_from.unwrap_or_default(),
            snapshot: Some(*index.versions()),
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
            .map(|id| match index.snapshot().resolve(&id.r#type, &id.value) {
                Err(bad) => wire::ProfileResultReply {
                    identifier: Some(proto::identifier(&id.r#type, &id.value, who.pii)),
                    error: unresolvable(bad),
                    ..Default::default()
                },
                Ok(r) => {
                    let visible = r
                        .profile
                        .filter(|&i| index.snapshot().visible(i, who.rows.as_deref()));
                    wire::ProfileResultReply {
                        identifier: Some(proto::identifier(&r.id_type, &r.value, who.pii)),
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
            snapshot: Some(*index.versions()),
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
        let snapshot = index.snapshot();
        let segments: Vec<v1::Segment> = snapshot
            .segments()
            .iter()
            .map(|s| {
                // Sizes count only the caller's rows.
                let members = match rows {
                    None => s.size,
                    Some(_) => s
                        .members
                        .iter()
                        .filter(|&&i| snapshot.visible(i, rows))
                        .count() as i64,
                };
                proto::segment(s, members)
            })
            .collect();
        self.audit.record(
            Entry::of(&request, Some(&who), "list_segments", "ok").rows(segments.len() as i64),
        );
        Ok(Response::new(v1::ListSegmentsResponse {
            segments,
            snapshot: Some(*index.versions()),
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
        let snapshot = index.snapshot();
        let Some(entry) = snapshot.segment(segment) else {
            return Err(unknown_segment(segment, snapshot));
        };
        let id = identifier
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("`identifier` is required"))?;
        let resolved = snapshot
            .resolve(&id.r#type, &id.value)
            .map_err(|bad| Status::invalid_argument(unresolvable(bad)))?;
        let mut out = v1::CheckMembershipResponse {
            refresh_version: entry.refresh_version,
            ..v1::CheckMembershipResponse::default()
        };
        if let Some(i) = resolved
            .profile
            .filter(|&i| snapshot.visible(i, who.rows.as_deref()))
        {
            let p = snapshot.profile(i);
            out.profile_id = p.profile_id.clone();
            if let Some(m) = p.segments.iter().find(|m| &m.segment == segment) {
                out.member = true;
                out.since = Some(timestamp(m.since));
            }
        }
        self.audit.record(
            Entry::of(&request, Some(&who), "check_membership", "ok")
                .target(format!(
                    "{segment} {}",
                    audit_identifier(&resolved.id_type, &resolved.value)
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
        let Some(entry) = index.snapshot().segment(&segment) else {
            return Err(unknown_segment(&segment, index.snapshot()));
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
            let version = entry.refresh_version;
            let rows = who.rows.clone();
            let members: Vec<u32> = entry
                .members
                .iter()
                .copied()
                .filter(|&i| index.snapshot().visible(i, rows.as_deref()))
                .collect();
            let at = entry.refreshed_at.map(timestamp);
            let index = index.clone();
            Box::pin(futures::stream::iter(
                members
                    .chunks(CHUNK)
                    .map(|chunk| {
                        Ok(v1::StreamAudienceResponse {
                            changes: chunk
                                .iter()
                                .map(|&i| v1::AudienceChange {
                                    profile_id: index.snapshot().profile(i).profile_id.clone(),
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
                                let s = index.snapshot();
                                s.profile_of(&change.profile_id)
                                    .is_some_and(|i| s.visible(i, Some(&rows)))
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

fn unknown_segment(name: &str, snapshot: &tessera_identity::Snapshot) -> Status {
    let known: Vec<&str> = snapshot
        .segments()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    Status::not_found(if known.is_empty() {
        format!("unknown segment {name:?}: no segment has been refreshed yet")
    } else {
        format!("unknown segment {name:?}; known: {}", known.join(", "))
    })
}

/// Entries and exits of `segment` in refreshes after `since`, in (refresh_version,
/// change, profile_id) order, as they are read from the lake.
async fn changes_since(
    engine: &Engine,
    segment: &str,
    since: i64,
) -> Result<AudienceStream, Status> {
    use tessera_segments::audience::ChangeKind;
    let changes = tessera_segments::audience::change_stream(engine, segment, since)
        .await
        .map_err(|e| crate::status::segments(&e))?;
    Ok(Box::pin(changes.map(|chunk| {
        let chunk = chunk.map_err(|e| crate::status::segments(&e))?;
        Ok(v1::StreamAudienceResponse {
            changes: chunk
                .into_iter()
                .map(|c| v1::AudienceChange {
                    profile_id: c.profile_id,
                    kind: match c.change {
                        ChangeKind::Entered => v1::audience_change::Kind::Entered,
                        ChangeKind::Exited => v1::audience_change::Kind::Exited,
                    } as i32,
                    refresh_version: c.refresh_version,
                    at: Some(timestamp(c.changed_at)),
                    merged_into: c.merged_into.unwrap_or_default(),
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
                ..tessera_identity::StitchOptions::default()
            },
            &(),
        )
        .await;
        let mut e = Entry::of(&request, Some(&who), "stitch", "ok");
        let report = match report {
            Ok(r) => r,
            Err(err) => return Err(self.failed(e, &err, crate::status::identity)),
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
        let v1::RefreshSegmentsRequest { segments, force } = request.get_ref().clone();
        let report = tessera_segments::refresh::refresh_project(
            &self.engine,
            &options.project_dir,
            &tessera_segments::refresh::RefreshOptions::now(
                segments.clone(),
                force,
                options.as_of_micros,
                format!("tessera.v1 AdminService ({})", who.user),
            ),
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
            Err(err) => return Err(self.failed(e, &err, crate::status::segments)),
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
                    status: o.status.as_str().into(),
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

    async fn run_syncs(
        &self,
        request: Request<v1::RunSyncsRequest>,
    ) -> Result<Response<v1::RunSyncsResponse>, Status> {
        let who = self.caller(&request, "run_syncs", Access::Admin)?;
        let activation = self.activation()?;
        let names = request.get_ref().syncs.clone();
        let mut e = Entry::of(&request, Some(&who), "run_syncs", "ok");
        e.target = Some(if names.is_empty() {
            "all".into()
        } else {
            names.join(",")
        });
        let planned = match activation.plan(&self.engine, &names, false).await {
            Ok(p) => p,
            Err(err) => return Err(self.failed(e, &err, crate::status::activate)),
        };
        let syncs: Vec<v1::PlannedSync> = planned
            .iter()
            .map(|p| planned_sync(&p.sync, p.plan.as_ref(), p.written))
            .collect();
        e.rows = Some(syncs.iter().map(|s| s.members).sum());
        e.detail = Some(
            syncs
                .iter()
                .filter(|s| s.planned)
                .map(|s| format!("{} run {}: {} members", s.sync, s.run, s.members))
                .collect::<Vec<_>>()
                .join("; "),
        );
        self.audit.record(e);
        Ok(Response::new(v1::RunSyncsResponse { syncs }))
    }

    async fn activation_status(
        &self,
        request: Request<v1::ActivationStatusRequest>,
    ) -> Result<Response<v1::ActivationStatusResponse>, Status> {
        let who = self.caller(&request, "activation_status", Access::Admin)?;
        let rows = tessera_activate::status(&self.engine)
            .await
            .map_err(|e| crate::status::activate(&e))?;
        let mut e = Entry::of(&request, Some(&who), "activation_status", "ok");
        e.rows = Some(rows.len() as i64);
        self.audit.record(e);
        Ok(Response::new(v1::ActivationStatusResponse {
            syncs: rows
                .into_iter()
                .map(|s| v1::SyncState {
                    sync: s.sync,
                    destination: s.destination,
                    segment: s.segment,
                    run: s.run,
                    to_version: s.to_version,
                    planned: s.planned as i64,
                    retrying: s.retrying as i64,
                    delivered: s.delivered as i64,
                    dead: s.dead as i64,
                    held: s.held as i64,
                    members_delivered: s.members_delivered as i64,
                    skipped: s.skipped as i64,
                    last_error: s.last_error.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn retry_syncs(
        &self,
        request: Request<v1::RetrySyncsRequest>,
    ) -> Result<Response<v1::RetrySyncsResponse>, Status> {
        let who = self.caller(&request, "retry_syncs", Access::Admin)?;
        let activation = self.activation()?;
        let sync = request.get_ref().sync.clone();
        let mut e = Entry::of(&request, Some(&who), "retry_syncs", "ok");
        e.target = Some(if sync.is_empty() {
            "all".into()
        } else {
            sync.clone()
        });
        let batches = match activation
            .retry(&self.engine, (!sync.is_empty()).then_some(sync.as_str()))
            .await
        {
            Ok(n) => n,
            Err(err) => return Err(self.failed(e, &err, crate::status::activate)),
        };
        e.rows = Some(batches as i64);
        self.audit.record(e);
        Ok(Response::new(v1::RetrySyncsResponse {
            batches: batches as i64,
        }))
    }

    async fn preview_sync(
        &self,
        request: Request<v1::PreviewSyncRequest>,
    ) -> Result<Response<v1::PreviewSyncResponse>, Status> {
        let who = self.caller(&request, "preview_sync", Access::Admin)?;
        let activation = self.activation()?;
        let v1::PreviewSyncRequest { sync, limit } = request.get_ref().clone();
        let limit = match limit {
            0 => 3,
            1..=100 => limit as usize,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "limit must be between 1 and 100 (0 for the default of 3), not {limit}"
                )));
            }
        };
        let mut e = Entry::of(&request, Some(&who), "preview_sync", "ok");
        e.target = Some(sync.clone());
        let plan = match activation.preview(&self.engine, &sync).await {
            Ok(p) => p,
            Err(err) => return Err(self.failed(e, &err, crate::status::activate)),
        };
        // `preview` found the sync, so it is in the map.
        let destination = activation
            .syncs()
            .get(&sync)
            .map(|s| s.destination.clone())
            .unwrap_or_default();
        let events = plan.as_ref().map_or_else(Vec::new, |p| {
            p.batches
                .iter()
                .flatten()
                .take(limit)
                .map(|m| {
                    tessera_activate::webhook::event(
                        &sync,
                        &p.destination,
                        &p.segment,
                        m,
                        None,
                        None,
                    )
                    .to_string()
                })
                .collect()
        });
        e.rows = Some(plan.as_ref().map_or(0, |p| p.members() as i64));
        self.audit.record(e);
        Ok(Response::new(v1::PreviewSyncResponse {
            plan: Some(planned_sync(&sync, plan.as_ref(), false)),
            pending: plan.is_some(),
            destination,
            events,
        }))
    }

    async fn resend_sync(
        &self,
        request: Request<v1::ResendSyncRequest>,
    ) -> Result<Response<v1::ResendSyncResponse>, Status> {
        let who = self.caller(&request, "resend_sync", Access::Admin)?;
        let activation = self.activation()?;
        let v1::ResendSyncRequest { sync, run } = request.get_ref().clone();
        if run < 0 {
            return Err(Status::invalid_argument(format!(
                "run must be a delivered run (1, 2, ...) or 0 for the latest, not {run}"
            )));
        }
        let mut e = Entry::of(&request, Some(&who), "resend_sync", "ok");
        e.target = Some(sync.clone());
        let batches = match activation
            .resend(&self.engine, &sync, (run > 0).then_some(run))
            .await
        {
            Ok(n) => n,
            Err(err) => return Err(self.failed(e, &err, crate::status::activate)),
        };
        e.rows = Some(batches as i64);
        self.audit.record(e);
        Ok(Response::new(v1::ResendSyncResponse {
            batches: batches as i64,
        }))
    }
}

/// A sync's plan as `tessera.v1` shows it; `None` is a sync that is up to date.
fn planned_sync(
    sync: &str,
    plan: Option<&tessera_activate::Plan>,
    written: bool,
) -> v1::PlannedSync {
    match plan {
        Some(x) => v1::PlannedSync {
            sync: sync.to_string(),
            planned: written,
            run: x.run,
            from_version: x.from_version,
            to_version: x.to_version,
            members: x.members() as i64,
            batches: x.batches.len() as i64,
            skipped: x.skipped as i64,
            held: x.held,
        },
        None => v1::PlannedSync {
            sync: sync.to_string(),
            ..v1::PlannedSync::default()
        },
    }
}
