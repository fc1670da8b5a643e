//! The in-memory profile index behind `tessera.v1`: the latest lake snapshot of every
//! profile ([`tessera_identity::snapshot::Snapshot`]), each profile encoded once per
//! snapshot and view (masked, clear) on its first look-up — never a query planned per
//! request.
//!
//! [`IndexHandle`] holds the current index behind an `Arc` that readers clone; a
//! rebuilt index replaces it in one pointer swap, so a request sees one whole snapshot
//! or the next, never a mix. The handle rebuilds when any of the snapshot's tables has
//! a new version (checked every few seconds by listing each Delta log from the version
//! it holds, and right after an admin-triggered stitch or refresh).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prost::Message as _;
use prost::bytes::Bytes;
use tessera_engine::Engine;
use tessera_identity::snapshot::{SOURCES, Snapshot};

use crate::v1;

/// One immutable snapshot, with its answers encoded as they are first asked for.
#[derive(Debug, Default)]
pub struct ProfileIndex {
    snapshot: Snapshot,
    /// Which versions, as `tessera.v1` names them.
    proto: v1::Snapshot,
    /// Each profile encoded as callers see it, `[masked, clear]`, made on its first
    /// look-up: answers copy no profile and encode none.
    encoded: Vec<[OnceLock<Bytes>; 2]>,
}

impl ProfileIndex {
    /// The index of `snapshot`.
    pub fn new(snapshot: Snapshot) -> ProfileIndex {
        ProfileIndex {
            proto: crate::proto::snapshot(&snapshot),
            encoded: std::iter::repeat_with(Default::default)
                .take(snapshot.len())
                .collect(),
            snapshot,
        }
    }

    /// The profiles.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Which lake versions it was read from, as answers name them.
    pub fn versions(&self) -> &v1::Snapshot {
        &self.proto
    }

    /// Profile `i` as a caller with or without the `pii` grant sees it, encoded as a
    /// `tessera.v1.Profile` message (encoded once per snapshot and view).
    pub fn encoded_profile(&self, i: u32, pii: bool) -> Bytes {
        self.encoded[i as usize][usize::from(pii)]
            .get_or_init(|| {
                let seen = self.snapshot.profile(i).as_seen(pii);
                Bytes::from(crate::proto::profile(&seen).encode_to_vec())
            })
            .clone()
    }
}

/// The current index, swapped whole when a newer snapshot is loaded.
#[derive(Debug)]
pub struct IndexHandle {
    current: RwLock<Arc<ProfileIndex>>,
    engine: Engine,
    project_dir: Option<PathBuf>,
    /// The callers' row filters, evaluated at each load.
    filters: RwLock<Vec<Arc<str>>>,
    /// One rebuild at a time.
    rebuilding: tokio::sync::Mutex<()>,
}

impl IndexHandle {
    /// An empty handle; call [`IndexHandle::refresh`] to load.
    pub fn new(engine: Engine, project_dir: Option<PathBuf>) -> IndexHandle {
        IndexHandle {
            current: RwLock::new(Arc::new(ProfileIndex::default())),
            engine,
            project_dir,
            filters: RwLock::default(),
            rebuilding: tokio::sync::Mutex::new(()),
        }
    }

    /// Sets the row filters of the callers; returns whether they changed (the next
    /// load evaluates them).
    pub fn set_filters(&self, filters: Vec<Arc<str>>) -> bool {
        let mut current = self.filters.write().unwrap_or_else(|p| p.into_inner());
        if *current == filters {
            return false;
        }
        *current = filters;
        true
    }

