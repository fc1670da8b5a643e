//! The delivery ledger, `activation_batches`: every batch is written when it is planned
//! (with its members) and again after every attempt; a batch's state is its latest
//! row. Reading folds the rows into [`BatchState`]s; writing goes through one
//! [`LedgerWriter`] per process, which commits what the deliveries report a few times a
//! second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::common::ScalarValue;
use datafusion::prelude::Expr;
use serde_json::Value;
use tessera_core::schema::{self, ACTIVATION_BATCHES};
use tessera_engine::Engine;
use tessera_engine::columns::{booleans, int64s, strings};
use tessera_lake::{CommitNote, Lake};
use tokio::sync::{Mutex, Notify};

use crate::error::{ActivateError, Result};
use crate::member::{Change, Identifiers, Member};

/// Where a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Planned (or re-driven), not tried yet.
    Planned,
    /// Tried and failed; tried again at `next_attempt_at`.
    Retry,
    /// Accepted by the destination (2xx).
    Delivered,
    /// Given up (a final 4xx, or out of attempts and time): the dead-letter state.
    Dead,
    /// Part of a mirror run that would shrink the audience too much: waits for
    /// confirmation.
    Held,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::Retry => "retry",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
            Status::Held => "held",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "planned" => Status::Planned,
            "retry" => Status::Retry,
            "delivered" => Status::Delivered,
            "dead" => Status::Dead,
            "held" => Status::Held,
            _ => return None,
        })
    }

    /// Delivered or dead: nothing more will happen to it without a re-drive.
    pub fn finished(self) -> bool {
        matches!(self, Status::Delivered | Status::Dead)
    }
}

/// One row of `activation_batches`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub sync: String,
    pub destination: String,
    pub segment: String,
    pub run: i64,
    pub from_version: i64,
    pub to_version: i64,
    pub batch_id: String,
    pub seq: i64,
    /// Only on `planned` and `held` rows.
    pub members: Option<Vec<Member>>,
    pub size: i64,
    /// Attempts made so far (0 when planned).
    pub attempt: i64,
    pub status: Status,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub next_attempt_at: Option<i64>,
    /// When the row was written (microseconds since the epoch).
    pub at: i64,
    pub skipped: i64,
}

/// A batch as its rows make it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchState {
    pub sync: String,
    pub destination: String,
    pub segment: String,
    pub run: i64,
    pub from_version: i64,
    pub to_version: i64,
    pub batch_id: String,
    pub seq: i64,
    pub members: Vec<Member>,
    pub status: Status,
    /// Attempts in all.
    pub attempt: i64,
    /// Attempts since it was last planned or re-driven, and when the first of them was.
    pub attempts_since_plan: u32,
    pub first_try_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub code: Option<i64>,
    pub message: Option<String>,
    pub updated_at: i64,
    pub skipped: i64,
}

impl BatchState {
    /// The row recording `status` after attempt number `attempt`.
    pub fn row(
        &self,
        status: Status,
        attempt: i64,
        code: Option<i64>,
        message: Option<String>,
        next_attempt_at: Option<i64>,
    ) -> Row {
        Row {
            sync: self.sync.clone(),
            destination: self.destination.clone(),
            segment: self.segment.clone(),
            run: self.run,
            from_version: self.from_version,
            to_version: self.to_version,
            batch_id: self.batch_id.clone(),
            seq: self.seq,
            members: matches!(status, Status::Planned | Status::Held).then(|| self.members.clone()),
            size: self.members.len() as i64,
            attempt,
            status,
            code,
            message,
            next_attempt_at,
            at: chrono::Utc::now().timestamp_micros(),
            skipped: self.skipped,
        }
    }
}

fn members_json(members: &[Member]) -> String {
    Value::Array(
        members
            .iter()
            .map(|m| {
                let mut row = serde_json::json!([
                    m.profile_id,
                    m.change.as_str(),
                    m.refresh_version,
                    m.changed_at,
                    m.merged_into
                ]);
                if let (Some(ids), Value::Array(items)) = (&m.identifiers, &mut row) {
                    items.push(serde_json::to_value(ids).unwrap_or(Value::Null));
                }
                row
            })
            .collect(),
    )
    .to_string()
}

