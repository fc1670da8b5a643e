//! The shapes of request bodies: `/v1/batch` (events with batch-level `sentAt`,
//! `context`, `integrations`) and single-event endpoints, borrowed from the text.

use super::*;

/// Body of `/v1/batch`.
#[derive(Deserialize)]
pub(super) struct BatchBody<'a> {
    #[serde(borrow)]
    pub(super) batch: Vec<&'a RawValue>,
    #[serde(default, rename = "sentAt", alias = "sent_at", borrow)]
    pub(super) sent_at: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(super) context: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(super) integrations: Option<&'a RawValue>,
}

/// The fields of a single-event body the endpoint needs to look at.
#[derive(Deserialize)]
pub(super) struct SingleBody<'a> {
    #[serde(default, rename = "type", borrow)]
    pub(super) event_type: Option<&'a RawValue>,
    #[serde(default, rename = "sentAt", alias = "sent_at", borrow)]
    pub(super) sent_at: Option<&'a RawValue>,
}

/// The write key a body carries (`writeKey`), for clients that do not use basic auth.
pub fn body_write_key(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Key {
        #[serde(default, rename = "writeKey", alias = "write_key")]
        write_key: Option<String>,
    }
    serde_json::from_slice::<Key>(body).ok()?.write_key
}

pub(super) fn sent_at(raw: Option<&RawValue>) -> Option<i64> {
    let raw = raw?;
    let s: &str = serde_json::from_str(raw.get()).ok()?;
    parse_timestamp(s)
}

/// `event` (JSON text) with the batch's `context`, `integrations` and `sentAt` where
/// it has none of its own; the text as it is when it is not a JSON object.
pub(super) fn with_batch_fields(event: &str, batch: &BatchBody<'_>) -> String {
    let fields = [
        ("context", batch.context),
        ("integrations", batch.integrations),
        ("sentAt", batch.sent_at),
    ];
    if fields.iter().all(|(_, v)| v.is_none()) {
        return event.to_owned();
    }
    let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(event)
    else {
        return event.to_owned();
    };
    for (key, value) in fields {
        let Some(value) = value else { continue };
        if !object.contains_key(key)
            && let Ok(v) = serde_json::from_str(value.get())
        {
            object.insert(key.to_owned(), v);
        }
    }
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_events_keep_the_batch_fields_they_lack() {
        let body = r#"{"batch":[{"type":"track","context":{"ip":"1.1.1.1"}},{"type":"track"}],
                       "context":{"library":{"name":"analytics-python"}},"sentAt":"2026-11-01T00:00:00Z"}"#;
        let b: BatchBody<'_> = serde_json::from_str(body).unwrap();
        let own: serde_json::Value =
            serde_json::from_str(&with_batch_fields(b.batch[0].get(), &b)).unwrap();
        assert_eq!(own["context"]["ip"], "1.1.1.1", "its own context stays");
        assert_eq!(own["sentAt"], "2026-11-01T00:00:00Z");
        let lacking: serde_json::Value =
            serde_json::from_str(&with_batch_fields(b.batch[1].get(), &b)).unwrap();
        assert_eq!(lacking["context"]["library"]["name"], "analytics-python");
        assert_eq!(with_batch_fields("not json", &b), "not json");
    }
}
