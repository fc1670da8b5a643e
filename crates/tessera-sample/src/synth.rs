//! Synthetic customers: deterministic, multi-channel event data with the ground truth
//! of who is who kept in a separate file.
//!
//! Each person has one to three devices (anonymous ids), may register (a `user_id`),
//! logs in (an `identify` tying the device to the user, with the e-mail typed in mixed
//! case with stray spaces and the phone in one of several formats), uses the app (an
//! `alias` from the install id to the user), shops (page and product views, carts,
//! repeat orders with revenue), buys in stores (POS orders carrying a loyalty id), reads
//! newsletters, and appears in a CRM export with typos. The traps of identity
//! resolution are there on purpose: household members share a tablet, and some share a
//! mailbox.
//!
//! Generation walks day by day over all persons, so events come out in time order and
//! memory stays at a few bytes per person however many events are produced. The same
//! seed always gives byte-identical files.
//!
//! Files written to the output folder:
//! - `events-web.ndjson`, `events-app.ndjson`, `events-pos.ndjson`: Segment events;
//! - `crm.csv`: a CRM export (one row per registered person, with typos);
//! - `truth.csv`: `person_id,id_type,id_value` for every identifier (normalized);
//! - `manifest.json`: the parameters and counts.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct GenConfig {
    /// Approximate number of events.
    pub events: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Days of history.
    pub days: u32,
    /// The last day of history (UTC).
    pub end_date: NaiveDate,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            events: 100_000,
            seed: 42,
            days: 365,
            end_date: NaiveDate::from_ymd_opt(2026, 10, 31).unwrap_or_default(),
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenSummary {
    pub persons: u64,
    pub registered: u64,
    pub events: u64,
    pub events_web: u64,
    pub events_app: u64,
    pub events_pos: u64,
    pub orders: u64,
    pub crm_rows: u64,
    pub shared_devices: u64,
    pub shared_mailboxes: u64,
    pub bytes: u64,
    pub files: Vec<PathBuf>,
}

/// Bumped whenever the same configuration would generate different data.
pub const GENERATOR_VERSION: u32 = 3;

/// Whether `dir` already holds data generated with `config` by this generator version.
pub fn is_current(dir: &Path, config: &GenConfig) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("manifest.json")) else {
        return false;
    };
    let Ok(manifest) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    manifest["generator_version"] == GENERATOR_VERSION
        && serde_json::to_value(config).is_ok_and(|c| manifest["config"] == c)
}

/// Average events a person produces over the whole history (used to size the population).
const EVENTS_PER_PERSON: u64 = 60;

// ---------------------------------------------------------------------------------------
// Counter-based randomness: every draw is a pure function of (seed, stream, a, b), so no
// per-person generator needs to be stored.

use tessera_core::identifier::normalize_phone;
use tessera_core::random::{SplitMix64, splitmix};

/// A small sequential generator for the draws inside one person-day.
#[derive(Clone)]
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64, stream: u64, a: u64, b: u64) -> Rng {
        // The state after one step, as the generator has always started.
        let start = splitmix(seed ^ splitmix(stream ^ splitmix(a ^ splitmix(b))));
        Rng(SplitMix64::new(start.wrapping_add(0x9E37_79B9_7F4A_7C15)))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.unit() <= p
    }
    fn unit(&mut self) -> f64 {
        self.0.unit()
    }
    fn pick(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len() as u64) as usize]
    }
    fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

