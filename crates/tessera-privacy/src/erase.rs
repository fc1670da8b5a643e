//! Erasure of whole identity clusters: every row that belongs to the people, from
//! every table, then every file and log entry that still held them.
//!
//! A run: the subjects are resolved ([`crate::resolve`]) to profiles, merged-away
//! profiles and identifiers; the request is recorded (`received`, with salted hashes
//! and profile ids only); then per table, in [`TARGETS`] order, one copy-on-write
//! delete (or, for `activation_batches` and `audit_log`, an update that takes the
//! people out of members lists and redacts query text) shared by every subject of the
//! request; then the identifiers go on the suppression list; then each table changed
//! is expunged ([`tessera_lake::Lake::expunge`]); then the receipt goes to `audit_log`
//! (who, when, hashes, rows per table, versions before and after) and the request is
//! `finished`. `identity_map` is erased last, so a run that stops half-way is resumed
//! ([`resume`]) from the profile ids its request holds.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{cast, col};
use serde::Serialize;
use tessera_core::privacy::Hasher;
use tessera_core::schema::{self, AUDIT_LOG};
use tessera_engine::Engine;
use tessera_lake::CommitNote;
use tessera_lake::erase::Expunged;

use crate::matcher::{Clause, Functions};
use crate::requests::{self, Request};
use crate::{
    PrivacyError, Resolution, Result, Subject, append_rows, df, resolve, rows_where, suppress,
};

/// How a table's rows are taken out.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Rows matching are deleted.
    Delete,
    /// Rows matching keep everything but their members lists, without the people.
    WithoutMembers(&'static str),
    /// Rows matching get these text columns redacted.
    Redact(&'static [&'static str]),
}

/// One table and how the people's rows are found in it ([`Clause`]s, or-ed).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub table: &'static str,
    pub clauses: &'static [Clause],
    pub action: Action,
}

/// Every table that can hold a person's rows, in erasure order (`identity_map` last).
/// Rows that name another profile stay, even when they carry an identifier the people
/// shared with it (a device two people used).
pub const TARGETS: &[Target] = &[
    Target {
        table: schema::EVENTS,
        clauses: &[
            Clause::Actor,
            Clause::Text(&["properties", "traits", "context", "extra"]),
        ],
        action: Action::Delete,
    },
    Target {
        table: schema::IDENTITY_EDGES,
        clauses: &[
            Clause::Id(&["profile_id"]),
            Clause::Text(&["a_value", "b_value"]),
            Clause::IdWhereNull("profile_id", &["a_value", "b_value"]),
        ],
        action: Action::Delete,
    },
    Target {
        table: schema::PROFILE_MERGES,
        clauses: &[
            Clause::Id(&["from_profile_id", "into_profile_id"]),
            Clause::Text(&["a_value", "b_value"]),
        ],
        action: Action::Delete,
    },
    Target {
        table: schema::MATCH_PAIRS,
        clauses: &[
            Clause::Id(&["id_l", "id_r", "cluster"]),
            Clause::Text(&["comparisons"]),
        ],
        action: Action::Delete,
    },
    Target {
        table: schema::MATCH_DECISIONS,
        clauses: &[Clause::Id(&["id_l", "id_r"])],
        action: Action::Delete,
    },
    Target {
        table: schema::SCORES,
        clauses: &[Clause::Id(&["profile_id"])],
        action: Action::Delete,
    },
    Target {
        table: schema::AUDIENCE_MEMBERSHIP,
        clauses: &[Clause::Id(&["profile_id"])],
        action: Action::Delete,
    },
    Target {
        table: schema::AUDIENCE_CHANGES,
        clauses: &[Clause::Id(&["profile_id", "merged_into"])],
        action: Action::Delete,
    },
    Target {
        table: schema::ACTIVATION_BATCHES,
        clauses: &[Clause::Text(&["members"])],
        action: Action::WithoutMembers("members"),
    },
    Target {
        table: AUDIT_LOG,
        clauses: &[Clause::AnyText(&["target", "detail"])],
        action: Action::Redact(&["target", "detail"]),
    },
    Target {
        table: schema::CONSENT,
        clauses: &[Clause::Id(&["profile_id"])],
        action: Action::Delete,
    },
    Target {
        table: schema::PROFILES,
        clauses: &[Clause::Id(&["profile_id"])],
        action: Action::Delete,
    },
    Target {
        table: schema::IDENTITY_REVOCATIONS,
        clauses: &[
            Clause::Id(&["profile_id"]),
            Clause::Text(&["a_value", "b_value"]),
        ],
        action: Action::Delete,
    },
    Target {
        table: schema::QUARANTINE,
        clauses: &[Clause::AnyText(&["payload"])],
        action: Action::Delete,
    },
    Target {
        table: schema::BLOCKED_VALUES,
        clauses: &[Clause::Text(&["id_value"])],
        action: Action::Delete,
    },
    Target {
        table: schema::IDENTITY_MAP,
        clauses: &[Clause::Id(&["profile_id"])],
        action: Action::Delete,
    },
];

