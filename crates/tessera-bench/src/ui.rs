//! `tessera-bench ui`: the web console's pages on the segments benchmark's lake (10M
//! events by default): server time per page (the first view after the server started,
//! when the lake aggregates are computed, and p50/p95 of the following views, spread
//! over more than the 10 s the aggregates are reused) and page weight (the HTML plus every
//! asset it loads), against the budgets of 200 ms p95 and 300 KB.

use std::path::Path;

use anyhow::Context as _;

use super::{python, tessera};

const PASSWORD: &str = "bench-password-0";
/// The budgets the console is held to.
const P95_BUDGET_MS: f64 = 200.0;
const WEIGHT_BUDGET: f64 = 300.0 * 1024.0;

pub fn run(events: u64, views: usize, work: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    let project = super::segments::prepared(events, work)?;
    let (tables, _) = tessera(&project, &["tables", "--json"])?;
    let rows = |name: &str| {
        tables
            .as_array()
            .and_then(|a| a.iter().find(|t| t["table"] == name))
            .and_then(|t| t["rows"].as_u64())
            .unwrap_or(0)
    };
    println!(
        "console over {} events, {} profiles, {} segment refreshes; {views} views per page",
        rows("events"),
        rows("profiles"),
        rows("segment_refreshes")
    );
    let (mut server, _grpc, http) = super::flight::start_server_with(&project, PASSWORD, &[])?;
    let script = format!(
        r#"
import http.cookiejar, json, re, time, urllib.parse, urllib.request
base = "http://{http}"
jar = http.cookiejar.CookieJar()
web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
web.open(base + "/ui/login", urllib.parse.urlencode({{"user": "bench", "password": "{PASSWORD}"}}).encode()).read()
def get(path):
    t = time.perf_counter()
    r = web.open(base + path)
    body = r.read()
    return (time.perf_counter() - t) * 1000, body
profile = re.search(r'href="(/ui/profile\?id=[^"]+)"', get("/ui/identity")[1].decode()).group(1)
pages = ["/ui/", "/ui/sources", "/ui/identity", profile, "/ui/review", "/ui/segments",
         "/ui/models", "/ui/activation", "/ui/privacy"]
out = []
for path in pages:
    # A new run of the server's 10 s cache: the first view computes the aggregates.
    time.sleep(10.5)
    first, body = get(path)
    assets = set(re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', body.decode()))
    weight = len(body) + sum(len(get(a)[1]) for a in assets)
    # Views spread over more than the cache's 10 s, so that some meet a stale aggregate
    # being computed anew in the background.
    times = []
    for _ in range({views}):
        times.append(get(path)[0])
        time.sleep(0.3)
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    out.append({{"page": path.split("?")[0], "first_ms": first, "p50_ms": p(0.5), "p95_ms": p(0.95),
                "max_ms": times[-1], "weight": weight}})
print(json.dumps(out))
"#
    );
    let result = std::process::Command::new(python()?)
        .arg("-c")
        .arg(&script)
        .output()
        .context("running the page client")?;
    super::isolation::stop(&mut server);
    if !result.status.success() {
        anyhow::bail!(
            "the page client failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    let pages: Vec<serde_json::Value> = serde_json::from_slice(&result.stdout)?;
    println!(
        "| page | first view ms | p50 ms | p95 ms | max ms | weight KB | p95 / 200 ms | weight / 300 KB |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let (mut worst_p95, mut worst_weight) = (0.0f64, 0.0f64);
    for p in &pages {
        let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
        worst_p95 = worst_p95.max(f("p95_ms"));
        worst_weight = worst_weight.max(f("weight"));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            p["page"].as_str().unwrap_or_default(),
            f("first_ms"),
            f("p50_ms"),
            f("p95_ms"),
            f("max_ms"),
            f("weight") / 1024.0,
            f("p95_ms") / P95_BUDGET_MS,
            f("weight") / WEIGHT_BUDGET
        );
    }
    println!(
        "worst p95 {worst_p95:.1} ms (ratio to the 200 ms budget {:.2}); heaviest page {:.1} KB (ratio to 300 KB {:.2})",
        worst_p95 / P95_BUDGET_MS,
        worst_weight / 1024.0,
        worst_weight / WEIGHT_BUDGET
    );
    Ok(())
}
