//! `tessera-bench activate`: delivering a large audience to a webhook receiver on
//! loopback. A generated segment of `members` profiles, a sync to a receiver that
//! verifies every Standard Webhooks signature (PyPI `standardwebhooks`) and counts the
//! events; `tessera activate run` (the release binary) plans and delivers, timed as a
//! whole and per phase.

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

pub fn run(members: u64, work: &Path) -> anyhow::Result<()> {
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
    println!("| `tessera activate run` wall time (plan + deliver) | {secs:.2} s |");
    println!("| members/s, end to end | {:.0} |", delivered as f64 / secs);
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
