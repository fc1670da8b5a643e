//! The golden profile: one row per `profile_id` with the identity facts (first and last
//! seen, identifier count, the user id, the latest e-mail and phone), the identify
//! traits merged by a survivorship rule per trait, and every computed trait of
//! `sql/traits/*.sql`.
//!
//! A trait file is one `SELECT` returning `profile_id` and the trait columns, usually
//! an aggregation over the `profile_events` view; its columns become columns of
//! `profiles`, so segments can say `WHERE total_revenue > 200`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use serde_json::Value;
use tessera_core::config::{IdentitySection, Survivorship, SurvivorshipRule};
use tessera_core::identifier::{normalize_email, normalize_phone};
use tessera_core::schema::{self, PROFILES};
use tessera_engine::Engine;
use tessera_lake::CommitNote;

use crate::error::{IdentityError, Result};

/// Folder of the computed-trait files inside a project.
pub const TRAITS_DIR: &str = "sql/traits";

/// What [`build`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub profiles: u64,
    /// Profiles recomputed (all of them in a full build).
    pub rebuilt: u64,
    /// Computed trait columns, in order.
    pub traits: Vec<String>,
}

/// Which profiles a build recomputes.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every profile, from every event.
    All,
    /// Only `touched` profiles (their events are read, nobody else's); rows of `removed`
    /// profiles (merged away) are dropped; every other row is kept as it was.
    Touched {
        touched: Vec<String>,
        removed: Vec<String>,
    },
}

/// Rebuilds `profiles` from `identity_map`, identify events and `sql/traits/`, for
/// every profile or only for those a run touched.
pub async fn build(
    engine: &Engine,
    project_dir: &Path,
    config: &IdentitySection,
    actor: &str,
    run: i64,
    scope: Scope,
) -> Result<Built> {
    let full_ctx = engine.session().await?;
    let (ctx, keep) = match &scope {
        Scope::All => (full_ctx.clone(), None),
        Scope::Touched { touched, removed } => {
            if !engine.lake().exists(PROFILES).await? {
                return Box::pin(build(engine, project_dir, config, actor, run, Scope::All)).await;
            }
            let ctx = restricted_session(engine, touched).await?;
            let mut gone: Vec<String> = touched.clone();
            gone.extend(removed.iter().cloned());
            (ctx, Some(gone))
        }
    };
    let (df, target, traits) = query(&ctx, project_dir, config).await?;
    let query_err = |e| IdentityError::Query {
        file: "profiles".into(),
        source: e,
    };
    // Rows kept from the current table (incremental builds): only when its columns are
    // still the ones the trait files produce; otherwise everything is rebuilt.
    let mut kept: Option<datafusion::physical_plan::SendableRecordBatchStream> = None;
    if let Some(gone) = keep {
        let current = full_ctx.table(PROFILES).await.map_err(query_err)?;
        if delta_schema(current.schema().as_arrow()).fields() != target.fields() {
            return Box::pin(build(engine, project_dir, config, actor, run, Scope::All)).await;
        }
        let gone_table = one_column_table("profile_id", &gone)?;
        full_ctx.register_table("rebuilt_profiles", Arc::new(gone_table))?;
        kept = Some(
            full_ctx
                .sql(&format!(
                    "SELECT * FROM {PROFILES} WHERE profile_id NOT IN (SELECT profile_id FROM rebuilt_profiles)"
                ))
                .await
                .map_err(query_err)?
                .execute_stream()
                .await
                .map_err(query_err)?,
        );
    }
    let def = schema::TableDef {
        name: PROFILES,
        schema: target.clone(),
        partition_columns: &[],
        description: "golden profiles: identify traits and computed traits",
    };
    let mut writer = engine.lake().replace_writer(&def).await?;
    let mut rows = 0u64;
    let mut stream = df.execute_stream().await.map_err(query_err)?;
    while let Some(batch) = stream.try_next().await.map_err(query_err)? {
        rows += batch.num_rows() as u64;
        writer.write(conform(&batch, &target)?).await?;
    }
    let rebuilt = rows;
    if let Some(mut kept) = kept {
        while let Some(batch) = kept.try_next().await.map_err(query_err)? {
            rows += batch.num_rows() as u64;
            writer.write(conform(&batch, &target)?).await?;
        }
    }
    writer
        .commit(
            CommitNote::new("profiles", actor)
                .detail("events_version", run)
                .detail("rebuilt", rebuilt)
                .detail("traits", traits.join(",")),
        )
        .await?;
    Ok(Built {
        profiles: rows,
        rebuilt,
        traits,
    })
}

