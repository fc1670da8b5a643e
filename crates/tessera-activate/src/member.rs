//! What a sync sends: one member's change, its stable `messageId`, and for ad
//! platforms the identifiers it was sent with. The ledger stores these; every
//! destination reads them.

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Entered or exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    Entered,
    Exited,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Entered => "entered",
            Change::Exited => "exited",
        }
    }

    pub fn parse(s: &str) -> Option<Change> {
        match s {
            "entered" => Some(Change::Entered),
            "exited" => Some(Change::Exited),
            _ => None,
        }
    }
}

/// One member's change to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub profile_id: String,
    pub change: Change,
    pub refresh_version: i64,
    /// When it changed (microseconds since the epoch).
    pub changed_at: i64,
    /// The profile an exit was merged into, if that is why it left.
    pub merged_into: Option<String>,
    /// Ad platforms: the hashed identifiers sent (for an exit: those its entry sent),
    /// taken when the run is planned (boxed: most members have none, and a million
    /// members are moved around in one vector).
    pub identifiers: Option<Box<Identifiers>>,
}

/// One member's identifiers as sent: hashed where the platform hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifiers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

impl Identifiers {
    /// Whether there is anything to match on.
    pub fn is_empty(&self) -> bool {
        self.email.is_empty()
            && self.phone.is_empty()
            && self.external_id.is_none()
            && !self.has_address()
    }

    /// Google's address match needs first and last name, country and zip.
    pub fn has_address(&self) -> bool {
        self.first_name.is_some()
            && self.last_name.is_some()
            && self.country.is_some()
            && self.zip.is_some()
    }
}

/// The `messageId` of one member's change at one destination: the same on every
/// attempt, so receivers deduplicate retries.
pub fn message_id(destination: &str, segment: &str, m: &Member) -> String {
    let mut out = [0u8; MESSAGE_ID_LEN];
    MessageIds::new(destination, segment).write(m, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Characters of a `messageId`: the hex of 16 bytes of SHA-256.
pub const MESSAGE_ID_LEN: usize = 32;

/// [`message_id`]s of many members of one destination and segment, written into
/// fixed-width slots without allocating: the hash of the common prefix is taken once.
#[derive(Clone)]
pub struct MessageIds {
    prefix: sha2::Sha256,
}

impl MessageIds {
    pub fn new(destination: &str, segment: &str) -> MessageIds {
        let mut prefix = sha2::Sha256::new();
        for part in [destination, segment] {
            prefix.update(part.as_bytes());
            prefix.update(b"\x1f");
        }
        MessageIds { prefix }
    }

    /// `m`'s id, as lower-case hex, into `out` ([`MESSAGE_ID_LEN`] bytes).
    pub fn write(&self, m: &Member, out: &mut [u8]) {
        let mut h = self.prefix.clone();
        // An i64 takes at most 20 characters.
        let mut number = [0u8; 20];
        let mut rest = &mut number[..];
        let _ = std::io::Write::write_fmt(&mut rest, format_args!("{}", m.refresh_version));
        let len = 20 - rest.len();
        h.update(&number[..len]);
        h.update(b"\x1f");
        h.update(m.profile_id.as_bytes());
        h.update(b"\x1f");
        h.update(m.change.as_str().as_bytes());
        hex_into(&h.finalize()[..MESSAGE_ID_LEN / 2], out);
    }
}

/// Lower-case hex of `bytes` into the first `2 * bytes.len()` bytes of `out`.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_the_documented_hash() {
        for (version, change) in [
            (0, Change::Entered),
            (7, Change::Exited),
            (-12, Change::Entered),
            (i64::MAX, Change::Exited),
            (i64::MIN, Change::Entered),
        ] {
            let m = Member {
                profile_id: "p-1".into(),
                change,
                refresh_version: version,
                changed_at: 0,
                merged_into: None,
                identifiers: None,
            };
            let text = format!(
                "dest\u{1f}seg\u{1f}{version}\u{1f}p-1\u{1f}{}",
                change.as_str()
            );
            let expected = hex(&sha2::Sha256::digest(text.as_bytes())[..16]);
            assert_eq!(message_id("dest", "seg", &m), expected, "{version}");
        }
    }
}
