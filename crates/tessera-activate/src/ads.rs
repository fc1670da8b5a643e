//! Ad-platform audiences: Google Customer Match and Meta Custom Audiences.
//!
//! Members are matched by the platforms on hashed personal data, each platform with its
//! own normalization before SHA-256 (they differ, and a wrong normalization matches
//! nobody, silently):
//!
//! | key | Google | Meta |
//! | --- | --- | --- |
//! | e-mail | trimmed, lower-cased; dots of a `gmail.com`/`googlemail.com` local part removed | `" \t\r\n\0\x0B."` stripped at both ends, lower-cased (Meta's SDK) |
//! | phone | E.164 **with** `+` | E.164 digits, **no** `+` |
//! | first/last name | trimmed, lower-cased | lower-cased, letters only |
//! | country | ISO code, upper case, **not hashed** | ISO code, lower case, hashed |
//! | zip | trimmed (US: 5 digits), **not hashed** | lower-cased, no spaces, before `-` (US: 5 digits), hashed |
//!
//! Phones are read with libphonenumber's metadata (the `phonenumber` crate), national
//! numbers in the member's `country` or the destination's `default_region`.
//!
//! The identifiers of a member are taken **when the run is planned** and stored with
//! the member in `activation_batches`; a later exit removes exactly the tuple that was
//! added (a removal with other identifiers reports success and removes nobody).
//!
//! Requests respect the platforms' caps: Meta ≤ 10,000 rows per request (`POST` adds,
//! `DELETE` removes, the same `{"payload": {"schema", "data"}}` body); Google ≤ 100,000
//! identifiers per `addOperations` request and ≤ 20 per user, adds (`create`) and
//! removals (`remove`) never in one request.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use sha2::Digest;
use tessera_core::config::DestinationKind;

pub use crate::member::Identifiers;
use crate::member::{Change, Member, hex};

/// The platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Google,
    Meta,
}

