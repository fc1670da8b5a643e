//! Runs every `tests/slt/*.slt` file against a real lake in a temporary folder.
//!
//! Besides SQL (run in a fresh Tessera session each time, so it sees every lake table,
//! `segment()` and `in_segment()`), the files use three directives:
//!
//! - `LOAD <table> AS <query>` replaces a lake table's rows with the query's result
//!   (columns missing from the query are NULL);
//! - `CREATE SEGMENT <name> AS <file text>` defines `sql/segments/<name>.sql`;
//!   `DROP SEGMENT <name>` removes it;
//! - `REFRESH SEGMENTS [name ...] [FORCE]` runs a refresh and returns one row per
//!   segment: name, status, refresh version, members, entered, exited.
//!
//! Every session evaluates `as_of()` at 2026-10-31T12:00:00Z.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{DBOutput, DefaultColumnType};
use tessera_core::schema::{self, TableDef};
use tessera_engine::{Engine, EngineConfig};
use tessera_lake::{CommitNote, Lake};
use tessera_segments::SegmentSet;
use tessera_segments::refresh::{RefreshOptions, Status, refresh};

/// 2026-10-31T12:00:00Z.
const AS_OF_MICROS: i64 = 1_793_448_000_000_000;

struct Db {
    engine: Engine,
    segments: BTreeMap<String, String>,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

fn err(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

fn column_type(t: &DataType) -> DefaultColumnType {
    if t.is_integer() {
        DefaultColumnType::Integer
    } else if t.is_floating() {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

fn render(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DbError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(row).to_string();
                        if s.is_empty() {
                            "(empty)".to_owned()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::new(dir.path().to_str().expect("utf-8"), HashMap::new()).expect("lake");
        let engine =
            Engine::new(Arc::new(lake), EngineConfig::deterministic()).with_as_of(AS_OF_MICROS);
        Db {
            engine,
            segments: BTreeMap::new(),
            _dir: dir,
        }
    }

    /// `LOAD table AS query`: replaces the table's rows.
    async fn load(&self, table: &str, query: &str) -> Result<(), DbError> {
        let ctx = self.engine.session().await.map_err(err)?;
        let batches = ctx
            .sql(query)
            .await
            .map_err(err)?
            .collect()
            .await
            .map_err(err)?;
        let standard = schema::table(table).ok_or_else(|| err(format!("unknown table {table}")))?;
        // `profiles` takes the query's columns (its schema follows the trait files).
        let def = if table == schema::PROFILES {
            let fields = batches
                .first()
                .map(|b| b.schema().fields().clone())
                .ok_or_else(|| err("LOAD profiles needs at least one row"))?;
            TableDef {
                schema: Arc::new(Schema::new(fields)),
                ..standard
            }
        } else {
            standard
        };
        let mut w = self.engine.lake().replace_writer(&def).await.map_err(err)?;
        for b in batches {
            let columns: Vec<ArrayRef> = def
                .schema
                .fields()
                .iter()
                .map(|f| match b.schema().index_of(f.name()) {
                    Ok(i) => cast(b.column(i), f.data_type()).map_err(err),
                    Err(_) => Ok(new_null_array(f.data_type(), b.num_rows())),
                })
                .collect::<Result<_, _>>()?;
            let batch = RecordBatch::try_new(def.schema.clone(), columns).map_err(err)?;
            w.write(batch).await.map_err(err)?;
        }
        w.commit(CommitNote::new("slt load", "slt"))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn refresh(&self, args: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let mut names = Vec::new();
        let mut force = false;
        for word in args.split_whitespace() {
            if word.eq_ignore_ascii_case("force") {
                force = true;
            } else {
                names.push(word.to_owned());
            }
        }
        let set = SegmentSet::from_texts(
            self.segments
                .iter()
                .map(|(n, t)| (n.clone(), format!("{n}.sql"), t.clone()))
                .collect(),
        )
        .map_err(err)?;
        let report = refresh(
            &self.engine,
            &set,
            &RefreshOptions {
                names,
                force,
                as_of_micros: Some(AS_OF_MICROS),
                due_only: false,
                actor: "slt".into(),
            },
        )
        .await
        .map_err(err)?;
        let rows = report
            .outcomes
            .iter()
            .map(|o| {
                let status = match o.status {
                    Status::Refreshed => "refreshed",
                    Status::Unchanged => "unchanged",
                    Status::NotDue => "not_due",
                };
                vec![
                    o.segment.clone(),
                    status.to_owned(),
                    o.refresh_version.to_string(),
                    o.members.to_string(),
                    o.entered.to_string(),
                    o.exited.to_string(),
                ]
            })
            .collect();
        Ok(DBOutput::Rows {
            types: vec![
                DefaultColumnType::Text,
                DefaultColumnType::Text,
                DefaultColumnType::Integer,
                DefaultColumnType::Integer,
                DefaultColumnType::Integer,
                DefaultColumnType::Integer,
            ],
            rows,
        })
    }
}

/// Splits `KEYWORD rest` case-insensitively.
fn directive<'a>(sql: &'a str, keyword: &str) -> Option<&'a str> {
    let head = sql.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| sql[keyword.len()..].trim())
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let sql = sql.trim();
        if let Some(rest) = directive(sql, "LOAD ") {
            let (table, query) = rest
                .split_once(|c: char| c.is_whitespace())
                .ok_or_else(|| err("LOAD <table> AS <query>"))?;
            let query =
                directive(query.trim(), "AS ").ok_or_else(|| err("LOAD <table> AS <query>"))?;
            self.load(table, query).await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(rest) = directive(sql, "CREATE SEGMENT ") {
            let (name, text) = rest
                .split_once(|c: char| c.is_whitespace())
                .ok_or_else(|| err("CREATE SEGMENT <name> AS <text>"))?;
            let text = directive(text.trim(), "AS")
                .ok_or_else(|| err("CREATE SEGMENT <name> AS <text>"))?;
            self.segments.insert(name.to_owned(), text.to_owned());
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(name) = directive(sql, "DROP SEGMENT ") {
            self.segments.remove(name);
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(args) = directive(sql, "REFRESH SEGMENTS") {
            return self.refresh(args).await;
        }
        let ctx = self.engine.session().await.map_err(err)?;
        let df = ctx.sql(sql).await.map_err(|e| err(e.strip_backtrace()))?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await.map_err(|e| err(e.strip_backtrace()))?;
        let lower = sql.to_ascii_lowercase();
        if lower.starts_with("create") || lower.starts_with("insert") {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows: render(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tessera"
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found");
    let complete = std::env::var_os("TESSERA_SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    for file in files {
        let mut runner = sqllogictest::Runner::new(|| async { Ok::<_, DbError>(Db::new()) });
        if complete {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("completing {}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}: {}", file.display(), e.display(true)));
        }
    }
    assert!(
        failures.is_empty(),
        "sqllogictest failures:\n{}",
        failures.join("\n\n")
    );
}
