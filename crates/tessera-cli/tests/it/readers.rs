//! Every table is readable by other tools without Tessera running: Python `deltalake`
//! and DuckDB (its `delta` extension) read the row counts Tessera reports.

use crate::common::{TestProject, ok, run_python, sample_data};

#[test]
fn deltalake_and_duckdb_read_what_tessera_reports() {
    let (data, summary) = sample_data();
    let p = TestProject::new();
    p.import(&[data.join("events-web.ndjson").to_str().unwrap()]);
    p.import(&[
        "--source",
        "app",
        data.join("events-app.ndjson").to_str().unwrap(),
    ]);

    let out = ok(&mut p.cmd(&["tables", "--json"]));
    let tables: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "events")
        .expect("events in tables");
    let rows = events["rows"].as_u64().unwrap();
    assert_eq!(rows, summary.events_web + summary.events_app);
    let version = events["version"].as_u64().unwrap();

    let lake = p.lake();
    let code = format!(
        r#"
import glob, os, site, json
import duckdb
from deltalake import DeltaTable
events = os.path.join({lake:?}, "events")
dt = DeltaTable(events)
arrow = dt.to_pyarrow_table()
by_source = {{}}
for s in arrow.column("source").to_pylist():
    by_source[s] = by_source.get(s, 0) + 1
ext = glob.glob(os.path.join(site.getsitepackages()[0], "duckdb_ext/extensions/*/*/delta.duckdb_extension"))[0]
con = duckdb.connect(config={{"allow_unsigned_extensions": "true"}})
con.execute(f"LOAD '{{ext}}'")
duck = con.execute(f"SELECT count(*) FROM delta_scan('{{events}}')").fetchone()[0]
duck_orders = con.execute(f"SELECT count(*) FROM delta_scan('{{events}}') WHERE event = 'Order Completed' AND json_extract(properties, '$.revenue')::DOUBLE > 0").fetchone()[0]
print(json.dumps({{"deltalake_rows": arrow.num_rows, "deltalake_version": dt.version(), "by_source": by_source,
                   "duckdb_rows": duck, "duckdb_orders": duck_orders,
                   "partitions": dt.metadata().partition_columns,
                   "timestamp_type": str(arrow.schema.field("timestamp").type)}}))
"#
    );
    let v: serde_json::Value = serde_json::from_str(run_python(&code).trim()).unwrap();
    assert_eq!(v["deltalake_rows"].as_u64(), Some(rows), "{v}");
    assert_eq!(v["duckdb_rows"].as_u64(), Some(rows), "{v}");
    assert_eq!(v["deltalake_version"].as_u64(), Some(version));
    assert_eq!(v["by_source"]["app"].as_u64(), Some(summary.events_app));
    assert_eq!(v["by_source"]["import"].as_u64(), Some(summary.events_web));
    assert_eq!(v["partitions"], serde_json::json!(["event_date"]));
    assert!(
        v["timestamp_type"]
            .as_str()
            .unwrap()
            .starts_with("timestamp[us"),
        "{v}"
    );
    let tessera_orders = p.count(
        "SELECT count(*) AS n FROM events WHERE event = 'Order Completed' AND json_get_float(properties, 'revenue') > 0",
    );
    assert_eq!(v["duckdb_orders"].as_i64(), Some(tessera_orders));
}
