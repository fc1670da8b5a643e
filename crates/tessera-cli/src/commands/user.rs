//! `tessera user add NAME --role ROLE [--pii] [--rows COND] --password-stdin` /
//! `tessera user list` / `tessera user disable|enable NAME`: the accounts of the gRPC
//! services (Flight SQL, `tessera.v1`). Passwords are stored only as Argon2id hashes.
//!
//! `tessera token add NAME --role ROLE [--pii] [--rows COND]` / `tessera token list` /
//! `tessera token revoke NAME`: API tokens for applications; the token is printed once
//! and only its SHA-256 digest is stored.
//!
//! A running `tessera serve` reads the changes within a second: a disabled user or a
//! revoked token is refused on its next call.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use tessera_core::config::{CONFIG_FILE, Project, Role, valid_name};

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub action: UserAction,
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user (appended to tessera.toml with the password hashed).
    Add {
        /// Letters, digits, '_' and '-'.
        name: String,
        /// admin, analyst, marketer, ingest or privacy.
        #[arg(long)]
        role: Role,
        /// May see personal data (e-mail, phone, names, address, IP) in clear.
        #[arg(long)]
        pii: bool,
        /// Only the profiles this SQL condition over `profiles` admits, and their rows
        /// in every table, e.g. "json_get_str(traits, 'country') = 'DE'".
        #[arg(long)]
        rows: Option<String>,
        /// Read the password from standard input (its first line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List the users, their roles and PII grants (never their hashes).
    List,
    /// Disable a user: no sign-in, and its live sessions end at their next call.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
}

/// One account or token as listed.
struct Listed<'a> {
    name: &'a str,
    role: Role,
    pii: bool,
    disabled: bool,
    rows: Option<&'a str>,
}

/// Prints accounts or tokens with their role, PII grant, state and row filter (never a
/// secret).
fn list<'a>(entries: impl Iterator<Item = Listed<'a>>, empty: &str) {
    let mut any = false;
    for e in entries {
        any = true;
        let mut line = format!(
            "{:<20} {:<9} {:<7}",
            e.name,
            e.role.name(),
            if e.pii { "pii" } else { "masked" }
        );
        if e.disabled {
            line.push_str(" disabled");
        }
        if let Some(rows) = e.rows {
            line.push_str(&format!(" rows: {rows}"));
        }
        println!("{}", line.trim_end());
    }
    if !any {
        println!("{empty}");
    }
}

/// A new user or token name must be valid and not taken.
fn check_new_name(kind: &str, name: &str, taken: bool) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!("{kind} name {name:?}: use letters, digits, '_' and '-' only (at most 64)");
    }
    if taken {
        bail!("a {kind} named {name:?} already exists in {CONFIG_FILE}");
    }
    Ok(())
}

/// The `rows = ...` line of a new section, if any.
fn rows_line(rows: Option<&str>) -> anyhow::Result<String> {
    match rows {
        None => Ok(String::new()),
        Some(r) if r.trim().is_empty() => bail!("--rows needs an SQL condition over profiles"),
        Some(r) => Ok(format!("rows = {}\n", super::source::toml_string(r))),
    }
}

/// Sets or clears `disabled` of user `name`.
fn set_disabled(project_dir: &std::path::Path, name: &str, disabled: bool) -> anyhow::Result<()> {
    let what = if disabled { "disabling" } else { "enabling" };
    super::source::edit_config(project_dir, &format!("{what} user {name}"), |doc| {
        let Some(user) = doc
            .get_mut("users")
            .and_then(|u| u.get_mut(name))
            .and_then(|u| u.as_table_like_mut())
        else {
            bail!("no user named {name:?} in {CONFIG_FILE}");
        };
        if disabled {
            user.insert("disabled", toml_edit::value(true));
        } else {
            user.remove("disabled");
        }
        Ok(())
    })
}

