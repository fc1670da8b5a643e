//! The bad-segment suite: every kind of broken segment file gets its exact, located
//! error, and nothing is written.

use std::collections::HashMap;
use std::sync::Arc;

use tessera_engine::{Engine, EngineConfig};
use tessera_lake::Lake;
use tessera_segments::refresh::{RefreshOptions, refresh};
use tessera_segments::{SegmentSet, SegmentsError};

async fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::new(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
    lake.create_missing_tables().await.unwrap();
    (
        dir,
        Engine::new(Arc::new(lake), EngineConfig::deterministic()),
    )
}

fn set(files: &[(&str, &str)]) -> Result<SegmentSet, SegmentsError> {
    SegmentSet::from_texts(
        files
            .iter()
            .map(|(n, t)| {
                (
                    (*n).to_owned(),
                    format!("sql/segments/{n}.sql"),
                    (*t).to_owned(),
                )
            })
            .collect(),
    )
}

/// The errors for `files`, from parsing or from validation against the lake.
async fn errors(engine: &Engine, files: &[(&str, &str)]) -> Vec<String> {
    let result = match set(files) {
        Ok(s) => s.validate(engine).await,
        Err(e) => Err(e),
    };
    match result {
        Err(SegmentsError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        Err(other) => vec![format!("not a file error: {other}")],
        Ok(()) => vec![],
    }
}

const OK: (&str, &str) = (
    "high_value",
    "SELECT profile_id FROM profiles WHERE identifiers > 1",
);

#[tokio::test]
async fn each_bad_segment_gets_its_located_error() {
    let (_dir, engine) = engine().await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "syntax_error",
            "-- description: unfinished\nSELECT profile_id\nFROM profiles\nWHERE identifiers >",
            "sql/segments/syntax_error.sql:4:20: syntax error: Expected: an expression, found: EOF\n  help: a segment is one SELECT returning profile_id",
        ),
        (
            "bad_keyword",
            "SELECT profile_id FROM profiles\nWHERE identifiers > 1 ORDER profile_id",
            "sql/segments/bad_keyword.sql:2:23: syntax error: Expected: end of statement, found: ORDER\n  help: a segment is one SELECT returning profile_id",
        ),
        (
            "deletes",
            "-- oops\nDELETE FROM profiles WHERE identifiers = 0",
            "sql/segments/deletes.sql:2:1: DELETE is not allowed: a segment is one read-only SELECT\n  help: segments only read; write SELECT ... returning profile_id",
        ),
        (
            "inserts",
            "INSERT INTO profiles SELECT * FROM profiles",
            "sql/segments/inserts.sql:1:1: INSERT is not allowed: a segment is one read-only SELECT\n  help: segments only read; write SELECT ... returning profile_id",
        ),
        (
            "ddl",
            "CREATE TABLE vip AS SELECT profile_id FROM profiles",
            "sql/segments/ddl.sql:1:1: DDL (CREATE/ALTER) is not allowed: a segment is one read-only SELECT\n  help: segments only read; write SELECT ... returning profile_id",
        ),
        (
            "drops",
            "DROP TABLE profiles",
            "sql/segments/drops.sql:1:1: DROP is not allowed: a segment is one read-only SELECT\n  help: segments only read; write SELECT ... returning profile_id",
        ),
        (
            "two_statements",
            "SELECT profile_id FROM profiles;\n\nSELECT profile_id FROM identity_map;",
            "sql/segments/two_statements.sql:3:1: 2 statements: a segment is exactly one query\n  help: remove the extra statement (or split it into another segment file)",
        ),
        (
            "no_profile_id",
            "SELECT user_id, email\nFROM profiles",
            "sql/segments/no_profile_id.sql:1:8: the query returns no profile_id column (it returns user_id, email)\n  help: select the profile id as profile_id, e.g. SELECT p.profile_id FROM profiles AS p ...",
        ),
        (
            "count_not_id",
            "SELECT count(*) AS profile_id FROM profiles",
            "sql/segments/count_not_id.sql:1:8: profile_id is Int64, not text\n  help: return the profile id itself (a text such as p_1a2b...), not a count or a flag",
        ),
        (
            "unknown_table",
            "SELECT profile_id\nFROM profles\nWHERE identifiers > 1",
            "sql/segments/unknown_table.sql:2:6: unknown table or view \"profles\"\n  help: the lake has: activation_batches, audience_changes, audience_membership, audit_log, blocked_values, consent, events, identity_edges, identity_map, identity_revocations, imported_files, match_decisions, match_models, match_pairs, model_runs, plan_violations, privacy_requests, profile_events, profile_merges, profile_scores, profiles, quarantine, scores, segment_refreshes, stream_deliveries, suppressions",
        ),
        (
            "unknown_function",
            "SELECT profile_id FROM profiles\nWHERE dayz_since(last_seen) > 30",
            "sql/segments/unknown_function.sql:2:7: unknown function \"dayz_since\"\n  help: Did you mean 'days_since'?; see `tessera sql \"SHOW FUNCTIONS\"` for every function",
        ),
        (
            "unknown_column",
            "SELECT profile_id FROM profiles\nWHERE total_spend > 500",
            "sql/segments/unknown_column.sql:2:7: Schema error: No field named total_spend.\n  help: profiles has profile_id, first_seen, last_seen, identifiers, user_id, email, phone, traits",
        ),
        (
            "unknown_segment",
            "SELECT profile_id FROM profiles\nWHERE in_segment(profile_id, 'hihg_value')",
            "sql/segments/unknown_segment.sql:2:30: unknown segment \"hihg_value\"\n  help: known segments: high_value, unknown_segment",
        ),
        (
            "bad_header",
            "-- refresh: every day\n-- ownr: me\nSELECT profile_id FROM profiles",
            "sql/segments/bad_header.sql:1:4: refresh interval \"every day\" is not understood\n  help: write a number and a unit (30s, 15m, 1h, 1d) or `manual`\nsql/segments/bad_header.sql:2:4: unknown header key \"ownr\"\n  help: header keys are name, description, refresh, owner",
        ),
        (
            "renamed",
            "-- name: vip\nSELECT profile_id FROM profiles",
            "sql/segments/renamed.sql:1:4: the header names this segment \"vip\" but the file is renamed.sql\n  help: rename the file to vip.sql or write `-- name: renamed`",
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, expected) in cases {
        let got = errors(&engine, &[OK, (name, text)]).await.join("\n");
        if got != *expected {
            failures.push(format!(
                "{name}:\n  expected: {expected:?}\n  got:      {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_cycle_is_named() {
    let (_dir, engine) = engine().await;
    let got = errors(
        &engine,
        &[
            ("a", "SELECT profile_id FROM segment('b')"),
            (
                "b",
                "SELECT profile_id FROM profiles WHERE in_segment(profile_id, 'c')",
            ),
            ("c", "SELECT profile_id FROM segment('a')"),
        ],
    )
    .await;
    assert_eq!(
        got,
        [
            "sql/segments/c.sql:1:32: segments reference each other in a cycle: a → b → c → a\n  help: a segment cannot depend on itself, directly or through others; remove one reference"
        ]
    );
}

#[tokio::test]
async fn nothing_is_written_when_a_segment_is_bad() {
    let (_dir, engine) = engine().await;
    let options = RefreshOptions {
        actor: "test".into(),
        ..RefreshOptions::default()
    };
    let good = set(&[OK]).unwrap();
    let first = refresh(&engine, &good, &options).await.unwrap();
    assert!(first.written);
    let versions = |lake: Arc<Lake>| async move {
        let mut v = Vec::new();
        for t in [
            "audience_membership",
            "audience_changes",
            "segment_refreshes",
        ] {
            v.push(lake.open(t).await.unwrap().version());
        }
        v
    };
    let before = versions(engine.lake().clone()).await;

    let bad = set(&[
        OK,
        ("vip", "SELECT profile_id FROM profiles WHERE in_segment(profile_id, 'high_value') AND nope > 1"),
    ])
    .unwrap();
    let forced = RefreshOptions {
        force: true,
        ..options.clone()
    };
    let e = refresh(&engine, &bad, &forced)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "1 problem in segment files; nothing was run or written:\nsql/segments/vip.sql:1:"
        ),
        "{e}"
    );
    assert_eq!(versions(engine.lake().clone()).await, before);

    // A segment that fails while running (not while planning) writes nothing either.
    let failing = set(&[
        OK,
        (
            "boom",
            "SELECT CAST('not a number' AS BIGINT) || '' AS profile_id",
        ),
    ])
    .unwrap();
    let e = refresh(&engine, &failing, &forced)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("segment boom: "), "{e}");
    assert_eq!(versions(engine.lake().clone()).await, before);
}
