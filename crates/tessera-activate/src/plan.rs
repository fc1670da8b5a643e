//! Planning a sync run: what changed in the segment since the last run, which members
//! may be sent (consent), and the batches, written to the ledger before anything is
//! sent.
//!
//! - The first run, and every run of a `full` sync, sends the whole membership of the
//!   latest refresh (`Audience Entered`); later runs send exactly the
//!   `audience_changes` after the last planned refresh version, up to the latest.
//! - A member is in one batch with all its changes of the run, in refresh order, so a
//!   profile's `exited` never overtakes its `entered`.
//! - A `mirror` run whose audience would fall below `min_ratio` of the last planned
//!   size is planned `held` (nothing sent until confirmed).
//! - With consent categories on the destination, members are routed by Segment's
//!   consent rule (`tessera_core::privacy::consent_allows` over the `consent` table
//!   stitching builds from `context.consent.categoryPreferences`): a profile that never
//!   stated a preference is sent; one that did is sent only when it granted every one
//!   of the destination's categories; the others are left out and counted (`skipped`).

use std::collections::HashMap;

use datafusion::arrow::array::Array;
use serde_json::Value;
use tessera_core::config::{SyncMode, SyncSection};
use tessera_core::privacy::{ConsentPreferences, consent_allows};
use tessera_core::schema::CONSENT;
use tessera_engine::Engine;
use tessera_engine::columns::strings;
use tessera_segments::audience::{self, ChangeKind};

pub use crate::member::{Change, Member};

use crate::destination::Destination;
use crate::error::{ActivateError, Result};
use crate::ledger::{Row, Status};

/// A run as planned, before it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub sync: String,
    pub destination: String,
    pub segment: String,
    pub run: i64,
    pub from_version: i64,
    pub to_version: i64,
    /// A mirror run held for confirmation.
    pub held: bool,
    pub batches: Vec<Vec<Member>>,
    /// Members left out for want of consent.
    pub skipped: u64,
    /// The audience's size at `from_version` (none on a first run) and `to_version`.
    pub previous_size: Option<i64>,
    pub size: i64,
}

impl Plan {
    /// Members (changes) in all batches.
    pub fn members(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }

    /// The ledger rows recording the plan.
    pub fn rows(&self) -> Vec<Row> {
        let at = chrono::Utc::now().timestamp_micros();
        self.batches
            .iter()
            .enumerate()
            .map(|(seq, members)| Row {
                sync: self.sync.clone(),
                destination: self.destination.clone(),
                segment: self.segment.clone(),
                run: self.run,
                from_version: self.from_version,
                to_version: self.to_version,
                batch_id: format!("{}-{}-{seq}", self.sync, self.run),
                seq: seq as i64,
                size: members.len() as i64,
                members: Some(members.clone()),
                attempt: 0,
                status: if self.held {
                    Status::Held
                } else {
                    Status::Planned
                },
                code: None,
                message: None,
                next_attempt_at: None,
                at,
                // Counted once, on the run's first batch.
                skipped: if seq == 0 { self.skipped as i64 } else { 0 },
            })
            .collect()
    }
}

/// Every profile's stated consent, from the `consent` table (`None`: the destination
/// is mapped to no category, so consent does not constrain it). A profile absent from
/// the map never stated a preference.
async fn consenting(
    engine: &Engine,
    categories: &[String],
) -> Result<Option<HashMap<String, ConsentPreferences>>> {
    if categories.is_empty() {
        return Ok(None);
    }
    let ctx = engine.session_of(&[CONSENT]).await?;
    let mut out: HashMap<String, ConsentPreferences> = HashMap::new();
    if !ctx.table_exist(CONSENT)? {
        return Ok(Some(out));
    }
    let batches = tessera_engine::columns::collect(
        &ctx,
        "SELECT profile_id, category, CAST(granted AS VARCHAR) AS granted FROM consent",
    )
    .await?;
    for b in &batches {
        let (pid, category, granted) = (
            strings(b, "profile_id")?,
            strings(b, "category")?,
            strings(b, "granted")?,
        );
        for r in 0..b.num_rows() {
            let prefs = out.entry(pid.value(r).to_owned()).or_default();
            if category.is_valid(r) {
                prefs.insert(category.value(r).to_owned(), granted.value(r) == "true");
            }
        }
    }
    Ok(Some(out))
}

