//! Refreshing segments: evaluate each one (dependencies first), compare its members with
//! the previous refresh, and record who entered and who exited.
//!
//! A run writes three tables, each commit tagged with the Delta application
//! transaction `tessera-segments` = the run number:
//!
//! 1. `audience_changes` (append): `entered` / `exited` rows of every refreshed segment;
//! 2. `segment_refreshes` (append): one row per refreshed segment (size, counts,
//!    evaluation time, input versions and their fingerprint);
//! 3. `audience_membership` (replace): the members of every segment.
//!
//! A run interrupted between the commits is finished by the next one before it does
//! anything else: change rows without a refresh log are removed (their run never
//! counted), and a membership older than the refresh log is rebuilt exactly from the
//! logged changes. So `audience_membership` is always the fold of `audience_changes`.
//!
//! A segment is skipped ("unchanged") when its SQL, the versions of the tables it reads
//! and the refresh versions of the segments it reads are those of its last refresh —
//! and, if it reads the clock (`now()`, `as_of()`, `days_since()`, ...), when its last
//! refresh is younger than its `-- refresh:` interval or the evaluation time is pinned
//! to the same instant. A refresh where nothing changed reads only table versions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use datafusion::catalog::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{col, ident};
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};
use tessera_core::schema::{
    self, AUDIENCE_CHANGES, AUDIENCE_MEMBERSHIP, EVENTS, IDENTITY_MAP, PROFILE_MERGES, SCORES,
    SEGMENT_REFRESHES, TableDef,
};
use tessera_engine::Engine;
use tessera_engine::functions::segment::SegmentSources;
use tessera_lake::{CommitNote, Lake};

use crate::SegmentSet;
use crate::error::{Result, SegmentsError};
use crate::file::Segment;
use crate::validate::{self, members_schema};

/// Delta application id of refresh commits.
pub const SEGMENTS_APP: &str = "tessera-segments";

/// What to refresh and how.
#[derive(Debug, Clone, Default)]
pub struct RefreshOptions {
    /// Segments to refresh (with the segments they read); empty is all.
    pub names: Vec<String>,
    /// Re-evaluate even when inputs are unchanged.
    pub force: bool,
    /// Evaluation time of `as_of()` / `days_since()` / `within_days()`, in microseconds
    /// since the epoch; `None` is now (and clock-reading segments then follow their
    /// refresh interval).
    pub as_of_micros: Option<i64>,
    /// Only segments whose `-- refresh:` interval has elapsed (the server's scheduler).
    pub due_only: bool,
    /// Who asks, recorded in commit metadata.
    pub actor: String,
}

impl RefreshOptions {
    /// Refresh `names` (all when empty) now, on request of `actor`.
    pub fn now(
        names: Vec<String>,
        force: bool,
        as_of_micros: Option<i64>,
        actor: impl Into<String>,
    ) -> RefreshOptions {
        RefreshOptions {
            names,
            force,
            as_of_micros,
            due_only: false,
            actor: actor.into(),
        }
    }

    /// Refresh the segments whose interval has elapsed (the server's scheduler).
    pub fn due(as_of_micros: Option<i64>, actor: impl Into<String>) -> RefreshOptions {
        RefreshOptions {
            due_only: true,
            as_of_micros,
            actor: actor.into(),
            ..RefreshOptions::default()
        }
    }
}

/// What happened to one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Evaluated and recorded.
    Refreshed,
    /// Inputs unchanged since its last refresh; not evaluated.
    Unchanged,
    /// Its refresh interval has not elapsed (scheduled runs only).
    NotDue,
}

impl Status {
    /// How every front door names it: `refreshed`, `unchanged`, `not_due`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Refreshed => "refreshed",
            Status::Unchanged => "unchanged",
            Status::NotDue => "not_due",
        }
    }
}

