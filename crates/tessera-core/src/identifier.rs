//! Identifier normalization: the rules that make `" Jane.Doe@Example.COM "` and
//! `"jane.doe@example.com"` the same person, and `"(415) 555-0100"` and
//! `"+1 415 555 0100"` the same phone. The engine exposes these as SQL functions
//! (`normalize_email`, `normalize_phone`, `sha256_normalized`); identity stitching and
//! the ad-platform hashing use exactly the same code.

use sha2::{Digest, Sha256};

/// Trims and lower-cases an e-mail address. Returns `None` for values that cannot be
/// an address (empty, no `@`, nothing before or after it, inner whitespace).
pub fn normalize_email(value: &str) -> Option<String> {
    let v = value.trim();
    let (local, domain) = v.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || v.chars().any(char::is_whitespace) {
        return None;
    }
    Some(v.to_lowercase())
}

/// The region of an ISO 3166-1 alpha-2 code (case-insensitive) as libphonenumber knows
/// it; `None` for a code it has no numbering plan for.
pub fn phone_region(code: &str) -> Option<phonenumber::country::Id> {
    code.trim().to_ascii_uppercase().parse().ok()
}

/// Normalizes a phone number to E.164 (`+` and up to 15 digits) with libphonenumber's
/// numbering plans (the `phonenumber` crate), the same ones the ad-platform hashing uses.
///
/// International numbers (`+44 20 7946 0958`, `0044 20…`, `011 44 20…`, `+44 (0)20…`) are
/// taken as written. National numbers (`020 7946 0958`, `(415) 555-0100`) are read in
/// `default_region` (ISO code; `US` when `None`): the region's trunk prefix is dropped and
/// its country calling code prepended. Separators (spaces, dots, dashes, slashes,
/// parentheses) and extensions (`x123`, `ext. 123`, `#123`) are ignored; letters are
/// refused. Returns `None` when the value is not a valid number of its region — lengths
/// and number ranges as libphonenumber's metadata has them — or when a national number's
/// region is unknown.
pub fn normalize_phone(value: &str, default_region: Option<&str>) -> Option<String> {
    let mut v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    for marker in ["ext.", "ext", "x", "#"] {
        if let Some(i) = v.find(marker) {
            v.truncate(i);
        }
    }
    // "+44 (0)20 …": the (0) is the trunk prefix, shown for national callers.
    let v = v.replace("(0)", "");
    let mut digits = String::with_capacity(v.len() + 1);
    let mut plus = false;
    for (i, c) in v.trim().chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return None,
        }
    }
    if digits.is_empty() || digits.len() > 17 {
        return None;
    }
    if !plus {
        // The international access codes written most often, whatever the region.
        if let Some(rest) = digits.strip_prefix("00") {
            digits = rest.to_owned();
            plus = true;
        } else if let Some(rest) = digits.strip_prefix("011").filter(|r| r.len() > 10) {
            digits = rest.to_owned();
            plus = true;
        }
    }
    let number = if plus {
        digits.insert(0, '+');
        phonenumber::parse(None, &digits)
    } else {
        phonenumber::parse(Some(phone_region(default_region.unwrap_or("US"))?), &digits)
    }
    .ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// The kinds of value `sha256_normalized` knows, with the normalization applied
/// before hashing (the rules the large ad platforms publish for customer matching).
pub const HASH_KINDS: &[&str] = &[
    "email",
    "phone",
    "phone_digits",
    "first_name",
    "last_name",
    "name",
    "city",
    "state",
    "zip",
    "country",
    "external_id",
];

/// Error from [`sha256_normalized`] when the kind is not one of [`HASH_KINDS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown identifier kind {0:?} (expected one of: {kinds})", kinds = HASH_KINDS.join(", "))]
pub struct UnknownHashKind(pub String);

