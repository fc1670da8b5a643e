//! The audit trail of the gRPC services: every handshake, query, prepared statement,
//! catalog request and refused call becomes a row of `audit_log` (who, when, what,
//! how many rows, outcome). Entries are buffered and appended in one Delta commit per
//! flush (every second while there are any, and at shutdown), so auditing adds no
//! write to the path of a query. The flushes run with the server's background work
//! (idle scheduling class); should a saturated server leave them no time and the
//! buffer reach [`BACKLOG`] entries, the next flush runs beside the requests instead
//! ([`AuditLog::run_backlog`]): the buffer stays bounded and no entry is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use tessera_core::schema::{self, AUDIT_LOG};
use tessera_lake::{CommitNote, Lake, LakeError};

/// One audited event.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at_micros: i64,
    pub user: String,
    pub role: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub rows: Option<i64>,
    pub status: String,
    pub detail: Option<String>,
    pub client: Option<String>,
}

impl Entry {
    pub fn new(user: &str, action: &str, status: &str) -> Entry {
        Entry {
            at_micros: chrono::Utc::now().timestamp_micros(),
            user: user.to_owned(),
            role: None,
            action: action.to_owned(),
            target: None,
            rows: None,
            status: status.to_owned(),
            detail: None,
            client: None,
        }
    }

    /// An entry for a gRPC request by `who` (`-` when the caller is unknown), with the
    /// caller's role and address.
    pub fn of<T>(
        request: &tonic::Request<T>,
        who: Option<&crate::auth::Principal>,
        action: &str,
        status: &str,
    ) -> Entry {
        let mut e = Entry::new(who.map_or("-", |p| p.user.as_str()), action, status);
        e.role = who.map(|p| p.role.name().to_owned());
        e.client = request.remote_addr().map(|a| a.to_string());
        e
    }

    /// With what the call was about.
    pub fn target(mut self, target: impl Into<String>) -> Entry {
        self.target = Some(target.into());
        self
    }

    /// With how many rows the call delivered.
    pub fn rows(mut self, rows: i64) -> Entry {
        self.rows = Some(rows);
        self
    }

    /// With why it was refused or failed.
    pub fn detail(mut self, detail: impl Into<String>) -> Entry {
        self.detail = Some(detail.into());
        self
    }
}

/// Buffered entries past which a flush no longer waits for the background's turn.
pub const BACKLOG: usize = 100_000;

/// The buffer of entries not yet in the lake.
#[derive(Debug)]
pub struct AuditLog {
    lake: Arc<Lake>,
    pending: Mutex<Vec<Entry>>,
    /// Woken when the buffer reaches [`BACKLOG`].
    backlog: tokio::sync::Notify,
}

impl AuditLog {
    pub fn new(lake: Arc<Lake>) -> Arc<AuditLog> {
        Arc::new(AuditLog {
            lake,
            pending: Mutex::new(Vec::new()),
            backlog: tokio::sync::Notify::new(),
        })
    }

