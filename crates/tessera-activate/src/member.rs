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
    /// taken when the run is planned.
    pub identifiers: Option<Identifiers>,
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
    let digest = sha2::Sha256::digest(
        format!(
            "{destination}\u{1f}{segment}\u{1f}{}\u{1f}{}\u{1f}{}",
            m.refresh_version,
            m.profile_id,
            m.change.as_str()
        )
        .as_bytes(),
    );
    hex(&digest[..16])
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}
