//! The identity graph: identifiers as nodes, observations (two identifiers seen
//! together) as edges, joined with a union-find under per-type limits, with stable
//! profile ids and a record of how profiles changed. Pure: no I/O, no clock, no SQL.
//!
//! Invariants:
//! - observations are applied in a canonical order, strongest evidence first:
//!   deterministic edges before probabilistic ones, probabilistic ones by descending
//!   match probability, then first seen, edge priority and the identifiers themselves —
//!   so the result never depends on input order, and when edges compete for a type's
//!   limit the stronger one wins, whenever it arrived;
//! - an edge that would put more identifiers of a type into one profile than the
//!   type's limit allows is not applied, and says why;
//! - a revoked edge (an unmerge) is never applied; an identifier linked to too many
//!   identifiers of one type, or a placeholder value (`null`, `-1`, ...), is blocked —
//!   its edges are held and it joins no profile; an edge that would grow a profile past
//!   the configured size is held and its busier end blocked;
//! - every run resolves the whole graph from every edge ([`resolve`]), so an
//!   incremental run and a full rebuild give the same partition;
//! - a profile's id is kept from the previous map by the set holding most of that
//!   profile's identifiers (the older profile when several meet); a set without one
//!   takes an id derived from its founding identifier (earliest seen, then a fixed hash
//!   of the identifier), so rebuilding from scratch gives the same ids.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
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

/// Guards against values that would fuse many people into one profile (none by
/// default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Safeguards {
    /// An identifier linked directly to more than this many distinct identifiers of one
    /// type is blocked (0: never).
    pub max_links: u32,
    /// An edge that would put more identifiers than this into one profile is held
    /// (0: no cap).
    pub max_profile_identifiers: u32,
    /// Values that are never identifiers, compared case-insensitively.
    pub placeholders: Vec<String>,
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
    /// From probabilistic matching: weaker than any deterministic edge, and ranked by
    /// `score` among its kind.
    pub probabilistic: bool,
}

impl Observation {
    /// The identifier pair, smaller first (the key of a revocation).
    pub fn pair(&self) -> Option<(NodeKey, NodeKey)> {
        let b = self.b.as_ref()?;
        Some(ordered_pair(&self.a, b))
    }
}

/// `(x, y)` with the smaller identifier first.
pub fn ordered_pair(x: &NodeKey, y: &NodeKey) -> (NodeKey, NodeKey) {
    if x <= y {
        (x.clone(), y.clone())
    } else {
        (y.clone(), x.clone())
    }
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
    /// One of its identifiers is blocked (or the profile would grow past its cap).
    Held(String),
    /// It was revoked by an unmerge and is never applied.
    Revoked,
}

impl EdgeStatus {
    /// `merged`, `linked`, `rejected`, `held` or `revoked`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EdgeStatus::Merged => "merged",
            EdgeStatus::Linked => "linked",
            EdgeStatus::Rejected(_) => "rejected",
            EdgeStatus::Held(_) => "held",
            EdgeStatus::Revoked => "revoked",
        }
    }

    /// Why it was rejected or held.
    pub fn reason(&self) -> Option<&str> {
        match self {
            EdgeStatus::Rejected(r) | EdgeStatus::Held(r) => Some(r),
            EdgeStatus::Revoked => Some("revoked by an unmerge"),
            _ => None,
        }
    }

    /// Whether the edge joined its identifiers.
    pub fn applied(&self) -> bool {
        matches!(self, EdgeStatus::Merged | EdgeStatus::Linked)
    }
}

/// How a profile of the previous map changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// `from` no longer exists: its identifiers are in `into`.
    Merge,
    /// `into` is new, made of identifiers that were `from`'s.
    Split,
    /// Some of `from`'s identifiers moved to `into`; both still exist.
    Move,
}

impl ChangeKind {
    /// `merge`, `split` or `move`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Merge => "merge",
            ChangeKind::Split => "split",
            ChangeKind::Move => "move",
        }
    }
}

/// One change of profiles between the previous map and the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileChange {
    pub kind: ChangeKind,
    pub from: Arc<str>,
    pub into: Arc<str>,
    /// Identifiers of `from` now in `into`.
    pub identifiers: u64,
    /// Index, in the applied observations, of the edge that brought them together
    /// (merges and moves), when one did.
    pub edge: Option<usize>,
}

/// An identifier that joins no profile, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub key: NodeKey,
    pub reason: String,
    /// Distinct identifiers it was seen with.
    pub links: u64,
}

