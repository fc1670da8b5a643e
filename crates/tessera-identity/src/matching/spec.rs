//! The matching spec (`match.toml` in the project): which records, which blocking rules,
//! which comparisons with which levels, and the decision thresholds.
//!
//! ```toml
//! records = "SELECT * FROM crm"          # any query over the lake and the files below
//! id = "crm_id"                          # the column naming a record (unique)
//! tables = { crm = "data/crm.csv" }      # CSV or Parquet files, relative to the project
//!
//! [[blocking]]
//! name = "surname_postcode"
//! on = "l.surname = r.surname AND l.postcode = r.postcode"
//!
//! [[comparison]]
//! column = "given_name"
//! kind = "jaro_winkler"                  # levels: else, ≥ 0.80, ≥ 0.92, exact
//!                                        # (also jaro, jaccard, levenshtein,
//!                                        # damerau_levenshtein, date, numeric,
//!                                        # soundex, double_metaphone, exact)
//! thresholds = [0.92, 0.80]
//! tf_adjust = true                       # agreeing on a rare name weighs more
//!
//! [predict]
//! threshold = 0.9                        # pairs at or above: a match
//! review = 0.5                           # pairs in [review, threshold): for a person to check
//! ```
//!
//! Linking two sources (a CRM export to profiles, file A to file B) instead of
//! deduplicating one: `link_type = "link"` with `source = "COLUMN"` compares only pairs
//! of records from different sources, whatever the blocking rules say
//! (`"link_and_dedupe"` compares every pair; `"dedupe"`, the default, ignores sources).
//! `[predict] one_to_one = true` (link only) keeps a match only when it is the best
//! candidate of both its records and beats each one's runner-up by `margin` (match
//! weight, bits; default 1) — otherwise it goes to the review band.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::blocking::BlockingRule;
use crate::error::{IdentityError, Result};
use crate::fellegi_sunter::NULL_LEVEL;

/// File name of the spec inside a project.
pub const SPEC_FILE: &str = "match.toml";

/// What to match and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// A query returning the records to match.
    pub records: String,
    /// The column identifying a record.
    #[serde(default = "default_id")]
    pub id: String,
    /// Which pairs are candidates at all: within one data set, across sources, or both.
    #[serde(default)]
    pub link_type: LinkType,
    /// The column naming each record's source (`link` and `link_and_dedupe`).
    #[serde(default)]
    pub source: Option<String>,
    /// Files registered as tables (name → path) for `records`.
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    /// Which pairs are compared: each rule a SQL condition over `l.` and `r.`.
    #[serde(default)]
    pub blocking: Vec<BlockingSpec>,
    /// How a pair is compared, field by field.
    #[serde(rename = "comparison", default)]
    pub comparisons: Vec<ComparisonSpec>,
    #[serde(default)]
    pub train: TrainSpec,
    #[serde(default)]
    pub predict: PredictSpec,
}

fn default_id() -> String {
    "id".into()
}

/// Which pairs matching considers (Splink's `dedupe_only`, `link_only`,
/// `link_and_dedupe`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkType {
    /// Duplicates within the records, sources ignored.
    #[default]
    Dedupe,
    /// Only pairs of records from different sources.
    Link,
    /// Every pair, within and across sources.
    LinkAndDedupe,
}

/// One blocking rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockingSpec {
    pub name: String,
    pub on: String,
}

/// How one field is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Exact agreement or not.
    Exact,
    /// Jaro–Winkler similarity at or above each threshold.
    JaroWinkler,
    /// Jaro similarity at or above each threshold.
    Jaro,
    /// Jaccard similarity of token sets at or above each threshold.
    Jaccard,
    /// At most each number of edits.
    Levenshtein,
    /// At most each number of edits, adjacent swaps counting one.
    DamerauLevenshtein,
    /// Dates at most each number of days apart.
    Date,
    /// Numbers at most each difference apart.
    Numeric,
    /// The same Soundex code.
    Soundex,
    /// A Double Metaphone code in common (primary or alternate).
    DoubleMetaphone,
}

impl LinkType {
    /// `dedupe`, `link` or `link_and_dedupe`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkType::Dedupe => "dedupe",
            LinkType::Link => "link",
            LinkType::LinkAndDedupe => "link_and_dedupe",
        }
    }
}

impl Kind {
    /// Whether thresholds are similarities (at least, descending) rather than distances
    /// (at most, ascending).
    fn is_similarity(self) -> bool {
        matches!(self, Kind::JaroWinkler | Kind::Jaro | Kind::Jaccard)
    }

    fn takes_thresholds(self) -> bool {
        !matches!(self, Kind::Exact | Kind::Soundex | Kind::DoubleMetaphone)
    }

    /// A phonetic kind: one level between exact and else, "sounds alike".
    fn is_phonetic(self) -> bool {
        matches!(self, Kind::Soundex | Kind::DoubleMetaphone)
    }

