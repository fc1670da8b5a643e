//! The SQL surface under attack and misuse, end to end: `tessera serve` (the real
//! binary) driven by unmodified clients — ADBC's DB-API driver, `flightsql-dbapi`,
//! `pyarrow.flight` and the `tessera.v1` stubs — checking what is refused, that nothing
//! on disk changes, that `?` placeholders work, that queries are bounded, and that row
//! filters, revocation and sign-in throttling hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{TestProject, added, ok, python, sample_data, serve, stop};

const PASSWORD: &str = "s3cure-passw0rd";

/// Every file under `dir` (but the audit log, the read leases and the WAL, which serving
/// writes) with its size and modification time.
fn files(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(dir).unwrap().to_owned();
            let s = rel.to_string_lossy();
            if s.starts_with("tessera-data/audit_log")
                || s.starts_with("tessera-data/_tessera/leases")
                || s.starts_with("wal")
            {
                continue;
            }
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.insert(rel, (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out
}

fn run(script: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const REFUSALS: &str = r#"
import json, sys
import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as fl
from flightsql import FlightSQLClient
import flightsql.dbapi as fsql

host, port = sys.argv[1].split(":")
password, outside, lake = sys.argv[2], sys.argv[3], sys.argv[4]
out = {"refused": {}, "fsql_refused": {}}

conn = adbc.connect("grpc://" + sys.argv[1], db_kwargs={"username": "ana", "password": password})
cur = conn.cursor()
statements = {
    "copy": f"COPY (SELECT 1 AS x) TO '{outside}/copied.csv' STORED AS CSV",
    "copy_table": f"COPY events TO '{outside}/events.parquet'",
    "external_table": f"CREATE EXTERNAL TABLE stolen STORED AS PARQUET LOCATION '{lake}/identity_map/'",
    "view": "CREATE VIEW v AS SELECT 1",
    "table_as": "CREATE TABLE t AS SELECT * FROM events",
    "insert": "INSERT INTO events (message_id) VALUES ('x')",
    "delete": "DELETE FROM events",
    "drop": "DROP TABLE events",
    "set": "SET datafusion.execution.batch_size = 1",
    "multi": "SELECT 1; DROP TABLE events",
    "explain_copy": f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{outside}/explained.csv'",
    "edges_copy": f"SELECT * FROM connected_components('COPY (SELECT 1, 2) TO ''{outside}/cc.csv''')",
    "url_table": f"SELECT * FROM '{lake}/identity_map/'",
}
for name, sql in statements.items():
    try:
        cur.execute(sql)
        cur.fetchall()
        out["refused"][name] = "accepted"
    except Exception as e:
        out["refused"][name] = str(e)

# Reads still work.
cur.execute("SELECT count(*) AS n FROM events")
out["select"] = cur.fetchone()[0]
cur.execute("EXPLAIN SELECT count(*) FROM events")
out["explain_rows"] = len(cur.fetchall())
cur.execute("SHOW TABLES")
out["show_tables"] = len(cur.fetchall()) > 0

# Placeholders through ADBC's DB-API (qmark) and $n.
def adbc_rows(sql, params):
    cur.execute(sql, params)
    return [list(r) for r in cur.fetchall()]
one_q = "SELECT count(*) AS n FROM events WHERE type = ?"
one_n = "SELECT count(*) AS n FROM events WHERE type = $1"
two_q = "SELECT count(*) AS n FROM events WHERE type = ? AND event = ? AND '?' = '?' -- ?"
two_n = "SELECT count(*) AS n FROM events WHERE type = $1 AND event = $2 AND '?' = '?' -- ?"
out["adbc"] = {
    "one_q": adbc_rows(one_q, ("track",)),
    "one_n": adbc_rows(one_n, ("track",)),
    "two_q": adbc_rows(two_q, ("track", "Order Completed")),
    "two_n": adbc_rows(two_n, ("track", "Order Completed")),
}
out["parameter_schema"] = [f.name for f in cur.adbc_prepare(two_q)]
conn.close()

# flightsql-dbapi: its parameters arrive as dense unions.
client = FlightSQLClient(host=host, port=int(port), user="ana", password=password, insecure=True)
fconn = fsql.connect(client)
fcur = fconn.cursor()
def fsql_rows(sql, params=None):
    fcur.execute(sql, params)
    return [list(r) for r in fcur.fetchall()]
out["fsql"] = {
    "one_q": fsql_rows(one_q, ["track"]),
    "one_n": fsql_rows(one_n, ["track"]),
    "two_q": fsql_rows(two_q, ["track", "Order Completed"]),
    "two_n": fsql_rows(two_n, ["track", "Order Completed"]),
    "plain": fsql_rows("SELECT count(*) AS n FROM events WHERE type = 'track'"),
}
for name in ("copy", "view", "insert"):
    try:
        fsql_rows(statements[name])
        out["fsql_refused"][name] = "accepted"
    except Exception as e:
        out["fsql_refused"][name] = str(e)
# An update command (DB-API executeupdate path) is refused too.
try:
    client.execute_update("INSERT INTO events (message_id) VALUES ('y')")
    out["fsql_refused"]["update"] = "accepted"
except Exception as e:
    out["fsql_refused"]["update"] = str(e)

# pyarrow.flight by hand: a raw CommandStatementQuery with COPY.
raw = fl.FlightClient("grpc://" + sys.argv[1])
options = fl.FlightCallOptions(headers=[raw.authenticate_basic_token("ana", password)])
query = fl.FlightDescriptor.for_command(any_command("CommandStatementQuery", [(1, statements["copy"].encode())]))
try:
    raw.get_flight_info(query, options)
    out["raw_copy"] = "accepted"
except fl.FlightError as e:
    out["raw_copy"] = type(e).__name__ + ": " + str(e)
# The audit log is the admins'.
aconn = adbc.connect("grpc://" + sys.argv[1], db_kwargs={"username": "ana", "password": password})
try:
    c = aconn.cursor()
    c.execute("SELECT count(*) FROM audit_log")
    out["analyst_audit"] = "accepted"
except Exception as e:
    out["analyst_audit"] = str(e)
objects = aconn.adbc_get_objects(depth="tables").read_all().to_pylist()
out["analyst_tables"] = sorted(t["table_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"])
aconn.close()
with adbc.connect("grpc://" + sys.argv[1], db_kwargs={"username": "root", "password": password}) as root:
    c = root.cursor()
    c.execute("SELECT count(*) FROM audit_log")
    out["admin_audit"] = c.fetchone()[0]
print(json.dumps(out))
"#;

#[test]
fn the_sql_api_only_reads_and_takes_standard_placeholders() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import(&[
        data.join("events-web.ndjson").to_str().unwrap(),
        "--source",
        "web",
    ]);
    ok(&mut p.cmd(&["stitch"]));
    added(&p, &["ana", "--role", "analyst"], PASSWORD);
    added(&p, &["root", "--role", "admin", "--pii"], PASSWORD);
    // No scheduled refreshes or refits: the server itself writes nothing but the audit.
    let config = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("schedule = true", "schedule = false")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let before_project = files(p.path());
    let (running, grpc, _) = serve(&p);
    let v = run(
        &format!("{}{REFUSALS}", crate::common::ANY_COMMAND),
        &[
            &grpc,
            PASSWORD,
            outside.path().to_str().unwrap(),
            p.lake().to_str().unwrap(),
        ],
    );
    stop(running);

    // Every class refused, naming the statement, and nothing written anywhere.
    let refused = v["refused"].as_object().unwrap();
    for (name, kind) in [
        ("copy", "COPY TO is not allowed"),
        ("copy_table", "COPY TO is not allowed"),
        ("external_table", "CREATE EXTERNAL TABLE is not allowed"),
        ("view", "CREATE VIEW is not allowed"),
        ("table_as", "CREATE TABLE is not allowed"),
        ("insert", "INSERT is not allowed"),
        ("delete", "DELETE is not allowed"),
        ("drop", "DROP is not allowed"),
        ("set", "SET is not allowed"),
        ("multi", "2 statements"),
        ("explain_copy", "EXPLAIN COPY TO is not allowed"),
        ("edges_copy", "COPY TO is not allowed"),
        ("url_table", "identity_map"),
    ] {
        let message = refused[name].as_str().unwrap();
        assert!(message.contains(kind), "{name}: {message}");
        // Planning refusals are PERMISSION_DENIED; a bad table name or an edge query
        // refused inside a table function are errors of the statement.
        if !matches!(name, "multi" | "url_table" | "edges_copy") {
            assert!(
                message.contains("UNAUTHORIZED") && message.contains("PermissionDenied"),
                "{name}: {message}"
            );
        }
    }
    for (name, message) in v["fsql_refused"].as_object().unwrap() {
        let message = message.as_str().unwrap();
        assert!(message.contains("not allowed"), "{name}: {message}");
    }
    let raw = v["raw_copy"].as_str().unwrap();
    assert!(
        raw.starts_with("FlightUnauthorizedError") && raw.contains("COPY TO is not allowed"),
        "{raw}"
    );
    assert_eq!(v["parameter_schema"], serde_json::json!(["$1", "$2"]));
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "no file created outside the project"
    );
    let after_project = files(p.path());
    let changed: Vec<&PathBuf> = after_project
        .iter()
        .filter(|(f, m)| before_project.get(*f) != Some(m))
        .map(|(f, _)| f)
        .chain(
            before_project
                .keys()
                .filter(|f| !after_project.contains_key(*f)),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "no file of the project or the lake created or changed (but the audit log): {changed:?}"
    );

    // Reads work; ? and $n give the same rows, through both DB-API drivers.
    assert_eq!(v["select"], p.count("SELECT count(*) AS n FROM events"));
    assert!(v["explain_rows"].as_i64().unwrap() >= 1);
    assert_eq!(v["show_tables"], true);
    let tracks = p.count("SELECT count(*) AS n FROM events WHERE type = 'track'");
    let orders = p.count(
        "SELECT count(*) AS n FROM events WHERE type = 'track' AND event = 'Order Completed'",
    );
    assert!(orders > 0 && tracks > orders);
    for driver in ["adbc", "fsql"] {
        let r = &v[driver];
        assert_eq!(r["one_q"], serde_json::json!([[tracks]]), "{driver}: {r}");
        assert_eq!(r["one_n"], r["one_q"], "{driver}");
        assert_eq!(r["two_q"], serde_json::json!([[orders]]), "{driver}: {r}");
        assert_eq!(r["two_n"], r["two_q"], "{driver}");
    }
    assert_eq!(v["fsql"]["plain"], serde_json::json!([[tracks]]));

    // The audit log is the admins' alone: hidden from the analyst's SQL and metadata.
    assert!(
        v["analyst_audit"].as_str().unwrap().contains("audit_log"),
        "{v}"
    );
    let tables = v["analyst_tables"].as_array().unwrap();
    assert!(tables.iter().all(|t| t != "audit_log") && tables.iter().any(|t| t == "events"));
    assert!(v["admin_audit"].as_i64().unwrap() > 0);
    let refusals = p.count(
        "SELECT count(*) AS n FROM audit_log WHERE \"user\" = 'ana' AND status = 'permission_denied' AND detail LIKE '%is not allowed%'",
    );
    assert!(refusals >= 10, "{refusals} refusals audited");
}

/// Sets `[server]` keys of the project's `tessera.toml` (each written by the
/// template).
fn set_server(p: &TestProject, settings: &[(&str, &str)]) {
    let path = p.path().join("tessera.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (key, value) in settings {
        let start = text
            .find(&format!("\n{key} = "))
            .or_else(|| text.find(&format!("\n# {key} = ")))
            .unwrap_or_else(|| panic!("{key} in the template"))
            + 1;
        let end = start + text[start..].find('\n').unwrap();
        text.replace_range(start..end, &format!("{key} = {value}"));
    }
    std::fs::write(&path, text).unwrap();
}

/// Peak resident memory of a process (Linux `VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

const LIMITS: &str = r#"
import json, sys, threading, time, urllib.request, base64
import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as fl

grpc, http, password, write_key = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
out = {}

def connect():
    return adbc.connect("grpc://" + grpc, db_kwargs={"username": "ana", "password": password})

def metric(name):
    text = urllib.request.urlopen(f"http://{http}/metrics").read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " ") or l.startswith(name + "{"))

