//! Reading audiences: who is in a segment, who entered and exited since a refresh
//! version, how its size moved over time, and each segment's latest refresh — for
//! `tessera segments list|show|diff`, `tessera.v1` `StreamAudience` and activation.
//! Every read filters with bound values (no segment name is spliced into SQL text) and
//! opens only the tables it reads.

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::prelude::{DataFrame, SessionContext, col, lit};
use futures::{Stream, TryStreamExt};
use serde::Serialize;
use tessera_core::schema::{AUDIENCE_CHANGES, AUDIENCE_MEMBERSHIP, PROFILES, SEGMENT_REFRESHES};
use tessera_engine::Engine;
use tessera_engine::columns::{int64s, strings};

use crate::error::Result;

/// Entered or exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Entered,
    Exited,
}

impl ChangeKind {
    /// As stored in `audience_changes.change`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Entered => "entered",
            ChangeKind::Exited => "exited",
        }
    }
}

/// One row of `audience_changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub refresh_version: i64,
    pub change: ChangeKind,
    pub profile_id: String,
    /// Microseconds since the epoch.
    pub changed_at: i64,
    /// Set when the exit is a profile merged away into this one.
    pub merged_into: Option<String>,
}

/// One refresh of a segment (`segment_refreshes`): its size over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refresh {
    pub version: i64,
    /// Microseconds since the epoch.
    pub refreshed_at: i64,
    pub as_of: i64,
    pub members: i64,
    pub entered: i64,
    pub exited: i64,
    pub duration_ms: i64,
}

/// A member of a segment, with the profile's golden user id and e-mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub profile_id: String,
    /// When the profile last entered (microseconds since the epoch).
    pub since: i64,
    pub user_id: Option<String>,
    pub email: Option<String>,
}

/// A session with only `tables` of the lake (those that exist).
async fn session(engine: &Engine, tables: &[&str]) -> Result<SessionContext> {
    Ok(engine.session_of(tables).await?)
}

/// `df` limited to `limit` rows (`usize::MAX`: all).
fn first(df: DataFrame, limit: usize) -> Result<DataFrame> {
    Ok(if limit == usize::MAX {
        df
    } else {
        df.limit(0, Some(limit))?
    })
}

async fn rows(df: DataFrame) -> Result<Vec<RecordBatch>> {
    Ok(df.collect().await?)
}

fn text(a: &datafusion::arrow::array::StringArray, row: usize) -> Option<String> {
    a.is_valid(row).then(|| a.value(row).to_owned())
}

/// The latest refresh of every segment that has one: `(segment, refresh)`.
pub async fn latest_refreshes(engine: &Engine) -> Result<Vec<(String, Refresh)>> {
    let ctx = session(engine, &[SEGMENT_REFRESHES]).await?;
    if !ctx.table_exist(SEGMENT_REFRESHES)? {
        return Ok(Vec::new());
    }
    let mut latest: std::collections::BTreeMap<String, Refresh> = Default::default();
    for (segment, r) in refreshes_of(ctx.table(SEGMENT_REFRESHES).await?).await? {
        let newer = latest.get(&segment).is_none_or(|l| r.version > l.version);
        if newer {
            latest.insert(segment, r);
        }
    }
    Ok(latest.into_iter().collect())
}

async fn refreshes_of(df: DataFrame) -> Result<Vec<(String, Refresh)>> {
    let mut out = Vec::new();
    for b in rows(df).await? {
        let seg = strings(&b, "segment")?;
        let (v, at, as_of, m, e, x, d) = (
            int64s(&b, "refresh_version")?,
            int64s(&b, "refreshed_at")?,
            int64s(&b, "as_of")?,
            int64s(&b, "members")?,
            int64s(&b, "entered")?,
            int64s(&b, "exited")?,
            int64s(&b, "duration_ms")?,
        );
        for r in 0..b.num_rows() {
            out.push((
                seg.value(r).to_owned(),
                Refresh {
                    version: v.value(r),
                    refreshed_at: at.value(r),
                    as_of: as_of.value(r),
                    members: m.value(r),
                    entered: e.value(r),
                    exited: x.value(r),
                    duration_ms: d.value(r),
                },
            ));
        }
    }
    Ok(out)
}

