//! What arrived, from where, and what was refused: the collection figures of
//! `tessera status` and the console's Overview and Sources pages.
//!
//! Each function is one aggregate over the lake (`events` by its `event_date`
//! partitions, `quarantine`, `plan_violations`); tables not yet created count as empty.

use serde::Serialize;
use tessera_core::schema::{EVENTS, PLAN_VIOLATIONS, QUARANTINE};
use tessera_engine::Engine;
use tessera_engine::columns::{collect, int64s, strings};

use crate::error::Result;

/// Events of one day, source and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyVolume {
    /// `YYYY-MM-DD` (the event's own date).
    pub day: String,
    pub source: String,
    pub kind: String,
    pub events: i64,
}

/// Refused events of one source and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    pub source: String,
    /// The quarantine reason code (`missing_id`, `tracking_plan`, ...).
    pub reason: String,
    pub events: i64,
}

/// The most frequent events of a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopEvent {
    pub source: String,
    /// The `track` event name, or the type for other calls (`identify`, `page`, ...).
    pub event: String,
    pub events: i64,
}

/// Events per day, source and type for the `days` days up to the latest event date,
/// oldest first.
pub async fn daily_volume(engine: &Engine, days: u32) -> Result<Vec<DailyVolume>> {
    let ctx = engine.session_of(&[EVENTS]).await?;
    if !ctx.table_exist(EVENTS).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "WITH last AS (SELECT max(event_date) AS d FROM {EVENTS}) \
         SELECT CAST(e.event_date AS VARCHAR) AS day, e.source, e.type AS kind, count(*) AS events \
         FROM {EVENTS} e, last \
         WHERE e.event_date > last.d - INTERVAL '{days} days' \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let mut out = Vec::new();
    for b in collect(&ctx, &sql).await? {
        let (day, source, kind, n) = (
            strings(&b, "day")?,
            strings(&b, "source")?,
            strings(&b, "kind")?,
            int64s(&b, "events")?,
        );
        for i in 0..b.num_rows() {
            out.push(DailyVolume {
                day: day.value(i).to_owned(),
                source: source.value(i).to_owned(),
                kind: kind.value(i).to_owned(),
                events: n.value(i),
            });
        }
    }
    Ok(out)
}

/// Events stored in all, per source (every date).
pub async fn events_by_source(engine: &Engine) -> Result<Vec<(String, i64)>> {
    let ctx = engine.session_of(&[EVENTS]).await?;
    if !ctx.table_exist(EVENTS).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for b in collect(
        &ctx,
        &format!("SELECT source, count(*) AS n FROM {EVENTS} GROUP BY 1 ORDER BY 1"),
    )
    .await?
    {
        let (s, n) = (strings(&b, "source")?, int64s(&b, "n")?);
        for i in 0..b.num_rows() {
            out.push((s.value(i).to_owned(), n.value(i)));
        }
    }
    Ok(out)
}

/// Refused events in quarantine per source and reason, most first.
pub async fn refused(engine: &Engine) -> Result<Vec<Refused>> {
    let ctx = engine.session_of(&[QUARANTINE]).await?;
    if !ctx.table_exist(QUARANTINE).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT source, reason_code AS reason, count(*) AS events FROM {QUARANTINE} \
         GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
    );
    let mut out = Vec::new();
    for b in collect(&ctx, &sql).await? {
        let (s, r, n) = (
            strings(&b, "source")?,
            strings(&b, "reason")?,
            int64s(&b, "events")?,
        );
        for i in 0..b.num_rows() {
            out.push(Refused {
                source: s.value(i).to_owned(),
                reason: r.value(i).to_owned(),
                events: n.value(i),
            });
        }
    }
    Ok(out)
}

/// The `limit` most frequent events of each source over the `days` days up to the
/// latest event date.
pub async fn top_events(engine: &Engine, days: u32, limit: usize) -> Result<Vec<TopEvent>> {
    let ctx = engine.session_of(&[EVENTS]).await?;
    if !ctx.table_exist(EVENTS).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "WITH last AS (SELECT max(event_date) AS d FROM {EVENTS}), \
              counted AS (SELECT e.source, coalesce(e.event, e.type) AS event, count(*) AS events \
                          FROM {EVENTS} e, last WHERE e.event_date > last.d - INTERVAL '{days} days' \
                          GROUP BY 1, 2), \
              ranked AS (SELECT *, row_number() OVER (PARTITION BY source ORDER BY events DESC, event) AS n \
                         FROM counted) \
         SELECT source, event, events FROM ranked WHERE n <= {limit} ORDER BY source, events DESC, event"
    );
    let mut out = Vec::new();
    for b in collect(&ctx, &sql).await? {
        let (s, e, n) = (
            strings(&b, "source")?,
            strings(&b, "event")?,
            int64s(&b, "events")?,
        );
        for i in 0..b.num_rows() {
            out.push(TopEvent {
                source: s.value(i).to_owned(),
                event: e.value(i).to_owned(),
                events: n.value(i),
            });
        }
    }
    Ok(out)
}

/// Tracking-plan violations per source, event and code (summed over hours), most first.
pub async fn plan_violations(engine: &Engine, limit: usize) -> Result<Vec<serde_json::Value>> {
    let ctx = engine.session_of(&[PLAN_VIOLATIONS]).await?;
    if !ctx.table_exist(PLAN_VIOLATIONS).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let rows = tessera_engine::columns::collect_json(
        &ctx,
        &format!(
            "SELECT source, event, property, violation, bool_or(blocked) AS blocked, \
                    sum(events) AS events, min(message) AS message \
             FROM {PLAN_VIOLATIONS} GROUP BY 1, 2, 3, 4 ORDER BY events DESC, 1, 2, 3, 4 LIMIT {limit}"
        ),
    )
    .await?;
    Ok(rows.into_iter().map(serde_json::Value::Object).collect())
}
