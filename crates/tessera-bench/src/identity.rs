//! `tessera-bench identity`: accuracy and stitching speed.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use tessera_engine::datafusion::prelude::ParquetReadOptions;
use tessera_engine::{Engine, EngineConfig};
use tessera_lake::Lake;
use tessera_sample::accuracy;

use super::{ensure_data, python, tessera};

pub fn run(events: u64, edges: u64, splink: bool, work: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    if events > 0 {
        stitch_on_events(events, work)?;
    }
    if edges > 0 {
        components(edges, splink, work)?;
    }
    Ok(())
}

/// Splits each event file at `cut` (a timestamp prefix): older lines, then the rest.
fn split(data: &Path, out: &Path, cut: &str) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut heads = Vec::new();
    let mut tails = Vec::new();
    for name in [
        "events-web.ndjson",
        "events-app.ndjson",
        "events-pos.ndjson",
    ] {
        let reader = BufReader::new(std::fs::File::open(data.join(name))?);
        let (h, t) = (
            out.join(format!("head-{name}")),
            out.join(format!("tail-{name}")),
        );
        let mut head = BufWriter::new(std::fs::File::create(&h)?);
        let mut tail = BufWriter::new(std::fs::File::create(&t)?);
        for line in reader.lines() {
            let line = line?;
            let ts = line
                .find("\"timestamp\":\"")
                .map(|i| &line[i + 13..i + 13 + 19])
                .unwrap_or_default();
            let w = if ts < cut { &mut head } else { &mut tail };
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
        head.flush()?;
        tail.flush()?;
        heads.push(h);
        tails.push(t);
    }
    Ok((heads, tails))
}

fn stitch_on_events(events: u64, work: &Path) -> anyhow::Result<()> {
    let data = work.join("data");
    let end = ensure_data(events, &data)?;
    // The last ~1% of a year arrives later.
    let cut = format!("{}T12", end - chrono::Duration::days(3));
    let parts = work.join("parts");
    std::fs::create_dir_all(&parts)?;
    let (heads, tails) = split(&data, &parts, &cut)?;

    let project = super::fresh_project(work)?;
    let import = |files: &[PathBuf]| -> anyhow::Result<u64> {
        let mut n = 0;
        for (f, s) in files.iter().zip(["web", "app", "pos"]) {
            let (r, _) = tessera(
                &project,
                &[
                    "import",
                    "--json",
                    "--source",
                    s,
                    f.to_str().unwrap_or_default(),
                ],
            )?;
            n += r["rows_imported"].as_u64().unwrap_or(0);
        }
        Ok(n)
    };
    let head_events = import(&heads)?;
    let (full, full_secs) = tessera(&project, &["stitch", "--json"])?;
    let tail_events = import(&tails)?;
    let (inc, inc_secs) = tessera(&project, &["stitch", "--json"])?;
    let (_, rebuild_secs) = tessera(&project, &["stitch", "--json", "--full"])?;

    let rt = tokio::runtime::Runtime::new()?;
    let acc = rt.block_on(async {
        let engine = super::project_engine(&project)?;
        let (map, edges) = accuracy::load_from_lake(&engine).await?;
        let truth = accuracy::read_truth(&data.join("truth.csv"))?;
        anyhow::Ok(accuracy::evaluate(&truth, &map, &edges))
    })?;

    println!(
        "identity on generated customers: {} + {} events ({} cores)",
        head_events,
        tail_events,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "| run | events read | seconds | identifiers | edges | rejected | merges | profiles |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, r, secs, n) in [
        (
            "`tessera stitch` (first, full)",
            &full,
            full_secs,
            head_events,
        ),
        (
            "`tessera stitch` (incremental, +1%)",
            &inc,
            inc_secs,
            tail_events,
        ),
    ] {
        println!(
            "| {name} | {n} | {secs:.2} | {} | {} | {} | {} | {} |",
            r["identifiers"], r["edges"], r["edges_rejected"], r["merges"], r["profiles"]
        );
    }
    println!(
        "| `tessera stitch --full` (all) | {} | {rebuild_secs:.2} | | | | | |",
        head_events + tail_events
    );
    println!(
        "incremental / full time: {:.1}%",
        100.0 * inc_secs / rebuild_secs
    );
    println!(
        "accuracy: precision {:.5} ({} of {} same-profile pairs), recall {:.5} ({} of {} linkable pairs), {} identifiers scored, profiles with two persons' user ids: {}",
        acc.precision,
        acc.correct_pairs,
        acc.same_profile_pairs,
        acc.recall,
        acc.linked_pairs,
        acc.linkable_pairs,
        acc.identifiers_scored,
        acc.profiles_with_two_persons_user_ids
    );
    Ok(())
}

