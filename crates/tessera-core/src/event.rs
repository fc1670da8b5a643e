//! The Segment event model: `identify`, `track`, `page`, `screen`, `group` and `alias`,
//! parsed from the JSON that Segment- and RudderStack-compatible SDKs send and that
//! Segment exports contain, validated with a precise reason when something is wrong.
//!
//! Parsing borrows from the input wherever it can: `properties`, `traits`, `context` and
//! `integrations` are kept as the exact JSON text the client sent (schemaless landing), so
//! a new property never needs a migration and nothing is lost in a round trip.
//!
//! Field names are accepted in Segment's camelCase (`userId`) and in the lake's
//! snake_case (`user_id`), so that mapping queries over CSV or Parquet can produce either.
//! Unknown top-level fields (`channel`, `_metadata`, `category`, ...) are kept, as a JSON
//! object, in the `extra` column.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The six Segment call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventType {
    /// Every type, in the order of the Segment spec.
    pub const ALL: [EventType; 6] = [
        EventType::Identify,
        EventType::Track,
        EventType::Page,
        EventType::Screen,
        EventType::Group,
        EventType::Alias,
    ];

    /// The lower-case name used on the wire and in the `type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }

    /// Parses a type name; case-insensitive, as some SDKs capitalise it.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was rejected. Each variant names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The text is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The JSON is valid but not an object.
    #[error("an event must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    /// `type` is absent.
    #[error("missing \"type\" (one of identify, track, page, screen, group, alias)")]
    MissingType,
    /// `type` is not one of the six.
    #[error("unknown type \"{0}\" (expected one of identify, track, page, screen, group, alias)")]
    UnknownType(String),
    /// Neither `userId` nor `anonymousId`.
    #[error("event has neither \"userId\" nor \"anonymousId\"; every event needs at least one")]
    MissingIdentity,
    /// A field the type requires is absent or empty.
    #[error("{event_type} event without \"{field}\"")]
    MissingField {
        event_type: EventType,
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("\"{field}\" must be {expected}, found {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    /// A timestamp field could not be parsed.
    #[error("\"{field}\" is not an ISO-8601 timestamp: {value:?}")]
    BadTimestamp { field: &'static str, value: String },
    /// The event's time (after clock-skew correction) is outside the accepted window.
    #[error(
        "the event's time {value} is outside the accepted window {earliest} .. {latest} \
         (set [events] earliest_timestamp / max_future to change it)"
    )]
    TimestampOutOfRange {
        value: String,
        earliest: String,
        latest: String,
    },
}

impl EventError {
    /// A short stable code for metrics and machine-readable responses.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::MalformedJson(_) => "malformed_json",
            EventError::NotAnObject(_) => "not_an_object",
            EventError::MissingType => "missing_type",
            EventError::UnknownType(_) => "unknown_type",
            EventError::MissingIdentity => "missing_identity",
            EventError::MissingField { .. } => "missing_field",
            EventError::WrongType { .. } => "wrong_type",
            EventError::BadTimestamp { .. } => "bad_timestamp",
            EventError::TimestampOutOfRange { .. } => "timestamp_out_of_range",
        }
    }
}

/// How to interpret times while parsing.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext {
    /// When the event arrived, microseconds since the Unix epoch (UTC).
    pub received_at: i64,
    /// `sentAt` of the enclosing batch, if any (microseconds).
    pub batch_sent_at: Option<i64>,
    /// Correct `timestamp` for client clock skew: `receivedAt − (sentAt − timestamp)`,
    /// as Segment does for live traffic. Off for imports of history.
    pub correct_clock_skew: bool,
    /// Keep a `receivedAt` carried by the event (imports of Segment exports); the
    /// collector sets this to `false` and stamps arrival time.
    pub trust_received_at: bool,
    /// Which event times are accepted.
    pub window: TimeWindow,
}

