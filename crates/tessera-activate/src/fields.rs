//! A sync's `fields` query: which traits travel with each member, in SQL.

use crate::error::{ActivateError, Result};

/// A sync's `fields` query planned under the read-only policy; errors name the sync.
pub async fn fields_frame(
    ctx: &datafusion::prelude::SessionContext,
    sync: &str,
    query: &str,
) -> Result<datafusion::prelude::DataFrame> {
    tessera_engine::policy::read_only(ctx, query)
        .await
        .map_err(|e| ActivateError::Fields {
            sync: sync.to_owned(),
            message: e.strip_backtrace(),
        })
}
