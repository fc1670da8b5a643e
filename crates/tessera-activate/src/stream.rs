//! Event streams (`kind = "event_stream"`): collected events forwarded to a webhook as
//! they are committed to `events` — all of them, or what the destination's `query`
//! selects and shapes.
//!
//! A stream keeps its place by `events` version. Each round takes the versions
//! committed since the last planned one, reads only the files they appended (not the
//! files compaction rearranged, nor those a delete or an erasure rewrote: their rows are
//! not new), runs the query over them (`events` is those files), orders the rows by
//! `message_id` and records the batches in `stream_deliveries` — before anything is sent,
//! in one commit carrying Delta transaction `tessera-stream-<destination>` = the version
//! reached, so that two planners never plan one range twice. Delivery is at least once,
//! in order: a batch is sent after every batch before it is delivered or dead, with the
//! same `webhook-id` on each attempt, signed like a webhook's, retried like one. A batch
//! is read again from the versions it names by each delivery round that sends it (the
//! planning round reuses what it read; events are not copied into the ledger), so a
//! crash or a retry sends the same events; an event erased in the meantime is not sent.
//!
//! An event whose Segment `integrations` object turns the destination off is not
//! forwarded: the destination's own key (its name in `tessera.toml`, case as written)
//! decides when present (`false` blocks; `true` or a settings object lets it through),
//! else `All` (absent: on) — `{"All": false, "firehose": true}` reaches `firehose` only.
//!
//! Each row becomes one JSON object: Tessera's event columns get Segment's names
//! (`message_id` → `messageId`, ...), JSON text columns (`properties`, `traits`,
//! `context`, `integrations`) become objects, the fields of `extra` return to the top
//! level, NULLs and `event_date` are left out; columns the query adds travel as named.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::prelude::col;
use serde_json::{Map, Value};
use tessera_core::schema::{self, EVENTS, STREAM_DELIVERIES};
use tessera_engine::Engine;
use tessera_engine::columns::{int64s, strings};

use crate::deliver::Delivered;
use crate::destination::Destination;
use crate::error::{ActivateError, Result};
use crate::ledger::Status;
use crate::webhook::{self, Attempt};

fn app(destination: &str) -> String {
    format!("tessera-stream-{destination}")
}