const FIRST: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Nancy",
    "Matthew",
    "Lisa",
    "Anthony",
    "Betty",
    "Mark",
    "Margaret",
    "Steven",
    "Sandra",
    "Paul",
    "Ashley",
    "Andrew",
    "Emily",
    "Joshua",
    "Donna",
    "Kevin",
    "Michelle",
    "Brian",
    "Carol",
    "Amara",
    "Kenji",
    "Zofia",
    "Mateo",
    "Ingrid",
    "Ravi",
    "Chloe",
    "Tariq",
    "Yuki",
    "Lucia",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Kowalski",
    "Okafor",
    "Nakamura",
    "Lindqvist",
    "Patel",
    "Dubois",
    "Rossi",
    "Haddad",
    "Silva",
    "Novak",
];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "proton.me",
    "example.org",
];
const STREETS: &[&str] = &[
    "High St",
    "Main Street",
    "Oak Avenue",
    "Park Road",
    "Elm St",
    "Maple Drive",
    "Church Lane",
];
const CITIES: &[&str] = &[
    "Springfield",
    "Riverton",
    "Lakeside",
    "Fairview",
    "Georgetown",
    "Salem",
    "Franklin",
];
const CATEGORIES: &[&str] = &[
    "shoes",
    "outerwear",
    "accessories",
    "bags",
    "denim",
    "knitwear",
    "sportswear",
    "home",
];
const PAGES: &[&str] = &[
    "/",
    "/new-arrivals",
    "/sale",
    "/about",
    "/stores",
    "/help/returns",
    "/blog/style-guide",
];
const CAMPAIGNS: &[&str] = &[
    "spring_sale",
    "newsletter_weekly",
    "back_in_stock",
    "winback",
    "vip_preview",
];

/// The fixed facts about one person, derived from the seed and the person's index alone.
struct Person {
    index: u64,
    first: &'static str,
    last: &'static str,
    /// Registered customers have a user id, an e-mail and a phone.
    registered: bool,
    user_id: String,
    email: String,
    phone_digits: String,
    loyalty_id: Option<String>,
    devices: Vec<Device>,
    /// Daily probability of a session.
    activity: f64,
    /// Probability that a session with a cart ends in an order.
    buyer: f64,
    /// Multiplier of this person's prices: spend differs between people.
    spend: f64,
    /// Fraction of the period after which the person is gone for good (churn);
    /// infinite for those who stay.
    lapse: f64,
    newsletter: bool,
    city: &'static str,
    street_no: u64,
    street: &'static str,
    birth_year: u64,
}

#[derive(Clone)]
struct Device {
    anonymous_id: String,
    kind: DeviceKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DeviceKind {
    Web,
    Ios,
    Android,
}

/// Households: persons 2k and 2k+1 of some pairs share a tablet and sometimes a mailbox.
fn household_partner(seed: u64, index: u64) -> Option<u64> {
    let pair = index / 2;
    let mut r = Rng::new(seed, 7, pair, 0);
    r.chance(0.04).then_some(index ^ 1)
}

fn shares_mailbox(seed: u64, index: u64) -> bool {
    let pair = index / 2;
    let mut r = Rng::new(seed, 8, pair, 0);
    household_partner(seed, index).is_some() && r.chance(0.35)
}

fn shared_device_id(seed: u64, index: u64) -> String {
    let mut r = Rng::new(seed, 9, index / 2, 0);
    format!("tablet-{}", r.uuid())
}

impl Person {
    fn new(seed: u64, index: u64, persons: u64) -> Person {
        let mut r = Rng::new(seed, 1, index, 0);
        let first = r.pick(FIRST);
        let last = r.pick(LAST);
        let registered = r.chance(0.72);
        let user_id = format!("u{:08}", index + 1);
        let domain = r.pick(DOMAINS);
        let mut email = format!(
            "{}.{}{}@{}",
            first.to_lowercase(),
            last.to_lowercase(),
            r.below(100),
            domain
        );
        if shares_mailbox(seed, index) {
            let pair_last = Person::surname(seed, index & !1);
            email = format!(
                "family.{}{}@{}",
                pair_last.to_lowercase(),
                index / 2 % 1000,
                "example.org"
            );
        }
        let phone_digits = nanp_number(r.below(700), r.below(1000), r.below(10_000));
        let loyalty_id = r
            .chance(0.4)
            .then(|| format!("L{:09}", splitmix(seed ^ index) % 1_000_000_000));
        let n_devices = 1 + r.below(3);
        let mut devices: Vec<Device> = (0..n_devices)
            .map(|_| {
                let kind = match r.below(10) {
                    0..=5 => DeviceKind::Web,
                    6..=7 => DeviceKind::Ios,
                    _ => DeviceKind::Android,
                };
                Device {
                    anonymous_id: r.uuid(),
                    kind,
                }
            })
            .collect();
        if household_partner(seed, index).is_some_and(|p| p < persons) {
            devices.push(Device {
                anonymous_id: shared_device_id(seed, index),
                kind: DeviceKind::Web,
            });
        }
        Person {
            index,
            first,
            last,
            registered,
            user_id,
            email,
            phone_digits,
            loyalty_id,
            devices,
            activity: 0.01 + r.unit().powi(2) * 0.12,
            buyer: 0.15 + r.unit() * 0.6,
            newsletter: r.chance(0.3),
            city: r.pick(CITIES),
            street_no: 1 + r.below(200),
            street: r.pick(STREETS),
            birth_year: 1950 + r.below(55),
            spend: 0.4 + 1.6 * r.unit().powi(2),
            lapse: if r.chance(0.5) {
                r.unit()
            } else {
                f64::INFINITY
            },
        }
    }

