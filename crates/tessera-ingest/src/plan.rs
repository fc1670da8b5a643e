//! Tracking plans: per source, which events and properties are expected, with which
//! types, and what happens to an event that breaks the plan.
//!
//! A plan is `sql/plans/<source>.toml` (the file's name is the source's). Its rules
//! name JSON Schema keywords, and an event's rule may instead point at a JSON Schema
//! file (`schema = "order_completed.json"`, the properties' schema or a whole-event
//! schema as Segment Protocols exports it):
//!
//! ```toml
//! mode = "allow"              # allow: store the event, record the violation; block: quarantine it
//! unplanned_events = "allow"  # track events the plan does not name: allow | block | ignore
//!
//! [track."Order Completed"]
//! mode = "block"
//! additional_properties = false
//! properties.order_id = { type = "string", required = true }
//! properties.revenue = { type = "number", minimum = 0 }
//! properties.currency = { type = "string", enum = ["USD", "EUR"] }
//!
//! [identify]
//! traits.email = { type = "string", pattern = "^[^@]+@[^@]+$" }
//! ```
//!
//! Rules apply to the top-level properties (traits for `identify` and `group`); nested
//! rules are refused rather than silently unchecked. Every violation is counted in
//! `plan_violations` (never with the offending value: properties may hold personal
//! data); a blocked event goes to `quarantine` with code `tracking_plan`, from where
//! `tessera quarantine replay` lands it once the plan or the producer is fixed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use serde::Deserialize;
use serde_json::Value;
use tessera_core::event::{Event, EventType};

/// The reason code of events a plan blocked (in `quarantine`).
pub const BLOCKED_CODE: &str = "tracking_plan";

/// A plan that cannot be used, naming its file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("tracking plan {}: {message}", file.display())]
pub struct PlanError {
    pub file: PathBuf,
    pub message: String,
}

/// What happens to an event that breaks its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Store it and record the violation.
    #[default]
    Allow,
    /// Keep it in `quarantine` (and record the violation).
    Block,
}

/// What happens to a track event the plan does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unplanned {
    #[default]
    Allow,
    Block,
    /// Neither recorded nor blocked.
    Ignore,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    unplanned_events: Unplanned,
    #[serde(default)]
    track: BTreeMap<String, RuleFile>,
    identify: Option<RuleFile>,
    group: Option<RuleFile>,
    page: Option<RuleFile>,
    screen: Option<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    mode: Option<Mode>,
    #[serde(default = "yes")]
    additional_properties: bool,
    #[serde(default, alias = "traits")]
    properties: BTreeMap<String, Value>,
    /// A JSON Schema file (relative to the plan) instead of `properties`.
    schema: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

fn yes() -> bool {
    true
}

/// JSON types a property may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
}

impl JsonType {
    fn parse(name: &str) -> Option<JsonType> {
        Some(match name {
            "string" => JsonType::String,
            "number" => JsonType::Number,
            "integer" => JsonType::Integer,
            "boolean" => JsonType::Boolean,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "null" => JsonType::Null,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Null => "null",
        }
    }

    fn of(v: &Value) -> JsonType {
        match v {
            Value::String(_) => JsonType::String,
            Value::Number(n) if n.is_i64() || n.is_u64() => JsonType::Integer,
            Value::Number(_) => JsonType::Number,
            Value::Bool(_) => JsonType::Boolean,
            Value::Object(_) => JsonType::Object,
            Value::Array(_) => JsonType::Array,
            Value::Null => JsonType::Null,
        }
    }

    fn admits(self, actual: JsonType) -> bool {
        self == actual || (self == JsonType::Number && actual == JsonType::Integer)
    }
}

/// The rule of one property.
#[derive(Debug, Clone)]
struct PropertyRule {
    /// Empty: any type.
    types: Vec<JsonType>,
    required: bool,
    allowed: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    pattern: Option<regex::Regex>,
    date_time: bool,
}

/// The rule of one event.
#[derive(Debug, Clone)]
struct EventRule {
    mode: Mode,
    additional: bool,
    properties: Vec<(String, PropertyRule)>,
}

/// One source's plan, ready to check events.
#[derive(Debug, Clone)]
pub struct TrackingPlan {
    unplanned: Unplanned,
    track: HashMap<String, EventRule>,
    /// Rules of `identify`, `group`, `page`, `screen`.
    others: HashMap<&'static str, EventRule>,
}

/// One way an event broke its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property concerned; none for an unplanned event.
    pub property: Option<String>,
    pub code: &'static str,
    pub message: String,
}

