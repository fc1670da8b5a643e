//! Unmerge: `tessera identity split PROFILE --identifier TYPE:VALUE | --edge A=B`.
//!
//! The evidence that joined an identifier to a profile — every applied edge between it
//! and the rest of the profile, or one named edge — is written to
//! `identity_revocations`; stitching then re-resolves the graph without it (never to be
//! applied again, in incremental runs and full rebuilds alike), the split-off part
//! takes a new stable id, both profiles are rebuilt and the split is recorded in
//! `profile_merges` (`kind = 'split'`).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use chrono::Utc;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use tessera_core::config::IdentitySection;
use tessera_core::privacy::parse_subject;
use tessera_core::schema::{self, IDENTITY_EDGES, IDENTITY_MAP, IDENTITY_REVOCATIONS};
use tessera_core::sql::literal;
use tessera_engine::Engine;
use tessera_lake::CommitNote;

use crate::error::{IdentityError, Result};
use crate::stitch::{StitchOptions, StitchProgress, StitchReport, stitch};

/// What to split off a profile.
#[derive(Debug, Clone)]
pub enum SplitTarget {
    /// An identifier (`TYPE:VALUE`): every applied edge joining it to the profile.
    Identifier(String),
    /// One edge, `TYPE:VALUE=TYPE:VALUE`.
    Edge(String, String),
}

/// What a split did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SplitReport {
    pub profile_id: String,
    /// The edges revoked: `[a_type, a_value, b_type, b_value]`.
    pub revoked: Vec<[String; 4]>,
    /// The profile the split-off identifier is in now.
    pub split_off: Option<String>,
    pub stitch: StitchReport,
}

fn bad(message: String) -> IdentityError {
    IdentityError::BadIdentifier(message)
}

async fn rows(ctx: &SessionContext, sql: &str, table: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut stream = tessera_engine::execute(ctx, sql, tessera_engine::Policy::ReadOnly).await?;
    let mut out = Vec::new();
    while let Some(batch) = stream.try_next().await.map_err(|e| IdentityError::Query {
        file: table.into(),
        source: e,
    })? {
        let cols: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Utf8))
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let c = c.as_string::<i32>();
                        c.is_valid(row).then(|| c.value(row).to_owned())
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// The profile holding identifier `(t, v)`.
async fn profile_of(ctx: &SessionContext, t: &str, v: &str) -> Result<Option<String>> {
    let found = rows(
        ctx,
        &format!(
            "SELECT profile_id FROM {IDENTITY_MAP} WHERE id_type = {} AND id_value = {}",
            literal(t),
            literal(v)
        ),
        IDENTITY_MAP,
    )
    .await?;
    Ok(found.into_iter().next().and_then(|r| r[0].clone()))
}

fn identifier(text: &str) -> Result<(String, String)> {
    let (t, v) = parse_subject(text).map_err(bad)?;
    if t == "profile_id" {
        return Err(bad(format!(
            "{text:?}: give an identifier of the profile (TYPE:VALUE), not a profile id"
        )));
    }
    Ok((t, v))
}

