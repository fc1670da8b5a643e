//! `tessera sql QUERY`

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use futures::StreamExt;

use super::Opened;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Json,
    /// A Parquet file (needs --output).
    Parquet,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query; `-` reads it from standard input.
    pub query: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also allow statements that write: `COPY (...) TO 'file'` and DDL for this one
    /// statement (queries only without it, as over Flight SQL).
    #[arg(long)]
    pub allow_write: bool,
}

pub async fn run(opened: &Opened, args: SqlArgs) -> anyhow::Result<()> {
    let query = if args.query == "-" {
        let mut q = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut q)
            .context("reading the query from stdin")?;
        q
    } else {
        args.query.clone()
    };
    if args.format == OutputFormat::Parquet && args.output.is_none() {
        bail!("--format parquet writes a file: add --output FILE.parquet");
    }
    let policy = if args.allow_write {
        tessera_engine::Policy::AllowWrite
    } else {
        tessera_engine::Policy::ReadOnly
    };
    let mut stream = opened.engine.query(&query, policy).await?;
    let schema = stream.schema();
    let mut out: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut rows = 0usize;
    match args.format {
        OutputFormat::Table => {
            let mut batches = Vec::new();
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows();
                batches.push(b);
            }
            let table = arrow::util::pretty::pretty_format_batches(&batches)?;
            writeln!(out, "{table}")?;
            writeln!(out, "{rows} row(s)")?;
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            while let Some(b) = stream.next().await {
                w.write(&b?)?;
            }
            w.finish()?;
        }
        OutputFormat::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)?;
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows();
                w.write(&b)?;
            }
            w.close()?;
            eprintln!("wrote {rows} row(s)");
        }
    }
    out.flush()?;
    Ok(())
}
