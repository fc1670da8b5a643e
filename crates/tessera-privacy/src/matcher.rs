//! Which rows belong to the people being erased or exported, as SQL functions whose
//! values live in memory, never in the query text (a Delta commit records its delete
//! predicate: `tessera_erased_actor(user_id, anonymous_id)` says nothing about anyone).
//!
//! A row belongs to a person when it is *about* them, not merely when it mentions an
//! identifier they once shared: a tablet two people used is one of both profiles'
//! device ids, and the other person's events on it stay theirs. So:
//!
//! - `tessera_erased_id(col, ...)`: any argument, trimmed, *is* one of the people's
//!   identifier values or profile ids (e-mail-like values compared case-insensitively);
//!   for profile-id columns and identifier columns of rows that name no profile.
//! - `tessera_erased_actor(user_id, anonymous_id)`: the event's actor — its `user_id`,
//!   else its `anonymous_id`, the rule of `profile_events` — is one of them.
//! - `tessera_erased_text(col, ...)`: any argument *contains* one of their personal
//!   identifiers (e-mail, phone) or profile ids as a whole token — not inside a longer
//!   one (`u-1` is not found in `u-12`), ASCII case ignored.
//! - `tessera_erased_any_text(col, ...)`: the same with every identifier value (SQL
//!   text in `audit_log`, where `WHERE user_id = 'u-1'` names them too).
//! - `tessera_redact_erased(text)`: the text with every identifier value or profile id
//!   replaced by `[erased]`.
//! - `tessera_without_erased(members)` / `tessera_only_erased(members)`: a JSON array of
//!   `[profile_id, …, merged_into]` entries without / with only the people's entries
//!   (members lists of `activation_batches`).
//! - `tessera_erased_message(message_id)`: the id is one of a set found beforehand (the
//!   people's events, deleted in one rewrite whatever their number — see [`message_set`]).
//!
//! Values shorter than [`MIN_TEXT_VALUE`] characters are only matched exactly.

use std::collections::HashSet;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use datafusion::arrow::array::{Array, ArrayRef, AsArray as _, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::ident;
use tessera_core::schema::PII_ID_TYPES;

/// Values shorter than this are matched exactly only.
pub const MIN_TEXT_VALUE: usize = 4;

/// What the erased people are known by.
#[derive(Debug)]
pub struct Matcher {
    exact: HashSet<String>,
    /// Personal identifiers (e-mail, phone) and profile ids.
    personal: Option<AhoCorasick>,
    /// Every identifier value and profile id.
    every: Option<AhoCorasick>,
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@' | b'+')
}

fn automaton<'a>(values: impl Iterator<Item = &'a String>) -> Option<AhoCorasick> {
    let needles: Vec<&String> = values.filter(|v| v.len() >= MIN_TEXT_VALUE).collect();
    (!needles.is_empty()).then(|| {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(needles)
            .expect("plain string needles always build")
    })
}