/// The event times accepted: from `earliest` to `max_future` after the parse context's
/// `received_at` (its "now"). Times outside it are refused with
/// [`EventError::TimestampOutOfRange`]: a year-0 or year-9999 event would otherwise
/// land in a partition readers cannot represent (Python's `datetime` stops at years
/// 1 and 9999) and skew every "last seen".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Earliest accepted time, microseconds since the epoch.
    pub earliest: i64,
    /// Furthest accepted time after now, microseconds.
    pub max_future: i64,
}

impl Default for TimeWindow {
    /// From 1970-01-01 to one day ahead.
    fn default() -> Self {
        TimeWindow {
            earliest: 0,
            max_future: 86_400_000_000,
        }
    }
}

impl TimeWindow {
    /// Whether `t` is accepted when now is `now`; the error says why not.
    pub fn check(&self, t: i64, now: i64) -> Result<(), EventError> {
        let latest = now.saturating_add(self.max_future);
        if t < self.earliest || t > latest {
            return Err(EventError::TimestampOutOfRange {
                value: format_timestamp(t),
                earliest: format_timestamp(self.earliest),
                latest: format_timestamp(latest),
            });
        }
        Ok(())
    }
}

impl ParseContext {
    /// The context of an import: the event's own times are trusted.
    pub fn import(now_micros: i64) -> Self {
        ParseContext {
            received_at: now_micros,
            batch_sent_at: None,
            correct_clock_skew: false,
            trust_received_at: true,
            window: TimeWindow::default(),
        }
    }

    /// The context of live collection: arrival time is now, and clock skew is corrected.
    pub fn live(now_micros: i64, batch_sent_at: Option<i64>) -> Self {
        ParseContext {
            received_at: now_micros,
            batch_sent_at,
            correct_clock_skew: true,
            trust_received_at: false,
            window: TimeWindow::default(),
        }
    }

    /// The same context accepting the times of `window`.
    pub fn with_window(mut self, window: TimeWindow) -> Self {
        self.window = window;
        self
    }
}

/// An event after validation; string fields borrow from the input where possible.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub message_id: Cow<'a, str>,
    pub event_type: EventType,
    pub event: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub anonymous_id: Option<Cow<'a, str>>,
    pub previous_id: Option<Cow<'a, str>>,
    pub group_id: Option<Cow<'a, str>>,
    /// Microseconds since the Unix epoch, UTC.
    pub timestamp: i64,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    /// Raw JSON object text.
    pub properties: Option<Cow<'a, str>>,
    pub traits: Option<Cow<'a, str>>,
    pub context: Option<Cow<'a, str>>,
    pub integrations: Option<Cow<'a, str>>,
    /// Unknown top-level fields, as a JSON object text.
    pub extra: Option<String>,
}

impl Event<'_> {
    /// The UTC calendar day of `timestamp`, as days since the Unix epoch (the
    /// `event_date` partition value).
    pub fn event_date(&self) -> i32 {
        self.timestamp.div_euclid(86_400_000_000) as i32
    }
}

/// Fields shared by every event of a batch request (`context`, `integrations`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchDefaults<'b> {
    pub context: Option<&'b RawValue>,
    pub integrations: Option<&'b RawValue>,
}

/// Parses and validates one event from its JSON text.
pub fn parse_event<'a>(text: &'a str, ctx: &ParseContext) -> Result<Event<'a>, EventError> {
    parse_event_with(text, ctx, BatchDefaults::default())
}

/// Parses and validates one event, applying batch-level defaults.
pub fn parse_event_with<'a>(
    text: &'a str,
    ctx: &ParseContext,
    defaults: BatchDefaults<'_>,
) -> Result<Event<'a>, EventError> {
    let raw = parse_raw(text)?;
    validate(raw, text, ctx, defaults)
}

// ---------------------------------------------------------------------------------------
// First stage: split the object into known fields (as raw JSON) and the rest.

