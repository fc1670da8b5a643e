//! The project configuration, `tessera.toml`.
//!
//! A Tessera project is a folder the user owns and version-controls, the way a dbt
//! project is owned: `tessera.toml` plus `sql/`. Values come from built-in defaults,
//! then the file, then `TESSERA_*` environment variables, and are validated once with
//! messages that name the key at fault.
//!
//! ```toml
//! [lake]
//! url = "tessera-data"            # a path relative to the project, or s3://, gs://, az://
//!
//! [sources.web]
//! write_key = "wk_..."
//!
//! [server]
//! http = "127.0.0.1:8088"
//! grpc = "127.0.0.1:50051"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// File name of the configuration inside a project folder.
pub const CONFIG_FILE: &str = "tessera.toml";

/// The whole `tessera.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub project: ProjectSection,
    #[serde(default)]
    pub lake: LakeSection,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSection>,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub import: ImportSection,
    /// What every event must satisfy, collected or imported.
    #[serde(default)]
    pub events: EventsSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub segments: SegmentsSection,
    #[serde(default)]
    pub predict: PredictSection,
    /// Where queries run: in this process (the default) or on a cluster.
    #[serde(default)]
    pub engine: EngineSection,
    /// Who may use the gRPC services (Flight SQL, `tessera.v1`): `[users.NAME]`.
    #[serde(default)]
    pub users: BTreeMap<String, UserSection>,
    /// API tokens of applications (`tessera.v1`, Flight SQL): `[tokens.NAME]`.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenSection>,
    /// Where audiences are sent: `[destinations.NAME]`.
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationSection>,
    /// Which segment goes to which destination, how: `[syncs.NAME]`.
    #[serde(default)]
    pub syncs: BTreeMap<String, SyncSection>,
}

/// What a destination is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// Segment-compatible `track` events (`Audience Entered` / `Audience Exited`) as
    /// `{"batch": [...]}` POSTs, signed with Standard Webhooks.
    Webhook,
    /// Audience snapshots and diffs as Parquet or CSV files in an object store (`s3://`,
    /// `gs://`, `az://`) or a local folder, with a manifest and `_SUCCESS` written last.
    File,
    /// Google Ads Customer Match: `addOperations` requests of hashed identifiers
    /// (`create` for entries, `remove` for exits) POSTed to `url`.
    GoogleCustomerMatch,
    /// Meta Custom Audiences: `{"payload": {"schema", "data"}}` of hashed identifiers,
    /// POSTed to `url` for entries and sent with DELETE for exits.
    MetaCustomAudience,
    /// Collected events forwarded as they are committed to `events` (all of them, or
    /// those of the `query`), Segment-shaped `{"batch": [...]}` POSTs signed like a
    /// webhook's.
    EventStream,
}

impl DestinationKind {
    /// Whether it is an ad platform (identifiers hashed, taken when planned).
    pub fn is_ad_platform(self) -> bool {
        matches!(
            self,
            DestinationKind::GoogleCustomerMatch | DestinationKind::MetaCustomAudience
        )
    }
}

/// The file format of a `file` destination.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    #[default]
    Parquet,
    Csv,
}

/// How a `file` destination's CSV files are compressed (Parquet pages are always
/// Snappy-compressed).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExportCompression {
    #[default]
    None,
    Gzip,
}

/// `[destinations.NAME]`: one system audiences are sent to. Secrets are never in the
/// file: they are named environment variables, read when the server or the command
/// starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestinationSection {
    pub kind: DestinationKind,
    /// Webhooks: where batches are POSTed (`https://...`; `http://` for loopback tests).
    /// Files: the folder exports go under (`s3://bucket/prefix`, `gs://...`, `az://...`,
    /// or a local path, relative to the project).
    pub url: String,
    /// Files: `parquet` (the default) or `csv`.
    #[serde(default)]
    pub format: Option<ExportFormat>,
    /// Files: `gzip` for CSV (`none` by default).
    #[serde(default)]
    pub compression: Option<ExportCompression>,
    /// Files: object-store options (`aws_endpoint`, `aws_region`, ...) besides the
    /// environment's `AWS_*`/`GOOGLE_*`/`AZURE_*`. No secrets here: credentials come from
    /// the environment.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Ad platforms: the region (ISO 3166-1 alpha-2) national phone numbers are read in
    /// when a member has no `country` (`"US"` when unset).
    #[serde(default)]
    pub default_region: Option<String>,
    /// Environment variables holding Standard Webhooks secrets (`whsec_...`); every one
    /// signs, so keys rotate by adding the new one before removing the old.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// An environment variable holding a secret for Segment's legacy `X-Signature`
    /// (hex HMAC-SHA1 of the whole body), for receivers that check it.
    #[serde(default)]
    pub legacy_secret_env: Option<String>,
    /// Extra headers sent as they are (no secrets here).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra headers whose values are read from environment variables (`"Authorization"
    /// = "CRM_TOKEN"`).
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Events per batch (webhooks, default 500), rows per file (files, default
    /// 1,000,000).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Bytes per batch body.
    #[serde(default = "default_destination_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Batches in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Batches per second at most (unlimited when unset).
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// How long one attempt may take (`"10s"`).
    #[serde(default = "default_destination_timeout")]
    pub timeout: String,
    /// First and longest wait between attempts (exponential backoff with jitter).
    #[serde(default = "default_retry_min")]
    pub retry_min: String,
    #[serde(default = "default_retry_max")]
    pub retry_max: String,
    /// A batch is dead-lettered once it has been tried this many times *and* for as long
    /// as `retry_window`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_retry_window")]
    pub retry_window: String,
    /// Consent categories a member must have granted to be sent here (all of them).
    #[serde(default)]
    pub consent: Vec<String>,
    /// Event streams: which events travel, and how — a query over `events` returning
    /// `message_id` (`"SELECT * FROM events WHERE type = 'track'"`; all events when
    /// unset).
    #[serde(default)]
    pub query: Option<String>,
    /// Event streams: also send the events committed before the stream was first run
    /// (`false`: from then on).
    #[serde(default)]
    pub from_beginning: bool,
}

impl DestinationSection {
    /// Members per batch: per request for webhooks, per file for files.
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(match self.kind {
            DestinationKind::Webhook => 500,
            DestinationKind::File => 1_000_000,
            DestinationKind::GoogleCustomerMatch | DestinationKind::MetaCustomAudience => 10_000,
            DestinationKind::EventStream => 500,
        })
    }
}

fn default_destination_batch_bytes() -> usize {
    500 * 1024
}
fn default_concurrency() -> usize {
    4
}
fn default_destination_timeout() -> String {
    "10s".into()
}
fn default_retry_min() -> String {
    "10s".into()
}
fn default_retry_max() -> String {
    "5m".into()
}
fn default_max_attempts() -> u32 {
    8
}
fn default_retry_window() -> String {
    "4h".into()
}

/// How a sync sends its segment.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// The whole membership first, then every entry and exit since the last delivered
    /// refresh.
    #[default]
    Diff,
    /// As `diff`, but a refresh that would shrink the audience below `min_ratio` of its
    /// last delivered size is held until confirmed (`tessera activate run --confirm`).
    Mirror,
    /// The whole current membership at every run (entries only).
    Full,
}

/// `[syncs.NAME]`: a segment sent to a destination.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    pub segment: String,
    pub destination: String,
    #[serde(default)]
    pub mode: SyncMode,
    /// Which traits travel with each member: a query over the lake returning
    /// `profile_id` and the columns to send (`"SELECT profile_id, email, plan FROM
    /// profiles"`).
    #[serde(default)]
    pub fields: Option<String>,
    /// For `mirror`: the smallest share of the last delivered size sent without
    /// confirmation.
    #[serde(default = "default_min_ratio")]
    pub min_ratio: f64,
    /// Run after each refresh of the segment (by `tessera serve`).
    #[serde(default = "default_true")]
    pub schedule: bool,
}

