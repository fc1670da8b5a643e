//! Destinations as delivery needs them: `[destinations.NAME]` with its secrets read from
//! the environment (never from the file, never printed), its durations parsed, its
//! retry policy, and for files the object store it writes to.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tessera_core::config::{DestinationKind, DestinationSection, parse_duration};

use crate::error::{ActivateError, Result};
use crate::file::Target;

/// One destination, ready to send to.
#[derive(Clone)]
pub struct Destination {
    pub name: String,
    pub kind: DestinationKind,
    pub url: String,
    /// Standard Webhooks keys (decoded), every one signing each attempt.
    pub(crate) secrets: Vec<Vec<u8>>,
    /// The key of Segment's legacy `X-Signature`, if configured.
    pub(crate) legacy_secret: Option<Vec<u8>>,
    /// Extra headers (names lower-cased), secrets among them.
    pub(crate) headers: Vec<(String, String)>,
    pub batch_size: usize,
    pub max_batch_bytes: usize,
    pub concurrency: usize,
    /// Least time between the starts of two batches (`None`: no limit).
    pub min_interval: Option<Duration>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Consent categories a member needs (all of them).
    pub consent: Vec<String>,
    /// Where a `file` destination writes.
    pub(crate) file: Option<Arc<Target>>,
    /// The ad platform a destination is, if it is one.
    pub platform: Option<crate::ads::Platform>,
    /// Ad platforms: the region of national phone numbers.
    pub default_region: Option<String>,
    /// Event streams: the query over `events` that selects and shapes what is sent.
    pub query: Option<String>,
    /// Event streams: start with the events committed before the first run.
    pub from_beginning: bool,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets and header values stay out of logs.
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// When a failed batch is tried again, and when it is given up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
    /// Dead-lettered once tried this many times *and* for `window`.
    pub max_attempts: u32,
    pub window: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` after `attempt` failed (1-based):
    /// exponential from `min`, capped at `max`, with jitter (half to all of it), or the
    /// server's `Retry-After` when it gave one.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(after) = retry_after {
            return after;
        }
        let exp = self
            .min
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
        let capped = exp.min(self.max);
        capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// Whether a batch first tried `tried_for` ago, after `attempts` attempts, is given
    /// up.
    pub fn exhausted(&self, attempts: u32, tried_for: Duration) -> bool {
        attempts >= self.max_attempts && tried_for >= self.window
    }
}

fn duration(name: &str, key: &str, value: &str) -> Result<Duration> {
    parse_duration(value).map_err(|message| ActivateError::BadSecret {
        key: format!("destinations.{name}.{key}"),
        message,
    })
}

/// A Standard Webhooks secret: `whsec_` + base64 of the key (the prefix optional).
pub fn webhook_key(text: &str) -> std::result::Result<Vec<u8>, String> {
    let b64 = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .map_err(|_| {
            "not a Standard Webhooks secret: expected whsec_ followed by base64".to_owned()
        })?;
    if key.len() < 16 {
        return Err("the secret is shorter than 16 bytes".into());
    }
    Ok(key)
}

impl Destination {
    /// Where a `file` destination writes (`None` for other kinds).
    pub fn file_target(&self) -> Option<&Arc<Target>> {
        self.file.as_ref()
    }

    /// `section` with its variables read through `env`; a file destination's relative
    /// path is taken from `dir` (the project folder).
    pub fn new(
        name: &str,
        section: &DestinationSection,
        env: &dyn Fn(&str) -> Option<String>,
        dir: &Path,
    ) -> Result<Destination> {
        let read = |key: &str, var: &str| {
            env(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ActivateError::MissingSecret {
                    key: format!("destinations.{name}.{key}"),
                    var: var.to_owned(),
                })
        };
        let mut secrets = Vec::new();
        for var in &section.secret_env {
            let text = read("secret_env", var)?;
            secrets.push(
                webhook_key(&text).map_err(|message| ActivateError::BadSecret {
                    key: format!("destinations.{name}.secret_env ({var})"),
                    message,
                })?,
            );
        }
        let legacy_secret = match &section.legacy_secret_env {
            Some(var) => Some(read("legacy_secret_env", var)?.into_bytes()),
            None => None,
        };
        let mut headers: Vec<(String, String)> = section
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        for (header, var) in &section.headers_env {
            headers.push((header.to_ascii_lowercase(), read("headers_env", var)?));
        }
        for (k, v) in &headers {
            let bad = |message: &str| ActivateError::BadHeader {
                destination: name.to_owned(),
                message: format!("{k}: {message}"),
            };
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| bad("not a header name"))?;
            reqwest::header::HeaderValue::from_str(v).map_err(|_| bad("not a header value"))?;
        }
        Ok(Destination {
            name: name.to_owned(),
            kind: section.kind,
            url: section.url.clone(),
            secrets,
            legacy_secret,
            headers,
            batch_size: section.batch_size(),
            max_batch_bytes: section.max_batch_bytes,
            concurrency: section.concurrency,
            min_interval: section
                .rate_limit
                .map(|per_second| Duration::from_secs_f64(1.0 / per_second)),
            timeout: duration(name, "timeout", &section.timeout)?,
            retry: RetryPolicy {
                min: duration(name, "retry_min", &section.retry_min)?,
                max: duration(name, "retry_max", &section.retry_max)?,
                max_attempts: section.max_attempts,
                window: duration(name, "retry_window", &section.retry_window)?,
            },
            consent: section.consent.clone(),
            file: match section.kind {
                DestinationKind::File => Some(Arc::new(Target::new(name, section, dir)?)),
                _ => None,
            },
            platform: crate::ads::Platform::of(section.kind),
            default_region: section.default_region.clone(),
            query: section.query.clone(),
            from_beginning: section.from_beginning,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            min: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_attempts: 3,
            window: Duration::from_secs(60),
        };
        assert_eq!(p.backoff(1, None, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(3, None, 1.0), Duration::from_secs(4));
        assert_eq!(p.backoff(9, None, 1.0), Duration::from_secs(10));
        assert_eq!(
            p.backoff(3, None, 0.0),
            Duration::from_secs(2),
            "half at least"
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(2)), 0.0),
            Duration::from_secs(2)
        );
        assert!(!p.exhausted(3, Duration::from_secs(59)), "the window too");
        assert!(
            !p.exhausted(2, Duration::from_secs(600)),
            "the attempts too"
        );
        assert!(p.exhausted(3, Duration::from_secs(60)));
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_checked() {
        let section: DestinationSection = toml::from_str(
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = [\"HOOK_SECRET\"]\nheaders_env = { Authorization = \"HOOK_TOKEN\" }\n",
        )
        .unwrap();
        let env = |v: &str| match v {
            "HOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            "HOOK_TOKEN" => Some("Bearer abc".to_owned()),
            _ => None,
        };
        let d = Destination::new("crm", &section, &env, Path::new(".")).unwrap();
        assert_eq!(d.secrets.len(), 1);
        assert_eq!(
            d.headers,
            vec![("authorization".into(), "Bearer abc".into())]
        );
        assert!(!format!("{d:?}").contains("Bearer"), "no secret in Debug");
        let e = Destination::new("crm", &section, &|_| None, Path::new(".")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "destinations.crm.secret_env: environment variable HOOK_SECRET is not set"
        );
        let e = Destination::new(
            "crm",
            &section,
            &|v| (v == "HOOK_SECRET").then(|| "not base64 at all!".into()),
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.to_string().contains("whsec_"), "{e}");
    }
}