/// One segment's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub segment: String,
    pub status: Status,
    /// Its refresh version after this run.
    pub refresh_version: i64,
    pub members: u64,
    pub entered: u64,
    pub exited: u64,
    /// Of the exits, how many were profiles merged into another one.
    pub merged: u64,
    pub seconds: f64,
}

/// The result of a refresh run.
#[derive(Debug, Clone)]
pub struct RefreshReport {
    /// The run number (`run` in the tables); 0 when nothing was written.
    pub run: i64,
    /// The evaluation time used.
    pub as_of_micros: i64,
    pub outcomes: Vec<Outcome>,
    /// Whether anything was committed.
    pub written: bool,
    /// What the run did to finish an interrupted earlier run, if anything.
    pub recovered: Option<String>,
}

/// The last logged refresh of a segment.
#[derive(Debug, Clone)]
struct LastRefresh {
    version: i64,
    refreshed_at: i64,
    fingerprint: String,
    members: i64,
}

fn def(name: &str) -> Result<TableDef> {
    schema::table(name).ok_or_else(|| {
        SegmentsError::DataFusion(datafusion::error::DataFusionError::Internal(format!(
            "no table definition for {name}"
        )))
    })
}

/// Registers `name` of the lake (if it exists) in a bare session, for reading state.
async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// A text column of a batch as owned strings (nulls skipped as empty).
fn strings(batch: &RecordBatch, i: usize) -> Result<Vec<Option<String>>> {
    let array = arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)?;
    let array = array.as_string::<i32>();
    Ok((0..array.len())
        .map(|r| (!array.is_null(r)).then(|| array.value(r).to_owned()))
        .collect())
}

fn int64s(batch: &RecordBatch, i: usize) -> Result<Vec<i64>> {
    let array = arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Int64)?;
    let array = array.as_primitive::<Int64Type>();
    Ok((0..array.len()).map(|r| array.value(r)).collect())
}

fn micros(batch: &RecordBatch, i: usize) -> Result<Vec<i64>> {
    let array = arrow::compute::cast(
        batch.column(i),
        &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
    )?;
    let array = array.as_primitive::<TimestampMicrosecondType>();
    Ok((0..array.len()).map(|r| array.value(r)).collect())
}

async fn last_refreshes(ctx: &SessionContext) -> Result<HashMap<String, LastRefresh>> {
    let mut last = HashMap::new();
    if !ctx.table_exist(SEGMENT_REFRESHES)? {
        return Ok(last);
    }
    let batches = collect(
        ctx,
        "SELECT segment, refresh_version, refreshed_at, fingerprint, members \
         FROM segment_refreshes",
    )
    .await?;
    for b in &batches {
        let (names, versions, at, fps, members) = (
            strings(b, 0)?,
            int64s(b, 1)?,
            micros(b, 2)?,
            strings(b, 3)?,
            int64s(b, 4)?,
        );
        for i in 0..b.num_rows() {
            let name = names[i].clone().unwrap_or_default();
            let row = LastRefresh {
                version: versions[i],
                refreshed_at: at[i],
                fingerprint: fps[i].clone().unwrap_or_default(),
                members: members[i],
            };
            match last.get(&name) {
                Some(l) if l.version >= row.version => {}
                _ => {
                    last.insert(name, row);
                }
            }
        }
    }
    Ok(last)
}

/// The lake tables a segment reads, with views expanded to their tables.
fn input_tables(segment: &Segment) -> Vec<String> {
    let mut tables: Vec<String> = Vec::new();
    for t in &segment.tables {
        if t == "profile_events" {
            tables.push(EVENTS.into());
            tables.push(IDENTITY_MAP.into());
        } else if t == "profile_scores" {
            tables.push(SCORES.into());
        } else {
            tables.push(t.clone());
        }
    }
    tables.sort();
    tables.dedup();
    tables
}

