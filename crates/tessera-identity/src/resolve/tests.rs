use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

fn types(user_limit: u32) -> TypeRules {
    TypeRules::new([
        ("user_id", user_limit, 1),
        ("email", 0, 2),
        ("anonymous_id", 0, 5),
    ])
}

fn key(t: TypeId, v: u8) -> NodeKey {
    NodeKey {
        id_type: t,
        value: format!("v{v}").into(),
    }
}

fn obs(a: NodeKey, b: Option<NodeKey>, t: i64) -> Observation {
    Observation {
        a,
        b,
        first_seen: t,
        last_seen: t + 5,
        events: 1,
        rule: 0,
        source: None,
        score: 1.0,
    }
}

/// Random observations over a few identifiers of three types.
fn observations() -> impl Strategy<Value = Vec<Observation>> {
    proptest::collection::vec(
        (
            (0u16..3, 0u8..12),
            proptest::option::weighted(0.85, (0u16..3, 0u8..12)),
            0i64..50,
        ),
        0..60,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .map(|((ta, va), b, t)| obs(key(ta, va), b.map(|(tb, vb)| key(tb, vb)), t))
            .collect()
    })
}

fn as_map(rows: &[MapRow]) -> BTreeMap<NodeKey, Arc<str>> {
    rows.iter()
        .map(|r| (r.key.clone(), r.profile_id.clone()))
        .collect()
}

fn partition(rows: &[MapRow]) -> BTreeSet<BTreeSet<NodeKey>> {
    let mut groups: HashMap<Arc<str>, BTreeSet<NodeKey>> = HashMap::new();
    for r in rows {
        groups
            .entry(r.profile_id.clone())
            .or_default()
            .insert(r.key.clone());
    }
    groups.into_values().collect()
}

/// Reference: repeated relaxation of component labels (no limits).
fn reference_partition(obs: &[Observation]) -> BTreeSet<BTreeSet<NodeKey>> {
    let mut label: BTreeMap<NodeKey, NodeKey> = BTreeMap::new();
    for o in obs {
        label.insert(o.a.clone(), o.a.clone());
        if let Some(b) = &o.b {
            label.insert(b.clone(), b.clone());
        }
    }
    loop {
        let mut changed = false;
        for o in obs {
            if let Some(b) = &o.b {
                let (la, lb) = (label[&o.a].clone(), label[b].clone());
                let min = la.clone().min(lb.clone());
                for (node, l) in label.iter_mut() {
                    if (*l == la || *l == lb) && *l != min {
                        *l = min.clone();
                        changed = true;
                    }
                    let _ = node;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut groups: BTreeMap<NodeKey, BTreeSet<NodeKey>> = BTreeMap::new();
    for (node, l) in label {
        groups.entry(l).or_default().insert(node);
    }
    groups.into_values().collect()
}

fn run(types: TypeRules, obs: Vec<Observation>) -> Vec<MapRow> {
    let mut g = Graph::new(types);
    g.apply(obs);
    g.map_rows()
}

proptest! {
    #[test]
    fn agrees_with_reference_when_no_limit_binds(obs in observations()) {
        let rows = run(types(0), obs.clone());
        prop_assert_eq!(partition(&rows), reference_partition(&obs));
    }

    #[test]
    fn result_does_not_depend_on_input_order(obs in observations(), seed in any::<u64>()) {
        let forward = run(types(1), obs.clone());
        let mut shuffled = obs;
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(forward, run(types(1), shuffled));
    }

    #[test]
    fn incremental_runs_equal_one_full_run(obs in observations(), cuts in proptest::collection::vec(0usize..60, 0..4)) {
        let full = run(types(1), obs.clone());
        // The data as it arrives: in time order, in any number of runs.
        let mut ordered = obs;
        Graph::new(types(1)).canonical_sort(&mut ordered);
        // A run consumes whole instants: observations of one timestamp (one event's
        // identifiers, say) never straddle two runs.
        let mut cuts: Vec<usize> = cuts
            .into_iter()
            .map(|c| {
                let mut c = c.min(ordered.len());
                while c > 0 && c < ordered.len() && ordered[c].first_seen == ordered[c - 1].first_seen {
                    c += 1;
                }
                c
            })
            .collect();
        cuts.sort_unstable();
        cuts.push(ordered.len());
        let mut rows: Vec<MapRow> = Vec::new();
        let mut start = 0;
        for cut in cuts {
            let mut g = Graph::load(types(1), rows.clone());
            g.apply(ordered[start..cut].to_vec());
            rows = g.map_rows();
            start = cut;
        }
        prop_assert_eq!(as_map(&rows), as_map(&full));
    }

    #[test]
    fn limits_are_never_exceeded(obs in observations()) {
        let rows = run(types(1), obs);
        let mut users: HashMap<Arc<str>, usize> = HashMap::new();
        for r in &rows {
            if r.key.id_type == 0 {
                *users.entry(r.profile_id.clone()).or_default() += 1;
            }
        }
        prop_assert!(users.values().all(|&n| n <= 1), "{users:?}");
    }

    #[test]
    fn ids_are_stable_across_reruns(obs in observations()) {
        let first = run(types(1), obs.clone());
        prop_assert_eq!(&first, &run(types(1), obs.clone()));
        // Re-applying data already stitched changes nothing.
        let mut g = Graph::load(types(1), first.clone());
        let applied = g.apply(obs);
        prop_assert!(applied.merges.is_empty());
        prop_assert_eq!(as_map(&g.map_rows()), as_map(&first));
    }
}

#[test]
fn shared_device_does_not_fuse_two_users() {
    let (user, anon) = (0, 2);
    let tablet = key(anon, 1);
    let rows = run(
        types(1),
        vec![
            obs(tablet.clone(), Some(key(user, 1)), 10),
            obs(tablet.clone(), Some(key(user, 2)), 20),
        ],
    );
    let map = as_map(&rows);
    assert_eq!(map[&tablet], map[&key(user, 1)]);
    assert_ne!(map[&key(user, 1)], map[&key(user, 2)]);
    let mut g = Graph::new(types(1));
    let applied = g.apply(vec![
        obs(tablet.clone(), Some(key(user, 1)), 10),
        obs(tablet, Some(key(user, 2)), 20),
    ]);
    let status = applied.observations[1].1.clone().unwrap();
    assert_eq!(
        status.reason(),
        Some("would put 2 user_id identifiers in one profile (limit 1)")
    );
}

#[test]
fn older_profile_survives_a_merge() {
    let (user, anon) = (0, 2);
    let mut g = Graph::new(types(1));
    g.apply(vec![
        obs(key(anon, 1), Some(key(user, 1)), 10),
        obs(key(anon, 2), None, 20),
    ]);
    let before = g.map_rows();
    let old = as_map(&before)[&key(user, 1)].clone();
    let young = as_map(&before)[&key(anon, 2)].clone();
    let mut g = Graph::load(types(1), before);
    let applied = g.apply(vec![obs(key(anon, 2), Some(key(user, 1)), 30)]);
    assert_eq!(
        applied.merges,
        vec![Merge {
            from: young,
            into: old.clone(),
            edge: 0
        }]
    );
    assert_eq!(applied.observations[0].1, Some(EdgeStatus::Merged));
    assert!(g.map_rows().iter().all(|r| r.profile_id == old));
}
