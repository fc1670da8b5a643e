//! The pieces of privacy every crate shares: salted hashes of identifiers (what the
//! suppression list and privacy requests keep instead of the identifiers), the
//! identifiers an event carries, and how a subject is named on the command line.
//!
//! A subject hash is `HMAC-SHA256(salt, "TYPE:VALUE")` in lower-case hex, over the
//! normalized value (`email` lower-cased, `phone` in E.164, others trimmed). The salt
//! is the lake's own (`_tessera/privacy/salt`, 32 random bytes made on first use), so
//! the hashes of one lake say nothing about another's, and no table holds a value
//! that a dictionary of e-mail addresses could be matched against without it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::identifier::{hex, normalize_email, normalize_phone};

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    Hasher::new(key).mac(message)
}

/// A keyed hasher with the key's inner and outer blocks absorbed once, so that hashing
/// many short identifiers costs two compressions each.
#[derive(Clone)]
pub struct Hasher {
    inner: Sha256,
    outer: Sha256,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(..)")
    }
}

impl Hasher {
    /// A hasher keyed with `key` (a lake's salt).
    pub fn new(key: &[u8]) -> Hasher {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        let mut outer = Sha256::new();
        outer.update(block.map(|b| b ^ 0x5c));
        Hasher { inner, outer }
    }

    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(message);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// The subject hash of an identifier whose value is already normalized.
    pub fn subject(&self, id_type: &str, normalized: &str) -> String {
        let mut m = Vec::with_capacity(id_type.len() + 1 + normalized.len());
        m.extend_from_slice(id_type.as_bytes());
        m.push(b':');
        m.extend_from_slice(normalized.as_bytes());
        hex(&self.mac(&m))
    }
}

/// Normalizes a value of identifier type `id_type` the way stitching does: `email`
/// trimmed and lower-cased, `phone` to E.164, anything else trimmed. `None` when the
/// value cannot be one (empty, an e-mail without `@`, too few digits).
pub fn normalize(id_type: &str, value: &str) -> Option<String> {
    match id_type {
        "email" => normalize_email(value),
        "phone" => normalize_phone(value, None),
        _ => {
            let v = value.trim();
            (!v.is_empty()).then(|| v.to_owned())
        }
    }
}

/// A subject named as `TYPE:VALUE` (`email:jane@example.com`, `user_id:u-1`,
/// `phone:+14155550100`, `profile_id:p-…`): the type lower-cased, the value normalized.
pub fn parse_subject(text: &str) -> Result<(String, String), String> {
    let Some((id_type, value)) = text.split_once(':') else {
        return Err(format!(
            "{text:?} is not TYPE:VALUE (for example email:jane@example.com or user_id:u-42)"
        ));
    };
    let id_type = id_type.trim().to_lowercase();
    if id_type.is_empty()
        || !id_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "{text:?}: the identifier type must be a word such as email, phone, user_id, \
             anonymous_id or profile_id"
        ));
    }
    let id_type = if id_type == "profile" {
        "profile_id".to_owned()
    } else {
        id_type
    };
    match normalize(&id_type, value) {
        Some(v) => Ok((id_type, v)),
        None if value.trim().is_empty() => Err(format!("{text:?}: the value is empty")),
        None => Err(format!(
            "{text:?}: {:?} is not a valid {id_type}",
            value.trim()
        )),
    }
}

/// JSON keys an event's `traits`, `context.traits` and `properties` carry e-mails and
/// phones under (compared case-insensitively).
const EMAIL_KEYS: &[&str] = &["email", "email_address", "emailaddress"];
const PHONE_KEYS: &[&str] = &["phone", "phone_number", "phonenumber", "mobile"];

