//! The model queries of `sql/predict/` (the project's own or the defaults), their
//! `$parameters` bound as SQL literals, results materialized and read by column.

use super::*;

/// Folder of the model queries inside a project.
pub const PREDICT_DIR: &str = "sql/predict";

/// The model queries and their defaults (what `tessera init` writes).
pub const DEFAULT_SQL: &[(&str, &str)] = &[
    (
        "orders.sql",
        include_str!("../../../../sql/predict/orders.sql"),
    ),
    (
        "summary.sql",
        include_str!("../../../../sql/predict/summary.sql"),
    ),
    ("rfm.sql", include_str!("../../../../sql/predict/rfm.sql")),
    (
        "features.sql",
        include_str!("../../../../sql/predict/features.sql"),
    ),
];

/// The model queries of a project: its own files, the defaults for any it lacks.
pub(super) struct Queries {
    texts: BTreeMap<&'static str, (String, String)>,
}

impl Queries {
    pub(super) fn load(project_dir: &Path) -> Result<Queries> {
        let mut texts = BTreeMap::new();
        for (file, default) in DEFAULT_SQL {
            let path = project_dir.join(PREDICT_DIR).join(file);
            let shown = format!("{PREDICT_DIR}/{file}");
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (*default).to_owned(),
                Err(e) => return Err(PredictError::sql(&shown, format!("cannot read: {e}"))),
            };
            texts.insert(*file, (shown, text));
        }
        Ok(Queries { texts })
    }

    /// The text of `file` with its `$parameters` replaced by SQL literals.
    pub(super) fn bind(&self, file: &str, params: &[(&str, Literal)]) -> Result<String> {
        let (shown, text) = self
            .texts
            .get(file)
            .ok_or_else(|| PredictError::Undefined(format!("query {file}")))?;
        bind(text, params).map_err(|message| PredictError::sql(shown, message))
    }
}

/// How a query is named in errors: `sql/predict/x.sql` for the files, else as given.
pub(super) fn shown_file(file: &str) -> String {
    if file.ends_with(".sql") {
        format!("{PREDICT_DIR}/{file}")
    } else {
        file.to_owned()
    }
}

pub(super) async fn collect(
    ctx: &SessionContext,
    sql: &str,
    file: &str,
) -> Result<Vec<RecordBatch>> {
    Ok(materialize(ctx, sql, file).await?.1)
}

/// Runs `sql` to the end: its schema (known even when no row comes back) and batches.
pub(super) async fn materialize(
    ctx: &SessionContext,
    sql: &str,
    file: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let shown = shown_file(file);
    let failed = |e| PredictError::sql(&shown, tessera_engine::EngineError::sql(e));
    let df = tessera_engine::policy::read_only(ctx, sql.trim().trim_end_matches(';'))
        .await
        .map_err(failed)?;
    let schema = df.schema().inner().clone();
    Ok((schema, df.collect().await.map_err(failed)?))
}

/// Runs `sql` and registers its result as the in-memory table `name`; returns the rows.
pub(super) async fn register_result(
    ctx: &SessionContext,
    name: &str,
    sql: &str,
    file: &str,
) -> Result<Vec<RecordBatch>> {
    let (schema, batches) = materialize(ctx, sql, file).await?;
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(schema, vec![batches.clone()])?),
    )?;
    Ok(batches)
}

/// A parameter value of the model queries.
#[derive(Debug, Clone)]
pub(super) enum Literal {
    Text(String),
    /// Microseconds since the epoch, UTC.
    Time(i64),
}

impl Literal {
    pub(super) fn sql(&self) -> String {
        match self {
            Literal::Text(s) => tessera_core::sql::literal(s),
            Literal::Time(t) => {
                format!("arrow_cast({t}, 'Timestamp(Microsecond, Some(\"UTC\"))')")
            }
        }
    }
}

/// Replaces each `$name` outside string literals and comments by its literal.
pub(super) fn bind(text: &str, params: &[(&str, Literal)]) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\'' {
                        break;
                    }
                }
            }
            '-' if text[i..].starts_with("--") => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '$' => {
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(|d| d.is_ascii_alphanumeric() || *d == '_')
                    .collect();
                let Some((_, value)) = params.iter().find(|(n, _)| *n == name) else {
                    let known: Vec<String> = params.iter().map(|(n, _)| format!("${n}")).collect();
                    return Err(format!(
                        "unknown parameter ${name}; this query can use {}",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                };
                out.push_str(&value.sql());
                for _ in 0..name.chars().count() {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

pub(super) fn micros_text(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t).map_or_else(
        || t.to_string(),
        |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

pub(super) fn column<'a>(batch: &'a RecordBatch, name: &str, file: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let have: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        PredictError::sql(
            &shown_file(file),
            format!(
                "the query returns no column {name} (it returns {})",
                have.join(", ")
            ),
        )
    })
}

pub(super) fn text_column(batch: &RecordBatch, name: &str, file: &str) -> Result<StringArray> {
    let c = cast(column(batch, name, file)?, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

pub(super) fn float_column(batch: &RecordBatch, name: &str, file: &str) -> Result<Float64Array> {
    let c = column(batch, name, file)?;
    let c = cast(c, &DataType::Float64).map_err(|e| {
        PredictError::sql(
            &shown_file(file),
            format!("column {name} is {} and not a number: {e}", c.data_type()),
        )
    })?;
    Ok(c.as_primitive::<Float64Type>().clone())
}

pub(super) fn int_column(batch: &RecordBatch, name: &str, file: &str) -> Result<Int64Array> {
    let c = cast(column(batch, name, file)?, &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().clone())
}
