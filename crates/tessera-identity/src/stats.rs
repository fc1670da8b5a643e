//! The identity graph's figures from the lake: merges, values held out of profiles and
//! how fresh the identity map is (the console's Overview and Identity pages, `tessera
//! status`). Profile counts and sizes come from the in-memory [`crate::snapshot`].

use serde::Serialize;
use tessera_core::schema::{BLOCKED_VALUES, EVENTS, IDENTITY_MAP, PROFILE_MERGES};
use tessera_engine::Engine;
use tessera_engine::columns::{collect, int64s, strings};

use crate::error::Result;
use crate::snapshot::shown_value;
use crate::stitch::STITCH_APP;

/// How current the identity map is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// When the latest stitch committed `identity_map` (µs since the epoch).
    pub stitched_at: Option<i64>,
    /// The `events` version it read, and the current one: stale when they differ.
    pub events_read: Option<i64>,
    pub events_now: Option<i64>,
    /// Merges recorded in all (`profile_merges` rows, from the Delta log).
    pub merges: u64,
}

impl Freshness {
    /// Events arrived since the latest stitch (or there never was one).
    pub fn stale(&self) -> bool {
        self.stitched_at.is_none() || self.events_read != self.events_now
    }
}

/// How current the identity map is, from the Delta logs (no data file is read).
pub async fn freshness(engine: &Engine) -> Result<Freshness> {
    let lake = engine.lake();
    let mut f = Freshness::default();
    if let Some(map) = lake.try_open(IDENTITY_MAP).await? {
        if let Some(v) = map.version().filter(|v| *v > 0) {
            f.stitched_at = Some(lake.commit_time(IDENTITY_MAP, v).await?);
        }
        f.events_read = lake.transaction_version(IDENTITY_MAP, STITCH_APP).await?;
    }
    if let Some(events) = lake.try_open(EVENTS).await? {
        f.events_now = events.version().and_then(|v| i64::try_from(v).ok());
    }
    if lake.exists(PROFILE_MERGES).await? {
        f.merges = lake.stats(PROFILE_MERGES).await?.rows;
    }
    Ok(f)
}

/// An identifier value held out of profiles by a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub id_type: String,
    /// `***` for e-mails and phones unless the caller has the `pii` grant.
    pub value: String,
    pub reason: String,
    /// Distinct identifiers it was seen with.
    pub links: i64,
}

/// The values of `blocked_values`, most linked first, at most `limit`; and how many
/// there are in all.
pub async fn blocked(engine: &Engine, pii: bool, limit: usize) -> Result<(Vec<Blocked>, u64)> {
    if !engine.lake().exists(BLOCKED_VALUES).await? {
        return Ok((Vec::new(), 0));
    }
    let total = engine.lake().stats(BLOCKED_VALUES).await?.rows;
    let ctx = engine.session_of(&[BLOCKED_VALUES]).await?;
    let mut out = Vec::new();
    for b in collect(
        &ctx,
        &format!(
            "SELECT id_type, id_value, reason, links FROM {BLOCKED_VALUES} \
             ORDER BY links DESC, id_type, id_value LIMIT {limit}"
        ),
    )
    .await?
    {
        let (t, v, r, n) = (
            strings(&b, "id_type")?,
            strings(&b, "id_value")?,
            strings(&b, "reason")?,
            int64s(&b, "links")?,
        );
        for i in 0..b.num_rows() {
            out.push(Blocked {
                id_type: t.value(i).to_owned(),
                value: shown_value(t.value(i), v.value(i), pii).to_owned(),
                reason: r.value(i).to_owned(),
                links: n.value(i),
            });
        }
    }
    Ok((out, total))
}

/// An edge the graph did not apply because of an identifier limit or a held value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedEdge {
    pub a: String,
    pub b: String,
    pub rule: String,
    /// `rejected` (it would break a limit, against stronger evidence) or `held`.
    pub status: String,
    pub reason: String,
    pub events: i64,
}

/// The edges of `identity_edges` the graph refused (`rejected`, `held`), most events
/// first, at most `limit`, with e-mails and phones masked without `pii`; and how many
/// there are in all.
pub async fn refused_edges(
    engine: &Engine,
    pii: bool,
    limit: usize,
) -> Result<(Vec<RefusedEdge>, i64)> {
    use tessera_core::schema::IDENTITY_EDGES;
    if !engine.lake().exists(IDENTITY_EDGES).await? {
        return Ok((Vec::new(), 0));
    }
    let ctx = engine.session_of(&[IDENTITY_EDGES]).await?;
    let total = collect(
        &ctx,
        &format!("SELECT count(*) AS n FROM {IDENTITY_EDGES} WHERE status IN ('rejected', 'held')"),
    )
    .await?;
    let total = total
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| int64s(b, "n").map(|n| n.value(0)))
        .transpose()?
        .unwrap_or(0);
    let mut out = Vec::new();
    for b in collect(
        &ctx,
        &format!(
            "SELECT a_type, a_value, b_type, b_value, rule, status, coalesce(reason, '') AS reason, events \
             FROM {IDENTITY_EDGES} WHERE status IN ('rejected', 'held') \
             ORDER BY events DESC, a_type, a_value, b_type, b_value LIMIT {limit}"
        ),
    )
    .await?
    {
        let col = |name: &str| strings(&b, name);
        let (at, av, bt, bv, rule, status, reason) = (
            col("a_type")?,
            col("a_value")?,
            col("b_type")?,
            col("b_value")?,
            col("rule")?,
            col("status")?,
            col("reason")?,
        );
        let events = int64s(&b, "events")?;
        for i in 0..b.num_rows() {
            out.push(RefusedEdge {
                a: format!("{}:{}", at.value(i), shown_value(at.value(i), av.value(i), pii)),
                b: format!("{}:{}", bt.value(i), shown_value(bt.value(i), bv.value(i), pii)),
                rule: rule.value(i).to_owned(),
                status: status.value(i).to_owned(),
                reason: reason.value(i).to_owned(),
                events: events.value(i),
            });
        }
    }
    Ok((out, total))
}
