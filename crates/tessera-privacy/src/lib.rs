//! Privacy as first-class operations over the whole lake: erasure of a person's whole
//! identity cluster with proof ([`erase`]), the suppression list ([`suppress`]),
//! data-subject export ([`export`]) and requests with states ([`requests`]).
//!
//! A subject is named by any identifier (`email:jane@example.com`,
//! `user_id:u-42`, `profile_id:…`). It is resolved against the latest identity
//! snapshot to its profile, the profiles merged into it, and every identifier the
//! profile holds; [`matcher`] turns those into SQL functions that pick the person's
//! rows out of every table without writing a value into any query or Delta commit.
//! What the lake keeps about a request is salted hashes
//! ([`tessera_core::privacy::Hasher`]) and profile ids, never an identifier in clear.

pub mod erase;
pub mod export;
pub mod matcher;
pub mod requests;
pub mod suppress;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use tessera_core::privacy::{Hasher, parse_subject};
use tessera_engine::Engine;
use tessera_identity::Snapshot;

pub use erase::{EraseOptions, ErasureReport, erase, resume};
pub use export::{ExportReport, export};
pub use matcher::Matcher;

/// Why a privacy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// An identifier given is malformed.
    #[error("{0}")]
    BadSubject(String),
    /// Nothing to do with what was given.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Lake(#[from] tessera_lake::LakeError),
    #[error(transparent)]
    Engine(#[from] tessera_engine::EngineError),
    #[error(transparent)]
    Identity(#[from] tessera_identity::IdentityError),
    #[error("{doing}: {source}")]
    DataFusion {
        doing: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("{doing}: {message}")]
    Io { doing: String, message: String },
}

pub type Result<T, E = PrivacyError> = std::result::Result<T, E>;

impl PrivacyError {
    pub(crate) fn io(doing: impl Into<String>, e: impl std::fmt::Display) -> PrivacyError {
        PrivacyError::Io {
            doing: doing.into(),
            message: e.to_string(),
        }
    }
}

/// The rows of `batches` as JSON objects (timestamps as RFC 3339 text).
pub(crate) fn json_rows(
    batches: &[arrow::array::RecordBatch],
    doing: &str,
) -> Result<Vec<serde_json::Value>> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b).map_err(|e| PrivacyError::io(doing, e))?;
    }
    writer.finish().map_err(|e| PrivacyError::io(doing, e))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| PrivacyError::io(doing, e))
}

/// The rows of table `table` of `ctx` where `predicate` holds.
pub(crate) async fn rows_where(
    ctx: &datafusion::prelude::SessionContext,
    table: &str,
    predicate: datafusion::prelude::Expr,
) -> Result<datafusion::prelude::DataFrame> {
    let doing = format!("reading {table}");
    ctx.table(table)
        .await
        .map_err(df(doing.clone()))?
        .filter(predicate)
        .map_err(df(doing))
}

pub(crate) fn df(
    doing: impl Into<String>,
) -> impl FnOnce(datafusion::error::DataFusionError) -> PrivacyError {
    let doing = doing.into();
    move |source| PrivacyError::DataFusion { doing, source }
}

/// One identifier as asked for, normalized.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Subject {
    pub id_type: String,
    pub value: String,
}

impl Subject {
    /// Parses `TYPE:VALUE`; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Subject> {
        let (id_type, value) = parse_subject(text).map_err(PrivacyError::BadSubject)?;
        Ok(Subject { id_type, value })
    }
}

/// Subjects resolved to the people they name.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Every subject asked for, with the profile it resolved to (none: no profile).
    pub subjects: Vec<(Subject, Option<String>)>,
    /// The profiles found and the profiles merged into them.
    pub profiles: BTreeSet<String>,
    /// Every identifier of those profiles, and every subject asked for.
    pub identifiers: BTreeSet<(String, String)>,
}

impl Resolution {
    /// The subjects that named no profile.
    pub fn unknown(&self) -> Vec<&Subject> {
        self.subjects
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(s, _)| s)
            .collect()
    }

    /// A matcher of every identifier and profile id.
    pub fn matcher(&self) -> Arc<Matcher> {
        Arc::new(Matcher::new(
            self.identifiers
                .iter()
                .map(|(t, v)| (t.as_str(), v.as_str())),
            self.profiles.iter().map(String::as_str),
        ))
    }

    /// `{id_type, hash}` of every identifier.
    pub fn hashes(&self, hasher: &Hasher) -> Vec<(String, String)> {
        self.identifiers
            .iter()
            .filter(|(t, _)| t != "profile_id")
            .map(|(t, v)| (t.clone(), hasher.subject(t, v)))
            .collect()
    }
}

/// Resolves `subjects` (and `profile_ids`, from a request being resumed) against the
/// latest identity snapshot.
pub async fn resolve(
    engine: &Engine,
    subjects: &[Subject],
    profile_ids: &[String],
) -> Result<Resolution> {
    let snapshot = Snapshot::load(engine, &HashMap::new(), &[]).await?;
    let mut r = Resolution::default();
    let mut found = Vec::new();
    for s in subjects {
        r.identifiers.insert((s.id_type.clone(), s.value.clone()));
        let profile = if snapshot.is_empty() {
            None
        } else {
            match snapshot.resolve(&s.id_type, &s.value) {
                Ok(resolved) => resolved.profile,
                // A type no profile has: nobody to find, still a subject.
                Err(tessera_identity::IdentityError::BadIdentifier(m))
                    if m.starts_with("unknown identifier type") =>
                {
                    None
                }
                Err(e) => return Err(PrivacyError::BadSubject(e.to_string())),
            }
        };
        r.subjects.push((
            s.clone(),
            profile.map(|i| snapshot.profile(i).profile_id.clone()),
        ));
        found.extend(profile);
    }
    for id in profile_ids {
        r.profiles.insert(id.clone());
        found.extend(snapshot.profile_of(id));
    }
    for i in found {
        let p = snapshot.profile(i);
        r.profiles.insert(p.profile_id.clone());
        for m in &p.merges {
            r.profiles.insert(m.from_profile_id.clone());
        }
        for id in &p.identifiers {
            r.identifiers.insert((id.id_type.clone(), id.value.clone()));
        }
        for (t, v) in [
            ("user_id", &p.user_id),
            ("email", &p.email),
            ("phone", &p.phone),
        ] {
            if let Some(v) = v {
                r.identifiers.insert((t.to_owned(), v.clone()));
            }
        }
    }
    Ok(r)
}

/// Microseconds since the epoch, now.
pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Appends rows given as JSON objects (timestamps in microseconds) to a standard table
/// in one commit.
pub(crate) async fn append_rows(
    engine: &Engine,
    table: &str,
    rows: &[serde_json::Value],
    note: tessera_lake::CommitNote,
) -> Result<Option<u64>> {
    let def = tessera_core::schema::table(table)
        .ok_or_else(|| PrivacyError::Refused(format!("no table definition for {table}")))?;
    let arrow_err =
        |e: arrow::error::ArrowError| PrivacyError::io(format!("encoding rows of {table}"), e);
    let mut decoder = arrow::json::ReaderBuilder::new(def.schema.clone())
        .build_decoder()
        .map_err(arrow_err)?;
    decoder.serialize(rows).map_err(arrow_err)?;
    let Some(batch) = decoder.flush().map_err(arrow_err)? else {
        return Ok(None);
    };
    let mut writer = engine.lake().append_writer(&def).await?;
    writer.write(batch).await?;
    Ok(writer.commit(note).await?)
}