impl Platform {
    /// The platform of a destination kind, if it is one.
    pub fn of(kind: DestinationKind) -> Option<Platform> {
        match kind {
            DestinationKind::GoogleCustomerMatch => Some(Platform::Google),
            DestinationKind::MetaCustomAudience => Some(Platform::Meta),
            DestinationKind::Webhook | DestinationKind::File | DestinationKind::EventStream => None,
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        match s.trim().to_ascii_lowercase().as_str() {
            "google" | "google_customer_match" => Some(Platform::Google),
            "meta" | "facebook" | "meta_custom_audience" => Some(Platform::Meta),
            _ => None,
        }
    }

    /// Most users per request.
    pub fn max_users(self) -> usize {
        match self {
            Platform::Google => 100_000,
            Platform::Meta => 10_000,
        }
    }
}

/// Most rows in one Meta request.
pub const META_MAX_ROWS: usize = 10_000;
/// Most identifiers in one Google `addOperations` request.
pub const GOOGLE_MAX_IDENTIFIERS: usize = 100_000;
/// Most identifiers in one Google `UserData`.
pub const GOOGLE_MAX_PER_USER: usize = 20;

/// The columns a sync's `fields` query may return for an ad platform (besides
/// `profile_id`); `email` and `phone` may be lists.
pub const IDENTIFIER_COLUMNS: &[&str] = &[
    "email",
    "phone",
    "first_name",
    "last_name",
    "country",
    "zip",
    "external_id",
];

/// The `fields` query used when a sync to an ad platform has none.
pub const DEFAULT_FIELDS: &str = "SELECT profile_id, email, phone FROM profiles";

/// Lower-case hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

/// An e-mail address as the platform hashes it (`None`: not an address).
pub fn email(platform: Platform, raw: &str) -> Option<String> {
    let v = match platform {
        Platform::Meta => raw
            .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n' | '\0' | '\x0B' | '.'))
            .to_lowercase(),
        Platform::Google => {
            let v = raw.trim().to_lowercase();
            match v.rsplit_once('@') {
                Some((local, domain)) if domain == "gmail.com" || domain == "googlemail.com" => {
                    format!("{}@{domain}", local.replace('.', ""))
                }
                _ => v,
            }
        }
    };
    let (local, domain) = v.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some(v)
}

/// A phone number in E.164 (`+16505551212`), national numbers read in `region`
/// (ISO 3166-1 alpha-2; US when `None`); `None` when libphonenumber cannot read it or it
/// is not a valid number there. The very rule stitching uses
/// ([`tessera_core::identifier::normalize_phone`]), so a person matched on a phone is sent
/// with the phone that matched.
pub fn e164(raw: &str, region: Option<&str>) -> Option<String> {
    tessera_core::identifier::normalize_phone(raw, region)
}

/// A phone number as the platform hashes it: E.164 for Google, its digits for Meta.
pub fn phone(platform: Platform, raw: &str, region: Option<&str>) -> Option<String> {
    let e = e164(raw, region)?;
    Some(match platform {
        Platform::Google => e,
        Platform::Meta => e.trim_start_matches('+').to_owned(),
    })
}

/// A first or last name as the platform hashes it.
pub fn name(platform: Platform, raw: &str) -> Option<String> {
    let v: String = match platform {
        Platform::Google => raw.trim().to_lowercase(),
        Platform::Meta => raw
            .chars()
            .filter(|c| c.is_alphabetic())
            .flat_map(char::to_lowercase)
            .collect(),
    };
    (!v.is_empty()).then_some(v)
}

/// A two-letter country code (Google: upper case; Meta: lower case).
pub fn country(platform: Platform, raw: &str) -> Option<String> {
    let letters: String = raw.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    if letters.len() != 2 {
        return None;
    }
    Some(match platform {
        Platform::Google => letters.to_ascii_uppercase(),
        Platform::Meta => letters.to_ascii_lowercase(),
    })
}

/// A postal code (`country`: the member's, upper case, for the US five-digit rule).
pub fn zip(platform: Platform, raw: &str, country: Option<&str>) -> Option<String> {
    let mut v: String = match platform {
        Platform::Google => raw.trim().to_owned(),
        Platform::Meta => raw
            .to_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    };
    let us = country.is_some_and(|c| c.eq_ignore_ascii_case("us"));
    if (platform == Platform::Meta || us)
        && let Some((head, _)) = v.split_once('-')
    {
        v = head.trim().to_owned();
    }
    if us {
        v = v.chars().take(5).collect();
    }
    (!v.is_empty()).then_some(v)
}

/// `value` normalized as identifier `key` (one of [`IDENTIFIER_COLUMNS`]) for
/// `platform`, before hashing; phones read in `region`, zips by `country`'s rules.
pub fn normalize(
    platform: Platform,
    key: &str,
    value: &str,
    region: Option<&str>,
) -> std::result::Result<Option<String>, String> {
    Ok(match key {
        "email" => email(platform, value),
        "phone" => phone(platform, value, region),
        "first_name" | "last_name" => name(platform, value),
        "country" => country(platform, value),
        "zip" => zip(platform, value, region),
        "external_id" => Some(value.trim().to_owned()).filter(|v| !v.is_empty()),
        other => {
            return Err(format!(
                "unknown identifier {other:?} (expected one of: {})",
                IDENTIFIER_COLUMNS.join(", ")
            ));
        }
    })
}

fn texts(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Number(n)) => vec![n.to_string()],
        Some(Value::Array(items)) => items.iter().flat_map(|i| texts(Some(i))).collect(),
        _ => Vec::new(),
    }
}

fn first(v: Option<&Value>) -> Option<String> {
    texts(v).into_iter().next()
}

