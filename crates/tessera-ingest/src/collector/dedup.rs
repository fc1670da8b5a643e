//! The `messageId` window: which ids were seen when, so that a retried event is
//! acknowledged without being stored twice.

use arrow::array::{Array, ArrayRef};

use super::*;

/// `messageId` hashes seen within the window, oldest first for expiry.
pub(super) struct Dedup {
    pub(super) seen: HashMap<u128, i64>,
    pub(super) order: VecDeque<(i64, u128)>,
    pub(super) capacity: usize,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: usize::MAX,
        }
    }
}

impl Dedup {
    pub(super) fn expire(&mut self, before: i64) {
        while let Some(&(t, h)) = self.order.front() {
            if t >= before {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&h) == Some(&t) {
                self.seen.remove(&h);
            }
        }
    }

    pub(super) fn insert(&mut self, h: u128, t: i64) -> bool {
        if self.seen.contains_key(&h) {
            return false;
        }
        self.seen.insert(h, t);
        self.order.push_back((t, h));
        while self.order.len() > self.capacity {
            if let Some((old_t, old_h)) = self.order.pop_front()
                && self.seen.get(&old_h) == Some(&old_t)
            {
                self.seen.remove(&old_h);
            }
        }
        true
    }
}

/// The hash a refused event is remembered by: its source and exact payload (a retried
/// request sends the same text), kept apart from `messageId` hashes.
pub(super) fn refused_hash(source: &str, payload: &str) -> u128 {
    id_hash(&format!("\u{2}quarantine\u{1}{source}\u{1}{payload}"))
}

/// Remembers refused events by their `quarantine` columns `received_at`, `source` and
/// `payload`.
pub(super) fn remember_refused(
    dedup: &mut Dedup,
    at: &ArrayRef,
    source: &ArrayRef,
    payload: &ArrayRef,
) {
    let at = at.as_primitive::<TimestampMicrosecondType>();
    let source = source.as_string::<i32>();
    let payload = payload.as_string::<i32>();
    for i in 0..at.len() {
        if payload.is_valid(i) {
            dedup.insert(refused_hash(source.value(i), payload.value(i)), at.value(i));
        }
    }
}

pub(super) fn remember(dedup: &mut Dedup, batch: &RecordBatch) {
    let ids = batch.column(events_col::MESSAGE_ID).as_string::<i32>();
    let at = batch
        .column(events_col::RECEIVED_AT)
        .as_primitive::<TimestampMicrosecondType>();
    for i in 0..batch.num_rows() {
        dedup.insert(id_hash(ids.value(i)), at.value(i));
    }
}
