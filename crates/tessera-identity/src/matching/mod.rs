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

pub mod spec;

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

/// Times the stages of a run.
#[derive(Default)]
struct Clock {
    current: Option<(String, std::time::Instant)>,
    done: Vec<(String, f64)>,
}

impl Clock {
    fn start(&mut self, name: &str) {
        self.stop();
        self.current = Some((name.to_owned(), std::time::Instant::now()));
    }

    fn stop(&mut self) {
        if let Some((name, at)) = self.current.take() {
            self.done.push((name, at.elapsed().as_secs_f64()));
        }
    }

    fn finish(mut self) -> Vec<(String, f64)> {
        self.stop();
        self.done
    }
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

    pub fn matches(&self) -> usize {
        self.pairs
            .iter()
            .filter(|p| p.probability >= self.threshold)
            .count()
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

/// SplitMix64: the seeded stream of the random-pair draw.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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

    /// `u` from random pairs (all pairs when there are no more than the spec asks for).
    /// `u` of every comparison: exact over all pairs from the column's value counts
    /// when its distinct values make no more pairs than the random-pair budget (names,
    /// cities, postcodes: far fewer comparisons than pairs of records), from random
    /// pairs of records otherwise. Returns `u` and the random pairs drawn.
    async fn estimate_u(&self) -> Result<(Vec<Vec<f64>>, u64, Vec<String>)> {
        let k = self.spec.comparisons.len();
        let level_counts: Vec<usize> = self.labels().iter().map(Vec::len).collect();
        let mut u: Vec<Option<Vec<f64>>> = Vec::with_capacity(k);
        for j in 0..k {
            u.push(self.u_exact(j, &level_counts).await?);
        }
        let sampled: Vec<bool> = u.iter().map(Option::is_none).collect();
        let mut drawn = 0;
        if sampled.iter().any(|s| *s) {
            let masked: Vec<bool> = sampled.iter().map(|s| !s).collect();
            let (shares, pairs) = self.u_from_random_pairs(&masked).await?;
            drawn = pairs;
            for ((slot, share), sampled) in u.iter_mut().zip(shares).zip(&sampled) {
                if *sampled {
                    *slot = Some(share);
                }
            }
        }
        let exact = self
            .spec
            .comparisons
            .iter()
            .zip(&sampled)
            .filter(|(_, s)| !**s)
            .map(|(c, _)| c.name().to_owned())
            .collect();
        Ok((
            u.into_iter().map(Option::unwrap_or_default).collect(),
            drawn,
            exact,
        ))
    }

    /// `u` of comparison `j` over every pair of records, from value counts, or `None`
    /// when the column has too many distinct values for that.
    async fn u_exact(&self, j: usize, level_counts: &[usize]) -> Result<Option<Vec<f64>>> {
        let c = &self.spec.comparisons[j];
        let Some(column) = self.compared.column_by_name(&c.column) else {
            return Ok(None);
        };
        let values = text(column)?;
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for v in values.iter().flatten() {
            *counts.entry(v).or_default() += 1;
        }
        let d = counts.len() as u64;
        if d * d.saturating_sub(1) / 2 > self.spec.train.random_pairs {
            return Ok(None);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new(&c.column, DataType::Utf8, false),
            Field::new("__n", DataType::Int64, false),
        ]));
        let (names, ns): (Vec<&str>, Vec<i64>) = counts.iter().map(|(v, n)| (*v, *n)).unzip();
        let same: i64 = ns.iter().map(|n| n * (n - 1) / 2).sum();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(names)) as ArrayRef,
                Arc::new(Int64Array::from(ns)),
            ],
        )?;
        let table = format!("match_values_{j}");
        let _ = self.ctx.deregister_table(&table)?;
        self.ctx.register_table(
            &table,
            Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
        )?;
        let col = quote_ident(&c.column);
        let masked: Vec<bool> = (0..self.spec.comparisons.len()).map(|i| i != j).collect();
        let mut patterns = self
            .weighted_patterns(
                &format!("FROM {table} AS l JOIN {table} AS r ON l.{col} < r.{col}"),
                &masked,
                &[("l.__n * r.__n".to_owned(), "w".to_owned())],
                "sum(w)",
                &format!("value pairs of {}", c.column),
            )
            .await?;
        let _ = self.ctx.deregister_table(&table)?;
        // Records sharing a value: exact agreement.
        let mut exact = vec![NULL_LEVEL; self.spec.comparisons.len()];
        exact[j] = (level_counts[j] - 1) as u8;
        patterns.push(&exact, same.max(0) as u64);
        Ok(Some(level_shares(&patterns, level_counts).swap_remove(j)))
    }

    async fn u_from_random_pairs(&self, masked: &[bool]) -> Result<(Vec<Vec<f64>>, u64)> {
        let n = self.records;
        let all = self.all_pairs();
        let wanted = self.spec.train.random_pairs.min(all);
        // Each pair is one row of two structs `l` and `r` holding the compared columns
        // (those not masked), gathered here: the comparisons then run with no join, on
        // every core.
        let needed: Vec<usize> = self
            .spec
            .comparisons
            .iter()
            .zip(masked.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, m)| !**m)
            .filter_map(|(c, _)| self.compared.schema().index_of(&c.column).ok())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let compared = self.compared.project(&needed)?;
        let side = DataType::Struct(compared.schema().fields().clone());
        let schema = Arc::new(Schema::new(vec![
            Field::new("l", side.clone(), false),
            Field::new("r", side, false),
        ]));
        let mut batches = Vec::new();
        let (mut left, mut right): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        let mut flush = |left: &mut Vec<u32>, right: &mut Vec<u32>| -> Result<()> {
            let gather = |rows: Vec<u32>| -> Result<ArrayRef> {
                let rows = arrow::array::UInt32Array::from(rows);
                let columns = compared
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c.as_ref(), &rows, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Arc::new(arrow::array::StructArray::try_new(
                    compared.schema().fields().clone(),
                    columns,
                    None,
                )?))
            };
            batches.push(RecordBatch::try_new(
                schema.clone(),
                vec![
                    gather(std::mem::take(left))?,
                    gather(std::mem::take(right))?,
                ],
            )?);
            Ok(())
        };
        if wanted == all {
            for i in 0..n as u32 {
                for j in i + 1..n as u32 {
                    left.push(i);
                    right.push(j);
                    if left.len() == 16_384 {
                        flush(&mut left, &mut right)?;
                    }
                }
            }
        } else {
            let mut rng = Rng(self.spec.train.seed);
            for _ in 0..wanted {
                let i = rng.below(n);
                let mut j = rng.below(n - 1);
                if j >= i {
                    j += 1;
                }
                left.push(i as u32);
                right.push(j as u32);
                if left.len() == 16_384 {
                    flush(&mut left, &mut right)?;
                }
            }
        }
        flush(&mut left, &mut right)?;
        let _ = self.ctx.deregister_table(RANDOM)?;
        self.ctx.register_table(
            RANDOM,
            Arc::new(MemTable::try_new(
                schema,
                spread(batches, self.ctx.state().config().target_partitions()),
            )?),
        )?;
        let patterns = self
            .patterns(&format!("FROM {RANDOM}"), masked, "random pairs for u")
            .await?;
        let counts: Vec<usize> = self.labels().iter().map(Vec::len).collect();
        Ok((level_shares(&patterns, &counts), wanted))
    }

    /// Trains a model: `u` from random pairs, `m` by EM per blocking rule, λ over all
    /// pairs. `stage` hears what is running.
    pub async fn train(&self, stage: &dyn Fn(&str)) -> Result<(Model, TrainReport)> {
        let clock = std::sync::Mutex::new(Clock::default());
        let stage = |name: &str| {
            if let Ok(mut c) = clock.lock() {
                c.start(name);
            }
            stage(name);
        };
        if self.records < 2 {
            return Err(bad(format!(
                "the records query returned {} record(s): at least 2 are needed",
                self.records
            )));
        }
        stage("estimating u");
        let (u, random_pairs, u_exact) = self.estimate_u().await?;
        let names = self.names();
        let start = Model::initial(&names, &self.labels(), u, SESSION_LAMBDA);
        let options = EmOptions {
            max_iterations: self.spec.train.max_iterations,
            ..EmOptions::default()
        };

        // One EM session per rule, on the comparisons it does not read.
        let k = names.len();
        let mut m_sum: Vec<Option<Vec<f64>>> = vec![None; k];
        let mut trained_in = vec![0usize; k];
        let mut sessions = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            stage(&format!("EM on the pairs of rule {}", rule.name));
            let masked: Vec<bool> = self
                .spec
                .comparisons
                .iter()
                .map(|c| c.used_by(&rule.condition))
                .collect();
            let from = blocking::rule_from(RECORDS, &self.spec.id, &self.rules, i, false);
            let patterns = self
                .patterns(&from, &masked, &format!("blocking rule {}", rule.name))
                .await?;
            let mut model = start.clone();
            let report = model.train(&patterns, options);
            let mut trained = Vec::new();
            if patterns.pairs() > 0 {
                for (j, c) in model.comparisons.iter().enumerate() {
                    if masked[j] {
                        continue;
                    }
                    trained.push(c.name.clone());
                    trained_in[j] += 1;
                    let sum = m_sum[j].get_or_insert_with(|| vec![0.0; c.m.len()]);
                    sum.iter_mut().zip(&c.m).for_each(|(s, m)| *s += m);
                }
            }
            sessions.push(Session {
                rule: rule.name.clone(),
                pairs: patterns.pairs(),
                trained,
                lambda: model.lambda,
                iterations: report.iterations,
                converged: report.converged || patterns.pairs() == 0,
            });
        }
        let mut model = start;
        let mut untrained = Vec::new();
        for (j, c) in model.comparisons.iter_mut().enumerate() {
            match &m_sum[j] {
                Some(sum) => {
                    let total: f64 = sum.iter().sum();
                    c.m = sum.iter().map(|s| s / total).collect();
                }
                None => untrained.push(c.name.clone()),
            }
            c.tf_adjust = self.spec.comparisons[j].tf_adjust;
        }

        // λ over all pairs: the candidates' expected matches.
        stage("estimating the share of matches");
        let mut candidates = Patterns::new(k);
        // The candidate pairs, each counted for the first rule admitting it.
        let mut candidate_pairs = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let from = blocking::rule_from(RECORDS, &self.spec.id, &self.rules, i, true);
            let p = self
                .patterns(&from, &[], &format!("blocking rule {}", rule.name))
                .await?;
            for x in 0..p.len() {
                candidates.push(p.vector(x), p.counts[x]);
            }
            candidate_pairs.push((rule.name.clone(), p.pairs()));
        }
        let (expected_matches, lambda_iterations) =
            estimate_lambda(&mut model, &candidates, self.all_pairs() as f64);
        let stages = clock.into_inner().map(Clock::finish).unwrap_or_default();
        Ok((
            model,
            TrainReport {
                records: self.records,
                candidate_pairs,
                random_pairs,
                u_exact,
                sessions,
                untrained,
                expected_matches,
                lambda_iterations,
                stages,
            },
        ))
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

    /// Term frequencies (share of records holding each value) of the comparisons that
    /// adjust for them.
    async fn term_frequencies(&self, model: &Model) -> Result<Vec<Option<HashMap<String, f64>>>> {
        let mut out = Vec::new();
        for (c, spec) in model.comparisons.iter().zip(&self.spec.comparisons) {
            if !c.tf_adjust {
                out.push(None);
                continue;
            }
            let col = quote_ident(&spec.column);
            let sql = format!(
                "SELECT {col}, count(*) FROM {RECORDS} WHERE {col} IS NOT NULL GROUP BY {col}"
            );
            let mut counts = HashMap::new();
            let mut total = 0.0;
            for batch in collect(&self.ctx, &sql, "term frequencies").await? {
                let values = text(batch.column(0))?;
                let n = batch.column(1).as_primitive::<Int64Type>();
                for row in 0..batch.num_rows() {
                    counts.insert(values.value(row).to_owned(), n.value(row) as f64);
                    total += n.value(row) as f64;
                }
            }
            counts.values_mut().for_each(|n| *n /= total.max(1.0));
            out.push(Some(counts));
        }
        Ok(out)
    }

    /// Scores every candidate pair; keeps those at or above the review band.
    pub async fn predict(&self, model: &Model, stage: &dyn Fn(&str)) -> Result<Prediction> {
        self.check_model(model)?;
        let tf = self.term_frequencies(model).await?;
        let k = model.comparisons.len();
        let (threshold, review) = (self.spec.predict.threshold, self.spec.predict.review);
        let id = quote_ident(&self.spec.id);
        let mut carry = vec![
            (format!("l.{id}"), "id_l".to_owned()),
            (format!("r.{id}"), "id_r".to_owned()),
        ];
        for (j, c) in self.spec.comparisons.iter().enumerate() {
            if tf[j].is_some() {
                carry.push((format!("l.{}", quote_ident(&c.column)), format!("t{j}")));
            }
        }
        let mut pairs = Vec::new();
        let mut candidates = 0u64;
        for (i, rule) in self.rules.iter().enumerate() {
            stage(&format!("scoring the pairs of rule {}", rule.name));
            let what = format!("blocking rule {}", rule.name);
            let from = blocking::rule_from(RECORDS, &self.spec.id, &self.rules, i, true);
            let sql = self.vector_query(&from, &[], &carry, false, "", "");
            let err = query_err(&what);
            let mut stream = self
                .ctx
                .sql(&sql)
                .await
                .map_err(&err)?
                .execute_stream()
                .await
                .map_err(&err)?;
            while let Some(batch) = stream.try_next().await.map_err(&err)? {
                candidates += batch.num_rows() as u64;
                let ids_l = text(batch.column(k))?;
                let ids_r = text(batch.column(k + 1))?;
                let levels: Vec<ArrayRef> = (0..k)
                    .map(|j| cast(batch.column(j), &DataType::Int64))
                    .collect::<std::result::Result<_, _>>()?;
                let mut values: HashMap<usize, StringArray> = HashMap::new();
                for (j, t) in tf.iter().enumerate() {
                    if let (Some(_), Some(c)) = (t, batch.column_by_name(&format!("t{j}"))) {
                        values.insert(j, text(c)?);
                    }
                }
                let mut v = vec![0u8; k];
                for row in 0..batch.num_rows() {
                    for (j, l) in levels.iter().enumerate() {
                        v[j] = l.as_primitive::<Int64Type>().value(row) as u8;
                    }
                    let weights = term_weights(model, &v, &tf, |j| {
                        values
                            .get(&j)
                            .filter(|a| a.is_valid(row))
                            .map(|a| a.value(row))
                    });
                    let weight = model.prior_weight() + weights.iter().sum::<f64>();
                    let p = probability(weight);
                    if p >= review {
                        pairs.push(ScoredPair {
                            id_l: ids_l.value(row).to_owned(),
                            id_r: ids_r.value(row).to_owned(),
                            rule: i,
                            levels: v.clone(),
                            weights,
                            weight,
                            probability: p,
                        });
                    }
                }
            }
        }
        pairs.sort_by(|a, b| {
            b.weight
                .total_cmp(&a.weight)
                .then_with(|| (&a.id_l, &a.id_r).cmp(&(&b.id_l, &b.id_r)))
        });
        let clusters = clusters(
            pairs
                .iter()
                .filter(|p| p.probability >= threshold)
                .map(|p| (p.id_l.as_str(), p.id_r.as_str())),
        );
        Ok(Prediction {
            candidates,
            pairs,
            threshold,
            review,
            clusters,
        })
    }

    /// Why two records score what they do (whether or not a blocking rule pairs them).
    pub async fn explain(&self, model: &Model, a: &str, b: &str) -> Result<PairExplanation> {
        self.check_model(model)?;
        let id = quote_ident(&self.spec.id);
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        for x in [a, b] {
            let sql = format!("SELECT count(*) FROM {RECORDS} WHERE {id} = {}", literal(x));
            let batches = collect(&self.ctx, &sql, "explain").await?;
            let n = batches
                .first()
                .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0));
            if n == 0 {
                return Err(IdentityError::BadIdentifier(format!(
                    "no record has {} = {x:?}",
                    self.spec.id
                )));
            }
        }
        let tf = self.term_frequencies(model).await?;
        let mut carry = Vec::new();
        for (j, c) in self.spec.comparisons.iter().enumerate() {
            let col = quote_ident(&c.column);
            carry.push((format!("l.{col}"), format!("a{j}")));
            carry.push((format!("r.{col}"), format!("b{j}")));
        }
        let sql = self.vector_query(
            &format!(
                "FROM {RECORDS} AS l, {RECORDS} AS r WHERE l.{id} = {} AND r.{id} = {}",
                literal(a),
                literal(b)
            ),
            &[],
            &carry,
            false,
            "",
            "",
        );
        let batches = collect(&self.ctx, &sql, "explain").await?;
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| IdentityError::BadIdentifier(format!("no pair {a}, {b}")))?;
        let k = model.comparisons.len();
        let text = |name: &str| -> Option<String> {
            let c = text(batch.column_by_name(name)?).ok()?;
            c.is_valid(0).then(|| c.value(0).to_owned())
        };
        let v: Vec<u8> = (0..k)
            .map(|j| {
                cast(batch.column(j), &DataType::Int64)
                    .map(|c| c.as_primitive::<Int64Type>().value(0) as u8)
            })
            .collect::<std::result::Result<_, _>>()?;
        let lefts: Vec<Option<String>> = (0..k).map(|j| text(&format!("a{j}"))).collect();
        let weights = term_weights(model, &v, &tf, |j| lefts[j].as_deref());
        let terms = model
            .comparisons
            .iter()
            .enumerate()
            .map(|(j, c)| Term {
                comparison: c.name.clone(),
                level: level_label(c, v[j]),
                weight: weights[j],
                left: lefts[j].clone(),
                right: text(&format!("b{j}")),
            })
            .collect();
        let weight = model.prior_weight() + weights.iter().sum::<f64>();
        let p = probability(weight);
        Ok(PairExplanation {
            id_l: a.to_owned(),
            id_r: b.to_owned(),
            prior_weight: model.prior_weight(),
            terms,
            weight,
            probability: p,
            decision: decision(p, &self.spec.predict)
                .unwrap_or("non-match")
                .into(),
        })
    }

    /// Replaces `match_pairs` with a prediction's pairs (by `model`, stored as
    /// `model_version`); returns the rows written.
    pub async fn write_pairs(
        &self,
        engine: &Engine,
        model: &Model,
        prediction: &Prediction,
        model_version: i64,
        actor: &str,
    ) -> Result<u64> {
        let (rules, predict) = (&self.rules, &self.spec.predict);
        let def = schema::table(MATCH_PAIRS).ok_or_else(|| bad("no match_pairs table"))?;
        let mut writer = engine.lake().replace_writer(&def).await?;
        let now = chrono::Utc::now().timestamp_micros();
        for chunk in prediction.pairs.chunks(65_536) {
            let comparisons: Vec<String> = chunk
                .iter()
                .map(|p| {
                    let terms: serde_json::Map<String, serde_json::Value> = model
                        .comparisons
                        .iter()
                        .enumerate()
                        .map(|(j, c)| {
                            (
                                c.name.clone(),
                                serde_json::json!({
                                    "level": level_label(c, p.levels[j]),
                                    "weight": (p.weights[j] * 1000.0).round() / 1000.0,
                                }),
                            )
                        })
                        .collect();
                    serde_json::Value::Object(terms).to_string()
                })
                .collect();
            let n = chunk.len();
            let batch = RecordBatch::try_new(
                def.schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(chunk.iter().map(|p| &p.id_l)))
                        as ArrayRef,
                    Arc::new(StringArray::from_iter_values(chunk.iter().map(|p| &p.id_r))),
                    Arc::new(StringArray::from_iter_values(
                        chunk.iter().map(|p| rules[p.rule].name.as_str()),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        chunk.iter().map(|p| p.weight),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        chunk.iter().map(|p| p.probability),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        chunk
                            .iter()
                            .map(|p| decision(p.probability, predict).unwrap_or("review")),
                    )),
                    Arc::new(StringArray::from(
                        chunk
                            .iter()
                            .map(|p| prediction.clusters.get(&p.id_l).cloned())
                            .collect::<Vec<_>>(),
                    )),
                    Arc::new(StringArray::from(comparisons)),
                    Arc::new(Int64Array::from(vec![model_version; n])),
                    Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
                ],
            )?;
            writer.write(batch).await?;
        }
        writer
            .commit(
                CommitNote::new("match predict", actor)
                    .detail("model_version", model_version)
                    .detail("pairs", prediction.pairs.len() as u64),
            )
            .await?;
        Ok(prediction.pairs.len() as u64)
    }
}

