//! The Arrow schema of every lake table, and which columns partition it.
//!
//! These schemas are the contract with every reader of the lake (DuckDB, polars,
//! pandas, Spark): changing one is a migration, so each table's columns are listed
//! here once and nowhere else.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Name of the events table.
pub const EVENTS: &str = "events";
/// Name of the table that records every imported file (path, size, modification time).
pub const IMPORTED_FILES: &str = "imported_files";

/// Name of the table of identifier pairs seen together.
pub const IDENTITY_EDGES: &str = "identity_edges";
/// Name of the table mapping each identifier to its profile.
pub const IDENTITY_MAP: &str = "identity_map";
/// Name of the table recording which profile merged into which.
pub const PROFILE_MERGES: &str = "profile_merges";
/// Name of the golden-profile table.
pub const PROFILES: &str = "profiles";
/// Who is in each segment at its latest refresh.
pub const AUDIENCE_MEMBERSHIP: &str = "audience_membership";
/// Who entered or exited each segment at each refresh.
pub const AUDIENCE_CHANGES: &str = "audience_changes";
/// One row per segment refresh: size, entered, exited, inputs.
pub const SEGMENT_REFRESHES: &str = "segment_refreshes";
/// Predictions per profile, one row per (profile, model, score).
pub const SCORES: &str = "scores";
/// One row per model fit: parameters, fit quality, data-quality counts.
pub const MODEL_RUNS: &str = "model_runs";
/// Who did what through the gRPC services, and how many rows they got.
pub const AUDIT_LOG: &str = "audit_log";
/// One row per trained probabilistic-matching model.
pub const MATCH_MODELS: &str = "match_models";
/// Scored record pairs of the latest probabilistic-matching prediction.
pub const MATCH_PAIRS: &str = "match_pairs";
/// Name of the activation delivery ledger.
pub const ACTIVATION_BATCHES: &str = "activation_batches";
/// Each profile's consent per category, from its latest consent preferences.
pub const CONSENT: &str = "consent";
/// Salted hashes of identifiers whose events are not stored.
pub const SUPPRESSIONS: &str = "suppressions";
/// Erasure, export and suppression requests and their states.
pub const PRIVACY_REQUESTS: &str = "privacy_requests";
/// Identifier values quarantined by stitching (linked to too many people).
pub const BLOCKED_VALUES: &str = "blocked_values";
/// Identity edges revoked by an unmerge (`tessera identity split`).
pub const IDENTITY_REVOCATIONS: &str = "identity_revocations";
/// Decisions of people on pairs of the matching review band.
pub const MATCH_DECISIONS: &str = "match_decisions";
/// Events refused by validation, kept with the reason instead of lost.
pub const QUARANTINE: &str = "quarantine";
/// The delivery ledger of event-stream destinations.
pub const STREAM_DELIVERIES: &str = "stream_deliveries";
/// Events that broke their source's tracking plan, counted per hour, event and property.
pub const PLAN_VIOLATIONS: &str = "plan_violations";

/// A lake table: its name, Arrow schema and partition columns.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: &'static str,
    pub schema: SchemaRef,
    pub partition_columns: &'static [&'static str],
    pub description: &'static str,
}

/// Microsecond UTC timestamps: what Delta calls `timestamp`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}

/// Column positions in [`events_schema`], for builders and readers.
pub mod events_col {
    pub const MESSAGE_ID: usize = 0;
    pub const TYPE: usize = 1;
    pub const EVENT: usize = 2;
    pub const NAME: usize = 3;
    pub const USER_ID: usize = 4;
    pub const ANONYMOUS_ID: usize = 5;
    pub const PREVIOUS_ID: usize = 6;
    pub const GROUP_ID: usize = 7;
    pub const TIMESTAMP: usize = 8;
    pub const SENT_AT: usize = 9;
    pub const RECEIVED_AT: usize = 10;
    pub const PROPERTIES: usize = 11;
    pub const TRAITS: usize = 12;
    pub const CONTEXT: usize = 13;
    pub const INTEGRATIONS: usize = 14;
    pub const EXTRA: usize = 15;
    pub const SOURCE: usize = 16;
    pub const EVENT_DATE: usize = 17;
}

static EVENTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("message_id", false),
        utf8("type", false),
        utf8("event", true),
        utf8("name", true),
        utf8("user_id", true),
        utf8("anonymous_id", true),
        utf8("previous_id", true),
        utf8("group_id", true),
        ts("timestamp", false),
        ts("sent_at", true),
        ts("received_at", false),
        utf8("properties", true),
        utf8("traits", true),
        utf8("context", true),
        utf8("integrations", true),
        utf8("extra", true),
        utf8("source", false),
        Field::new("event_date", DataType::Date32, false),
    ]))
});

