//! `tessera source add NAME` / `tessera source list`: the write keys SDKs authenticate with.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use tessera_core::config::{CONFIG_FILE, Project, valid_name};

#[derive(Debug, Args)]
pub struct SourceArgs {
    #[command(subcommand)]
    pub action: SourceAction,
}

#[derive(Debug, Subcommand)]
pub enum SourceAction {
    /// Add a source with a freshly generated write key (appended to tessera.toml).
    Add {
        /// Letters, digits, '_' and '-'.
        name: String,
        /// A description kept next to the key.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the configured sources and their write keys.
    List,
}

pub fn run(project_dir: &std::path::Path, args: SourceArgs) -> anyhow::Result<()> {
    let project = Project::load(project_dir)?;
    match args.action {
        SourceAction::List => {
            if project.config.sources.is_empty() {
                println!("No sources yet: tessera source add NAME");
            }
            for (name, s) in &project.config.sources {
                println!("{name:<20} {}", s.write_key);
            }
            Ok(())
        }
        SourceAction::Add { name, description } => {
            if !valid_name(&name) {
                bail!("source name {name:?}: use letters, digits, '_' and '-' only (at most 64)");
            }
            if project.config.sources.contains_key(&name) {
                bail!("a source named {name:?} already exists in {CONFIG_FILE}");
            }
            let key = super::init::new_write_key();
            let mut section = format!("\n[sources.{name}]\nwrite_key = \"{key}\"\n");
            if let Some(d) = description {
                section.push_str(&format!("description = {}\n", toml_string(&d)));
            }
            append_section(project_dir, &section, "the source")?;
            println!("Added source {name}; SDKs send write key {key}");
            Ok(())
        }
    }
}

/// Appends `section` to the project's tessera.toml (so the user's comments and layout
/// stay as they are) and checks the file still loads.
pub fn append_section(
    project_dir: &std::path::Path,
    section: &str,
    what: &str,
) -> anyhow::Result<()> {
    let path = project_dir.join(CONFIG_FILE);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(section.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Project::load(project_dir).with_context(|| format!("tessera.toml after adding {what}"))?;
    Ok(())
}

/// Edits `tessera.toml` in place with `edit` (comments and layout kept), checks that
/// the result loads, and writes it atomically; the file is unchanged if anything fails.
pub fn edit_config(
    project_dir: &std::path::Path,
    what: &str,
    edit: impl FnOnce(&mut toml_edit::DocumentMut) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let path = project_dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    edit(&mut doc)?;
    let out = doc.to_string();
    tessera_core::config::Config::from_toml(&out, &path)
        .with_context(|| format!("tessera.toml after {what}"))?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, out.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn toml_string(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            '\n' => vec!['\\', 'n'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}
