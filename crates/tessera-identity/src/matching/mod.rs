//! Probabilistic matching over the lake: records that share no exact identifier
//! ("Jon Smith, 12 High St" and "John Smyth, 12 High Street") scored as the same person
//! or not with the Fellegi–Sunter model.
//!
//! The pipeline, every step a DataFusion query over the records (materialized once):
//!
//! 1. **records** — the spec's query (any lake table or view, plus CSV/Parquet files),
//!    text trimmed and empty text read as missing; the id must be unique;
//! 2. **blocking** — candidate pairs from the spec's rules ([`crate::blocking`]), each
//!    unordered pair once, with the count per rule before anything is compared;
//! 3. **comparison vectors** — each comparison's level as a SQL `CASE` over the
//!    similarity functions (`jaro_winkler`, `levenshtein`, `days_between`, ...), grouped
//!    into distinct vectors with counts;
//! 4. **training** ([`Matcher::train`]) — `u` from pairs drawn at random (all pairs when
//!    there are fewer than the spec's `random_pairs`); then, as Splink does, one EM
//!    session per blocking rule estimating `m` of the comparisons the rule does not read
//!    (a rule on surname says nothing about how often matches agree on surname), the
//!    sessions' `m` averaged; finally λ — the share of matches among *all* pairs — by EM
//!    over the candidate pairs with `m` and `u` fixed, pairs never blocked together
//!    counting as non-matches;
//! 5. **prediction** ([`Matcher::predict`]) — every candidate pair's match weight (with
//!    term-frequency adjustment where asked) and probability; pairs at or above the
//!    threshold are matches, those in the review band below it are kept for a person,
//!    and matches are clustered with a union-find;
//! 6. **storage** — models in `match_models` ([`save_model`], [`load_model`]), scored
//!    pairs in `match_pairs` ([`write_pairs`]), with per-comparison weights;
//! 7. **evaluation** ([`evaluate`]) — pairwise precision, recall and F1 against known
//!    matches.

pub mod review;
pub mod spec;

mod evaluate;
mod explain;
mod predict;
mod store;
mod train;

pub use evaluate::{Metrics, evaluate, ordered, read_truth};
pub use store::{load_model, save_model, stored_decisions, stored_pairs};

use predict::{decision, level_label, term_weights};
use train::describe;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use serde::Serialize;
use tessera_core::schema::{self, MATCH_MODELS, MATCH_PAIRS};
use tessera_engine::Engine;
use tessera_engine::graph::{Interner, UnionFind};
use tessera_lake::CommitNote;

pub use spec::{MatchSpec, SPEC_FILE};

use crate::blocking::{self, BlockingRule};
use crate::error::{IdentityError, Result};
use crate::fellegi_sunter::{EmOptions, Model, NULL_LEVEL, Patterns, level_shares, probability};
use spec::quote_ident;

/// The materialized records' table name inside the matching session.
pub const RECORDS: &str = "match_records";
const RANDOM: &str = "match_random_pairs";
/// Starting λ of the per-rule EM sessions (the share of matches among a rule's pairs).
const SESSION_LAMBDA: f64 = 0.1;

/// A session holding the records of one spec.
pub struct Matcher {
    ctx: SessionContext,
    spec: MatchSpec,
    rules: Vec<BlockingRule>,
    records: u64,
    /// The compared columns of every record, in row order (for random pairs).
    compared: RecordBatch,
}

/// One EM session (one blocking rule).
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub rule: String,
    pub pairs: u64,
    /// Comparisons whose `m` this session estimated (those the rule does not read).
    pub trained: Vec<String>,
    /// Share of matches among this rule's pairs.
    pub lambda: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// What training did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub records: u64,
    /// Candidate pairs per rule (each pair counted for the first rule admitting it).
    pub candidate_pairs: Vec<(String, u64)>,
    /// Random pairs drawn for the `u` of comparisons with many distinct values.
    pub random_pairs: u64,
    /// Comparisons whose `u` is exact over all pairs (from value counts).
    pub u_exact: Vec<String>,
    pub sessions: Vec<Session>,
    /// Comparisons no session could train (every rule reads them): `m` kept at its
    /// starting guess.
    pub untrained: Vec<String>,
    /// Expected matches among the candidate pairs.
    pub expected_matches: f64,
    pub lambda_iterations: usize,
    /// Seconds per stage, in order.
    pub stages: Vec<(String, f64)>,
}

