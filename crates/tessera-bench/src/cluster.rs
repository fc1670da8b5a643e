//! `tessera-bench cluster`: the example segments and traits, and one shuffle-heavy
//! join, through `tessera sql` in-process and on a Ballista cluster of one scheduler
//! and two executors on this machine (separate `tessera cluster` processes), over the
//! same lake. Each query's rows are compared; the ratio is cluster time / in-process
//! time, best of `runs`. The `tessera` binary must be built with `--features cluster`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::tessera_binary;

/// Kills the process when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(project: &Path, args: &[&str], log: &Path) -> anyhow::Result<Process> {
    let child = Command::new(tessera_binary()?)
        .arg("--project")
        .arg(project)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    Ok(Process(child))
}

/// `tessera sql --format json QUERY`: its rows sorted, and the wall time.
fn timed_sql(project: &Path, query: &str) -> anyhow::Result<(Vec<String>, f64)> {
    let started = Instant::now();
    let out = Command::new(tessera_binary()?)
        .arg("--project")
        .arg(project)
        .args(["sql", "--format", "json", query])
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{query}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    rows.sort();
    Ok((rows, secs))
}

/// Whether two results are the same rows: fields that are not floats exactly, floats to
/// 12 significant digits, or one cent apart for a value rounded to cents whose sum sits
/// on a half cent (a float sum's last bits depend on the order its parts are added in).
/// The rule of the cluster test (`tessera-cli/tests/it/cluster.rs`).
fn same(a: &[String], b: &[String]) -> bool {
    let parse = |rows: &[String]| -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut out: Vec<_> = rows
            .iter()
            .map(|r| serde_json::from_str(r).unwrap_or_default())
            .collect();
        // Ordered by the exact fields, so that float noise cannot reorder rows.
        out.sort_by_cached_key(|m: &serde_json::Map<String, serde_json::Value>| {
            m.iter()
                .filter(|(_, v)| !v.is_f64())
                .map(|(k, v)| format!("{k}={v},"))
                .collect::<String>()
        });
        out
    };
    let close = |x: &serde_json::Value, y: &serde_json::Value| match (x.as_f64(), y.as_f64()) {
        (Some(x), Some(y)) => {
            let cents = |v: f64| ((v * 100.0).round() - v * 100.0).abs() < 1e-6;
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
                || (cents(x) && cents(y) && (x - y).abs() <= 0.010_000_1)
        }
        _ => x == y,
    };
    let (a, b) = (parse(a), parse(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().all(|(k, v)| {
                    y.get(k).is_some_and(|w| {
                        if v.is_f64() || w.is_f64() {
                            close(v, w)
                        } else {
                            v == w
                        }
                    })
                })
        })
}

/// The queries: each example segment and trait, and a self-join with a large shuffle.
fn queries(project: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for dir in ["segments", "traits"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(project.join("sql").join(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        for f in files {
            let sql = std::fs::read_to_string(&f)?;
            let name = format!(
                "{dir}/{}",
                f.file_stem().unwrap_or_default().to_string_lossy()
            );
            out.push((name, format!("SELECT * FROM ({sql}\n) AS q")));
        }
    }
    out.push((
        "self-join on anonymous_id".into(),
        "SELECT count(*) AS n FROM events AS a JOIN events AS b ON a.anonymous_id = b.anonymous_id"
            .into(),
    ));
    Ok(out)
}

pub fn run(events: u64, runs: u32, work: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    let work = work.canonicalize()?;
    let (project, as_of) = super::segments::prepare(events, &work)?;
    let lake = project.join("tessera-data");

    // The cluster: one scheduler, two executors (one task per core each).
    let logs = work.join("cluster-logs");
    std::fs::create_dir_all(&logs)?;
    let port = free_port()?;
    let scheduler = format!("127.0.0.1:{port}");
    let _scheduler = spawn(
        &project,
        &["cluster", "scheduler", "--listen", &scheduler],
        &logs.join("scheduler.log"),
    )?;
    let started = Instant::now();
    while std::net::TcpStream::connect(&scheduler).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "the scheduler did not start (is {} built with --features cluster?): {}",
                tessera_binary()?.display(),
                std::fs::read_to_string(logs.join("scheduler.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut executors = Vec::new();
    for id in ["bench-a", "bench-b"] {
        let (flight, grpc) = (free_port()?.to_string(), free_port()?.to_string());
        let dir = work.join("cluster-work").join(id);
        executors.push(spawn(
            &project,
            &[
                "cluster",
                "executor",
                "--scheduler",
                &scheduler,
                "--port",
                &flight,
                "--grpc-port",
                &grpc,
                "--work-dir",
                dir.to_str().context("a UTF-8 work folder")?,
                "--id",
                id,
            ],
            &logs.join(format!("{id}.log")),
        )?);
    }
    std::thread::sleep(Duration::from_secs(2));

    // The same project on the cluster.
    let remote = work.join("cluster-project");
    let _ = std::fs::remove_dir_all(&remote);
    std::fs::create_dir_all(&remote)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(project.join("sql"))
        .arg(&remote)
        .status()?;
    if !status.success() {
        bail!("copying the project's sql folder");
    }
    let config = std::fs::read_to_string(project.join("tessera.toml"))?
        .replace(
            "url = \"tessera-data\"",
            &format!("url = \"{}\"", lake.display()),
        )
        .replace(
            "# cluster = \"df://127.0.0.1:50050\"",
            &format!("cluster = \"df://{scheduler}\""),
        );
    std::fs::write(remote.join("tessera.toml"), config)?;

    println!(
        "{events} events (as of {as_of}): in-process vs a scheduler and two executors on this machine, best of {runs} runs"
    );
    println!(
        "| query | rows | in-process s | cluster s | cluster / in-process |\n| --- | ---: | ---: | ---: | ---: |"
    );
    let (mut local_sum, mut cluster_sum) = (0.0, 0.0);
    for (name, query) in queries(&project)? {
        let (mut local_best, mut cluster_best) = (f64::MAX, f64::MAX);
        let mut rows = 0;
        for _ in 0..runs.max(1) {
            let (here, l) = timed_sql(&project, &query)?;
            let (there, c) = timed_sql(&remote, &query)
                .with_context(|| format!("{name} on the cluster (logs in {})", logs.display()))?;
            if !same(&here, &there) {
                bail!(
                    "{name}: {} rows in-process, {} on the cluster, not the same",
                    here.len(),
                    there.len()
                );
            }
            rows = here.len();
            local_best = local_best.min(l);
            cluster_best = cluster_best.min(c);
        }
        local_sum += local_best;
        cluster_sum += cluster_best;
        println!(
            "| {name} | {rows} | {local_best:.2} | {cluster_best:.2} | {:.2}× |",
            cluster_best / local_best
        );
    }
    println!(
        "| **sum** | | {local_sum:.2} | {cluster_sum:.2} | {:.2}× |",
        cluster_sum / local_sum
    );
    drop(executors);
    Ok(())
}
