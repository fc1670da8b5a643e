//! The web console at `/ui/` on the HTTP port: the pipeline, the identities, the
//! audiences and the review of uncertain matches, as server-rendered HTML.
//!
//! - **Pages** ([`pages`]): Overview, Sources, Identity (and one profile), Matching
//!   review, Segments, Models, Activation, Privacy. Every figure comes from the domain
//!   functions the CLI and the APIs use (`tessera_ingest::stats`, the profile snapshot
//!   of [`crate::index`], `tessera_segments::audience`, `tessera_predict::history`,
//!   `tessera_activate::status`, `tessera_privacy`), never from SQL of its own. Lake
//!   aggregates are kept in memory and recomputed in the background once older than
//!   [`CACHE_FOR`], so a page renders in milliseconds on a large lake.
//! - **Assets** are compiled into the binary (uPlot 1.6.32 for charts, the console's CSS
//!   and script); nothing is loaded from another host, and every answer carries
//!   `Content-Security-Policy: default-src 'self'` (no inline script or style runs).
//! - **Sign-in** with the accounts of `tessera.toml` ([`crate::auth`]): the session is
//!   the sign-in token in a cookie (`HttpOnly`, `SameSite=Strict`, `Path=/ui`, `Secure`
//!   under TLS) valid for [`crate::auth::TOKEN_LIFETIME`]; forms carry a CSRF token
//!   derived from the session, checked on every POST. Roles `admin`, `analyst` and
//!   `marketer` see the pages, `privacy` only the privacy page; `ingest` accounts and
//!   accounts with a row filter are refused (the console shows lake-wide figures).
//!   Review decisions take `admin` or `analyst`. Single sign-on through an OpenID
//!   Connect provider: [`oidc`].
//! - **Masking and audit**: without the `pii` grant e-mails, phones and personal traits
//!   show as `***`, exactly as the profile API and Flight SQL mask them; every view of
//!   a page with personal data, every sign-in and every review decision is a row of
//!   `audit_log`.

pub mod oidc;
pub mod pages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tessera_core::config::Role;
use tessera_engine::Engine;

use crate::audit::{AuditLog, Entry};
use crate::auth::{Auth, Principal};
use crate::index::IndexHandle;

/// How long lake aggregates (volumes, rejects, refresh histories, ...) are reused.
pub const CACHE_FOR: Duration = Duration::from_secs(10);

/// The caller's address, when the server knows it.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// The session cookie.
pub const COOKIE: &str = "tessera_console";

/// A cached aggregate and when it was computed.
type Cached = (Instant, Arc<dyn std::any::Any + Send + Sync>);

