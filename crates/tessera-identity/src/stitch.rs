//! A stitching run: rules → observations → graph → `identity_edges`, `profile_merges`,
//! `blocked_values`, `identity_map`, then the golden `profiles`.
//!
//! Incremental by default: the `identity_map` commit records, as Delta application
//! transaction `tessera-stitch`, the `events` version it consumed; the next run reads
//! only the event files added since. The graph itself is resolved whole every run, from
//! the edges `identity_edges` holds plus the new observations (minus revoked edges), so
//! stronger evidence that arrives late still wins and an incremental run gives the
//! partition a full rebuild gives. `--full` re-reads every event instead of the stored
//! edges. Ids of the previous map are kept; how profiles changed (merges, splits,
//! moves) goes to `profile_merges`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Array, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use chrono::Utc;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use tessera_core::config::IdentitySection;
use tessera_core::schema::{
    self, BLOCKED_VALUES, EVENTS, IDENTITY_EDGES, IDENTITY_MAP, IDENTITY_REVOCATIONS,
    MATCH_DECISIONS, MATCH_PAIRS, PROFILE_MERGES,
};
use tessera_engine::Engine;
use tessera_lake::CommitNote;

use crate::error::{IdentityError, Result};
use crate::profiles;
use crate::resolve::{
    self, ChangeKind, EdgeStatus, Input, MapRow, NodeKey, Observation, Resolution, Safeguards,
    TypeRules,
};
use crate::rules::{self, Rule};

/// Application transaction id of stitching commits.
pub const STITCH_APP: &str = "tessera-stitch";
/// Application transaction recording the `match_pairs` version a stitch consumed.
pub const MATCH_APP: &str = "tessera-match-pairs";
/// Application transaction recording the `match_decisions` version a stitch consumed.
pub const DECISIONS_APP: &str = "tessera-match-decisions";
/// Name of the generated rule turning `match_pairs` matches into edges.
pub const PROBABILISTIC_RULE: &str = "probabilistic";
const BATCH_ROWS: usize = 65_536;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct StitchOptions {
    /// Rebuild from every event instead of only the new ones.
    pub full: bool,
    /// Who runs it (recorded in commits).
    pub actor: String,
    /// Resolve the graph again even when no event arrived (after a revocation).
    pub resolve_again: bool,
    /// Compute what would change; write nothing.
    pub dry_run: bool,
}

/// Stages of a run, for progress display.
pub trait StitchProgress: Send + Sync {
    /// A stage starts.
    fn stage(&self, message: &str);
}

impl StitchProgress for () {
    fn stage(&self, _: &str) {}
}

/// Per-rule counts.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RuleReport {
    pub rule: String,
    /// Distinct identifier pairs (or single identifiers) the rule produced.
    pub observations: u64,
    /// Values dropped because they do not normalize (an e-mail without `@`, ...).
    pub invalid_values: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StitchReport {
    pub full: bool,
    /// Nothing new since the last run: nothing was written.
    pub up_to_date: bool,
    pub events_version: u64,
    pub previous_events_version: Option<u64>,
    /// Event files read.
    pub event_files: usize,
    pub rules: Vec<RuleReport>,
    /// Edges in the graph (each pair once per rule).
    pub edges: u64,
    pub edges_merged: u64,
    pub edges_rejected: u64,
    /// Edges with a blocked identifier.
    pub edges_held: u64,
    /// Edges revoked by unmerges.
    pub edges_revoked: u64,
    /// Profiles of the previous map merged into another.
    pub merges: u64,
    /// Profiles split off a previous one.
    pub splits: u64,
    /// Moves of identifiers between two profiles that both remain.
    pub moves: u64,
    /// Identifiers of the previous map now in another profile (or in none).
    pub identifiers_moved: u64,
    /// Identifiers blocked (`blocked_values`).
    pub blocked: Vec<BlockedReport>,
    /// Nothing was written (`--dry-run`).
    pub dry_run: bool,
    /// Under `--dry-run`: each change of profiles the run would make.
    pub changes: Vec<ChangeReport>,
    pub identifiers: u64,
    pub new_identifiers: u64,
    pub profiles: u64,
    /// Profiles recomputed by this run (all in a full run; those touched otherwise).
    pub profiles_rebuilt: u64,
    /// Profiles with a stated consent (`consent` table).
    pub consent_profiles: u64,
    pub traits: Vec<String>,
    /// Seconds spent in each stage, in order.
    pub stages: Vec<(String, f64)>,
    /// Under `--dry-run`: the tables the run would write that segments read.
    #[serde(skip)]
    pub predicted: Option<Predicted>,
}

/// What a dry run predicts `identity_map` and `profiles` would hold (in memory), so
/// that segments can be evaluated over them.
#[derive(Debug, Clone)]
pub struct Predicted {
    /// `(table, schema, rows)` of `identity_map` and `profiles`.
    pub tables: Vec<(&'static str, arrow::datatypes::SchemaRef, Vec<RecordBatch>)>,
}

/// One blocked identifier, for the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BlockedReport {
    pub id_type: String,
    pub id_value: String,
    pub reason: String,
    pub links: u64,
}