    fn sql_name(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::JaroWinkler => "jaro_winkler",
            Kind::Jaro => "jaro",
            Kind::Jaccard => "jaccard",
            Kind::Levenshtein => "levenshtein",
            Kind::DamerauLevenshtein => "damerau_levenshtein",
            Kind::Date => "days_between",
            Kind::Numeric => "abs_difference",
            Kind::Soundex => "soundex",
            Kind::DoubleMetaphone => "double_metaphone",
        }
    }
}

/// One comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparisonSpec {
    /// The column compared.
    pub column: String,
    /// How it is reported (the column by default).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_kind")]
    pub kind: Kind,
    /// Similarities (descending) or distances (ascending) making the levels between
    /// exact and else.
    #[serde(default)]
    pub thresholds: Vec<f64>,
    /// Weigh an exact agreement by how rare the agreed value is.
    #[serde(default)]
    pub tf_adjust: bool,
}

fn default_kind() -> Kind {
    Kind::Exact
}

impl ComparisonSpec {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.column)
    }

    /// Level labels, lowest ("else") first, exact last.
    pub fn labels(&self) -> Vec<String> {
        let mut labels = vec!["else".to_owned()];
        if self.kind.is_phonetic() {
            labels.push(self.kind.sql_name().into());
        }
        let op = if self.kind.is_similarity() {
            ">="
        } else {
            "<="
        };
        for t in self.thresholds.iter().rev() {
            labels.push(format!("{} {op} {t}", self.kind.sql_name()));
        }
        labels.push("exact".into());
        labels
    }

    /// What the level of comparison `j` needs, computed once per pair `l`, `r`: `n{j}`
    /// (a value is missing), `e{j}` (exact agreement) and `s{j}` (the similarity or
    /// distance, when the kind has one). Select items of an inner query.
    pub fn parts_sql(&self, j: usize) -> Vec<String> {
        let col = quote_ident(&self.column);
        let (a, b) = (format!("l.{col}"), format!("r.{col}"));
        let mut parts = vec![
            format!("({a} IS NULL OR {b} IS NULL) AS n{j}"),
            format!("({a} = {b}) AS e{j}"),
        ];
        let measure = match self.kind {
            Kind::Exact => return parts,
            Kind::Soundex => format!("soundex({a}) = soundex({b})"),
            Kind::DoubleMetaphone => format!(
                "(double_metaphone({a}) IN (double_metaphone({b}), double_metaphone_alt({b})) \
                 OR double_metaphone_alt({a}) IN (double_metaphone({b}), double_metaphone_alt({b})))"
            ),
            Kind::Numeric => format!("abs(TRY_CAST({a} AS DOUBLE) - TRY_CAST({b} AS DOUBLE))"),
            Kind::Date => format!("days_between({a}, {b})"),
            k => format!("{}({a}, {b})", k.sql_name()),
        };
        parts.push(format!("{measure} AS s{j}"));
        parts
    }

    /// The level of comparison `j` from its [`parts_sql`](Self::parts_sql):
    /// `NULL_LEVEL` when a value is missing, the highest level for exact agreement, then
    /// the thresholds, `0` for anything else.
    pub fn level_sql(&self, j: usize) -> String {
        let n = self.labels().len();
        let mut sql = format!("CASE WHEN n{j} THEN {NULL_LEVEL} WHEN e{j} THEN {}", n - 1);
        if self.kind.is_phonetic() {
            sql.push_str(&format!(" WHEN s{j} THEN 1"));
        }
        let op = if self.kind.is_similarity() {
            ">="
        } else {
            "<="
        };
        for (i, t) in self.thresholds.iter().enumerate() {
            sql.push_str(&format!(" WHEN s{j} {op} {t:?} THEN {}", n - 2 - i));
        }
        sql.push_str(" ELSE 0 END");
        sql
    }

    /// Whether a blocking condition reads this comparison's column (`l.col`, `r."col"`).
    pub fn used_by(&self, condition: &str) -> bool {
        let text = condition.to_lowercase();
        let column = self.column.to_lowercase();
        ["l.", "r."].iter().any(|side| {
            [format!("{side}{column}"), format!("{side}\"{column}\"")]
                .iter()
                .any(|needle| {
                    text.match_indices(needle.as_str()).any(|(at, _)| {
                        let before = text[..at].chars().next_back();
                        let after = text[at + needle.len()..].chars().next();
                        let ident =
                            |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                        !ident(before) && (needle.ends_with('"') || !ident(after))
                    })
                })
        })
    }
}

/// How the model is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Pairs drawn at random to estimate `u`.
    #[serde(default = "default_random_pairs")]
    pub random_pairs: u64,
    /// Seed of that draw (the same seed, the same model).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// At most this many EM iterations per session.
    #[serde(default = "default_iterations")]
    pub max_iterations: usize,
}