/// The query of `profiles` over the tables registered in `ctx` (`identity_map`,
/// `events`, `profile_events`), its Delta schema and the computed trait columns.
async fn query(
    ctx: &SessionContext,
    project_dir: &Path,
    config: &IdentitySection,
) -> Result<(datafusion::dataframe::DataFrame, SchemaRef, Vec<String>)> {
    let golden = golden_traits(ctx, config).await?;
    ctx.register_table("golden_traits", Arc::new(golden))?;

    let trait_files = load_trait_files(&project_dir.join(TRAITS_DIR))?;
    let mut taken: Vec<String> = schema::profiles_base_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut joins = String::new();
    let mut selects = String::new();
    let mut traits = Vec::new();
    for (i, (name, sql)) in trait_files.iter().enumerate() {
        let df = tessera_engine::policy::read_only(ctx, sql)
            .await
            .map_err(|e| IdentityError::Query {
                file: name.clone(),
                source: e,
            })?;
        let columns: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if !columns.iter().any(|c| c == "profile_id") {
            return Err(IdentityError::BadFile {
                file: name.clone(),
                message: format!(
                    "a trait query must return profile_id and its trait columns; it returns {}",
                    columns.join(", ")
                ),
            });
        }
        for c in columns.iter().filter(|c| *c != "profile_id") {
            if taken.contains(c) {
                return Err(IdentityError::BadFile {
                    file: name.clone(),
                    message: format!(
                        "column {c:?} is already a profile column; rename it (AS another_name)"
                    ),
                });
            }
            taken.push(c.clone());
            traits.push(c.clone());
            selects.push_str(&format!(", t{i}.\"{c}\""));
        }
        joins.push_str(&format!(
            " LEFT JOIN ({sql}) AS t{i} ON t{i}.profile_id = base.profile_id"
        ));
    }
    let sql = format!(
        "WITH base AS (
            SELECT profile_id, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                   count(*) AS identifiers
            FROM identity_map GROUP BY profile_id),
         uid AS (SELECT profile_id, min(id_value) AS user_id FROM identity_map
                 WHERE id_type = 'user_id' GROUP BY profile_id),
         em AS (SELECT profile_id, first_value(id_value ORDER BY last_seen DESC, id_value) AS email
                FROM identity_map WHERE id_type = 'email' GROUP BY profile_id),
         ph AS (SELECT profile_id, first_value(id_value ORDER BY last_seen DESC, id_value) AS phone
                FROM identity_map WHERE id_type = 'phone' GROUP BY profile_id)
         SELECT base.profile_id, base.first_seen, base.last_seen, base.identifiers,
                uid.user_id, em.email, ph.phone, golden_traits.traits{selects}
         FROM base
         LEFT JOIN uid ON uid.profile_id = base.profile_id
         LEFT JOIN em ON em.profile_id = base.profile_id
         LEFT JOIN ph ON ph.profile_id = base.profile_id
         LEFT JOIN golden_traits ON golden_traits.profile_id = base.profile_id{joins}"
    );
    let df = ctx.sql(&sql).await.map_err(|e| IdentityError::Query {
        file: "profiles".into(),
        source: e,
    })?;
    let target = delta_schema(df.schema().as_arrow());
    Ok((df, target, traits))
}

/// What `profiles` would hold for the tables registered in `ctx` (a dry run registers
/// the identity map it predicts): every profile, in memory, nothing written.
pub async fn predict(
    ctx: &SessionContext,
    project_dir: &Path,
    config: &IdentitySection,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let (df, target, _) = query(ctx, project_dir, config).await?;
    let batches = df.collect().await.map_err(|e| IdentityError::Query {
        file: "profiles".into(),
        source: e,
    })?;
    let batches = batches
        .iter()
        .map(|b| conform(b, &target))
        .collect::<Result<Vec<_>>>()?;
    Ok((target, batches))
}