/// A row of the identity map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRow {
    pub key: NodeKey,
    pub profile_id: Arc<str>,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// What [`resolve`] works from.
#[derive(Debug)]
pub struct Input<'a> {
    pub types: TypeRules,
    pub safeguards: &'a Safeguards,
    /// Identifier pairs ([`ordered_pair`]) never to join.
    pub revoked: &'a HashSet<(NodeKey, NodeKey)>,
    /// The map the previous run wrote (ids to keep, changes to report).
    pub previous: &'a [MapRow],
    /// Keep every identifier of `previous` even when no observation names it (an
    /// incremental run, whose observations of old events are not re-read).
    pub keep_previous: bool,
    /// Every edge (and lone identifier) to resolve.
    pub observations: Vec<Observation>,
}

/// The outcome of [`resolve`].
#[derive(Debug, Default)]
pub struct Resolution {
    /// The observations in the order they were applied, each with its status.
    pub observations: Vec<(Observation, Option<EdgeStatus>)>,
    /// How profiles of the previous map changed, by kind, then ids.
    pub changes: Vec<ProfileChange>,
    /// Identifiers blocked, in identifier order.
    pub blocked: Vec<Blocked>,
    /// Every identifier with its profile id, in identifier order.
    pub rows: Vec<MapRow>,
    /// Identifiers not in the previous map.
    pub new_identifiers: u64,
}

impl Resolution {
    /// The profile id of identifier `key`, if it is in the map.
    pub fn profile_of(&self, key: &NodeKey) -> Option<&Arc<str>> {
        self.rows
            .binary_search_by(|r| r.key.cmp(key))
            .ok()
            .map(|i| &self.rows[i].profile_id)
    }
}

/// Resolves the whole identity graph: observations in canonical order under limits,
/// revocations and safeguards, then profile ids kept from (and changes reported
/// against) the previous map.
pub fn resolve(input: Input<'_>) -> Resolution {
    let mut graph = Graph::new(input.types);
    let mut hints: HashMap<&NodeKey, &Arc<str>> = HashMap::with_capacity(input.previous.len());
    for row in input.previous {
        hints.insert(&row.key, &row.profile_id);
    }
    let mut observations = input.observations;
    graph.canonical_sort(&mut observations);
    graph.block(input.safeguards, &observations);
    if input.keep_previous {
        for row in input.previous {
            if !graph.blocked.contains_key(&row.key) {
                graph.node(&row.key, row.first_seen, row.last_seen, &hints);
            }
        }
    }
    let applied = graph.apply(observations, input.safeguards, input.revoked, &hints);
    let changes = graph.publish(input.previous);
    let rows = graph.map_rows();
    let previous: HashSet<&NodeKey> = input.previous.iter().map(|r| &r.key).collect();
    let new_identifiers = rows.iter().filter(|r| !previous.contains(&r.key)).count() as u64;
    let mut blocked: Vec<Blocked> = graph
        .blocked
        .into_iter()
        .map(|(key, (reason, links))| Blocked { key, reason, links })
        .collect();
    blocked.sort_by(|x, y| x.key.cmp(&y.key));
    Resolution {
        observations: applied,
        changes,
        blocked,
        rows,
        new_identifiers,
    }
}

/// The identity graph of one run.
#[derive(Debug)]
struct Graph {
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
    /// Per root: the previous map's profile ids its identifiers had (sorted, distinct).
    origins: Vec<Vec<Arc<str>>>,
    /// Per node: its profile id in the previous map.
    hint: Vec<Option<Arc<str>>>,
    /// First edge (applied index) that brought identifiers of two previous profiles
    /// into one set.
    meetings: HashMap<(Arc<str>, Arc<str>), usize>,
    /// Blocked identifiers: reason, distinct identifiers seen with.
    blocked: HashMap<NodeKey, (String, u64)>,
    /// Distinct identifiers each identifier was seen with.
    degree: HashMap<NodeKey, u64>,
    /// Per root: its profile id, once published.
    published: Vec<Option<Arc<str>>>,
}

