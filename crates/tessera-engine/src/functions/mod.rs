//! Tessera's CDP functions, each a DataFusion function in its own file, usable from any
//! query (`tessera sql`, segments, traits, Flight SQL clients):
//!
//! | function | what it does |
//! | --- | --- |
//! | [`normalize_email(text)`](normalize_email::NormalizeEmail) | trim and lower-case an e-mail address |
//! | [`normalize_phone(text [, region])`](normalize_phone::NormalizePhone) | a phone number in E.164 |
//! | [`sha256_normalized(kind, value)`](sha256_normalized::Sha256Normalized) | normalize then hash, for ad-platform matching |
//! | [`connected_components(query)`](connected_components::ConnectedComponents) | table function: connected components of an edge query (union-find) |
//! | [`as_of()`](as_of::AsOf) | the session's evaluation time (configured, else session start) |
//! | [`days_since(ts)`](days_since::DaysSince) | whole days from `ts` to `as_of()` (recency) |
//! | [`within_days(ts, n)`](within_days::WithinDays) | `ts` in the trailing `n` days up to `as_of()` |
//! | [`in_segment(profile_id, name)`](in_segment::InSegment) | membership of a segment (planned as a semi join) |
//! | [`segment(name)`](segment::SegmentTable) | table function: the members of a segment |
//! | [`identity_map_at(version \| time)`](identity_map_at::IdentityMapAt) | table function: `identity_map` as of a version or a time |
//! | [`consent_allows(profile_id, category)`](consent_allows::ConsentAllows) | Segment's consent rule for a profile and a category (planned as semi joins) |

pub mod as_of;
pub mod clock;
pub mod connected_components;
pub mod consent_allows;
pub mod days_since;
pub mod identity_map_at;
pub mod in_segment;
pub mod normalize_email;
pub mod normalize_phone;
pub mod redact_pii;
pub mod segment;
pub mod sha256_normalized;
pub mod similarity;
pub mod within_days;

mod strings;

use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

use clock::Clock;
use segment::SegmentSources;

/// What the session-dependent functions need: the evaluation time and where segment
/// members come from.
#[derive(Debug, Clone)]
pub struct FunctionContext {
    pub clock: Clock,
    pub segments: Arc<SegmentSources>,
    /// The lake, for the functions that read a table's past versions.
    pub lake: Arc<tessera_lake::Lake>,
}

/// Every Tessera scalar function.
pub fn functions(fx: &FunctionContext) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(normalize_email::NormalizeEmail::new()),
        ScalarUDF::from(normalize_phone::NormalizePhone::new()),
        ScalarUDF::from(sha256_normalized::Sha256Normalized::new()),
        ScalarUDF::from(redact_pii::RedactPii::new()),
        ScalarUDF::from(as_of::AsOf::new(fx.clock)),
        ScalarUDF::from(days_since::DaysSince::new(fx.clock)),
        ScalarUDF::from(within_days::WithinDays::new(fx.clock)),
        ScalarUDF::from(in_segment::InSegment::new()),
        ScalarUDF::from(consent_allows::ConsentAllows::new()),
    ]
    .into_iter()
    .chain(similarity::functions())
    .collect()
}

/// Every Tessera table function, with its SQL name.
pub fn table_functions(fx: &FunctionContext) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![
        (
            "connected_components",
            Arc::new(connected_components::ConnectedComponents),
        ),
        (
            "segment",
            Arc::new(segment::SegmentTable::new(fx.segments.clone())),
        ),
        (
            "identity_map_at",
            Arc::new(identity_map_at::IdentityMapAt::new(fx.lake.clone())),
        ),
    ]
}

/// Registers every Tessera function with `ctx`.
pub fn register(ctx: &mut SessionContext, fx: &FunctionContext) -> datafusion::common::Result<()> {
    for f in functions(fx) {
        SessionContext::register_udf(ctx, f);
    }
    for (name, f) in table_functions(fx) {
        ctx.register_udtf(name, f);
    }
    ctx.register_function_rewrite(Arc::new(in_segment::InSegmentRewrite::new(
        fx.segments.clone(),
    )))?;
    ctx.register_function_rewrite(Arc::new(consent_allows::ConsentRewrite::new(
        fx.segments.clone(),
    )))?;
    Ok(())
}
