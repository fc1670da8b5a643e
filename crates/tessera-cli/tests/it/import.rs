//! `tessera import`: every valid event lands, re-runs land nothing, bad rows are named.

use std::io::Write;

use crate::common::{TestProject, fails, ok, sample_data};

#[test]
fn generated_ndjson_lands_once() {
    let (data, summary) = sample_data();
    let p = TestProject::new();
    let glob = data.join("events-*.ndjson");
    let report = p.import(&[glob.to_str().unwrap()]);
    assert_eq!(
        report["rows_imported"].as_u64(),
        Some(summary.events),
        "{report}"
    );
    assert_eq!(report["rows_rejected"].as_u64(), Some(0));
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events"),
        summary.events as i64
    );
    assert_eq!(
        p.count("SELECT count(DISTINCT message_id) AS n FROM events"),
        summary.events as i64
    );

    // Running the same command again lands nothing: the files are skipped.
    let again = p.import(&[glob.to_str().unwrap()]);
    assert_eq!(again["rows_imported"].as_u64(), Some(0), "{again}");
    assert_eq!(again["files_skipped"].as_u64(), Some(3));

    // Forcing a re-read still adds nothing: every message_id is already there.
    let forced = p.import(&["--force", glob.to_str().unwrap()]);
    assert_eq!(forced["rows_imported"].as_u64(), Some(0), "{forced}");
    assert_eq!(forced["rows_duplicate"].as_u64(), Some(summary.events));
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events"),
        summary.events as i64
    );

    // Fields survive: a known event type mix and JSON properties are queryable.
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE type = 'track' AND event = 'Order Completed' AND json_get_float(properties, 'revenue') > 0"),
        summary.orders as i64
    );
    assert!(p.count("SELECT count(*) AS n FROM events WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL") > 0);
    assert!(p.count("SELECT count(*) AS n FROM events WHERE extra LIKE '%\"channel\"%'") > 0);
}

#[test]
fn a_copied_file_deduplicates_on_message_id() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    let src = data.join("events-pos.ndjson");
    let first = p.import(&["--source", "pos", src.to_str().unwrap()]);
    let n = first["rows_imported"].as_u64().unwrap();
    assert!(n > 0);
    // The same events under another name are a different file, but the same events.
    let copy = p.path().join("copy-of-pos.ndjson.gz");
    let mut gz = flate2_writer(&copy);
    gz.write_all(&std::fs::read(&src).unwrap()).unwrap();
    drop(gz);
    let second = p.import(&[copy.to_str().unwrap()]);
    assert_eq!(second["rows_imported"].as_u64(), Some(0), "{second}");
    assert_eq!(second["rows_duplicate"].as_u64(), Some(n));
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE source = 'pos'"),
        n as i64
    );
}