def outcome(name):
    text = urllib.request.urlopen(f"http://{http}/metrics").read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith('tessera_queries_total{outcome="' + name + '"}'))

def wait_for(what, check):
    for _ in range(500):
        if check():
            return True
        time.sleep(0.02)
    raise AssertionError(what)

def attempt(sql):
    try:
        with connect() as c:
            cur = c.cursor()
            cur.execute(sql)
            return {"rows": cur.fetch_arrow_table().num_rows}
    except Exception as e:
        return {"error": str(e)}

# A sort twice as large as the memory pool completes by spilling.
with connect() as c:
    cur = c.cursor()
    cur.execute("SELECT v, v % 1000 AS k FROM (SELECT value AS v FROM generate_series(1, 4000000)) ORDER BY k, v DESC")
    t = cur.fetch_arrow_table()
    out["sorted_rows"] = t.num_rows
    out["sorted_first"] = t.column(0)[0].as_py()
# A join that cannot spill fails, naming the limit.
out["join"] = attempt("SELECT count(*) FROM generate_series(1, 4000000) AS a JOIN generate_series(1, 4000000) AS b ON a.value = b.value")
# The failed plan is dropped on the query runtime just after its error reached the
# client: give it a moment before reading what is still reserved.
for _ in range(250):
    if metric("tessera_query_memory_bytes") == 0:
        break
    time.sleep(0.02)
