//! The web console of `tessera serve`, driven by headless Chromium (Debian's `chromium`
//! and `chromium-driver`, through Python Selenium) and by plain HTTP for refused input.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{TestProject, added, ok, python, sample_data, serve, stop};

const ADMIN_PASSWORD: &str = "console-admin-password";
const VIEWER_PASSWORD: &str = "console-viewer-password";

/// A project with events, profiles, segments and scored CRM pairs, many of them in the
/// review band.
fn project() -> TestProject {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import_sample_channels(data);
    ok(&mut p.cmd(&["stitch"]));
    std::fs::create_dir_all(p.path().join("sample-data")).unwrap();
    std::fs::copy(data.join("crm.csv"), p.path().join("sample-data/crm.csv")).unwrap();
    let spec = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/matching/crm.toml"),
    )
    .unwrap();
    let spec = &spec[..spec.find("[predict]").unwrap()];
    // A strict threshold: many pairs wait for a person.
    std::fs::write(
        p.path().join("match.toml"),
        format!("{spec}[predict]\nthreshold = 0.999999\nreview = 0.5\n"),
    )
    .unwrap();
    let config = p.path().join("tessera.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\n[identity.types.crm_id]\nlimit = 1\n");
    std::fs::write(&config, toml).unwrap();
    ok(&mut p.cmd(&["match", "train"]));
    ok(&mut p.cmd(&["match", "predict"]));
    ok(&mut p.cmd(&["stitch"]));
    ok(&mut p.cmd(&["segments", "refresh"]));
    ok(&mut p.cmd(&["segments", "refresh", "--force"]));
    added(&p, &["root", "--role", "admin", "--pii"], ADMIN_PASSWORD);
    added(&p, &["ana", "--role", "analyst"], VIEWER_PASSWORD);
    p
}