async fn table_version(
    lake: &Lake,
    cache: &mut BTreeMap<String, Option<i64>>,
    name: &str,
) -> Result<Option<i64>> {
    if let Some(v) = cache.get(name) {
        return Ok(*v);
    }
    let known = schema::table(name).is_some();
    // The version of the last commit that changed rows: a compaction is not new data.
    let v = if known {
        lake.data_version(name).await?
    } else {
        None
    };
    cache.insert(name.to_owned(), v);
    Ok(v)
}

/// Refreshes segments of `set` as `options` say.
/// The one front door of refreshes (CLI, `tessera.v1`, the scheduler): reads the
/// project's segment files, makes sure the lake has its tables, and refreshes.
pub async fn refresh_project(
    engine: &Engine,
    project_dir: &std::path::Path,
    options: &RefreshOptions,
) -> Result<RefreshReport> {
    let set = SegmentSet::load(project_dir)?;
    if set.segments().is_empty() {
        return Ok(RefreshReport {
            run: 0,
            as_of_micros: options
                .as_of_micros
                .unwrap_or_else(|| chrono::Utc::now().timestamp_micros()),
            outcomes: Vec::new(),
            written: false,
            recovered: None,
        });
    }
    engine.lake().create_missing_tables().await?;
    refresh(engine, &set, options).await
}

