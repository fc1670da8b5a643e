//! `tessera init [DIR]`

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use tessera_core::config::{CONFIG_FILE, template};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder of the new project (created if missing); defaults to --project.
    pub dir: Option<PathBuf>,
    /// Project name (defaults to the folder name).
    #[arg(long)]
    pub name: Option<String>,
}

/// The default SQL a new project starts with (the files of the repository's `sql/`).
pub const DEFAULT_SQL: &[(&str, &str)] = &[
    (
        "sql/identity/10_devices.sql",
        include_str!("../../../../sql/identity/10_devices.sql"),
    ),
    (
        "sql/identity/20_identify_traits.sql",
        include_str!("../../../../sql/identity/20_identify_traits.sql"),
    ),
    (
        "sql/identity/30_alias.sql",
        include_str!("../../../../sql/identity/30_alias.sql"),
    ),
    (
        "sql/traits/activity.sql",
        include_str!("../../../../sql/traits/activity.sql"),
    ),
    (
        "sql/traits/orders.sql",
        include_str!("../../../../sql/traits/orders.sql"),
    ),
    (
        "sql/traits/top_category.sql",
        include_str!("../../../../sql/traits/top_category.sql"),
    ),
    (
        "sql/segments/at_risk.sql",
        include_str!("../../../../sql/segments/at_risk.sql"),
    ),
    (
        "sql/segments/cart_abandoners.sql",
        include_str!("../../../../sql/segments/cart_abandoners.sql"),
    ),
    (
        "sql/segments/high_value.sql",
        include_str!("../../../../sql/segments/high_value.sql"),
    ),
    (
        "sql/segments/multi_channel_buyers.sql",
        include_str!("../../../../sql/segments/multi_channel_buyers.sql"),
    ),
    (
        "sql/segments/newsletter_engaged.sql",
        include_str!("../../../../sql/segments/newsletter_engaged.sql"),
    ),
    (
        "sql/segments/likely_to_churn.sql",
        include_str!("../../../../sql/segments/likely_to_churn.sql"),
    ),
    (
        "sql/segments/ready_to_buy.sql",
        include_str!("../../../../sql/segments/ready_to_buy.sql"),
    ),
    (
        "sql/segments/vip_at_risk.sql",
        include_str!("../../../../sql/segments/vip_at_risk.sql"),
    ),
];

/// A fresh random write key, from the OS's randomness.
pub fn new_write_key() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !ok {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&nanos.to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("wk_{hex}")
}

/// Creates the project files in `dir` (not the lake). Returns false if it existed.
pub fn scaffold(dir: &Path, name: Option<&str>) -> anyhow::Result<bool> {
    let config = dir.join(CONFIG_FILE);
    if config.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = name.map(str::to_owned).unwrap_or_else(|| {
        std::fs::canonicalize(dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tessera".into())
    });
    std::fs::write(&config, template(&name, &new_write_key()))
        .with_context(|| format!("writing {}", config.display()))?;
    for sub in ["sql/identity", "sql/traits", "sql/segments", "sql/predict"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {sub}"))?;
    }
    for (path, text) in DEFAULT_SQL {
        let path = dir.join(path);
        if !path.exists() {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    for (file, text) in tessera_predict::run::DEFAULT_SQL {
        let path = dir.join(tessera_predict::run::PREDICT_DIR).join(file);
        if !path.exists() {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let readme = dir.join("sql/README.md");
    if !readme.exists() {
        std::fs::write(
            readme,
            "# SQL of this project\n\n- `identity/`: which fields are identifiers and how they link\n- `traits/`: computed profile traits\n- `segments/`: one SELECT returning profile_id per audience\n- `predict/`: the orders, purchase summary, RFM and propensity features the predictive models read\n- `plans/` (optional): a tracking plan per source, `plans/<source>.toml`: expected events and properties, allowed or blocked\n",
        )?;
    }
    std::fs::write(dir.join(".gitignore"), "/tessera-data\n/sample-data\n")?;
    Ok(true)
}

pub async fn run(project: &Path, args: InitArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| project.to_owned());
    let created = scaffold(&dir, args.name.as_deref())?;
    let opened = super::open_project(&dir)?;
    let tables = opened.lake.create_missing_tables().await?;
    if created {
        println!("Created a Tessera project in {}", dir.display());
    } else {
        println!(
            "{} already has a {CONFIG_FILE}; left it as it is",
            dir.display()
        );
    }
    println!("  lake: {}", opened.lake.root());
    if !tables.is_empty() {
        println!("  tables created: {}", tables.join(", "));
    }
    println!(
        "\nNext: tessera --project {0} import FILE.ndjson, then tessera --project {0} stitch",
        dir.display()
    );
    Ok(())
}
