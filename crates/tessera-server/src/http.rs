//! The HTTP side: Segment's endpoints, `/health` and `/metrics`.
//!
//! Status codes as SDKs expect them: **200** when events were stored (partly: the body
//! lists the rejected ones with index, code and reason), **400** when nothing of the
//! request can ever be stored (malformed JSON, truncated gzip, over a limit, every
//! event invalid) — SDKs do not retry it, **401** for a missing or unknown write key,
//! **404**/**405** for a wrong path or method, **503** when the write-ahead log cannot
//! be written (retry). Error bodies are JSON with both `code` and `message`.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;
use tessera_ingest::collector::{CollectError, Collector, Endpoint, body_write_key};

/// What every handler shares.
pub struct AppState {
    pub collector: Arc<Collector>,
    /// Write key → source.
    pub sources: HashMap<String, String>,
    /// Largest body (after decompression).
    pub max_body: usize,
    /// The SQL queries of API callers (for `/metrics`).
    pub queries: Option<tessera_engine::query::Queries>,
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/{kind}", post(collect).fallback(method_not_allowed))
        .route("/health", get(health).fallback(method_not_allowed))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"success": false, "code": code, "message": message.into()})),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: use POST /v1/batch, /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group or /v1/alias",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "wrong method: collection endpoints take POST; /health and /metrics take GET",
    )
}

fn endpoint(kind: &str) -> Option<Endpoint> {
    Some(match kind {
        "batch" | "import" => Endpoint::Batch,
        "track" => Endpoint::Single("track"),
        "identify" => Endpoint::Single("identify"),
        "page" => Endpoint::Single("page"),
        "screen" => Endpoint::Single("screen"),
        "group" => Endpoint::Single("group"),
        "alias" => Endpoint::Single("alias"),
        _ => return None,
    })
}

/// The write key of HTTP basic auth (`base64("key:")`, padded or not).
fn basic_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = encoded.trim().trim_end_matches('=');
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let key = text.split_once(':').map_or(text.as_str(), |(k, _)| k);
    (!key.is_empty()).then(|| key.to_owned())
}

