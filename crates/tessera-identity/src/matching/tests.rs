#![allow(clippy::unwrap_used)]
use std::collections::HashMap;
use std::fmt::Write as _;

use tessera_engine::{Engine, EngineConfig};
use tessera_lake::Lake;

use super::predict::clusters;
use super::*;

const FIRST: &[&str] = &[
    "john",
    "mary",
    "james",
    "linda",
    "robert",
    "patricia",
    "michael",
    "barbara",
    "william",
    "elizabeth",
    "david",
    "jennifer",
    "richard",
    "maria",
    "joseph",
    "susan",
    "thomas",
    "margaret",
];
const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "taylor",
    "thompson",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "white",
    "harris",
    "clark",
    "lewis",
];
const CITY: &[&str] = &[
    "leeds", "york", "bath", "hull", "derby", "wells", "ely", "truro",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.next() as usize % xs.len()]
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
}

fn typo(r: &mut Rng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    let i = r.next() as usize % c.len();
    match r.next() % 3 {
        0 if c.len() > 3 => {
            c.remove(i);
        }
        1 if i + 1 < c.len() => c.swap(i, i + 1),
        _ => c[i] = 'x',
    }
    c.into_iter().collect()
}

/// `persons` people, a third of them with a second record carrying typos, a missing
/// value or a date a few days off. Returns the CSV and the true pairs.
fn people(persons: usize, seed: u64) -> (String, HashSet<(String, String)>) {
    let mut r = Rng(seed);
    let mut csv = String::from("rec_id,first_name,surname,dob,city\n");
    let mut truth = HashSet::new();
    for p in 0..persons {
        let first = r.pick(FIRST);
        let last = r.pick(LAST);
        let dob = format!(
            "19{:02}{:02}{:02}",
            40 + r.next() % 60,
            1 + r.next() % 12,
            1 + r.next() % 28
        );
        let city = r.pick(CITY);
        writeln!(csv, "r{p}a,{first},{last},{dob},{city}").unwrap();
        if p % 3 == 0 {
            let f = if r.chance(0.4) {
                typo(&mut r, first)
            } else {
                first.to_owned()
            };
            let l = if r.chance(0.3) {
                typo(&mut r, last)
            } else {
                last.to_owned()
            };
            let d = if r.chance(0.2) {
                format!(
                    "{}{:02}",
                    &dob[..6],
                    1 + (dob[6..].parse::<u64>().unwrap() + 2) % 28
                )
            } else {
                dob.clone()
            };
            let c = if r.chance(0.2) { "" } else { city };
            writeln!(csv, "r{p}b,{f},{l},{d},{c}").unwrap();
            truth.insert(ordered(&format!("r{p}a"), &format!("r{p}b")));
        }
    }
    (csv, truth)
}

const SPEC: &str = r#"
records = "SELECT * FROM people"
id = "rec_id"
tables = { people = "people.csv" }
[train]
random_pairs = 200000
[[blocking]]
name = "surname"
on = "l.surname = r.surname"
[[blocking]]
name = "dob"
on = "l.dob = r.dob"
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
column = "dob"
kind = "date"
thresholds = [7, 365]
[[comparison]]
column = "city"
"#;

async fn setup(dir: &Path, csv: &str) -> Engine {
    std::fs::write(dir.join("people.csv"), csv).unwrap();
    let lake = Lake::new(dir.join("lake").to_str().unwrap(), HashMap::new()).unwrap();
    Engine::new(Arc::new(lake), EngineConfig::default())
}