fn describe(list: &[(String, Vec<String>)]) -> String {
    list.iter()
        .map(|(n, l)| format!("{n} ({})", l.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn level_label(c: &crate::fellegi_sunter::Comparison, level: u8) -> String {
    if level == NULL_LEVEL {
        "null".into()
    } else {
        c.levels[level as usize].clone()
    }
}

/// `match`, `review`, or nothing below the review band.
fn decision(p: f64, predict: &spec::PredictSpec) -> Option<&'static str> {
    if p >= predict.threshold {
        Some("match")
    } else if p >= predict.review {
        Some("review")
    } else {
        None
    }
}

/// Each comparison's weight for vector `v`; an exact agreement of a comparison that
/// adjusts for term frequency is weighed by the agreed value's frequency.
fn term_weights<'a>(
    model: &Model,
    v: &[u8],
    tf: &[Option<HashMap<String, f64>>],
    value: impl Fn(usize) -> Option<&'a str>,
) -> Vec<f64> {
    model
        .comparisons
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let exact = v[j] as usize == c.level_count() - 1;
            match (&tf[j], exact) {
                (Some(freq), true) => match value(j).and_then(|x| freq.get(x)) {
                    Some(&f) => c.exact_weight_tf(f),
                    None => c.weight(v[j]),
                },
                _ => c.weight(v[j]),
            }
        })
        .collect()
}

