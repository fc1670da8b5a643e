//! The schedulers of `tessera serve`:
//! - segments: every `check_every`, re-reads the project's segment files and refreshes
//!   the segments whose `-- refresh:` interval has elapsed (and whose inputs changed;
//!   unchanged ones cost a look at table versions);
//! - predictive models: every `check_every`, refits every model once the latest
//!   `model_runs` row is older than `refit_every`;
//! - compaction: every `[server] optimize_every`, packs the small files of tables that
//!   have at least `optimize_small_files` of them (commits that change no row).

use std::path::PathBuf;
use std::time::Duration;

use tessera_core::config::PredictSection;
use tessera_engine::Engine;
use tessera_predict::PredictOptions;
use tessera_segments::refresh::{RefreshOptions, Status, refresh_project};

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
pub async fn check(
    engine: &Engine,
    schedule: &SegmentSchedule,
) -> Result<usize, tessera_segments::SegmentsError> {
    let report = refresh_project(
        engine,
        &schedule.project_dir,
        &RefreshOptions::due(schedule.as_of_micros, "tessera serve (schedule)"),
    )
    .await?;
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

/// What the model refit scheduler needs.
#[derive(Debug, Clone)]
pub struct PredictSchedule {
    /// The project folder (its `sql/predict/` is re-read at every refit).
    pub project_dir: PathBuf,
    pub config: PredictSection,
    /// Refit once the latest fit is this old.
    pub refit_every: Duration,
    /// How often to look.
    pub check_every: Duration,
}

/// Runs one check: refits every model when due. Returns whether it refitted.
pub async fn check_models(
    engine: &Engine,
    schedule: &PredictSchedule,
) -> Result<bool, tessera_predict::error::PredictError> {
    let due = match tessera_predict::history::last_fit(engine).await? {
        None => true,
        Some(at) => {
            chrono::Utc::now().timestamp_micros() - at >= schedule.refit_every.as_micros() as i64
        }
    };
    if !due {
        return Ok(false);
    }
    let report = tessera_predict::run::run(
        engine,
        &schedule.project_dir,
        &schedule.config,
        &PredictOptions {
            actor: "tessera serve (schedule)".into(),
            ..PredictOptions::default()
        },
    )
    .await?;
    let summary: Vec<String> = report
        .runs
        .iter()
        .map(|r| {
            format!(
                "{} v{} {} ({} scored)",
                r.model.name(),
                r.version,
                r.status.name(),
                r.scored
            )
        })
        .collect();
    tracing::info!("refitted predictive models: {}", summary.join("; "));
    for r in report
        .runs
        .iter()
        .filter(|r| r.status == tessera_predict::Status::NotConverged)
    {
        tracing::warn!(
            "{}: {}",
            r.model.name(),
            r.message.as_deref().unwrap_or("did not converge")
        );
    }
    Ok(true)
}

/// Refits every `schedule.refit_every` (checked every `check_every`) until `stop`.
pub async fn run_models(
    engine: Engine,
    schedule: PredictSchedule,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = check_models(&engine, &schedule).await {
            tracing::warn!("scheduled model refit failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(schedule.check_every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// What background compaction needs.
#[derive(Debug, Clone)]
pub struct MaintenanceSchedule {
    /// How often to look at the tables' files.
    pub check_every: Duration,
    /// A table is compacted once it has this many small files.
    pub small_files: usize,
}

/// Runs one look: compacts every table with at least `schedule.small_files` small files.
/// Returns the tables compacted.
pub async fn check_layout(
    engine: &Engine,
    schedule: &MaintenanceSchedule,
) -> Result<Vec<String>, tessera_lake::LakeError> {
    let lake = engine.lake();
    let mut compacted = Vec::new();
    for (name, table) in lake.open_all().await? {
        let layout = tessera_lake::maintain::layout_of(name, &table)?;
        if layout.small_files < schedule.small_files.max(2) {
            continue;
        }
        let report = lake
            .optimize(
                name,
                &tessera_lake::OptimizeOptions {
                    actor: "tessera serve (compaction)".into(),
                    ..tessera_lake::OptimizeOptions::default()
                },
            )
            .await?;
        if report.version.is_some() {
            tracing::info!(
                table = name,
                "compacted {} files into {} ({} small files before, {} after)",
                report.files_removed,
                report.files_added,
                report.before.small_files,
                report.after.small_files
            );
            compacted.push(name.to_owned());
        }
    }
    Ok(compacted)
}

/// Compacts tables with many small files every `schedule.check_every` until `stop`. A
/// compaction that conflicts with a concurrent delete or overwrite is retried next time.
pub async fn run_maintenance(
    engine: Engine,
    schedule: MaintenanceSchedule,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(schedule.check_every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = check_layout(&engine, &schedule).await {
            tracing::warn!("background compaction failed (retried later): {e}");
        }
    }
}
