//! Consent per profile: the `consent` table, rebuilt by every stitching run from the
//! events that carry Segment's `context.consent.categoryPreferences` (every event a
//! consent manager sends carries it, `Segment Consent Preference Updated` among them).
//! A profile's latest such event (by timestamp, then `message_id`) states its whole
//! consent; see `tessera_core::schema::consent_schema` for the rows, and [`allows`] for
//! what a destination mapped to categories may receive (`tessera_core::privacy`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use tessera_core::schema::{self, CONSENT, EVENTS, IDENTITY_MAP};
use tessera_engine::Engine;
use tessera_engine::columns::{collect, int64s, strings};
use tessera_lake::CommitNote;

use crate::Result;

pub use tessera_core::privacy::{
    ConsentPreferences as Preferences, consent_allows as allows, consent_preferences as preferences,
};

/// Rebuilds `consent` from every stitched event; returns how many profiles stated one.
pub async fn build(engine: &Engine, actor: &str, run: i64) -> Result<usize> {
    let ctx = engine.session_of(&[EVENTS, IDENTITY_MAP]).await?;
    if !ctx.table_exist(EVENTS)? || !ctx.table_exist(IDENTITY_MAP)? {
        return Ok(0);
    }
    tessera_engine::register_profile_events(&ctx).await?;
    let batches = collect(
        &ctx,
        "SELECT profile_id, message_id, CAST(timestamp AS BIGINT) AS ts, context \
         FROM profile_events \
         WHERE profile_id IS NOT NULL AND strpos(context, 'categoryPreferences') > 0",
    )
    .await?;
    // profile → (timestamp, message id, preferences) of its latest statement.
    let mut latest: HashMap<String, (i64, String, Preferences)> = HashMap::new();
    for b in &batches {
        let (pid, mid, ts, context) = (
            strings(b, "profile_id")?,
            strings(b, "message_id")?,
            int64s(b, "ts")?,
            strings(b, "context")?,
        );
        for i in 0..b.num_rows() {
            let Some(prefs) = preferences(context.value(i)) else {
                continue;
            };
            let key = (ts.value(i), mid.value(i).to_owned());
            match latest.get(pid.value(i)) {
                Some((t, m, _)) if (*t, m.as_str()) >= (key.0, key.1.as_str()) => {}
                _ => {
                    latest.insert(pid.value(i).to_owned(), (key.0, key.1, prefs));
                }
            }
        }
    }
    let mut rows: Vec<(String, Option<String>, bool, i64, String)> = Vec::new();
    for (profile, (ts, mid, prefs)) in &latest {
        if prefs.is_empty() {
            rows.push((profile.clone(), None, false, *ts, mid.clone()));
        }
        for (category, granted) in prefs {
            rows.push((
                profile.clone(),
                Some(category.clone()),
                *granted,
                *ts,
                mid.clone(),
            ));
        }
    }
    rows.sort();
    let def = schema::table(CONSENT).expect("the consent table is defined");
    let batch = RecordBatch::try_new(
        def.schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.4))),
        ],
    )
    .map_err(|e| tessera_lake::LakeError::BadBatch {
        table: CONSENT.into(),
        message: e.to_string(),
    })?;
    let mut writer = engine.lake().replace_writer(&def).await?;
    writer.write(batch).await?;
    writer
        .commit(
            CommitNote::new("consent", actor)
                .detail("profiles", latest.len() as u64)
                .detail("stitch_run", run),
        )
        .await?;
    Ok(latest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(pairs: &[(&str, bool)]) -> Preferences {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn cats(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Segment's consent truth table (consent-in-segment-connections).
    #[test]
    fn segments_truth_table() {
        let ads = cats(&["Advertising"]);
        let both = cats(&["Advertising", "Analytics"]);
        let none = cats(&[]);
        // 1. No consent stated: flows everywhere.
        assert!(allows(None, &ads));
        assert!(allows(None, &both));
        // 2. A destination mapped to no category receives everything.
        assert!(allows(Some(&prefs(&[])), &none));
        assert!(allows(Some(&prefs(&[("Advertising", false)])), &none));
        // 3. Empty preferences: every category false, mapped destinations blocked.
        assert!(!allows(Some(&prefs(&[])), &ads));
        // 4. The category granted: allowed.
        assert!(allows(Some(&prefs(&[("Advertising", true)])), &ads));
        // 5. The category refused: blocked.
        assert!(!allows(Some(&prefs(&[("Advertising", false)])), &ads));
        // 6. Several categories: all of them must be granted.
        assert!(allows(
            Some(&prefs(&[("Advertising", true), ("Analytics", true)])),
            &both
        ));
        // 7. ... one refused blocks.
        assert!(!allows(
            Some(&prefs(&[("Advertising", true), ("Analytics", false)])),
            &both
        ));
        // 8. ... one missing blocks.
        assert!(!allows(Some(&prefs(&[("Advertising", true)])), &both));
        // 9. Only unknown categories stated: mapped destinations blocked.
        assert!(!allows(Some(&prefs(&[("Functional", true)])), &ads));
        // 10. Unknown categories do not block an unmapped destination.
        assert!(allows(Some(&prefs(&[("Functional", true)])), &none));
    }

    #[test]
    fn preferences_are_read_from_context() {
        let p = preferences(
            r#"{"consent":{"categoryPreferences":{"Advertising":true,"Analytics":"yes"}}}"#,
        )
        .unwrap();
        assert_eq!(p, prefs(&[("Advertising", true), ("Analytics", false)]));
        assert_eq!(
            preferences(r#"{"consent":{"categoryPreferences":{}}}"#),
            Some(Preferences::new())
        );
        assert_eq!(preferences(r#"{"consent":{}}"#), None);
        assert_eq!(preferences(r#"{"library":{}}"#), None);
        assert_eq!(preferences("not json"), None);
    }
}
