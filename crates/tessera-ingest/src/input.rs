//! Resolving what to import: a file, a folder or a glob, local or in an object store.

use std::collections::HashMap;
use std::path::Path as StdPath;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{ImportError, Result};

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// One Segment event per line.
    Ndjson,
    /// A JSON array of Segment events, or NDJSON; with a mapping, any NDJSON records.
    Json,
    /// Comma-separated values with a header row (needs a mapping unless the columns
    /// are already named like event fields).
    Csv,
    /// Parquet files.
    Parquet,
}

impl Format {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// Parses a `--format` value.
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// One file to import.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// The object's full URL (`file:///…`, `s3://bucket/key`).
    pub url: Url,
    /// The store that holds it.
    pub store: Arc<dyn ObjectStore>,
    /// Its path inside the store.
    pub path: Path,
    pub size: u64,
    /// Microseconds since the epoch.
    pub last_modified: Option<i64>,
    pub e_tag: Option<String>,
}

const KNOWN_EXTENSIONS: &[&str] = &["ndjson", "jsonl", "json", "csv", "parquet"];

impl InputFile {
    /// The location as shown to people: a local path, or the URL.
    pub fn location(&self) -> String {
        if self.url.scheme() == "file"
            && let Ok(p) = self.url.to_file_path()
        {
            return p.display().to_string();
        }
        self.url.to_string()
    }

    /// The file name without directories.
    pub fn file_name(&self) -> &str {
        self.path.filename().unwrap_or("")
    }

    /// Whether the file is gzip-compressed (by its name).
    pub fn gzip(&self) -> bool {
        self.file_name().ends_with(".gz")
    }

    /// The extension that tells the format (before any `.gz`).
    pub fn extension(&self) -> Option<&str> {
        let name = self.file_name().trim_end_matches(".gz");
        name.rsplit_once('.').map(|(_, ext)| ext)
    }

    /// The format implied by the file name.
    pub fn format_from_name(&self) -> Result<Format> {
        match self.extension().map(str::to_ascii_lowercase).as_deref() {
            Some("ndjson" | "jsonl") => Ok(Format::Ndjson),
            Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            Some("parquet") => Ok(Format::Parquet),
            _ => Err(ImportError::UnknownFormat {
                location: self.location(),
            }),
        }
    }

    /// A stable fingerprint of this version of the file: location, size and
    /// modification time or etag.
    pub fn fingerprint(&self) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}",
            self.url,
            self.size,
            self.last_modified.unwrap_or_default(),
            self.e_tag.as_deref().unwrap_or("")
        );
        tessera_core::identifier::hex_sha256(text.as_bytes())[..32].to_owned()
    }

    fn from_meta(base: &Url, store: &Arc<dyn ObjectStore>, meta: ObjectMeta) -> Result<InputFile> {
        let url = object_url(base, &meta.location)?;
        Ok(InputFile {
            url,
            store: store.clone(),
            path: meta.location,
            size: meta.size,
            last_modified: Some(meta.last_modified.timestamp_micros()),
            e_tag: meta.e_tag,
        })
    }
}

fn object_url(base: &Url, path: &Path) -> Result<Url> {
    let mut url = base.clone();
    url.set_path(&format!("/{}", path.as_ref()));
    Ok(url)
}

fn input_error(location: &str, message: impl ToString) -> ImportError {
    ImportError::Input {
        location: location.to_owned(),
        message: message.to_string(),
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn is_importable(path: &Path) -> bool {
    let name = path.filename().unwrap_or("");
    if name.starts_with('.') || name.starts_with('_') {
        return false;
    }
    let name = name.trim_end_matches(".gz");
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| KNOWN_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Lists the files `input` names: a single file (any name), a folder (every file with
/// a known extension below it, recursively) or a glob (`data/*.ndjson`,
/// `s3://bucket/2024-*/events-*.json.gz`). Sorted by location.
pub async fn resolve_inputs(
    input: &str,
    options: &HashMap<String, String>,
) -> Result<Vec<InputFile>> {
    let (base, store, path_text): (Url, Arc<dyn ObjectStore>, String) =
        if tessera_core::config::is_url(input) {
            let url = Url::parse(input).map_err(|e| input_error(input, e))?;
            let store: Arc<dyn ObjectStore> = if url.scheme() == "file" {
                Arc::new(LocalFileSystem::new())
            } else {
                tessera_lake::object_store_for(&url, options).map_err(|e| input_error(input, e))?
            };
            let mut base = url.clone();
            base.set_path("/");
            // Keep glob characters as typed: they are percent-encoded in URL paths.
            let path = percent_decode(url.path());
            (base, store, path.trim_start_matches('/').to_owned())
        } else {
            let p = StdPath::new(input);
            let abs = if p.is_absolute() {
                p.to_owned()
            } else {
                std::env::current_dir()
                    .map_err(|e| input_error(input, e))?
                    .join(p)
            };
            let abs = normalize_path(&abs);
            let base = Url::parse("file:///").map_err(|e| input_error(input, e))?;
            let text = abs.to_string_lossy().trim_start_matches('/').to_owned();
            (base, Arc::new(LocalFileSystem::new()) as _, text)
        };

    let mut files = Vec::new();
    if has_glob(&path_text) {
        let pattern = glob::Pattern::new(&path_text).map_err(|e| input_error(input, e))?;
        let prefix_end = path_text.find(['*', '?', '[']).unwrap_or(path_text.len());
        let prefix = match path_text[..prefix_end].rfind('/') {
            Some(i) => &path_text[..i],
            None => "",
        };
        let listing: Vec<ObjectMeta> = store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .map_err(|e| input_error(input, e))?;
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        for meta in listing {
            if pattern.matches_with(meta.location.as_ref(), options) {
                files.push(InputFile::from_meta(&base, &store, meta)?);
            }
        }
    } else {
        let path = Path::from(path_text.trim_end_matches('/'));
        match store.head(&path).await {
            Ok(meta) => files.push(InputFile::from_meta(&base, &store, meta)?),
            Err(object_store::Error::NotFound { .. }) => {
                let listing: Vec<ObjectMeta> = store
                    .list(Some(&path))
                    .try_collect()
                    .await
                    .map_err(|e| input_error(input, e))?;
                for meta in listing {
                    if is_importable(&meta.location) {
                        files.push(InputFile::from_meta(&base, &store, meta)?);
                    }
                }
            }
            Err(e) => return Err(input_error(input, e)),
        }
    }
    files.sort_by(|a, b| a.url.as_str().cmp(b.url.as_str()));
    Ok(files)
}

/// Removes `.` and `..` components without touching the file system (object-store
/// paths cannot hold them).
fn normalize_path(path: &StdPath) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
