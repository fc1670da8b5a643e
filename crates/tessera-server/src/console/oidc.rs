//! Single sign-on to the console through OpenID Connect: the authorization code flow
//! with PKCE (`S256`), a `state` per attempt and a `nonce` checked in the ID token.
//!
//! 1. `/ui/oidc/start` reads the provider's discovery document (once), remembers the
//!    attempt (state → code verifier, nonce, where to go after) for
//!    [`ATTEMPT_LIFETIME`], and sends the browser to the authorization endpoint.
//! 2. `/ui/oidc/callback` takes the attempt by its `state` (an unknown or stale one is
//!    refused), exchanges the code at the token endpoint (client secret by HTTP basic
//!    auth, the verifier), and checks the ID token's `iss`, `aud`, `exp` and `nonce`.
//!    The ID token comes straight from the token endpoint over the back channel, which
//!    OpenID Connect Core (3.1.3.7) accepts in place of checking its signature; an
//!    issuer must therefore be `https` (plain `http` only on loopback).
//! 3. The claim `[server.oidc] user_claim` (from the ID token, else the userinfo
//!    endpoint) names the Tessera account; its role and grants apply, exactly as after
//!    a password sign-in. No account, a disabled one, an `ingest` or row-filtered one:
//!    refused, with the reason on the page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;
use tessera_core::config::OidcSection;

/// How long a started sign-in may take.
pub const ATTEMPT_LIFETIME: Duration = Duration::from_secs(600);
/// Attempts kept at most (older ones are dropped first).
const MAX_ATTEMPTS: usize = 10_000;

/// Where the provider's endpoints are.
#[derive(Debug, Clone)]
struct Discovery {
    issuer: String,
    authorization: String,
    token: String,
    userinfo: Option<String>,
}

/// A sign-in under way.
#[derive(Debug, Clone)]
pub struct Attempt {
    verifier: String,
    nonce: String,
    pub next: String,
    redirect: String,
    started: Instant,
}

/// The provider and the sign-ins under way.
pub struct Oidc {
    config: OidcSection,
    secret: Option<String>,
    client: reqwest::Client,
    discovery: tokio::sync::Mutex<Option<Discovery>>,
    attempts: Mutex<HashMap<String, Attempt>>,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `url` may be an issuer: `https`, or `http` on a loopback host.
fn acceptable_issuer(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

impl Oidc {
    /// The provider of `config`; the client secret is read from its environment
    /// variable now. An issuer that is neither `https` nor loopback is refused.
    pub fn new(config: OidcSection) -> Result<Oidc, String> {
        if !acceptable_issuer(&config.issuer) {
            return Err(format!(
                "[server.oidc] issuer = {:?}: must be an https URL (http only on loopback)",
                config.issuer
            ));
        }
        let secret = std::env::var(&config.client_secret_env).ok();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Oidc {
            config,
            secret,
            client,
            discovery: tokio::sync::Mutex::new(None),
            attempts: Mutex::default(),
        })
    }

    pub fn label(&self) -> &str {
        &self.config.label
    }

    async fn discovery(&self) -> Result<Discovery, String> {
        let mut cached = self.discovery.lock().await;
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let doc: Value = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("the identity provider's {url} cannot be read: {e}"))?
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("{url} is not a discovery document: {e}"))?;
        let field = |k: &str| doc[k].as_str().map(str::to_owned);
        let d = Discovery {
            issuer: field("issuer").ok_or(format!("{url} names no issuer"))?,
            authorization: field("authorization_endpoint")
                .ok_or(format!("{url} names no authorization_endpoint"))?,
            token: field("token_endpoint").ok_or(format!("{url} names no token_endpoint"))?,
            userinfo: field("userinfo_endpoint"),
        };
        if d.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(format!(
                "{url} says its issuer is {}, not {}",
                d.issuer, self.config.issuer
            ));
        }
        *cached = Some(d.clone());
        Ok(d)
    }

    /// Starts a sign-in: the URL to send the browser to. `host` is the address the
    /// browser used (for the default redirect URL).
    pub async fn start(&self, host: &str, secure: bool, next: String) -> Result<String, String> {
        let d = self.discovery().await?;
        let random = || tessera_core::auth::random_token().map_err(|e| e.to_string());
        let (state, nonce, verifier) = (random()?, random()?, random()?);
        let challenge = b64url(&sha2::Sha256::digest(verifier.as_bytes()));
        let redirect = self.config.redirect_url.clone().unwrap_or_else(|| {
            format!(
                "{}://{host}/ui/oidc/callback",
                if secure { "https" } else { "http" }
            )
        });
        {
            let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            attempts.retain(|_, a| a.started.elapsed() < ATTEMPT_LIFETIME);
            if attempts.len() >= MAX_ATTEMPTS
                && let Some(oldest) = attempts
                    .iter()
                    .min_by_key(|(_, a)| a.started)
                    .map(|(k, _)| k.clone())
            {
                attempts.remove(&oldest);
            }
            attempts.insert(
                state.clone(),
                Attempt {
                    verifier,
                    nonce: nonce.clone(),
                    next,
                    redirect: redirect.clone(),
                    started: Instant::now(),
                },
            );
        }
        let query = [
            ("response_type", "code"),
            ("client_id", self.config.client_id.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("scope", "openid profile email"),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let mut url = reqwest::Url::parse(&d.authorization)
            .map_err(|e| format!("authorization_endpoint {}: {e}", d.authorization))?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(url.to_string())
    }

    /// The attempt of `state`, taken (a state is good once).
    pub fn take(&self, state: &str) -> Option<Attempt> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        attempts
            .remove(state)
            .filter(|a| a.started.elapsed() < ATTEMPT_LIFETIME)
    }

    /// Finishes a sign-in: exchanges `code` and returns the account name the provider
    /// vouches for.
    pub async fn finish(&self, attempt: &Attempt, code: &str) -> Result<String, String> {
        let d = self.discovery().await?;
        let mut request = self.client.post(&d.token).form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", attempt.redirect.as_str()),
            ("code_verifier", attempt.verifier.as_str()),
            ("client_id", self.config.client_id.as_str()),
        ]);
        if let Some(secret) = &self.secret {
            request = request.basic_auth(&self.config.client_id, Some(secret));
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("the token endpoint cannot be reached: {e}"))?;
        let status = response.status();
        let body: Value = response
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("the token endpoint answered {status} without JSON: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "the identity provider refused the code ({status}): {} {}",
                body["error"].as_str().unwrap_or_default(),
                body["error_description"].as_str().unwrap_or_default()
            ));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or("the token endpoint returned no id_token")?;
        let claims = id_token_claims(id_token)?;
        check_claims(
            &claims,
            &d.issuer,
            &self.config.client_id,
            &attempt.nonce,
            chrono::Utc::now().timestamp(),
        )?;
        let claim = &self.config.user_claim;
        if let Some(user) = claims[claim.as_str()].as_str() {
            return Ok(user.to_owned());
        }
        // Not in the ID token: ask the userinfo endpoint.
        let (Some(userinfo), Some(access)) = (&d.userinfo, body["access_token"].as_str()) else {
            return Err(format!(
                "the identity provider says nothing of claim {claim}"
            ));
        };
        let info: Value = self
            .client
            .get(userinfo)
            .bearer_auth(access)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("the userinfo endpoint: {e}"))?
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("the userinfo endpoint answered no JSON: {e}"))?;
        if info["sub"] != claims["sub"] {
            return Err("the userinfo endpoint speaks of another person than the ID token".into());
        }
        info[claim.as_str()]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the identity provider says nothing of claim {claim}"))
    }
}

