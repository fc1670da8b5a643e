//! Looking a profile up by any identifier (`email:jane@example.com`,
//! `anonymous_id:…`, `profile_id:p_…` — a merged-away profile id resolves to the
//! profile that absorbed it).

use std::collections::HashMap;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tessera_core::schema::{IDENTITY_MAP, PROFILE_MERGES, PROFILES};
use tessera_engine::Engine;

use crate::error::{IdentityError, Result};
use crate::stitch::normalize_identifier;

/// A profile as `tessera profile` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileView {
    /// The identifier asked for, normalized.
    pub id_type: String,
    pub id_value: String,
    /// When the identifier was a merged-away profile id: that id.
    pub merged_from: Option<String>,
    pub profile_id: String,
    /// The `profiles` row (golden traits, computed traits).
    pub profile: Map<String, Value>,
    /// Every identifier of the profile: type, value, first and last seen.
    pub identifiers: Vec<Map<String, Value>>,
    /// Every merge that ended in this profile.
    pub merges: Vec<Map<String, Value>>,
    /// Predictive scores of the profile (`scores`): model, score, value, version,
    /// trained_at; empty before `tessera predict`.
    pub scores: Vec<Map<String, Value>>,
}

/// Splits `TYPE:VALUE`.
pub fn parse_identifier(text: &str) -> Result<(String, String)> {
    match text.split_once(':') {
        Some((t, v)) if !t.trim().is_empty() && !v.trim().is_empty() => {
            Ok((t.trim().to_lowercase(), v.to_owned()))
        }
        _ => Err(IdentityError::BadIdentifier(format!(
            "{text:?} is not TYPE:VALUE, for example email:jane@example.com, \
             user_id:u123, anonymous_id:…, profile_id:p_…"
        ))),
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Looks up the profile holding identifier `TYPE:VALUE`; `None` when no profile does.
pub async fn lookup(engine: &Engine, identifier: &str) -> Result<Option<ProfileView>> {
    let (id_type, raw) = parse_identifier(identifier)?;
    let lake = engine.lake();
    if !lake.exists(IDENTITY_MAP).await? {
        return Err(IdentityError::BadIdentifier(
            "no identity map yet: run `tessera stitch` first".into(),
        ));
    }
    let ctx = engine.session().await?;
    let merges = rows(
        &ctx,
        "SELECT * FROM profile_merges ORDER BY merged_at, from_profile_id",
    )
    .await?;
    let survivor_of: HashMap<String, String> = merges
        .iter()
        .filter_map(|m| Some((text(m, "from_profile_id")?, text(m, "into_profile_id")?)))
        .collect();
    let resolve = |mut id: String| {
        let mut hops = 0;
        while let Some(next) = survivor_of.get(&id) {
            id = next.clone();
            hops += 1;
            if hops > survivor_of.len() {
                break;
            }
        }
        id
    };

    let (value, profile_id, merged_from) = if id_type == "profile_id" || id_type == "profile" {
        let value = raw.trim().to_owned();
        let found = rows(
            &ctx,
            &format!(
                "SELECT profile_id FROM identity_map WHERE profile_id = {} LIMIT 1",
                quote(&value)
            ),
        )
        .await?;
        if !found.is_empty() {
            (value.clone(), value, None)
        } else if survivor_of.contains_key(&value) {
            (value.clone(), resolve(value.clone()), Some(value))
        } else {
            return Ok(None);
        }
    } else {
        let Some(value) = normalize_identifier(&id_type, &raw) else {
            return Err(IdentityError::BadIdentifier(format!(
                "{raw:?} is not a valid {id_type}"
            )));
        };
        let found = rows(
            &ctx,
            &format!(
                "SELECT profile_id FROM identity_map WHERE id_type = {} AND id_value = {}",
                quote(&id_type),
                quote(&value)
            ),
        )
        .await?;
        let Some(pid) = found.first().and_then(|r| text(r, "profile_id")) else {
            return Ok(None);
        };
        (value, pid, None)
    };

    let profile = rows(
        &ctx,
        &format!(
            "SELECT * FROM {PROFILES} WHERE profile_id = {}",
            quote(&profile_id)
        ),
    )
    .await?
    .into_iter()
    .next()
    .unwrap_or_default();
    let identifiers = rows(
        &ctx,
        &format!(
            "SELECT id_type, id_value, first_seen, last_seen FROM {IDENTITY_MAP} \
             WHERE profile_id = {} ORDER BY first_seen, id_type, id_value",
            quote(&profile_id)
        ),
    )
    .await?;
    let merges = merges
        .into_iter()
        .filter(|m| text(m, "from_profile_id").is_some_and(|f| resolve(f) == profile_id))
        .collect();
    let scores = if ctx.table_exist(tessera_core::schema::SCORES)? {
        rows(
            &ctx,
            &format!(
                "SELECT model, score, value, version, trained_at FROM scores \
                 WHERE profile_id = {} ORDER BY model, score",
                quote(&profile_id)
            ),
        )
        .await?
    } else {
        Vec::new()
    };
    Ok(Some(ProfileView {
        id_type: if id_type == "profile" {
            "profile_id".into()
        } else {
            id_type
        },
        id_value: value,
        merged_from,
        profile_id,
        profile,
        identifiers,
        merges,
        scores,
    }))
}

fn text(row: &Map<String, Value>, key: &str) -> Option<String> {
    row.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Runs `sql` and returns its rows as JSON objects.
async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<Map<String, Value>>> {
    let query_err = |e| IdentityError::Query {
        file: PROFILE_MERGES.into(),
        source: e,
    };
    let batches: Vec<RecordBatch> = ctx
        .sql(sql)
        .await
        .map_err(query_err)?
        .execute_stream()
        .await
        .map_err(query_err)?
        .try_collect()
        .await
        .map_err(query_err)?;
    let mut out = Vec::new();
    for batch in batches {
        // Text views and large strings as plain strings for the JSON writer.
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 => cast(c, &DataType::Utf8),
                _ => Ok(c.clone()),
            })
            .collect::<std::result::Result<_, _>>()?;
        let fields: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        let batch = RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            columns,
        )?;
        let mut writer = arrow::json::ArrayWriter::new(Vec::new());
        writer.write(&batch)?;
        writer.finish()?;
        let bytes = writer.into_inner();
        if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) {
            for item in items {
                if let Value::Object(mut m) = item {
                    // Traits are stored as JSON text: show them as JSON.
                    if let Some(Value::String(t)) = m.get("traits")
                        && let Ok(v) = serde_json::from_str::<Value>(t)
                    {
                        m.insert("traits".into(), v);
                    }
                    out.push(m);
                }
            }
        }
    }
    Ok(out)
}