/// Cuts `members` (sorted by profile, then refresh) into batches of about `size`,
/// never splitting one profile's changes.
fn batches(members: Vec<Member>, size: usize) -> Vec<Vec<Member>> {
    let mut out: Vec<Vec<Member>> = Vec::new();
    let mut current: Vec<Member> = Vec::new();
    for m in members {
        let same_profile = current.last().is_some_and(|l| l.profile_id == m.profile_id);
        if current.len() >= size && !same_profile {
            out.push(std::mem::take(&mut current));
        }
        current.push(m);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Checks that a sync's `fields` query plans and returns `profile_id` (and, for a file
/// destination, columns the files can hold).
pub async fn check_fields(
    engine: &Engine,
    name: &str,
    sync: &SyncSection,
    destination: &Destination,
) -> Result<()> {
    let Some(query) = &sync.fields else {
        return Ok(());
    };
    let bad = |message: String| ActivateError::Fields {
        sync: name.to_owned(),
        message,
    };
    let ctx = engine.session().await?;
    let df = crate::fields::fields_frame(&ctx, name, query).await?;
    if df
        .schema()
        .field_with_unqualified_name("profile_id")
        .is_err()
    {
        return Err(bad(
            "the query must return a profile_id column (SELECT profile_id, ... FROM profiles)"
                .into(),
        ));
    }
    if let Some(target) = &destination.file {
        crate::file::check_columns(df.schema().as_arrow(), target.format).map_err(bad)?;
    }
    if destination.platform.is_some() {
        check_identifier_columns(df.schema().as_arrow()).map_err(bad)?;
    }
    Ok(())
}

/// An ad platform's `fields` return identifiers only, at least one of them.
fn check_identifier_columns(
    schema: &datafusion::arrow::datatypes::Schema,
) -> std::result::Result<(), String> {
    let mut any = false;
    for f in schema.fields() {
        if f.name() == "profile_id" {
            continue;
        }
        if !crate::ads::IDENTIFIER_COLUMNS.contains(&f.name().as_str()) {
            return Err(format!(
                "column {:?} is not an identifier an ad platform matches on (use {})",
                f.name(),
                crate::ads::IDENTIFIER_COLUMNS.join(", ")
            ));
        }
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(format!(
            "the query returns no identifier to match on (use {})",
            crate::ads::IDENTIFIER_COLUMNS.join(", ")
        ))
    }
}

/// The rows of `query` for `profiles` (by a semi-join on `profile_id`, not a list of
/// literals), as JSON objects by profile.
async fn rows_of(
    engine: &Engine,
    sync: &str,
    query: &str,
    profiles: &[&str],
) -> Result<HashMap<String, serde_json::Map<String, Value>>> {
    use datafusion::arrow::array::{RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let bad = |message: String| ActivateError::Fields {
        sync: sync.to_owned(),
        message,
    };
    let ctx = engine.session().await?;
    let df = crate::fields::fields_frame(&ctx, sync, query).await?;
    let ids = RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(vec![Field::new(
            "__m_pid",
            DataType::Utf8,
            false,
        )])),
        vec![std::sync::Arc::new(StringArray::from_iter_values(
            profiles.iter().copied(),
        ))],
    )?;
    let batches = df
        .join(
            ctx.read_batch(ids)?,
            datafusion::common::JoinType::LeftSemi,
            &["profile_id"],
            &["__m_pid"],
            None,
        )
        .map_err(|e| bad(e.strip_backtrace()))?
        .collect()
        .await
        .map_err(|e| bad(e.strip_backtrace()))?;
    let mut out = HashMap::new();
    for row in crate::fields::json_rows(&batches)? {
        if let Some(Value::String(pid)) = row.get("profile_id") {
            out.insert(pid.clone(), row);
        }
    }
    Ok(out)
}

/// For an ad platform: each profile's last change only, entries with the identifiers
/// of the sync's `fields` (taken now), exits with those their entry sent (`sent`);
/// members with nothing to send are left out and counted.
async fn with_identifiers(
    engine: &Engine,
    name: &str,
    sync: &SyncSection,
    destination: &Destination,
    platform: crate::ads::Platform,
    members: Vec<Member>,
    sent: &HashMap<String, crate::ads::Identifiers>,
) -> Result<(Vec<Member>, u64)> {
    let mut last: Vec<Member> = Vec::with_capacity(members.len());
    for m in members {
        match last.last_mut() {
            Some(l) if l.profile_id == m.profile_id => *l = m,
            _ => last.push(m),
        }
    }
    let entering: Vec<&str> = last
        .iter()
        .filter(|m| m.change == Change::Entered)
        .map(|m| m.profile_id.as_str())
        .collect();
    let query = sync.fields.as_deref().unwrap_or(crate::ads::DEFAULT_FIELDS);
    let rows = if entering.is_empty() {
        HashMap::new()
    } else {
        rows_of(engine, name, query, &entering).await?
    };
    let region = destination.default_region.as_deref();
    let mut left_out = 0u64;
    let mut out = Vec::with_capacity(last.len());
    for mut m in last {
        let ids = match m.change {
            Change::Entered => rows
                .get(&m.profile_id)
                .map(|r| crate::ads::identifiers(platform, r, region)),
            Change::Exited => sent.get(&m.profile_id).cloned(),
        };
        match ids.filter(|i| !i.is_empty()) {
            Some(i) => {
                m.identifiers = Some(Box::new(i));
                out.push(m);
            }
            None => left_out += 1,
        }
    }
    Ok((out, left_out))
}

/// The next run of sync `name` after `last` (`(run, to_version)` of the latest planned
/// run), or `None` when the segment has no newer refresh.
pub async fn plan(
    engine: &Engine,
    name: &str,
    sync: &SyncSection,
    destination: &Destination,
    last: Option<(i64, i64)>,
    sent: &HashMap<String, crate::ads::Identifiers>,
) -> Result<Option<Plan>> {
    check_fields(engine, name, sync, destination).await?;
    let history = audience::history(engine, &sync.segment, usize::MAX).await?;
    let Some(latest) = history.first() else {
        return Err(ActivateError::NotRefreshed {
            sync: name.to_owned(),
            segment: sync.segment.clone(),
        });
    };
    let (last_run, from_version) = last.unwrap_or((0, 0));
    if latest.version <= from_version {
        return Ok(None);
    }
    let to_version = latest.version;
    let first = last.is_none() || sync.mode == SyncMode::Full;
    let mut members: Vec<Member> = if first {
        audience::members(engine, &sync.segment, usize::MAX)
            .await?
            .into_iter()
            .map(|m| Member {
                profile_id: m.profile_id,
                change: Change::Entered,
                refresh_version: to_version,
                changed_at: m.since,
                merged_into: None,
                identifiers: None,
            })
            .collect()
    } else {
        audience::changes(engine, &sync.segment, from_version, usize::MAX)
            .await?
            .0
            .into_iter()
            .filter(|c| c.refresh_version <= to_version)
            .map(|c| Member {
                profile_id: c.profile_id,
                change: match c.change {
                    ChangeKind::Entered => Change::Entered,
                    ChangeKind::Exited => Change::Exited,
                },
                refresh_version: c.refresh_version,
                changed_at: c.changed_at,
                merged_into: c.merged_into,
                identifiers: None,
            })
            .collect()
    };
    let mut skipped = 0u64;
    if let Some(consent) = consenting(engine, &destination.consent).await? {
        members.retain(|m| {
            let ok = consent_allows(consent.get(&m.profile_id), &destination.consent);
            if !ok {
                skipped += 1;
            }
            ok
        });
    }
    members.sort_by(|a, b| {
        (&a.profile_id, a.refresh_version, a.change).cmp(&(
            &b.profile_id,
            b.refresh_version,
            b.change,
        ))
    });
    if let Some(platform) = destination.platform {
        let (kept, left_out) =
            with_identifiers(engine, name, sync, destination, platform, members, sent).await?;
        members = kept;
        skipped += left_out;
    }
    let previous_size = last.and_then(|_| {
        history
            .iter()
            .find(|r| r.version == from_version)
            .map(|r| r.members)
    });
    let held = sync.mode == SyncMode::Mirror
        && previous_size
            .is_some_and(|p| p > 0 && (latest.members as f64) < sync.min_ratio * p as f64);
    Ok(Some(Plan {
        sync: name.to_owned(),
        destination: sync.destination.clone(),
        segment: sync.segment.clone(),
        run: last_run + 1,
        from_version,
        to_version,
        held,
        batches: batches(members, destination.batch_size),
        skipped,
        previous_size,
        size: latest.members,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, v: i64, c: Change) -> Member {
        Member {
            profile_id: p.into(),
            change: c,
            refresh_version: v,
            changed_at: v,
            merged_into: None,
            identifiers: None,
        }
    }

    #[test]
    fn a_profile_never_spans_two_batches() {
        let members = vec![
            m("a", 1, Change::Entered),
            m("b", 1, Change::Entered),
            m("b", 2, Change::Exited),
            m("c", 1, Change::Entered),
            m("d", 2, Change::Entered),
        ];
        let b = batches(members, 1);
        let profiles: Vec<Vec<&str>> = b
            .iter()
            .map(|x| x.iter().map(|m| m.profile_id.as_str()).collect())
            .collect();
        assert_eq!(
            profiles,
            vec![vec!["a"], vec!["b", "b"], vec!["c"], vec!["d"]]
        );
        assert_eq!(b[1][0].change, Change::Entered, "entered before exited");
        assert!(batches(Vec::new(), 10).is_empty());
    }
}