/// Normalizes `value` as `kind` the way ad platforms require, then hashes it with SHA-256
/// (lower-case hex). `Ok(None)` when the value normalizes to nothing.
///
/// - `email`: trimmed, lower-cased;
/// - `phone`: E.164 with `+` (`+14155550100`), national numbers read as US;
///   `phone_digits`: the same without `+` (`14155550100`);
/// - `first_name`, `last_name`, `name`, `city`, `state`: lower-cased, letters only
///   (punctuation and spaces removed);
/// - `zip`: lower-cased, spaces removed; `country`: lower-cased two-letter code;
/// - `external_id`: trimmed only.
pub fn sha256_normalized(kind: &str, value: &str) -> Result<Option<String>, UnknownHashKind> {
    let normalized = match kind.trim().to_ascii_lowercase().as_str() {
        "email" => normalize_email(value),
        "phone" => normalize_phone(value, None),
        "phone_digits" => {
            normalize_phone(value, None).map(|p| p.trim_start_matches('+').to_owned())
        }
        "first_name" | "last_name" | "name" | "city" | "state" => {
            let s: String = value
                .chars()
                .filter(|c| c.is_alphabetic())
                .flat_map(char::to_lowercase)
                .collect();
            (!s.is_empty()).then_some(s)
        }
        "zip" => {
            let s: String = value
                .chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_lowercase)
                .collect();
            (!s.is_empty()).then_some(s)
        }
        "country" => {
            let s = value.trim().to_lowercase();
            (s.len() == 2 && s.chars().all(|c| c.is_ascii_alphabetic())).then_some(s)
        }
        "external_id" => {
            let s = value.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        _ => return Err(UnknownHashKind(kind.to_owned())),
    };
    Ok(normalized.map(|n| hex_sha256(n.as_bytes())))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        s.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Jane.Doe@Example.COM "),
            Some("jane.doe@example.com".into())
        );
        assert_eq!(normalize_email("no-at-sign"), None);
        assert_eq!(normalize_email("@example.com"), None);
        assert_eq!(normalize_email("a b@example.com"), None);
        assert_eq!(normalize_email(""), None);
    }

    #[test]
    fn phones_us_default() {
        for p in [
            "(415) 555-0100",
            "415.555.0100",
            "1-415-555-0100",
            "+1 415 555 0100",
            "415-555-0100 x12",
        ] {
            assert_eq!(normalize_phone(p, None), Some("+14155550100".into()), "{p}");
        }
        assert_eq!(normalize_phone("555-0100", None), None);
        assert_eq!(normalize_phone("call me", None), None);
    }

    #[test]
    fn phones_other_regions() {
        assert_eq!(
            normalize_phone("020 7946 0958", Some("GB")),
            Some("+442079460958".into())
        );
        assert_eq!(
            normalize_phone("+44 (0)20 7946 0958", None),
            Some("+442079460958".into())
        );
        assert_eq!(
            normalize_phone("0044 20 7946 0958", Some("us")),
            Some("+442079460958".into())
        );
        assert_eq!(
            normalize_phone("030 123456", Some("DE")),
            Some("+4930123456".into())
        );
        assert_eq!(
            normalize_phone("06 12 34 56 78", Some("FR")),
            Some("+33612345678".into())
        );
        assert_eq!(normalize_phone("06 12 34 56 78", Some("XX")), None);
        // Regions the old hand-written table never had, trunk prefixes and all.
        assert_eq!(
            normalize_phone("090-1234-5678", Some("JP")),
            Some("+819012345678".into())
        );
        assert_eq!(
            normalize_phone("0812 3456 7890", Some("id")),
            Some("+6281234567890".into())
        );
        assert_eq!(
            normalize_phone("011 44 20 7946 0958", None),
            Some("+442079460958".into())
        );
        // A number of the right length outside any allocated range is not a number.
        assert_eq!(normalize_phone("+44 00 0000 0000", None), None);
        assert_eq!(normalize_phone("(415) 055-0100", None), None);
    }

    #[test]
    fn hashes() {
        let a = sha256_normalized("email", " Jane@Example.com").unwrap();
        let b = sha256_normalized("email", "jane@example.com").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            sha256_normalized("external_id", "abc").unwrap().unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_normalized("email", "nope").unwrap(), None);
        assert!(sha256_normalized("ssn", "1").is_err());
        assert_eq!(
            sha256_normalized("phone", "(415) 555-0100").unwrap(),
            Some(hex_sha256(b"+14155550100"))
        );
        assert_eq!(
            sha256_normalized("phone_digits", "(415) 555-0100").unwrap(),
            Some(hex_sha256(b"14155550100"))
        );
    }
}
