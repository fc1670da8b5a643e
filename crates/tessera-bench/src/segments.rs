//! `tessera-bench segments`: the example segments over generated customers, Tessera's
//! refresh vs DuckDB running the same SQL on the same Parquet files, side by side.
//!
//! DuckDB gets the lake's current Parquet files as views (`events`, `identity_map`,
//! `profiles`, `audience_membership`), the same `profile_events` view, and macros for
//! Tessera's functions (`as_of`, `days_since`, `within_days`, `in_segment`) so that each
//! segment file runs unchanged. Both sides materialize the distinct member ids.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use super::{ensure_data, python, tessera};

/// A project with `events` generated customers imported and stitched (kept between
/// runs of the benchmark; `ready` marks a finished setup).
/// The benchmark's stitched project (built on first use) with its segments refreshed.
pub(crate) fn prepared(events: u64, work: &Path) -> anyhow::Result<std::path::PathBuf> {
    let (project, _) = prepare(events, work)?;
    tessera(&project, &["segments", "refresh", "--json"])?;
    Ok(project)
}

/// A project of `events` generated events imported, stitched and scored (made once per
/// work folder), and its `as_of`.
pub(crate) fn prepare(events: u64, work: &Path) -> anyhow::Result<(std::path::PathBuf, String)> {
    let data = work.join("data");
    let end = ensure_data(events, &data)?;
    let as_of = format!("{end}T23:59:59Z");
    let project = work.join("project");
    let marker = project.join(format!("ready-scored-{events}"));
    if marker.exists() {
        return Ok((project, as_of));
    }
    let project = super::fresh_project(work)?;
    let config = project.join("tessera.toml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replace(
            "# as_of = \"2026-10-31T23:59:59Z\"",
            &format!("as_of = \"{as_of}\""),
        ),
    )?;
    super::import_channels(&project, &data)?;
    eprintln!("stitching ...");
    let (_, secs) = tessera(&project, &["stitch", "--json"])?;
    eprintln!("stitched in {secs:.1} s");
    // The example segments over `profile_scores` need scores.
    eprintln!("scoring ...");
    let (_, secs) = tessera(&project, &["predict", "--json"])?;
    eprintln!("scored in {secs:.1} s");
    std::fs::write(&marker, "")?;
    Ok((project, as_of))
}

fn events_files(project: &Path) -> anyhow::Result<(u64, u64)> {
    let (tables, _) = tessera(project, &["tables", "--json"])?;
    let events = tables
        .as_array()
        .and_then(|a| a.iter().find(|t| t["table"] == "events"))
        .context("events in tessera tables")?;
    Ok((
        events["files"].as_u64().unwrap_or(0),
        events["bytes"].as_u64().unwrap_or(0),
    ))
}