impl Matcher {
    /// A matcher of identifiers `(type, normalized value)` and profile ids.
    pub fn new<'a>(
        identifiers: impl IntoIterator<Item = (&'a str, &'a str)>,
        profile_ids: impl IntoIterator<Item = &'a str>,
    ) -> Matcher {
        let mut exact = HashSet::new();
        let mut personal = HashSet::new();
        let mut add = |v: &str, is_personal: bool| {
            let v = v.trim();
            if v.is_empty() {
                return;
            }
            let v = if v.contains('@') {
                v.to_lowercase()
            } else {
                v.to_owned()
            };
            if is_personal {
                personal.insert(v.clone());
            }
            exact.insert(v);
        };
        for (t, v) in identifiers {
            add(v, PII_ID_TYPES.contains(&t));
        }
        for p in profile_ids {
            add(p, true);
        }
        Matcher {
            personal: automaton(personal.iter()),
            every: automaton(exact.iter()),
            exact,
        }
    }

    /// Whether `value` is one of the values.
    pub fn is_value(&self, value: &str) -> bool {
        let v = value.trim();
        self.exact.contains(v) || (v.contains('@') && self.exact.contains(&v.to_lowercase()))
    }

    fn occurrences(ac: Option<&AhoCorasick>, text: &str) -> Vec<(usize, usize)> {
        let Some(ac) = ac else {
            return Vec::new();
        };
        let bytes = text.as_bytes();
        ac.find_overlapping_iter(text)
            .map(|m| (m.start(), m.end()))
            .filter(|&(s, e)| {
                (s == 0 || !token_char(bytes[s - 1])) && (e == bytes.len() || !token_char(bytes[e]))
            })
            .collect()
    }

    /// Whether `text` contains a personal identifier or profile id as a whole token.
    pub fn in_text(&self, text: &str) -> bool {
        !Self::occurrences(self.personal.as_ref(), text).is_empty()
    }

    /// Whether `text` contains any identifier value or profile id as a whole token.
    pub fn in_any_text(&self, text: &str) -> bool {
        !Self::occurrences(self.every.as_ref(), text).is_empty()
    }

    /// `text` with every whole-token identifier value or profile id replaced by
    /// `[erased]`.
    pub fn redact(&self, text: &str) -> String {
        let mut spans = Self::occurrences(self.every.as_ref(), text);
        if spans.is_empty() {
            return text.to_owned();
        }
        spans.sort();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e) in spans {
            if s < at {
                at = at.max(e);
                continue;
            }
            out.push_str(&text[at..s]);
            out.push_str("[erased]");
            at = e;
        }
        out.push_str(&text[at..]);
        out
    }

    fn is_member(&self, m: &serde_json::Value) -> bool {
        [0, 4].iter().any(|&i| {
            m.get(i)
                .and_then(|v| v.as_str())
                .is_some_and(|v| self.is_value(v))
        })
    }

    fn members(&self, members: &str, keep_theirs: bool) -> String {
        let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(members) else {
            return if keep_theirs {
                "[]".into()
            } else {
                self.redact(members)
            };
        };
        let kept: Vec<serde_json::Value> = entries
            .into_iter()
            .filter(|m| self.is_member(m) == keep_theirs)
            .collect();
        serde_json::Value::Array(kept).to_string()
    }

    /// A members list without the people's entries.
    pub fn without_members(&self, members: &str) -> String {
        self.members(members, false)
    }

    /// A members list with only the people's entries.
    pub fn only_members(&self, members: &str) -> String {
        self.members(members, true)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Id,
    Actor,
    Text,
    AnyText,
    Redact,
    Without,
    Only,
}

/// One of the functions over a shared [`Matcher`].
#[derive(Debug)]
struct MatchFn {
    matcher: Arc<Matcher>,
    kind: Kind,
    signature: Signature,
}

impl PartialEq for MatchFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.matcher, &other.matcher) && self.kind == other.kind
    }
}
impl Eq for MatchFn {}
impl std::hash::Hash for MatchFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.matcher) as usize).hash(state);
        self.kind.hash(state);
    }
}

fn strings(arg: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    let array = arg.clone().into_array(rows)?;
    Ok(if array.data_type() == &DataType::Utf8 {
        array
    } else {
        datafusion::arrow::compute::cast(&array, &DataType::Utf8)?
    })
}

fn value(c: &StringArray, i: usize) -> Option<&str> {
    (!c.is_null(i)).then(|| c.value(i))
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Id => "tessera_erased_id",
            Kind::Actor => "tessera_erased_actor",
            Kind::Text => "tessera_erased_text",
            Kind::AnyText => "tessera_erased_any_text",
            Kind::Redact => "tessera_redact_erased",
            Kind::Without => "tessera_without_erased",
            Kind::Only => "tessera_only_erased",
        }
    }

    fn is_test(self) -> bool {
        matches!(self, Kind::Id | Kind::Actor | Kind::Text | Kind::AnyText)
    }
}

