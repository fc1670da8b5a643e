//! The suppression list: identifiers (by salted hash, [`tessera_core::privacy`]) whose
//! events are acknowledged and not stored — by the collector and by `tessera import`
//! alike. An identifier is suppressed when its latest `suppressions` row says so.
//!
//! An event is suppressed when any identifier it carries
//! ([`tessera_core::privacy::event_identifiers`]: `user_id`, `anonymous_id`, e-mails and
//! phones of its traits, context traits and properties) is. With an empty list nothing
//! is hashed, so collection costs nothing extra until someone is suppressed.

use std::collections::HashSet;

use arrow::array::{Array, AsArray as _, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use futures::TryStreamExt as _;
use tessera_core::privacy::{Hasher, event_identifiers};
use tessera_core::schema::{SUPPRESSIONS, events_col};
use tessera_engine::Engine;

use crate::{ImportError, Result};

/// The identifiers whose events are dropped, as of one `suppressions` version.
#[derive(Debug, Default)]
pub struct SuppressionList {
    hasher: Option<Hasher>,
    hashes: HashSet<String>,
    version: Option<i64>,
}

impl SuppressionList {
    /// A list that suppresses nothing.
    pub fn empty() -> SuppressionList {
        SuppressionList::default()
    }

    /// The list as of the latest `suppressions` version (empty when the table does not
    /// exist).
    pub async fn load(engine: &Engine) -> Result<SuppressionList> {
        let (ctx, versions) = engine.session_of_versions(&[SUPPRESSIONS]).await?;
        let version = versions[0];
        if version.is_none() {
            return Ok(SuppressionList::empty());
        }
        let batches: Vec<RecordBatch> = tessera_engine::execute(
            &ctx,
            &format!(
                "SELECT subject_hash, state FROM {SUPPRESSIONS} \
                 ORDER BY subject_hash, at, state"
            ),
            tessera_engine::Policy::ReadOnly,
        )
        .await?
        .try_collect()
        .await
        .map_err(|source| ImportError::DataFusion {
            doing: "reading the suppression list",
            source,
        })?;
        let mut hashes = HashSet::new();
        for b in &batches {
            let cast = |i: usize| {
                arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).map_err(
                    |source| ImportError::Arrow {
                        doing: "reading the suppression list",
                        source,
                    },
                )
            };
            let (hash, state) = (cast(0)?, cast(1)?);
            let (hash, state) = (hash.as_string::<i32>(), state.as_string::<i32>());
            for i in 0..b.num_rows() {
                // Rows come oldest first per hash: the last one decides.
                if state.value(i) == "suppressed" {
                    hashes.insert(hash.value(i).to_owned());
                } else {
                    hashes.remove(hash.value(i));
                }
            }
        }
        let hasher = if hashes.is_empty() {
            None
        } else {
            Some(Hasher::new(engine.lake().privacy_salt().await?.as_bytes()))
        };
        Ok(SuppressionList {
            hasher,
            hashes,
            version,
        })
    }

    /// The `suppressions` version this list was read at.
    pub fn version(&self) -> Option<i64> {
        self.version
    }

    /// How many identifiers are suppressed.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether nothing is suppressed.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether an event with these fields carries a suppressed identifier. `json` are
    /// its `traits`, `context` and `properties` texts.
    pub fn suppresses(
        &self,
        user_id: Option<&str>,
        anonymous_id: Option<&str>,
        json: &[Option<&str>],
    ) -> bool {
        let Some(hasher) = &self.hasher else {
            return false;
        };
        event_identifiers(user_id, anonymous_id, json)
            .iter()
            .any(|(t, v)| self.hashes.contains(&hasher.subject(t, v)))
    }

    /// The rows of an `events` batch that carry no suppressed identifier, and how many
    /// were dropped.
    pub fn filter_batch(&self, batch: RecordBatch) -> Result<(RecordBatch, u64)> {
        if self.is_empty() || batch.num_rows() == 0 {
            return Ok((batch, 0));
        }
        let text = |i: usize| {
            arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8).map_err(
                |source| ImportError::Arrow {
                    doing: "checking events against the suppression list",
                    source,
                },
            )
        };
        let columns = [
            text(events_col::USER_ID)?,
            text(events_col::ANONYMOUS_ID)?,
            text(events_col::TRAITS)?,
            text(events_col::CONTEXT)?,
            text(events_col::PROPERTIES)?,
        ];
        let c: Vec<_> = columns.iter().map(|a| a.as_string::<i32>()).collect();
        let get = |j: usize, i: usize| (!c[j].is_null(i)).then(|| c[j].value(i));
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                Some(!self.suppresses(get(0, i), get(1, i), &[get(2, i), get(3, i), get(4, i)]))
            })
            .collect();
        let dropped = keep.false_count() as u64;
        if dropped == 0 {
            return Ok((batch, 0));
        }
        let kept = filter_record_batch(&batch, &keep).map_err(|source| ImportError::Arrow {
            doing: "dropping suppressed events",
            source,
        })?;
        Ok((kept, dropped))
    }
}
