//! Who is calling: the accounts (`[users.NAME]`), API tokens (`[tokens.NAME]`) and the
//! bearer tokens handed out at sign-in, shared by Arrow Flight SQL and `tessera.v1`.
//!
//! - **Sign-in** (the Flight handshake with HTTP basic credentials, or
//!   `tessera.v1.AuthService/Login`) checks the password against its Argon2id hash and
//!   returns a random 256-bit token valid for [`TOKEN_LIFETIME`].
//! - **Every other call** carries `authorization: Bearer TOKEN`: a sign-in token or an
//!   API token (looked up by its SHA-256 digest, so `tessera.toml` never holds it).
//!   Missing, malformed, forged and expired tokens are `UNAUTHENTICATED`.
//! - **Revocation takes effect at once**: the accounts are reloaded when `tessera.toml`
//!   changes ([`Auth::reload`]); a sign-in token carries only the user's name, and each
//!   call reads the account as it is now, so a disabled (`tessera user disable`) or
//!   removed user, and a revoked API token (`tessera token revoke`), are refused on
//!   their next call, and a changed role or grant applies to live sessions.
//! - **Guessing is slowed down**: after [`FREE_FAILURES`] failed sign-ins for a user (or
//!   [`FREE_FAILURES_PER_ADDRESS`] from one address) further attempts are refused
//!   without checking the password for a delay that doubles with each failure, from 1 s
//!   up to [`MAX_DELAY`] (`RESOURCE_EXHAUSTED`, audited as `throttled`). A successful
//!   sign-in clears the user's count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tessera_core::config::{Role, TokenSection, UserSection};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// How long a bearer token from sign-in stays valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Failed sign-ins of one user before attempts are delayed.
pub const FREE_FAILURES: u32 = 3;
/// Failed sign-ins from one address (any users) before attempts are delayed.
pub const FREE_FAILURES_PER_ADDRESS: u32 = 10;
/// The longest delay between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

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
    /// Sees only the profiles this condition over `profiles` admits.
    pub rows: Option<Arc<str>>,
}

impl Principal {
    /// What the caller may see in SQL and in profile answers.
    pub fn access(&self) -> tessera_engine::Access {
        tessera_engine::Access {
            pii: self.pii,
            audit_log: self.role == Role::Admin,
            rows: self.rows.clone(),
        }
    }
}

/// A successful sign-in.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub principal: Principal,
    pub expires_at: SystemTime,
}

/// The accounts and API tokens of `tessera.toml`, as last loaded.
#[derive(Debug, Default)]
struct Accounts {
    users: HashMap<String, UserSection>,
    /// SHA-256 hex digest → (name, section).
    api_tokens: HashMap<String, (String, TokenSection)>,
}

impl Accounts {
    fn new(users: HashMap<String, UserSection>, tokens: HashMap<String, TokenSection>) -> Self {
        Accounts {
            users,
            api_tokens: tokens
                .into_iter()
                .map(|(name, t)| (t.sha256.to_ascii_lowercase(), (name, t)))
                .collect(),
        }
    }
}

/// A live sign-in token: whose, and until when.
#[derive(Debug, Clone)]
struct Session {
    user: String,
    expires: Instant,
}

/// Failed sign-ins of one user or address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long after the last failure the next attempt must wait.
    fn delay(&self, free: u32) -> Duration {
        if self.count < free {
            return Duration::ZERO;
        }
        let doublings = (self.count - free).min(16);
        (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_DELAY)
    }
}

/// The distinct row filters of `users` and `tokens`, sorted.
pub fn row_filters(
    users: &HashMap<String, UserSection>,
    tokens: &HashMap<String, TokenSection>,
) -> Vec<Arc<str>> {
    distinct_filters(
        users
            .values()
            .filter_map(|u| u.rows.as_deref())
            .chain(tokens.values().filter_map(|t| t.rows.as_deref())),
    )
}