/// The identifiers of one `fields` row for `platform`, normalized and hashed. Phones
/// without a country code are read in the row's `country`, else `default_region`.
/// Duplicates are dropped; Google keeps at most 20 identifiers per user.
pub fn identifiers(
    platform: Platform,
    row: &Map<String, Value>,
    default_region: Option<&str>,
) -> Identifiers {
    let country_raw = first(row.get("country"));
    let country_code = country_raw
        .as_deref()
        .and_then(|c| country(Platform::Google, c));
    let region = country_code.as_deref().or(default_region);
    let mut out = Identifiers::default();
    for e in texts(row.get("email")) {
        if let Some(n) = email(platform, &e) {
            let h = sha256_hex(&n);
            if !out.email.contains(&h) {
                out.email.push(h);
            }
        }
    }
    for p in texts(row.get("phone")) {
        if let Some(n) = phone(platform, &p, region) {
            let h = sha256_hex(&n);
            if !out.phone.contains(&h) {
                out.phone.push(h);
            }
        }
    }
    out.first_name = first(row.get("first_name"))
        .and_then(|v| name(platform, &v))
        .map(|v| sha256_hex(&v));
    out.last_name = first(row.get("last_name"))
        .and_then(|v| name(platform, &v))
        .map(|v| sha256_hex(&v));
    let zip_raw = first(row.get("zip"));
    match platform {
        Platform::Google => {
            out.country = country_code.clone();
            out.zip = zip_raw.and_then(|z| zip(platform, &z, country_code.as_deref()));
        }
        Platform::Meta => {
            out.country = country_raw
                .as_deref()
                .and_then(|c| country(platform, c))
                .map(|c| sha256_hex(&c));
            out.zip = zip_raw
                .and_then(|z| zip(platform, &z, country_code.as_deref()))
                .map(|z| sha256_hex(&z));
        }
    }
    out.external_id = first(row.get("external_id"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    if platform == Platform::Google {
        let address = usize::from(out.has_address());
        let room = GOOGLE_MAX_PER_USER.saturating_sub(address);
        out.email.truncate(room);
        out.phone.truncate(room - out.email.len());
    }
    out
}

/// An HTTP method of a platform request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Delete,
}

/// One request to a platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub body: Vec<u8>,
    /// Users (Google operations, Meta members) and identifiers or rows in it.
    pub users: usize,
    pub identifiers: usize,
}

/// The schema of every Meta request (empty strings where a member has no value).
pub const META_SCHEMA: &[&str] = &["EXTERN_ID", "EMAIL", "PHONE", "FN", "LN", "ZIP", "COUNTRY"];

/// Meta rows of one member: one per e-mail or phone beyond the first, the other keys
/// on the first row.
fn meta_rows(ids: &Identifiers) -> Vec<Value> {
    let n = ids.email.len().max(ids.phone.len()).max(1);
    (0..n)
        .map(|i| {
            let first = i == 0;
            let opt = |v: &Option<String>| {
                if first {
                    v.clone().unwrap_or_default()
                } else {
                    String::new()
                }
            };
            json!([
                opt(&ids.external_id),
                ids.email.get(i).cloned().unwrap_or_default(),
                ids.phone.get(i).cloned().unwrap_or_default(),
                opt(&ids.first_name),
                opt(&ids.last_name),
                opt(&ids.zip),
                opt(&ids.country),
            ])
        })
        .collect()
}

/// Google `UserIdentifier`s of one member.
fn google_identifiers(ids: &Identifiers) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for e in &ids.email {
        out.push(json!({"hashedEmail": e}));
    }
    for p in &ids.phone {
        out.push(json!({"hashedPhoneNumber": p}));
    }
    if ids.has_address() {
        out.push(json!({"addressInfo": {
            "hashedFirstName": ids.first_name,
            "hashedLastName": ids.last_name,
            "countryCode": ids.country,
            "postalCode": ids.zip,
        }}));
    }
    if let Some(x) = &ids.external_id {
        out.push(json!({"thirdPartyUserId": x}));
    }
    out.truncate(GOOGLE_MAX_PER_USER);
    out
}