    fn surname(seed: u64, index: u64) -> &'static str {
        let mut r = Rng::new(seed, 1, index, 0);
        let _ = r.pick(FIRST);
        r.pick(LAST)
    }

    fn person_id(&self) -> String {
        format!("p{:08}", self.index + 1)
    }
}

/// An e-mail as a person types it: mixed case, stray spaces.
fn messy_email(r: &mut Rng, email: &str) -> String {
    let mut s = String::with_capacity(email.len() + 2);
    if r.chance(0.2) {
        s.push(' ');
    }
    for c in email.chars() {
        if r.chance(0.1) {
            s.extend(c.to_uppercase())
        } else {
            s.push(c)
        }
    }
    if r.chance(0.2) {
        s.push_str("  ");
    }
    s
}

/// A valid North American number (ten digits) from three draws: an area code in use,
/// an exchange that does not start with 0 or 1, and a line number — the next exchange
/// when libphonenumber says the range is not allocated, so every sample phone is one
/// stitching and the ad platforms accept.
fn nanp_number(area: u64, exchange: u64, line: u64) -> String {
    static AREAS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    let areas = AREAS.get_or_init(|| {
        (200..1000)
            .filter(|a| {
                ["5550123", "2345678"]
                    .iter()
                    .any(|rest| normalize_phone(&format!("{a}{rest}"), Some("US")).is_some())
            })
            .collect()
    });
    let area = areas[area as usize % areas.len()];
    let mut exchange = 200 + exchange % 800;
    for _ in 0..800 {
        let digits = format!("{area}{exchange:03}{line:04}");
        if normalize_phone(&digits, Some("US")).is_some() {
            return digits;
        }
        exchange = 200 + (exchange - 199) % 800;
    }
    format!("{area}555{line:04}")
}

/// A US phone number in one of the formats people use.
fn messy_phone(r: &mut Rng, d: &str) -> String {
    let (a, b, c) = (&d[0..3], &d[3..6], &d[6..10]);
    match r.below(5) {
        0 => format!("({a}) {b}-{c}"),
        1 => format!("{a}.{b}.{c}"),
        2 => format!("+1 {a} {b} {c}"),
        3 => format!("1-{a}-{b}-{c}"),
        _ => format!("{a}{b}{c}"),
    }
}

/// Introduces one typo (swap, drop, double or replace a letter) with probability `p`.
fn typo(r: &mut Rng, s: &str, p: f64) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 3 || !r.chance(p) {
        return s.to_owned();
    }
    let i = 1 + r.below(chars.len() as u64 - 2) as usize;
    let mut out = chars.clone();
    match r.below(4) {
        0 => out.swap(i, i + 1),
        1 => {
            out.remove(i);
        }
        2 => out.insert(i, chars[i]),
        _ => out[i] = (b'a' + r.below(26) as u8) as char,
    }
    out.into_iter().collect()
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