/// The claims of a JWT (its middle part).
fn id_token_claims(token: &str) -> Result<Value, String> {
    let payload = token.split('.').nth(1).ok_or("the id_token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the id_token's claims are not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the id_token's claims are not JSON: {e}"))
}

/// Checks issuer, audience, expiry and nonce of ID-token claims (`now`: unix seconds).
fn check_claims(
    claims: &Value,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: i64,
) -> Result<(), String> {
    if claims["iss"].as_str().map(|s| s.trim_end_matches('/')) != Some(issuer.trim_end_matches('/'))
    {
        return Err(format!(
            "the id_token was issued by {}, not {issuer}",
            claims["iss"]
        ));
    }
    let audience_ok = match &claims["aud"] {
        Value::String(a) => a == client_id,
        Value::Array(all) => all.iter().any(|a| a == client_id),
        _ => false,
    };
    if !audience_ok {
        return Err(format!(
            "the id_token is meant for {}, not {client_id}",
            claims["aud"]
        ));
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp + 60 < now) {
        return Err("the id_token has expired".into());
    }
    if claims["nonce"].as_str() != Some(nonce) {
        return Err("the id_token's nonce is not this sign-in's (a replayed token)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn issuers_must_be_https_or_loopback() {
        assert!(acceptable_issuer("https://login.example.com/realms/a"));
        assert!(acceptable_issuer("http://127.0.0.1:9000"));
        assert!(acceptable_issuer("http://localhost/x"));
        assert!(!acceptable_issuer("http://login.example.com"));
        assert!(!acceptable_issuer("http://127.0.0.1.evil.example"));
        assert!(!acceptable_issuer("ftp://x"));
    }

    #[test]
    fn id_token_claims_are_checked() {
        let good = json!({"iss": "https://idp", "aud": "tessera", "exp": 2000, "nonce": "n"});
        assert!(check_claims(&good, "https://idp/", "tessera", "n", 1000).is_ok());
        let refused = |claims: Value, why: &str| {
            let e = check_claims(&claims, "https://idp", "tessera", "n", 1000).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        refused(
            json!({"iss": "https://other", "aud": "tessera", "exp": 2000, "nonce": "n"}),
            "issued by",
        );
        refused(
            json!({"iss": "https://idp", "aud": ["x"], "exp": 2000, "nonce": "n"}),
            "meant for",
        );
        refused(
            json!({"iss": "https://idp", "aud": "tessera", "exp": 10, "nonce": "n"}),
            "expired",
        );
        refused(
            json!({"iss": "https://idp", "aud": "tessera", "exp": 2000, "nonce": "m"}),
            "nonce",
        );
        let token = format!("x.{}.y", b64url(good.to_string().as_bytes()));
        assert_eq!(id_token_claims(&token).unwrap(), good);
        assert!(id_token_claims("nodots").is_err());
    }
}