/// λ — the share of matches among all `total` pairs — by EM with `m` and `u` fixed:
/// each candidate pair counts its match probability, every other pair none.
/// Returns the expected matches among the candidates and the iterations.
fn estimate_lambda(model: &mut Model, candidates: &Patterns, total: f64) -> (f64, usize) {
    let weights: Vec<f64> = (0..candidates.len())
        .map(|i| model.weight(candidates.vector(i)) - model.prior_weight())
        .collect();
    let mut lambda = (candidates.pairs() as f64 / total.max(1.0)).clamp(1e-12, 0.5);
    let mut expected = 0.0;
    for iteration in 1..=500 {
        let prior = (lambda / (1.0 - lambda)).log2();
        expected = weights
            .iter()
            .zip(&candidates.counts)
            .map(|(w, &c)| c as f64 * probability(prior + w))
            .sum::<f64>();
        let next = (expected / total.max(1.0)).clamp(1e-12, 0.5);
        let moved = ((next - lambda) / lambda).abs();
        lambda = next;
        if moved < 1e-9 {
            model.lambda = lambda;
            return (expected, iteration);
        }
    }
    model.lambda = lambda;
    (expected, 500)
}

/// Connected components of the matched pairs (the union-find of the identity graph):
/// each record's cluster is its smallest id.
fn clusters<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> HashMap<String, String> {
    let mut names: Interner<&str> = Interner::new();
    let mut sets = UnionFind::new();
    for (a, b) in pairs {
        let (a, _) = names.intern(&a);
        let (b, _) = names.intern(&b);
        sets.grow_to(names.len());
        sets.union(a, b);
    }
    let mut smallest: HashMap<u32, &str> = HashMap::new();
    for id in 0..names.len() as u32 {
        let name = *names.key(id);
        let first = smallest.entry(sets.find(id)).or_insert(name);
        if name < *first {
            *first = name;
        }
    }
    (0..names.len() as u32)
        .map(|id| {
            let root = sets.find(id);
            ((*names.key(id)).to_owned(), smallest[&root].to_owned())
        })
        .collect()
}