pub fn run(project_dir: &std::path::Path, args: UserArgs) -> anyhow::Result<()> {
    let project = Project::load(project_dir)?;
    match args.action {
        UserAction::List => {
            list(
                project.config.users.iter().map(|(n, u)| Listed {
                    name: n,
                    role: u.role,
                    pii: u.pii,
                    disabled: u.disabled,
                    rows: u.rows.as_deref(),
                }),
                "No users yet: tessera user add NAME --role analyst --password-stdin",
            );
            Ok(())
        }
        UserAction::Disable { name } => {
            set_disabled(project_dir, &name, true)?;
            println!(
                "Disabled user {name}: it cannot sign in, and a running server refuses its sessions from their next call"
            );
            Ok(())
        }
        UserAction::Enable { name } => {
            set_disabled(project_dir, &name, false)?;
            println!("Enabled user {name}");
            Ok(())
        }
        UserAction::Add {
            name,
            role,
            pii,
            rows,
            password_stdin: _,
        } => {
            let rows = rows_line(rows.as_deref())?;
            check_new_name("user", &name, project.config.users.contains_key(&name))?;
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the password from standard input")?;
            let password = input.lines().next().unwrap_or_default();
            if password.chars().count() < 8 {
                bail!("the password must have at least 8 characters");
            }
            let hash = tessera_core::auth::hash_password(password)?;
            let section = format!(
                "\n[users.{name}]\nrole = \"{}\"\npii = {pii}\n{rows}password_hash = \"{hash}\"\n",
                role.name()
            );
            super::source::append_section(project_dir, &section, "the user")?;
            println!(
                "Added user {name} ({}{}); the password is stored only as an Argon2id hash",
                role.name(),
                if pii { ", sees personal data" } else { "" }
            );
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create an API token: printed once, stored in tessera.toml only as its SHA-256.
    Add {
        /// Letters, digits, '_' and '-'.
        name: String,
        /// admin, analyst, marketer, ingest or privacy.
        #[arg(long)]
        role: Role,
        /// May see personal data (e-mail, phone, names, address, IP) in clear.
        #[arg(long)]
        pii: bool,
        /// Only the profiles this SQL condition over `profiles` admits, and their rows
        /// in every table.
        #[arg(long)]
        rows: Option<String>,
    },
    /// List the API tokens, their roles and PII grants (never the tokens).
    List,
    /// Revoke an API token: removed from tessera.toml, refused from its next call.
    Revoke { name: String },
}

pub fn run_token(project_dir: &std::path::Path, args: TokenArgs) -> anyhow::Result<()> {
    let project = Project::load(project_dir)?;
    match args.action {
        TokenAction::List => {
            list(
                project.config.tokens.iter().map(|(n, t)| Listed {
                    name: n,
                    role: t.role,
                    pii: t.pii,
                    disabled: false,
                    rows: t.rows.as_deref(),
                }),
                "No API tokens yet: tessera token add NAME --role marketer",
            );
            Ok(())
        }
        TokenAction::Revoke { name } => {
            super::source::edit_config(project_dir, &format!("revoking token {name}"), |doc| {
                let removed = doc
                    .get_mut("tokens")
                    .and_then(|t| t.as_table_like_mut())
                    .and_then(|t| t.remove(&name));
                if removed.is_none() {
                    bail!("no API token named {name:?} in {CONFIG_FILE}");
                }
                Ok(())
            })?;
            println!("Revoked API token {name}: a running server refuses it from its next call");
            Ok(())
        }
        TokenAction::Add {
            name,
            role,
            pii,
            rows,
        } => {
            let rows = rows_line(rows.as_deref())?;
            check_new_name("token", &name, project.config.tokens.contains_key(&name))?;
            let token = tessera_core::auth::random_token()?;
            let digest = tessera_core::auth::token_digest(&token);
            let section = format!(
                "\n[tokens.{name}]\nrole = \"{}\"\npii = {pii}\n{rows}sha256 = \"{digest}\"\n",
                role.name()
            );
            super::source::append_section(project_dir, &section, "the token")?;
            eprintln!(
                "Added API token {name} ({}{}). It is shown only now; send it as `authorization: Bearer TOKEN`:",
                role.name(),
                if pii { ", sees personal data" } else { "" }
            );
            println!("{token}");
            Ok(())
        }
    }
}
