//! `tessera-bench lake-log`: what opening a table costs after many small commits — the
//! collector commits every two seconds, 43,200 times a day. Commits ten events at a time to
//! `events` (each with the collector's application transaction) and, at 100, 1,000, 10,000, … commits,
//! times a cold open of the table (a new `Lake`, as a new process would) and the
//! transaction look-up the collector does at start, against the same at 100 commits.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use tessera_core::batch::EventBatchBuilder;
use tessera_core::event::{ParseContext, parse_event};
use tessera_core::schema::{self, EVENTS};
use tessera_lake::{CommitNote, Lake};

/// One collector flush: ten page views of one day.
fn flush(i: u64) -> anyhow::Result<RecordBatch> {
    let mut batch = EventBatchBuilder::new("web", 10);
    let texts: Vec<String> = (0..10)
        .map(|j| {
            format!(
                r#"{{"type":"page","messageId":"m-{i}-{j}","anonymousId":"a-{j}","name":"Home","timestamp":"2026-11-01T10:00:00Z"}}"#
            )
        })
        .collect();
    let ctx = ParseContext::import(1_800_000_000_000_000);
    for text in &texts {
        let event = parse_event(text, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
        batch.append(&event);
    }
    Ok(batch.finish())
}

/// Best of five cold opens: (open seconds, transaction look-up seconds).
async fn open_cost(dir: &Path) -> anyhow::Result<(f64, f64)> {
    let (mut open, mut txn) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let lake = Lake::new(&dir.to_string_lossy(), HashMap::new())?;
        let t = Instant::now();
        let table = lake.open(EVENTS).await?;
        open = open.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        tessera_lake::transaction_version(EVENTS, &table, "tessera-collector-bench").await?;
        txn = txn.min(t.elapsed().as_secs_f64());
    }
    Ok((open, txn))
}

pub fn run(commits: u64, work: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = work.join("lake");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let lake = Lake::new(&dir.to_string_lossy(), HashMap::new())?;
        let def = schema::table(EVENTS).ok_or_else(|| anyhow::anyhow!("no table"))?;
        println!(
            "{:>9} {:>12} {:>10} {:>14} {:>8}",
            "commits", "commit/s", "open ms", "txn lookup ms", "vs 100"
        );
        let mut marks: Vec<u64> = vec![100];
        while *marks.last().unwrap_or(&0) * 10 <= commits {
            let next = marks.last().copied().unwrap_or(100) * 10;
            marks.push(next);
        }
        if marks.last() != Some(&commits) && commits > 100 {
            marks.push(commits);
        }
        let mut base = None;
        let mut done = 0u64;
        let started = Instant::now();
        for mark in marks {
            let t = Instant::now();
            let from = done;
            while done < mark {
                let mut w = lake.append_writer(&def).await?;
                w.write(flush(done)?).await?;
                w.commit(
                    CommitNote::new("collect", "tessera-bench")
                        .transaction("tessera-collector-bench", done as i64),
                )
                .await?;
                done += 1;
            }
            let rate = (done - from) as f64 / t.elapsed().as_secs_f64();
            let (open, txn) = open_cost(&dir).await?;
            let base_open = *base.get_or_insert(open);
            println!(
                "{done:>9} {rate:>12.0} {:>10.1} {:>14.1} {:>8.2}",
                open * 1e3,
                txn * 1e3,
                open / base_open
            );
        }
        let log_files = std::fs::read_dir(dir.join(EVENTS).join("_delta_log"))?.count();
        println!(
            "{done} commits in {:.0} s; _delta_log holds {log_files} entries (expired ones are removed after 30 days)",
            started.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    })
}
