//! What a caller may see: the session of one caller, narrowed from the whole lake.
//!
//! - **Rows** ([`filter_rows`]): a caller with a row filter (`[users.NAME] rows =
//!   "..."`, an SQL condition over `profiles`) gets a session in which `profiles` holds
//!   only the profiles the filter admits and every table keyed by profile
//!   ([`PROFILE_KEYED`]) only their rows — `events` only the events of those people.
//!   Tables that cannot be narrowed to a person (segment sizes, model runs, match
//!   pairs, imported files, the audit log) are not in the session at all, so a
//!   filtered caller never learns that other rows exist.
//! - **Personal data** ([`mask_pii`]): without the `pii` grant, every table holding
//!   personal data is replaced by a masking view.
//! - **The audit log** is only in the sessions of callers who may read it.
//! - **Past identity maps** (`identity_map_at`) only for callers with the `pii` grant
//!   and no row filter: they cannot be masked or narrowed.
//!
//! Each step replaces tables by views over what the session held before, and the
//! views over them (`profile_events`, `profile_scores`, the members `segment()` and
//! `in_segment()` read) are rebuilt, so no name reaches the rows underneath.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use tessera_core::schema::{
    AUDIENCE_CHANGES, AUDIENCE_MEMBERSHIP, AUDIT_LOG, EVENTS, IDENTITY_EDGES, IDENTITY_MAP,
    PROFILE_MERGES, PROFILES, SCORES,
};

use crate::error::{EngineError, Result};
use crate::functions::segment::SegmentSources;

/// What one caller may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Access {
    /// Personal data in clear (the `pii` grant).
    pub pii: bool,
    /// May read `audit_log` (admins).
    pub audit_log: bool,
    /// Only the profiles this SQL condition over `profiles` admits, and their rows.
    pub rows: Option<Arc<str>>,
}

impl Access {
    /// Everything, in clear: the project owner's own tools.
    pub fn owner() -> Access {
        Access {
            pii: true,
            audit_log: true,
            rows: None,
        }
    }
}

/// Tables whose rows belong to one profile, with the column that names it.
pub const PROFILE_KEYED: &[(&str, &str)] = &[
    (IDENTITY_MAP, "profile_id"),
    (IDENTITY_EDGES, "profile_id"),
    (PROFILE_MERGES, "into_profile_id"),
    (SCORES, "profile_id"),
    (AUDIENCE_MEMBERSHIP, "profile_id"),
    (AUDIENCE_CHANGES, "profile_id"),
];

/// Narrows `ctx` to what `access` allows (rows, then personal data, then the audit
/// log). `segments` is the session's source of segment members.
pub async fn narrow(
    ctx: &SessionContext,
    access: &Access,
    segments: &SegmentSources,
) -> Result<()> {
    if let Some(rows) = &access.rows {
        filter_rows(ctx, rows, segments).await?;
    }
    if !access.pii {
        mask_pii(ctx).await?;
    }
    if !access.audit_log {
        ctx.deregister_table(AUDIT_LOG)?;
    }
    if !access.pii || access.rows.is_some() {
        // Past identity maps cannot be masked or narrowed: refused instead.
        ctx.register_udtf(
            "identity_map_at",
            Arc::new(crate::functions::identity_map_at::Refused),
        );
    }
    Ok(())
}

/// The profiles `filter` admits, as a plan over `ctx`'s `profiles`.
pub async fn admitted(
    ctx: &SessionContext,
    filter: &str,
) -> Result<datafusion::prelude::DataFrame> {
    let bad = |message: String| EngineError::RowFilter {
        filter: filter.to_owned(),
        message,
    };
    let profiles = ctx
        .table(PROFILES)
        .await
        .map_err(|e| bad(format!("profiles cannot be read: {e}")))?;
    // Parsed as one expression over the profile's columns: the filter cannot close a
    // parenthesis and reach past its WHERE clause.
    let condition = profiles
        .parse_sql_expr(filter)
        .map_err(|e| bad(e.strip_backtrace()))?;
    profiles
        .filter(condition)
        .map_err(|e| bad(e.strip_backtrace()))
}

/// Checks that `filter` plans as a condition over `profiles` in `ctx` (which must
/// have `profiles`).
pub async fn check_row_filter(ctx: &SessionContext, filter: &str) -> Result<()> {
    let df = admitted(ctx, filter).await?;
    df.create_physical_plan()
        .await
        .map_err(|e| EngineError::RowFilter {
            filter: filter.to_owned(),
            message: e.strip_backtrace(),
        })?;
    Ok(())
}