out["after_memory"] = metric("tessera_query_memory_bytes")

# A query past the time limit; while it burns CPU, a second query waits for the one
# slot, then is refused (asked first, while most of the 4 s remain), and the collector
# keeps acknowledging.
slow = {}
def run_slow():
    slow.update(attempt("SELECT count(*) FROM generate_series(1, 1000000000000)"))
thread = threading.Thread(target=run_slow)
thread.start()
wait_for("the slow query runs", lambda: metric("tessera_queries_running") == 1)
out["busy"] = attempt("SELECT 1")
acks = []
for i in range(20):
    body = json.dumps({"batch": [{"type": "track", "event": "During Query", "userId": f"load-{i}", "messageId": f"during-{i}"}]}).encode()
    req = urllib.request.Request(f"http://{http}/v1/batch", data=body, headers={"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode((write_key + ":").encode()).decode()})
    acks.append(urllib.request.urlopen(req).status)
out["acks_during_query"] = acks
thread.join()
out["slow"] = slow
out["after_timeout"] = attempt("SELECT 1")

# A client that goes away cancels its query.
raw = fl.FlightClient("grpc://" + grpc)
options = fl.FlightCallOptions(headers=[raw.authenticate_basic_token("ana", password)])
query = fl.FlightDescriptor.for_command(any_command("CommandStatementQuery", [(1, b"SELECT value FROM generate_series(1, 1000000000000)")]))
info = raw.get_flight_info(query, options)
reader = raw.do_get(info.endpoints[0].ticket, options)
reader.read_chunk()
cancelled_before = outcome("cancelled")
reader.cancel()
raw.close()
wait_for("the abandoned query stops", lambda: metric("tessera_queries_running") == 0)
out["cancelled"] = outcome("cancelled") - cancelled_before

# A statement is planned once, for its FlightInfo; the DoGet runs that plan. The same
# ticket redeemed again is planned again (and gives the same rows).
raw = fl.FlightClient("grpc://" + grpc)
options = fl.FlightCallOptions(headers=[raw.authenticate_basic_token("ana", password)])
planned = lambda: metric("tessera_queries_planned_total")
before = planned()
query = fl.FlightDescriptor.for_command(any_command("CommandStatementQuery", [(1, b"SELECT value FROM generate_series(1, 1000)")]))
info = raw.get_flight_info(query, options)
first = raw.do_get(info.endpoints[0].ticket, options).read_all().num_rows
once = planned() - before
again = raw.do_get(info.endpoints[0].ticket, options).read_all().num_rows
out["plans"] = {"rows": [first, again], "first": once, "both": planned() - before}
raw.close()
out["outcomes"] = {k: outcome(k) for k in ("finished", "timed_out", "out_of_memory", "refused_busy", "cancelled")}
print(json.dumps(out))
"#;

#[test]
fn queries_are_bounded_in_memory_time_and_number() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import(&[
        data.join("events-web.ndjson").to_str().unwrap(),
        "--source",
        "web",
    ]);
    added(&p, &["ana", "--role", "analyst"], PASSWORD);
    set_server(
        &p,
        &[
            ("query_memory", "\"32MiB\""),
            ("query_timeout", "\"4s\""),
            ("max_concurrent_queries", "1"),
            ("query_queue_timeout", "\"1s\""),
            ("spill_dir", "\"spill\""),
        ],
    );
    let config = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("schedule = true", "schedule = false")).unwrap();
    let toml = std::fs::read_to_string(p.path().join("tessera.toml")).unwrap();
    let key = toml
        .lines()
        .find_map(|l| l.strip_prefix("write_key = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let events_before = p.count("SELECT count(*) AS n FROM events");
    let (running, grpc, http) = serve(&p);
    let v = run(
        &format!("{}{LIMITS}", crate::common::ANY_COMMAND),
        &[&grpc, &http, PASSWORD, &key],
    );
    let peak = peak_rss(running.0.id());
    stop(running);

    assert_eq!(v["sorted_rows"], 4_000_000, "{v}");
    assert_eq!(v["sorted_first"], 4_000_000, "k = 0 first, v descending");
    let join = v["join"]["error"].as_str().unwrap();
    assert!(
        join.contains("(ResourceExhausted") && join.contains("query_memory = 32 MiB"),
        "{join}"
    );
    assert_eq!(v["after_memory"], 0.0, "every reservation released");
    let slow = v["slow"]["error"].as_str().unwrap();
    assert!(
        slow.contains("(DeadlineExceeded") && slow.contains("query_timeout = 4 s"),
        "{slow}"
    );
    let busy = v["busy"]["error"].as_str().unwrap();
    assert!(
        busy.contains("(ResourceExhausted") && busy.contains("max_concurrent_queries"),
        "{busy}"
    );
    assert_eq!(v["after_timeout"]["rows"], 1, "the slot is free again: {v}");
    assert_eq!(v["acks_during_query"], serde_json::json!(vec![200; 20]));
    assert_eq!(v["cancelled"], 1.0, "{v}");
    assert_eq!(
        v["plans"],
        serde_json::json!({"rows": [1000, 1000], "first": 1.0, "both": 2.0}),
        "planned at GetFlightInfo only; a second DoGet plans again"
    );
    let o = &v["outcomes"];
    assert!(
        o["timed_out"] == 1.0 && o["out_of_memory"] == 1.0 && o["refused_busy"] == 1.0,
        "{o}"
    );
    // Spilled to the configured folder, which is left empty.
    let spill = p.path().join("spill");
    assert!(spill.is_dir());
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "spill files removed"
    );
    // The server's peak memory stays within the pool plus the server's own needs (the
    // collector, the profile index, Flight's buffers): 32 MiB + 480 MiB.
    assert!(
        peak < (32 + 480) << 20,
        "peak resident memory {} MiB",
        peak >> 20
    );
    // What was acknowledged during the heavy query is in the lake.
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE event = 'During Query'"),
        20
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events"),
        events_before + 20
    );
}