/// What the console's handlers share.
pub struct Console {
    pub engine: Engine,
    pub auth: Arc<Auth>,
    pub audit: Arc<AuditLog>,
    pub index: Arc<IndexHandle>,
    /// Cookies marked `Secure` (the HTTP port serves TLS).
    pub secure: bool,
    /// Single sign-on (`[server.oidc]`).
    pub oidc: Option<oidc::Oidc>,
    /// The project (segment definitions); `None` without one.
    pub project_dir: Option<std::path::PathBuf>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// Keys being computed anew in the background.
    refreshing: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Console {
    pub fn new(
        engine: Engine,
        auth: Arc<Auth>,
        audit: Arc<AuditLog>,
        index: Arc<IndexHandle>,
        secure: bool,
        oidc: Option<oidc::Oidc>,
        project_dir: Option<std::path::PathBuf>,
    ) -> Console {
        Console {
            project_dir,
            engine,
            auth,
            audit,
            index,
            secure,
            oidc,
            cache: Arc::default(),
            refreshing: Arc::default(),
        }
    }

    /// Computes every page's lake aggregates once, so that even the first views after
    /// the server starts need not wait for them (run with the server's background work).
    pub async fn warm(self: Arc<Self>) {
        let viewer = Viewer {
            principal: Principal {
                user: "tessera serve".into(),
                role: Role::Admin,
                pii: false,
                rows: None,
            },
            csrf: String::new(),
            token: String::new(),
            client: None,
        };
        let started = Instant::now();
        let results = [
            pages::overview(&self, &viewer).await.err(),
            pages::sources(&self, &viewer).await.err(),
            pages::identity(&self, &viewer).await.err(),
            pages::segments(&self, &viewer, None, None, None)
                .await
                .err(),
            pages::models(&self, &viewer).await.err(),
            pages::activation(&self, &viewer).await.err(),
        ];
        match results.into_iter().flatten().next() {
            Some(e) => tracing::warn!("console: preparing the pages: {e}"),
            None => tracing::debug!(
                "console pages prepared in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        }
    }

    /// What the sign-in page offers besides the password form.
    fn sso(&self) -> Option<&str> {
        self.oidc.as_ref().map(|o| o.label())
    }

    /// `make(engine)`'s value under `key`, computed on first use and then served from
    /// memory: once older than [`CACHE_FOR`] it is still served while one background
    /// task computes it anew, so no page view waits for a lake aggregate again.
    async fn cached<T, F, M>(&self, key: &str, make: M) -> Result<Arc<T>, String>
    where
        T: Send + Sync + 'static,
        F: std::future::Future<Output = Result<T, String>> + Send + 'static,
        M: FnOnce(Engine) -> F,
    {
        let (hit, stale) = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(key) {
                Some((at, v)) => (v.clone().downcast::<T>().ok(), at.elapsed() >= CACHE_FOR),
                None => (None, false),
            }
        };
        if let Some(v) = hit {
            if stale {
                let first = self
                    .refreshing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.to_owned());
                if first {
                    let (cache, refreshing) = (self.cache.clone(), self.refreshing.clone());
                    let (key, work) = (key.to_owned(), make(self.engine.clone()));
                    tokio::spawn(async move {
                        match work.await {
                            Ok(value) => {
                                let value: Arc<dyn std::any::Any + Send + Sync> = Arc::new(value);
                                cache
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(key.clone(), (Instant::now(), value));
                            }
                            Err(e) => tracing::warn!("console: refreshing {key}: {e}"),
                        }
                        refreshing
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                    });
                }
            }
            return Ok(v);
        }
        let value = Arc::new(make(self.engine.clone()).await?);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), (Instant::now(), value.clone()));
        Ok(value)
    }

    /// Forgets every cached aggregate (after a review decision).
    fn forget(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The console's routes (under `/ui`).
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/oidc/start", get(oidc_start))
        .route("/ui/oidc/callback", get(oidc_callback))
        .route("/ui/sources", get(sources))
        .route("/ui/identity", get(identity))
        .route("/ui/profile", get(profile))
        .route("/ui/review", get(review).post(decide))
        .route("/ui/segments", get(segments))
        .route("/ui/models", get(models))
        .route("/ui/activation", get(activation))
        .route("/ui/privacy", get(privacy))
        .route("/ui/static/{file}", get(asset))
        .route("/ui/{*rest}", get(not_found))
        .with_state(console)
}

/// A page as sent: HTML with the console's security headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::message(None, "Not found", "There is no such console page.", "/ui/"),
    )
}

/// The compiled-in static files: (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "uPlot.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot.min.css"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