/// The verdict on an event that broke its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The track event's name, or the type (`identify`, `page`, ...).
    pub event: String,
    pub violations: Vec<Violation>,
    /// Whether the event is kept in `quarantine` instead of stored.
    pub blocked: bool,
}

impl Check {
    /// The `quarantine` message of a blocked event.
    pub fn message(&self, source: &str) -> String {
        let mut text: Vec<&str> = self
            .violations
            .iter()
            .take(3)
            .map(|v| v.message.as_str())
            .collect();
        let more = self.violations.len().saturating_sub(3);
        let tail = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        text.dedup();
        format!(
            "blocked by the tracking plan of source {source:?} (sql/plans/{source}.toml): {}{tail}",
            text.join("; ")
        )
    }
}

fn bad(file: &Path, message: impl Into<String>) -> PlanError {
    PlanError {
        file: file.to_owned(),
        message: message.into(),
    }
}

/// Keywords of a property rule that are read; others are refused, not ignored.
const PROPERTY_KEYWORDS: &[&str] = &[
    "type",
    "required",
    "enum",
    "minimum",
    "maximum",
    "pattern",
    "format",
    "description",
    "title",
    "examples",
    "$comment",
];

fn property_rule(file: &Path, at: &str, spec: &Value) -> Result<PropertyRule, PlanError> {
    let Value::Object(spec) = spec else {
        return Err(bad(
            file,
            format!("{at}: a property's rule is a table such as {{ type = \"string\" }}"),
        ));
    };
    if let Some(k) = spec
        .keys()
        .find(|k| !PROPERTY_KEYWORDS.contains(&k.as_str()))
    {
        let hint = if matches!(k.as_str(), "properties" | "items" | "required_properties") {
            " (rules for nested properties are not supported: check the property's type only)"
        } else {
            ""
        };
        return Err(bad(
            file,
            format!(
                "{at}: unknown keyword {k:?}{hint}; a rule takes {}",
                PROPERTY_KEYWORDS[..7].join(", ")
            ),
        ));
    }
    let types = match spec.get("type") {
        None => Vec::new(),
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(file, format!("{at}.type: a list of type names")))?,
        Some(_) => {
            return Err(bad(
                file,
                format!("{at}.type: a type name or a list of them"),
            ));
        }
    };
    let types = types
        .iter()
        .map(|t| {
            JsonType::parse(t).ok_or_else(|| {
                bad(
                    file,
                    format!(
                        "{at}.type: {t:?} is not a JSON type (string, number, integer, boolean, \
                         object, array, null)"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let number = |key: &str| -> Result<Option<f64>, PlanError> {
        match spec.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(file, format!("{at}.{key}: a number"))),
        }
    };
    let pattern = match spec.get("pattern") {
        None => None,
        Some(Value::String(p)) => Some(
            regex::Regex::new(p)
                .map_err(|e| bad(file, format!("{at}.pattern: not a regular expression: {e}")))?,
        ),
        Some(_) => return Err(bad(file, format!("{at}.pattern: a regular expression"))),
    };
    let date_time = match spec.get("format") {
        None => false,
        Some(Value::String(f)) if f == "date-time" => true,
        Some(f) => {
            return Err(bad(
                file,
                format!("{at}.format: {f} is not supported (only \"date-time\")"),
            ));
        }
    };
    let allowed = match spec.get("enum") {
        None => None,
        Some(Value::Array(values)) if !values.is_empty() => Some(values.clone()),
        Some(_) => return Err(bad(file, format!("{at}.enum: a non-empty list of values"))),
    };
    let required = match spec.get("required") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad(file, format!("{at}.required: true or false"))),
    };
    Ok(PropertyRule {
        types,
        required,
        allowed,
        minimum: number("minimum")?,
        maximum: number("maximum")?,
        pattern,
        date_time,
    })
}

/// A JSON Schema of an event's properties (or of a whole event, as Segment Protocols
/// exports them: `properties.properties` holds the properties' schema) as the rule's
/// `properties` and `additional_properties`.
fn from_json_schema(
    file: &Path,
    schema: &Value,
) -> Result<(BTreeMap<String, Value>, bool), PlanError> {
    let mut schema = schema;
    if let Some(inner) = schema.pointer("/properties/properties")
        && (inner.get("properties").is_some() || inner.get("type") == Some(&Value::from("object")))
    {
        schema = inner;
    }
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Err(bad(file, "a JSON Schema with \"properties\" (an object)"));
    };
    let required: Vec<&str> = match schema.get("required") {
        None => Vec::new(),
        Some(Value::Array(r)) => r.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(bad(file, "\"required\": a list of property names")),
    };
    let additional = match schema.get("additionalProperties") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(bad(
                file,
                "\"additionalProperties\": true or false (schemas for extra properties are not supported)",
            ));
        }
    };
    let mut out = BTreeMap::new();
    for (name, spec) in props {
        let mut spec = spec.clone();
        if let Value::Object(m) = &mut spec
            && required.contains(&name.as_str())
        {
            m.insert("required".into(), Value::Bool(true));
        }
        out.insert(name.clone(), spec);
    }
    Ok((out, additional))
}

