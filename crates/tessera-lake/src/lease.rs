//! Read leases: what keeps vacuum from removing files a running reader still needs.
//!
//! Every process that opens a table of a lake notes when it did, per table, in a lease
//! object `_tessera/leases/HOLDER.json` at the lake's root (written at the first open, then
//! at most every [`WRITE_EVERY`]). A reader that opened a table at time `t` needs only files
//! that were live at `t`; vacuum removes files that stopped being live before its cutoff.
//! So [`Lake::vacuum`](crate::Lake::vacuum) never takes a cutoff later than the earliest
//! open noted in a lease that has not expired. An open counts for [`LEASE`] (longer than
//! any query or batch job holds a snapshot); a lease object counts until its `expires_at`,
//! so a process that died stops holding anything an hour later, and one that ends cleanly
//! ([`Lake::release_leases`](crate::Lake::release_leases)) at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

/// How long one open of a table is held (milliseconds).
pub const LEASE: i64 = 60 * 60 * 1000;
/// How often a holder rewrites its lease object at most (milliseconds).
pub const WRITE_EVERY: i64 = 30 * 1000;
/// Where lease objects live, under the lake's root.
pub const FOLDER: &str = "_tessera/leases";

/// A holder's lease object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseFile {
    /// Who holds it (host, process id, start time).
    pub holder: String,
    /// Per table, the earliest open (milliseconds since the epoch) still held.
    pub earliest_open: BTreeMap<String, i64>,
    /// When the lease stops counting unless rewritten.
    pub expires_at: i64,
}

/// This process's opens, per table.
#[derive(Debug)]
pub(crate) struct Book {
    holder: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Open times per table, oldest first, at most one per second.
    opens: BTreeMap<String, VecDeque<i64>>,
    written_at: Option<i64>,
    released: bool,
}

impl Book {
    pub(crate) fn new() -> Arc<Book> {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        static LAKES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let started = chrono::Utc::now().timestamp_millis();
        let holder = format!(
            "{}-{}-{started}-{}",
            host.replace(['/', '\\', ' '], "_"),
            std::process::id(),
            LAKES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Arc::new(Book {
            holder,
            state: Mutex::new(State::default()),
        })
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// Notes an open of `table` at `now`; returns the lease object to write, if due.
    pub(crate) fn note(&self, table: &str, now: i64) -> Option<LeaseFile> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let opens = state.opens.entry(table.to_owned()).or_default();
        if opens.back().is_none_or(|last| now - last >= 1000) {
            opens.push_back(now);
        }
        for opens in state.opens.values_mut() {
            while opens.front().is_some_and(|t| now - t > LEASE) {
                opens.pop_front();
            }
        }
        state.opens.retain(|_, o| !o.is_empty());
        let due = state.released || state.written_at.is_none_or(|w| now - w >= WRITE_EVERY);
        if !due {
            return None;
        }
        state.written_at = Some(now);
        state.released = false;
        Some(LeaseFile {
            holder: self.holder.clone(),
            earliest_open: state
                .opens
                .iter()
                .filter_map(|(t, o)| o.front().map(|f| (t.clone(), *f)))
                .collect(),
            // A note after this write is covered until the next one is due.
            expires_at: now + LEASE + WRITE_EVERY,
        })
    }

    /// Forgets every open (the process is done reading).
    pub(crate) fn release(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.opens.clear();
        state.written_at = None;
        state.released = true;
    }
}

fn path_of(holder: &str) -> Path {
    Path::from(format!("{FOLDER}/{holder}.json"))
}

/// Writes `lease` to the lake's root store.
pub(crate) async fn write(
    store: &Arc<dyn ObjectStore>,
    lease: &LeaseFile,
) -> object_store::Result<()> {
    let body = serde_json::to_vec(lease).unwrap_or_default();
    store
        .put(&path_of(&lease.holder), body.into())
        .await
        .map(|_| ())
}

/// Removes `holder`'s lease object (gone already is fine).
pub(crate) async fn remove(store: &Arc<dyn ObjectStore>, holder: &str) -> object_store::Result<()> {
    match store.delete(&path_of(holder)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every lease that has not expired at `now`, except `except`'s; expired ones are removed.
pub(crate) async fn live(
    store: &Arc<dyn ObjectStore>,
    now: i64,
    except: &str,
) -> object_store::Result<Vec<LeaseFile>> {
    let prefix = Path::from(FOLDER);
    let objects: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    let mut leases = Vec::new();
    for meta in objects {
        let bytes = match store.get(&meta.location).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        // An unreadable lease object counts as held for LEASE after it was written.
        let lease = serde_json::from_slice::<LeaseFile>(&bytes).unwrap_or_else(|_| LeaseFile {
            holder: meta.location.to_string(),
            earliest_open: BTreeMap::from([(
                "*".to_owned(),
                meta.last_modified.timestamp_millis(),
            )]),
            expires_at: meta.last_modified.timestamp_millis() + LEASE,
        });
        if lease.holder == except {
            continue;
        }
        if lease.expires_at < now {
            let _ = store.delete(&meta.location).await;
            continue;
        }
        leases.push(lease);
    }
    Ok(leases)
}

/// The earliest open of `table` any of `leases` holds.
pub(crate) fn earliest(leases: &[LeaseFile], table: &str) -> Option<(i64, String)> {
    leases
        .iter()
        .flat_map(|l| {
            l.earliest_open
                .iter()
                .filter(|(t, _)| t.as_str() == table || t.as_str() == "*")
                .map(|(_, at)| (*at, l.holder.clone()))
        })
        .min()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn opens_expire_and_writes_are_throttled() {
        let book = Book::new();
        let first = book.note("events", 1_000_000).unwrap();
        assert_eq!(first.earliest_open["events"], 1_000_000);
        assert_eq!(first.expires_at, 1_000_000 + LEASE + WRITE_EVERY);
        // Within WRITE_EVERY: nothing to write.
        assert!(book.note("events", 1_005_000).is_none());
        assert!(book.note("profiles", 1_010_000).is_none());
        let second = book.note("events", 1_000_000 + WRITE_EVERY).unwrap();
        assert_eq!(second.earliest_open["events"], 1_000_000);
        assert_eq!(second.earliest_open["profiles"], 1_010_000);
        // An hour later the first opens no longer count.
        let later = book.note("events", 1_011_000 + LEASE).unwrap();
        assert_eq!(later.earliest_open["events"], 1_000_000 + WRITE_EVERY);
        assert!(!later.earliest_open.contains_key("profiles"));
        // Released: the next open writes at once.
        book.release();
        let again = book.note("events", 1_012_000 + LEASE).unwrap();
        assert_eq!(again.earliest_open["events"], 1_012_000 + LEASE);
    }

    #[test]
    fn the_earliest_open_of_any_holder_wins() {
        let lease = |holder: &str, t: &str, at: i64| LeaseFile {
            holder: holder.into(),
            earliest_open: BTreeMap::from([(t.to_owned(), at)]),
            expires_at: i64::MAX,
        };
        let leases = vec![
            lease("a", "events", 50),
            lease("b", "events", 20),
            lease("c", "*", 30),
        ];
        assert_eq!(earliest(&leases, "events"), Some((20, "b".into())));
        assert_eq!(earliest(&leases, "profiles"), Some((30, "c".into())));
        assert_eq!(earliest(&leases[..2], "profiles"), None);
    }
}