struct Writers {
    web: BufWriter<File>,
    app: BufWriter<File>,
    pos: BufWriter<File>,
}

struct DayCtx<'a> {
    seed: u64,
    day_start: DateTime<Utc>,
    summary: &'a mut GenSummary,
    out: &'a mut Writers,
    line: String,
}

impl DayCtx<'_> {
    fn emit(&mut self, channel: DeviceKind, pos: bool) -> std::io::Result<()> {
        self.line.push('\n');
        let w = if pos {
            self.summary.events_pos += 1;
            &mut self.out.pos
        } else if channel == DeviceKind::Web {
            self.summary.events_web += 1;
            &mut self.out.web
        } else {
            self.summary.events_app += 1;
            &mut self.out.app
        };
        w.write_all(self.line.as_bytes())?;
        self.summary.events += 1;
        self.summary.bytes += self.line.len() as u64;
        self.line.clear();
        Ok(())
    }
}

fn context(kind: DeviceKind, r: &mut Rng, campaign: Option<&str>) -> String {
    let (lib, ua) = match kind {
        DeviceKind::Web => (
            "analytics.js",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15",
        ),
        DeviceKind::Ios => ("analytics-ios", "Shop/4.2 CFNetwork/1494 Darwin/23.4.0"),
        DeviceKind::Android => (
            "analytics-android",
            "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)",
        ),
    };
    let ip = format!("203.0.{}.{}", r.below(256), r.below(256));
    let mut s = format!(
        r#"{{"library":{{"name":"{lib}","version":"4.4.1"}},"ip":"{ip}","userAgent":"{ua}","locale":"en-US""#
    );
    if let Some(c) = campaign {
        let _ = write!(
            s,
            r#","campaign":{{"name":"{c}","source":"newsletter","medium":"email"}}"#
        );
    }
    s.push('}');
    s
}

/// Generates the data set into `out_dir` (created if missing).
pub fn generate(config: &GenConfig, out_dir: &Path) -> std::io::Result<GenSummary> {
    generate_with_progress(config, out_dir, |_, _| {})
}

