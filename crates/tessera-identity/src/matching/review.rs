//! The review band: scored pairs a person decides on (`match_decisions`).
//!
//! Pairs whose probability falls in `[review, threshold)` are written to `match_pairs`
//! with decision `review`. A person accepts or rejects them ([`decide`], from the web
//! console or `tessera match review`); the latest decision on a pair counts. The next
//! stitch links an accepted pair as a `reviewed` edge (score 1) and never links a
//! rejected pair by matching, whatever later predictions say ([`decided_rule_sql`]).
//! The queue ([`queue`]) lists the review pairs not yet decided, best first, with each
//! comparison's level and weight.

use super::*;
use tessera_core::schema::{MATCH_DECISIONS, PII_ID_TYPES};

/// A person's decision on a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The two records are the same person: link them.
    Accept,
    /// They are not: never link them by matching.
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Reject => "reject",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Decision> {
        match s {
            "accept" => Ok(Decision::Accept),
            "reject" => Ok(Decision::Reject),
            other => Err(IdentityError::BadIdentifier(format!(
                "unknown decision {other:?}: use accept or reject"
            ))),
        }
    }
}

/// One comparison of a pair: its level and match weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Term {
    pub comparison: String,
    pub level: String,
    pub weight: f64,
}

/// A scored pair of the review band.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewPair {
    /// Names the pair without its ids ([`pair_key`]): what forms carry, so a page shown
    /// masked holds no identifier value.
    pub key: String,
    pub id_l: String,
    pub id_r: String,
    /// Masked (`TYPE:***`) for callers without the `pii` grant when the id is an e-mail
    /// or phone.
    pub label_l: String,
    pub label_r: String,
    pub probability: f64,
    pub match_weight: f64,
    pub rule: String,
    pub model_version: i64,
    pub terms: Vec<Term>,
}

/// How an id is shown: `TYPE:***` when its type is personal data and the caller may not
/// see it.
pub fn label(id: &str, pii: bool) -> String {
    match id.split_once(':') {
        Some((t, _)) if !pii && PII_ID_TYPES.contains(&t) => format!("{t}:***"),
        _ => id.to_owned(),
    }
}

/// The key of the pair `id_l`–`id_r`: the hex SHA-256 of the two ids joined by the
/// unit separator (U+001F).
pub fn pair_key(id_l: &str, id_r: &str) -> String {
    tessera_core::auth::token_digest(&format!("{id_l}\u{1f}{id_r}"))
}

/// The latest decision per pair, as SQL over `match_decisions`.
const LATEST: &str = "SELECT id_l, id_r, decision FROM (SELECT id_l, id_r, decision, \
     row_number() OVER (PARTITION BY id_l, id_r ORDER BY decided_at DESC) AS n \
     FROM match_decisions) AS d WHERE n = 1";

/// Pairs of the review band with no decision yet, best first, at most `limit`; how
/// many there are in all.
pub async fn queue(engine: &Engine, limit: usize, pii: bool) -> Result<(Vec<ReviewPair>, u64)> {
    let lake = engine.lake();
    if !lake.exists(MATCH_PAIRS).await? {
        return Ok((Vec::new(), 0));
    }
    let decisions = lake.exists(MATCH_DECISIONS).await?;
    let ctx = if decisions {
        engine.session_of(&[MATCH_PAIRS, MATCH_DECISIONS]).await?
    } else {
        engine.session_of(&[MATCH_PAIRS]).await?
    };
    let undecided = if decisions {
        format!(
            "FROM match_pairs p LEFT JOIN ({LATEST}) d ON d.id_l = p.id_l AND d.id_r = p.id_r \
             WHERE p.decision = 'review' AND d.decision IS NULL"
        )
    } else {
        "FROM match_pairs p WHERE p.decision = 'review'".to_owned()
    };
    let total = collect(
        &ctx,
        &format!("SELECT count(*) AS n {undecided}"),
        MATCH_PAIRS,
    )
    .await?;
    let total = total
        .first()
        .filter(|b| b.num_rows() > 0)
        .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0)) as u64;
    let batches = collect(
        &ctx,
        &format!(
            "SELECT p.id_l, p.id_r, p.probability, p.match_weight, p.rule, p.model_version, \
                    p.comparisons {undecided} \
             ORDER BY p.probability DESC, p.id_l, p.id_r LIMIT {limit}"
        ),
        MATCH_PAIRS,
    )
    .await?;
    Ok((pairs_of(&batches, pii)?, total))
}