/// Refreshes the segments of `set` chosen by `options` (see [`refresh_project`]).
pub async fn refresh(
    engine: &Engine,
    set: &SegmentSet,
    options: &RefreshOptions,
) -> Result<RefreshReport> {
    let lake = engine.lake().clone();
    let targets = set.with_dependencies(&options.names)?;
    let now = chrono::Utc::now().timestamp_micros();
    let as_of = options.as_of_micros.unwrap_or(now);
    let engine = engine.with_as_of(as_of);

    let (recovered, last_run) = recover(&engine).await?;
    let state = engine.session_of(&[SEGMENT_REFRESHES]).await?;
    let last = last_refreshes(&state).await?;

    // Which segments need evaluating.
    let mut versions_cache = BTreeMap::new();
    let mut plan: Vec<(&Segment, Status, String, String)> = Vec::new();
    let mut new_versions: HashMap<String, i64> = HashMap::new();
    for segment in &targets {
        let mut inputs = serde_json::Map::new();
        for t in input_tables(segment) {
            let v = table_version(&lake, &mut versions_cache, &t).await?;
            inputs.insert(
                t,
                v.map_or(serde_json::Value::Null, serde_json::Value::from),
            );
        }
        let mut refs: Vec<&str> = segment
            .references
            .iter()
            .map(|r| r.segment.as_str())
            .collect();
        refs.sort();
        refs.dedup();
        for r in refs {
            let v = new_versions
                .get(r)
                .copied()
                .or_else(|| last.get(r).map(|l| l.version))
                .unwrap_or(0);
            inputs.insert(format!("segment:{r}"), serde_json::Value::from(v));
        }
        if segment.reads_clock && options.as_of_micros.is_some() {
            inputs.insert("as_of".into(), serde_json::Value::from(as_of));
        }
        let inputs = serde_json::Value::Object(inputs).to_string();
        let mut hasher = Sha256::new();
        hasher.update(segment.text.as_bytes());
        hasher.update([0]);
        hasher.update(inputs.as_bytes());
        let fingerprint: String = hasher
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();

        let previous = last.get(&segment.name);
        let age = previous
            .map(|l| Duration::from_micros(now.saturating_sub(l.refreshed_at).max(0) as u64));
        let interval_elapsed = match (segment.refresh, age) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(every), Some(age)) => age >= every,
        };
        let same_inputs = previous.is_some_and(|l| l.fingerprint == fingerprint);
        let clock_fresh = !segment.reads_clock
            || options.as_of_micros.is_some()
            || (segment.refresh.is_some() && !interval_elapsed);
        let status = if options.due_only && !interval_elapsed && !options.force {
            Status::NotDue
        } else if same_inputs && clock_fresh && !options.force {
            Status::Unchanged
        } else {
            Status::Refreshed
        };
        if status == Status::Refreshed {
            new_versions.insert(segment.name.clone(), previous.map_or(1, |l| l.version + 1));
        }
        plan.push((segment, status, fingerprint, inputs));
    }

    let mut outcomes: Vec<Outcome> = plan
        .iter()
        .map(|(s, status, _, _)| {
            let previous = last.get(&s.name);
            Outcome {
                segment: s.name.clone(),
                status: *status,
                refresh_version: previous.map_or(0, |l| l.version),
                members: previous.map_or(0, |l| l.members.max(0) as u64),
                entered: 0,
                exited: 0,
                merged: 0,
                seconds: 0.0,
            }
        })
        .collect();
    if new_versions.is_empty() {
        return Ok(RefreshReport {
            run: 0,
            as_of_micros: as_of,
            outcomes,
            written: false,
            recovered,
        });
    }

    // One session: validate what will run (planning only; segments of this run are
    // empty until evaluated), then evaluate in order, each result replacing its empty
    // stand-in for the segments that read it.
    let to_run: Vec<&Segment> = plan
        .iter()
        .filter(|(_, st, _, _)| *st == Status::Refreshed)
        .map(|(s, _, _, _)| *s)
        .collect();
    let sources = Arc::new(SegmentSources::default());
    validate::empty_members(&sources, to_run.iter().copied())?;
    let ctx = engine.session_with(sources.clone()).await?;
    validate::check_all(&ctx, &to_run).await?;
    let mut results: HashMap<String, (Vec<String>, f64)> = HashMap::new();
    for segment in &to_run {
        let started = Instant::now();
        let members = evaluate(&ctx, segment).await?;
        let table = MemTable::try_new(members_schema(), vec![vec![members_batch(&members)?]])?;
        sources.set(&segment.name, Arc::new(table));
        results.insert(
            segment.name.clone(),
            (members, started.elapsed().as_secs_f64()),
        );
    }

    // Previous members of every segment (and merges for exits), from the same session.
    let previous = read_membership(&ctx).await?;
    let run = last_run + 1;

    let mut membership = MembershipRows::default();
    let mut changes = ChangeRows::default();
    let mut log = LogRows::default();
    let mut merges: Option<HashMap<String, String>> = None;
    for (segment, status, fingerprint, inputs) in &plan {
        let old = previous.get(&segment.name);
        let Some((members, seconds)) = results.get(&segment.name) else {
            if let Some(old) = old {
                for (profile, (since, version)) in old {
                    membership.push(&segment.name, profile, *since, *version);
                }
            }
            continue;
        };
        debug_assert_eq!(*status, Status::Refreshed);
        let version = new_versions.get(&segment.name).copied().unwrap_or(1);
        let empty = HashMap::new();
        let old = old.unwrap_or(&empty);
        let now_set: HashSet<&str> = members.iter().map(String::as_str).collect();
        let mut entered = 0u64;
        for profile in members {
            match old.get(profile) {
                Some((since, _)) => membership.push(&segment.name, profile, *since, version),
                None => {
                    entered += 1;
                    membership.push(&segment.name, profile, now, version);
                    changes.push(&segment.name, profile, "entered", version, now, None, run);
                }
            }
        }
        let mut exits: Vec<&String> = old
            .keys()
            .filter(|p| !now_set.contains(p.as_str()))
            .collect();
        exits.sort();
        let mut merged = 0u64;
        if !exits.is_empty() && merges.is_none() {
            merges = Some(read_merges(&ctx).await?);
        }
        for profile in &exits {
            let into = merges.as_ref().and_then(|m| survivor(m, profile));
            if into.is_some() {
                merged += 1;
            }
            changes.push(
                &segment.name,
                profile,
                "exited",
                version,
                now,
                into.as_deref(),
                run,
            );
        }
        log.push(LogRow {
            segment: segment.name.clone(),
            version,
            run,
            refreshed_at: now,
            as_of,
            members: members.len() as i64,
            entered: entered as i64,
            exited: exits.len() as i64,
            fingerprint: fingerprint.clone(),
            inputs: inputs.clone(),
            duration_ms: (*seconds * 1000.0) as i64,
        });
        if let Some(o) = outcomes.iter_mut().find(|o| o.segment == segment.name) {
            o.refresh_version = version;
            o.members = members.len() as u64;
            o.entered = entered;
            o.exited = exits.len() as u64;
            o.merged = merged;
            o.seconds = *seconds;
        }
    }
    // Segments outside this run keep their members.
    for (name, rows) in &previous {
        if plan.iter().any(|(s, _, _, _)| &s.name == name) {
            continue;
        }
        for (profile, (since, version)) in rows {
            membership.push(name, profile, *since, *version);
        }
    }

    let refreshed = log.segments();
    let note = |what: &str| {
        CommitNote::new("segments refresh", &options.actor)
            .detail("segments", refreshed.clone())
            .detail("table", what)
            .transaction(SEGMENTS_APP, run)
    };
    let mut w = lake.append_writer(&def(AUDIENCE_CHANGES)?).await?;
    w.write(changes.finish()?).await?;
    w.commit(note(AUDIENCE_CHANGES)).await?;
    let mut w = lake.append_writer(&def(SEGMENT_REFRESHES)?).await?;
    w.write(log.finish()?).await?;
    w.commit(note(SEGMENT_REFRESHES)).await?;
    let mut w = lake.replace_writer(&def(AUDIENCE_MEMBERSHIP)?).await?;
    w.write(membership.finish()?).await?;
    w.commit(note(AUDIENCE_MEMBERSHIP)).await?;

    Ok(RefreshReport {
        run,
        as_of_micros: as_of,
        outcomes,
        written: true,
        recovered,
    })
}

