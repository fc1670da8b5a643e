//! Every profile of one lake snapshot in memory, and the one resolver of identifiers.
//!
//! [`Snapshot::load`] reads `identity_map`, `profiles`, `profile_merges`, `scores`,
//! `audience_membership` and `segment_refreshes` once, into plain structs: each
//! [`Profile`] with its identifiers (first and last seen), golden and computed traits,
//! scores, segment memberships and merge history. [`Snapshot::resolve`] finds the
//! profile of any identifier — normalized as stitching normalizes it; `profile_id`
//! (or `profile`) of a merged-away profile leads to its survivor; an unknown type is
//! named with the known ones — for `tessera profile`, `tessera.v1`, activation and
//! privacy alike. [`Profile::masked`] is the profile as a caller without the `pii`
//! grant sees it; [`Snapshot::visible`] says whether a row-filtered caller may see it.
//!
//! A snapshot is immutable: a newer one is loaded whole and replaces it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::Serialize;
use serde_json::{Map, Value};
use tessera_core::schema::{
    AUDIENCE_MEMBERSHIP, CONSENT, IDENTITY_MAP, PII_ID_TYPES, PROFILE_MERGES, PROFILES, SCORES,
    SEGMENT_REFRESHES, is_pii_key, profiles_base_schema,
};
use tessera_engine::Engine;
use tessera_engine::columns::{collect, float64s, int64s, strings};

use crate::error::{IdentityError, Result};
use crate::stitch::normalize_identifier;

/// The tables a snapshot is read from, in [`Snapshot::versions`] order.
pub const SOURCES: [&str; 6] = [
    IDENTITY_MAP,
    PROFILES,
    PROFILE_MERGES,
    SCORES,
    AUDIENCE_MEMBERSHIP,
    SEGMENT_REFRESHES,
];

/// What personal data looks like to callers without the `pii` grant.
pub const MASK: &str = "***";

/// One identifier of a profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileIdentifier {
    pub id_type: String,
    pub value: String,
    /// Microseconds since the epoch.
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
}

/// One predictive score of a profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub model: String,
    pub score: String,
    pub value: f64,
    pub version: i64,
    /// Microseconds since the epoch.
    pub trained_at: i64,
}

/// Membership of one segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Membership {
    pub segment: String,
    /// When the profile last entered (microseconds since the epoch).
    pub since: i64,
}

/// A profile merged into this one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merge {
    pub from_profile_id: String,
    pub into_profile_id: String,
    /// Microseconds since the epoch.
    pub merged_at: i64,
    pub rule: Option<String>,
    /// The edge that caused it (none for merges found by a full rebuild).
    pub a_type: Option<String>,
    pub a_value: Option<String>,
    pub b_type: Option<String>,
    pub b_value: Option<String>,
}

/// One person.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Profile {
    pub profile_id: String,
    /// Microseconds since the epoch.
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    /// The golden identifiers of `profiles`.
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// The golden record: identify traits merged by survivorship.
    pub traits: Map<String, Value>,
    /// One value per computed trait (`sql/traits/*.sql`), in column order.
    pub computed: Map<String, Value>,
    /// By first seen, then type and value.
    pub identifiers: Vec<ProfileIdentifier>,
    /// By model, then score.
    pub scores: Vec<Score>,
    /// By segment name.
    pub segments: Vec<Membership>,
    /// Merges that ended in this profile, oldest first.
    pub merges: Vec<Merge>,
    /// The latest consent stated, per category (`consent`); `None`: never stated.
    pub consent: Option<std::collections::BTreeMap<String, bool>>,
}

fn mask_value(v: &mut Value) {
    match v {
        Value::Object(map) => mask_map(map),
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        _ => {}
    }
}

fn mask_map(map: &mut Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        if is_pii_key(k) {
            if !v.is_null() {
                *v = Value::String(MASK.into());
            }
        } else {
            mask_value(v);
        }
    }
}

