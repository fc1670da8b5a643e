//! Runs every `tests/slt/*.slt` file against a Tessera session (deterministic plans).
//! Set `TESSERA_SLT_COMPLETE=1` to rewrite the expected results in place.

use std::path::{Path, PathBuf};

use async_trait_free::Db;

mod async_trait_free {
    use datafusion::arrow::array::{Array, RecordBatch};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    use datafusion::prelude::SessionContext;
    use sqllogictest::{DBOutput, DefaultColumnType};

    /// A sqllogictest database backed by a Tessera session.
    pub struct Db {
        pub ctx: SessionContext,
    }

    #[derive(Debug)]
    pub struct DbError(pub String);

    impl std::fmt::Display for DbError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for DbError {}

    fn column_type(t: &DataType) -> DefaultColumnType {
        match t {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => DefaultColumnType::Integer,
            DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..) => DefaultColumnType::FloatingPoint,
            _ => DefaultColumnType::Text,
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
                .map_err(|e| DbError(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .zip(batch.columns())
                        .map(|(f, c)| {
                            if c.is_null(row) {
                                "NULL".to_owned()
                            } else {
                                let s = f.value(row).to_string();
                                if s.is_empty() {
                                    "(empty)".to_owned()
                                } else {
                                    s
                                }
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }

    #[async_trait::async_trait]
    impl sqllogictest::AsyncDB for Db {
        type Error = DbError;
        type ColumnType = DefaultColumnType;

        async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
            let df = self
                .ctx
                .sql(sql)
                .await
                .map_err(|e| DbError(e.strip_backtrace()))?;
            let schema = df.schema().as_arrow().clone();
            let batches = df
                .collect()
                .await
                .map_err(|e| DbError(e.strip_backtrace()))?;
            let is_statement = schema.fields().len() == 1
                && schema.field(0).name() == "count"
                && sql
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with(['i', 'c']);
            if is_statement {
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
}

/// 2026-10-31T12:00:00Z, the evaluation time of every slt session.
const AS_OF_MICROS: i64 = 1_793_448_000_000_000;

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

#[tokio::test]
async fn sqllogictest_files() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found");
    let complete = std::env::var_os("TESSERA_SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    for file in files {
        let make_db = || async {
            // as_of() is pinned so that time functions give fixed answers.
            let engine = crate::lake_session::empty_engine().with_as_of(AS_OF_MICROS);
            Ok::<_, async_trait_free::DbError>(Db {
                ctx: engine.bare_session().expect("session"),
            })
        };
        let mut runner = sqllogictest::Runner::new(make_db);
        if complete {
            let col_sep = " ";
            runner
                .update_test_file(
                    &file,
                    col_sep,
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
