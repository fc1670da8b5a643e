//! Activation end to end: the real `tessera` binary sending segments to a real
//! receiving server (Python, verifying every request with the PyPI `standardwebhooks`
//! package), which misbehaves on purpose: 503s, a 429 with `Retry-After`, a dropped
//! connection, a 400. Also a SIGKILL of `tessera serve` in the middle of a sync.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Running, TestProject, fails, ok, python};

/// The receiver: answers per delivery id (`webhook-id`) as `behaviour` says, verifies
/// every signature, and logs every request (one JSON line each) to the log file.
const RECEIVER: &str = r#"
import json, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from standardwebhooks.webhooks import Webhook

secret, log_path, behaviour = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
wh = Webhook(secret)
lock = threading.Lock()
attempts = {}
log = open(log_path, "a")

def seq(hook_id):
    # ids are SYNC-RUN-SEQ (or SYNC-RUN-SEQ.PART)
    parts = hook_id.split(".")[0].rsplit("-", 2)
    return int(parts[1]), int(parts[2])

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def answer(self, code, headers=()):
        body = json.dumps({"code": code}).encode()
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        hook_id = self.headers.get("webhook-id", "")
        with lock:
            n = attempts.get(hook_id, 0) + 1
            attempts[hook_id] = n
        try:
            wh.verify(body, dict(self.headers))
            verified = True
        except Exception as e:
            verified = False
        run, s = seq(hook_id)
        code = 200
        if behaviour.get("always") is not None:
            code = behaviour["always"]
        elif not verified:
            code = 401
        elif not behaviour.get("misbehave"):
            code = 200
        elif s % 5 == 0 and n <= 3:
            code = 503
        elif run == 1 and s == 7 and n == 1:
            code = 429
        elif run == 1 and s == 11 and n == 1:
            with lock:
                log.write(json.dumps({"id": hook_id, "attempt": n, "code": "dropped", "t": time.time(), "verified": verified}) + "\n")
                log.flush()
            self.close_connection = True
            self.connection.close()
            return
        elif run == 1 and s == 13 and n == 1:
            code = 400
        events = []
        if code == 200:
            for e in json.loads(body)["batch"]:
                events.append([e["messageId"], e["event"], e["anonymousId"], e["context"]["tessera"]["refresh_version"], e.get("properties", {}).get("plan")])
        with lock:
            log.write(json.dumps({"id": hook_id, "attempt": n, "code": code, "t": time.time(), "verified": verified, "events": events}) + "\n")
            log.flush()
        if code == 429:
            self.answer(429, [("Retry-After", "2")])
        else:
            self.answer(code)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A running receiver (stopped when dropped) and its log.
struct Receiver {
    _process: Running,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, name: &str, secret: &str, behaviour: &str) -> Receiver {
        let log = dir.join(format!("{name}.jsonl"));
        let mut child: Child = Command::new(python())
            .arg("-c")
            .arg(RECEIVER)
            .args([secret, log.to_str().unwrap(), behaviour])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Receiver {
            port: line.trim().parse().unwrap(),
            _process: Running(child),
            log,
        }
    }

    /// Every request logged so far.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn segment_of(p: &TestProject, from: u32, to: u32) {
    let dir = p.path().join("sql/segments");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("big.sql"),
        format!(
            "-- description: a generated audience\n\
             SELECT 'p_' || lpad(CAST(value AS VARCHAR), 6, '0') AS profile_id FROM generate_series({from}, {to})\n"
        ),
    )
    .unwrap();
    ok(&mut p.cmd(&["segments", "refresh"]));
}

/// Imports `events`, stitches, makes `name` (with `sql`) the project's only segment and
/// refreshes it.
fn only_segment(p: &TestProject, events: &Path, name: &str, sql: &str) {
    p.import(&[events.to_str().unwrap()]);
    ok(&mut p.cmd(&["stitch"]));
    let dir = p.path().join("sql/segments");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.sql")), sql).unwrap();
    ok(&mut p.cmd(&["segments", "refresh"]));
}