/// An identifier value as a caller with or without the `pii` grant sees it.
pub fn shown_value<'a>(id_type: &str, value: &'a str, pii: bool) -> &'a str {
    if !pii && PII_ID_TYPES.contains(&id_type) {
        MASK
    } else {
        value
    }
}

impl Profile {
    /// The profile as a caller without the `pii` grant sees it: e-mail and phone
    /// identifiers, the golden e-mail and phone, and every personal-data trait (at any
    /// depth) as `***`.
    pub fn masked(&self) -> Profile {
        let mut p = self.clone();
        for id in &mut p.identifiers {
            id.value = shown_value(&id.id_type, &id.value, false).to_owned();
        }
        for golden in [&mut p.email, &mut p.phone] {
            if golden.is_some() {
                *golden = Some(MASK.into());
            }
        }
        mask_map(&mut p.traits);
        mask_map(&mut p.computed);
        for m in &mut p.merges {
            for (t, v) in [(&m.a_type, &mut m.a_value), (&m.b_type, &mut m.b_value)] {
                if let (Some(t), Some(v)) = (t, v) {
                    *v = shown_value(t, v, false).to_owned();
                }
            }
        }
        p
    }

    /// The profile as a caller with or without the `pii` grant sees it.
    pub fn as_seen(&self, pii: bool) -> std::borrow::Cow<'_, Profile> {
        if pii {
            std::borrow::Cow::Borrowed(self)
        } else {
            std::borrow::Cow::Owned(self.masked())
        }
    }
}

/// One segment of the snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentEntry {
    pub name: String,
    /// From the segment file's `-- description:` header (empty when unknown).
    pub description: String,
    /// Members at the latest refresh.
    pub size: i64,
    pub refresh_version: i64,
    /// Microseconds since the epoch (`None`: never refreshed).
    pub refreshed_at: Option<i64>,
    /// Member profiles (indexes), in profile id order.
    pub members: Vec<u32>,
}

/// An identifier resolved against a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The type, `profile_id` for a profile id (also when asked as `profile`).
    pub id_type: String,
    /// The value, normalized.
    pub value: String,
    /// The profile holding it.
    pub profile: Option<u32>,
    /// The merged-away profile id asked for, when it was one.
    pub merged_from: Option<String>,
}

/// The versions a snapshot was read from (`None`: the table does not exist).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Versions {
    pub identity_map: Option<i64>,
    pub profiles: Option<i64>,
    pub profile_merges: Option<i64>,
    pub scores: Option<i64>,
    pub audience_membership: Option<i64>,
    pub segment_refreshes: Option<i64>,
}

impl Versions {
    fn of(v: &[Option<i64>]) -> Versions {
        let at = |i: usize| v.get(i).copied().flatten();
        Versions {
            identity_map: at(0),
            profiles: at(1),
            profile_merges: at(2),
            scores: at(3),
            audience_membership: at(4),
            segment_refreshes: at(5),
        }
    }

    /// In [`SOURCES`] order.
    pub fn list(&self) -> [Option<i64>; 6] {
        [
            self.identity_map,
            self.profiles,
            self.profile_merges,
            self.scores,
            self.audience_membership,
            self.segment_refreshes,
        ]
    }
}

/// Every profile of one lake snapshot.
#[derive(Debug, Default)]
pub struct Snapshot {
    versions: Versions,
    /// When it was read (microseconds since the epoch).
    loaded_at: i64,
    profiles: Vec<Profile>,
    /// `type \u{1f} value` → profile.
    keys: HashMap<String, u32>,
    by_profile_id: HashMap<String, u32>,
    /// Merged-away profile id → the surviving profile.
    merged: HashMap<String, u32>,
    /// Identifier types present, sorted.
    types: Vec<String>,
    segments: Vec<SegmentEntry>,
    segment_by_name: HashMap<String, usize>,
    /// Row filter → which profiles it admits.
    admitted: HashMap<Arc<str>, Vec<bool>>,
}

fn key(id_type: &str, value: &str) -> String {
    let mut k = String::with_capacity(id_type.len() + value.len() + 1);
    k.push_str(id_type);
    k.push('\u{1f}');
    k.push_str(value);
    k
}