impl TrackingPlan {
    /// Parses a plan's TOML text; `file` names it in errors and anchors `schema` paths.
    pub fn parse(text: &str, file: &Path) -> Result<TrackingPlan, PlanError> {
        let plan: PlanFile = toml::from_str(text).map_err(|e| bad(file, e.to_string()))?;
        let rule = |at: &str, r: RuleFile| -> Result<EventRule, PlanError> {
            let (properties, additional) = match &r.schema {
                Some(path) => {
                    if !r.properties.is_empty() {
                        return Err(bad(
                            file,
                            format!("{at}: `schema` or `properties`, not both"),
                        ));
                    }
                    let schema_file = file.parent().unwrap_or(Path::new(".")).join(path);
                    let text = std::fs::read_to_string(&schema_file).map_err(|e| {
                        bad(
                            file,
                            format!("{at}.schema: reading {}: {e}", schema_file.display()),
                        )
                    })?;
                    let schema: Value = serde_json::from_str(&text)
                        .map_err(|e| bad(&schema_file, format!("not JSON: {e}")))?;
                    from_json_schema(&schema_file, &schema)?
                }
                None => (r.properties, r.additional_properties),
            };
            let properties = properties
                .iter()
                .map(|(name, spec)| {
                    Ok((
                        name.clone(),
                        property_rule(file, &format!("{at}.properties.{name}"), spec)?,
                    ))
                })
                .collect::<Result<Vec<_>, PlanError>>()?;
            let _ = r.description;
            Ok(EventRule {
                mode: r.mode.unwrap_or(plan.mode),
                additional,
                properties,
            })
        };
        let mut track = HashMap::new();
        for (name, r) in plan.track {
            let compiled = rule(&format!("track.{name:?}"), r)?;
            track.insert(name, compiled);
        }
        let mut others = HashMap::new();
        for (kind, r) in [
            ("identify", plan.identify),
            ("group", plan.group),
            ("page", plan.page),
            ("screen", plan.screen),
        ] {
            if let Some(r) = r {
                others.insert(kind, rule(kind, r)?);
            }
        }
        Ok(TrackingPlan {
            unplanned: plan.unplanned_events,
            track,
            others,
        })
    }