/// The `events` table: one row per Segment event. `properties`, `traits`, `context`,
/// `integrations` and `extra` hold raw JSON object text; `event_date` (UTC day of
/// `timestamp`) partitions the table.
pub fn events_schema() -> SchemaRef {
    EVENTS_SCHEMA.clone()
}

static IMPORTED_FILES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("fingerprint", false),
        utf8("location", false),
        Field::new("size", DataType::Int64, false),
        ts("last_modified", true),
        utf8("e_tag", true),
        utf8("format", false),
        utf8("source", false),
        Field::new("rows_read", DataType::Int64, false),
        Field::new("rows_imported", DataType::Int64, false),
        Field::new("rows_duplicate", DataType::Int64, false),
        Field::new("rows_rejected", DataType::Int64, false),
        Field::new("events_version", DataType::Int64, true),
        ts("imported_at", false),
    ]))
});

/// The `imported_files` table: one row per input file an import committed.
pub fn imported_files_schema() -> SchemaRef {
    IMPORTED_FILES_SCHEMA.clone()
}

static IDENTITY_EDGES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("a_type", false),
        utf8("a_value", false),
        utf8("b_type", false),
        utf8("b_value", false),
        utf8("rule", false),
        utf8("source", true),
        ts("first_seen", false),
        ts("last_seen", false),
        Field::new("events", DataType::Int64, false),
        Field::new("score", DataType::Float64, false),
        utf8("status", false),
        utf8("reason", true),
        utf8("profile_id", true),
        Field::new("stitch_run", DataType::Int64, false),
    ]))
});

/// The `identity_edges` table, rewritten by each stitching run: one row per pair of
/// identifiers seen together by a rule (first and last seen and events over every run),
/// with its status in the current graph: `merged` (joined two profiles), `linked`
/// (joined a new identifier or confirmed a known link), `rejected` (would have broken
/// an identifier limit, against stronger evidence), `held` (an identifier of it is in
/// `blocked_values`) or `revoked` (by an unmerge); `reason` says why. `stitch_run` is
/// the run that wrote it.
pub fn identity_edges_schema() -> SchemaRef {
    IDENTITY_EDGES_SCHEMA.clone()
}

static IDENTITY_MAP_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("id_type", false),
        utf8("id_value", false),
        utf8("profile_id", false),
        ts("first_seen", false),
        ts("last_seen", false),
    ]))
});

/// The `identity_map` table: every identifier (type and normalized value) and the
/// profile it belongs to.
pub fn identity_map_schema() -> SchemaRef {
    IDENTITY_MAP_SCHEMA.clone()
}

static PROFILE_MERGES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("from_profile_id", false),
        utf8("into_profile_id", false),
        ts("merged_at", false),
        ts("edge_seen_at", true),
        utf8("a_type", true),
        utf8("a_value", true),
        utf8("b_type", true),
        utf8("b_value", true),
        utf8("rule", true),
        Field::new("stitch_run", DataType::Int64, false),
        utf8("kind", true),
        Field::new("identifiers", DataType::Int64, true),
    ]))
});

/// The `profile_merges` table: profile `from_profile_id` merged into `into_profile_id`
/// at `merged_at` because of the edge `(a_type, a_value)`–`(b_type, b_value)` seen at
/// `edge_seen_at` (no edge for merges found by a full rebuild). `kind` says what
/// happened: `merge` (`from` is gone into `into`), `split` (`into` is new, split off
/// `from` by an unmerge) or `move` (`identifiers` of `from` moved to `into` because
/// stronger evidence placed them there; both remain); rows written before kinds existed
/// have none and are merges.
pub fn profile_merges_schema() -> SchemaRef {
    PROFILE_MERGES_SCHEMA.clone()
}

static PROFILES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("profile_id", false),
        ts("first_seen", false),
        ts("last_seen", false),
        Field::new("identifiers", DataType::Int64, false),
        utf8("user_id", true),
        utf8("email", true),
        utf8("phone", true),
        utf8("traits", true),
    ]))
});

/// The base columns of the `profiles` table. Stitching writes these plus one column
/// per computed trait of `sql/traits/*.sql`, so the table's full schema follows the
/// project's trait files.
pub fn profiles_base_schema() -> SchemaRef {
    PROFILES_SCHEMA.clone()
}

