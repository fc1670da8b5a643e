//! The domain's values as `tessera.v1` messages: profiles, identifiers, segments and
//! snapshots of [`tessera_identity::snapshot`]. The only place that builds them.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value};
use tessera_identity::snapshot::{self, Profile, SegmentEntry, Snapshot, shown_value};

use crate::v1;

/// A protobuf timestamp from microseconds since the epoch.
pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A JSON value as a protobuf `Value`.
pub fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        J::Object(map) => Kind::StructValue(json_struct(map)),
    };
    Value { kind: Some(kind) }
}

fn json_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect(),
    }
}

/// A profile as `tessera.v1.Profile`: the golden `user_id`, `email` and `phone` join
/// the traits.
pub fn profile(p: &Profile) -> v1::Profile {
    let mut traits = json_struct(&p.traits);
    for (name, golden) in [
        ("user_id", &p.user_id),
        ("email", &p.email),
        ("phone", &p.phone),
    ] {
        if let Some(v) = golden {
            traits.fields.insert(
                name.into(),
                Value {
                    kind: Some(Kind::StringValue(v.clone())),
                },
            );
        }
    }
    v1::Profile {
        profile_id: p.profile_id.clone(),
        first_seen: p.first_seen.map(timestamp),
        last_seen: p.last_seen.map(timestamp),
        identifiers: p
            .identifiers
            .iter()
            .map(|i| v1::ProfileIdentifier {
                r#type: i.id_type.clone(),
                value: i.value.clone(),
                first_seen: i.first_seen.map(timestamp),
                last_seen: i.last_seen.map(timestamp),
            })
            .collect(),
        traits: Some(traits),
        computed_traits: Some(json_struct(&p.computed)),
        scores: p
            .scores
            .iter()
            .map(|s| v1::Score {
                model: s.model.clone(),
                name: s.score.clone(),
                value: s.value,
            })
            .collect(),
        segments: p
            .segments
            .iter()
            .map(|m| v1::SegmentMembership {
                segment: m.segment.clone(),
                since: Some(timestamp(m.since)),
            })
            .collect(),
        consent: p
            .consent
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        consent_stated: p.consent.is_some(),
    }
}

/// An identifier as the caller may see it.
pub fn identifier(id_type: &str, value: &str, pii: bool) -> v1::Identifier {
    v1::Identifier {
        r#type: id_type.to_owned(),
        value: shown_value(id_type, value, pii).to_owned(),
    }
}

/// A segment as `tessera.v1.Segment`, with `members` as given (the caller's count).
pub fn segment(s: &SegmentEntry, members: i64) -> v1::Segment {
    v1::Segment {
        name: s.name.clone(),
        description: s.description.clone(),
        members,
        refresh_version: s.refresh_version,
        refreshed_at: s.refreshed_at.map(timestamp),
    }
}

/// Which lake versions a snapshot was read from (`-1`: the table does not exist).
pub fn snapshot(s: &Snapshot) -> v1::Snapshot {
    let v = s.versions();
    let or = |x: Option<i64>| x.unwrap_or(-1);
    v1::Snapshot {
        identity_map_version: or(v.identity_map),
        profiles_version: or(v.profiles),
        audience_membership_version: or(v.audience_membership),
        scores_version: or(v.scores),
        loaded_at: Some(timestamp(s.loaded_at())),
        profiles: s.len() as i64,
        identifiers: s.identifiers() as i64,
    }
}

/// What personal data looks like to callers without the `pii` grant.
pub const MASK: &str = snapshot::MASK;