const ACCESS: &str = r#"
import subprocess, time
target, password, crm_token, temp_token, tessera, project, inside, outside = sys.argv[2:10]
import adbc_driver_flightsql.dbapi as adbc

def sql(user, query):
    with adbc.connect("grpc://" + target, db_kwargs={"username": user, "password": password}) as c:
        cur = c.cursor()
        cur.execute(query)
        return [list(r) for r in cur.fetchall()]

def sql_error(user, query):
    try:
        sql(user, query)
        return "accepted"
    except Exception as e:
        return str(e)

# A row-filtered analyst over Flight SQL.
counts = "SELECT (SELECT count(*) FROM profiles) AS p, (SELECT count(*) FROM identity_map) AS i, (SELECT count(*) FROM events) AS e, (SELECT count(*) FROM profile_events) AS pe, (SELECT count(*) FROM audience_membership) AS m, (SELECT count(*) FROM profiles WHERE json_get_str(traits, 'city') <> 'Springfield') AS others"
out["filtered_counts"] = sql("springfield", counts)[0]
out["filtered_segments"] = sql("springfield", "SELECT count(*) FROM segment('high_value')")
out["filtered_hidden"] = sql_error("springfield", "SELECT count(*) FROM segment_refreshes")
out["filtered_in_segment"] = sql("springfield", "SELECT count(*) FROM profiles WHERE in_segment(profile_id, 'high_value')")[0][0]
out["filtered_outside"] = sql("springfield", f"SELECT count(*) FROM identity_map WHERE id_value = '{outside}'")[0][0]

