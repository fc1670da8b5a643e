//! The 128-bit hash message ids (and refused payloads) are remembered by.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Two independent 64-bit SipHashes of `id`: collisions are negligible at billions of ids.
pub(crate) fn id_hash(id: &str) -> u128 {
    let mut a = DefaultHasher::new();
    id.hash(&mut a);
    let mut b = DefaultHasher::new();
    0xA5u8.hash(&mut b);
    id.hash(&mut b);
    ((a.finish() as u128) << 64) | b.finish() as u128
}