static AUDIENCE_MEMBERSHIP_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("segment", false),
        utf8("profile_id", false),
        ts("since", false),
        Field::new("refresh_version", DataType::Int64, false),
    ]))
});

/// The `audience_membership` table: one row per member of each segment at the
/// segment's latest refresh; `since` is when the member last entered, `refresh_version`
/// the segment's refresh that produced the row.
pub fn audience_membership_schema() -> SchemaRef {
    AUDIENCE_MEMBERSHIP_SCHEMA.clone()
}

static AUDIENCE_CHANGES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("segment", false),
        utf8("profile_id", false),
        utf8("change", false),
        Field::new("refresh_version", DataType::Int64, false),
        ts("changed_at", false),
        utf8("merged_into", true),
        Field::new("run", DataType::Int64, false),
    ]))
});

/// The `audience_changes` table: `entered` / `exited` rows per segment refresh.
/// `merged_into` is set when an exit is a profile merged away by identity resolution
/// (its survivor is evaluated on its own); `run` is the refresh run that wrote the row.
pub fn audience_changes_schema() -> SchemaRef {
    AUDIENCE_CHANGES_SCHEMA.clone()
}

static SEGMENT_REFRESHES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("segment", false),
        Field::new("refresh_version", DataType::Int64, false),
        Field::new("run", DataType::Int64, false),
        ts("refreshed_at", false),
        ts("as_of", false),
        Field::new("members", DataType::Int64, false),
        Field::new("entered", DataType::Int64, false),
        Field::new("exited", DataType::Int64, false),
        utf8("fingerprint", false),
        utf8("inputs", false),
        Field::new("duration_ms", DataType::Int64, false),
    ]))
});

/// The `segment_refreshes` table: one row per segment refresh (its size, entered and
/// exited counts, the evaluation time, the input versions it read as JSON and their
/// fingerprint). Segment sizes over time are `SELECT refreshed_at, members FROM
/// segment_refreshes WHERE segment = '...'`.
pub fn segment_refreshes_schema() -> SchemaRef {
    SEGMENT_REFRESHES_SCHEMA.clone()
}

static SCORES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("profile_id", false),
        utf8("model", false),
        Field::new("version", DataType::Int64, false),
        ts("trained_at", false),
        utf8("score", false),
        Field::new("value", DataType::Float64, false),
    ]))
});

/// The `scores` table: the latest fit of each model, one row per profile and score
/// (`p_alive`, `clv_12m`, `purchase_propensity`, ...), partitioned by `model`. The
/// `profile_scores` view turns it into one column per score.
pub fn scores_schema() -> SchemaRef {
    SCORES_SCHEMA.clone()
}

/// Every score a model writes, as `(model, score)`: the columns of the
/// `profile_scores` view, in order.
pub const SCORE_COLUMNS: &[(&str, &str)] = &[
    ("bgnbd", "p_alive"),
    ("bgnbd", "churn_risk"),
    ("bgnbd", "expected_purchases_30d"),
    ("bgnbd", "expected_purchases_90d"),
    ("bgnbd", "purchase_frequency"),
    ("bgnbd", "recency_days"),
    ("bgnbd", "age_days"),
    ("gamma_gamma", "average_spend"),
    ("gamma_gamma", "expected_order_value"),
    ("gamma_gamma", "clv_12m"),
    ("propensity", "purchase_propensity"),
    ("rfm", "rfm_recency"),
    ("rfm", "rfm_frequency"),
    ("rfm", "rfm_monetary"),
    ("rfm", "rfm_score"),
];

static MODEL_RUNS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("model", false),
        Field::new("version", DataType::Int64, false),
        ts("trained_at", false),
        ts("calibration_end", false),
        utf8("time_unit", false),
        utf8("status", false),
        Field::new("customers", DataType::Int64, false),
        Field::new("scored", DataType::Int64, false),
        utf8("parameters", false),
        Field::new("log_likelihood", DataType::Float64, true),
        Field::new("iterations", DataType::Int64, true),
        Field::new("converged", DataType::Boolean, false),
        utf8("metrics", false),
        utf8("data_quality", false),
        utf8("inputs", false),
        Field::new("duration_ms", DataType::Int64, false),
    ]))
});

/// The `model_runs` table: one row per model fit, written or not (`status` =
/// `written`, `not_converged`, `no_data`): fitted parameters as JSON (named as in the
/// papers), log-likelihood, iterations, convergence, metrics (holdout AUC,
/// calibration), data-quality counts and the input table versions.
pub fn model_runs_schema() -> SchemaRef {
    MODEL_RUNS_SCHEMA.clone()
}

