//! Tessera's identity resolution: one profile per person from the identifiers events
//! carry, without ever merging two people.
//!
//! - [`rules`]: which fields are identifiers and which co-occurrences link them, as SQL
//!   files in `sql/identity/` (plus one line of config per extra identifier type);
//! - [`resolve`]: the identity graph — a union-find under per-type limits, strongest
//!   evidence first, with revocations, blocked values, stable profile ids and the
//!   merges, splits and moves since the previous map (pure, no I/O);
//! - [`stitch`]: a run over the lake (incremental in the events it reads, whole in the
//!   graph it resolves) writing `identity_edges`, `identity_map`, `profile_merges` and
//!   `blocked_values`;
//! - [`unmerge`]: splitting an identifier (or an edge) off a profile by revoking the
//!   evidence that joined them;
//! - [`profiles`]: the golden `profiles` table (survivorship per trait, computed traits
//!   from `sql/traits/`);
//! - [`snapshot`]: every profile of one lake snapshot in memory (identifiers, traits,
//!   scores, memberships, merges) and the one resolver of identifiers, shared by
//!   `tessera profile`, `tessera.v1` and what comes after them;
//! - [`lookup`]: `tessera profile`'s view of a profile, from a snapshot;
//! - [`blocking`]: which record pairs probabilistic matching compares (SQL rules, pair
//!   counts before running);
//! - [`fellegi_sunter`]: the probabilistic record-linkage model (comparison levels,
//!   `m`/`u` probabilities, EM training, match weights, term-frequency adjustment)
//!   for records that share no exact identifier (pure, no I/O);
//! - [`matching`]: the probabilistic-matching pipeline over the lake (`match.toml`:
//!   records, blocking, comparisons; training, prediction, `match_models`,
//!   `match_pairs`, evaluation).
//!
//! This crate knows nothing of HTTP or gRPC.

pub mod blocking;
pub mod consent;
pub mod fellegi_sunter;
pub mod lookup;
pub mod matching;
pub mod profiles;
pub mod resolve;
pub mod rules;
pub mod snapshot;
pub mod stats;
pub mod stitch;
pub mod unmerge;

mod error;

pub use error::{IdentityError, Result};
pub use lookup::{AsOf, ProfileView, lookup, lookup_as_of};
pub use snapshot::{Profile, Resolved, Snapshot};
pub use stitch::{StitchOptions, StitchProgress, StitchReport, stitch};
