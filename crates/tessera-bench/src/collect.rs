//! `tessera-bench collect`: sustained ingest over loopback into `tessera serve`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::tessera_binary;

const EVENTS_PER_BATCH: usize = 100;
pub(crate) const KEY: &str = "wk_bench_0123456789";

/// A batch body whose message ids are patched in place per request.
pub(crate) struct Template {
    pub(crate) body: Vec<u8>,
    /// Offsets of the 16 hex digits of each event's request counter.
    slots: Vec<usize>,
}

pub(crate) fn template(client: usize) -> Template {
    let mut body = String::from(r#"{"batch":["#);
    let mut slots = Vec::new();
    for i in 0..EVENTS_PER_BATCH {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"type":"track","messageId":"m-"#);
        slots.push(body.len());
        body.push_str(&format!(
            r#"0000000000000000-{client:03}-{i:03}","anonymousId":"a-{client}-{i}","userId":"u{i}","event":"Product Viewed","properties":{{"product_id":"SKU-{i:04}","category":"shoes","price":49.99,"currency":"USD"}},"context":{{"library":{{"name":"analytics-python","version":"2.4.0"}},"ip":"10.0.0.{i}","userAgent":"Mozilla/5.0 (X11; Linux x86_64)"}},"timestamp":"2026-11-29T10:00:00.000Z"}}"#
        ));
    }
    body.push_str(r#"],"sentAt":"2026-11-29T10:00:00.100Z"}"#);
    Template {
        body: body.into_bytes(),
        slots,
    }
}

impl Template {
    pub(crate) fn stamp(&mut self, counter: u64) {
        let hex = format!("{counter:016x}");
        for &s in &self.slots {
            self.body[s..s + 16].copy_from_slice(hex.as_bytes());
        }
    }
}

pub(crate) fn auth() -> String {
    let raw = format!("{KEY}:");
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                table[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    format!("Basic {out}")
}

/// Sends one request on a keep-alive connection; returns the status.
pub(crate) fn send(
    stream: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    auth: &str,
    body: &[u8],
) -> std::io::Result<u16> {
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let s = stream.get_mut();
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(status)
}

fn rss_of(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}

/// Adds the benchmark's write key (source `bench`) to a project once.
pub(crate) fn add_source(project: &Path) -> anyhow::Result<()> {
    let toml = project.join("tessera.toml");
    let text = std::fs::read_to_string(&toml)?;
    if !text.contains(KEY) {
        std::fs::write(
            &toml,
            text.replacen(
                "[sources.web]",
                &format!("[sources.bench]\nwrite_key = \"{KEY}\"\n\n[sources.web]"),
                1,
            ),
        )?;
    }
    Ok(())
}

pub fn run(clients: usize, seconds: u64, work: &Path) -> anyhow::Result<()> {
    let project = super::fresh_project(work)?;
    add_source(&project)?;
    let mut server = Command::new(tessera_binary()?)
        .arg("--project")
        .arg(&project)
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(server.stdout.take().context("server stdout")?).lines();
    let first = lines.next().context("server output")??;
    let addr: SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no address")?
        .parse()?;
    std::thread::spawn(move || for _ in lines {});
    let pid = server.id();

    // The parse-only ceiling: serde_json over the same payloads, every core.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let parse_secs = 3.0;
    let parsed = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for c in 0..cores {
            let parsed = parsed.clone();
            scope.spawn(move || {
                let mut t = template(c);
                let started = Instant::now();
                let mut n = 0u64;
                while started.elapsed().as_secs_f64() < parse_secs {
                    t.stamp(n);
                    let v: serde_json::Value = serde_json::from_slice(&t.body).unwrap_or_default();
                    n += v["batch"].as_array().map_or(0, |b| b.len() as u64);
                }
                parsed.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    let ceiling = parsed.load(Ordering::Relaxed) as f64 / parse_secs;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let started = Instant::now();
    let latencies: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, sent, failures, refused) = (
                    stop.clone(),
                    sent.clone(),
                    failures.clone(),
                    refused.clone(),
                );
                scope.spawn(move || {
                    let auth = auth();
                    let mut t = template(c);
                    let mut lat = Vec::new();
                    let Ok(stream) = TcpStream::connect(addr) else {
                        return lat;
                    };
                    let _ = stream.set_nodelay(true);
                    let mut stream = BufReader::new(stream);
                    let mut n = 0u64;
                    'batches: while !stop.load(Ordering::Relaxed) {
                        t.stamp(n);
                        n += 1;
                        let t0 = Instant::now();
                        // As the SDKs do: a 503 is retried (same body, same ids) after
                        // its Retry-After (1 s).
                        loop {
                            match send(&mut stream, addr, &auth, &t.body) {
                                Ok(200) => {
                                    lat.push(t0.elapsed().as_micros() as u32);
                                    sent.fetch_add(EVENTS_PER_BATCH as u64, Ordering::Relaxed);
                                    break;
                                }
                                Ok(503) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    if stop.load(Ordering::Relaxed) {
                                        break 'batches;
                                    }
                                    std::thread::sleep(Duration::from_secs(1));
                                }
                                _ => {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                    break 'batches;
                                }
                            }
                        }
                    }
                    lat
                })
            })
            .collect();
        while started.elapsed().as_secs() < seconds {
            std::thread::sleep(Duration::from_secs(1).min(Duration::from_secs(seconds)));
            samples.push((started.elapsed().as_secs_f64(), rss_of(pid, "VmRSS:")));
        }
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let events = sent.load(Ordering::Relaxed);
    let peak = rss_of(pid, "VmHWM:");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();
    // Every acknowledged event must be in the lake once.
    let (landed, _) = super::tessera(
        &project,
        &[
            "sql",
            "--format",
            "json",
            "SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM events",
        ],
    )?;
    let row = landed;
    let mut all: Vec<u32> = latencies.into_iter().flatten().collect();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let rate = events as f64 / secs;
    let first_half: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t <= secs / 2.0)
        .map(|s| s.1)
        .collect();
    let second_half: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t > secs / 2.0)
        .map(|s| s.1)
        .collect();
    let max = |v: &[u64]| v.iter().max().copied().unwrap_or(0) >> 20;
    println!(
        "collector benchmark: {clients} clients × batches of {EVENTS_PER_BATCH} events over loopback, {secs:.0} s, {cores} cores (clients and server share them)"
    );
    println!("| measure | value |");
    println!("| --- | ---: |");
    println!("| events acknowledged (fsynced to the WAL) | {events} |");
    println!(
        "| in `events` afterwards: rows / distinct message ids | {} / {} |",
        row["n"], row["d"]
    );
    println!("| throughput | {rate:.0} events/s |");
    println!(
        "| ack latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        pct(0.5) as f64 / 1e3,
        pct(0.99) as f64 / 1e3,
        all.last().copied().unwrap_or(0) as f64 / 1e3
    );
    println!("| server peak RSS | {} MB |", peak >> 20);
    println!(
        "| server RSS max, first half / second half | {} / {} MB |",
        max(&first_half),
        max(&second_half)
    );
    println!(
        "| requests refused with 503 + Retry-After (retried) | {} |",
        refused.load(Ordering::Relaxed)
    );
    println!("| failed requests | {} |", failures.load(Ordering::Relaxed));
    println!(
        "| serde_json parse-only ceiling (same payloads, {cores} threads) | {ceiling:.0} events/s |"
    );
    println!("ratio to the parse-only ceiling: {:.2}", rate / ceiling);
    let (first, second) = (max(&first_half), max(&second_half));
    println!(
        "RSS max of the second half / the first: {:.2}",
        second as f64 / first.max(1) as f64
    );
    if row["n"].as_u64() != Some(events) || row["d"].as_u64() != Some(events) {
        anyhow::bail!(
            "{events} events were acknowledged but events holds {} rows, {} distinct",
            row["n"],
            row["d"]
        );
    }
    Ok(())
}