/// [`generate`], calling `progress(events_so_far, target)` after each day.
pub fn generate_with_progress(
    config: &GenConfig,
    out_dir: &Path,
    mut progress: impl FnMut(u64, u64),
) -> std::io::Result<GenSummary> {
    std::fs::create_dir_all(out_dir)?;
    let persons = (config.events / EVENTS_PER_PERSON).max(10);
    let seed = config.seed;
    let open = |name: &str| -> std::io::Result<BufWriter<File>> {
        Ok(BufWriter::with_capacity(
            1 << 20,
            File::create(out_dir.join(name))?,
        ))
    };
    let mut out = Writers {
        web: open("events-web.ndjson")?,
        app: open("events-app.ndjson")?,
        pos: open("events-pos.ndjson")?,
    };
    let mut summary = GenSummary {
        persons,
        ..GenSummary::default()
    };

    // Per-person state: devices already logged in on (bit per device), orders so far.
    let mut logged_in: Vec<u8> = vec![0; persons as usize];
    let mut orders: Vec<u16> = vec![0; persons as usize];

    // Scale activity so the expected total is close to the target.
    let first_day = config.end_date - Duration::days(i64::from(config.days) - 1);
    // Measured: a session yields ~4.85 events; a person has activity ≈ 0.05 on average.
    let sessions_wanted = config.events as f64 / 4.85;
    // Half the people lapse at a uniform point of the period: 3/4 of person-days active.
    let sessions_natural = persons as f64 * f64::from(config.days) * 0.05 * 0.75;
    let scale = sessions_wanted / sessions_natural;

    for day in 0..config.days {
        let date = first_day + Duration::days(i64::from(day));
        let day_start = date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        let mut ctx = DayCtx {
            seed,
            day_start,
            summary: &mut summary,
            out: &mut out,
            line: String::with_capacity(2048),
        };
        for index in 0..persons {
            // Cheap daily gate before building the person.
            let mut gate = Rng::new(seed, 2, index, u64::from(day));
            let pre = gate.unit();
            if pre > 0.13 * scale {
                continue;
            }
            let person = Person::new(seed, index, persons);
            if pre > person.activity * scale
                || f64::from(day) >= person.lapse * f64::from(config.days)
            {
                continue;
            }
            session(
                &mut ctx,
                &person,
                day,
                &mut logged_in[index as usize],
                &mut orders[index as usize],
            )?;
        }
        progress(ctx.summary.events, config.events);
    }
    out.web.flush()?;
    out.app.flush()?;
    out.pos.flush()?;

    // CRM export and ground truth.
    let mut crm = open("crm.csv")?;
    let mut truth = open("truth.csv")?;
    writeln!(
        crm,
        "crm_id,first_name,last_name,email,phone,street,city,birth_date,updated_at"
    )?;
    writeln!(truth, "person_id,id_type,id_value")?;
    for index in 0..persons {
        let p = Person::new(seed, index, persons);
        let pid = p.person_id();
        for d in &p.devices {
            writeln!(truth, "{pid},anonymous_id,{}", d.anonymous_id)?;
        }
        if household_partner(seed, index).is_some() && index % 2 == 0 {
            summary.shared_devices += 1;
        }
        if shares_mailbox(seed, index) && index % 2 == 0 {
            summary.shared_mailboxes += 1;
        }
        if let Some(l) = &p.loyalty_id {
            writeln!(truth, "{pid},loyalty_id,{l}")?;
        }
        if !p.registered {
            continue;
        }
        summary.registered += 1;
        writeln!(truth, "{pid},user_id,{}", p.user_id)?;
        writeln!(truth, "{pid},email,{}", p.email)?;
        writeln!(truth, "{pid},phone,+1{}", p.phone_digits)?;
        let mut r = Rng::new(seed, 5, index, 0);
        let crm_id = format!("C{:07}", index + 1);
        writeln!(truth, "{pid},crm_id,{crm_id}")?;
        let updated = first_day + Duration::days(r.below(u64::from(config.days)) as i64);
        writeln!(
            crm,
            "{crm_id},{},{},{},{},{} {},{},{}-{:02}-{:02},{}",
            typo(&mut r, p.first, 0.15),
            typo(&mut r, p.last, 0.15),
            if r.chance(0.85) {
                typo(&mut r, &p.email, 0.05)
            } else {
                String::new()
            },
            if r.chance(0.7) {
                messy_phone(&mut r, &p.phone_digits)
            } else {
                String::new()
            },
            p.street_no,
            typo(&mut r, p.street, 0.1),
            p.city,
            p.birth_year,
            1 + r.below(12),
            1 + r.below(28),
            updated
        )?;
        summary.crm_rows += 1;
    }
    crm.flush()?;
    truth.flush()?;

    summary.files = [
        "events-web.ndjson",
        "events-app.ndjson",
        "events-pos.ndjson",
        "crm.csv",
        "truth.csv",
        "manifest.json",
    ]
    .iter()
    .map(|f| out_dir.join(f))
    .collect();
    let manifest = serde_json::json!({
        "generator_version": GENERATOR_VERSION,
        "config": config,
        "summary": summary,
    });
    std::fs::write(
        out_dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap_or_default(),
    )?;
    Ok(summary)
}