static MATCH_MODELS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        ts("trained_at", false),
        utf8("model", false),
        Field::new("records", DataType::Int64, false),
        Field::new("candidate_pairs", DataType::Int64, false),
        Field::new("random_pairs", DataType::Int64, false),
        Field::new("iterations", DataType::Int64, false),
        Field::new("converged", DataType::Boolean, false),
        utf8("report", false),
        Field::new("duration_ms", DataType::Int64, false),
    ]))
});

/// The `match_models` table: one row per `tessera match train`: the Fellegi–Sunter
/// model as JSON (λ, and per comparison its levels with `m` and `u`), how many records,
/// blocked and random pairs it learnt from, EM iterations and convergence, and the
/// training report (one EM session per blocking rule) as JSON.
pub fn match_models_schema() -> SchemaRef {
    MATCH_MODELS_SCHEMA.clone()
}

static MATCH_PAIRS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("id_l", false),
        utf8("id_r", false),
        utf8("rule", false),
        Field::new("match_weight", DataType::Float64, false),
        Field::new("probability", DataType::Float64, false),
        utf8("decision", false),
        utf8("cluster", true),
        utf8("comparisons", false),
        Field::new("model_version", DataType::Int64, false),
        ts("predicted_at", false),
    ]))
});

/// The `match_pairs` table: the candidate pairs of the latest `tessera match predict`
/// at or above the review band, each once (`id_l < id_r`): the blocking rule that
/// generated it, match weight and probability, `decision` (`match` at or above the
/// threshold, `review` in the band below it), the cluster of a matched record (its
/// smallest id), per-comparison levels and weights as JSON ("why these two matched"),
/// and the model version that scored it.
pub fn match_pairs_schema() -> SchemaRef {
    MATCH_PAIRS_SCHEMA.clone()
}

static ACTIVATION_BATCHES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("sync", false),
        utf8("destination", false),
        utf8("segment", false),
        Field::new("run", DataType::Int64, false),
        Field::new("from_version", DataType::Int64, false),
        Field::new("to_version", DataType::Int64, false),
        utf8("batch_id", false),
        Field::new("seq", DataType::Int64, false),
        utf8("members", true),
        Field::new("size", DataType::Int64, false),
        Field::new("attempt", DataType::Int64, false),
        utf8("status", false),
        Field::new("code", DataType::Int64, true),
        utf8("message", true),
        ts("next_attempt_at", true),
        ts("at", false),
        Field::new("skipped", DataType::Int64, false),
    ]))
});

/// The `activation_batches` table, the delivery ledger of syncs: one row each time a
/// batch is planned (`planned`, with its `members` as JSON `[[profile_id, change,
/// refresh_version, changed_at, merged_into], ...]`) and each time an attempt ends
/// (`delivered`, `retry` with `next_attempt_at`, `dead`), with the HTTP `code` and
/// `message`; `held` marks a mirror run waiting for confirmation. A batch's state is its
/// latest row. `skipped` counts members left out for want of consent.
pub fn activation_batches_schema() -> SchemaRef {
    ACTIVATION_BATCHES_SCHEMA.clone()
}

static AUDIT_LOG_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts("at", false),
        utf8("user", false),
        utf8("role", true),
        utf8("action", false),
        utf8("target", true),
        Field::new("rows", DataType::Int64, true),
        utf8("status", false),
        utf8("detail", true),
        utf8("client", true),
    ]))
});

/// The `audit_log` table: one row per handshake, query, prepared statement, catalog
/// request or refused call of the gRPC services: when, who (`-` when unknown), their
/// role, the action, its target (the SQL), rows returned, `status` (`ok`,
/// `unauthenticated`, `permission_denied`, `invalid`, `cancelled`), detail, client
/// address.
pub fn audit_log_schema() -> SchemaRef {
    AUDIT_LOG_SCHEMA.clone()
}

static CONSENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("profile_id", false),
        utf8("category", true),
        Field::new("granted", DataType::Boolean, false),
        ts("since", false),
        utf8("message_id", false),
    ]))
});

/// The `consent` table: each profile's consent per category, from the latest event of
/// its person that carried Segment's `context.consent.categoryPreferences` (the whole
/// object replaces the one before, as Segment's consent managers send it whole).
/// `since` and `message_id` name that event. A profile whose latest preferences were
/// empty has one row with a NULL `category` (granted nothing); a profile with no row
/// never stated a preference (Segment's rule: its data flows everywhere).
pub fn consent_schema() -> SchemaRef {
    CONSENT_SCHEMA.clone()
}

static SUPPRESSIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("subject_hash", false),
        utf8("id_type", false),
        utf8("state", false),
        ts("at", false),
        utf8("request_id", true),
        utf8("actor", false),
    ]))
});

/// The `suppressions` table: one row each time an identifier is suppressed or
/// unsuppressed (`state`), by its salted hash (`tessera_core::privacy`), never its
/// value. An identifier is suppressed when its latest row says so; events carrying it
/// are acknowledged and dropped.
pub fn suppressions_schema() -> SchemaRef {
    SUPPRESSIONS_SCHEMA.clone()
}

static PRIVACY_REQUESTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("request_id", false),
        utf8("kind", false),
        utf8("state", false),
        ts("at", false),
        ts("received_at", false),
        ts("deadline", false),
        utf8("subjects", false),
        utf8("profiles", false),
        utf8("counts", true),
        utf8("versions", true),
        utf8("reason", true),
        utf8("error", true),
        utf8("actor", false),
    ]))
});

/// The `privacy_requests` table: one row per state a request reaches (`received`,
/// `running`, `finished`, `partial`, `failed`), the latest being its state. `kind` is
/// `erase`, `export` or `suppress`; `subjects` a JSON array of `{id_type, hash}` (salted
/// hashes, no identifier in clear), `profiles` the JSON array of profile ids it
/// resolved to (so a crashed erasure resumes after the identity tables lost them),
/// `counts` rows per table, `versions` table versions before and after.
pub fn privacy_requests_schema() -> SchemaRef {
    PRIVACY_REQUESTS_SCHEMA.clone()
}

static BLOCKED_VALUES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("id_type", false),
        utf8("id_value", false),
        utf8("reason", false),
        Field::new("links", DataType::Int64, false),
        ts("detected_at", false),
        Field::new("stitch_run", DataType::Int64, false),
    ]))
});

/// The `blocked_values` table, rebuilt by each stitching run: identifiers that join no
/// profile because they would fuse people — placeholder values (`null`, `-1`, ...),
/// values linked to more identifiers of one type than `identity.max_links`, and the
/// busier end of an edge that would grow a profile past
/// `identity.max_profile_identifiers` — with the reason and how many distinct
/// identifiers they were seen with. Their edges are `held` in `identity_edges`.
pub fn blocked_values_schema() -> SchemaRef {
    BLOCKED_VALUES_SCHEMA.clone()
}

static IDENTITY_REVOCATIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("a_type", false),
        utf8("a_value", false),
        utf8("b_type", false),
        utf8("b_value", false),
        utf8("profile_id", true),
        utf8("reason", true),
        utf8("actor", false),
        ts("revoked_at", false),
    ]))
});

/// The `identity_revocations` table: identity edges an unmerge revoked (the pair, in
/// either order; the profile it split, why, who and when). Stitching never applies a
/// revoked edge again, in incremental runs and full rebuilds alike.
pub fn identity_revocations_schema() -> SchemaRef {
    IDENTITY_REVOCATIONS_SCHEMA.clone()
}

static MATCH_DECISIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("id_l", false),
        utf8("id_r", false),
        utf8("decision", false),
        Field::new("probability", DataType::Float64, true),
        Field::new("model_version", DataType::Int64, true),
        utf8("actor", false),
        ts("decided_at", false),
    ]))
});

/// The `match_decisions` table: a person's decision on a scored pair of `match_pairs`
/// (`accept` or `reject`), with the probability the model gave it, who and when; the
/// latest decision on a pair counts. Stitching links an accepted pair as a `reviewed`
/// edge and never links a rejected one by matching again, whatever later predictions
/// say. Append-only.
pub fn match_decisions_schema() -> SchemaRef {
    MATCH_DECISIONS_SCHEMA.clone()
}

static QUARANTINE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("quarantine_id", false),
        ts("received_at", false),
        utf8("source", false),
        utf8("origin", false),
        Field::new("position", DataType::Int64, true),
        utf8("reason_code", false),
        utf8("message", false),
        utf8("payload", true),
    ]))
});

/// The `quarantine` table: events refused by validation — bad types, missing ids, too
/// large, unknown type, times outside `[events]`'s window — by the collector (`origin`
/// `collector:<id>`, `position` the index in the request's batch) and the importer
/// (`origin` the file, `position` its line or row), with the raw JSON `payload`, the
/// source, the reason code and message. `quarantine_id` names the row (a hash of
/// source, origin, position, payload and arrival). `tessera quarantine replay` lands
/// them through the import path and removes those that landed.
pub fn quarantine_schema() -> SchemaRef {
    QUARANTINE_SCHEMA.clone()
}

