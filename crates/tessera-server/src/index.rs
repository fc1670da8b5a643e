//! The in-memory profile index behind `tessera.v1`: every identifier, profile, score
//! and segment membership of the latest lake snapshot, so that a profile look-up is a
//! hash probe and bytes encoded once per snapshot and view — never a query planned per
//! request.
//!
//! [`ProfileIndex::load`] reads `identity_map`, `profiles`, `profile_merges`, `scores`,
//! `audience_membership` and `segment_refreshes` once. [`IndexHandle`] holds the
//! current index behind an `Arc` that readers clone; a rebuilt index replaces it in one
//! pointer swap, so a request sees one whole snapshot or the next, never a mix. The
//! handle rebuilds when any of those tables has a new version (checked every few
//! seconds, and right after an admin-triggered stitch or refresh).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::TryStreamExt;
use prost::Message as _;
use prost::bytes::Bytes;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value};
use tessera_core::schema::{
    AUDIENCE_MEMBERSHIP, IDENTITY_MAP, PII_ID_TYPES, PROFILE_MERGES, PROFILES, SCORES,
    SEGMENT_REFRESHES, is_pii_key, profiles_base_schema,
};
use tessera_engine::Engine;

use crate::api::v1;

/// The tables an index is built from, in [`ProfileIndex::versions`] order.
const SOURCES: [&str; 6] = [
    IDENTITY_MAP,
    PROFILES,
    PROFILE_MERGES,
    SCORES,
    AUDIENCE_MEMBERSHIP,
    SEGMENT_REFRESHES,
];

/// What personal data looks like to callers without the `pii` grant.
pub const MASK: &str = "***";

/// One segment and its members.
#[derive(Debug, Clone)]
pub struct SegmentEntry {
    pub info: v1::Segment,
    /// Member profiles (indexes into the profile list), in profile id order.
    pub members: Vec<u32>,
}

/// An identifier resolved against the index.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The identifier, normalized.
    pub identifier: v1::Identifier,
    /// The profile holding it.
    pub profile: Option<u32>,
    /// The merged-away profile id asked for, when it was one.
    pub merged_from: Option<String>,
}

/// Why an identifier cannot be looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadIdentifier(pub String);

/// One immutable snapshot of every profile.
#[derive(Debug, Default)]
pub struct ProfileIndex {
    snapshot: v1::Snapshot,
    versions: Vec<Option<i64>>,
    /// `type \u{1f} value` → profile.
    keys: HashMap<String, u32>,
    /// Current profile id → profile.
    by_profile_id: HashMap<String, u32>,
    /// Merged-away profile id → the surviving profile.
    merged: HashMap<String, u32>,
    /// Identifier types present.
    types: Vec<String>,
    profiles: Vec<v1::Profile>,
    /// Each profile encoded as callers see it, `[masked, clear]`, made on its first
    /// look-up: answers copy no profile and encode none.
    encoded: Vec<[OnceLock<Bytes>; 2]>,
    segments: Vec<SegmentEntry>,
    segment_by_name: HashMap<String, usize>,
    /// Row filter → which profiles it admits (by index).
    admitted: HashMap<Arc<str>, Vec<bool>>,
}

fn key(id_type: &str, value: &str) -> String {
    let mut k = String::with_capacity(id_type.len() + value.len() + 1);
    k.push_str(id_type);
    k.push('\u{1f}');
    k.push_str(value);
    k
}

