//! The identity graph: identifiers as nodes, observations (two identifiers seen
//! together) as edges, joined with a union-find under per-type limits, with stable
//! profile ids and a record of every merge. Pure: no I/O, no clock, no SQL.
//!
//! Invariants:
//! - observations are applied in a canonical order (first seen, then edge priority,
//!   then the identifiers themselves), so the result never depends on input order;
//! - an edge that would put more identifiers of a type into one profile than the
//!   type's limit allows is not applied, and says why;
//! - a profile's id is derived from its founding identifier (earliest seen, then a
//!   fixed hash of the identifier), so rebuilding from scratch gives the same ids; an id
//!   published by an earlier run is kept, and when two published profiles merge the
//!   older one (founded earlier) survives.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use tessera_core::identifier::hex_sha256;
use tessera_engine::graph::{Interner, UnionFind};

/// Index of an identifier type in [`TypeRules`].
pub type TypeId = u16;

/// An identifier: its type and normalized value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    pub id_type: TypeId,
    pub value: Box<str>,
}

/// Identifier types with their limits and priorities.
#[derive(Debug, Clone, Default)]
pub struct TypeRules {
    names: Vec<String>,
    limits: Vec<u32>,
    priorities: Vec<u32>,
}

impl TypeRules {
    /// Types from `(name, limit, priority)`; a limit of 0 means no limit.
    pub fn new<'a>(types: impl IntoIterator<Item = (&'a str, u32, u32)>) -> Self {
        let mut rules = TypeRules::default();
        for (name, limit, priority) in types {
            rules.names.push(name.to_owned());
            rules.limits.push(limit);
            rules.priorities.push(priority);
        }
        rules
    }

    /// The id of type `name`.
    pub fn id(&self, name: &str) -> Option<TypeId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| i as TypeId)
    }

    /// The name of type `id`.
    pub fn name(&self, id: TypeId) -> &str {
        &self.names[id as usize]
    }

    /// Every type name.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn priority(&self, id: TypeId) -> u32 {
        self.priorities[id as usize]
    }
}

/// What a rule saw: two identifiers together (or one alone, to declare it) from
/// `first_seen` to `last_seen` (microseconds since the epoch) in `events` events.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub a: NodeKey,
    pub b: Option<NodeKey>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub events: i64,
    /// Index of the rule that produced it (the caller's list).
    pub rule: u32,
    pub source: Option<String>,
    /// How sure the rule is: 1 for deterministic rules, the match probability for the
    /// probabilistic one.
    pub score: f64,
}

/// What became of an observation with two identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeStatus {
    /// It joined two profiles.
    Merged,
    /// Its identifiers were already in one profile, or it brought a new identifier in.
    Linked,
    /// Applying it would have broken a limit.
    Rejected(String),
}