static STREAM_DELIVERIES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("destination", false),
        Field::new("from_version", DataType::Int64, false),
        Field::new("to_version", DataType::Int64, false),
        Field::new("seq", DataType::Int64, false),
        utf8("batch_id", false),
        Field::new("events", DataType::Int64, false),
        Field::new("attempt", DataType::Int64, false),
        utf8("status", false),
        Field::new("code", DataType::Int64, true),
        utf8("message", true),
        ts("next_attempt_at", true),
        ts("at", false),
    ]))
});

/// The `stream_deliveries` table, the ledger of event-stream destinations: one row when
/// a batch is planned (`planned`: the events committed to `events` in versions
/// `(from_version, to_version]` that the destination's query selects, the `seq`-th
/// batch of them in `message_id` order, `events` of them) and one each time an attempt
/// ends (`delivered`, `retry` with `next_attempt_at`, `dead`) with the HTTP `code` and
/// `message`. Events are not copied here: a batch is read again from the versions it
/// names, so an erased person's events are not kept for delivery either.
pub fn stream_deliveries_schema() -> SchemaRef {
    STREAM_DELIVERIES_SCHEMA.clone()
}

static PLAN_VIOLATIONS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts("hour", false),
        utf8("source", false),
        utf8("event", false),
        utf8("property", true),
        utf8("violation", false),
        utf8("message", false),
        Field::new("blocked", DataType::Boolean, false),
        Field::new("events", DataType::Int64, false),
    ]))
});

/// The `plan_violations` table: how many events of each `source` broke its tracking
/// plan (`sql/plans/<source>.toml`), per `hour` they arrived in, `event` (the track
/// event's name, or `identify`, `page`, ...), `property` (none for an unplanned event)
/// and `violation` code (`unplanned_event`, `missing_property`, `wrong_type`,
/// `not_allowed_value`, `out_of_range`, `pattern_mismatch`, `unplanned_property`), with
/// one example `message` (never a property's value) and whether they were `blocked`
/// (kept in `quarantine`) or stored anyway. Sum `events` over rows: a period's counts
/// are spread over the rows of each commit.
pub fn plan_violations_schema() -> SchemaRef {
    PLAN_VIOLATIONS_SCHEMA.clone()
}

/// Columns that identify a person without being [`PII_COLUMNS`] (user and device ids,
/// identifier values of any type, members lists, query text), per table. Neither they
/// nor the personal-data columns get min/max statistics in the Delta log
/// ([`stats_columns`]).
pub const IDENTIFYING_COLUMNS: &[(&str, &str)] = &[
    (EVENTS, "message_id"),
    (EVENTS, "user_id"),
    (EVENTS, "anonymous_id"),
    (EVENTS, "previous_id"),
    (EVENTS, "group_id"),
    (EVENTS, "integrations"),
    (IDENTITY_EDGES, "profile_id"),
    (IDENTITY_MAP, "profile_id"),
    (PROFILE_MERGES, "from_profile_id"),
    (PROFILE_MERGES, "into_profile_id"),
    (PROFILES, "profile_id"),
    (PROFILES, "user_id"),
    (AUDIENCE_MEMBERSHIP, "profile_id"),
    (AUDIENCE_CHANGES, "profile_id"),
    (AUDIENCE_CHANGES, "merged_into"),
    (SCORES, "profile_id"),
    (MATCH_PAIRS, "id_l"),
    (MATCH_PAIRS, "id_r"),
    (MATCH_PAIRS, "cluster"),
    (MATCH_PAIRS, "comparisons"),
    (MATCH_DECISIONS, "id_l"),
    (MATCH_DECISIONS, "id_r"),
    (ACTIVATION_BATCHES, "members"),
    (ACTIVATION_BATCHES, "message"),
    (AUDIT_LOG, "target"),
    (AUDIT_LOG, "detail"),
    (CONSENT, "profile_id"),
    (CONSENT, "message_id"),
    (SUPPRESSIONS, "subject_hash"),
    (PRIVACY_REQUESTS, "subjects"),
    (IDENTITY_REVOCATIONS, "profile_id"),
    (PRIVACY_REQUESTS, "profiles"),
    (PRIVACY_REQUESTS, "error"),
];