/// Stores a trained model as the next version of `match_models`; returns the version.
pub async fn save_model(
    engine: &Engine,
    model: &Model,
    report: &TrainReport,
    duration_ms: i64,
    actor: &str,
) -> Result<i64> {
    let version = latest_model(engine).await?.map_or(1, |(v, _)| v + 1);
    let def = schema::table(MATCH_MODELS).ok_or_else(|| bad("no match_models table"))?;
    let batch = RecordBatch::try_new(
        def.schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![version])) as ArrayRef,
            Arc::new(
                TimestampMicrosecondArray::from(vec![chrono::Utc::now().timestamp_micros()])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![model.to_json()])),
            Arc::new(Int64Array::from(vec![report.records as i64])),
            Arc::new(Int64Array::from(vec![report.candidates() as i64])),
            Arc::new(Int64Array::from(vec![report.random_pairs as i64])),
            Arc::new(Int64Array::from(vec![report.iterations() as i64])),
            Arc::new(BooleanArray::from(vec![report.converged()])),
            Arc::new(StringArray::from(vec![
                serde_json::to_string(report).unwrap_or_default(),
            ])),
            Arc::new(Int64Array::from(vec![duration_ms])),
        ],
    )?;
    let mut writer = engine.lake().append_writer(&def).await?;
    writer.write(batch).await?;
    writer
        .commit(CommitNote::new("match train", actor).detail("version", version))
        .await?;
    Ok(version)
}

