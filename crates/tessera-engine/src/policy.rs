//! What SQL may run: the one query policy of every SQL entry point.
//!
//! API callers (Flight SQL statements and prepared statements, the console) and the
//! project's own SQL files (segments, traits, identity rules, predictive features) are
//! planned through [`plan`] with [`Policy::ReadOnly`]: one statement, and only a query
//! (`SELECT`, `WITH`, `VALUES`), `EXPLAIN` of one, `SHOW` or `DESCRIBE`. Everything else
//! — DDL (`CREATE [EXTERNAL] TABLE`, `CREATE VIEW`, `DROP`), DML (`INSERT`, `UPDATE`,
//! `DELETE`, `COPY ... TO`), session statements (`SET`, `RESET`, `PREPARE`, `BEGIN`) and
//! multi-statement text — is refused with [`EngineError::Refused`] naming the
//! statement kind, before anything is planned. The check is made on the parsed
//! statement and again on the logical plan (DataFusion's [`SQLOptions`]), never on the
//! text.
//!
//! `tessera sql --allow-write` on the project owner's machine plans with
//! [`Policy::AllowWrite`] (one statement still), so that `COPY (...) TO 'file'` stays
//! available there.
//!
//! Standard positional placeholders: `?` (DB-API's `qmark`, JDBC) is numbered `$1, $2,
//! ...` in order before parsing, with the session's own SQL tokenizer, so a `?` inside
//! a string literal, a quoted identifier or a comment is left alone. (Under
//! `datafusion.sql_parser.dialect = 'postgresql'`, `?` is PostgreSQL's JSON operator
//! and stays one; use `$n` there.)

use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::{Dialect, dialect_from_str};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::{EngineError, Result};

/// Which statements a caller may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Queries only: every API caller and every SQL file of the project.
    ReadOnly,
    /// Also DDL, DML and `COPY ... TO` (`tessera sql --allow-write`, on the owner's
    /// machine).
    AllowWrite,
}

impl Policy {
    fn options(self) -> SQLOptions {
        match self {
            Policy::ReadOnly => SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false),
            Policy::AllowWrite => SQLOptions::new().with_allow_statements(false),
        }
    }
}

/// The parser dialect of `state` (`datafusion.sql_parser.dialect`).
fn dialect(state: &SessionState) -> Result<Box<dyn Dialect>> {
    let name = state.config().options().sql_parser.dialect;
    dialect_from_str(name)
        .ok_or_else(|| EngineError::Sql(format!("unsupported SQL dialect {name}")))
}

/// Byte offset of a tokenizer location (1-based line and column in characters).
fn offset(sql: &str, at: Location) -> usize {
    let mut line = 1u64;
    let mut column = 1u64;
    for (i, c) in sql.char_indices() {
        if line == at.line && column == at.column {
            return i;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    sql.len()
}

/// `sql` with every `?` placeholder numbered `$1, $2, ...` in order of appearance, and
/// how many there were. `?` inside literals, quoted identifiers and comments is not a
/// placeholder and stays; text without `?` is returned as it is. Mixing `?` with `$n`
/// is refused (which `$n` would the third `?` be?).
pub fn number_placeholders(sql: &str, dialect: &dyn Dialect) -> Result<(String, usize)> {
    if !sql.contains('?') {
        return Ok((sql.to_owned(), 0));
    }
    let tokens = Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(|e| EngineError::Sql(e.to_string()))?;
    let mut question = Vec::new();
    let mut numbered = false;
    for t in &tokens {
        if let Token::Placeholder(p) = &t.token {
            if p == "?" {
                question.push(offset(sql, t.span.start));
            } else if p.starts_with('$') {
                numbered = true;
            }
        }
    }
    if question.is_empty() {
        return Ok((sql.to_owned(), 0));
    }
    if numbered {
        return Err(EngineError::Sql(
            "the statement mixes ? and $n placeholders: use one style".into(),
        ));
    }
    let mut out = String::with_capacity(sql.len() + question.len() * 2);
    let mut from = 0;
    for (n, at) in question.iter().enumerate() {
        out.push_str(&sql[from..*at]);
        out.push('$');
        out.push_str(&(n + 1).to_string());
        from = at + 1;
    }
    out.push_str(&sql[from..]);
    Ok((out, question.len()))
}

/// The kind of a statement as users write it (`COPY TO`, `CREATE VIEW`, `SET`).
pub fn statement_kind(statement: &DFStatement) -> String {
    match statement {
        DFStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".into(),
        DFStatement::CopyTo(_) => "COPY TO".into(),
        DFStatement::Reset(_) => "RESET".into(),
        DFStatement::Explain(e) => format!("EXPLAIN {}", statement_kind(&e.statement)),
        DFStatement::Statement(s) => sql_statement_kind(s),
    }
}

fn sql_statement_kind(statement: &Statement) -> String {
    let named = match statement {
        Statement::Query(_) => "SELECT",
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge(_) => "MERGE",
        Statement::Truncate(_) => "TRUNCATE",
        Statement::Copy { .. } => "COPY",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateSchema { .. } => "CREATE SCHEMA",
        Statement::CreateDatabase { .. } => "CREATE DATABASE",
        Statement::CreateFunction(_) => "CREATE FUNCTION",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::AlterTable(_) => "ALTER TABLE",
        Statement::Drop { .. } => "DROP",
        Statement::DropFunction(_) => "DROP FUNCTION",
        Statement::Set(_) => "SET",
        Statement::Prepare { .. } => "PREPARE",
        Statement::Execute { .. } => "EXECUTE",
        Statement::Deallocate { .. } => "DEALLOCATE",
        Statement::StartTransaction { .. } => "BEGIN",
        Statement::Commit { .. } => "COMMIT",
        Statement::Rollback { .. } => "ROLLBACK",
        Statement::Explain { statement, .. } => {
            return format!("EXPLAIN {}", sql_statement_kind(statement));
        }
        Statement::ExplainTable { .. } => "DESCRIBE",
        Statement::ShowTables { .. } => "SHOW TABLES",
        Statement::ShowColumns { .. } => "SHOW COLUMNS",
        Statement::ShowVariable { .. } => "SHOW",
        Statement::ShowFunctions { .. } => "SHOW FUNCTIONS",
        other => {
            // The statement's own leading keywords, e.g. `GRANT`, `VACUUM`.
            let text = other.to_string();
            let words: Vec<&str> = text
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .take(2)
                .collect();
            return if words.is_empty() {
                "this statement".into()
            } else {
                words.join(" ")
            };
        }
    };
    named.into()
}

/// Whether `statement` only reads: a query, `EXPLAIN` of one, `SHOW`, `DESCRIBE`.
pub fn is_read_only(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::Statement(s) => sql_read_only(s),
        DFStatement::Explain(e) => is_read_only(&e.statement),
        DFStatement::CreateExternalTable(_) | DFStatement::CopyTo(_) | DFStatement::Reset(_) => {
            false
        }
    }
}

fn sql_read_only(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowFunctions { .. } => true,
        Statement::Explain { statement, .. } => sql_read_only(statement),
        _ => false,
    }
}

