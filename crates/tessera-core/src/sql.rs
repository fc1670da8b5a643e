//! Values written into SQL text, for the few places that generate queries from
//! configuration (partition predicates, matching specs, identifier types): one way to
//! quote, so that no value can end its literal early. Values that come from callers are
//! bound as parameters instead (`lit(..)`, `$1`), never written into text.

/// `s` as an SQL string literal: `it's` → `'it''s'`.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `name` as a quoted SQL identifier: `first name` → `"first name"`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_cannot_be_escaped() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("'; DROP TABLE x; --"), "'''; DROP TABLE x; --'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