fn configure(p: &TestProject, extra: &str) {
    let path = p.path().join("tessera.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    // The server refreshes nothing by itself here; the test does.
    text = text.replace("schedule = true", "schedule = false");
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
}

fn activate(p: &TestProject, args: &[&str]) -> std::process::Output {
    let mut all = vec!["activate"];
    all.extend_from_slice(args);
    let mut c = p.cmd(&all);
    c.env("TESSERA_TEST_HOOK_SECRET", SECRET);
    ok(&mut c)
}

/// `tessera serve` with the hook secret set.
fn serve_with_secret(p: &TestProject) -> Running {
    let mut child = crate::common::tessera()
        .arg("--project")
        .arg(p.path())
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .env("TESSERA_TEST_HOOK_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("gRPC listening on ") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Running(child)
}

fn status(p: &TestProject) -> Vec<Value> {
    let out = activate(p, &["status", "--json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let until = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < until, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_sync_reaches_a_misbehaving_receiver_at_least_once_in_order_through_a_crash() {
    let p = TestProject::new();
    let work = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(work.path(), "hook", SECRET, r#"{"misbehave": true}"#);
    configure(
        &p,
        &format!(
            r#"
[destinations.hook]
kind = "webhook"
url = "http://127.0.0.1:{}/hook"
secret_env = ["TESSERA_TEST_HOOK_SECRET"]
batch_size = 500
retry_min = "200ms"
retry_max = "2s"
max_attempts = 6
retry_window = "1s"

[syncs.big_to_hook]
segment = "big"
destination = "hook"
mode = "diff"
"#,
            receiver.port
        ),
    );
    // Run 1: 60,000 members.
    segment_of(&p, 1, 60_000);
    let first = activate(&p, &["run", "--wait", "60s", "--json"]);
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["planned"][0]["members"], 60_000, "{first}");
    assert_eq!(first["planned"][0]["batches"], 120);
    let st = &status(&p)[0];
    assert_eq!(
        (st["delivered"].as_u64(), st["dead"].as_u64()),
        (Some(119), Some(1)),
        "{st}"
    );
    assert!(
        st["last_error"].as_str().unwrap_or("").starts_with("400"),
        "the 400 batch is dead-lettered at once: {st}"
    );
    let ledger =
        p.sql("SELECT batch_id, attempt, status FROM activation_batches WHERE status = 'dead'");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["batch_id"], "big_to_hook-1-13");
    assert_eq!(ledger[0]["attempt"], 1, "dead on its first attempt");

    // Run 2: 20,000 exits and 20,000 entries, delivered by `tessera serve`, killed
    // (SIGKILL) in the middle and started again.
    segment_of(&p, 20_001, 80_000);
    let before_kill = receiver.requests().len();
    let server = serve_with_secret(&p);
    wait_until("run 2 under way", Duration::from_secs(120), || {
        receiver
            .requests()
            .iter()
            .skip(before_kill)
            .filter(|r| r["code"] == 200)
            .count()
            >= 10
    });
    let mut server = server;
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let planned_run2 = p.count(
        "SELECT count(*) AS n FROM activation_batches WHERE run = 2 AND status = 'planned' AND members IS NOT NULL",
    );
    assert_eq!(planned_run2, 80, "40,000 changes in batches of 500");
    let server = serve_with_secret(&p);
    wait_until("run 2 delivered", Duration::from_secs(180), || {
        let s = &status(&p)[0];
        s["run"] == 2 && s["planned"] == 0 && s["retrying"] == 0
    });
    crate::common::stop(server);
    assert_eq!(
        p.count(
            "SELECT count(*) AS n FROM activation_batches WHERE run = 2 AND status = 'planned' AND members IS NOT NULL"
        ),
        planned_run2,
        "nothing re-planned after the crash"
    );
    // The dead batch, re-driven.
    activate(&p, &["retry", "big_to_hook"]);
    activate(&p, &["run", "--wait", "30s"]);
    let st = &status(&p)[0];
    assert_eq!(
        (st["delivered"].as_u64(), st["dead"].as_u64()),
        (Some(200), Some(0)),
        "{st}"
    );

    // What the receiver saw.
    let requests = receiver.requests();
    assert!(
        requests.iter().all(|r| r["verified"] == true),
        "every signature verified"
    );
    let mut first_seen: HashMap<String, (f64, String)> = HashMap::new();
    let mut ids_of: HashMap<String, HashSet<String>> = HashMap::new();
    let mut order: BTreeMap<String, Vec<(f64, String)>> = BTreeMap::new();
    for r in requests.iter().filter(|r| r["code"] == 200) {
        let t = r["t"].as_f64().unwrap();
        let id = r["id"].as_str().unwrap().to_owned();
        for e in r["events"].as_array().unwrap() {
            let message = e[0].as_str().unwrap().to_owned();
            let (kind, profile) = (e[1].as_str().unwrap(), e[2].as_str().unwrap());
            first_seen.entry(message.clone()).or_insert((t, id.clone()));
            ids_of.entry(message).or_default().insert(id.clone());
            order
                .entry(profile.to_owned())
                .or_default()
                .push((t, kind.to_owned()));
        }
    }
    // Every change delivered at least once: 60,000 entries, then 20,000 exits and
    // 20,000 entries — but for the 500 entries of the dead batch, re-driven after its
    // members had left the segment in run 2: a re-drive sends the current state, and
    // their exits are what holds.
    assert_eq!(first_seen.len(), 100_000 - 500);
    // A change seen twice came under the same delivery id both times.
    assert!(
        ids_of.values().all(|ids| ids.len() == 1),
        "duplicates only with a seen webhook-id"
    );
    // Per profile, an exit never before its entry.
    for (profile, events) in &order {
        let entered = events
            .iter()
            .filter(|(_, k)| k == "Audience Entered")
            .map(|e| e.0)
            .reduce(f64::min);
        let exited = events
            .iter()
            .filter(|(_, k)| k == "Audience Exited")
            .map(|e| e.0)
            .reduce(f64::min);
        if let (Some(i), Some(o)) = (entered, exited) {
            assert!(i < o, "{profile}: exited before entered");
        }
    }
    assert_eq!(
        order
            .values()
            .filter(|e| e.iter().any(|(_, k)| k == "Audience Exited"))
            .count(),
        20_000
    );
    // The 429 was retried 2 s later at the earliest; the dropped connection and the
    // 503s were retried.
    let times_of = |id: &str| -> Vec<f64> {
        requests
            .iter()
            .filter(|r| r["id"] == id)
            .map(|r| r["t"].as_f64().unwrap())
            .collect()
    };
    let t429 = times_of("big_to_hook-1-7");
    assert!(t429.len() >= 2 && t429[1] - t429[0] >= 2.0, "{t429:?}");
    assert!(
        times_of("big_to_hook-1-11").len() >= 2,
        "the dropped connection was retried"
    );
    let fives = times_of("big_to_hook-1-5");
    assert!(
        fives.len() >= 4,
        "503 three times, then accepted: {fives:?}"
    );
}

#[test]
fn destinations_are_isolated_consent_is_honoured_and_bad_configuration_is_named() {
    let p = TestProject::new();
    let work = tempfile::tempdir().unwrap();
    let good = Receiver::start(work.path(), "good", SECRET, "{}");
    let down = Receiver::start(work.path(), "down", SECRET, r#"{"always": 503}"#);
    // Ten identified people, consent as Segment's consent managers send it
    // (context.consent.categoryPreferences): four grant advertising, two refuse it, two
    // state empty preferences (nothing granted), two never state any (Segment's rule:
    // their data flows everywhere).
    let events = work.path().join("people.ndjson");
    let mut lines = String::new();
    for i in 0..10 {
        let consent = match i {
            0..4 => r#","context":{"consent":{"categoryPreferences":{"advertising":true}}}"#,
            4..6 => r#","context":{"consent":{"categoryPreferences":{"advertising":false}}}"#,
            6..8 => r#","context":{"consent":{"categoryPreferences":{}}}"#,
            _ => "",
        };
        lines.push_str(&format!(
            "{{\"type\":\"identify\",\"messageId\":\"m{i}\",\"userId\":\"u{i}\",\"traits\":{{\"plan\":\"pro{i}\"}}{consent},\"timestamp\":\"2026-01-01T10:00:0{i}Z\"}}\n"
        ));
    }
    std::fs::write(&events, lines).unwrap();
    only_segment(&p, &events, "everyone", "SELECT profile_id FROM profiles\n");
    configure(
        &p,
        &format!(
            r#"
[destinations.ads]
kind = "webhook"
url = "http://127.0.0.1:{}/ads"
secret_env = ["TESSERA_TEST_HOOK_SECRET"]
consent = ["advertising"]
batch_size = 2

[destinations.crm]
kind = "webhook"
url = "http://127.0.0.1:{}/crm"
secret_env = ["TESSERA_TEST_HOOK_SECRET"]
retry_min = "100ms"
retry_max = "200ms"
max_attempts = 1000
retry_window = "1h"

[syncs.everyone_to_ads]
segment = "everyone"
destination = "ads"
fields = "SELECT profile_id, json_get_str(traits, 'plan') AS plan FROM profiles"

[syncs.everyone_to_crm]
segment = "everyone"
destination = "crm"
"#,
            good.port, down.port
        ),
    );
    // Preview: nothing sent, nothing written.
    let preview = activate(&p, &["preview", "everyone_to_ads"]);
    let text = String::from_utf8_lossy(&preview.stdout);
    assert!(
        text.contains("6 changes") && text.contains("4 left out for want of consent"),
        "{text}"
    );
    assert!(good.requests().is_empty());
    // While the CRM answers 503 for ever, the ads destination gets everything.
    let out = activate(&p, &["run", "--wait", "3s", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let delivered: HashMap<String, &Value> = v["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["destination"].as_str().unwrap().to_owned(), d))
        .collect();
    assert_eq!(delivered["ads"]["members"], 6, "{v}");
    assert_eq!(delivered["crm"]["batches"], 0, "{v}");
    assert!(delivered["crm"]["retries"].as_u64().unwrap() >= 3, "{v}");
    let sent: Vec<(String, String)> = good
        .requests()
        .iter()
        .flat_map(|r| r["events"].as_array().unwrap().clone())
        .map(|e| {
            (
                e[2].as_str().unwrap().to_owned(),
                e[4].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(sent.len(), 6);
    let plans: HashSet<&str> = sent.iter().map(|(_, plan)| plan.as_str()).collect();
    assert_eq!(
        plans,
        HashSet::from(["pro0", "pro1", "pro2", "pro3", "pro8", "pro9"]),
        "the fields query's traits travel"
    );
    let st = status(&p);
    let ads = st.iter().find(|s| s["sync"] == "everyone_to_ads").unwrap();
    assert_eq!(ads["skipped"], 4, "{ads}");
    // The consent table and consent_allows say the same.
    assert_eq!(
        p.count(
            "SELECT count(*) AS n FROM profiles WHERE consent_allows(profile_id, 'advertising')"
        ),
        6
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM consent WHERE category IS NULL AND NOT granted"),
        2
    );
    // The golden profile shows it.
    let consent_of = |user: &str| -> Value {
        let out = ok(&mut p.cmd(&["profile", &format!("user_id:{user}"), "--json"]));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["consent"].clone()
    };
    assert_eq!(consent_of("u0"), serde_json::json!({"advertising": true}));
    assert_eq!(consent_of("u4"), serde_json::json!({"advertising": false}));
    assert_eq!(consent_of("u6"), serde_json::json!({}));
    assert_eq!(consent_of("u9"), Value::Null);
    let crm = st.iter().find(|s| s["sync"] == "everyone_to_crm").unwrap();
    assert!(
        crm["retrying"].as_u64().unwrap() >= 1 && crm["dead"] == 0,
        "{crm}"
    );
    assert!(down.requests().len() >= 3);

    // Bad configuration, each named.
    let toml = p.path().join("tessera.toml");
    let good_text = std::fs::read_to_string(&toml).unwrap();
    let mut c = p.cmd(&["activate", "run"]);
    let e = fails(&mut c);
    assert!(
        e.contains(
            "destinations.ads.secret_env: environment variable TESSERA_TEST_HOOK_SECRET is not set"
        ),
        "{e}"
    );
    for (bad, needle) in [
        (
            good_text.replace(
                "kind = \"webhook\"\nurl = \"http://127.0.0.1",
                "kind = \"carrier_pigeon\"\nurl = \"http://127.0.0.1",
            ),
            "carrier_pigeon",
        ),
        (
            good_text.replace("destination = \"crm\"", "destination = \"nowhere\""),
            "syncs.everyone_to_crm.destination",
        ),
        (
            good_text.replace(
                &format!("http://127.0.0.1:{}/ads", good.port),
                "ftp://example.com",
            ),
            "destinations.ads.url",
        ),
        (
            good_text.replace("batch_size = 2", "batch_size = 0"),
            "destinations.ads.batch_size",
        ),
    ] {
        std::fs::write(&toml, bad).unwrap();
        let mut c = p.cmd(&["activate", "status"]);
        let e = fails(&mut c);
        assert!(e.contains(needle), "{needle}: {e}");
    }
    std::fs::write(
        &toml,
        good_text.replace(
            "fields = \"SELECT profile_id, json_get_str(traits, 'plan') AS plan FROM profiles\"",
            "fields = \"SELECT user_id FROM profiles\"",
        ),
    )
    .unwrap();
    let mut c = p.cmd(&["activate", "run", "--wait", "0"]);
    c.env("TESSERA_TEST_HOOK_SECRET", SECRET);
    let e = fails(&mut c);
    assert!(
        e.contains("syncs.everyone_to_ads.fields") && e.contains("profile_id"),
        "{e}"
    );
}

/// The file destination against a real S3 API (moto on loopback) and a local folder:
/// full and delta runs as Parquet and gzipped CSV, read back by pyarrow and DuckDB,
/// `_SUCCESS` last, and a run written again byte for byte.
#[test]
fn audiences_export_to_s3_and_folders_as_files_readers_can_trust() {
    let s3 = crate::s3::start_s3();
    let ep = s3.endpoint.clone();
    crate::common::run_python(&format!(
        r#"
import boto3
boto3.client("s3", endpoint_url="{ep}", aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket="exports")
"#
    ));
    let p = TestProject::new();
    segment_of(&p, 1, 3000);
    configure(
        &p,
        r#"
[destinations.bucket]
kind = "file"
url = "s3://exports/audiences"
batch_size = 1000

[destinations.folder]
kind = "file"
url = "exported"
format = "csv"
compression = "gzip"

[syncs.to_s3]
segment = "big"
destination = "bucket"
fields = "SELECT 'p_' || lpad(CAST(value AS VARCHAR), 6, '0') AS profile_id, value * 10 AS score FROM generate_series(1, 5000)"

[syncs.to_folder]
segment = "big"
destination = "folder"
"#,
    );
    let run = |args: &[&str]| {
        let mut all = vec!["activate"];
        all.extend_from_slice(args);
        let mut c = p.cmd(&all);
        crate::s3::with_aws(&mut c, &ep);
        ok(&mut c)
    };
    let delivered = |out: &std::process::Output| -> HashMap<String, u64> {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["delivered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["destination"].as_str().unwrap().to_owned(),
                    d["members"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let first = delivered(&run(&["run", "--json"]));
    assert_eq!(first["bucket"], 3000);
    assert_eq!(first["folder"], 3000);
    // The next refresh: 1..=1000 leave, 3001..=3500 enter.
    segment_of(&p, 1001, 3500);
    let second = delivered(&run(&["run", "--json"]));
    assert_eq!(second["bucket"], 1500);
    assert_eq!(second["folder"], 1500);

    let folder = p.path().join("exported");
    let report = crate::common::run_python(&format!(
        r#"
import glob, hashlib, json, os, site
import boto3, duckdb, pyarrow.parquet as pq, pyarrow.fs as pafs
ep = "{ep}"
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
objects = {{o["Key"]: o for o in s3.list_objects_v2(Bucket="exports", Prefix="audiences/")["Contents"]}}
out = {{"keys": sorted(objects)}}
fs = pafs.S3FileSystem(endpoint_override=ep, scheme="http", access_key="test", secret_key="test", region="us-east-1")
for kind in ("full", "delta"):
    folder = [k.rsplit("/", 1)[0] for k in objects if k.endswith("/" + kind + "/_SUCCESS")]
    assert len(folder) == 1, (kind, sorted(objects))
    folder = folder[0]
    parts = sorted(k for k in objects if k.startswith(folder + "/part-"))
    manifest = json.loads(s3.get_object(Bucket="exports", Key=folder + "/_manifest.json")["Body"].read())
    for part, entry in zip(parts, manifest["parts"]):
        body = s3.get_object(Bucket="exports", Key=part)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], part
        assert len(body) == entry["bytes"], part
    success = objects[folder + "/_SUCCESS"]["LastModified"]
    assert all(objects[k]["LastModified"] <= success for k in objects if k.startswith(folder + "/")), "_SUCCESS last"
    table = pq.read_table(["exports/" + k for k in parts], filesystem=fs)
    out[kind] = {{
        "folder": folder, "parts": len(parts), "rows": table.num_rows, "manifest_rows": manifest["rows"],
        "columns": table.column_names, "changes": {{c: table.column("change").to_pylist().count(c) for c in ("entered", "exited")}},
        "score_ok": all(s == int(pid[2:]) * 10 for pid, s in zip(table.column("profile_id").to_pylist(), table.column("score").to_pylist())),
        "source": manifest["source"], "kind": manifest["kind"],
    }}
con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
ext = glob.glob(os.path.join(site.getsitepackages()[0], "duckdb_ext/extensions/*/*/httpfs.duckdb_extension"))[0]
con.execute(f"LOAD '{{ext}}'")
con.execute("CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', ENDPOINT '" + ep.removeprefix("http://") + "', URL_STYLE 'path', USE_SSL false)")
full = out["full"]["folder"]
out["duckdb_s3_rows"] = con.execute(f"SELECT count(*) FROM read_parquet('s3://exports/{{full}}/part-*.parquet')").fetchone()[0]
local = r"{folder}"
csv_full = glob.glob(local + "/to_folder/big/v=*/full/part-*.csv.gz")
csv_delta = glob.glob(local + "/to_folder/big/v=*/delta/part-*.csv.gz")
out["duckdb_csv"] = [
    con.execute(f"SELECT count(*) FROM read_csv({{csv_full!r}})").fetchone()[0],
    con.execute(f"SELECT count(*) FILTER (WHERE change = 'exited') FROM read_csv({{csv_delta!r}})").fetchone()[0],
]
for kind in ("full", "delta"):
    d = glob.glob(local + f"/to_folder/big/v=*/{{kind}}")[0]
    mtimes = {{n: os.stat(os.path.join(d, n)).st_mtime_ns for n in os.listdir(d)}}
    assert mtimes["_SUCCESS"] == max(mtimes.values()), mtimes
    assert mtimes["_manifest.json"] >= max(v for n, v in mtimes.items() if n.startswith("part-")), mtimes
print(json.dumps(out))
"#,
        folder = folder.display()
    ));
    let r: Value = serde_json::from_str(report.trim().lines().last().unwrap()).unwrap();
    assert_eq!(r["full"]["rows"], 3000, "{r}");
    assert_eq!(r["full"]["manifest_rows"], 3000, "{r}");
    assert_eq!(
        r["full"]["parts"], 3,
        "batch_size = 1000 rows per file: {r}"
    );
    assert_eq!(r["full"]["changes"]["entered"], 3000, "{r}");
    assert_eq!(r["full"]["kind"], "full");
    assert_eq!(r["full"]["score_ok"], true, "the fields travel: {r}");
    // (pyarrow adds `v`, read from the hive-style `v=VERSION` folder.)
    assert_eq!(
        r["full"]["columns"],
        serde_json::json!([
            "profile_id",
            "change",
            "refresh_version",
            "changed_at",
            "merged_into",
            "message_id",
            "user_id",
            "score",
            "v"
        ])
    );
    assert_eq!(r["delta"]["rows"], 1500, "{r}");
    assert_eq!(r["delta"]["changes"]["exited"], 1000, "{r}");
    assert_eq!(r["delta"]["changes"]["entered"], 500, "{r}");
    assert_eq!(r["delta"]["kind"], "delta");
    assert_eq!(r["duckdb_s3_rows"], 3000, "{r}");
    assert_eq!(r["duckdb_csv"], serde_json::json!([3000, 1000]), "{r}");

    // Written again (after a part was lost and a stray object appeared): the same bytes.
    let full = r["full"]["folder"].as_str().unwrap().to_owned();
    let snapshot = |extra: &str| -> Value {
        let out = crate::common::run_python(&format!(
            r#"
import hashlib, json, boto3
s3 = boto3.client("s3", endpoint_url="{ep}", aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
{extra}
keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="exports", Prefix="{full}/")["Contents"])
print(json.dumps({{k: hashlib.sha256(s3.get_object(Bucket="exports", Key=k)["Body"].read()).hexdigest() for k in keys}}))
"#
        ));
        serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
    };
    let before = snapshot("");
    snapshot(&format!(
        "s3.delete_object(Bucket='exports', Key='{full}/part-00001.parquet')\ns3.put_object(Bucket='exports', Key='{full}/part-00009.parquet', Body=b'left over')"
    ));
    let out = run(&["resend", "to_s3", "--run", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 batches planned again"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let again = delivered(&run(&["run", "--json"]));
    assert_eq!(again["bucket"], 3000);
    assert_eq!(
        snapshot(""),
        before,
        "a run written again is byte-identical"
    );

    // An unreachable store: the run waits for a retry, recorded, nothing forgotten.
    let toml = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("s3://exports/audiences", "s3://no-such-bucket/audiences")
            .replace("batch_size = 1000", "batch_size = 1000\nretry_min = \"1h\""),
    )
    .unwrap();
    run(&["resend", "to_s3"]);
    let out = run(&["run", "--wait", "0", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bucket = v["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "bucket")
        .unwrap()
        .clone();
    assert_eq!(bucket["batches"], 0, "{v}");
    assert_eq!(bucket["pending"], 2, "the delta run's batches wait: {v}");
    let st = status(&p);
    let s = st.iter().find(|s| s["sync"] == "to_s3").unwrap();
    assert!(
        s["last_error"].as_str().unwrap().contains("no-such-bucket") && s["retrying"] == 2,
        "{s}"
    );

    // Bad configuration of a file destination, each named.
    for (bad, needle) in [
        (
            text.replace("s3://exports/audiences", "ftp://exports/audiences"),
            "destinations.bucket.url",
        ),
        (
            text.replace(
                "compression = \"gzip\"",
                "compression = \"gzip\"\nsecret_env = [\"X\"]",
            ),
            "destinations.folder.secret_env",
        ),
        (
            text.replace("format = \"csv\"\n", ""),
            "destinations.folder.compression",
        ),
    ] {
        std::fs::write(&toml, bad).unwrap();
        let e = fails(&mut p.cmd(&["activate", "status"]));
        assert!(e.contains(needle), "{needle}: {e}");
    }
    std::fs::write(
        &toml,
        text.replace("value * 10 AS score", "value * 10 AS change"),
    )
    .unwrap();
    segment_of(&p, 1, 10);
    let mut c = p.cmd(&["activate", "run", "--wait", "0"]);
    crate::s3::with_aws(&mut c, &ep);
    let e = fails(&mut c);
    assert!(
        e.contains("syncs.to_s3.fields") && e.contains("\"change\""),
        "{e}"
    );
}

/// A receiver standing in for the ad platforms' endpoints: every request is checked
/// with the platforms' own client packages (the `google-ads` request proto, strictly)
/// or their documented shape (Meta), and logged.
const AD_RECEIVER: &str = r#"
import json, re, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from google.ads.googleads.v26.services.types.offline_user_data_job_service import AddOfflineUserDataJobOperationsRequest
log = open(sys.argv[1], "a")
lock = threading.Lock()
HEX = re.compile(r"^[0-9a-f]{64}$")
def check_google(body):
    req = AddOfflineUserDataJobOperationsRequest.from_json(body)  # unknown fields raise
    kinds = {("create" if "create" in op else "remove") for op in json.loads(body)["operations"]}
    assert len(kinds) == 1, "adds and removes in one request"
    total = 0
    for op in req.operations:
        data = op.create if "create" in kinds else op.remove
        ids = list(data.user_identifiers)
        assert 1 <= len(ids) <= 20, len(ids)
        total += len(ids)
        for i in ids:
            for h in (i.hashed_email, i.hashed_phone_number, i.address_info.hashed_first_name, i.address_info.hashed_last_name):
                assert h == "" or HEX.match(h), h
    assert total <= 100000
    return kinds.pop(), len(req.operations), total
def check_meta(method, body):
    p = json.loads(body)["payload"]
    assert p["schema"] == ["EXTERN_ID", "EMAIL", "PHONE", "FN", "LN", "ZIP", "COUNTRY"], p["schema"]
    assert 1 <= len(p["data"]) <= 10000
    for row in p["data"]:
        assert len(row) == 7
        assert all(v == "" or HEX.match(v) for v in row[1:]), row
    return ("create" if method == "POST" else "remove"), len(p["data"]), len(p["data"])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def handle_one(self, method):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            if self.path.startswith("/google"):
                assert method == "POST"
                kind, users, ids = check_google(body.decode())
            else:
                kind, users, ids = check_meta(method, body)
            code, error = 200, None
        except Exception as e:
            code, error, kind, users, ids = 400, repr(e), None, 0, 0
        with lock:
            log.write(json.dumps({"path": self.path, "method": method, "code": code, "error": error, "kind": kind,
                                  "users": users, "identifiers": ids, "auth": self.headers.get("authorization"),
                                  "body": json.loads(body)}) + "\n")
            log.flush()
        out = b"{}"
        self.send_response(code); self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)
    def do_POST(self):
        self.handle_one("POST")
    def do_DELETE(self):
        self.handle_one("DELETE")
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Google Customer Match and Meta Custom Audiences: upload-ready payloads checked by the
/// platforms' packages, caps kept, removals with exactly the identifiers added; the
/// normalization agrees with `facebook-business` (e-mails) and `phonenumbers` (E.164).
#[test]
fn ad_platforms_get_hashed_identifiers_they_accept_and_removals_match_additions() {
    let p = TestProject::new();
    let work = tempfile::tempdir().unwrap();

    // The normalization against the platforms' own code, value by value.
    let oracle = crate::common::run_python(&format!(
        r#"
import json, random, subprocess
import phonenumbers
from facebook_business.adobjects.customaudience import CustomAudience
rng = random.Random(7)
def tessera(platform, key, values, region=None):
    args = [r"{bin}", "--project", r"{project}", "activate", "normalize", "--platform", platform, "--key", key]
    if region:
        args += ["--region", region]
    out = subprocess.run(args, input="\n".join(values) + "\n", capture_output=True, text=True, check=True).stdout
    return [json.loads(l) for l in out.splitlines()]
emails = []
for i in range(1000):
    local = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+") for _ in range(rng.randint(3, 12))).strip(".")
    domain = rng.choice(["Example.COM", "gmail.com", "GoogleMail.com", "mail.co.uk", "exämple.de"])
    emails.append(rng.choice(["", " ", "\t", "  "]) + (local or "x") + "@" + domain + rng.choice(["", " ", ".", " \n"[:1]]))
sdk = [CustomAudience.format_params(["EMAIL"], [[e]], is_raw=True)["payload"]["data"][0][0] for e in emails]
ours = [r["sha256"] for r in tessera("meta", "email", emails)]
email_mismatch = [(e, a, b) for e, a, b in zip(emails, sdk, ours) if a != b]
regions = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "MX", "ZA", "ES", "IT", "CA", "NL"]
phone_total, phone_mismatch, by_region = 0, [], {{}}
for region in regions:
    values, expected = [], []
    for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
        ex = phonenumbers.example_number_for_type(region, kind)
        digits = str(ex.national_number)
        for _ in range(60):
            n = digits[:-2] + "%02d" % rng.randint(0, 99)
            num = phonenumbers.parse("+%d%s" % (ex.country_code, n))
            if not phonenumbers.is_valid_number(num):
                continue
            fmt = rng.choice([phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164])
            text = phonenumbers.format_number(num, fmt)
            if rng.random() < 0.3:
                text = text.replace(" ", rng.choice(["-", ".", "  "]))
            values.append(text)
            expected.append(phonenumbers.format_number(phonenumbers.parse(text, region), phonenumbers.PhoneNumberFormat.E164))
    got = tessera("google", "phone", values, region)
    meta = tessera("meta", "phone", values, region)
    by_region[region] = len(values)
    for v, e, g, m in zip(values, expected, got, meta):
        phone_total += 1
        if g["normalized"] != e or m["normalized"] != e[1:]:
            phone_mismatch.append((region, v, e, g["normalized"], m["normalized"]))
print(json.dumps({{"emails": len(emails), "email_mismatch": email_mismatch[:5], "phones": phone_total,
                  "regions": by_region, "phone_mismatch": phone_mismatch[:5], "phone_mismatches": len(phone_mismatch)}}))
"#,
        bin = env!("CARGO_BIN_EXE_tessera"),
        project = p.path().display()
    ));
    let o: Value = serde_json::from_str(oracle.trim().lines().last().unwrap()).unwrap();
    assert_eq!(o["emails"], 1000);
    assert_eq!(o["email_mismatch"], serde_json::json!([]), "{o}");
    assert!(o["phones"].as_u64().unwrap() >= 1000, "{o}");
    assert!(o["regions"].as_object().unwrap().len() >= 10, "{o}");
    assert_eq!(o["phone_mismatches"], 0, "{o}");

    // People with e-mails, phones in their own countries' formats (read in the member's
    // `country`), names and zips.
    let people = [
        (
            "  Ann.Lee@Example.COM ",
            "(415) 555-0132",
            "US",
            "94107-1234",
            "Ann",
            "Lee",
        ),
        (
            "j.o.h.n.doe@gmail.com",
            "020 7946 0018",
            "GB",
            "SW1A 1AA",
            "John",
            "Doe",
        ),
        (
            "MARIE@exemple.fr",
            "06 12 34 56 78",
            "FR",
            "75001",
            "Marie",
            "Curie-Skłodowska",
        ),
        (
            "kai@beispiel.de",
            "030 12345678",
            "DE",
            "10115",
            "Kai",
            "Müller",
        ),
    ];
    let mut lines = String::new();
    for i in 0..1200 {
        let (email, phone, country, zip, first, last) = people[i % people.len()];
        let email = email.replacen('@', &format!("+{i}@"), 1);
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({"type": "identify", "messageId": format!("ad{i}"), "userId": format!("u{i}"),
                "traits": {"email": email, "phone": phone, "country": country, "zip": zip, "first_name": first, "last_name": last},
                "timestamp": "2026-03-01T10:00:00Z"})
        ));
    }
    let events = work.path().join("people.ndjson");
    std::fs::write(&events, lines).unwrap();
    only_segment(
        &p,
        &events,
        "buyers",
        "SELECT profile_id FROM profiles WHERE json_get_str(traits, 'first_name') IS NOT NULL\n",
    );
    let dir = p.path().join("sql/segments");

    let log = work.path().join("ads.jsonl");
    let mut child: Child = Command::new(python())
        .arg("-c")
        .arg(AD_RECEIVER)
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _receiver = Running(child);
    let port: u16 = line.trim().parse().unwrap();
    let fields = "SELECT profile_id, profile_id AS external_id, email, json_get_str(traits, 'phone') AS phone, json_get_str(traits, 'first_name') AS first_name, json_get_str(traits, 'last_name') AS last_name, json_get_str(traits, 'country') AS country, json_get_str(traits, 'zip') AS zip FROM profiles";
    configure(
        &p,
        &format!(
            r#"
[destinations.google]
kind = "google_customer_match"
url = "http://127.0.0.1:{port}/google/customers/1/offlineUserDataJobs/2:addOperations"
headers_env = {{ Authorization = "TESSERA_TEST_ADS_TOKEN" }}
batch_size = 500

[destinations.meta]
kind = "meta_custom_audience"
url = "http://127.0.0.1:{port}/meta/v21.0/1234/users"
headers_env = {{ Authorization = "TESSERA_TEST_ADS_TOKEN" }}

[syncs.buyers_google]
segment = "buyers"
destination = "google"
fields = "{fields}"

[syncs.buyers_meta]
segment = "buyers"
destination = "meta"
fields = "{fields}"
"#
        ),
    );
    let run = |args: &[&str]| {
        let mut all = vec!["activate"];
        all.extend_from_slice(args);
        let mut c = p.cmd(&all);
        c.env("TESSERA_TEST_ADS_TOKEN", "Bearer test-token");
        ok(&mut c)
    };
    run(&["run", "--wait", "10s"]);
    // 300 people leave, after their first names changed: removals still send the names
    // that were added.
    let mut lines = String::new();
    for i in 0..300 {
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({"type": "identify", "messageId": format!("ren{i}"), "userId": format!("u{i}"),
                "traits": {"first_name": format!("Renamed{i}"), "left": true}, "timestamp": "2026-03-02T10:00:00Z"})
        ));
    }
    std::fs::write(&events, lines).unwrap();
    p.import(&[events.to_str().unwrap()]);
    ok(&mut p.cmd(&["stitch"]));
    std::fs::write(
        dir.join("buyers.sql"),
        "SELECT profile_id FROM profiles WHERE json_get_str(traits, 'first_name') IS NOT NULL AND json_get_bool(traits, 'left') IS NULL\n",
    )
    .unwrap();
    ok(&mut p.cmd(&["segments", "refresh"]));
    run(&["run", "--wait", "10s"]);

    let requests: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bad: Vec<&Value> = requests.iter().filter(|r| r["code"] != 200).collect();
    assert!(bad.is_empty(), "refused by the platform checks: {bad:?}");
    assert!(requests.iter().all(|r| r["auth"] == "Bearer test-token"));
    // Each platform: what was added per profile, and what was removed.
    for platform in ["google", "meta"] {
        let mine: Vec<&Value> = requests
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("/{platform}"))
            })
            .collect();
        let mut added: HashMap<String, Value> = HashMap::new();
        let mut removed: HashMap<String, Value> = HashMap::new();
        for r in &mine {
            let remove = r["kind"] == "remove";
            if platform == "google" {
                assert!(r["users"].as_u64().unwrap() <= 500, "batch_size");
                for op in r["body"]["operations"].as_array().unwrap() {
                    let data = op.get("create").or(op.get("remove")).unwrap();
                    let ids = data["userIdentifiers"].as_array().unwrap();
                    let pid = ids
                        .iter()
                        .find_map(|i| i["thirdPartyUserId"].as_str())
                        .unwrap()
                        .to_owned();
                    let target = if remove { &mut removed } else { &mut added };
                    target.insert(pid, data.clone());
                }
            } else {
                for row in r["body"]["payload"]["data"].as_array().unwrap() {
                    let pid = row[0].as_str().unwrap().to_owned();
                    let target = if remove { &mut removed } else { &mut added };
                    target.insert(pid, row.clone());
                }
            }
        }
        assert_eq!(added.len(), 1200, "{platform}: every member added once");
        assert_eq!(removed.len(), 300, "{platform}: the leavers removed");
        for (pid, tuple) in &removed {
            assert_eq!(
                Some(tuple),
                added.get(pid),
                "{platform}: {pid} removed with other identifiers than it was added with"
            );
        }
    }
    // Google: the address and the phone of a GB member, hashed as published.
    let gb = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/google") && r["kind"] == "create")
        .flat_map(|r| r["body"]["operations"].as_array().unwrap().clone())
        .map(|op| op["create"]["userIdentifiers"].clone())
        .find(|ids| {
            ids.as_array()
                .unwrap()
                .iter()
                .any(|i| i["addressInfo"]["countryCode"] == "GB")
        })
        .unwrap();
    let ids = gb.as_array().unwrap();
    assert!(
        ids.iter().any(|i| i["hashedPhoneNumber"]
            == tessera_activate::ads::sha256_hex("+442079460018").as_str()),
        "{gb}"
    );
    let address = ids.iter().find(|i| i.get("addressInfo").is_some()).unwrap();
    assert_eq!(
        address["addressInfo"]["postalCode"], "SW1A 1AA",
        "not hashed"
    );
    assert_eq!(
        address["addressInfo"]["hashedFirstName"],
        tessera_activate::ads::sha256_hex("john").as_str()
    );

    // Bad configuration, each named.
    let toml = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    for (bad, needle) in [
        (
            text.replace("batch_size = 500", "batch_size = 500000"),
            "destinations.google.batch_size",
        ),
        (
            text.replace(
                "kind = \"meta_custom_audience\"",
                "kind = \"meta_custom_audience\"\ndefault_region = \"USA\"",
            ),
            "destinations.meta.default_region",
        ),
        (
            text.replace(
                "kind = \"meta_custom_audience\"",
                "kind = \"meta_custom_audience\"\nsecret_env = [\"X\"]",
            ),
            "destinations.meta.secret_env",
        ),
    ] {
        std::fs::write(&toml, bad).unwrap();
        let e = fails(&mut p.cmd(&["activate", "status"]));
        assert!(e.contains(needle), "{needle}: {e}");
    }
    std::fs::write(
        &toml,
        text.replace("AS zip FROM profiles", "AS postcode FROM profiles"),
    )
    .unwrap();
    let mut c = p.cmd(&["activate", "run", "--wait", "0"]);
    c.env("TESSERA_TEST_ADS_TOKEN", "Bearer test-token");
    let e = fails(&mut c);
    assert!(
        e.contains("syncs.buyers_google.fields") && e.contains("\"postcode\""),
        "{e}"
    );
}

/// `AdminService.RunSyncs`, `PreviewSync`, `ActivationStatus`, `RetrySyncs` and
/// `ResendSync` over `tessera.v1`
/// (Python stubs generated from `proto/`): admins plan and read activation, others are
/// refused, an unknown sync is named.
#[test]
fn admins_drive_activation_over_tessera_v1() {
    let p = TestProject::new();
    let work = tempfile::tempdir().unwrap();
    let good = Receiver::start(work.path(), "good", SECRET, "{}");
    segment_of(&p, 1, 1200);
    configure(
        &p,
        &format!(
            "\n[destinations.crm]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/crm\"\nsecret_env = [\"TESSERA_TEST_HOOK_SECRET\"]\n\n[syncs.big_to_crm]\nsegment = \"big\"\ndestination = \"crm\"\n# planned by RunSyncs, not after refreshes\nschedule = false\n",
            good.port
        ),
    );
    const PASSWORD: &str = "s3cret-passw0rd";
    crate::common::added(&p, &["root", "--role", "admin"], PASSWORD);
    crate::common::added(&p, &["ann", "--role", "analyst"], PASSWORD);
    let (server, grpc, _) =
        crate::common::serve_with_env(&p, &[("TESSERA_TEST_HOOK_SECRET", SECRET)]);
    let script = r#"
target, password = sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(target)
auth = auth_pb2_grpc.AuthServiceStub(channel)
admin = admin_pb2_grpc.AdminServiceStub(channel)
def login(user):
    return [("authorization", "Bearer " + auth.Login(auth_pb2.LoginRequest(user=user, password=password)).token)]
root, ann = login("root"), login("ann")
call("analyst", lambda: admin.RunSyncs(admin_pb2.RunSyncsRequest(), metadata=ann))
call("unknown", lambda: admin.RunSyncs(admin_pb2.RunSyncsRequest(syncs=["nope"]), metadata=root))
call("preview_analyst", lambda: admin.PreviewSync(admin_pb2.PreviewSyncRequest(sync="big_to_crm"), metadata=ann))
call("preview_unknown", lambda: admin.PreviewSync(admin_pb2.PreviewSyncRequest(sync="nope"), metadata=root))
call("preview_limit", lambda: admin.PreviewSync(admin_pb2.PreviewSyncRequest(sync="big_to_crm", limit=1000), metadata=root))
call("preview", lambda: admin.PreviewSync(admin_pb2.PreviewSyncRequest(sync="big_to_crm", limit=2), metadata=root))
call("run", lambda: admin.RunSyncs(admin_pb2.RunSyncsRequest(syncs=["big_to_crm"]), metadata=root))
call("preview_after", lambda: admin.PreviewSync(admin_pb2.PreviewSyncRequest(sync="big_to_crm"), metadata=root))
call("again", lambda: admin.RunSyncs(admin_pb2.RunSyncsRequest(), metadata=root))
import time
for _ in range(100):
    call("status", lambda: admin.ActivationStatus(admin_pb2.ActivationStatusRequest(), metadata=root))
    s = out["status"].get("syncs", [{}])[0]
    if int(s.get("members_delivered", 0)) == 1200:
        break
    time.sleep(0.2)
call("retry", lambda: admin.RetrySyncs(admin_pb2.RetrySyncsRequest(sync="big_to_crm"), metadata=root))
call("retry_unknown", lambda: admin.RetrySyncs(admin_pb2.RetrySyncsRequest(sync="nope"), metadata=root))
call("resend_negative", lambda: admin.ResendSync(admin_pb2.ResendSyncRequest(sync="big_to_crm", run=-1), metadata=root))
call("resend", lambda: admin.ResendSync(admin_pb2.ResendSyncRequest(sync="big_to_crm"), metadata=root))
for _ in range(100):
    call("status_resent", lambda: admin.ActivationStatus(admin_pb2.ActivationStatusRequest(), metadata=root))
    s = out["status_resent"].get("syncs", [{}])[0]
    if int(s.get("planned", 0)) == 0 and int(s.get("retrying", 0)) == 0:
        break
    time.sleep(0.2)
print(json.dumps(out))
"#;
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let out = Command::new(python())
        .arg("-c")
        .arg(format!("{}{script}", crate::grpc::PRELUDE))
        .args([proto, grpc.as_str(), PASSWORD])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["analyst"]["code"], "PERMISSION_DENIED", "{v}");
    assert_eq!(v["unknown"]["code"], "NOT_FOUND", "{v}");
    assert!(
        v["unknown"]["message"]
            .as_str()
            .unwrap()
            .contains("big_to_crm"),
        "names the known syncs: {v}"
    );
    assert_eq!(v["preview_analyst"]["code"], "PERMISSION_DENIED", "{v}");
    assert_eq!(v["preview_unknown"]["code"], "NOT_FOUND", "{v}");
    assert_eq!(v["preview_limit"]["code"], "INVALID_ARGUMENT", "{v}");
    assert!(
        v["preview_limit"]["message"]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{v}"
    );
    let preview = &v["preview"];
    assert_eq!(preview["pending"], true, "{v}");
    assert_eq!(preview["destination"], "crm", "{v}");
    assert_eq!(preview["plan"]["members"], "1200", "{v}");
    assert_eq!(preview["plan"].get("planned"), None, "nothing written: {v}");
    let events = preview["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{v}");
    let first: Value = serde_json::from_str(events[0].as_str().unwrap()).unwrap();
    assert_eq!(first["properties"]["audience_key"], "big", "{v}");
    assert_eq!(v["preview_after"].get("pending"), None, "up to date: {v}");
    let run = &v["run"]["syncs"][0];
    assert_eq!(run["sync"], "big_to_crm", "{v}");
    assert_eq!(run["planned"], true, "{v}");
    assert_eq!(run["members"], "1200", "{v}");
    assert_eq!(run["run"], "1", "{v}");
    assert_eq!(
        v["again"]["syncs"][0].get("planned"),
        None,
        "up to date: {v}"
    );
    let s = &v["status"]["syncs"][0];
    assert_eq!(s["members_delivered"], "1200", "{v}");
    assert_eq!(s["destination"], "crm");
    assert_eq!(v["retry"].get("batches"), None, "nothing dead: {v}");
    assert_eq!(v["retry_unknown"]["code"], "NOT_FOUND", "{v}");
    assert_eq!(v["resend_negative"]["code"], "INVALID_ARGUMENT", "{v}");
    assert!(
        v["resend"]["batches"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0,
        "{v}"
    );
    assert_eq!(
        v["status_resent"]["syncs"][0]["members_delivered"], "1200",
        "{v}"
    );
    // The run went out a second time, batch for batch under the same webhook-ids.
    let accepted: Vec<Value> = good
        .requests()
        .into_iter()
        .filter(|r| r["code"] == 200)
        .collect();
    let events: usize = accepted
        .iter()
        .map(|r| r["events"].as_array().unwrap().len())
        .sum();
    assert_eq!(events, 2400, "every member sent twice");
    let ids: HashSet<&str> = accepted.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len() * 2, accepted.len(), "each batch id seen twice");
    crate::common::stop(server);
    // Every call is in the audit log.
    let out = ok(&mut p.cmd(&[
        "sql",
        "--format",
        "csv",
        "SELECT action, status, count(*) AS n FROM audit_log WHERE action IN ('run_syncs', 'activation_status', 'retry_syncs') GROUP BY action, status ORDER BY action, status",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run_syncs,ok,2"), "{text}");
    assert!(text.contains("run_syncs,permission_denied,1"), "{text}");
    assert!(text.contains("run_syncs,failed,1"), "{text}");
    assert!(text.contains("retry_syncs,ok,1"), "{text}");
    let out = ok(&mut p.cmd(&[
        "sql",
        "--format",
        "csv",
        "SELECT action, status, count(*) AS n FROM audit_log WHERE action IN ('preview_sync', 'resend_sync') GROUP BY action, status ORDER BY action, status",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("preview_sync,ok,2"), "{text}");
    assert!(text.contains("preview_sync,permission_denied,1"), "{text}");
    assert!(text.contains("preview_sync,failed,1"), "{text}");
    assert!(text.contains("resend_sync,ok,1"), "{text}");
}

/// The receiver of event streams: verifies every signature, fails the first attempt of
/// every third batch with 503, and logs what it accepted.
const STREAM_RECEIVER: &str = r#"
import json, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from standardwebhooks.webhooks import Webhook

wh = Webhook(sys.argv[1])
log = open(sys.argv[2], "a")
lock = threading.Lock()
attempts = {}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        hook_id = self.headers.get("webhook-id", "")
        with lock:
            n = attempts.get(hook_id, 0) + 1
            attempts[hook_id] = n
        try:
            wh.verify(body, dict(self.headers))
            verified = True
        except Exception:
            verified = False
        seq = int(hook_id.split(".")[0].rsplit("-", 1)[1])
        code = 401 if not verified else (503 if seq % 3 == 0 and n == 1 else 200)
        events = json.loads(body)["batch"] if code == 200 else []
        with lock:
            log.write(json.dumps({"id": hook_id, "attempt": n, "code": code, "verified": verified, "events": events}) + "\n")
            log.flush()
        out = json.dumps({"code": code}).encode()
        self.send_response(code)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

#[test]
fn an_event_stream_forwards_collected_events_once_committed_through_failures_and_a_crash() {
    let p = crate::serve::project();
    // Events committed before the stream first runs are not its business.
    let old = p.path().join("old.ndjson");
    std::fs::write(
        &old,
        (0..10)
            .map(|i| format!(r#"{{"type":"track","messageId":"old-{i}","userId":"u","event":"Old","timestamp":"2026-11-01T00:00:00Z"}}"#))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    p.import(&[old.to_str().unwrap()]);

    let log = p.path().join("stream.jsonl");
    let mut child: Child = Command::new(python())
        .arg("-c")
        .arg(STREAM_RECEIVER)
        .args([SECRET, log.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _receiver = Running(child);
    let port: u16 = line.trim().parse().unwrap();
    configure(
        &p,
        &format!(
            r#"
[destinations.firehose]
kind = "event_stream"
url = "http://127.0.0.1:{port}/all"
secret_env = ["TESSERA_TEST_HOOK_SECRET"]
query = "SELECT * FROM events WHERE type = 'track'"
batch_size = 40
retry_min = "200ms"
retry_max = "1s"

[destinations.signups]
kind = "event_stream"
url = "http://127.0.0.1:{port}/signups"
secret_env = ["TESSERA_TEST_HOOK_SECRET"]
query = "SELECT message_id, user_id, json_get_str(properties, 'plan') AS plan FROM events WHERE event = 'Signed Up'"
retry_min = "200ms"
retry_max = "1s"
"#
        ),
    );
    let requests = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let delivered = |prefix: &str| -> Vec<Value> {
        requests()
            .into_iter()
            .filter(|r| r["code"] == 200 && r["id"].as_str().unwrap().starts_with(prefix))
            .flat_map(|r| r["events"].as_array().unwrap().clone())
            .collect()
    };
    let send = |url: &str, from: usize, to: usize| {
        let script = format!(
            r#"
import segment.analytics as seg
seg.write_key = "wk_test_0123456789"
seg.host = "{url}"
for i in range({from}, {to}):
    seg.track(user_id=f"u{{i % 7}}", event="Signed Up" if i % 10 == 0 else "Item Viewed", properties={{"i": i, "plan": "pro"}}, message_id=f"t-{{i}}")
    if i % 15 == 0:
        seg.identify(user_id=f"u{{i % 7}}", traits={{"plan": "pro"}}, message_id=f"id-{{i}}")
if {from} == 200:
    # Segment's integrations: off everywhere, off for firehose, on for firehose only.
    for mid, flags in [("off-all", {{"All": False}}), ("off-firehose", {{"firehose": False}}), ("on-firehose", {{"All": False, "firehose": True}})]:
        seg.track(user_id="u9", event="Signed Up", properties={{"plan": "pro"}}, integrations=flags, message_id=mid)
seg.flush()
seg.shutdown()
"#
        );
        let out = Command::new(python())
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let env = [("TESSERA_TEST_HOOK_SECRET", SECRET)];
    let (server, _, http) = crate::common::serve_with_env(&p, &env);
    // The stream starts at what is committed: wait for its first round.
    wait_until("the stream's start", Duration::from_secs(30), || {
        p.count("SELECT count(*) AS n FROM stream_deliveries") >= 2
    });
    send(&format!("http://{http}"), 0, 200);
    wait_until("the first deliveries", Duration::from_secs(60), || {
        delivered("firehose-").len() >= 40
    });
    // Killed mid-stream: the next server resumes from the ledger.
    drop(server);
    let (server, _, http) = crate::common::serve_with_env(&p, &env);
    send(&format!("http://{http}"), 200, 300);
    wait_until(
        "every track event forwarded",
        Duration::from_secs(90),
        || {
            let ids: HashSet<String> = delivered("firehose-")
                .iter()
                .map(|e| e["messageId"].as_str().unwrap().to_owned())
                .collect();
            ids.len() >= 301
        },
    );
    wait_until("every sign-up forwarded", Duration::from_secs(30), || {
        delivered("signups-").len() >= 31
    });
    // A batch sent before the crash but not recorded is sent again: wait for the ledger.
    wait_until("the ledger settled", Duration::from_secs(60), || {
        status(&p)
            .iter()
            .all(|s| s["planned"] == 0 && s["retrying"] == 0)
    });
    drop(server);

    let all = requests();
    assert!(
        all.iter().all(|r| r["verified"] == true),
        "every request signed"
    );
    let events = delivered("firehose-");
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    let expected: HashSet<String> = (0..300)
        .map(|i| format!("t-{i}"))
        .chain(["on-firehose".to_owned()])
        .collect();
    assert_eq!(
        ids,
        expected.iter().map(String::as_str).collect::<HashSet<_>>(),
        "every track event after the start its integrations let through, no identify, \
         nothing from before"
    );
    // At least once: a duplicate only with a webhook-id already delivered.
    let mut seen: HashMap<String, String> = HashMap::new();
    for r in all
        .iter()
        .filter(|r| r["code"] == 200 && r["id"].as_str().unwrap().starts_with("firehose-"))
    {
        for e in r["events"].as_array().unwrap() {
            let m = e["messageId"].as_str().unwrap().to_owned();
            let id = r["id"].as_str().unwrap().to_owned();
            if let Some(first) = seen.insert(m.clone(), id.clone()) {
                assert_eq!(first, id, "{m} came again under another delivery id");
            }
        }
    }
    assert!(
        all.iter().any(|r| r["code"] == 503)
            && all.iter().any(|r| r["code"] == 200 && r["attempt"] == 2),
        "a refused batch was tried again"
    );
    let e = events.iter().find(|e| e["messageId"] == "t-7").unwrap();
    assert_eq!(e["type"], "track");
    assert_eq!(e["event"], "Item Viewed");
    assert_eq!(e["userId"], "u0");
    assert_eq!(e["properties"]["i"], 7, "{e}");
    assert!(e["context"]["library"]["name"].is_string(), "{e}");
    assert!(
        e.get("event_date").is_none() && e.get("message_id").is_none(),
        "{e}"
    );
    // The transform: only sign-ups, only the columns asked for.
    let signups = delivered("signups-");
    let distinct: HashSet<&str> = signups
        .iter()
        .filter_map(|s| s["messageId"].as_str())
        .collect();
    assert_eq!(distinct.len(), 31, "one per sign-up");
    // A batch sent before the crash but not yet recorded is sent again, under its id.
    let mut first_id: HashMap<String, String> = HashMap::new();
    for r in all
        .iter()
        .filter(|r| r["code"] == 200 && r["id"].as_str().unwrap().starts_with("signups-"))
    {
        for e in r["events"].as_array().unwrap() {
            let m = e["messageId"].as_str().unwrap().to_owned();
            let id = r["id"].as_str().unwrap().to_owned();
            if let Some(first) = first_id.insert(m.clone(), id.clone()) {
                assert_eq!(first, id, "{m} came again under another delivery id");
            }
        }
    }
    let turned: HashSet<&str> = signups
        .iter()
        .filter_map(|s| s["messageId"].as_str())
        .filter(|m| !m.starts_with("t-"))
        .collect();
    assert_eq!(
        turned,
        HashSet::from(["off-firehose"]),
        "integrations off for all, or on for firehose only, keep an event from signups"
    );
    for s in &signups {
        assert_eq!(s.as_object().unwrap().len(), 3, "{s}");
        assert_eq!(s["plan"], "pro");
    }
    // The ledger says what happened, and `tessera activate status` shows it.
    let st = status(&p);
    let firehose = st.iter().find(|s| s["sync"] == "firehose").unwrap();
    assert_eq!(firehose["segment"], "events", "{firehose}");
    assert_eq!(firehose["dead"], 0, "{firehose}");
    assert!(
        firehose["members_delivered"].as_u64().unwrap() >= 300,
        "{firehose}"
    );
    assert!(
        p.count(
            "SELECT count(*) AS n FROM (SELECT batch_id, max(attempt) AS a FROM stream_deliveries \
             WHERE status = 'delivered' GROUP BY batch_id) WHERE a >= 2"
        ) > 0,
        "a retried batch is recorded delivered on its second attempt"
    );
}

#[test]
fn event_stream_configuration_errors_are_named() {
    let p = TestProject::new();
    for (extra, needle) in [
        (
            "[destinations.s]\nkind = \"event_stream\"\nurl = \"ftp://x\"\n",
            "destinations.s.url",
        ),
        (
            "[destinations.s]\nkind = \"event_stream\"\nurl = \"http://127.0.0.1:9/\"\nconsent = [\"advertising\"]\n",
            "destinations.s.consent",
        ),
        (
            "[destinations.s]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nquery = \"SELECT 1\"\n",
            "destinations.s.query",
        ),
        (
            "[destinations.s]\nkind = \"event_stream\"\nurl = \"http://127.0.0.1:9/\"\n[syncs.x]\nsegment = \"high_value\"\ndestination = \"s\"\n",
            "syncs.x.destination",
        ),
    ] {
        let path = p.path().join("tessera.toml");
        let base = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{base}\n{extra}")).unwrap();
        let e = fails(&mut p.cmd(&["activate", "status"]));
        assert!(e.contains(needle), "{extra}: {e}");
        std::fs::write(&path, base).unwrap();
    }
    // A query without message_id is refused when the stream runs, naming the key.
    let path = p.path().join("tessera.toml");
    let base = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{base}\n[destinations.s]\nkind = \"event_stream\"\nurl = \"http://127.0.0.1:9/\"\nfrom_beginning = true\nquery = \"SELECT user_id FROM events\"\n"
        ),
    )
    .unwrap();
    let events = p.path().join("e.ndjson");
    std::fs::write(
        &events,
        r#"{"type":"track","messageId":"m1","userId":"u","event":"E","timestamp":"2026-11-01T00:00:00Z"}"#,
    )
    .unwrap();
    p.import(&[events.to_str().unwrap()]);
    let e = fails(&mut p.cmd(&["activate", "run"]));
    assert!(
        e.contains("destinations.s.query") && e.contains("message_id"),
        "{e}"
    );
}