/// The identifiers that say whose an event is, normalized, as `(type, value)`: its
/// actor — the `user_id`, else the `anonymous_id` (a device another person also used
/// does not make their events this person's) — and the e-mails and phones of its
/// `traits`, `context.traits` and `properties` (the JSON texts are parsed only when they
/// mention one).
pub fn event_identifiers(
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
    json: &[Option<&str>],
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(v) = user_id.and_then(|v| normalize("user_id", v)) {
        out.push(("user_id", v));
    } else if let Some(v) = anonymous_id.and_then(|v| normalize("anonymous_id", v)) {
        out.push(("anonymous_id", v));
    }
    for text in json.iter().flatten() {
        let bytes = text.as_bytes();
        if !contains_ci(bytes, b"mail")
            && !contains_ci(bytes, b"phone")
            && !contains_ci(bytes, b"mobile")
        {
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        collect(&value, &mut out);
        if let Some(traits) = value.get("traits") {
            collect(traits, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn collect(object: &Value, out: &mut Vec<(&'static str, String)>) {
    let Some(map) = object.as_object() else {
        return;
    };
    for (k, v) in map {
        let Some(s) = v.as_str() else { continue };
        let k = k.to_lowercase();
        if EMAIL_KEYS.contains(&k.as_str()) {
            if let Some(e) = normalize_email(s) {
                out.push(("email", e));
            }
        } else if PHONE_KEYS.contains(&k.as_str())
            && let Some(p) = normalize_phone(s, None)
        {
            out.push(("phone", p));
        }
    }
}

fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// One profile's latest stated consent: category → granted (empty: nothing granted).
pub type ConsentPreferences = std::collections::BTreeMap<String, bool>;

/// Segment's consent routing rule for one profile and a destination mapped to
/// `categories`: no stated consent → allowed; a destination mapped to no category →
/// allowed; else every one of its categories must be granted (empty preferences grant
/// none; a category the preferences do not name is not granted).
pub fn consent_allows(state: Option<&ConsentPreferences>, categories: &[String]) -> bool {
    match state {
        None => true,
        Some(prefs) => categories
            .iter()
            .all(|c| prefs.get(c).copied().unwrap_or(false)),
    }
}

/// The consent an event's `context` JSON text states: `None` when it states none (no
/// `consent.categoryPreferences` object); values that are not booleans count as not
/// granted.
pub fn consent_preferences(context: &str) -> Option<ConsentPreferences> {
    let v: Value = serde_json::from_str(context).ok()?;
    let prefs = v.get("consent")?.get("categoryPreferences")?.as_object()?;
    Some(
        prefs
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bool().unwrap_or(false)))
            .collect(),
    )
}

/// States of a privacy request (`privacy_requests.state`), Segment's regulation states
/// in Tessera's words: `received` → `running` → `finished` | `partial` | `failed`.
pub const REQUEST_STATES: &[&str] = &["received", "running", "finished", "partial", "failed"];

/// Days a request may take by law (GDPR Art. 12(3): one month).
pub const REQUEST_DEADLINE_DAYS: i64 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn subjects_are_normalized_before_hashing() {
        let h = Hasher::new(b"salt");
        assert_eq!(
            h.subject("email", &normalize("email", " Jane@Example.COM ").unwrap()),
            h.subject("email", "jane@example.com")
        );
        assert_ne!(h.subject("email", "a@b.c"), h.subject("user_id", "a@b.c"));
        assert_ne!(
            Hasher::new(b"other").subject("email", "a@b.c"),
            h.subject("email", "a@b.c")
        );
    }

    #[test]
    fn subjects_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_subject("email: Jane@Example.com").unwrap(),
            ("email".into(), "jane@example.com".into())
        );
        assert_eq!(
            parse_subject("profile:p-1").unwrap(),
            ("profile_id".into(), "p-1".into())
        );
        assert!(
            parse_subject("jane@example.com")
                .unwrap_err()
                .contains("TYPE:VALUE")
        );
        assert!(parse_subject("email:").unwrap_err().contains("empty"));
        assert!(
            parse_subject("email:nope")
                .unwrap_err()
                .contains("not a valid email")
        );
        assert!(parse_subject("e mail:x@y.z").unwrap_err().contains("type"));
    }

    #[test]
    fn events_name_their_identifiers() {
        let ids = event_identifiers(
            Some(" u1 "),
            Some("shared-tablet"),
            &[
                Some(r#"{"Email":"Jane@Example.com","plan":"pro"}"#),
                Some(r#"{"traits":{"phone":"(415) 555-0100"},"ip":"1.2.3.4"}"#),
                Some(r#"{"total":3}"#),
                None,
            ],
        );
        assert_eq!(
            ids,
            vec![
                ("email", "jane@example.com".to_owned()),
                ("phone", "+14155550100".to_owned()),
                ("user_id", "u1".to_owned()),
            ]
        );
    }
}
