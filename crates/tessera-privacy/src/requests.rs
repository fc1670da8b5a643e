//! Privacy requests and their states: the `privacy_requests` table, one row per state
//! a request reaches (`received` → `running` → `finished` | `partial` | `failed`), its
//! latest row being its state, with a deadline 30 days after receipt.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use tessera_core::privacy::REQUEST_DEADLINE_DAYS;
use tessera_core::schema::PRIVACY_REQUESTS;
use tessera_engine::Engine;
use tessera_lake::CommitNote;

use crate::{PrivacyError, Result, append_rows, df, json_rows, now_micros};

/// One request at one state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub request_id: String,
    /// `erase`, `export`, `suppress` or `unsuppress`.
    pub kind: String,
    pub state: String,
    /// When this state was reached (µs since the epoch).
    pub at: i64,
    pub received_at: i64,
    pub deadline: i64,
    /// `[{"id_type": …, "hash": …}]`.
    pub subjects: serde_json::Value,
    /// Profile ids the subjects resolved to.
    pub profiles: Vec<String>,
    pub counts: Option<serde_json::Value>,
    pub versions: Option<serde_json::Value>,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub actor: String,
}

impl Request {
    /// A request received now.
    pub fn received(
        kind: &str,
        subjects: &[(String, String)],
        profiles: Vec<String>,
        reason: Option<String>,
        actor: &str,
    ) -> Result<Request> {
        let now = now_micros();
        let id = tessera_core::auth::random_token()
            .map_err(|e| PrivacyError::io("drawing a request id", e))?;
        Ok(Request {
            request_id: format!("pr-{}", &id[..16]),
            kind: kind.to_owned(),
            state: "received".into(),
            at: now,
            received_at: now,
            deadline: now + REQUEST_DEADLINE_DAYS * 86_400_000_000,
            subjects: serde_json::Value::Array(
                subjects
                    .iter()
                    .map(|(t, h)| serde_json::json!({"id_type": t, "hash": h}))
                    .collect(),
            ),
            profiles,
            counts: None,
            versions: None,
            reason,
            error: None,
            actor: actor.to_owned(),
        })
    }

    /// The same request at `state`, now.
    pub fn at_state(&self, state: &str) -> Request {
        Request {
            state: state.to_owned(),
            at: now_micros(),
            ..self.clone()
        }
    }

    /// Whole days left before the deadline (negative: overdue).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.deadline - now).div_euclid(86_400_000_000)
    }

    /// Whether the request is done (finished, partial or failed).
    pub fn is_done(&self) -> bool {
        matches!(self.state.as_str(), "finished" | "partial" | "failed")
    }

    fn row(&self) -> serde_json::Value {
        serde_json::json!({
            "request_id": self.request_id,
            "kind": self.kind,
            "state": self.state,
            "at": self.at,
            "received_at": self.received_at,
            "deadline": self.deadline,
            "subjects": self.subjects.to_string(),
            "profiles": serde_json::to_string(&self.profiles).unwrap_or_else(|_| "[]".into()),
            "counts": self.counts.as_ref().map(|c| c.to_string()),
            "versions": self.versions.as_ref().map(|c| c.to_string()),
            "reason": self.reason,
            "error": self.error,
            "actor": self.actor,
        })
    }
}

/// Records `request` at its state.
pub async fn record(engine: &Engine, request: &Request) -> Result<()> {
    append_rows(
        engine,
        PRIVACY_REQUESTS,
        &[request.row()],
        CommitNote::new("privacy_request", &request.actor)
            .detail("request_id", request.request_id.clone())
            .detail("state", request.state.clone()),
    )
    .await?;
    Ok(())
}

/// Every request at its latest state, oldest received first.
pub async fn list(engine: &Engine) -> Result<Vec<Request>> {
    let (ctx, versions) = engine.session_of_versions(&[PRIVACY_REQUESTS]).await?;
    if versions[0].is_none() {
        return Ok(Vec::new());
    }
    let batches: Vec<RecordBatch> = tessera_engine::execute(
        &ctx,
        &format!(
            "SELECT request_id, kind, state, CAST(at AS BIGINT) AS at, \
             CAST(received_at AS BIGINT) AS received_at, CAST(deadline AS BIGINT) AS deadline, \
             subjects, profiles, counts, versions, reason, error, actor \
             FROM {PRIVACY_REQUESTS} ORDER BY at"
        ),
        tessera_engine::Policy::ReadOnly,
    )
    .await?
    .try_collect()
    .await
    .map_err(df("reading privacy_requests"))?;
    let rows = json_rows(&batches, "reading privacy_requests")?;
    let mut latest: BTreeMap<String, Request> = BTreeMap::new();
    for mut row in rows {
        for key in ["subjects", "profiles", "counts", "versions"] {
            if let Some(text) = row.get(key).and_then(|v| v.as_str()).map(str::to_owned) {
                row[key] = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            }
        }
        for key in ["counts", "versions", "reason", "error"] {
            if row.get(key).is_none() {
                row[key] = serde_json::Value::Null;
            }
        }
        let r: Request = serde_json::from_value(row)
            .map_err(|e| PrivacyError::io("reading privacy_requests", e))?;
        latest.insert(r.request_id.clone(), r);
    }
    let mut out: Vec<Request> = latest.into_values().collect();
    out.sort_by(|a, b| (a.received_at, &a.request_id).cmp(&(b.received_at, &b.request_id)));
    Ok(out)
}