/// Runs `segment` and returns its distinct, non-null profile ids, sorted.
pub async fn evaluate(ctx: &SessionContext, segment: &Segment) -> Result<Vec<String>> {
    let plan = validate::plan(ctx, segment)
        .await
        .map_err(|e| SegmentsError::Invalid(vec![e]))?;
    let query = |source| SegmentsError::Query {
        segment: segment.name.clone(),
        source,
    };
    let df = DataFrame::new(ctx.state(), plan)
        .select(vec![ident("profile_id")])
        .and_then(|df| df.filter(col("profile_id").is_not_null()))
        .and_then(|df| df.distinct())
        .map_err(query)?;
    let batches = df.collect().await.map_err(query)?;
    let mut members = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for b in &batches {
        members.extend(strings(b, 0)?.into_iter().flatten());
    }
    members.sort_unstable();
    Ok(members)
}

pub(crate) fn members_batch(members: &[String]) -> Result<RecordBatch> {
    let mut b = StringBuilder::with_capacity(members.len(), members.len() * 24);
    for m in members {
        b.append_value(m);
    }
    Ok(RecordBatch::try_new(
        members_schema(),
        vec![Arc::new(b.finish()) as ArrayRef],
    )?)
}

pub(crate) type Membership = HashMap<String, HashMap<String, (i64, i64)>>;

pub(crate) async fn read_membership(ctx: &SessionContext) -> Result<Membership> {
    let mut out: Membership = HashMap::new();
    if !ctx.table_exist(AUDIENCE_MEMBERSHIP)? {
        return Ok(out);
    }
    let batches = collect(
        ctx,
        "SELECT segment, profile_id, since, refresh_version FROM audience_membership",
    )
    .await?;
    for b in &batches {
        let (segments, profiles, since, versions) =
            (strings(b, 0)?, strings(b, 1)?, micros(b, 2)?, int64s(b, 3)?);
        for i in 0..b.num_rows() {
            if let (Some(s), Some(p)) = (&segments[i], &profiles[i]) {
                out.entry(s.clone())
                    .or_default()
                    .insert(p.clone(), (since[i], versions[i]));
            }
        }
    }
    Ok(out)
}