#[derive(Default)]
struct RawEvent<'a> {
    message_id: Option<&'a RawValue>,
    event_type: Option<&'a RawValue>,
    event: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
    user_id: Option<&'a RawValue>,
    anonymous_id: Option<&'a RawValue>,
    previous_id: Option<&'a RawValue>,
    group_id: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    original_timestamp: Option<&'a RawValue>,
    sent_at: Option<&'a RawValue>,
    received_at: Option<&'a RawValue>,
    properties: Option<&'a RawValue>,
    traits: Option<&'a RawValue>,
    context: Option<&'a RawValue>,
    integrations: Option<&'a RawValue>,
    extra: Vec<(Cow<'a, str>, &'a RawValue)>,
}

fn parse_raw(text: &str) -> Result<RawEvent<'_>, EventError> {
    let first = text.trim_start().as_bytes().first().copied();
    match first {
        Some(b'{') => {}
        Some(b'[') => return Err(EventError::NotAnObject("an array")),
        Some(b'"') => return Err(EventError::NotAnObject("a string")),
        Some(b'n') if text.trim() == "null" => return Err(EventError::NotAnObject("null")),
        Some(b't' | b'f') if matches!(text.trim(), "true" | "false") => {
            return Err(EventError::NotAnObject("a boolean"));
        }
        Some(b'-' | b'0'..=b'9') if text.trim().parse::<f64>().is_ok() => {
            return Err(EventError::NotAnObject("a number"));
        }
        None => return Err(EventError::MalformedJson("empty input".into())),
        _ => {}
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = RawEventSeed
        .deserialize(&mut de)
        .map_err(|e| EventError::MalformedJson(e.to_string()))?;
    de.end()
        .map_err(|e| EventError::MalformedJson(e.to_string()))?;
    Ok(raw)
}

struct RawEventSeed;

impl RawEventSeed {
    fn deserialize<'de, D: Deserializer<'de>>(self, d: D) -> Result<RawEvent<'de>, D::Error> {
        d.deserialize_map(RawEventVisitor)
    }
}

struct RawEventVisitor;

impl<'de> Visitor<'de> for RawEventVisitor {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawEvent::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            let slot = match key.as_ref() {
                "messageId" | "message_id" => &mut raw.message_id,
                "type" => &mut raw.event_type,
                "event" => &mut raw.event,
                "name" => &mut raw.name,
                "userId" | "user_id" => &mut raw.user_id,
                "anonymousId" | "anonymous_id" => &mut raw.anonymous_id,
                "previousId" | "previous_id" => &mut raw.previous_id,
                "groupId" | "group_id" => &mut raw.group_id,
                "timestamp" => &mut raw.timestamp,
                "originalTimestamp" | "original_timestamp" => &mut raw.original_timestamp,
                "sentAt" | "sent_at" => &mut raw.sent_at,
                "receivedAt" | "received_at" => &mut raw.received_at,
                "properties" => &mut raw.properties,
                "traits" => &mut raw.traits,
                "context" => &mut raw.context,
                "integrations" => &mut raw.integrations,
                // Credentials never land in the lake; the lake's own columns are derived.
                "writeKey" | "write_key" | "source" | "event_date" | "extra" => continue,
                _ => {
                    raw.extra.push((key, value));
                    continue;
                }
            };
            *slot = Some(value);
        }
        Ok(raw)
    }
}

// ---------------------------------------------------------------------------------------
// Second stage: typed interpretation and validation.

fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// A JSON string's content, borrowed when it has no escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    if s.len() >= 2 && s.starts_with('"') {
        let inner = &s[1..s.len() - 1];
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
        return serde_json::from_str::<String>(s).ok().map(Cow::Owned);
    }
    None
}