async fn asset(Path(file): Path<String>) -> Response {
    let Some((_, kind, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == file) else {
        return not_found().await;
    };
    let mut r = bytes.to_vec().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    secure_headers(h);
    r
}

/// The session token of the request's cookie.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The CSRF token of a session: a digest of the session token, so a page of another
/// site (which cannot read the cookie) cannot forge it.
pub fn csrf_of(token: &str) -> String {
    tessera_core::auth::token_digest(&format!("tessera-console-csrf:{token}"))
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A signed-in caller of a page.
pub struct Viewer {
    pub principal: Principal,
    pub csrf: String,
    token: String,
    client: Option<String>,
}

impl Viewer {
    /// May decide review pairs.
    pub fn may_decide(&self) -> bool {
        matches!(self.principal.role, Role::Admin | Role::Analyst)
    }

    fn entry(&self, action: &str, status: &str) -> Entry {
        let mut e = Entry::new(&self.principal.user, action, status);
        e.role = Some(self.principal.role.name().to_owned());
        e.client = self.client.clone();
        e
    }
}

/// Why a page is not shown.
enum Refusal {
    /// Not signed in, or the session ended: back to the sign-in page.
    SignIn { expired: bool, next: String },
    /// Signed in, but the role may not see it.
    Forbidden(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn { expired, next } => {
                let to = format!(
                    "/ui/login?next={}{}",
                    pages::url_encode(&next),
                    if expired { "&expired=1" } else { "" }
                );
                let mut r = Redirect::to(&to).into_response();
                secure_headers(r.headers_mut());
                r
            }
            Refusal::Forbidden(why) => html(
                StatusCode::FORBIDDEN,
                pages::message(None, "Not allowed", &why, "/ui/"),
            ),
        }
    }
}

/// Which pages a role may open.
fn role_may_view(role: Role, page: &str) -> bool {
    match role {
        Role::Admin | Role::Analyst | Role::Marketer => true,
        Role::Privacy => page == "privacy",
        Role::Ingest => false,
    }
}

fn client_of(addr: Option<&Extension<ConnectInfo<SocketAddr>>>) -> Option<String> {
    addr.map(|a| (a.0).0.to_string())
}

/// The signed-in viewer of `page`, or why not.
fn viewer(
    console: &Console,
    headers: &HeaderMap,
    addr: Option<&Extension<ConnectInfo<SocketAddr>>>,
    page: &str,
    path: &str,
) -> Result<Viewer, Refusal> {
    let Some(token) = session_token(headers) else {
        return Err(Refusal::SignIn {
            expired: false,
            next: path.to_owned(),
        });
    };
    let principal = console
        .auth
        .authenticate_token(&token)
        .map_err(|_| Refusal::SignIn {
            expired: true,
            next: path.to_owned(),
        })?;
    if principal.rows.is_some() {
        return Err(Refusal::Forbidden(format!(
            "{} has a row filter: the console shows lake-wide figures, so accounts limited to some profiles use the APIs instead",
            principal.user
        )));
    }
    if !role_may_view(principal.role, page) {
        return Err(Refusal::Forbidden(format!(
            "the {} role may not open this page",
            principal.role.name()
        )));
    }
    Ok(Viewer {
        csrf: csrf_of(&token),
        principal,
        token,
        client: client_of(addr),
    })
}

/// An error reading the lake, as a page.
fn failed(viewer: Option<&Viewer>, what: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!("console: {what}: {e}");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::message(
            viewer,
            "Cannot read the lake",
            &format!("{what}: {e}"),
            "/ui/",
        ),
    )
}

macro_rules! signed_in {
    ($console:expr, $headers:expr, $addr:expr, $page:expr, $path:expr) => {
        match viewer(&$console, &$headers, $addr.as_ref(), $page, $path) {
            Ok(v) => v,
            Err(r) => return r.into_response(),
        }
    };
}

async fn overview(State(c): State<Arc<Console>>, headers: HeaderMap, addr: Peer) -> Response {
    let v = signed_in!(c, headers, addr, "overview", "/ui/");
    match pages::overview(&c, &v).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => failed(Some(&v), "the overview", e),
    }
}

async fn sources(State(c): State<Arc<Console>>, headers: HeaderMap, addr: Peer) -> Response {
    let v = signed_in!(c, headers, addr, "sources", "/ui/sources");
    c.audit
        .record(v.entry("console_view", "ok").target("/ui/sources"));
    match pages::sources(&c, &v).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => failed(Some(&v), "the sources", e),
    }
}

async fn identity(State(c): State<Arc<Console>>, headers: HeaderMap, addr: Peer) -> Response {
    let v = signed_in!(c, headers, addr, "identity", "/ui/identity");
    c.audit
        .record(v.entry("console_view", "ok").target("/ui/identity"));
    match pages::identity(&c, &v).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => failed(Some(&v), "the identity graph", e),
    }
}

#[derive(Deserialize)]
struct ProfileQuery {
    id: Option<String>,
}

