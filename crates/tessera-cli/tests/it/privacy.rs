//! Privacy end to end: `tessera privacy export` of a person equals what SQL counts for
//! them; `tessera privacy erase` takes their whole identity cluster out of every table,
//! and afterwards a byte-level scan of every object under the lake root — every
//! Parquet file present, referenced or not, decoded by pyarrow, and every log entry and
//! checkpoint — finds none of their identifiers, while every other row is unchanged and
//! the pre-erasure version no longer loads in Python `deltalake`; no commit's
//! statistics name a personal column; the unmodified Segment SDK sending events for the
//! erased person gets its 200s and stores nothing, other people's events land, and
//! after `unsuppress` new events land again. Bad input: malformed identifiers, an
//! unknown person, a re-run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{TestProject, fails, ok, run_python, sample_data, serve, stop};
use crate::lake::json;

const TABLES: &[&str] = &[
    "events",
    "identity_edges",
    "identity_map",
    "profile_merges",
    "profiles",
    "scores",
    "audience_membership",
    "audience_changes",
];

fn totals(p: &TestProject) -> BTreeMap<&'static str, i64> {
    TABLES
        .iter()
        .map(|t| (*t, p.count(&format!("SELECT count(*) AS n FROM {t}"))))
        .collect()
}

/// Occurrences of `needles` (case-insensitive) anywhere under `root`: in every column
/// of every Parquet file present, and in the bytes of every other file.
fn scan(root: &std::path::Path, needles: &[String]) -> Vec<Value> {
    let script = format!(
        r#"
import json, os, pyarrow.parquet as pq, pyarrow as pa
needles = [n.lower() for n in json.loads({needles:?})]
hits = []
for d, _, files in os.walk({root:?}):
    for f in files:
        path = os.path.join(d, f)
        texts = []
        if f.endswith(".parquet"):
            t = pq.read_table(path)
            for name in t.column_names:
                col = t.column(name)
                try:
                    texts.extend(str(v) for v in col.to_pylist() if v is not None)
                except Exception as e:
                    texts.append(repr(e))
        elif f.endswith(".gz"):
            import gzip
            texts.append(gzip.decompress(open(path, "rb").read()).decode("utf-8", "replace"))
        else:
            texts.append(open(path, "rb").read().decode("utf-8", "replace"))
        blob = "\n".join(texts).lower()
        for n in needles:
            if n in blob:
                hits.append({{"file": path[len({root:?}):], "needle": n}})
print(json.dumps(hits))
"#,
        needles = serde_json::to_string(needles).unwrap(),
        root = root.to_str().unwrap(),
    );
    serde_json::from_str(run_python(&script).trim()).unwrap()
}

/// Keys of `minValues`/`maxValues` in every commit and checkpoint that name personal
/// columns.
fn personal_stats(root: &std::path::Path) -> Vec<Value> {
    let script = format!(
        r#"
import json, os, pyarrow.parquet as pq
personal = {{"user_id", "anonymous_id", "previous_id", "email", "phone", "id_value", "a_value",
            "b_value", "properties", "traits", "context", "target", "message_id",
            "profile_id", "from_profile_id", "into_profile_id"}}
found = []
def check(path, stats):
    if not stats:
        return
    s = json.loads(stats)
    for k in ("minValues", "maxValues"):
        for c in (s.get(k) or {{}}):
            if c in personal or (c == "members" and "activation_batches" in path):
                found.append({{"file": path, "column": c}})
for d, _, files in os.walk({root:?}):
    if not d.endswith("_delta_log"):
        continue
    for f in files:
        path = os.path.join(d, f)
        if f.endswith(".json"):
            for line in open(path):
                a = json.loads(line)
                if "add" in a:
                    check(path, a["add"].get("stats"))
        elif ".checkpoint" in f and f.endswith(".parquet"):
            for row in pq.read_table(path).to_pylist():
                if row.get("add"):
                    check(path, row["add"].get("stats"))
print(json.dumps(found))
"#,
        root = root.to_str().unwrap(),
    );
    serde_json::from_str(run_python(&script).trim()).unwrap()
}