fn default_min_ratio() -> f64 {
    0.5
}

/// `[tokens.NAME]`: an API token for an application. The token is shown once by
/// `tessera token add`; only its SHA-256 digest is stored (a 256-bit random token
/// needs no slow hash: it cannot be guessed from a dictionary).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    pub role: Role,
    /// Whether the token sees personal data in clear.
    #[serde(default)]
    pub pii: bool,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// Only the profiles this SQL condition over `profiles` admits (and their rows in
    /// every table), e.g. `"json_get_str(traits, 'country') = 'DE'"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
}

/// `[users.NAME]`: one account of the gRPC services.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    pub role: Role,
    /// Whether the user sees personal data (e-mail, phone, names, address, IP) in clear.
    #[serde(default)]
    pub pii: bool,
    /// The password as an Argon2id hash in PHC format (`$argon2id$v=19$...`); the
    /// password itself is never stored. `tessera user add` writes it.
    pub password_hash: String,
    /// A disabled user cannot sign in, and its live sessions end
    /// (`tessera user disable NAME`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Only the profiles this SQL condition over `profiles` admits (and their rows in
    /// every table), e.g. `"json_get_str(traits, 'country') = 'DE'"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
}

/// What a user may do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including triggering stitching and refreshes.
    Admin,
    /// SQL over every table, profiles and audiences.
    Analyst,
    /// Profiles and audiences, no arbitrary SQL.
    Marketer,
    /// Sending events only.
    Ingest,
    /// Privacy requests (`PrivacyService`: erase, export, list) and nothing else.
    Privacy,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Marketer => "marketer",
            Role::Ingest => "ingest",
            Role::Privacy => "privacy",
        }
    }

    /// Whether the role may run arbitrary SQL (Flight SQL statements).
    pub fn may_query(self) -> bool {
        matches!(self, Role::Admin | Role::Analyst)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "analyst" => Ok(Role::Analyst),
            "marketer" => Ok(Role::Marketer),
            "ingest" => Ok(Role::Ingest),
            "privacy" => Ok(Role::Privacy),
            other => Err(format!(
                "unknown role {other:?}: choose admin, analyst, marketer, ingest or privacy"
            )),
        }
    }
}

/// `[predict]`: what counts as an order and how the predictive models are run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PredictSection {
    /// The `track` event that is a purchase.
    #[serde(default = "default_order_event")]
    pub order_event: String,
    /// The property of that event holding its revenue.
    #[serde(default = "default_revenue_property")]
    pub revenue_property: String,
    /// Unit of recency and age in the BG/NBD model: `day` or `week`.
    #[serde(default = "default_time_unit")]
    pub time_unit: TimeUnit,
    /// End of the calibration window (RFC 3339 or a date); unset is `[segments] as_of`,
    /// else the time of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_end: Option<String>,
    /// Monthly discount rate of future revenue in the 12-month CLV (`clv_12m`).
    #[serde(default = "default_discount_rate")]
    pub monthly_discount_rate: f64,
    /// Days of the propensity target: "places an order within the next N days".
    #[serde(default = "default_propensity_days")]
    pub propensity_days: u32,
    /// L2 penalty of the propensity model (on standardized features).
    #[serde(default = "default_l2")]
    pub l2: f64,
    /// Whether `tessera serve` refits the models every `refit_hours`.
    #[serde(default = "default_true")]
    pub schedule: bool,
    #[serde(default = "default_refit_hours")]
    pub refit_hours: u64,
}

/// Time unit of the purchase models.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    Day,
    Week,
}

impl TimeUnit {
    /// Days in one unit.
    pub fn days(self) -> f64 {
        match self {
            TimeUnit::Day => 1.0,
            TimeUnit::Week => 7.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
        }
    }
}

impl std::str::FromStr for TimeUnit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "day" | "days" | "d" => Ok(TimeUnit::Day),
            "week" | "weeks" | "w" => Ok(TimeUnit::Week),
            other => Err(format!("time unit {other:?} is neither `day` nor `week`")),
        }
    }
}

impl Default for PredictSection {
    fn default() -> Self {
        PredictSection {
            order_event: default_order_event(),
            revenue_property: default_revenue_property(),
            time_unit: default_time_unit(),
            calibration_end: None,
            monthly_discount_rate: default_discount_rate(),
            propensity_days: default_propensity_days(),
            l2: default_l2(),
            schedule: true,
            refit_hours: default_refit_hours(),
        }
    }
}

fn default_order_event() -> String {
    "Order Completed".into()
}
fn default_revenue_property() -> String {
    "revenue".into()
}
fn default_time_unit() -> TimeUnit {
    TimeUnit::Week
}
fn default_discount_rate() -> f64 {
    0.01
}
fn default_propensity_days() -> u32 {
    30
}
fn default_l2() -> f64 {
    1.0
}
fn default_refit_hours() -> u64 {
    24
}

impl PredictSection {
    /// `calibration_end` in microseconds since the epoch.
    pub fn calibration_end_micros(&self) -> Result<Option<i64>> {
        optional_instant("predict.calibration_end", self.calibration_end.as_deref())
    }

    fn validate(&self) -> Result<()> {
        let invalid = |key: &str, message: &str| CoreError::InvalidConfig {
            key: format!("predict.{key}"),
            message: message.into(),
        };
        if self.order_event.trim().is_empty() {
            return Err(invalid("order_event", "must name an event"));
        }
        if self.revenue_property.trim().is_empty() {
            return Err(invalid("revenue_property", "must name a property"));
        }
        if !(0.0..1.0).contains(&self.monthly_discount_rate) {
            return Err(invalid(
                "monthly_discount_rate",
                "must be at least 0 and below 1 (0.01 is 1% a month)",
            ));
        }
        if self.propensity_days == 0 || self.propensity_days > 365 {
            return Err(invalid("propensity_days", "must be between 1 and 365"));
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return Err(invalid("l2", "must be a finite number of at least 0"));
        }
        if self.refit_hours == 0 {
            return Err(invalid("refit_hours", "must be at least 1"));
        }
        self.calibration_end_micros()?;
        Ok(())
    }
}

/// `[engine]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// A Ballista scheduler, `df://host:port` (`tessera cluster scheduler`): segment
    /// refreshes, traits, predict's feature queries and Flight SQL statements are
    /// planned here and run on the cluster's executors. Unset: in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl EngineSection {
    /// The scheduler's gRPC address (`http://host:port`) of `cluster`, if set.
    pub fn cluster_endpoint(&self) -> Result<Option<String>> {
        let Some(url) = self.cluster.as_deref() else {
            return Ok(None);
        };
        let invalid = |message: String| CoreError::InvalidConfig {
            key: "engine.cluster".into(),
            message,
        };
        let Some(address) = url.strip_prefix("df://") else {
            return Err(invalid(format!(
                "{url:?} is not a scheduler address such as df://127.0.0.1:50050"
            )));
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(|| {
            invalid(format!(
                "{url:?} has no port (df://host:port, e.g. df://127.0.0.1:50050)"
            ))
        })?;
        let valid_host = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':')
            });
        if !valid_host {
            return Err(invalid(format!("{url:?} does not name a host")));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(format!("http://{host}:{port}"))),
            _ => Err(invalid(format!("{url:?}: {port:?} is not a port"))),
        }
    }
}

/// `[segments]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SegmentsSection {
    /// Whether `tessera serve` refreshes segments on their `-- refresh:` schedule.
    #[serde(default = "default_true")]
    pub schedule: bool,
    /// How often the server looks for segments that are due, in seconds.
    #[serde(default = "default_check_seconds")]
    pub check_interval_seconds: u64,
    /// Evaluation time of `as_of()` / `days_since()` / `within_days()` (RFC 3339), for
    /// back-tests and fixed sample data; unset is the time of each refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