/// Writes `n` string edges over ~n/2.5 persons, as identifiers come from events: each
/// person has a user id, an e-mail and devices; edges link them in random order.
fn write_edges(n: u64, path: &Path) -> anyhow::Result<u64> {
    use tessera_engine::datafusion::arrow::array::{RecordBatch, StringBuilder};
    use tessera_engine::datafusion::arrow::datatypes::{DataType, Field, Schema};
    use tessera_engine::datafusion::parquet::arrow::ArrowWriter;

    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Utf8, false),
        Field::new("b", DataType::Utf8, false),
    ]));
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path)?, schema.clone(), None)?;
    let persons = (n as f64 / 2.5) as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let id = |p: u64, k: u64| -> String {
        match k {
            0 => format!("u{p:09}"),
            1 => format!("user{p}@example.com"),
            d => format!("{:016x}-{d}", p.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    };
    let mut written = 0;
    while written < n {
        let rows = (n - written).min(1 << 20);
        let (mut a, mut b) = (StringBuilder::new(), StringBuilder::new());
        for _ in 0..rows {
            let p = next() % persons;
            let (x, y) = (next() % 5, next() % 5);
            a.append_value(id(p, x));
            b.append_value(id(p, if x == y { (y + 1) % 5 } else { y }));
        }
        writer.write(&RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(a.finish()), Arc::new(b.finish())],
        )?)?;
        written += rows;
    }
    writer.close()?;
    Ok(persons)
}

pub(crate) fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}

