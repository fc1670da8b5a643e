//! `tessera sql` and `tessera tables`: formats, errors.

use crate::common::{TestProject, fails, ok};

fn project_with_events() -> TestProject {
    let p = TestProject::new();
    let f = p.path().join("e.ndjson");
    std::fs::write(
        &f,
        "{\"type\":\"identify\",\"messageId\":\"1\",\"userId\":\"u1\",\"traits\":{\"email\":\" Ann@X.io\",\"phone\":\"(415) 555-0100\"},\"timestamp\":\"2024-01-01T00:00:00Z\"}\n\
         {\"type\":\"track\",\"messageId\":\"2\",\"userId\":\"u1\",\"event\":\"Order Completed\",\"properties\":{\"revenue\":10},\"timestamp\":\"2024-01-02T00:00:00Z\"}\n",
    )
    .unwrap();
    p.import(&[f.to_str().unwrap()]);
    p
}

#[test]
fn formats() {
    let p = project_with_events();
    let q = "SELECT message_id, normalize_email(json_get_str(traits, 'email')) AS email, normalize_phone(json_get_str(traits, 'phone')) AS phone FROM events WHERE type = 'identify'";
    let table = String::from_utf8(ok(&mut p.cmd(&["sql", q])).stdout).unwrap();
    assert!(
        table.contains("ann@x.io") && table.contains("+14155550100") && table.contains("1 row(s)"),
        "{table}"
    );
    let csv = String::from_utf8(ok(&mut p.cmd(&["sql", "--format", "csv", q])).stdout).unwrap();
    assert_eq!(csv, "message_id,email,phone\n1,ann@x.io,+14155550100\n");
    let rows = p.sql(q);
    assert_eq!(rows[0]["email"], "ann@x.io");

    let out = p.path().join("out.parquet");
    ok(&mut p.cmd(&[
        "sql",
        "--format",
        "parquet",
        "--output",
        out.to_str().unwrap(),
        "SELECT * FROM events",
    ]));
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    let err = fails(&mut p.cmd(&["sql", "--format", "parquet", "SELECT 1"]));
    assert!(err.contains("--output"), "{err}");
}

#[test]
fn sql_errors_name_the_problem() {
    let p = project_with_events();
    for (q, needle) in [
        ("SELECT FROM WHERE", "SQL error"),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT no_such_column FROM events", "no_such_column"),
        ("SELECT normalize_phone('1', 'ZZ')", "unknown region"),
    ] {
        let err = fails(&mut p.cmd(&["sql", q]));
        assert!(err.contains(needle), "{q}: {err}");
    }
    // The lake is untouched by failed queries.
    assert_eq!(p.count("SELECT count(*) AS n FROM events"), 2);
}

#[test]
fn tables_lists_rows_and_versions() {
    let p = project_with_events();
    let out = String::from_utf8(ok(&mut p.cmd(&["tables"])).stdout).unwrap();
    assert!(
        out.contains("events") && out.contains("imported_files"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&ok(&mut p.cmd(&["tables", "--json"])).stdout).unwrap();
    let events = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "events")
        .unwrap();
    assert_eq!(events["rows"].as_u64(), Some(2));
    assert_eq!(events["version"].as_u64(), Some(1));
}

#[test]
fn config_errors_are_precise() {
    let p = TestProject::new();
    std::fs::write(
        p.path().join("tessera.toml"),
        "[server]\nhttp = \"localhost\"\n",
    )
    .unwrap();
    let err = fails(&mut p.cmd(&["tables"]));
    assert!(err.contains("server.http"), "{err}");
    std::fs::write(
        p.path().join("tessera.toml"),
        "[lake]\nurl = \"ftp://x/y\"\n",
    )
    .unwrap();
    let err = fails(&mut p.cmd(&["tables"]));
    assert!(err.contains("unsupported scheme"), "{err}");
}

#[test]
fn sources_get_fresh_write_keys() {
    let p = TestProject::new();
    let out = String::from_utf8(
        ok(&mut p.cmd(&["source", "add", "ios", "--description", "iPhone \"app\""])).stdout,
    )
    .unwrap();
    let key = out.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(key.starts_with("wk_") && key.len() == 35, "{out}");
    let list = String::from_utf8(ok(&mut p.cmd(&["source", "list"])).stdout).unwrap();
    assert!(
        list.contains("ios") && list.contains(&key) && list.contains("web"),
        "{list}"
    );
    let err = fails(&mut p.cmd(&["source", "add", "ios"]));
    assert!(err.contains("already exists"), "{err}");
    let err = fails(&mut p.cmd(&["source", "add", "bad name"]));
    assert!(err.contains("letters, digits"), "{err}");
    // The comments of tessera.toml survive.
    let text = std::fs::read_to_string(p.path().join("tessera.toml")).unwrap();
    assert!(text.contains("# Where the Delta tables live"), "{text}");
}

/// `tessera sql … | head`: when the reader goes away the command stops quietly.
#[test]
fn a_closed_pipe_stops_output_quietly() {
    use std::io::BufRead as _;
    let p = TestProject::new();
    let mut child = p
        .cmd(&[
            "sql",
            "--format",
            "csv",
            "SELECT value FROM generate_series(1, 5000000)",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .unwrap();
    } // the reader closes its end here
    let out = child.wait_with_output().unwrap();
    assert_eq!(first.trim(), "value");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