#[tokio::test]
async fn trains_predicts_and_finds_the_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, truth) = people(1500, 7);
    let engine = setup(dir.path(), &csv).await;
    let spec = MatchSpec::parse(SPEC).unwrap();
    let matcher = Matcher::open(&engine, dir.path(), spec.clone())
        .await
        .unwrap();
    assert_eq!(matcher.records(), 1500 + 500);

    let (model, report) = matcher.train(&|_| {}).await.unwrap();
    assert_eq!(report.sessions.len(), 2);
    // Each session leaves out what its rule reads; together they train everything.
    assert!(!report.sessions[0].trained.contains(&"surname".to_owned()));
    assert!(!report.sessions[1].trained.contains(&"dob".to_owned()));
    assert!(report.untrained.is_empty(), "{report:?}");
    // Matches agree exactly far more often than non-matches.
    for c in &model.comparisons {
        let exact = c.level_count() - 1;
        assert!(c.m[exact] > 5.0 * c.u[exact], "{c:?}");
    }
    // λ: about 500 matches among all pairs.
    let expected = 500.0 / matcher.all_pairs() as f64;
    assert!(
        (model.lambda / expected - 1.0).abs() < 0.5,
        "λ {} vs {expected}",
        model.lambda
    );

    let version = save_model(&engine, &model, &report, 1, "test")
        .await
        .unwrap();
    let (loaded_version, loaded) = load_model(&engine).await.unwrap();
    assert_eq!(loaded_version, version);
    assert!((loaded.lambda / model.lambda - 1.0).abs() < 1e-12);
    for (a, b) in loaded.comparisons.iter().zip(&model.comparisons) {
        assert_eq!(
            (&a.name, &a.levels, a.tf_adjust),
            (&b.name, &b.levels, b.tf_adjust)
        );
        for (x, y) in a.m.iter().chain(&a.u).zip(b.m.iter().chain(&b.u)) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    let prediction = matcher.predict(&loaded, &|_| {}).await.unwrap();
    let written = matcher
        .write_pairs(&engine, &loaded, &prediction, version, "test")
        .await
        .unwrap();
    assert_eq!(written as usize, prediction.pairs.len());
    let stored = stored_pairs(&engine).await.unwrap();
    let metrics = evaluate(&stored, &truth, spec.predict.threshold);
    assert!(metrics.f1 > 0.9, "{metrics:?}");
    assert!(metrics.precision > 0.9, "{metrics:?}");
    // Clusters are the matched pairs (no person has more than two records).
    let (clusters, largest) = prediction.cluster_sizes();
    assert!(
        largest <= 3 && clusters >= prediction.matches() / 2,
        "{clusters} {largest}"
    );

    // "Why these two matched": the terms add up to the weight.
    let top = &prediction.pairs[0];
    let why = matcher
        .explain(&loaded, &top.id_l, &top.id_r)
        .await
        .unwrap();
    let sum = why.prior_weight + why.terms.iter().map(|t| t.weight).sum::<f64>();
    assert!((sum - why.weight).abs() < 1e-9 && (why.weight - top.weight).abs() < 1e-9);
    assert_eq!(why.decision, "match");
}

#[tokio::test]
async fn a_common_name_weighs_less_than_a_rare_one() {
    let dir = tempfile::tempdir().unwrap();
    // Many Smiths, one pair of Zyzzyvas; otherwise the same agreement.
    let (mut csv, _) = people(600, 5);
    for i in 0..150 {
        writeln!(
            csv,
            "s{i},{},smith,19{}0{}1{},york",
            FIRST[i % FIRST.len()],
            50 + i % 40,
            i % 9 + 1,
            i % 10
        )
        .unwrap();
    }
    csv.push_str("z1,bob,zyzzyva,19800101,leeds\nz2,bob,zyzzyva,19800101,leeds\n");
    csv.push_str("m1,bob,smith,19800101,leeds\nm2,bob,smith,19800101,leeds\n");
    let engine = setup(dir.path(), &csv).await;
    let matcher = Matcher::open(&engine, dir.path(), MatchSpec::parse(SPEC).unwrap())
        .await
        .unwrap();
    let (model, _) = matcher.train(&|_| {}).await.unwrap();
    let rare = matcher.explain(&model, "z1", "z2").await.unwrap();
    let common = matcher.explain(&model, "m1", "m2").await.unwrap();
    let surname = |e: &PairExplanation| e.terms[1].weight;
    assert_eq!(rare.terms[1].level, "exact");
    assert!(
        surname(&rare) > surname(&common) + 1.0,
        "{rare:?} {common:?}"
    );
}

