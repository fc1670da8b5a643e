//! `tessera profile TYPE:VALUE`

use clap::Args;
use serde_json::Value;

use super::Opened;

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The identifier to look up: email:jane@example.com, user_id:u123,
    /// anonymous_id:…, phone:+14155550100, profile_id:p_… (merged ids resolve).
    pub identifier: String,
    /// The profile as it was then: a version of identity_map (a stitching run) or a
    /// time (2026-11-01T12:00:00Z, 2026-11-01).
    #[arg(long, value_name = "VERSION|TIMESTAMP")]
    pub as_of: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn run(opened: &Opened, args: ProfileArgs) -> anyhow::Result<()> {
    let found = match &args.as_of {
        None => tessera_identity::lookup(&opened.engine, &args.identifier).await?,
        Some(text) => {
            let as_of = tessera_identity::AsOf::parse(text)?;
            tessera_identity::lookup_as_of(&opened.engine, &args.identifier, as_of).await?
        }
    };
    let Some(view) = found else {
        match &args.as_of {
            Some(t) => anyhow::bail!("no profile held {} as of {t}", args.identifier),
            None => anyhow::bail!(
                "no profile holds {}: check the value, or run `tessera stitch` after importing",
                args.identifier
            ),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    if let Some(from) = &view.merged_from {
        println!("{from} was merged into {}\n", view.profile_id);
    }
    println!("profile {}", view.profile_id);
    for (key, value) in &view.profile {
        if key == "profile_id" || key == "traits" {
            continue;
        }
        println!("  {key:<22} {}", show(value));
    }
    if let Some(Value::Object(traits)) = view.profile.get("traits") {
        println!("\ntraits (golden record)");
        for (key, value) in traits {
            println!("  {key:<22} {}", show(value));
        }
    }
    println!("\nidentifiers ({})", view.identifiers.len());
    for id in &view.identifiers {
        println!(
            "  {:<14} {:<40} first {}  last {}",
            show(&id["id_type"]),
            show(&id["id_value"]),
            show(&id["first_seen"]),
            show(&id["last_seen"])
        );
    }
    if !view.scores.is_empty() {
        println!("\npredictive scores (tessera predict)");
        for s in &view.scores {
            let value = s["value"]
                .as_f64()
                .map_or_else(|| show(&s["value"]), |v| format!("{v:.4}"));
            println!(
                "  {:<24} {:>12}  {} v{}",
                show(&s["score"]),
                value,
                show(&s["model"]),
                show(&s["version"])
            );
        }
    }
    match &view.consent {
        None => println!("\nconsent: never stated (sent to every destination)"),
        Some(c) if c.is_empty() => println!("\nconsent: nothing granted"),
        Some(c) => {
            println!("\nconsent");
            for (category, granted) in c {
                println!(
                    "  {category:<22} {}",
                    if *granted { "granted" } else { "refused" }
                );
            }
        }
    }
    if !view.merges.is_empty() {
        println!("\nmerge history");
        for m in &view.merges {
            println!(
                "  {} → {} at {} by {} ({}:{} ~ {}:{})",
                show(&m["from_profile_id"]),
                show(&m["into_profile_id"]),
                show(&m["merged_at"]),
                show(&m["rule"]),
                show(m.get("a_type").unwrap_or(&Value::Null)),
                show(m.get("a_value").unwrap_or(&Value::Null)),
                show(m.get("b_type").unwrap_or(&Value::Null)),
                show(m.get("b_value").unwrap_or(&Value::Null)),
            );
        }
    }
    Ok(())
}
