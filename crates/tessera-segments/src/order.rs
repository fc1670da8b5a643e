//! The order segments are refreshed in: dependencies first (`in_segment`, `segment`),
//! ties by name, and the cycles that make an order impossible.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::FileError;
use crate::file::Segment;

/// Checks that every reference names a segment of `segments` and that references have
/// no cycle; returns the names in refresh order (each after the segments it reads).
pub fn order(segments: &[Segment]) -> Result<Vec<String>, Vec<FileError>> {
    let by_name: BTreeMap<&str, &Segment> = segments.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut errors = Vec::new();
    for s in segments {
        for r in &s.references {
            if !by_name.contains_key(r.segment.as_str()) {
                let known: Vec<&str> = by_name.keys().copied().collect();
                errors.push(
                    FileError::new(
                        &s.file,
                        r.line,
                        r.column,
                        format!("unknown segment {:?}", r.segment),
                    )
                    .help(if known.is_empty() {
                        "there are no other segments: add sql/segments/NAME.sql".to_owned()
                    } else {
                        format!("known segments: {}", known.join(", "))
                    }),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // Depth-first topological sort; a back edge is a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = by_name.keys().map(|n| (*n, Mark::New)).collect();
    let mut out = Vec::new();
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();

    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a Segment>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        out: &mut Vec<String>,
        errors: &mut Vec<FileError>,
        reported: &mut BTreeSet<Vec<String>>,
    ) {
        marks.insert(name, Mark::Active);
        path.push(name);
        let Some(segment) = by_name.get(name) else {
            return;
        };
        let mut deps: Vec<&crate::file::Reference> = segment.references.iter().collect();
        deps.sort_by(|a, b| a.segment.cmp(&b.segment));
        for r in deps {
            let Some((dep, _)) = by_name.get_key_value(r.segment.as_str()) else {
                continue;
            };
            match marks.get(dep).copied().unwrap_or(Mark::New) {
                Mark::Done => {}
                Mark::New => visit(dep, by_name, marks, path, out, errors, reported),
                Mark::Active => {
                    let start = path.iter().position(|p| p == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|s| (*s).to_owned()).collect();
                    // Report each cycle once, whichever segment it was found from.
                    let mut key = cycle.clone();
                    key.sort();
                    if reported.insert(key) {
                        cycle.push((*dep).to_owned());
                        errors.push(
                            FileError::new(
                                &segment.file,
                                r.line,
                                r.column,
                                format!("segments reference each other in a cycle: {}", cycle.join(" → ")),
                            )
                            .help("a segment cannot depend on itself, directly or through others; remove one reference"),
                        );
                    }
                }
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        out.push(name.to_owned());
    }

    let names: Vec<&str> = by_name.keys().copied().collect();
    for name in names {
        if marks.get(name) == Some(&Mark::New) {
            let mut path = Vec::new();
            visit(
                name,
                &by_name,
                &mut marks,
                &mut path,
                &mut out,
                &mut errors,
                &mut reported,
            );
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::parse;

    fn seg(name: &str, sql: &str) -> Segment {
        parse(name, &format!("{name}.sql"), sql).expect("parses")
    }

    #[test]
    fn dependencies_first() {
        let segments = vec![
            seg(
                "a",
                "SELECT profile_id FROM profiles WHERE in_segment(profile_id, 'c')",
            ),
            seg("b", "SELECT profile_id FROM profiles"),
            seg("c", "SELECT profile_id FROM segment('b')"),
        ];
        assert_eq!(order(&segments).expect("orders"), ["b", "c", "a"]);
    }

    #[test]
    fn cycle_named() {
        let segments = vec![
            seg("a", "SELECT profile_id FROM segment('b')"),
            seg("b", "SELECT profile_id FROM segment('c')"),
            seg(
                "c",
                "SELECT profile_id FROM profiles WHERE in_segment(profile_id, 'a')",
            ),
            seg("self_ref", "SELECT profile_id FROM segment('self_ref')"),
        ];
        let errors: Vec<String> = order(&segments)
            .expect_err("cycle")
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0]
                .starts_with("c.sql:1:62: segments reference each other in a cycle: a → b → c → a"),
            "{errors:?}"
        );
        assert!(errors[1].contains("self_ref → self_ref"), "{errors:?}");
    }

    #[test]
    fn unknown_segment() {
        let segments = vec![seg("a", "SELECT profile_id FROM segment('nope')")];
        let e = order(&segments).expect_err("unknown");
        assert_eq!(
            e[0].to_string(),
            "a.sql:1:32: unknown segment \"nope\"\n  help: known segments: a"
        );
    }
}