/// Options of an erasure.
#[derive(Debug, Clone)]
pub struct EraseOptions {
    /// Why (kept with the request).
    pub reason: Option<String>,
    /// Count what would be erased; change nothing.
    pub dry_run: bool,
    /// Put the identifiers on the suppression list (the default).
    pub suppress: bool,
    /// Who asks (recorded).
    pub actor: String,
    /// How long a running collector may take to see the suppression list and commit
    /// what it acknowledged before (two flush intervals and a second are enough); the
    /// events table is then swept once more. Zero: no sweep.
    pub settle: std::time::Duration,
    /// The project's file destinations: what they exported is rewritten without the
    /// people's rows.
    pub exports: Vec<(String, std::sync::Arc<tessera_activate::file::Target>)>,
}

impl Default for EraseOptions {
    fn default() -> Self {
        EraseOptions {
            reason: None,
            dry_run: false,
            suppress: true,
            actor: "tessera privacy".into(),
            settle: std::time::Duration::ZERO,
            exports: Vec::new(),
        }
    }
}

/// Rows of one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableCount {
    pub table: String,
    /// Rows deleted (or, for members lists and query text, rows rewritten).
    pub rows: u64,
    pub version_before: Option<i64>,
    pub version_after: Option<i64>,
    /// Time spent on this table (its deletes or updates).
    pub seconds: f64,
}

/// What an erasure did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErasureReport {
    pub request_id: Option<String>,
    pub dry_run: bool,
    /// Subjects that named no profile (their identifiers are still erased and
    /// suppressed wherever they appear).
    pub unknown: Vec<Subject>,
    pub profiles: usize,
    pub identifiers: usize,
    pub tables: Vec<TableCount>,
    pub suppressed: usize,
    pub expunged: Vec<Expunged>,
    /// Files of file destinations rewritten without the people's rows.
    pub exports: Vec<tessera_activate::file::ExportsErased>,
    /// Seconds spent waiting for a running collector and sweeping `events` again.
    pub settle_seconds: f64,
    /// Seconds spent expunging old files and log entries.
    pub expunge_seconds: f64,
    pub state: String,
}