/// `SET`, `RESET`, `PREPARE`, `EXECUTE`, `DEALLOCATE` and transaction control.
fn is_session_statement(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::Reset(_) => true,
        DFStatement::Statement(s) => matches!(
            **s,
            Statement::Set(_)
                | Statement::Prepare { .. }
                | Statement::Execute { .. }
                | Statement::Deallocate { .. }
                | Statement::StartTransaction { .. }
                | Statement::Commit { .. }
                | Statement::Rollback { .. }
        ),
        DFStatement::Explain(e) => is_session_statement(&e.statement),
        DFStatement::CreateExternalTable(_) | DFStatement::CopyTo(_) => false,
    }
}

/// Parses `sql` (after numbering `?` placeholders) into its one statement, refusing
/// what `policy` does not allow.
pub fn parse(state: &SessionState, sql: &str, policy: Policy) -> Result<DFStatement> {
    let dialect = dialect(state)?;
    let (sql, _) = number_placeholders(sql, dialect.as_ref())?;
    let recursion_limit = state.config().options().sql_parser.recursion_limit.get();
    let mut statements = DFParserBuilder::new(sql.as_str())
        .with_dialect(dialect.as_ref())
        .with_recursion_limit(recursion_limit)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| EngineError::Sql(e.strip_backtrace()))?;
    let statement = match statements.len() {
        0 => return Err(EngineError::Sql("the statement is empty".into())),
        1 => statements
            .pop_front()
            .ok_or(EngineError::Statements { count: 0 })?,
        count => return Err(EngineError::Statements { count }),
    };
    let allowed = match policy {
        Policy::ReadOnly => is_read_only(&statement),
        // Session statements (SET, PREPARE, BEGIN, ...) have no lasting effect in a
        // session built per statement; they are refused everywhere.
        // Session statements (SET, PREPARE, BEGIN, ...) have no lasting effect in a
        // session built per statement; they are refused everywhere.
        Policy::AllowWrite => !is_session_statement(&statement),
    };
    if !allowed {
        return Err(EngineError::Refused {
            statement: statement_kind(&statement),
        });
    }
    Ok(statement)
}

/// Plans `sql` on `ctx` under `policy`: parsed and checked ([`parse`]), planned, and
/// the logical plan verified again with DataFusion's [`SQLOptions`].
pub async fn plan(ctx: &SessionContext, sql: &str, policy: Policy) -> Result<DataFrame> {
    let state = ctx.state();
    let statement = parse(&state, sql, policy)?;
    let kind = statement_kind(&statement);
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(EngineError::sql)?;
    verify(&plan, policy, &kind)?;
    ctx.execute_logical_plan(plan)
        .await
        .map_err(EngineError::sql)
}

/// Plans a query of the project's own SQL files (traits, identity rules, predictive
/// features, import mappings, matching records) under [`Policy::ReadOnly`], with
/// DataFusion's error type: a file holding anything but a query fails to plan with
/// the statement kind named.
pub async fn read_only(ctx: &SessionContext, sql: &str) -> datafusion::common::Result<DataFrame> {
    plan(ctx, sql, Policy::ReadOnly).await.map_err(|e| match e {
        EngineError::DataFusion(inner) => inner,
        other => datafusion::error::DataFusionError::Plan(other.to_string()),
    })
}

/// Checks a logical plan (also one built by a table function from its query text)
/// against `policy`.
pub fn verify(plan: &LogicalPlan, policy: Policy, kind: &str) -> Result<()> {
    policy
        .options()
        .verify_plan(plan)
        .map_err(|_| EngineError::Refused {
            statement: kind.to_owned(),
        })
}

#[cfg(test)]
mod tests;