async fn collect(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(endpoint) = endpoint(&kind) else {
        return not_found().await;
    };
    let limit = state.max_body;
    let metrics = &state.collector.metrics;
    let raw = match axum::body::to_bytes(body, limit + 1).await {
        Ok(b) => b,
        Err(_) => {
            metrics.reject("batch_too_large", 1);
            return error(
                StatusCode::BAD_REQUEST,
                "batch_too_large",
                format!("request body is over the limit of {limit} bytes per request"),
            );
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        || raw.starts_with(&[0x1f, 0x8b]);
    let body: Vec<u8> = if gzip {
        let mut out = Vec::new();
        let read = flate2::read::GzDecoder::new(raw.as_ref())
            .take(limit as u64 + 1)
            .read_to_end(&mut out);
        if let Err(e) = read {
            metrics.reject("malformed_gzip", 1);
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_gzip",
                format!("the gzip body could not be decompressed: {e}"),
            );
        }
        out
    } else {
        raw.to_vec()
    };
    let key = basic_key(&headers).or_else(|| body_write_key(&body));
    let Some(key) = key else {
        metrics.reject("unauthorized", 1);
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no write key: send it as the user name of HTTP basic auth, or as writeKey in the body",
        );
    };
    let Some(source) = state.sources.get(&key) else {
        metrics.reject("unauthorized", 1);
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown write key: add a source with `tessera source add NAME`",
        );
    };
    match state.collector.collect(source, endpoint, &body).await {
        Ok(outcome) => (
            StatusCode::OK,
            axum::Json(json!({
                "success": true,
                "accepted": outcome.accepted,
                "duplicates": outcome.duplicates,
                "rejected": outcome.rejected,
            })),
        )
            .into_response(),
        Err(e) => {
            let status = match &e {
                CollectError::Unavailable(_)
                | CollectError::ShuttingDown
                | CollectError::Overloaded { .. }
                | CollectError::WalFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
                CollectError::BatchTooLarge { .. }
                | CollectError::EventTooLarge { .. }
                | CollectError::BadBody(_)
                | CollectError::NoValidEvent(_) => StatusCode::BAD_REQUEST,
            };
            let mut response = error(status, e.code(), e.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                // The SDKs retry 5xx with backoff; say when.
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            if let CollectError::NoValidEvent(rejected) = &e {
                response = (
                    status,
                    axum::Json(json!({
                        "success": false,
                        "code": e.code(),
                        "message": e.to_string(),
                        "accepted": 0,
                        "rejected": rejected,
                    })),
                )
                    .into_response();
            }
            response
        }
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.collector.metrics;
    let (buffered_bytes, lag) = state.collector.backlog();
    let degraded = state.collector.degraded();
    let mut body = json!({
        "status": if degraded.is_some() { "degraded" } else { "ok" },
        "buffered_events": m.buffered_events.load(Ordering::Relaxed),
        "buffered_bytes": buffered_bytes,
        "flush_lag_seconds": lag as f64 / 1e6,
        "wal_bytes": m.wal_bytes.load(Ordering::Relaxed),
    });
    if let Some(reason) = degraded {
        body["reason"] = json!(reason);
    }
    axum::Json(body).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.collector.metrics;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "tessera_http_requests_total",
        "counter",
        "Collection requests.",
        vec![(String::new(), g(&m.requests))],
    );
    metric(
        "tessera_events_received_total",
        "counter",
        "Events received.",
        vec![(String::new(), g(&m.events_received))],
    );
    metric(
        "tessera_events_accepted_total",
        "counter",
        "Events made durable.",
        vec![(String::new(), g(&m.events_accepted))],
    );
    metric(
        "tessera_events_duplicate_total",
        "counter",
        "Events dropped as duplicate messageIds.",
        vec![(String::new(), g(&m.events_duplicate))],
    );
    metric(
        "tessera_events_suppressed_total",
        "counter",
        "Events acknowledged and not stored: they carry a suppressed identifier.",
        vec![(String::new(), g(&m.events_suppressed))],
    );
    metric(
        "tessera_events_quarantined_total",
        "counter",
        "Refused events kept in the quarantine table.",
        vec![(String::new(), g(&m.events_quarantined))],
    );
    metric(
        "tessera_events_rejected_total",
        "counter",
        "Events or requests rejected, by reason.",
        m.rejected()
            .into_iter()
            .map(|(code, n)| (format!("{{reason=\"{code}\"}}"), n))
            .collect(),
    );
    metric(
        "tessera_events_flushed_total",
        "counter",
        "Events committed to the events table.",
        vec![(String::new(), g(&m.events_flushed))],
    );
    metric(
        "tessera_events_buffered",
        "gauge",
        "Events acknowledged, not yet committed.",
        vec![(String::new(), g(&m.buffered_events))],
    );
    let (buffered_bytes, lag) = state.collector.backlog();
    metric(
        "tessera_events_buffered_bytes",
        "gauge",
        "Memory held by events acknowledged and not yet committed ([server] max_buffered_bytes).",
        vec![(String::new(), buffered_bytes as u64)],
    );
    metric(
        "tessera_flush_lag_seconds",
        "gauge",
        "How long the oldest uncommitted event has waited.",
        vec![(String::new(), (lag / 1_000_000) as u64)],
    );
    metric(
        "tessera_wal_bytes",
        "gauge",
        "Bytes in the write-ahead log.",
        vec![(String::new(), g(&m.wal_bytes))],
    );
    metric(
        "tessera_wal_fsyncs_total",
        "counter",
        "fsyncs of the write-ahead log (group commits).",
        vec![(String::new(), g(&m.wal_fsyncs))],
    );
    if let Some(q) = &state.queries {
        let stats = q.stats();
        metric(
            "tessera_queries_running",
            "gauge",
            "SQL queries of API callers running now.",
            vec![(String::new(), stats.running as u64)],
        );
        metric(
            "tessera_queries_waiting",
            "gauge",
            "SQL queries waiting for a slot ([server] max_concurrent_queries).",
            vec![(String::new(), stats.waiting as u64)],
        );
        metric(
            "tessera_queries_total",
            "counter",
            "SQL queries of API callers, by how they ended.",
            [
                ("finished", stats.finished),
                ("failed", stats.failed),
                ("cancelled", stats.cancelled),
                ("timed_out", stats.timed_out),
                ("out_of_memory", stats.out_of_memory),
                ("refused_busy", stats.refused_busy),
            ]
            .into_iter()
            .map(|(outcome, n)| (format!("{{outcome=\"{outcome}\"}}"), n))
            .collect(),
        );
        metric(
            "tessera_queries_planned_total",
            "counter",
            "SQL statements of API callers planned (a Flight SQL statement once, when its FlightInfo is asked for).",
            vec![(String::new(), stats.planned)],
        );
        metric(
            "tessera_query_memory_bytes",
            "gauge",
            "Bytes the running queries hold in the query memory pool.",
            vec![(String::new(), stats.memory_reserved)],
        );
        if let Some(limit) = stats.memory_limit {
            metric(
                "tessera_query_memory_limit_bytes",
                "gauge",
                "Size of the query memory pool ([server] query_memory).",
                vec![(String::new(), limit)],
            );
        }
    }
    out.push_str(&format!(
        "# HELP tessera_flush_seconds Time of commits to the events table.\n# TYPE tessera_flush_seconds summary\ntessera_flush_seconds_sum {}\ntessera_flush_seconds_count {}\n",
        g(&m.flush_micros_total) as f64 / 1e6,
        g(&m.flushes)
    ));
    out.push_str(&format!(
        "# HELP tessera_flush_last_seconds Time of the last commit.\n# TYPE tessera_flush_last_seconds gauge\ntessera_flush_last_seconds {}\n",
        g(&m.flush_micros_last) as f64 / 1e6
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
