//! Identity rules: the SQL files of `sql/identity/` plus one generated rule per
//! identifier type whose `fields` are configured.
//!
//! A rule is one `SELECT` over the lake returning, per event, two identifiers seen
//! together — `a_type`, `a_value`, `b_type`, `b_value` — with `seen_at` (a timestamp)
//! and optionally `source`. A row with only one identifier declares it (so that a
//! visitor who never logs in still gets a profile). Values are normalized per type
//! before linking: e-mails trimmed and lower-cased, phones in E.164, others trimmed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tessera_core::config::IdentifierTypeSection;

use crate::error::{IdentityError, Result};

/// Folder of the identity rules inside a project.
pub const RULES_DIR: &str = "sql/identity";

/// One identity rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// How it is named in `identity_edges.rule` and in errors: the file name, or
    /// `config:TYPE` for a generated rule.
    pub name: String,
    /// The query.
    pub sql: String,
}

/// The rules of a project: every `*.sql` of `dir` in name order, then the generated
/// rules of configured `fields`.
pub fn load_rules(
    dir: &Path,
    types: &BTreeMap<String, IdentifierTypeSection>,
) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for (name, sql) in read_sql_files(dir, RULES_DIR)? {
        if strip_comments(&sql).contains(';') {
            return Err(IdentityError::BadFile {
                file: name,
                message: "a rule is one SELECT statement; split several into several files".into(),
            });
        }
        rules.push(Rule { name, sql });
    }
    for (name, t) in types {
        if let Some(sql) = field_rule_sql(name, &t.fields) {
            rules.push(Rule {
                name: format!("config:{name}"),
                sql,
            });
        }
    }
    if rules.is_empty() {
        return Err(IdentityError::BadFile {
            file: RULES_DIR.into(),
            message: "no identity rule: add SQL files (tessera init writes the defaults)".into(),
        });
    }
    Ok(rules)
}

/// The `*.sql` files of `dir` in name order (none when it does not exist), as
/// `(FOLDER/file name, text without a trailing ';')`; files holding only comments are
/// skipped.
pub(crate) fn read_sql_files(dir: &Path, folder: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for path in sql_files(dir)? {
        let sql = std::fs::read_to_string(&path).map_err(|source| IdentityError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let sql = sql.trim().trim_end_matches(';').trim().to_owned();
        if strip_comments(&sql).trim().is_empty() {
            continue;
        }
        let file = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        out.push((format!("{folder}/{file}"), sql));
    }
    Ok(out)
}

fn sql_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(IdentityError::ReadFile {
                path: dir.to_owned(),
                source,
            });
        }
    };
    files.sort();
    Ok(files)
}

/// SQL text without `--` comments (for the statement count only).
fn strip_comments(sql: &str) -> String {
    sql.lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The expression reading event field `path` (`properties.a.b`, `user_id`) as text.
pub fn field_expr(path: &str) -> String {
    let mut parts = path.split('.');
    let column = parts.next().unwrap_or_default();
    let keys: Vec<String> = parts.map(|k| format!("'{k}'")).collect();
    if keys.is_empty() {
        column.to_owned()
    } else {
        format!("json_as_text({column}, {})", keys.join(", "))
    }
}

/// The generated rule linking identifier type `name`, read from `fields`, to each
/// event's user (or device when there is no user).
fn field_rule_sql(name: &str, fields: &[String]) -> Option<String> {
    if fields.is_empty() {
        return None;
    }
    let value = if fields.len() == 1 {
        field_expr(&fields[0])
    } else {
        format!(
            "coalesce({})",
            fields
                .iter()
                .map(|f| field_expr(f))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Some(format!(
        "SELECT '{name}' AS a_type, a_value, \
           CASE WHEN user_id IS NOT NULL THEN 'user_id' ELSE 'anonymous_id' END AS b_type, \
           coalesce(user_id, anonymous_id) AS b_value, seen_at, source \
         FROM (SELECT {value} AS a_value, user_id, anonymous_id, timestamp AS seen_at, source FROM events) \
         WHERE a_value IS NOT NULL"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_expressions() {
        assert_eq!(field_expr("group_id"), "group_id");
        assert_eq!(
            field_expr("context.device.id"),
            "json_as_text(context, 'device', 'id')"
        );
        let t = IdentifierTypeSection {
            limit: 1,
            priority: 4,
            fields: vec!["properties.loyalty_id".into(), "traits.loyalty_id".into()],
        };
        let sql = field_rule_sql("loyalty_id", &t.fields).unwrap();
        assert!(sql.contains(
            "coalesce(json_as_text(properties, 'loyalty_id'), json_as_text(traits, 'loyalty_id'))"
        ));
    }

    #[test]
    fn files_in_name_order_and_one_statement_each() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20_b.sql"), "-- b\nSELECT 2;\n").unwrap();
        std::fs::write(dir.path().join("10_a.sql"), "SELECT 1").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a rule").unwrap();
        let rules = load_rules(dir.path(), &BTreeMap::new()).unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["sql/identity/10_a.sql", "sql/identity/20_b.sql"]);
        assert_eq!(rules[1].sql, "-- b\nSELECT 2");
        std::fs::write(dir.path().join("30_c.sql"), "SELECT 1; SELECT 2").unwrap();
        let e = load_rules(dir.path(), &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("30_c.sql"), "{e}");
    }
}