impl ErasureReport {
    /// Rows taken out of every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Erases every subject of `subjects` (`TYPE:VALUE`) in one request.
pub async fn erase(
    engine: &Engine,
    subjects: &[String],
    options: &EraseOptions,
) -> Result<ErasureReport> {
    if subjects.is_empty() {
        return Err(PrivacyError::BadSubject(
            "name at least one person to erase, as TYPE:VALUE (email:jane@example.com)".into(),
        ));
    }
    let parsed: Vec<Subject> = subjects
        .iter()
        .map(|s| Subject::parse(s))
        .collect::<Result<_>>()?;
    let resolution = resolve(engine, &parsed, &[]).await?;
    if options.dry_run {
        return dry_run(engine, &resolution).await;
    }
    let hasher = suppress::hasher(engine).await?;
    let subject_hashes = suppress::hashes_of(&hasher, &parsed);
    let request = Request::received(
        "erase",
        &subject_hashes,
        resolution.profiles.iter().cloned().collect(),
        options.reason.clone(),
        &options.actor,
    )?;
    requests::record(engine, &request).await?;
    run(engine, request, resolution, &hasher, options, false).await
}

/// Resumes every erasure request that did not reach an end state (a crash, a killed
/// process); returns what each did.
pub async fn resume(engine: &Engine, options: &EraseOptions) -> Result<Vec<ErasureReport>> {
    let unfinished: Vec<Request> = requests::list(engine)
        .await?
        .into_iter()
        .filter(|r| r.kind == "erase" && !r.is_done())
        .collect();
    if unfinished.is_empty() {
        return Ok(Vec::new());
    }
    let hasher = suppress::hasher(engine).await?;
    let mut out = Vec::new();
    for request in unfinished {
        // Resolved one at a time: each erasure changes the snapshot the next reads.
        let resolution = resolve(engine, &[], &request.profiles).await?;
        out.push(run(engine, request, resolution, &hasher, options, true).await?);
    }
    Ok(out)
}

/// Runs a recorded request. A `resumed` one expunges every table: the run before it may
/// have deleted rows without expunging them.
async fn run(
    engine: &Engine,
    request: Request,
    resolution: Resolution,
    hasher: &Hasher,
    options: &EraseOptions,
    resumed: bool,
) -> Result<ErasureReport> {
    let running = request.at_state("running");
    requests::record(engine, &running).await?;
    match erase_rows(engine, &running, &resolution, hasher, options, resumed).await {
        Ok(report) => Ok(report),
        Err(e) => {
            let mut failed = running.at_state("failed");
            failed.error = Some(e.to_string());
            if let Err(again) = requests::record(engine, &failed).await {
                tracing::error!("recording the failure of {}: {again}", failed.request_id);
            }
            Err(e)
        }
    }
}

async fn erase_rows(
    engine: &Engine,
    request: &Request,
    resolution: &Resolution,
    hasher: &Hasher,
    options: &EraseOptions,
    resumed: bool,
) -> Result<ErasureReport> {
    let lake = engine.lake();
    let functions = Functions::new(resolution.matcher());
    let mut report = ErasureReport {
        request_id: Some(request.request_id.clone()),
        unknown: resolution.unknown().into_iter().cloned().collect(),
        profiles: resolution.profiles.len(),
        identifiers: resolution.identifiers.len(),
        ..ErasureReport::default()
    };
    let note = |table: &str| {
        CommitNote::new("erase", &options.actor)
            .detail("request_id", request.request_id.clone())
            .detail("table", table.to_owned())
    };
    // Tables made before statistics left personal columns: their old log entries go
    // with the expunge below.
    let mut changed = lake.migrate_stats_columns().await?;
    for target in TARGETS {
        let before = lake.latest_version(target.table, None).await?;
        if before.is_none() {
            continue;
        }
        let predicate = functions.predicate(target.clauses);
        let started = std::time::Instant::now();
        let rows = match target.action {
            Action::Delete if target.table == schema::EVENTS => {
                delete_events(engine, &functions, note(target.table)).await?
            }
            Action::Delete => {
                lake.delete_rows(target.table, predicate, note(target.table))
                    .await?
            }
            Action::WithoutMembers(column) => {
                let update = functions.without_members(column);
                lake.update_rows(
                    target.table,
                    predicate,
                    &[(column, update)],
                    note(target.table),
                )
                .await?
            }
            Action::Redact(columns) => {
                let updates: Vec<(&str, datafusion::prelude::Expr)> =
                    columns.iter().map(|c| (*c, functions.redact(c))).collect();
                lake.update_rows(target.table, predicate, &updates, note(target.table))
                    .await?
            }
        };
        let after = lake.latest_version(target.table, None).await?;
        if (rows > 0 || resumed) && !changed.contains(&target.table) {
            changed.push(target.table);
        }
        failpoint(target.table);
        report.tables.push(TableCount {
            table: target.table.to_owned(),
            rows,
            version_before: before,
            version_after: after,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    // What file destinations exported: rewritten in place (their objects have no
    // history to expunge).
    let matcher = resolution.matcher();
    for (name, target) in &options.exports {
        let erased = target
            .erase(name, &|v| matcher.is_value(v))
            .await
            .map_err(|e| {
                PrivacyError::io(format!("erasing the exports of destination {name}"), e)
            })?;
        report.exports.push(erased);
    }
    if options.suppress {
        let mut hashes = resolution.hashes(hasher);
        let asked: Vec<(String, String)> = request
            .subjects
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    s["id_type"].as_str()?.to_owned(),
                    s["hash"].as_str()?.to_owned(),
                ))
            })
            .collect();
        hashes.extend(asked);
        hashes.sort();
        hashes.dedup();
        report.suppressed = suppress::set_state(
            engine,
            &hashes,
            "suppressed",
            Some(&request.request_id),
            &options.actor,
        )
        .await?;
    }
    // Events a running collector acknowledged before it saw the suppression list land
    // within its next flushes: sweep them too.
    if options.suppress && !options.settle.is_zero() {
        let started = std::time::Instant::now();
        tokio::time::sleep(options.settle).await;
        let swept = delete_events(engine, &functions, note(schema::EVENTS)).await?;
        if let Some(t) = report.tables.iter_mut().find(|t| t.table == schema::EVENTS) {
            t.rows += swept;
            t.version_after = lake.latest_version(schema::EVENTS, None).await?;
        }
        if swept > 0 && !changed.contains(&schema::EVENTS) {
            changed.push(schema::EVENTS);
        }
        report.settle_seconds = started.elapsed().as_secs_f64();
    }
    // Only now may old files go: until here a failed run left every table readable.
    for table in &changed {
        report
            .expunged
            .push(lake.expunge(table, &options.actor).await?);
    }
    let counts: BTreeMap<&str, u64> = report
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.rows))
        .collect();
    let versions: BTreeMap<&str, (Option<i64>, Option<i64>)> = report
        .tables
        .iter()
        .map(|t| (t.table.as_str(), (t.version_before, t.version_after)))
        .collect();
    let receipt = serde_json::json!({
        "request_id": request.request_id,
        "subjects": request.subjects,
        "profiles": resolution.profiles.len(),
        "counts": counts,
        "versions": versions,
        "exports": report.exports,
    });
    append_rows(
        engine,
        AUDIT_LOG,
        &[serde_json::json!({
            "at": crate::now_micros(),
            "user": options.actor,
            "role": "privacy",
            "action": "privacy.erase",
            "target": request.request_id,
            "rows": report.rows() as i64,
            "status": "ok",
            "detail": receipt.to_string(),
        })],
        CommitNote::new("audit", &options.actor),
    )
    .await?;
    let mut finished = request.at_state("finished");
    finished.counts = Some(serde_json::to_value(&counts).unwrap_or_default());
    finished.versions = Some(serde_json::to_value(&versions).unwrap_or_default());
    requests::record(engine, &finished).await?;
    // The profile ids requests kept to resume by are no longer needed: redact them in
    // every request, and expunge the old rows.
    let redacted = lake
        .update_rows(
            schema::PRIVACY_REQUESTS,
            functions.predicate(&[Clause::Text(&["profiles"])]),
            &[("profiles", functions.redact("profiles"))],
            note(schema::PRIVACY_REQUESTS),
        )
        .await?;
    if redacted > 0 {
        report.expunged.push(
            lake.expunge(schema::PRIVACY_REQUESTS, &options.actor)
                .await?,
        );
    }
    report.state = finished.state;
    Ok(report)
}

