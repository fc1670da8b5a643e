//! Identity accuracy against the generator's ground truth (`truth.csv`).
//!
//! Pairwise, over identifiers that belong to exactly one person (a shared family
//! tablet or mailbox belongs to two, so it is left out of the scoring):
//!
//! - **precision**: of the identifier pairs Tessera put in one profile, the share that
//!   belong to one person;
//! - **recall**: of the pairs of one person's identifiers that the data links — joined
//!   by observed edges that never pass through another person's or a shared
//!   identifier — the share Tessera put in one profile.
//!
//! Also counted: profiles holding the user ids of two different persons (must be 0).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

/// Scores of one identity map.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Accuracy {
    /// Identifiers of the map that are in the truth, owned by one person.
    pub identifiers_scored: u64,
    pub same_profile_pairs: u64,
    pub correct_pairs: u64,
    pub linkable_pairs: u64,
    pub linked_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    /// Profiles with user ids of two or more persons.
    pub profiles_with_two_persons_user_ids: u64,
}

type Key = (String, String);

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Reads `truth.csv` (`person_id,id_type,id_value`): identifier → persons.
pub fn read_truth(path: &Path) -> std::io::Result<HashMap<Key, Vec<String>>> {
    let text = std::fs::read_to_string(path)?;
    let mut truth: HashMap<Key, Vec<String>> = HashMap::new();
    for line in text.lines().skip(1) {
        let mut parts = line.splitn(3, ',');
        let (Some(p), Some(t), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let persons = truth.entry((t.to_owned(), v.to_owned())).or_default();
        if !persons.iter().any(|x| x == p) {
            persons.push(p.to_owned());
        }
    }
    Ok(truth)
}

/// Scores `map` (identifier → profile) given the observed `edges` and the truth.
pub fn evaluate(
    truth: &HashMap<Key, Vec<String>>,
    map: &[(Key, String)],
    edges: &[(Key, Key)],
) -> Accuracy {
    let owner = |k: &Key| -> Option<&str> {
        match truth.get(k).map(Vec::as_slice) {
            Some([one]) => Some(one.as_str()),
            _ => None,
        }
    };
    let shared = |k: &Key| truth.get(k).is_some_and(|p| p.len() > 1);
    let mut acc = Accuracy::default();

    // Precision: per profile, per person.
    let mut by_profile: HashMap<&str, HashMap<&str, u64>> = HashMap::new();
    let mut users: HashMap<&str, Vec<&str>> = HashMap::new();
    for (k, profile) in map {
        if let Some(person) = owner(k) {
            acc.identifiers_scored += 1;
            *by_profile
                .entry(profile)
                .or_default()
                .entry(person)
                .or_default() += 1;
            if k.0 == "user_id" {
                let u = users.entry(profile).or_default();
                if !u.contains(&person) {
                    u.push(person);
                }
            }
        }
    }
    for persons in by_profile.values() {
        acc.same_profile_pairs += pairs(persons.values().sum());
        acc.correct_pairs += persons.values().map(|&n| pairs(n)).sum::<u64>();
    }
    acc.profiles_with_two_persons_user_ids = users.values().filter(|u| u.len() > 1).count() as u64;

    // Recall: components of the edges that stay within one person.
    let mut ids: HashMap<&Key, usize> = HashMap::new();
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for (a, b) in edges {
        if shared(a) || shared(b) {
            continue;
        }
        if let (Some(pa), Some(pb)) = (owner(a), owner(b))
            && pa != pb
        {
            continue;
        }
        let x = node(a, &mut ids, &mut parent);
        let y = node(b, &mut ids, &mut parent);
        let (rx, ry) = (find(&mut parent, x), find(&mut parent, y));
        if rx != ry {
            parent[rx] = ry;
        }
    }
    let profile_of: HashMap<&Key, &str> = map.iter().map(|(k, p)| (k, p.as_str())).collect();
    let mut linkable: HashMap<(usize, &str), u64> = HashMap::new();
    let mut linked: HashMap<(usize, &str, &str), u64> = HashMap::new();
    for (k, &i) in &ids {
        let Some(person) = owner(k) else { continue };
        let root = find(&mut parent, i);
        *linkable.entry((root, person)).or_default() += 1;
        if let Some(profile) = profile_of.get(k) {
            *linked.entry((root, person, profile)).or_default() += 1;
        }
    }
    acc.linkable_pairs = linkable.values().map(|&n| pairs(n)).sum();
    acc.linked_pairs = linked.values().map(|&n| pairs(n)).sum();
    acc.precision = ratio(acc.correct_pairs, acc.same_profile_pairs);
    acc.recall = ratio(acc.linked_pairs, acc.linkable_pairs);
    acc
}

fn node<'a>(k: &'a Key, ids: &mut HashMap<&'a Key, usize>, parent: &mut Vec<usize>) -> usize {
    *ids.entry(k).or_insert_with(|| {
        parent.push(parent.len());
        parent.len() - 1
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// The identity map and the distinct observed edges of a lake, for [`evaluate`].
pub async fn load_from_lake(
    engine: &tessera_engine::Engine,
) -> Result<(Vec<(Key, String)>, Vec<(Key, Key)>), tessera_engine::EngineError> {
    use futures::TryStreamExt;
    use tessera_engine::datafusion::arrow::array::{Array, AsArray};
    use tessera_engine::datafusion::arrow::compute::cast;
    use tessera_engine::datafusion::arrow::datatypes::DataType;

    let ctx = engine.session().await?;
    let columns = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let mut out: Vec<Vec<String>> = Vec::new();
            let mut stream =
                tessera_engine::execute(&ctx, sql, tessera_engine::Policy::ReadOnly).await?;
            while let Some(batch) = stream.try_next().await? {
                let cols: Vec<_> = batch
                    .columns()
                    .iter()
                    .map(|c| cast(c, &DataType::Utf8))
                    .collect::<Result<_, _>>()
                    .map_err(tessera_engine::datafusion::error::DataFusionError::from)?;
                for row in 0..batch.num_rows() {
                    out.push(
                        cols.iter()
                            .map(|c| {
                                let s = c.as_string::<i32>();
                                if s.is_null(row) {
                                    String::new()
                                } else {
                                    s.value(row).to_owned()
                                }
                            })
                            .collect(),
                    );
                }
            }
            Ok::<_, tessera_engine::EngineError>(out)
        }
    };
    let map = columns("SELECT id_type, id_value, profile_id FROM identity_map")
        .await?
        .into_iter()
        .map(|mut r| {
            let p = r.pop().unwrap_or_default();
            let v = r.pop().unwrap_or_default();
            let t = r.pop().unwrap_or_default();
            ((t, v), p)
        })
        .collect();
    let edges = columns("SELECT DISTINCT a_type, a_value, b_type, b_value FROM identity_edges")
        .await?
        .into_iter()
        .map(|mut r| {
            let bv = r.pop().unwrap_or_default();
            let bt = r.pop().unwrap_or_default();
            let av = r.pop().unwrap_or_default();
            let at = r.pop().unwrap_or_default();
            ((at, av), (bt, bv))
        })
        .collect();
    Ok((map, edges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(t: &str, v: &str) -> Key {
        (t.into(), v.into())
    }

    #[test]
    fn scores_pairs() {
        let mut truth = HashMap::new();
        for (p, t, v) in [
            ("p1", "anonymous_id", "a1"),
            ("p1", "user_id", "u1"),
            ("p1", "email", "e1"),
            ("p2", "user_id", "u2"),
            ("p2", "anonymous_id", "tablet"),
            ("p1", "anonymous_id", "tablet"),
        ] {
            truth
                .entry(k(t, v))
                .or_insert_with(Vec::new)
                .push(p.to_owned());
        }
        let edges = vec![
            (k("anonymous_id", "a1"), k("user_id", "u1")),
            (k("user_id", "u1"), k("email", "e1")),
            (k("anonymous_id", "tablet"), k("user_id", "u2")),
        ];
        // a1+u1 together, e1 apart: 1 of 3 linkable pairs; u2 alone.
        let map = vec![
            (k("anonymous_id", "a1"), "x".to_owned()),
            (k("user_id", "u1"), "x".to_owned()),
            (k("email", "e1"), "y".to_owned()),
            (k("user_id", "u2"), "z".to_owned()),
            (k("anonymous_id", "tablet"), "z".to_owned()),
        ];
        let a = evaluate(&truth, &map, &edges);
        assert_eq!(a.identifiers_scored, 4);
        assert_eq!((a.correct_pairs, a.same_profile_pairs), (1, 1));
        assert_eq!((a.linked_pairs, a.linkable_pairs), (1, 3));
        assert_eq!(a.profiles_with_two_persons_user_ids, 0);
        // Fusing both users is caught.
        let bad: Vec<(Key, String)> = map.iter().map(|(k, _)| (k.clone(), "x".into())).collect();
        let a = evaluate(&truth, &bad, &edges);
        assert_eq!(a.profiles_with_two_persons_user_ids, 1);
        assert_eq!((a.correct_pairs, a.same_profile_pairs), (3, 6));
        assert!((a.precision - 0.5).abs() < 1e-12);
    }
}