channel = grpc.insecure_channel(target)
auth = auth_pb2_grpc.AuthServiceStub(channel)
profiles = profile_pb2_grpc.ProfileServiceStub(channel)
audiences = audience_pb2_grpc.AudienceServiceStub(channel)
crm = [("authorization", "Bearer " + crm_token)]
def get(v, md):
    return profiles.GetProfile(profile_pb2.GetProfileRequest(identifier=profile_pb2.Identifier(type="user_id", value=v)), metadata=md)
call("crm_inside", lambda: get(inside, crm))
call("crm_outside", lambda: get(outside, crm))
call("crm_batch", lambda: profiles.BatchGetProfiles(profile_pb2.BatchGetProfilesRequest(identifiers=[
    profile_pb2.Identifier(type="user_id", value=inside), profile_pb2.Identifier(type="user_id", value=outside)]), metadata=crm))
call("crm_segments", lambda: audiences.ListSegments(audience_pb2.ListSegmentsRequest(), metadata=crm))
call("crm_members", lambda: sum(len(c.changes) for c in audiences.StreamAudience(audience_pb2.StreamAudienceRequest(segment="high_value", since_version=0), metadata=crm)))
call("crm_check_outside", lambda: audiences.CheckMembership(audience_pb2.CheckMembershipRequest(segment="high_value", identifier=profile_pb2.Identifier(type="user_id", value=outside)), metadata=crm))

