//! `tessera-bench activate`: delivering a large audience to a webhook receiver on
//! loopback. A generated segment of `members` profiles, a sync to a receiver that
//! verifies every Standard Webhooks signature (PyPI `standardwebhooks`) and counts the
//! events; `tessera activate plan` and `tessera activate run` (the release binary),
//! timed apart. [`export`] does the same for a file destination on S3, with DuckDB's
//! `COPY ... TO` of the same rows as the reference.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::{python, tessera_binary};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const RECEIVER: &str = r#"
import json, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from standardwebhooks.webhooks import Webhook
wh = Webhook(sys.argv[1])
lock = threading.Lock()
seen = {"events": 0, "requests": 0, "bad": 0, "bytes": 0}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        body = json.dumps(seen).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            batch = wh.verify(body, dict(self.headers))["batch"]
            ok = True
        except Exception:
            ok = False
        with lock:
            seen["requests"] += 1
            seen["bytes"] += len(body)
            if ok:
                seen["events"] += len(batch)
            else:
                seen["bad"] += 1
        self.send_response(200 if ok else 401); self.send_header("content-length", "0"); self.end_headers()
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// A fresh project whose one segment, `everyone`, has `members` generated members.
fn everyone(members: u64, work: &Path) -> anyhow::Result<std::path::PathBuf> {
    let project = super::fresh_project(work)?;
    let segments = project.join("sql/segments");
    std::fs::remove_dir_all(&segments)?;
    std::fs::create_dir_all(&segments)?;
    std::fs::write(
        segments.join("everyone.sql"),
        format!(
            "SELECT 'p_' || lpad(CAST(value AS VARCHAR), 9, '0') AS profile_id FROM generate_series(1, {members})\n"
        ),
    )?;
    Ok(project)
}

