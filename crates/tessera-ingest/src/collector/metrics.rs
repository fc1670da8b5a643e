//! The collector's counters, for `/health` and `/metrics`.

use super::*;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub events_received: AtomicU64,
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    /// Events acknowledged and dropped for carrying a suppressed identifier.
    pub events_suppressed: AtomicU64,
    /// Refused events kept in `quarantine`.
    pub events_quarantined: AtomicU64,
    pub events_flushed: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_micros_total: AtomicU64,
    pub flush_micros_last: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub buffered_events: AtomicU64,
    pub rejected: Mutex<HashMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts a rejected event (or request) by reason code.
    pub fn reject(&self, code: &'static str, n: u64) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(code).or_default() += n;
        }
    }

    /// Rejections by reason code.
    pub fn rejected(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .rejected
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}
