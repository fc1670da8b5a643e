//! One segment file: `sql/segments/<name>.sql`, a comment header and one `SELECT`
//! returning `profile_id`.
//!
//! ```sql
//! -- name: high_value
//! -- description: Customers who spent 500 or more
//! -- refresh: 15m
//! -- owner: growth-team
//! SELECT profile_id FROM profiles WHERE total_revenue >= 500
//! ```
//!
//! Parsing here is syntactic (header, SQL syntax, one read-only query, the segments it
//! references); [`crate::validate`] checks it against the lake's tables and functions.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query, SetExpr, Spanned,
    Statement, TableFactor, Value, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Location;

use crate::error::FileError;

/// Folder of the segment files inside a project.
pub const SEGMENTS_DIR: &str = "sql/segments";

/// Refresh interval of a segment whose header says nothing.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// Header keys a segment file may set.
const HEADER_KEYS: &[&str] = &["name", "description", "refresh", "owner"];

/// Functions whose value depends on when the query runs.
const CLOCK_FUNCTIONS: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "localtime",
    "as_of",
    "days_since",
    "within_days",
];

/// A parsed segment file.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The segment's name (the file name without `.sql`).
    pub name: String,
    /// The file as shown in messages (`sql/segments/high_value.sql`).
    pub file: String,
    /// The whole file.
    pub text: String,
    /// `-- description:`
    pub description: Option<String>,
    /// `-- refresh:` (`15m`, `1h`, `1d`, `manual`); `None` is manual.
    pub refresh: Option<Duration>,
    /// `-- owner:`
    pub owner: Option<String>,
    /// The query.
    pub query: Box<Query>,
    /// Segments it references through `in_segment(.., 'x')` or `segment('x')`, with where.
    pub references: Vec<Reference>,
    /// Tables and views it reads (lower-cased, CTE names excluded).
    pub tables: BTreeSet<String>,
    /// Whether it reads the clock (`now()`, `as_of()`, `days_since()`, ...).
    pub reads_clock: bool,
    /// Where each table and each function is first named, to locate planning errors.
    pub(crate) table_at: BTreeMap<String, Location>,
    pub(crate) function_at: BTreeMap<String, Location>,
}

/// A reference to another segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub segment: String,
    pub line: u64,
    pub column: u64,
}

/// Whether `name` can name a segment: lower-case letters, digits and `_`, starting with
/// a letter.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parses a refresh interval: `30s`, `15m`, `2h`, `1d`, or `manual`.
pub fn parse_interval(text: &str) -> Option<Option<Duration>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("manual") {
        return Some(None);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "s" | "sec" | "second" | "seconds" => n,
        "m" | "min" | "minute" | "minutes" => n * 60,
        "h" | "hour" | "hours" => n * 3600,
        "d" | "day" | "days" => n * 86_400,
        _ => return None,
    };
    (seconds > 0).then_some(Some(Duration::from_secs(seconds)))
}

/// Formats an interval the way headers write it.
pub fn format_interval(d: Option<Duration>) -> String {
    match d {
        None => "manual".into(),
        Some(d) => {
            let s = d.as_secs();
            if s % 86_400 == 0 {
                format!("{}d", s / 86_400)
            } else if s % 3600 == 0 {
                format!("{}h", s / 3600)
            } else if s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{s}s")
            }
        }
    }
}