async fn profile(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    addr: Peer,
    Query(q): Query<ProfileQuery>,
) -> Response {
    let id = q.id.unwrap_or_default();
    let path = format!("/ui/profile?id={}", pages::url_encode(&id));
    let v = signed_in!(c, headers, addr, "identity", &path);
    let (status, body) = pages::profile(&c, &v, &id);
    let audited = tessera_identity::lookup::parse_identifier(&id)
        .map(|(t, value)| {
            format!(
                "{t}:{}",
                tessera_identity::snapshot::shown_value(&t, &value, false)
            )
        })
        .unwrap_or_else(|_| "-".into());
    c.audit.record(
        v.entry(
            "console_profile",
            if status == StatusCode::OK {
                "ok"
            } else {
                "not_found"
            },
        )
        .target(audited),
    );
    html(status, body)
}

async fn review(State(c): State<Arc<Console>>, headers: HeaderMap, addr: Peer) -> Response {
    let v = signed_in!(c, headers, addr, "review", "/ui/review");
    c.audit
        .record(v.entry("console_view", "ok").target("/ui/review"));
    match pages::review(&c, &v, None).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => failed(Some(&v), "the review queue", e),
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    csrf: Option<String>,
    pair: Option<String>,
    decision: Option<String>,
}

async fn decide(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    addr: Peer,
    Form(form): Form<DecisionForm>,
) -> Response {
    let v = match viewer(&c, &headers, addr.as_ref(), "review", "/ui/review") {
        Ok(v) => v,
        Err(Refusal::SignIn { .. }) => {
            return html(
                StatusCode::UNAUTHORIZED,
                pages::message(
                    None,
                    "Session expired",
                    "Your session has expired or you signed out, so the decision was not recorded: sign in again.",
                    "/ui/login?next=%2Fui%2Freview",
                ),
            );
        }
        Err(r) => return r.into_response(),
    };
    let refuse = |status: StatusCode, code: &str, why: String| {
        c.audit
            .record(v.entry("console_review", code).detail(why.clone()));
        html(
            status,
            pages::message(Some(&v), "Decision not recorded", &why, "/ui/review"),
        )
    };
    if !form.csrf.as_deref().is_some_and(|t| same(t, &v.csrf)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "csrf",
            "The form's security token does not match your session (a forged or outdated form): reload the review page and decide again.".into(),
        );
    }
    if !v.may_decide() {
        return refuse(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!(
                "the {} role may not decide review pairs: ask an admin or analyst",
                v.principal.role.name()
            ),
        );
    }
    let (Some(key), Some(d)) = (&form.pair, &form.decision) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the form needs pair and decision (accept or reject)".into(),
        );
    };
    let decision: tessera_identity::matching::review::Decision = match d.parse() {
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
    };
    let actor = format!("console:{}", v.principal.user);
    match tessera_identity::matching::review::decide(&c.engine, key, decision, &actor).await {
        Ok(pair) => {
            c.forget();
            c.audit.record(
                v.entry("console_review", "ok")
                    .target(format!(
                        "{} / {}",
                        tessera_identity::matching::review::label(&pair.id_l, false),
                        tessera_identity::matching::review::label(&pair.id_r, false)
                    ))
                    .rows(1)
                    .detail(format!(
                        "{} (probability {:.4}, model version {})",
                        decision.as_str(),
                        pair.probability,
                        pair.model_version
                    )),
            );
            let done = format!(
                "Recorded: {} {} / {}. The next `tessera stitch` applies it.",
                decision.as_str(),
                tessera_identity::matching::review::label(&pair.id_l, v.principal.pii),
                tessera_identity::matching::review::label(&pair.id_r, v.principal.pii)
            );
            match pages::review(&c, &v, Some(&done)).await {
                Ok(body) => html(StatusCode::OK, body),
                Err(e) => failed(Some(&v), "the review queue", e),
            }
        }
        Err(tessera_identity::IdentityError::BadIdentifier(m)) => {
            refuse(StatusCode::CONFLICT, "not_found", m)
        }
        Err(e) => failed(Some(&v), "recording the decision", e),
    }
}

