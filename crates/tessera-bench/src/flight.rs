//! `tessera-bench flight`: streaming a large result over Arrow Flight SQL (ADBC client
//! against `tessera serve` on loopback) vs pyarrow reading the same Parquet files of
//! the lake locally, in one run.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::{python, tessera_binary};

const COLUMNS: &[&str] = &[
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "timestamp",
    "source",
];
const PASSWORD: &str = "bench-password-0";

/// Adds the analyst `bench` (kept between runs) and starts `tessera serve` on loopback;
/// returns the server and its gRPC address.
pub(crate) fn start_server(
    project: &Path,
    password: &str,
) -> anyhow::Result<(std::process::Child, String)> {
    let (server, grpc, _) = start_server_with(project, password, &[])?;
    Ok((server, grpc))
}

/// [`start_server`] with environment variables for the server; also returns the HTTP
/// address.
pub(crate) fn start_server_with(
    project: &Path,
    password: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(std::process::Child, String, String)> {
    let config = std::fs::read_to_string(project.join("tessera.toml"))?;
    if !config.contains("[users.bench]") {
        let mut child = Command::new(tessera_binary()?)
            .arg("--project")
            .arg(project)
            .args([
                "user",
                "add",
                "bench",
                "--role",
                "analyst",
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(format!("{password}\n").as_bytes())?;
        if !child.wait()?.success() {
            bail!("tessera user add failed");
        }
    }
    let mut server = Command::new(tessera_binary()?)
        .arg("--project")
        .arg(project)
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = server.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut grpc, mut http) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("HTTP collector listening on http://") {
            http = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        if let Some(rest) = line.strip_prefix("gRPC listening on ") {
            grpc = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches(':')
                .to_owned();
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    if grpc.is_empty() {
        let _ = server.kill();
        bail!("tessera serve did not start");
    }
    Ok((server, grpc, http))
}

/// Python: `any_command(name, fields)`, a Flight SQL command for `pyarrow.flight`.
const ANY_COMMAND: &str = include_str!("../../../tests/clients/any_command.py");

/// Times the small statement is run on each path.
const SMALL_RUNS: u32 = 30;

pub fn run(project: &Path, runs: u32) -> anyhow::Result<()> {
    if !project.join("tessera.toml").exists() {
        bail!(
            "{} is not a project: run `tessera-bench segments` first (it builds one with 10M events), or pass --project",
            project.display()
        );
    }
    let (mut server, grpc) = start_server(project, PASSWORD)?;
    let events = project.join("tessera-data/events");
    let script = format!(
        r#"
import json, time
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.dataset as ds
from deltalake import DeltaTable
columns = {columns:?}
runs = {runs}
files = DeltaTable({events:?}).file_uris()
best_local, local_rows, local_bytes = None, 0, 0
for _ in range(runs):
    t = time.perf_counter()
    table = ds.dataset(files, format="parquet").to_table(columns=columns)
    secs = time.perf_counter() - t
    best_local = secs if best_local is None else min(best_local, secs)
    local_rows, local_bytes = table.num_rows, table.nbytes
del table
conn = flight_sql.connect("grpc://{grpc}", db_kwargs={{"username": "bench", "password": {password:?}}})
best_flight, flight_rows, flight_bytes = None, 0, 0
for _ in range(runs):
    cur = conn.cursor()
    t = time.perf_counter()
    cur.execute("SELECT " + ", ".join(columns) + " FROM events")
    table = cur.fetch_arrow_table()
    secs = time.perf_counter() - t
    best_flight = secs if best_flight is None else min(best_flight, secs)
    flight_rows, flight_bytes = table.num_rows, table.nbytes
    cur.close()
# A small statement, {small} times: the whole statement through ADBC, and its calls apart
# through pyarrow.flight: GetFlightInfo plans it, DoGet runs that plan; the same ticket
# redeemed a second time is planned again, as every DoGet was before plans were kept.
import statistics
import pyarrow.flight as fl
{any_command}
small_sql = "SELECT type, count(*) AS n FROM events GROUP BY type"
statement, info_ms, get_ms, again_ms = [], [], [], []
for _ in range({small}):
    cur = conn.cursor()
    t = time.perf_counter()
    cur.execute(small_sql)
    cur.fetch_arrow_table()
    statement.append((time.perf_counter() - t) * 1000)
    cur.close()
raw = fl.FlightClient("grpc://{grpc}")
options = fl.FlightCallOptions(headers=[raw.authenticate_basic_token("bench", {password:?})])
query = fl.FlightDescriptor.for_command(any_command("CommandStatementQuery", [(1, small_sql.encode())]))
for _ in range({small}):
    t = time.perf_counter()
    info = raw.get_flight_info(query, options)
    t1 = time.perf_counter()
    raw.do_get(info.endpoints[0].ticket, options).read_all()
    t2 = time.perf_counter()
    raw.do_get(info.endpoints[0].ticket, options).read_all()
    t3 = time.perf_counter()
    info_ms.append((t1 - t) * 1000)
    get_ms.append((t2 - t1) * 1000)
    again_ms.append((t3 - t2) * 1000)
small = {{"statement": statistics.median(statement), "info": statistics.median(info_ms), "get": statistics.median(get_ms), "again": statistics.median(again_ms)}}
print(json.dumps({{"local": [best_local, local_rows, local_bytes], "flight": [best_flight, flight_rows, flight_bytes], "files": len(files), "small": small}}))
"#,
        columns = COLUMNS,
        events = events.to_string_lossy(),
        password = PASSWORD,
        small = SMALL_RUNS,
        any_command = ANY_COMMAND,
    );
    let out = Command::new(python()?).arg("-c").arg(&script).output();
    let _ = server.kill();
    let _ = server.wait();
    let out = out?;
    if !out.status.success() {
        bail!("clients failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let side = |k: &str| -> (f64, u64, u64) {
        (
            v[k][0].as_f64().unwrap_or(f64::NAN),
            v[k][1].as_u64().unwrap_or(0),
            v[k][2].as_u64().unwrap_or(0),
        )
    };
    let (local_secs, local_rows, local_bytes) = side("local");
    let (flight_secs, flight_rows, flight_bytes) = side("flight");
    let mb = |bytes: u64, secs: f64| bytes as f64 / 1e6 / secs;
    println!(
        "{} columns of `events` ({} Parquet files), best of {runs}:",
        COLUMNS.len(),
        v["files"]
    );
    println!(
        "  pyarrow local read: {local_rows} rows, {:.0} MB in {local_secs:.3} s = {:.0} MB/s",
        local_bytes as f64 / 1e6,
        mb(local_bytes, local_secs)
    );
    println!(
        "  Flight SQL (ADBC over loopback): {flight_rows} rows, {:.0} MB in {flight_secs:.3} s = {:.0} MB/s",
        flight_bytes as f64 / 1e6,
        mb(flight_bytes, flight_secs)
    );
    println!(
        "  Flight / local = {:.2} in MB/s (goal ≥ 0.5), {:.2} in rows/s (the two sides' Arrow types differ in size)",
        mb(flight_bytes, flight_secs) / mb(local_bytes, local_secs),
        local_secs / flight_secs
    );
    let ms = |k: &str| v["small"][k].as_f64().unwrap_or(f64::NAN);
    println!(
        "  a small statement (`SELECT type, count(*) ... GROUP BY type`), median of {SMALL_RUNS}: {:.1} ms through ADBC; GetFlightInfo (plans) {:.1} ms, DoGet (runs that plan) {:.1} ms, the same ticket again (plans anew, as every DoGet did before) {:.1} ms: GetFlightInfo + DoGet {:.1} ms vs {:.1} ms planning twice ({:.2}x)",
        ms("statement"),
        ms("info"),
        ms("get"),
        ms("again"),
        ms("info") + ms("get"),
        ms("info") + ms("again"),
        (ms("info") + ms("again")) / (ms("info") + ms("get"))
    );
    if local_rows != flight_rows {
        bail!("row counts differ: local {local_rows}, Flight {flight_rows}");
    }
    Ok(())
}