fn distinct_filters<'a>(filters: impl Iterator<Item = &'a str>) -> Vec<Arc<str>> {
    let mut filters: Vec<Arc<str>> = filters.map(Arc::from).collect();
    filters.sort();
    filters.dedup();
    filters
}

/// Accounts, API tokens and live sign-in tokens.
#[derive(Debug)]
pub struct Auth {
    accounts: RwLock<Arc<Accounts>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// `user:NAME` / `addr:IP` → failures.
    failures: Mutex<HashMap<String, Failures>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a sign-in was refused.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: Status,
    /// How the audit log records it: `unauthenticated` or `throttled`.
    pub audit: &'static str,
}

impl Auth {
    pub fn new(users: HashMap<String, UserSection>, tokens: HashMap<String, TokenSection>) -> Auth {
        Auth {
            accounts: RwLock::new(Arc::new(Accounts::new(users, tokens))),
            sessions: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    fn accounts(&self) -> Arc<Accounts> {
        self.accounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the accounts and API tokens (after `tessera.toml` changed). Sessions of
    /// users no longer there, or disabled, end; live sessions take the new role and
    /// grants on their next call.
    pub fn reload(
        &self,
        users: HashMap<String, UserSection>,
        tokens: HashMap<String, TokenSection>,
    ) {
        let accounts = Arc::new(Accounts::new(users, tokens));
        lock(&self.sessions)
            .retain(|_, s| accounts.users.get(&s.user).is_some_and(|u| !u.disabled));
        *self.accounts.write().unwrap_or_else(|p| p.into_inner()) = accounts;
    }

    /// The row filters of every account and token (to prepare the profile index).
    pub fn row_filters(&self) -> Vec<Arc<str>> {
        let accounts = self.accounts();
        distinct_filters(
            accounts
                .users
                .values()
                .filter_map(|u| u.rows.as_deref())
                .chain(
                    accounts
                        .api_tokens
                        .values()
                        .filter_map(|(_, t)| t.rows.as_deref()),
                ),
        )
    }

    /// The wait left before `key` may try again, if any.
    fn throttled(&self, keys: &[(String, u32)], now: Instant) -> Option<Duration> {
        let failures = lock(&self.failures);
        keys.iter()
            .filter_map(|(key, free)| {
                let f = failures.get(key)?;
                let until = f.last + f.delay(*free);
                (until > now).then(|| until - now)
            })
            .max()
    }

    fn failed(&self, keys: &[(String, u32)], now: Instant) {
        let mut failures = lock(&self.failures);
        for (key, _) in keys {
            let f = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            f.count += 1;
            f.last = now;
        }
    }

    /// Checks `password` and mints a token. The error never says whether the user
    /// exists. `from` is the caller's address (throttled on its own count).
    pub fn login(
        &self,
        user: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<Login, Refused> {
        let now = Instant::now();
        let mut keys = vec![(format!("user:{user}"), FREE_FAILURES)];
        if let Some(ip) = from {
            keys.push((format!("addr:{ip}"), FREE_FAILURES_PER_ADDRESS));
        }
        if let Some(wait) = self.throttled(&keys, now) {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Refused {
                status: Status::resource_exhausted(format!(
                    "too many failed sign-ins for this user or from this address: try again in {seconds} s"
                )),
                audit: "throttled",
            });
        }
        let accounts = self.accounts();
        let account = accounts.users.get(user);
        let valid = match account {
            Some(a) => tessera_core::auth::verify_password(password, &a.password_hash),
            None => {
                tessera_core::auth::verify_password(password, DUMMY_HASH);
                false
            }
        };
        let Some(account) = account.filter(|_| valid) else {
            self.failed(&keys, now);
            return Err(Refused {
                status: Status::unauthenticated("wrong user or password"),
                audit: "unauthenticated",
            });
        };
        lock(&self.failures).remove(&keys[0].0);
        if account.disabled {
            return Err(Refused {
                status: Status::unauthenticated(format!(
                    "user {user} is disabled (tessera user enable {user})"
                )),
                audit: "unauthenticated",
            });
        }
        self.open_session(user, account)
    }

    /// Signs `user` in without a password, for whom an identity provider vouched (the
    /// console's single sign-on): the account must exist and be enabled.
    pub fn sign_in_as(&self, user: &str) -> Result<Login, Refused> {
        let accounts = self.accounts();
        let Some(account) = accounts.users.get(user) else {
            return Err(Refused {
                status: Status::unauthenticated(format!(
                    "the identity provider signed in {user}, who has no Tessera account: add one with `tessera user add {user} --role ROLE`"
                )),
                audit: "unauthenticated",
            });
        };
        if account.disabled {
            return Err(Refused {
                status: Status::unauthenticated(format!(
                    "user {user} is disabled (tessera user enable {user})"
                )),
                audit: "unauthenticated",
            });
        }
        self.open_session(user, account)
    }

    /// A new sign-in token for `user` (whose `account` it is).
    fn open_session(&self, user: &str, account: &UserSection) -> Result<Login, Refused> {
        let token = tessera_core::auth::random_token().map_err(|e| Refused {
            status: Status::unavailable(e.to_string()),
            audit: "failed",
        })?;
        lock(&self.sessions).insert(
            token.clone(),
            Session {
                user: user.to_owned(),
                expires: Instant::now() + TOKEN_LIFETIME,
            },
        );
        Ok(Login {
            token,
            principal: Principal {
                user: user.to_owned(),
                role: account.role,
                pii: account.pii,
                rows: account.rows.as_deref().map(Arc::from),
            },
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
        self.authenticate_token(token)
    }

    /// Ends the sign-in of `token` (the console's sign-out); unknown tokens are ignored.
    pub fn logout(&self, token: &str) {
        lock(&self.sessions).remove(token);
    }

    /// The caller holding `token`: a sign-in token (from the gRPC sign-in or the
    /// console's session cookie) or an API token.
    pub fn authenticate_token(&self, token: &str) -> Result<Principal, Status> {
        let session = {
            let mut sessions = lock(&self.sessions);
            match sessions.get(token) {
                Some(s) if s.expires <= Instant::now() => {
                    sessions.remove(token);
                    return Err(Status::unauthenticated(
                        "the token has expired: sign in again",
                    ));
                }
                other => other.cloned(),
            }
        };
        let accounts = self.accounts();
        if let Some(session) = session {
            return match accounts.users.get(&session.user) {
                Some(u) if !u.disabled => Ok(Principal {
                    user: session.user,
                    role: u.role,
                    pii: u.pii,
                    rows: u.rows.as_deref().map(Arc::from),
                }),
                _ => {
                    lock(&self.sessions).remove(token);
                    Err(Status::unauthenticated(format!(
                        "user {} is disabled or no longer exists",
                        session.user
                    )))
                }
            };
        }
        if !accounts.api_tokens.is_empty()
            && let Some((name, t)) = accounts
                .api_tokens
                .get(&tessera_core::auth::token_digest(token))
        {
            return Ok(Principal {
                user: format!("token:{name}"),
                role: t.role,
                pii: t.pii,
                rows: t.rows.as_deref().map(Arc::from),
            });
        }
        Err(Status::unauthenticated(
            "unknown or expired token: sign in again",
        ))
    }

    /// Drops expired sign-in tokens and failure counts old enough not to matter.
    pub fn sweep(&self) {
        let now = Instant::now();
        lock(&self.sessions).retain(|_, s| s.expires > now);
        lock(&self.failures).retain(|_, f| now.duration_since(f.last) < MAX_DELAY * 2);
    }

    #[cfg(test)]
    fn expire_all(&self) {
        let past = Instant::now() - Duration::from_secs(1);
        for s in lock(&self.sessions).values_mut() {
            s.expires = past;
        }
    }

    #[cfg(test)]
    fn age_failures(&self, by: Duration) {
        for f in lock(&self.failures).values_mut() {
            f.last -= by;
        }
    }
}

#[cfg(test)]
mod tests;
