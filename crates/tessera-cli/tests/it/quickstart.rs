//! `tessera quickstart` end to end, twice (the second run is incremental).

use crate::common::{ok, tessera};

#[test]
fn quickstart_runs_and_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let out = ok(tessera()
        .args(["quickstart", "--no-serve", "--events", "3000", "--dir"])
        .arg(&qs));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Generated") && text.contains("Try next"),
        "{text}"
    );
    assert!(
        text.contains("Stitched events version") && text.contains("computed traits"),
        "{text}"
    );
    // The CRM export joins profiles through probabilistic matching.
    assert!(
        text.contains("Linking the CRM export") && text.contains("`probabilistic` edges"),
        "{text}"
    );
    let count = |q: &str| -> String {
        String::from_utf8(
            ok(tessera()
                .arg("--project")
                .arg(&qs)
                .args(["sql", "--format", "csv", q]))
            .stdout,
        )
        .unwrap()
    };
    let before = count("SELECT count(*) AS n FROM events");
    let crm = count(
        "SELECT count(*) > 0 AS linked FROM identity_map m JOIN identity_edges e \
         ON m.id_value IN (e.a_value, e.b_value) AND e.rule = 'probabilistic' WHERE m.id_type = 'crm_id'",
    );
    assert_eq!(crm, "linked\ntrue\n");
    let sources =
        count("SELECT source, count(*) > 0 AS some FROM events GROUP BY source ORDER BY source");
    assert_eq!(sources, "source,some\napp,true\npos,true\nweb,true\n");

    let out = ok(tessera()
        .args(["quickstart", "--no-serve", "--events", "3000", "--dir"])
        .arg(&qs));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("already in") && text.contains("skipped"),
        "{text}"
    );
    assert!(text.contains("Identities are up to date"), "{text}");
    assert_eq!(count("SELECT count(*) AS n FROM events"), before);
}