/// Whether column `column` of table `table` holds personal data or identifies a person
/// ([`PII_COLUMNS`], [`IDENTIFYING_COLUMNS`]).
pub fn is_personal_column(table: &str, column: &str) -> bool {
    PII_COLUMNS
        .iter()
        .any(|(t, c, _)| *t == table && *c == column)
        || IDENTIFYING_COLUMNS
            .iter()
            .any(|(t, c)| *t == table && *c == column)
        || (matches!(table, IDENTITY_EDGES | IDENTITY_REVOCATIONS)
            && matches!(column, "a_value" | "b_value"))
        || (table == BLOCKED_VALUES && column == "id_value")
}

/// The columns of `def` that Delta keeps min/max statistics for
/// (`delta.dataSkippingStatsColumns`): every top-level column that is not personal
/// ([`is_personal_column`]) nor a partition column (whose value the log holds anyway),
/// so that no commit or checkpoint of the log carries an e-mail or a user id as a
/// file's minimum or maximum. Columns added later (computed traits) get none.
pub fn stats_columns(def: &TableDef) -> Vec<String> {
    def.schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|c| {
            !is_personal_column(def.name, c) && !def.partition_columns.contains(&c.as_str())
        })
        .collect()
}

/// How a column holding personal data is masked for users without the `pii` grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiMask {
    /// The whole value becomes `***`.
    Value,
    /// A JSON text whose values under [`PII_KEYS`] (at any depth) become `***`.
    Json,
    /// The value becomes `***` when the identifier-type column named here is one of
    /// [`PII_ID_TYPES`].
    WhenIdType(&'static str),
}

/// Columns that hold personal data (e-mail, phone, names, address, IP), per table.
pub const PII_COLUMNS: &[(&str, &str, PiiMask)] = &[
    (EVENTS, "properties", PiiMask::Json),
    (EVENTS, "traits", PiiMask::Json),
    (EVENTS, "context", PiiMask::Json),
    (EVENTS, "extra", PiiMask::Json),
    (IDENTITY_MAP, "id_value", PiiMask::WhenIdType("id_type")),
    (IDENTITY_EDGES, "a_value", PiiMask::WhenIdType("a_type")),
    (IDENTITY_EDGES, "b_value", PiiMask::WhenIdType("b_type")),
    (PROFILE_MERGES, "a_value", PiiMask::WhenIdType("a_type")),
    (PROFILE_MERGES, "b_value", PiiMask::WhenIdType("b_type")),
    (BLOCKED_VALUES, "id_value", PiiMask::WhenIdType("id_type")),
    (
        IDENTITY_REVOCATIONS,
        "a_value",
        PiiMask::WhenIdType("a_type"),
    ),
    (
        IDENTITY_REVOCATIONS,
        "b_value",
        PiiMask::WhenIdType("b_type"),
    ),
    (PROFILES, "email", PiiMask::Value),
    (PROFILES, "phone", PiiMask::Value),
    (PROFILES, "traits", PiiMask::Json),
    (QUARANTINE, "payload", PiiMask::Value),
];

/// JSON keys whose values are personal data (compared case-insensitively, ignoring
/// `_` and `-`: `firstName`, `first_name` and `FIRST-NAME` are all `firstname`).
pub const PII_KEYS: &[&str] = &[
    "email",
    "phone",
    "mobile",
    "firstname",
    "lastname",
    "name",
    "fullname",
    "address",
    "street",
    "ip",
    "birthday",
    "birthdate",
    "postalcode",
    "zip",
];

/// Whether a JSON key or column name names personal data: [`PII_KEYS`], compared
/// case-insensitively and ignoring `_` and `-`.
pub fn is_pii_key(key: &str) -> bool {
    // Compared lazily, without allocating: this runs for every key of every masked
    // answer.
    let folded = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase);
    PII_KEYS.iter().any(|k| folded.clone().eq(k.chars()))
}

/// Identifier types that are personal data.
pub const PII_ID_TYPES: &[&str] = &["email", "phone"];

