//! Quarantine, not loss: events refused by validation are kept in the `quarantine`
//! table with the reason — by the collector (through its write-ahead log, exactly once)
//! and by the importer (in the commit sequence of the file) — and `replay` lands them
//! once they are fixed or the rules changed, through the import path (validated again,
//! deduplicated on `messageId`), removing those that landed.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use futures::TryStreamExt;
use tessera_core::schema::{self, QUARANTINE};
use tessera_engine::Engine;

use crate::error::{ImportError, Result};
use crate::hash::id_hash;
use crate::{ImportOptions, Importer, NoProgress};

/// One refused event.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    pub received_at: i64,
    pub source: &'a str,
    /// `collector:<id>` or the imported file.
    pub origin: &'a str,
    /// Index in the request's batch, or line/row in the file.
    pub position: Option<i64>,
    pub code: &'a str,
    pub message: &'a str,
    pub payload: Option<&'a str>,
}

/// Builds `quarantine` batches.
#[derive(Debug)]
pub struct QuarantineBuilder {
    id: StringBuilder,
    received_at: TimestampMicrosecondBuilder,
    source: StringBuilder,
    origin: StringBuilder,
    position: Int64Builder,
    code: StringBuilder,
    message: StringBuilder,
    payload: StringBuilder,
    rows: usize,
}

impl Default for QuarantineBuilder {
    fn default() -> Self {
        QuarantineBuilder {
            id: StringBuilder::new(),
            received_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            source: StringBuilder::new(),
            origin: StringBuilder::new(),
            position: Int64Builder::new(),
            code: StringBuilder::new(),
            message: StringBuilder::new(),
            payload: StringBuilder::new(),
            rows: 0,
        }
    }
}

impl QuarantineBuilder {
    /// Adds one refused event.
    pub fn push(&mut self, r: &Refused<'_>) {
        let key = format!(
            "{}\u{1}{}\u{1}{:?}\u{1}{}\u{1}{}",
            r.source,
            r.origin,
            r.position,
            r.received_at,
            r.payload.unwrap_or("")
        );
        self.id.append_value(format!("q{:032x}", id_hash(&key)));
        self.received_at.append_value(r.received_at);
        self.source.append_value(r.source);
        self.origin.append_value(r.origin);
        self.position.append_option(r.position);
        self.code.append_value(r.code);
        self.message.append_value(r.message);
        self.payload.append_option(r.payload);
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows added since the last call.
    pub fn finish(&mut self) -> RecordBatch {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.origin.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.code.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.payload.finish()),
        ];
        RecordBatch::try_new(schema::quarantine_schema(), columns)
            .expect("columns match the quarantine schema")
    }
}

/// One quarantined event, as `tessera quarantine list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quarantined {
    pub quarantine_id: String,
    pub received_at: String,
    pub source: String,
    pub origin: String,
    pub position: Option<i64>,
    pub reason_code: String,
    pub message: String,
    pub payload: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Quarantined events selected.
    pub selected: u64,
    /// Landed in `events` now.
    pub imported: u64,
    /// Already in `events` (same `messageId`): removed from quarantine too.
    pub duplicates: u64,
    /// Carrying a suppressed identifier: dropped, and removed from quarantine.
    pub suppressed: u64,
    /// Still refused: left in quarantine, with their first reasons.
    pub still_refused: u64,
    pub reasons: Vec<(String, String)>,
}

fn query_err(source: datafusion::error::DataFusionError) -> ImportError {
    ImportError::DataFusion {
        doing: "reading quarantine",
        source,
    }
}

