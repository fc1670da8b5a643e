//! Evaluation against known matches: pairwise precision, recall and F1.

use super::*;

/// Pairwise quality against known matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub threshold: f64,
    pub predicted: u64,
    pub truth: u64,
    pub true_positives: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Precision, recall and F1 of the pairs at or above `threshold` (pairs are unordered).
pub fn evaluate(
    scored: &[(String, String, f64)],
    truth: &HashSet<(String, String)>,
    threshold: f64,
) -> Metrics {
    let predicted: HashSet<(String, String)> = scored
        .iter()
        .filter(|(_, _, p)| *p >= threshold)
        .map(|(a, b, _)| ordered(a, b))
        .collect();
    let tp = predicted.iter().filter(|p| truth.contains(*p)).count() as u64;
    let precision = if predicted.is_empty() {
        0.0
    } else {
        tp as f64 / predicted.len() as f64
    };
    let recall = if truth.is_empty() {
        0.0
    } else {
        tp as f64 / truth.len() as f64
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Metrics {
        threshold,
        predicted: predicted.len() as u64,
        truth: truth.len() as u64,
        true_positives: tp,
        precision,
        recall,
        f1,
    }
}

/// An unordered pair in a canonical order.
pub fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// Known matches from a CSV file with a header: either two id columns (one matching
/// pair per line) or `id,cluster` (records of one cluster match each other).
pub fn read_truth(path: &Path) -> Result<HashSet<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default().to_lowercase();
    let by_cluster = header
        .split(',')
        .nth(1)
        .is_some_and(|c| c.trim() == "cluster");
    let mut pairs = HashSet::new();
    let mut clusters: HashMap<String, Vec<String>> = HashMap::new();
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() < 2 || cells[0].is_empty() || cells[1].is_empty() {
            return Err(IdentityError::BadFile {
                file: path.display().to_string(),
                message: format!("line {}: expected two values, got {line:?}", n + 2),
            });
        }
        if by_cluster {
            clusters
                .entry(cells[1].to_owned())
                .or_default()
                .push(cells[0].to_owned());
        } else if cells[0] != cells[1] {
            pairs.insert(ordered(cells[0], cells[1]));
        }
    }
    for members in clusters.values() {
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                pairs.insert(ordered(a, b));
            }
        }
    }
    Ok(pairs)
}