/// Splits `target` off `profile` (a profile id or any identifier of it), then stitches.
#[allow(clippy::too_many_arguments)]
pub async fn split(
    engine: &Engine,
    project_dir: &Path,
    config: &IdentitySection,
    profile: &str,
    target: &SplitTarget,
    reason: Option<&str>,
    actor: &str,
    progress: &dyn StitchProgress,
) -> Result<SplitReport> {
    let lake = engine.lake();
    if !lake.exists(IDENTITY_MAP).await? || !lake.exists(IDENTITY_EDGES).await? {
        return Err(bad(
            "no identity graph yet: run `tessera stitch` first".into()
        ));
    }
    let ctx = engine.session().await?;
    let profile_id = if profile.starts_with("p_") && !profile.contains(':') {
        let known = rows(
            &ctx,
            &format!(
                "SELECT profile_id FROM {IDENTITY_MAP} WHERE profile_id = {} LIMIT 1",
                literal(profile)
            ),
            IDENTITY_MAP,
        )
        .await?;
        if known.is_empty() {
            return Err(bad(format!(
                "no profile {profile}: it may have been merged away; `tessera profile \
                 profile_id:{profile}` shows where it went"
            )));
        }
        profile.to_owned()
    } else {
        let (t, v) = identifier(profile)?;
        profile_of(&ctx, &t, &v)
            .await?
            .ok_or_else(|| bad(format!("no profile holds {t}:{v}")))?
    };
    let applied = "status IN ('merged', 'linked')";
    let edges = match target {
        SplitTarget::Identifier(text) => {
            let (t, v) = identifier(text)?;
            match profile_of(&ctx, &t, &v).await? {
                Some(p) if p == profile_id => {}
                Some(p) => {
                    return Err(bad(format!(
                        "{t}:{v} is not in profile {profile_id} (it is in {p})"
                    )));
                }
                None => return Err(bad(format!("{t}:{v} is in no profile"))),
            }
            let (t, v) = (literal(&t), literal(&v));
            rows(
                &ctx,
                &format!(
                    "SELECT a_type, a_value, b_type, b_value FROM {IDENTITY_EDGES} \
                     WHERE {applied} AND profile_id = {} \
                       AND ((a_type = {t} AND a_value = {v}) OR (b_type = {t} AND b_value = {v}))",
                    literal(&profile_id)
                ),
                IDENTITY_EDGES,
            )
            .await?
        }
        SplitTarget::Edge(x, y) => {
            let ((xt, xv), (yt, yv)) = (identifier(x)?, identifier(y)?);
            let (xt, xv, yt, yv) = (literal(&xt), literal(&xv), literal(&yt), literal(&yv));
            rows(
                &ctx,
                &format!(
                    "SELECT a_type, a_value, b_type, b_value FROM {IDENTITY_EDGES} \
                     WHERE {applied} AND profile_id = {} AND \
                       ((a_type = {xt} AND a_value = {xv} AND b_type = {yt} AND b_value = {yv}) OR \
                        (a_type = {yt} AND a_value = {yv} AND b_type = {xt} AND b_value = {xv}))",
                    literal(&profile_id)
                ),
                IDENTITY_EDGES,
            )
            .await?
        }
    };
    let mut revoked: Vec<[String; 4]> = edges
        .into_iter()
        .map(|r| {
            let s = |i: usize| r[i].clone().unwrap_or_default();
            [s(0), s(1), s(2), s(3)]
        })
        .collect();
    revoked.sort();
    revoked.dedup();
    if revoked.is_empty() {
        return Err(bad(match target {
            SplitTarget::Identifier(t) => {
                format!("no edge joins {t} to the rest of profile {profile_id}: it is alone in it")
            }
            SplitTarget::Edge(x, y) => format!(
                "profile {profile_id} has no applied edge {x}={y} (`tessera sql \"SELECT * FROM \
                 identity_edges WHERE profile_id = '{profile_id}'\"` lists its edges)"
            ),
        }));
    }
    let def = schema::table(IDENTITY_REVOCATIONS).expect("a standard table");
    let mut writer = lake.append_writer(&def).await?;
    writer
        .write(revocation_batch(&revoked, &profile_id, reason, actor)?)
        .await?;
    writer
        .commit(CommitNote::new("revoke", actor).detail("profile_id", profile_id.as_str()))
        .await?;

    let report = stitch(
        engine,
        project_dir,
        config,
        &StitchOptions {
            actor: actor.to_owned(),
            resolve_again: true,
            ..StitchOptions::default()
        },
        progress,
    )
    .await?;
    let split_off = match target {
        SplitTarget::Identifier(text) => {
            let (t, v) = identifier(text)?;
            let ctx = engine.session().await?;
            profile_of(&ctx, &t, &v).await?
        }
        SplitTarget::Edge(..) => None,
    };
    Ok(SplitReport {
        profile_id,
        revoked,
        split_off,
        stitch: report,
    })
}

fn revocation_batch(
    edges: &[[String; 4]],
    profile: &str,
    reason: Option<&str>,
    actor: &str,
) -> Result<RecordBatch> {
    let now = Utc::now().timestamp_micros();
    let mut cols: Vec<StringBuilder> = (0..7).map(|_| StringBuilder::new()).collect();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for e in edges {
        for (i, v) in e.iter().enumerate() {
            cols[i].append_value(v);
        }
        cols[4].append_value(profile);
        cols[5].append_option(reason);
        cols[6].append_value(actor);
        at.append_value(now);
    }
    let mut columns: Vec<ArrayRef> = cols
        .iter_mut()
        .map(|c| Arc::new(c.finish()) as ArrayRef)
        .collect();
    columns.push(Arc::new(at.finish()));
    Ok(RecordBatch::try_new(
        schema::identity_revocations_schema(),
        columns,
    )?)
}