async fn read_merges(ctx: &SessionContext) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    if !ctx.table_exist(PROFILE_MERGES)? {
        return Ok(out);
    }
    let batches = collect(
        ctx,
        "SELECT from_profile_id, into_profile_id FROM profile_merges ORDER BY merged_at",
    )
    .await?;
    for b in &batches {
        let (from, into) = (strings(b, 0)?, strings(b, 1)?);
        for (f, i) in from.into_iter().zip(into) {
            if let (Some(f), Some(i)) = (f, i) {
                out.insert(f, i);
            }
        }
    }
    Ok(out)
}

/// The profile `id` ended up in after following merges, if it was merged.
fn survivor(merges: &HashMap<String, String>, id: &str) -> Option<String> {
    let mut current = merges.get(id)?;
    for _ in 0..1000 {
        match merges.get(current) {
            Some(next) if next != current => current = next,
            _ => break,
        }
    }
    Some(current.clone())
}

/// Finishes a run interrupted between its commits (see the module docs). Returns what
/// it did, and the last run number recorded in any of the three tables.
async fn recover(engine: &Engine) -> Result<(Option<String>, i64)> {
    let lake = engine.lake();
    let mut txn = HashMap::new();
    for name in [AUDIENCE_CHANGES, SEGMENT_REFRESHES, AUDIENCE_MEMBERSHIP] {
        let v = if lake.exists(name).await? {
            lake.transaction_version(name, SEGMENTS_APP)
                .await?
                .unwrap_or(0)
        } else {
            0
        };
        txn.insert(name, v);
    }
    let (changes, log, members) = (
        txn[AUDIENCE_CHANGES],
        txn[SEGMENT_REFRESHES],
        txn[AUDIENCE_MEMBERSHIP],
    );
    let last_run = changes.max(log).max(members);
    if changes > log {
        // Change rows of a run that never logged: they never happened.
        let removed = lake
            .delete_where(
                AUDIENCE_CHANGES,
                &format!("run = {changes}"),
                "tessera segments recovery",
            )
            .await?;
        return Ok((
            Some(format!(
                "removed {removed} change rows of interrupted refresh run {changes}"
            )),
            last_run,
        ));
    }
    if log > members {
        // The run logged its changes but did not replace the membership: apply them.
        let ctx = engine
            .session_of(&[AUDIENCE_MEMBERSHIP, AUDIENCE_CHANGES])
            .await?;
        let mut membership = read_membership(&ctx).await?;
        let batches = collect(
            &ctx,
            &format!(
                "SELECT segment, profile_id, change, refresh_version, changed_at \
                 FROM audience_changes WHERE run = {log}"
            ),
        )
        .await?;
        for b in &batches {
            let (segs, profiles, kinds, versions, at) = (
                strings(b, 0)?,
                strings(b, 1)?,
                strings(b, 2)?,
                int64s(b, 3)?,
                micros(b, 4)?,
            );
            for i in 0..b.num_rows() {
                let (Some(s), Some(p)) = (&segs[i], &profiles[i]) else {
                    continue;
                };
                let rows = membership.entry(s.clone()).or_default();
                if kinds[i].as_deref() == Some("entered") {
                    rows.insert(p.clone(), (at[i], versions[i]));
                } else {
                    rows.remove(p);
                }
            }
        }
        let mut out = MembershipRows::default();
        for (s, rows) in &membership {
            for (p, (since, v)) in rows {
                out.push(s, p, *since, *v);
            }
        }
        let mut w = lake.replace_writer(&def(AUDIENCE_MEMBERSHIP)?).await?;
        w.write(out.finish()?).await?;
        w.commit(
            CommitNote::new("segments recovery", "tessera")
                .detail("run", log)
                .transaction(SEGMENTS_APP, log),
        )
        .await?;
        return Ok((
            Some(format!(
                "rebuilt audience_membership from the changes of interrupted refresh run {log}"
            )),
            last_run,
        ));
    }
    Ok((None, last_run))
}