/// Replaces `table` in `ctx` by the view `select` (a query over the table as
/// registered now).
async fn replace(ctx: &SessionContext, table: &str, select: &str) -> Result<()> {
    let view = ctx.sql(select).await?.into_view();
    ctx.deregister_table(table)?;
    ctx.register_table(table, view)?;
    Ok(())
}

/// Narrows `ctx` to the profiles `filter` admits (see the module documentation).
pub async fn filter_rows(
    ctx: &SessionContext,
    filter: &str,
    segments: &SegmentSources,
) -> Result<()> {
    let keep: Vec<String> = if ctx.table_exist(PROFILES)? {
        let admitted = admitted(ctx, filter).await?.into_view();
        ctx.deregister_table(PROFILES)?;
        ctx.register_table(PROFILES, admitted)?;
        PROFILE_KEYED.iter().map(|(t, _)| (*t).to_owned()).collect()
    } else {
        // Nothing is stitched yet: no row can be shown to belong to the caller.
        Vec::new()
    };
    // In this order: the profile-keyed tables over the narrowed `profiles`, then
    // `events` over the narrowed `identity_map`, then everything else goes.
    for (table, column) in PROFILE_KEYED {
        if keep.iter().any(|k| k == table) && ctx.table_exist(*table)? {
            replace(
                ctx,
                table,
                &format!(
                    "SELECT * FROM {table} WHERE \"{column}\" IN (SELECT profile_id FROM {PROFILES})"
                ),
            )
            .await?;
        }
    }
    let events_kept =
        !keep.is_empty() && ctx.table_exist(EVENTS)? && ctx.table_exist(IDENTITY_MAP)?;
    if events_kept {
        // An event is the caller's when its identity (user id, else anonymous id)
        // maps to an admitted profile — the rule of `profile_events`.
        replace(
            ctx,
            EVENTS,
            &format!(
                "SELECT e.* FROM {EVENTS} AS e WHERE EXISTS (SELECT 1 FROM {IDENTITY_MAP} AS m \
                 WHERE m.id_type = CASE WHEN e.user_id IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' END \
                 AND m.id_value = trim(coalesce(e.user_id, e.anonymous_id)))"
            ),
        )
        .await?;
    }
    let names = ctx
        .catalog("tessera")
        .and_then(|c| c.schema("public"))
        .map(|s| s.table_names())
        .unwrap_or_default();
    for name in names {
        let narrowed = name == PROFILES || (name == EVENTS && events_kept) || keep.contains(&name);
        if !narrowed {
            ctx.deregister_table(&name)?;
        }
    }
    crate::register_views(ctx).await?;
    if let Ok(provider) = ctx.table_provider(AUDIENCE_MEMBERSHIP).await {
        segments.set_membership(provider);
    } else {
        segments.clear_membership();
    }
    Ok(())
}

/// Replaces every table of `ctx` that holds personal data (`PII_COLUMNS`) by a view
/// of it with those columns masked (`***`; JSON columns through `redact_pii`), and
/// re-creates the views over them. The unmasked tables are no longer reachable from
/// `ctx` by any name: this is the session of a user without the `pii` grant.
pub async fn mask_pii(ctx: &SessionContext) -> Result<()> {
    use tessera_core::schema::{PII_COLUMNS, PII_ID_TYPES, PiiMask};
    let mut tables: Vec<&str> = PII_COLUMNS.iter().map(|(t, _, _)| *t).collect();
    tables.sort_unstable();
    tables.dedup();
    let id_types = PII_ID_TYPES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    for table in tables {
        let Ok(provider) = ctx.table_provider(table).await else {
            continue;
        };
        let df = ctx.read_table(provider.clone())?;
        let exprs: Vec<String> = provider
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let name = f.name();
                let quoted = format!("\"{name}\"");
                match PII_COLUMNS
                    .iter()
                    .find(|(t, c, _)| *t == table && c == name)
                    .map(|(_, _, m)| *m)
                {
                    None => quoted,
                    Some(PiiMask::Value) => format!(
                        "CASE WHEN {quoted} IS NULL THEN NULL ELSE '***' END AS {quoted}"
                    ),
                    Some(PiiMask::Json) => format!("redact_pii({quoted}) AS {quoted}"),
                    Some(PiiMask::WhenIdType(kind)) => format!(
                        "CASE WHEN \"{kind}\" IN ({id_types}) THEN '***' ELSE {quoted} END AS {quoted}"
                    ),
                }
            })
            .collect();
        let refs: Vec<&str> = exprs.iter().map(String::as_str).collect();
        let masked = df.select_exprs(&refs)?.into_view();
        ctx.deregister_table(table)?;
        ctx.register_table(table, masked)?;
    }
    crate::register_views(ctx).await
}
