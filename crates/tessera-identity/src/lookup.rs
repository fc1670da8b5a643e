//! `tessera profile TYPE:VALUE`: a profile by any identifier (`email:jane@example.com`,
//! `anonymous_id:…`, `profile_id:p_…` — a merged-away profile id resolves to the
//! profile that absorbed it), answered by the same resolver and snapshot as
//! `tessera.v1` ([`crate::snapshot`]).

use serde::Serialize;
use serde_json::{Map, Value};
use tessera_core::schema::IDENTITY_MAP;
use tessera_engine::Engine;

use crate::error::{IdentityError, Result};
use crate::snapshot::{Profile, Snapshot, rfc3339};

/// A profile as `tessera profile` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileView {
    /// The identifier asked for, normalized.
    pub id_type: String,
    pub id_value: String,
    /// When the identifier was a merged-away profile id: that id.
    pub merged_from: Option<String>,
    pub profile_id: String,
    /// The `profiles` row (identity facts, golden traits, computed traits).
    pub profile: Map<String, Value>,
    /// Every identifier of the profile: type, value, first and last seen.
    pub identifiers: Vec<Map<String, Value>>,
    /// Every merge that ended in this profile.
    pub merges: Vec<Map<String, Value>>,
    /// Predictive scores of the profile (`scores`): model, score, value, version,
    /// trained_at; empty before `tessera predict`.
    pub scores: Vec<Map<String, Value>>,
    /// The latest consent stated, category → granted; null when never stated.
    pub consent: Option<std::collections::BTreeMap<String, bool>>,
    /// The segments the profile is a member of at their latest refresh.
    pub segments: Vec<String>,
}

/// Splits `TYPE:VALUE`.
pub fn parse_identifier(text: &str) -> Result<(String, String)> {
    match text.split_once(':') {
        Some((t, v)) if !t.trim().is_empty() && !v.trim().is_empty() => {
            Ok((t.trim().to_lowercase(), v.to_owned()))
        }
        _ => Err(IdentityError::BadIdentifier(format!(
            "{text:?} is not TYPE:VALUE, for example email:jane@example.com, \
             user_id:u123, anonymous_id:…, profile_id:p_…"
        ))),
    }
}