/// One change of profiles, for a dry run's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangeReport {
    pub kind: ChangeKind,
    pub from: String,
    pub into: String,
    pub identifiers: u64,
}

/// Times stages and forwards them to the progress display.
struct Clock<'a> {
    progress: &'a dyn StitchProgress,
    stages: tessera_core::stages::Stages,
}

impl Clock<'_> {
    fn stage(&mut self, name: &str) {
        self.progress.stage(name);
        self.stages.start(name);
    }
}

/// Runs stitching for the project in `project_dir`, then rebuilds `profiles`.
pub async fn stitch(
    engine: &Engine,
    project_dir: &Path,
    config: &IdentitySection,
    options: &StitchOptions,
    progress: &dyn StitchProgress,
) -> Result<StitchReport> {
    let lake = engine.lake();
    let Some(events) = lake.try_open(EVENTS).await? else {
        return Err(IdentityError::NoEvents);
    };
    let events_version = events.version().unwrap_or(0);
    let map_exists = lake.exists(IDENTITY_MAP).await?;
    let previous = if map_exists {
        lake.transaction_version(IDENTITY_MAP, STITCH_APP)
            .await?
            .and_then(|v| u64::try_from(v).ok())
    } else {
        None
    };
    // What was appended to events since the last run; compaction commits append nothing.
    // A lost history (log cleanup) or deleted/rewritten rows make the run a full one.
    let changes = match (options.full, previous) {
        (false, Some(v)) => lake.changes_between(EVENTS, v, events_version).await?,
        _ => None,
    };
    let incremental = changes.as_ref().filter(|c| !c.rewritten);
    let mut report = StitchReport {
        full: incremental.is_none(),
        events_version,
        previous_events_version: previous,
        ..StitchReport::default()
    };
    let mut clock = Clock {
        progress,
        stages: tessera_core::stages::Stages::default(),
    };
    // Probabilistic matches become edges when match_pairs changed since the last run.
    let match_version = match lake.try_open(MATCH_PAIRS).await? {
        Some(t) => t.version().and_then(|v| i64::try_from(v).ok()),
        None => None,
    };
    let match_consumed = if map_exists {
        lake.transaction_version(IDENTITY_MAP, MATCH_APP).await?
    } else {
        None
    };
    // A decision on a review pair counts as new matches too.
    let decisions_version = match lake.try_open(MATCH_DECISIONS).await? {
        Some(t) => t.version().and_then(|v| i64::try_from(v).ok()),
        None => None,
    };
    let decisions_consumed = if map_exists {
        lake.transaction_version(IDENTITY_MAP, DECISIONS_APP)
            .await?
    } else {
        None
    };
    let new_matches = match_version.is_some()
        && (report.full
            || match_version != match_consumed
            || decisions_version.unwrap_or(-1) != decisions_consumed.unwrap_or(-1));
    if incremental.is_some_and(|c| c.is_empty()) && !new_matches && !options.resolve_again {
        report.up_to_date = true;
        let stats = lake.stats(IDENTITY_MAP).await?;
        report.identifiers = stats.rows;
        return Ok(report);
    }

    let types = config.identifier_types();
    let mut rules = rules::load_rules(&project_dir.join(rules::RULES_DIR), &types)?;
    let mut rules_types: Vec<(String, u32, u32)> = types
        .iter()
        .map(|(n, t)| (n.clone(), t.limit, t.priority))
        .collect();

    // The session reads only the new event files when incremental.
    clock.stage("reading identifiers from events");
    let ctx = engine.session().await?;
    let files: usize = match incremental {
        Some(changes) => {
            tessera_engine::register_appended_events(
                &ctx,
                lake,
                &events,
                changes,
                &Default::default(),
            )
            .await?;
            changes.appended_files()
        }
        None => {
            let files = tessera_lake::table_stats(EVENTS, &events)?.files;
            if files == 0 {
                return Err(IdentityError::NoEvents);
            }
            files
        }
    };
    report.event_files = files;

    // Observations from every rule.
    let mut previous_map: Vec<(String, MapRow)> = Vec::new();
    if map_exists {
        clock.stage("loading the identity map");
        previous_map = load_map(&ctx).await?;
        for (type_name, _) in &previous_map {
            if !rules_types.iter().any(|(n, _, _)| n == type_name) {
                // A type no longer configured: kept, without limit.
                rules_types.push((type_name.clone(), 0, u32::MAX));
            }
        }
    }
    let type_rules = TypeRules::new(rules_types.iter().map(|(n, l, p)| (n.as_str(), *l, *p)));
    let previous_rows: Vec<MapRow> = previous_map
        .into_iter()
        .filter_map(|(type_name, mut row)| {
            row.key.id_type = type_rules.id(&type_name)?;
            Some(row)
        })
        .collect();

    let mut observations = Vec::new();
    if files > 0 {
        for (index, rule) in rules.iter().enumerate() {
            clock.stage(&format!("rule {}", rule.name));
            let (obs, rule_report) = run_rule(&ctx, rule, index as u32, &type_rules).await?;
            observations.extend(obs);
            report.rules.push(rule_report);
        }
    }
    rules.push(Rule {
        name: PROBABILISTIC_RULE.into(),
        sql: probabilistic_rule_sql(type_rules.names(), decisions_version.is_some()),
    });
    let probabilistic = rules.len() as u32 - 1;
    // An empty match_pairs (as `tessera init` creates it) has nothing to add.
    if new_matches && lake.stats(MATCH_PAIRS).await?.rows > 0 {
        clock.stage("rule probabilistic (match_pairs)");
        let rule = &rules[probabilistic as usize];
        let (obs, rule_report) = run_rule(&ctx, rule, probabilistic, &type_rules).await?;
        observations.extend(obs);
        report.rules.push(rule_report);
    }
    for o in &mut observations {
        o.probabilistic = o.rule == probabilistic;
    }
    let observations = dedup_observations(observations);
    // What the new observations name: their profiles are rebuilt.
    let new_keys: HashSet<NodeKey> = observations
        .iter()
        .flat_map(|o| std::iter::once(o.a.clone()).chain(o.b.clone()))
        .collect();

    // The whole graph: the stored edges (of the rules that still exist; probabilistic
    // ones replaced when match_pairs changed) plus the new observations.
    let mut all = observations;
    if !report.full && lake.exists(IDENTITY_EDGES).await? {
        clock.stage("loading identity_edges");
        all.extend(load_edges(&ctx, &rules, &type_rules, new_matches).await?);
    }
    let all = dedup_observations(all);
    let revoked = load_revocations(lake, &ctx, &type_rules).await?;
    let safeguards = Safeguards {
        max_links: config.max_links(),
        max_profile_identifiers: config.max_profile_identifiers(),
        placeholders: config.placeholders(),
    };

    clock.stage("resolving identities");
    let resolution = resolve::resolve(Input {
        types: type_rules.clone(),
        safeguards: &safeguards,
        revoked: &revoked,
        previous: &previous_rows,
        keep_previous: !report.full,
        observations: all,
    });
    let rows = &resolution.rows;
    report.identifiers = rows.len() as u64;
    report.new_identifiers = resolution.new_identifiers;
    for c in &resolution.changes {
        match c.kind {
            ChangeKind::Merge => report.merges += 1,
            ChangeKind::Split => report.splits += 1,
            ChangeKind::Move => report.moves += 1,
        }
    }
    for (_, status) in &resolution.observations {
        match status {
            Some(EdgeStatus::Merged) => report.edges_merged += 1,
            Some(EdgeStatus::Rejected(_)) => report.edges_rejected += 1,
            Some(EdgeStatus::Held(_)) => report.edges_held += 1,
            Some(EdgeStatus::Revoked) => report.edges_revoked += 1,
            _ => {}
        }
        report.edges += u64::from(status.is_some());
    }
    report.blocked = resolution
        .blocked
        .iter()
        .map(|b| BlockedReport {
            id_type: type_rules.name(b.key.id_type).to_owned(),
            id_value: b.key.value.to_string(),
            reason: b.reason.clone(),
            links: b.links,
        })
        .collect();
    // Profiles whose identifiers changed, and those gone.
    let (mut touched, removed, moved) = differences(&previous_rows, &resolution);
    report.identifiers_moved = moved;
    if options.dry_run {
        report.dry_run = true;
        report.changes = resolution
            .changes
            .iter()
            .map(|c| ChangeReport {
                kind: c.kind,
                from: c.from.to_string(),
                into: c.into.to_string(),
                identifiers: c.identifiers,
            })
            .collect();
        report.profiles = rows
            .iter()
            .map(|r| &r.profile_id)
            .collect::<HashSet<_>>()
            .len() as u64;
        clock.stage("predicting profiles");
        report.predicted = Some(predict(engine, project_dir, config, rows, &type_rules).await?);
        report.stages = clock.stages.finish();
        return Ok(report);
    }

    // Writes: edges and merges first, the map last (its transaction marks the run done).
    let now = Utc::now().timestamp_micros();
    let run = events_version as i64;
    let note = |op: &str| {
        CommitNote::new(op, &options.actor)
            .detail("events_version", run)
            .detail("full", report.full)
    };
    clock.stage("writing identity_edges");
    let match_run = match_version.unwrap_or(-1);
    let decisions_run = decisions_version.unwrap_or(-1);
    let mut writer = lake.replace_writer(&table_def(IDENTITY_EDGES)?).await?;
    for batch in edge_batches(&resolution, &rules, &type_rules, run)? {
        writer.write(batch).await?;
    }
    writer
        .commit(
            note("stitch")
                .transaction(STITCH_APP, run)
                .transaction(MATCH_APP, match_run)
                .transaction(DECISIONS_APP, decisions_run),
        )
        .await?;

    clock.stage("writing blocked_values");
    let mut writer = lake.replace_writer(&table_def(BLOCKED_VALUES)?).await?;
    writer
        .write(blocked_batch(&resolution, &type_rules, now, run)?)
        .await?;
    writer
        .commit(note("stitch").transaction(STITCH_APP, run))
        .await?;

    clock.stage("writing profile_merges");
    let merges_def = table_def(PROFILE_MERGES)?;
    let mut writer = lake.append_writer(&merges_def).await?;
    // A run that wrote its merges and died before the map commits them again otherwise.
    let done = lake.transaction_version(PROFILE_MERGES, STITCH_APP).await? == Some(run)
        && lake
            .transaction_version(PROFILE_MERGES, MATCH_APP)
            .await?
            .unwrap_or(-1)
            == match_run
        && lake
            .transaction_version(PROFILE_MERGES, DECISIONS_APP)
            .await?
            .unwrap_or(-1)
            == decisions_run
        && !options.resolve_again;
    if !done {
        writer
            .write(merge_batch(&resolution, &rules, &type_rules, now, run)?)
            .await?;
        writer
            .commit(
                note("stitch")
                    .transaction(STITCH_APP, run)
                    .transaction(MATCH_APP, match_run)
                    .transaction(DECISIONS_APP, decisions_run),
            )
            .await?;
    } else {
        writer.abort();
    }

    clock.stage("writing identity_map");
    let mut writer = lake.replace_writer(&table_def(IDENTITY_MAP)?).await?;
    for chunk in rows.chunks(BATCH_ROWS) {
        writer.write(map_batch(chunk, &type_rules)?).await?;
    }

    writer
        .commit(
            note("stitch")
                .detail("identifiers", report.identifiers)
                .transaction(STITCH_APP, run)
                .transaction(MATCH_APP, match_run)
                .transaction(DECISIONS_APP, decisions_run),
        )
        .await?;

    clock.stage("building profiles");
    let scope = if report.full {
        profiles::Scope::All
    } else {
        // Both ends of every new observation: a rejected edge still brings an event to
        // each side's profile.
        touched.extend(
            new_keys
                .iter()
                .filter_map(|k| resolution.profile_of(k).map(|p| p.to_string())),
        );
        touched.sort_unstable();
        touched.dedup();
        profiles::Scope::Touched { touched, removed }
    };
    let built = profiles::build(engine, project_dir, config, &options.actor, run, scope).await?;
    clock.stage("consent");
    report.consent_profiles = crate::consent::build(engine, &options.actor, run).await? as u64;
    report.profiles = built.profiles;
    report.profiles_rebuilt = built.rebuilt;
    report.traits = built.traits;
    report.stages = clock.stages.finish();
    Ok(report)
}