fn members_of(batch_id: &str, text: &str) -> Result<Vec<Member>> {
    members_split_at(batch_id, text, PARALLEL_JSON_BYTES)
}

/// [`members_of`], parsing on several threads from `min_bytes` of text on.
fn members_split_at(batch_id: &str, text: &str, min_bytes: usize) -> Result<Vec<Member>> {
    let bad = |message: String| ActivateError::Members {
        batch_id: batch_id.to_owned(),
        message,
    };
    /// `[profile_id, change, refresh_version, changed_at, merged_into]`, and the
    /// identifiers sent to an ad platform when there are some.
    #[derive(serde::Deserialize)]
    struct Stored(
        String,
        String,
        i64,
        i64,
        Option<String>,
        #[serde(default)] Option<Box<Identifiers>>,
    );
    let by_serde = |array: &str| -> Result<Vec<Member>> {
        let stored: Vec<Stored> = serde_json::from_str(array).map_err(|e| bad(e.to_string()))?;
        stored
            .into_iter()
            .map(
                |Stored(
                    profile_id,
                    change,
                    refresh_version,
                    changed_at,
                    merged_into,
                    identifiers,
                )| {
                    Ok(Member {
                        profile_id,
                        change: Change::parse(&change)
                            .ok_or_else(|| bad(format!("change {change:?}")))?,
                        refresh_version,
                        changed_at,
                        merged_into,
                        identifiers,
                    })
                },
            )
            .collect()
    };
    // A million-member batch is ~60 MB of JSON: its elements are parsed on every core,
    // each run of them by the plain-form reader or, when it declines, by serde_json.
    let chunks = split_array(text, min_bytes);
    let whole = chunks.len() == 1;
    let parsed = crate::in_parallel(chunks, |chunk| {
        let inner = if whole {
            let t = chunk.trim();
            t.strip_prefix('[').and_then(|t| t.strip_suffix(']'))
        } else {
            Some(chunk)
        };
        match inner.and_then(plain_members) {
            Some(members) => Ok(members),
            None if whole => by_serde(chunk),
            None => by_serde(&format!("[{chunk}]")),
        }
    });
    // One part is taken as it is; several are moved once into a vector of their sum.
    let mut parts = parsed.into_iter().collect::<Result<Vec<_>>>()?;
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    let mut members = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        members.extend(part);
    }
    Ok(members)
}