fn components(n: u64, splink: bool, work: &Path) -> anyhow::Result<()> {
    let edges = work.join(format!("edges-{n}.parquet"));
    if !edges.exists() {
        eprintln!("writing {n} edges to {} ...", edges.display());
        write_edges(n, &edges)?;
    }
    let python = python()?;

    // Tessera: connected_components over the Parquet edges, result written as Parquet.
    let out = work.join("tessera-components.parquet");
    let rt = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let nodes = rt.block_on(async {
        let lake = Arc::new(Lake::new(
            work.join("empty-lake").to_str().unwrap_or_default(),
            Default::default(),
        )?);
        let engine = Engine::new(lake, EngineConfig::default());
        let ctx = engine.bare_session()?;
        ctx.register_parquet(
            "edges",
            edges.to_str().unwrap_or_default(),
            ParquetReadOptions::default(),
        )
        .await?;
        let df = ctx
            .sql("SELECT * FROM connected_components('SELECT a, b FROM edges')")
            .await?;
        let batches = df.collect().await?;
        eprintln!(
            "  tessera: components computed in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let file = std::fs::File::create(&out)?;
        let mut w = tessera_engine::datafusion::parquet::arrow::ArrowWriter::try_new(
            file,
            batches[0].schema(),
            None,
        )?;
        for b in &batches {
            w.write(b)?;
        }
        w.close()?;
        anyhow::Ok(rows)
    })?;
    let tessera_secs = started.elapsed().as_secs_f64();
    let tessera_rss = peak_rss();

    let scipy = format!(
        r#"
import json, time
def peak():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024
import numpy as np, pyarrow.parquet as pq, pyarrow as pa, pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
t = time.perf_counter()
tb = pq.read_table('{edges}')
both = pa.chunked_array(tb.column('a').chunks + tb.column('b').chunks).combine_chunks()
enc = pc.dictionary_encode(both)
codes, uniques = enc.indices.to_numpy(), enc.dictionary
m = len(tb)
a, b = codes[:m], codes[m:]
n = len(uniques)
t_int = time.perf_counter()
g = coo_matrix((np.ones(m, dtype=np.int8), (a, b)), shape=(n, n))
k, labels = connected_components(g, directed=False)
t_cc = time.perf_counter() - t_int
pq.write_table(pa.table({{'node': uniques, 'component': labels}}), '{out}')
secs = time.perf_counter() - t
print(json.dumps({{"seconds": secs, "cc_seconds": t_cc, "components": int(k), "nodes": n, "peak_rss_bytes": peak()}}))
"#,
        edges = edges.display(),
        out = work.join("scipy-components.parquet").display()
    );
    let sp = run_py(&python, &scipy)?;

    let splink_result = if splink {
        let script = format!(
            r#"
import json, time, duckdb
def peak():
    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024
from splink import DuckDBAPI
from splink.clustering import cluster_pairwise_predictions_at_threshold
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
con.execute("CREATE TABLE e AS SELECT a AS unique_id_l, b AS unique_id_r FROM '{edges}'")
con.execute("CREATE TABLE n AS SELECT unique_id_l AS unique_id FROM e UNION SELECT unique_id_r FROM e")
db = DuckDBAPI(connection=con)
clusters = cluster_pairwise_predictions_at_threshold(nodes=con.table('n'), edges=con.table('e'), db_api=db, node_id_column_name='unique_id', edge_id_column_name_left='unique_id_l', edge_id_column_name_right='unique_id_r', threshold_match_probability=None)
con.execute("COPY (SELECT * FROM " + clusters.physical_name + ") TO '{out}' (FORMAT parquet)")
secs = time.perf_counter() - t
rows = con.execute("SELECT count(*), count(DISTINCT cluster_id) FROM '{out}'").fetchone()
print(json.dumps({{"seconds": secs, "nodes": rows[0], "components": rows[1], "peak_rss_bytes": peak()}}))
"#,
            edges = edges.display(),
            out = work.join("splink-components.parquet").display()
        );
        Some(run_py(&python, &script)?)
    } else {
        None
    };

    println!("\nconnected components of {n} string edges ({nodes} identifiers)");
    println!("| engine | seconds | peak RSS |");
    println!("| --- | ---: | ---: |");
    println!(
        "| Tessera `connected_components` (Parquet in → Parquet out) | {tessera_secs:.2} | {} MB |",
        tessera_rss >> 20
    );
    let secs = |v: &serde_json::Value| v["seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| SciPy `connected_components` (factorize to ints + CC, Parquet in/out; CC alone {:.2} s) | {:.2} | {} MB |",
        sp["cc_seconds"].as_f64().unwrap_or(f64::NAN),
        secs(&sp),
        sp["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20
    );
    if let Some(s) = &splink_result {
        println!(
            "| Splink 5 `cluster_pairwise_predictions_at_threshold` on DuckDB | {:.2} | {} MB |",
            secs(s),
            s["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20
        );
        println!("speed-up vs Splink/DuckDB: {:.1}x", secs(s) / tessera_secs);
        if s["components"] != sp["components"] {
            bail!(
                "Splink found {} components, SciPy {}",
                s["components"],
                sp["components"]
            );
        }
    }
    println!(
        "ratio SciPy time / Tessera time: {:.2}x",
        secs(&sp) / tessera_secs
    );
    if sp["nodes"].as_u64() != Some(nodes as u64) {
        bail!("SciPy saw {} identifiers, Tessera {nodes}", sp["nodes"]);
    }
    Ok(())
}

pub(crate) fn run_py(python: &Path, script: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(python).arg("-c").arg(script).output()?;
    if !out.status.success() {
        bail!("python failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    Ok(serde_json::from_str(last)?)
}