async fn latest_model(engine: &Engine) -> Result<Option<(i64, String)>> {
    if !engine.lake().exists(MATCH_MODELS).await? {
        return Ok(None);
    }
    let ctx = engine.session_of(&[MATCH_MODELS]).await?;
    let batches = collect(
        &ctx,
        "SELECT version, model FROM match_models ORDER BY version DESC LIMIT 1",
        MATCH_MODELS,
    )
    .await?;
    match batches.iter().find(|b| b.num_rows() > 0) {
        Some(b) => Ok(Some((
            b.column(0).as_primitive::<Int64Type>().value(0),
            text(b.column(1))?.value(0).to_owned(),
        ))),
        None => Ok(None),
    }
}

/// The latest trained model and its version.
pub async fn load_model(engine: &Engine) -> Result<(i64, Model)> {
    let (version, json) = latest_model(engine)
        .await?
        .ok_or_else(|| bad("no trained model yet: run `tessera match train` first"))?;
    let model =
        Model::from_json(&json).map_err(|e| bad(format!("match_models version {version}: {e}")))?;
    Ok((version, model))
}

/// Pairwise quality against known matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub threshold: f64,
    pub predicted: u64,
    pub truth: u64,
    pub true_positives: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Precision, recall and F1 of the pairs at or above `threshold` (pairs are unordered).
