//! Writing the suppression list (`suppressions`): salted hashes of identifiers whose
//! events the collector and `tessera import` acknowledge and drop
//! (`tessera_ingest::suppress` reads it). Unsuppressing restores ingestion of new
//! events only: what was erased stays erased.

use tessera_core::privacy::Hasher;
use tessera_core::schema::SUPPRESSIONS;
use tessera_engine::Engine;
use tessera_lake::CommitNote;

use crate::{Result, Subject, append_rows, now_micros};

/// Appends a row per `(id_type, hash)` in `state` (`suppressed` or `unsuppressed`);
/// returns how many.
pub async fn set_state(
    engine: &Engine,
    hashes: &[(String, String)],
    state: &str,
    request_id: Option<&str>,
    actor: &str,
) -> Result<usize> {
    if hashes.is_empty() {
        return Ok(0);
    }
    let at = now_micros();
    let rows: Vec<serde_json::Value> = hashes
        .iter()
        .map(|(t, h)| {
            serde_json::json!({
                "subject_hash": h, "id_type": t, "state": state, "at": at,
                "request_id": request_id, "actor": actor,
            })
        })
        .collect();
    append_rows(
        engine,
        SUPPRESSIONS,
        &rows,
        CommitNote::new(state, actor).detail("identifiers", hashes.len() as u64),
    )
    .await?;
    Ok(hashes.len())
}

/// The hasher of this lake's subject hashes (its privacy salt, made on first use).
pub async fn hasher(engine: &Engine) -> Result<Hasher> {
    Ok(Hasher::new(engine.lake().privacy_salt().await?.as_bytes()))
}

/// The salted hashes of `subjects` (profile ids have none).
pub fn hashes_of(hasher: &Hasher, subjects: &[Subject]) -> Vec<(String, String)> {
    subjects
        .iter()
        .filter(|s| s.id_type != "profile_id")
        .map(|s| (s.id_type.clone(), hasher.subject(&s.id_type, &s.value)))
        .collect()
}