/// `identity_map` as `rows` and the `profiles` built over it, in memory.
async fn predict(
    engine: &Engine,
    project_dir: &Path,
    config: &IdentitySection,
    rows: &[MapRow],
    types: &TypeRules,
) -> Result<Predicted> {
    let map: Vec<RecordBatch> = rows
        .chunks(BATCH_ROWS)
        .map(|chunk| map_batch(chunk, types))
        .collect::<Result<_>>()?;
    let map_schema = table_def(IDENTITY_MAP)?.schema;
    let ctx = engine.session().await?;
    ctx.deregister_table(IDENTITY_MAP)?;
    ctx.register_table(
        IDENTITY_MAP,
        Arc::new(datafusion::datasource::MemTable::try_new(
            map_schema.clone(),
            vec![map.clone()],
        )?),
    )?;
    tessera_engine::register_views(&ctx).await?;
    let (profiles_schema, profiles) = profiles::predict(&ctx, project_dir, config).await?;
    Ok(Predicted {
        tables: vec![
            (IDENTITY_MAP, map_schema, map),
            (schema::PROFILES, profiles_schema, profiles),
        ],
    })
}

/// The generated rule reading `match_pairs`: each pair decided `match` whose two ids are
/// identifiers written `TYPE:VALUE` of configured types becomes an edge scored with the
/// match probability (other ids — plain record keys — are not identifiers). With
/// `decisions` (`match_decisions` exists) people's decisions count: accepted pairs are
/// `reviewed` edges, rejected ones never edges ([`crate::matching::review`]).
fn probabilistic_rule_sql(types: &[String], decisions: bool) -> String {
    let known = types
        .iter()
        .map(|t| tessera_core::sql::literal(t))
        .collect::<Vec<_>>()
        .join(", ");
    if decisions {
        return crate::matching::review::decided_rule_sql(&known);
    }
    format!(
        "SELECT split_part(id_l, ':', 1) AS a_type, substr(id_l, strpos(id_l, ':') + 1) AS a_value, \
                split_part(id_r, ':', 1) AS b_type, substr(id_r, strpos(id_r, ':') + 1) AS b_value, \
                predicted_at AS seen_at, 'match' AS source, probability AS score \
         FROM {MATCH_PAIRS} \
         WHERE decision = 'match' AND strpos(id_l, ':') > 1 AND strpos(id_r, ':') > 1 \
           AND split_part(id_l, ':', 1) IN ({known}) AND split_part(id_r, ':', 1) IN ({known})"
    )
}

