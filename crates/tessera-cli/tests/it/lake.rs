//! The lake's layout as a maintained property, end to end: `tessera optimize` packs the
//! small files of every table and changes no query result; the incremental readers
//! (stitch, segment refreshes, predict's recorded inputs) take it for no new data, and
//! events appended before a compaction are still found by the next incremental stitch;
//! `tessera vacuum` keeps a week of time travel, refuses less unless forced, and after it
//! Python `deltalake` and DuckDB still read every table while a vacuumed version fails
//! by name. A compaction running while the collector, an import and a stitch write loses
//! and duplicates nothing.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{TestProject, fails, ok, run_python, sample_data, serve, stop};
use crate::identity::split_at;

/// `tessera ARGS...` printing JSON, parsed.
pub(crate) fn json(p: &TestProject, args: &[&str]) -> Value {
    let out = ok(&mut p.cmd(args));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every result the compaction must not change.
fn results(p: &TestProject) -> Value {
    let q = |sql: &str| Value::Array(p.sql(sql).into_iter().collect());
    serde_json::json!({
        "events": q("SELECT count(*) AS n, count(DISTINCT message_id) AS ids, min(timestamp) AS first, max(timestamp) AS last FROM events"),
        "by_day": q("SELECT event_date, count(*) AS n FROM events GROUP BY event_date ORDER BY event_date"),
        "profiles": q("SELECT count(*) AS n, count(DISTINCT profile_id) AS ids FROM profiles"),
        "identity_map": q("SELECT count(*) AS n, count(DISTINCT profile_id) AS p FROM identity_map"),
        "members": q("SELECT segment, count(*) AS n FROM audience_membership GROUP BY segment ORDER BY segment"),
        "scores": q("SELECT model, score, count(*) AS n, round(sum(value), 6) AS total FROM scores GROUP BY model, score ORDER BY model, score"),
        "profile_events": q("SELECT count(*) AS n, count(profile_id) AS stitched FROM profile_events"),
    })
}

fn layouts(report: &Value) -> BTreeMap<String, (u64, u64, u64)> {
    report
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let files = |l: &Value| l["files"].as_u64().unwrap();
            (
                t["table"].as_str().unwrap().to_owned(),
                (
                    files(&t["before"]),
                    files(&t["after"]),
                    t["after"]["partitions"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

fn statuses(report: &Value) -> Vec<String> {
    report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .collect()
}

fn model_inputs(p: &TestProject) -> Vec<Value> {
    p.sql("SELECT DISTINCT CAST(inputs AS VARCHAR) AS inputs FROM model_runs ORDER BY 1")
}

#[test]
fn optimize_and_vacuum_keep_every_result_and_readers_see_no_new_data() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    let work = tempfile::tempdir().unwrap();
    let (heads, tails) = split_at(data, work.path(), "2026-09-20");
    for (file, source) in heads.iter().zip(["web", "app", "pos"]) {
        p.import(&[file, "--source", source]);
    }
    ok(&mut p.cmd(&["stitch"]));
    ok(&mut p.cmd(&["predict"]));
    ok(&mut p.cmd(&["segments", "refresh"]));
    let inputs = model_inputs(&p);
    let before = results(&p);

    // Compaction: fewer files, one per day partition of events, the same rows.
    let report = json(&p, &["optimize", "--json"]);
    let layout = layouts(&report);
    let (files_before, files_after, days) = layout["events"];
    assert!(files_before >= 2 * days, "{layout:?}");
    assert_eq!(files_after, days, "{layout:?}");
    for t in report.as_array().unwrap() {
        assert_eq!(t["before"]["rows"], t["after"]["rows"], "{t}");
    }
    assert_eq!(results(&p), before);

    // The incremental readers see no new data.
    let stitched = json(&p, &["stitch", "--json"]);
    assert_eq!(stitched["up_to_date"], true, "{stitched}");
    let refreshed = json(&p, &["segments", "refresh", "--json"]);
    assert!(
        statuses(&refreshed).iter().all(|s| s == "unchanged"),
        "{refreshed}"
    );
    ok(&mut p.cmd(&["predict"]));
    assert_eq!(
        model_inputs(&p),
        inputs,
        "predict records the same input versions"
    );
    // Optimizing again finds nothing worth rewriting.
    let again = json(&p, &["optimize", "events", "--json"]);
    assert_eq!(again[0]["version"], Value::Null, "{again}");

    // Events appended, then compacted before stitching: the incremental stitch still
    // reads exactly them, and ends where a full stitch ends.
    for (file, source) in tails.iter().zip(["web", "app", "pos"]) {
        p.import(&[file, "--source", source]);
    }
    ok(&mut p.cmd(&["optimize", "events"]));
    let stitched = json(&p, &["stitch", "--json"]);
    assert_eq!(stitched["full"], false, "{stitched}");
    assert!(stitched["event_files"].as_u64().unwrap() >= 3, "{stitched}");
    let incremental = results(&p);
    let full = json(&p, &["stitch", "--full", "--json"]);
    assert_eq!(full["full"], true);
    let after_full = results(&p);
    assert_eq!(incremental["identity_map"], after_full["identity_map"]);
    assert_eq!(incremental["profiles"], after_full["profiles"]);
    assert_eq!(incremental["profile_events"], after_full["profile_events"]);

    // Vacuum: the default retention keeps every compacted file; a shorter one is refused
    // unless forced.
    let kept = json(&p, &["vacuum", "--json"]);
    assert!(
        kept.as_array()
            .unwrap()
            .iter()
            .all(|t| t["files"].as_array().unwrap().is_empty()),
        "{kept}"
    );
    let refused = fails(&mut p.cmd(&["vacuum", "events", "--retain", "0"]));
    assert!(
        refused.contains("--force") && refused.contains("168 h"),
        "{refused}"
    );
    let unknown = fails(&mut p.cmd(&["vacuum", "evnets"]));
    assert!(unknown.contains("unknown table \"evnets\""), "{unknown}");
    let bad_order = fails(&mut p.cmd(&["optimize", "events", "--zorder", "nope"]));
    assert!(bad_order.contains("no such column"), "{bad_order}");
    let bad_size = fails(&mut p.cmd(&["optimize", "--target-size", "12 parsecs"]));
    assert!(bad_size.contains("--target-size"), "{bad_size}");

    // Time travel inside the retention works from Python `deltalake`.
    let lake = p.lake();
    let events_dir = lake.join("events");
    let travel = format!(
        r#"
import json
from deltalake import DeltaTable
dt = DeltaTable({events_dir:?})
history = dt.history()
optimized = [h["version"] for h in history if h.get("operation") == "OPTIMIZE"]
first = min(optimized) - 1
old = DeltaTable({events_dir:?}, version=first)
print(json.dumps({{"first": first, "rows": old.to_pyarrow_table().num_rows,
                   "files": len(old.file_uris())}}))
"#
    );
    let old: Value = serde_json::from_str(run_python(&travel).trim()).unwrap();
    let first = old["first"].as_u64().unwrap();
    assert_eq!(old["files"].as_u64(), Some(files_before), "{old}");

    let dry = json(
        &p,
        &[
            "vacuum",
            "events",
            "--retain",
            "0",
            "--force",
            "--dry-run",
            "--json",
        ],
    );
    let would = dry[0]["files"].as_array().unwrap().len();
    assert!(would as u64 >= files_before, "{dry}");
    assert!(dry[0]["bytes"].as_u64().unwrap() > 0, "{dry}");
    let done = json(&p, &["vacuum", "--retain", "0", "--force", "--json"]);
    let events_done = done
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "events")
        .unwrap();
    assert_eq!(
        events_done["files"].as_array().unwrap().len(),
        would,
        "{done}"
    );
    assert_eq!(results(&p)["events"], after_full["events"]);

    // Every table still reads in deltalake and DuckDB; the vacuumed version fails.
    let check = format!(
        r#"
import glob, os, site, json
import duckdb
from deltalake import DeltaTable
lake = {lake:?}
ext = glob.glob(os.path.join(site.getsitepackages()[0], "duckdb_ext/extensions/*/*/delta.duckdb_extension"))[0]
con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
con.execute(f"LOAD '{{ext}}'")
out = {{}}
for name in sorted(os.listdir(lake)):
    path = os.path.join(lake, name)
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        continue
    out[name] = [DeltaTable(path).to_pyarrow_table().num_rows,
                 con.execute(f"SELECT count(*) FROM delta_scan('{{path}}')").fetchone()[0]]
# Reading the vacuumed version, in a process of its own (a reader may abort on it).
import subprocess, sys
old = subprocess.run([sys.executable, "-c",
    "from deltalake import DeltaTable; import sys; "
    f"DeltaTable({{os.path.join(lake, 'events')!r}}, version={first}).to_pyarrow_table()"],
    capture_output=True, text=True)
gone = "read" if old.returncode == 0 else old.stderr.strip()[-300:] or f"exit {{old.returncode}}"
print(json.dumps({{"tables": out, "gone": gone}}))
"#
    );
    let read: Value = serde_json::from_str(run_python(&check).trim()).unwrap();
    let tables = read["tables"].as_object().unwrap();
    assert!(tables.len() >= 10, "{read}");
    for (name, counts) in tables {
        assert_eq!(counts[0], counts[1], "{name}: {read}");
    }
    assert_eq!(
        tables["events"][0].as_i64(),
        after_full["events"][0]["n"].as_i64(),
        "{read}"
    );
    assert_ne!(read["gone"], "read", "{read}");
}

#[test]
fn compaction_alongside_the_collector_an_import_and_a_stitch_loses_nothing() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    let config = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("optimize_every = \"10m\"", "optimize_every = \"1s\"")
        .replace("optimize_small_files = 64", "optimize_small_files = 2")
        .replace("flush_interval_ms = 2000", "flush_interval_ms = 200");
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("write_key = \""))
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    std::fs::write(&config, text).unwrap();
    p.import(&[
        data.join("events-pos.ndjson").to_str().unwrap(),
        "--source",
        "pos",
    ]);
    let imported = p.count("SELECT count(*) AS n FROM events");
    let (running, _grpc, http) = serve(&p);

    // The collector takes 40 batches of 50 events while an import and two stitches run.
    let post = format!(
        r#"
import base64, json, urllib.request, sys
http, n = {http:?}, 0
auth = "Basic " + base64.b64encode({key:?}.encode() + b":").decode()
for b in range(40):
    batch = [{{"type": "track", "messageId": f"c-{{b}}-{{i}}", "userId": f"u{{i % 7}}",
              "event": "Page Viewed", "timestamp": f"2026-10-{{1 + b % 28:02d}}T10:00:00Z"}}
             for i in range(50)]
    req = urllib.request.Request(f"http://{{http}}/v1/batch", data=json.dumps({{"batch": batch}}).encode(),
                                 headers={{"Authorization": auth, "Content-Type": "application/json"}})
    assert urllib.request.urlopen(req).status == 200
    n += len(batch)
print(n)
"#
    );
    let collector = std::thread::spawn(move || run_python(&post));
    let web = data.join("events-web.ndjson");
    p.import(&[web.to_str().unwrap(), "--source", "web-import"]);
    ok(&mut p.cmd(&["stitch"]));
    let collected: i64 = collector.join().unwrap().trim().parse().unwrap();
    ok(&mut p.cmd(&["stitch"]));
    // Let the background compaction run over what arrived.
    std::thread::sleep(std::time::Duration::from_secs(3));
    stop(running);

    let web_rows = std::fs::read_to_string(&web).unwrap().lines().count() as i64;
    let n = p.sql("SELECT count(*) AS n, count(DISTINCT message_id) AS ids FROM events");
    assert_eq!(
        n[0]["n"].as_i64(),
        Some(imported + web_rows + collected),
        "{n:?}"
    );
    assert_eq!(n[0]["ids"], n[0]["n"], "{n:?}");
    // The background compaction did run, and stitching afterwards has nothing new
    // beyond what the last stitch had not yet seen.
    let compacted = run_python(&format!(
        r#"
from deltalake import DeltaTable
dt = DeltaTable({:?})
print(sum(1 for h in dt.history() if h.get("operation") == "OPTIMIZE"))
"#,
        p.lake().join("events")
    ));
    assert!(compacted.trim().parse::<u64>().unwrap() >= 1, "{compacted}");
    let stitched = json(&p, &["stitch", "--json"]);
    let again = json(&p, &["stitch", "--json"]);
    assert_eq!(again["up_to_date"], true, "{stitched} then {again}");
    // Every event of a stitched lake is found by its profile.
    let stitched_events = p.count("SELECT count(profile_id) AS n FROM profile_events");
    let all = p.count(
        "SELECT count(*) AS n FROM events WHERE coalesce(user_id, anonymous_id) IS NOT NULL",
    );
    assert_eq!(stitched_events, all);
}