/// The elements `inner` (an array's text without its brackets) in the plain form
/// [`members_json`] writes for every destination but the ad platforms — no whitespace,
/// no escapes, no identifiers, integers of up to 18 digits — read without serde;
/// `None` for anything else, which serde_json (the reference) then reads or refuses.
fn plain_members(inner: &str) -> Option<Vec<Member>> {
    let b = inner.as_bytes();
    // A member takes 40–60 bytes of text: enough room for all of them, never a regrowth.
    let mut out = Vec::with_capacity(b.len() / 32 + 1);
    if b.is_empty() {
        return Some(out);
    }
    let at = |i: &mut usize, c: u8| -> Option<()> { (b.get(*i) == Some(&c)).then(|| *i += 1) };
    let string = |i: &mut usize| -> Option<&str> {
        at(i, b'"')?;
        let start = *i;
        let len = b[start..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if b[start + len] != b'"' {
            return None;
        }
        *i = start + len + 1;
        inner.get(start..start + len)
    };
    let int = |i: &mut usize| -> Option<i64> {
        let start = *i;
        if b.get(*i) == Some(&b'-') {
            *i += 1;
        }
        let digits = b[*i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 18 || (digits > 1 && b[*i] == b'0') {
            return None;
        }
        *i += digits;
        inner.get(start..*i)?.parse().ok()
    };
    let mut i = 0;
    loop {
        at(&mut i, b'[')?;
        let profile_id = string(&mut i)?.to_owned();
        at(&mut i, b',')?;
        let change = Change::parse(string(&mut i)?)?;
        at(&mut i, b',')?;
        let refresh_version = int(&mut i)?;
        at(&mut i, b',')?;
        let changed_at = int(&mut i)?;
        at(&mut i, b',')?;
        let merged_into = if b[i..].starts_with(b"null") {
            i += 4;
            None
        } else {
            Some(string(&mut i)?.to_owned())
        };
        at(&mut i, b']')?;
        out.push(Member {
            profile_id,
            change,
            refresh_version,
            changed_at,
            merged_into,
            identifiers: None,
        });
        if i == b.len() {
            return Some(out);
        }
        at(&mut i, b',')?;
    }
}

/// Members documents smaller than this are parsed on one thread.
const PARALLEL_JSON_BYTES: usize = 4 << 20;

/// The elements of the JSON array `text` in contiguous runs of about `text.len() / cores`
/// bytes, each run without its surrounding brackets and separating commas — or `text`
/// itself when it is small, not an array, or cannot be split at an element boundary.
/// The split only looks at brackets and string quotes; the parser checks the rest.
fn split_array(text: &str, min_bytes: usize) -> Vec<&str> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let trimmed = text.trim();
    if cores < 2 || text.len() < min_bytes || !trimmed.starts_with('[') || !trimmed.ends_with(']') {
        return vec![text];
    }
    let inner = &trimmed[1..trimmed.len() - 1];
    let bytes = inner.as_bytes();
    let target = inner.len() / cores + 1;
    let mut parts = Vec::with_capacity(cores);
    let (mut depth, mut in_string, mut escaped, mut start) = (0i32, false, false, 0usize);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth -= 1,
            b',' if depth == 0 && i - start >= target => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 || in_string || parts.is_empty() {
        return vec![text];
    }
    parts.push(&inner[start..]);
    parts
}

fn batch_of(rows: &[Row]) -> Result<RecordBatch> {
    let def = schema::table(ACTIVATION_BATCHES).ok_or_else(|| ActivateError::Members {
        batch_id: "-".into(),
        message: "no activation_batches table definition".into(),
    })?;
    let text = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let int = |f: &dyn Fn(&Row) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let time = |f: &dyn Fn(&Row) -> Option<i64>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    Ok(RecordBatch::try_new(
        def.schema.clone(),
        vec![
            text(&|r| Some(r.sync.clone())),
            text(&|r| Some(r.destination.clone())),
            text(&|r| Some(r.segment.clone())),
            int(&|r| Some(r.run)),
            int(&|r| Some(r.from_version)),
            int(&|r| Some(r.to_version)),
            text(&|r| Some(r.batch_id.clone())),
            int(&|r| Some(r.seq)),
            text(&|r| r.members.as_deref().map(members_json)),
            int(&|r| Some(r.size)),
            int(&|r| Some(r.attempt)),
            text(&|r| Some(r.status.as_str().to_owned())),
            int(&|r| r.code),
            text(&|r| r.message.clone()),
            time(&|r| r.next_attempt_at),
            time(&|r| Some(r.at)),
            int(&|r| Some(r.skipped)),
        ],
    )?)
}

/// Appends `rows` in one commit, as `operation` by `actor`; with `transaction`, the
/// commit carries that application transaction (and is skipped when the table already
/// holds it: a planned run is written once).
pub async fn append(
    lake: &Lake,
    rows: &[Row],
    operation: &str,
    actor: &str,
    transaction: Option<(&str, i64)>,
) -> Result<bool> {
    if rows.is_empty() {
        return Ok(false);
    }
    append_batch(
        lake,
        ACTIVATION_BATCHES,
        batch_of(rows)?,
        (operation, actor),
        transaction,
    )
    .await
}

/// Appends the ledger rows `batch` to `table` (`activation_batches`,
/// `stream_deliveries`) in one commit by `(operation, actor)`, once per `transaction`
/// when one is given; returns whether it wrote.
pub(crate) async fn append_batch(
    lake: &Lake,
    table: &str,
    batch: RecordBatch,
    (operation, actor): (&str, &str),
    transaction: Option<(&str, i64)>,
) -> Result<bool> {
    let def = schema::table(table).ok_or_else(|| ActivateError::Members {
        batch_id: "-".into(),
        message: format!("no {table} table definition"),
    })?;
    let note = CommitNote::new(operation, actor).detail("batches", batch.num_rows() as u64);
    Ok(lake.append_once(&def, batch, note, transaction).await?)
}

/// Every batch of the ledger (optionally of one destination), by batch id.
pub async fn read(engine: &Engine, destination: Option<&str>) -> Result<Vec<BatchState>> {
    let started = std::time::Instant::now();
    let ctx = engine.session_of(&[ACTIVATION_BATCHES]).await?;
    if !ctx.table_exist(ACTIVATION_BATCHES)? {
        return Ok(Vec::new());
    }
    use datafusion::prelude::{col, lit};
    let mut table = ctx.table(ACTIVATION_BATCHES).await?;
    if let Some(d) = destination {
        table = table.filter(col("destination").eq(lit(d)))?;
    }
    // Every row but without its members: a planned row holds a whole batch's members
    // (~60 MB for a million), and the ledger keeps every run's. They are read below, only
    // from each batch's latest planned row. Planned and held rows are the ones written
    // with members ([`BatchState::row`]); the flag is taken from the status so that the
    // members column is not even decoded here.
    let with_members = col("status").in_list(
        vec![lit(Status::Planned.as_str()), lit(Status::Held.as_str())],
        false,
    );
    let columns: Vec<Expr> = table
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.name() == "members" {
                with_members.clone().alias("members")
            } else {
                col(f.name().as_str())
            }
        })
        .collect();
    let opened = started.elapsed();
    let batches: Vec<RecordBatch> = table.clone().select(columns)?.collect().await?;
    let states_read = started.elapsed();
    let mut rows = Vec::new();
    // Members are parsed only from each batch's latest row that has them (a re-driven
    // batch has several): the index of that row.
    let mut latest_members: HashMap<String, usize> = HashMap::new();
    for b in &batches {
        let t = |n: &str| strings(b, n);
        let i = |n: &str| int64s(b, n);
        let (sync, dest, seg, bid, status, message) = (
            t("sync")?,
            t("destination")?,
            t("segment")?,
            t("batch_id")?,
            t("status")?,
            t("message")?,
        );
        let members = booleans(b, "members")?;
        let (run, from, to, seq, size, attempt, code, next, at, skipped) = (
            i("run")?,
            i("from_version")?,
            i("to_version")?,
            i("seq")?,
            i("size")?,
            i("attempt")?,
            i("code")?,
            i("next_attempt_at")?,
            i("at")?,
            i("skipped")?,
        );
        for r in 0..b.num_rows() {
            let batch_id = bid.value(r).to_owned();
            if members.value(r) {
                let key = (at.value(r), attempt.value(r));
                let newer = latest_members.get(&batch_id).is_none_or(|&i| {
                    let o: &Row = &rows[i];
                    key > (o.at, o.attempt)
                });
                if newer {
                    latest_members.insert(batch_id.clone(), rows.len());
                }
            }
            rows.push(Row {
                sync: sync.value(r).to_owned(),
                destination: dest.value(r).to_owned(),
                segment: seg.value(r).to_owned(),
                run: run.value(r),
                from_version: from.value(r),
                to_version: to.value(r),
                members: None,
                batch_id,
                seq: seq.value(r),
                size: size.value(r),
                attempt: attempt.value(r),
                status: Status::parse(status.value(r)).unwrap_or(Status::Planned),
                code: code.is_valid(r).then(|| code.value(r)),
                message: message.is_valid(r).then(|| message.value(r).to_owned()),
                next_attempt_at: next.is_valid(r).then(|| next.value(r)),
                at: at.value(r),
                skipped: skipped.value(r),
            });
        }
    }
    if !latest_members.is_empty() {
        // Files are pruned by their `at` statistics: only the wanted rows' files are read.
        let wanted: HashMap<(&str, i64, i64), usize> = latest_members
            .iter()
            .map(|(batch_id, &i)| ((batch_id.as_str(), rows[i].at, rows[i].attempt), i))
            .collect();
        let mut ats: Vec<i64> = wanted.keys().map(|k| k.1).collect();
        ats.sort_unstable();
        ats.dedup();
        let at_list: Vec<Expr> = ats
            .iter()
            .map(|&t| {
                lit(ScalarValue::TimestampMicrosecond(
                    Some(t),
                    Some("UTC".into()),
                ))
            })
            .collect();
        let found: Vec<RecordBatch> = table
            .filter(
                col("at")
                    .in_list(at_list, false)
                    .and(col("members").is_not_null()),
            )?
            .select_columns(&["batch_id", "at", "attempt", "members"])?
            .collect()
            .await?;
        let members_read = started.elapsed();
        let mut parsed = Vec::with_capacity(wanted.len());
        for b in &found {
            let (bid, at, attempt, members) = (
                strings(b, "batch_id")?,
                int64s(b, "at")?,
                int64s(b, "attempt")?,
                strings(b, "members")?,
            );
            for r in 0..b.num_rows() {
                if let Some(&i) = wanted.get(&(bid.value(r), at.value(r), attempt.value(r))) {
                    parsed.push((i, members_of(bid.value(r), members.value(r))?));
                }
            }
        }
        if parsed.len() < wanted.len() {
            return Err(ActivateError::Members {
                batch_id: "-".into(),
                message: format!(
                    "{} of {} planned batches' members were not found in activation_batches",
                    wanted.len() - parsed.len(),
                    wanted.len()
                ),
            });
        }
        tracing::debug!(
            "ledger: opened {opened:?}, states {:?}, members read {:?}, parsed {:?}",
            states_read - opened,
            members_read - states_read,
            started.elapsed() - members_read
        );
        for (i, m) in parsed {
            rows[i].members = Some(m);
        }
    }
    Ok(fold(rows))
}