fn table_def(name: &str) -> Result<schema::TableDef> {
    schema::table(name).ok_or_else(|| IdentityError::BadFile {
        file: name.into(),
        message: "unknown table".into(),
    })
}

/// Normalizes a value of identifier type `type_name`; `None` when it is not usable.
pub use tessera_core::privacy::normalize as normalize_identifier;

async fn run_rule(
    ctx: &SessionContext,
    rule: &Rule,
    index: u32,
    types: &TypeRules,
) -> Result<(Vec<Observation>, RuleReport)> {
    let query_err = |source| IdentityError::Query {
        file: rule.name.clone(),
        source,
    };
    let planned = tessera_engine::policy::read_only(ctx, &rule.sql)
        .await
        .map_err(query_err)?;
    let columns: Vec<String> = planned
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().to_lowercase())
        .collect();
    for needed in ["a_type", "a_value", "b_type", "b_value", "seen_at"] {
        if !columns.iter().any(|c| c == needed) {
            return Err(IdentityError::BadFile {
                file: rule.name.clone(),
                message: format!(
                    "the rule returns no {needed} column; it must return a_type, a_value, \
                     b_type, b_value, seen_at (and optionally source, score); it returns {}",
                    columns.join(", ")
                ),
            });
        }
    }
    let source = if columns.iter().any(|c| c == "source") {
        "min(CAST(source AS VARCHAR))"
    } else {
        "CAST(NULL AS VARCHAR)"
    };
    let score = if columns.iter().any(|c| c == "score") {
        "max(CAST(score AS DOUBLE))"
    } else {
        "CAST(1.0 AS DOUBLE)"
    };
    let sql = format!(
        "SELECT CAST(a_type AS VARCHAR) AS a_type, CAST(a_value AS VARCHAR) AS a_value, \
                CAST(b_type AS VARCHAR) AS b_type, CAST(b_value AS VARCHAR) AS b_value, \
                CAST(min(seen_at) AS TIMESTAMP) AS first_seen, \
                CAST(max(seen_at) AS TIMESTAMP) AS last_seen, \
                count(*) AS events, {source} AS source, {score} AS score \
         FROM ({}) AS rule_rows \
         WHERE seen_at IS NOT NULL AND (a_value IS NOT NULL OR b_value IS NOT NULL) \
         GROUP BY 1, 2, 3, 4",
        rule.sql
    );
    let mut stream = ctx
        .sql(&sql)
        .await
        .map_err(query_err)?
        .execute_stream()
        .await
        .map_err(query_err)?;
    let mut report = RuleReport {
        rule: rule.name.clone(),
        ..RuleReport::default()
    };
    let mut out = Vec::new();
    let mut type_ids: HashMap<String, u16> = HashMap::new();
    while let Some(batch) = stream.try_next().await.map_err(query_err)? {
        let text = |i: usize| -> Result<ArrayRef> { Ok(cast(batch.column(i), &DataType::Utf8)?) };
        let (at, av, bt, bv) = (text(0)?, text(1)?, text(2)?, text(3)?);
        let (at, av, bt, bv) = (
            at.as_string::<i32>(),
            av.as_string::<i32>(),
            bt.as_string::<i32>(),
            bv.as_string::<i32>(),
        );
        let micros = |i: usize| -> Result<ArrayRef> {
            let t = cast(
                batch.column(i),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            Ok(cast(&t, &DataType::Int64)?)
        };
        let (first, last) = (micros(4)?, micros(5)?);
        let (first, last) = (
            first.as_primitive::<Int64Type>(),
            last.as_primitive::<Int64Type>(),
        );
        let events = batch.column(6).as_any().downcast_ref::<Int64Array>();
        let src = text(7)?;
        let src = src.as_string::<i32>();
        let scores = cast(batch.column(8), &DataType::Float64)?;
        let scores = scores.as_primitive::<arrow::datatypes::Float64Type>();
        for row in 0..batch.num_rows() {
            let mut side = |t: &arrow::array::StringArray,
                            v: &arrow::array::StringArray|
             -> Result<Option<NodeKey>> {
                if t.is_null(row) || v.is_null(row) {
                    return Ok(None);
                }
                let type_name = t.value(row);
                let id_type = match type_ids.get(type_name) {
                    Some(&id) => id,
                    None => {
                        let id = types
                            .id(type_name)
                            .ok_or_else(|| IdentityError::UnknownType {
                                file: rule.name.clone(),
                                id_type: type_name.to_owned(),
                                known: types.names().join(", "),
                            })?;
                        type_ids.insert(type_name.to_owned(), id);
                        id
                    }
                };
                match normalize_identifier(type_name, v.value(row)) {
                    Some(value) => Ok(Some(NodeKey {
                        id_type,
                        value: value.into_boxed_str(),
                    })),
                    None => {
                        report.invalid_values += 1;
                        Ok(None)
                    }
                }
            };
            let a = side(at, av)?;
            let b = side(bt, bv)?;
            let (a, b) = match (a, b) {
                (Some(a), b) => (a, b),
                (None, Some(b)) => (b, None),
                (None, None) => continue,
            };
            if first.is_null(row) {
                continue;
            }
            out.push(Observation {
                a,
                b,
                first_seen: first.value(row),
                last_seen: last.value(row),
                events: events.map_or(1, |e| e.value(row)),
                rule: index,
                source: src.is_valid(row).then(|| src.value(row).to_owned()),
                score: if scores.is_valid(row) {
                    scores.value(row)
                } else {
                    1.0
                },
                probabilistic: false,
            });
        }
    }
    report.observations = out.len() as u64;
    Ok((out, report))
}

