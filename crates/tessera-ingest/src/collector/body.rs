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
