//! The cluster: a Ballista scheduler and two executors, each a `tessera cluster`
//! process, over a lake of a million generated events in the S3-compatible server.
//! A second project on the same lake with `[engine] cluster` runs the example segments,
//! traits and predict feature queries there; each must return what the in-process
//! engine returns at the same table versions. Then what a cluster must survive: an
//! append committed while a query waits, rows erased before any vacuum, a segment
//! refresh, and an executor killed in the middle of a query.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_sample::synth::{GenConfig, generate};

use crate::common::{Running, TestProject, added, free_port, ok, run_python, serve_with_env, stop};
use crate::s3::{start_s3, with_aws};

/// Events asked of the generator: it writes a little fewer (duplicates it drops), and
/// the lake must hold at least a million.
const EVENTS: u64 = 1_020_000;

/// A `tessera` command of `p` against the object store at `ep`.
fn run(p: &Path, ep: &str, args: &[&str]) -> Command {
    let mut c = crate::common::tessera();
    c.arg("--project").arg(p).args(args);
    with_aws(&mut c, ep);
    c
}

/// `tessera sql --format json`, parsed.
fn values(p: &Path, ep: &str, query: &str) -> Vec<Value> {
    let out = ok(&mut run(p, ep, &["sql", "--format", "json", query]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

/// [`values`], each row as text, in a canonical order.
fn rows(p: &Path, ep: &str, query: &str) -> Vec<String> {
    let mut rows: Vec<String> = values(p, ep, query).iter().map(canonical).collect();
    rows.sort();
    rows
}

/// A row as text with its floats at 12 significant digits: a float sum's last bits
/// depend on the order its partitions are added in, in one process as on a cluster.
fn canonical(row: &Value) -> String {
    match row {
        Value::Object(m) => {
            let fields: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", canonical(v)))
                .collect();
            fields.join(",")
        }
        Value::Number(n) if n.is_f64() => format!("{:.11e}", n.as_f64().unwrap()),
        other => other.to_string(),
    }
}

/// The rows ordered by their fields that are not floats (then by all of them): a float
/// may differ in its last bits by the order a sum's parts were added in.
fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    let key = |r: &Value| -> (String, String) {
        let exact: Vec<String> = r
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| !v.is_f64())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            })
            .unwrap_or_default();
        (exact.join(","), canonical(r))
    };
    rows.sort_by_cached_key(key);
    rows
}

/// Whether two rows are the same: every field but floats exactly; floats to 12
/// significant digits, or — for a value rounded to cents (`round(avg(x), 2)`) whose
/// sum sits on a half cent and is added in another order — one cent apart.
fn same_row(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter().all(|(k, x)| {
            let Some(y) = b.get(k) else { return false };
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) if a[k].is_f64() || b[k].is_f64() => {
                    let cents = |v: f64| ((v * 100.0).round() - v * 100.0).abs() < 1e-6;
                    (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
                        || (cents(x) && cents(y) && (x - y).abs() <= 0.010_000_1)
                }
                _ => x == y,
            }
        })
}

/// `GET path` of the scheduler's REST API, parsed.
fn rest(scheduler: &str, path: &str) -> Value {
    let mut stream = std::net::TcpStream::connect(scheduler).expect("the scheduler's REST API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {scheduler}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    // Chunked or not: the body is one JSON document.
    let start = body.find(['[', '{']).expect("a JSON body");
    let end = body.rfind([']', '}']).expect("a JSON body");
    serde_json::from_str(&body[start..=end]).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Prints the cluster's logs if the test panics.
struct ShowOnFailure(std::path::PathBuf);

impl Drop for ShowOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for name in ["scheduler", "exec-a", "exec-b"] {
            let text =
                std::fs::read_to_string(self.0.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- {name}.log (last lines)");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn jobs(scheduler: &str) -> Vec<Value> {
    rest(scheduler, "/api/jobs").as_array().unwrap().clone()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig}");
}

/// Per job of the event logs: the stages that ran tasks, and the executors that ran them.
fn job_tasks(dir: &Path) -> BTreeMap<String, (BTreeSet<u64>, BTreeSet<String>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(job) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".eventlog"))
        else {
            continue;
        };
        let (stages, executors): &mut (BTreeSet<u64>, BTreeSet<String>) =
            out.entry(job.to_owned()).or_default();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if event["ev"] == "TaskEnd" {
                let task = &event["data"];
                stages.insert(task["stage_id"].as_u64().unwrap());
                executors.insert(task["executor_id"].as_str().unwrap().to_owned());
            }
        }
    }
    out
}