impl Default for SegmentsSection {
    fn default() -> Self {
        SegmentsSection {
            schedule: true,
            check_interval_seconds: default_check_seconds(),
            as_of: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_check_seconds() -> u64 {
    60
}

impl SegmentsSection {
    /// `as_of` in microseconds since the epoch.
    pub fn as_of_micros(&self) -> Result<Option<i64>> {
        optional_instant("segments.as_of", self.as_of.as_deref())
    }
}

fn optional_instant(key: &str, text: Option<&str>) -> Result<Option<i64>> {
    text.map(|t| {
        parse_instant(t).ok_or_else(|| CoreError::InvalidConfig {
            key: key.into(),
            message: format!("{t:?} is not a time such as 2026-10-31T23:59:59Z or 2026-10-31"),
        })
    })
    .transpose()
}

/// Parses an RFC 3339 time or a date (midnight UTC) into microseconds since the epoch.
pub fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// `[project]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProjectSection {
    #[serde(default = "default_name")]
    pub name: String,
}

impl Default for ProjectSection {
    fn default() -> Self {
        ProjectSection {
            name: default_name(),
        }
    }
}

fn default_name() -> String {
    "tessera".into()
}

/// `[lake]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LakeSection {
    /// A path (relative to the project folder) or an object-store URL.
    #[serde(default = "default_lake_url")]
    pub url: String,
    /// Extra object-store options (`aws_region`, `aws_endpoint`, ...), passed through.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
}

impl Default for LakeSection {
    fn default() -> Self {
        LakeSection {
            url: default_lake_url(),
            storage_options: BTreeMap::new(),
        }
    }
}

fn default_lake_url() -> String {
    "tessera-data".into()
}

/// `[sources.NAME]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The key SDKs send (HTTP basic user name or `writeKey` in the body).
    pub write_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Listen address of the HTTP collector.
    #[serde(default = "default_http")]
    pub http: String,
    /// Listen address of the gRPC port (Flight SQL and `tessera.v1`).
    #[serde(default = "default_grpc")]
    pub grpc: String,
    /// Folder of the collector's write-ahead log (local disk; relative to the project).
    #[serde(default = "default_wal_dir")]
    pub wal_dir: String,
    /// How often collected events are committed to `events`, in milliseconds.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// Largest event accepted, in bytes.
    #[serde(default = "default_max_event")]
    pub max_event_bytes: usize,
    /// Largest request accepted (after decompression), in bytes.
    #[serde(default = "default_max_batch")]
    pub max_batch_bytes: usize,
    /// `messageId`s are deduplicated over this many hours.
    #[serde(default = "default_dedup_hours")]
    pub dedup_window_hours: u64,
    /// Names this collector's commits (`tessera-collector-<id>`); each collector on one
    /// lake needs its own (and its own `wal_dir`). Unset: the id kept in the WAL folder
    /// (`collector-id`), chosen at random when the folder is new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_id: Option<String>,
    /// Requests get `503` with `Retry-After` while this many events are acknowledged
    /// and not yet committed to `events` (SDKs retry them)...
    #[serde(default = "default_max_buffered_events")]
    pub max_buffered_events: usize,
    /// ... or while those events hold this much memory (`"512MiB"`, `"5%"`).
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: String,
    /// Requests get `503` with `Retry-After` while the write-ahead log holds this much
    /// (`"4GiB"`): the lake's store has been unreachable for long and the disk of
    /// `wal_dir` must not fill up.
    #[serde(default = "default_max_wal_bytes")]
    pub max_wal_bytes: String,
    /// TLS on both ports (`[server.tls]`); plain text when absent.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Single sign-on to the web console through an OpenID Connect provider
    /// (`[server.oidc]`); only the accounts' passwords when absent.
    #[serde(default)]
    pub oidc: Option<OidcSection>,
    /// Memory the running SQL queries of API callers may hold together: a size
    /// (`"2GiB"`, `"512MB"`, bytes) or a share of the machine's memory (`"25%"`).
    /// Sorts and aggregations spill to disk past it; a query that still does not fit
    /// fails with `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_query_memory")]
    pub query_memory: String,
    /// Longest an API query may run (`"15m"`, `"30s"`, `"500ms"`; `"0"`: no limit).
    #[serde(default = "default_query_timeout")]
    pub query_timeout: String,
    /// API queries running at once; more wait for a slot.
    #[serde(default = "default_max_concurrent_queries")]
    pub max_concurrent_queries: usize,
    /// Longest a query waits for a slot before it is refused (`RESOURCE_EXHAUSTED`).
    #[serde(default = "default_query_queue_timeout")]
    pub query_queue_timeout: String,
    /// Where queries spill to disk (relative to the project; the system's temporary
    /// folder when unset).
    #[serde(default)]
    pub spill_dir: Option<String>,
    /// How often `tessera serve` looks for tables to compact (`"10m"`; `"0"`: never).
    #[serde(default = "default_optimize_every")]
    pub optimize_every: String,
    /// A table is compacted in the background once it has this many small files
    /// (under 32 MiB).
    #[serde(default = "default_optimize_small_files")]
    pub optimize_small_files: usize,
}

impl ServerSection {
    /// How long a running collector may take to see a newly suppressed identifier and
    /// commit what it acknowledged before: two flush intervals and a second (what an
    /// erasure waits before sweeping `events` once more).
    pub fn erasure_settle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(2 * self.flush_interval_ms + 1000)
    }

    /// `max_wal_bytes` in bytes: a size of disk, not a share of memory, at least 1 MiB.
    pub fn max_wal_bytes(&self) -> std::result::Result<u64, String> {
        match parse_memory(&self.max_wal_bytes)? {
            MemorySize::Share(_) => Err(format!(
                "{:?}: the write-ahead log's bound is a size on disk (\"4GiB\"), not a share of memory",
                self.max_wal_bytes
            )),
            MemorySize::Bytes(b) if b < 1 << 20 => Err(format!(
                "{:?} is under 1MiB: the log could not hold one full request",
                self.max_wal_bytes
            )),
            MemorySize::Bytes(b) => Ok(b),
        }
    }
}

/// A memory amount of the configuration: bytes, or a share of the machine's memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemorySize {
    Bytes(u64),
    /// Percent of the physical memory.
    Share(f64),
}

impl MemorySize {
    /// The bytes this amount is on a machine with `total` bytes of memory.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MemorySize::Bytes(b) => b,
            MemorySize::Share(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

/// Parses `"2GiB"`, `"512 MB"`, `"1.5g"`, `"1048576"` (bytes) or `"25%"`.
pub fn parse_memory(text: &str) -> std::result::Result<MemorySize, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a memory size: write bytes, \"512MiB\", \"2GiB\" or a share such as \"25%\""
        )
    };
    if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        return if p > 0.0 && p <= 100.0 {
            Ok(MemorySize::Share(p))
        } else {
            Err(format!("{text:?}: a share of memory is between 0 and 100%"))
        };
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return Err(bad()),
    };
    let bytes = number * scale;
    if bytes < 1.0 {
        return Err(bad());
    }
    Ok(MemorySize::Bytes(bytes as u64))
}

/// Parses `"15m"`, `"30s"`, `"500ms"`, `"2h"`, `"1d"`, `"90"` (seconds); `"0"` is zero.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration: write \"500ms\", \"30s\", \"15m\" or \"2h\"")
    })?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => {
            return Err(format!(
                "{text:?} is not a duration: write \"500ms\", \"30s\", \"15m\" or \"2h\""
            ));
        }
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
}

fn default_query_memory() -> String {
    "25%".into()
}