# Revocation, with the server running: the next call is refused.
temp = [("authorization", "Bearer " + temp_token)]
call("temp_before", lambda: get(inside, temp))
subprocess.run([tessera, "--project", project, "token", "revoke", "temp"], check=True, capture_output=True)
def refused(fn):
    for _ in range(200):
        try:
            fn()
        except grpc.RpcError as e:
            return e.code().name
        time.sleep(0.05)
    return "still accepted"
out["temp_after"] = refused(lambda: get(inside, temp))
ana = [("authorization", "Bearer " + auth.Login(auth_pb2.LoginRequest(user="ana", password=password)).token)]
call("ana_before", lambda: get(inside, ana))
subprocess.run([tessera, "--project", project, "user", "disable", "ana"], check=True, capture_output=True)
out["ana_after"] = refused(lambda: get(inside, ana))
call("ana_login", lambda: auth.Login(auth_pb2.LoginRequest(user="ana", password=password)))
out["ana_flight"] = sql_error("ana", "SELECT 1")

# Guessing a password: slowed down, even for the right one, then allowed again.
attempts = []
for pw in ["guess-1", "guess-2", "guess-3", password]:
    try:
        auth.Login(auth_pb2.LoginRequest(user="root", password=pw))
        attempts.append("OK")
    except grpc.RpcError as e:
        attempts.append(e.code().name + ": " + e.details())