/// The state of each batch from its rows, in (sync, run, seq) order.
pub fn fold(mut rows: Vec<Row>) -> Vec<BatchState> {
    rows.sort_by(|a, b| (&a.batch_id, a.at, a.attempt).cmp(&(&b.batch_id, b.at, b.attempt)));
    let mut out: HashMap<String, BatchState> = HashMap::new();
    for r in rows {
        let planned = matches!(r.status, Status::Planned | Status::Held);
        match out.get_mut(&r.batch_id) {
            None => {
                out.insert(
                    r.batch_id.clone(),
                    BatchState {
                        sync: r.sync,
                        destination: r.destination,
                        segment: r.segment,
                        run: r.run,
                        from_version: r.from_version,
                        to_version: r.to_version,
                        batch_id: r.batch_id,
                        seq: r.seq,
                        members: r.members.unwrap_or_default(),
                        status: r.status,
                        attempt: r.attempt,
                        attempts_since_plan: 0,
                        first_try_at: (!planned).then_some(r.at),
                        next_attempt_at: r.next_attempt_at,
                        code: r.code,
                        message: r.message,
                        updated_at: r.at,
                        skipped: r.skipped,
                    },
                );
            }
            Some(s) => {
                if planned {
                    if let Some(m) = r.members {
                        s.members = m;
                    }
                    s.attempts_since_plan = 0;
                    s.first_try_at = None;
                } else {
                    s.attempts_since_plan += 1;
                    s.first_try_at.get_or_insert(r.at);
                }
                s.status = r.status;
                s.attempt = r.attempt;
                s.next_attempt_at = r.next_attempt_at;
                s.code = r.code;
                s.message = r.message;
                s.updated_at = r.at;
            }
        }
    }
    let mut states: Vec<BatchState> = out.into_values().collect();
    states.sort_by(|a, b| (&a.sync, a.run, a.seq).cmp(&(&b.sync, b.run, b.seq)));
    states
}