impl TrainReport {
    pub fn candidates(&self) -> u64 {
        self.candidate_pairs.iter().map(|c| c.1).sum()
    }

    pub fn iterations(&self) -> usize {
        self.sessions.iter().map(|s| s.iterations).sum::<usize>() + self.lambda_iterations
    }

    pub fn converged(&self) -> bool {
        self.sessions.iter().all(|s| s.converged)
    }
}

/// One scored candidate pair.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPair {
    pub id_l: String,
    pub id_r: String,
    /// Index of the blocking rule that generated it.
    pub rule: usize,
    pub levels: Vec<u8>,
    /// Each comparison's weight (term-frequency adjusted where asked).
    pub weights: Vec<f64>,
    pub weight: f64,
    pub probability: f64,
    /// Decided a match: at or above the threshold (and, under one-to-one, the best
    /// candidate of both records by the margin).
    pub is_match: bool,
}

/// What prediction found.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub candidates: u64,
    /// Pairs at or above the review band, best first.
    pub pairs: Vec<ScoredPair>,
    pub threshold: f64,
    pub review: f64,
    /// Cluster of each matched record (its smallest id), by record id.
    pub clusters: HashMap<String, String>,
}

impl Prediction {
    /// The pairs as (id, id, probability), as [`evaluate`] takes them.
    pub fn scored(&self) -> Vec<(String, String, f64)> {
        self.pairs
            .iter()
            .map(|p| (p.id_l.clone(), p.id_r.clone(), p.probability))
            .collect()
    }

    /// The pairs decided `match`, as (id, id, 1.0), for [`evaluate`] of the decisions.
    pub fn decided(&self) -> Vec<(String, String, f64)> {
        self.pairs
            .iter()
            .filter(|p| p.is_match)
            .map(|p| (p.id_l.clone(), p.id_r.clone(), 1.0))
            .collect()
    }

    pub fn matches(&self) -> usize {
        self.pairs.iter().filter(|p| p.is_match).count()
    }

    pub fn in_review(&self) -> usize {
        self.pairs.len() - self.matches()
    }

    /// Number of clusters of two or more records, and the largest one's size.
    pub fn cluster_sizes(&self) -> (usize, usize) {
        let mut sizes: HashMap<&str, usize> = HashMap::new();
        for c in self.clusters.values() {
            *sizes.entry(c.as_str()).or_default() += 1;
        }
        (sizes.len(), sizes.values().copied().max().unwrap_or(0))
    }
}

/// One comparison's part in a pair's score.
#[derive(Debug, Clone, Serialize)]
pub struct Term {
    pub comparison: String,
    pub level: String,
    pub weight: f64,
    pub left: Option<String>,
    pub right: Option<String>,
}

/// Why a pair scored what it did.
#[derive(Debug, Clone, Serialize)]
pub struct PairExplanation {
    pub id_l: String,
    pub id_r: String,
    pub prior_weight: f64,
    pub terms: Vec<Term>,
    pub weight: f64,
    pub probability: f64,
    pub decision: String,
}

fn query_err(what: &str) -> impl Fn(datafusion::error::DataFusionError) -> IdentityError + '_ {
    move |source| IdentityError::Query {
        file: what.to_owned(),
        source,
    }
}

async fn collect(ctx: &SessionContext, sql: &str, what: &str) -> Result<Vec<RecordBatch>> {
    let err = query_err(what);
    ctx.sql(sql)
        .await
        .map_err(&err)?
        .collect()
        .await
        .map_err(&err)
}

/// The columns the comparisons read, as one batch.
fn compared_columns(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    spec: &MatchSpec,
) -> Result<RecordBatch> {
    let all = arrow::compute::concat_batches(schema, batches)?;
    let mut names: Vec<&str> = Vec::new();
    for c in &spec.comparisons {
        if !names.contains(&c.column.as_str()) {
            names.push(&c.column);
        }
    }
    let indices: Vec<usize> = names
        .iter()
        .filter_map(|n| schema.index_of(n).ok())
        .collect();
    Ok(all.project(&indices)?)
}

/// Rows split evenly into `n` partitions (slices, no copy), so that a scan — whichever
/// side of a join it probes — runs on every core.
fn spread(batches: Vec<RecordBatch>, n: usize) -> Vec<Vec<RecordBatch>> {
    let n = n.max(1);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let share = rows.div_ceil(n).max(1);
    let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    let (mut part, mut filled) = (0, 0);
    for b in batches {
        let mut offset = 0;
        while offset < b.num_rows() {
            let take = (share - filled).min(b.num_rows() - offset);
            out[part].push(b.slice(offset, take));
            offset += take;
            filled += take;
            if filled == share && part + 1 < n {
                part += 1;
                filled = 0;
            }
        }
    }
    out
}