/// A protobuf timestamp from microseconds since the epoch.
pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn text(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// A JSON value as a protobuf `Value`.
pub fn json_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        J::Object(map) => Kind::StructValue(Struct {
            fields: map.into_iter().map(|(k, v)| (k, json_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// A cell of a computed-trait column as a protobuf `Value` (times as RFC 3339 text).
fn scalar_value(s: ScalarValue) -> Value {
    if s.is_null() {
        return Value {
            kind: Some(Kind::NullValue(0)),
        };
    }
    let kind = match s {
        ScalarValue::Boolean(Some(b)) => Kind::BoolValue(b),
        ScalarValue::Float64(Some(x)) => Kind::NumberValue(x),
        ScalarValue::Float32(Some(x)) => Kind::NumberValue(f64::from(x)),
        ScalarValue::Int64(Some(x)) => Kind::NumberValue(x as f64),
        ScalarValue::Int32(Some(x)) => Kind::NumberValue(f64::from(x)),
        ScalarValue::Int16(Some(x)) => Kind::NumberValue(f64::from(x)),
        ScalarValue::Int8(Some(x)) => Kind::NumberValue(f64::from(x)),
        ScalarValue::UInt64(Some(x)) => Kind::NumberValue(x as f64),
        ScalarValue::UInt32(Some(x)) => Kind::NumberValue(f64::from(x)),
        ScalarValue::Utf8(Some(t))
        | ScalarValue::LargeUtf8(Some(t))
        | ScalarValue::Utf8View(Some(t)) => Kind::StringValue(t),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Kind::StringValue(
            chrono::DateTime::from_timestamp_micros(us)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default(),
        ),
        other => Kind::StringValue(other.to_string()),
    };
    Value { kind: Some(kind) }
}

/// Masks values under personal-data keys, at any depth.
fn mask_struct(s: &mut Struct) {
    for (k, v) in s.fields.iter_mut() {
        if is_pii_key(k) {
            if !matches!(v.kind, Some(Kind::NullValue(_)) | None) {
                *v = text(MASK);
            }
        } else {
            mask_value(v);
        }
    }
}

fn mask_value(v: &mut Value) {
    match &mut v.kind {
        Some(Kind::StructValue(s)) => mask_struct(s),
        Some(Kind::ListValue(l)) => l.values.iter_mut().for_each(mask_value),
        _ => {}
    }
}

/// The profile as a caller without the `pii` grant sees it: e-mail and phone
/// identifiers and every personal-data trait (at any depth) as `***`.
pub fn masked(profile: &v1::Profile) -> v1::Profile {
    let mut p = profile.clone();
    for id in &mut p.identifiers {
        if PII_ID_TYPES.contains(&id.r#type.as_str()) {
            id.value = MASK.into();
        }
    }
    if let Some(t) = &mut p.traits {
        mask_struct(t);
    }
    if let Some(t) = &mut p.computed_traits {
        mask_struct(t);
    }
    p
}

/// The profile as a caller with or without the `pii` grant sees it.
pub fn as_seen(profile: &v1::Profile, pii: bool) -> v1::Profile {
    if pii {
        profile.clone()
    } else {
        masked(profile)
    }
}

/// An identifier value as the caller may see it.
pub fn masked_identifier(id: &v1::Identifier, pii: bool) -> v1::Identifier {
    if !pii && PII_ID_TYPES.contains(&id.r#type.as_str()) {
        v1::Identifier {
            r#type: id.r#type.clone(),
            value: MASK.into(),
        }
    } else {
        id.clone()
    }
}

fn strings(
    batch: &RecordBatch,
    name: &str,
) -> Result<datafusion::arrow::array::StringArray, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("column {name} is missing"))?;
    let col = cast(col, &DataType::Utf8).map_err(|e| format!("column {name}: {e}"))?;
    Ok(col.as_string::<i32>().clone())
}

fn int64s(
    batch: &RecordBatch,
    name: &str,
) -> Result<datafusion::arrow::array::PrimitiveArray<Int64Type>, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("column {name} is missing"))?;
    let col = cast(col, &DataType::Int64).map_err(|e| format!("column {name}: {e}"))?;
    Ok(col.as_primitive::<Int64Type>().clone())
}

async fn batches(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, String> {
    ctx.sql(sql)
        .await
        .map_err(|e| format!("{sql}: {e}"))?
        .execute_stream()
        .await
        .map_err(|e| format!("{sql}: {e}"))?
        .try_collect()
        .await
        .map_err(|e| format!("{sql}: {e}"))
}

impl ProfileIndex {
    /// Reads the latest snapshot of the lake. `project_dir` supplies the segments'
    /// descriptions (from `sql/segments/`), when given.
    pub async fn load(
        engine: &Engine,
        project_dir: Option<&std::path::Path>,
        filters: &[Arc<str>],
    ) -> Result<ProfileIndex, String> {
        let (ctx, versions) = engine
            .session_of_versions(&SOURCES)
            .await
            .map_err(|e| format!("cannot open the lake: {e}"))?;
        let mut index = ProfileIndex {
            versions: versions.clone(),
            ..ProfileIndex::default()
        };
        let version = |i: usize| versions[i].unwrap_or(-1);
        let exists = |i: usize| versions[i].is_some();

        if exists(1) {
            index.load_profiles(&ctx).await?;
        }
        if exists(0) {
            index.load_identifiers(&ctx).await?;
        }
        if exists(2) {
            index.load_merges(&ctx).await?;
        }
        if exists(3) {
            for batch in batches(&ctx, "SELECT profile_id, model, score, value FROM scores").await?
            {
                let (pid, model, score) = (
                    strings(&batch, "profile_id")?,
                    strings(&batch, "model")?,
                    strings(&batch, "score")?,
                );
                let value = batch
                    .column_by_name("value")
                    .ok_or("scores.value is missing")?
                    .as_primitive_opt::<Float64Type>()
                    .ok_or("scores.value is not DOUBLE")?
                    .clone();
                for row in 0..batch.num_rows() {
                    if let Some(&i) = index.by_profile_id.get(pid.value(row)) {
                        index.profiles[i as usize].scores.push(v1::Score {
                            model: model.value(row).to_owned(),
                            name: score.value(row).to_owned(),
                            value: value.value(row),
                        });
                    }
                }
            }
            for p in &mut index.profiles {
                p.scores
                    .sort_by(|a, b| (&a.model, &a.name).cmp(&(&b.model, &b.name)));
            }
        }
        index
            .load_segments(&ctx, exists(4), exists(5), project_dir)
            .await?;

        let identifiers = index.keys.len() as i64;
        index.snapshot = v1::Snapshot {
            identity_map_version: version(0),
            profiles_version: version(1),
            audience_membership_version: version(4),
            scores_version: version(3),
            loaded_at: Some(timestamp(chrono::Utc::now().timestamp_micros())),
            profiles: index.profiles.len() as i64,
            identifiers,
        };
        index.encoded = std::iter::repeat_with(Default::default)
            .take(index.profiles.len())
            .collect();
        if exists(1) {
            index.load_filters(&ctx, filters).await?;
        }
        Ok(index)
    }

    /// Which profiles each row filter admits (evaluated over `profiles`, as in SQL).
    async fn load_filters(
        &mut self,
        ctx: &SessionContext,
        filters: &[Arc<str>],
    ) -> Result<(), String> {
        for filter in filters {
            let mut admitted = vec![false; self.profiles.len()];
            let ids: Vec<RecordBatch> = tessera_engine::access::admitted(ctx, filter)
                .await
                .map_err(|e| e.to_string())?
                .select_columns(&["profile_id"])
                .map_err(|e| e.to_string())?
                .collect()
                .await
                .map_err(|e| format!("row filter {filter:?}: {e}"))?;
            for batch in &ids {
                let pid = strings(batch, "profile_id")?;
                for row in 0..batch.num_rows() {
                    if let Some(&i) = self.by_profile_id.get(pid.value(row)) {
                        admitted[i as usize] = true;
                    }
                }
            }
            self.admitted.insert(filter.clone(), admitted);
        }
        Ok(())
    }

    /// Whether a caller with row filter `rows` may see profile `i` (every caller
    /// without a filter may; a filter the index was not built with admits none).
    pub fn visible(&self, i: u32, rows: Option<&str>) -> bool {
        match rows {
            None => true,
            Some(filter) => self
                .admitted
                .get(filter)
                .is_some_and(|a| a.get(i as usize).copied().unwrap_or(false)),
        }
    }

    /// The current profile of `profile_id` (following merges), if any.
    pub fn profile_of(&self, profile_id: &str) -> Option<u32> {
        self.by_profile_id
            .get(profile_id)
            .or_else(|| self.merged.get(profile_id))
            .copied()
    }

    async fn load_profiles(&mut self, ctx: &SessionContext) -> Result<(), String> {
        let base = profiles_base_schema();
        for batch in batches(ctx, "SELECT * FROM profiles").await? {
            let pid = strings(&batch, "profile_id")?;
            let first = int64s(&batch, "first_seen")?;
            let last = int64s(&batch, "last_seen")?;
            let golden: Vec<(&str, datafusion::arrow::array::StringArray)> =
                ["user_id", "email", "phone"]
                    .into_iter()
                    .filter_map(|c| strings(&batch, c).ok().map(|a| (c, a)))
                    .collect();
            let traits = strings(&batch, "traits").ok();
            let schema = batch.schema();
            let computed: Vec<(String, &Arc<dyn Array>)> = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .filter(|(f, _)| base.field_with_name(f.name()).is_err())
                .map(|(f, c)| (f.name().clone(), c))
                .collect();
            for row in 0..batch.num_rows() {
                let mut fields = BTreeMap::new();
                if let Some(t) = &traits
                    && t.is_valid(row)
                    && let Ok(serde_json::Value::Object(map)) =
                        serde_json::from_str::<serde_json::Value>(t.value(row))
                {
                    for (k, v) in map {
                        fields.insert(k, json_value(v));
                    }
                }
                for (name, col) in &golden {
                    if col.is_valid(row) {
                        fields.insert((*name).to_owned(), text(col.value(row)));
                    }
                }
                let mut computed_fields = BTreeMap::new();
                for (name, col) in &computed {
                    let v = ScalarValue::try_from_array(col, row)
                        .map_err(|e| format!("profiles.{name}: {e}"))?;
                    computed_fields.insert(name.clone(), scalar_value(v));
                }
                let id = pid.value(row).to_owned();
                self.by_profile_id
                    .insert(id.clone(), self.profiles.len() as u32);
                self.profiles.push(v1::Profile {
                    profile_id: id,
                    first_seen: first.is_valid(row).then(|| timestamp(first.value(row))),
                    last_seen: last.is_valid(row).then(|| timestamp(last.value(row))),
                    identifiers: Vec::new(),
                    traits: Some(Struct { fields }),
                    computed_traits: Some(Struct {
                        fields: computed_fields,
                    }),
                    scores: Vec::new(),
                    segments: Vec::new(),
                });
            }
        }
        Ok(())
    }

    /// The profile of `profile_id`, added bare when `profiles` does not have it (an
    /// identifier stitched after the last profile build).
    fn profile_slot(&mut self, profile_id: &str) -> u32 {
        if let Some(&i) = self.by_profile_id.get(profile_id) {
            return i;
        }
        let i = self.profiles.len() as u32;
        self.by_profile_id.insert(profile_id.to_owned(), i);
        self.profiles.push(v1::Profile {
            profile_id: profile_id.to_owned(),
            ..v1::Profile::default()
        });
        i
    }

    async fn load_identifiers(&mut self, ctx: &SessionContext) -> Result<(), String> {
        let mut types = std::collections::BTreeSet::new();
        for batch in batches(
            ctx,
            "SELECT id_type, id_value, profile_id, first_seen, last_seen FROM identity_map",
        )
        .await?
        {
            let (t, v, pid) = (
                strings(&batch, "id_type")?,
                strings(&batch, "id_value")?,
                strings(&batch, "profile_id")?,
            );
            let (first, last) = (int64s(&batch, "first_seen")?, int64s(&batch, "last_seen")?);
            for row in 0..batch.num_rows() {
                let i = self.profile_slot(pid.value(row));
                let id_type = t.value(row);
                if !types.contains(id_type) {
                    types.insert(id_type.to_owned());
                }
                self.keys.insert(key(id_type, v.value(row)), i);
                self.profiles[i as usize]
                    .identifiers
                    .push(v1::ProfileIdentifier {
                        r#type: id_type.to_owned(),
                        value: v.value(row).to_owned(),
                        first_seen: first.is_valid(row).then(|| timestamp(first.value(row))),
                        last_seen: last.is_valid(row).then(|| timestamp(last.value(row))),
                    });
            }
        }
        for p in &mut self.profiles {
            p.identifiers.sort_by(|a, b| {
                (
                    a.first_seen.as_ref().map(|t| (t.seconds, t.nanos)),
                    &a.r#type,
                    &a.value,
                )
                    .cmp(&(
                        b.first_seen.as_ref().map(|t| (t.seconds, t.nanos)),
                        &b.r#type,
                        &b.value,
                    ))
            });
        }
        self.types = types.into_iter().collect();
        Ok(())
    }

    async fn load_merges(&mut self, ctx: &SessionContext) -> Result<(), String> {
        let mut into: HashMap<String, String> = HashMap::new();
        for batch in batches(
            ctx,
            "SELECT from_profile_id, into_profile_id FROM profile_merges",
        )
        .await?
        {
            let (from, to) = (
                strings(&batch, "from_profile_id")?,
                strings(&batch, "into_profile_id")?,
            );
            for row in 0..batch.num_rows() {
                into.insert(from.value(row).to_owned(), to.value(row).to_owned());
            }
        }
        for from in into.keys() {
            // Follow the chain to a current profile (bounded: a cycle cannot loop).
            let mut at = from;
            let mut hops = 0;
            while let Some(next) = into.get(at) {
                at = next;
                hops += 1;
                if hops > into.len() {
                    break;
                }
            }
            if let Some(&i) = self.by_profile_id.get(at)
                && !self.by_profile_id.contains_key(from)
            {
                self.merged.insert(from.clone(), i);
            }
        }
        Ok(())
    }

    async fn load_segments(
        &mut self,
        ctx: &SessionContext,
        has_members: bool,
        has_refreshes: bool,
        project_dir: Option<&std::path::Path>,
    ) -> Result<(), String> {
        let mut infos: BTreeMap<String, v1::Segment> = BTreeMap::new();
        if has_refreshes {
            for batch in batches(
                ctx,
                "SELECT segment, refresh_version, refreshed_at, members FROM segment_refreshes",
            )
            .await?
            {
                let seg = strings(&batch, "segment")?;
                let (version, at, members) = (
                    int64s(&batch, "refresh_version")?,
                    int64s(&batch, "refreshed_at")?,
                    int64s(&batch, "members")?,
                );
                for row in 0..batch.num_rows() {
                    let info = infos.entry(seg.value(row).to_owned()).or_default();
                    if version.value(row) >= info.refresh_version {
                        info.name = seg.value(row).to_owned();
                        info.refresh_version = version.value(row);
                        info.refreshed_at = Some(timestamp(at.value(row)));
                        info.members = members.value(row);
                    }
                }
            }
        }
        let mut members: BTreeMap<String, Vec<(u32, i64)>> = BTreeMap::new();
        if has_members {
            for batch in batches(
                ctx,
                "SELECT segment, profile_id, since FROM audience_membership",
            )
            .await?
            {
                let (seg, pid) = (strings(&batch, "segment")?, strings(&batch, "profile_id")?);
                let since = int64s(&batch, "since")?;
                for row in 0..batch.num_rows() {
                    let i = self.profile_slot(pid.value(row));
                    let seg_name = seg.value(row);
                    match members.get_mut(seg_name) {
                        Some(list) => list.push((i, since.value(row))),
                        None => {
                            members.insert(seg_name.to_owned(), vec![(i, since.value(row))]);
                        }
                    }
                }
            }
        }
        let descriptions: HashMap<String, String> = project_dir
            .and_then(|d| tessera_segments::SegmentSet::load(d).ok())
            .map(|set| {
                set.segments()
                    .iter()
                    .map(|s| (s.name.clone(), s.description.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        for name in members.keys() {
            infos.entry(name.clone()).or_insert_with(|| v1::Segment {
                name: name.clone(),
                ..v1::Segment::default()
            });
        }
        for (name, mut info) in infos {
            let mut list = members.remove(&name).unwrap_or_default();
            for &(i, since) in &list {
                self.profiles[i as usize]
                    .segments
                    .push(v1::SegmentMembership {
                        segment: name.clone(),
                        since: Some(timestamp(since)),
                    });
            }
            list.sort_by(|a, b| {
                self.profiles[a.0 as usize]
                    .profile_id
                    .cmp(&self.profiles[b.0 as usize].profile_id)
            });
            info.description = descriptions.get(&name).cloned().unwrap_or_default();
            self.segment_by_name.insert(name, self.segments.len());
            self.segments.push(SegmentEntry {
                info,
                members: list.into_iter().map(|(i, _)| i).collect(),
            });
        }
        for p in &mut self.profiles {
            p.segments.sort_by(|a, b| a.segment.cmp(&b.segment));
        }
        Ok(())
    }

    /// Which lake versions it was read from.
    pub fn snapshot(&self) -> &v1::Snapshot {
        &self.snapshot
    }

    /// The versions of its source tables (`None`: the table does not exist).
    pub fn versions(&self) -> &[Option<i64>] {
        &self.versions
    }

    pub fn profile(&self, i: u32) -> &v1::Profile {
        &self.profiles[i as usize]
    }

    /// Profile `i` as a caller with or without the `pii` grant sees it, encoded as a
    /// `tessera.v1.Profile` message (encoded once per snapshot and view).
    pub fn encoded_profile(&self, i: u32, pii: bool) -> Bytes {
        self.encoded[i as usize][usize::from(pii)]
            .get_or_init(|| Bytes::from(as_seen(self.profile(i), pii).encode_to_vec()))
            .clone()
    }

    pub fn segments(&self) -> &[SegmentEntry] {
        &self.segments
    }

    pub fn segment(&self, name: &str) -> Option<&SegmentEntry> {
        self.segment_by_name.get(name).map(|&i| &self.segments[i])
    }

    /// Resolves an identifier: normalized as stitching normalizes it, a merged-away
    /// profile id followed to its survivor.
    pub fn resolve(&self, id: &v1::Identifier) -> Result<Resolved, BadIdentifier> {
        let id_type = id.r#type.trim().to_lowercase();
        if id_type.is_empty() || id.value.trim().is_empty() {
            return Err(BadIdentifier(
                "an identifier needs a type and a value, for example {type: \"email\", value: \"jane@example.com\"}".into(),
            ));
        }
        if id_type == "profile_id" || id_type == "profile" {
            let value = id.value.trim().to_owned();
            let identifier = v1::Identifier {
                r#type: "profile_id".into(),
                value: value.clone(),
            };
            if let Some(&i) = self.by_profile_id.get(&value) {
                return Ok(Resolved {
                    identifier,
                    profile: Some(i),
                    merged_from: None,
                });
            }
            let merged = self.merged.get(&value).copied();
            return Ok(Resolved {
                identifier,
                profile: merged,
                merged_from: merged.map(|_| value),
            });
        }
        let Some(value) = tessera_identity::stitch::normalize_identifier(&id_type, &id.value)
        else {
            return Err(BadIdentifier(format!(
                "{:?} is not a valid {id_type}",
                id.value
            )));
        };
        if !self.types.is_empty() && self.types.binary_search(&id_type).is_err() {
            return Err(BadIdentifier(format!(
                "unknown identifier type {id_type:?}: known types are profile_id, {}",
                self.types.join(", ")
            )));
        }
        let profile = self.keys.get(&key(&id_type, &value)).copied();
        Ok(Resolved {
            identifier: v1::Identifier {
                r#type: id_type,
                value,
            },
            profile,
            merged_from: None,
        })
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

    /// Rebuilds when a source table changed (or always, with `force`); returns whether
    /// a new index was swapped in.
    pub async fn refresh(&self, force: bool) -> Result<bool, String> {
        let _one = self.rebuilding.lock().await;
        if !force {
            let known = self.get().versions.clone();
            let mut now = Vec::with_capacity(SOURCES.len());
            for (i, name) in SOURCES.iter().enumerate() {
                now.push(
                    self.engine
                        .lake()
                        .latest_version(name, known.get(i).copied().flatten())
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            if now == known {
                return Ok(false);
            }
        }
        let started = std::time::Instant::now();
        let filters = self
            .filters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let index = ProfileIndex::load(&self.engine, self.project_dir.as_deref(), &filters).await?;
        tracing::info!(
            profiles = index.snapshot.profiles,
            identifiers = index.snapshot.identifiers,
            segments = index.segments.len(),
            "profile index loaded in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
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

    fn json_struct(v: serde_json::Value) -> Struct {
        match json_value(v).kind {
            Some(Kind::StructValue(s)) => s,
            _ => unreachable!("an object"),
        }
    }

    fn jane() -> v1::Profile {
        v1::Profile {
            profile_id: "p_1".into(),
            identifiers: vec![
                v1::ProfileIdentifier {
                    r#type: "email".into(),
                    value: "jane@example.com".into(),
                    ..Default::default()
                },
                v1::ProfileIdentifier {
                    r#type: "user_id".into(),
                    value: "u1".into(),
                    ..Default::default()
                },
            ],
            traits: Some(json_struct(serde_json::json!({
                "Email": "jane@example.com",
                "first-name": "Jane",
                "plan": "pro",
                "phone": null,
                "contacts": [{"ip": "10.0.0.1", "kind": "home"}],
            }))),
            computed_traits: Some(json_struct(
                serde_json::json!({"last_name": "Doe", "orders": 3}),
            )),
            scores: vec![v1::Score {
                model: "bgnbd".into(),
                name: "p_alive".into(),
                value: 0.75,
            }],
            segments: vec![v1::SegmentMembership {
                segment: "vip".into(),
                since: Some(timestamp(1_700_000_000_000_000)),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn masking_reaches_every_depth_and_spares_the_rest() {
        let profile = jane();
        let m = masked(&profile);
        assert_eq!(m.identifiers[0].value, MASK);
        assert_eq!(m.identifiers[1].value, "u1");
        let t = &m.traits.as_ref().unwrap().fields;
        let s = |v: &Value| match &v.kind {
            Some(Kind::StringValue(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(s(&t["Email"]), MASK);
        assert_eq!(s(&t["first-name"]), MASK);
        assert_eq!(s(&t["plan"]), "pro");
        assert!(
            matches!(t["phone"].kind, Some(Kind::NullValue(_))),
            "null stays null"
        );
        let Some(Kind::ListValue(contacts)) = &t["contacts"].kind else {
            panic!("a list")
        };
        let Some(Kind::StructValue(first)) = &contacts.values[0].kind else {
            panic!("a struct")
        };
        assert_eq!(s(&first.fields["ip"]), MASK);
        assert_eq!(s(&first.fields["kind"]), "home");
        let c = &m.computed_traits.as_ref().unwrap().fields;
        assert_eq!(s(&c["last_name"]), MASK);
        assert!(matches!(c["orders"].kind, Some(Kind::NumberValue(x)) if x == 3.0));
        assert_eq!(
            profile.identifiers[0].value, "jane@example.com",
            "the index copy is untouched"
        );
    }

    #[test]
    fn encoded_replies_are_the_proto_responses_byte_for_byte() {
        use crate::api::wire;
        use prost::Message as _;
        let profile = jane();
        let index = ProfileIndex {
            profiles: vec![profile.clone()],
            encoded: vec![Default::default()],
            ..ProfileIndex::default()
        };
        let identifier = Some(v1::Identifier {
            r#type: "user_id".into(),
            value: "u1".into(),
        });
        let snapshot = Some(v1::Snapshot {
            identity_map_version: 3,
            profiles: 1,
            loaded_at: Some(timestamp(1)),
            ..v1::Snapshot::default()
        });
        for pii in [false, true] {
            let reply = wire::GetProfileReply {
                profile: index.encoded_profile(0, pii),
                identifier: identifier.clone(),
                merged_from: "p_0".into(),
                snapshot,
            };
            let expected = v1::GetProfileResponse {
                profile: Some(as_seen(&profile, pii)),
                identifier: identifier.clone(),
                merged_from: "p_0".into(),
                snapshot,
            };
            assert_eq!(reply.encode_to_vec(), expected.encode_to_vec(), "pii {pii}");
            let decoded = v1::GetProfileResponse::decode(&*reply.encode_to_vec()).unwrap();
            assert_eq!(decoded, expected);
            assert_eq!(
                decoded.profile.unwrap().identifiers[0].value,
                if pii { "jane@example.com" } else { MASK }
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
                        profile: Some(as_seen(&profile, pii)),
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
        let t = timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
        let t = timestamp(1_500_000);
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    }
}