/// The refreshes of `segment`, newest first, at most `limit`.
pub async fn history(engine: &Engine, segment: &str, limit: usize) -> Result<Vec<Refresh>> {
    let ctx = session(engine, &[SEGMENT_REFRESHES]).await?;
    if !ctx.table_exist(SEGMENT_REFRESHES)? {
        return Ok(Vec::new());
    }
    let df = ctx
        .table(SEGMENT_REFRESHES)
        .await?
        .filter(col("segment").eq(lit(segment)))?
        .sort(vec![col("refresh_version").sort(false, false)])?;
    let df = first(df, limit)?;
    Ok(refreshes_of(df)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// The latest refresh version of `segment` (`None`: never refreshed).
pub async fn latest_version(engine: &Engine, segment: &str) -> Result<Option<i64>> {
    Ok(history(engine, segment, 1)
        .await?
        .first()
        .map(|r| r.version))
}

/// The first `limit` members of `segment` by profile id, with user id and e-mail.
pub async fn members(engine: &Engine, segment: &str, limit: usize) -> Result<Vec<Member>> {
    let ctx = session(engine, &[AUDIENCE_MEMBERSHIP, PROFILES]).await?;
    if !ctx.table_exist(AUDIENCE_MEMBERSHIP)? {
        return Ok(Vec::new());
    }
    let mut df = ctx
        .table(AUDIENCE_MEMBERSHIP)
        .await?
        .filter(col("segment").eq(lit(segment)))?
        .select_columns(&["profile_id", "since"])?;
    df = if ctx.table_exist(PROFILES)? {
        let profiles = ctx.table(PROFILES).await?.select(vec![
            col("profile_id").alias("p_id"),
            col("user_id"),
            col("email"),
        ])?;
        df.join(
            profiles,
            datafusion::common::JoinType::Left,
            &["profile_id"],
            &["p_id"],
            None,
        )?
        .select_columns(&["profile_id", "since", "user_id", "email"])?
    } else {
        df.select(vec![
            col("profile_id"),
            col("since"),
            lit(datafusion::scalar::ScalarValue::Utf8(None)).alias("user_id"),
            lit(datafusion::scalar::ScalarValue::Utf8(None)).alias("email"),
        ])?
    };
    let df = first(df.sort(vec![col("profile_id").sort(true, false)])?, limit)?;
    let mut out = Vec::new();
    for b in rows(df).await? {
        let (pid, since) = (strings(&b, "profile_id")?, int64s(&b, "since")?);
        let (user, email) = (strings(&b, "user_id")?, strings(&b, "email")?);
        for r in 0..b.num_rows() {
            out.push(Member {
                profile_id: pid.value(r).to_owned(),
                since: since.value(r),
                user_id: text(&user, r),
                email: text(&email, r),
            });
        }
    }
    Ok(out)
}

/// `audience_changes` of `segment` after refresh version `since`, ordered by refresh
/// version, then change, then profile id.
async fn changes_frame(engine: &Engine, segment: &str, since: i64) -> Result<Option<DataFrame>> {
    let ctx = session(engine, &[AUDIENCE_CHANGES]).await?;
    if !ctx.table_exist(AUDIENCE_CHANGES)? {
        return Ok(None);
    }
    Ok(Some(
        ctx.table(AUDIENCE_CHANGES)
            .await?
            .filter(
                col("segment")
                    .eq(lit(segment))
                    .and(col("refresh_version").gt(lit(since))),
            )?
            .sort(vec![
                col("refresh_version").sort(true, false),
                col("change").sort(true, false),
                col("profile_id").sort(true, false),
            ])?,
    ))
}

fn changes_of(b: &RecordBatch) -> Result<Vec<Change>> {
    let (pid, change, merged) = (
        strings(b, "profile_id")?,
        strings(b, "change")?,
        strings(b, "merged_into")?,
    );
    let (version, at) = (int64s(b, "refresh_version")?, int64s(b, "changed_at")?);
    Ok((0..b.num_rows())
        .map(|r| Change {
            refresh_version: version.value(r),
            change: if change.value(r) == "entered" {
                ChangeKind::Entered
            } else {
                ChangeKind::Exited
            },
            profile_id: pid.value(r).to_owned(),
            changed_at: at.value(r),
            merged_into: text(&merged, r),
        })
        .collect())
}

/// The first `limit` changes of `segment` after refresh version `since`, and how many
/// entered and exited in all.
pub async fn changes(
    engine: &Engine,
    segment: &str,
    since: i64,
    limit: usize,
) -> Result<(Vec<Change>, u64, u64)> {
    let Some(df) = changes_frame(engine, segment, since).await? else {
        return Ok((Vec::new(), 0, 0));
    };
    let (mut entered, mut exited) = (0u64, 0u64);
    let mut shown = Vec::new();
    for b in rows(df).await? {
        for c in changes_of(&b)? {
            match c.change {
                ChangeKind::Entered => entered += 1,
                ChangeKind::Exited => exited += 1,
            }
            if shown.len() < limit {
                shown.push(c);
            }
        }
    }
    Ok((shown, entered, exited))
}

/// Every change of `segment` after refresh version `since`, streamed in chunks as the
/// lake is read (for `StreamAudience` and activation).
pub async fn change_stream(
    engine: &Engine,
    segment: &str,
    since: i64,
) -> Result<std::pin::Pin<Box<dyn Stream<Item = Result<Vec<Change>>> + Send>>> {
    let Some(df) = changes_frame(engine, segment, since).await? else {
        return Ok(Box::pin(futures::stream::empty()));
    };
    let stream = df.execute_stream().await?;
    Ok(Box::pin(
        stream
            .map_err(crate::SegmentsError::from)
            .and_then(|b| async move { changes_of(&b) }),
    ))
}