fn default_random_pairs() -> u64 {
    1_000_000
}

fn default_seed() -> u64 {
    42
}

fn default_iterations() -> usize {
    100
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            random_pairs: default_random_pairs(),
            seed: default_seed(),
            max_iterations: default_iterations(),
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictSpec {
    /// Pairs at or above this probability are matches.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Pairs from this probability up to the threshold are listed for review.
    #[serde(default = "default_review")]
    pub review: f64,
    /// `link` only: a record matches at most one record of the other side — its best
    /// candidate, when it beats the runner-up by `margin`.
    #[serde(default)]
    pub one_to_one: bool,
    /// How much higher (match weight, in bits) the best candidate must score than the
    /// runner-up under `one_to_one`.
    #[serde(default = "default_margin")]
    pub margin: f64,
}

fn default_margin() -> f64 {
    1.0
}

fn default_threshold() -> f64 {
    0.9
}

fn default_review() -> f64 {
    0.5
}

impl Default for PredictSpec {
    fn default() -> Self {
        PredictSpec {
            threshold: default_threshold(),
            review: default_review(),
            one_to_one: false,
            margin: default_margin(),
        }
    }
}

pub(crate) use tessera_core::sql::ident as quote_ident;

/// Why a `match.toml` cannot be used: the message names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

impl MatchSpec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<MatchSpec> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        MatchSpec::parse(&text).map_err(|InvalidSpec(message)| IdentityError::BadFile {
            file: path.display().to_string(),
            message,
        })
    }

    /// A spec from its TOML text; the error says what is wrong.
    pub fn parse(text: &str) -> std::result::Result<MatchSpec, InvalidSpec> {
        let spec: MatchSpec = toml::from_str(text).map_err(|e| InvalidSpec(e.to_string()))?;
        spec.check().map_err(InvalidSpec)?;
        Ok(spec)
    }

    /// What is wrong with the spec, if anything.
    fn check(&self) -> std::result::Result<(), String> {
        if self.records.trim().is_empty() {
            return Err("records: a query returning the records to match is needed".into());
        }
        if self.blocking.is_empty() {
            return Err(
                "no [[blocking]] rule: without one every pair would be compared; add e.g. \
                 on = \"l.surname = r.surname\""
                    .into(),
            );
        }
        let mut names = HashSet::new();
        for b in &self.blocking {
            if b.on.trim().is_empty() || !names.insert(b.name.as_str()) {
                return Err(format!(
                    "blocking rule {:?}: needs a unique name and an `on` condition",
                    b.name
                ));
            }
        }
        if self.comparisons.is_empty() {
            return Err("no [[comparison]]: at least one field must be compared".into());
        }
        let mut names = HashSet::new();
        for c in &self.comparisons {
            let name = c.name();
            if !names.insert(name) {
                return Err(format!("comparison {name:?} appears twice"));
            }
            let t = &c.thresholds;
            if !c.kind.takes_thresholds() && !t.is_empty() {
                return Err(format!(
                    "comparison {name:?}: kind {:?} has no thresholds",
                    c.kind.sql_name()
                ));
            }
            if c.kind.is_similarity() {
                if t.iter().any(|x| !(*x > 0.0 && *x < 1.0)) || t.windows(2).any(|w| w[0] <= w[1]) {
                    return Err(format!(
                        "comparison {name:?}: similarity thresholds must be in (0, 1) and \
                         descending, e.g. [0.92, 0.80]; got {t:?}"
                    ));
                }
            } else if t.iter().any(|x| !(*x >= 0.0 && x.is_finite()))
                || t.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(format!(
                    "comparison {name:?}: distance thresholds must be non-negative and \
                     ascending, e.g. [1, 2]; got {t:?}"
                ));
            }
            if c.labels().len() > 16 {
                return Err(format!("comparison {name:?}: at most 14 thresholds"));
            }
        }
        let p = &self.predict;
        if !(p.threshold > 0.0 && p.threshold < 1.0 && p.review > 0.0 && p.review <= p.threshold) {
            return Err(format!(
                "[predict]: threshold must be in (0, 1) and review in (0, threshold]; got \
                 threshold = {}, review = {}",
                p.threshold, p.review
            ));
        }
        if self.train.random_pairs == 0 {
            return Err("[train] random_pairs must be at least 1".into());
        }
        match (self.link_type, &self.source) {
            (LinkType::Link | LinkType::LinkAndDedupe, None) => {
                return Err(format!(
                    "link_type = \"{}\" needs source = \"COLUMN\": the column of the records \
                     naming the source each comes from",
                    self.link_type.as_str()
                ));
            }
            (_, Some(s)) if s.trim().is_empty() => {
                return Err("source: name a column of the records".into());
            }
            _ => {}
        }
        if p.one_to_one && self.link_type != LinkType::Link {
            return Err(
                "[predict] one_to_one needs link_type = \"link\" (a record of one source \
                 matched to at most one of the other)"
                    .into(),
            );
        }
        if !(p.margin >= 0.0 && p.margin.is_finite()) {
            return Err(format!(
                "[predict] margin must be a non-negative match weight; got {}",
                p.margin
            ));
        }
        Ok(())
    }

    /// The blocking rules as [`BlockingRule`]s; under `link`, each also requires the two
    /// records to come from different sources.
    pub fn rules(&self) -> Vec<BlockingRule> {
        let across = match (self.link_type, &self.source) {
            (LinkType::Link, Some(s)) => {
                let s = tessera_core::sql::ident(s);
                Some(format!("l.{s} IS DISTINCT FROM r.{s}"))
            }
            _ => None,
        };
        self.blocking
            .iter()
            .map(|b| BlockingRule {
                name: b.name.clone(),
                condition: match &across {
                    Some(a) => format!("({}) AND {a}", b.on),
                    None => b.on.clone(),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SPEC: &str = r#"
records = "SELECT * FROM people"
id = "rec_id"
tables = { people = "people.csv" }
[[blocking]]
name = "surname"
on = "l.surname = r.surname"
[[comparison]]
column = "given_name"
kind = "jaro_winkler"
thresholds = [0.92, 0.8]
tf_adjust = true
[[comparison]]
column = "dob"
kind = "date"
thresholds = [1, 365]
[[comparison]]
column = "surname"
kind = "soundex"
"#;

    #[test]
    fn levels_and_their_sql() {
        let spec = MatchSpec::parse(SPEC).unwrap();
        let jw = &spec.comparisons[0];
        assert_eq!(
            jw.labels(),
            [
                "else",
                "jaro_winkler >= 0.8",
                "jaro_winkler >= 0.92",
                "exact"
            ]
        );
        assert_eq!(
            jw.parts_sql(0),
            [
                "(l.\"given_name\" IS NULL OR r.\"given_name\" IS NULL) AS n0",
                "(l.\"given_name\" = r.\"given_name\") AS e0",
                "jaro_winkler(l.\"given_name\", r.\"given_name\") AS s0",
            ]
        );
        assert_eq!(
            jw.level_sql(0),
            "CASE WHEN n0 THEN 255 WHEN e0 THEN 3 WHEN s0 >= 0.92 THEN 2 \
             WHEN s0 >= 0.8 THEN 1 ELSE 0 END"
        );
        assert_eq!(
            spec.comparisons[2].level_sql(2),
            "CASE WHEN n2 THEN 255 WHEN e2 THEN 2 WHEN s2 THEN 1 ELSE 0 END"
        );
        assert_eq!(
            spec.comparisons[1].labels(),
            ["else", "days_between <= 365", "days_between <= 1", "exact"]
        );
        assert_eq!(spec.comparisons[2].labels(), ["else", "soundex", "exact"]);
        assert_eq!(spec.predict, PredictSpec::default());
    }

    #[test]
    fn which_rules_read_a_column() {
        let spec = MatchSpec::parse(SPEC).unwrap();
        let surname = &spec.comparisons[2];
        assert!(surname.used_by("l.surname = r.surname"));
        assert!(surname.used_by("soundex(L.Surname) = soundex(r.\"surname\")"));
        assert!(!surname.used_by("l.surname_2 = r.surname_2 AND l.xsurname = 1"));
        assert!(!spec.comparisons[0].used_by("l.surname = r.surname"));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let cases = [
            (
                SPEC.replace("kind = \"soundex\"", "kind = \"phonetic\""),
                "phonetic",
            ),
            (SPEC.replace("[0.92, 0.8]", "[0.8, 0.92]"), "descending"),
            (SPEC.replace("[1, 365]", "[365, 1]"), "ascending"),
            (SPEC.replace("tf_adjust", "tf_adjustment"), "tf_adjustment"),
            (
                SPEC.replace(
                    "[[blocking]]\nname = \"surname\"\non = \"l.surname = r.surname\"",
                    "",
                ),
                "no [[blocking]]",
            ),
            (
                format!("{SPEC}[predict]\nthreshold = 0.5\nreview = 0.8\n"),
                "review",
            ),
            (
                format!("{SPEC}[[comparison]]\ncolumn = \"surname\"\nkind = \"soundex\"\n"),
                "twice",
            ),
            (
                SPEC.replace("kind = \"soundex\"", "kind = \"soundex\"\nthresholds = [1]"),
                "no thresholds",
            ),
        ];
        for (text, needle) in cases {
            let err = MatchSpec::parse(&text).unwrap_err();
            assert!(err.0.contains(needle), "{needle}: {err}");
        }
    }
}