    /// The current snapshot.
    pub fn get(&self) -> Arc<ProfileIndex> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The segments' descriptions from the project's segment files (none without a
    /// project or when the files do not load).
    fn descriptions(&self) -> HashMap<String, String> {
        self.project_dir
            .as_deref()
            .and_then(|d| tessera_segments::SegmentSet::load(d).ok())
            .map(|set| {
                set.segments()
                    .iter()
                    .map(|s| (s.name.clone(), s.description.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Rebuilds when a source table changed (or always, with `force`); returns whether
    /// a new index was swapped in.
    pub async fn refresh(&self, force: bool) -> Result<bool, tessera_identity::IdentityError> {
        let _one = self.rebuilding.lock().await;
        if !force {
            let known = self.get().snapshot.versions().list();
            let mut now = Vec::with_capacity(SOURCES.len());
            for (name, known) in SOURCES.iter().zip(known) {
                now.push(self.engine.lake().latest_version(name, known).await?);
            }
            if now == known {
                return Ok(false);
            }
            // Versions that only compacted or vacuumed a table hold the same rows.
            let mut changed = false;
            for ((name, was), is) in SOURCES.iter().zip(&known).zip(&now) {
                changed |= match (was, is) {
                    (Some(was), Some(is)) => {
                        self.engine
                            .lake()
                            .rows_changed_between(name, *was as u64, *is as u64)
                            .await?
                    }
                    _ => was != is,
                };
            }
            if !changed {
                return Ok(false);
            }
        }
        let started = std::time::Instant::now();
        let filters = self
            .filters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let snapshot = Snapshot::load(&self.engine, &self.descriptions(), &filters).await?;
        tracing::info!(
            profiles = snapshot.len(),
            identifiers = snapshot.identifiers(),
            segments = snapshot.segments().len(),
            "profile index loaded in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(ProfileIndex::new(snapshot));
        Ok(true)
    }

    /// Rebuilds on change every `every` until `stop`.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if let Err(e) = self.refresh(false).await {
                tracing::warn!("profile index not rebuilt (serving the previous one): {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tessera_identity::snapshot::{Membership, Profile, ProfileIdentifier, Score};

    fn jane() -> Profile {
        let map = |v: serde_json::Value| match v {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("an object"),
        };
        Profile {
            profile_id: "p_1".into(),
            email: Some("jane@example.com".into()),
            user_id: Some("u1".into()),
            identifiers: vec![
                ProfileIdentifier {
                    id_type: "email".into(),
                    value: "jane@example.com".into(),
                    first_seen: Some(1),
                    last_seen: Some(2),
                },
                ProfileIdentifier {
                    id_type: "user_id".into(),
                    value: "u1".into(),
                    first_seen: None,
                    last_seen: None,
                },
            ],
            traits: map(serde_json::json!({
                "Email": "jane@example.com",
                "first-name": "Jane",
                "plan": "pro",
                "contacts": [{"ip": "10.0.0.1", "kind": "home"}],
            })),
            computed: map(
                serde_json::json!({"last_name": "Doe", "orders": 3, "channels": ["web", "app"]}),
            ),
            scores: vec![Score {
                model: "bgnbd".into(),
                score: "p_alive".into(),
                value: 0.75,
                version: 1,
                trained_at: 5,
            }],
            segments: vec![Membership {
                segment: "vip".into(),
                since: 1_700_000_000_000_000,
            }],
            ..Profile::default()
        }
    }

    #[test]
    fn encoded_replies_are_the_proto_responses_byte_for_byte() {
        use crate::wire;
        let profile = jane();
        let index = ProfileIndex::new(Snapshot::of_profiles(vec![profile.clone()]));
        let identifier = Some(v1::Identifier {
            r#type: "user_id".into(),
            value: "u1".into(),
        });
        let snapshot = Some(v1::Snapshot {
            identity_map_version: 3,
            profiles: 1,
            loaded_at: Some(crate::proto::timestamp(1)),
            ..v1::Snapshot::default()
        });
        for pii in [false, true] {
            let seen = crate::proto::profile(&profile.as_seen(pii));
            let reply = wire::GetProfileReply {
                profile: index.encoded_profile(0, pii),
                identifier: identifier.clone(),
                merged_from: "p_0".into(),
                snapshot,
            };
            let expected = v1::GetProfileResponse {
                profile: Some(seen.clone()),
                identifier: identifier.clone(),
                merged_from: "p_0".into(),
                snapshot,
            };
            assert_eq!(reply.encode_to_vec(), expected.encode_to_vec(), "pii {pii}");
            let decoded = v1::GetProfileResponse::decode(&*reply.encode_to_vec()).unwrap();
            assert_eq!(decoded, expected);
            let decoded = decoded.profile.unwrap();
            assert_eq!(
                decoded.identifiers[0].value,
                if pii {
                    "jane@example.com"
                } else {
                    crate::proto::MASK
                }
            );
            let traits = decoded.traits.unwrap().fields;
            let text = |k: &str| match &traits[k].kind {
                Some(prost_types::value::Kind::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            assert_eq!(
                text("user_id"),
                "u1",
                "the golden identifiers join the traits"
            );
            assert_eq!(text("email"), if pii { "jane@example.com" } else { "***" });
            assert_eq!(text("plan"), "pro");
            let computed = decoded.computed_traits.unwrap().fields;
            assert!(
                matches!(&computed["channels"].kind, Some(prost_types::value::Kind::ListValue(l)) if l.values.len() == 2),
                "lists stay lists"
            );

            let batch = wire::BatchGetProfilesReply {
                results: vec![
                    wire::ProfileResultReply {
                        identifier: identifier.clone(),
                        profile: index.encoded_profile(0, pii),
                        ..Default::default()
                    },
                    wire::ProfileResultReply {
                        identifier: identifier.clone(),
                        ..Default::default()
                    },
                    wire::ProfileResultReply {
                        error: "bad".into(),
                        ..Default::default()
                    },
                ],
                snapshot,
            };
            let expected = v1::BatchGetProfilesResponse {
                results: vec![
                    v1::ProfileResult {
                        identifier: identifier.clone(),
                        profile: Some(seen),
                        ..Default::default()
                    },
                    v1::ProfileResult {
                        identifier: identifier.clone(),
                        ..Default::default()
                    },
                    v1::ProfileResult {
                        error: "bad".into(),
                        ..Default::default()
                    },
                ],
                snapshot,
            };
            assert_eq!(batch.encode_to_vec(), expected.encode_to_vec(), "pii {pii}");
            let decoded = v1::BatchGetProfilesResponse::decode(&*batch.encode_to_vec()).unwrap();
            assert_eq!(decoded, expected);
            assert!(
                decoded.results[1].profile.is_none(),
                "no profile stays unset"
            );
        }
        assert!(
            index.encoded[0].iter().all(|e| e.get().is_some()),
            "both views cached after their first look-up"
        );
    }

    #[test]
    fn timestamps_before_the_epoch_keep_positive_nanos() {
        let t = crate::proto::timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
        let t = crate::proto::timestamp(1_500_000);
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    }
}