out["attempts"] = attempts
out["flight_throttled"] = sql_error("root", "SELECT 1")
time.sleep(1.2)
call("after_wait", lambda: auth.Login(auth_pb2.LoginRequest(user="root", password=password)).role)
print(json.dumps(out))
"#;

#[test]
fn row_filters_revocation_and_throttled_sign_in() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import(&[
        data.join("events-web.ndjson").to_str().unwrap(),
        "--source",
        "web",
    ]);
    ok(&mut p.cmd(&["stitch"]));
    ok(&mut p.cmd(&["segments", "refresh"]));
    let filter = "json_get_str(traits, 'city') = 'Springfield'";
    added(&p, &["root", "--role", "admin", "--pii"], PASSWORD);
    added(&p, &["ana", "--role", "analyst"], PASSWORD);
    added(
        &p,
        &["springfield", "--role", "analyst", "--rows", filter],
        PASSWORD,
    );
    let token = |args: &[&str]| {
        let mut all = vec!["token", "add"];
        all.extend_from_slice(args);
        let out = ok(&mut p.cmd(&all));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let crm = token(&["crm", "--role", "marketer", "--rows", filter]);
    let temp = token(&["temp", "--role", "marketer"]);
    let listed = String::from_utf8_lossy(&ok(&mut p.cmd(&["user", "list"])).stdout).into_owned();
    assert!(listed.contains(&format!("rows: {filter}")), "{listed}");

    let admitted = format!("SELECT profile_id FROM profiles WHERE {filter}");
    let one = |q: &str| p.sql(q)[0]["user_id"].as_str().unwrap().to_owned();
    let inside = one(&format!(
        "SELECT user_id FROM profiles WHERE {filter} AND user_id IS NOT NULL ORDER BY user_id LIMIT 1"
    ));
    let outside = one(&format!(
        "SELECT user_id FROM profiles WHERE NOT ({filter}) AND user_id IS NOT NULL AND profile_id IN (SELECT profile_id FROM audience_membership WHERE segment = 'high_value') ORDER BY user_id LIMIT 1"
    ));

    let (running, grpc, _) = serve(&p);
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let script = format!("{}{ACCESS}", crate::grpc::PRELUDE);
    let v = run(
        &script,
        &[
            proto,
            &grpc,
            PASSWORD,
            &crm,
            &temp,
            env!("CARGO_BIN_EXE_tessera"),
            p.path().to_str().unwrap(),
            &inside,
            &outside,
        ],
    );
    stop(running);

    // Flight SQL: only the admitted profiles and their rows, in every table and view.
    let n = |q: &str| p.count(q);
    let expected = serde_json::json!([
        n(&format!("SELECT count(*) AS n FROM ({admitted})")),
        n(&format!(
            "SELECT count(*) AS n FROM identity_map WHERE profile_id IN ({admitted})"
        )),
        n(&format!(
            "SELECT count(*) AS n FROM profile_events WHERE profile_id IN ({admitted})"
        )),
        n(&format!(
            "SELECT count(*) AS n FROM profile_events WHERE profile_id IN ({admitted})"
        )),
        n(&format!(
            "SELECT count(*) AS n FROM audience_membership WHERE profile_id IN ({admitted})"
        )),
        0
    ]);
    assert_eq!(v["filtered_counts"], expected, "{v}");
    let all_profiles = n("SELECT count(*) AS n FROM profiles");
    assert!(expected[0].as_i64().unwrap() > 0 && expected[0].as_i64().unwrap() < all_profiles);
    let members = n(&format!(
        "SELECT count(*) AS n FROM audience_membership WHERE segment = 'high_value' AND profile_id IN ({admitted})"
    ));
    assert!(members > 0);
    assert_eq!(v["filtered_segments"], serde_json::json!([[members]]));
    assert_eq!(v["filtered_in_segment"], members);
    assert_eq!(
        v["filtered_outside"], 0,
        "another person's identifier is not there"
    );
    assert!(
        v["filtered_hidden"]
            .as_str()
            .unwrap()
            .contains("segment_refreshes"),
        "{v}"
    );

    // tessera.v1: NOT_FOUND outside the rows, sizes over the caller's rows only.
    assert_eq!(
        v["crm_inside"]["identifier"]["value"],
        inside.as_str(),
        "{v}"
    );
    assert_eq!(v["crm_outside"]["code"], "NOT_FOUND", "{v}");
    let batch = v["crm_batch"]["results"].as_array().unwrap();
    assert!(batch[0].get("profile").is_some() && batch[1].get("profile").is_none());
    let sizes = v["crm_segments"]["segments"].as_array().unwrap();
    let high = sizes.iter().find(|s| s["name"] == "high_value").unwrap();
    assert_eq!(high["members"], members.to_string(), "{high}");
    assert_eq!(v["crm_members"], members);
    assert!(
        v["crm_check_outside"].get("member").is_none(),
        "{}",
        v["crm_check_outside"]
    );

    // Revoked and disabled: refused on the next call; sign-in says why.
    assert!(v["temp_before"].get("profile").is_some(), "{v}");
    assert_eq!(v["temp_after"], "UNAUTHENTICATED");
    assert!(v["ana_before"].get("profile").is_some());
    assert_eq!(v["ana_after"], "UNAUTHENTICATED");
    assert_eq!(v["ana_login"]["code"], "UNAUTHENTICATED");
    assert!(
        v["ana_login"]["message"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    assert!(
        v["ana_flight"].as_str().unwrap().contains("disabled"),
        "{v}"
    );
    let toml = std::fs::read_to_string(p.path().join("tessera.toml")).unwrap();
    assert!(!toml.contains("[tokens.temp]") && toml.contains("disabled = true"));

    // Guessing: three failures, then even the right password waits, then works.
    let attempts: Vec<&str> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        attempts[..3]
            .iter()
            .all(|a| a.starts_with("UNAUTHENTICATED")),
        "{attempts:?}"
    );
    assert!(
        attempts[3].starts_with("RESOURCE_EXHAUSTED") && attempts[3].contains("try again in"),
        "{attempts:?}"
    );
    assert!(
        v["flight_throttled"]
            .as_str()
            .unwrap()
            .contains("try again in"),
        "{v}"
    );
    assert_eq!(v["after_wait"], "admin", "{v}");
    assert!(
        p.count(
            "SELECT count(*) AS n FROM audit_log WHERE \"user\" = 'root' AND status = 'throttled'"
        ) >= 2,
        "throttled attempts are audited"
    );
    assert!(
        p.count(
            "SELECT count(*) AS n FROM audit_log WHERE \"user\" = 'root' AND action = 'login' AND status = 'unauthenticated'"
        ) >= 3
    );
}
