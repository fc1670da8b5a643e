//! Segments end to end with the real binary on generated customers: the example
//! segments refresh, membership equals what each segment's SQL returns, a refresh with
//! nothing new writes nothing, and after new events arrive the entered/exited rows are
//! exactly the difference of the two memberships.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::common::{TestProject, fails, ok, sample_data};
use crate::identity::split_at;

type Members = BTreeMap<String, BTreeSet<String>>;

fn set_as_of(p: &TestProject, as_of: &str) {
    let path = p.path().join("tessera.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("# as_of = ") || l.starts_with("as_of = ") {
                format!("as_of = \"{as_of}\"")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&path, text.join("\n")).unwrap();
}

fn refresh(p: &TestProject) -> Value {
    let out = ok(&mut p.cmd(&["segments", "refresh", "--json"]));
    serde_json::from_slice(&out.stdout).expect("refresh --json prints JSON")
}

fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["segment"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// What each segment file's SQL returns when run on its own through `tessera sql`.
fn evaluate(p: &TestProject) -> Members {
    let mut out = Members::new();
    for entry in std::fs::read_dir(p.path().join("sql/segments")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let sql = std::fs::read_to_string(&path).unwrap();
        let query =
            format!("SELECT DISTINCT profile_id FROM ({sql}) AS s WHERE profile_id IS NOT NULL");
        let ids = p
            .sql(&query)
            .into_iter()
            .map(|r| r["profile_id"].as_str().unwrap().to_owned())
            .collect();
        out.insert(name, ids);
    }
    out
}

/// What `queries` return over the project's lake through the library, each as text, with
/// every table planned by delta-rs' scan or (`pinned`) as the pinned Parquet scan a
/// cluster's executors are given; segment members as [`evaluate`] reads them.
fn through_engine(
    p: &TestProject,
    as_of: &str,
    pinned: bool,
    queries: &[&str],
) -> (Members, Vec<String>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let lake =
            tessera_lake::Lake::new(p.lake().to_str().unwrap(), std::collections::HashMap::new())
                .unwrap();
        let config = tessera_engine::EngineConfig {
            as_of_micros: Some(
                chrono::DateTime::parse_from_rfc3339(as_of)
                    .unwrap()
                    .timestamp_micros(),
            ),
            pinned_scans: pinned,
            ..tessera_engine::EngineConfig::default()
        };
        let engine = tessera_engine::Engine::new(std::sync::Arc::new(lake), config);
        let run = |sql: String| {
            let engine = engine.clone();
            async move {
                let stream = engine
                    .query(&sql, tessera_engine::Policy::ReadOnly)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                datafusion::physical_plan::common::collect(stream)
                    .await
                    .unwrap()
            }
        };
        let mut members = Members::new();
        for entry in std::fs::read_dir(p.path().join("sql/segments")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let sql = std::fs::read_to_string(&path).unwrap();
            let batches = run(format!(
                "SELECT DISTINCT profile_id FROM ({sql}) AS s WHERE profile_id IS NOT NULL"
            ))
            .await;
            let mut ids = BTreeSet::new();
            for b in &batches {
                let column = datafusion::arrow::compute::cast(
                    b.column(0),
                    &datafusion::arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                let column = column
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .unwrap();
                ids.extend(column.iter().flatten().map(str::to_owned));
            }
            members.insert(name, ids);
        }
        let mut shown = Vec::new();
        for q in queries {
            let batches = run((*q).to_owned()).await;
            shown.push(
                datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string(),
            );
        }
        (members, shown)
    })
}

fn rows_by_segment(p: &TestProject, query: &str) -> Members {
    let mut out = Members::new();
    for r in p.sql(query) {
        out.entry(r["segment"].as_str().unwrap().to_owned())
            .or_default()
            .insert(r["profile_id"].as_str().unwrap().to_owned());
    }
    out
}

fn membership(p: &TestProject) -> Members {
    rows_by_segment(p, "SELECT segment, profile_id FROM audience_membership")
}

