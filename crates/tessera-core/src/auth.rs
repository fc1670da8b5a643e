//! Secrets of the gRPC services: passwords of `[users.NAME]`, stored only as Argon2id
//! hashes in PHC format and checked in constant time by the `argon2` crate; random
//! bearer and API tokens, of which `[tokens.NAME]` stores only the SHA-256 digest.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::{CoreError, Result};
use crate::identifier::hex;

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(CoreError::Randomness)?;
    Ok(bytes)
}

/// A fresh random 256-bit token as 64 hex digits.
pub fn random_token() -> Result<String> {
    Ok(hex(&random_bytes::<32>()?))
}

/// The hex SHA-256 digest of a token, as `[tokens.NAME] sha256` stores it.
pub fn token_digest(token: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// The Argon2id hash (PHC string) of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String> {
    let bytes = random_bytes::<16>()?;
    let salt =
        SaltString::encode_b64(&bytes).map_err(|e| CoreError::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CoreError::PasswordHash(e.to_string()))
}

/// Whether `password` matches the stored `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$") && a != b, "salted");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("correct hors", &a));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_random_and_digests_known() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token().unwrap());
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