fn time(micros: Option<i64>) -> Value {
    micros.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

fn text(s: &Option<String>) -> Value {
    s.as_ref().map_or(Value::Null, |t| Value::String(t.clone()))
}

fn object(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl ProfileView {
    /// The view of profile `p`, found by `id_type:id_value` (`merged_from`: the
    /// merged-away profile id it was asked by).
    pub fn of(p: &Profile, id_type: String, id_value: String, merged_from: Option<String>) -> Self {
        let mut profile = object(vec![
            ("profile_id", Value::String(p.profile_id.clone())),
            ("first_seen", time(p.first_seen)),
            ("last_seen", time(p.last_seen)),
            ("identifiers", Value::from(p.identifiers.len())),
            ("user_id", text(&p.user_id)),
            ("email", text(&p.email)),
            ("phone", text(&p.phone)),
            ("traits", Value::Object(p.traits.clone())),
        ]);
        profile.extend(p.computed.clone());
        ProfileView {
            id_type,
            id_value,
            merged_from,
            profile_id: p.profile_id.clone(),
            profile,
            identifiers: p
                .identifiers
                .iter()
                .map(|i| {
                    object(vec![
                        ("id_type", Value::String(i.id_type.clone())),
                        ("id_value", Value::String(i.value.clone())),
                        ("first_seen", time(i.first_seen)),
                        ("last_seen", time(i.last_seen)),
                    ])
                })
                .collect(),
            merges: p
                .merges
                .iter()
                .map(|m| {
                    object(vec![
                        ("from_profile_id", Value::String(m.from_profile_id.clone())),
                        ("into_profile_id", Value::String(m.into_profile_id.clone())),
                        ("merged_at", time(Some(m.merged_at))),
                        ("rule", text(&m.rule)),
                        ("a_type", text(&m.a_type)),
                        ("a_value", text(&m.a_value)),
                        ("b_type", text(&m.b_type)),
                        ("b_value", text(&m.b_value)),
                    ])
                })
                .collect(),
            scores: p
                .scores
                .iter()
                .map(|s| {
                    object(vec![
                        ("model", Value::String(s.model.clone())),
                        ("score", Value::String(s.score.clone())),
                        (
                            "value",
                            serde_json::Number::from_f64(s.value)
                                .map_or(Value::Null, Value::Number),
                        ),
                        ("version", Value::from(s.version)),
                        ("trained_at", time(Some(s.trained_at))),
                    ])
                })
                .collect(),
            consent: p.consent.clone(),
            segments: p.segments.iter().map(|m| m.segment.clone()).collect(),
        }
    }
}

/// Looks up the profile holding identifier `TYPE:VALUE` in the latest snapshot;
/// `None` when no profile does.
pub async fn lookup(engine: &Engine, identifier: &str) -> Result<Option<ProfileView>> {
    let (id_type, raw) = parse_identifier(identifier)?;
    if !engine.lake().exists(IDENTITY_MAP).await? {
        return Err(IdentityError::BadIdentifier(
            "no identity map yet: run `tessera stitch` first".into(),
        ));
    }
    let snapshot = Snapshot::load(engine, &Default::default(), &[]).await?;
    view(&snapshot, &id_type, &raw)
}

/// When to look a profile up: a version of `identity_map` (a stitching run) or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    /// Microseconds since the epoch.
    Time(i64),
}

impl AsOf {
    /// `VERSION` (a number) or `TIMESTAMP` (RFC 3339 or a date).
    pub fn parse(text: &str) -> Result<AsOf> {
        if let Ok(v) = text.trim().parse::<u64>() {
            return Ok(AsOf::Version(v));
        }
        tessera_core::config::parse_instant(text)
            .map(AsOf::Time)
            .ok_or_else(|| {
                IdentityError::BadIdentifier(format!(
                    "--as-of {text:?} is neither a version of identity_map (a number) nor a \
                     time such as 2026-11-01T12:00:00Z or 2026-11-01"
                ))
            })
    }
}

/// [`lookup`] in the lake as it was at `as_of`: at a version of `identity_map` (every
/// other table as of that version's commit), or at a time.
pub async fn lookup_as_of(
    engine: &Engine,
    identifier: &str,
    as_of: AsOf,
) -> Result<Option<ProfileView>> {
    let (id_type, raw) = parse_identifier(identifier)?;
    let lake = engine.lake();
    let Some(map) = lake.try_open(IDENTITY_MAP).await? else {
        return Err(IdentityError::BadIdentifier(
            "no identity map yet: run `tessera stitch` first".into(),
        ));
    };
    let at = match as_of {
        AsOf::Time(t) => {
            if lake.version_at(IDENTITY_MAP, t).await?.is_none() {
                return Err(IdentityError::BadIdentifier(format!(
                    "identity_map has no version at or before {}: stitching had not run yet",
                    rfc3339(t)
                )));
            }
            t
        }
        AsOf::Version(v) => {
            let latest = map.version().unwrap_or(0);
            if v > latest {
                return Err(IdentityError::BadIdentifier(format!(
                    "identity_map has no version {v} (the latest is {latest})"
                )));
            }
            if v == latest {
                let snapshot = Snapshot::load(engine, &Default::default(), &[]).await?;
                return view(&snapshot, &id_type, &raw);
            }
            // Every table as it stood after that run (its profiles are written after
            // the map) until the next one: just before the next version's commit (the
            // log records commits to the millisecond).
            lake.commit_time(IDENTITY_MAP, v + 1).await? - 1_000
        }
    };
    let snapshot = Snapshot::load_at(engine, &Default::default(), &[], Some(at)).await?;
    view(&snapshot, &id_type, &raw)
}

/// The view of `TYPE:VALUE` in `snapshot` (what `tessera profile` prints).
pub fn view(snapshot: &Snapshot, id_type: &str, value: &str) -> Result<Option<ProfileView>> {
    let resolved = snapshot.resolve(id_type, value)?;
    Ok(resolved.profile.map(|i| {
        ProfileView::of(
            snapshot.profile(i),
            resolved.id_type,
            resolved.value,
            resolved.merged_from,
        )
    }))
}
