//! Who is calling: the accounts (`[users.NAME]`), API tokens (`[tokens.NAME]`) and the
//! bearer tokens handed out at sign-in, shared by Arrow Flight SQL and `tessera.v1`.
//!
//! - **Sign-in** (the Flight handshake with HTTP basic credentials, or
//!   `tessera.v1.AuthService/Login`) checks the password against its Argon2id hash and
//!   returns a random 256-bit token valid for [`TOKEN_LIFETIME`].
//! - **Every other call** carries `authorization: Bearer TOKEN`: a sign-in token or an
//!   API token (looked up by its SHA-256 digest, so `tessera.toml` never holds it).
//!   Missing, malformed, forged and expired tokens are `UNAUTHENTICATED`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tessera_core::config::{Role, TokenSection, UserSection};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// How long a bearer token from sign-in stays valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// An Argon2id hash of a random password, verified against when the user name is
/// unknown so that timing does not tell which user names exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9b3fAUkGNq7cXQp4o0bCq3bWmE1x4b1pYQm0n2y3l5Q";

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user name, or `token:NAME` for an API token.
    pub user: String,
    pub role: Role,
    /// Sees personal data in clear.
    pub pii: bool,
    /// When a sign-in token stops being valid (`None`: an API token, valid until
    /// removed from `tessera.toml`).
    expires: Option<Instant>,
}

/// A successful sign-in.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub principal: Principal,
    pub expires_at: SystemTime,
}

/// Accounts, API tokens and live sign-in tokens.
#[derive(Debug)]
pub struct Auth {
    users: HashMap<String, UserSection>,
    /// SHA-256 hex digest → (name, section).
    api_tokens: HashMap<String, (String, TokenSection)>,
    sessions: Mutex<HashMap<String, Principal>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Auth {
    pub fn new(users: HashMap<String, UserSection>, tokens: HashMap<String, TokenSection>) -> Auth {
        Auth {
            users,
            api_tokens: tokens
                .into_iter()
                .map(|(name, t)| (t.sha256.to_ascii_lowercase(), (name, t)))
                .collect(),
            sessions: Mutex::default(),
        }
    }

    /// Checks `password` and mints a token. The error never says whether the user
    /// exists.
    pub fn login(&self, user: &str, password: &str) -> Result<Login, Status> {
        let account = self.users.get(user);
        let valid = match account {
            Some(a) => tessera_core::auth::verify_password(password, &a.password_hash),
            None => {
                tessera_core::auth::verify_password(password, DUMMY_HASH);
                false
            }
        };
        let Some(account) = account.filter(|_| valid) else {
            return Err(Status::unauthenticated("wrong user or password"));
        };
        let token = tessera_core::auth::random_token().map_err(Status::unavailable)?;
        let principal = Principal {
            user: user.to_owned(),
            role: account.role,
            pii: account.pii,
            expires: Some(Instant::now() + TOKEN_LIFETIME),
        };
        lock(&self.sessions).insert(token.clone(), principal.clone());
        Ok(Login {
            token,
            principal,
            expires_at: SystemTime::now() + TOKEN_LIFETIME,
        })
    }

    /// The caller of a request by its bearer token.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no credentials: sign in (tessera.v1.AuthService/Login or the Flight SQL handshake) and send `authorization: Bearer TOKEN`",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("expected an `authorization: Bearer TOKEN` header")
            })?
            .trim();
        {
            let mut sessions = lock(&self.sessions);
            if let Some(p) = sessions.get(token) {
                if p.expires.is_some_and(|e| e <= Instant::now()) {
                    sessions.remove(token);
                    return Err(Status::unauthenticated(
                        "the token has expired: sign in again",
                    ));
                }
                return Ok(p.clone());
            }
        }
        if !self.api_tokens.is_empty()
            && let Some((name, t)) = self
                .api_tokens
                .get(&tessera_core::auth::token_digest(token))
        {
            return Ok(Principal {
                user: format!("token:{name}"),
                role: t.role,
                pii: t.pii,
                expires: None,
            });
        }
        Err(Status::unauthenticated(
            "unknown or expired token: sign in again",
        ))
    }

    /// Drops expired sign-in tokens (called now and then).
    pub fn sweep(&self) {
        let now = Instant::now();
        lock(&self.sessions).retain(|_, p| p.expires.is_none_or(|e| e > now));
    }

    #[cfg(test)]
    fn expire_all(&self) {
        let past = Instant::now() - Duration::from_secs(1);
        for p in lock(&self.sessions).values_mut() {
            p.expires = Some(past);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn meta(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    fn auth() -> (Auth, String) {
        let users = HashMap::from([(
            "ana".to_owned(),
            UserSection {
                role: Role::Analyst,
                pii: false,
                password_hash: tessera_core::auth::hash_password("secret-pass").unwrap(),
            },
        )]);
        let token = tessera_core::auth::random_token().unwrap();
        let tokens = HashMap::from([(
            "crm".to_owned(),
            TokenSection {
                role: Role::Marketer,
                pii: true,
                sha256: tessera_core::auth::token_digest(&token),
            },
        )]);
        (Auth::new(users, tokens), token)
    }

    #[test]
    fn sign_in_api_tokens_and_refusals() {
        let (auth, api) = auth();
        assert_eq!(
            auth.login("ana", "wrong").unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.login("nobody", "secret-pass").unwrap_err().message(),
            "wrong user or password"
        );
        let login = auth.login("ana", "secret-pass").unwrap();
        let p = auth
            .authenticate(&meta(&format!("Bearer {}", login.token)))
            .unwrap();
        assert_eq!(
            (p.user.as_str(), p.role, p.pii),
            ("ana", Role::Analyst, false)
        );
        let p = auth.authenticate(&meta(&format!("Bearer {api}"))).unwrap();
        assert_eq!(
            (p.user.as_str(), p.role, p.pii),
            ("token:crm", Role::Marketer, true)
        );
        for bad in ["Bearer forged", "Basic YW5hOnNlY3JldA==", "Bearer "] {
            let e = auth.authenticate(&meta(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let e = auth.authenticate(&MetadataMap::new()).unwrap_err();
        assert!(e.message().contains("no credentials"), "{e}");
        auth.expire_all();
        let e = auth
            .authenticate(&meta(&format!("Bearer {}", login.token)))
            .unwrap_err();
        assert!(e.message().contains("expired"), "{e}");
        // API tokens do not expire.
        assert!(auth.authenticate(&meta(&format!("Bearer {api}"))).is_ok());
    }
}