/// Folds observations that normalization made identical (same rule, same pair, in
/// either order).
fn dedup_observations(observations: Vec<Observation>) -> Vec<Observation> {
    let mut index: HashMap<(u32, NodeKey, Option<NodeKey>), usize> = HashMap::new();
    let mut out: Vec<Observation> = Vec::with_capacity(observations.len());
    for mut o in observations {
        if let Some(b) = &o.b {
            if *b == o.a {
                o.b = None;
            } else if *b < o.a {
                let b = o.b.take().unwrap_or_else(|| o.a.clone());
                o.b = Some(std::mem::replace(&mut o.a, b));
            }
        }
        let k = (o.rule, o.a.clone(), o.b.clone());
        match index.get(&k) {
            Some(&i) => {
                let e = &mut out[i];
                e.first_seen = e.first_seen.min(o.first_seen);
                e.last_seen = e.last_seen.max(o.last_seen);
                e.events += o.events;
                e.score = e.score.max(o.score);
                if e.source.is_none() {
                    e.source = o.source;
                }
            }
            None => {
                index.insert(k, out.len());
                out.push(o);
            }
        }
    }
    out
}

async fn load_map(ctx: &SessionContext) -> Result<Vec<(String, MapRow)>> {
    let mut stream = tessera_engine::execute(
        ctx,
        "SELECT id_type, id_value, profile_id, \
                CAST(first_seen AS BIGINT) AS first_seen, CAST(last_seen AS BIGINT) AS last_seen \
         FROM identity_map",
        tessera_engine::Policy::ReadOnly,
    )
    .await?;
    let mut rows = Vec::new();
    let mut ids: HashMap<String, Arc<str>> = HashMap::new();
    while let Some(batch) = stream.try_next().await.map_err(|e| IdentityError::Query {
        file: IDENTITY_MAP.into(),
        source: e,
    })? {
        let text = |i: usize| -> Result<ArrayRef> { Ok(cast(batch.column(i), &DataType::Utf8)?) };
        let (t, v, p) = (text(0)?, text(1)?, text(2)?);
        let (t, v, p) = (
            t.as_string::<i32>(),
            v.as_string::<i32>(),
            p.as_string::<i32>(),
        );
        let first = batch.column(3).as_primitive::<Int64Type>();
        let last = batch.column(4).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let pid = match ids.get(p.value(row)) {
                Some(id) => id.clone(),
                None => {
                    let id: Arc<str> = Arc::from(p.value(row));
                    ids.insert(p.value(row).to_owned(), id.clone());
                    id
                }
            };
            rows.push((
                t.value(row).to_owned(),
                MapRow {
                    key: NodeKey {
                        id_type: 0,
                        value: v.value(row).into(),
                    },
                    profile_id: pid,
                    first_seen: first.value(row),
                    last_seen: last.value(row),
                },
            ));
        }
    }
    Ok(rows)
}