    /// Checks one event; `None` when it keeps the plan.
    pub fn check(&self, event: &Event<'_>) -> Option<Check> {
        let (name, rule, json) = match event.event_type {
            EventType::Track => {
                let name = event.event.as_deref().unwrap_or_default();
                match self.track.get(name) {
                    Some(rule) => (name.to_owned(), rule, event.properties.as_deref()),
                    None if self.unplanned == Unplanned::Ignore => return None,
                    None => {
                        return Some(Check {
                            event: name.to_owned(),
                            violations: vec![Violation {
                                property: None,
                                code: "unplanned_event",
                                message: format!("event {name:?} is not in the plan"),
                            }],
                            blocked: self.unplanned == Unplanned::Block,
                        });
                    }
                }
            }
            EventType::Alias => return None,
            t => {
                let rule = self.others.get(t.as_str())?;
                let json = match t {
                    EventType::Identify | EventType::Group => event.traits.as_deref(),
                    _ => event.properties.as_deref(),
                };
                (t.as_str().to_owned(), rule, json)
            }
        };
        let object = json
            .and_then(|t| serde_json::from_str::<serde_json::Map<String, Value>>(t).ok())
            .unwrap_or_default();
        let mut violations = Vec::new();
        for (key, r) in &rule.properties {
            let v = |code, message: String| Violation {
                property: Some(key.clone()),
                code,
                message,
            };
            let Some(value) = object.get(key) else {
                if r.required {
                    violations.push(v(
                        "missing_property",
                        format!("required property {key:?} of {name:?} is missing"),
                    ));
                }
                continue;
            };
            let actual = JsonType::of(value);
            if !r.types.is_empty() && !r.types.iter().any(|t| t.admits(actual)) {
                let expected: Vec<&str> = r.types.iter().map(|t| t.name()).collect();
                violations.push(v(
                    "wrong_type",
                    format!(
                        "property {key:?} of {name:?} is {} {}, the plan says {}",
                        if actual == JsonType::Integer
                            || actual == JsonType::Array
                            || actual == JsonType::Object
                        {
                            "an"
                        } else {
                            "a"
                        },
                        actual.name(),
                        expected.join(" or ")
                    ),
                ));
                continue;
            }
            if let Some(allowed) = &r.allowed
                && !allowed.iter().any(|a| same_value(a, value))
            {
                violations.push(v(
                    "not_allowed_value",
                    format!(
                        "property {key:?} of {name:?} is none of the plan's {} values",
                        allowed.len()
                    ),
                ));
            }
            if let Some(n) = value.as_f64()
                && (r.minimum.is_some_and(|m| n < m) || r.maximum.is_some_and(|m| n > m))
            {
                violations.push(v(
                    "out_of_range",
                    format!(
                        "property {key:?} of {name:?} is outside the plan's range [{}, {}]",
                        r.minimum.map_or("-".into(), |m| m.to_string()),
                        r.maximum.map_or("-".into(), |m| m.to_string())
                    ),
                ));
            }
            if let Some(s) = value.as_str() {
                if let Some(p) = &r.pattern
                    && !p.is_match(s)
                {
                    violations.push(v(
                        "pattern_mismatch",
                        format!(
                            "property {key:?} of {name:?} does not match the plan's pattern {}",
                            p.as_str()
                        ),
                    ));
                }
                if r.date_time && chrono::DateTime::parse_from_rfc3339(s).is_err() {
                    violations.push(v(
                        "pattern_mismatch",
                        format!("property {key:?} of {name:?} is not an RFC 3339 date-time"),
                    ));
                }
            }
        }
        if !rule.additional {
            for key in object.keys() {
                if !rule.properties.iter().any(|(k, _)| k == key) {
                    violations.push(Violation {
                        property: Some(key.clone()),
                        code: "unplanned_property",
                        message: format!("property {key:?} is not in the plan of {name:?}"),
                    });
                }
            }
        }
        (!violations.is_empty()).then(|| Check {
            event: name,
            violations,
            blocked: rule.mode == Mode::Block,
        })
    }
}