/// Parses segment `name` from `text` (its file shown as `file`). Returns every problem
/// found, located.
pub fn parse(name: &str, file: &str, text: &str) -> Result<Segment, Vec<FileError>> {
    let mut errors = Vec::new();
    if !valid_name(name) {
        errors.push(
            FileError::new(file, 0, 0, format!("{name:?} is not a valid segment name"))
                .help("name the file with lower-case letters, digits and _ (high_value.sql)"),
        );
    }
    let header = parse_header(name, file, text, &mut errors);

    let statements = match Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_statements())
    {
        Ok(s) => s,
        Err(e) => {
            let (mut line, mut column, message) = locate_parser_error(&e.to_string());
            if line == 0 && message.contains("found: EOF") {
                (line, column) = end_of(text);
            }
            errors.push(
                FileError::new(file, line, column, format!("syntax error: {message}"))
                    .help("a segment is one SELECT returning profile_id"),
            );
            return Err(errors);
        }
    };
    let query = match statements.as_slice() {
        [] => {
            errors.push(
                FileError::new(file, 0, 0, "no query")
                    .help("write one SELECT returning profile_id"),
            );
            return Err(errors);
        }
        [one] => match read_only_query(file, one, first_code(text)) {
            Ok(q) => Some(q),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        [_, second, ..] => {
            let at = second.span().start;
            errors.push(
                FileError::new(
                    file,
                    at.line,
                    at.column,
                    format!(
                        "{} statements: a segment is exactly one query",
                        statements.len()
                    ),
                )
                .help("remove the extra statement (or split it into another segment file)"),
            );
            None
        }
    };
    let Some(query) = query else {
        return Err(errors);
    };

    let mut walk = Walk::default();
    let _ = query.visit(&mut walk);
    errors.extend(
        walk.errors.into_iter().map(|(at, message, help)| {
            FileError::new(file, at.line, at.column, message).help(help)
        }),
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    let table_at: BTreeMap<String, Location> = walk
        .tables
        .into_iter()
        .filter(|(t, _)| !walk.ctes.contains(t))
        .collect();
    let tables = table_at.keys().cloned().collect();
    Ok(Segment {
        name: name.to_owned(),
        file: file.to_owned(),
        text: text.to_owned(),
        description: header.description,
        refresh: header.refresh,
        owner: header.owner,
        query,
        references: walk.references,
        tables,
        reads_clock: walk.reads_clock,
        table_at,
        function_at: walk.functions,
    })
}

#[derive(Debug, Default)]
struct Header {
    description: Option<String>,
    refresh: Option<Duration>,
    owner: Option<String>,
}

/// Reads the leading `-- key: value` comment lines.
fn parse_header(name: &str, file: &str, text: &str, errors: &mut Vec<FileError>) -> Header {
    let mut header = Header {
        refresh: Some(DEFAULT_REFRESH),
        ..Header::default()
    };
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some(comment) = trimmed.strip_prefix("--") else {
            break;
        };
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        let key = key.trim();
        // Only `-- word:` lines are header keys; other comments are prose.
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let value = value.trim();
        let column = (line.find(key).unwrap_or(0) + 1) as u64;
        match key {
            "name" if value != name => errors.push(
                FileError::new(
                    file,
                    line_no,
                    column,
                    format!("the header names this segment {value:?} but the file is {name}.sql"),
                )
                .help(format!(
                    "rename the file to {value}.sql or write `-- name: {name}`"
                )),
            ),
            "name" => {}
            "description" => header.description = Some(value.to_owned()),
            "owner" => header.owner = Some(value.to_owned()),
            "refresh" => match parse_interval(value) {
                Some(r) => header.refresh = r,
                None => errors.push(
                    FileError::new(
                        file,
                        line_no,
                        column,
                        format!("refresh interval {value:?} is not understood"),
                    )
                    .help("write a number and a unit (30s, 15m, 1h, 1d) or `manual`"),
                ),
            },
            other => errors.push(
                FileError::new(
                    file,
                    line_no,
                    column,
                    format!("unknown header key {other:?}"),
                )
                .help(format!("header keys are {}", HEADER_KEYS.join(", "))),
            ),
        }
    }
    header
}

/// Splits sqlparser's "... at Line: 3, Column: 7" into its location and message.
fn locate_parser_error(message: &str) -> (u64, u64, String) {
    let message = message
        .trim_start_matches("sql parser error: ")
        .trim_start_matches("SQL parser error: ");
    if let Some(at) = message.rfind(" at Line: ") {
        let location = &message[at + " at Line: ".len()..];
        let mut parts = location.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let column = parts.next().and_then(|c| {
            c.trim()
                .trim_end_matches(|ch: char| !ch.is_ascii_digit())
                .parse()
                .ok()
        });
        if let (Some(line), Some(column)) = (line, column) {
            return (line, column, message[..at].to_owned());
        }
    }
    (0, 0, message.to_owned())
}

