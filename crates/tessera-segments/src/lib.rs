//! Tessera's SQL segments.
//!
//! An analyst writes each audience as `sql/segments/<name>.sql`: a comment header
//! (`-- description:`, `-- refresh: 15m`, `-- owner:`) and one `SELECT` returning
//! `profile_id`. This crate
//!
//! - parses and checks each file before anything runs ([`file`], [`validate`]): one
//!   read-only query, known tables, views, functions and segments, a `profile_id`
//!   column; each problem is located (`file:line:column`) and says how to fix it;
//! - orders segments so that those read through `in_segment(profile_id, 'x')` or
//!   `segment('x')` are refreshed first, and rejects cycles naming them ([`order`]);
//! - materializes members into `audience_membership` and who entered or exited into
//!   `audience_changes`, logging each refresh in `segment_refreshes`, skipping
//!   segments whose inputs have not changed ([`refresh`]; [`refresh::refresh_project`]
//!   is the one entry point of the CLI, `tessera.v1` and the scheduler);
//! - reads audiences back: members, entries and exits since a version, sizes over
//!   time, latest refreshes ([`audience`]);
//! - predicts who would enter and exit each segment if some tables held other rows —
//!   a dry run of stitching — writing nothing ([`preview`]).

pub mod audience;
pub mod error;
pub mod file;
pub mod order;
pub mod preview;
pub mod refresh;
pub mod validate;

use std::path::Path;
use std::sync::Arc;

use tessera_engine::Engine;
use tessera_engine::functions::segment::SegmentSources;

pub use error::{FileError, Result, SegmentsError};
pub use file::{SEGMENTS_DIR, Segment};

/// The segments of a project, in refresh order (each after those it references).
#[derive(Debug, Clone, Default)]
pub struct SegmentSet {
    segments: Vec<Segment>,
}

impl SegmentSet {
    /// Reads every `*.sql` of `<project>/sql/segments` (none is fine) and checks the
    /// files on their own: header, syntax, one read-only query, references, cycles.
    pub fn load(project_dir: &Path) -> Result<SegmentSet> {
        let dir = project_dir.join(SEGMENTS_DIR);
        let mut files = Vec::new();
        if dir.is_dir() {
            let entries = std::fs::read_dir(&dir).map_err(|source| SegmentsError::ReadFile {
                path: dir.clone(),
                source,
            })?;
            for entry in entries {
                let path = entry
                    .map_err(|source| SegmentsError::ReadFile {
                        path: dir.clone(),
                        source,
                    })?
                    .path();
                if path.extension().is_none_or(|e| e != "sql") {
                    continue;
                }
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let text =
                    std::fs::read_to_string(&path).map_err(|source| SegmentsError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                files.push((name.clone(), format!("{SEGMENTS_DIR}/{name}.sql"), text));
            }
        }
        Self::from_texts(files)
    }

    /// Segments from `(name, file, text)` triples, checked as [`SegmentSet::load`] does.
    pub fn from_texts(files: Vec<(String, String, String)>) -> Result<SegmentSet> {
        let mut segments = Vec::new();
        let mut errors = Vec::new();
        for (name, file, text) in files {
            match file::parse(&name, &file, &text) {
                Ok(s) => segments.push(s),
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.file.cmp(&b.file));
            return Err(SegmentsError::Invalid(errors));
        }
        let order = order::order(&segments).map_err(SegmentsError::Invalid)?;
        let mut ordered = Vec::with_capacity(segments.len());
        for name in order {
            if let Some(i) = segments.iter().position(|s| s.name == name) {
                ordered.push(segments.swap_remove(i));
            }
        }
        Ok(SegmentSet { segments: ordered })
    }

    /// Every segment, in refresh order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segment called `name`.
    pub fn get(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// `names` and every segment they read, in refresh order; all segments when `names`
    /// is empty.
    pub fn with_dependencies(&self, names: &[String]) -> Result<Vec<&Segment>> {
        if names.is_empty() {
            return Ok(self.segments.iter().collect());
        }
        let mut wanted: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        let mut stack: Vec<&str> = Vec::new();
        for n in names {
            let Some(s) = self.get(n) else {
                return Err(SegmentsError::UnknownSegment {
                    name: n.clone(),
                    known: self.known(),
                });
            };
            stack.push(&s.name);
        }
        while let Some(n) = stack.pop() {
            if wanted.insert(n)
                && let Some(s) = self.get(n)
            {
                stack.extend(s.references.iter().map(|r| r.segment.as_str()));
            }
        }
        Ok(self
            .segments
            .iter()
            .filter(|s| wanted.contains(s.name.as_str()))
            .collect())
    }

    /// The names of the segments, comma-separated, for messages.
    pub fn known(&self) -> String {
        if self.segments.is_empty() {
            return "none (add sql/segments/NAME.sql)".into();
        }
        let mut names: Vec<&str> = self.segments.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        names.join(", ")
    }

    /// Checks every segment against the lake's tables and functions (planning only,
    /// nothing runs). All problems are reported together.
    pub async fn validate(&self, engine: &Engine) -> Result<()> {
        let sources = Arc::new(SegmentSources::default());
        validate::empty_members(&sources, &self.segments)?;
        let ctx = engine.session_with(sources).await?;
        let all: Vec<&Segment> = self.segments.iter().collect();
        validate::check_all(&ctx, &all).await
    }
}