impl Graph {
    fn new(types: TypeRules) -> Self {
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
            origins: Vec::new(),
            hint: Vec::new(),
            meetings: HashMap::new(),
            blocked: HashMap::new(),
            degree: HashMap::new(),
            published: Vec::new(),
        }
    }

    fn node(
        &mut self,
        key: &NodeKey,
        first_seen: i64,
        last_seen: i64,
        hints: &HashMap<&NodeKey, &Arc<str>>,
    ) -> u32 {
        let (id, new) = self.nodes.intern(key);
        if new {
            self.uf.push();
            self.first_seen.push(first_seen);
            self.last_seen.push(last_seen);
            self.founder.push(id);
            self.published.push(None);
            let hint = hints.get(key).map(|p| (*p).clone());
            self.origins.push(hint.iter().cloned().collect());
            self.hint.push(hint);
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

    /// Joins roots `ra` and `rb` by edge `edge`.
    fn join(&mut self, ra: u32, rb: u32, edge: usize) {
        let (fa, fb) = (self.founder[ra as usize], self.founder[rb as usize]);
        let founder = if self.founder_order(fa, fb) != Ordering::Greater {
            fa
        } else {
            fb
        };
        let a = std::mem::take(&mut self.origins[ra as usize]);
        let b = std::mem::take(&mut self.origins[rb as usize]);
        // Pairs of previous profiles meeting here for the first time (bounded: a set
        // holding many previous profiles is already a merge of many).
        if !a.is_empty() && !b.is_empty() && a.len() * b.len() <= 64 {
            for p in &a {
                for q in &b {
                    if p != q {
                        let key = if p < q {
                            (p.clone(), q.clone())
                        } else {
                            (q.clone(), p.clone())
                        };
                        self.meetings.entry(key).or_insert(edge);
                    }
                }
            }
        }
        let mut origins = a;
        for q in b {
            if let Err(i) = origins.binary_search(&q) {
                origins.insert(i, q);
            }
        }
        let (kept, absorbed) = self.uf.union_roots(ra, rb);
        let k = self.limited.len();
        for slot in 0..k {
            self.counts[kept as usize * k + slot] += self.counts[absorbed as usize * k + slot];
        }
        self.founder[kept as usize] = founder;
        self.origins[kept as usize] = origins;
    }

    fn edge_order(&self, o: &Observation) -> (i64, u32, u32) {
        let pa = self.types.priority(o.a.id_type);
        let pb = o.b.as_ref().map_or(pa, |b| self.types.priority(b.id_type));
        (o.first_seen, pa.min(pb), pa.max(pb))
    }

    /// Sorts observations into the order [`resolve`] applies them: deterministic before
    /// probabilistic, higher probability first, then first seen, the more trusted
    /// edge, and the identifiers.
    fn canonical_sort(&self, observations: &mut [Observation]) {
        observations.sort_by(|x, y| {
            x.probabilistic
                .cmp(&y.probabilistic)
                .then_with(|| {
                    if x.probabilistic {
                        y.score.total_cmp(&x.score)
                    } else {
                        Ordering::Equal
                    }
                })
                .then_with(|| self.edge_order(x).cmp(&self.edge_order(y)))
                .then_with(|| x.a.cmp(&y.a))
                .then_with(|| x.b.cmp(&y.b))
                .then_with(|| x.rule.cmp(&y.rule))
        });
    }

    /// Blocks placeholder values and identifiers linked to too many identifiers of one
    /// type.
    fn block(&mut self, safeguards: &Safeguards, observations: &[Observation]) {
        let placeholders: HashSet<String> = safeguards
            .placeholders
            .iter()
            .map(|p| p.to_lowercase())
            .collect();
        let mut links: Vec<(&NodeKey, TypeId, &NodeKey)> = Vec::new();
        for o in observations {
            for key in std::iter::once(&o.a).chain(o.b.as_ref()) {
                if !placeholders.is_empty()
                    && placeholders.contains(&key.value.to_lowercase())
                    && !self.blocked.contains_key(key)
                {
                    self.blocked
                        .insert(key.clone(), ("placeholder value".to_owned(), 0));
                }
            }
            if let Some(b) = &o.b {
                links.push((&o.a, b.id_type, b));
                links.push((b, o.a.id_type, &o.a));
            }
        }
        links.sort_unstable();
        links.dedup();
        let mut i = 0;
        while i < links.len() {
            let node = links[i].0;
            let mut j = i;
            let mut worst: (u64, TypeId) = (0, 0);
            while j < links.len() && links[j].0 == node {
                let t = links[j].1;
                let mut k = j;
                while k < links.len() && links[k].0 == node && links[k].1 == t {
                    k += 1;
                }
                if (k - j) as u64 > worst.0 {
                    worst = ((k - j) as u64, t);
                }
                j = k;
            }
            let total = (j - i) as u64;
            self.degree.insert(node.clone(), total);
            if let Some(entry) = self.blocked.get_mut(node) {
                entry.1 = total;
            } else if safeguards.max_links > 0 && worst.0 > u64::from(safeguards.max_links) {
                self.blocked.insert(
                    node.clone(),
                    (
                        format!(
                            "linked to {} {} identifiers (max {})",
                            worst.0,
                            self.types.name(worst.1),
                            safeguards.max_links
                        ),
                        total,
                    ),
                );
            }
            i = j;
        }
    }

    /// Applies observations (already in canonical order).
    fn apply(
        &mut self,
        observations: Vec<Observation>,
        safeguards: &Safeguards,
        revoked: &HashSet<(NodeKey, NodeKey)>,
        hints: &HashMap<&NodeKey, &Arc<str>>,
    ) -> Vec<(Observation, Option<EdgeStatus>)> {
        let cap = safeguards.max_profile_identifiers;
        let mut out = Vec::with_capacity(observations.len());
        for (index, o) in observations.into_iter().enumerate() {
            let blocked_a = self.blocked.contains_key(&o.a);
            let Some(bkey) = &o.b else {
                if !blocked_a {
                    self.node(&o.a, o.first_seen, o.last_seen, hints);
                }
                out.push((o, None));
                continue;
            };
            let blocked_b = self.blocked.contains_key(bkey);
            let status = if blocked_a || blocked_b {
                for (key, blocked) in [(&o.a, blocked_a), (bkey, blocked_b)] {
                    if !blocked {
                        self.node(key, o.first_seen, o.last_seen, hints);
                    }
                }
                let key = if blocked_a { &o.a } else { bkey };
                let reason = &self.blocked[key].0;
                EdgeStatus::Held(format!(
                    "{} {} is blocked: {reason}",
                    self.types.name(key.id_type),
                    key.value
                ))
            } else {
                let a = self.node(&o.a, o.first_seen, o.last_seen, hints);
                let b = self.node(bkey, o.first_seen, o.last_seen, hints);
                let (ra, rb) = (self.uf.find(a), self.uf.find(b));
                let size = u64::from(self.uf.size(ra)) + u64::from(self.uf.size(rb));
                if !revoked.is_empty() && o.pair().is_some_and(|p| revoked.contains(&p)) {
                    EdgeStatus::Revoked
                } else if ra == rb {
                    EdgeStatus::Linked
                } else if let Some(reason) = self.limit_breach(ra, rb) {
                    EdgeStatus::Rejected(reason)
                } else if cap > 0 && size > u64::from(cap) {
                    // The busier end is what fuses people; it joins nothing more.
                    let degree = |k: &NodeKey| self.degree.get(k).copied().unwrap_or(0);
                    let busier = if degree(bkey) > degree(&o.a) {
                        bkey
                    } else {
                        &o.a
                    };
                    let links = degree(busier);
                    self.blocked.insert(
                        busier.clone(),
                        (
                            format!(
                                "its edges would put more than {cap} identifiers in one profile"
                            ),
                            links,
                        ),
                    );
                    EdgeStatus::Held(format!(
                        "would put {size} identifiers in one profile (max {cap})"
                    ))
                } else {
                    let both_grown = self.uf.size(ra) > 1 && self.uf.size(rb) > 1;
                    let distinct_origins = {
                        let (x, y) = (&self.origins[ra as usize], &self.origins[rb as usize]);
                        !x.is_empty() && !y.is_empty() && x != y
                    };
                    self.join(ra, rb, index);
                    if both_grown || distinct_origins {
                        EdgeStatus::Merged
                    } else {
                        EdgeStatus::Linked
                    }
                }
            };
            out.push((o, Some(status)));
        }
        out
    }

    /// Gives every set its profile id — kept from the previous map where the set holds
    /// most of a previous profile's identifiers, derived from its founder otherwise —
    /// and reports how the previous profiles changed.
    fn publish(&mut self, previous: &[MapRow]) -> Vec<ProfileChange> {
        // Identifiers of each previous profile per set.
        let mut tally: HashMap<(u32, Arc<str>), u64> = HashMap::new();
        // A previous profile's age: its founding identifier under the founding order.
        let order = |r: &MapRow| (r.first_seen, fnv1a(&r.key), r.key.clone());
        let mut age: HashMap<&Arc<str>, (i64, u64, NodeKey)> = HashMap::new();
        for row in previous {
            let key = order(row);
            match age.get_mut(&row.profile_id) {
                Some(old) if *old <= key => {}
                Some(old) => *old = key,
                None => {
                    age.insert(&row.profile_id, key);
                }
            }
        }
        for node in 0..self.nodes.len() as u32 {
            if let Some(p) = self.hint[node as usize].clone() {
                let root = self.uf.find(node);
                *tally.entry((root, p)).or_default() += 1;
            }
        }
        // Each previous profile's home: the set holding most of it (then the set founded
        // first).
        let mut home: HashMap<Arc<str>, (u32, u64)> = HashMap::new();
        let mut tallies: Vec<((u32, Arc<str>), u64)> = tally.into_iter().collect();
        tallies.sort_by(|x, y| x.0.1.cmp(&y.0.1).then(x.0.0.cmp(&y.0.0)));
        for ((root, p), n) in &tallies {
            match home.get(p) {
                Some(&(r, m))
                    if m > *n
                        || (m == *n
                            && self.founder_order(
                                self.founder[r as usize],
                                self.founder[*root as usize],
                            ) != Ordering::Greater) => {}
                _ => {
                    home.insert(p.clone(), (*root, *n));
                }
            }
        }
        // Each set keeps the oldest of the previous profiles whose home it is.
        let mut claims: BTreeMap<u32, Vec<Arc<str>>> = BTreeMap::new();
        for (p, (root, _)) in &home {
            claims.entry(*root).or_default().push(p.clone());
        }
        let mut changes = Vec::new();
        let mut used: HashSet<Arc<str>> = HashSet::new();
        for (root, mut ps) in claims {
            ps.sort_by(|x, y| age.get(x).cmp(&age.get(y)).then_with(|| x.cmp(y)));
            let kept = ps[0].clone();
            for p in &ps[1..] {
                changes.push(ProfileChange {
                    kind: ChangeKind::Merge,
                    from: p.clone(),
                    into: kept.clone(),
                    identifiers: home[p].1,
                    edge: self.meeting(p, &kept),
                });
            }
            used.insert(kept.clone());
            self.published[root as usize] = Some(kept);
        }
        // Parts of previous profiles that live elsewhere: moved into a kept profile, or
        // split off into a new one.
        let mut parts: BTreeMap<u32, Vec<(Arc<str>, u64)>> = BTreeMap::new();
        for ((root, p), n) in tallies {
            if home.get(&p).is_some_and(|(r, _)| *r != root) {
                parts.entry(root).or_default().push((p, n));
            }
        }
        for (root, ps) in parts {
            match self.published[root as usize].clone() {
                Some(into) => {
                    for (p, n) in ps {
                        let edge = self.meeting(&p, &into);
                        changes.push(ProfileChange {
                            kind: ChangeKind::Move,
                            from: p,
                            into: into.clone(),
                            identifiers: n,
                            edge,
                        });
                    }
                }
                None => {
                    let into = self.fresh_id(root, &used);
                    used.insert(into.clone());
                    self.published[root as usize] = Some(into.clone());
                    for (p, n) in ps {
                        changes.push(ProfileChange {
                            kind: ChangeKind::Split,
                            from: p,
                            into: into.clone(),
                            identifiers: n,
                            edge: None,
                        });
                    }
                }
            }
        }
        changes.sort_by(|x, y| (x.kind, &x.from, &x.into).cmp(&(y.kind, &y.from, &y.into)));
        changes
    }

    fn meeting(&self, p: &Arc<str>, q: &Arc<str>) -> Option<usize> {
        let key = if p < q {
            (p.clone(), q.clone())
        } else {
            (q.clone(), p.clone())
        };
        self.meetings.get(&key).copied()
    }

    /// An id for a new set that no kept profile uses: derived from its founder.
    fn fresh_id(&self, root: u32, used: &HashSet<Arc<str>>) -> Arc<str> {
        let key = self.nodes.key(self.founder[root as usize]);
        let mut id = derive_profile_id(self.types.name(key.id_type), &key.value);
        let mut n = 1;
        while used.contains(&id) {
            n += 1;
            id = derive_profile_id(
                self.types.name(key.id_type),
                &format!("{}\u{0}{n}", key.value),
            );
        }
        id
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

    /// Every identifier with its profile id, in identifier order.
    fn map_rows(&mut self) -> Vec<MapRow> {
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