#[derive(Deserialize)]
struct SegmentsQuery {
    segment: Option<String>,
    a: Option<String>,
    b: Option<String>,
}

async fn segments(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    addr: Peer,
    Query(q): Query<SegmentsQuery>,
) -> Response {
    let v = signed_in!(c, headers, addr, "segments", "/ui/segments");
    match pages::segments(&c, &v, q.segment.as_deref(), q.a.as_deref(), q.b.as_deref()).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => failed(Some(&v), "the segments", e),
    }
}

async fn models(State(c): State<Arc<Console>>, headers: HeaderMap, addr: Peer) -> Response {
    let v = signed_in!(c, headers, addr, "models", "/ui/models");
    match pages::models(&c, &v).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => failed(Some(&v), "the models", e),
    }
}

async fn activation(State(c): State<Arc<Console>>, headers: HeaderMap, addr: Peer) -> Response {
    let v = signed_in!(c, headers, addr, "activation", "/ui/activation");
    match pages::activation(&c, &v).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => failed(Some(&v), "activation", e),
    }
}

async fn privacy(State(c): State<Arc<Console>>, headers: HeaderMap, addr: Peer) -> Response {
    let v = signed_in!(c, headers, addr, "privacy", "/ui/privacy");
    c.audit
        .record(v.entry("console_view", "ok").target("/ui/privacy"));
    match pages::privacy(&c, &v).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => failed(Some(&v), "the privacy requests", e),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    expired: Option<String>,
}