/// A cell of a computed-trait column as JSON (times as RFC 3339 text, lists as
/// arrays).
fn json_of(s: &ScalarValue) -> Value {
    if s.is_null() {
        return Value::Null;
    }
    match s {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Float64(Some(x)) => {
            serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number)
        }
        ScalarValue::Float32(Some(x)) => {
            serde_json::Number::from_f64(f64::from(*x)).map_or(Value::Null, Value::Number)
        }
        ScalarValue::Int64(Some(x)) => Value::from(*x),
        ScalarValue::Int32(Some(x)) => Value::from(*x),
        ScalarValue::Int16(Some(x)) => Value::from(*x),
        ScalarValue::Int8(Some(x)) => Value::from(*x),
        ScalarValue::UInt64(Some(x)) => Value::from(*x),
        ScalarValue::UInt32(Some(x)) => Value::from(*x),
        ScalarValue::Utf8(Some(t))
        | ScalarValue::LargeUtf8(Some(t))
        | ScalarValue::Utf8View(Some(t)) => Value::String(t.clone()),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Value::String(rfc3339(*us)),
        ScalarValue::List(list) => list_json(list.as_ref()),
        ScalarValue::LargeList(list) => list_json(list.as_ref()),
        other => Value::String(other.to_string()),
    }
}

fn list_json(list: &dyn Array) -> Value {
    use datafusion::arrow::array::AsArray;
    let Some(lists) = list
        .as_list_opt::<i32>()
        .map(|l| l.value(0))
        .or_else(|| list.as_list_opt::<i64>().map(|l| l.value(0)))
    else {
        return Value::Null;
    };
    Value::Array(
        (0..lists.len())
            .map(|i| {
                ScalarValue::try_from_array(&lists, i)
                    .map(|v| json_of(&v))
                    .unwrap_or(Value::Null)
            })
            .collect(),
    )
}

/// RFC 3339 text of microseconds since the epoch.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

fn optional_text(a: &datafusion::arrow::array::StringArray, row: usize) -> Option<String> {
    a.is_valid(row).then(|| a.value(row).to_owned())
}

fn optional_int(a: &datafusion::arrow::array::Int64Array, row: usize) -> Option<i64> {
    a.is_valid(row).then(|| a.value(row))
}

impl Snapshot {
    /// Reads the latest snapshot of the lake. `descriptions` are the segments'
    /// descriptions (from their files); `filters` the row filters whose admitted
    /// profiles [`Snapshot::visible`] answers for.
    pub async fn load(
        engine: &Engine,
        descriptions: &HashMap<String, String>,
        filters: &[Arc<str>],
    ) -> Result<Snapshot> {
        Snapshot::load_at(engine, descriptions, filters, None).await
    }

    /// [`Snapshot::load`] of the lake as it was at `at` (microseconds since the epoch):
    /// every table at its latest version committed then.
    pub async fn load_at(
        engine: &Engine,
        descriptions: &HashMap<String, String>,
        filters: &[Arc<str>],
        at: Option<i64>,
    ) -> Result<Snapshot> {
        let (ctx, versions) = engine.session_of_versions_at(&SOURCES, at).await?;
        let mut s = Snapshot {
            versions: Versions::of(&versions),
            loaded_at: chrono::Utc::now().timestamp_micros(),
            ..Snapshot::default()
        };
        let v = s.versions;
        if v.profiles.is_some() {
            s.load_profiles(&ctx).await?;
        }
        if v.identity_map.is_some() {
            s.load_identifiers(&ctx).await?;
        }
        if v.profile_merges.is_some() {
            s.load_merges(&ctx).await?;
        }
        if v.scores.is_some() {
            s.load_scores(&ctx).await?;
        }
        if v.profiles.is_some() {
            s.load_consent(engine, at).await?;
        }
        s.load_segments(
            &ctx,
            v.audience_membership.is_some(),
            v.segment_refreshes.is_some(),
            descriptions,
        )
        .await?;
        if v.profiles.is_some() {
            s.load_filters(&ctx, filters).await?;
        }
        Ok(s)
    }