/// The example queries: every segment, every trait query, and predict's feature,
/// purchase, summary and RFM queries with their parameters filled in.
fn example_queries(p: &Path) -> Vec<(String, String)> {
    let read = |f: &str| std::fs::read_to_string(p.join("sql").join(f)).unwrap();
    let mut out = Vec::new();
    for dir in ["segments", "traits"] {
        let mut files: Vec<_> = std::fs::read_dir(p.join("sql").join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = format!("{dir}/{}", f.file_name().unwrap().to_string_lossy());
            out.push((name, std::fs::read_to_string(f).unwrap()));
        }
    }
    let params = |sql: &str| {
        sql.replace("$cutoff", "TIMESTAMP '2026-10-01T00:00:00Z'")
            .replace("$calibration_end", "TIMESTAMP '2026-10-31T23:59:59Z'")
            .replace("$order_event", "'Order Completed'")
            .replace("$revenue_property", "'revenue'")
    };
    let orders = params(&read("predict/orders.sql"));
    let with_purchases = |sql: &str| {
        let sql = params(sql);
        let at = sql.find("WITH ").expect("a WITH query");
        format!(
            "WITH purchases AS ({orders}\n), {}",
            &sql[at + "WITH ".len()..]
        )
    };
    out.push(("predict/orders.sql".into(), orders.clone()));
    out.push((
        "predict/features.sql".into(),
        with_purchases(&read("predict/features.sql")),
    ));
    let summary = with_purchases(&read("predict/summary.sql"));
    out.push(("predict/summary.sql".into(), summary.clone()));
    out.push((
        "predict/rfm.sql".into(),
        format!(
            "WITH summary AS ({summary}\n) {}",
            read("predict/rfm.sql")
                .lines()
                .filter(|l| !l.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    ));
    out
}

#[test]
fn the_same_sql_on_a_ballista_cluster() {
    let s3 = start_s3();
    let ep = s3.endpoint.clone();
    let ep = ep.as_str();
    run_python(&format!(
        r#"
import boto3
boto3.client("s3", endpoint_url="{ep}", aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket="cdp")
"#
    ));

    // A year of customers.
    let generated = GenConfig {
        events: EVENTS,
        ..GenConfig::default()
    };
    let as_of = format!("{}T23:59:59Z", generated.end_date);
    // The local project: the lake in S3, segments judged at a fixed instant.
    let local = TestProject::new();
    let config = std::fs::read_to_string(local.path().join("tessera.toml"))
        .unwrap()
        .replace("url = \"tessera-data\"", "url = \"s3://cdp/lake\"")
        .replace("# as_of = ", "as_of = ")
        .lines()
        .map(|l| {
            if l.starts_with("as_of = ") {
                format!("as_of = \"{as_of}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(local.path().join("tessera.toml"), &config).unwrap();
    let lp = local.path();

    let data = tempfile::tempdir().unwrap();
    let summary = generate(&generated, data.path()).expect("generate");
    for (file, source) in [
        ("events-web.ndjson", "web"),
        ("events-app.ndjson", "app"),
        ("events-pos.ndjson", "pos"),
    ] {
        let f = data.path().join(file);
        ok(&mut run(
            lp,
            ep,
            &["import", f.to_str().unwrap(), "--source", source],
        ));
    }
    ok(&mut run(lp, ep, &["stitch"]));
    ok(&mut run(lp, ep, &["predict"]));
    let events = rows(lp, ep, "SELECT count(*) AS n FROM events");
    assert_eq!(events, vec![format!("n={}", summary.events)]);
    assert!(summary.events >= 1_000_000, "{summary:?}");

    // The cluster: a scheduler and two executors, one task at a time each.
    let port = free_port();
    let scheduler = format!("127.0.0.1:{port}");
    let logs = tempfile::tempdir().unwrap();
    // Each process logs to a file of its own (shown when the test fails).
    let logged = tempfile::tempdir().unwrap();
    let spawn = |name: &str, args: &[&str]| {
        let log = std::fs::File::create(logged.path().join(format!("{name}.log"))).unwrap();
        run(lp, ep, args)
            .env("TESSERA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting tessera cluster")
    };
    let _logs = ShowOnFailure(logged.path().to_owned());
    let _scheduler = Running(spawn(
        "scheduler",
        &[
            "cluster",
            "scheduler",
            "--listen",
            &scheduler,
            "--executor-timeout",
            "10",
            "--event-log-dir",
            logs.path().to_str().unwrap(),
        ],
    ));
    wait_for("the scheduler", Duration::from_secs(60), || {
        std::net::TcpStream::connect(&scheduler).is_ok()
    });
    let work = tempfile::tempdir().unwrap();
    let executor = |id: &str| {
        let dir = work.path().join(id);
        Running(spawn(
            id,
            &[
                "cluster",
                "executor",
                "--scheduler",
                &scheduler,
                "--port",
                &free_port().to_string(),
                "--grpc-port",
                &free_port().to_string(),
                "--vcores",
                "1",
                "--work-dir",
                dir.to_str().unwrap(),
                "--id",
                id,
            ],
        ))
    };
    let exec_a = executor("exec-a");
    let mut exec_b = Some(executor("exec-b"));
    wait_for("two executors", Duration::from_secs(60), || {
        rest(&scheduler, "/api/executors")
            .as_array()
            .is_some_and(|e| e.len() == 2)
    });

    // The cluster project: the same lake and SQL, its statements run on the cluster.
    let remote = TestProject::new();
    let rp = remote.path();
    std::fs::write(
        rp.join("tessera.toml"),
        config.replace(
            "# cluster = \"df://127.0.0.1:50050\"",
            &format!("cluster = \"df://{scheduler}\""),
        ),
    )
    .unwrap();
    assert!(
        std::fs::read_to_string(rp.join("tessera.toml"))
            .unwrap()
            .contains(&format!("\ncluster = \"df://{scheduler}\"")),
        "the template names [engine] cluster"
    );

    // Every example query: the same rows.
    let examples = example_queries(lp);
    let mut non_empty = 0;
    for (name, sql) in &examples {
        let query = format!("SELECT * FROM ({sql}\n) AS q");
        let here = sorted(values(lp, ep, &query));
        let jobs_before = jobs(&scheduler).len();
        let there = sorted(values(rp, ep, &query));
        assert!(
            jobs(&scheduler).len() > jobs_before,
            "{name} ran on the cluster"
        );
        let differs = here.iter().zip(&there).position(|(a, b)| !same_row(a, b));
        assert!(
            here.len() == there.len() && differs.is_none(),
            "{name}: {} rows in-process, {} on the cluster; first difference: {:?}",
            here.len(),
            there.len(),
            differs.map(|i| (&here[i], &there[i]))
        );
        let cents = here.iter().zip(&there).filter(|(a, b)| a != b).count();
        if cents > 0 {
            eprintln!(
                "{name}: {cents} rows with floats apart in their last digits (summation order)"
            );
        }
        // (A segment of segments, `in_segment`, is empty before the first refresh.)
        non_empty += usize::from(!here.is_empty());
    }
    assert!(
        non_empty + 1 >= examples.len(),
        "{non_empty} of {} return rows",
        examples.len()
    );
    // Multi-stage jobs, with tasks on both executors.
    let spread = || {
        job_tasks(logs.path())
            .values()
            .filter(|(stages, executors)| stages.len() >= 2 && executors.len() == 2)
            .count()
    };
    let started = Instant::now();
    while spread() < 3 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(spread() >= 3, "{:?}", job_tasks(logs.path()));

    // A segment refresh on the cluster writes exactly the memberships the in-process
    // engine computes, and refreshing in-process afterwards finds nothing to change.
    ok(&mut run(rp, ep, &["segments", "refresh"]));
    let pairs = |p: &Path, q: &str| -> BTreeSet<(String, String)> {
        values(p, ep, q)
            .iter()
            .map(|r| {
                (
                    r["segment"].as_str().unwrap().to_owned(),
                    r["profile_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let written = pairs(lp, "SELECT segment, profile_id FROM audience_membership");
    let mut expected = BTreeSet::new();
    for (name, sql) in example_queries(lp)
        .into_iter()
        .filter(|(n, _)| n.starts_with("segments/"))
    {
        let segment = name
            .trim_start_matches("segments/")
            .trim_end_matches(".sql");
        expected.extend(pairs(
            lp,
            &format!(
                "SELECT DISTINCT '{segment}' AS segment, profile_id FROM ({sql}\n) AS s \
                 WHERE profile_id IS NOT NULL"
            ),
        ));
    }
    assert!(written.len() > 100, "{}", written.len());
    assert!(
        written == expected,
        "{} written, {} expected",
        written.len(),
        expected.len()
    );
    let versions = values(lp, ep, "SELECT count(*) AS n FROM segment_refreshes");
    ok(&mut run(lp, ep, &["segments", "refresh"]));
    assert_eq!(
        values(lp, ep, "SELECT count(*) AS n FROM segment_refreshes"),
        versions,
        "nothing to change"
    );

    // Rows erased by a DELETE, whose files are not yet vacuumed, stay gone.
    let person = values(
        lp,
        ep,
        "SELECT email, profile_id FROM profiles WHERE email IS NOT NULL \
         ORDER BY orders DESC NULLS LAST, profile_id LIMIT 1",
    )
    .remove(0);
    let email = person["email"].as_str().unwrap();
    let profile = person["profile_id"].as_str().unwrap();
    let theirs = format!("SELECT count(*) AS n FROM profile_events WHERE profile_id = '{profile}'");
    let by_email = format!("SELECT count(*) AS n FROM profiles WHERE email = '{email}'");
    assert_ne!(rows(rp, ep, &theirs), vec!["n=0".to_owned()]);
    assert_ne!(rows(rp, ep, &by_email), vec!["n=0".to_owned()]);
    ok(&mut run(
        lp,
        ep,
        &["privacy", "erase", &format!("email:{email}")],
    ));
    let count_all = "SELECT count(*) AS n FROM events";
    let after_erase = rows(lp, ep, count_all);
    assert_ne!(after_erase, events, "the erasure removed events");
    assert_eq!(rows(rp, ep, count_all), after_erase);
    assert_eq!(rows(rp, ep, &by_email), vec!["n=0".to_owned()]);
    assert_eq!(rows(rp, ep, &theirs), vec!["n=0".to_owned()]);

    // An append committed while a query waits for the executors does not change its
    // answer: the query reads the version its session opened.
    let more = tempfile::tempdir().unwrap();
    let extra = more.path().join("more.ndjson");
    std::fs::write(
        &extra,
        (0..50)
            .map(|i| {
                format!(
                    "{{\"type\":\"track\",\"messageId\":\"late-{i}\",\"userId\":\"late-user\",\"event\":\"Late\",\"timestamp\":\"2026-10-30T10:00:00Z\"}}\n"
                )
            })
            .collect::<String>(),
    )
    .unwrap();
    let exec_b_child = &exec_b.as_ref().unwrap().0;
    signal(&exec_a.0, "-STOP");
    signal(exec_b_child, "-STOP");
    let jobs_before = jobs(&scheduler).len();
    let waiting = run(rp, ep, &["sql", "--format", "json", count_all])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the job to be queued", Duration::from_secs(60), || {
        jobs(&scheduler).len() > jobs_before
    });
    ok(&mut run(lp, ep, &["import", extra.to_str().unwrap()]));
    signal(&exec_a.0, "-CONT");
    signal(exec_b_child, "-CONT");
    let answer = waiting.wait_with_output().unwrap();
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let answer: Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_eq!(
        format!("n={}", answer["n"]),
        after_erase[0],
        "the append is not seen"
    );
    let appended = rows(rp, ep, count_all);
    assert_eq!(appended, rows(lp, ep, count_all));
    assert_ne!(appended, after_erase, "a new query sees the append");

    // An executor killed in the middle of a query: the query completes on the other
    // one with the right answer, or fails with an error saying so.
    let heavy = "SELECT count(*) AS n, count(DISTINCT a.message_id) AS m FROM events AS a \
                 JOIN events AS b ON a.anonymous_id = b.anonymous_id";
    let expected = rows(lp, ep, heavy);
    let known: BTreeSet<String> = jobs(&scheduler)
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect();
    let heavy_job = || {
        jobs(&scheduler)
            .into_iter()
            .find(|j| !known.contains(j["job_id"].as_str().unwrap()))
    };
    let query = run(rp, ep, &["sql", "--format", "json", heavy])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the heavy job's first stage",
        Duration::from_secs(120),
        || {
            heavy_job().is_some_and(|j| {
                j["completed_stages"].as_u64().unwrap_or(0) >= 1
                    || !matches!(j["status"].as_str(), Some("Queued" | "Running"))
            })
        },
    );
    let still_running = heavy_job().is_some_and(|j| j["status"] == "Running");
    drop(exec_b.take());
    let answer = query.wait_with_output().unwrap();
    if answer.status.success() {
        let got: Vec<String> = String::from_utf8_lossy(&answer.stdout)
            .lines()
            .map(|l| canonical(&serde_json::from_str(l).unwrap()))
            .collect();
        assert_eq!(got, expected, "the right answer, or none");
    } else {
        let e = String::from_utf8_lossy(&answer.stderr);
        assert!(e.contains("cluster"), "a clear error: {e}");
    }
    eprintln!(
        "executor killed {} the job ended: the query {}",
        if still_running { "before" } else { "after" },
        if answer.status.success() {
            "completed"
        } else {
            "failed"
        }
    );
    // The cluster still answers, on the executor left.
    assert_eq!(rows(rp, ep, count_all), appended);

    // Flight SQL statements run there too, the caller's masks applied before the plan
    // leaves: an analyst without `pii` gets masked e-mails from the cluster.
    added(&remote, &["ana", "--role", "analyst"], "an4lyst-passw0rd");
    let aws = [
        ("AWS_ENDPOINT_URL", ep),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let (server, grpc, _) = serve_with_env(&remote, &aws);
    let jobs_before = jobs(&scheduler).len();
    let seen = run_python(&format!(
        r#"
import json
import adbc_driver_flightsql.dbapi as flight_sql
conn = flight_sql.connect("grpc://{grpc}", db_kwargs={{"username": "ana", "password": "an4lyst-passw0rd"}})
cur = conn.cursor()
cur.execute("SELECT count(*) FILTER (WHERE email = '***') AS masked, count(*) FILTER (WHERE email LIKE '%@%') AS clear FROM profiles")
masked, clear = cur.fetchone()
cur.execute("SELECT count(*) AS n FROM events WHERE type = ?", ("track",))
tracks = cur.fetchone()[0]
conn.close()
print(json.dumps({{"masked": masked, "clear": clear, "tracks": tracks}}))
"#
    ));
    stop(server);
    let seen: Value = serde_json::from_str(seen.trim()).unwrap();
    let with_email = values(
        lp,
        ep,
        "SELECT count(*) AS n FROM profiles WHERE email IS NOT NULL",
    )[0]["n"]
        .clone();
    assert_eq!(seen["masked"], with_email, "{seen}");
    assert_eq!(seen["clear"], 0, "{seen}");
    assert_eq!(
        seen["tracks"],
        values(
            lp,
            ep,
            "SELECT count(*) AS n FROM events WHERE type = 'track'"
        )[0]["n"],
        "{seen}"
    );
    assert!(
        jobs(&scheduler).len() >= jobs_before + 2,
        "both statements ran on the cluster"
    );
}
