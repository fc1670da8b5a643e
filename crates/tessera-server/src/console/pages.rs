//! The console's pages, rendered with `maud` (compile-time HTML, every value escaped).
//!
//! Elements carrying a figure have a `data-metric` attribute naming it, so a test (or a
//! scraper) reads the number the page shows. Charts are a `div.chart` whose data is a
//! JSON block (`<script type="application/json">`, never executed) that
//! `console.js` hands to uPlot; bars are `span.bar` whose width `console.js` sets from
//! `data-share` (the CSP allows no inline style).

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::{Value, json};

use super::{Console, Viewer};

/// Figures as people read them: `1,234,567`.
pub fn thousands(n: impl Into<i128>) -> String {
    let n: i128 = n.into();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A time (µs since the epoch) as `2026-12-02 21:05 UTC`.
pub fn when(micros: Option<i64>) -> String {
    micros
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map_or_else(
            || "never".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const PAGES: &[(&str, &str, &str)] = &[
    ("overview", "/ui/", "Overview"),
    ("sources", "/ui/sources", "Sources"),
    ("identity", "/ui/identity", "Identity"),
    ("review", "/ui/review", "Matching review"),
    ("segments", "/ui/segments", "Segments"),
    ("models", "/ui/models", "Models"),
    ("activation", "/ui/activation", "Activation"),
    ("privacy", "/ui/privacy", "Privacy"),
];

fn layout(viewer: Option<&Viewer>, active: &str, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tessera" }
                link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/ui/static/uPlot.min.css";
                link rel="stylesheet" href="/ui/static/console.css";
                script src="/ui/static/uPlot.min.js" defer {}
                script src="/ui/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/ui/" { "Tessera" }
                    @if let Some(v) = viewer {
                        nav {
                            @for (key, href, label) in PAGES {
                                @if super::role_may_view(v.principal.role, key) {
                                    a href=(href) class=[(*key == active).then_some("active")] { (label) }
                                }
                            }
                        }
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            span.who data-user=(v.principal.user) {
                                (v.principal.user) " · " (v.principal.role.name())
                                @if !v.principal.pii { " · masked" }
                            }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
    .into_string()
}

/// A page with one message (errors, refusals) and a way on.
pub fn message(viewer: Option<&Viewer>, title: &str, text: &str, back: &str) -> String {
    layout(
        viewer,
        "",
        title,
        html! {
            p.message role="alert" { (text) }
            p { a href=(back) { "Continue" } }
        },
    )
}

/// The sign-in page (`sso`: the single sign-on button's label, when configured).
pub fn login(next: &str, note: Option<&str>, error: Option<&str>, sso: Option<&str>) -> String {
    layout(
        None,
        "",
        "Sign in",
        html! {
            @if let Some(n) = note { p.note role="status" { (n) } }
            @if let Some(e) = error { p.message role="alert" { (e) } }
            form.login method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label { "User" input type="text" name="user" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
            @if let Some(label) = sso {
                p.sso { a.button href=(format!("/ui/oidc/start?next={}", url_encode(next))) { (label) } }
            }
            p.hint { "Accounts are those of " code { "tessera.toml" } " (" code { "tessera user add" } ")." }
        },
    )
}

/// A chart: a `div.chart` and its data.
fn chart(id: &str, kind: &str, data: &Value) -> Markup {
    html! {
        div.chart id=(id) data-kind=(kind) data-source=(format!("{id}-data")) {}
        script type="application/json" id=(format!("{id}-data")) {
            (PreEscaped(data.to_string().replace("</", "<\\/")))
        }
    }
}

/// A horizontal bar of `value` out of `max`.
fn bar(value: f64, max: f64) -> Markup {
    let share = if max > 0.0 { value / max } else { 0.0 };
    html! { span.bar data-share=(format!("{share:.4}")) {} }
}

fn metric(name: &str, label: &str, value: String) -> Markup {
    html! {
        div.card {
            div.figure data-metric=(name) { (value) }
            div.label { (label) }
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Events per day as a chart: x = days (unix seconds), one series per `group`.
fn daily_series(volume: &[tessera_ingest::stats::DailyVolume], by_type: bool) -> Value {
    let mut days: Vec<&str> = volume.iter().map(|v| v.day.as_str()).collect();
    days.dedup();
    let mut groups: Vec<&str> = volume
        .iter()
        .map(|v| {
            if by_type {
                v.kind.as_str()
            } else {
                v.source.as_str()
            }
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let x: Vec<i64> = days
        .iter()
        .map(|d| {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(0, |t| t.and_utc().timestamp())
        })
        .collect();
    let series: Vec<Value> = groups
        .iter()
        .map(|g| {
            let values: Vec<i64> = days
                .iter()
                .map(|d| {
                    volume
                        .iter()
                        .filter(|v| v.day == *d && (if by_type { &v.kind } else { &v.source }) == g)
                        .map(|v| v.events)
                        .sum()
                })
                .collect();
            json!({"label": g, "values": values})
        })
        .collect();
    json!({"x": x, "time": true, "series": series})
}

pub async fn overview(c: &Console, v: &Viewer) -> Result<String, String> {
    let volume = c
        .cached("daily_volume_30", |e| async move {
            tessera_ingest::stats::daily_volume(&e, 30)
                .await
                .map_err(err)
        })
        .await?;
    let by_source = c
        .cached("events_by_source", |e| async move {
            tessera_ingest::stats::events_by_source(&e)
                .await
                .map_err(err)
        })
        .await?;
    let refused = c
        .cached("refused", |e| async move {
            tessera_ingest::stats::refused(&e).await.map_err(err)
        })
        .await?;
    let fresh = c
        .cached("freshness", |e| async move {
            tessera_identity::stats::freshness(&e).await.map_err(err)
        })
        .await?;
    let refreshes = c
        .cached("latest_refreshes", |e| async move {
            tessera_segments::audience::latest_refreshes(&e)
                .await
                .map_err(err)
        })
        .await?;
    let last_fit = c
        .cached("last_fit", |e| async move {
            tessera_predict::history::last_fit(&e).await.map_err(err)
        })
        .await?;
    let index = c.index.get();
    let snapshot = index.snapshot();
    let events: i64 = by_source.iter().map(|(_, n)| n).sum();
    let quarantined: i64 = refused.iter().map(|r| r.events).sum();
    let last_refresh = refreshes.iter().map(|(_, r)| r.refreshed_at).max();
    let refresh_stale = match (last_refresh, fresh.stitched_at) {
        (None, _) => true,
        (Some(r), Some(s)) => r < s,
        (Some(_), None) => false,
    };
    let max_refused = refused.iter().map(|r| r.events).max().unwrap_or(0) as f64;
    Ok(layout(
        Some(v),
        "overview",
        "Overview",
        html! {
            section.cards {
                (metric("events", "events stored", thousands(events)))
                (metric("quarantined", "events refused, in quarantine", thousands(quarantined)))
                (metric("profiles", "profiles", thousands(snapshot.len() as i64)))
                (metric("identifiers", "identifiers", thousands(snapshot.identifiers() as i64)))
                (metric("merges", "merges", thousands(fresh.merges as i64)))
                (metric("segments", "segments", thousands(snapshot.segments().len() as i64)))
            }
            section {
                h2 { "Events per day by source (last 30 days of data)" }
                (chart("volume", "lines", &daily_series(&volume, false)))
            }
            section.split {
                div {
                    h2 { "Refused by reason" }
                    @if refused.is_empty() { p.empty { "Nothing refused." } }
                    @else {
                        table data-table="refused" {
                            thead { tr { th { "source" } th { "reason" } th.num { "events" } th {} } }
                            tbody {
                                @for r in refused.iter() {
                                    tr { td { (r.source) } td { code { (r.reason) } } td.num { (thousands(r.events)) } td { (bar(r.events as f64, max_refused)) } }
                                }
                            }
                        }
                    }
                }
                div {
                    h2 { "Freshness" }
                    table data-table="freshness" {
                        thead { tr { th { "step" } th { "last run" } th { "state" } } }
                        tbody {
                            tr {
                                td { "stitch (identity map)" }
                                td { (when(fresh.stitched_at)) }
                                td data-stale=(fresh.stale()) { @if fresh.stale() { span.stale { "stale: events arrived since" } } @else { span.ok { "current" } } }
                            }
                            tr {
                                td { "segment refresh" }
                                td { (when(last_refresh)) }
                                td data-stale=(refresh_stale) { @if refresh_stale { span.stale { "stale: the identity map changed since" } } @else { span.ok { "current" } } }
                            }
                            tr {
                                td { "model fit" }
                                td { (when(*last_fit)) }
                                td data-stale=(last_fit.is_none()) { @if last_fit.is_none() { span.stale { "never fitted" } } @else { span.ok { "fitted" } } }
                            }
                        }
                    }
                }
            }
        },
    ))
}

pub async fn sources(c: &Console, v: &Viewer) -> Result<String, String> {
    let volume = c
        .cached("daily_volume_30", |e| async move {
            tessera_ingest::stats::daily_volume(&e, 30)
                .await
                .map_err(err)
        })
        .await?;
    let by_source = c
        .cached("events_by_source", |e| async move {
            tessera_ingest::stats::events_by_source(&e)
                .await
                .map_err(err)
        })
        .await?;
    let top = c
        .cached("top_events", |e| async move {
            tessera_ingest::stats::top_events(&e, 30, 10)
                .await
                .map_err(err)
        })
        .await?;
    let refused = c
        .cached("refused", |e| async move {
            tessera_ingest::stats::refused(&e).await.map_err(err)
        })
        .await?;
    let violations = c
        .cached("plan_violations", |e| async move {
            tessera_ingest::stats::plan_violations(&e, 50)
                .await
                .map_err(err)
        })
        .await?;
    let samples = c
        .cached("quarantine_samples", |e| async move {
            tessera_ingest::quarantine::list(&e, None, Some(20))
                .await
                .map_err(err)
        })
        .await?;
    let mut sources: Vec<String> = by_source.iter().map(|(s, _)| s.clone()).collect();
    for r in refused.iter() {
        if !sources.contains(&r.source) {
            sources.push(r.source.clone());
        }
    }
    sources.sort();
    Ok(layout(
        Some(v),
        "sources",
        "Sources",
        html! {
            @if sources.is_empty() { p.empty { "No events yet: send some to /v1/batch or run tessera import." } }
            @for (i, s) in sources.iter().enumerate() {
                @let stored = by_source.iter().find(|(n, _)| n == s).map_or(0, |(_, n)| *n);
                @let mine: Vec<tessera_ingest::stats::DailyVolume> = volume.iter().filter(|d| &d.source == s).cloned().collect();
                @let top_mine: Vec<&tessera_ingest::stats::TopEvent> = top.iter().filter(|t| &t.source == s).collect();
                @let max_top = top_mine.iter().map(|t| t.events).max().unwrap_or(0) as f64;
                @let rejected: i64 = refused.iter().filter(|r| &r.source == s).map(|r| r.events).sum();
                section.source data-source=(s) {
                    h2 { (s) }
                    section.cards {
                        (metric(&format!("events:{s}"), "events stored", thousands(stored)))
                        (metric(&format!("refused:{s}"), "refused", thousands(rejected)))
                    }
                    (chart(&format!("source-{i}"), "lines", &daily_series(&mine, true)))
                    h3 { "Top events (last 30 days of data)" }
                    table {
                        thead { tr { th { "event" } th.num { "events" } th {} } }
                        tbody {
                            @for t in top_mine { tr { td { (t.event) } td.num { (thousands(t.events)) } td { (bar(t.events as f64, max_top)) } } }
                        }
                    }
                }
            }
            section {
                h2 { "Tracking-plan violations" }
                @if violations.is_empty() { p.empty { "None." } }
                @else {
                    table {
                        thead { tr { th { "source" } th { "event" } th { "property" } th { "violation" } th { "blocked" } th.num { "events" } th { "example" } } }
                        tbody {
                            @for r in violations.iter() {
                                tr {
                                    td { (r["source"].as_str().unwrap_or_default()) }
                                    td { (r["event"].as_str().unwrap_or_default()) }
                                    td { (r["property"].as_str().unwrap_or_default()) }
                                    td { code { (r["violation"].as_str().unwrap_or_default()) } }
                                    td { (if r["blocked"].as_bool().unwrap_or(false) { "yes" } else { "no" }) }
                                    td.num { (thousands(r["events"].as_i64().unwrap_or(0))) }
                                    td { (r["message"].as_str().unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Latest refused events" }
                @if samples.is_empty() { p.empty { "Nothing in quarantine." } }
                @else {
                    table data-table="samples" {
                        thead { tr { th { "received" } th { "source" } th { "origin" } th { "reason" } th { "message" } th { "payload" } } }
                        tbody {
                            @for q in samples.iter() {
                                tr {
                                    td { (q.received_at) }
                                    td { (q.source) }
                                    td { (q.origin) }
                                    td { code { (q.reason_code) } }
                                    td { (q.message) }
                                    td.payload { @if v.principal.pii { (q.payload.as_deref().map(|p| p.chars().take(200).collect::<String>()).unwrap_or_default()) } @else { "***" } }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

pub async fn identity(c: &Console, v: &Viewer) -> Result<String, String> {
    let pii = v.principal.pii;
    let blocked = c
        .cached(&format!("blocked:{pii}"), |e| async move {
            tessera_identity::stats::blocked(&e, pii, 50)
                .await
                .map_err(err)
        })
        .await?;
    let edges = c
        .cached(&format!("refused_edges:{pii}"), |e| async move {
            tessera_identity::stats::refused_edges(&e, pii, 50)
                .await
                .map_err(err)
        })
        .await?;
    let index = c.index.get();
    let snapshot = index.snapshot();
    let histogram = snapshot.identifier_histogram(None);
    let max_bucket = histogram.iter().map(|(_, n)| *n).max().unwrap_or(0) as f64;
    let largest = snapshot.largest(20, None);
    Ok(layout(
        Some(v),
        "identity",
        "Identity",
        html! {
            section.cards {
                (metric("profiles", "profiles", thousands(snapshot.len() as i64)))
                (metric("identifiers", "identifiers", thousands(snapshot.identifiers() as i64)))
                (metric("blocked", "values held out by limits", thousands(blocked.1 as i64)))
            }
            form.lookup method="get" action="/ui/profile" {
                label { "Find a profile " input type="text" name="id" placeholder="email:jane@example.com, user_id:u123, profile_id:p_…" required; }
                button type="submit" { "Open" }
            }
            section.split {
                div {
                    h2 { "Identifiers per profile" }
                    table data-table="histogram" {
                        thead { tr { th { "identifiers" } th.num { "profiles" } th {} } }
                        tbody {
                            @for (label, n) in &histogram {
                                tr { td { (label) } td.num data-bucket=(label) { (thousands(*n as i64)) } td { (bar(*n as f64, max_bucket)) } }
                            }
                        }
                    }
                }
                div {
                    h2 { "Held out by limits" }
                    @if blocked.0.is_empty() { p.empty { "No value was held out." } }
                    @else {
                        table data-table="blocked" {
                            thead { tr { th { "type" } th { "value" } th { "reason" } th.num { "linked identifiers" } } }
                            tbody {
                                @for b in &blocked.0 { tr { td { (b.id_type) } td { (b.value) } td { (b.reason) } td.num { (thousands(b.links)) } } }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Edges refused by limits (" (thousands(edges.1)) ")" }
                @if edges.0.is_empty() { p.empty { "The graph applied every edge." } }
                @else {
                    table data-table="refused-edges" {
                        thead { tr { th { "identifier" } th { "identifier" } th { "rule" } th { "status" } th { "reason" } th.num { "events" } } }
                        tbody {
                            @for x in &edges.0 { tr { td.ids { span.id { (x.a) } } td.ids { span.id { (x.b) } } td { (x.rule) } td { (x.status) } td { (x.reason) } td.num { (thousands(x.events)) } } }
                        }
                    }
                }
            }
            section {
                h2 { "The 20 largest profiles" }
                table data-table="largest" {
                    thead { tr { th { "profile" } th.num { "identifiers" } th { "identifiers (first 8)" } } }
                    tbody {
                        @for i in &largest {
                            @let p = snapshot.profile(*i);
                            tr data-identifiers=(p.identifiers.len()) {
                                td { a href=(format!("/ui/profile?id={}", url_encode(&format!("profile_id:{}", p.profile_id)))) { (p.profile_id) } }
                                td.num { (p.identifiers.len()) }
                                td.ids {
                                    @for id in p.identifiers.iter().take(8) {
                                        span.id { (id.id_type) ":" (tessera_identity::snapshot::shown_value(&id.id_type, &id.value, pii)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// One profile (status and page).
pub fn profile(c: &Console, v: &Viewer, id: &str) -> (StatusCode, String) {
    let index = c.index.get();
    let snapshot = index.snapshot();
    let shown_id = |t: &str, value: &str| {
        format!(
            "{t}:{}",
            tessera_identity::snapshot::shown_value(t, value, v.principal.pii)
        )
    };
    let resolved = tessera_identity::lookup::parse_identifier(id)
        .and_then(|(t, value)| Ok((snapshot.resolve(&t, &value)?, t, value)));
    let (resolved, t, value) = match resolved {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                message(
                    Some(v),
                    "No such identifier",
                    &e.to_string(),
                    "/ui/identity",
                ),
            );
        }
    };
    let Some(i) = resolved.profile else {
        return (
            StatusCode::NOT_FOUND,
            message(
                Some(v),
                "No such profile",
                &format!("no profile holds {}", shown_id(&t, &value)),
                "/ui/identity",
            ),
        );
    };
    let p = snapshot.profile(i);
    let p = if v.principal.pii {
        p.clone()
    } else {
        p.masked()
    };
    let view = tessera_identity::lookup::ProfileView::of(
        &p,
        resolved.id_type.clone(),
        resolved.value.clone(),
        resolved.merged_from.clone(),
    );
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let body = html! {
        p { "Profile " code data-metric="profile_id" { (view.profile_id) } @if let Some(m) = &view.merged_from { " (asked by " code { (m) } ", merged into it)" } }
        section.split {
            div {
                h2 { "Golden record" }
                table data-table="profile" {
                    tbody {
                        @for (k, val) in &view.profile {
                            @if k != "traits" { tr { th { (k) } td { (cell(val)) } } }
                        }
                        @if let Some(Value::Object(traits)) = view.profile.get("traits") {
                            @for (k, val) in traits { tr { th { "traits." (k) } td { (cell(val)) } } }
                        }
                    }
                }
            }
            div {
                h2 { "Segments" }
                @if view.segments.is_empty() { p.empty { "In no segment." } }
                ul data-list="segments" { @for s in &view.segments { li { a href=(format!("/ui/segments?segment={}", url_encode(s))) { (s) } } } }
                h2 { "Scores" }
                @if view.scores.is_empty() { p.empty { "No scores yet." } }
                @else {
                    table { thead { tr { th { "model" } th { "score" } th.num { "value" } } }
                        tbody { @for s in &view.scores { tr { td { (cell(&s["model"])) } td { (cell(&s["score"])) } td.num { (s["value"].as_f64().map(|x| format!("{x:.4}")).unwrap_or_default()) } } } } }
                }
                h2 { "Consent" }
                @match &view.consent {
                    None => p.empty { "Never stated." },
                    Some(c) => ul { @for (k, granted) in c { li { (k) ": " (if *granted { "granted" } else { "denied" }) } } },
                }
            }
        }
        section {
            h2 { "Identifiers (" (view.identifiers.len()) ")" }
            table data-table="identifiers" {
                thead { tr { th { "type" } th { "value" } th { "first seen" } th { "last seen" } } }
                tbody { @for id in &view.identifiers { tr { td { (cell(&id["id_type"])) } td { (cell(&id["id_value"])) } td { (cell(&id["first_seen"])) } td { (cell(&id["last_seen"])) } } } }
            }
        }
        section {
            h2 { "Merge history" }
            @if view.merges.is_empty() { p.empty { "No merges." } }
            @else {
                table data-table="merges" {
                    thead { tr { th { "merged at" } th { "from" } th { "rule" } th { "because of" } } }
                    tbody {
                        @for m in &view.merges {
                            tr {
                                td { (cell(&m["merged_at"])) }
                                td { (cell(&m["from_profile_id"])) }
                                td { (cell(&m["rule"])) }
                                td { (cell(&m["a_type"])) ":" (cell(&m["a_value"])) " — " (cell(&m["b_type"])) ":" (cell(&m["b_value"])) }
                            }
                        }
                    }
                }
            }
        }
    };
    (StatusCode::OK, layout(Some(v), "identity", "Profile", body))
}

pub async fn review(c: &Console, v: &Viewer, done: Option<&str>) -> Result<String, String> {
    let pii = v.principal.pii;
    let (pairs, total) = tessera_identity::matching::review::queue(&c.engine, 50, pii)
        .await
        .map_err(err)?;
    Ok(layout(
        Some(v),
        "review",
        "Matching review",
        html! {
            @if let Some(d) = done { p.note role="status" { (d) } }
            p { span data-metric="review_pairs" { (thousands(total as i64)) } " pairs in the review band await a decision"
                @if total > pairs.len() as u64 { " (the " (pairs.len()) " most likely shown)" } ". "
                "Accepted pairs are linked by the next " code { "tessera stitch" } " as reviewed edges; rejected pairs are never linked by matching again." }
            @if !v.may_decide() { p.note { "Your role may look but not decide." } }
            @for p in &pairs {
                article.pair data-pair=(p.key) {
                    header {
                        span.ids { code { (p.label_l) } " ↔ " code { (p.label_r) } }
                        span.prob { "probability " strong { (format!("{:.3}", p.probability)) } " · weight " (format!("{:.2}", p.match_weight)) " · rule " (p.rule) }
                    }
                    table.terms {
                        thead { tr { th { "comparison" } th { "level" } th.num { "weight" } } }
                        tbody { @for t in &p.terms { tr { td { (t.comparison) } td { (t.level) } td.num class=(if t.weight >= 0.0 { "num pos" } else { "num neg" }) { (format!("{:+.2}", t.weight)) } } } }
                    }
                    @if v.may_decide() {
                        div.decide {
                            form method="post" action="/ui/review" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                input type="hidden" name="pair" value=(p.key);
                                input type="hidden" name="decision" value="accept";
                                button.accept type="submit" { "Same person" }
                            }
                            form method="post" action="/ui/review" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                input type="hidden" name="pair" value=(p.key);
                                input type="hidden" name="decision" value="reject";
                                button.reject type="submit" { "Different people" }
                            }
                        }
                    }
                }
            }
            @if pairs.is_empty() { p.empty { "Nothing to review: run " code { "tessera match predict" } " to score pairs." } }
        },
    ))
}

pub async fn segments(
    c: &Console,
    v: &Viewer,
    chosen: Option<&str>,
    a: Option<&str>,
    b: Option<&str>,
) -> Result<String, String> {
    let latest = c
        .cached("latest_refreshes", |e| async move {
            tessera_segments::audience::latest_refreshes(&e)
                .await
                .map_err(err)
        })
        .await?;
    let index = c.index.get();
    let snapshot = index.snapshot();
    let names: Vec<&str> = snapshot
        .segments()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let chosen = chosen
        .filter(|n| names.contains(n))
        .or(names.first().copied());
    let history = match chosen {
        Some(name) => {
            let key = format!("history:{name}");
            let name = name.to_owned();
            c.cached(&key, |e| async move {
                tessera_segments::audience::history(&e, &name, 10_000)
                    .await
                    .map_err(err)
            })
            .await?
        }
        None => std::sync::Arc::new(Vec::new()),
    };
    let mut points: Vec<&tessera_segments::audience::Refresh> = history.iter().collect();
    points.reverse();
    let series = json!({
        "x": points.iter().map(|r| r.refreshed_at / 1_000_000).collect::<Vec<_>>(),
        "time": true,
        "series": [
            {"label": "members", "values": points.iter().map(|r| r.members).collect::<Vec<_>>()},
            {"label": "entered", "values": points.iter().map(|r| r.entered).collect::<Vec<_>>()},
            {"label": "exited", "values": points.iter().map(|r| r.exited).collect::<Vec<_>>()},
        ]
    });
    let overlap = match (a, b) {
        (Some(a), Some(b)) => snapshot.overlap(a, b, None).map(|o| (a, b, o)),
        _ => None,
    };
    let max_size = snapshot
        .segments()
        .iter()
        .map(|s| s.size)
        .max()
        .unwrap_or(0) as f64;
    Ok(layout(
        Some(v),
        "segments",
        "Segments",
        html! {
            @if names.is_empty() { p.empty { "No segments: add SQL files to sql/segments/ and run tessera segments refresh." } }
            @else {
                table data-table="segments" {
                    thead { tr { th { "segment" } th { "description" } th.num { "members" } th {} th.num { "entered" } th.num { "exited" } th { "refreshed" } } }
                    tbody {
                        @for s in snapshot.segments() {
                            @let last = latest.iter().find(|(n, _)| n == &s.name).map(|(_, r)| r);
                            tr {
                                td { a href=(format!("/ui/segments?segment={}", url_encode(&s.name))) { (s.name) } }
                                td { (s.description) }
                                td.num data-metric=(format!("members:{}", s.name)) { (thousands(s.size)) }
                                td { (bar(s.size as f64, max_size)) }
                                td.num { (last.map(|r| thousands(r.entered)).unwrap_or_default()) }
                                td.num { (last.map(|r| thousands(r.exited)).unwrap_or_default()) }
                                td { (when(s.refreshed_at)) }
                            }
                        }
                    }
                }
            }
            @if let Some(name) = chosen {
                @if let Some(sql) = c.project_dir.as_ref().and_then(|d| std::fs::read_to_string(d.join(tessera_segments::SEGMENTS_DIR).join(format!("{name}.sql"))).ok()) {
                    section {
                        h2 { "Definition: " (name) }
                        pre.sql data-definition=(name) { (sql) }
                    }
                }
                section {
                    h2 { "Size over time: " (name) }
                    p { span data-metric="refreshes" data-segment=(name) { (points.len()) } " refreshes" }
                    (chart("segment-history", "lines", &series))
                }
                section {
                    h2 { "Overlap" }
                    form.overlap method="get" action="/ui/segments" {
                        input type="hidden" name="segment" value=(name);
                        select name="a" { @for n in &names { option value=(n) selected[Some(*n) == a] { (n) } } }
                        " and "
                        select name="b" { @for n in &names { option value=(n) selected[Some(*n) == b] { (n) } } }
                        button type="submit" { "Compare" }
                    }
                    @if let Some((a, b, (in_a, in_b, both))) = overlap {
                        p data-metric="overlap" { (thousands(both as i64)) " profiles are in both " (a) " (" (thousands(in_a as i64)) ") and " (b) " (" (thousands(in_b as i64)) ")." }
                    }
                }
            }
        },
    ))
}

pub async fn models(c: &Console, v: &Viewer) -> Result<String, String> {
    let runs = c
        .cached("model_runs", |e| async move {
            tessera_predict::history::latest_runs(&e).await.map_err(err)
        })
        .await?;
    let spread = c
        .cached("score_distributions", |e| async move {
            tessera_predict::history::score_distributions(&e)
                .await
                .map_err(err)
        })
        .await?;
    Ok(layout(
        Some(v),
        "models",
        "Models",
        html! {
            @if runs.is_empty() { p.empty { "No model has run yet: tessera predict fits them." } }
            @else {
                table data-table="models" {
                    thead { tr { th { "model" } th.num { "version" } th { "trained" } th { "status" } th.num { "customers" } th.num { "scored" } th.num { "holdout AUC" } } }
                    tbody {
                        @for r in runs.iter() {
                            tr {
                                td { (r["model"].as_str().unwrap_or_default()) }
                                td.num { (r["version"].as_i64().unwrap_or(0)) }
                                td { (r["trained_at"].as_str().unwrap_or_default()) }
                                td { (r["status"].as_str().unwrap_or_default()) }
                                td.num { (thousands(r["customers"].as_i64().unwrap_or(0))) }
                                td.num { (thousands(r["scored"].as_i64().unwrap_or(0))) }
                                td.num { (r["metrics"]["holdout_auc"].as_f64().map(|a| format!("{a:.3}")).unwrap_or_else(|| "—".into())) }
                            }
                        }
                    }
                }
            }
            @for (i, r) in runs.iter().enumerate() {
                @if let Some(bins) = r["metrics"]["holdout_calibration"].as_array() {
                    section {
                        h2 { "Calibration by decile: " (r["model"].as_str().unwrap_or_default()) }
                        (chart(&format!("calibration-{i}"), "points", &json!({
                            "x": (1..=bins.len()).collect::<Vec<_>>(),
                            "time": false,
                            "series": [
                                {"label": "predicted", "values": bins.iter().map(|b| b["predicted"].clone()).collect::<Vec<_>>()},
                                {"label": "observed", "values": bins.iter().map(|b| b["observed"].clone()).collect::<Vec<_>>()},
                            ]
                        })))
                    }
                }
            }
            section {
                h2 { "Score distributions (latest version)" }
                @if spread.is_empty() { p.empty { "No scores yet." } }
                div.grid {
                    @for (model, score, lo, hi, counts) in spread.iter() {
                        @let max = counts.iter().copied().max().unwrap_or(0) as f64;
                        div.dist {
                            h3 { (model) " · " (score) }
                            table {
                                tbody {
                                    @for (k, n) in counts.iter().enumerate() {
                                        @let from = lo + (hi - lo) * k as f64 / 10.0;
                                        tr { td.num { (format!("{from:.3}")) } td.num { (thousands(*n)) } td { (bar(*n as f64, max)) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

pub async fn activation(c: &Console, v: &Viewer) -> Result<String, String> {
    let syncs = c
        .cached("sync_status", |e| async move {
            tessera_activate::status(&e).await.map_err(err)
        })
        .await?;
    let streams = c
        .cached("stream_status", |e| async move {
            tessera_activate::stream::status(&e).await.map_err(err)
        })
        .await?;
    let all: Vec<&tessera_activate::SyncStatus> = syncs.iter().chain(streams.iter()).collect();
    Ok(layout(
        Some(v),
        "activation",
        "Activation",
        html! {
            @if all.is_empty() { p.empty { "Nothing delivered yet: configure [destinations] and [syncs] in tessera.toml." } }
            @for s in &all {
                @let batches = s.planned;
                @let max = batches.max(1) as f64;
                section.sync data-sync=(s.sync) {
                    h2 { (s.sync) " → " (s.destination) }
                    p { "segment " (s.segment) " · run " (s.run) " (refresh version " (s.to_version) ")"
                        " · last attempt " (when(s.last_attempt_at)) }
                    table.funnel data-table="funnel" {
                        tbody {
                            tr { th { "batches planned" } td.num data-metric=(format!("planned:{}", s.sync)) { (thousands(s.planned as i64)) } td { (bar(s.planned as f64, max)) } }
                            tr { th { "held for confirmation" } td.num { (thousands(s.held as i64)) } td { (bar(s.held as f64, max)) } }
                            tr { th { "retrying" } td.num { (thousands(s.retrying as i64)) } td { (bar(s.retrying as f64, max)) } }
                            tr { th { "failed (dead letters)" } td.num data-metric=(format!("dead:{}", s.sync)) { (thousands(s.dead as i64)) } td { (bar(s.dead as f64, max)) } }
                            tr { th { "delivered" } td.num data-metric=(format!("delivered:{}", s.sync)) { (thousands(s.delivered as i64)) } td { (bar(s.delivered as f64, max)) } }
                        }
                    }
                    p { (thousands(s.members_delivered as i64)) " members delivered; " (thousands(s.skipped as i64)) " left out for want of consent." }
                    @if let Some(err) = &s.last_error { p.message { "Latest failure: " (err) } }
                }
            }
        },
    ))
}

pub async fn privacy(c: &Console, v: &Viewer) -> Result<String, String> {
    let requests = tessera_privacy::requests::list(&c.engine)
        .await
        .map_err(err)?;
    let now = chrono::Utc::now().timestamp_micros();
    let open: Vec<&tessera_privacy::requests::Request> =
        requests.iter().filter(|r| !r.is_done()).collect();
    Ok(layout(
        Some(v),
        "privacy",
        "Privacy",
        html! {
            p { span data-metric="privacy_open" { (open.len()) } " open requests of " (requests.len()) "." }
            table data-table="requests" {
                thead { tr { th { "request" } th { "kind" } th { "state" } th { "received" } th.num { "days left" } th.num { "profiles" } th { "error" } } }
                tbody {
                    @for r in requests.iter().rev() {
                        @let left = (r.deadline - now) as f64 / 86_400e6;
                        tr {
                            td { code { (r.request_id) } }
                            td { (r.kind) }
                            td { (r.state) }
                            td { (when(Some(r.received_at))) }
                            td.num class=(if left < 5.0 { "num stale" } else { "num" }) { (format!("{:.0}", left.max(0.0))) }
                            td.num { (r.profiles.len()) }
                            td { (r.error.as_deref().unwrap_or_default()) }
                        }
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_query_values_read_as_people_expect() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1_000), "-1,000");
        assert_eq!(url_encode("email:a+b@x.com"), "email%3Aa%2Bb%40x.com");
        assert_eq!(when(None), "never");
    }

    #[test]
    fn values_are_escaped() {
        let page = message(None, "t", "<script>alert(1)</script>", "/ui/");
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;"));
        let c = chart("x", "lines", &json!({"label": "</script><b>"}));
        assert!(!c.into_string().contains("</script><b>"));
    }
}