    pub fn record(&self, entry: Entry) {
        let buffered = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(entry);
            pending.len()
        };
        if buffered == BACKLOG {
            self.backlog.notify_one();
        }
    }

    /// Entries buffered, not yet in the lake.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Appends the pending entries to `audit_log`; returns how many.
    pub async fn flush(&self) -> Result<usize, LakeError> {
        let entries = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if entries.is_empty() {
            return Ok(0);
        }
        let n = entries.len();
        if let Err(e) = self.write(&entries).await {
            // Keep them for the next flush rather than lose the trail.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let mut kept = entries;
            kept.append(&mut pending);
            *pending = kept;
            return Err(e);
        }
        Ok(n)
    }

    async fn write(&self, entries: &[Entry]) -> Result<(), LakeError> {
        let def = schema::table(AUDIT_LOG).ok_or_else(|| LakeError::TableNotFound {
            name: AUDIT_LOG.into(),
            location: "the schema definitions".into(),
        })?;
        let text = |f: &dyn Fn(&Entry) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(entries.iter().map(f).collect::<Vec<_>>()))
        };
        let batch = RecordBatch::try_new(
            def.schema.clone(),
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from(
                        entries.iter().map(|e| e.at_micros).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                text(&|e| Some(e.user.clone())),
                text(&|e| e.role.clone()),
                text(&|e| Some(e.action.clone())),
                text(&|e| e.target.clone()),
                Arc::new(Int64Array::from(
                    entries.iter().map(|e| e.rows).collect::<Vec<_>>(),
                )),
                text(&|e| Some(e.status.clone())),
                text(&|e| e.detail.clone()),
                text(&|e| e.client.clone()),
            ],
        )
        .map_err(|e| LakeError::BadBatch {
            table: AUDIT_LOG.into(),
            message: e.to_string(),
        })?;
        let mut writer = self.lake.append_writer(&def).await?;
        writer.write(batch).await?;
        writer
            .commit(
                CommitNote::new("audit", "tessera serve").detail("entries", entries.len() as u64),
            )
            .await?;
        Ok(())
    }

    /// Flushes every `every` until `stop`, then once more.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            self.flush_logged("").await;
        }
        if let Err(e) = self.flush().await {
            tracing::error!("writing audit_log at shutdown failed: {e}");
        }
    }

    /// Flushes whenever the buffer reaches [`BACKLOG`], until `stop`: spawned on the
    /// runtime answering requests, for when [`AuditLog::run`] gets no time.
    pub async fn run_backlog(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.backlog.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.flush_logged(" (backlog)").await;
        }
    }

    async fn flush_logged(&self, why: &str) {
        let started = std::time::Instant::now();
        match self.flush().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                "audit_log: {n} entries committed in {:.1} ms{why}",
                started.elapsed().as_secs_f64() * 1000.0
            ),
            Err(e) => tracing::warn!("writing audit_log failed (kept for the next try): {e}"),
        }
    }
}

/// Records one entry when dropped: the rows a streamed result delivered, and whether
/// it was read to the end (`ok`) or abandoned (`cancelled`).
pub struct StreamAudit {
    log: Arc<AuditLog>,
    entry: Option<Entry>,
    pub rows: Arc<AtomicU64>,
    pub finished: Arc<AtomicBool>,
    /// Set when the stream ended with an error: (status, detail).
    pub failure: Arc<Mutex<Option<(&'static str, String)>>>,
}

impl StreamAudit {
    pub fn new(log: Arc<AuditLog>, entry: Entry) -> StreamAudit {
        StreamAudit {
            log,
            entry: Some(entry),
            rows: Arc::default(),
            finished: Arc::default(),
            failure: Arc::default(),
        }
    }

    /// Records the entry now as failed with `status` (the stream never started).
    pub fn fail(self, status: &'static str, detail: &str) {
        Self::record_failure(&self.failure, status, detail);
    }

    /// Notes that the stream ended with an error.
    pub fn record_failure(
        failure: &Mutex<Option<(&'static str, String)>>,
        status: &'static str,
        detail: &str,
    ) {
        let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert_with(|| (status, detail.to_owned()));
    }
}

impl Drop for StreamAudit {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.rows = Some(self.rows.load(Ordering::Relaxed) as i64);
            let failure = self
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some((status, detail)) = failure {
                entry.status = status.into();
                entry.detail = Some(detail);
            } else if !self.finished.load(Ordering::Relaxed) && entry.status == "ok" {
                entry.status = "cancelled".into();
            }
            self.log.record(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_backlog_is_flushed_without_waiting_for_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Arc::new(Lake::new(dir.path().to_str().unwrap(), Default::default()).unwrap());
        let log = AuditLog::new(lake.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Only the backlog task runs: the periodic flush never gets a turn.
        let backlog = tokio::spawn(log.clone().run_backlog(stop_rx));
        for i in 0..BACKLOG - 1 {
            log.record(Entry::new("ana", "get_profile", "ok").rows(i as i64));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            log.pending(),
            BACKLOG - 1,
            "below the backlog nothing is written"
        );
        log.record(Entry::new("ana", "get_profile", "ok"));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while log.pending() > 0 {
            assert!(std::time::Instant::now() < deadline, "backlog not flushed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(true).unwrap();
        backlog.await.unwrap();
        let stats = lake.stats(AUDIT_LOG).await.unwrap();
        assert_eq!(stats.rows, BACKLOG as u64);
    }
}
