use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proptest::prelude::*;

use super::*;

/// Reference: breadth-first search over an adjacency list.
fn bfs_components(n: usize, edges: &[(u32, u32)]) -> Vec<u32> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a as usize].push(b);
        adj[b as usize].push(a);
    }
    let mut label = vec![u32::MAX; n];
    for start in 0..n {
        if label[start] != u32::MAX {
            continue;
        }
        let mut queue = VecDeque::from([start as u32]);
        label[start] = start as u32;
        while let Some(x) = queue.pop_front() {
            for &y in &adj[x as usize] {
                if label[y as usize] == u32::MAX {
                    label[y as usize] = start as u32;
                    queue.push_back(y);
                }
            }
        }
    }
    label
}

/// Partition of nodes as sets, comparable regardless of labels.
fn partition(labels: impl IntoIterator<Item = (u32, u32)>) -> BTreeSet<BTreeSet<u32>> {
    let mut groups: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for (node, label) in labels {
        groups.entry(label).or_default().insert(node);
    }
    groups.into_values().collect()
}

proptest! {
    #[test]
    fn union_find_agrees_with_bfs(
        n in 1usize..60,
        raw in proptest::collection::vec((0u32..60, 0u32..60), 0..120),
    ) {
        let edges: Vec<(u32, u32)> = raw
            .into_iter()
            .map(|(a, b)| (a % n as u32, b % n as u32))
            .collect();
        let mut uf = UnionFind::with_capacity(n);
        uf.grow_to(n);
        for &(a, b) in &edges {
            uf.union(a, b);
        }
        let ours = partition((0..n as u32).map(|x| (x, uf.find(x))));
        let reference = bfs_components(n, &edges);
        let theirs = partition((0..n as u32).map(|x| (x, reference[x as usize])));
        prop_assert_eq!(ours, theirs);
        // Sizes are the set sizes.
        for x in 0..n as u32 {
            let root = uf.find(x);
            let members = (0..n as u32).filter(|&y| uf.find_const(y) == root).count();
            prop_assert_eq!(uf.size(root) as usize, members);
        }
    }

    #[test]
    fn string_components_do_not_depend_on_order(
        raw in proptest::collection::vec((0u8..30, proptest::option::of(0u8..30)), 0..80),
        seed in any::<u64>(),
    ) {
        let names: Vec<(String, Option<String>)> = raw
            .iter()
            .map(|(a, b)| (format!("n{a}"), b.map(|b| format!("n{b}"))))
            .collect();
        let run = |edges: &[(String, Option<String>)]| -> HashMap<String, String> {
            connected_components(edges.iter().map(|(a, b)| (a.as_str(), b.as_deref())))
                .into_iter()
                .collect()
        };
        let forward = run(&names);
        let mut shuffled = names.clone();
        // Deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(forward, run(&shuffled));
    }
}

#[test]
fn labels_are_the_smallest_node() {
    let out: HashMap<String, String> =
        connected_components([("b", Some("c")), ("c", Some("a")), ("x", None)])
            .into_iter()
            .collect();
    assert_eq!(out["b"], "a");
    assert_eq!(out["c"], "a");
    assert_eq!(out["x"], "x");
    assert_eq!(out.len(), 4);
}

proptest! {
    #[test]
    fn components_do_not_depend_on_edge_order(
        raw in proptest::collection::vec((0u8..40, proptest::option::of(0u8..40)), 0..120),
        seed in any::<u64>(),
    ) {
        let names: Vec<(String, Option<String>)> = raw
            .iter()
            .map(|(a, b)| (format!("node-{a}"), b.map(|b| format!("node-{b}"))))
            .collect();
        let edges: Vec<(&str, Option<&str>)> =
            names.iter().map(|(a, b)| (a.as_str(), b.as_deref())).collect();
        let labelled = |edges: &[(&str, Option<&str>)]| -> BTreeMap<String, String> {
            let (nodes, labels) = components(edges);
            nodes
                .iter()
                .zip(&labels)
                .map(|(n, l)| ((*n).to_owned(), nodes[*l as usize].to_owned()))
                .collect()
        };
        let one = labelled(&edges);
        let mut reversed = edges.clone();
        reversed.rotate_left((seed as usize) % edges.len().max(1));
        reversed.reverse();
        prop_assert_eq!(&one, &labelled(&reversed));
        // Labels are the smallest member, as BFS would group them.
        let mut by_label: BTreeMap<&String, BTreeSet<&String>> = BTreeMap::new();
        for (n, l) in &one {
            by_label.entry(l).or_default().insert(n);
        }
        for (l, members) in by_label {
            prop_assert_eq!(members.iter().next().copied(), Some(l));
        }
    }
}
