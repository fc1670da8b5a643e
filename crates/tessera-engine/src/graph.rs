//! Graph primitives for identity resolution: a union-find (disjoint-set forest) over
//! dense `u32` node ids, with path compression and union by size, so that connecting
//! `m` edges over `n` nodes costs `O(m α(n))` — effectively linear — instead of the
//! `O(diameter)` rounds of label propagation that SQL-only stitching needs.
//!
//! [`UnionFind`] knows nothing of identifiers or limits: callers map their keys to ids
//! (see [`Interner`]) and decide which unions to perform; `tessera-identity` builds
//! limits, priorities and stable profile ids on top of it, and the
//! `connected_components` table function exposes it to SQL.

use std::collections::HashMap;
use std::hash::Hash;

use foldhash::fast::FixedState;

/// The hasher of graph maps: fast and fixed (no per-process seed), so runs are
/// reproducible.
pub type GraphHasher = FixedState;

/// A disjoint-set forest over nodes `0..len()`.
#[derive(Debug, Clone, Default)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    /// An empty forest.
    pub fn new() -> Self {
        UnionFind::default()
    }

    /// An empty forest with room for `n` nodes.
    pub fn with_capacity(n: usize) -> Self {
        UnionFind {
            parent: Vec::with_capacity(n),
            size: Vec::with_capacity(n),
        }
    }

    /// Adds a node in a set of its own and returns its id.
    pub fn push(&mut self) -> u32 {
        let id = self.parent.len() as u32;
        self.parent.push(id);
        self.size.push(1);
        id
    }

    /// Grows the forest to `n` nodes (new nodes are singletons).
    pub fn grow_to(&mut self, n: usize) {
        while self.parent.len() < n {
            self.push();
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether the forest has no node.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// The representative of `x`'s set. Compresses the path: every node visited is
    /// pointed straight at the root.
    pub fn find(&mut self, x: u32) -> u32 {
        let mut root = x;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        let mut node = x;
        while self.parent[node as usize] != root {
            let next = self.parent[node as usize];
            self.parent[node as usize] = root;
            node = next;
        }
        root
    }

    /// The representative of `x`'s set, without modifying the forest.
    pub fn find_const(&self, x: u32) -> u32 {
        let mut root = x;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        root
    }

    /// Size of the set whose representative is `root`.
    pub fn size(&self, root: u32) -> u32 {
        self.size[root as usize]
    }

    /// Joins the sets of roots `a` and `b` (both must be roots, and distinct); the
    /// larger set's root stays the root. Returns `(kept, absorbed)`.
    pub fn union_roots(&mut self, a: u32, b: u32) -> (u32, u32) {
        debug_assert!(a != b && self.parent[a as usize] == a && self.parent[b as usize] == b);
        let (kept, absorbed) = if self.size[a as usize] >= self.size[b as usize] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[absorbed as usize] = kept;
        self.size[kept as usize] += self.size[absorbed as usize];
        (kept, absorbed)
    }

    /// Joins the sets of `a` and `b`. Returns `(kept, absorbed)` roots, or `None` when
    /// they were already in one set.
    pub fn union(&mut self, a: u32, b: u32) -> Option<(u32, u32)> {
        let (ra, rb) = (self.find(a), self.find(b));
        (ra != rb).then(|| self.union_roots(ra, rb))
    }
}

/// Assigns dense `u32` ids to keys in order of first appearance.
#[derive(Debug, Clone)]
pub struct Interner<K> {
    ids: HashMap<K, u32, GraphHasher>,
    keys: Vec<K>,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            ids: HashMap::with_hasher(GraphHasher::default()),
            keys: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Interner<K> {
    /// An empty interner.
    pub fn new() -> Self {
        Interner::default()
    }

    /// An empty interner with room for `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        Interner {
            ids: HashMap::with_capacity_and_hasher(n, GraphHasher::default()),
            keys: Vec::with_capacity(n),
        }
    }

    /// The id of `key`, assigning the next one if it is new; the flag says whether it
    /// was new.
    pub fn intern(&mut self, key: &K) -> (u32, bool) {
        if let Some(&id) = self.ids.get(key) {
            return (id, false);
        }
        let id = self.keys.len() as u32;
        self.ids.insert(key.clone(), id);
        self.keys.push(key.clone());
        (id, true)
    }

    /// The id of `key`, if interned.
    pub fn get(&self, key: &K) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// The key of `id`.
    pub fn key(&self, id: u32) -> &K {
        &self.keys[id as usize]
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key was interned.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Connected components of an edge list over string nodes: the distinct nodes in order
/// of first appearance, and for each its component's label, the index (into the nodes)
/// of the smallest node of its component. An edge whose second end is `None` only
/// declares its first end.
pub fn components<'a>(edges: &[(&'a str, Option<&'a str>)]) -> (Vec<&'a str>, Vec<u32>) {
    let mut interner: Interner<&'a str> = Interner::with_capacity(edges.len() * 5 / 4);
    let mut ends: Vec<(u32, u32)> = Vec::with_capacity(edges.len());
    for (a, b) in edges {
        let ia = interner.intern(a).0;
        let ib = b.map_or(ia, |b| interner.intern(&b).0);
        ends.push((ia, ib));
    }
    let nodes = interner.keys;
    let n = nodes.len();
    let mut uf = UnionFind::with_capacity(n);
    uf.grow_to(n);
    for (a, b) in ends {
        if a != b {
            uf.union(a, b);
        }
    }
    // The label of a component is its smallest node, kept at its root; comparing
    // 8-byte prefixes first avoids most string reads.
    let prefix = |s: &str| -> u64 {
        let mut p = [0u8; 8];
        let len = s.len().min(8);
        p[..len].copy_from_slice(&s.as_bytes()[..len]);
        u64::from_be_bytes(p)
    };
    let prefixes: Vec<u64> = nodes.iter().map(|s| prefix(s)).collect();
    let mut best: Vec<u32> = (0..n as u32).collect();
    for id in 0..n as u32 {
        let root = uf.find(id) as usize;
        let current = best[root];
        let (p, q) = (prefixes[id as usize], prefixes[current as usize]);
        if p < q || (p == q && nodes[id as usize] < nodes[current as usize]) {
            best[root] = id;
        }
    }
    let labels = (0..n as u32)
        .map(|id| best[uf.find_const(id) as usize])
        .collect();
    (nodes, labels)
}

/// [`components`] as `(node, label)` strings.
pub fn connected_components<'a>(
    edges: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Vec<(String, String)> {
    let edges: Vec<(&'a str, Option<&'a str>)> = edges.into_iter().collect();
    let (nodes, labels) = components(&edges);
    nodes
        .iter()
        .zip(&labels)
        .map(|(n, l)| ((*n).to_owned(), nodes[*l as usize].to_owned()))
        .collect()
}

#[cfg(test)]
mod tests;
