//! Delivering planned batches, one destination at a time and each on its own: a slow or
//! failing destination never holds up another (every destination has its own worker,
//! its own concurrency and its own rate limit).
//!
//! A worker takes the due batches of its destination — of each sync, only the earliest
//! run that is not finished (a run's batches go out after every batch of the run before
//! it is delivered or dead; a held run blocks its sync) — up to `concurrency` at once,
//! each with its members' *current* traits (the sync's `fields` query, read at send
//! time). Every attempt is recorded: 2xx `delivered`; a final 4xx `dead` at once;
//! anything else `retry` after a backoff (or the server's `Retry-After`), until the
//! destination's attempts and window are both used up, then `dead`. Delivery is at least
//! once: a crash between an answer and its record sends the batch again, with the same
//! `webhook-id` and `messageId`s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::prelude::{SessionContext, col, lit};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value};
use tessera_core::config::SyncSection;
use tessera_core::schema::PROFILES;
use tessera_engine::Engine;
use tessera_engine::columns::strings;

use crate::destination::Destination;
use crate::error::{ActivateError, Result};
use crate::ledger::{BatchState, LedgerWriter, Status};
use crate::webhook::{self, Attempt};

/// How long a worker keeps going.
#[derive(Debug, Clone, Copy)]
pub struct Deliver {
    /// Keep waiting for retries due within this long (zero: only what is due now).
    pub wait: Duration,
}

/// What one worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    pub destination: String,
    pub batches: u64,
    pub members: u64,
    pub attempts: u64,
    pub retries: u64,
    pub dead: u64,
    /// Batches still waiting for a retry when the worker stopped.
    pub pending: u64,
}

impl Delivered {
    /// Counts one batch of `members` members that came to `status`.
    pub(crate) fn count(&mut self, status: Status, members: usize) {
        match status {
            Status::Delivered => {
                self.batches += 1;
                self.members += members as u64;
            }
            Status::Dead => self.dead += 1,
            _ => self.retries += 1,
        }
    }
}

/// Whether `b` is due now: planned, or a retry whose time has come.
pub(crate) fn due(b: &BatchState, now: i64) -> bool {
    match b.status {
        Status::Planned => true,
        Status::Retry => b.next_attempt_at.is_none_or(|t| t <= now),
        Status::Delivered | Status::Dead | Status::Held => false,
    }
}

/// Of each sync, the earliest run not finished.
pub(crate) fn open_runs(batches: &[BatchState]) -> HashMap<String, i64> {
    let mut open: HashMap<String, i64> = HashMap::new();
    for b in batches.iter().filter(|b| !b.status.finished()) {
        let e = open.entry(b.sync.clone()).or_insert(b.run);
        *e = (*e).min(b.run);
    }
    open
}