fn browser(http: &str, shots: &Path, email: &str) -> Value {
    let cfg = serde_json::json!({
        "email": email,
        "base": format!("http://{http}"),
        "screenshots": shots,
        "admin": {"user": "root", "password": ADMIN_PASSWORD},
        "viewer": {"user": "ana", "password": VIEWER_PASSWORD},
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/console_browser.py");
    let out = Command::new(python())
        .arg(&script)
        .env("TESSERA_CONSOLE_TEST", cfg.to_string())
        .output()
        .expect("running the browser script");
    assert!(
        out.status.success(),
        "the browser script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "browser output is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A figure as the page shows it (`1,234`).
fn figure(page: &Value, metric: &str) -> i64 {
    let text = page["metrics"][metric]
        .as_str()
        .unwrap_or_else(|| panic!("no metric {metric} on {}", page["url"]));
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{metric} = {text:?}"))
}

#[test]
fn the_console_shows_the_lake_in_a_real_browser() {
    let p = project();
    let review_before = p.count(
        "SELECT count(*) AS n FROM match_pairs WHERE decision = 'review' \
         AND id_l LIKE 'crm_id:%' AND id_r LIKE 'user_id:%'",
    );
    assert!(review_before >= 2, "{review_before} review pairs");
    let (server, _grpc, http) = serve(&p);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let email = p.sql("SELECT email FROM profiles WHERE email IS NOT NULL ORDER BY email LIMIT 1")
        [0]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = browser(&http, &shots, &email);

    // Every page: no console error, nothing from another host, within the weight budget.
    let mut pages = 0;
    for who in ["admin", "viewer"] {
        for (name, page) in seen[who].as_object().unwrap() {
            pages += 1;
            assert_eq!(page["errors"], serde_json::json!([]), "{who} {name}");
            for url in page["requests"].as_array().unwrap() {
                let url = url.as_str().unwrap();
                // The browser's own pages (chrome://, chrome-untrusted://, data:) are not
                // network requests; every http(s) and ws(s) request must be ours.
                let internal = !["http:", "https:", "ws:", "wss:"]
                    .iter()
                    .any(|s| url.starts_with(s));
                assert!(
                    internal || url.starts_with(&format!("http://{http}/")),
                    "{who} {name} asked for {url}"
                );
            }
            let weight = page["weight"].as_i64().unwrap();
            assert!(
                weight > 0 && weight <= 300 * 1024,
                "{who} {name}: {weight} bytes"
            );
            assert!(
                shots.join(format!("{who}-{name}.png")).exists(),
                "{who} {name}: no screenshot"
            );
        }
    }
    assert_eq!(pages, 15);
    assert!(seen["review_errors"].as_array().unwrap().is_empty());

    // The figures are those of the lake.
    let admin = &seen["admin"];
    let overview = &admin["overview"];
    assert_eq!(
        figure(overview, "events"),
        p.count("SELECT count(*) AS n FROM events")
    );
    assert_eq!(
        figure(overview, "quarantined"),
        p.count("SELECT count(*) AS n FROM quarantine")
    );
    assert_eq!(
        figure(overview, "profiles"),
        p.count("SELECT count(*) AS n FROM profiles")
    );
    assert_eq!(
        figure(overview, "identifiers"),
        p.count("SELECT count(*) AS n FROM identity_map")
    );
    assert_eq!(
        figure(overview, "merges"),
        p.count("SELECT count(*) AS n FROM profile_merges")
    );
    let volume = &overview["charts"][0];
    assert_eq!(volume["canvas"], 1, "{volume}");
    let days = p.count(
        "SELECT count(DISTINCT event_date) AS n FROM events \
         WHERE event_date > (SELECT max(event_date) FROM events) - INTERVAL '30 days'",
    );
    assert_eq!(volume["points"], days.to_string());
    for row in p.sql("SELECT source, count(*) AS n FROM events GROUP BY source") {
        let source = row["source"].as_str().unwrap();
        assert_eq!(
            figure(&admin["sources"], &format!("events:{source}")),
            row["n"].as_i64().unwrap(),
            "{source}"
        );
    }
    // The 20 largest profiles, largest first.
    let largest: Vec<i64> = admin["identity"]["largest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = p
        .sql("SELECT identifiers FROM profiles ORDER BY identifiers DESC LIMIT 20")
        .iter()
        .map(|r| r["identifiers"].as_i64().unwrap())
        .collect();
    assert_eq!(largest, expected);
    // A segment's history: one point per refresh.
    let segments = &admin["segments"];
    let shown = segments["source"].as_str().unwrap();
    let segment = shown
        .split("data-segment=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert!(
        shown.contains(&format!("data-definition=\"{segment}\"")),
        "the segment's definition is not shown"
    );
    assert!(
        admin["identity"]["source"]
            .as_str()
            .unwrap()
            .contains("Edges refused by limits")
    );
    let refreshes = p.count(&format!(
        "SELECT count(*) AS n FROM segment_refreshes WHERE segment = '{segment}'"
    ));
    assert!(refreshes >= 1);
    assert_eq!(figure(segments, "refreshes"), refreshes);
    let chart = segments["charts"][0].clone();
    assert_eq!(chart["points"], refreshes.to_string(), "{chart}");
    assert_eq!(chart["canvas"], 1);
    assert_eq!(
        figure(segments, &format!("members:{segment}")),
        p.count(&format!(
            "SELECT count(*) AS n FROM audience_membership WHERE segment = '{segment}'"
        ))
    );
    assert_eq!(
        figure(&admin["review"], "review_pairs"),
        review_before,
        "every review pair is undecided"
    );

    // The session cookie.
    let cookie = &seen["admin_cookie"][0];
    assert_eq!(cookie["name"], "tessera_console");
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Strict");
    // A wrong password: a message, no session.
    assert!(
        seen["wrong_password"]["alert"]
            .as_str()
            .unwrap()
            .contains("wrong user or password"),
        "{}",
        seen["wrong_password"]
    );
    assert_eq!(seen["wrong_password"]["cookies"], serde_json::json!([]));
    assert!(
        seen["after_signout"]
            .as_str()
            .unwrap()
            .contains("/ui/login"),
        "{}",
        seen["after_signout"]
    );

    // Masking: the viewer without `pii` sees *** where the admin sees e-mails.
    let admin_ids = admin["identity"]["source"].as_str().unwrap();
    let viewer = &seen["viewer"];
    let viewer_ids = viewer["identity"]["source"].as_str().unwrap();
    assert!(admin_ids.contains("email:") && admin_ids.contains('@'));
    assert!(viewer_ids.contains("email:***"), "viewer sees no mask");
    let emails = p.sql("SELECT email FROM profiles WHERE email IS NOT NULL LIMIT 200");
    for page in ["identity", "profile", "profile_email", "review", "sources"] {
        let text = viewer[page]["source"].as_str().unwrap();
        for e in &emails {
            let e = e["email"].as_str().unwrap();
            assert!(!text.contains(e), "viewer's {page} page shows {e}");
        }
    }
    let masked = viewer["profile_email"]["source"].as_str().unwrap();
    assert!(
        masked.contains("***"),
        "the viewer's profile page masks nothing"
    );
    assert!(
        admin["profile_email"]["source"]
            .as_str()
            .unwrap()
            .contains(&email),
        "the admin's profile page does not show {email}"
    );

    // The two decisions: recorded, gone from the queue, audited.
    let decided = seen["decided"].as_array().unwrap();
    assert_eq!(decided.len(), 2);
    for d in decided {
        assert_eq!(d["still_listed"], 0, "{d}");
        assert!(d["status"].as_str().unwrap().contains("Recorded"), "{d}");
    }
    let after = serde_json::json!({"metrics": seen["review_after"], "url": "/ui/review"});
    assert_eq!(figure(&after, "review_pairs"), review_before - 2);
    stop(server);
    let decisions =
        p.sql("SELECT id_l, id_r, decision, actor FROM match_decisions ORDER BY decided_at");
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(decisions[0]["decision"], "accept");
    assert_eq!(decisions[1]["decision"], "reject");
    assert_eq!(decisions[0]["actor"], "console:root");
    let audit = p.sql(
        "SELECT action, status, count(*) AS n FROM audit_log \
         WHERE action LIKE 'console%' GROUP BY 1, 2 ORDER BY 1, 2",
    );
    let count = |action: &str, status: &str| {
        audit
            .iter()
            .find(|r| r["action"] == action && r["status"] == status)
            .map_or(0, |r| r["n"].as_i64().unwrap())
    };
    assert_eq!(count("console_review", "ok"), 2, "{audit:?}");
    assert!(count("console_login", "ok") >= 2, "{audit:?}");
    assert!(count("console_login", "unauthenticated") >= 1, "{audit:?}");
    assert!(count("console_view", "ok") >= 5, "{audit:?}");
    assert!(count("console_profile", "ok") >= 2, "{audit:?}");

    // The next stitch honours both: the accepted pair in one profile by a reviewed
    // edge, the rejected one not linked.
    ok(&mut p.cmd(&["stitch"]));
    let same_profile = |l: &str, r: &str| {
        let (lt, lv) = l.split_once(':').unwrap();
        let (rt, rv) = r.split_once(':').unwrap();
        p.count(&format!(
            "SELECT count(*) AS n FROM identity_map a JOIN identity_map b \
             ON a.profile_id = b.profile_id \
             WHERE a.id_type = '{lt}' AND a.id_value = '{lv}' \
               AND b.id_type = '{rt}' AND b.id_value = '{rv}'"
        )) == 1
    };
    let (al, ar) = (
        decisions[0]["id_l"].as_str().unwrap(),
        decisions[0]["id_r"].as_str().unwrap(),
    );
    let (rl, rr) = (
        decisions[1]["id_l"].as_str().unwrap(),
        decisions[1]["id_r"].as_str().unwrap(),
    );
    assert!(same_profile(al, ar), "accepted {al} / {ar} not linked");
    assert!(!same_profile(rl, rr), "rejected {rl} / {rr} linked");
    let reviewed = p.count(&format!(
        "SELECT count(*) AS n FROM identity_edges WHERE source = 'reviewed' \
         AND a_type || ':' || a_value IN ('{al}', '{ar}') AND b_type || ':' || b_value IN ('{al}', '{ar}')"
    ));
    assert_eq!(reviewed, 1);
    // Decided pairs stay decided when matching runs again.
    ok(&mut p.cmd(&["match", "predict"]));
    ok(&mut p.cmd(&["stitch"]));
    assert!(same_profile(al, ar));
    assert!(!same_profile(rl, rr));
}

/// Refused input over plain HTTP: a wrong password, an expired session, a forged CSRF
/// token, a decision on a pair that no longer exists — each a clear message, nothing
/// written.
#[test]
fn the_console_refuses_bad_input_and_writes_nothing() {
    let p = project();
    let (server, _grpc, http) = serve(&p);
    let code = format!(
        r#"
import http.cookiejar, json, re, urllib.error, urllib.parse, urllib.request
base = "http://{http}"
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
def call(path, form=None, cookie=None, follow=True):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(base + path, data=data)
    if cookie is not None:
        req.add_header("Cookie", "tessera_console=" + cookie)
    o = opener if cookie is None else urllib.request.build_opener()
    try:
        r = o.open(req)
        return r.status, r.geturl(), r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, path, e.read().decode(), dict(e.headers)
out = {{}}
out["wrong_password"] = call("/ui/login", {{"user": "root", "password": "nope"}})[:3]
out["no_session"] = call("/ui/identity", cookie="")[:2]
out["expired"] = call("/ui/identity", cookie="0" * 64)[:3]
out["expired_post"] = call("/ui/review", {{"csrf": "x", "pair": "0" * 64, "decision": "accept"}}, cookie="0" * 64)[:3]
status, url, body, headers = call("/ui/login", {{"user": "root", "password": "{ADMIN_PASSWORD}"}})
out["signed_in"] = [status, url]
out["csp"] = {{k.lower(): v for k, v in headers.items()}}.get("content-security-policy")
status, url, body, headers = call("/ui/review")
csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1)
pair = re.search(r'data-pair="([0-9a-f]+)"', body).group(1)
out["forged"] = call("/ui/review", {{"csrf": "f" * 64, "pair": pair, "decision": "accept"}})[:3]
out["no_csrf"] = call("/ui/review", {{"pair": pair, "decision": "accept"}})[:3]
out["gone"] = call("/ui/review", {{"csrf": csrf, "pair": "0" * 64, "decision": "accept"}})[:3]
out["bad_decision"] = call("/ui/review", {{"csrf": csrf, "pair": pair, "decision": "maybe"}})[:3]
out["unknown_page"] = call("/ui/nothing-here")[:1]
out["asset"] = call("/ui/static/uPlot.min.js")[0]
out["missing_asset"] = call("/ui/static/../../etc/passwd")[0]
out["profile_missing"] = call("/ui/profile?id=email:nobody%40example.invalid")[:1]
out["profile_bad"] = call("/ui/profile?id=nonsense")[:1]
print(json.dumps(out))
"#
    );
    let out: Value = serde_json::from_str(crate::common::run_python(&code).trim()).unwrap();
    let body = |k: &str| out[k][2].as_str().unwrap_or_default().to_owned();
    assert_eq!(out["wrong_password"][0], 401, "{}", out["wrong_password"]);
    assert!(body("wrong_password").contains("wrong user or password"));
    assert!(
        out["no_session"][1]
            .as_str()
            .unwrap()
            .contains("/ui/login?next=/ui/identity"),
        "{}",
        out["no_session"]
    );
    assert!(
        body("expired").contains("Your session has expired"),
        "{}",
        out["expired"]
    );
    assert_eq!(out["expired_post"][0], 401);
    assert!(body("expired_post").contains("not recorded"));
    assert_eq!(out["signed_in"][0], 200, "{}", out["signed_in"]);
    assert!(
        out["csp"]
            .as_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert_eq!(out["forged"][0], 403);
    assert!(
        body("forged").contains("security token"),
        "{}",
        out["forged"]
    );
    assert_eq!(out["no_csrf"][0], 403);
    assert_eq!(out["gone"][0], 409);
    assert!(
        body("gone").contains("no longer in match_pairs"),
        "{}",
        out["gone"]
    );
    assert_eq!(out["bad_decision"][0], 400);
    assert!(body("bad_decision").contains("accept or reject"));
    assert_eq!(out["unknown_page"][0], 404);
    assert_eq!(out["asset"], 200);
    assert_eq!(out["missing_asset"], 404);
    assert_eq!(out["profile_missing"][0], 404);
    assert_eq!(out["profile_bad"][0], 400);
    stop(server);
    // Nothing was written.
    let tables = p.sql("SELECT count(*) AS n FROM match_decisions");
    assert_eq!(tables[0]["n"], 0);
    let refused = p.count(
        "SELECT count(*) AS n FROM audit_log WHERE action = 'console_review' \
         AND status IN ('csrf', 'not_found', 'invalid')",
    );
    assert_eq!(refused, 4);
}

/// Single sign-on against a real OpenID provider (panva's certified `oidc-provider`, on
/// loopback): authorization code with PKCE; the provider's user becomes the Tessera
/// account of the same name; a person without an account, a replayed callback and a
/// provider's refusal are each refused with a message.
#[test]
fn single_sign_on_through_a_real_openid_provider() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import_sample_channels(data);
    ok(&mut p.cmd(&["stitch"]));
    added(&p, &["alice", "--role", "analyst"], VIEWER_PASSWORD);
    let (op_port, port) = (crate::common::free_port(), crate::common::free_port());
    let callback = format!("http://127.0.0.1:{port}/ui/oidc/callback");
    let config = p.path().join("tessera.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[server.oidc]\nissuer = \"http://127.0.0.1:{op_port}\"\nclient_id = \"tessera-console\"\n\
         label = \"Sign in with the test provider\"\n"
    ));
    std::fs::write(&config, toml).unwrap();

    let npm = crate::common::npm_clients();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/oidc_provider.mjs"),
        npm.join("oidc_provider.mjs"),
    )
    .unwrap();
    let mut provider = std::process::Command::new("node")
        .arg(npm.join("oidc_provider.mjs"))
        .args([&op_port.to_string(), &callback, "op-client-secret"])
        .current_dir(&npm)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("starting the OpenID provider (node)");
    let provider_out = provider.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(provider_out));
    assert!(
        lines
            .next()
            .and_then(Result::ok)
            .is_some_and(|l| l.contains("listening")),
        "the OpenID provider did not start"
    );
    std::thread::spawn(move || for _ in lines {});
    let provider = crate::common::Running(provider);

    let (server, _grpc, http) = crate::common::serve_at(
        &p,
        &format!("127.0.0.1:{port}"),
        &[("TESSERA_OIDC_CLIENT_SECRET", "op-client-secret")],
    );
    let code = format!(
        r#"
import http.cookiejar, json, re, urllib.error, urllib.parse, urllib.request
base = "http://{http}"
def session():
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar
def call(web, url, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        r = web.open(url, data)
        return r.status, r.geturl(), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.geturl(), e.read().decode()
def submit(web, page_url, body, fields):
    action = re.search(r'<form[^>]*action="([^"]+)"', body).group(1)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body))
    hidden.update(fields)
    return call(web, urllib.parse.urljoin(page_url, action), hidden)
def sign_in(user):
    web, jar = session()
    status, url, body = call(web, base + "/ui/login?next=/ui/identity")
    login_page = body
    sso = re.search(r'href="(/ui/oidc/start[^"]*)"', body).group(1)
    status, url, body = call(web, base + sso)
    steps = [url]
    # The provider's login, then its consent page.
    for _ in range(4):
        if not url.startswith("http://127.0.0.1:{op_port}"):
            break
        if 'name="login"' in body:
            status, url, body = submit(web, url, body, {{"login": user, "password": "any"}})
        else:
            status, url, body = submit(web, url, body, {{}})
        steps.append(url)
    return {{"status": status, "url": url, "body": body, "steps": steps,
            "cookies": [c.name for c in jar if c.name == "tessera_console"],
            "sso_label": "Sign in with the test provider" in login_page}}
out = {{"alice": sign_in("alice"), "mallory": sign_in("mallory")}}
web, _ = session()
out["unknown_state"] = call(web, base + "/ui/oidc/callback?code=x&state=" + "0" * 64)[:1]
out["provider_refused"] = call(web, base + "/ui/oidc/callback?error=access_denied&state=" + "1" * 64)[:1]
for k in ("alice", "mallory"):
    out[k]["body"] = out[k]["body"][:20000]
print(json.dumps(out))
"#
    );
    let out: Value = serde_json::from_str(crate::common::run_python(&code).trim()).unwrap();
    let alice = &out["alice"];
    assert!(
        alice["sso_label"].as_bool().unwrap(),
        "no single sign-on button"
    );
    assert_eq!(alice["status"], 200, "{}", alice["steps"]);
    assert!(
        alice["url"].as_str().unwrap().ends_with("/ui/identity"),
        "{}",
        alice["url"]
    );
    assert!(
        alice["body"]
            .as_str()
            .unwrap()
            .contains("data-user=\"alice\""),
        "alice is not signed in"
    );
    assert_eq!(alice["cookies"], serde_json::json!(["tessera_console"]));
    let mallory = &out["mallory"];
    assert_eq!(mallory["status"], 403, "{}", mallory["steps"]);
    assert!(
        mallory["body"]
            .as_str()
            .unwrap()
            .contains("has no Tessera account"),
        "{}",
        mallory["url"]
    );
    assert_eq!(mallory["cookies"], serde_json::json!([]));
    assert_eq!(out["unknown_state"][0], 400);
    assert_eq!(
        out["provider_refused"][0], 400,
        "an unknown state is refused first"
    );
    stop(server);
    drop(provider);
    let audit = p.sql(
        "SELECT user, status, detail FROM audit_log WHERE action = 'console_login' ORDER BY at",
    );
    assert!(
        audit.iter().any(|r| r["user"] == "alice"
            && r["status"] == "ok"
            && r["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("single sign-on")),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|r| r["status"] == "unauthenticated"
            && r["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("no Tessera account")),
        "{audit:?}"
    );
}