/// How the map changed from `previous` to the resolution: the profiles whose
/// identifiers changed (still existing), those gone, and how many identifiers of the
/// previous map now sit in another profile or none.
fn differences(previous: &[MapRow], resolution: &Resolution) -> (Vec<String>, Vec<String>, u64) {
    let alive: HashSet<&Arc<str>> = resolution.rows.iter().map(|r| &r.profile_id).collect();
    let mut touched: HashSet<&Arc<str>> = HashSet::new();
    let mut removed: HashSet<&Arc<str>> = HashSet::new();
    let mut moved = 0;
    for r in previous {
        let now = resolution.profile_of(&r.key);
        if now != Some(&r.profile_id) {
            moved += 1;
            touched.extend(now);
            if alive.contains(&r.profile_id) {
                touched.insert(&r.profile_id);
            } else {
                removed.insert(&r.profile_id);
            }
        }
    }
    let mut touched: Vec<String> = touched.into_iter().map(|p| p.to_string()).collect();
    touched.sort_unstable();
    let mut removed: Vec<String> = removed.into_iter().map(|p| p.to_string()).collect();
    removed.sort_unstable();
    (touched, removed, moved)
}

/// The edges of `identity_edges` as observations, for the rules that still exist
/// (probabilistic ones only when `match_pairs` did not change since: otherwise the new
/// predictions replace them).
async fn load_edges(
    ctx: &SessionContext,
    rules: &[Rule],
    types: &TypeRules,
    new_matches: bool,
) -> Result<Vec<Observation>> {
    let query_err = |source| IdentityError::Query {
        file: IDENTITY_EDGES.into(),
        source,
    };
    let index: HashMap<&str, u32> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i as u32))
        .collect();
    let mut stream = tessera_engine::execute(
        ctx,
        "SELECT a_type, a_value, b_type, b_value, rule, source, \
                CAST(first_seen AS BIGINT) AS first_seen, CAST(last_seen AS BIGINT) AS last_seen, \
                events, score \
         FROM identity_edges",
        tessera_engine::Policy::ReadOnly,
    )
    .await?;
    let mut out = Vec::new();
    while let Some(batch) = stream.try_next().await.map_err(query_err)? {
        let text = |i: usize| -> Result<ArrayRef> { Ok(cast(batch.column(i), &DataType::Utf8)?) };
        let cols: Vec<ArrayRef> = (0..6).map(text).collect::<Result<_>>()?;
        let c: Vec<&arrow::array::StringArray> =
            cols.iter().map(|a| a.as_string::<i32>()).collect();
        let first = batch.column(6).as_primitive::<Int64Type>();
        let last = batch.column(7).as_primitive::<Int64Type>();
        let events = batch.column(8).as_primitive::<Int64Type>();
        let score = batch
            .column(9)
            .as_primitive::<arrow::datatypes::Float64Type>();
        for row in 0..batch.num_rows() {
            let Some(&rule) = index.get(c[4].value(row)) else {
                continue;
            };
            let probabilistic = c[4].value(row) == PROBABILISTIC_RULE;
            if probabilistic && new_matches {
                continue;
            }
            let (Some(at), Some(bt)) = (types.id(c[0].value(row)), types.id(c[2].value(row)))
            else {
                continue;
            };
            out.push(Observation {
                a: NodeKey {
                    id_type: at,
                    value: c[1].value(row).into(),
                },
                b: Some(NodeKey {
                    id_type: bt,
                    value: c[3].value(row).into(),
                }),
                first_seen: first.value(row),
                last_seen: last.value(row),
                events: events.value(row),
                rule,
                source: c[5].is_valid(row).then(|| c[5].value(row).to_owned()),
                score: score.value(row),
                probabilistic,
            });
        }
    }
    Ok(out)
}