impl ScalarUDFImpl for MatchFn {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(if self.kind.is_test() {
            DataType::Boolean
        } else {
            DataType::Utf8
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| strings(a, rows))
            .collect::<Result<_>>()?;
        let columns: Vec<&StringArray> = arrays.iter().map(|a| a.as_string::<i32>()).collect();
        let m = &self.matcher;
        if self.kind.is_test() {
            let out: BooleanArray = (0..rows)
                .map(|i| {
                    Some(match self.kind {
                        Kind::Actor => columns
                            .iter()
                            .find_map(|c| value(c, i))
                            .is_some_and(|v| m.is_value(v)),
                        Kind::Id => columns
                            .iter()
                            .any(|c| value(c, i).is_some_and(|v| m.is_value(v))),
                        Kind::Text => columns
                            .iter()
                            .any(|c| value(c, i).is_some_and(|v| m.in_text(v))),
                        _ => columns
                            .iter()
                            .any(|c| value(c, i).is_some_and(|v| m.in_any_text(v))),
                    })
                })
                .collect();
            return Ok(ColumnarValue::Array(Arc::new(out)));
        }
        let c = columns.first().copied();
        let out: StringArray = (0..rows)
            .map(|i| {
                c.and_then(|c| value(c, i)).map(|v| match self.kind {
                    Kind::Redact => m.redact(v),
                    Kind::Only => m.only_members(v),
                    _ => m.without_members(v),
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `tessera_erased_message(message_id)` over `ids`: true for a row whose message id is
/// in the set, false otherwise (NULL ids included). A hash lookup per row, whatever the
/// set's size — unlike an `IN (...)` list of literals, which the delete's planning walks
/// and Delta's file statistics turn into one nested `OR` per id.
pub fn message_set(ids: HashSet<String>) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(MessageSetFn {
        ids: Arc::new(ids),
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    }))
}

#[derive(Debug)]
struct MessageSetFn {
    ids: Arc<HashSet<String>>,
    signature: Signature,
}

impl PartialEq for MessageSetFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ids, &other.ids)
    }
}
impl Eq for MessageSetFn {}
impl std::hash::Hash for MessageSetFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.ids) as usize).hash(state);
    }
}