fn without_empty(m: Members) -> Members {
    m.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

#[test]
fn diffs_are_exact_across_refreshes_as_new_events_arrive() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    let work = tempfile::tempdir().unwrap();
    let (heads, tails) = split_at(data, work.path(), "2026-09-20");

    // The first weeks, judged at their end.
    set_as_of(&p, "2026-09-19T23:59:59Z");
    for (f, s) in heads.iter().zip(["web", "app", "pos"]) {
        p.import(&[f, "--source", s]);
    }
    ok(&mut p.cmd(&["stitch"]));
    // Scores for the segments that read them (propensity has too little history yet).
    ok(&mut p.cmd(&["predict"]));
    let out = ok(&mut p.cmd(&["segments", "validate"]));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("8 segments valid: at_risk, cart_abandoners, high_value"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let first = refresh(&p);
    assert!(
        statuses(&first).values().all(|s| s == "refreshed"),
        "{first}"
    );
    let before = evaluate(&p);
    assert_eq!(membership(&p), without_empty(before.clone()));
    // Every segment, a trait query, the scores and a predict-style feature query give
    // exactly the same over pinned Parquet scans of the tables' current files (the plan
    // a cluster is given) as over delta-rs' scans — a float sum to 6 decimals, since the
    // files may be summed in another order.
    let as_of = "2026-09-19T23:59:59Z";
    let queries = [
        "SELECT * FROM profiles ORDER BY profile_id",
        "SELECT * FROM scores ORDER BY profile_id, model, score",
        "SELECT profile_id, count(*) AS orders, round(sum(json_get_float(properties, 'revenue')), 6) AS revenue, \
         max(days_since(timestamp)) AS age FROM profile_events WHERE event = 'Order Completed' \
         GROUP BY profile_id ORDER BY profile_id",
        "SELECT event_date, source, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    ];
    let (delta_members, delta_rows) = through_engine(&p, as_of, false, &queries);
    let (pinned_members, pinned_rows) = through_engine(&p, as_of, true, &queries);
    assert_eq!(
        delta_members, before,
        "the library evaluates as `tessera sql` does"
    );
    assert_eq!(pinned_members, before, "pinned scans: the same members");
    for ((q, d), r) in queries.iter().zip(&delta_rows).zip(&pinned_rows) {
        let differs = d.lines().zip(r.lines()).position(|(a, b)| a != b);
        assert!(
            differs.is_none() && d.lines().count() == r.lines().count(),
            "pinned scans: {q}: line {differs:?}: {:?} vs {:?}",
            differs.and_then(|i| d.lines().nth(i)),
            differs.and_then(|i| r.lines().nth(i))
        );
        assert!(d.lines().count() > 5, "{q} returns rows");
    }
    assert!(
        before.values().filter(|m| !m.is_empty()).count() >= 4,
        "{before:?}"
    );

    // Nothing new: nothing evaluated, nothing written.
    let versions = p.sql("SELECT count(*) AS n FROM segment_refreshes");
    let again = refresh(&p);
    assert!(
        statuses(&again).values().all(|s| s == "unchanged"),
        "{again}"
    );
    assert_eq!(again["written"], false);
    assert_eq!(
        p.sql("SELECT count(*) AS n FROM segment_refreshes"),
        versions
    );

    // Six more weeks of events, judged at their end.
    set_as_of(&p, "2026-10-31T23:59:59Z");
    for (f, s) in tails.iter().zip(["web", "app", "pos"]) {
        p.import(&[f, "--source", s]);
    }
    ok(&mut p.cmd(&["stitch"]));
    ok(&mut p.cmd(&["predict"]));
    let second = refresh(&p);
    assert!(
        statuses(&second).values().all(|s| s == "refreshed"),
        "{second}"
    );
    let after = evaluate(&p);
    assert_eq!(membership(&p), without_empty(after.clone()));

    let entered = rows_by_segment(
        &p,
        "SELECT segment, profile_id FROM audience_changes WHERE change = 'entered' AND refresh_version = 2",
    );
    let exited = rows_by_segment(
        &p,
        "SELECT segment, profile_id FROM audience_changes WHERE change = 'exited' AND refresh_version = 2",
    );
    let empty = BTreeSet::new();
    let (mut total_in, mut total_out) = (0, 0);
    for (name, now) in &after {
        let was = before.get(name).unwrap_or(&empty);
        let expected_in: BTreeSet<String> = now.difference(was).cloned().collect();
        let expected_out: BTreeSet<String> = was.difference(now).cloned().collect();
        assert_eq!(
            entered.get(name).unwrap_or(&empty),
            &expected_in,
            "{name} entered"
        );
        assert_eq!(
            exited.get(name).unwrap_or(&empty),
            &expected_out,
            "{name} exited"
        );
        total_in += expected_in.len();
        total_out += expected_out.len();
    }
    assert!(
        total_in > 0 && total_out > 0,
        "new events move people both ways"
    );

    // The CLI views agree with the tables.
    let report_in: u64 = second["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entered"].as_u64().unwrap())
        .sum();
    assert_eq!(report_in as usize, total_in);
    let diff = ok(&mut p.cmd(&[
        "segments",
        "diff",
        "cart_abandoners",
        "--since",
        "1",
        "--json",
        "--limit",
        "100000",
    ]));
    let expected = entered.get("cart_abandoners").map_or(0, BTreeSet::len)
        + exited.get("cart_abandoners").map_or(0, BTreeSet::len);
    assert_eq!(
        String::from_utf8_lossy(&diff.stdout).lines().count(),
        expected
    );
    let list = ok(&mut p.cmd(&["segments", "list", "--json"]));
    let listed: Vec<Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 8);
    for row in &listed {
        let name = row["segment"].as_str().unwrap();
        assert_eq!(row["version"], 2, "{row}");
        assert_eq!(
            row["members"].as_u64().unwrap() as usize,
            after[name].len(),
            "{row}"
        );
    }
    let show = ok(&mut p.cmd(&["segments", "show", "vip_at_risk"]));
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("reads segments: high_value, at_risk"),
        "{text}"
    );

    // Segments are usable from any query.
    let n = p.count(
        "SELECT count(*) AS n FROM profiles WHERE in_segment(profile_id, 'high_value') AND in_segment(profile_id, 'at_risk')",
    );
    assert_eq!(n as usize, after["vip_at_risk"].len());
}

#[test]
fn a_bad_segment_is_reported_with_its_location_and_nothing_runs() {
    let p = TestProject::new();
    std::fs::write(
        p.path().join("sql/segments/broken.sql"),
        "-- description: typo\nSELECT profile_id\nFROM profiles\nWHERE in_segment(profile_id, 'hihg_value')\n",
    )
    .unwrap();
    let e = fails(&mut p.cmd(&["segments", "refresh"]));
    assert!(
        e.contains("sql/segments/broken.sql:4:30: unknown segment \"hihg_value\""),
        "{e}"
    );
    assert_eq!(p.count("SELECT count(*) AS n FROM segment_refreshes"), 0);
    std::fs::remove_file(p.path().join("sql/segments/broken.sql")).unwrap();
    let e = fails(&mut p.cmd(&["segments", "show", "nope"]));
    assert!(
        e.contains("no segment named \"nope\"; known segments: at_risk, cart_abandoners"),
        "{e}"
    );
}
