//! `tessera-bench privacy`: `tessera privacy erase` on a generated lake — one person,
//! then 1,000 people in one request (goal: at most 3× the time of one) — each from the
//! same scored and segmented lake, and a byte-level check afterwards that none of the
//! single person's own identifiers is left in any file under the lake root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::{ensure_data, python, tessera};

/// A project with `events` generated customers imported, stitched, scored and
/// segmented, kept as a pristine copy every measurement starts from.
fn prepare(events: u64, work: &Path) -> anyhow::Result<PathBuf> {
    let data = work.join("data");
    ensure_data(events, &data)?;
    let pristine = work.join(format!("pristine-{events}"));
    if pristine.join("ready").exists() {
        return Ok(pristine);
    }
    let project = super::fresh_project(work)?;
    // A collector flushing every 100 ms: an erasure waits two flushes for it.
    let config = project.join("tessera.toml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replace("flush_interval_ms = 2000", "flush_interval_ms = 100"),
    )?;
    super::import_channels(&project, &data)?;
    for step in [
        &["stitch", "--json"][..],
        &["predict", "--json"],
        &["segments", "refresh", "--json"],
    ] {
        eprintln!("{} ...", step[0]);
        tessera(&project, step)?;
    }
    let _ = std::fs::remove_dir_all(&pristine);
    copy(&project, &pristine)?;
    std::fs::write(pristine.join("ready"), "")?;
    Ok(pristine)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

/// `WORK/run`, a fresh copy of the pristine project.
fn restore(pristine: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let run = work.join("run");
    let _ = std::fs::remove_dir_all(&run);
    copy(pristine, &run)?;
    Ok(run)
}

fn sql(project: &Path, query: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = Command::new(super::tessera_binary()?)
        .arg("--project")
        .arg(project)
        .args(["sql", "--format", "json", query])
        .output()?;
    if !out.status.success() {
        bail!("{query}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn erase(project: &Path, subjects: &[String]) -> anyhow::Result<(serde_json::Value, f64)> {
    let mut args = vec!["privacy", "erase", "--json"];
    args.extend(subjects.iter().map(String::as_str));
    tessera(project, &args).with_context(|| format!("erasing {} subjects", subjects.len()))
}

pub fn run(events: u64, subjects: usize, work: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    let work = work.canonicalize()?;
    let pristine = prepare(events, &work)?;
    // One person known by e-mail with at least three identifiers over many days.
    let person = sql(
        &pristine,
        "WITH p AS (SELECT p.profile_id, p.email FROM profiles p JOIN identity_map m \
           ON m.profile_id = p.profile_id WHERE p.email IS NOT NULL \
           GROUP BY p.profile_id, p.email HAVING count(*) >= 3) \
         SELECT p.profile_id, p.email, count(DISTINCT e.event_date) AS days \
         FROM p JOIN profile_events e ON e.profile_id = p.profile_id \
         GROUP BY p.profile_id, p.email ORDER BY days DESC, p.profile_id LIMIT 1",
    )?;
    let person = person.first().context("a person to erase")?;
    let (profile, email) = (
        person["profile_id"].as_str().unwrap_or_default().to_owned(),
        person["email"].as_str().unwrap_or_default().to_owned(),
    );
    let own: Vec<String> = sql(
        &pristine,
        &format!(
            "SELECT m.id_value FROM identity_map m WHERE m.profile_id = '{profile}' AND NOT EXISTS \
             (SELECT 1 FROM profile_events e WHERE (e.user_id = m.id_value OR e.anonymous_id = m.id_value) \
              AND e.profile_id <> '{profile}')"
        ),
    )?
    .iter()
    .filter_map(|r| r["id_value"].as_str().map(str::to_owned))
    .chain([profile.clone()])
    .collect();
    let many: Vec<String> = sql(
        &pristine,
        &format!(
            "SELECT email FROM profiles WHERE email IS NOT NULL AND profile_id <> '{profile}' \
             ORDER BY profile_id LIMIT {}",
            subjects.saturating_sub(1)
        ),
    )?
    .iter()
    .filter_map(|r| r["email"].as_str().map(|e| format!("email:{e}")))
    .chain([format!("email:{email}")])
    .collect();
    println!(
        "lake: {events} events; the person: {} identifiers of their own, {} event days",
        own.len() - 1,
        person["days"]
    );

    let project = restore(&pristine, &work)?;
    let (one, one_secs) = erase(&project, &[format!("email:{email}")])?;
    let rows = |r: &serde_json::Value| {
        r["tables"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["rows"].as_u64()).sum::<u64>())
            .unwrap_or(0)
    };
    println!(
        "erase 1 subject:      {one_secs:>7.1} s  ({} rows, {} profiles)",
        rows(&one),
        one["profiles"]
    );
    let started = Instant::now();
    let hits = scan(&project.join("tessera-data"), &own)?;
    println!(
        "byte-level scan of every file under the lake root: {hits} occurrences of the person's \
         identifiers ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    let project = restore(&pristine, &work)?;
    let (all, many_secs) = erase(&project, &many)?;
    println!(
        "erase {} subjects: {many_secs:>7.1} s  ({} rows, {} profiles)",
        many.len(),
        rows(&all),
        all["profiles"]
    );
    for (name, r) in [("1 subject", &one), ("many", &all)] {
        let mut parts: Vec<String> = r["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["seconds"].as_f64().unwrap_or(0.0) >= 0.05)
            .map(|t| {
                format!(
                    "{} {:.1}",
                    t["table"].as_str().unwrap_or("?"),
                    t["seconds"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        parts.push(format!(
            "settle+sweep {:.1}",
            r["settle_seconds"].as_f64().unwrap_or(0.0)
        ));
        parts.push(format!(
            "expunge {:.1}",
            r["expunge_seconds"].as_f64().unwrap_or(0.0)
        ));
        println!("  where the time goes ({name}, s): {}", parts.join(", "));
    }
    println!(
        "ratio {} subjects / 1 subject: {:.2}× (goal ≤ 3×)",
        many.len(),
        many_secs / one_secs.max(1e-9)
    );
    Ok(())
}

/// Occurrences of `needles` in every file under `root` (Parquet decoded by pyarrow).
fn scan(root: &Path, needles: &[String]) -> anyhow::Result<u64> {
    let script = format!(
        r#"
import json, os, pyarrow.parquet as pq
needles = [n.lower() for n in json.loads({needles:?})]
hits = 0
for d, _, files in os.walk({root:?}):
    for f in files:
        path = os.path.join(d, f)
        if f.endswith(".parquet"):
            t = pq.read_table(path)
            blob = "\n".join(str(v) for c in t.columns for v in c.to_pylist() if v is not None)
        else:
            blob = open(path, "rb").read().decode("utf-8", "replace")
        blob = blob.lower()
        hits += sum(blob.count(n) for n in needles)
print(hits)
import os as _o, sys as _s
_s.stdout.flush()
_o._exit(0)
"#,
        needles = serde_json::to_string(needles)?,
        root = root.to_str().unwrap_or_default(),
    );
    let out = Command::new(python()?).arg("-c").arg(&script).output()?;
    if !out.status.success() {
        bail!("scan failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}