    async fn load_profiles(&mut self, ctx: &SessionContext) -> Result<()> {
        let base = profiles_base_schema();
        for batch in collect(ctx, "SELECT * FROM profiles").await? {
            let pid = strings(&batch, "profile_id")?;
            let (first, last) = (int64s(&batch, "first_seen")?, int64s(&batch, "last_seen")?);
            let (user, email, phone) = (
                strings(&batch, "user_id")?,
                strings(&batch, "email")?,
                strings(&batch, "phone")?,
            );
            let traits = strings(&batch, "traits")?;
            let schema = batch.schema();
            let computed: Vec<(&String, &Arc<dyn Array>)> = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .filter(|(f, _)| base.field_with_name(f.name()).is_err())
                .map(|(f, c)| (f.name(), c))
                .collect();
            for row in 0..batch.num_rows() {
                let traits = traits
                    .is_valid(row)
                    .then(|| serde_json::from_str::<Value>(traits.value(row)).ok())
                    .flatten()
                    .and_then(|v| match v {
                        Value::Object(m) => Some(m),
                        _ => None,
                    })
                    .unwrap_or_default();
                let mut values = Map::new();
                for (name, col) in &computed {
                    let v = ScalarValue::try_from_array(col, row).map_err(|e| {
                        tessera_engine::EngineError::Column {
                            column: format!("profiles.{name}"),
                            message: e.to_string(),
                        }
                    })?;
                    values.insert((*name).clone(), json_of(&v));
                }
                let id = pid.value(row).to_owned();
                self.by_profile_id
                    .insert(id.clone(), self.profiles.len() as u32);
                self.profiles.push(Profile {
                    profile_id: id,
                    first_seen: optional_int(&first, row),
                    last_seen: optional_int(&last, row),
                    user_id: optional_text(&user, row),
                    email: optional_text(&email, row),
                    phone: optional_text(&phone, row),
                    traits,
                    computed: values,
                    ..Profile::default()
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
        self.profiles.push(Profile {
            profile_id: profile_id.to_owned(),
            ..Profile::default()
        });
        i
    }

    async fn load_identifiers(&mut self, ctx: &SessionContext) -> Result<()> {
        let mut types = BTreeSet::new();
        for batch in collect(
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
                    .push(ProfileIdentifier {
                        id_type: id_type.to_owned(),
                        value: v.value(row).to_owned(),
                        first_seen: optional_int(&first, row),
                        last_seen: optional_int(&last, row),
                    });
            }
        }
        for p in &mut self.profiles {
            p.identifiers.sort_by(|a, b| {
                (a.first_seen, &a.id_type, &a.value).cmp(&(b.first_seen, &b.id_type, &b.value))
            });
        }
        self.types = types.into_iter().collect();
        Ok(())
    }

    async fn load_merges(&mut self, ctx: &SessionContext) -> Result<()> {
        let mut into: HashMap<String, String> = HashMap::new();
        let mut merges = Vec::new();
        for batch in collect(
            ctx,
            "SELECT from_profile_id, into_profile_id, CAST(merged_at AS BIGINT) AS merged_at, rule, a_type, a_value, b_type, b_value \
             FROM profile_merges ORDER BY merged_at, from_profile_id",
        )
        .await?
        {
            let (from, to) = (
                strings(&batch, "from_profile_id")?,
                strings(&batch, "into_profile_id")?,
            );
            let at = int64s(&batch, "merged_at")?;
            let (rule, at_, av, bt, bv) = (
                strings(&batch, "rule")?,
                strings(&batch, "a_type")?,
                strings(&batch, "a_value")?,
                strings(&batch, "b_type")?,
                strings(&batch, "b_value")?,
            );
            for row in 0..batch.num_rows() {
                into.insert(from.value(row).to_owned(), to.value(row).to_owned());
                merges.push(Merge {
                    from_profile_id: from.value(row).to_owned(),
                    into_profile_id: to.value(row).to_owned(),
                    merged_at: at.value(row),
                    rule: optional_text(&rule, row),
                    a_type: optional_text(&at_, row),
                    a_value: optional_text(&av, row),
                    b_type: optional_text(&bt, row),
                    b_value: optional_text(&bv, row),
                });
            }
        }
        // Follow each chain to a current profile (bounded: a cycle cannot loop).
        let survivor = |from: &str| {
            let mut at = from;
            let mut hops = 0;
            while let Some(next) = into.get(at) {
                at = next;
                hops += 1;
                if hops > into.len() {
                    break;
                }
            }
            at.to_owned()
        };
        for m in merges {
            let end = survivor(&m.from_profile_id);
            if let Some(&i) = self.by_profile_id.get(&end) {
                if !self.by_profile_id.contains_key(&m.from_profile_id) {
                    self.merged.insert(m.from_profile_id.clone(), i);
                }
                self.profiles[i as usize].merges.push(m);
            }
        }
        Ok(())
    }

    async fn load_scores(&mut self, ctx: &SessionContext) -> Result<()> {
        for batch in collect(
            ctx,
            "SELECT profile_id, model, score, value, version, CAST(trained_at AS BIGINT) AS trained_at FROM scores",
        )
        .await?
        {
            let (pid, model, score) = (
                strings(&batch, "profile_id")?,
                strings(&batch, "model")?,
                strings(&batch, "score")?,
            );
            let value = float64s(&batch, "value")?;
            let (version, trained) = (int64s(&batch, "version")?, int64s(&batch, "trained_at")?);
            for row in 0..batch.num_rows() {
                if let Some(&i) = self.by_profile_id.get(pid.value(row)) {
                    self.profiles[i as usize].scores.push(Score {
                        model: model.value(row).to_owned(),
                        score: score.value(row).to_owned(),
                        value: value.value(row),
                        version: version.value(row),
                        trained_at: trained.value(row),
                    });
                }
            }
        }
        for p in &mut self.profiles {
            p.scores
                .sort_by(|a, b| (&a.model, &a.score).cmp(&(&b.model, &b.score)));
        }
        Ok(())
    }

    /// Consent is rebuilt by every stitching run, which also changes `identity_map`
    /// and `profiles`: their versions stand for it.
    async fn load_consent(&mut self, engine: &Engine, at: Option<i64>) -> Result<()> {
        let (ctx, _) = engine.session_of_versions_at(&[CONSENT], at).await?;
        if !ctx.table_exist(CONSENT)? {
            return Ok(());
        }
        for batch in collect(
            &ctx,
            "SELECT profile_id, category, CAST(granted AS VARCHAR) AS granted FROM consent",
        )
        .await?
        {
            let (pid, category, granted) = (
                strings(&batch, "profile_id")?,
                strings(&batch, "category")?,
                strings(&batch, "granted")?,
            );
            for row in 0..batch.num_rows() {
                if let Some(&i) = self.by_profile_id.get(pid.value(row)) {
                    let prefs = self.profiles[i as usize].consent.get_or_insert_default();
                    if category.is_valid(row) {
                        prefs.insert(category.value(row).to_owned(), granted.value(row) == "true");
                    }
                }
            }
        }
        Ok(())
    }

    async fn load_segments(
        &mut self,
        ctx: &SessionContext,
        has_members: bool,
        has_refreshes: bool,
        descriptions: &HashMap<String, String>,
    ) -> Result<()> {
        let mut infos: BTreeMap<String, SegmentEntry> = BTreeMap::new();
        if has_refreshes {
            for batch in collect(
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
                        info.refreshed_at = Some(at.value(row));
                        info.size = members.value(row);
                    }
                }
            }
        }
        let mut members: BTreeMap<String, Vec<(u32, i64)>> = BTreeMap::new();
        if has_members {
            for batch in collect(
                ctx,
                "SELECT segment, profile_id, since FROM audience_membership",
            )
            .await?
            {
                let (seg, pid) = (strings(&batch, "segment")?, strings(&batch, "profile_id")?);
                let since = int64s(&batch, "since")?;
                for row in 0..batch.num_rows() {
                    let i = self.profile_slot(pid.value(row));
                    let name = seg.value(row);
                    match members.get_mut(name) {
                        Some(list) => list.push((i, since.value(row))),
                        None => {
                            members.insert(name.to_owned(), vec![(i, since.value(row))]);
                        }
                    }
                }
            }
        }
        for name in members.keys() {
            infos.entry(name.clone()).or_insert_with(|| SegmentEntry {
                name: name.clone(),
                ..SegmentEntry::default()
            });
        }
        for (name, mut info) in infos {
            let mut list = members.remove(&name).unwrap_or_default();
            for &(i, since) in &list {
                self.profiles[i as usize].segments.push(Membership {
                    segment: name.clone(),
                    since,
                });
            }
            list.sort_by(|a, b| {
                self.profiles[a.0 as usize]
                    .profile_id
                    .cmp(&self.profiles[b.0 as usize].profile_id)
            });
            info.description = descriptions.get(&name).cloned().unwrap_or_default();
            info.members = list.into_iter().map(|(i, _)| i).collect();
            self.segment_by_name.insert(name, self.segments.len());
            self.segments.push(info);
        }
        for p in &mut self.profiles {
            p.segments.sort_by(|a, b| a.segment.cmp(&b.segment));
        }
        Ok(())
    }

    /// Which profiles each row filter admits (evaluated over `profiles`, as in SQL).
    async fn load_filters(&mut self, ctx: &SessionContext, filters: &[Arc<str>]) -> Result<()> {
        for filter in filters {
            let mut admitted = vec![false; self.profiles.len()];
            let ids: Vec<RecordBatch> = tessera_engine::access::admitted(ctx, filter)
                .await?
                .select_columns(&["profile_id"])
                .map_err(tessera_engine::EngineError::sql)?
                .collect()
                .await
                .map_err(tessera_engine::EngineError::sql)?;
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

    /// A snapshot of just `profiles` (no lake, no segments): for tools and tests that
    /// build profiles themselves.
    pub fn of_profiles(profiles: Vec<Profile>) -> Snapshot {
        let mut s = Snapshot {
            loaded_at: chrono::Utc::now().timestamp_micros(),
            ..Snapshot::default()
        };
        let mut types = BTreeSet::new();
        for (i, p) in profiles.iter().enumerate() {
            s.by_profile_id.insert(p.profile_id.clone(), i as u32);
            for id in &p.identifiers {
                types.insert(id.id_type.clone());
                s.keys.insert(key(&id.id_type, &id.value), i as u32);
            }
        }
        s.types = types.into_iter().collect();
        s.profiles = profiles;
        s
    }

    /// The table versions it was read from.
    pub fn versions(&self) -> Versions {
        self.versions
    }

    /// When it was read (microseconds since the epoch).
    pub fn loaded_at(&self) -> i64 {
        self.loaded_at
    }

    /// Profiles in the snapshot.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether it holds no profile.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// Identifiers in the snapshot.
    pub fn identifiers(&self) -> usize {
        self.keys.len()
    }

    pub fn profile(&self, i: u32) -> &Profile {
        &self.profiles[i as usize]
    }

    pub fn segments(&self) -> &[SegmentEntry] {
        &self.segments
    }

    pub fn segment(&self, name: &str) -> Option<&SegmentEntry> {
        self.segment_by_name.get(name).map(|&i| &self.segments[i])
    }

    /// The `n` profiles with the most identifiers that a caller with row filter `rows`
    /// may see, most first (ties by profile id): the console's largest profiles.
    pub fn largest(&self, n: usize, rows: Option<&str>) -> Vec<u32> {
        let mut all: Vec<u32> = (0..self.profiles.len() as u32)
            .filter(|&i| self.visible(i, rows))
            .collect();
        // Compared by reference: a key owning the profile id allocated per comparison.
        let order = |a: &u32, b: &u32| {
            let (a, b) = (&self.profiles[*a as usize], &self.profiles[*b as usize]);
            b.identifiers
                .len()
                .cmp(&a.identifiers.len())
                .then_with(|| a.profile_id.cmp(&b.profile_id))
        };
        if all.len() > n {
            all.select_nth_unstable_by(n, order);
            all.truncate(n);
        }
        all.sort_by(order);
        all
    }

    /// Members of segments `a` and `b` (visible under `rows`) at their latest refresh:
    /// `(in a, in b, in both)`; `None` when either segment is unknown.
    pub fn overlap(&self, a: &str, b: &str, rows: Option<&str>) -> Option<(u64, u64, u64)> {
        let (a, b) = (self.segment(a)?, self.segment(b)?);
        let seen = |m: &&u32| self.visible(**m, rows);
        let (mut i, mut j, mut both) = (0, 0, 0u64);
        let (am, bm) = (&a.members, &b.members);
        while i < am.len() && j < bm.len() {
            match am[i].cmp(&bm[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    if self.visible(am[i], rows) {
                        both += 1;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        Some((
            am.iter().filter(seen).count() as u64,
            bm.iter().filter(seen).count() as u64,
            both,
        ))
    }

    /// How many profiles (visible under `rows`) hold how many identifiers, in the
    /// buckets 1, 2, 3, 4, 5, 6–10, 11–20, 21–50, 51–100, over 100: `(label, profiles)`.
    pub fn identifier_histogram(&self, rows: Option<&str>) -> Vec<(&'static str, u64)> {
        const BUCKETS: [(usize, &str); 10] = [
            (1, "1"),
            (2, "2"),
            (3, "3"),
            (4, "4"),
            (5, "5"),
            (10, "6-10"),
            (20, "11-20"),
            (50, "21-50"),
            (100, "51-100"),
            (usize::MAX, "over 100"),
        ];
        let mut counts = [0u64; BUCKETS.len()];
        for (i, p) in self.profiles.iter().enumerate() {
            if !self.visible(i as u32, rows) {
                continue;
            }
            let n = p.identifiers.len();
            if let Some(b) = BUCKETS.iter().position(|(up_to, _)| n <= *up_to) {
                counts[b] += 1;
            }
        }
        BUCKETS
            .iter()
            .zip(counts)
            .map(|((_, label), c)| (*label, c))
            .collect()
    }

    /// Whether a caller with row filter `rows` may see profile `i` (every caller
    /// without a filter may; a filter the snapshot was not loaded with admits none).
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

    /// Resolves an identifier: normalized as stitching normalizes it, a merged-away
    /// profile id followed to its survivor. Errors say what is wrong with the
    /// identifier (empty, invalid, unknown type).
    pub fn resolve(&self, id_type: &str, value: &str) -> Result<Resolved> {
        let id_type = id_type.trim().to_lowercase();
        if id_type.is_empty() || value.trim().is_empty() {
            return Err(IdentityError::BadIdentifier(
                "an identifier needs a type and a value, for example email:jane@example.com".into(),
            ));
        }
        if id_type == "profile_id" || id_type == "profile" {
            let value = value.trim().to_owned();
            if let Some(&i) = self.by_profile_id.get(&value) {
                return Ok(Resolved {
                    id_type: "profile_id".into(),
                    value,
                    profile: Some(i),
                    merged_from: None,
                });
            }
            let merged = self.merged.get(&value).copied();
            return Ok(Resolved {
                id_type: "profile_id".into(),
                merged_from: merged.map(|_| value.clone()),
                value,
                profile: merged,
            });
        }
        let Some(normalized) = normalize_identifier(&id_type, value) else {
            return Err(IdentityError::BadIdentifier(format!(
                "{value:?} is not a valid {id_type}"
            )));
        };
        if !self.types.is_empty() && self.types.binary_search(&id_type).is_err() {
            return Err(IdentityError::BadIdentifier(format!(
                "unknown identifier type {id_type:?}: known types are profile_id, {}",
                self.types.join(", ")
            )));
        }
        let profile = self.keys.get(&key(&id_type, &normalized)).copied();
        Ok(Resolved {
            id_type,
            value: normalized,
            profile,
            merged_from: None,
        })
    }
}

#[cfg(test)]
mod tests;