/// A column as `Utf8` (queries may hand back views or large strings).
fn text(a: &ArrayRef) -> Result<StringArray> {
    Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn bad(message: impl Into<String>) -> IdentityError {
    IdentityError::BadFile {
        file: SPEC_FILE.into(),
        message: message.into(),
    }
}

/// The seeded stream of the random-pair draw.
type Rng = tessera_core::random::SplitMix64;

impl Matcher {
    /// Registers the spec's files, runs its records query and keeps the records in
    /// memory for every later step.
    pub async fn open(engine: &Engine, project_dir: &Path, spec: MatchSpec) -> Result<Matcher> {
        let ctx = engine.session().await?;
        for (name, file) in &spec.tables {
            let path = project_dir.join(file);
            if !path.exists() {
                return Err(bad(format!(
                    "tables.{name}: no file {} (paths are relative to the project)",
                    path.display()
                )));
            }
            let location = path.to_string_lossy().into_owned();
            let err = query_err(file);
            if file.ends_with(".parquet") {
                ctx.register_parquet(name, &location, ParquetReadOptions::default())
                    .await
                    .map_err(err)?;
            } else if file.ends_with(".csv") {
                ctx.register_csv(name, &location, CsvReadOptions::new())
                    .await
                    .map_err(err)?;
            } else {
                return Err(bad(format!(
                    "tables.{name}: {file} is neither .csv nor .parquet"
                )));
            }
        }

        // The records as text (trimmed, empty = missing); numbers and dates compare
        // through their text.
        let planned = tessera_engine::policy::read_only(&ctx, &spec.records)
            .await
            .map_err(query_err("records query"))?;
        let columns: Vec<String> = planned
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let has = |c: &str| columns.iter().any(|x| x == c);
        if !has(&spec.id) {
            return Err(bad(format!(
                "the records have no id column {:?}; they have {}",
                spec.id,
                columns.join(", ")
            )));
        }
        if let Some(source) = &spec.source
            && !has(source)
        {
            return Err(bad(format!(
                "source: the records have no column {source:?}; they have {}",
                columns.join(", ")
            )));
        }
        for c in &spec.comparisons {
            if !has(&c.column) {
                return Err(bad(format!(
                    "comparison {:?}: the records have no column {:?}; they have {}",
                    c.name(),
                    c.column,
                    columns.join(", ")
                )));
            }
        }
        let select = columns
            .iter()
            .map(|c| {
                let q = quote_ident(c);
                format!("nullif(trim(CAST(src.{q} AS VARCHAR)), '') AS {q}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let batches = collect(
            &ctx,
            &format!("SELECT {select} FROM ({}) AS src", spec.records),
            "records query",
        )
        .await?;

        // Text columns, and the id's uniqueness.
        let mut out = Vec::with_capacity(batches.len());
        let mut seen: HashSet<String> = HashSet::new();
        let mut row = 0i64;
        let id_index = columns.iter().position(|c| *c == spec.id).unwrap_or(0);
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(c, DataType::Utf8, true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        for batch in batches {
            let arrays: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .map(|c| cast(c, &DataType::Utf8))
                .collect::<std::result::Result<_, _>>()?;
            let ids = arrays[id_index].as_string::<i32>();
            for i in 0..ids.len() {
                if ids.is_null(i) {
                    return Err(bad(format!(
                        "a record has no {:?} (the id must be set on every record)",
                        spec.id
                    )));
                }
                if !seen.insert(ids.value(i).to_owned()) {
                    return Err(bad(format!(
                        "the id {:?} is not unique: {:?} appears twice",
                        spec.id,
                        ids.value(i)
                    )));
                }
            }
            row += batch.num_rows() as i64;
            out.push(RecordBatch::try_new(schema.clone(), arrays)?);
        }
        let compared = compared_columns(&schema, &out, &spec)?;
        let partitions = spread(out, ctx.state().config().target_partitions());
        ctx.register_table(RECORDS, Arc::new(MemTable::try_new(schema, partitions)?))?;
        let rules = spec.rules();
        Ok(Matcher {
            ctx,
            spec,
            rules,
            records: row as u64,
            compared,
        })
    }

    pub fn spec(&self) -> &MatchSpec {
        &self.spec
    }

    /// The session (records registered as [`RECORDS`]).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Every unordered pair of records.
    pub fn all_pairs(&self) -> u64 {
        self.records * self.records.saturating_sub(1) / 2
    }

    /// New candidate pairs per blocking rule, in rule order.
    pub async fn count_pairs(&self) -> Result<Vec<(String, u64)>> {
        let counts = blocking::count_pairs(&self.ctx, RECORDS, &self.spec.id, &self.rules).await?;
        Ok(self
            .rules
            .iter()
            .map(|r| r.name.clone())
            .zip(counts)
            .collect())
    }

    fn names(&self) -> Vec<String> {
        self.spec
            .comparisons
            .iter()
            .map(|c| c.name().to_owned())
            .collect()
    }

    fn labels(&self) -> Vec<Vec<String>> {
        self.spec.comparisons.iter().map(|c| c.labels()).collect()
    }

    /// A query over the pairs of `from` (a `FROM` clause over `l`, `r`) returning each
    /// comparison's level (`c0`, `c1`, …; `NULL_LEVEL` where `masked`) first, then the
    /// `carry` expressions under their aliases (unless `hide_carry`: they only feed
    /// `extra`), then `extra`; `tail` ends it. Each similarity is computed once per
    /// pair, in an inner query.
    fn vector_query(
        &self,
        from: &str,
        masked: &[bool],
        carry: &[(String, String)],
        hide_carry: bool,
        extra: &str,
        tail: &str,
    ) -> String {
        let mut inner: Vec<String> = carry.iter().map(|(e, a)| format!("{e} AS {a}")).collect();
        let mut outer = Vec::new();
        for (j, c) in self.spec.comparisons.iter().enumerate() {
            if masked.get(j).copied().unwrap_or(false) {
                outer.push(format!("{NULL_LEVEL} AS c{j}"));
            } else {
                inner.extend(c.parts_sql(j));
                outer.push(format!("{} AS c{j}", c.level_sql(j)));
            }
        }
        if !hide_carry {
            outer.extend(carry.iter().map(|(_, a)| a.clone()));
        }
        if !extra.is_empty() {
            outer.push(extra.to_owned());
        }
        if inner.is_empty() {
            inner.push("1 AS one".into());
        }
        format!(
            "SELECT {} FROM (SELECT {} {from}) AS v {tail}",
            outer.join(", "),
            inner.join(", ")
        )
    }

    /// Distinct comparison vectors of the pairs of `from` (a `FROM` clause over `l`, `r`).
    async fn patterns(&self, from: &str, masked: &[bool], what: &str) -> Result<Patterns> {
        self.weighted_patterns(from, masked, &[], "count(*)", what)
            .await
    }

    /// [`Matcher::patterns`] counting `weight` per row (`carry` feeds it from the
    /// inner query).
    async fn weighted_patterns(
        &self,
        from: &str,
        masked: &[bool],
        carry: &[(String, String)],
        weight: &str,
        what: &str,
    ) -> Result<Patterns> {
        let k = self.spec.comparisons.len();
        let groups = (1..=k)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let sql = self.vector_query(
            from,
            masked,
            carry,
            true,
            &format!("CAST({weight} AS BIGINT) AS n"),
            &format!("GROUP BY {groups}"),
        );
        let mut patterns = Patterns::new(k);
        let mut v = vec![0u8; k];
        for batch in collect(&self.ctx, &sql, what).await? {
            let levels: Vec<ArrayRef> = (0..k)
                .map(|j| cast(batch.column(j), &DataType::Int64))
                .collect::<std::result::Result<_, _>>()?;
            let counts = cast(batch.column(k), &DataType::Int64)?;
            let counts = counts.as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                for (j, level) in levels.iter().enumerate() {
                    v[j] = level.as_primitive::<Int64Type>().value(row) as u8;
                }
                patterns.push(&v, counts.value(row) as u64);
            }
        }
        Ok(patterns)
    }

    /// Checks that `model` was trained on this spec's comparisons and levels.
    pub fn check_model(&self, model: &Model) -> Result<()> {
        let want: Vec<(String, Vec<String>)> =
            self.names().into_iter().zip(self.labels()).collect();
        let have: Vec<(String, Vec<String>)> = model
            .comparisons
            .iter()
            .map(|c| (c.name.clone(), c.levels.clone()))
            .collect();
        if want != have {
            return Err(bad(format!(
                "the stored model compares {} but {SPEC_FILE} now compares {}: run `tessera match train` again",
                describe(&have),
                describe(&want)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
