#![allow(clippy::unwrap_used)]

use datafusion::sql::sqlparser::dialect::{GenericDialect, PostgreSqlDialect};

use super::*;

fn numbered(sql: &str) -> (String, usize) {
    number_placeholders(sql, &GenericDialect {}).unwrap()
}

#[test]
fn question_marks_are_numbered_in_order() {
    assert_eq!(
        numbered("SELECT * FROM t WHERE a = ? AND b IN (?, ?) LIMIT ?"),
        (
            "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3) LIMIT $4".into(),
            4
        )
    );
    assert_eq!(numbered("SELECT ?"), ("SELECT $1".into(), 1));
    assert_eq!(numbered("SELECT a=?"), ("SELECT a=$1".into(), 1));
    assert_eq!(
        numbered("SELECT 1 FROM t WHERE x = $1"),
        ("SELECT 1 FROM t WHERE x = $1".into(), 0),
        "no ?: untouched"
    );
}

#[test]
fn question_marks_in_literals_identifiers_and_comments_stay() {
    let sql = "SELECT '?', 'it''s ?', \"col?\" -- what?\n, ? /* and ? here */ FROM t WHERE note = E'\\'?' AND v = ?";
    let (out, n) = numbered(sql);
    assert_eq!(n, 2, "{out}");
    assert_eq!(
        out,
        "SELECT '?', 'it''s ?', \"col?\" -- what?\n, $1 /* and ? here */ FROM t WHERE note = E'\\'?' AND v = $2"
    );
    // Multi-byte characters before a placeholder: offsets are bytes, columns chars.
    let (out, n) = numbered("SELECT 'größe', ?\n, 'ü' = ?");
    assert_eq!((out.as_str(), n), ("SELECT 'größe', $1\n, 'ü' = $2", 2));
    // Only ? in text that is not SQL at all: nothing to number.
    assert_eq!(numbered("-- ?").1, 0);
}

#[test]
fn mixing_styles_is_refused() {
    let e = number_placeholders("SELECT ? , $1", &GenericDialect {}).unwrap_err();
    assert!(e.to_string().contains("mixes ? and $n"), "{e}");
}

#[test]
fn postgres_operators_are_not_placeholders() {
    // In the PostgreSQL dialect `?` and `?|` are JSON operators, not placeholders.
    let sql = "SELECT j ?| array['a'], j ? 'k'";
    let (out, n) = number_placeholders(sql, &PostgreSqlDialect {}).unwrap();
    assert_eq!((out.as_str(), n), (sql, 0));
}

fn state() -> SessionState {
    SessionContext::new().state()
}

fn refused(sql: &str) -> String {
    match parse(&state(), sql, Policy::ReadOnly) {
        Err(EngineError::Refused { statement }) => statement,
        Err(other) => panic!("{sql}: expected a refusal, got {other}"),
        Ok(_) => panic!("{sql}: expected a refusal"),
    }
}

#[test]
fn only_reads_pass_the_read_only_policy() {
    for (sql, kind) in [
        (
            "COPY (SELECT 1 AS x) TO '/tmp/x.csv' STORED AS CSV",
            "COPY TO",
        ),
        ("COPY t TO '/tmp/x.parquet'", "COPY TO"),
        (
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp/lake/identity_map/'",
            "CREATE EXTERNAL TABLE",
        ),
        ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
        ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
        ("CREATE TABLE t (a INT)", "CREATE TABLE"),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("UPDATE t SET a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("DROP TABLE t", "DROP"),
        ("DROP VIEW v", "DROP"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        ("RESET datafusion.execution.batch_size", "RESET"),
        ("PREPARE p AS SELECT 1", "PREPARE"),
        ("EXECUTE p", "EXECUTE"),
        ("BEGIN", "BEGIN"),
        ("EXPLAIN COPY (SELECT 1) TO '/tmp/y.csv'", "EXPLAIN COPY TO"),
        ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "EXPLAIN INSERT"),
        ("CREATE SCHEMA s", "CREATE SCHEMA"),
    ] {
        assert_eq!(refused(sql), kind, "{sql}");
    }
}

#[test]
fn queries_explain_show_and_describe_pass() {
    for sql in [
        "SELECT 1",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "VALUES (1), (2)",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "SHOW TABLES",
        "SHOW COLUMNS FROM t",
        "SHOW datafusion.execution.batch_size",
        "DESCRIBE t",
        "SELECT 1;",
        "  -- a comment first\nSELECT ?",
    ] {
        parse(&state(), sql, Policy::ReadOnly).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[test]
fn one_statement_per_call() {
    for (sql, count) in [
        ("SELECT 1; SELECT 2", 2),
        ("SELECT 1; DROP TABLE t; SELECT 3", 3),
    ] {
        match parse(&state(), sql, Policy::ReadOnly) {
            Err(EngineError::Statements { count: n }) => assert_eq!(n, count, "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    for empty in ["", "  ", ";", "-- nothing"] {
        let e = parse(&state(), empty, Policy::ReadOnly).unwrap_err();
        assert!(e.to_string().contains("empty"), "{empty:?}: {e}");
    }
    let e = parse(&state(), "SELEC 1", Policy::ReadOnly).unwrap_err();
    assert!(matches!(e, EngineError::Sql(_)), "{e}");
}

#[test]
fn the_owner_may_write_but_not_change_the_session() {
    parse(
        &state(),
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        Policy::AllowWrite,
    )
    .unwrap();
    parse(&state(), "CREATE VIEW v AS SELECT 1", Policy::AllowWrite).unwrap();
    for sql in [
        "SET datafusion.execution.batch_size = 1",
        "BEGIN",
        "RESET x",
    ] {
        assert!(
            matches!(
                parse(&state(), sql, Policy::AllowWrite),
                Err(EngineError::Refused { .. })
            ),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn refused_statements_write_nothing_and_allowed_ones_run() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.csv");
    let ctx = SessionContext::new();
    let copy = format!(
        "COPY (SELECT 1 AS x) TO '{}' STORED AS CSV",
        target.display()
    );
    let e = plan(&ctx, &copy, Policy::ReadOnly).await.unwrap_err();
    assert!(e.to_string().starts_with("COPY TO is not allowed"), "{e}");
    assert!(!target.exists(), "nothing written");
    let e = plan(&ctx, "CREATE VIEW v AS SELECT 1", Policy::ReadOnly)
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::Refused { .. }), "{e}");
    assert!(!ctx.table_exist("v").unwrap(), "no view created");

    let rows = plan(&ctx, "SELECT ? + 1 AS y", Policy::ReadOnly)
        .await
        .unwrap()
        .with_param_values(vec![datafusion::scalar::ScalarValue::Int64(Some(41))])
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string()
            .lines()
            .nth(3)
            .unwrap(),
        "| 42 |"
    );

    plan(&ctx, &copy, Policy::AllowWrite)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(target.exists(), "the owner's COPY writes");
}
