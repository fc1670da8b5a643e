//! The walk-throughs in `examples/` work as documented.

use std::path::Path;

use crate::common::{TestProject, ok, python};

#[test]
fn mapping_example_and_python_reader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let p = TestProject::new();
    let report = p.import(&[
        "--source",
        "shop",
        "--mapping",
        root.join("mappings/orders.sql").to_str().unwrap(),
        root.join("mappings/orders.csv").to_str().unwrap(),
    ]);
    assert_eq!(report["rows_imported"].as_u64(), Some(3), "{report}");
    assert_eq!(report["files"][0]["errors"][0]["line"].as_u64(), Some(4));
    let rows = p.sql("SELECT user_id, json_get_float(properties, 'revenue') AS revenue, timestamp FROM events ORDER BY message_id");
    assert_eq!(rows[0]["user_id"], "ann.lee@example.com");
    assert_eq!(rows[2]["revenue"], 120.0);
    // 18:45 at +02:00 is 16:45 UTC.
    assert!(
        rows[2]["timestamp"].as_str().unwrap().contains("16:45"),
        "{rows:?}"
    );

    let out = ok(std::process::Command::new(python())
        .arg(root.join("python/read_lake.py"))
        .arg(p.lake()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("partitioned by ['event_date']"), "{text}");
    assert!(text.contains("shop") && text.contains("track"), "{text}");
    assert!(text.contains("tessera.operation"), "{text}");
}