impl ScalarUDFImpl for MessageSetFn {
    fn name(&self) -> &str {
        "tessera_erased_message"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let array = strings(&args.args[0], rows)?;
        let ids = array.as_string::<i32>();
        let out: BooleanArray = (0..rows)
            .map(|i| Some(value(ids, i).is_some_and(|v| self.ids.contains(v))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// How one part of a table's predicate finds the people's rows.
#[derive(Debug, Clone, Copy)]
pub enum Clause {
    /// Any of these columns is one of their values (`tessera_erased_id`).
    Id(&'static [&'static str]),
    /// The event's actor, `user_id` else `anonymous_id`, is one of them.
    Actor,
    /// Any of these texts contains a personal identifier or profile id.
    Text(&'static [&'static str]),
    /// Any of these texts contains any of their values.
    AnyText(&'static [&'static str]),
    /// Rows where `column` is NULL (they name no profile) and any of the columns is one
    /// of their values.
    IdWhereNull(&'static str, &'static [&'static str]),
}

/// The SQL functions of one matcher, to build predicates and updates with.
#[derive(Debug, Clone)]
pub struct Functions {
    udfs: Vec<(Kind, Arc<ScalarUDF>)>,
}

impl Functions {
    pub fn new(matcher: Arc<Matcher>) -> Functions {
        let udfs = [
            Kind::Id,
            Kind::Actor,
            Kind::Text,
            Kind::AnyText,
            Kind::Redact,
            Kind::Without,
            Kind::Only,
        ]
        .into_iter()
        .map(|kind| {
            (
                kind,
                Arc::new(ScalarUDF::new_from_impl(MatchFn {
                    matcher: matcher.clone(),
                    kind,
                    signature: Signature::variadic_any(Volatility::Immutable),
                })),
            )
        })
        .collect();
        Functions { udfs }
    }

    fn udf(&self, kind: Kind) -> &Arc<ScalarUDF> {
        &self
            .udfs
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("every kind is built")
            .1
    }

    fn call(&self, kind: Kind, cols: &[&str]) -> Expr {
        self.udf(kind)
            .call(cols.iter().map(|c| ident(*c)).collect())
    }

    /// `column` without the people's members entries.
    pub fn without_members(&self, column: &str) -> Expr {
        self.call(Kind::Without, &[column])
    }

    /// `column` with only the people's members entries.
    pub fn only_members(&self, column: &str) -> Expr {
        self.call(Kind::Only, &[column])
    }

    /// `column` with their values redacted.
    pub fn redact(&self, column: &str) -> Expr {
        self.call(Kind::Redact, &[column])
    }

    /// The disjunction of `clauses`.
    pub fn predicate(&self, clauses: &[Clause]) -> Expr {
        clauses
            .iter()
            .map(|c| match c {
                Clause::Id(cols) => self.call(Kind::Id, cols),
                Clause::Actor => self.call(Kind::Actor, &["user_id", "anonymous_id"]),
                Clause::Text(cols) => self.call(Kind::Text, cols),
                Clause::AnyText(cols) => self.call(Kind::AnyText, cols),
                Clause::IdWhereNull(null, cols) => {
                    ident(*null).is_null().and(self.call(Kind::Id, cols))
                }
            })
            .reduce(Expr::or)
            .unwrap_or_else(|| datafusion::prelude::lit(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Matcher {
        Matcher::new(
            [
                ("email", "jane@example.com"),
                ("user_id", "u-100"),
                ("anonymous_id", "tablet-7"),
                ("user_id", "ab"),
            ],
            ["p-0001"],
        )
    }

    #[test]
    fn ids_match_exactly() {
        let m = m();
        assert!(m.is_value(" u-100 "));
        assert!(m.is_value("Jane@Example.com"));
        assert!(!m.is_value("u-1001"));
        assert!(m.is_value("ab"));
    }

    #[test]
    fn texts_match_whole_personal_tokens_only() {
        let m = m();
        assert!(m.in_text(r#"{"email":"JANE@example.com"}"#));
        assert!(m.in_text(r#"{"members":["p-0001"]}"#));
        assert!(!m.in_text(r#"{"email":"bjane@example.com"}"#));
        // A device id is not personal: another person's event may carry it.
        assert!(!m.in_text(r#"{"device":"tablet-7"}"#));
        assert!(m.in_any_text(r#"{"device":"tablet-7"}"#));
        assert!(m.in_any_text("WHERE user_id = 'u-100'"));
        assert!(!m.in_any_text("WHERE user_id = 'u-1001' OR x = 'xu-100'"));
        // Too short for text.
        assert!(!m.in_any_text(r#"{"k":"ab"}"#));
    }

    #[test]
    fn redaction_and_members() {
        let m = m();
        assert_eq!(
            m.redact("SELECT * FROM profiles WHERE email = 'jane@example.com' OR id = 'u-12'"),
            "SELECT * FROM profiles WHERE email = '[erased]' OR id = 'u-12'"
        );
        let members = r#"[["p-0001","entered",1,2,null],["p-2","exited",1,2,"p-0001"],["p-3","entered",1,2,null]]"#;
        assert_eq!(
            m.without_members(members),
            r#"[["p-3","entered",1,2,null]]"#
        );
        assert_eq!(
            m.only_members(members),
            r#"[["p-0001","entered",1,2,null],["p-2","exited",1,2,"p-0001"]]"#
        );
    }
}
