//! CSV, Parquet and arbitrary JSON through a mapping query.
//!
//! The input file is registered as the table `input`; the mapping query (default
//! `SELECT * FROM input`) turns its rows into events by naming columns after event
//! fields (`messageId` or `message_id`, `type`, `event`, `userId`, `anonymousId`,
//! `timestamp`, `properties`, `traits`, ...). Each result row then goes through exactly
//! the validation that NDJSON lines go through, so errors read the same way.
//!
//! ```sql
//! SELECT order_id AS message_id, 'track' AS type, 'Order Completed' AS event,
//!        customer_email AS user_id, ordered_at AS timestamp,
//!        named_struct('revenue', total, 'currency', 'EUR') AS properties
//! FROM input
//! ```

use arrow::json::LineDelimitedWriter;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::execution::options::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;
use tessera_core::event::ParseContext;
use tessera_engine::{Engine, EngineConfig};

use crate::error::{ImportError, Result};
use crate::input::{Format, InputFile};
use crate::ndjson::{Source, parse_lines};
use crate::sink::FileRun;
use crate::{ImportOptions, ImportProgress};

fn mapping_error(file: &InputFile, message: impl ToString) -> ImportError {
    ImportError::Mapping {
        location: file.location(),
        message: message.to_string(),
    }
}

/// Checks that `sql` is exactly one read-only query.
pub(crate) fn check_mapping(sql: &str) -> std::result::Result<(), String> {
    let statements = DFParser::parse_sql(sql).map_err(|e| e.to_string())?;
    if statements.len() != 1 {
        return Err(format!(
            "expected exactly one SELECT statement, found {}",
            statements.len()
        ));
    }
    match statements.front() {
        Some(DFStatement::Statement(s)) if matches!(**s, Statement::Query(_)) => Ok(()),
        _ => Err("a mapping must be a single SELECT query over the table `input`".into()),
    }
}

/// Imports one file through the mapping query.
pub(crate) async fn import_file(
    engine: &Engine,
    file: &InputFile,
    format: Format,
    options: &ImportOptions,
    run: &mut FileRun,
    progress: &dyn ImportProgress,
) -> Result<()> {
    let sql = options.mapping.as_deref().unwrap_or("SELECT * FROM input");
    check_mapping(sql).map_err(|m| mapping_error(file, m))?;

    // One partition, so that rows come out in file order and line numbers are exact.
    let ctx = Engine::new(engine.lake().clone(), EngineConfig::deterministic()).bare_session()?;
    if file.url.scheme() != "file" {
        let mut root = file.url.clone();
        root.set_path("/");
        ctx.register_object_store(&root, file.store.clone());
    }
    // The listing must accept this exact file name, whatever its extension.
    let name = file.file_name();
    let ext = name.find('.').map(|i| &name[i..]).unwrap_or("");
    let compression = if file.gzip() {
        FileCompressionType::GZIP
    } else {
        FileCompressionType::UNCOMPRESSED
    };
    let url = file.url.as_str();
    let registered = match format {
        Format::Csv => {
            let opts = CsvReadOptions::new()
                .has_header(true)
                .file_extension(ext)
                .file_compression_type(compression);
            ctx.register_csv("input", url, opts).await
        }
        Format::Parquet => {
            let opts = ParquetReadOptions::default().file_extension(ext);
            ctx.register_parquet("input", url, opts).await
        }
        Format::Json | Format::Ndjson => {
            let opts = JsonReadOptions::default()
                .file_extension(ext)
                .file_compression_type(compression);
            ctx.register_json("input", url, opts).await
        }
    };
    registered.map_err(|e| ImportError::Input {
        location: file.location(),
        message: e.strip_backtrace(),
    })?;

    let df = tessera_engine::policy::read_only(&ctx, sql)
        .await
        .map_err(|e| mapping_error(file, e.strip_backtrace()))?;
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| mapping_error(file, e.strip_backtrace()))?;
    let parse_ctx =
        ParseContext::import(chrono::Utc::now().timestamp_micros()).with_window(options.window);
    // CSV line numbers count the header.
    let mut next_line: u64 = if format == Format::Csv { 2 } else { 1 };
    let mut buf = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| mapping_error(file, e.strip_backtrace()))?;
        let rows = batch.num_rows() as u64;
        if rows == 0 {
            continue;
        }
        buf.clear();
        {
            let mut w = LineDelimitedWriter::new(&mut buf);
            w.write(&batch).map_err(|e| mapping_error(file, e))?;
            w.finish().map_err(|e| mapping_error(file, e))?;
        }
        let data = std::mem::take(&mut buf);
        let source = Source::of(&run.source, options);
        let batch_rows = options.batch_rows;
        let first = next_line;
        let (parsed, data) = tokio::task::spawn_blocking(move || {
            let p = parse_lines(&data, first, &source, &parse_ctx, batch_rows);
            (p, data)
        })
        .await
        .map_err(|e| ImportError::worker("the mapping writer", e))?;
        buf = data;
        next_line += rows;
        run.accept(parsed).await?;
    }
    progress.bytes(file.size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_mapping;

    #[test]
    fn mapping_must_be_one_query() {
        assert!(check_mapping("SELECT * FROM input").is_ok());
        assert!(
            check_mapping("SELECT 1; SELECT 2")
                .unwrap_err()
                .contains("exactly one")
        );
        assert!(
            check_mapping("DROP TABLE input")
                .unwrap_err()
                .contains("single SELECT")
        );
        assert!(check_mapping("SELEC 1").is_err());
    }
}