/// The one writer of attempt rows in a process: deliveries hand it rows, it commits
/// them together every `every`; [`LedgerWriter::flush`] commits what is pending now.
pub struct LedgerWriter {
    lake: Arc<Lake>,
    pending: Mutex<Vec<Row>>,
    /// One commit at a time.
    committing: Mutex<()>,
    added: Notify,
}

impl LedgerWriter {
    pub fn new(lake: Arc<Lake>) -> Arc<LedgerWriter> {
        Arc::new(LedgerWriter {
            lake,
            pending: Mutex::default(),
            committing: Mutex::new(()),
            added: Notify::new(),
        })
    }

    /// Queues a row for the next commit.
    pub async fn record(&self, row: Row) {
        self.pending.lock().await.push(row);
        self.added.notify_one();
    }

    /// Commits every row queued so far; on failure they stay queued.
    pub async fn flush(&self) -> Result<usize> {
        let _one = self.committing.lock().await;
        let rows = std::mem::take(&mut *self.pending.lock().await);
        if rows.is_empty() {
            return Ok(0);
        }
        match append(
            &self.lake,
            &rows,
            "activation attempts",
            "tessera activate",
            None,
        )
        .await
        {
            Ok(_) => Ok(rows.len()),
            Err(e) => {
                let mut pending = self.pending.lock().await;
                let mut kept = rows;
                kept.append(&mut pending);
                *pending = kept;
                Err(e)
            }
        }
    }