/// An identifier: a non-empty string, or a number written as text (some SDKs send
/// numeric user ids). Empty strings count as absent.
fn id_field<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, EventError> {
    let Some(raw) = raw else { return Ok(None) };
    if is_null(raw) {
        return Ok(None);
    }
    if let Some(s) = json_str(raw) {
        let trimmed_empty = s.trim().is_empty();
        return Ok(if trimmed_empty { None } else { Some(s) });
    }
    match raw.get().as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Ok(Some(Cow::Borrowed(raw.get()))),
        _ => Err(EventError::WrongType {
            field,
            expected: "a string or a number",
            found: json_kind(raw),
        }),
    }
}

fn string_field<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, EventError> {
    let Some(raw) = raw else { return Ok(None) };
    if is_null(raw) {
        return Ok(None);
    }
    match json_str(raw) {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => Ok(Some(s)),
        None => Err(EventError::WrongType {
            field,
            expected: "a string",
            found: json_kind(raw),
        }),
    }
}

/// A JSON object kept as text. A string holding a JSON object (what a CSV column of JSON
/// produces through a mapping query) is accepted and unwrapped.
fn object_field<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, EventError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => Ok(Some(Cow::Borrowed(text))),
        Some(b'n') => Ok(None),
        Some(b'"') => {
            let inner = json_str(raw).unwrap_or_default();
            if inner.trim().is_empty() {
                return Ok(None);
            }
            match serde_json::from_str::<&RawValue>(&inner) {
                Ok(v) if v.get().starts_with('{') => Ok(Some(Cow::Owned(v.get().to_owned()))),
                _ => Err(EventError::WrongType {
                    field,
                    expected: "an object",
                    found: "a string",
                }),
            }
        }
        _ => Err(EventError::WrongType {
            field,
            expected: "an object",
            found: json_kind(raw),
        }),
    }
}

fn time_field(raw: Option<&RawValue>, field: &'static str) -> Result<Option<i64>, EventError> {
    let Some(raw) = raw else { return Ok(None) };
    if is_null(raw) {
        return Ok(None);
    }
    if let Some(s) = json_str(raw) {
        if s.trim().is_empty() {
            return Ok(None);
        }
        return parse_timestamp(&s)
            .map(Some)
            .ok_or_else(|| EventError::BadTimestamp {
                field,
                value: s.into_owned(),
            });
    }
    match raw.get().parse::<f64>() {
        // Numbers are epoch milliseconds, as JavaScript's Date.now() produces.
        Ok(ms) if ms.is_finite() => Ok(Some((ms * 1000.0) as i64)),
        _ => Err(EventError::WrongType {
            field,
            expected: "an ISO-8601 string",
            found: json_kind(raw),
        }),
    }
}

/// Parses an ISO-8601 / RFC 3339 timestamp to microseconds since the epoch (UTC).
/// Accepts an offset or `Z`, any fractional precision, a space instead of `T`, no offset
/// (taken as UTC) and a bare date (midnight UTC).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// Formats microseconds since the epoch as RFC 3339 with microseconds, in UTC.
pub fn format_timestamp(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| micros.to_string())
}

/// Shallow-merges batch-level defaults under an event's own object (the event wins).
fn merge_defaults<'a>(
    own: Option<Cow<'a, str>>,
    default: Option<&RawValue>,
) -> Option<Cow<'a, str>> {
    let Some(default) = default.filter(|d| d.get().starts_with('{')) else {
        return own;
    };
    let Some(own_text) = own else {
        return Some(Cow::Owned(default.get().to_owned()));
    };
    let parsed = (
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(default.get()),
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&own_text),
    );
    match parsed {
        (Ok(mut base), Ok(own_map)) => {
            base.extend(own_map);
            Some(Cow::Owned(serde_json::Value::Object(base).to_string()))
        }
        _ => Some(own_text),
    }
}