pub fn run(events: u64, runs: u32, work: &Path, optimize: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    let (project, as_of) = prepare(events, work)?;
    let (files, bytes) = events_files(&project)?;
    println!(
        "events: {files} files, {:.1} MB (average {:.0} KB)",
        bytes as f64 / 1e6,
        bytes as f64 / 1e3 / files.max(1) as f64
    );
    if optimize {
        let (_, secs) = tessera(&project, &["optimize", "--json"])?;
        let (files, bytes) = events_files(&project)?;
        println!(
            "after tessera optimize ({secs:.1} s): events {files} files, {:.1} MB (average {:.0} KB)",
            bytes as f64 / 1e6,
            bytes as f64 / 1e3 / files.max(1) as f64
        );
    }
    let (tables, _) = tessera(&project, &["tables", "--json"])?;
    let rows = |name: &str| {
        tables
            .as_array()
            .and_then(|a| a.iter().find(|t| t["table"] == name))
            .and_then(|t| t["rows"].as_u64())
            .unwrap_or(0)
    };
    println!(
        "segments over {} events, {} profiles (as of {as_of}), best of {runs} runs",
        rows("events"),
        rows("profiles")
    );

    // Tessera: forced refreshes of every segment; per-segment evaluation time.
    let mut tessera_secs: BTreeMap<String, f64> = BTreeMap::new();
    let mut members: BTreeMap<String, u64> = BTreeMap::new();
    let mut wall = f64::MAX;
    for _ in 0..runs.max(1) {
        let (report, secs) = tessera(&project, &["segments", "refresh", "--force", "--json"])?;
        wall = wall.min(secs);
        for s in report["segments"].as_array().context("refresh report")? {
            let name = s["segment"].as_str().unwrap_or_default().to_owned();
            let t = s["seconds"].as_f64().unwrap_or(0.0);
            let e = tessera_secs.entry(name.clone()).or_insert(f64::MAX);
            *e = e.min(t);
            members.insert(name, s["members"].as_u64().unwrap_or(0));
        }
    }
    let (unchanged, unchanged_secs) = tessera(&project, &["segments", "refresh", "--json"])?;
    if unchanged["written"] != false {
        bail!("a refresh with nothing new wrote something: {unchanged}");
    }

    // DuckDB: the same files, the same SQL.
    let python = python()?;
    let lake = project.join("tessera-data");
    let segments_dir = project.join("sql/segments");
    let script = format!(
        r#"
import json, os, time, duckdb
from deltalake import DeltaTable
lake = {lake:?}
seg_dir = {segments:?}
runs = {runs}
con = duckdb.connect()
con.execute("SET threads = {threads}")
for t in ["events", "identity_map", "profiles", "audience_membership", "scores"]:
    files = DeltaTable(os.path.join(lake, t)).file_uris()
    files_sql = "[" + ", ".join("'" + f + "'" for f in files) + "]"
    con.execute(f"CREATE VIEW {{t}} AS SELECT * FROM read_parquet({{files_sql}}, hive_partitioning = true)")
con.execute("""CREATE VIEW profile_events AS
SELECT m.profile_id, e.*
FROM events AS e
LEFT JOIN identity_map AS m
  ON m.id_type = CASE WHEN e.user_id IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' END
 AND m.id_value = trim(coalesce(e.user_id, e.anonymous_id))""")
con.execute({profile_scores:?})
con.execute("CREATE MACRO as_of() AS TIMESTAMPTZ '{as_of}'")
con.execute("CREATE MACRO days_since(ts) AS CAST(floor((epoch_us(as_of()) - epoch_us(ts)) / 86400000000.0) AS BIGINT)")
con.execute("CREATE MACRO within_days(ts, n) AS (epoch_us(ts) > epoch_us(as_of()) - CAST(n * 86400000000 AS BIGINT) AND ts <= as_of())")
con.execute("CREATE MACRO in_segment(pid, seg) AS pid IN (SELECT profile_id FROM audience_membership WHERE segment = seg)")
out = {{}}
for f in sorted(os.listdir(seg_dir)):
    if not f.endswith(".sql"):
        continue
    sql = open(os.path.join(seg_dir, f)).read()
    best = None
    for _ in range(runs):
        t = time.perf_counter()
        con.execute(f"CREATE OR REPLACE TEMP TABLE r AS SELECT DISTINCT profile_id FROM ({{sql}}) AS s WHERE profile_id IS NOT NULL")
        secs = time.perf_counter() - t
        best = secs if best is None else min(best, secs)
    n = con.execute("SELECT count(*) FROM r").fetchone()[0]
    out[f[:-4]] = {{"secs": best, "members": n}}
print(json.dumps(out))
"#,
        lake = lake.to_string_lossy(),
        segments = segments_dir.to_string_lossy(),
        profile_scores = tessera_engine::profile_scores_view(),
        threads = std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    let out = Command::new(&python).arg("-c").arg(&script).output()?;
    if !out.status.success() {
        bail!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout)?;

    println!(
        "{:<22} {:>10} {:>10} {:>11} {:>11} {:>7}",
        "segment", "members", "duckdb", "tessera s", "duckdb s", "ratio"
    );
    let (mut total_t, mut total_d) = (0.0, 0.0);
    let mut worst: f64 = 0.0;
    for (name, t) in &tessera_secs {
        let d = duck[name]["secs"].as_f64().unwrap_or(f64::NAN);
        let dm = duck[name]["members"].as_u64().unwrap_or(0);
        let m = members.get(name).copied().unwrap_or(0);
        total_t += t;
        total_d += d;
        worst = worst.max(t / d);
        println!(
            "{name:<22} {m:>10} {dm:>10} {t:>11.3} {d:>11.3} {:>7.2}{}",
            t / d,
            if m == dm { "" } else { "  MEMBERS DIFFER" }
        );
    }
    println!(
        "{:<22} {:>10} {:>10} {:>11.3} {:>11.3} {:>7.2}",
        "all (sum)",
        "",
        "",
        total_t,
        total_d,
        total_t / total_d
    );
    println!(
        "worst ratio {worst:.2} (goal <= 1.0); whole forced refresh incl. process start and commits: {wall:.2} s"
    );
    println!(
        "refresh with nothing changed: {unchanged_secs:.3} s wall (process start included), nothing written"
    );
    Ok(())
}