/// Equality of JSON values where `1` and `1.0` are the same number.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The plans of a project, by source.
#[derive(Debug, Clone, Default)]
pub struct TrackingPlans {
    by_source: HashMap<String, Arc<TrackingPlan>>,
}

impl TrackingPlans {
    /// Reads every `<source>.toml` of `dir` (usually `sql/plans`); none when the folder
    /// does not exist.
    pub fn load(dir: &Path) -> Result<TrackingPlans, PlanError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TrackingPlans::default());
            }
            Err(e) => return Err(bad(dir, format!("listing the folder: {e}"))),
        };
        let mut by_source = HashMap::new();
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for file in files {
            let source = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            if !tessera_core::config::valid_name(&source) {
                return Err(bad(
                    &file,
                    "the file is named after its source: letters, digits, '_' and '-' only",
                ));
            }
            let text = std::fs::read_to_string(&file).map_err(|e| bad(&file, e.to_string()))?;
            by_source.insert(source, Arc::new(TrackingPlan::parse(&text, &file)?));
        }
        Ok(TrackingPlans { by_source })
    }

    /// The plan of `source`, if it has one.
    pub fn get(&self, source: &str) -> Option<&Arc<TrackingPlan>> {
        self.by_source.get(source)
    }

    /// The sources that have a plan, sorted.
    pub fn sources(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.by_source.keys().map(String::as_str).collect();
        s.sort_unstable();
        s
    }
}

type CountKey = (i64, String, String, Option<String>, String, bool);

/// Violations counted per hour, source, event, property, code and verdict: the rows of
/// `plan_violations`.
#[derive(Debug, Default)]
pub struct ViolationCounts {
    counts: BTreeMap<CountKey, (String, i64)>,
}

const HOUR_MICROS: i64 = 3_600_000_000;

impl ViolationCounts {
    /// Counts the violations of one event that arrived at `received_at` from `source`.
    pub fn add(&mut self, received_at: i64, source: &str, check: &Check) {
        let hour = received_at.div_euclid(HOUR_MICROS) * HOUR_MICROS;
        for v in &check.violations {
            let key = (
                hour,
                source.to_owned(),
                check.event.clone(),
                v.property.clone(),
                v.code.to_owned(),
                check.blocked,
            );
            self.counts
                .entry(key)
                .or_insert_with(|| (v.message.clone(), 0))
                .1 += 1;
        }
    }