fn default_query_timeout() -> String {
    "15m".into()
}

fn default_max_concurrent_queries() -> usize {
    4
}

fn default_query_queue_timeout() -> String {
    "30s".into()
}

fn default_optimize_every() -> String {
    "10m".into()
}

fn default_optimize_small_files() -> usize {
    64
}

/// `[server.tls]`: the certificate chain and private key (PEM files, relative to the
/// project) that the HTTP and gRPC ports present.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: String,
    pub key: String,
}

/// `[server.oidc]`: the console's single sign-on (authorization code flow with PKCE).
/// The claim `user_claim` of the signed-in person names the Tessera account
/// (`[users.NAME]`) whose role and grants apply; a person without one is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's issuer URL (`https://login.example.com/realms/acme`); its
    /// `/.well-known/openid-configuration` says where to send people. `http` only on
    /// loopback.
    pub issuer: String,
    pub client_id: String,
    /// The environment variable holding the client secret (never the secret itself).
    #[serde(default = "default_oidc_secret_env")]
    pub client_secret_env: String,
    /// Where the provider sends people back (registered with it). Default: the console's
    /// `/ui/oidc/callback` on the address the browser used.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// The claim naming the account: `preferred_username` (default), `email`, `sub`, ...
    #[serde(default = "default_oidc_claim")]
    pub user_claim: String,
    /// What the sign-in button says.
    #[serde(default = "default_oidc_label")]
    pub label: String,
}

fn default_oidc_secret_env() -> String {
    "TESSERA_OIDC_CLIENT_SECRET".into()
}

fn default_oidc_claim() -> String {
    "preferred_username".into()
}

fn default_oidc_label() -> String {
    "Sign in with single sign-on".into()
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            http: default_http(),
            grpc: default_grpc(),
            wal_dir: default_wal_dir(),
            flush_interval_ms: default_flush_ms(),
            max_event_bytes: default_max_event(),
            max_batch_bytes: default_max_batch(),
            dedup_window_hours: default_dedup_hours(),
            collector_id: None,
            max_buffered_events: default_max_buffered_events(),
            max_buffered_bytes: default_max_buffered_bytes(),
            max_wal_bytes: default_max_wal_bytes(),
            tls: None,
            oidc: None,
            query_memory: default_query_memory(),
            query_timeout: default_query_timeout(),
            max_concurrent_queries: default_max_concurrent_queries(),
            query_queue_timeout: default_query_queue_timeout(),
            spill_dir: None,
            optimize_every: default_optimize_every(),
            optimize_small_files: default_optimize_small_files(),
        }
    }
}

fn default_wal_dir() -> String {
    "wal".into()
}

fn default_flush_ms() -> u64 {
    2000
}

fn default_max_event() -> usize {
    32 * 1024
}

fn default_max_batch() -> usize {
    500 * 1024
}

fn default_max_buffered_events() -> usize {
    1_000_000
}

fn default_max_buffered_bytes() -> String {
    "512MiB".into()
}

fn default_max_wal_bytes() -> String {
    "4GiB".into()
}

fn default_dedup_hours() -> u64 {
    24
}

fn default_http() -> String {
    "127.0.0.1:8088".into()
}

fn default_grpc() -> String {
    "127.0.0.1:50051".into()
}

/// `[events]`: what every event must satisfy, in the collector and the importer alike
/// (refused events go to `quarantine`).
///
/// ```toml
/// [events]
/// earliest_timestamp = "2015-01-01T00:00:00Z"
/// max_future = "1d"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// Events timed before this (after clock-skew correction) are refused.
    #[serde(default = "default_earliest_timestamp")]
    pub earliest_timestamp: String,
    /// Events timed more than this after their arrival are refused (`"1d"`, `"6h"`).
    #[serde(default = "default_max_future")]
    pub max_future: String,
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection {
            earliest_timestamp: default_earliest_timestamp(),
            max_future: default_max_future(),
        }
    }
}

fn default_earliest_timestamp() -> String {
    "1970-01-01T00:00:00Z".into()
}

fn default_max_future() -> String {
    "1d".into()
}

impl EventsSection {
    /// The accepted window of event times.
    pub fn window(&self) -> Result<crate::event::TimeWindow> {
        let invalid = |key: &str, message: String| CoreError::InvalidConfig {
            key: format!("events.{key}"),
            message,
        };
        let earliest =
            crate::event::parse_timestamp(&self.earliest_timestamp).ok_or_else(|| {
                invalid(
                    "earliest_timestamp",
                    format!(
                        "{:?} is not an ISO-8601 time (e.g. \"2015-01-01T00:00:00Z\")",
                        self.earliest_timestamp
                    ),
                )
            })?;
        if earliest < crate::event::parse_timestamp("0001-01-01T00:00:00Z").unwrap_or(i64::MIN) {
            return Err(invalid(
                "earliest_timestamp",
                "must be in year 1 or later (readers cannot represent earlier dates)".into(),
            ));
        }
        let ahead = parse_duration(&self.max_future).map_err(|e| invalid("max_future", e))?;
        let max_future = i64::try_from(ahead.as_micros()).unwrap_or(i64::MAX);
        if max_future > 366 * 86_400_000_000 {
            return Err(invalid(
                "max_future",
                "must be at most a year (\"366d\"): later times are clock errors".into(),
            ));
        }
        Ok(crate::event::TimeWindow {
            earliest,
            max_future,
        })
    }
}

/// `[import]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImportSection {
    /// Source name recorded on imported events when `--source` is not given.
    #[serde(default = "default_import_source")]
    pub default_source: String,
    /// Rows per Arrow batch while importing.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

impl Default for ImportSection {
    fn default() -> Self {
        ImportSection {
            default_source: default_import_source(),
            batch_rows: default_batch_rows(),
        }
    }
}

fn default_import_source() -> String {
    "import".into()
}

fn default_batch_rows() -> usize {
    16_384
}

/// `[identity]`: identifier types, their limits and priorities, and how the golden
/// profile picks each trait.
///
/// ```toml
/// [identity.types.loyalty_id]
/// fields = ["properties.loyalty_id", "traits.loyalty_id"]
/// limit = 1
/// priority = 4
///
/// [identity.traits]
/// first_name = "most_frequent"
/// plan = { source_priority = ["crm", "web"] }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Identifier types beyond (or overriding) the built-in `user_id`, `anonymous_id`,
    /// `email` and `phone`.
    #[serde(default)]
    pub types: BTreeMap<String, IdentifierTypeSection>,
    /// Survivorship rule per trait of the golden profile (default `latest`).
    #[serde(default)]
    pub traits: BTreeMap<String, Survivorship>,
    /// An identifier seen with more than this many distinct identifiers of one type is
    /// blocked: its edges are held and it joins no profile (default 100; 0 = never).
    #[serde(default)]
    pub max_links: Option<u32>,
    /// An edge that would put more identifiers than this into one profile is held and
    /// its busier end blocked (default 1,000; 0 = no cap).
    #[serde(default)]
    pub max_profile_identifiers: Option<u32>,
    /// Values that are never identifiers (case-insensitive); default
    /// [`DEFAULT_PLACEHOLDERS`].
    #[serde(default)]
    pub placeholders: Option<Vec<String>>,
}

/// Identifier values that SDKs and forms send when they have none.
pub const DEFAULT_PLACEHOLDERS: &[&str] = &[
    "null",
    "undefined",
    "none",
    "nil",
    "nan",
    "0",
    "-1",
    "anonymous",
    "unknown",
    "n/a",
    "[object object]",
];