fn flate2_writer(path: &std::path::Path) -> impl Write {
    // A minimal gzip writer via the system `gzip`, to keep this test crate's deps small.
    struct Gz(std::process::Child);
    impl Write for Gz {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.stdin.as_mut().expect("stdin").write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Drop for Gz {
        fn drop(&mut self) {
            drop(self.0.stdin.take());
            let _ = self.0.wait();
        }
    }
    let out = std::fs::File::create(path).unwrap();
    Gz(std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .spawn()
        .expect("gzip"))
}

const MIXED: &str = r#"{"type":"track","messageId":"ok-1","userId":"u1","event":"Signed Up","timestamp":"2024-02-01T10:00:00Z"}
{"type":"track","messageId":"bad-1","event":"No Id","timestamp":"2024-02-01T10:00:00Z"}
not json at all
{"type":"purchase","messageId":"bad-3","userId":"u1"}

{"type":"identify","messageId":"ok-2","userId":"u1","traits":{"email":"A@B.io"},"timestamp":"2024-02-01T10:01:00Z"}
{"type":"track","messageId":"bad-5","userId":"u1","event":"x","timestamp":"last tuesday"}
{"type":"page","messageId":"ok-3","anonymousId":"a1","name":"Home","timestamp":"2024-02-02T09:00:00+02:00"}
"#;

#[test]
fn bad_lines_are_named_and_good_lines_land() {
    let p = TestProject::new();
    let file = p.path().join("mixed.ndjson");
    std::fs::write(&file, MIXED).unwrap();
    let report = p.import(&[file.to_str().unwrap()]);
    assert_eq!(report["rows_imported"].as_u64(), Some(3), "{report}");
    assert_eq!(report["rows_rejected"].as_u64(), Some(4));
    let errors = report["files"][0]["errors"].as_array().unwrap();
    let summary: Vec<(u64, String)> = errors
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, "missing_identity".to_owned()),
            (3, "malformed_json".to_owned()),
            (4, "unknown_type".to_owned()),
            (7, "bad_timestamp".to_owned()),
        ]
    );
    assert!(errors[2]["reason"].as_str().unwrap().contains("purchase"));

    // The human report names file and line too.
    let p2 = TestProject::new();
    let out = ok(&mut p2.cmd(&["import", file.to_str().unwrap()]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mixed.ndjson:2: event has neither"), "{text}");
    assert!(text.contains("4 rows rejected"), "{text}");
}

#[test]
fn max_errors_aborts_without_committing_the_file() {
    let p = TestProject::new();
    let good = p.path().join("good.ndjson");
    std::fs::write(
        &good,
        "{\"type\":\"track\",\"messageId\":\"g1\",\"userId\":\"u\",\"event\":\"E\"}\n",
    )
    .unwrap();
    p.import(&[good.to_str().unwrap()]);
    let file = p.path().join("mixed.ndjson");
    std::fs::write(&file, MIXED).unwrap();
    let err = fails(&mut p.cmd(&["import", "--max-errors", "2", file.to_str().unwrap()]));
    assert!(err.contains("more than --max-errors 2"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    // What was stored before is intact and nothing of the aborted file landed.
    assert_eq!(p.count("SELECT count(*) AS n FROM events"), 1);
    // With enough allowance the file lands.
    let report = p.import(&["--max-errors", "4", file.to_str().unwrap()]);
    assert_eq!(report["rows_imported"].as_u64(), Some(3));
}

#[test]
fn csv_through_a_mapping_query() {
    let p = TestProject::new();
    let csv = p.path().join("orders.csv");
    std::fs::write(
        &csv,
        "order_id,email,total,ordered_at\nA-1,Ann@Example.com,19.5,2024-03-01T10:00:00Z\nA-2,,7,2024-03-02T11:00:00Z\nA-3,bob@example.com,42.25,2024-03-03T12:00:00Z\n",
    )
    .unwrap();
    let mapping = p.path().join("orders.sql");
    std::fs::write(
        &mapping,
        "SELECT order_id AS message_id, 'track' AS type, 'Order Completed' AS event,\n       normalize_email(email) AS user_id, ordered_at AS timestamp,\n       named_struct('revenue', total, 'order_id', order_id) AS properties\nFROM input",
    )
    .unwrap();
    let report = p.import(&[
        "--source",
        "shop",
        "--mapping",
        mapping.to_str().unwrap(),
        csv.to_str().unwrap(),
    ]);
    assert_eq!(report["rows_imported"].as_u64(), Some(2), "{report}");
    // Row A-2 has no e-mail, hence no user id: CSV line 3.
    let err = &report["files"][0]["errors"][0];
    assert_eq!(err["line"].as_u64(), Some(3), "{report}");
    assert_eq!(err["code"].as_str(), Some("missing_identity"));
    let rows = p.sql("SELECT user_id, json_get_float(properties, 'revenue') AS revenue FROM events ORDER BY user_id");
    assert_eq!(rows[0]["user_id"], "ann@example.com");
    assert_eq!(rows[0]["revenue"], 19.5);

    // A mapping that is not a query, or that names an unknown column, is refused
    // before anything is written.
    let import_with = |sql: &str| {
        std::fs::write(&mapping, sql).unwrap();
        fails(&mut p.cmd(&[
            "import",
            "--force",
            "--mapping",
            mapping.to_str().unwrap(),
            csv.to_str().unwrap(),
        ]))
    };
    let err = import_with("DROP TABLE events");
    assert!(err.contains("single SELECT"), "{err}");
    let err = import_with("SELECT nope FROM input");
    assert!(err.contains("nope"), "{err}");
    assert_eq!(p.count("SELECT count(*) AS n FROM events"), 2);
}

#[test]
fn json_array_documents_and_folders() {
    let p = TestProject::new();
    let dir = p.path().join("inbox");
    std::fs::create_dir_all(dir.join("2024")).unwrap();
    std::fs::write(
        dir.join("2024/batch.json"),
        r#"[{"type":"track","messageId":"j1","userId":"u","event":"A"},{"type":"track","messageId":"j2","userId":"u"}]"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("one.jsonl"),
        "{\"type\":\"page\",\"messageId\":\"j3\",\"anonymousId\":\"a\"}\n",
    )
    .unwrap();
    std::fs::write(dir.join("_SUCCESS"), "").unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let report = p.import(&[dir.to_str().unwrap()]);
    assert_eq!(report["files"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["rows_imported"].as_u64(), Some(2));
    assert_eq!(report["rows_rejected"].as_u64(), Some(1));
    assert_eq!(
        report["files"][0]["errors"][0]["reason"].as_str().unwrap(),
        "track event without \"event\""
    );
}

#[test]
fn missing_input_and_bad_options() {
    let p = TestProject::new();
    let err = fails(&mut p.cmd(&["import", "/nonexistent/nothing-here.ndjson"]));
    assert!(
        err.contains("no input files found at /nonexistent/nothing-here.ndjson"),
        "{err}"
    );
    let err = fails(&mut p.cmd(&["import", "--format", "xml", "x"]));
    assert!(err.contains("unknown format \"xml\""), "{err}");
    let f = p.path().join("data.bin");
    std::fs::write(&f, "x").unwrap();
    let err = fails(&mut p.cmd(&["import", f.to_str().unwrap()]));
    assert!(err.contains("--format"), "{err}");
    let err = fails(&mut p.cmd(&["import", "--source", "bad name", f.to_str().unwrap()]));
    assert!(err.contains("source name"), "{err}");
    // No project here.
    let empty = tempfile::tempdir().unwrap();
    let err = fails(
        crate::common::tessera()
            .arg("--project")
            .arg(empty.path())
            .args(["import", "x.ndjson"]),
    );
    assert!(
        err.contains("no tessera.toml") && err.contains("tessera init"),
        "{err}"
    );
}

/// Events dated year 0 and 9999, one dated three days ahead, one without ids, one not
/// JSON, two good ones.
fn odd_dates(future: &str) -> String {
    format!(
        r#"{{"type":"track","messageId":"q-ok-1","userId":"u1","event":"E","timestamp":"2026-01-01T00:00:00Z"}}
{{"type":"track","messageId":"q-year0","userId":"u1","event":"E","timestamp":"0000-01-01T00:00:00Z"}}
{{"type":"track","messageId":"q-year9999","userId":"u1","event":"E","timestamp":"9999-12-31T00:00:00Z"}}
{{"type":"track","messageId":"q-future","userId":"u2","event":"E","timestamp":"{future}"}}
{{"type":"track","messageId":"q-noid","event":"E"}}
{{"type":"track",
{{"type":"identify","messageId":"q-ok-2","userId":"u2","traits":{{"email":"q@example.com"}}}}
"#
    )
}

#[test]
fn refused_rows_are_quarantined_and_replayed_once_fixed() {
    let p = TestProject::new();
    let future = chrono::Utc::now() + chrono::Duration::days(3);
    let future = future.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let file = p.path().join("odd.ndjson");
    std::fs::write(&file, odd_dates(&future)).unwrap();
    let report = p.import(&[file.to_str().unwrap()]);
    assert_eq!(report["rows_imported"], 2, "{report}");
    assert_eq!(report["files"][0]["rows_quarantined"], 5, "{report}");
    let codes = p.sql(
        "SELECT position, reason_code, source, payload IS NOT NULL AS has_payload \
         FROM quarantine ORDER BY position",
    );
    let got: Vec<(i64, &str)> = codes
        .iter()
        .map(|r| {
            (
                r["position"].as_i64().unwrap(),
                r["reason_code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "timestamp_out_of_range"),
            (3, "timestamp_out_of_range"),
            (4, "timestamp_out_of_range"),
            (5, "missing_identity"),
            (6, "malformed_json"),
        ]
    );
    assert!(
        codes
            .iter()
            .all(|r| r["has_payload"] == true && r["source"] == "import")
    );

    // Importing the file again (forced) does not quarantine its rows twice.
    p.import(&["--force", file.to_str().unwrap()]);
    assert_eq!(p.count("SELECT count(*) AS n FROM quarantine"), 5);

    // list, with a filter; a filter that is not a condition is refused.
    let out = ok(&mut p.cmd(&[
        "quarantine",
        "list",
        "--where",
        "reason_code = 'timestamp_out_of_range'",
        "--json",
    ]));
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(
        listed[0]["message"]
            .as_str()
            .unwrap()
            .contains("outside the accepted window")
    );
    for (filter, needle) in [
        ("no_such_column = 1", "no_such_column"),
        ("1 = 1; DROP TABLE events", "--where"),
    ] {
        let e = fails(&mut p.cmd(&["quarantine", "list", "--where", filter]));
        assert!(e.contains(needle), "{filter}: {e}");
    }
    assert_eq!(p.count("SELECT count(*) AS n FROM events"), 2);

    // A replay with today's rules lands nothing; widen the window and the future-dated
    // event lands, once.
    let out = ok(&mut p.cmd(&["quarantine", "replay", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["selected"].as_u64(), r["imported"].as_u64()),
        (Some(5), Some(0)),
        "{r}"
    );
    let toml = p.path().join("tessera.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("\n[events]\nmax_future = \"7d\"\n");
    std::fs::write(&toml, text).unwrap();
    let out = ok(&mut p.cmd(&["quarantine", "replay", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["imported"], 1, "{r}");
    assert_eq!(r["still_refused"], 4, "{r}");
    assert_eq!(
        p.count("SELECT count(*) AS n FROM events WHERE message_id = 'q-future'"),
        1
    );
    assert_eq!(p.count("SELECT count(*) AS n FROM quarantine"), 4);
    let out = ok(&mut p.cmd(&["quarantine", "replay", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["imported"], 0, "{r}");
    assert_eq!(p.count("SELECT count(*) AS n FROM events"), 3);

    // Year 0 and 9999 never reached events: pandas, polars and DuckDB read it whole.
    let events = p.lake().join("events");
    let code = format!(
        r#"
import glob, os, site, json
import duckdb, polars
from deltalake import DeltaTable
events = {events:?}
pdf = DeltaTable(events).to_pandas()
pl = polars.read_delta(events)
ext = glob.glob(os.path.join(site.getsitepackages()[0], "duckdb_ext/extensions/*/*/delta.duckdb_extension"))[0]
con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
con.execute(f"LOAD '{{ext}}'")
duck = con.execute(f"SELECT count(*) FROM delta_scan('{{events}}')").fetchone()[0]
print(json.dumps({{"pandas": len(pdf), "polars": pl.height, "duckdb": duck}}))
"#
    );
    let v: serde_json::Value =
        serde_json::from_str(crate::common::run_python(&code).trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"pandas": 3, "polars": 3, "duckdb": 3})
    );
}
