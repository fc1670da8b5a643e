//! `tessera user add NAME --role ROLE [--pii] --password-stdin` / `tessera user list`:
//! the accounts of the gRPC services (Flight SQL, `tessera.v1`). Passwords are stored
//! only as Argon2id hashes.
//!
//! `tessera token add NAME --role ROLE [--pii]` / `tessera token list`: API tokens for
//! applications; the token is printed once and only its SHA-256 digest is stored.

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
        /// admin, analyst, marketer or ingest.
        #[arg(long)]
        role: Role,
        /// May see personal data (e-mail, phone, names, address, IP) in clear.
        #[arg(long)]
        pii: bool,
        /// Read the password from standard input (its first line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List the users, their roles and PII grants (never their hashes).
    List,
}

/// Prints accounts or tokens with their role and PII grant (never a secret).
fn list<'a>(entries: impl Iterator<Item = (&'a String, Role, bool)>, empty: &str) {
    let mut any = false;
    for (name, role, pii) in entries {
        any = true;
        println!(
            "{name:<20} {:<9} {}",
            role.name(),
            if pii { "pii" } else { "masked" }
        );
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

pub fn run(project_dir: &std::path::Path, args: UserArgs) -> anyhow::Result<()> {
    let project = Project::load(project_dir)?;
    match args.action {
        UserAction::List => {
            list(
                project.config.users.iter().map(|(n, u)| (n, u.role, u.pii)),
                "No users yet: tessera user add NAME --role analyst --password-stdin",
            );
            Ok(())
        }
        UserAction::Add {
            name,
            role,
            pii,
            password_stdin: _,
        } => {
            check_new_name("user", &name, project.config.users.contains_key(&name))?;
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the password from standard input")?;
            let password = input.lines().next().unwrap_or_default();
            if password.chars().count() < 8 {
                bail!("the password must have at least 8 characters");
            }
            let hash = tessera_core::auth::hash_password(password).map_err(anyhow::Error::msg)?;
            let section = format!(
                "\n[users.{name}]\nrole = \"{}\"\npii = {pii}\npassword_hash = \"{hash}\"\n",
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
        /// admin, analyst, marketer or ingest.
        #[arg(long)]
        role: Role,
        /// May see personal data (e-mail, phone, names, address, IP) in clear.
        #[arg(long)]
        pii: bool,
    },
    /// List the API tokens, their roles and PII grants (never the tokens).
    List,
}

pub fn run_token(project_dir: &std::path::Path, args: TokenArgs) -> anyhow::Result<()> {
    let project = Project::load(project_dir)?;
    match args.action {
        TokenAction::List => {
            list(
                project
                    .config
                    .tokens
                    .iter()
                    .map(|(n, t)| (n, t.role, t.pii)),
                "No API tokens yet: tessera token add NAME --role marketer",
            );
            Ok(())
        }
        TokenAction::Add { name, role, pii } => {
            check_new_name("token", &name, project.config.tokens.contains_key(&name))?;
            let token = tessera_core::auth::random_token().map_err(anyhow::Error::msg)?;
            let digest = tessera_core::auth::token_digest(&token);
            let section = format!(
                "\n[tokens.{name}]\nrole = \"{}\"\npii = {pii}\nsha256 = \"{digest}\"\n",
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