/// The quarantined events matching `filter` (a SQL condition over the `quarantine`
/// columns; all when `None`), oldest first, at most `limit` (all when `None`).
pub async fn list(
    engine: &Engine,
    filter: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<Quarantined>> {
    let ctx = engine.session_of(&[QUARANTINE]).await?;
    if !ctx.table_exist(QUARANTINE).map_err(query_err)? {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT quarantine_id, CAST(received_at AS VARCHAR) AS received, source, origin, position, \
                reason_code, message, payload \
         FROM {QUARANTINE} {} ORDER BY received_at, origin, position {}",
        filter.map(|f| format!("WHERE ({f})")).unwrap_or_default(),
        limit.map(|n| format!("LIMIT {n}")).unwrap_or_default()
    );
    let batches: Vec<RecordBatch> =
        tessera_engine::execute(&ctx, &sql, tessera_engine::Policy::ReadOnly)
            .await
            .map_err(|e| bad_filter(filter, e))?
            .try_collect()
            .await
            .map_err(query_err)?;
    let mut out = Vec::new();
    for b in &batches {
        let text = |i: usize| -> Result<Vec<Option<String>>> {
            let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).map_err(
                |source| ImportError::Arrow {
                    doing: "reading quarantine",
                    source,
                },
            )?;
            Ok(c.as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect())
        };
        let cols: Vec<Vec<Option<String>>> = (0..8).map(text).collect::<Result<_>>()?;
        let Ok([id, at, source, origin, position, code, message, payload]) =
            <[Vec<Option<String>>; 8]>::try_from(cols)
        else {
            unreachable!("eight columns");
        };
        let rows = id
            .into_iter()
            .zip(at)
            .zip(source)
            .zip(origin)
            .zip(position)
            .zip(code)
            .zip(message)
            .zip(payload);
        for (((((((id, at), source), origin), position), code), message), payload) in rows {
            out.push(Quarantined {
                quarantine_id: id.unwrap_or_default(),
                received_at: at.unwrap_or_default(),
                source: source.unwrap_or_default(),
                origin: origin.unwrap_or_default(),
                position: position.and_then(|p| p.parse().ok()),
                reason_code: code.unwrap_or_default(),
                message: message.unwrap_or_default(),
                payload,
            });
        }
    }
    Ok(out)
}

fn bad_filter(filter: Option<&str>, e: tessera_engine::EngineError) -> ImportError {
    match filter {
        Some(f) => ImportError::BadOption(format!("--where {f:?}: {e}")),
        None => ImportError::Engine(e),
    }
}

/// Lands the quarantined events matching `filter` through the import path with
/// `options` (source taken from each event's row): those that land, or that `events`
/// already holds, or that carry a suppressed identifier leave quarantine; the rest stay.
pub async fn replay(
    engine: &Engine,
    filter: Option<&str>,
    options: &ImportOptions,
) -> Result<ReplayReport> {
    let rows = list(engine, filter, None).await?;
    let mut report = ReplayReport {
        selected: rows.len() as u64,
        ..ReplayReport::default()
    };
    let mut by_source: std::collections::BTreeMap<&str, Vec<&Quarantined>> = Default::default();
    for r in &rows {
        by_source.entry(r.source.as_str()).or_default().push(r);
    }
    let dir = tempfile::tempdir().map_err(|e| ImportError::worker("a replay folder", e))?;
    let mut landed: Vec<&str> = Vec::new();
    for (source, rows) in by_source {
        // One event per line; a raw line break can only be whitespace between JSON
        // tokens (inside strings it must be escaped), so it becomes a space.
        let text: String = rows
            .iter()
            .map(|r| {
                let p = r
                    .payload
                    .as_deref()
                    .unwrap_or("")
                    .replace(['\n', '\r'], " ");
                if p.trim().is_empty() {
                    "null".to_owned()
                } else {
                    p
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = dir.path().join(format!("quarantine-{source}.ndjson"));
        std::fs::write(&path, text + "\n").map_err(|e| ImportError::worker("a replay file", e))?;
        let importer = Importer::new(
            engine.clone(),
            ImportOptions {
                source: source.to_owned(),
                format: Some(crate::Format::Ndjson),
                mapping: None,
                max_errors: None,
                force: true,
                quarantine: false,
                count_violations: false,
                ..options.clone()
            },
        );
        let imported = importer
            .import(&path.display().to_string(), &NoProgress)
            .await?;
        let Some(file) = imported.files.first() else {
            continue;
        };
        report.imported += file.rows_imported;
        report.duplicates += file.rows_duplicate;
        report.suppressed += file.rows_suppressed;
        report.still_refused += file.rows_rejected;
        let refused: std::collections::HashSet<u64> = file.rejected_lines.iter().copied().collect();
        for e in file.errors.iter().take(10) {
            if let Some(r) = rows.get(e.line as usize - 1) {
                report
                    .reasons
                    .push((r.quarantine_id.clone(), e.reason.clone()));
            }
        }
        for (i, r) in rows.iter().enumerate() {
            if !refused.contains(&(i as u64 + 1)) {
                landed.push(r.quarantine_id.as_str());
            }
        }
    }
    for chunk in landed.chunks(1000) {
        let ids = chunk
            .iter()
            .map(|id| tessera_core::sql::literal(id))
            .collect::<Vec<_>>()
            .join(", ");
        engine
            .lake()
            .delete_where(
                QUARANTINE,
                &format!("quarantine_id IN ({ids})"),
                "tessera quarantine replay",
            )
            .await?;
    }
    Ok(report)
}