pub fn run(members: u64, work: &Path) -> anyhow::Result<()> {
    let project = everyone(members, work)?;
    let refresh = Command::new(tessera_binary()?)
        .arg("--project")
        .arg(&project)
        .args(["segments", "refresh"])
        .stdout(Stdio::null())
        .status()?;
    if !refresh.success() {
        bail!("tessera segments refresh failed");
    }
    let mut receiver = Command::new(python()?)
        .arg("-c")
        .arg(RECEIVER)
        .arg(SECRET)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(receiver.stdout.take().context("receiver stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse().context("the receiver's port")?;
    let mut toml = std::fs::OpenOptions::new()
        .append(true)
        .open(project.join("tessera.toml"))?;
    write!(
        toml,
        "\n[destinations.bench]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_env = [\"BENCH_HOOK_SECRET\"]\nbatch_size = 500\nconcurrency = 4\n\n[syncs.everyone]\nsegment = \"everyone\"\ndestination = \"bench\"\n"
    )?;
    drop(toml);
    let started = Instant::now();
    let planned = Command::new(tessera_binary()?)
        .arg("--project")
        .arg(&project)
        .args(["activate", "plan"])
        .env("BENCH_HOOK_SECRET", SECRET)
        .output()?;
    if !planned.status.success() {
        bail!(
            "tessera activate plan failed: {}",
            String::from_utf8_lossy(&planned.stderr)
        );
    }
    let plan_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let out = Command::new(tessera_binary()?)
        .arg("--project")
        .arg(&project)
        .args(["activate", "run", "--wait", "60s", "--json"])
        .env("BENCH_HOOK_SECRET", SECRET)
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    let counts: serde_json::Value = {
        let addr = format!("127.0.0.1:{port}");
        let mut stream = std::net::TcpStream::connect(&addr)?;
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text)?;
        serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("{}"))?
    };
    let _ = receiver.kill();
    let _ = receiver.wait();
    if !out.status.success() {
        bail!(
            "tessera activate run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let delivered = report["delivered"][0]["members"].as_u64().unwrap_or(0);
    println!(
        "activation: a segment of {members} members to a webhook receiver on loopback (Python, standardwebhooks verifying every request), batches of 500, 4 in flight, client and receiver on the same 2 cores"
    );
    println!("| measure | value |");
    println!("| --- | ---: |");
    println!(
        "| members delivered (receiver's count) | {} |",
        counts["events"]
    );
    println!(
        "| requests / signature failures | {} / {} |",
        counts["requests"], counts["bad"]
    );
    println!(
        "| bytes sent | {} MB |",
        counts["bytes"].as_u64().unwrap_or(0) >> 20
    );
    println!(
        "| `tessera activate plan` (read the audience, write the ledger) | {plan_secs:.2} s |"
    );
    println!("| `tessera activate run` (read the ledger, deliver everything) | {secs:.2} s |");
    println!("| members/s delivered | {:.0} |", delivered as f64 / secs);
    println!(
        "| members/s, plan + deliver | {:.0} |",
        delivered as f64 / (secs + plan_secs)
    );
    println!(
        "goal >= 50,000 members/s: {}",
        if delivered as f64 / secs >= 50_000.0 {
            "met"
        } else {
            "not met"
        }
    );
    Ok(())
}

/// DuckDB writes the same rows as the file destination from the lake's
/// `audience_membership` (Delta, through its delta extension) to the same S3 server.
const DUCKDB_COPY: &str = r#"
import glob, json, os, site, sys, time
import duckdb
ep, lake, members = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
for name in ("httpfs", "delta"):
    con.execute("LOAD '%s'" % glob.glob(os.path.join(site.getsitepackages()[0], f"duckdb_ext/extensions/*/*/{name}.duckdb_extension"))[0])
con.execute("CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', ENDPOINT '" + ep.removeprefix("http://") + "', URL_STYLE 'path', USE_SSL false)")
query = f"""
SELECT profile_id, 'entered' AS change, refresh_version, since AS changed_at,
       CAST(NULL AS VARCHAR) AS merged_into,
       left(sha256('bucket' || chr(31) || 'everyone' || chr(31) || CAST(refresh_version AS VARCHAR) || chr(31) || profile_id || chr(31) || 'entered'), 32) AS message_id,
       CAST(NULL AS VARCHAR) AS user_id
FROM delta_scan('{lake}/audience_membership') WHERE segment = 'everyone' ORDER BY profile_id
"""
times = []
for i in range(3):
    t = time.perf_counter()
    con.execute(f"COPY ({query}) TO 's3://bench/duckdb/everyone-{i}.parquet' (FORMAT parquet, COMPRESSION snappy)")
    times.append(time.perf_counter() - t)
tessera = "s3://bench/tessera/everyone/everyone/v=*/full/part-*.parquet"
rows = con.execute(f"SELECT count(*) FROM read_parquet('{tessera}')").fetchone()[0]
same = con.execute(f"SELECT count(*) FROM read_parquet('{tessera}') t JOIN read_parquet('s3://bench/duckdb/everyone-0.parquet') d USING (profile_id, change, refresh_version, changed_at, message_id)").fetchone()[0]
print(json.dumps({"seconds": times, "tessera_rows": rows, "same_rows": same}))
"#;

/// `tessera-bench export`: a `members`-member audience exported to Parquet on S3.
pub fn export(members: u64, work: &Path) -> anyhow::Result<()> {
    let project = everyone(members, work)?;
    let tessera = |args: &[&str], ep: Option<&str>| -> anyhow::Result<(f64, String)> {
        let mut c = Command::new(tessera_binary()?);
        c.arg("--project").arg(&project).args(args);
        if let Some(ep) = ep {
            c.env("AWS_ENDPOINT_URL", ep)
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1");
        }
        let started = Instant::now();
        let out = c.output()?;
        if !out.status.success() {
            bail!(
                "tessera {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    tessera(&["segments", "refresh"], None)?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let py = python()?;
    let mut moto = Command::new(py.with_file_name("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting moto_server")?;
    let ep = format!("http://127.0.0.1:{port}");
    let result = (|| -> anyhow::Result<()> {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed().as_secs() > 30 {
                bail!("moto_server did not start");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let made = Command::new(&py)
            .arg("-c")
            .arg(format!("import boto3; boto3.client('s3', endpoint_url='{ep}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='bench')"))
            .status()?;
        if !made.success() {
            bail!("creating the bucket failed");
        }
        let mut toml = std::fs::OpenOptions::new()
            .append(true)
            .open(project.join("tessera.toml"))?;
        write!(
            toml,
            "\n[destinations.bucket]\nkind = \"file\"\nurl = \"s3://bench/tessera\"\n\n[syncs.everyone]\nsegment = \"everyone\"\ndestination = \"bucket\"\n"
        )?;
        drop(toml);
        let (plan_secs, _) = tessera(&["activate", "plan"], Some(&ep))?;
        let (export_secs, out) = tessera(&["activate", "run", "--json"], Some(&ep))?;
        let report: serde_json::Value = serde_json::from_str(out.trim())?;
        let exported = report["delivered"][0]["members"].as_u64().unwrap_or(0);
        // The same run again (`resend`): written over, byte for byte.
        tessera(&["activate", "resend", "everyone"], Some(&ep))?;
        let (again_secs, _) = tessera(&["activate", "run", "--json"], Some(&ep))?;
        let lake = project.join("tessera-data");
        let out = Command::new(&py)
            .arg("-c")
            .arg(DUCKDB_COPY)
            .args([ep.as_str(), &lake.to_string_lossy(), &members.to_string()])
            .output()?;
        if !out.status.success() {
            bail!("DuckDB: {}", String::from_utf8_lossy(&out.stderr));
        }
        let duck: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let duck_secs: Vec<f64> = duck["seconds"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        let duck_best = duck_secs.iter().copied().fold(f64::INFINITY, f64::min);
        let tessera_best = export_secs.min(again_secs);
        println!(
            "export: an audience of {members} members to Parquet (Snappy) on S3 (moto on loopback), Tessera's file destination vs DuckDB 1.4.4 COPY ... TO of the same rows read from the lake (delta_scan), same 2 cores"
        );
        println!("| measure | value |");
        println!("| --- | ---: |");
        println!(
            "| `tessera activate plan` (read the audience, write the ledger) | {plan_secs:.2} s |"
        );
        println!(
            "| `tessera activate run` (read the ledger, join traits, encode, PUT, manifest, _SUCCESS), first / rewrite | {export_secs:.2} s / {again_secs:.2} s |"
        );
        println!(
            "| members exported / read back by DuckDB | {exported} / {} |",
            duck["tessera_rows"]
        );
        println!(
            "| rows identical to DuckDB's (profile, change, version, time, message_id) | {} |",
            duck["same_rows"]
        );
        println!(
            "| DuckDB COPY ... TO s3:// (3 runs) | {} |",
            duck_secs
                .iter()
                .map(|s| format!("{s:.2} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let ratio = duck_best / tessera_best;
        println!(
            "| ratio DuckDB / Tessera (best runs; > 1 means Tessera is faster) | {ratio:.2} |"
        );
        println!(
            "goal ratio >= 1.0: {}",
            if ratio >= 1.0 { "met" } else { "not met" }
        );
        Ok(())
    })();
    let _ = moto.kill();
    let _ = moto.wait();
    result
}