    /// Adds the rows of a `plan_violations` batch.
    pub fn add_rows(&mut self, batch: &RecordBatch) {
        let hour = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        let text = |i: usize| batch.column(i).as_string::<i32>();
        let (source, event, property, code, message) =
            (text(1), text(2), text(3), text(4), text(5));
        let blocked = batch.column(6).as_boolean();
        let events = batch.column(7).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let key = (
                hour.value(i),
                source.value(i).to_owned(),
                event.value(i).to_owned(),
                property.is_valid(i).then(|| property.value(i).to_owned()),
                code.value(i).to_owned(),
                blocked.value(i),
            );
            self.counts
                .entry(key)
                .or_insert_with(|| (message.value(i).to_owned(), 0))
                .1 += events.value(i);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Adds the counts of `other`.
    pub fn merge(&mut self, other: ViolationCounts) {
        for (key, (message, n)) in other.counts {
            self.counts.entry(key).or_insert((message, 0)).1 += n;
        }
    }

    /// The counts as `plan_violations` rows; empties the counter.
    pub fn finish(&mut self) -> RecordBatch {
        let counts = std::mem::take(&mut self.counts);
        let mut hour = Vec::with_capacity(counts.len());
        let (mut source, mut event, mut property, mut code, mut message) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut blocked, mut events) = (Vec::new(), Vec::new());
        for ((h, s, e, p, c, b), (m, n)) in counts {
            hour.push(h);
            source.push(s);
            event.push(e);
            property.push(p);
            code.push(c);
            blocked.push(b);
            message.push(m);
            events.push(n);
        }
        RecordBatch::try_new(
            tessera_core::schema::plan_violations_schema(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(hour).with_timezone("UTC")),
                Arc::new(StringArray::from(source)),
                Arc::new(StringArray::from(event)),
                Arc::new(StringArray::from(property)),
                Arc::new(StringArray::from(code)),
                Arc::new(StringArray::from(message)),
                Arc::new(BooleanArray::from(blocked)),
                Arc::new(Int64Array::from(events)),
            ],
        )
        .expect("plan_violations columns match the schema")
    }

    /// Many `plan_violations` batches as one, equal rows summed.
    pub fn combine(batches: &[RecordBatch]) -> RecordBatch {
        let mut c = ViolationCounts::default();
        for b in batches {
            c.add_rows(b);
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::event::{ParseContext, parse_event};

    const PLAN: &str = r#"
mode = "allow"
unplanned_events = "block"

[track."Order Completed"]
mode = "block"
additional_properties = false
properties.order_id = { type = "string", required = true }
properties.revenue = { type = "number", minimum = 0 }
properties.currency = { type = "string", enum = ["USD", "EUR"] }
properties.coupon = { type = ["string", "null"] }
properties.at = { type = "string", format = "date-time" }

[track."Product Viewed"]
properties.sku = { type = "string", pattern = "^SKU-[0-9]+$" }

[identify]
traits.email = { type = "string", required = true }
"#;

    fn plan() -> TrackingPlan {
        TrackingPlan::parse(PLAN, Path::new("sql/plans/web.toml")).unwrap()
    }

    fn check(json: &str) -> Option<Check> {
        let ctx = ParseContext::live(1_800_000_000_000_000, None);
        plan().check(&parse_event(json, &ctx).unwrap())
    }

    fn codes(c: &Option<Check>) -> Vec<(&str, Option<&str>)> {
        c.as_ref()
            .map(|c| {
                c.violations
                    .iter()
                    .map(|v| (v.code, v.property.as_deref()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn events_that_keep_the_plan_pass() {
        assert_eq!(
            check(
                r#"{"type":"track","userId":"u","event":"Order Completed","properties":{"order_id":"o1","revenue":12,"currency":"EUR","coupon":null,"at":"2026-01-01T00:00:00Z"}}"#
            ),
            None
        );
        assert_eq!(
            check(
                r#"{"type":"track","userId":"u","event":"Product Viewed","properties":{"sku":"SKU-12","other":1}}"#
            ),
            None,
            "extra properties are fine where the rule allows them"
        );
        assert_eq!(
            check(r#"{"type":"page","userId":"u","name":"Home"}"#),
            None,
            "a type without a rule is not checked"
        );
    }

    #[test]
    fn each_violation_class_is_named() {
        let c = check(
            r#"{"type":"track","userId":"u","event":"Order Completed","properties":{"revenue":"12","currency":"GBP","at":"yesterday","extra":true}}"#,
        );
        assert_eq!(
            codes(&c),
            [
                ("pattern_mismatch", Some("at")),
                ("not_allowed_value", Some("currency")),
                ("missing_property", Some("order_id")),
                ("wrong_type", Some("revenue")),
                ("unplanned_property", Some("extra")),
            ]
        );
        let c = c.unwrap();
        assert!(c.blocked, "the rule blocks");
        assert!(!c.message("web").contains("GBP"), "never the value");
        let c = check(
            r#"{"type":"track","userId":"u","event":"Order Completed","properties":{"order_id":"o","revenue":-1}}"#,
        );
        assert_eq!(codes(&c), [("out_of_range", Some("revenue"))]);
        let c = check(
            r#"{"type":"track","userId":"u","event":"Product Viewed","properties":{"sku":"x"}}"#,
        );
        assert_eq!(codes(&c), [("pattern_mismatch", Some("sku"))]);
        assert!(!c.unwrap().blocked, "the plan's default mode allows");
        let c = check(r#"{"type":"track","userId":"u","event":"Signed Up"}"#);
        assert_eq!(codes(&c), [("unplanned_event", None)]);
        assert!(c.unwrap().blocked);
        let c = check(r#"{"type":"identify","userId":"u","traits":{"name":"A"}}"#);
        assert_eq!(codes(&c), [("missing_property", Some("email"))]);
    }

    #[test]
    fn bad_plans_are_refused_naming_the_key() {
        let file = Path::new("sql/plans/web.toml");
        for (text, needle) in [
            ("mode = \"warn\"", "unknown variant"),
            (
                "[track.A]\nproperties.x = { type = \"text\" }",
                "not a JSON type",
            ),
            (
                "[track.A]\nproperties.x = { kind = \"string\" }",
                "unknown keyword \"kind\"",
            ),
            (
                "[track.A]\nproperties.x = { type = \"object\", properties = {} }",
                "nested properties are not supported",
            ),
            (
                "[track.A]\nproperties.x = { pattern = \"(\" }",
                "not a regular expression",
            ),
            ("[track.A]\nproperties.x = { enum = [] }", "non-empty list"),
            (
                "[track.A]\nproperties.x = { format = \"email\" }",
                "not supported",
            ),
            ("[track.A]\nschema = \"missing.json\"", "track.\"A\".schema"),
            ("[alias]\n", "unknown field"),
        ] {
            let e = TrackingPlan::parse(text, file).unwrap_err().to_string();
            assert!(
                e.contains("sql/plans/web.toml") && e.contains(needle),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn a_json_schema_per_event_is_read_as_segment_protocols_exports_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("order.json"),
            r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
               "properties":{"properties":{"type":"object","additionalProperties":false,
                 "required":["order_id"],
                 "properties":{"order_id":{"type":"string","description":"id"},"total":{"type":"number"}}}}}"#,
        )
        .unwrap();
        let file = dir.path().join("web.toml");
        let plan = TrackingPlan::parse(
            "[track.\"Order Completed\"]\nschema = \"order.json\"\nmode = \"block\"\n",
            &file,
        )
        .unwrap();
        let ctx = ParseContext::live(1_800_000_000_000_000, None);
        let e = parse_event(
            r#"{"type":"track","userId":"u","event":"Order Completed","properties":{"total":"x","more":1}}"#,
            &ctx,
        )
        .unwrap();
        let c = plan.check(&e).unwrap();
        let got: Vec<&str> = c.violations.iter().map(|v| v.code).collect();
        assert_eq!(
            got,
            ["missing_property", "wrong_type", "unplanned_property"]
        );
    }

    #[test]
    fn counts_sum_per_hour_event_property_and_code() {
        let p = plan();
        let ctx = ParseContext::live(1_800_000_000_000_000, None);
        let e = parse_event(r#"{"type":"track","userId":"u","event":"Signed Up"}"#, &ctx).unwrap();
        let c = p.check(&e).unwrap();
        let mut a = ViolationCounts::default();
        a.add(1_800_000_000_000_000, "web", &c);
        a.add(1_800_000_000_000_001, "web", &c);
        let mut b = ViolationCounts::default();
        b.add(1_800_000_000_000_002, "web", &c);
        let rows = ViolationCounts::combine(&[a.finish(), b.finish()]);
        assert_eq!(rows.num_rows(), 1);
        assert_eq!(rows.column(7).as_primitive::<Int64Type>().value(0), 3);
    }
}