/// `[identity.types.NAME]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentifierTypeSection {
    /// At most this many identifiers of the type in one profile (0 = no limit). An edge
    /// that would exceed it is not merged and is recorded as rejected.
    #[serde(default)]
    pub limit: u32,
    /// Lower numbers win when edges are seen at the same time (1 = most trusted).
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Event fields carrying the identifier (`properties.KEY`, `traits.KEY`,
    /// `context.KEY.KEY`, or a column such as `group_id`); each one found is linked to
    /// the event's `user_id`, or its `anonymous_id` when it has no `user_id`.
    #[serde(default)]
    pub fields: Vec<String>,
}

fn default_priority() -> u32 {
    10
}

/// How the golden profile picks one value of a trait among a person's identify calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Survivorship {
    /// `"latest"` (latest non-null, the default), `"first"` (earliest non-null) or
    /// `"most_frequent"`.
    Rule(SurvivorshipRule),
    /// `{ source_priority = ["crm", "web"] }`: the latest value from the first source in
    /// the list that has one; other sources after those listed.
    SourcePriority { source_priority: Vec<String> },
}

/// The named survivorship rules.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SurvivorshipRule {
    Latest,
    First,
    MostFrequent,
}

impl Default for Survivorship {
    fn default() -> Self {
        Survivorship::Rule(SurvivorshipRule::Latest)
    }
}

impl IdentitySection {
    /// Every identifier type: the built-in ones (`user_id` limit 1 priority 1, `email`
    /// limit 5 priority 2, `phone` limit 5 priority 3, `anonymous_id` no limit priority
    /// 5), replaced or extended by `[identity.types]`.
    pub fn identifier_types(&self) -> BTreeMap<String, IdentifierTypeSection> {
        let builtin = |limit, priority| IdentifierTypeSection {
            limit,
            priority,
            fields: Vec::new(),
        };
        let mut types = BTreeMap::from([
            ("user_id".to_owned(), builtin(1, 1)),
            ("email".to_owned(), builtin(5, 2)),
            ("phone".to_owned(), builtin(5, 3)),
            ("anonymous_id".to_owned(), builtin(0, 5)),
        ]);
        for (name, t) in &self.types {
            types.insert(name.clone(), t.clone());
        }
        types
    }

    /// `max_links`, or its default.
    pub fn max_links(&self) -> u32 {
        self.max_links.unwrap_or(100)
    }

    /// `max_profile_identifiers`, or its default.
    pub fn max_profile_identifiers(&self) -> u32 {
        self.max_profile_identifiers.unwrap_or(1_000)
    }