/// Deletes the people's events in two steps: their `(event_date, message_id)`s are
/// found with the matchers, then the files holding them on those days are rewritten
/// without those ids, in one commit whatever the number of people. The commit's
/// predicate names only the days: it must parse without Tessera's functions, since
/// Delta's conflict check re-reads it when a concurrent commit (the collector's
/// appends) landed meanwhile, and a blind append to other days then does not conflict.
async fn delete_events(engine: &Engine, functions: &Functions, note: CommitNote) -> Result<u64> {
    let ctx = engine.session_of(&[schema::EVENTS]).await?;
    if !ctx
        .table_exist(schema::EVENTS)
        .map_err(df("listing tables"))?
    {
        return Ok(0);
    }
    let doing = "finding the people's events";
    let batches = rows_where(
        &ctx,
        schema::EVENTS,
        functions.predicate(TARGETS[0].clauses),
    )
    .await?
    .select(vec![
        cast(col("event_date"), DataType::Int32).alias("day"),
        col("message_id"),
    ])
    .map_err(df(doing))?
    .collect()
    .await
    .map_err(df(doing))?;
    // One rewrite for all of them: the ids are tested by a hash lookup per row, and the
    // days bound the files it reads to find them.
    let mut days = std::collections::BTreeSet::new();
    let mut ids = std::collections::HashSet::new();
    for b in &batches {
        let (day, id) = (
            tessera_engine::columns::int64s(b, "day")?,
            tessera_engine::columns::strings(b, "message_id")?,
        );
        for i in 0..b.num_rows() {
            days.insert(day.value(i) as i32);
            ids.insert(id.value(i).to_owned());
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let days: Vec<i32> = days.into_iter().collect();
    delete_events_of(engine, &days, ids, note).await
}

/// Days listed one by one in the rewrite's scope; more become a range (Delta turns a
/// list into one nested `OR` per value for file statistics).
const LISTED_DAYS: usize = 64;

/// Deletes the events whose message id is in `ids`, all on `days`, in one rewrite of the
/// files holding them ([`tessera_lake::Lake::rewrite_without`]). The commit records only
/// the days (`event_date IN (…)`, what a concurrent collector's conflict check reads); the
/// ids stay in memory (`tessera_erased_message`), one hash lookup per row read.
async fn delete_events_of(
    engine: &Engine,
    days: &[i32],
    ids: std::collections::HashSet<String>,
    note: CommitNote,
) -> Result<u64> {
    let day = |d: i32| {
        let date = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)
            .unwrap_or_default()
            .format("%Y-%m-%d");
        format!("'{date}'")
    };
    let scope = match (days.first(), days.last()) {
        (Some(&first), Some(&last)) if days.len() > LISTED_DAYS => format!(
            "event_date >= {} AND event_date <= {}",
            day(first),
            day(last)
        ),
        _ => format!(
            "event_date IN ({})",
            days.iter().map(|d| day(*d)).collect::<Vec<_>>().join(", ")
        ),
    };
    let drop = crate::matcher::message_set(ids).call(vec![col("message_id")]);
    Ok(engine
        .lake()
        .rewrite_without(schema::EVENTS, &scope, drop, note)
        .await?)
}

/// Stops the process right after erasing `table` when `TESSERA_FAILPOINT` is
/// `erase:TABLE` — how the tests crash an erasure half-way to check that
/// `tessera privacy resume` finishes it.
fn failpoint(table: &str) {
    if std::env::var("TESSERA_FAILPOINT").is_ok_and(|f| f.strip_prefix("erase:") == Some(table)) {
        eprintln!("failpoint erase:{table}: stopping");
        std::process::abort();
    }
}

/// Counts, per table, the rows an erasure of `resolution` would take out.
async fn dry_run(engine: &Engine, resolution: &Resolution) -> Result<ErasureReport> {
    let ctx = engine.session().await?;
    let functions = Functions::new(resolution.matcher());
    let mut report = ErasureReport {
        dry_run: true,
        unknown: resolution.unknown().into_iter().cloned().collect(),
        profiles: resolution.profiles.len(),
        identifiers: resolution.identifiers.len(),
        state: "dry-run".into(),
        ..ErasureReport::default()
    };
    for target in TARGETS {
        if !ctx
            .table_exist(target.table)
            .map_err(df("listing tables"))?
        {
            continue;
        }
        let started = std::time::Instant::now();
        let rows = rows_where(&ctx, target.table, functions.predicate(target.clauses))
            .await?
            .count()
            .await
            .map_err(df(format!("counting rows of {}", target.table)))? as u64;
        let version = engine.lake().latest_version(target.table, None).await?;
        report.tables.push(TableCount {
            table: target.table.to_owned(),
            rows,
            version_before: version,
            version_after: version,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(report)
}