fn session(
    ctx: &mut DayCtx<'_>,
    p: &Person,
    day: u32,
    logged_in: &mut u8,
    orders: &mut u16,
) -> std::io::Result<()> {
    let mut r = Rng::new(ctx.seed, 3, p.index, u64::from(day));
    let mut t = ctx.day_start + Duration::seconds(r.below(86_000) as i64);

    // POS: a store purchase instead of an online session.
    if let Some(loyalty) = p.loyalty_id.as_deref().filter(|_| r.chance(0.12)) {
        let receipt = format!("pos-{}", r.uuid());
        let revenue = (15.0 + (r.below(20_000) as f64) / 100.0) * p.spend;
        let category = r.pick(CATEGORIES);
        let _ = write!(
            ctx.line,
            r#"{{"type":"track","messageId":"{}","anonymousId":"{receipt}","event":"Order Completed","properties":{{"order_id":"{}","revenue":{revenue:.2},"currency":"USD","loyalty_id":"{loyalty}","store_id":"S{:03}","category":"{category}"}},"context":{{"library":{{"name":"pos-export","version":"2.0"}}}},"timestamp":"{}"}}"#,
            r.uuid(),
            r.uuid(),
            r.below(40),
            ts(t)
        );
        *orders = orders.saturating_add(1);
        ctx.summary.orders += 1;
        return ctx.emit(DeviceKind::Web, true);
    }

    let device_no = r.below(p.devices.len() as u64) as usize;
    let device = &p.devices[device_no];
    let kind = device.kind;
    let anon = device.anonymous_id.as_str();
    let campaign = (p.newsletter && r.chance(0.25)).then(|| r.pick(CAMPAIGNS));

    if let Some(c) = campaign {
        let _ = write!(
            ctx.line,
            r#"{{"type":"track","messageId":"{}","anonymousId":"{anon}","event":"Email Clicked","properties":{{"campaign":"{c}"}},"context":{},"timestamp":"{}"}}"#,
            r.uuid(),
            context(kind, &mut r, Some(c)),
            ts(t)
        );
        ctx.emit(kind, false)?;
        t += Duration::seconds(5 + r.below(30) as i64);
    }

    // Log in on this device the first time (registered persons only), and now and then again.
    let bit = 1u8 << device_no.min(7);
    let logs_in = p.registered && (*logged_in & bit == 0 || r.chance(0.1));
    let mut user: Option<&str> = None;
    if logs_in {
        *logged_in |= bit;
        user = Some(p.user_id.as_str());
        let email = messy_email(&mut r, &p.email);
        let phone = if r.chance(0.6) {
            format!(r#","phone":"{}""#, messy_phone(&mut r, &p.phone_digits))
        } else {
            String::new()
        };
        let _ = write!(
            ctx.line,
            r#"{{"type":"identify","messageId":"{}","anonymousId":"{anon}","userId":"{}","traits":{{"email":"{email}","first_name":"{}","last_name":"{}"{phone},"city":"{}","newsletter":{}}},"context":{},"timestamp":"{}"}}"#,
            r.uuid(),
            p.user_id,
            p.first,
            p.last,
            p.city,
            p.newsletter,
            context(kind, &mut r, None),
            ts(t)
        );
        ctx.emit(kind, false)?;
        if kind != DeviceKind::Web && r.chance(0.6) {
            t += Duration::milliseconds(200 + r.below(800) as i64);
            let _ = write!(
                ctx.line,
                r#"{{"type":"alias","messageId":"{}","previousId":"{anon}","userId":"{}","anonymousId":null,"context":{},"timestamp":"{}"}}"#,
                r.uuid(),
                p.user_id,
                context(kind, &mut r, None),
                ts(t)
            );
            ctx.emit(kind, false)?;
        }
    } else if p.registered && *logged_in & bit != 0 && r.chance(0.8) {
        user = Some(p.user_id.as_str());
    }
    let ids = match user {
        Some(u) => format!(r#""anonymousId":"{anon}","userId":"{u}""#),
        None => format!(r#""anonymousId":"{anon}""#),
    };

    let views = 1 + r.below(4);
    for _ in 0..views {
        t += Duration::seconds(10 + r.below(120) as i64);
        let ctx_json = context(kind, &mut r, campaign);
        if kind == DeviceKind::Web {
            let path = r.pick(PAGES);
            let _ = write!(
                ctx.line,
                r#"{{"type":"page","messageId":"{}",{ids},"name":"{path}","properties":{{"path":"{path}","url":"https://shop.example.com{path}","referrer":""}},"context":{ctx_json},"timestamp":"{}","channel":"client"}}"#,
                r.uuid(),
                ts(t)
            );
        } else {
            let _ = write!(
                ctx.line,
                r#"{{"type":"screen","messageId":"{}",{ids},"name":"Home","properties":{{"tab":"{}"}},"context":{ctx_json},"timestamp":"{}","channel":"mobile"}}"#,
                r.uuid(),
                r.below(4),
                ts(t)
            );
        }
        ctx.emit(kind, false)?;
    }

    let category = r.pick(CATEGORIES);
    let products = r.below(4);
    let mut cart = Vec::new();
    for _ in 0..products {
        t += Duration::seconds(5 + r.below(90) as i64);
        let sku = format!("SKU-{}-{:04}", &category[..3].to_uppercase(), r.below(500));
        let price = (10.0 + (r.below(15_000) as f64) / 100.0) * p.spend;
        let _ = write!(
            ctx.line,
            r#"{{"type":"track","messageId":"{}",{ids},"event":"Product Viewed","properties":{{"product_id":"{sku}","category":"{category}","price":{price:.2}}},"context":{},"timestamp":"{}"}}"#,
            r.uuid(),
            context(kind, &mut r, campaign),
            ts(t)
        );
        ctx.emit(kind, false)?;
        if r.chance(0.35) {
            t += Duration::seconds(3 + r.below(30) as i64);
            let _ = write!(
                ctx.line,
                r#"{{"type":"track","messageId":"{}",{ids},"event":"Product Added","properties":{{"product_id":"{sku}","category":"{category}","price":{price:.2},"quantity":1}},"context":{},"timestamp":"{}"}}"#,
                r.uuid(),
                context(kind, &mut r, campaign),
                ts(t)
            );
            ctx.emit(kind, false)?;
            cart.push(price);
        }
    }
    if !cart.is_empty() && r.chance(p.buyer) {
        t += Duration::seconds(60 + r.below(600) as i64);
        let revenue: f64 = cart.iter().sum();
        let _ = write!(
            ctx.line,
            r#"{{"type":"track","messageId":"{}",{ids},"event":"Order Completed","properties":{{"order_id":"{}","revenue":{revenue:.2},"currency":"USD","category":"{category}","products":{}}},"context":{},"timestamp":"{}"}}"#,
            r.uuid(),
            r.uuid(),
            cart.len(),
            context(kind, &mut r, campaign),
            ts(t)
        );
        ctx.emit(kind, false)?;
        *orders = orders.saturating_add(1);
        ctx.summary.orders += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_phones_are_valid_numbers_in_every_format() {
        let mut r = Rng::new(7, 1, 2, 3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            let d = nanp_number(r.below(700), r.below(1000), r.below(10_000));
            assert_eq!(d.len(), 10, "{d}");
            let e164 = normalize_phone(&d, Some("US")).expect("a valid number");
            assert_eq!(e164, format!("+1{d}"));
            for _ in 0..3 {
                let messy = messy_phone(&mut r, &d);
                assert_eq!(
                    normalize_phone(&messy, None).as_deref(),
                    Some(&*e164),
                    "{messy}"
                );
            }
            seen.insert(d);
        }
        assert!(seen.len() > 4990, "numbers stay distinct: {}", seen.len());
    }

    #[test]
    fn deterministic_and_close_to_target() {
        let a = tempfile_dir("a");
        let b = tempfile_dir("b");
        let config = GenConfig {
            events: 5_000,
            days: 60,
            ..GenConfig::default()
        };
        let sa = generate(&config, &a).unwrap();
        let sb = generate(&config, &b).unwrap();
        assert_eq!(sa.events, sb.events);
        for f in [
            "events-web.ndjson",
            "events-app.ndjson",
            "events-pos.ndjson",
            "crm.csv",
            "truth.csv",
        ] {
            assert_eq!(
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap(),
                "{f}"
            );
        }
        let ratio = sa.events as f64 / 5_000.0;
        assert!(
            (0.5..2.0).contains(&ratio),
            "generated {} events for a target of 5000",
            sa.events
        );
        assert!(sa.orders > 0 && sa.crm_rows > 0 && sa.events_pos > 0 && sa.events_app > 0);
        // Every line is a valid Segment event.
        let ctx = tessera_core::event::ParseContext::import(chrono::Utc::now().timestamp_micros());
        for f in [
            "events-web.ndjson",
            "events-app.ndjson",
            "events-pos.ndjson",
        ] {
            let text = std::fs::read_to_string(a.join(f)).unwrap();
            for (i, line) in text.lines().enumerate() {
                tessera_core::event::parse_event(line, &ctx)
                    .unwrap_or_else(|e| panic!("{f}:{}: {e}: {line}", i + 1));
            }
        }
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-gen-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}

/// Sizes of a generated matching data set.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchData {
    pub records: u64,
    pub persons: u64,
    /// Pairs of records of the same person.
    pub true_pairs: u64,
}

/// People records for probabilistic matching at scale: `records` rows in `csv`
/// (`rec_id,first_name,surname,date_of_birth,street,city,postcode,email`), about a
/// quarter of the people recorded twice or three times, the copies with typos in names
/// and streets, a birth date a day or a month off, missing e-mails and postcodes. The
/// true pairs go to `truth` (`id,cluster`).
pub fn match_records(
    records: u64,
    seed: u64,
    csv: &Path,
    truth: &Path,
) -> std::io::Result<MatchData> {
    let mut out = BufWriter::new(File::create(csv)?);
    let mut known = BufWriter::new(File::create(truth)?);
    writeln!(
        out,
        "rec_id,first_name,surname,date_of_birth,street,city,postcode,email"
    )?;
    writeln!(known, "id,cluster")?;
    let mut r = Rng::new(seed, 7, 0, 0);
    let mut data = MatchData::default();
    let mut person = 0u64;
    while data.records < records {
        person += 1;
        let first = r.pick(FIRST);
        let last = r.pick(LAST);
        let born = NaiveDate::from_num_days_from_ce_opt(711_000 + r.below(60 * 365) as i32)
            .unwrap_or_default();
        let number = 1 + r.below(300);
        let street = r.pick(STREETS);
        let city_index = r.below(CITIES.len() as u64);
        let city = CITIES[city_index as usize];
        let postcode = format!("{}{:04}", city_index + 1, r.below(2_000));
        let email = format!(
            "{}.{}{}@example.com",
            first.to_lowercase(),
            last.to_lowercase(),
            r.below(1000)
        );
        let copies = if r.chance(0.25) { 2 + r.below(2) } else { 1 };
        let copies = copies.min(records - data.records);
        data.persons += 1;
        data.true_pairs += copies * (copies - 1) / 2;
        for copy in 0..copies {
            data.records += 1;
            let id = format!("R{:08}", data.records);
            writeln!(known, "{id},P{person}")?;
            let noisy = copy > 0;
            let p = if noisy { 0.3 } else { 0.0 };
            let date = if noisy && r.chance(0.1) {
                born + Duration::days(if r.chance(0.5) { 1 } else { 30 })
            } else {
                born
            };
            let keep = |r: &mut Rng, x: String, missing: f64| {
                if noisy && r.chance(missing) {
                    String::new()
                } else {
                    x
                }
            };
            let e = keep(&mut r, email.clone(), 0.3);
            let pc = keep(&mut r, postcode.clone(), 0.1);
            writeln!(
                out,
                "{id},{},{},{},{number} {},{city},{pc},{e}",
                typo(&mut r, first, p),
                typo(&mut r, last, p),
                date.format("%Y-%m-%d"),
                typo(&mut r, street, p),
            )?;
        }
    }
    out.flush()?;
    known.flush()?;
    Ok(data)
}