    /// `placeholders`, or the default list.
    pub fn placeholders(&self) -> Vec<String> {
        match &self.placeholders {
            Some(p) => p.clone(),
            None => DEFAULT_PLACEHOLDERS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.max_links == Some(1) {
            return Err(CoreError::InvalidConfig {
                key: "identity.max_links".into(),
                message: "1 would block every identifier seen with two others of a type; \
                          use 0 (never block) or a number of at least 2"
                    .into(),
            });
        }
        if self.max_profile_identifiers == Some(1) {
            return Err(CoreError::InvalidConfig {
                key: "identity.max_profile_identifiers".into(),
                message: "1 would keep every identifier alone; use 0 (no cap) or at least 2".into(),
            });
        }
        for (name, t) in &self.types {
            let key = format!("identity.types.{name}");
            if !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                || name.is_empty()
            {
                return Err(CoreError::InvalidConfig {
                    key,
                    message: "identifier type names use lower-case letters, digits and '_'".into(),
                });
            }
            for field in &t.fields {
                if !valid_field_path(field) {
                    return Err(CoreError::InvalidConfig {
                        key: format!("{key}.fields"),
                        message: format!(
                            "{field:?} is not an event field: use a column (user_id, group_id, ...) or \
                             properties.KEY, traits.KEY, context.KEY[.KEY...]"
                        ),
                    });
                }
            }
        }
        for (name, rule) in &self.traits {
            if let Survivorship::SourcePriority { source_priority } = rule
                && source_priority.is_empty()
            {
                return Err(CoreError::InvalidConfig {
                    key: format!("identity.traits.{name}"),
                    message: "source_priority needs at least one source".into(),
                });
            }
        }
        Ok(())
    }
}

/// Event columns an identifier can be read from directly.
pub const IDENTIFIER_COLUMNS: &[&str] = &[
    "user_id",
    "anonymous_id",
    "previous_id",
    "group_id",
    "message_id",
];
/// Event columns holding JSON objects an identifier can be read from by key path.
pub const JSON_COLUMNS: &[&str] = &["properties", "traits", "context", "integrations", "extra"];

/// Whether `path` names an event column or a key path inside one of its JSON columns.
pub fn valid_field_path(path: &str) -> bool {
    let mut parts = path.split('.');
    let Some(column) = parts.next() else {
        return false;
    };
    let keys: Vec<&str> = parts.collect();
    if keys.is_empty() {
        return IDENTIFIER_COLUMNS.contains(&column);
    }
    JSON_COLUMNS.contains(&column)
        && keys.iter().all(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

impl Config {
    /// Parses a configuration from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| CoreError::ParseConfig {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `TESSERA_LAKE_URL`, `TESSERA_HTTP` and `TESSERA_GRPC` from `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(url) = env("TESSERA_LAKE_URL") {
            self.lake.url = url;
        }
        if let Some(http) = env("TESSERA_HTTP") {
            self.server.http = http;
        }
        if let Some(grpc) = env("TESSERA_GRPC") {
            self.server.grpc = grpc;
        }
        self.validate()
    }

    /// Checks every value, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key: &str, message: String| CoreError::InvalidConfig {
            key: key.to_owned(),
            message,
        };
        if self.lake.url.trim().is_empty() {
            return Err(invalid("lake.url", "must not be empty".into()));
        }
        for (key, addr) in [
            ("server.http", &self.server.http),
            ("server.grpc", &self.server.grpc),
        ] {
            addr.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    key,
                    format!("{addr:?} is not a listen address such as 127.0.0.1:8088"),
                )
            })?;
        }
        let mut keys: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, source) in &self.sources {
            let key = format!("sources.{name}.write_key");
            if !valid_name(name) {
                return Err(invalid(
                    &format!("sources.{name}"),
                    "source names use letters, digits, '_' and '-' only".into(),
                ));
            }
            if source.write_key.trim().len() < 8 {
                return Err(invalid(
                    &key,
                    "write keys must be at least 8 characters".into(),
                ));
            }
            if let Some(other) = keys.insert(source.write_key.as_str(), name.as_str()) {
                return Err(invalid(
                    &key,
                    format!("the same write key is used by source {other:?}"),
                ));
            }
        }
        if self.server.flush_interval_ms == 0 {
            return Err(invalid(
                "server.flush_interval_ms",
                "must be at least 1".into(),
            ));
        }
        if self.server.max_event_bytes < 1024
            || self.server.max_event_bytes > self.server.max_batch_bytes
        {
            return Err(invalid(
                "server.max_event_bytes",
                "must be at least 1024 and at most server.max_batch_bytes".into(),
            ));
        }
        if !valid_name(&self.import.default_source) {
            return Err(invalid(
                "import.default_source",
                "source names use letters, digits, '_' and '-' only".into(),
            ));
        }
        if self.import.batch_rows == 0 {
            return Err(invalid("import.batch_rows", "must be at least 1".into()));
        }
        if self.segments.check_interval_seconds == 0 {
            return Err(invalid(
                "segments.check_interval_seconds",
                "must be at least 1".into(),
            ));
        }
        self.segments.as_of_micros()?;
        self.engine.cluster_endpoint()?;
        self.events.window()?;
        self.predict.validate()?;
        for (name, user) in &self.users {
            if !valid_name(name) {
                return Err(invalid(
                    &format!("users.{name}"),
                    "user names use letters, digits, '_' and '-' only".into(),
                ));
            }
            if !user.password_hash.starts_with("$argon2") {
                return Err(invalid(
                    &format!("users.{name}.password_hash"),
                    "must be an Argon2 hash ($argon2id$...): set it with `tessera user add`, never a password in clear".into(),
                ));
            }
        }
        for (name, token) in &self.tokens {
            if !valid_name(name) {
                return Err(invalid(
                    &format!("tokens.{name}"),
                    "token names use letters, digits, '_' and '-' only".into(),
                ));
            }
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    &format!("tokens.{name}.sha256"),
                    "must be the 64-digit hex SHA-256 of the token: create tokens with `tessera token add`, never a token in clear".into(),
                ));
            }
        }
        parse_memory(&self.server.query_memory).map_err(|m| invalid("server.query_memory", m))?;
        parse_memory(&self.server.max_buffered_bytes)
            .map_err(|m| invalid("server.max_buffered_bytes", m))?;
        self.server
            .max_wal_bytes()
            .map_err(|m| invalid("server.max_wal_bytes", m))?;
        if let Some(id) = &self.server.collector_id
            && !valid_name(id)
        {
            return Err(invalid(
                "server.collector_id",
                "use letters, digits, '_' and '-' only".into(),
            ));
        }
        if self.server.max_buffered_events == 0 {
            return Err(invalid(
                "server.max_buffered_events",
                "must be at least 1".into(),
            ));
        }
        for (key, value) in [
            ("server.query_timeout", &self.server.query_timeout),
            (
                "server.query_queue_timeout",
                &self.server.query_queue_timeout,
            ),
            ("server.optimize_every", &self.server.optimize_every),
        ] {
            parse_duration(value).map_err(|m| invalid(key, m))?;
        }
        if self.server.max_concurrent_queries == 0 {
            return Err(invalid(
                "server.max_concurrent_queries",
                "must be at least 1".into(),
            ));
        }
        let filters = self
            .users
            .iter()
            .map(|(n, u)| (format!("users.{n}.rows"), &u.rows))
            .chain(
                self.tokens
                    .iter()
                    .map(|(n, t)| (format!("tokens.{n}.rows"), &t.rows)),
            );
        for (key, rows) in filters {
            if rows.as_deref().is_some_and(|r| r.trim().is_empty()) {
                return Err(invalid(
                    &key,
                    "an empty row filter: remove the key to see every row, or write an SQL condition over profiles".into(),
                ));
            }
        }
        for (name, d) in &self.destinations {
            let key = |k: &str| format!("destinations.{name}.{k}");
            let http_url = |what: &str| -> Result<()> {
                let scheme_ok = d.url.starts_with("https://") || d.url.starts_with("http://");
                if !scheme_ok || url::Url::parse(&d.url).is_err() {
                    return Err(invalid(
                        &key("url"),
                        format!("{:?} is not an http(s) URL{what}", d.url),
                    ));
                }
                Ok(())
            };
            // Keys of other kinds of destination, set here by mistake.
            let refuse = |keys: &[(&str, bool)], why: &str| -> Result<()> {
                match keys.iter().find(|(_, set)| *set) {
                    Some((k, _)) => Err(invalid(&key(k), why.into())),
                    None => Ok(()),
                }
            };
            if !valid_name(name) {
                return Err(invalid(
                    &format!("destinations.{name}"),
                    "destination names use letters, digits, '_' and '-' only".into(),
                ));
            }
            if d.default_region.is_some() && !d.kind.is_ad_platform() {
                return Err(invalid(
                    &key("default_region"),
                    "is for ad-platform destinations only".into(),
                ));
            }
            match d.kind {
                DestinationKind::GoogleCustomerMatch | DestinationKind::MetaCustomAudience => {
                    http_url(" (the platform's endpoint)")?;
                    let cap = if d.kind == DestinationKind::MetaCustomAudience {
                        10_000
                    } else {
                        100_000
                    };
                    if d.batch_size().clamp(1, cap) != d.batch_size() {
                        return Err(invalid(
                            &key("batch_size"),
                            format!("must be 1 to {cap} (users per request, the platform's cap)"),
                        ));
                    }
                    if let Some(r) = &d.default_region
                        && (r.len() != 2 || !r.chars().all(|c| c.is_ascii_alphabetic()))
                    {
                        return Err(invalid(
                            &key("default_region"),
                            format!("{r:?} is not a two-letter ISO 3166-1 region code"),
                        ));
                    }
                    refuse(
                        &[
                            ("secret_env", !d.secret_env.is_empty()),
                            ("legacy_secret_env", d.legacy_secret_env.is_some()),
                            ("format", d.format.is_some()),
                            ("compression", d.compression.is_some()),
                            ("storage_options", !d.storage_options.is_empty()),
                        ],
                        "is not for ad-platform destinations (their tokens go in headers_env)",
                    )?;
                }
                DestinationKind::Webhook | DestinationKind::EventStream => {
                    http_url("")?;
                    if d.kind == DestinationKind::EventStream && !d.consent.is_empty() {
                        return Err(invalid(
                            &key("consent"),
                            "is for audiences: an event stream forwards events as they come".into(),
                        ));
                    }
                    if d.batch_size().clamp(1, 10_000) != d.batch_size() {
                        return Err(invalid(&key("batch_size"), "must be 1 to 10000".into()));
                    }
                    refuse(
                        &[
                            ("format", d.format.is_some()),
                            ("compression", d.compression.is_some()),
                            ("storage_options", !d.storage_options.is_empty()),
                        ],
                        "is for kind = \"file\" destinations only",
                    )?;
                }
                DestinationKind::File => {
                    let url = d.url.trim();
                    if url.is_empty() {
                        return Err(invalid(
                            &key("url"),
                            "names the folder to export to (s3://bucket/prefix, gs://, az://, or a path)".into(),
                        ));
                    }
                    if is_url(url) {
                        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
                        let known = ["s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "file"];
                        if !known.contains(&scheme) || url::Url::parse(url).is_err() {
                            return Err(invalid(
                                &key("url"),
                                format!(
                                    "{url:?} is not an object-store URL Tessera can write (s3://, gs://, az://, file://) nor a path"
                                ),
                            ));
                        }
                    }
                    if d.batch_size().clamp(1, 10_000_000) != d.batch_size() {
                        return Err(invalid(
                            &key("batch_size"),
                            "must be 1 to 10000000 (rows per file)".into(),
                        ));
                    }
                    if d.compression == Some(ExportCompression::Gzip)
                        && d.format != Some(ExportFormat::Csv)
                    {
                        return Err(invalid(
                            &key("compression"),
                            "gzip is for format = \"csv\" (Parquet pages are compressed already)"
                                .into(),
                        ));
                    }
                    refuse(
                        &[
                            ("secret_env", !d.secret_env.is_empty()),
                            ("legacy_secret_env", d.legacy_secret_env.is_some()),
                            ("headers", !d.headers.is_empty()),
                            ("headers_env", !d.headers_env.is_empty()),
                            ("rate_limit", d.rate_limit.is_some()),
                        ],
                        "is for kind = \"webhook\" destinations only",
                    )?;
                }
            }
            if d.max_batch_bytes < 1024 {
                return Err(invalid(
                    &key("max_batch_bytes"),
                    "must be at least 1024".into(),
                ));
            }
            if d.concurrency == 0 {
                return Err(invalid(&key("concurrency"), "must be at least 1".into()));
            }
            if d.rate_limit.is_some_and(|r| r.is_nan() || r <= 0.0) {
                return Err(invalid(
                    &key("rate_limit"),
                    "must be above 0 (batches per second)".into(),
                ));
            }
            if d.max_attempts == 0 {
                return Err(invalid(&key("max_attempts"), "must be at least 1".into()));
            }
            if d.kind != DestinationKind::EventStream && (d.query.is_some() || d.from_beginning) {
                return Err(invalid(
                    &key(if d.query.is_some() {
                        "query"
                    } else {
                        "from_beginning"
                    }),
                    "is for kind = \"event_stream\" destinations only".into(),
                ));
            }
            if d.query.as_deref().is_some_and(|q| q.trim().is_empty()) {
                return Err(invalid(
                    &key("query"),
                    "an empty query: remove the key to send every event".into(),
                ));
            }
            for (k, v) in [
                ("timeout", &d.timeout),
                ("retry_min", &d.retry_min),
                ("retry_max", &d.retry_max),
                ("retry_window", &d.retry_window),
            ] {
                parse_duration(v).map_err(|m| invalid(&key(k), m))?;
            }
            let env_names = d
                .secret_env
                .iter()
                .chain(d.legacy_secret_env.iter())
                .chain(d.headers_env.values());
            for var in env_names {
                if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(invalid(
                        &key("secret_env"),
                        format!("{var:?} is not an environment variable name"),
                    ));
                }
            }
        }
        for (name, sync) in &self.syncs {
            let key = |k: &str| format!("syncs.{name}.{k}");
            if !valid_name(name) {
                return Err(invalid(
                    &format!("syncs.{name}"),
                    "sync names use letters, digits, '_' and '-' only".into(),
                ));
            }
            if !self.destinations.contains_key(&sync.destination) {
                let known: Vec<&str> = self.destinations.keys().map(String::as_str).collect();
                return Err(invalid(
                    &key("destination"),
                    format!(
                        "no destination {:?}; known: {}",
                        sync.destination,
                        if known.is_empty() {
                            "none (add [destinations.NAME])".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            if self.destinations[&sync.destination].kind == DestinationKind::EventStream {
                return Err(invalid(
                    &key("destination"),
                    format!(
                        "{:?} is an event stream: it forwards events by itself and takes no sync",
                        sync.destination
                    ),
                ));
            }
            if sync.segment.trim().is_empty() {
                return Err(invalid(&key("segment"), "names the segment to send".into()));
            }
            if !(sync.min_ratio >= 0.0 && sync.min_ratio <= 1.0) {
                return Err(invalid(&key("min_ratio"), "must be between 0 and 1".into()));
            }
            if sync.fields.as_deref().is_some_and(|f| f.trim().is_empty()) {
                return Err(invalid(
                    &key("fields"),
                    "an empty query: remove the key, or write SELECT profile_id, ... FROM profiles"
                        .into(),
                ));
            }
        }
        if let Some(tls) = &self.server.tls
            && (tls.cert.trim().is_empty() || tls.key.trim().is_empty())
        {
            return Err(invalid(
                "server.tls",
                "needs both `cert` and `key` (PEM files)".into(),
            ));
        }
        self.identity.validate()
    }

    /// The source a write key belongs to.
    pub fn source_for_write_key(&self, write_key: &str) -> Option<&str> {
        self.sources
            .iter()
            .find(|(_, s)| s.write_key == write_key)
            .map(|(name, _)| name.as_str())
    }
}

/// Whether `name` is usable as a source or table name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A loaded project: its folder and configuration.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub config: Config,
}

impl Project {
    /// Loads `DIR/tessera.toml`, then applies `TESSERA_*` environment overrides.
    pub fn load(dir: &Path) -> Result<Project> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CoreError::ProjectNotFound {
                    dir: dir.to_owned(),
                });
            }
            Err(source) => return Err(CoreError::ReadConfig { path, source }),
        };
        let mut config = Config::from_toml(&text, &path)?;
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(Project {
            dir: dir.to_owned(),
            config,
        })
    }

    /// The lake location: an object-store URL as written, or a local path resolved
    /// against the project folder.
    pub fn lake_location(&self) -> String {
        let url = self.config.lake.url.trim();
        if is_url(url) {
            url.to_owned()
        } else {
            let p = Path::new(url);
            let abs = if p.is_absolute() {
                p.to_owned()
            } else {
                self.dir.join(p)
            };
            abs.to_string_lossy().into_owned()
        }
    }
}