/// One row of `stream_deliveries`; a batch's state is its latest row.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamBatch {
    pub destination: String,
    pub from_version: i64,
    pub to_version: i64,
    pub seq: i64,
    pub batch_id: String,
    pub events: i64,
    pub attempt: i64,
    pub status: Status,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub at: i64,
    /// When the batch was planned (from its first row).
    pub planned_at: i64,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn batch_of(rows: &[StreamBatch]) -> Result<RecordBatch> {
    let text = |f: fn(&StreamBatch) -> Option<&str>| -> Arc<dyn Array> {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let int = |f: fn(&StreamBatch) -> Option<i64>| -> Arc<dyn Array> {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let time = |f: fn(&StreamBatch) -> Option<i64>| -> Arc<dyn Array> {
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    Ok(RecordBatch::try_new(
        schema::stream_deliveries_schema(),
        vec![
            text(|r| Some(&r.destination)),
            int(|r| Some(r.from_version)),
            int(|r| Some(r.to_version)),
            int(|r| Some(r.seq)),
            text(|r| Some(&r.batch_id)),
            int(|r| Some(r.events)),
            int(|r| Some(r.attempt)),
            text(|r| Some(r.status.as_str())),
            int(|r| r.code),
            text(|r| r.message.as_deref()),
            time(|r| r.next_attempt_at),
            time(|r| Some(r.at)),
        ],
    )?)
}

/// Appends rows to `stream_deliveries`; with a transaction, only if it is newer than
/// the one recorded (returns whether it wrote).
async fn append(
    engine: &Engine,
    rows: &[StreamBatch],
    operation: &str,
    actor: &str,
    transaction: Option<(&str, i64)>,
) -> Result<bool> {
    if rows.is_empty() {
        return Ok(false);
    }
    crate::ledger::append_batch(
        engine.lake(),
        STREAM_DELIVERIES,
        batch_of(rows)?,
        (operation, actor),
        transaction,
    )
    .await
}

/// Every batch of `destination`, each at its latest row, in delivery order.
pub async fn read(engine: &Engine, destination: &str) -> Result<Vec<StreamBatch>> {
    Ok(read_all(engine, Some(destination))
        .await?
        .remove(destination)
        .unwrap_or_default())
}

/// The batches of every stream (or of `only`), by destination, each at its latest
/// row, in delivery order.
async fn read_all(
    engine: &Engine,
    only: Option<&str>,
) -> Result<BTreeMap<String, Vec<StreamBatch>>> {
    let ctx = engine.session_of(&[STREAM_DELIVERIES]).await?;
    if !ctx.table_exist(STREAM_DELIVERIES)? {
        return Ok(BTreeMap::new());
    }
    let mut df = ctx.table(STREAM_DELIVERIES).await?;
    if let Some(d) = only {
        df = df.filter(col("destination").eq(datafusion::prelude::lit(d)))?;
    }
    let batches = df
        .select(vec![
            col("destination"),
            col("from_version"),
            col("to_version"),
            col("seq"),
            col("batch_id"),
            col("events"),
            col("attempt"),
            col("status"),
            col("code"),
            col("message"),
            datafusion::prelude::cast(
                col("next_attempt_at"),
                datafusion::arrow::datatypes::DataType::Int64,
            )
            .alias("next_attempt_at"),
            datafusion::prelude::cast(col("at"), datafusion::arrow::datatypes::DataType::Int64)
                .alias("at"),
        ])?
        .collect()
        .await?;
    let mut latest: BTreeMap<(String, i64, i64), StreamBatch> = BTreeMap::new();
    for b in &batches {
        let (dest, bid, status, message) = (
            strings(b, "destination")?,
            strings(b, "batch_id")?,
            strings(b, "status")?,
            strings(b, "message")?,
        );
        let i = |n: &str| int64s(b, n);
        let (from, to, seq, events, attempt, code, next, at) = (
            i("from_version")?,
            i("to_version")?,
            i("seq")?,
            i("events")?,
            i("attempt")?,
            i("code")?,
            i("next_attempt_at")?,
            i("at")?,
        );
        for r in 0..b.num_rows() {
            let row = StreamBatch {
                destination: dest.value(r).to_owned(),
                from_version: from.value(r),
                to_version: to.value(r),
                seq: seq.value(r),
                batch_id: bid.value(r).to_owned(),
                events: events.value(r),
                attempt: attempt.value(r),
                status: Status::parse(status.value(r)).unwrap_or(Status::Planned),
                code: code.is_valid(r).then(|| code.value(r)),
                message: message.is_valid(r).then(|| message.value(r).to_owned()),
                next_attempt_at: next.is_valid(r).then(|| next.value(r)),
                at: at.value(r),
                planned_at: at.value(r),
            };
            let key = (row.destination.clone(), row.from_version, row.seq);
            match latest.get_mut(&key) {
                Some(known) => {
                    let planned_at = known.planned_at.min(row.at);
                    if (row.attempt, row.at) >= (known.attempt, known.at) {
                        *known = row;
                    }
                    known.planned_at = planned_at;
                }
                None => {
                    latest.insert(key, row);
                }
            }
        }
    }
    let mut out: BTreeMap<String, Vec<StreamBatch>> = BTreeMap::new();
    for ((destination, _, _), b) in latest {
        out.entry(destination).or_default().push(b);
    }
    Ok(out)
}

/// Tessera's event columns under their Segment names.
const SEGMENT_NAMES: &[(&str, &str)] = &[
    ("message_id", "messageId"),
    ("user_id", "userId"),
    ("anonymous_id", "anonymousId"),
    ("previous_id", "previousId"),
    ("group_id", "groupId"),
    ("received_at", "receivedAt"),
    ("sent_at", "sentAt"),
];

/// Columns holding JSON object text.
const JSON_COLUMNS: &[&str] = &["properties", "traits", "context", "integrations"];

/// One result row as the event a receiver gets.
fn segment_event(row: Map<String, Value>) -> Value {
    let mut out = Map::new();
    let mut extra = None;
    for (k, v) in row {
        if v.is_null() || k == "event_date" {
            continue;
        }
        if k == "extra" {
            extra = v
                .as_str()
                .and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok());
            continue;
        }
        let v = match (&v, JSON_COLUMNS.contains(&k.as_str())) {
            (Value::String(t), true) => serde_json::from_str(t).unwrap_or(v),
            _ => v,
        };
        let name = SEGMENT_NAMES
            .iter()
            .find(|(ours, _)| *ours == k)
            .map_or(k, |(_, theirs)| (*theirs).to_owned());
        out.insert(name, v);
    }
    for (k, v) in extra.into_iter().flatten() {
        out.entry(k).or_insert(v);
    }
    Value::Object(out)
}

/// Whether an event's Segment `integrations` object (JSON text) lets it go to the
/// destination `name` (see the module docs).
fn integration_enabled(integrations: Option<&str>, name: &str) -> bool {
    let Some(Value::Object(map)) = integrations.and_then(|t| serde_json::from_str(t).ok()) else {
        return true;
    };
    let on = |v: &Value| !matches!(v, Value::Bool(false));
    match map.get(name) {
        Some(v) => on(v),
        None => map.get("All").is_none_or(on),
    }
}

/// `integration_enabled` over a column of `integrations` texts.
fn integrations_allow(name: &str) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{AsArray as _, BooleanArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let name = name.to_owned();
    create_udf(
        "tessera_integration_enabled",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let texts = match &args[0] {
                ColumnarValue::Array(a) => a.clone(),
                ColumnarValue::Scalar(s) => s.to_array()?,
            };
            let texts = texts.as_string::<i32>();
            let out: BooleanArray = texts
                .iter()
                .map(|t| Some(integration_enabled(t, &name)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// The events of versions `(from, to]` the destination's query selects, in
/// `message_id` order.
async fn events_of(engine: &Engine, d: &Destination, from: i64, to: i64) -> Result<Vec<Value>> {
    let lake = engine.lake();
    let bad = |message: String| ActivateError::BadDestination {
        key: format!("destinations.{}.query", d.name),
        message,
    };
    let changes = lake
        .changes_between(EVENTS, from.max(0) as u64, to.max(0) as u64)
        .await?
        .ok_or_else(|| {
            bad(format!(
                "the log of events no longer holds versions {}..={to} (cleaned up after its retention): the stream cannot read them",
                from + 1
            ))
        })?;
    let table = lake.open_version(EVENTS, to.max(0) as u64).await?;
    let ctx = engine.session_of(&[EVENTS]).await?;
    tessera_engine::register_appended_events(&ctx, lake, &table, &changes, &changes.rewrites)
        .await?;
    // The query sees only the events their `integrations` let go to this destination.
    let allowed = ctx
        .table(EVENTS)
        .await
        .and_then(|events| {
            events.filter(
                integrations_allow(&d.name).call(vec![datafusion::prelude::cast(
                    col("integrations"),
                    datafusion::arrow::datatypes::DataType::Utf8,
                )]),
            )
        })
        .map_err(|e| bad(e.strip_backtrace()))?;
    ctx.deregister_table(EVENTS)
        .and_then(|_| ctx.register_table(EVENTS, allowed.into_view()))
        .map_err(|e| bad(e.strip_backtrace()))?;
    let query = d.query.as_deref().unwrap_or("SELECT * FROM events");
    let df = tessera_engine::policy::plan(&ctx, query, tessera_engine::Policy::ReadOnly)
        .await
        .map_err(|e| bad(e.to_string()))?;
    if df
        .schema()
        .field_with_unqualified_name("message_id")
        .is_err()
    {
        return Err(bad(
            "the query must return the events' message_id (the receiver's idempotency key)".into(),
        ));
    }
    let batches = df
        .sort(vec![col("message_id").sort(true, true)])
        .map_err(|e| bad(e.strip_backtrace()))?
        .collect()
        .await
        .map_err(|e| bad(e.strip_backtrace()))?;
    Ok(crate::fields::json_rows(&batches)?
        .into_iter()
        .map(segment_event)
        .collect())
}

/// Plans the versions committed since the last planned one; returns the range planned
/// and its events (read once, for planning and for the first attempt), `None` when
/// there was nothing new or another planner was first.
async fn plan(
    engine: &Engine,
    d: &Destination,
    batches: &[StreamBatch],
    actor: &str,
) -> Result<Option<((i64, i64), Vec<Value>)>> {
    let lake = engine.lake();
    let Some(latest) = lake.data_version(EVENTS).await? else {
        return Ok(None);
    };
    let now = now_micros();
    let row =
        |from: i64, to: i64, seq: i64, events: i64, status: Status, message: Option<String>| {
            StreamBatch {
                destination: d.name.clone(),
                from_version: from,
                to_version: to,
                seq,
                batch_id: format!("{}-{from}-{to}-{seq}", d.name),
                events,
                attempt: 0,
                status,
                code: None,
                message,
                next_attempt_at: None,
                at: now,
                planned_at: now,
            }
        };
    let cursor = match batches.iter().map(|b| b.to_version).max() {
        Some(c) => c,
        None if d.from_beginning => -1,
        None => {
            // A new stream starts at what is committed now.
            let start = row(
                latest,
                latest,
                0,
                0,
                Status::Delivered,
                Some(format!("the stream starts after events version {latest}")),
            );
            append(
                engine,
                &[start],
                "event stream start",
                actor,
                Some((&app(&d.name), latest)),
            )
            .await?;
            return Ok(None);
        }
    };
    if latest <= cursor {
        return Ok(None);
    }
    let selected = events_of(engine, d, cursor, latest).await?;
    let events = selected.len();
    let size = d.batch_size.max(1);
    let rows: Vec<StreamBatch> = if events == 0 {
        // Nothing selected: the place moves on all the same.
        vec![row(
            cursor,
            latest,
            0,
            0,
            Status::Delivered,
            Some("no event selected".into()),
        )]
    } else {
        (0..events.div_ceil(size))
            .map(|seq| {
                let n = size.min(events - seq * size);
                row(cursor, latest, seq as i64, n as i64, Status::Planned, None)
            })
            .collect()
    };
    let written = append(
        engine,
        &rows,
        "event stream plan",
        actor,
        Some((&app(&d.name), latest)),
    )
    .await?;
    Ok(written.then_some(((cursor, latest), selected)))
}

/// Sends one batch's events (in parts no larger than the destination's byte cap; part
/// ids `BATCH.i` when there are several); the attempt comes to the first part that
/// fails, or delivered.
async fn send(client: &reqwest::Client, d: &Destination, id: &str, events: &[Value]) -> Attempt {
    let parts = webhook::bodies(events, d.max_batch_bytes, now_micros());
    let many = parts.len() > 1;
    let mut last = Attempt::Delivered { code: 200 };
    for (i, body) in parts.into_iter().enumerate() {
        let part = if many {
            format!("{id}.{i}")
        } else {
            id.to_owned()
        };
        last = webhook::send(client, d, reqwest::Method::POST, &part, body).await;
        if !matches!(last, Attempt::Delivered { .. }) {
            return last;
        }
    }
    last
}

/// Forwards what is due for event-stream destination `d`: plans newly committed
/// events, then sends the batches in order until one must wait for a retry; keeps
/// waiting for retries due within `wait`.
pub async fn deliver(
    engine: &Engine,
    d: &Destination,
    client: &reqwest::Client,
    actor: &str,
    wait: Duration,
) -> Result<Delivered> {
    let deadline = Instant::now() + wait;
    let mut report = Delivered {
        destination: d.name.clone(),
        ..Delivered::default()
    };
    engine.lake().create_missing_tables().await?;
    let mut events_by_range: HashMap<(i64, i64), Vec<Value>> = HashMap::new();
    loop {
        let mut batches = read(engine, &d.name).await?;
        if batches.iter().all(|b| b.status.finished())
            && let Some((range, events)) = plan(engine, d, &batches, actor).await?
        {
            events_by_range.insert(range, events);
            batches = read(engine, &d.name).await?;
        }
        let mut next_retry = None;
        for b in batches.iter().filter(|b| !b.status.finished()) {
            let now = now_micros();
            if b.status == Status::Retry && b.next_attempt_at.is_some_and(|t| t > now) {
                next_retry = b.next_attempt_at;
                break;
            }
            let key = (b.from_version, b.to_version);
            let all = match events_by_range.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(events_of(engine, d, b.from_version, b.to_version).await?)
                }
            };
            let size = d.batch_size.max(1);
            let start = (b.seq as usize * size).min(all.len());
            let part = &all[start..(start + size).min(all.len())];
            if let Some(m) = d.min_interval {
                tokio::time::sleep(m).await;
            }
            let outcome = if part.is_empty() {
                // Erased since it was planned: nothing left to send.
                Attempt::Delivered { code: 204 }
            } else {
                send(client, d, &b.batch_id, part).await
            };
            report.attempts += 1;
            let attempt = b.attempt + 1;
            let tried_for = Duration::from_micros((now - b.planned_at).max(0) as u64);
            let mut next = b.clone();
            next.attempt = attempt;
            next.at = now_micros();
            next.next_attempt_at = None;
            let waits = match outcome {
                Attempt::Delivered { code } => {
                    next.status = Status::Delivered;
                    next.code = Some(code.into());
                    next.message = part.is_empty().then(|| "no event left to send".into());
                    report.count(Status::Delivered, part.len());
                    false
                }
                Attempt::Final { code, message } => {
                    next.status = Status::Dead;
                    next.code = Some(code.into());
                    next.message = Some(message);
                    report.count(Status::Dead, part.len());
                    false
                }
                Attempt::Retry {
                    code,
                    retry_after,
                    message,
                } => {
                    next.code = code.map(i64::from);
                    next.message = Some(message);
                    if d.retry.exhausted(attempt as u32, tried_for) {
                        next.status = Status::Dead;
                        report.count(Status::Dead, part.len());
                        false
                    } else {
                        let jitter = (now.rem_euclid(1000)) as f64 / 1000.0;
                        let delay = d.retry.backoff(attempt as u32, retry_after, jitter);
                        next.status = Status::Retry;
                        next.next_attempt_at = Some(now + delay.as_micros() as i64);
                        next_retry = next.next_attempt_at;
                        report.count(Status::Retry, part.len());
                        true
                    }
                }
            };
            append(engine, &[next], "event stream delivery", actor, None).await?;
            if waits {
                break;
            }
        }
        let Some(at) = next_retry else {
            // Everything planned is finished: new events may have come meanwhile.
            if batches.iter().any(|b| !b.status.finished()) && Instant::now() < deadline {
                continue;
            }
            return Ok(report);
        };
        let pause = Duration::from_micros((at - now_micros()).max(0) as u64);
        if Instant::now() + pause > deadline {
            report.pending = batches.iter().filter(|b| !b.status.finished()).count() as u64;
            return Ok(report);
        }
        tokio::time::sleep(pause).await;
    }
}

/// The state of every event stream, as [`crate::status`] reports syncs: `sync` and
/// `destination` are the stream's name, `segment` is `events`, `run` counts the ranges
/// planned, `to_version` the `events` version reached, members are events.
pub async fn status(engine: &Engine) -> Result<Vec<crate::SyncStatus>> {
    let mut out = Vec::new();
    for (name, batches) in read_all(engine, None).await? {
        let mut s = crate::SyncStatus {
            sync: name.clone(),
            destination: name,
            segment: EVENTS.to_owned(),
            ..crate::SyncStatus::default()
        };
        let mut ranges = std::collections::HashSet::new();
        for b in &batches {
            ranges.insert(b.from_version);
            s.to_version = s.to_version.max(b.to_version);
            match b.status {
                Status::Planned => s.planned += 1,
                Status::Retry => s.retrying += 1,
                Status::Delivered => {
                    s.delivered += 1;
                    s.members_delivered += b.events as u64;
                }
                Status::Dead => s.dead += 1,
                Status::Held => s.held += 1,
            }
            if b.attempt > 0 {
                s.last_attempt_at = Some(s.last_attempt_at.map_or(b.at, |t| t.max(b.at)));
            }
            if matches!(b.status, Status::Retry | Status::Dead) {
                s.last_error = Some(format!(
                    "{}{}",
                    b.code.map_or_else(String::new, |c| format!("{c} ")),
                    b.message.clone().unwrap_or_default()
                ));
            }
        }
        s.run = ranges.len() as i64;
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn integrations_turn_a_destination_off_as_segment_does() {
        let on = |t: Option<&str>| integration_enabled(t, "firehose");
        assert!(on(None));
        assert!(on(Some("{}")));
        assert!(on(Some("not json")), "unreadable: as if absent");
        assert!(!on(Some(r#"{"All": false}"#)));
        assert!(!on(Some(r#"{"firehose": false}"#)));
        assert!(on(Some(r#"{"All": false, "firehose": true}"#)));
        assert!(on(Some(r#"{"All": false, "firehose": {"apiKey": "k"}}"#)));
        assert!(
            on(Some(r#"{"Firehose": false}"#)),
            "names are case-sensitive"
        );
        assert!(on(Some(r#"{"Braze": false}"#)));
    }

    #[test]
    fn rows_become_segment_events() {
        let row: Map<String, Value> = serde_json::from_str(
            r#"{"message_id":"m1","type":"track","event":"Order Completed","user_id":"u1",
                "anonymous_id":null,"properties":"{\"revenue\":12}","context":"{\"ip\":\"1.2.3.4\"}",
                "event_date":"2026-11-01","extra":"{\"channel\":\"server\",\"type\":\"no\"}",
                "timestamp":"2026-11-01T10:00:00Z","score":3}"#,
        )
        .unwrap();
        let e = segment_event(row);
        assert_eq!(
            e,
            serde_json::json!({
                "messageId": "m1", "type": "track", "event": "Order Completed", "userId": "u1",
                "properties": {"revenue": 12}, "context": {"ip": "1.2.3.4"},
                "timestamp": "2026-11-01T10:00:00Z", "score": 3, "channel": "server"
            })
        );
    }
}