async fn login_form(State(c): State<Arc<Console>>, Query(q): Query<LoginQuery>) -> Response {
    let note = q
        .expired
        .is_some()
        .then_some("Your session has expired or you signed out: sign in again.");
    html(
        StatusCode::OK,
        pages::login(q.next.as_deref().unwrap_or("/ui/"), note, None, c.sso()),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    user: Option<String>,
    password: Option<String>,
    next: Option<String>,
}

/// Where to go after signing in: a console path, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

/// Whether a form post comes from this console: its `Origin` (sent by browsers with
/// every POST) names the host it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

async fn login(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    addr: Peer,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let user = form.user.unwrap_or_default();
    let password = form.password.unwrap_or_default();
    let client = client_of(addr.as_ref());
    let audit = |status: &str, detail: String| {
        let mut e = Entry::new(
            if user.is_empty() { "-" } else { &user },
            "console_login",
            status,
        )
        .detail(detail);
        e.client = client.clone();
        c.audit.record(e);
    };
    if !same_origin(&headers) {
        audit("refused", "cross-site sign-in form".into());
        return html(
            StatusCode::FORBIDDEN,
            pages::login(
                &next,
                None,
                Some(
                    "The sign-in form was sent from another site: open the console's own sign-in page.",
                ),
                c.sso(),
            ),
        );
    }
    if user.is_empty() || password.is_empty() {
        return html(
            StatusCode::BAD_REQUEST,
            pages::login(
                &next,
                None,
                Some("Enter your user name and password."),
                c.sso(),
            ),
        );
    }
    let login = match c
        .auth
        .login(&user, &password, addr.as_ref().map(|a| (a.0).0.ip()))
    {
        Ok(l) => l,
        Err(refused) => {
            audit(refused.audit, refused.status.message().to_owned());
            let status = if refused.audit == "throttled" {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::UNAUTHORIZED
            };
            return html(
                status,
                pages::login(&next, None, Some(refused.status.message()), c.sso()),
            );
        }
    };
    signed_in(&c, login, next, client, "password")
}

/// The answer to a successful sign-in (password or single sign-on): the session cookie
/// and the way on; or, for accounts the console refuses, the reason.
fn signed_in(
    c: &Console,
    login: crate::auth::Login,
    next: String,
    client: Option<String>,
    how: &str,
) -> Response {
    let audit = |status: &str, detail: String| {
        let mut e = Entry::new(&login.principal.user, "console_login", status).detail(detail);
        e.role = Some(login.principal.role.name().to_owned());
        e.client = client.clone();
        c.audit.record(e);
    };
    if login.principal.role == Role::Ingest || login.principal.rows.is_some() {
        c.auth.logout(&login.token);
        audit("permission_denied", format!("{how}: role or row filter"));
        return html(
            StatusCode::FORBIDDEN,
            pages::login(
                &next,
                None,
                Some(
                    "This account cannot use the console: ingest accounts and accounts with a row filter use the APIs.",
                ),
                c.sso(),
            ),
        );
    }
    audit("ok", format!("signed in ({how})"));
    let next = if login.principal.role == Role::Privacy {
        "/ui/privacy".to_owned()
    } else {
        next
    };
    let mut r = Redirect::to(&next).into_response();
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        login.token,
        crate::auth::TOKEN_LIFETIME.as_secs(),
        if c.secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    secure_headers(r.headers_mut());
    r
}

#[derive(Deserialize)]
struct StartQuery {
    next: Option<String>,
}

async fn oidc_start(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    let Some(oidc) = &c.oidc else {
        return not_found().await;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    match oidc.start(host, c.secure, next.clone()).await {
        Ok(url) => {
            let mut r = Redirect::to(&url).into_response();
            secure_headers(r.headers_mut());
            r
        }
        Err(e) => {
            tracing::warn!("console single sign-on: {e}");
            html(
                StatusCode::BAD_GATEWAY,
                pages::login(
                    &next,
                    None,
                    Some(&format!("Single sign-on is unavailable: {e}")),
                    c.sso(),
                ),
            )
        }
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn oidc_callback(
    State(c): State<Arc<Console>>,
    addr: Peer,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = &c.oidc else {
        return not_found().await;
    };
    let client = client_of(addr.as_ref());
    let refuse = |status: StatusCode, why: String| {
        let mut e = Entry::new("-", "console_login", "unauthenticated")
            .detail(format!("single sign-on: {why}"));
        e.client = client.clone();
        c.audit.record(e);
        html(status, pages::login("/ui/", None, Some(&why), c.sso()))
    };
    let Some(attempt) = q.state.as_deref().and_then(|s| oidc.take(s)) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started here, took over ten minutes, or was already used: start again.".into(),
        );
    };
    if let Some(error) = q.error {
        return refuse(
            StatusCode::UNAUTHORIZED,
            format!(
                "The identity provider did not sign you in: {error} {}",
                q.error_description.unwrap_or_default()
            ),
        );
    }
    let Some(code) = q.code else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The identity provider sent no code.".into(),
        );
    };
    let user = match oidc.finish(&attempt, &code).await {
        Ok(u) => u,
        Err(e) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!("Single sign-on failed: {e}"),
            );
        }
    };
    match c.auth.sign_in_as(&user) {
        Ok(login) => signed_in(&c, login, attempt.next.clone(), client, "single sign-on"),
        Err(refused) => refuse(StatusCode::FORBIDDEN, refused.status.message().to_owned()),
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    addr: Peer,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Ok(v) = viewer(&c, &headers, addr.as_ref(), "privacy", "/ui/")
        .or_else(|_| viewer(&c, &headers, addr.as_ref(), "overview", "/ui/"))
    {
        if !form.csrf.as_deref().is_some_and(|t| same(t, &v.csrf)) {
            return html(
                StatusCode::FORBIDDEN,
                pages::message(
                    Some(&v),
                    "Not signed out",
                    "The form's security token does not match your session: reload the page and sign out again.",
                    "/ui/",
                ),
            );
        }
        c.auth.logout(&v.token);
        c.audit.record(v.entry("console_logout", "ok"));
    }
    let mut r = Redirect::to("/ui/login").into_response();
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tessera_console=abc ; b=2"),
        );
        assert_eq!(session_token(&h).as_deref(), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("tessera_console="));
        assert_eq!(session_token(&h), None);
    }

    #[test]
    fn only_console_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/ui/identity")), "/ui/identity");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(safe_next(Some("/ui/\\evil")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn cross_site_posts_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(
            same_origin(&h),
            "no Origin: not a browser's cross-site post"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
    }

    #[test]
    fn csrf_tokens_depend_on_the_session() {
        assert_eq!(csrf_of("a"), csrf_of("a"));
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