/// A deterministic message id for events that arrive without one, derived from the
/// event's exact text, so that importing the same file twice still deduplicates.
pub fn derived_message_id(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut id = String::with_capacity(4 + 32);
    id.push_str("gen-");
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

fn validate<'a>(
    raw: RawEvent<'a>,
    text: &'a str,
    ctx: &ParseContext,
    defaults: BatchDefaults<'_>,
) -> Result<Event<'a>, EventError> {
    let type_name = string_field(raw.event_type, "type")?.ok_or(EventError::MissingType)?;
    let event_type = EventType::parse(&type_name)
        .ok_or_else(|| EventError::UnknownType(type_name.into_owned()))?;

    let user_id = id_field(raw.user_id, "userId")?;
    let anonymous_id = id_field(raw.anonymous_id, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(EventError::MissingIdentity);
    }
    let previous_id = id_field(raw.previous_id, "previousId")?;
    let group_id = id_field(raw.group_id, "groupId")?;
    let event = string_field(raw.event, "event")?;
    let name = string_field(raw.name, "name")?;

    match event_type {
        EventType::Track if event.is_none() => {
            return Err(EventError::MissingField {
                event_type,
                field: "event",
            });
        }
        EventType::Alias if previous_id.is_none() => {
            return Err(EventError::MissingField {
                event_type,
                field: "previousId",
            });
        }
        EventType::Group if group_id.is_none() => {
            return Err(EventError::MissingField {
                event_type,
                field: "groupId",
            });
        }
        _ => {}
    }

    let properties = object_field(raw.properties, "properties")?;
    let mut traits = object_field(raw.traits, "traits")?;
    let context = object_field(raw.context, "context")?;
    let integrations = object_field(raw.integrations, "integrations")?;

    // Some SDKs (rudder-sdk-python) put identify traits only in context.traits.
    if traits.is_none()
        && matches!(event_type, EventType::Identify | EventType::Group)
        && let Some(ctx_text) = context.as_deref()
    {
        traits = context_traits(ctx_text).map(Cow::Owned);
    }
    let context = merge_defaults(context, defaults.context);
    let integrations = merge_defaults(integrations, defaults.integrations);

    let timestamp = time_field(raw.timestamp, "timestamp")?;
    let original_timestamp = time_field(raw.original_timestamp, "originalTimestamp")?;
    let sent_at = time_field(raw.sent_at, "sentAt")?.or(ctx.batch_sent_at);
    let event_received_at = time_field(raw.received_at, "receivedAt")?;

    let received_at = match event_received_at {
        Some(t) if ctx.trust_received_at => t,
        _ => ctx.received_at,
    };
    let client_time = timestamp.or(original_timestamp);
    let timestamp = match (client_time, sent_at) {
        (Some(t), Some(sent)) if ctx.correct_clock_skew => received_at - (sent - t),
        (Some(t), _) => t,
        (None, _) => received_at,
    };
    ctx.window.check(timestamp, ctx.received_at)?;

    let message_id = match id_field(raw.message_id, "messageId")? {
        Some(id) => id,
        None => Cow::Owned(derived_message_id(text)),
    };

    let extra = if raw.extra.is_empty() {
        None
    } else {
        let mut s = String::from("{");
        for (i, (k, v)) in raw.extra.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&serde_json::to_string(k.as_ref()).unwrap_or_else(|_| "\"?\"".into()));
            s.push(':');
            s.push_str(v.get());
        }
        s.push('}');
        Some(s)
    };

    Ok(Event {
        message_id,
        event_type,
        event,
        name,
        user_id,
        anonymous_id,
        previous_id,
        group_id,
        timestamp,
        sent_at,
        received_at,
        properties,
        traits,
        context,
        integrations,
        extra,
    })
}

fn context_traits(context: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ctx<'a> {
        #[serde(borrow)]
        traits: Option<&'a RawValue>,
    }
    let ctx: Ctx<'_> = serde_json::from_str(context).ok()?;
    ctx.traits
        .filter(|t| t.get().starts_with('{'))
        .map(|t| t.get().to_owned())
}

#[cfg(test)]
mod tests;
