//! What the scheduler and the executors must know to decode Tessera's plans: its SQL
//! functions (by name) and the lake's object stores (by the URL the scans name).

use std::collections::BTreeMap;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use object_store::ObjectStore;
use tessera_engine::Engine;

/// Every function a Tessera session has (DataFusion's, the JSON functions, Tessera's),
/// and the lake's stores.
#[derive(Clone)]
pub(crate) struct Known {
    pub scalar: BTreeMap<String, Arc<ScalarUDF>>,
    pub aggregate: BTreeMap<String, Arc<AggregateUDF>>,
    pub window: BTreeMap<String, Arc<WindowUDF>>,
    pub stores: Vec<(ObjectStoreUrl, Arc<dyn ObjectStore>)>,
}

impl Known {
    /// What `engine`'s sessions have.
    pub fn of(engine: &Engine) -> anyhow::Result<Known> {
        let ctx = engine.bare_session()?;
        let state = ctx.state();
        Ok(Known {
            scalar: state.scalar_functions().clone().into_iter().collect(),
            aggregate: state.aggregate_functions().clone().into_iter().collect(),
            window: state.window_functions().clone().into_iter().collect(),
            stores: engine.lake().table_stores()?,
        })
    }

    /// An executor's registry: Ballista's defaults and every function above, under
    /// each of its names.
    pub fn registry(&self) -> BallistaFunctionRegistry {
        let mut registry = BallistaFunctionRegistry::default();
        registry.scalar_functions.extend(self.scalar.clone());
        registry.aggregate_functions.extend(self.aggregate.clone());
        registry.window_functions.extend(self.window.clone());
        registry
    }

    /// Each function once (the maps hold aliases too).
    pub fn distinct_scalar(&self) -> Vec<Arc<ScalarUDF>> {
        distinct(self.scalar.values(), |f| f.name().to_owned())
    }

    pub fn distinct_aggregate(&self) -> Vec<Arc<AggregateUDF>> {
        distinct(self.aggregate.values(), |f| f.name().to_owned())
    }

    pub fn distinct_window(&self) -> Vec<Arc<WindowUDF>> {
        distinct(self.window.values(), |f| f.name().to_owned())
    }

    /// A runtime (spilling to `temp`, when given) that reads the lake's tables.
    pub fn runtime(&self, temp: Option<&str>) -> datafusion::error::Result<Arc<RuntimeEnv>> {
        let mut builder = RuntimeEnvBuilder::new();
        if let Some(temp) = temp {
            builder = builder.with_temp_file_path(temp);
        }
        let runtime = builder.build()?;
        for (url, store) in &self.stores {
            runtime.register_object_store(url.as_ref(), store.clone());
        }
        Ok(Arc::new(runtime))
    }
}

fn distinct<'a, T: 'a>(
    all: impl Iterator<Item = &'a Arc<T>>,
    name: impl Fn(&T) -> String,
) -> Vec<Arc<T>> {
    let mut seen = std::collections::BTreeSet::new();
    all.filter(|f| seen.insert(name(f))).cloned().collect()
}