fn mine_of(p: &TestProject, table: &str, profile: &str) -> i64 {
    p.count(&format!(
        "SELECT count(*) AS n FROM {table} WHERE profile_id = '{profile}'"
    ))
}

/// A project with a write key and fast flushes, the sample's three channels stitched,
/// scored and segmented.
fn project() -> TestProject {
    let p = crate::serve::project();
    let (data, _) = sample_data();
    p.import_sample_channels(data);
    ok(&mut p.cmd(&["stitch"]));
    ok(&mut p.cmd(&["predict"]));
    ok(&mut p.cmd(&["segments", "refresh"]));
    p
}

#[test]
fn erasure_leaves_no_byte_of_a_person_and_suppresses_their_return() {
    let p = project();
    // Someone known by e-mail with several identifiers and many days of events.
    let candidates = p.sql(
        "SELECT p.profile_id, p.email, count(DISTINCT m.id_type || ':' || m.id_value) AS ids \
         FROM profiles p JOIN identity_map m ON m.profile_id = p.profile_id \
         WHERE p.email IS NOT NULL GROUP BY p.profile_id, p.email \
         HAVING count(DISTINCT m.id_type || ':' || m.id_value) >= 3 ORDER BY ids DESC, p.profile_id",
    );
    let (profile, email) = candidates
        .iter()
        .map(|c| {
            (
                c["profile_id"].as_str().unwrap().to_owned(),
                c["email"].as_str().unwrap().to_owned(),
            )
        })
        .find(|(profile, email)| {
            p.count(&format!(
                "SELECT count(DISTINCT event_date) AS n FROM profile_events WHERE profile_id = '{profile}'"
            )) >= 5
                // Not one of a household sharing a mailbox: the partner's events that
                // carry the e-mail belong to the export too, and the counts below are
                // of the person's own events.
                && p.count(&format!(
                    "SELECT count(*) AS n FROM profile_events \
                     WHERE profile_id <> '{profile}' AND lower(traits) LIKE '%{email}%'"
                )) == 0
        })
        .expect("a person with three identifiers, five days of events and a mailbox of their own");
    let typed: Vec<(String, String)> = p
        .sql(&format!(
            "SELECT id_type, id_value FROM identity_map WHERE profile_id = '{profile}' ORDER BY id_value"
        ))
        .iter()
        .map(|r| {
            (
                r["id_type"].as_str().unwrap().to_owned(),
                r["id_value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let identifiers: Vec<String> = typed.iter().map(|(_, v)| v.clone()).collect();
    // What must leave no byte behind: the person's own identifiers, not a device id
    // another person also used (their events on it stay theirs).
    let own: Vec<String> = typed
        .iter()
        .filter(|(_, v)| {
            p.count(&format!(
                "SELECT count(*) AS n FROM profile_events \
                 WHERE (user_id = '{v}' OR anonymous_id = '{v}') AND profile_id <> '{profile}'"
            )) == 0
        })
        .map(|(_, v)| v.clone())
        .chain([profile.clone()])
        .collect();
    assert!(own.contains(&email));
    assert!(identifiers.len() >= 3, "{identifiers:?}");
    assert!(identifiers.contains(&email));
    let mine = |table: &str, column: &str| {
        p.count(&format!(
            "SELECT count(*) AS n FROM {table} WHERE {column} = '{profile}'"
        ))
    };
    let my_events = mine("profile_events", "profile_id");
    assert!(my_events > 0);

    // Everyone exported as files (gzipped CSV and Parquet) with their e-mail.
    let segments = p.path().join("sql/segments");
    std::fs::write(
        segments.join("everyone.sql"),
        "SELECT profile_id FROM profiles\n",
    )
    .unwrap();
    ok(&mut p.cmd(&["segments", "refresh"]));
    let config = p.path().join("tessera.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        r#"
[destinations.csv_files]
kind = "file"
url = "exported/csv"
format = "csv"
compression = "gzip"

[destinations.parquet_files]
kind = "file"
url = "exported/parquet"

[syncs.everyone_csv]
segment = "everyone"
destination = "csv_files"
fields = "SELECT profile_id, email FROM profiles"

[syncs.everyone_parquet]
segment = "everyone"
destination = "parquet_files"
fields = "SELECT profile_id, email FROM profiles"
"#,
    );
    std::fs::write(&config, text).unwrap();
    ok(&mut p.cmd(&["activate", "run"]));
    let exported = p.path().join("exported");
    let hits = scan(&exported, std::slice::from_ref(&email));
    assert_eq!(
        hits.len(),
        2,
        "both exports hold the person before: {hits:?}"
    );

    // No commit of any table carries a personal column's min/max.
    let stats = personal_stats(&p.lake());
    assert!(stats.is_empty(), "{stats:?}");

    // Bad input.
    let e = fails(&mut p.cmd(&["privacy", "erase", "jane@example.com"]));
    assert!(e.contains("TYPE:VALUE"), "{e}");
    let e = fails(&mut p.cmd(&["privacy", "erase", "email:not-an-address"]));
    assert!(e.contains("not a valid email"), "{e}");
    let dry = json(
        &p,
        &[
            "privacy",
            "erase",
            "email:nobody-here@example.org",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(dry["unknown"][0]["value"], "nobody-here@example.org");
    assert_eq!(dry["profiles"], 0);

    // The data-subject export counts what SQL counts for the person.
    let out = tempfile::tempdir().unwrap();
    let bundle_dir = out.path().join("dsar");
    let export = json(
        &p,
        &[
            "privacy",
            "export",
            &format!("email:{}", email.to_uppercase()),
            "--out",
            bundle_dir.to_str().unwrap(),
            "--json",
        ],
    );
    let counts = &export["counts"];
    assert_eq!(counts["events"], my_events, "{export}");
    assert_eq!(counts["identity_map"], mine("identity_map", "profile_id"));
    assert_eq!(counts["profiles"], 1);
    assert_eq!(counts["scores"], mine("scores", "profile_id"));
    assert_eq!(
        counts["audience_membership"],
        mine("audience_membership", "profile_id")
    );
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(bundle_dir.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(
        bundle["tables"]["events"]["data"].as_array().unwrap().len() as i64,
        my_events
    );
    assert!(bundle_dir.join("events.parquet").exists());
    let e = fails(&mut p.cmd(&[
        "privacy",
        "export",
        &format!("email:{email}"),
        "--out",
        bundle_dir.to_str().unwrap(),
    ]));
    assert!(e.contains("not empty"), "{e}");

    // A dry run counts and changes nothing.
    let before = totals(&p);
    let dry = json(
        &p,
        &[
            "privacy",
            "erase",
            &format!("email:{email}"),
            "--dry-run",
            "--json",
        ],
    );
    let dry_events = dry["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "events")
        .unwrap()["rows"]
        .as_i64()
        .unwrap();
    assert_eq!(dry_events, my_events, "{dry}");
    assert_eq!(totals(&p), before);

    // The erasure.
    let version_before: i64 = run_python(&format!(
        "from deltalake import DeltaTable\nprint(DeltaTable({:?}).version())",
        p.lake().join("events").to_str().unwrap()
    ))
    .trim()
    .parse()
    .unwrap();
    let report = json(
        &p,
        &[
            "privacy",
            "erase",
            &format!("email:{email}"),
            "--reason",
            "customer asked",
            "--json",
        ],
    );
    assert_eq!(report["state"], "finished", "{report}");
    let rows: BTreeMap<String, i64> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_owned(),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows["events"], my_events, "{report}");
    assert_eq!(rows["profiles"], 1);
    let after = totals(&p);
    for t in TABLES {
        assert_eq!(
            after[t],
            before[t] - rows.get(*t).copied().unwrap_or(0),
            "{t}: every other row stays"
        );
    }
    assert_eq!(mine("profiles", "profile_id"), 0);
    assert_eq!(mine("identity_map", "profile_id"), 0);
    let list = own
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) AS n FROM events WHERE user_id IN ({list}) OR anonymous_id IN ({list})"
        )),
        0
    );

    // Not one byte of them under the lake root, nor in what was exported.
    let hits = scan(&p.lake(), &own);
    assert!(hits.is_empty(), "{hits:?}");
    let hits = scan(&exported, &own);
    assert!(hits.is_empty(), "{hits:?}");
    let exports = report["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 2, "{report}");
    for e in exports {
        assert!(e["files"].as_u64().unwrap() >= 1, "{e}");
        assert!(e["rows"].as_u64().unwrap() >= 1, "{e}");
    }
    // Each rewritten run's manifest still describes its parts: rows and checksums.
    let checked = run_python(&format!(
        r#"
import glob, gzip, hashlib, json, os, pyarrow.parquet as pq
bad, parts = [], 0
for m in glob.glob(os.path.join({root:?}, "**", "_manifest.json"), recursive=True):
    manifest = json.load(open(m))
    total = 0
    for part in manifest["parts"]:
        path = os.path.join(os.path.dirname(m), part["key"])
        data = open(path, "rb").read()
        if hashlib.sha256(data).hexdigest() != part["sha256"] or len(data) != part["bytes"]:
            bad.append(path)
        if path.endswith(".parquet"):
            rows = pq.read_table(path).num_rows
        else:
            rows = len(gzip.decompress(data).decode().splitlines()) - 1
        if rows != part["rows"]:
            bad.append((path, rows, part["rows"]))
        total += rows
        parts += 1
    if total != manifest["rows"]:
        bad.append((m, total, manifest["rows"]))
print(json.dumps({{"bad": bad, "parts": parts}}))
"#,
        root = exported.to_str().unwrap()
    ));
    let checked: Value = serde_json::from_str(checked.trim()).unwrap();
    assert_eq!(checked["bad"], serde_json::json!([]), "{checked}");
    assert!(checked["parts"].as_u64().unwrap() >= 2, "{checked}");
    // The version before the erasure is gone for other readers too.
    let old = run_python(&format!(
        "from deltalake import DeltaTable\n\
         try:\n    DeltaTable({:?}, version={version_before})\n    print('loaded')\n\
         except Exception as e:\n    print('refused')",
        p.lake().join("events").to_str().unwrap()
    ));
    assert_eq!(old.trim(), "refused");
    // The receipt: hashes and counts, no identifier in clear.
    let receipts = p.sql(
        "SELECT action, target, rows, detail FROM audit_log WHERE action LIKE 'privacy.%' ORDER BY at",
    );
    assert_eq!(receipts.len(), 2, "{receipts:?}");
    assert_eq!(receipts[1]["action"], "privacy.erase");
    assert_eq!(receipts[1]["target"], report["request_id"]);
    let listed = json(&p, &["privacy", "list", "--json"]);
    let kinds: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, vec![("export", "finished"), ("erase", "finished")]);

    // A re-run finds nothing left and says so.
    let again = json(
        &p,
        &["privacy", "erase", &format!("email:{email}"), "--json"],
    );
    assert_eq!(again["state"], "finished");
    assert_eq!(again["unknown"][0]["value"], email.as_str());
    assert!(
        again["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["rows"] == 0),
        "{again}"
    );
    assert_eq!(totals(&p), after);

    // A crash half-way (after events, before the identity tables): the request stays
    // `running`, and `tessera privacy resume` finishes it.
    let second = p.sql(&format!(
        "SELECT profile_id, email FROM profiles WHERE email IS NOT NULL AND profile_id <> '{profile}' \
         ORDER BY profile_id LIMIT 1"
    ))
    .remove(0);
    let (second_profile, second_email) = (
        second["profile_id"].as_str().unwrap().to_owned(),
        second["email"].as_str().unwrap().to_owned(),
    );
    let second_ids: Vec<String> = p
        .sql(&format!(
            "SELECT id_value FROM identity_map m WHERE profile_id = '{second_profile}' AND NOT EXISTS \
             (SELECT 1 FROM profile_events e WHERE (e.user_id = m.id_value OR e.anonymous_id = m.id_value) \
              AND e.profile_id <> '{second_profile}')"
        ))
        .iter()
        .map(|r| r["id_value"].as_str().unwrap().to_owned())
        .chain([second_profile.clone()])
        .collect();
    let crashed = p
        .cmd(&["privacy", "erase", &format!("email:{second_email}")])
        .env("TESSERA_FAILPOINT", "erase:events")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let listed = json(&p, &["privacy", "list", "--json"]);
    assert_eq!(
        listed.as_array().unwrap().last().unwrap()["state"],
        "running",
        "{listed}"
    );
    assert!(
        mine_of(&p, "identity_map", &second_profile) > 0,
        "the crash came before the identity tables"
    );
    let resumed = json(&p, &["privacy", "resume", "--json"]);
    assert_eq!(resumed["state"], "finished", "{resumed}");
    assert_eq!(mine_of(&p, "identity_map", &second_profile), 0);
    assert_eq!(mine_of(&p, "profiles", &second_profile), 0);
    let hits = scan(&p.lake(), &second_ids);
    assert!(hits.is_empty(), "{hits:?}");

    // Suppression: the Segment SDK sending for the erased person gets 200s and stores
    // nothing; another person's events land.
    let (server, _grpc, http) = serve(&p);
    // Their device or user id, sent as what it is.
    let (id_field, id_value) = typed
        .iter()
        .find(|(t, _)| t == "user_id")
        .or_else(|| typed.iter().find(|(t, _)| t == "anonymous_id"))
        .map(|(t, v)| (t.clone(), v.clone()))
        .expect("a user or device id");
    let send = |prefix: &str| {
        let script = format!(
            r#"
import segment.analytics as seg
seg.write_key = "wk_test_0123456789"
seg.host = "http://{http}"
seg.sync_mode = True
for i in range(5):
    seg.track({id_field}="{id_value}", event="Came Back", properties={{"i": i}}, message_id=f"{prefix}-gone-{{i}}")
seg.identify(anonymous_id="anon-{prefix}", traits={{"email": "{email}"}}, message_id="{prefix}-gone-identify")
for i in range(5):
    seg.track(user_id="someone-else", event="Stayed", message_id=f"{prefix}-other-{{i}}")
print("sent")
"#
        );
        run_python(&script)
    };
    send("a");
    let landed = |pattern: &str| {
        p.count(&format!(
            "SELECT count(*) AS n FROM events WHERE message_id LIKE '{pattern}'"
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while landed("a-other-%") < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(landed("a-other-%"), 5);
    assert_eq!(landed("a-gone-%"), 0);
    let metrics = ureq_metrics(&http);
    assert!(
        metrics.contains("tessera_events_suppressed_total 6"),
        "{metrics}"
    );

    // Unsuppressed, new events land again; what was erased stays erased.
    ok(&mut p.cmd(&["privacy", "unsuppress", &format!("email:{email}")]));
    ok(&mut p.cmd(&["privacy", "unsuppress", &format!("{id_field}:{id_value}")]));
    std::thread::sleep(Duration::from_secs(3));
    send("b");
    let deadline = Instant::now() + Duration::from_secs(30);
    while landed("b-%") < 11 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(server);
    assert_eq!(landed("b-%"), 11);
    assert_eq!(landed("a-gone-%"), 0);
}

/// `GET /metrics` over plain TCP.
fn ureq_metrics(http: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

const PASSWORD: &str = "s3cret-passw0rd";

const GRPC_CLIENT: &str = r#"
import threading, time
from tessera.v1 import privacy_pb2, privacy_pb2_grpc
import segment.analytics as seg
target, http, email, other_email = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
channel = grpc.insecure_channel(target)
auth = auth_pb2_grpc.AuthServiceStub(channel)
privacy = privacy_pb2_grpc.PrivacyServiceStub(channel)

def login(user):
    return [("authorization", "Bearer " + auth.Login(auth_pb2.LoginRequest(user=user, password="s3cret-passw0rd")).token)]

dpo, ana = login("dpo"), login("ana")
call("analyst_erase", lambda: privacy.Erase(privacy_pb2.EraseRequest(subjects=["email:" + email]), metadata=ana))
call("malformed", lambda: privacy.Erase(privacy_pb2.EraseRequest(subjects=["email"]), metadata=dpo))
call("dry_run", lambda: privacy.Erase(privacy_pb2.EraseRequest(subjects=["email:" + email], dry_run=True), metadata=dpo))
call("export", lambda: privacy.Export(privacy_pb2.ExportRequest(subjects=["email:" + email]), metadata=dpo))
call("export_nobody", lambda: privacy.Export(privacy_pb2.ExportRequest(subjects=["email:nobody-at-all@example.org"]), metadata=dpo))

# Other people's events keep arriving while the erasure runs.
seg.write_key = "wk_test_0123456789"
seg.host = "http://" + http
seg.sync_mode = True
sent = []
stop = threading.Event()
def stream():
    i = 0
    while not stop.is_set():
        seg.track(user_id="bystander", event="Still Here", properties={"i": i}, message_id=f"bystander-{i}")
        sent.append(i)
        i += 1
        time.sleep(0.01)
t = threading.Thread(target=stream)
t.start()
time.sleep(0.5)
call("erase", lambda: privacy.Erase(privacy_pb2.EraseRequest(subjects=["email:" + email], reason="asked by phone"), metadata=dpo))
time.sleep(0.5)
stop.set()
t.join()
out["bystander_sent"] = len(sent)
call("list", lambda: privacy.ListRequests(privacy_pb2.ListPrivacyRequestsRequest(), metadata=dpo))
print(json.dumps(out))
"#;

#[test]
fn the_privacy_service_erases_while_the_collector_collects() {
    use crate::common::added;
    let p = project();
    added(&p, &["dpo", "--role", "privacy"], PASSWORD);
    added(&p, &["ana", "--role", "analyst"], PASSWORD);
    let email =
        p.sql("SELECT email FROM profiles WHERE email IS NOT NULL ORDER BY profile_id LIMIT 1")[0]
            ["email"]
            .as_str()
            .unwrap()
            .to_owned();
    let profile = p.sql(&format!(
        "SELECT profile_id FROM profiles WHERE email = '{email}'"
    ))[0]["profile_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let my_events = p.count(&format!(
        "SELECT count(*) AS n FROM profile_events WHERE profile_id = '{profile}'"
    ));
    let before = p.count("SELECT count(*) AS n FROM events");
    let (server, grpc, http) = serve(&p);
    let prelude = crate::grpc::PRELUDE.replace(
        r#"("auth.proto", "profile.proto", "audience.proto", "admin.proto")"#,
        r#"("auth.proto", "profile.proto", "audience.proto", "admin.proto", "privacy.proto")"#,
    );
    let v = crate::grpc::run_client_with(&prelude, GRPC_CLIENT, &[&grpc, &http, &email, "unused"]);
    assert_eq!(v["analyst_erase"]["code"], "PERMISSION_DENIED", "{v}");
    assert_eq!(v["malformed"]["code"], "INVALID_ARGUMENT", "{v}");
    assert!(
        v["malformed"]["message"]
            .as_str()
            .unwrap()
            .contains("TYPE:VALUE"),
        "{v}"
    );
    assert_eq!(v["dry_run"]["state"], "dry-run", "{v}");
    assert_eq!(
        v["export"]["counts"]["events"],
        my_events.to_string(),
        "{v}"
    );
    assert_eq!(v["export_nobody"]["code"], "FAILED_PRECONDITION", "{v}");
    assert_eq!(v["erase"]["state"], "finished", "{v}");
    let erased: i64 = v["erase"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "events")
        .unwrap()["rows"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(erased, my_events, "{v}");
    let kinds: Vec<&str> = v["list"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["export", "erase"], "{v}");
    // Every acknowledged event of the bystander landed, once.
    let sent = v["bystander_sent"].as_i64().unwrap();
    assert!(sent > 10, "{v}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let landed = || {
        p.count("SELECT count(DISTINCT message_id) AS n FROM events WHERE user_id = 'bystander'")
    };
    while landed() < sent && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(server);
    assert_eq!(landed(), sent);
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE user_id = 'bystander'"),
        sent
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events"),
        before - my_events + sent
    );
    // The audit log names the request, not the person.
    let audit = p.sql("SELECT action, target FROM audit_log WHERE action LIKE 'privacy.%'");
    assert!(!audit.is_empty());
    for row in &audit {
        assert!(!row.to_string().contains(&email), "{row}");
    }
}