#[tokio::test]
async fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(
        dir.path(),
        "rec_id,first_name,surname,dob,city\na,x,y,19700101,z\na,x,y,19700101,z\n",
    )
    .await;
    let spec = MatchSpec::parse(SPEC).unwrap();
    let err = |e: IdentityError| e.to_string();

    let dup = Matcher::open(&engine, dir.path(), spec.clone())
        .await
        .err()
        .map(err)
        .unwrap();
    assert!(dup.contains("not unique") && dup.contains("\"a\""), "{dup}");

    let mut missing = spec.clone();
    missing.tables.insert("people".into(), "nowhere.csv".into());
    let e = Matcher::open(&engine, dir.path(), missing)
        .await
        .err()
        .map(err)
        .unwrap();
    assert!(e.contains("nowhere.csv"), "{e}");

    let mut column = spec.clone();
    column.comparisons[3].column = "town".into();
    let e = Matcher::open(&engine, dir.path(), column)
        .await
        .err()
        .map(err)
        .unwrap();
    assert!(
        e.contains("no column \"town\"") && e.contains("city"),
        "{e}"
    );

    let mut query = spec.clone();
    query.records = "SELECT * FROM peeple".into();
    let e = Matcher::open(&engine, dir.path(), query)
        .await
        .err()
        .map(err)
        .unwrap();
    assert!(e.contains("records query") && e.contains("peeple"), "{e}");

    let e = load_model(&engine).await.err().map(err).unwrap();
    assert!(e.contains("match train"), "{e}");
}

#[tokio::test]
async fn a_model_of_other_comparisons_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = people(60, 3);
    let engine = setup(dir.path(), &csv).await;
    let spec = MatchSpec::parse(SPEC).unwrap();
    let matcher = Matcher::open(&engine, dir.path(), spec.clone())
        .await
        .unwrap();
    let (model, _) = matcher.train(&|_| {}).await.unwrap();
    let mut changed = spec;
    changed.comparisons[0].thresholds = vec![0.9];
    let other = Matcher::open(&engine, dir.path(), changed).await.unwrap();
    let e = other
        .predict(&model, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("match train") && e.contains("first_name"), "{e}");
    let e = matcher
        .explain(&model, "r0a", "nobody")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nobody"), "{e}");
}

#[test]
fn metrics_and_truth_files() {
    let truth: HashSet<_> = [ordered("a", "b"), ordered("c", "d")].into();
    let scored = vec![
        ("b".to_owned(), "a".to_owned(), 0.99),
        ("c".to_owned(), "e".to_owned(), 0.95),
        ("c".to_owned(), "d".to_owned(), 0.6),
    ];
    let m = evaluate(&scored, &truth, 0.9);
    assert_eq!((m.predicted, m.true_positives), (2, 1));
    assert!((m.precision - 0.5).abs() < 1e-12 && (m.recall - 0.5).abs() < 1e-12);
    assert!((evaluate(&scored, &truth, 0.5).f1 - 0.8).abs() < 1e-12);

    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.csv");
    std::fs::write(&pairs, "id_1,id_2\nb,a\nc,d\n").unwrap();
    assert_eq!(read_truth(&pairs).unwrap(), truth);
    let clusters = dir.path().join("clusters.csv");
    std::fs::write(&clusters, "id,cluster\na,1\nb,1\nc,2\nd,2\ne,3\n").unwrap();
    assert_eq!(read_truth(&clusters).unwrap(), truth);
    std::fs::write(&pairs, "id_1,id_2\nb\n").unwrap();
    let e = read_truth(&pairs).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn clusters_are_components_named_by_their_smallest_id() {
    let c = clusters([("b", "c"), ("d", "e"), ("c", "a")].into_iter());
    assert_eq!(c["b"], "a");
    assert_eq!(c["c"], "a");
    assert_eq!(c["a"], "a");
    assert_eq!(c["e"], "d");
}
