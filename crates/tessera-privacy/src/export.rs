//! Data-subject export: one bundle with every row Tessera holds about a person, in
//! clear (masking roles do not apply to the subject's own data) — `bundle.json` (every
//! table's rows as JSON, with counts) and one Parquet file per table — recorded as a
//! request and in `audit_log`. The bundle goes to a local folder or under an
//! object-store URL (`s3://`, `gs://`, `az://`; credentials from the environment and
//! the lake's storage options); either must be empty.
//!
//! The rows are those erasure would take out ([`crate::erase::TARGETS`]), except the
//! operators' `audit_log`; members lists of `activation_batches` show only the person's
//! entries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::prelude::{Expr, ident};
use serde::Serialize;
use tessera_core::schema::AUDIT_LOG;
use tessera_engine::Engine;
use tessera_lake::CommitNote;

use crate::erase::{Action, TARGETS};
use crate::matcher::Functions;
use crate::requests::{self, Request};
use crate::{
    PrivacyError, Result, Subject, append_rows, df, json_rows, resolve, rows_where, suppress,
};

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub request_id: String,
    /// The folder or URL written.
    pub out: String,
    pub profiles: Vec<String>,
    /// Rows per table.
    pub counts: BTreeMap<String, u64>,
    /// Every file written, as paths or URLs.
    pub files: Vec<String>,
}

/// Where a bundle goes.
enum Out {
    Folder(PathBuf),
    Store {
        store: Arc<dyn object_store::ObjectStore>,
        prefix: object_store::path::Path,
        url: String,
    },
}

impl Out {
    fn parse(text: &str, options: &std::collections::HashMap<String, String>) -> Result<Out> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PrivacyError::Refused(
                "name the folder or URL to export into (--out)".into(),
            ));
        }
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Out::Folder(PathBuf::from(text)));
        };
        if scheme == "file" {
            return Ok(Out::Folder(PathBuf::from(&text["file://".len()..])));
        }
        let bad = |m: String| PrivacyError::Refused(format!("cannot export to {text}: {m}"));
        if !["s3", "s3a", "gs", "az", "abfs", "abfss"].contains(&scheme) {
            return Err(bad(format!(
                "unknown scheme {scheme:?} (a folder, file://, s3://, gs:// or az://)"
            )));
        }
        let url = url::Url::parse(text).map_err(|e| bad(e.to_string()))?;
        if url.host_str().unwrap_or("").is_empty() {
            return Err(bad("the URL names no bucket".into()));
        }
        let store =
            tessera_lake::object_store_for(&url, options).map_err(|e| bad(e.to_string()))?;
        let prefix =
            object_store::path::Path::from_url_path(url.path()).map_err(|e| bad(e.to_string()))?;
        Ok(Out::Store {
            store,
            prefix,
            url: text.trim_end_matches('/').to_owned(),
        })
    }

    fn describe(&self) -> String {
        match self {
            Out::Folder(p) => p.display().to_string(),
            Out::Store { url, .. } => url.clone(),
        }
    }

    /// Refuses a destination that already holds something.
    async fn check_empty(&self) -> Result<()> {
        let taken = match self {
            Out::Folder(out) => {
                out.exists()
                    && std::fs::read_dir(out)
                        .map_err(io(format!("reading {}", out.display())))?
                        .next()
                        .is_some()
            }
            Out::Store { store, prefix, url } => {
                use futures::TryStreamExt as _;
                store
                    .list(Some(prefix))
                    .try_next()
                    .await
                    .map_err(|e| PrivacyError::io(format!("listing {url}"), e))?
                    .is_some()
            }
        };
        if taken {
            return Err(PrivacyError::Refused(format!(
                "{} is not empty: export into a new folder",
                self.describe()
            )));
        }
        Ok(())
    }

    /// Writes `name` with `bytes`; returns its path or URL.
    async fn write(&self, name: &str, bytes: Vec<u8>) -> Result<String> {
        match self {
            Out::Folder(out) => {
                std::fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
                let path = out.join(name);
                std::fs::write(&path, bytes).map_err(io(format!("writing {}", path.display())))?;
                Ok(path.display().to_string())
            }
            Out::Store { store, prefix, url } => {
                use object_store::ObjectStoreExt as _;
                let target = format!("{url}/{name}");
                store
                    .put(&prefix.clone().join(name), bytes.into())
                    .await
                    .map_err(|e| PrivacyError::io(format!("writing {target}"), e))?;
                Ok(target)
            }
        }
    }
}