/// The revoked identifier pairs ([`resolve::ordered_pair`]) of `identity_revocations`.
async fn load_revocations(
    lake: &tessera_lake::Lake,
    ctx: &SessionContext,
    types: &TypeRules,
) -> Result<HashSet<(NodeKey, NodeKey)>> {
    let mut revoked = HashSet::new();
    if !lake.exists(IDENTITY_REVOCATIONS).await? {
        return Ok(revoked);
    }
    let mut stream = tessera_engine::execute(
        ctx,
        "SELECT a_type, a_value, b_type, b_value FROM identity_revocations",
        tessera_engine::Policy::ReadOnly,
    )
    .await?;
    while let Some(batch) = stream.try_next().await.map_err(|e| IdentityError::Query {
        file: IDENTITY_REVOCATIONS.into(),
        source: e,
    })? {
        let cols: Vec<ArrayRef> = (0..4)
            .map(|i| cast(batch.column(i), &DataType::Utf8))
            .collect::<Result<_, _>>()?;
        let c: Vec<&arrow::array::StringArray> =
            cols.iter().map(|a| a.as_string::<i32>()).collect();
        for row in 0..batch.num_rows() {
            let (Some(at), Some(bt)) = (types.id(c[0].value(row)), types.id(c[2].value(row)))
            else {
                continue;
            };
            let a = NodeKey {
                id_type: at,
                value: c[1].value(row).into(),
            };
            let b = NodeKey {
                id_type: bt,
                value: c[3].value(row).into(),
            };
            revoked.insert(resolve::ordered_pair(&a, &b));
        }
    }
    Ok(revoked)
}

fn blocked_batch(
    resolution: &Resolution,
    types: &TypeRules,
    now: i64,
    run: i64,
) -> Result<RecordBatch> {
    let n = resolution.blocked.len();
    let mut t = StringBuilder::with_capacity(n, n * 8);
    let mut v = StringBuilder::with_capacity(n, n * 16);
    let mut reason = StringBuilder::new();
    let mut links = Int64Builder::with_capacity(n);
    let mut at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut stitch_run = Int64Builder::with_capacity(n);
    for b in &resolution.blocked {
        t.append_value(types.name(b.key.id_type));
        v.append_value(&b.key.value);
        reason.append_value(&b.reason);
        links.append_value(b.links as i64);
        at.append_value(now);
        stitch_run.append_value(run);
    }
    Ok(RecordBatch::try_new(
        schema::blocked_values_schema(),
        vec![
            Arc::new(t.finish()),
            Arc::new(v.finish()),
            Arc::new(reason.finish()),
            Arc::new(links.finish()),
            Arc::new(at.finish()),
            Arc::new(stitch_run.finish()),
        ],
    )?)
}