pub fn evaluate(
    scored: &[(String, String, f64)],
    truth: &HashSet<(String, String)>,
    threshold: f64,
) -> Metrics {
    let predicted: HashSet<(String, String)> = scored
        .iter()
        .filter(|(_, _, p)| *p >= threshold)
        .map(|(a, b, _)| ordered(a, b))
        .collect();
    let tp = predicted.iter().filter(|p| truth.contains(*p)).count() as u64;
    let precision = if predicted.is_empty() {
        0.0
    } else {
        tp as f64 / predicted.len() as f64
    };
    let recall = if truth.is_empty() {
        0.0
    } else {
        tp as f64 / truth.len() as f64
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Metrics {
        threshold,
        predicted: predicted.len() as u64,
        truth: truth.len() as u64,
        true_positives: tp,
        precision,
        recall,
        f1,
    }
}

/// An unordered pair in a canonical order.
pub fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// Known matches from a CSV file with a header: either two id columns (one matching
/// pair per line) or `id,cluster` (records of one cluster match each other).
pub fn read_truth(path: &Path) -> Result<HashSet<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default().to_lowercase();
    let by_cluster = header
        .split(',')
        .nth(1)
        .is_some_and(|c| c.trim() == "cluster");
    let mut pairs = HashSet::new();
    let mut clusters: HashMap<String, Vec<String>> = HashMap::new();
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() < 2 || cells[0].is_empty() || cells[1].is_empty() {
            return Err(IdentityError::BadFile {
                file: path.display().to_string(),
                message: format!("line {}: expected two values, got {line:?}", n + 2),
            });
        }
        if by_cluster {
            clusters
                .entry(cells[1].to_owned())
                .or_default()
                .push(cells[0].to_owned());
        } else if cells[0] != cells[1] {
            pairs.insert(ordered(cells[0], cells[1]));
        }
    }
    for members in clusters.values() {
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                pairs.insert(ordered(a, b));
            }
        }
    }
    Ok(pairs)
}

/// The scored pairs stored in `match_pairs`: (id_l, id_r, probability).
pub async fn stored_pairs(engine: &Engine) -> Result<Vec<(String, String, f64)>> {
    if !engine.lake().exists(MATCH_PAIRS).await? {
        return Err(bad("no match_pairs yet: run `tessera match predict` first"));
    }
    let ctx = engine.session_of(&[MATCH_PAIRS]).await?;
    let mut out = Vec::new();
    for b in collect(
        &ctx,
        "SELECT id_l, id_r, probability FROM match_pairs",
        MATCH_PAIRS,
    )
    .await?
    {
        let (l, r) = (text(b.column(0))?, text(b.column(1))?);
        let p = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            out.push((l.value(i).to_owned(), r.value(i).to_owned(), p.value(i)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