/// The requests of a batch: adds for `adds`, removals for `removes`, never mixed, each
/// within the platform's caps and at most `max_users` users.
pub fn requests(
    platform: Platform,
    adds: &[&Identifiers],
    removes: &[&Identifiers],
    max_users: usize,
) -> Vec<Request> {
    let max_users = max_users.clamp(1, platform.max_users());
    let mut out = Vec::new();
    for (members, remove) in [(adds, false), (removes, true)] {
        match platform {
            Platform::Meta => {
                let mut rows: Vec<Value> = Vec::new();
                let mut users = 0;
                let flush = |rows: &mut Vec<Value>, users: &mut usize, out: &mut Vec<Request>| {
                    if rows.is_empty() {
                        return;
                    }
                    let body = json!({"payload": {"schema": META_SCHEMA, "data": rows}});
                    out.push(Request {
                        method: if remove { Method::Delete } else { Method::Post },
                        body: body.to_string().into_bytes(),
                        users: *users,
                        identifiers: rows.len(),
                    });
                    rows.clear();
                    *users = 0;
                };
                for ids in members {
                    let mine = meta_rows(ids);
                    if users >= max_users || rows.len() + mine.len() > META_MAX_ROWS {
                        flush(&mut rows, &mut users, &mut out);
                    }
                    rows.extend(mine);
                    users += 1;
                }
                flush(&mut rows, &mut users, &mut out);
            }
            Platform::Google => {
                let mut ops: Vec<Value> = Vec::new();
                let mut count = 0;
                let flush = |ops: &mut Vec<Value>, count: &mut usize, out: &mut Vec<Request>| {
                    if ops.is_empty() {
                        return;
                    }
                    let body = json!({"enablePartialFailure": true, "operations": ops});
                    out.push(Request {
                        method: Method::Post,
                        body: body.to_string().into_bytes(),
                        users: ops.len(),
                        identifiers: *count,
                    });
                    ops.clear();
                    *count = 0;
                };
                for ids in members {
                    let mine = google_identifiers(ids);
                    if ops.len() >= max_users || count + mine.len() > GOOGLE_MAX_IDENTIFIERS {
                        flush(&mut ops, &mut count, &mut out);
                    }
                    count += mine.len();
                    let data = json!({"userIdentifiers": mine});
                    ops.push(if remove {
                        json!({"remove": data})
                    } else {
                        json!({"create": data})
                    });
                }
                flush(&mut ops, &mut count, &mut out);
            }
        }
    }
    out
}