/// Where the first token that is not a comment is (the start of the only statement).
fn first_code(text: &str) -> Location {
    let mut in_block = false;
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        loop {
            if in_block {
                match rest.find("*/") {
                    Some(end) => {
                        in_block = false;
                        offset += end + 2;
                        rest = &line[offset..];
                    }
                    None => break,
                }
            }
            let trimmed = rest.trim_start();
            offset += rest.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with("--") {
                break;
            }
            if trimmed.starts_with("/*") {
                in_block = true;
                offset += 2;
                rest = &line[offset..];
                continue;
            }
            let column = line[..offset].chars().count() as u64 + 1;
            return Location::new(i as u64 + 1, column);
        }
    }
    Location::new(1, 1)
}

/// The position just after the last character of `text` (where "found: EOF" is).
fn end_of(text: &str) -> (u64, u64) {
    let trimmed = text.trim_end();
    let line = trimmed.lines().count().max(1) as u64;
    let column = trimmed.lines().last().map_or(0, |l| l.chars().count()) as u64 + 1;
    (line, column)
}

/// The statement as a read-only query, or why it is not one.
fn read_only_query(
    file: &str,
    statement: &Statement,
    at: Location,
) -> Result<Box<Query>, FileError> {
    let refuse = |what: &str| {
        FileError::new(
            file,
            at.line,
            at.column,
            format!("{what} is not allowed: a segment is one read-only SELECT"),
        )
        .help("segments only read; write SELECT ... returning profile_id")
    };
    match statement {
        Statement::Query(q) => {
            if let SetExpr::Select(s) = q.body.as_ref()
                && s.into.is_some()
            {
                return Err(refuse("SELECT ... INTO"));
            }
            Ok(q.clone())
        }
        Statement::Insert(_) => Err(refuse("INSERT")),
        Statement::Update { .. } => Err(refuse("UPDATE")),
        Statement::Delete(_) => Err(refuse("DELETE")),
        Statement::Merge { .. } => Err(refuse("MERGE")),
        Statement::Truncate { .. } => Err(refuse("TRUNCATE")),
        Statement::Drop { .. } => Err(refuse("DROP")),
        Statement::CreateTable(_)
        | Statement::CreateView { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::AlterTable { .. } => Err(refuse("DDL (CREATE/ALTER)")),
        Statement::Copy { .. } => Err(refuse("COPY")),
        Statement::Explain { .. } | Statement::ExplainTable { .. } => Err(refuse("EXPLAIN")),
        Statement::Set(_) => Err(refuse("SET")),
        other => {
            let text = other.to_string();
            let keyword = text.split_whitespace().next().unwrap_or("this statement");
            Err(refuse(&keyword.to_ascii_uppercase()))
        }
    }
}

/// Collects tables, CTE names, segment references and clock use; flags misuse of the
/// segment functions.
#[derive(Default)]
struct Walk {
    tables: BTreeMap<String, Location>,
    functions: BTreeMap<String, Location>,
    ctes: BTreeSet<String>,
    references: Vec<Reference>,
    reads_clock: bool,
    errors: Vec<(Location, String, String)>,
}

impl Walk {
    fn reference(&mut self, function: &str, at: Location, args: &[&Expr]) {
        let name_arg = if function == "segment" {
            args.first()
        } else {
            args.get(1)
        };
        let expected = if function == "segment" { 1 } else { 2 };
        match name_arg {
            Some(Expr::Value(v)) if args.len() == expected => match &v.value {
                Value::SingleQuotedString(s) => {
                    let start = v.span.start;
                    self.references.push(Reference {
                        segment: s.clone(),
                        line: start.line,
                        column: start.column,
                    });
                }
                _ => self.misuse(function, at),
            },
            _ => self.misuse(function, at),
        }
    }

    fn misuse(&mut self, function: &str, at: Location) {
        let example = if function == "segment" {
            "segment('high_value')"
        } else {
            "in_segment(profile_id, 'high_value')"
        };
        self.errors.push((
            at,
            format!("{function} takes a segment name in single quotes"),
            format!("write {example}"),
        ));
    }
}

fn last_ident(name: &ObjectName) -> String {
    name.0
        .last()
        .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
        .unwrap_or_default()
}

fn positional_args(args: &FunctionArguments) -> Vec<&Expr> {
    match args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Visitor for Walk {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args, .. } = factor {
            let table = last_ident(name);
            match args {
                Some(args) if table == "segment" => {
                    let exprs: Vec<&Expr> = args
                        .args
                        .iter()
                        .filter_map(|a| match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                            _ => None,
                        })
                        .collect();
                    self.reference("segment", name.span().start, &exprs);
                }
                Some(_) => {}
                None => {
                    self.tables.entry(table).or_insert(name.span().start);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            let name = last_ident(&f.name);
            self.functions
                .entry(name.clone())
                .or_insert(f.name.span().start);
            if CLOCK_FUNCTIONS.contains(&name.as_str()) {
                self.reads_clock = true;
            }
            if name == "in_segment" {
                let args = positional_args(&f.args);
                self.reference("in_segment", f.name.span().start, &args);
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse("seg", "seg.sql", text)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn header_and_references() {
        let s = parse(
            "vip",
            "vip.sql",
            "-- name: vip\n-- description: Big spenders\n-- refresh: 15m\n-- owner: growth\n\
             -- Prose: ignored.\nWITH x AS (SELECT profile_id FROM profiles)\n\
             SELECT profile_id FROM x WHERE in_segment(profile_id, 'high_value')\n\
             AND profile_id IN (SELECT profile_id FROM segment('active'))\n\
             AND days_since(last_seen) < 30",
        )
        .expect("parses");
        assert_eq!(s.description.as_deref(), Some("Big spenders"));
        assert_eq!(s.refresh, Some(Duration::from_secs(900)));
        assert_eq!(s.owner.as_deref(), Some("growth"));
        let refs: Vec<_> = s.references.iter().map(|r| r.segment.as_str()).collect();
        assert_eq!(refs, ["high_value", "active"]);
        assert_eq!((s.references[0].line, s.references[0].column), (7, 55));
        assert_eq!(s.tables.iter().collect::<Vec<_>>(), ["profiles"]);
        assert!(s.reads_clock);
    }

    #[test]
    fn located_errors() {
        assert_eq!(
            errors("-- refresh: often\nSELECT profile_id FROM profiles"),
            [
                "seg.sql:1:4: refresh interval \"often\" is not understood\n  help: write a number and a unit (30s, 15m, 1h, 1d) or `manual`"
            ]
        );
        assert!(
            errors("-- refesh: 1h\nSELECT 1")[0]
                .starts_with("seg.sql:1:4: unknown header key \"refesh\"")
        );
        assert!(
            errors("SELECT profile_id\nFROM profiles WHERE")[0]
                .starts_with("seg.sql:2:20: syntax error"),
            "{:?}",
            errors("SELECT profile_id\nFROM profiles WHERE")
        );
        assert!(
            errors("-- x\nDELETE FROM profiles")[0]
                .starts_with("seg.sql:2:1: DELETE is not allowed")
        );
        assert!(errors("SELECT 1;\nSELECT 2")[0].starts_with("seg.sql:2:1: 2 statements"));
        assert!(
            errors("SELECT profile_id FROM profiles WHERE in_segment(profile_id, name)")[0]
                .starts_with("seg.sql:1:39: in_segment takes a segment name")
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("15m"), Some(Some(Duration::from_secs(900))));
        assert_eq!(parse_interval("manual"), Some(None));
        assert_eq!(parse_interval("0m"), None);
        assert_eq!(parse_interval("5 weeks"), None);
        assert_eq!(format_interval(Some(Duration::from_secs(86_400))), "1d");
    }
}