/// A one-column text table.
fn one_column_table(name: &str, values: &[String]) -> Result<MemTable> {
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]));
    let mut b = StringBuilder::new();
    for v in values {
        b.append_value(v);
    }
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(b.finish())])?;
    MemTable::try_new(schema, vec![vec![batch]]).map_err(IdentityError::DataFusion)
}

/// A session whose `events`, `identity_map` and `profile_events` hold only the
/// touched profiles: their identifiers, and the events carrying those identifiers
/// (read once, filtered on the id columns before any JSON is parsed).
async fn restricted_session(engine: &Engine, touched: &[String]) -> Result<SessionContext> {
    let query_err = |e| IdentityError::Query {
        file: "profiles (touched events)".into(),
        source: e,
    };
    let ctx = engine.session().await?;
    ctx.register_table(
        "touched_profiles",
        Arc::new(one_column_table("profile_id", touched)?),
    )?;
    let map = ctx
        .sql(
            "SELECT * FROM identity_map \
             WHERE profile_id IN (SELECT profile_id FROM touched_profiles)",
        )
        .await
        .map_err(query_err)?;
    let map_schema = Arc::new(map.schema().as_arrow().clone());
    let map_rows = map.collect().await.map_err(query_err)?;
    let map_table = MemTable::try_new(map_schema, vec![map_rows]).map_err(query_err)?;
    ctx.register_table("touched_map", Arc::new(map_table))?;
    let events = ctx
        .sql(
            "SELECT * FROM events \
             WHERE trim(coalesce(user_id, anonymous_id)) IN \
                   (SELECT id_value FROM touched_map WHERE id_type IN ('user_id', 'anonymous_id'))",
        )
        .await
        .map_err(query_err)?;
    let events_schema = Arc::new(events.schema().as_arrow().clone());
    let event_rows = events.collect().await.map_err(query_err)?;
    let events_table = MemTable::try_new(events_schema, vec![event_rows]).map_err(query_err)?;
    let map_table = ctx.deregister_table("touched_map")?;
    ctx.deregister_table("events")?;
    ctx.deregister_table("identity_map")?;
    ctx.register_table("events", Arc::new(events_table))?;
    if let Some(map_table) = map_table {
        ctx.register_table("identity_map", map_table)?;
    }
    tessera_engine::register_profile_events(&ctx).await?;
    Ok(ctx)
}

/// The trait files of a project, in name order, as `(name, sql)`.
pub fn load_trait_files(dir: &Path) -> Result<Vec<(String, String)>> {
    crate::rules::read_sql_files(dir, TRAITS_DIR)
}

/// The type Delta stores for `dt`: text as `Utf8`, integers as `Int64`, floats as
/// `Float64`, timestamps as microseconds UTC, lists and structs element-wise.
fn delta_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DataType::Int64,
        DataType::Float16 | DataType::Float32 => DataType::Float64,
        DataType::Timestamp(_, _) => schema::timestamp_type(),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => DataType::List(
            Arc::new(Field::new("element", delta_type(f.data_type()), true)),
        ),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Field::new(f.name(), delta_type(f.data_type()), true))
                .collect(),
        ),
        DataType::Dictionary(_, v) => delta_type(v),
        DataType::Null => DataType::Utf8,
        other => other.clone(),
    }
}

fn delta_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                Field::new(
                    f.name(),
                    delta_type(f.data_type()),
                    f.name() != "profile_id",
                )
            })
            .collect::<Vec<_>>(),
    ))
}

fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

/// The JSON text of a trait value; contact points normalized as the identity map
/// stores them (an e-mail trimmed and lower-cased, a phone in E.164 when it is in
/// international form), so the golden record is clean.
fn clean_trait(key: &str, value: Value) -> String {
    if let Value::String(s) = &value {
        let cleaned = match key {
            "email" => normalize_email(s),
            "phone" => normalize_phone(s, None),
            _ => None,
        };
        if let Some(c) = cleaned {
            return Value::String(c).to_string();
        }
        if key == "email" || key == "phone" {
            return Value::String(s.trim().to_owned()).to_string();
        }
    }
    value.to_string()
}

/// One trait's candidates under its rule.
enum Pick {
    /// `(rank, time, value)`: lowest rank, then by the rule's time order.
    Best(u32, i64, String),
    /// value → (count, latest time)
    Counts(HashMap<String, (u64, i64)>),
}

