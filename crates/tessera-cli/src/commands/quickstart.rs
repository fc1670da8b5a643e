//! `tessera quickstart`: sample data → lake → every stage that exists → what to try next.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tessera_sample::synth::{GenConfig, generate_with_progress, is_current};

use super::import::{ImportArgs, print_report};
use crate::output::{bytes, thousands};
use crate::progress::counter;

/// Matching the sample CRM export to the profiles stitched from events.
const CRM_SPEC: &str = include_str!("../../../../examples/matching/crm.toml");

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Folder of the quickstart project.
    #[arg(long, default_value = "tessera-quickstart")]
    pub dir: PathBuf,
    /// Approximate number of sample events.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Seed of the sample data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop after the pipeline instead of starting the server.
    #[arg(long)]
    pub no_serve: bool,
}

pub async fn run(args: QuickstartArgs, cpu: tokio::runtime::Handle) -> anyhow::Result<()> {
    let dir = args.dir;
    println!("Tessera quickstart in {}\n", dir.display());

    // 1. A project. Its segments are judged at the end of the sample data's last day
    // (the data is fixed; "the last 7 days" should mean its last week, not today's).
    let config = GenConfig {
        events: args.events,
        seed: args.seed,
        ..GenConfig::default()
    };
    if super::init::scaffold(&dir, Some("quickstart"))? {
        let path = dir.join(tessera_core::config::CONFIG_FILE);
        let text = std::fs::read_to_string(&path)?;
        let pinned = text
            .lines()
            .map(|l| {
                if l.starts_with("# as_of = ") {
                    format!("as_of = \"{}T23:59:59Z\"", config.end_date)
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        // The CRM export joins profiles by probabilistic matching (step 5).
        std::fs::write(
            &path,
            pinned
                + "\n\n[identity.types.crm_id]\n# CRM records linked by `tessera match` (match.toml)\nlimit = 1\n",
        )?;
        std::fs::write(dir.join(tessera_identity::matching::SPEC_FILE), CRM_SPEC)?;
    }
    let opened = super::open_project(&dir)?;
    opened.lake.create_missing_tables().await?;
    println!(
        "1. Project ready: {} (lake at {})",
        dir.join("tessera.toml").display(),
        opened.lake.root()
    );

    // 2. Sample customers.
    let data = dir.join("sample-data");
    if is_current(&data, &config) {
        println!(
            "2. Sample data already in {} (same seed and size)",
            data.display()
        );
    } else {
        let bar = counter(args.events, "generating events");
        let summary = generate_with_progress(&config, &data, |done, _| bar.set_position(done))
            .context("generating sample data")?;
        bar.finish_and_clear();
        println!(
            "2. Generated {} events for {} customers ({}): web, app, POS, a CRM export and the ground truth",
            thousands(summary.events),
            thousands(summary.persons),
            bytes(summary.bytes)
        );
    }

    // 3. Import, one source per channel.
    println!("3. Importing into the events table:");
    for (file, source) in [
        ("events-web.ndjson", "web"),
        ("events-app.ndjson", "app"),
        ("events-pos.ndjson", "pos"),
    ] {
        let args = ImportArgs {
            input: data.join(file).to_string_lossy().into_owned(),
            format: None,
            source: Some(source.into()),
            mapping: None,
            max_errors: Some(0),
            force: false,
            json: false,
            threads: None,
        };
        let report = super::import::import(&opened, &args).await?;
        print_report(&report);
    }

    // 4. Identity resolution and golden profiles.
    println!("\n4. Stitching identities into profiles:");
    let started = std::time::Instant::now();
    let report = super::stitch::stitch(&opened, false, false).await?;
    super::stitch::print_report(&report, started.elapsed().as_secs_f64());

    // 5. The CRM export: no key shared with the events, typos; linked by matching.
    if !report.up_to_date {
        println!("\n5. Linking the CRM export to profiles (probabilistic matching, match.toml):");
        match link_crm(&opened).await {
            Ok(text) => println!("{text}"),
            Err(e) => println!("   skipped: {e:#}"),
        }
    }

    // 6. Predictive scores (before segments: segments may read them).
    println!("\n6. Predictive scores (sql/predict/):");
    let started = std::time::Instant::now();
    let predicted = super::predict::predict(
        &opened,
        &super::predict::PredictArgs {
            models: vec![],
            calibration_end: None,
            time_unit: None,
            json: false,
        },
    )
    .await?;
    super::predict::print_report(&predicted, started.elapsed().as_secs_f64());

    // 7. Segments.
    println!("\n7. Refreshing segments (sql/segments/):");
    let as_of = opened.project.config.segments.as_of_micros()?;
    let started = std::time::Instant::now();
    let report =
        super::segments::refresh(&opened, vec![], false, as_of, "tessera quickstart").await?;
    super::segments::print_report(&report, started.elapsed().as_secs_f64());

    // 8. What the lake holds now.
    println!("\n8. The lake:");
    for s in opened.lake.stats_all().await? {
        println!(
            "   {:<20} {:>12} rows {:>6} files {:>10}  version {}",
            s.name,
            thousands(s.rows),
            s.files,
            bytes(s.bytes),
            s.version
        );
    }

    let p = dir.display();
    println!(
        r#"
Try next:
  tessera --project {p} sql "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC"
  tessera --project {p} sql "SELECT source, count(DISTINCT user_id) AS users, round(sum(json_get_float(properties, 'revenue')), 2) AS revenue FROM events WHERE event = 'Order Completed' GROUP BY source"
  tessera --project {p} sql "SELECT normalize_email(json_get_str(traits, 'email')) AS email, normalize_phone(json_get_str(traits, 'phone')) AS phone FROM events WHERE type = 'identify' LIMIT 5"
  tessera --project {p} sql "SELECT profile_id, user_id, email, orders, total_revenue, channels FROM profiles ORDER BY total_revenue DESC NULLS LAST LIMIT 5"
  tessera --project {p} profile user_id:u00000001
  tessera --project {p} segments list
  tessera --project {p} segments show vip_at_risk
  tessera --project {p} sql "SELECT model, version, status, parameters, log_likelihood FROM model_runs ORDER BY trained_at DESC LIMIT 4"
  tessera --project {p} sql "SELECT p.email, s.p_alive, s.clv_12m, s.purchase_propensity, s.rfm_score FROM profile_scores s JOIN profiles p USING (profile_id) ORDER BY s.clv_12m DESC NULLS LAST LIMIT 5"
  tessera --project {p} sql "SELECT profile_id, email, top_category, total_revenue FROM profiles WHERE in_segment(profile_id, 'cart_abandoners') AND email IS NOT NULL ORDER BY total_revenue DESC NULLS LAST LIMIT 5"
  tessera --project {p} sql "SELECT status, reason, count(*) FROM identity_edges GROUP BY 1, 2"
  tessera --project {p} sql "SELECT id_l, id_r, round(probability, 3) AS p, comparisons FROM match_pairs WHERE decision = 'review' LIMIT 5"
  tessera --project {p} match explain crm_id:C0000001 user_id:u00000001"
  tessera --project {p} tables
  python -c "from deltalake import DeltaTable; print(DeltaTable('{lake}events').to_pyarrow_table().num_rows)"
(`tessera` is {exe}; `cargo install --path crates/tessera-cli` puts it on your PATH.)
"#,
        exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "tessera".into()),
        lake = opened
            .lake
            .root()
            .to_file_path()
            .map(|p| format!("{}/", p.display().to_string().trim_end_matches('/')))
            .unwrap_or_default(),
    );
    if args.no_serve {
        return Ok(());
    }

    // 9. The server, until Ctrl-C.
    let key = opened
        .project
        .config
        .sources
        .get("web")
        .map(|s| s.write_key.clone())
        .unwrap_or_default();
    println!(
        r#"9. Serving (Ctrl-C to stop). Send an event the way the Segment SDKs do:
  curl -u {key}: -H 'Content-Type: application/json' http://{http}/v1/track \
       -d '{{"userId":"u00000001","event":"Signed Up","properties":{{"plan":"pro"}}}}'
then `tessera --project {p} sql "SELECT * FROM events WHERE event = 'Signed Up'"` sees it
within {flush} ms. BI tools (Arrow Flight SQL) and apps (tessera.v1 gRPC) on {grpc} need
an account first (the running server picks it up): `tessera --project {p} user add me --role admin --pii --password-stdin`
or an API token: `tessera --project {p} token add my-app --role marketer`.
"#,
        grpc = opened.project.config.server.grpc,
        http = opened.project.config.server.http,
        flush = opened.project.config.server.flush_interval_ms,
    );
    super::serve::run(
        &opened,
        super::serve::ServeArgs {
            http: None,
            grpc: None,
            wal_dir: None,
        },
        cpu,
    )
    .await
    .context("starting the server (use --no-serve to skip it, or free the ports in tessera.toml [server])")
}

/// Trains and applies the CRM matching model, then stitches its matches in.
async fn link_crm(opened: &super::Opened) -> anyhow::Result<String> {
    use tessera_identity::matching::{self, MatchSpec, Matcher};
    let dir = &opened.project.dir;
    let spec = MatchSpec::load(&dir.join(matching::SPEC_FILE))?;
    let started = std::time::Instant::now();
    let matcher = Matcher::open(&opened.engine, dir, spec).await?;
    let (model, report) = matcher.train(&|_| {}).await?;
    let ms = started.elapsed().as_millis() as i64;
    let version =
        matching::save_model(&opened.engine, &model, &report, ms, "tessera quickstart").await?;
    let prediction = matcher.predict(&model, &|_| {}).await?;
    matcher
        .write_pairs(
            &opened.engine,
            &model,
            &prediction,
            version,
            "tessera quickstart",
        )
        .await?;
    let stitched = super::stitch::stitch(opened, false, true).await?;
    Ok(format!(
        "   {} records compared in {} candidate pairs: {} matches, {} for review ({:.1} s); \
         the next stitch added {} `probabilistic` edges",
        thousands(matcher.records()),
        thousands(prediction.candidates),
        thousands(prediction.matches() as u64),
        thousands(prediction.in_review() as u64),
        started.elapsed().as_secs_f64(),
        thousands(
            stitched
                .rules
                .iter()
                .filter(|r| r.rule == tessera_identity::stitch::PROBABILISTIC_RULE)
                .map(|r| r.observations)
                .sum::<u64>()
        ),
    ))
}
