//! Tessera's CDP functions, each a DataFusion function in its own file, usable from any
//! query (`tessera sql`, segments, traits, Flight SQL clients):
//!
//! | function | what it does |
//! | --- | --- |
//! | [`normalize_email(text)`](normalize_email::NormalizeEmail) | trim and lower-case an e-mail address |
//! | [`normalize_phone(text [, region])`](normalize_phone::NormalizePhone) | a phone number in E.164 |
//! | [`sha256_normalized(kind, value)`](sha256_normalized::Sha256Normalized) | normalize then hash, for ad-platform matching |
//! | [`connected_components(query)`](connected_components::ConnectedComponents) | table function: connected components of an edge query (union-find) |

pub mod connected_components;
pub mod normalize_email;
pub mod normalize_phone;
pub mod sha256_normalized;

mod strings;

use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

/// Every Tessera scalar function.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(normalize_email::NormalizeEmail::new()),
        ScalarUDF::from(normalize_phone::NormalizePhone::new()),
        ScalarUDF::from(sha256_normalized::Sha256Normalized::new()),
    ]
}

/// Every Tessera table function, with its SQL name.
pub fn table_functions() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![(
        "connected_components",
        Arc::new(connected_components::ConnectedComponents),
    )]
}

/// Registers every Tessera function with `ctx`.
pub fn register(ctx: &SessionContext) {
    for f in functions() {
        ctx.register_udf(f);
    }
    for (name, f) in table_functions() {
        ctx.register_udtf(name, f);
    }
}
