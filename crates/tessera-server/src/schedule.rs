//! The segment refresh scheduler: every `check_every`, re-reads the project's segment
//! files and refreshes the segments whose `-- refresh:` interval has elapsed (and whose
//! inputs changed; unchanged ones cost a look at table versions).

use std::path::PathBuf;
use std::time::Duration;

use tessera_engine::Engine;
use tessera_segments::SegmentSet;
use tessera_segments::refresh::{RefreshOptions, Status, refresh};

/// What the scheduler needs.
#[derive(Debug, Clone)]
pub struct SegmentSchedule {
    /// The project folder (its `sql/segments/` is re-read at every check).
    pub project_dir: PathBuf,
    /// How often to look for due segments.
    pub check_every: Duration,
    /// Pinned evaluation time, if configured.
    pub as_of_micros: Option<i64>,
}

/// Runs one check: refreshes the due segments. Returns how many were refreshed.
pub async fn check(engine: &Engine, schedule: &SegmentSchedule) -> Result<usize, String> {
    let set = SegmentSet::load(&schedule.project_dir).map_err(|e| e.to_string())?;
    if set.segments().is_empty() {
        return Ok(0);
    }
    let report = refresh(
        engine,
        &set,
        &RefreshOptions {
            due_only: true,
            as_of_micros: schedule.as_of_micros,
            actor: "tessera serve (schedule)".into(),
            ..RefreshOptions::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let refreshed: Vec<String> = report
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Refreshed)
        .map(|o| {
            format!(
                "{} v{}: {} members, +{} -{}",
                o.segment, o.refresh_version, o.members, o.entered, o.exited
            )
        })
        .collect();
    if !refreshed.is_empty() {
        tracing::info!(
            run = report.run,
            "refreshed segments: {}",
            refreshed.join("; ")
        );
    }
    Ok(refreshed.len())
}

/// Checks every `schedule.check_every` until `stop` turns true.
pub async fn run(
    engine: Engine,
    schedule: SegmentSchedule,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = check(&engine, &schedule).await {
            // Keep serving: a bad segment file or a failing query is logged and retried.
            tracing::warn!("scheduled segment refresh failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.check_every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
