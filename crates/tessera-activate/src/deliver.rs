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

use datafusion::arrow::array::Array;
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
fn due(b: &BatchState, now: i64) -> bool {
    match b.status {
        Status::Planned => true,
        Status::Retry => b.next_attempt_at.is_none_or(|t| t <= now),
        Status::Delivered | Status::Dead | Status::Held => false,
    }
}

/// Of each sync, the earliest run not finished.
fn open_runs(batches: &[BatchState]) -> HashMap<String, i64> {
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
    let mut fields = HashMap::new();
    if let Some(query) = &section.fields {
        let bad = |message: String| ActivateError::Fields {
            sync: sync.to_owned(),
            message,
        };
        let df = crate::fields::fields_frame(ctx, sync, query).await?;
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
        for row in crate::fields::json_rows(&batches)? {
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
    let requests = parts.into_iter().map(|body| (reqwest::Method::POST, body));
    send_in_order(client, d, b, requests.collect()).await
}

/// Sends the requests of one batch one after the other (a part id `BATCH.i` each when
/// there are several); the attempt comes to the first that fails, or delivered.
async fn send_in_order(
    client: &reqwest::Client,
    d: &Destination,
    b: &BatchState,
    requests: Vec<(reqwest::Method, Vec<u8>)>,
) -> Attempt {
    let many = requests.len() > 1;
    let mut last = Attempt::Delivered { code: 200 };
    for (i, (method, body)) in requests.into_iter().enumerate() {
        let id = if many {
            format!("{}.{i}", b.batch_id)
        } else {
            b.batch_id.clone()
        };
        last = webhook::send(client, d, method, &id, body).await;
        if !matches!(last, Attempt::Delivered { .. }) {
            return last;
        }
    }
    last
}

/// Sleeps until the earliest retry of an open run, if it is due before `deadline`;
/// `false` when there is none in time.
async fn wait_for_retry(batches: &[BatchState], deadline: Instant) -> bool {
    let open = open_runs(batches);
    let next = batches
        .iter()
        .filter(|b| open.get(&b.sync) == Some(&b.run) && b.status == Status::Retry)
        .filter_map(|b| b.next_attempt_at)
        .min();
    let Some(t) = next else { return false };
    let wait = Duration::from_micros((t - chrono::Utc::now().timestamp_micros()).max(0) as u64);
    if Instant::now() + wait > deadline {
        return false;
    }
    tokio::time::sleep(wait).await;
    true
}

/// One attempt in flight.
type Flight<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (BatchState, Attempt)> + Send + 'a>>;

/// Sends an ad platform's requests of one batch, one after the other (a platform job
/// takes no concurrent modification).
async fn send_requests(
    client: &reqwest::Client,
    d: &Destination,
    b: &BatchState,
    requests: Vec<crate::ads::Request>,
) -> Attempt {
    let requests = requests.into_iter().map(|r| {
        let method = match r.method {
            crate::ads::Method::Post => reqwest::Method::POST,
            crate::ads::Method::Delete => reqwest::Method::DELETE,
        };
        (method, r.body)
    });
    send_in_order(client, d, b, requests.collect()).await
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
        return deliver_files(engine, d, target, syncs, ledger, options).await;
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
            if !wait_for_retry(&batches, deadline).await {
                break;
            }
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

/// Delivers the due runs of file destination `d`, one run at a time, until nothing is
/// due within `options.wait`.
async fn deliver_files(
    engine: &Engine,
    d: &Destination,
    target: &crate::file::Target,
    syncs: &std::collections::BTreeMap<String, SyncSection>,
    ledger: &Arc<LedgerWriter>,
    options: Deliver,
) -> Result<Delivered> {
    let mut report = Delivered {
        destination: d.name.clone(),
        ..Delivered::default()
    };
    let started = Instant::now();
    let mut batches = crate::ledger::read(engine, Some(&d.name)).await?;
    tracing::debug!(destination = %d.name, batches = batches.len(), "ledger read in {:?}", started.elapsed());
    let deadline = Instant::now() + options.wait;
    loop {
        let now = chrono::Utc::now().timestamp_micros();
        let mut open: Vec<(String, i64)> = open_runs(&batches).into_iter().collect();
        open.sort();
        let mut started = false;
        for (sync, run) in open {
            let Some(section) = syncs.get(&sync) else {
                continue;
            };
            let of_run: Vec<&BatchState> = batches
                .iter()
                .filter(|b| b.sync == sync && b.run == run && b.status != Status::Dead)
                .collect();
            let pending: Vec<&BatchState> = of_run
                .iter()
                .copied()
                .filter(|b| !b.status.finished())
                .collect();
            if pending.is_empty() || !pending.iter().all(|b| due(b, now)) {
                continue;
            }
            started = true;
            let result =
                crate::file::write_run(engine, target, &d.name, &sync, section, &of_run).await;
            report.attempts += 1;
            let now = chrono::Utc::now().timestamp_micros();
            let lead = pending[0];
            let tried_for = lead.first_try_at.map_or(Duration::ZERO, |t| {
                Duration::from_micros((now - t).max(0) as u64)
            });
            let (status, message, next) = match &result {
                Ok(w) => {
                    tracing::info!(
                        destination = %d.name, sync = %sync, run, rows = w.rows, parts = w.parts,
                        folder = %w.folder, "export written"
                    );
                    (Status::Delivered, None, None)
                }
                Err(f)
                    if !f.retry || d.retry.exhausted(lead.attempts_since_plan + 1, tried_for) =>
                {
                    (Status::Dead, Some(f.message.clone()), None)
                }
                Err(f) => {
                    let jitter = (now.rem_euclid(1000)) as f64 / 1000.0;
                    let wait = d.retry.backoff(lead.attempts_since_plan + 1, None, jitter);
                    (
                        Status::Retry,
                        Some(f.message.clone()),
                        Some(now + wait.as_micros() as i64),
                    )
                }
            };
            if let Some(m) = &message {
                tracing::warn!(destination = %d.name, sync = %sync, run, "export failed: {m}");
            }
            let ids: HashSet<String> = pending.iter().map(|b| b.batch_id.clone()).collect();
            for b in batches.iter_mut().filter(|b| ids.contains(&b.batch_id)) {
                let attempt_no = b.attempt + 1;
                ledger
                    .record(b.row(status, attempt_no, None, message.clone(), next))
                    .await;
                report.count(status, b.members.len());
                b.status = status;
                b.attempt = attempt_no;
                b.attempts_since_plan += 1;
                b.first_try_at.get_or_insert(now);
                b.next_attempt_at = next;
                b.message = message.clone();
            }
            // A run's outcome is committed before the next run is written.
            ledger.flush().await?;
        }
        if started {
            continue;
        }
        if !wait_for_retry(&batches, deadline).await {
            break;
        }
    }
    report.pending = batches.iter().filter(|b| b.status == Status::Retry).count() as u64;
    ledger.flush().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Change, Member};

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
