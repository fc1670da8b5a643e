//! Identity resolution end to end: `tessera stitch` on generated customers, scored
//! against the generator's ground truth; incremental runs; `--full` equality; merge
//! history and `tessera profile`; bad rules and trait files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tessera_engine::{Engine, EngineConfig};
use tessera_lake::Lake;
use tessera_sample::accuracy;

use crate::common::{TestProject, fails, ok, sample_data};

fn stitch(p: &TestProject, extra: &[&str]) -> Value {
    let mut args = vec!["stitch", "--json"];
    args.extend_from_slice(extra);
    let out = ok(&mut p.cmd(&args));
    serde_json::from_slice(&out.stdout).expect("stitch --json prints JSON")
}

pub fn score(p: &TestProject, truth: &Path) -> accuracy::Accuracy {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let lake = Arc::new(Lake::new(p.lake().to_str().unwrap(), Default::default()).unwrap());
        let engine = Engine::new(lake, EngineConfig::default());
        let (map, edges) = accuracy::load_from_lake(&engine).await.unwrap();
        let truth = accuracy::read_truth(truth).unwrap();
        accuracy::evaluate(&truth, &map, &edges)
    })
}

/// Rows equal up to the last cent of rounded sums (float addition order differs
/// between parallel plans).
fn same_row(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter().all(|(k, x)| match (x, b.get(k)) {
            (Value::Number(x), Some(Value::Number(y))) => {
                (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= 0.0101
            }
            (x, y) => Some(x) == y,
        })
}

fn map_of(p: &TestProject) -> BTreeMap<(String, String), String> {
    p.sql("SELECT id_type, id_value, profile_id FROM identity_map")
        .into_iter()
        .map(|r| {
            (
                (
                    r["id_type"].as_str().unwrap().to_owned(),
                    r["id_value"].as_str().unwrap().to_owned(),
                ),
                r["profile_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Splits each event file at the same instant: lines before `cut` (a timestamp) and
/// from it on, so that a later import brings strictly newer events.
pub fn split_at(src: &Path, dir: &Path, cut: &str) -> (Vec<String>, Vec<String>) {
    let mut heads = Vec::new();
    let mut tails = Vec::new();
    for name in [
        "events-web.ndjson",
        "events-app.ndjson",
        "events-pos.ndjson",
    ] {
        let text = std::fs::read_to_string(src.join(name)).unwrap();
        let (mut head, mut tail) = (String::new(), String::new());
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let target = if v["timestamp"].as_str().unwrap() < cut {
                &mut head
            } else {
                &mut tail
            };
            target.push_str(line);
            target.push('\n');
        }
        let h = dir.join(format!("head-{name}"));
        let t = dir.join(format!("tail-{name}"));
        std::fs::write(&h, head).unwrap();
        std::fs::write(&t, tail).unwrap();
        heads.push(h.to_string_lossy().into_owned());
        tails.push(t.to_string_lossy().into_owned());
    }
    (heads, tails)
}

#[test]
fn stitching_is_accurate_incremental_and_stable() {
    let (data, summary) = sample_data();
    let p = TestProject::new();
    let work = tempfile::tempdir().unwrap();
    // The last ~10 days arrive later.
    let (heads, tails) = split_at(data, work.path(), "2026-09-20");

    for (f, s) in heads.iter().zip(["web", "app", "pos"]) {
        p.import(&[f, "--source", s]);
    }
    let first = stitch(&p, &[]);
    assert_eq!(first["full"], true, "{first}");
    assert!(first["identifiers"].as_u64().unwrap() > summary.persons);
    assert!(
        first["edges_rejected"].as_u64().unwrap() > 0,
        "shared devices and mailboxes are refused: {first}"
    );

    // Nothing new: nothing to do.
    let again = stitch(&p, &[]);
    assert_eq!(again["up_to_date"], true, "{again}");

    for (f, s) in tails.iter().zip(["web", "app", "pos"]) {
        p.import(&[f, "--source", s]);
    }
    let second = stitch(&p, &[]);
    assert_eq!(second["full"], false, "{second}");
    assert!(
        second["event_files"].as_u64().unwrap() < first["event_files"].as_u64().unwrap(),
        "an incremental run reads only the new files: {second}"
    );
    let incremental = map_of(&p);
    let profiles_query = "SELECT * EXCEPT (channels), array_to_string(channels, ',') AS channels \
                          FROM profiles ORDER BY profile_id";
    let incremental_profiles = p.sql(profiles_query);
    assert!(
        second["profiles_rebuilt"].as_u64().unwrap() < second["profiles"].as_u64().unwrap(),
        "only touched profiles are recomputed: {second}"
    );

    // Accuracy against the ground truth.
    let acc = score(&p, &data.join("truth.csv"));
    assert_eq!(acc.profiles_with_two_persons_user_ids, 0, "{acc:?}");
    assert!(acc.precision >= 0.999, "{acc:?}");
    assert!(acc.recall >= 0.99, "{acc:?}");
    assert!(acc.identifiers_scored > summary.persons, "{acc:?}");

    // A full rebuild gives the same map, ids included.
    let full = stitch(&p, &["--full"]);
    assert_eq!(full["full"], true);
    assert_eq!(map_of(&p), incremental);
    let rebuilt_profiles = p.sql(profiles_query);
    assert_eq!(rebuilt_profiles.len(), incremental_profiles.len());
    let differing: Vec<_> = rebuilt_profiles
        .iter()
        .zip(&incremental_profiles)
        .filter(|(a, b)| !same_row(a, b))
        .take(2)
        .collect();
    assert!(
        differing.is_empty(),
        "profiles built incrementally equal a rebuild: {differing:#?}"
    );
    assert_eq!(full["merges"], 0, "nothing changed, so no merge: {full}");

    // Every event maps to a profile; profiles hold computed traits.
    assert_eq!(
        p.count("SELECT count(*) AS n FROM profile_events WHERE profile_id IS NULL"),
        0
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM profiles"),
        p.count("SELECT count(DISTINCT profile_id) AS n FROM identity_map")
    );
    assert!(
        p.count("SELECT count(*) AS n FROM profiles WHERE orders > 0 AND total_revenue > 0") > 0
    );
    assert!(p.count("SELECT count(*) AS n FROM profiles WHERE array_has(channels, 'pos')") > 0);
    assert_eq!(
        p.count("SELECT count(*) AS n FROM profiles WHERE email IS NOT NULL AND email <> lower(trim(email))"),
        0
    );
}

#[test]
fn merges_are_recorded_and_profiles_found_by_any_identifier() {
    let p = TestProject::new();
    let dir = tempfile::tempdir().unwrap();
    let day1 = dir.path().join("day1.ndjson");
    let day2 = dir.path().join("day2.ndjson");
    std::fs::write(
        &day1,
        concat!(
            r#"{"type":"identify","messageId":"m1","anonymousId":"phone-1","userId":"u1","traits":{"email":"  Jane@Example.COM ","first_name":"Jane","plan":"free"},"timestamp":"2026-01-01T10:00:00Z"}"#, "\n",
            r#"{"type":"page","messageId":"m2","anonymousId":"laptop-1","name":"Home","timestamp":"2026-01-02T10:00:00Z"}"#, "\n",
            r#"{"type":"track","messageId":"m3","anonymousId":"laptop-1","event":"Order Completed","properties":{"revenue":30},"timestamp":"2026-01-02T11:00:00Z"}"#, "\n",
        ),
    )
    .unwrap();
    std::fs::write(
        &day2,
        concat!(
            r#"{"type":"identify","messageId":"m4","anonymousId":"laptop-1","userId":"u1","traits":{"plan":"pro","first_name":null},"timestamp":"2026-01-03T10:00:00Z"}"#, "\n",
            r#"{"type":"identify","messageId":"m5","anonymousId":"laptop-1","userId":"u2","traits":{"email":"kid@example.com"},"timestamp":"2026-01-04T10:00:00Z"}"#, "\n",
        ),
    )
    .unwrap();
    p.import(&[day1.to_str().unwrap()]);
    stitch(&p, &[]);
    let laptop_profile = p.sql("SELECT profile_id FROM identity_map WHERE id_value = 'laptop-1'")
        [0]["profile_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let jane = p.sql("SELECT profile_id FROM identity_map WHERE id_value = 'u1'")[0]["profile_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(laptop_profile, jane);

    p.import(&[day2.to_str().unwrap()]);
    let report = stitch(&p, &[]);
    assert_eq!(report["merges"], 1, "{report}");
    assert_eq!(
        report["edges_rejected"], 1,
        "the second user on the laptop: {report}"
    );
    let merges = p.sql("SELECT * FROM profile_merges");
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0]["from_profile_id"], laptop_profile.as_str());
    assert_eq!(
        merges[0]["into_profile_id"],
        jane.as_str(),
        "the older profile survives"
    );
    assert_eq!(merges[0]["rule"], "sql/identity/10_devices.sql");
    let rejected = p.sql("SELECT reason FROM identity_edges WHERE status = 'rejected'");
    assert_eq!(
        rejected[0]["reason"],
        "would put 2 user_id identifiers in one profile (limit 1)"
    );

    // Look-ups by e-mail (as typed), by device, and by the merged-away profile id.
    for id in [
        "email: JANE@example.com".to_owned(),
        "anonymous_id:laptop-1".to_owned(),
        format!("profile_id:{laptop_profile}"),
    ] {
        let out = ok(&mut p.cmd(&["profile", "--json", &id]));
        let view: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(view["profile_id"], jane.as_str(), "{id}: {view}");
        assert_eq!(view["profile"]["orders"], 1, "{view}");
        assert_eq!(
            view["profile"]["traits"]["plan"], "pro",
            "latest wins: {view}"
        );
        assert_eq!(
            view["profile"]["traits"]["first_name"], "Jane",
            "nulls never win: {view}"
        );
        assert_eq!(view["profile"]["email"], "jane@example.com");
        assert_eq!(view["merges"].as_array().unwrap().len(), 1, "{view}");
    }
    let out = ok(&mut p.cmd(&["profile", &format!("profile_id:{laptop_profile}")]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{laptop_profile} was merged into {jane}")),
        "{text}"
    );
    let kid = ok(&mut p.cmd(&["profile", "--json", "user_id:u2"]));
    let kid: Value = serde_json::from_slice(&kid.stdout).unwrap();
    assert_ne!(kid["profile_id"], jane.as_str());

    let e = fails(&mut p.cmd(&["profile", "email:nobody@example.com"]));
    assert!(e.contains("no profile holds"), "{e}");
    let e = fails(&mut p.cmd(&["profile", "jane"]));
    assert!(e.contains("is not TYPE:VALUE"), "{e}");
    let e = fails(&mut p.cmd(&["profile", "email:not-an-address"]));
    assert!(e.contains("not a valid email"), "{e}");
}

#[test]
fn bad_rules_and_traits_are_named() {
    let p = TestProject::new();
    let e = fails(&mut p.cmd(&["stitch"]));
    assert!(e.contains("no events") || e.contains("import"), "{e}");

    let (data, _) = sample_data();
    p.import(&[data.join("events-pos.ndjson").to_str().unwrap()]);
    let rules = p.path().join("sql/identity");
    let bad = rules.join("40_bad.sql");
    let cases = [
        (
            "SELECT 'device' AS a_type, anonymous_id AS a_value, NULL AS b_type, NULL AS b_value, timestamp AS seen_at FROM events",
            "identifier type \"device\" is not configured",
        ),
        (
            "SELECT anonymous_id AS a_value FROM events",
            "the rule returns no a_type column",
        ),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT 1; SELECT 2", "one SELECT statement"),
    ];
    for (sql, expected) in cases {
        std::fs::write(&bad, sql).unwrap();
        let e = fails(&mut p.cmd(&["stitch"]));
        assert!(e.contains("sql/identity/40_bad.sql"), "{e}");
        assert!(e.contains(expected), "{expected}: {e}");
    }
    std::fs::remove_file(&bad).unwrap();
    assert!(
        !p.lake()
            .join("identity_map/_delta_log/00000000000000000001.json")
            .exists()
    );

    let traits = p.path().join("sql/traits/zz_bad.sql");
    std::fs::write(&traits, "SELECT count(*) AS n FROM events").unwrap();
    let e = fails(&mut p.cmd(&["stitch"]));
    assert!(
        e.contains("sql/traits/zz_bad.sql") && e.contains("must return profile_id"),
        "{e}"
    );
    std::fs::write(&traits, "SELECT profile_id, 1 AS email FROM identity_map").unwrap();
    let e = fails(&mut p.cmd(&["stitch", "--full"]));
    assert!(e.contains("already a profile column"), "{e}");
    std::fs::remove_file(&traits).unwrap();
    let report = stitch(&p, &["--full"]);
    assert!(report["profiles"].as_u64().unwrap() > 0, "{report}");

    // A configured identifier from event fields: the loyalty card links POS receipts.
    assert!(p.count("SELECT count(*) AS n FROM identity_map WHERE id_type = 'loyalty_id'") > 0);
    assert!(
        p.count("SELECT count(*) AS n FROM (SELECT profile_id FROM identity_map WHERE id_type = 'anonymous_id' GROUP BY profile_id HAVING count(*) > 1)") > 0,
        "receipts of one loyalty card share a profile"
    );
}

fn write_events(dir: &Path, name: &str, events: &[Value]) -> String {
    let path = dir.join(name);
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A kiosk device every customer logs in on, and an SDK sending the string "null" as a
/// user id: without safeguards each would fuse people (or silently join the first one
/// under the limits). They are quarantined in `blocked_values`, their edges held, the
/// stitch says so, and no profile absorbs anyone.
#[test]
fn a_value_shared_by_a_thousand_people_is_quarantined() {
    let p = TestProject::new();
    let mut events = Vec::new();
    for i in 0..1000 {
        events.push(serde_json::json!({
            "type": "identify", "messageId": format!("k{i}"), "anonymousId": "kiosk-1",
            "userId": format!("kp{i:04}"), "timestamp": "2026-03-01T10:00:00Z",
        }));
        events.push(serde_json::json!({
            "type": "track", "event": "Order Completed", "messageId": format!("o{i}"),
            "anonymousId": format!("phone-{i}"), "userId": format!("kp{i:04}"),
            "properties": {"revenue": 10}, "timestamp": "2026-03-02T10:00:00Z",
        }));
    }
    for d in ["d1", "d2"] {
        events.push(serde_json::json!({
            "type": "identify", "messageId": format!("n-{d}"), "anonymousId": d,
            "userId": "null", "timestamp": "2026-03-03T10:00:00Z",
        }));
    }
    let file = write_events(p.path(), "kiosk.ndjson", &events);
    ok(&mut p.cmd(&["import", &file]));
    let out = ok(&mut p.cmd(&["stitch"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ALERT: 2 identifier value(s) blocked"),
        "{text}"
    );
    assert!(
        text.contains("anonymous_id:kiosk-1  linked to 1,000 user_id identifiers (max 100)")
            || text.contains("anonymous_id:kiosk-1  linked to 1000 user_id identifiers (max 100)"),
        "{text}"
    );
    let blocked =
        p.sql("SELECT id_type, id_value, reason, links FROM blocked_values ORDER BY id_type");
    assert_eq!(blocked.len(), 2, "{blocked:?}");
    assert_eq!(blocked[0]["id_value"], "kiosk-1");
    assert_eq!(blocked[0]["links"], 1000);
    assert_eq!(blocked[1]["id_type"], "user_id");
    assert_eq!(blocked[1]["reason"], "placeholder value");
    // Held, not applied; in no profile; every customer alone with their own phone.
    assert_eq!(
        p.count("SELECT count(*) AS n FROM identity_edges WHERE a_value = 'kiosk-1' OR b_value = 'kiosk-1'"),
        p.count("SELECT count(*) AS n FROM identity_edges WHERE (a_value = 'kiosk-1' OR b_value = 'kiosk-1') AND status = 'held'"),
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM identity_map WHERE id_value IN ('kiosk-1', 'null')"),
        0
    );
    assert_eq!(
        p.count("SELECT max(identifiers) AS n FROM profiles"),
        2,
        "a profile holds more than a customer and their phone"
    );
    assert_eq!(
        p.count("SELECT count(*) AS n FROM profiles WHERE user_id LIKE 'kp%'"),
        1000
    );
    assert_ne!(
        p.sql("SELECT profile_id FROM identity_map WHERE id_value = 'd1'")[0]["profile_id"],
        p.sql("SELECT profile_id FROM identity_map WHERE id_value = 'd2'")[0]["profile_id"],
    );
    // The next run, incremental, keeps them blocked; so does a rebuild.
    let more = write_events(
        p.path(),
        "more.ndjson",
        &[serde_json::json!({
            "type": "identify", "messageId": "k-late", "anonymousId": "kiosk-1",
            "userId": "kp0001", "timestamp": "2026-03-05T10:00:00Z",
        })],
    );
    ok(&mut p.cmd(&["import", &more]));
    let report = stitch(&p, &[]);
    assert!(!report["full"].as_bool().unwrap());
    assert_eq!(report["blocked"].as_array().unwrap().len(), 2, "{report}");
    let report = stitch(&p, &["--full"]);
    assert_eq!(report["blocked"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(
        p.count("SELECT count(*) AS n FROM identity_map WHERE id_value IN ('kiosk-1', 'null')"),
        0
    );
    // A bad setting is named.
    let config = p.path().join("tessera.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{toml}\n[identity]\nmax_links = 1\n")).unwrap();
    let e = fails(&mut p.cmd(&["stitch"]));
    assert!(e.contains("identity.max_links"), "{e}");
}

/// A device shared by a customer and someone who never logs in: the other person's
/// orders land in the customer's profile. Splitting the device off revokes the edges
/// that joined it; the split-off part gets its own id, traits, scores and segment
/// memberships — equal to those of a full rebuild without the edges — and the revoked
/// edges never come back. A dry run of the next change predicts it; the profile as it
/// was before the split is still found with --as-of, and in SQL with identity_map_at.
#[test]
fn a_wrong_merge_is_split_and_the_past_stays_readable() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import_sample_channels(data);
    // Scores and segments evaluated at one fixed time, so that reruns compare.
    let config = p.path().join("tessera.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        toml.replace(
            "[segments]\n",
            "[segments]\nas_of = \"2026-11-01T00:00:00Z\"\n",
        ),
    )
    .unwrap();
    let shared = vec![
        serde_json::json!({"type": "identify", "messageId": "w0", "anonymousId": "dev-home",
            "userId": "ux1", "traits": {"email": "ursula@example.org", "first_name": "Ursula"},
            "timestamp": "2026-02-01T09:00:00Z"}),
        serde_json::json!({"type": "track", "event": "Order Completed", "messageId": "w1",
            "anonymousId": "dev-home", "userId": "ux1", "properties": {"revenue": 40},
            "timestamp": "2026-02-01T09:30:00Z"}),
        serde_json::json!({"type": "identify", "messageId": "w2", "anonymousId": "dev-shared",
            "userId": "ux1", "traits": {"email": "ursula@example.org"},
            "timestamp": "2026-02-02T10:00:00Z"}),
        serde_json::json!({"type": "track", "event": "Order Completed", "messageId": "w3",
            "anonymousId": "dev-shared", "properties": {"revenue": 300},
            "timestamp": "2026-02-03T10:00:00Z"}),
        serde_json::json!({"type": "track", "event": "Order Completed", "messageId": "w4",
            "anonymousId": "dev-shared", "properties": {"revenue": 400},
            "timestamp": "2026-02-04T10:00:00Z"}),
    ];
    let file = write_events(p.path(), "shared.ndjson", &shared);
    ok(&mut p.cmd(&["import", &file]));
    ok(&mut p.cmd(&["stitch"]));
    ok(&mut p.cmd(&["predict"]));
    ok(&mut p.cmd(&["segments", "refresh"]));
    let map_version = |p: &TestProject| -> i64 {
        let out = ok(&mut p.cmd(&["tables", "--json"]));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == "identity_map")
            .unwrap()["version"]
            .as_i64()
            .unwrap()
    };
    let merged_version = map_version(&p);
    let wrong = p.sql("SELECT profile_id, total_revenue FROM profiles WHERE user_id = 'ux1'");
    let wrong_id = wrong[0]["profile_id"].as_str().unwrap().to_owned();
    assert!(
        (wrong[0]["total_revenue"].as_f64().unwrap() - 740.0).abs() < 1e-9,
        "{wrong:?}"
    );
    assert_eq!(
        p.count(&format!(
            "SELECT count(*) AS n FROM audience_membership WHERE segment = 'high_value' AND profile_id = '{wrong_id}'"
        )),
        1
    );

    // Refused classes first: nothing changes.
    for (args, needle) in [
        (
            vec![
                "identity",
                "split",
                "user_id:nobody",
                "--identifier",
                "anonymous_id:dev-shared",
            ],
            "no profile holds",
        ),
        (
            vec![
                "identity",
                "split",
                "user_id:ux1",
                "--identifier",
                "anonymous_id:elsewhere",
            ],
            "in no profile",
        ),
        (
            vec!["identity", "split", "user_id:ux1", "--identifier", "email"],
            "TYPE:VALUE",
        ),
        (
            vec![
                "identity",
                "split",
                "user_id:ux1",
                "--edge",
                "anonymous_id:dev-shared",
            ],
            "TYPE:VALUE=TYPE:VALUE",
        ),
        (
            vec![
                "identity",
                "split",
                "p_nothing",
                "--identifier",
                "anonymous_id:dev-shared",
            ],
            "no profile p_nothing",
        ),
    ] {
        let e = fails(&mut p.cmd(&args));
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    assert_eq!(map_version(&p), merged_version);

    let out = ok(&mut p.cmd(&[
        "identity",
        "split",
        "user_id:ux1",
        "--identifier",
        "anonymous_id:dev-shared",
        "--reason",
        "a shared family laptop",
        "--json",
    ]));
    let split: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &split["split"];
    assert_eq!(report["profile_id"], wrong_id.as_str());
    assert_eq!(report["revoked"].as_array().unwrap().len(), 1, "{report}");
    let new_id = report["split_off"].as_str().unwrap().to_owned();
    assert_ne!(new_id, wrong_id);
    assert_eq!(report["stitch"]["splits"], 1, "{report}");
    let kept = p.sql("SELECT profile_id, total_revenue FROM profiles WHERE user_id = 'ux1'");
    assert_eq!(kept[0]["profile_id"], wrong_id.as_str());
    assert!(
        (kept[0]["total_revenue"].as_f64().unwrap() - 40.0).abs() < 1e-9,
        "{kept:?}"
    );
    let off = p.sql(&format!(
        "SELECT total_revenue, user_id FROM profiles WHERE profile_id = '{new_id}'"
    ));
    assert!(
        (off[0]["total_revenue"].as_f64().unwrap() - 700.0).abs() < 1e-9,
        "{off:?}"
    );
    let recorded = p.sql("SELECT from_profile_id, into_profile_id, kind, rule FROM profile_merges WHERE kind = 'split'");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["from_profile_id"], wrong_id.as_str());
    assert_eq!(recorded[0]["into_profile_id"], new_id.as_str());
    // Segments were refreshed: the customer left high_value, the other person entered.
    let changes = p.sql(&format!(
        "SELECT profile_id, change FROM audience_changes WHERE segment = 'high_value' \
         AND profile_id IN ('{wrong_id}', '{new_id}') ORDER BY profile_id"
    ));
    assert!(
        changes
            .iter()
            .any(|c| c["profile_id"] == wrong_id.as_str() && c["change"] == "exited"),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["profile_id"] == new_id.as_str() && c["change"] == "entered"),
        "{changes:?}"
    );
    assert!(split["scores"].is_object(), "{split}");

    // What a full rebuild of the data without the revoked edges gives: the same.
    let snapshot = |p: &TestProject| {
        (
            p.sql("SELECT * FROM profiles ORDER BY profile_id"),
            p.sql("SELECT profile_id, score, round(value, 9) AS value FROM scores ORDER BY profile_id, score"),
            p.sql("SELECT segment, profile_id FROM audience_membership ORDER BY segment, profile_id"),
            map_of(p),
        )
    };
    let after_split = snapshot(&p);
    stitch(&p, &["--full"]);
    ok(&mut p.cmd(&["predict"]));
    ok(&mut p.cmd(&["segments", "refresh"]));
    let rebuilt = snapshot(&p);
    assert_eq!(after_split.3, rebuilt.3, "identity maps differ");
    assert_eq!(after_split.0.len(), rebuilt.0.len());
    for (a, b) in after_split.0.iter().zip(&rebuilt.0) {
        assert!(same_row(a, b), "profiles differ:\n{a}\n{b}");
    }
    // Scores: the same models fitted on the same data (to the optimizer's precision).
    assert_eq!(
        after_split.1.len(),
        rebuilt.1.len(),
        "scores differ in number"
    );
    let far: Vec<(&Value, &Value)> = after_split
        .1
        .iter()
        .zip(&rebuilt.1)
        .filter(|(a, b)| {
            a["profile_id"] != b["profile_id"]
                || a["score"] != b["score"]
                || match (a["value"].as_f64(), b["value"].as_f64()) {
                    (Some(x), Some(y)) => (x - y).abs() > 1e-6 * x.abs().max(1.0),
                    (x, y) => x != y,
                }
        })
        .take(5)
        .collect();
    assert!(far.is_empty(), "scores differ: {far:?}");
    assert_eq!(after_split.2, rebuilt.2, "segment members differ");

    // The revoked edges never come back: the same pair seen again, incremental and full.
    let again = write_events(
        p.path(),
        "again.ndjson",
        &[
            serde_json::json!({"type": "identify", "messageId": "w9", "anonymousId": "dev-shared",
            "userId": "ux1", "traits": {"email": "ursula@example.org"},
            "timestamp": "2026-02-09T10:00:00Z"}),
            // A new device of the customer's, and an order that makes them high value.
            serde_json::json!({"type": "identify", "messageId": "w10", "anonymousId": "dev-new",
            "userId": "ux1", "timestamp": "2026-02-10T10:00:00Z"}),
            serde_json::json!({"type": "track", "event": "Order Completed", "messageId": "w11",
            "anonymousId": "dev-new", "properties": {"revenue": 900},
            "timestamp": "2026-02-10T10:30:00Z"}),
        ],
    );
    ok(&mut p.cmd(&["import", &again]));
    // A dry run says what the run will do, segments included; nothing is written.
    let version = map_version(&p);
    let dry = stitch(&p, &["--dry-run"]);
    assert!(dry["dry_run"].as_bool().unwrap());
    assert_eq!(map_version(&p), version);
    let predicted: BTreeMap<(String, String), String> = dry["segments"]
        .as_array()
        .expect("segments in the dry run")
        .iter()
        .flat_map(|s| {
            let name = s["segment"].as_str().unwrap().to_owned();
            let side = |key: &'static str, change: &'static str| {
                let name = name.clone();
                s[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |p| {
                        (
                            (name.clone(), p.as_str().unwrap().to_owned()),
                            change.to_owned(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            let mut all = side("entered", "entered");
            all.extend(side("exited", "exited"));
            all
        })
        .collect();
    assert_eq!(
        predicted
            .get(&("high_value".to_owned(), wrong_id.clone()))
            .map(String::as_str),
        Some("entered"),
        "{}",
        dry["segments"]
    );
    let real = stitch(&p, &[]);
    ok(&mut p.cmd(&["segments", "refresh"]));
    let done: BTreeMap<(String, String), String> = p
        .sql(
            "SELECT segment, profile_id, change FROM audience_changes \
              WHERE run = (SELECT max(run) FROM audience_changes)",
        )
        .iter()
        .map(|c| {
            (
                (
                    c["segment"].as_str().unwrap().to_owned(),
                    c["profile_id"].as_str().unwrap().to_owned(),
                ),
                c["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        predicted, done,
        "predicted segment changes differ from the run's"
    );
    for key in [
        "merges",
        "splits",
        "moves",
        "identifiers_moved",
        "identifiers",
        "edges_revoked",
    ] {
        assert_eq!(dry[key], real[key], "{key}: dry {dry} real {real}");
    }
    let profile_of = |id: &str| {
        p.sql(&format!("SELECT profile_id FROM identity_map WHERE id_type = 'anonymous_id' AND id_value = '{id}'"))[0]["profile_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(profile_of("dev-shared"), new_id);
    stitch(&p, &["--full"]);
    assert_eq!(profile_of("dev-shared"), new_id);
    assert!(p.count("SELECT count(*) AS n FROM identity_edges WHERE status = 'revoked'") >= 1);

    // The past: the device was the customer's before the split.
    let at = merged_version.to_string();
    let then = ok(&mut p.cmd(&[
        "profile",
        "anonymous_id:dev-shared",
        "--as-of",
        &at,
        "--json",
    ]));
    let then: Value = serde_json::from_slice(&then.stdout).unwrap();
    assert_eq!(then["profile_id"], wrong_id.as_str());
    assert!(
        (then["profile"]["total_revenue"].as_f64().unwrap() - 740.0).abs() < 1e-9,
        "{then}"
    );
    let now = ok(&mut p.cmd(&["profile", "anonymous_id:dev-shared", "--json"]));
    let now: Value = serde_json::from_slice(&now.stdout).unwrap();
    assert_eq!(now["profile_id"], new_id.as_str());
    let sql_then = p.sql(&format!(
        "SELECT profile_id FROM identity_map_at({at}) WHERE id_type = 'anonymous_id' AND id_value = 'dev-shared'"
    ));
    assert_eq!(sql_then[0]["profile_id"], wrong_id.as_str());
    let e = fails(&mut p.cmd(&["profile", "anonymous_id:dev-shared", "--as-of", "999999"]));
    assert!(e.contains("no version 999999"), "{e}");
    let e = fails(&mut p.cmd(&[
        "profile",
        "anonymous_id:dev-shared",
        "--as-of",
        "1999-01-01",
    ]));
    assert!(e.contains("no version at or before"), "{e}");
    let e = fails(&mut p.cmd(&["profile", "anonymous_id:dev-shared", "--as-of", "yesterday"]));
    assert!(e.contains("--as-of"), "{e}");
    let e = fails(&mut p.cmd(&["sql", "SELECT * FROM identity_map_at('soon')"]));
    assert!(e.contains("not a time"), "{e}");
}