fn io(doing: String) -> impl FnOnce(std::io::Error) -> PrivacyError {
    move |e| PrivacyError::io(doing, e)
}

/// Exports everything held about the people `subjects` name into `out`: a folder
/// (created; it must be empty or absent) or an object-store URL under which nothing is
/// stored yet.
pub async fn export(
    engine: &Engine,
    subjects: &[String],
    out: &str,
    actor: &str,
) -> Result<ExportReport> {
    if subjects.is_empty() {
        return Err(PrivacyError::BadSubject(
            "name the person to export, as TYPE:VALUE (email:jane@example.com)".into(),
        ));
    }
    let parsed: Vec<Subject> = subjects
        .iter()
        .map(|s| Subject::parse(s))
        .collect::<Result<_>>()?;
    let out = Out::parse(out, engine.lake().storage_options())?;
    out.check_empty().await?;
    let resolution = resolve(engine, &parsed, &[]).await?;
    if resolution.profiles.is_empty() {
        return Err(PrivacyError::Refused(format!(
            "no profile has {}: nothing to export",
            parsed
                .iter()
                .map(|s| format!("{}:{}", s.id_type, s.value))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let hashes = suppress::hashes_of(&suppress::hasher(engine).await?, &parsed);
    let request = Request::received("export", &hashes, Vec::new(), None, actor)?;
    requests::record(engine, &request).await?;

    let ctx = engine.session().await?;
    let functions = Functions::new(resolution.matcher());
    let mut counts = BTreeMap::new();
    let mut tables = serde_json::Map::new();
    let mut files = Vec::new();
    for target in TARGETS {
        if target.table == AUDIT_LOG
            || !ctx
                .table_exist(target.table)
                .map_err(df("listing tables"))?
        {
            continue;
        }
        let doing = format!("exporting {}", target.table);
        let mut rows = rows_where(&ctx, target.table, functions.predicate(target.clauses)).await?;
        if let Action::WithoutMembers(column) = target.action {
            // Members lists show the person's entries only.
            let columns: Vec<Expr> = rows
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    if f.name() == column {
                        functions.only_members(column).alias(column)
                    } else {
                        ident(f.name())
                    }
                })
                .collect();
            rows = rows.select(columns).map_err(df(doing.clone()))?;
        }
        let batches: Vec<RecordBatch> = rows.collect().await.map_err(df(doing.clone()))?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        counts.insert(target.table.to_owned(), rows as u64);
        let data = serde_json::Value::Array(json_rows(&batches, &doing)?);
        tables.insert(
            target.table.to_owned(),
            serde_json::json!({"rows": rows, "data": data}),
        );
        if let Some(first) = batches.first() {
            let mut writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), first.schema(), None)
                .map_err(|e| PrivacyError::io(&doing, e))?;
            for b in &batches {
                writer.write(b).map_err(|e| PrivacyError::io(&doing, e))?;
            }
            let bytes = writer
                .into_inner()
                .map_err(|e| PrivacyError::io(&doing, e))?;
            files.push(
                out.write(&format!("{}.parquet", target.table), bytes)
                    .await?,
            );
        }
    }
    let bundle = serde_json::json!({
        "request_id": request.request_id,
        "generated_at": chrono::Utc::now().to_rfc3339(),
        "subjects": parsed,
        "profiles": resolution.profiles,
        "counts": counts,
        "tables": tables,
    });
    let path = out
        .write(
            "bundle.json",
            serde_json::to_vec_pretty(&bundle).unwrap_or_default(),
        )
        .await?;
    files.insert(0, path);
    let total: u64 = counts.values().sum();
    append_rows(
        engine,
        AUDIT_LOG,
        &[serde_json::json!({
            "at": crate::now_micros(),
            "user": actor,
            "role": "privacy",
            "action": "privacy.export",
            "target": request.request_id,
            "rows": total as i64,
            "status": "ok",
            "detail": serde_json::json!({"counts": counts, "subjects": request.subjects}).to_string(),
        })],
        CommitNote::new("audit", actor),
    )
    .await?;
    let mut finished = request.at_state("finished");
    finished.counts = Some(serde_json::to_value(&counts).unwrap_or_default());
    requests::record(engine, &finished).await?;
    Ok(ExportReport {
        request_id: request.request_id,
        out: out.describe(),
        profiles: resolution.profiles.into_iter().collect(),
        counts,
        files,
    })
}