#[derive(Default)]
struct MembershipRows {
    segment: StringBuilder,
    profile: StringBuilder,
    since: TimestampMicrosecondBuilder,
    version: Int64Builder,
}

impl MembershipRows {
    fn push(&mut self, segment: &str, profile: &str, since: i64, version: i64) {
        self.segment.append_value(segment);
        self.profile.append_value(profile);
        self.since.append_value(since);
        self.version.append_value(version);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            schema::audience_membership_schema(),
            vec![
                Arc::new(self.segment.finish()),
                Arc::new(self.profile.finish()),
                Arc::new(utc(self.since.finish())),
                Arc::new(self.version.finish()),
            ],
        )?)
    }
}

fn utc(a: TimestampMicrosecondArray) -> TimestampMicrosecondArray {
    a.with_timezone("UTC")
}

#[derive(Default)]
struct ChangeRows {
    segment: StringBuilder,
    profile: StringBuilder,
    change: StringBuilder,
    version: Int64Builder,
    at: TimestampMicrosecondBuilder,
    merged_into: StringBuilder,
    run: Int64Builder,
}

impl ChangeRows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        segment: &str,
        profile: &str,
        change: &str,
        version: i64,
        at: i64,
        merged_into: Option<&str>,
        run: i64,
    ) {
        self.segment.append_value(segment);
        self.profile.append_value(profile);
        self.change.append_value(change);
        self.version.append_value(version);
        self.at.append_value(at);
        self.merged_into.append_option(merged_into);
        self.run.append_value(run);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            schema::audience_changes_schema(),
            vec![
                Arc::new(self.segment.finish()),
                Arc::new(self.profile.finish()),
                Arc::new(self.change.finish()),
                Arc::new(self.version.finish()),
                Arc::new(utc(self.at.finish())),
                Arc::new(self.merged_into.finish()),
                Arc::new(self.run.finish()),
            ],
        )?)
    }
}

struct LogRow {
    segment: String,
    version: i64,
    run: i64,
    refreshed_at: i64,
    as_of: i64,
    members: i64,
    entered: i64,
    exited: i64,
    fingerprint: String,
    inputs: String,
    duration_ms: i64,
}

#[derive(Default)]
struct LogRows {
    rows: Vec<LogRow>,
}

impl LogRows {
    fn push(&mut self, row: LogRow) {
        self.rows.push(row);
    }

    fn segments(&self) -> String {
        self.rows
            .iter()
            .map(|r| r.segment.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn finish(self) -> Result<RecordBatch> {
        let text = |f: &dyn Fn(&LogRow) -> &str| {
            let mut b = StringBuilder::new();
            for r in &self.rows {
                b.append_value(f(r));
            }
            Arc::new(b.finish()) as ArrayRef
        };
        let int = |f: &dyn Fn(&LogRow) -> i64| {
            Arc::new(Int64Array::from_iter_values(self.rows.iter().map(f))) as ArrayRef
        };
        let ts = |f: &dyn Fn(&LogRow) -> i64| {
            Arc::new(utc(TimestampMicrosecondArray::from_iter_values(
                self.rows.iter().map(f),
            ))) as ArrayRef
        };
        Ok(RecordBatch::try_new(
            schema::segment_refreshes_schema(),
            vec![
                text(&|r| &r.segment),
                int(&|r| r.version),
                int(&|r| r.run),
                ts(&|r| r.refreshed_at),
                ts(&|r| r.as_of),
                int(&|r| r.members),
                int(&|r| r.entered),
                int(&|r| r.exited),
                text(&|r| &r.fingerprint),
                text(&|r| &r.inputs),
                int(&|r| r.duration_ms),
            ],
        )?)
    }
}