/// Every table Tessera creates in a new lake.
pub fn tables() -> Vec<TableDef> {
    vec![
        TableDef {
            name: EVENTS,
            schema: events_schema(),
            partition_columns: &["event_date"],
            description: "raw Segment events, one row per event",
        },
        TableDef {
            name: IMPORTED_FILES,
            schema: imported_files_schema(),
            partition_columns: &[],
            description: "files imported into events (for incremental imports)",
        },
        TableDef {
            name: IDENTITY_EDGES,
            schema: identity_edges_schema(),
            partition_columns: &[],
            description: "identifier pairs seen together, each once per rule, with its status",
        },
        TableDef {
            name: IDENTITY_MAP,
            schema: identity_map_schema(),
            partition_columns: &[],
            description: "identifier (type, normalized value) to profile_id",
        },
        TableDef {
            name: PROFILE_MERGES,
            schema: profile_merges_schema(),
            partition_columns: &[],
            description: "which profile merged into which, when, and why",
        },
        TableDef {
            name: PROFILES,
            schema: profiles_base_schema(),
            partition_columns: &[],
            description: "golden profiles: identify traits and computed traits",
        },
        TableDef {
            name: AUDIENCE_MEMBERSHIP,
            schema: audience_membership_schema(),
            partition_columns: &[],
            description: "members of each segment at its latest refresh",
        },
        TableDef {
            name: AUDIENCE_CHANGES,
            schema: audience_changes_schema(),
            partition_columns: &[],
            description: "who entered and exited each segment at each refresh",
        },
        TableDef {
            name: SEGMENT_REFRESHES,
            schema: segment_refreshes_schema(),
            partition_columns: &[],
            description: "one row per segment refresh: size, entered, exited, inputs",
        },
        TableDef {
            name: SCORES,
            schema: scores_schema(),
            partition_columns: &["model"],
            description: "predictive scores per profile: latest fit of each model",
        },
        TableDef {
            name: AUDIT_LOG,
            schema: audit_log_schema(),
            partition_columns: &[],
            description: "who did what through the gRPC services, and how many rows",
        },
        TableDef {
            name: MODEL_RUNS,
            schema: model_runs_schema(),
            partition_columns: &[],
            description: "one row per model fit: parameters, fit quality, data quality",
        },
        TableDef {
            name: MATCH_MODELS,
            schema: match_models_schema(),
            partition_columns: &[],
            description: "one row per trained probabilistic-matching model",
        },
        TableDef {
            name: MATCH_PAIRS,
            schema: match_pairs_schema(),
            partition_columns: &[],
            description: "scored record pairs of the latest probabilistic matching",
        },
        TableDef {
            name: ACTIVATION_BATCHES,
            schema: activation_batches_schema(),
            partition_columns: &[],
            description: "the delivery ledger of syncs: every batch planned and every attempt",
        },
        TableDef {
            name: CONSENT,
            schema: consent_schema(),
            partition_columns: &[],
            description: "each profile's consent per category, from its latest preferences",
        },
        TableDef {
            name: SUPPRESSIONS,
            schema: suppressions_schema(),
            partition_columns: &[],
            description: "salted hashes of identifiers whose events are not stored",
        },
        TableDef {
            name: PRIVACY_REQUESTS,
            schema: privacy_requests_schema(),
            partition_columns: &[],
            description: "erasure, export and suppression requests and their states",
        },
        TableDef {
            name: BLOCKED_VALUES,
            schema: blocked_values_schema(),
            partition_columns: &[],
            description: "identifier values held out of profiles: they would fuse people",
        },
        TableDef {
            name: IDENTITY_REVOCATIONS,
            schema: identity_revocations_schema(),
            partition_columns: &[],
            description: "identity edges revoked by unmerges, never applied again",
        },
        TableDef {
            name: QUARANTINE,
            schema: quarantine_schema(),
            partition_columns: &[],
            description: "events refused by validation, with the reason, for replay",
        },
        TableDef {
            name: STREAM_DELIVERIES,
            schema: stream_deliveries_schema(),
            partition_columns: &[],
            description: "the delivery ledger of event streams: batches planned and attempts",
        },
        TableDef {
            name: MATCH_DECISIONS,
            schema: match_decisions_schema(),
            partition_columns: &[],
            description: "decisions of people on pairs of the matching review band",
        },
        TableDef {
            name: PLAN_VIOLATIONS,
            schema: plan_violations_schema(),
            partition_columns: &[],
            description: "events that broke their source's tracking plan, counted per hour",
        },
    ]
}

/// Looks a table definition up by name.
pub fn table(name: &str) -> Option<TableDef> {
    tables().into_iter().find(|t| t.name == name)
}

#[cfg(test)]
mod pii_key_tests {
    use super::is_pii_key;

    #[test]
    fn keys_fold_case_underscores_and_dashes() {
        for yes in [
            "email",
            "E-Mail",
            "first_name",
            "FIRST-NAME",
            "firstName",
            "ip",
            "Zip",
        ] {
            assert!(is_pii_key(yes), "{yes}");
        }
        for no in ["plan", "emails", "e", "", "ipx", "name_of_plan", "Ünïcode"] {
            assert!(!is_pii_key(no), "{no}");
        }
    }
}