fn edge_batches(
    resolution: &Resolution,
    rules: &[Rule],
    types: &TypeRules,
    run: i64,
) -> Result<Vec<RecordBatch>> {
    let schema = schema::identity_edges_schema();
    let edges: Vec<&(Observation, Option<EdgeStatus>)> = resolution
        .observations
        .iter()
        .filter(|(o, s)| o.b.is_some() && s.is_some())
        .collect();
    let mut batches = Vec::new();
    for chunk in edges.chunks(BATCH_ROWS) {
        let n = chunk.len();
        let mut cols: Vec<StringBuilder> = (0..5)
            .map(|_| StringBuilder::with_capacity(n, n * 16))
            .collect();
        let mut source = StringBuilder::new();
        let mut first = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut last = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut events = Int64Builder::with_capacity(n);
        let mut score = Float64Builder::with_capacity(n);
        let mut status = StringBuilder::new();
        let mut reason = StringBuilder::new();
        let mut profile = StringBuilder::new();
        let mut stitch_run = Int64Builder::with_capacity(n);
        for (o, s) in chunk {
            let (Some(b), Some(s)) = (&o.b, s) else {
                continue;
            };
            cols[0].append_value(types.name(o.a.id_type));
            cols[1].append_value(&o.a.value);
            cols[2].append_value(types.name(b.id_type));
            cols[3].append_value(&b.value);
            cols[4].append_value(&rules[o.rule as usize].name);
            source.append_option(o.source.as_deref());
            first.append_value(o.first_seen);
            last.append_value(o.last_seen);
            events.append_value(o.events);
            score.append_value(o.score);
            status.append_value(s.as_str());
            reason.append_option(s.reason());
            profile.append_option(
                resolution
                    .profile_of(&o.a)
                    .or_else(|| resolution.profile_of(b))
                    .map(|p| &**p),
            );
            stitch_run.append_value(run);
        }
        let mut columns: Vec<ArrayRef> = cols
            .iter_mut()
            .map(|c| Arc::new(c.finish()) as ArrayRef)
            .collect();
        columns.extend([
            Arc::new(source.finish()) as ArrayRef,
            Arc::new(first.finish()),
            Arc::new(last.finish()),
            Arc::new(events.finish()),
            Arc::new(score.finish()),
            Arc::new(status.finish()),
            Arc::new(reason.finish()),
            Arc::new(profile.finish()),
            Arc::new(stitch_run.finish()),
        ]);
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(batches)
}

fn merge_batch(
    resolution: &Resolution,
    rules: &[Rule],
    types: &TypeRules,
    now: i64,
    run: i64,
) -> Result<RecordBatch> {
    let mut from = StringBuilder::new();
    let mut into = StringBuilder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut seen = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut text: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    let mut stitch_run = Int64Builder::new();
    let mut kind = StringBuilder::new();
    let mut identifiers = Int64Builder::new();
    for c in &resolution.changes {
        from.append_value(&c.from);
        into.append_value(&c.into);
        at.append_value(now);
        let o = c.edge.map(|e| &resolution.observations[e].0);
        seen.append_option(o.map(|o| o.first_seen));
        text[0].append_option(o.map(|o| types.name(o.a.id_type)));
        text[1].append_option(o.map(|o| &*o.a.value));
        text[2].append_option(o.and_then(|o| o.b.as_ref()).map(|b| types.name(b.id_type)));
        text[3].append_option(o.and_then(|o| o.b.as_ref()).map(|b| &*b.value));
        text[4].append_value(match (o, c.kind) {
            (Some(o), _) => rules[o.rule as usize].name.as_str(),
            (None, ChangeKind::Split) => "unmerge",
            (None, _) => "rebuild",
        });
        stitch_run.append_value(run);
        kind.append_value(c.kind.as_str());
        identifiers.append_value(c.identifiers as i64);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(from.finish()),
        Arc::new(into.finish()),
        Arc::new(at.finish()),
        Arc::new(seen.finish()),
    ];
    columns.extend(text.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef));
    columns.push(Arc::new(stitch_run.finish()));
    columns.push(Arc::new(kind.finish()));
    columns.push(Arc::new(identifiers.finish()));
    Ok(RecordBatch::try_new(
        schema::profile_merges_schema(),
        columns,
    )?)
}

fn map_batch(rows: &[MapRow], types: &TypeRules) -> Result<RecordBatch> {
    let n = rows.len();
    let mut t = StringBuilder::with_capacity(n, n * 8);
    let mut v = StringBuilder::with_capacity(n, n * 24);
    let mut p = StringBuilder::with_capacity(n, n * 22);
    let mut first = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut last = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for r in rows {
        t.append_value(types.name(r.key.id_type));
        v.append_value(&r.key.value);
        p.append_value(&r.profile_id);
        first.append_value(r.first_seen);
        last.append_value(r.last_seen);
    }
    Ok(RecordBatch::try_new(
        schema::identity_map_schema(),
        vec![
            Arc::new(t.finish()),
            Arc::new(v.finish()),
            Arc::new(p.finish()),
            Arc::new(first.finish()),
            Arc::new(last.finish()),
        ],
    )?)
}