/// The requests of one planned batch: the last change of each profile, adds with the
/// identifiers taken at planning, removals with the tuple sent when the profile was
/// added.
pub fn batch_requests(platform: Platform, members: &[Member], max_users: usize) -> Vec<Request> {
    let mut last: HashMap<&str, &Member> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for m in members {
        if last.insert(m.profile_id.as_str(), m).is_none() {
            order.push(m.profile_id.as_str());
        }
    }
    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    for p in order {
        let m = last[p];
        let Some(ids) = m.identifiers.as_deref().filter(|i| !i.is_empty()) else {
            continue;
        };
        match m.change {
            Change::Entered => adds.push(ids),
            Change::Exited => removes.push(ids),
        }
    }
    requests(platform, &adds, &removes, max_users)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_golden_vectors_hash_as_published() {
        let meta_email = email(Platform::Meta, "  John.Doe@Example.COM ").unwrap();
        assert_eq!(meta_email, "john.doe@example.com");
        assert_eq!(
            sha256_hex(&meta_email),
            "836f82db99121b3481011f16b49dfa5fbc714a0d1b1b9f784a1ebbbf5b39577f"
        );
        let g = email(Platform::Google, "J.o.h.n.Doe@GMAIL.com").unwrap();
        assert_eq!(g, "johndoe@gmail.com");
        assert_eq!(
            sha256_hex(&g),
            "06a240d11cc201676da976f7b49341181fd180da37cbe40a77432c0a366c80c3"
        );
        let mp = phone(Platform::Meta, "+1 (650) 555-1212", None).unwrap();
        assert_eq!(mp, "16505551212");
        assert_eq!(
            sha256_hex(&mp),
            "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
        );
        let gp = phone(Platform::Google, "+1 (650) 555-1212", None).unwrap();
        assert_eq!(gp, "+16505551212");
        assert_eq!(
            sha256_hex(&gp),
            "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"
        );
        let fnm = name(Platform::Meta, "Mary-Ann").unwrap();
        assert_eq!(fnm, "maryann");
        assert_eq!(
            sha256_hex(&fnm),
            "16b3f07f0ec2f9dd127b71dc2e6c791b7d93116a1c3bc99d057eaa7a8a077e73"
        );
        let z = zip(Platform::Meta, "94107-1234", Some("US")).unwrap();
        assert_eq!(z, "94107");
        assert_eq!(
            sha256_hex(&z),
            "c884a209ebe08750a7d13db63bd02233b375bd79786cbe329ab11586cc35dead"
        );
        let c = country(Platform::Meta, "US").unwrap();
        assert_eq!(
            sha256_hex(&c),
            "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
        );
    }

    #[test]
    fn phones_are_read_in_the_members_country() {
        assert_eq!(
            e164("020 7946 0018", Some("GB")).as_deref(),
            Some("+442079460018")
        );
        assert_eq!(
            e164("+44 (0)20 7946 0018", None).as_deref(),
            Some("+442079460018")
        );
        assert_eq!(
            e164("030 123456", Some("DE")).as_deref(),
            Some("+4930123456")
        );
        assert_eq!(e164("not a phone", Some("US")), None);
        let row: Map<String, Value> = serde_json::from_value(json!({
            "email": ["a@x.io", "A@X.io ", "b@x.io"],
            "phone": "020 7946 0018",
            "country": "gb",
        }))
        .unwrap();
        let ids = identifiers(Platform::Google, &row, Some("US"));
        assert_eq!(ids.email.len(), 2, "duplicates after normalization dropped");
        assert_eq!(ids.phone, vec![sha256_hex("+442079460018")]);
        assert_eq!(ids.country.as_deref(), Some("GB"), "Google: not hashed");
        let meta = identifiers(Platform::Meta, &row, Some("US"));
        assert_eq!(meta.phone, vec![sha256_hex("442079460018")]);
        assert_eq!(meta.country, Some(sha256_hex("gb")));
    }

    #[test]
    fn requests_stay_within_the_caps_and_never_mix_adds_and_removes() {
        let one = Identifiers {
            email: (0..25).map(|i| format!("{i:064}")).collect(),
            ..Identifiers::default()
        };
        let row: Map<String, Value> = serde_json::from_value(json!({
            "email": (0..25).map(|i| format!("u{i}@x.io")).collect::<Vec<_>>(),
        }))
        .unwrap();
        assert_eq!(
            identifiers(Platform::Google, &row, None).email.len(),
            GOOGLE_MAX_PER_USER
        );
        let many: Vec<&Identifiers> = std::iter::repeat_n(&one, 12_000).collect();
        let meta = requests(Platform::Meta, &many, &many[..10], 10_000);
        assert!(meta.iter().all(|r| r.identifiers <= META_MAX_ROWS));
        assert_eq!(meta.last().unwrap().method, Method::Delete);
        assert_eq!(meta.iter().map(|r| r.users).sum::<usize>(), 12_010);
        let google = requests(Platform::Google, &many, &many[..10], 100_000);
        assert!(
            google
                .iter()
                .all(|r| r.identifiers <= GOOGLE_MAX_IDENTIFIERS)
        );
        for r in &google {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let ops = v["operations"].as_array().unwrap();
            let creates = ops.iter().filter(|o| o.get("create").is_some()).count();
            assert!(creates == 0 || creates == ops.len(), "never mixed");
            assert!(ops.iter().all(|o| {
                let d = o.get("create").or(o.get("remove")).unwrap();
                d["userIdentifiers"].as_array().unwrap().len() <= GOOGLE_MAX_PER_USER
            }));
        }
    }
}
