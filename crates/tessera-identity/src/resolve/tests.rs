use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
        probabilistic: false,
    }
}

/// A probabilistic edge of probability `p`.
fn matched(a: NodeKey, b: NodeKey, t: i64, p: f64) -> Observation {
    Observation {
        score: p,
        probabilistic: true,
        rule: 1,
        ..obs(a, Some(b), t)
    }
}

fn input<'a>(
    types: TypeRules,
    safeguards: &'a Safeguards,
    revoked: &'a HashSet<(NodeKey, NodeKey)>,
    previous: &'a [MapRow],
    keep_previous: bool,
    observations: Vec<Observation>,
) -> Input<'a> {
    Input {
        types,
        safeguards,
        revoked,
        previous,
        keep_previous,
        observations,
    }
}

fn resolve_with(types: TypeRules, previous: &[MapRow], obs: Vec<Observation>) -> Resolution {
    resolve(input(
        types,
        &Safeguards::default(),
        &HashSet::new(),
        previous,
        !previous.is_empty(),
        obs,
    ))
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

/// Random observations, some of them probabilistic with random probabilities.
fn mixed_observations() -> impl Strategy<Value = Vec<Observation>> {
    (
        observations(),
        proptest::collection::vec((0u8..12, 0u8..12, 0i64..50, 1u32..1000), 0..20),
    )
        .prop_map(|(mut obs, matches)| {
            for (crm, user, t, p) in matches {
                obs.push(matched(key(1, crm), key(0, user), t, f64::from(p) / 1000.0));
            }
            obs
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
    resolve_with(types, &[], obs).rows
}

/// The edges a run leaves in `identity_edges`, fed back to the next one.
fn edges_of(resolution: &Resolution) -> Vec<Observation> {
    resolution
        .observations
        .iter()
        .filter(|(o, _)| o.b.is_some())
        .map(|(o, _)| o.clone())
        .collect()
}

fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut s = seed | 1;
    for i in (1..items.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        items.swap(i, (s % (i as u64 + 1)) as usize);
    }
}

/// Runs over `obs` cut into batches at `cuts`, each run resolving the stored edges of
/// the earlier ones plus its own batch (as `tessera stitch` does).
fn incremental(types: &TypeRules, obs: &[Observation], cuts: &[usize]) -> Vec<MapRow> {
    // A run consumes whole instants: observations of one timestamp (one event's
    // identifiers, say) never straddle two runs.
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|c| {
            let mut c = (*c).min(obs.len());
            while c > 0 && c < obs.len() && obs[c].first_seen == obs[c - 1].first_seen {
                c += 1;
            }
            c
        })
        .collect();
    cuts.sort_unstable();
    cuts.push(obs.len());
    let mut rows: Vec<MapRow> = Vec::new();
    let mut stored: Vec<Observation> = Vec::new();
    let mut start = 0;
    for cut in cuts {
        let mut batch = stored.clone();
        batch.extend(obs[start..cut].iter().cloned());
        let resolution = resolve_with(types.clone(), &rows, batch);
        stored = edges_of(&resolution);
        rows = resolution.rows;
        start = cut;
    }
    rows
}

proptest! {
    #[test]
    fn agrees_with_reference_when_no_limit_binds(obs in observations()) {
        let rows = run(types(0), obs.clone());
        prop_assert_eq!(partition(&rows), reference_partition(&obs));
    }

    #[test]
    fn result_does_not_depend_on_input_order(obs in mixed_observations(), seed in any::<u64>()) {
        let forward = run(types(1), obs.clone());
        let mut shuffled = obs;
        shuffle(&mut shuffled, seed);
        prop_assert_eq!(forward, run(types(1), shuffled));
    }

    #[test]
    fn incremental_runs_equal_one_full_run(
        obs in observations(),
        cuts in proptest::collection::vec(0usize..80, 0..4),
    ) {
        // The data as it arrives: in time order, in any number of runs — the same map,
        // ids included.
        let full = run(types(1), obs.clone());
        let mut ordered = obs;
        ordered.sort_by_key(|o| o.first_seen);
        let rows = incremental(&types(1), &ordered, &cuts);
        prop_assert_eq!(as_map(&rows), as_map(&full));
    }

    #[test]
    fn arrival_order_never_changes_the_profiles(
        obs in mixed_observations(),
        seed in any::<u64>(),
        cuts in proptest::collection::vec(0usize..80, 0..4),
    ) {
        // In any order at all (late data, a stronger match after a weaker one), in any
        // number of runs: the same profiles; and a full rebuild keeps the ids of the
        // incremental runs.
        let full = run(types(1), obs.clone());
        let mut arrived = obs.clone();
        shuffle(&mut arrived, seed);
        let rows = incremental(&types(1), &arrived, &cuts);
        prop_assert_eq!(partition(&rows), partition(&full));
        let rebuilt = resolve(input(types(1), &Safeguards::default(), &HashSet::new(), &rows, false, obs)).rows;
        prop_assert_eq!(as_map(&rebuilt), as_map(&rows));
    }

    #[test]
    fn the_strongest_match_wins(
        obs in observations(),
        candidates in proptest::collection::btree_map(0u8..12, 1u32..999, 1..6),
        seed in any::<u64>(),
    ) {
        // One record (type 1, value 200) matched to several users (limit 1) with
        // distinct probabilities, among random deterministic data of other values.
        let crm = NodeKey { id_type: 1, value: "crm".into() };
        let mut all = obs;
        for (user, p) in &candidates {
            all.push(matched(crm.clone(), key(0, *user), 60 - i64::from(*user), f64::from(*p) / 1000.0 + f64::from(*user) * 1e-7));
        }
        shuffle(&mut all, seed);
        let resolution = resolve_with(types(1), &[], all);
        let best = resolution
            .observations
            .iter()
            .filter(|(o, _)| o.a == crm || o.b.as_ref() == Some(&crm))
            .filter(|(o, s)| o.probabilistic && s.is_some())
            .max_by(|x, y| x.0.score.total_cmp(&y.0.score))
            .unwrap();
        // The best candidate's edge is applied unless the user's profile itself cannot
        // take it; every weaker one that is applied joins the same profile.
        let best_user = best.0.b.clone().filter(|b| *b != crm).unwrap_or_else(|| best.0.a.clone());
        if best.1.as_ref().unwrap().applied() {
            prop_assert_eq!(resolution.profile_of(&crm), resolution.profile_of(&best_user));
        }
        for (o, s) in &resolution.observations {
            if o.probabilistic && s.as_ref().unwrap().applied() {
                prop_assert_eq!(resolution.profile_of(&o.a), resolution.profile_of(o.b.as_ref().unwrap()));
            }
        }
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
    fn ids_are_stable_across_reruns(obs in mixed_observations()) {
        let first = resolve_with(types(1), &[], obs.clone());
        prop_assert_eq!(&first.rows, &run(types(1), obs.clone()));
        // Re-resolving data already stitched changes nothing.
        let again = resolve_with(types(1), &first.rows, edges_of(&first));
        prop_assert!(again.changes.is_empty(), "{:?}", again.changes);
        prop_assert_eq!(as_map(&again.rows), as_map(&first.rows));
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
    let resolution = resolve_with(
        types(1),
        &[],
        vec![
            obs(tablet.clone(), Some(key(user, 1)), 10),
            obs(tablet, Some(key(user, 2)), 20),
        ],
    );
    let status = resolution.observations[1].1.clone().unwrap();
    assert_eq!(
        status.reason(),
        Some("would put 2 user_id identifiers in one profile (limit 1)")
    );
}

#[test]
fn older_profile_survives_a_merge() {
    let (user, anon) = (0, 2);
    let first = resolve_with(
        types(1),
        &[],
        vec![
            obs(key(anon, 1), Some(key(user, 1)), 10),
            obs(key(anon, 2), None, 20),
        ],
    );
    let old = as_map(&first.rows)[&key(user, 1)].clone();
    let young = as_map(&first.rows)[&key(anon, 2)].clone();
    let mut next = edges_of(&first);
    next.push(obs(key(anon, 2), Some(key(user, 1)), 30));
    let second = resolve_with(types(1), &first.rows, next);
    assert_eq!(second.changes.len(), 1, "{:?}", second.changes);
    let change = &second.changes[0];
    assert_eq!(
        (change.kind, &change.from, &change.into),
        (ChangeKind::Merge, &young, &old)
    );
    let edge = &second.observations[change.edge.unwrap()].0;
    assert_eq!(edge.a, key(anon, 2));
    assert!(second.rows.iter().all(|r| r.profile_id == old));
}

/// The case of a CRM record matched to its person (same e-mail and phone) and to a
/// namesake: the stronger match wins the `crm_id` limit whichever was seen first, and
/// an incremental run that brings the stronger edge moves the record.
#[test]
fn a_stronger_match_beats_an_earlier_weaker_one() {
    let types = TypeRules::new([("user_id", 1, 1), ("crm_id", 1, 4), ("anonymous_id", 0, 5)]);
    let (user, crm, anon) = (0, 1, 2);
    let record = key(crm, 97);
    let person = key(user, 68);
    let namesake = key(user, 32);
    let data = vec![
        obs(key(anon, 1), Some(person.clone()), 10),
        obs(key(anon, 2), Some(namesake.clone()), 11),
    ];
    // Both in one run, the weaker seen first.
    let mut all = data.clone();
    all.push(matched(record.clone(), namesake.clone(), 20, 0.9536));
    all.push(matched(record.clone(), person.clone(), 30, 0.999_999_6));
    let one = resolve_with(types.clone(), &[], all.clone());
    assert_eq!(one.profile_of(&record), one.profile_of(&person));
    let weak = one
        .observations
        .iter()
        .find(|(o, _)| o.score == 0.9536)
        .unwrap();
    assert_eq!(weak.1.as_ref().unwrap().as_str(), "rejected");

    // The weaker edge first, alone: the record joins the namesake. The next run brings
    // the stronger one: the record moves, recorded as a move with its edge.
    let mut first = data;
    first.push(matched(record.clone(), namesake.clone(), 20, 0.9536));
    let first = resolve_with(types.clone(), &[], first);
    assert_eq!(first.profile_of(&record), first.profile_of(&namesake));
    let mut next = edges_of(&first);
    next.push(matched(record.clone(), person.clone(), 30, 0.999_999_6));
    let second = resolve_with(types.clone(), &first.rows, next);
    assert_eq!(second.profile_of(&record), second.profile_of(&person));
    assert_eq!(as_map(&second.rows), as_map(&one.rows));
    let moves: Vec<_> = second
        .changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Merge)
        .collect();
    assert_eq!(moves.len(), 1, "{:?}", second.changes);
    assert_eq!(moves[0].kind, ChangeKind::Move);
    assert_eq!(Some(&moves[0].from), first.profile_of(&namesake));
    assert_eq!(Some(&moves[0].into), first.profile_of(&person));
    let edge = &second.observations[moves[0].edge.unwrap()].0;
    assert_eq!(edge.score, 0.999_999_6);
}

#[test]
fn a_deterministic_edge_beats_any_match() {
    let types = TypeRules::new([("user_id", 1, 1), ("crm_id", 1, 4)]);
    let record = key(1, 1);
    let resolution = resolve_with(
        types,
        &[],
        vec![
            matched(record.clone(), key(0, 1), 5, 0.999_999_999),
            obs(record.clone(), Some(key(0, 2)), 50),
        ],
    );
    assert_eq!(
        resolution.profile_of(&record),
        resolution.profile_of(&key(0, 2))
    );
}

#[test]
fn a_revoked_edge_splits_and_never_comes_back() {
    let (user, anon) = (0, 2);
    let data = vec![
        obs(key(anon, 1), Some(key(user, 1)), 10),
        obs(key(anon, 1), Some(key(anon, 2)), 11),
        obs(key(anon, 3), Some(key(anon, 2)), 12),
    ];
    let first = resolve_with(types(1), &[], data.clone());
    let profile = first.profile_of(&key(user, 1)).unwrap().clone();
    assert!(first.rows.iter().all(|r| r.profile_id == profile));
    let revoked = HashSet::from([ordered_pair(&key(anon, 1), &key(anon, 2))]);
    let split = resolve(input(
        types(1),
        &Safeguards::default(),
        &revoked,
        &first.rows,
        true,
        edges_of(&first),
    ));
    // The founder's side keeps the id; the other side gets a new one, recorded as a split.
    assert_eq!(split.profile_of(&key(user, 1)), Some(&profile));
    let new_id = split.profile_of(&key(anon, 2)).unwrap().clone();
    assert_ne!(new_id, profile);
    assert_eq!(split.profile_of(&key(anon, 3)), Some(&new_id));
    assert_eq!(
        split.changes,
        vec![ProfileChange {
            kind: ChangeKind::Split,
            from: profile.clone(),
            into: new_id.clone(),
            identifiers: 2,
            edge: None,
        }]
    );
    let status = split
        .observations
        .iter()
        .find(|(o, _)| o.pair() == Some(ordered_pair(&key(anon, 1), &key(anon, 2))))
        .unwrap();
    assert_eq!(status.1, Some(EdgeStatus::Revoked));
    // A full rebuild without the edge gives the same map, ids included.
    let rebuilt = resolve(input(
        types(1),
        &Safeguards::default(),
        &revoked,
        &split.rows,
        false,
        data,
    ));
    assert_eq!(as_map(&rebuilt.rows), as_map(&split.rows));
    assert!(rebuilt.changes.is_empty());
}

#[test]
fn a_value_shared_by_many_people_is_blocked() {
    let (user, anon) = (0, 2);
    let kiosk = NodeKey {
        id_type: anon,
        value: "kiosk".into(),
    };
    let null = NodeKey {
        id_type: user,
        value: "NULL".into(),
    };
    let mut data: Vec<Observation> = (0..200u8)
        .map(|u| obs(kiosk.clone(), Some(key(user, u)), i64::from(u)))
        .collect();
    data.push(obs(null.clone(), Some(key(anon, 7)), 3));
    data.push(obs(key(anon, 1), Some(key(user, 1)), 300));
    let safeguards = Safeguards {
        max_links: 50,
        max_profile_identifiers: 0,
        placeholders: vec!["null".into()],
    };
    let resolution = resolve(input(
        types(1),
        &safeguards,
        &HashSet::new(),
        &[],
        false,
        data,
    ));
    assert_eq!(resolution.blocked.len(), 2, "{:?}", resolution.blocked);
    let reasons: BTreeMap<&NodeKey, &str> = resolution
        .blocked
        .iter()
        .map(|b| (&b.key, b.reason.as_str()))
        .collect();
    assert_eq!(
        reasons[&kiosk],
        "linked to 200 user_id identifiers (max 50)"
    );
    assert_eq!(reasons[&null], "placeholder value");
    assert!(resolution.profile_of(&kiosk).is_none());
    assert!(resolution.profile_of(&null).is_none());
    // No profile absorbs them: every user is alone but for its own device.
    assert_eq!(
        resolution.profile_of(&key(anon, 1)),
        resolution.profile_of(&key(user, 1))
    );
    let mut sizes: HashMap<&Arc<str>, usize> = HashMap::new();
    for r in &resolution.rows {
        *sizes.entry(&r.profile_id).or_default() += 1;
    }
    assert!(sizes.values().all(|&n| n <= 2), "{sizes:?}");
    let held = resolution
        .observations
        .iter()
        .filter(|(_, s)| s.as_ref().is_some_and(|s| s.as_str() == "held"))
        .count();
    assert_eq!(held, 201);
}

#[test]
fn a_profile_never_grows_past_its_cap() {
    let anon = 2;
    // A chain of devices, each seen with the next: one component of 30.
    let data: Vec<Observation> = (0..29u8)
        .map(|i| obs(key(anon, i), Some(key(anon, i + 1)), i64::from(i)))
        .collect();
    let safeguards = Safeguards {
        max_links: 0,
        max_profile_identifiers: 10,
        placeholders: Vec::new(),
    };
    let resolution = resolve(input(
        types(1),
        &safeguards,
        &HashSet::new(),
        &[],
        false,
        data,
    ));
    let mut sizes: HashMap<&Arc<str>, usize> = HashMap::new();
    for r in &resolution.rows {
        *sizes.entry(&r.profile_id).or_default() += 1;
    }
    assert!(sizes.values().all(|&n| n <= 10), "{sizes:?}");
    assert!(!resolution.blocked.is_empty());
}