/// The traits of `profiles` for a sync: its `fields` query's columns (by `profile_id`)
/// and each profile's golden `user_id`.
async fn traits(
    ctx: &SessionContext,
    sync: &str,
    section: &SyncSection,
    profiles: &[String],
) -> Result<(HashMap<String, Map<String, Value>>, HashMap<String, String>)> {
    let ids: Vec<_> = profiles.iter().map(|p| lit(p.as_str())).collect();
    let rows = |batches: Vec<RecordBatch>| -> Result<Vec<Map<String, Value>>> {
        let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
        for b in &batches {
            writer.write(b)?;
        }
        writer.finish()?;
        let bytes = writer.into_inner();
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ActivateError::Fields {
            sync: sync.to_owned(),
            message: e.to_string(),
        })?;
        Ok(match value {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|v| match v {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
    };
    let mut fields = HashMap::new();
    if let Some(query) = &section.fields {
        let bad = |message: String| ActivateError::Fields {
            sync: sync.to_owned(),
            message,
        };
        let df = crate::plan::fields_frame(ctx, sync, query).await?;
        if df
            .schema()
            .field_with_unqualified_name("profile_id")
            .is_err()
        {
            return Err(bad("the query must return a profile_id column".into()));
        }
        let batches = df
            .filter(col("profile_id").in_list(ids.clone(), false))
            .map_err(|e| bad(e.strip_backtrace()))?
            .collect()
            .await
            .map_err(|e| bad(e.strip_backtrace()))?;
        for row in rows(batches)? {
            if let Some(Value::String(pid)) = row.get("profile_id") {
                fields.insert(pid.clone(), row);
            }
        }
    }
    let mut users = HashMap::new();
    if ctx.table_exist(PROFILES)? {
        let batches = ctx
            .table(PROFILES)
            .await?
            .filter(col("profile_id").in_list(ids, false))?
            .select_columns(&["profile_id", "user_id"])?
            .collect()
            .await?;
        for b in &batches {
            let (pid, user) = (strings(b, "profile_id")?, strings(b, "user_id")?);
            for r in 0..b.num_rows() {
                if user.is_valid(r) {
                    users.insert(pid.value(r).to_owned(), user.value(r).to_owned());
                }
            }
        }
    }
    Ok((fields, users))
}

/// Sends one batch (in parts no larger than the destination's byte cap, one after the
/// other); the attempt comes to the first part that fails, or delivered.
async fn attempt(
    client: &reqwest::Client,
    d: &Destination,
    b: &BatchState,
    events: Vec<Value>,
) -> Attempt {
    let parts = webhook::bodies(
        &events,
        d.max_batch_bytes,
        chrono::Utc::now().timestamp_micros(),
    );
    let many = parts.len() > 1;
    let mut last = Attempt::Delivered { code: 200 };
    for (i, body) in parts.into_iter().enumerate() {
        let id = if many {
            format!("{}.{i}", b.batch_id)
        } else {
            b.batch_id.clone()
        };
        last = webhook::post(client, d, &id, body).await;
        if !matches!(last, Attempt::Delivered { .. }) {
            return last;
        }
    }
    last
}

/// One attempt in flight.
type Flight<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (BatchState, Attempt)> + Send + 'a>>;

/// Sends an ad platform's requests of one batch, one after the other (a platform job
/// takes no concurrent modification); the attempt comes to the first that fails.
async fn send_requests(
    client: &reqwest::Client,
    d: &Destination,
    b: &BatchState,
    requests: Vec<crate::ads::Request>,
) -> Attempt {
    let many = requests.len() > 1;
    let mut last = Attempt::Delivered { code: 200 };
    for (i, r) in requests.into_iter().enumerate() {
        let id = if many {
            format!("{}.{i}", b.batch_id)
        } else {
            b.batch_id.clone()
        };
        let method = match r.method {
            crate::ads::Method::Post => reqwest::Method::POST,
            crate::ads::Method::Delete => reqwest::Method::DELETE,
        };
        last = webhook::send(client, d, method, &id, r.body).await;
        if !matches!(last, Attempt::Delivered { .. }) {
            return last;
        }
    }
    last
}

/// Delivers the due batches of destination `d` until nothing is due within
/// `options.wait`; attempts go to `ledger`, which is flushed before returning.
pub async fn deliver(
    engine: &Engine,
    d: &Destination,
    syncs: &std::collections::BTreeMap<String, SyncSection>,
    ledger: &Arc<LedgerWriter>,
    client: &reqwest::Client,
    options: Deliver,
) -> Result<Delivered> {
    if let Some(target) = &d.file {
        return crate::file::deliver(engine, d, target, syncs, ledger, options).await;
    }
    let mut report = Delivered {
        destination: d.name.clone(),
        ..Delivered::default()
    };
    let mut batches = crate::ledger::read(engine, Some(&d.name)).await?;
    let deadline = Instant::now() + options.wait;
    let mut ctx = engine.session().await?;
    let mut ctx_at = Instant::now();
    let mut in_flight: FuturesUnordered<Flight<'_>> = FuturesUnordered::new();
    let mut flying: HashSet<String> = HashSet::new();
    let mut last_start: Option<Instant> = None;
    loop {
        let now = chrono::Utc::now().timestamp_micros();
        let open = open_runs(&batches);
        // Start what is due, up to the concurrency.
        for b in batches.iter() {
            if in_flight.len() >= d.concurrency {
                break;
            }
            if flying.contains(&b.batch_id) || open.get(&b.sync) != Some(&b.run) || !due(b, now) {
                continue;
            }
            let Some(section) = syncs.get(&b.sync) else {
                continue;
            };
            if let (Some(gap), Some(at)) = (d.min_interval, last_start) {
                let wait = gap.saturating_sub(at.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            if ctx_at.elapsed() > Duration::from_secs(30) {
                ctx = engine.session().await?;
                ctx_at = Instant::now();
            }
            if let Some(platform) = d.platform {
                let requests = crate::ads::batch_requests(platform, &b.members, d.batch_size);
                flying.insert(b.batch_id.clone());
                last_start = Some(Instant::now());
                let batch = b.clone();
                in_flight.push(Box::pin(async move {
                    let result = send_requests(client, d, &batch, requests).await;
                    (batch, result)
                }) as Flight<'_>);
                continue;
            }
            let profiles: Vec<String> = b.members.iter().map(|m| m.profile_id.clone()).collect();
            let (fields, users) = traits(&ctx, &b.sync, section, &profiles).await?;
            let events: Vec<Value> = b
                .members
                .iter()
                .map(|m| {
                    webhook::event(
                        &b.sync,
                        &d.name,
                        &b.segment,
                        m,
                        users.get(&m.profile_id).map(String::as_str),
                        fields.get(&m.profile_id),
                    )
                })
                .collect();
            flying.insert(b.batch_id.clone());
            last_start = Some(Instant::now());
            let batch = b.clone();
            in_flight.push(Box::pin(async move {
                let result = attempt(client, d, &batch, events).await;
                (batch, result)
            }));
        }
        if in_flight.is_empty() {
            // Nothing can start now: wait for the earliest retry, if it is due in time.
            let now = chrono::Utc::now().timestamp_micros();
            let open = open_runs(&batches);
            let next = batches
                .iter()
                .filter(|b| open.get(&b.sync) == Some(&b.run) && b.status == Status::Retry)
                .filter_map(|b| b.next_attempt_at)
                .min();
            let Some(t) = next else { break };
            let wait = Duration::from_micros((t - now).max(0) as u64);
            if Instant::now() + wait > deadline {
                break;
            }
            tokio::time::sleep(wait).await;
            continue;
        }
        // One attempt finished: record it and update the batch.
        let Some((mut batch, result)) = in_flight.next().await else {
            continue;
        };
        flying.remove(&batch.batch_id);
        report.attempts += 1;
        let attempt_no = batch.attempt + 1;
        let now = chrono::Utc::now().timestamp_micros();
        let tried_for = batch.first_try_at.map_or(Duration::ZERO, |t| {
            Duration::from_micros((now - t).max(0) as u64)
        });
        let (status, code, message, next) = match result {
            Attempt::Delivered { code } => (Status::Delivered, Some(i64::from(code)), None, None),
            Attempt::Final { code, message } => {
                (Status::Dead, Some(i64::from(code)), Some(message), None)
            }
            Attempt::Retry {
                code,
                retry_after,
                message,
            } => {
                if d.retry.exhausted(batch.attempts_since_plan + 1, tried_for) {
                    (Status::Dead, code.map(i64::from), Some(message), None)
                } else {
                    let jitter = (now.rem_euclid(1000)) as f64 / 1000.0;
                    let wait = d
                        .retry
                        .backoff(batch.attempts_since_plan + 1, retry_after, jitter);
                    (
                        Status::Retry,
                        code.map(i64::from),
                        Some(message),
                        Some(now + wait.as_micros() as i64),
                    )
                }
            }
        };
        report.count(status, batch.members.len());
        ledger
            .record(batch.row(status, attempt_no, code, message.clone(), next))
            .await;
        batch.status = status;
        batch.attempt = attempt_no;
        batch.attempts_since_plan += 1;
        batch.first_try_at.get_or_insert(now);
        batch.next_attempt_at = next;
        batch.code = code;
        batch.message = message;
        if let Some(slot) = batches.iter_mut().find(|b| b.batch_id == batch.batch_id) {
            *slot = batch;
        }
    }
    report.pending = batches.iter().filter(|b| b.status == Status::Retry).count() as u64;
    ledger.flush().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Change, Member};

    fn state(sync: &str, run: i64, seq: i64, status: Status) -> BatchState {
        BatchState {
            sync: sync.into(),
            destination: "d".into(),
            segment: "g".into(),
            run,
            from_version: 0,
            to_version: run,
            batch_id: format!("{sync}-{run}-{seq}"),
            seq,
            members: vec![Member {
                profile_id: "p".into(),
                change: Change::Entered,
                refresh_version: run,
                changed_at: 0,
                merged_into: None,
                identifiers: None,
            }],
            status,
            attempt: 0,
            attempts_since_plan: 0,
            first_try_at: None,
            next_attempt_at: Some(100),
            code: None,
            message: None,
            updated_at: 0,
            skipped: 0,
        }
    }

    #[test]
    fn a_run_waits_for_the_run_before_it() {
        let batches = vec![
            state("a", 1, 0, Status::Delivered),
            state("a", 1, 1, Status::Retry),
            state("a", 2, 0, Status::Planned),
            state("b", 1, 0, Status::Dead),
            state("b", 2, 0, Status::Planned),
            state("c", 1, 0, Status::Held),
        ];
        let open = open_runs(&batches);
        assert_eq!(open["a"], 1, "run 2 waits for run 1's retry");
        assert_eq!(open["b"], 2, "a dead batch finishes its run");
        assert_eq!(open["c"], 1, "a held run blocks its sync");
        assert!(!due(&batches[1], 50) && due(&batches[1], 100));
        assert!(due(&batches[2], 0) && !due(&batches[5], 0));
    }
}