/// Merges the identify traits of each profile by survivorship rule into one JSON
/// object per profile: a table `(profile_id, traits)`.
async fn golden_traits(ctx: &SessionContext, config: &IdentitySection) -> Result<MemTable> {
    let query_err = |e| IdentityError::Query {
        file: "profiles (identify traits)".into(),
        source: e,
    };
    let mut stream = ctx
        .sql(
            "SELECT profile_id, CAST(timestamp AS BIGINT) AS ts, source, traits \
             FROM profile_events \
             WHERE type = 'identify' AND traits IS NOT NULL AND profile_id IS NOT NULL",
        )
        .await
        .map_err(query_err)?
        .execute_stream()
        .await
        .map_err(query_err)?;
    let rule_of = |key: &str| config.traits.get(key).cloned().unwrap_or_default();
    let mut picks: HashMap<String, BTreeMap<String, Pick>> = HashMap::new();
    while let Some(batch) = stream.try_next().await.map_err(query_err)? {
        let text = |i: usize| -> Result<ArrayRef> { Ok(cast(batch.column(i), &DataType::Utf8)?) };
        let (pid, src, tr) = (text(0)?, text(2)?, text(3)?);
        let (pid, src, tr) = (
            pid.as_string::<i32>(),
            src.as_string::<i32>(),
            tr.as_string::<i32>(),
        );
        let ts = batch.column(1).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(tr.value(row)) else {
                continue;
            };
            let profile = picks.entry(pid.value(row).to_owned()).or_default();
            let t = ts.value(row);
            for (key, value) in map {
                if value.is_null() {
                    continue;
                }
                let value = clean_trait(&key, value);
                let rule = rule_of(&key);
                let (rank, time) = match &rule {
                    Survivorship::Rule(SurvivorshipRule::Latest) => (0, t),
                    Survivorship::Rule(SurvivorshipRule::First) => (0, -t),
                    Survivorship::Rule(SurvivorshipRule::MostFrequent) => {
                        let counts = profile
                            .entry(key)
                            .or_insert_with(|| Pick::Counts(HashMap::new()));
                        if let Pick::Counts(c) = counts {
                            let e = c.entry(value).or_insert((0, t));
                            e.0 += 1;
                            e.1 = e.1.max(t);
                        }
                        continue;
                    }
                    Survivorship::SourcePriority { source_priority } => {
                        let s = src.value(row);
                        let rank = source_priority
                            .iter()
                            .position(|p| p == s)
                            .unwrap_or(source_priority.len());
                        (rank as u32, t)
                    }
                };
                match profile.get_mut(&key) {
                    Some(Pick::Best(r, bt, bv)) => {
                        if (rank, std::cmp::Reverse(time)) < (*r, std::cmp::Reverse(*bt)) {
                            *r = rank;
                            *bt = time;
                            *bv = value;
                        }
                    }
                    _ => {
                        profile.insert(key, Pick::Best(rank, time, value));
                    }
                }
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("profile_id", DataType::Utf8, false),
        Field::new("traits", DataType::Utf8, true),
    ]));
    let mut ids = StringBuilder::new();
    let mut docs = StringBuilder::new();
    let mut batches = Vec::new();
    let mut n = 0;
    for (profile, traits) in picks {
        let mut doc = String::from("{");
        for (i, (key, pick)) in traits.into_iter().enumerate() {
            let value = match pick {
                Pick::Best(_, _, v) => v,
                Pick::Counts(c) => c
                    .into_iter()
                    .max_by(|x, y| x.1.cmp(&y.1).then_with(|| y.0.cmp(&x.0)))
                    .map(|(v, _)| v)
                    .unwrap_or_default(),
            };
            if i > 0 {
                doc.push(',');
            }
            doc.push_str(&Value::String(key).to_string());
            doc.push(':');
            doc.push_str(&value);
        }
        doc.push('}');
        ids.append_value(profile);
        docs.append_value(doc);
        n += 1;
        if n % 65_536 == 0 {
            batches.push(RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(ids.finish()), Arc::new(docs.finish())],
            )?);
        }
    }
    batches.push(RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids.finish()), Arc::new(docs.finish())],
    )?);
    MemTable::try_new(schema, vec![batches]).map_err(|e| IdentityError::Query {
        file: "profiles".into(),
        source: e,
    })
}
