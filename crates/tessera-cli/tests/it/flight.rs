//! Arrow Flight SQL end to end: `tessera serve` (the real binary) on loopback, driven by
//! unmodified clients — Python ADBC (`adbc-driver-flightsql`) and `pyarrow.flight` —
//! with users added by `tessera user add`.

use std::process::Command;

use serde_json::Value;

use crate::common::{TestProject, add_user, added, ok, sample_data, serve, stop};

const ANALYST_PASSWORD: &str = "an4lyst-passw0rd";
const MARKETER_PASSWORD: &str = "m4rketer-passw0rd";

const CLIENTS: &str = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as fl

uri = "grpc://" + sys.argv[1]
analyst, marketer = sys.argv[2], sys.argv[3]
out = {}

def connect(user, password):
    return flight_sql.connect(uri, db_kwargs={"username": user, "password": password})

# ADBC, as BI tools and notebooks use it.
try:
    connect("ana", "wrong-password").cursor().execute("SELECT 1")
    out["wrong_password"] = "accepted"
except Exception as e:
    out["wrong_password"] = str(e)
conn = connect("ana", analyst)
cur = conn.cursor()
cur.execute("SELECT count(*) AS n FROM events")
out["events"] = cur.fetchone()[0]
cur.execute("SELECT type, count(*) AS n FROM events WHERE type = $1 GROUP BY type", ("track",))
out["by_parameter"] = cur.fetchall()
objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
out["tables"] = sorted(t["table_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"])
out["event_columns"] = [col["column_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"] if t["table_name"] == "events" for col in t["table_columns"]]
out["table_types"] = sorted(conn.adbc_get_table_types())
out["catalogs"] = sorted({c["catalog_name"] for c in objects})
cur.execute("SELECT count(*) FROM tessera.public.identity_map")
out["qualified"] = cur.fetchone()[0]
cur.execute("SELECT value FROM generate_series(1, 3000000)")
big = cur.fetch_arrow_table()
out["big_rows"] = big.num_rows
out["big_sum"] = big.column(0).to_pylist()[-1]
try:
    cur.execute("SELECT nope FROM events")
    out["bad_sql"] = "accepted"
except Exception as e:
    out["bad_sql"] = str(e)
masked_sql = "SELECT (SELECT count(*) FROM profiles WHERE email IS NOT NULL AND email <> '***') AS clear_emails, (SELECT count(*) FROM profiles WHERE email = '***') AS masked_emails, (SELECT count(*) FROM events WHERE json_get_str(traits, 'email') LIKE '%@%') AS clear_trait_emails, (SELECT count(*) FROM profile_events WHERE json_get_str(traits, 'email') LIKE '%@%') AS clear_view_emails, (SELECT count(*) FROM identity_map WHERE id_type = 'email' AND id_value <> '***') AS clear_ids"
cur.execute(masked_sql)
out["analyst_sees"] = cur.fetchone()
conn.close()
with connect("root", analyst) as admin:
    c = admin.cursor()
    c.execute(masked_sql)
    out["pii_admin_sees"] = c.fetchone()
try:
    connect("mark", marketer).cursor().execute("SELECT count(*) FROM events")
    out["marketer"] = "accepted"
except Exception as e:
    out["marketer"] = str(e)

# pyarrow.flight, speaking Flight SQL by hand: no token, a forged token, a good one.

client = fl.FlightClient(uri)
query = fl.FlightDescriptor.for_command(any_command("CommandStatementQuery", [(1, b"SELECT count(*) AS n FROM profiles")]))
try:
    client.get_flight_info(query)
    out["no_token"] = "accepted"
except fl.FlightUnauthenticatedError as e:
    out["no_token"] = "unauthenticated: " + str(e)
try:
    client.get_flight_info(query, fl.FlightCallOptions(headers=[(b"authorization", b"Bearer forged")]))
    out["forged"] = "accepted"