    /// Commits queued rows every `every` until `stop`, then once more.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if let Err(e) = self.flush().await {
                tracing::warn!("activation ledger not written (kept for the next try): {e}");
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!("activation ledger not written at shutdown: {e}");
        }
    }
}

/// Each sync's latest planned run and the refresh version it reaches, read from the
/// ledger's `sync`, `run` and `to_version` columns alone (the members are not read).
pub async fn read_cursors(engine: &Engine) -> Result<HashMap<String, (i64, i64)>> {
    let ctx = engine.session_of(&[ACTIVATION_BATCHES]).await?;
    let mut out: HashMap<String, (i64, i64)> = HashMap::new();
    if !ctx.table_exist(ACTIVATION_BATCHES)? {
        return Ok(out);
    }
    let batches = ctx
        .table(ACTIVATION_BATCHES)
        .await?
        .select_columns(&["sync", "run", "to_version"])?
        .collect()
        .await?;
    for b in &batches {
        let (sync, run, to) = (
            strings(b, "sync")?,
            int64s(b, "run")?,
            int64s(b, "to_version")?,
        );
        for r in 0..b.num_rows() {
            let e = out
                .entry(sync.value(r).to_owned())
                .or_insert((run.value(r), to.value(r)));
            if run.value(r) > e.0 {
                *e = (run.value(r), to.value(r));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn member(p: &str) -> Member {
        Member {
            profile_id: p.into(),
            change: Change::Entered,
            refresh_version: 1,
            changed_at: 5,
            merged_into: None,
            identifiers: None,
        }
    }

    #[test]
    fn the_latest_row_is_the_state_and_a_re_drive_restarts_the_count() {
        let planned = Row {
            sync: "s".into(),
            destination: "d".into(),
            segment: "g".into(),
            run: 1,
            from_version: 0,
            to_version: 1,
            batch_id: "s-1-0".into(),
            seq: 0,
            members: Some(vec![member("p1"), member("p2")]),
            size: 2,
            attempt: 0,
            status: Status::Planned,
            code: None,
            message: None,
            next_attempt_at: None,
            at: 10,
            skipped: 0,
        };
        let attempt = |at, n, status| Row {
            members: None,
            attempt: n,
            status,
            at,
            code: Some(503),
            ..planned.clone()
        };
        let states = fold(vec![
            attempt(30, 2, Status::Dead),
            planned.clone(),
            attempt(20, 1, Status::Retry),
        ]);
        assert_eq!(states.len(), 1);
        let s = &states[0];
        assert_eq!(
            (s.status, s.attempt, s.attempts_since_plan, s.first_try_at),
            (Status::Dead, 2, 2, Some(20))
        );
        assert_eq!(s.members.len(), 2, "members come from the planned row");
        let redriven = Row {
            members: None,
            at: 40,
            attempt: 2,
            ..planned.clone()
        };
        let s = &fold(vec![
            planned.clone(),
            attempt(20, 1, Status::Retry),
            attempt(30, 2, Status::Dead),
            redriven,
        ])[0];
        assert_eq!(
            (s.status, s.attempts_since_plan, s.first_try_at),
            (Status::Planned, 0, None)
        );
        let json = members_json(&s.members);
        assert_eq!(members_of("x", &json).unwrap(), s.members);
        assert!(members_of("x", "[[\"p\", \"sideways\", 1, 2, null]]").is_err());
        // Split over the cores, the same members in the same order; brackets, commas and
        // quotes inside strings never split an element.
        let many: Vec<Member> = (0..3000)
            .map(|i| {
                let mut m = member(&format!("p,[{i}]\"\\"));
                m.merged_into = (i % 5 == 0).then(|| format!("q]{i},"));
                m
            })
            .collect();
        let json = members_json(&many);
        let parts = split_array(&json, 1);
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            assert!(parts.len() > 1, "split");
        }
        let mut joined = Vec::new();
        for p in &parts {
            joined.extend(serde_json::from_str::<Vec<Value>>(&format!("[{p}]")).unwrap());
        }
        assert_eq!(Value::Array(joined).to_string(), json);
        assert_eq!(members_split_at("x", &json, 1).unwrap(), many);
        assert_eq!(members_of("x", &json).unwrap(), many);
        let broken = json.replacen("\"entered\"", "\"sideways\"", 1);
        assert!(members_split_at("x", &broken, 1).is_err());
        assert_eq!(split_array("[1, 2", 1), vec!["[1, 2"]);
        assert_eq!(split_array("{\"a\": [1, 2]}", 1), vec!["{\"a\": [1, 2]}"]);
    }

    fn any_member() -> impl proptest::strategy::Strategy<Value = Member> {
        use proptest::prelude::*;
        (
            "[a-z0-9\\-]{1,12}|\\PC{0,6}|[\"\\\\,\\[\\]\\n\\t]{0,4}",
            any::<bool>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of("[a-z0-9\\-]{1,8}|\\PC{0,4}"),
            proptest::option::of(("[a-f0-9]{8}", any::<bool>())),
        )
            .prop_map(
                |(profile_id, entered, refresh_version, changed_at, merged_into, ids)| Member {
                    profile_id,
                    change: if entered {
                        Change::Entered
                    } else {
                        Change::Exited
                    },
                    refresh_version,
                    changed_at,
                    merged_into,
                    identifiers: ids.map(|(hash, phone)| {
                        Box::new(Identifiers {
                            email: vec![hash.clone()],
                            phone: if phone { vec![hash] } else { Vec::new() },
                            ..Identifiers::default()
                        })
                    }),
                },
            )
    }

    proptest::proptest! {
        /// The plain-form reader reads what serde_json reads, or declines; every
        /// document the ledger writes reads back as written, split or not.
        #[test]
        fn plain_members_read_what_serde_reads(
            members in proptest::collection::vec(any_member(), 0..40),
            spaced in proptest::bool::ANY,
        ) {
            let json = members_json(&members);
            let text = if spaced {
                serde_json::to_string_pretty(&serde_json::from_str::<Value>(&json).unwrap()).unwrap()
            } else {
                json.clone()
            };
            let inner = &text[1..text.len() - 1];
            if let Some(plain) = plain_members(inner) {
                proptest::prop_assert_eq!(&plain, &members);
                proptest::prop_assert!(members.iter().all(|m| m.identifiers.is_none()));
            }
            proptest::prop_assert_eq!(&members_split_at("x", &text, 1).unwrap(), &members);
            proptest::prop_assert_eq!(&members_of("x", &json).unwrap(), &members);
        }
    }

    #[test]
    fn plain_members_decline_what_they_do_not_fully_read() {
        let ok = r#"["p1","entered",1,2,null],["p2","exited",-3,0,"p1"]"#;
        assert_eq!(plain_members(ok).unwrap().len(), 2);
        for bad in [
            r#"["p1","entered",1,2,null]]"#,
            r#"["p1","entered",1,2,null],"#,
            r#"["p1","entered",01,2,null]"#,
            r#"["p1","entered",1.0,2,null]"#,
            r#"["p1","entered",1,2]"#,
            r#"["p1","entered",1,2,null,{"email":["x"]}]"#,
            r#"["p\u0031","entered",1,2,null]"#,
            r#"["p1","sideways",1,2,null]"#,
            r#"["p1","entered",1234567890123456789,2,null]"#,
            r#"["p1","entered",-,2,null]"#,
        ] {
            assert!(plain_members(bad).is_none(), "{bad}");
        }
        assert_eq!(
            members_of("x", r#"[["p1","entered",1234567890123456789,2,null]]"#).unwrap()[0]
                .refresh_version,
            1234567890123456789
        );
    }
}
