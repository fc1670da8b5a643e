//! `PrivacyService` (role `admin` or `privacy`): erasure, data-subject export and the
//! list of privacy requests, through `tessera_privacy`. The audit log records each call
//! by its request id and row counts, never the identifiers asked for.

use tonic::{Request, Response, Status};

use super::{Access, Api, v1};
use crate::audit::Entry;

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl v1::privacy_service_server::PrivacyService for Api {
    async fn erase(
        &self,
        request: Request<v1::EraseRequest>,
    ) -> Result<Response<v1::EraseResponse>, Status> {
        let who = self.caller(&request, "privacy.erase", Access::Privacy)?;
        let options = self.admin_options()?;
        let v1::EraseRequest {
            subjects,
            reason,
            dry_run,
            no_suppress,
        } = request.get_ref().clone();
        let _one = self.admin_job.lock().await;
        let report = tessera_privacy::erase(
            &self.engine,
            &subjects,
            &tessera_privacy::EraseOptions {
                reason: (!reason.is_empty()).then_some(reason),
                dry_run,
                suppress: !no_suppress,
                actor: format!("tessera.v1 PrivacyService ({})", who.user),
                settle: options.settle,
                exports: self.file_exports(),
            },
        )
        .await;
        let mut e = Entry::of(&request, Some(&who), "privacy.erase", "ok");
        let report = match report {
            Ok(r) => r,
            Err(err) => return Err(self.failed(e, &err, crate::status::privacy)),
        };
        e.target = report.request_id.clone();
        e.rows = Some(report.rows() as i64);
        self.audit.record(e);
        if !dry_run {
            self.reload_index().await?;
        }
        Ok(Response::new(v1::EraseResponse {
            request_id: report.request_id.clone().unwrap_or_default(),
            state: report.state.clone(),
            tables: report
                .tables
                .iter()
                .map(|t| v1::TableRows {
                    table: t.table.clone(),
                    rows: t.rows as i64,
                    version_before: t.version_before.unwrap_or(-1),
                    version_after: t.version_after.unwrap_or(-1),
                })
                .collect(),
            profiles: report.profiles as i64,
            identifiers: report.identifiers as i64,
            unknown: report
                .unknown
                .iter()
                .map(|s| format!("{}:{}", s.id_type, s.value))
                .collect(),
            suppressed: report.suppressed as i64,
            files_removed: report.expunged.iter().map(|x| x.files as i64).sum(),
            log_entries_removed: report.expunged.iter().map(|x| x.log_entries as i64).sum(),
        }))
    }

    async fn export(
        &self,
        request: Request<v1::ExportRequest>,
    ) -> Result<Response<v1::ExportResponse>, Status> {
        let who = self.caller(&request, "privacy.export", Access::Privacy)?;
        let dir = tempfile::tempdir()
            .map_err(|e| Status::internal(format!("making a folder for the export: {e}")))?;
        let out = dir.path().join("export");
        let report = tessera_privacy::export(
            &self.engine,
            &request.get_ref().subjects,
            &out.to_string_lossy(),
            &format!("tessera.v1 PrivacyService ({})", who.user),
        )
        .await;
        let mut e = Entry::of(&request, Some(&who), "privacy.export", "ok");
        let report = match report {
            Ok(r) => r,
            Err(err) => return Err(self.failed(e, &err, crate::status::privacy)),
        };
        let bundle = std::fs::read(out.join("bundle.json"))
            .map_err(|e| Status::internal(format!("reading the export bundle: {e}")))?;
        e.target = Some(report.request_id.clone());
        e.rows = Some(report.counts.values().sum::<u64>() as i64);
        self.audit.record(e);
        Ok(Response::new(v1::ExportResponse {
            request_id: report.request_id,
            counts: report
                .counts
                .into_iter()
                .map(|(k, v)| (k, v as i64))
                .collect(),
            bundle_json: bundle,
        }))
    }

    async fn list_requests(
        &self,
        request: Request<v1::ListPrivacyRequestsRequest>,
    ) -> Result<Response<v1::ListPrivacyRequestsResponse>, Status> {
        let who = self.caller(&request, "privacy.list", Access::Privacy)?;
        let list = tessera_privacy::requests::list(&self.engine).await;
        let mut e = Entry::of(&request, Some(&who), "privacy.list", "ok");
        let list = match list {
            Ok(l) => l,
            Err(err) => return Err(self.failed(e, &err, crate::status::privacy)),
        };
        e.rows = Some(list.len() as i64);
        self.audit.record(e);
        let now = chrono::Utc::now().timestamp_micros();
        Ok(Response::new(v1::ListPrivacyRequestsResponse {
            requests: list
                .iter()
                .map(|r| v1::PrivacyRequest {
                    request_id: r.request_id.clone(),
                    kind: r.kind.clone(),
                    state: r.state.clone(),
                    received_at: rfc3339(r.received_at),
                    deadline: rfc3339(r.deadline),
                    days_left: if r.is_done() { 0 } else { r.days_left(now) },
                    subjects: r.subjects.as_array().map_or(0, |a| a.len() as i64),
                    error: r.error.clone().unwrap_or_default(),
                })
                .collect(),
        }))
    }
}