except fl.FlightUnauthenticatedError as e:
    out["forged"] = "unauthenticated: " + str(e)
header = client.authenticate_basic_token("ana", analyst)
options = fl.FlightCallOptions(headers=[header])
info = client.get_flight_info(query, options)
out["profiles"] = client.do_get(info.endpoints[0].ticket, options).read_all().column(0).to_pylist()[0]
print(json.dumps(out))
"#;

#[test]
fn bi_clients_query_the_lake_with_passwords_and_roles() {
    let (data, _) = sample_data();
    let p = TestProject::new();
    p.import(&[
        data.join("events-web.ndjson").to_str().unwrap(),
        "--source",
        "web",
    ]);
    ok(&mut p.cmd(&["stitch"]));
    added(&p, &["ana", "--role", "analyst"], ANALYST_PASSWORD);
    added(&p, &["mark", "--role", "marketer"], MARKETER_PASSWORD);
    added(&p, &["root", "--role", "admin", "--pii"], ANALYST_PASSWORD);
    let toml = std::fs::read_to_string(p.path().join("tessera.toml")).unwrap();
    assert!(
        !toml.contains(ANALYST_PASSWORD) && toml.contains("$argon2id$"),
        "hashed, never in clear"
    );

    let (running, grpc, _) = serve(&p);
    let out = Command::new(crate::common::python())
        .arg("-c")
        .arg(format!("{}{CLIENTS}", crate::common::ANY_COMMAND))
        .args([&grpc, ANALYST_PASSWORD, MARKETER_PASSWORD])
        .output()
        .unwrap();
    // A clean stop writes the last audit entries.
    stop(running);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(v["events"], p.count("SELECT count(*) AS n FROM events"));
    let tracks = p.count("SELECT count(*) AS n FROM events WHERE type = 'track'");
    assert_eq!(v["by_parameter"], serde_json::json!([["track", tracks]]));
    let tables: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "events",
        "profiles",
        "identity_map",
        "scores",
        "profile_events",
        "profile_scores",
    ] {
        assert!(tables.contains(&t), "{t} in {tables:?}");
    }
    assert!(
        v["event_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "anonymous_id"),
        "{v}"
    );
    assert_eq!(v["table_types"], serde_json::json!(["TABLE", "VIEW"]));
    assert_eq!(v["catalogs"], serde_json::json!(["tessera"]));
    assert_eq!(
        v["qualified"],
        p.count("SELECT count(*) AS n FROM identity_map")
    );
    assert_eq!(v["big_rows"], 3_000_000);
    assert_eq!(v["big_sum"], 3_000_000);
    assert!(v["bad_sql"].as_str().unwrap().contains("nope"), "{v}");
    assert!(
        v["wrong_password"]
            .as_str()
            .unwrap()
            .contains("wrong user or password"),
        "{v}"
    );
    assert!(
        v["marketer"].as_str().unwrap().contains("may not run SQL"),
        "{v}"
    );
    assert!(
        v["no_token"]
            .as_str()
            .unwrap()
            .starts_with("unauthenticated"),
        "{v}"
    );
    assert!(
        v["forged"]
            .as_str()
            .unwrap()
            .contains("unknown or expired token"),
        "{v}"
    );
    assert_eq!(v["profiles"], p.count("SELECT count(*) AS n FROM profiles"));

    // Personal data: masked for the analyst without `pii`, in tables and views alike;
    // in clear for the admin with it.
    let emails = p.count("SELECT count(*) AS n FROM profiles WHERE email IS NOT NULL");
    let trait_emails =
        p.count("SELECT count(*) AS n FROM events WHERE json_get_str(traits, 'email') LIKE '%@%'");
    let ids = p.count("SELECT count(*) AS n FROM identity_map WHERE id_type = 'email'");
    assert!(emails > 0 && trait_emails > 0 && ids > 0);
    assert_eq!(
        v["analyst_sees"],
        serde_json::json!([0, emails, 0, 0, 0]),
        "{v}"
    );
    let view_emails = p.count(
        "SELECT count(*) AS n FROM profile_events WHERE json_get_str(traits, 'email') LIKE '%@%'",
    );
    assert_eq!(
        v["pii_admin_sees"],
        serde_json::json!([emails, 0, trait_emails, view_emails, ids]),
        "{v}"
    );

    // Every attempt is in the audit log: who, what, rows, outcome.
    let log = p.sql(
        "SELECT \"user\", role, action, status, rows, target, detail FROM audit_log ORDER BY at",
    );
    let log = serde_json::to_string_pretty(&log).unwrap();
    let audited = |filter: &str| {
        p.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE {filter}"
        ))
    };
    assert_eq!(
        audited("action = 'handshake' AND status = 'unauthenticated' AND \"user\" = 'ana'"),
        1,
        "{log}"
    );
    assert!(
        audited(
            "action = 'handshake' AND status = 'ok' AND \"user\" = 'ana' AND role = 'analyst' AND client LIKE '127.0.0.1:%'"
        ) >= 1,
        "{log}"
    );
    assert_eq!(
        audited(
            "action IN ('query', 'prepared_query') AND status = 'ok' AND \"user\" = 'ana' AND target LIKE '%generate_series%' AND rows = 3000000"
        ),
        1,
        "{log}"
    );
    assert_eq!(
        audited(
            "action = 'prepared_query' AND status = 'ok' AND detail = 'parameters: track' AND rows = 1"
        ),
        1,
        "{log}"
    );
    assert_eq!(
        audited(
            "status = 'invalid' AND target = 'SELECT nope FROM events' AND detail LIKE '%nope%'"
        ),
        1,
        "{log}"
    );
    assert!(
        audited("status = 'permission_denied' AND \"user\" = 'mark'") >= 1,
        "{log}"
    );
    assert!(
        audited("status = 'unauthenticated' AND \"user\" = '-'") >= 2,
        "no token and a forged one"
    );
    // `fetchone()` and closing the connection may drop the stream before its end is
    // polled: the entry is then `cancelled`, still with the row it delivered.
    assert!(
        audited(
            "action IN ('query', 'prepared_query') AND status IN ('ok', 'cancelled') AND \"user\" = 'root' AND rows = 1"
        ) >= 1,
        "{log}"
    );
}

