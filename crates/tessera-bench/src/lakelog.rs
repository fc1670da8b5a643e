//! `tessera-bench lake-log`: what opening a table costs after many small commits — the
//! collector commits every two seconds, 43,200 times a day. Commits ten events at a time to
//! `events` (each with the collector's application transaction) and, at 100, 1,000, 10,000, … commits,
//! times a cold open of the table (a new `Lake`, as a new process would) and the
//! transaction look-up the collector does at start, against the same at 100 commits.
//!
//! Writing through the table is slow here (each append opens the table: 11–20 commits/s),
//! so past `--written` commits the rest **replay** the last written one: the same actions
//! (its `add` with a new hard link of its file, the collector's transaction at the next
//! number, fresh timestamps) as the next version's log entry, and a checkpoint by
//! [`Lake::checkpoint`] every [`CHECKPOINT_INTERVAL`] versions, as the post-commit hook
//! writes one. The table stays a valid Delta table that every reader can scan.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use tessera_core::batch::EventBatchBuilder;
use tessera_core::event::{ParseContext, parse_event};
use tessera_core::schema::{self, EVENTS};
use tessera_lake::maintain::CHECKPOINT_INTERVAL;
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

/// The latest version in `log` (a `_delta_log` folder).
fn latest_version(log: &Path) -> anyhow::Result<u64> {
    let mut latest = None;
    for entry in std::fs::read_dir(log)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(v) = name
            .strip_suffix(".json")
            .and_then(|v| v.parse::<u64>().ok())
        {
            latest = latest.max(Some(v));
        }
    }
    latest.ok_or_else(|| anyhow::anyhow!("{} holds no commit", log.display()))
}

/// Commits `count` versions to the table at `table` by replaying its latest commit, the
/// collector's transaction number counting on from `txn`.
async fn replay(lake: &Lake, table: &Path, count: u64, txn: i64) -> anyhow::Result<()> {
    let log = table.join("_delta_log");
    let last = latest_version(&log)?;
    let template: Vec<serde_json::Value> =
        std::fs::read_to_string(log.join(format!("{last:020}.json")))?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
    // A file system allows some 65,000 links to one file: every LINKS_PER_FILE versions
    // the replayed file is copied, and the copy linked from then on.
    const LINKS_PER_FILE: u64 = 50_000;
    let mut sources: HashMap<String, String> = HashMap::new();
    for i in 1..=count {
        let version = last + i;
        let now = chrono::Utc::now().timestamp_millis();
        let mut lines = Vec::with_capacity(template.len());
        for action in &template {
            let mut action = action.clone();
            if let Some(add) = action.get_mut("add") {
                let path = add["path"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("an add without a path"))?
                    .to_owned();
                let folder = path.rsplit_once('/').map_or("", |(f, _)| f);
                let copy = if folder.is_empty() {
                    format!("part-replay-{version:08}.snappy.parquet")
                } else {
                    format!("{folder}/part-replay-{version:08}.snappy.parquet")
                };
                let source = sources.entry(path.clone()).or_insert_with(|| path.clone());
                if i % LINKS_PER_FILE == 0 {
                    std::fs::copy(table.join(&*source), table.join(&copy))?;
                    *source = copy.clone();
                } else {
                    std::fs::hard_link(table.join(&*source), table.join(&copy))?;
                }
                add["path"] = copy.into();
                add["modificationTime"] = now.into();
            }
            if let Some(t) = action.get_mut("txn") {
                t["version"] = (txn + i as i64).into();
                t["lastUpdated"] = now.into();
            }
            if let Some(info) = action.get_mut("commitInfo") {
                info["timestamp"] = now.into();
            }
            lines.push(serde_json::to_string(&action)?);
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(log.join(format!("{version:020}.json")))?;
        std::io::Write::write_all(&mut file, (lines.join("\n") + "\n").as_bytes())?;
        if version % CHECKPOINT_INTERVAL == 0 {
            lake.checkpoint(EVENTS).await?;
        }
    }
    Ok(())
}

pub fn run(commits: u64, written: u64, work: &Path) -> anyhow::Result<()> {
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
            if done >= written.max(1) {
                replay(&lake, &dir.join(EVENTS), mark - done, done as i64 - 1).await?;
                done = mark;
            }
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
                "{done:>9} {rate:>12.0} {:>10.1} {:>14.1} {:>8.2}{}",
                open * 1e3,
                txn * 1e3,
                open / base_open,
                if from >= written.max(1) { "  (replayed)" } else { "" }
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
