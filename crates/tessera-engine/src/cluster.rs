//! Where a session's plans run when the project names a cluster (`[engine] cluster`).
//!
//! The engine plans every statement itself — tables at the versions it opened, the
//! caller's row filters and masks, the read-only policy, `as_of()` as a literal — and
//! only then hands the physical plan to a [`QueryPlanner`] that ships it to the
//! cluster. That planner lives in `tessera-cluster` (a crate of builds with the
//! `cluster` feature), which installs it at start-up with [`install`]; a build
//! without it refuses a configured cluster instead of silently running locally.

use std::sync::{Arc, OnceLock};

use datafusion::execution::context::QueryPlanner;

/// Makes the planner of sessions on the cluster whose scheduler is at an endpoint
/// (`http://host:port`).
pub type PlannerFactory =
    Arc<dyn Fn(&str) -> Result<Arc<dyn QueryPlanner + Send + Sync>, String> + Send + Sync>;

static FACTORY: OnceLock<PlannerFactory> = OnceLock::new();

/// Installs the cluster planner for this process; `false` when one already was.
pub fn install(factory: PlannerFactory) -> bool {
    FACTORY.set(factory).is_ok()
}

/// Whether a cluster planner is installed (the binary was built with `cluster`).
pub fn available() -> bool {
    FACTORY.get().is_some()
}

/// The planner of sessions on the cluster at `endpoint`.
pub(crate) fn planner(endpoint: &str) -> crate::Result<Arc<dyn QueryPlanner + Send + Sync>> {
    let factory = FACTORY.get().ok_or_else(|| crate::EngineError::Cluster {
        endpoint: endpoint.to_owned(),
        message: "this tessera binary was built without the `cluster` feature; build it with \
                  `cargo build --release --features cluster`, or remove `[engine] cluster`"
            .into(),
    })?;
    factory(endpoint).map_err(|message| crate::EngineError::Cluster {
        endpoint: endpoint.to_owned(),
        message,
    })
}
