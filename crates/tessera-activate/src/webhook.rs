//! The webhook destination: Segment-compatible `track` events `Audience Entered` /
//! `Audience Exited` POSTed as `{"batch": [...], "sentAt": ...}`, signed with Standard
//! Webhooks (`webhook-id` stable across retries of a batch, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one signature
//! per configured key) and optionally Segment's legacy `X-Signature` (hex HMAC-SHA1 of
//! the whole body). Each attempt is signed anew.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::destination::Destination;
use crate::member::{Change, Member, message_id};

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// One member's change as a Segment `track` event. `fields` are the member's traits of
/// the sync's `fields` query (without `profile_id`).
pub fn event(
    sync: &str,
    destination: &str,
    segment: &str,
    m: &Member,
    user_id: Option<&str>,
    fields: Option<&Map<String, Value>>,
) -> Value {
    let entered = m.change == Change::Entered;
    let mut properties = Map::new();
    properties.insert("audience_key".into(), json!(segment));
    properties.insert(segment.into(), json!(entered));
    if let Some(fields) = fields {
        for (k, v) in fields {
            if k != "profile_id" {
                properties.insert(k.clone(), v.clone());
            }
        }
    }
    let mut e = json!({
        "type": "track",
        "event": if entered { "Audience Entered" } else { "Audience Exited" },
        "messageId": message_id(destination, segment, m),
        "anonymousId": m.profile_id,
        "timestamp": rfc3339(m.changed_at),
        "properties": properties,
        "context": {
            "library": {"name": "tessera", "version": env!("CARGO_PKG_VERSION")},
            "tessera": {
                "sync": sync,
                "segment": segment,
                "refresh_version": m.refresh_version,
                "profile_id": m.profile_id,
                "merged_into": m.merged_into,
            },
        },
    });
    if let Some(u) = user_id {
        e["userId"] = json!(u);
    }
    e
}

/// Request bodies of `events`: `{"batch": [...], "sentAt": ...}`, each at most
/// `max_bytes` (an event alone larger than that still goes, alone).
pub fn bodies(events: &[Value], max_bytes: usize, sent_at_micros: i64) -> Vec<Vec<u8>> {
    let sent_at = rfc3339(sent_at_micros);
    let envelope = |items: &[String]| -> Vec<u8> {
        format!(
            "{{\"batch\":[{}],\"sentAt\":\"{sent_at}\"}}",
            items.join(",")
        )
        .into_bytes()
    };
    let overhead = envelope(&[]).len();
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = overhead;
    for e in events {
        let text = e.to_string();
        if !current.is_empty() && size + text.len() + 1 > max_bytes {
            out.push(envelope(&current));
            current.clear();
            size = overhead;
        }
        size += text.len() + 1;
        current.push(text);
    }
    if !current.is_empty() {
        out.push(envelope(&current));
    }
    out
}

fn hmac(algorithm: ring::hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(algorithm, key);
    ring::hmac::sign(&key, data).as_ref().to_vec()
}

/// The `webhook-signature` header: `v1,<base64>` per key, space-separated.
pub fn signature(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    keys.iter()
        .map(|k| {
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(hmac(
                    ring::hmac::HMAC_SHA256,
                    k,
                    &signed
                ))
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Segment's legacy `X-Signature`: hex HMAC-SHA1 of the whole body.
pub fn legacy_signature(key: &[u8], body: &[u8]) -> String {
    hmac(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key, body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// 2xx.
    Delivered { code: u16 },
    /// Worth trying again: 5xx, 408, 429, a timeout or a broken connection; with the
    /// server's `Retry-After` when it sent one.
    Retry {
        code: Option<u16>,
        retry_after: Option<Duration>,
        message: String,
    },
    /// Will never succeed as it is: other 4xx.
    Final { code: u16, message: String },
}

/// How an HTTP answer is taken: 2xx done; 4xx final but 408 and 429; 5xx again.
pub fn classify(code: u16, retry_after: Option<Duration>, body: &str) -> Attempt {
    let message: String = body.chars().take(500).collect();
    match code {
        200..=299 => Attempt::Delivered { code },
        408 | 429 => Attempt::Retry {
            code: Some(code),
            retry_after,
            message,
        },
        400..=499 => Attempt::Final { code, message },
        _ => Attempt::Retry {
            code: Some(code),
            retry_after: if code == 503 { retry_after } else { None },
            message,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is read as no hint).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sends one body with `method`, signed for this attempt when the destination has
/// keys, with delivery id `id`.
pub async fn send(
    client: &reqwest::Client,
    d: &Destination,
    method: reqwest::Method,
    id: &str,
    body: Vec<u8>,
) -> Attempt {
    let now = chrono::Utc::now().timestamp();
    let mut request = client
        .request(method, &d.url)
        .timeout(d.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            reqwest::header::USER_AGENT,
            concat!("tessera/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", id)
        .header("webhook-timestamp", now.to_string());
    if !d.secrets.is_empty() {
        request = request.header("webhook-signature", signature(&d.secrets, id, now, &body));
    }
    if let Some(key) = &d.legacy_secret {
        request = request.header("x-signature", legacy_signature(key, &body));
    }
    for (k, v) in &d.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    match request.body(body).send().await {
        Ok(response) => {
            let code = response.status().as_u16();
            let after = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            classify(code, after, &text)
        }
        Err(e) => Attempt::Retry {
            code: None,
            retry_after: None,
            message: if e.is_timeout() {
                format!("no answer within {:?}", d.timeout)
            } else {
                format!("{e}")
            },
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn standard_webhooks_signature_matches_the_reference() {
        // The Standard Webhooks specification's example.
        let key =
            crate::destination::webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // Two keys: two signatures.
        let k2 = vec![7u8; 32];
        let two = signature(
            &[
                crate::destination::webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
                k2,
            ],
            "id",
            1,
            b"x",
        );
        assert_eq!(two.split(' ').count(), 2);
    }

    #[test]
    fn legacy_signature_is_hmac_sha1_of_the_body() {
        // RFC 2202 test case 2.
        assert_eq!(
            legacy_signature(b"Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(204, None, ""), Attempt::Delivered { code: 204 });
        assert!(matches!(
            classify(400, None, "bad"),
            Attempt::Final { code: 400, .. }
        ));
        assert!(matches!(classify(404, None, ""), Attempt::Final { .. }));
        let two = Some(Duration::from_secs(2));
        assert!(
            matches!(classify(429, two, ""), Attempt::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(2))
        );
        assert!(matches!(classify(408, None, ""), Attempt::Retry { .. }));
        assert!(matches!(
            classify(503, two, ""),
            Attempt::Retry {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            classify(500, two, ""),
            Attempt::Retry {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn bodies_respect_the_byte_cap_and_keep_order() {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"n": i, "pad": "x".repeat(90)}))
            .collect();
        let parts = bodies(&events, 2_000, 0);
        assert!(parts.len() > 1);
        let mut seen = Vec::new();
        for p in &parts {
            assert!(p.len() <= 2_000, "{}", p.len());
            let v: Value = serde_json::from_slice(p).unwrap();
            seen.extend(
                v["batch"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["n"].as_i64().unwrap()),
            );
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }
}