/// Whether `s` names an object-store URL (`scheme://…`) rather than a local path.
pub fn is_url(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, _)) => {
            scheme.len() > 1
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+')
        }
        None => false,
    }
}

/// The `tessera.toml` that `tessera init` writes: every key, with comments.
pub fn template(name: &str, write_key: &str) -> String {
    format!(
        r#"# Tessera project configuration. Every key is optional; shown are the defaults.

[project]
name = "{name}"

[lake]
# Where the Delta tables live: a folder relative to this file, or an object-store URL
# (s3://bucket/prefix, gs://bucket/prefix, az://container/prefix). Credentials come
# from the usual environment variables (AWS_*, GOOGLE_*, AZURE_*).
url = "tessera-data"

# One section per source of events. SDKs authenticate with the write key.
[sources.web]
write_key = "{write_key}"

[server]
http = "127.0.0.1:8088"   # Segment-compatible collector, /health, /metrics
grpc = "127.0.0.1:50051"  # Arrow Flight SQL and the tessera.v1 API
wal_dir = "wal"           # the collector's write-ahead log (local disk)
flush_interval_ms = 2000  # collected events reach the events table this often
max_event_bytes = 32768
max_batch_bytes = 512000
dedup_window_hours = 24
# Backpressure: past this many acknowledged, uncommitted events (or this much memory
# for them) requests get 503 with Retry-After, which the SDKs retry.
max_buffered_events = 1000000
max_buffered_bytes = "512MiB"
# While the lake's store is unreachable the write-ahead log grows; past this size
# requests get 503 with Retry-After too.
max_wal_bytes = "4GiB"
# TLS on both ports, from PEM files relative to this file (plain text without it):
# tls = {{ cert = "server.crt", key = "server.key" }}
# SQL of API callers (Flight SQL): memory all running queries share (a size such as
# "2GiB" or a share of the machine's memory), time limit per query, queries at once
# and how long one waits for a slot. Sorts and aggregations spill to disk past the
# memory (spill_dir, default the system's temporary folder).
query_memory = "25%"
query_timeout = "15m"
max_concurrent_queries = 4
query_queue_timeout = "30s"
# spill_dir = "spill"
# Background compaction: how often to look ("0": never) and how many small files
# (under 32 MiB) a table may have before its files are packed (`tessera optimize`).
optimize_every = "10m"
optimize_small_files = 64

[import]
default_source = "import"

# Identity resolution. Built in: user_id (at most 1 per profile), email (5), phone (5),
# anonymous_id (no limit); lower priority numbers are trusted first. Rules linking them
# are the SQL files in sql/identity/. An identifier carried in event fields is one
# section away:
[identity.types.loyalty_id]
fields = ["properties.loyalty_id", "traits.loyalty_id"]
limit = 1
priority = 4

# How the golden profile picks each trait: "latest" (default), "first",
# "most_frequent", or {{ source_priority = ["crm", "web"] }}.
[identity.traits]
first_name = "most_frequent"
last_name = "most_frequent"

# Segments are the SQL files in sql/segments/; `tessera serve` refreshes each on its
# `-- refresh:` interval. as_of pins the time segments are judged at (RFC 3339).
[segments]
schedule = true
check_interval_seconds = 60
# as_of = "2026-10-31T23:59:59Z"

# Predictive scores (`tessera predict`): BG/NBD purchase and churn, Gamma-Gamma spend,
# CLV, purchase propensity and RFM, from the orders below. The calibration window ends
# at calibration_end (default: segments.as_of, else now); `tessera serve` refits every
# refit_hours.
[predict]
order_event = "Order Completed"
revenue_property = "revenue"
time_unit = "week"
monthly_discount_rate = 0.01
propensity_days = 30
schedule = true
refit_hours = 24
# calibration_end = "2026-10-31"

# Where queries run. Unset, in this process. With cluster set (a scheduler started by
# `tessera cluster scheduler`, in a binary built with `--features cluster`), segment
# refreshes, traits, predict's feature queries and Flight SQL statements are planned
# here and run on the cluster's executors.
[engine]
# cluster = "df://127.0.0.1:50050"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_and_validates() {
        let c = Config::from_toml(&template("demo", "wk_0123456789"), Path::new("t.toml")).unwrap();
        assert_eq!(c.project.name, "demo");
        assert_eq!(c.source_for_write_key("wk_0123456789"), Some("web"));
        assert_eq!(c.server.grpc, "127.0.0.1:50051");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("[server]\nhttp = \"nope\"\n", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("server.http"), "{e}");
        let e = Config::from_toml("[lake]\nurl = 3\n", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
        let e = Config::from_toml("[lake]\nurll = \"x\"\n", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("urll"), "{e}");
        let e = Config::from_toml(
            "[sources.a]\nwrite_key = \"12345678\"\n[sources.b]\nwrite_key = \"12345678\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("sources.b.write_key"), "{e}");
    }

    #[test]
    fn identity_section() {
        let c = Config::from_toml(&template("demo", "wk_0123456789"), Path::new("t.toml")).unwrap();
        let types = c.identity.identifier_types();
        assert_eq!(types["user_id"].limit, 1);
        assert_eq!(types["loyalty_id"].fields.len(), 2);
        assert_eq!(
            c.identity.traits["first_name"],
            Survivorship::Rule(SurvivorshipRule::MostFrequent)
        );
        let e = Config::from_toml(
            "[identity.types.x]\nfields = [\"properties\"]\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("identity.types.x.fields"), "{e}");
        let c = Config::from_toml(
            "[identity.traits]\nplan = { source_priority = [\"crm\"] }\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert!(matches!(
            c.identity.traits["plan"],
            Survivorship::SourcePriority { .. }
        ));
        let e = Config::from_toml(
            "[identity.traits]\nplan = \"newest\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("plan"), "{e}");
    }

    #[test]
    fn engine_section() {
        let parse = |text: &str| Config::from_toml(text, Path::new("t.toml"));
        assert_eq!(parse("").unwrap().engine.cluster_endpoint().unwrap(), None);
        let c = parse("[engine]\ncluster = \"df://scheduler.internal:50050\"\n").unwrap();
        assert_eq!(
            c.engine.cluster_endpoint().unwrap().as_deref(),
            Some("http://scheduler.internal:50050")
        );
        for (bad, says) in [
            ("http://127.0.0.1:50050", "df://127.0.0.1:50050"),
            ("df://127.0.0.1", "has no port"),
            ("df://:50050", "does not name a host"),
            ("df://a b:50050", "does not name a host"),
            ("df://127.0.0.1:0", "is not a port"),
            ("df://127.0.0.1:99999", "is not a port"),
        ] {
            let e = parse(&format!("[engine]\ncluster = {bad:?}\n")).unwrap_err();
            assert!(e.to_string().contains("engine.cluster"), "{bad}: {e}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        let e = parse("[engine]\nclusters = \"df://h:1\"\n").unwrap_err();
        assert!(e.to_string().contains("clusters"), "{e}");
    }

    #[test]
    fn predict_section() {
        let c = Config::from_toml(&template("demo", "wk_0123456789"), Path::new("t.toml")).unwrap();
        assert_eq!(c.predict, PredictSection::default());
        let e = Config::from_toml("[predict]\ntime_unit = \"month\"\n", Path::new("t.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("time_unit"), "{e}");
        let e = Config::from_toml(
            "[predict]\nmonthly_discount_rate = 1.5\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("predict.monthly_discount_rate"),
            "{e}"
        );
        let e = Config::from_toml(
            "[predict]\ncalibration_end = \"soon\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("predict.calibration_end"), "{e}");
    }

    #[test]
    fn the_event_time_window_is_checked() {
        let origin = Path::new("tessera.toml");
        let w = Config::from_toml("", origin)
            .unwrap()
            .events
            .window()
            .unwrap();
        assert_eq!(w, crate::event::TimeWindow::default());
        let c = Config::from_toml(
            "[events]\nearliest_timestamp = \"2015-01-01T00:00:00Z\"\nmax_future = \"6h\"\n",
            origin,
        )
        .unwrap();
        let w = c.events.window().unwrap();
        assert_eq!(w.max_future, 6 * 3_600_000_000);
        assert_eq!(
            w.earliest,
            crate::event::parse_timestamp("2015-01-01T00:00:00Z").unwrap()
        );
        for (text, needle) in [
            ("earliest_timestamp = \"soon\"", "events.earliest_timestamp"),
            (
                "earliest_timestamp = \"0000-06-01T00:00:00Z\"",
                "year 1 or later",
            ),
            ("max_future = \"a week\"", "events.max_future"),
            ("max_future = \"400d\"", "at most a year"),
            ("future = \"1d\"", "unknown field"),
        ] {
            let e = Config::from_toml(&format!("[events]\n{text}\n"), origin)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let e = Config::from_toml("[server]\ncollector_id = \"a b\"\n", origin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.collector_id"), "{e}");
        let c = Config::from_toml("[server]\ncollector_id = \"eu-1\"\n", origin).unwrap();
        assert_eq!(c.server.collector_id.as_deref(), Some("eu-1"));
        for (text, needle) in [
            ("max_wal_bytes = \"10%\"", "size on disk"),
            ("max_wal_bytes = \"1KiB\"", "under 1MiB"),
            ("max_wal_bytes = \"plenty\"", "not a memory size"),
        ] {
            let e = Config::from_toml(&format!("[server]\n{text}\n"), origin)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("server.max_wal_bytes") && e.contains(needle),
                "{text}: {e}"
            );
        }
        let c = Config::from_toml("[server]\nmax_wal_bytes = \"64MiB\"\n", origin).unwrap();
        assert_eq!(c.server.max_wal_bytes(), Ok(64 << 20));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_memory("2GiB"), Ok(MemorySize::Bytes(2 << 30)));
        assert_eq!(parse_memory("512 MB"), Ok(MemorySize::Bytes(512_000_000)));
        assert_eq!(parse_memory("1.5g"), Ok(MemorySize::Bytes(1_500_000_000)));
        assert_eq!(parse_memory("1048576"), Ok(MemorySize::Bytes(1 << 20)));
        assert_eq!(parse_memory("25%"), Ok(MemorySize::Share(25.0)));
        assert_eq!(MemorySize::Share(25.0).bytes(8 << 30), 2 << 30);
        for bad in ["lots", "12 parsecs", "0", "150%", "-1GB", ""] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        use std::time::Duration;
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["soon", "5 days", "m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let e = Config::from_toml("[server]\nquery_memory = \"lots\"\n", Path::new("t.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("server.query_memory"), "{e}");
        let e = Config::from_toml("[server]\nquery_timeout = \"soon\"\n", Path::new("t.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("server.query_timeout"), "{e}");
        let e = Config::from_toml(
            "[server]\nmax_concurrent_queries = 0\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("server.max_concurrent_queries"),
            "{e}"
        );
        let e = Config::from_toml(
            "[users.ana]\nrole = \"analyst\"\npassword_hash = \"$argon2id$x\"\nrows = \" \"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("users.ana.rows"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "TESSERA_LAKE_URL").then(|| "s3://b/p".to_owned()))
            .unwrap();
        assert_eq!(c.lake.url, "s3://b/p");
    }

    #[test]
    fn urls_and_paths() {
        assert!(is_url("s3://bucket/x"));
        assert!(is_url("file:///tmp/x"));
        assert!(!is_url("tessera-data"));
        assert!(!is_url("/abs/path"));
    }
}
