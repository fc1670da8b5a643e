//! `tessera serve` end to end: the real binary on loopback, driven by the unmodified
//! Segment and RudderStack Python SDKs, raw HTTP for bad input, and a crash (SIGKILL)
//! in the middle of a stream of requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{TestProject, python};

const KEY: &str = "wk_test_0123456789";

/// A project with a source and fast flushes.
pub(crate) fn project() -> TestProject {
    let p = TestProject::new();
    let toml = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let text = text
        .replace("flush_interval_ms = 2000", "flush_interval_ms = 200")
        .replacen(
            "[sources.web]",
            "[sources.app]\nwrite_key = \"wk_test_0123456789\"\n\n[sources.web]",
            1,
        );
    std::fs::write(&toml, text).unwrap();
    p
}

/// A running `tessera serve`.
struct Served {
    child: Child,
    http: SocketAddr,
}

impl Served {
    fn start(p: &TestProject, http: &str) -> Served {
        Served::start_with(p, http, |_| {})
    }

    /// [`Served::start`] with the command adjusted first (environment, ...).
    fn start_with(p: &TestProject, http: &str, adjust: impl FnOnce(&mut Command)) -> Served {
        let mut cmd = crate::common::tessera();
        cmd.arg("--project")
            .arg(p.path())
            .args(["serve", "--http", http, "--grpc", "127.0.0.1:0"]);
        adjust(&mut cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting tessera serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("stdout");
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        std::thread::spawn(move || for _ in lines {});
        Served {
            http: addr.parse().unwrap(),
            child,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// SIGTERM, and waits for a clean exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "tessera serve exited with {status}");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns status and body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn auth() -> String {
    // base64("wk_test_0123456789:")
    let raw = format!("{KEY}:");
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = raw.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

fn post(served: &Served, path: &str, body: &[u8], extra: &[(&str, &str)]) -> (u16, Value) {
    let a = auth();
    let mut headers = vec![
        ("Authorization", a.as_str()),
        ("Content-Type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    let (status, body) = request(served.http, "POST", path, &headers, body);
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// POSTs `body` to `/v1/batch`; returns the whole response, headers included.
fn raw_batch(served: &Served, body: &str) -> String {
    let mut conn = TcpStream::connect(served.http).unwrap();
    write!(
        conn,
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        auth(),
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /health` as JSON.
fn health(served: &Served) -> Value {
    let (_, body) = request(served.http, "GET", "/health", &[], b"");
    serde_json::from_str(&body).unwrap_or(Value::String(body))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn track(id: &str) -> String {
    format!(
        r#"{{"type":"track","messageId":"{id}","userId":"u1","event":"Signed Up","properties":{{"plan":"pro"}},"timestamp":"2026-11-01T10:00:00.000Z"}}"#
    )
}

#[test]
fn bad_input_gets_its_status_and_never_disturbs_what_is_stored() {
    let p = project();
    let s = Served::start(&p, "127.0.0.1:0");

    let good = format!(
        r#"{{"batch":[{},{}],"sentAt":"2026-11-01T10:00:01Z"}}"#,
        track("good-1"),
        track("good-2")
    );
    let (status, v) = post(&s, "/v1/batch", good.as_bytes(), &[]);
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(2)), "{v}");

    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/v1/batch",
            b"{\"batch\": [".to_vec(),
            vec![],
            400,
            "malformed_json",
        ),
        (
            "/v1/batch",
            b"[1, 2]".to_vec(),
            vec![],
            400,
            "malformed_json",
        ),
        (
            "/v1/batch",
            gzip(good.as_bytes())[..20].to_vec(),
            vec![("Content-Encoding", "gzip")],
            400,
            "malformed_gzip",
        ),
        (
            "/v1/batch",
            format!(r#"{{"batch":[{}]}}"#, "x".repeat(600 * 1024)).into_bytes(),
            vec![],
            400,
            "batch_too_large",
        ),
        (
            "/v1/track",
            format!(
                r#"{{"userId":"u","event":"e","properties":{{"pad":"{}"}}}}"#,
                "x".repeat(40 * 1024)
            )
            .into_bytes(),
            vec![],
            400,
            "event_too_large",
        ),
        (
            "/v1/batch",
            br#"{"batch":[{"type":"track","event":"e","messageId":"no-ids"}]}"#.to_vec(),
            vec![],
            400,
            "missing_identity",
        ),
        (
            "/v1/batch",
            br#"{"batch":[{"type":"purchase","userId":"u","messageId":"t"}]}"#.to_vec(),
            vec![],
            400,
            "unknown_type",
        ),
        (
            "/v1/batch",
            br#"{"batch":[{"type":"track","userId":{"a":1},"event":"e"}]}"#.to_vec(),
            vec![],
            400,
            "wrong_type",
        ),
        (
            "/v1/batch",
            br#"{"batch":[{"type":"track","userId":"u","event":"e","messageId":"y0","timestamp":"0000-01-01T00:00:00Z"}]}"#.to_vec(),
            vec![],
            400,
            "timestamp_out_of_range",
        ),
        (
            "/v1/track",
            br#"{"userId":"u","event":"e","messageId":"y9999","timestamp":"9999-01-01T00:00:00Z"}"#.to_vec(),
            vec![],
            400,
            "timestamp_out_of_range",
        ),
    ];
    for (path, body, extra, want, code) in cases {
        let (status, v) = post(&s, path, &body, &extra);
        assert_eq!(status, want, "{path} {code}: {v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }

    // One bad event in a batch: the others are stored, the response names it.
    let mixed = format!(
        r#"{{"batch":[{},{{"type":"track","userId":"u"}},{}]}}"#,
        track("mixed-1"),
        track("mixed-2")
    );
    let (status, v) = post(&s, "/v1/batch", mixed.as_bytes(), &[]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(v["rejected"][0]["index"], 1, "{v}");
    assert_eq!(v["rejected"][0]["code"], "missing_field", "{v}");

    // Single-event endpoints, gzip by header, write key in the body, duplicates.
    let (status, v) = post(
        &s,
        "/v1/identify",
        br#"{"userId":"u2","traits":{"email":"a@b.io"},"messageId":"ident-1"}"#,
        &[],
    );
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    let zipped = gzip(format!(r#"{{"batch":[{}]}}"#, track("zipped-1")).as_bytes());
    let (status, v) = post(&s, "/v1/import", &zipped, &[("Content-Encoding", "gzip")]);
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    let (status, v) = post(&s, "/v1/batch", good.as_bytes(), &[]);
    assert_eq!(
        (status, v["duplicates"].as_u64()),
        (200, Some(2)),
        "a retry is not stored twice: {v}"
    );
    let body_key = format!(r#"{{"writeKey":"{KEY}","batch":[{}]}}"#, track("bodykey-1"));
    let (status, _) = request(s.http, "POST", "/v1/batch", &[], body_key.as_bytes());
    assert_eq!(status, 200);

    // Auth, paths, methods.
    let (status, body) = request(s.http, "POST", "/v1/batch", &[], good.as_bytes());
    assert_eq!(status, 401, "{body}");
    let (status, body) = request(
        s.http,
        "POST",
        "/v1/batch",
        &[("Authorization", "Basic bm9wZTo=")],
        good.as_bytes(),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unknown write key"), "{body}");
    let (status, _) = request(s.http, "GET", "/v1/batch", &[], b"");
    assert_eq!(status, 405);
    let (status, _) = request(s.http, "POST", "/v2/batch", &[], b"{}");
    assert_eq!(status, 404);
    let (status, body) = request(s.http, "GET", "/health", &[], b"");
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(s.http, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(body.contains("tessera_events_accepted_total 7"), "{body}");
    assert!(
        body.contains("tessera_events_rejected_total{reason=\"malformed_json\"} 2"),
        "{body}"
    );
    assert!(body.contains("tessera_wal_bytes"), "{body}");
    s.stop();

    let ids = p.sql("SELECT message_id, source FROM events ORDER BY message_id");
    let ids: Vec<&str> = ids
        .iter()
        .map(|r| r["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "bodykey-1",
            "good-1",
            "good-2",
            "ident-1",
            "mixed-1",
            "mixed-2",
            "zipped-1"
        ]
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE source = 'app'"),
        7
    );
    // Every refused event is kept, with its reason; requests refused before they are
    // read (over the size limit, broken gzip) are not.
    let kept: Vec<(String, i64)> = p
        .sql("SELECT reason_code, count(*) AS n FROM quarantine GROUP BY reason_code ORDER BY reason_code")
        .iter()
        .map(|r| {
            (
                r["reason_code"].as_str().unwrap().to_owned(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = [
        ("event_too_large", 1),
        ("malformed_json", 2),
        ("missing_field", 1),
        ("missing_identity", 1),
        ("timestamp_out_of_range", 2),
        ("unknown_type", 1),
        ("wrong_type", 1),
    ]
    .iter()
    .map(|(c, n)| ((*c).to_owned(), *n))
    .collect();
    assert_eq!(kept, want);
    assert_eq!(
        p.count("SELECT count(*) AS n FROM quarantine WHERE source = 'app' AND origin LIKE 'collector:c%' AND payload IS NOT NULL"),
        9
    );
    assert!(
        p.sql("SELECT payload FROM quarantine WHERE reason_code = 'missing_field'")[0]["payload"]
            .as_str()
            .unwrap()
            .contains(r#""userId":"u""#)
    );
}

#[test]
fn segment_and_rudderstack_sdks_land_every_event_once() {
    let p = project();
    let s = Served::start(&p, "127.0.0.1:0");
    let script = format!(
        r#"
import segment.analytics as seg
import rudderstack.analytics as rudder
seg.write_key = "{KEY}"
seg.host = "{url}"
seg.sync_mode = False
for i in range(30):
    seg.track(user_id="seg-user", event="Item Viewed", properties={{"i": i, "plan": "pro"}}, message_id=f"seg-{{i}}")
seg.identify(user_id="seg-user", traits={{"email": "seg@example.com"}}, message_id="seg-identify")
seg.page(user_id="seg-user", name="Home", message_id="seg-page")
seg.alias(previous_id="anon-seg", user_id="seg-user", message_id="seg-alias")
seg.group(user_id="seg-user", group_id="acme", traits={{"plan": "team"}}, message_id="seg-group")
seg.screen(user_id="seg-user", name="Settings", message_id="seg-screen")
seg.flush()
seg.shutdown()
rudder.write_key = "{KEY}"
rudder.dataPlaneUrl = "{url}"
for i in range(30):
    rudder.track(user_id="rs-user", event="Item Viewed", properties={{"i": i}}, message_id=f"rs-{{i}}")
rudder.identify(user_id="rs-user", traits={{"email": "rs@example.com"}}, message_id="rs-identify")
rudder.flush()
rudder.shutdown()
print("sent")
"#,
        url = s.url()
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Visible to SQL within the flush interval.
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.count("SELECT count(*) AS n FROM events") < 66 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    s.stop();
    assert_eq!(p.count("SELECT count(*) AS n FROM events"), 66);
    assert_eq!(
        p.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        66
    );
    let rows = p.sql(
        "SELECT message_id, type, event, user_id, previous_id, group_id, source, \
                json_get_str(traits, 'email') AS email, json_get_int(properties, 'i') AS i, \
                json_get_str(context, 'library', 'name') AS library \
         FROM events WHERE message_id IN ('seg-7', 'rs-identify', 'seg-alias', 'seg-group', 'rs-3') \
         ORDER BY message_id",
    );
    let by: std::collections::HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["message_id"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by["seg-7"]["event"], "Item Viewed");
    assert_eq!(by["seg-7"]["i"], 7);
    assert_eq!(by["seg-7"]["source"], "app");
    assert_eq!(by["seg-7"]["library"], "analytics-python");
    assert_eq!(by["rs-3"]["user_id"], "rs-user");
    assert_eq!(
        by["rs-identify"]["email"], "rs@example.com",
        "rudder's context.traits"
    );
    assert_eq!(by["seg-alias"]["previous_id"], "anon-seg");
    assert_eq!(by["seg-group"]["group_id"], "acme");
}

#[test]
fn a_crash_mid_stream_loses_and_duplicates_nothing() {
    let p = project();
    // A fixed port, so that clients find the restarted server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let s = Served::start(&p, &addr);
    let acked = p.path().join("acked.txt");
    let mut c = retrying_client(&format!("http://{addr}"), "crash", 120, 0.01, true, &acked);
    // Let some batches land, then kill the server without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&acked)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 500
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill();
    std::thread::sleep(Duration::from_millis(300));
    let s = Served::start(&p, &addr);
    let status = c.wait().unwrap();
    assert!(status.success());
    s.stop();
    let acked_ids: std::collections::BTreeSet<String> = std::fs::read_to_string(&acked)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        acked_ids.len(),
        3000,
        "every batch was eventually acknowledged"
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events"),
        3000,
        "no loss, no duplicate"
    );
    assert_eq!(
        p.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        3000
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM quarantine WHERE reason_code = 'missing_identity'"),
        120,
        "every refused event kept once"
    );
}

#[test]
fn overload_is_answered_with_retry_after_and_the_sdks_deliver_everything_once() {
    let p = project();
    let toml = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("flush_interval_ms = 200", "flush_interval_ms = 1000")
        .replace("max_buffered_events = 1000000", "max_buffered_events = 50");
    std::fs::write(&toml, text).unwrap();
    let s = Served::start(&p, "127.0.0.1:0");

    // Past the bound: 503 with Retry-After, nothing stored of the refused request.
    let batch = |b: usize| {
        let events: Vec<String> = (0..60).map(|i| track(&format!("raw-{b}-{i}"))).collect();
        format!(r#"{{"batch":[{}]}}"#, events.join(","))
    };
    let mut refused = None;
    for b in 0..5 {
        let response = raw_batch(&s, &batch(b));
        if response.starts_with("HTTP/1.1 503") {
            refused = Some((b, response));
            break;
        }
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let (refused_batch, response) = refused.expect("a request past the bound is refused");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 1"),
        "{response}"
    );
    assert!(response.contains("\"code\":\"overloaded\""), "{response}");
    let health = health(&s);
    assert!(health["buffered_bytes"].as_u64().is_some(), "{health}");

    // The SDKs retry what is refused: every event lands once.
    let script = format!(
        r#"
import segment.analytics as seg
import rudderstack.analytics as rudder
seg.write_key = "{KEY}"
seg.host = "{url}"
seg.upload_size = 100
for i in range(500):
    seg.track(user_id="seg-user", event="Item Viewed", properties={{"i": i}}, message_id=f"seg-{{i}}")
seg.flush()
seg.shutdown()
rudder.write_key = "{KEY}"
rudder.dataPlaneUrl = "{url}"
rudder.upload_size = 100
for i in range(500):
    rudder.track(user_id="rs-user", event="Item Viewed", properties={{"i": i}}, message_id=f"rs-{{i}}")
rudder.flush()
rudder.shutdown()
print("sent")
"#,
        url = s.url()
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, metrics) = request(s.http, "GET", "/metrics", &[], b"");
    let overloaded: u64 = metrics
        .lines()
        .find(|l| l.starts_with("tessera_events_rejected_total{reason=\"overloaded\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(overloaded >= 2, "the SDKs were refused too:\n{metrics}");
    s.stop();
    let raw_landed = 60 * refused_batch as i64;
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE message_id LIKE 'raw-%'"),
        raw_landed
    );
    for prefix in ["seg-", "rs-"] {
        assert_eq!(
            p.count(&format!(
                "SELECT count(*) AS n FROM events WHERE message_id LIKE '{prefix}%'"
            )),
            500,
            "{prefix}"
        );
        assert_eq!(
            p.count(&format!(
                "SELECT count(DISTINCT message_id) AS n FROM events WHERE message_id LIKE '{prefix}%'"
            )),
            500,
            "{prefix}"
        );
    }
}

#[test]
fn an_unreachable_lake_store_delays_commits_and_loses_nothing() {
    use crate::s3::{start_s3, with_aws};
    let s3 = start_s3();
    let ep = s3.endpoint.clone();
    let p = project();
    on_s3(&p, &ep);
    let s = Served::start_with(&p, "127.0.0.1:0", |c| with_aws(c, &ep));

    let acked = p.path().join("acked.txt");
    let mut c = retrying_client(&s.url(), "out", 80, 0.4, false, &acked);
    let acked_count = || {
        std::fs::read_to_string(&acked)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_count() < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The store stops answering (the process is paused) for 30 s.
    let moto = s3.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &moto])
            .status()
            .unwrap()
            .success()
    );
    let before = acked_count();
    std::thread::sleep(Duration::from_secs(30));
    let during = acked_count();
    let health = health(&s);
    assert!(
        Command::new("kill")
            .args(["-CONT", &moto])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        during > before,
        "the collector kept acknowledging into the WAL: {before} -> {during}"
    );
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lake")),
        "{health}"
    );
    assert!(c.wait().unwrap().success());
    s.stop();
    let acked_ids: std::collections::BTreeSet<String> = std::fs::read_to_string(&acked)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(acked_ids.len(), 2000);
    let count = |sql: &str| s3_count(&p, &ep, sql);
    assert_eq!(
        count("SELECT count(*) AS n FROM events"),
        2000,
        "no loss, no duplicate"
    );
    assert_eq!(
        count("SELECT count(DISTINCT message_id) AS n FROM events"),
        2000
    );
}

/// Moves `p`'s lake to bucket `cdp` of the S3 server at `ep` (created here).
fn on_s3(p: &TestProject, ep: &str) {
    crate::common::run_python(&format!(
        r#"
import boto3
boto3.client("s3", endpoint_url="{ep}", aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket="cdp")
"#
    ));
    let toml = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("url = \"tessera-data\"", "url = \"s3://cdp/lake\"");
    std::fs::write(&toml, text).unwrap();
    let mut init = p.cmd(&["init"]);
    crate::s3::with_aws(&mut init, ep);
    crate::common::ok(&mut init);
}

/// The count a query over the S3 lake of `p` returns.
fn s3_count(p: &TestProject, ep: &str, sql: &str) -> i64 {
    let mut c = p.cmd(&["sql", "--format", "csv", sql]);
    crate::s3::with_aws(&mut c, ep);
    let out = crate::common::ok(&mut c);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .parse::<i64>()
        .unwrap()
}

/// A client posting `batches` batches of 25 events with ids `PREFIX-b-i` to `url`
/// (plus, with `refused`, an event without ids named `refused-b`), pausing `pause`
/// seconds between batches, retrying until each is acknowledged and writing the
/// acknowledged ids to `acked`.
fn retrying_client(
    url: &str,
    prefix: &str,
    batches: usize,
    pause: f64,
    refused: bool,
    acked: &std::path::Path,
) -> Child {
    let refused = if refused { "True" } else { "False" };
    let client = format!(
        r#"
import base64, json, time, urllib.request
auth = "Basic " + base64.b64encode(b"{KEY}:").decode()
acked = open("{acked}", "w")
for b in range({batches}):
    ids = [f"{prefix}-{{b}}-{{i}}" for i in range(25)]
    events = [{{"type": "track", "messageId": m, "userId": "u", "event": "Tick", "timestamp": "2026-11-01T00:00:00Z"}} for m in ids]
    if {refused}:
        # Refused (no ids): kept in quarantine, once, retries or not.
        events.append({{"type": "track", "messageId": f"refused-{{b}}", "event": "Tick"}})
    body = json.dumps({{"batch": events}}).encode()
    while True:
        try:
            req = urllib.request.Request("{url}/v1/batch", data=body, headers={{"Authorization": auth, "Content-Type": "application/json"}})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    acked.write("\n".join(ids) + "\n"); acked.flush()
                    break
        except Exception:
            time.sleep(0.05)
    time.sleep({pause})
print("done")
"#,
        acked = acked.display()
    );
    Command::new(python())
        .arg("-c")
        .arg(&client)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_collectors_on_one_lake_each_killed_lose_and_duplicate_nothing() {
    let p = project();
    let addrs = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let start = |i: usize| {
        let wal = format!("wal-{i}");
        Served::start_with(&p, &addrs[i], |c| {
            c.args(["--wal-dir", &wal]);
        })
    };
    let acked: Vec<std::path::PathBuf> = (0..2)
        .map(|i| p.path().join(format!("acked-{i}.txt")))
        .collect();
    let mut servers = vec![Some(start(0)), Some(start(1))];
    let mut clients: Vec<Child> = (0..2)
        .map(|i| {
            let url = format!("http://{}", addrs[i]);
            retrying_client(&url, &format!("c{i}"), 80, 0.01, false, &acked[i])
        })
        .collect();
    let count = |f: &std::path::Path| {
        std::fs::read_to_string(f)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    // Each collector is killed mid-stream in turn and restarted on its own log.
    for i in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count(&acked[i]) < 500 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        servers[i].take().unwrap().kill();
        std::thread::sleep(Duration::from_millis(300));
        servers[i] = Some(start(i));
    }
    for c in &mut clients {
        assert!(c.wait().unwrap().success());
    }
    for s in servers.into_iter().flatten() {
        s.stop();
    }
    let ids: Vec<String> = (0..2)
        .map(|i| std::fs::read_to_string(p.path().join(format!("wal-{i}/collector-id"))).unwrap())
        .collect();
    assert_ne!(ids[0], ids[1], "each log has its own collector id");
    for (i, f) in acked.iter().enumerate() {
        assert_eq!(count(f), 2000, "collector {i}: every batch acknowledged");
        assert_eq!(
            p.count(&format!(
                "SELECT count(*) AS n FROM events WHERE message_id LIKE 'c{i}-%'"
            )),
            2000,
            "collector {i}: no loss, no duplicate"
        );
    }
    assert_eq!(
        p.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        4000
    );
}

#[test]
fn a_full_write_ahead_log_refuses_with_retry_after_and_keeps_what_it_acknowledged() {
    let p = project();
    let toml = p.path().join("tessera.toml");
    // Nothing is committed for an hour: the log only grows, up to its bound.
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("flush_interval_ms = 200", "flush_interval_ms = 3600000")
        .replace("max_wal_bytes = \"4GiB\"", "max_wal_bytes = \"1MiB\"");
    std::fs::write(&toml, text).unwrap();
    let s = Served::start(&p, "127.0.0.1:0");
    let batch = |b: usize| {
        let events: Vec<String> = (0..25).map(|i| track(&format!("w-{b}-{i}"))).collect();
        format!(r#"{{"batch":[{}]}}"#, events.join(","))
    };
    let mut acked = 0;
    let mut refused = None;
    for b in 0..5000 {
        let response = raw_batch(&s, &batch(b));
        if response.starts_with("HTTP/1.1 503") {
            refused = Some(response);
            break;
        }
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        acked += 1;
    }
    let response = refused.expect("the log reaches its bound");
    assert!(acked > 10, "{acked} requests fit in 1 MiB");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 1"),
        "{response}"
    );
    assert!(response.contains("\"code\":\"wal_full\""), "{response}");
    assert!(response.contains("max_wal_bytes"), "{response}");
    let h = health(&s);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["reason"]
            .as_str()
            .is_some_and(|r| r.contains("write-ahead log is full")),
        "{h}"
    );
    // Shutting down commits what was acknowledged; the log is released.
    s.stop();
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events"),
        acked as i64 * 25
    );
    let s = Served::start(&p, "127.0.0.1:0");
    let response = raw_batch(&s, &batch(9999));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(health(&s)["status"], "ok");
    s.stop();
    assert_eq!(
        p.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        acked as i64 * 25 + 25
    );
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None` (and a note) where this process may not mount file systems.
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: mounting a {size} tmpfs needs root (CAP_SYS_ADMIN)");
            return None;
        }
        Some(SmallDisk(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_write_ahead_log_disk_that_fills_up_refuses_corrupts_nothing_and_recovers() {
    use crate::s3::{start_s3, with_aws};
    let p = project();
    let Some(_disk) = SmallDisk::mount(&p.path().join("small"), "1m") else {
        return;
    };
    let s3 = start_s3();
    let ep = s3.endpoint.clone();
    on_s3(&p, &ep);
    let addr = format!("127.0.0.1:{}", free_port());
    let start = || {
        Served::start_with(&p, &addr, |c| {
            with_aws(c, &ep);
            c.args(["--wal-dir", "small/wal"]);
        })
    };
    let s = start();
    let acked = p.path().join("acked.txt");
    let mut c = retrying_client(&s.url(), "d", 200, 0.0, false, &acked);
    let acked_count = || {
        std::fs::read_to_string(&acked)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_count() < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The store stops answering: the log grows until its 1 MiB disk is full.
    let moto = s3.pid().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &moto])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(60);
    let full = loop {
        let h = health(&s);
        if h["reason"]
            .as_str()
            .is_some_and(|r| r.contains("writing the write-ahead log fails"))
        {
            break h;
        }
        assert!(Instant::now() < deadline, "the disk never filled up: {h}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(full["status"], "degraded", "{full}");
    let refused = raw_batch(&s, &format!(r#"{{"batch":[{}]}}"#, track("probe")));
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(refused.contains("No space left"), "{refused}");
    let at_full = acked_count();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(acked_count(), at_full, "nothing is acknowledged while full");
    // Killed while full, restarted when the store is back: the log reads back whole,
    // commits, is released, and the client's retries go through.
    s.kill();
    signal("-CONT");
    let s = start();
    assert!(c.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(&s)["status"] != "ok" {
        assert!(Instant::now() < deadline, "{}", health(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    s.stop();
    assert_eq!(acked_count(), 5000);
    let count = |sql: &str| s3_count(&p, &ep, sql);
    assert_eq!(
        count("SELECT count(*) AS n FROM events WHERE message_id LIKE 'd-%'"),
        5000
    );
    assert_eq!(
        count("SELECT count(DISTINCT message_id) AS n FROM events WHERE message_id LIKE 'd-%'"),
        5000
    );
}

#[test]
fn a_tracking_plan_counts_violations_blocks_what_it_must_and_replay_lands_the_fixed() {
    let p = project();
    let plans = p.path().join("sql/plans");
    std::fs::create_dir_all(&plans).unwrap();
    let plan = r#"
mode = "allow"

[track."Order Completed"]
mode = "block"
properties.order_id = { type = "string", required = true }
properties.revenue = { type = "number" }

[track."Signed Up"]
properties.plan = { type = "string", enum = ["free", "pro"] }
"#;
    std::fs::write(plans.join("app.toml"), plan).unwrap();
    let s = Served::start(&p, "127.0.0.1:0");
    let event = |id: &str, name: &str, props: &str| {
        format!(
            r#"{{"type":"track","messageId":"{id}","userId":"u1","event":"{name}","properties":{props},"timestamp":"2026-11-01T10:00:00Z"}}"#
        )
    };
    let body = format!(
        r#"{{"batch":[{},{},{},{},{}]}}"#,
        event(
            "ok-1",
            "Order Completed",
            r#"{"order_id":"o1","revenue":12.5}"#
        ),
        event("blocked-1", "Order Completed", r#"{"revenue":10}"#),
        event(
            "blocked-2",
            "Order Completed",
            r#"{"order_id":"o2","revenue":"12"}"#
        ),
        event("allowed-1", "Signed Up", r#"{"plan":"gold"}"#),
        event("allowed-2", "Page Viewed", r#"{}"#),
    );
    let (status, answer) = post(&s, "/v1/batch", body.as_bytes(), &[]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 3, "{answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{answer}");
    assert!(
        rejected.iter().all(|r| r["code"] == "tracking_plan"
            && r["message"]
                .as_str()
                .unwrap()
                .contains("sql/plans/app.toml")),
        "{answer}"
    );
    // A retry of the same request counts nothing twice.
    let (status, again) = post(&s, "/v1/batch", body.as_bytes(), &[]);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicates"], 3, "{again}");
    s.stop();

    // A file of the same source is checked the same way.
    let file = p.path().join("app.ndjson");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            event("file-ok", "Signed Up", r#"{"plan":"pro"}"#),
            event("file-blocked", "Order Completed", r#"{"revenue":1}"#)
        ),
    )
    .unwrap();
    crate::common::ok(&mut p.cmd(&["import", file.to_str().unwrap(), "--source", "app"]));

    let rows = |sql: &str| -> Vec<String> {
        let out = crate::common::ok(&mut p.cmd(&["sql", "--format", "csv", sql]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        rows(
            "SELECT event, coalesce(property, '-'), violation, blocked, sum(events) AS n \
             FROM plan_violations GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3"
        ),
        [
            "Order Completed,order_id,missing_property,true,2",
            "Order Completed,revenue,wrong_type,true,1",
            "Page Viewed,-,unplanned_event,false,1",
            "Signed Up,plan,not_allowed_value,false,1",
        ]
    );
    assert_eq!(
        rows("SELECT message_id FROM events ORDER BY 1"),
        ["allowed-1", "allowed-2", "file-ok", "ok-1"]
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM quarantine WHERE reason_code = 'tracking_plan'"),
        3
    );

    // While the plan stands, replay keeps them; once it is fixed, they land once.
    let replay = |p: &TestProject| {
        let out = crate::common::ok(&mut p.cmd(&[
            "quarantine",
            "replay",
            "--where",
            "reason_code = 'tracking_plan'",
            "--json",
        ]));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let r = replay(&p);
    assert_eq!(r["imported"], 0, "{r}");
    assert_eq!(r["still_refused"], 3, "{r}");
    std::fs::write(
        plans.join("app.toml"),
        plan.replace("required = true", "required = false")
            .replace("type = \"number\"", "type = [\"number\", \"string\"]"),
    )
    .unwrap();
    let r = replay(&p);
    assert_eq!(r["imported"], 3, "{r}");
    assert_eq!(p.count("SELECT count(*) AS n FROM quarantine"), 0);
    assert_eq!(
        p.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        7
    );
    assert_eq!(p.count("SELECT count(*) AS n FROM events"), 7);

    // A plan that cannot be read stops the command that would use it, naming it.
    std::fs::write(
        plans.join("app.toml"),
        "[track.A]\nproperties.x = { type = \"text\" }\n",
    )
    .unwrap();
    let e = crate::common::fails(&mut p.cmd(&["import", file.to_str().unwrap(), "--force"]));
    assert!(
        e.contains("sql/plans/app.toml") && e.contains("not a JSON type"),
        "{e}"
    );
}

#[test]
fn an_erasure_commits_a_stopped_servers_log_and_leaves_none_of_the_person_in_it() {
    let p = project();
    let toml = p.path().join("tessera.toml");
    // Nothing is committed for an hour: what is acknowledged lives in the log only.
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("flush_interval_ms = 200", "flush_interval_ms = 3600000");
    std::fs::write(&toml, text).unwrap();
    let s = Served::start(&p, "127.0.0.1:0");
    let body = r#"{"batch":[
        {"type":"identify","messageId":"j-id","userId":"jane-1","traits":{"email":"jane.wal@example.com"},"timestamp":"2026-11-01T10:00:00.000Z"},
        {"type":"track","messageId":"j-1","userId":"jane-1","event":"Signed Up","timestamp":"2026-11-01T10:01:00.000Z"},
        {"type":"track","messageId":"o-1","userId":"other-1","event":"Signed Up","timestamp":"2026-11-01T10:02:00.000Z"}]}"#;
    let response = raw_batch(&s, body);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Killed: the log holds the three events, the lake none of them.
    s.kill();
    let wal = p.path().join("wal");
    let in_log = |needle: &str| {
        std::fs::read_dir(&wal)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                std::fs::read(e.path())
                    .unwrap_or_default()
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            })
    };
    assert!(in_log("jane.wal@example.com") && in_log("o-1"));

    // A running server holds the log: a second collector on it is refused.
    let s = Served::start(&p, "127.0.0.1:0");
    let second = crate::common::fails(
        crate::common::tessera()
            .arg("--project")
            .arg(p.path())
            .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]),
    );
    assert!(second.contains("in use by another process"), "{second}");
    s.kill();

    let out = crate::common::ok(&mut p.cmd(&[
        "privacy",
        "erase",
        "email:jane.wal@example.com",
        "user_id:jane-1",
        "--json",
    ]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["state"], "finished", "{report}");
    assert!(!in_log("jane.wal@example.com"), "the log keeps none of her");
    assert!(!in_log("jane-1"));
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE message_id IN ('j-id', 'j-1')"),
        0
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE message_id = 'o-1'"),
        1,
        "the other person's acknowledged event is kept"
    );
    // The next server starts on the released log and commits nothing twice.
    let s = Served::start(&p, "127.0.0.1:0");
    assert_eq!(health(&s)["status"], "ok");
    s.stop();
    assert_eq!(p.count("SELECT count(*) AS n FROM events"), 1);
}