#[test]
fn bad_users_are_refused() {
    let p = TestProject::new();
    let add = |args: &[&str], stdin: &str| add_user(&p, args, stdin);
    let (okay, e) = add(&["x", "--role", "boss"], "long-enough-1\n");
    assert!(!okay && e.contains("unknown role \"boss\""), "{e}");
    let (okay, e) = add(&["x", "--role", "analyst"], "short\n");
    assert!(!okay && e.contains("at least 8 characters"), "{e}");
    let (okay, e) = add(&["x y", "--role", "analyst"], "long-enough-1\n");
    assert!(!okay && e.contains("letters, digits"), "{e}");
    let (okay, e) = add(&["x", "--role", "analyst"], "long-enough-1\n");
    assert!(okay, "{e}");
    let (okay, e) = add(&["x", "--role", "admin"], "long-enough-2\n");
    assert!(!okay && e.contains("already exists"), "{e}");
    let list = ok(&mut p.cmd(&["user", "list"]));
    assert!(String::from_utf8_lossy(&list.stdout).contains("analyst"));

    // A password written into the file in clear is refused, not used.
    let toml = p.path().join("tessera.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("\n[users.eve]\nrole = \"admin\"\npassword_hash = \"hunter22\"\n");
    std::fs::write(&toml, text).unwrap();
    let e = crate::common::fails(&mut p.cmd(&["tables"]));
    assert!(
        e.contains("users.eve.password_hash") && e.contains("Argon2"),
        "{e}"
    );
}