fn pairs_of(batches: &[RecordBatch], pii: bool) -> Result<Vec<ReviewPair>> {
    let mut out = Vec::new();
    for b in batches {
        let (l, r, rule, comparisons) = (
            text(b.column(0))?,
            text(b.column(1))?,
            text(b.column(4))?,
            text(b.column(6))?,
        );
        let p = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        let w = b.column(3).as_primitive::<arrow::datatypes::Float64Type>();
        let v = b.column(5).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push(ReviewPair {
                key: pair_key(l.value(i), r.value(i)),
                id_l: l.value(i).to_owned(),
                id_r: r.value(i).to_owned(),
                label_l: label(l.value(i), pii),
                label_r: label(r.value(i), pii),
                probability: p.value(i),
                match_weight: w.value(i),
                rule: rule.value(i).to_owned(),
                model_version: v.value(i),
                terms: terms(comparisons.value(i)),
            });
        }
    }
    Ok(out)
}

/// The comparisons of a pair as `match_pairs.comparisons` stores them (JSON).
fn terms(json: &str) -> Vec<Term> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(comparison, v)| Term {
            comparison,
            level: v["level"].as_str().unwrap_or_default().to_owned(),
            weight: v["weight"].as_f64().unwrap_or_default(),
        })
        .collect()
}

/// Records `decision` on the pair of `match_pairs` whose [`pair_key`] is `key`, by
/// `actor`; returns the pair as it was scored. A key no pair of the current
/// `match_pairs` has (a newer prediction replaced it, or it never was) is refused and
/// nothing is written.
pub async fn decide(
    engine: &Engine,
    key: &str,
    decision: Decision,
    actor: &str,
) -> Result<ReviewPair> {
    let lake = engine.lake();
    let gone = || {
        IdentityError::BadIdentifier(
            "that pair is no longer in match_pairs (a newer `tessera match predict` replaced \
             the scored pairs, or it never was one): reload the review queue"
                .to_owned(),
        )
    };
    if key.len() != 64
        || !key.bytes().all(|b| b.is_ascii_hexdigit())
        || !lake.exists(MATCH_PAIRS).await?
    {
        return Err(gone());
    }
    let ctx = engine.session_of(&[MATCH_PAIRS]).await?;
    let batches = collect(
        &ctx,
        &format!(
            "SELECT p.id_l, p.id_r, p.probability, p.match_weight, p.rule, p.model_version, \
                    p.comparisons FROM match_pairs p \
             WHERE encode(sha256(concat(p.id_l, chr(31), p.id_r)), 'hex') = '{}' LIMIT 1",
            key.to_ascii_lowercase()
        ),
        MATCH_PAIRS,
    )
    .await?;
    let pair = pairs_of(&batches, true)?.pop().ok_or_else(gone)?;
    let def = schema::table(MATCH_DECISIONS).ok_or_else(|| bad("no match_decisions table"))?;
    let batch = RecordBatch::try_new(
        def.schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![pair.id_l.clone()])) as ArrayRef,
            Arc::new(StringArray::from(vec![pair.id_r.clone()])),
            Arc::new(StringArray::from(vec![decision.as_str()])),
            Arc::new(Float64Array::from(vec![pair.probability])),
            Arc::new(Int64Array::from(vec![pair.model_version])),
            Arc::new(StringArray::from(vec![actor])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![chrono::Utc::now().timestamp_micros()])
                    .with_timezone("UTC"),
            ),
        ],
    )?;
    let mut writer = lake.append_writer(&def).await?;
    writer.write(batch).await?;
    writer
        .commit(
            CommitNote::new("match review", actor)
                .detail("decision", decision.as_str())
                .detail("model_version", pair.model_version),
        )
        .await?;
    Ok(pair)
}

/// The rows of the generated probabilistic rule when decisions exist: pairs decided
/// `match` that no one rejected, plus accepted pairs (as `reviewed`, score 1). `known`
/// is the SQL list of configured identifier types.
pub fn decided_rule_sql(known: &str) -> String {
    format!(
        "SELECT split_part(p.id_l, ':', 1) AS a_type, substr(p.id_l, strpos(p.id_l, ':') + 1) AS a_value, \
                split_part(p.id_r, ':', 1) AS b_type, substr(p.id_r, strpos(p.id_r, ':') + 1) AS b_value, \
                p.predicted_at AS seen_at, \
                CASE WHEN d.decision = 'accept' THEN 'reviewed' ELSE 'match' END AS source, \
                CASE WHEN d.decision = 'accept' THEN 1.0 ELSE p.probability END AS score \
         FROM {MATCH_PAIRS} p LEFT JOIN ({LATEST}) d ON d.id_l = p.id_l AND d.id_r = p.id_r \
         WHERE ((p.decision = 'match' AND d.decision IS DISTINCT FROM 'reject') OR d.decision = 'accept') \
           AND strpos(p.id_l, ':') > 1 AND strpos(p.id_r, ':') > 1 \
           AND split_part(p.id_l, ':', 1) IN ({known}) AND split_part(p.id_r, ':', 1) IN ({known})"
    )
}