impl EdgeStatus {
    /// `merged`, `linked` or `rejected`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EdgeStatus::Merged => "merged",
            EdgeStatus::Linked => "linked",
            EdgeStatus::Rejected(_) => "rejected",
        }
    }

    /// Why it was rejected.
    pub fn reason(&self) -> Option<&str> {
        match self {
            EdgeStatus::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

/// One published profile merged into another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub from: Arc<str>,
    pub into: Arc<str>,
    /// Index, in the applied (sorted) observations, of the edge that caused it.
    pub edge: usize,
}

/// The outcome of [`Graph::apply`]: the observations in the order they were applied,
/// each with its status, and the merges of published profiles.
#[derive(Debug, Default)]
pub struct Applied {
    pub observations: Vec<(Observation, Option<EdgeStatus>)>,
    pub merges: Vec<Merge>,
}

/// A row of the identity map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRow {
    pub key: NodeKey,
    pub profile_id: Arc<str>,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// The identity graph.
#[derive(Debug)]
pub struct Graph {
    types: TypeRules,
    nodes: Interner<NodeKey>,
    uf: UnionFind,
    first_seen: Vec<i64>,
    last_seen: Vec<i64>,
    /// Limited types: (type, limit), and per node `limited.len()` counters (valid at
    /// roots) of how many identifiers of each such type its set holds.
    limited: Vec<(TypeId, u32)>,
    counts: Vec<u32>,
    /// Per root: the founding node of its set.
    founder: Vec<u32>,
    /// Per root: the profile id published by an earlier run, if any.
    published: Vec<Option<Arc<str>>>,
}

impl Graph {
    /// An empty graph.
    pub fn new(types: TypeRules) -> Self {
        let limited = types
            .limits
            .iter()
            .enumerate()
            .filter(|(_, l)| **l > 0)
            .map(|(i, l)| (i as TypeId, *l))
            .collect();
        Graph {
            types,
            nodes: Interner::new(),
            uf: UnionFind::new(),
            first_seen: Vec::new(),
            last_seen: Vec::new(),
            limited,
            counts: Vec::new(),
            founder: Vec::new(),
            published: Vec::new(),
        }
    }

    /// The graph an earlier run left: every identifier of one profile in one set,
    /// carrying the profile's id. Limits are not re-checked.
    pub fn load(types: TypeRules, rows: impl IntoIterator<Item = MapRow>) -> Self {
        let mut graph = Graph::new(types);
        let mut by_profile: HashMap<Arc<str>, u32> = HashMap::new();
        for row in rows {
            let node = graph.node(&row.key, row.first_seen, row.last_seen);
            match by_profile.get(&row.profile_id) {
                Some(&other) => {
                    let (ra, rb) = (graph.uf.find(node), graph.uf.find(other));
                    if ra != rb {
                        graph.join(ra, rb);
                    }
                }
                None => {
                    by_profile.insert(row.profile_id.clone(), node);
                }
            }
            let root = graph.uf.find(node);
            graph.published[root as usize] = Some(row.profile_id);
        }
        graph
    }

    /// Number of identifiers.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no identifier.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The type rules.
    pub fn types(&self) -> &TypeRules {
        &self.types
    }

    fn node(&mut self, key: &NodeKey, first_seen: i64, last_seen: i64) -> u32 {
        let (id, new) = self.nodes.intern(key);
        if new {
            self.uf.push();
            self.first_seen.push(first_seen);
            self.last_seen.push(last_seen);
            self.founder.push(id);
            self.published.push(None);
            let k = self.limited.len();
            self.counts.extend(
                self.limited
                    .iter()
                    .map(|(t, _)| u32::from(*t == key.id_type)),
            );
            debug_assert_eq!(self.counts.len(), (id as usize + 1) * k);
        } else {
            let i = id as usize;
            self.first_seen[i] = self.first_seen[i].min(first_seen);
            self.last_seen[i] = self.last_seen[i].max(last_seen);
        }
        id
    }

    /// Founding order of nodes: earliest seen, then a fixed hash of the identifier.
    /// A minimum under this order does not depend on the order nodes were joined in,
    /// so a set's founder — and with it the profile id — is the same whether the data
    /// came in one run or many.
    fn founder_order(&self, x: u32, y: u32) -> Ordering {
        let (kx, ky) = (self.nodes.key(x), self.nodes.key(y));
        self.first_seen[x as usize]
            .cmp(&self.first_seen[y as usize])
            .then_with(|| fnv1a(kx).cmp(&fnv1a(ky)))
            .then_with(|| kx.cmp(ky))
    }

    /// Why joining roots `ra` and `rb` would break a limit, if it would.
    fn limit_breach(&self, ra: u32, rb: u32) -> Option<String> {
        let k = self.limited.len();
        for (slot, (t, limit)) in self.limited.iter().enumerate() {
            let total = self.counts[ra as usize * k + slot] + self.counts[rb as usize * k + slot];
            if total > *limit {
                return Some(format!(
                    "would put {total} {} identifiers in one profile (limit {limit})",
                    self.types.name(*t)
                ));
            }
        }
        None
    }

    /// Joins roots `ra` and `rb` unconditionally; returns the merge of two published
    /// profiles it implies, as `(from, into)`.
    fn join(&mut self, ra: u32, rb: u32) -> Option<(Arc<str>, Arc<str>)> {
        let (fa, fb) = (self.founder[ra as usize], self.founder[rb as usize]);
        let (pa, pb) = (
            self.published[ra as usize].clone(),
            self.published[rb as usize].clone(),
        );
        // The older profile survives: the one founded earlier.
        let a_older = self.founder_order(fa, fb) != Ordering::Greater;
        let founder = if a_older { fa } else { fb };
        let (published, merge) = match (pa, pb) {
            (Some(a), Some(b)) if a != b => {
                if a_older {
                    (Some(a.clone()), Some((b, a)))
                } else {
                    (Some(b.clone()), Some((a, b)))
                }
            }
            (a, b) => (a.or(b), None),
        };
        let (kept, absorbed) = self.uf.union_roots(ra, rb);
        let k = self.limited.len();
        for slot in 0..k {
            self.counts[kept as usize * k + slot] += self.counts[absorbed as usize * k + slot];
        }
        self.founder[kept as usize] = founder;
        self.published[kept as usize] = published;
        merge
    }

    fn edge_order(&self, o: &Observation) -> (i64, u32, u32) {
        let pa = self.types.priority(o.a.id_type);
        let pb = o.b.as_ref().map_or(pa, |b| self.types.priority(b.id_type));
        (o.first_seen, pa.min(pb), pa.max(pb))
    }

    /// Sorts observations into the order [`apply`](Self::apply) uses: first seen, then
    /// the more trusted edge, then the identifiers.
    pub fn canonical_sort(&self, observations: &mut [Observation]) {
        observations.sort_by(|x, y| {
            self.edge_order(x)
                .cmp(&self.edge_order(y))
                .then_with(|| x.a.cmp(&y.a))
                .then_with(|| x.b.cmp(&y.b))
                .then_with(|| x.rule.cmp(&y.rule))
        });
    }

    /// Applies observations in canonical order.
    pub fn apply(&mut self, mut observations: Vec<Observation>) -> Applied {
        self.canonical_sort(&mut observations);
        let mut applied = Applied {
            observations: Vec::with_capacity(observations.len()),
            merges: Vec::new(),
        };
        for (index, o) in observations.into_iter().enumerate() {
            let a = self.node(&o.a, o.first_seen, o.last_seen);
            let status = match &o.b {
                None => None,
                Some(bkey) => {
                    let b = self.node(bkey, o.first_seen, o.last_seen);
                    let (ra, rb) = (self.uf.find(a), self.uf.find(b));
                    Some(if ra == rb {
                        EdgeStatus::Linked
                    } else if let Some(reason) = self.limit_breach(ra, rb) {
                        EdgeStatus::Rejected(reason)
                    } else {
                        let both_grown = self.uf.size(ra) > 1 && self.uf.size(rb) > 1;
                        let merge = self.join(ra, rb);
                        let merged = merge.is_some() || both_grown;
                        if let Some((from, into)) = merge {
                            applied.merges.push(Merge {
                                from,
                                into,
                                edge: index,
                            });
                        }
                        if merged {
                            EdgeStatus::Merged
                        } else {
                            EdgeStatus::Linked
                        }
                    })
                }
            };
            applied.observations.push((o, status));
        }
        applied
    }

    /// The profile id of the set rooted at `root`: published, or derived from its
    /// founding identifier.
    fn profile_id_of_root(&mut self, root: u32) -> Arc<str> {
        if let Some(id) = &self.published[root as usize] {
            return id.clone();
        }
        let key = self.nodes.key(self.founder[root as usize]);
        let id = derive_profile_id(self.types.name(key.id_type), &key.value);
        self.published[root as usize] = Some(id.clone());
        id
    }

    /// The profile id of identifier `key`, if known.
    pub fn profile_of(&mut self, key: &NodeKey) -> Option<Arc<str>> {
        let id = self.nodes.get(key)?;
        let root = self.uf.find(id);
        Some(self.profile_id_of_root(root))
    }

    /// Every identifier with its profile id, in identifier order.
    pub fn map_rows(&mut self) -> Vec<MapRow> {
        let mut rows: Vec<MapRow> = (0..self.nodes.len() as u32)
            .map(|id| {
                let root = self.uf.find(id);
                MapRow {
                    key: self.nodes.key(id).clone(),
                    profile_id: self.profile_id_of_root(root),
                    first_seen: self.first_seen[id as usize],
                    last_seen: self.last_seen[id as usize],
                }
            })
            .collect();
        rows.sort_by(|x, y| x.key.cmp(&y.key));
        rows
    }
}

/// FNV-1a over an identifier: a stable (platform- and release-independent) hash.
fn fnv1a(key: &NodeKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.id_type.to_le_bytes().iter().chain(key.value.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id of a profile founded by identifier `(id_type, value)`: stable across runs and
/// rebuilds, and carrying nothing of the identifier in clear.
pub fn derive_profile_id(id_type: &str, value: &str) -> Arc<str> {
    let digest = hex_sha256(format!("{id_type}\u{0}{value}").as_bytes());
    Arc::from(format!("p_{}", &digest[..20]))
}

#[cfg(test)]
mod tests;
