//! String comparisons for record matching, on Unicode scalar values (not bytes):
//! Levenshtein and (unrestricted) Damerau–Levenshtein distances, Jaro and
//! Jaro–Winkler similarities, Jaccard similarity of token sets, and the American
//! Soundex code; days between two dates written in the usual ways. The engine exposes
//! them as SQL functions.

use std::collections::{BTreeSet, HashMap};

/// A calendar date from `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYYMMDD` or a timestamp starting
/// with `YYYY-MM-DD`; `None` for anything else (including impossible dates such as
/// `19991341`, common in typed-in records).
pub fn parse_date(text: &str) -> Option<chrono::NaiveDate> {
    let t = text.trim();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let (y, m, d) = if t.len() == 8 && digits(t) {
        (&t[..4], &t[4..6], &t[6..8])
    } else if t.len() >= 10 && t.is_char_boundary(10) {
        let head = &t[..10];
        let sep = head.as_bytes()[4];
        if !(sep == b'-' || sep == b'/') || head.as_bytes()[7] != sep {
            return None;
        }
        if t.len() > 10 && !matches!(t.as_bytes()[10], b'T' | b' ') {
            return None;
        }
        (&head[..4], &head[5..7], &head[8..10])
    } else {
        return None;
    };
    if !(digits(y) && digits(m) && digits(d)) {
        return None;
    }
    chrono::NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// Whole days between two dates (see [`parse_date`]), never negative; `None` when
/// either is not a date.
pub fn days_between(a: &str, b: &str) -> Option<i64> {
    Some((parse_date(a)? - parse_date(b)?).num_days().abs())
}

/// Edits (insert, delete, substitute one character) turning `a` into `b`.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Edits turning `a` into `b` when swapping two adjacent characters also counts as one
/// edit, with no restriction on editing a substring twice (the true Damerau–Levenshtein
/// distance, Lowrance–Wagner algorithm): `"CA"` → `"ABC"` is 2.
pub fn damerau_levenshtein(a: &str, b: &str) -> usize {
    // Matching compares millions of pairs: ASCII text (most names, dates, ids) goes
    // through bytes and a flat table of last rows, without a map or per-row vectors.
    if a.is_ascii() && b.is_ascii() {
        // A common prefix and suffix cost nothing (dates and ids often share them).
        let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
        let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        (a, b) = (&a[prefix..], &b[prefix..]);
        let suffix = a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
        if a.is_empty() || b.is_empty() {
            return a.len().max(b.len());
        }
        lowrance_wagner(a, b, &mut [0u32; 128])
    } else {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        lowrance_wagner(&a, &b, &mut HashMap::new())
    }
}

/// The last row (1-based) of `a` holding each symbol so far.
trait LastRows<T> {
    fn get(&self, c: T) -> usize;
    fn set(&mut self, c: T, row: usize);
}

impl LastRows<u8> for [u32; 128] {
    fn get(&self, c: u8) -> usize {
        self[usize::from(c & 0x7f)] as usize
    }
    fn set(&mut self, c: u8, row: usize) {
        self[usize::from(c & 0x7f)] = row as u32;
    }
}

impl LastRows<char> for HashMap<char, usize> {
    fn get(&self, c: char) -> usize {
        *HashMap::get(self, &c).unwrap_or(&0)
    }
    fn set(&mut self, c: char, row: usize) {
        self.insert(c, row);
    }
}

/// Lowrance–Wagner over any symbols.
fn lowrance_wagner<T: Copy + Eq>(a: &[T], b: &[T], last: &mut impl LastRows<T>) -> usize {
    thread_local! {
        /// The distance table, reused: every cell is written before it is read.
        static TABLE: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TABLE.with(|table| {
        let mut table = table.borrow_mut();
        lowrance_wagner_in(a, b, last, &mut table)
    })
}

fn lowrance_wagner_in<T: Copy + Eq>(
    a: &[T],
    b: &[T],
    last: &mut impl LastRows<T>,
    d: &mut Vec<usize>,
) -> usize {
    let (n, m) = (a.len(), b.len());
    let infinity = n + m;
    let width = m + 2;
    // d[(i+1) * width + j+1] is the distance of a[..i] and b[..j]; row/column 0 hold
    // infinity.
    if d.len() < (n + 2) * width {
        d.resize((n + 2) * width, 0);
    }
    d[0] = infinity;
    for i in 0..=n {
        d[(i + 1) * width] = infinity;
        d[(i + 1) * width + 1] = i;
    }
    for j in 0..=m {
        d[j + 1] = infinity;
        d[width + j + 1] = j;
    }
    for i in 1..=n {
        let mut last_match_col = 0;
        for j in 1..=m {
            let i1 = last.get(b[j - 1]);
            let j1 = last_match_col;
            let cost = if a[i - 1] == b[j - 1] {
                last_match_col = j;
                0
            } else {
                1
            };
            d[(i + 1) * width + j + 1] = (d[i * width + j] + cost)
                .min(d[(i + 1) * width + j] + 1)
                .min(d[i * width + j + 1] + 1)
                .min(d[i1 * width + j1] + (i - i1 - 1) + 1 + (j - j1 - 1));
        }
        last.set(a[i - 1], i);
    }
    d[(n + 1) * width + m + 1]
}

/// Jaro similarity in [0, 1]: 1 for equal strings (two empty strings included), 0 when
/// nothing matches.
pub fn jaro(a: &str, b: &str) -> f64 {
    if a.is_ascii() && b.is_ascii() {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() <= 64 && b.len() <= 64 {
            jaro_bits(a, b)
        } else {
            jaro_of(a, b)
        }
    } else {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        jaro_of(&a, &b)
    }
}

/// [`jaro_of`] for ASCII strings of at most 64 bytes, with the positions of each byte
/// in `b` as a bit mask: each character of `a` finds its match (the first unmatched
/// equal byte of `b` in its window) in a few instructions instead of a scan.
fn jaro_bits(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut positions = [0u64; 128];
    for (j, &c) in b.iter().enumerate() {
        positions[usize::from(c & 0x7f)] |= 1 << j;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let (mut a_matched, mut b_matched) = (0u64, 0u64);
    let mut matches = 0u32;
    for (i, &c) in a.iter().enumerate() {
        let start = i.saturating_sub(window);
        let end = (i + window + 1).min(b.len());
        if start >= end {
            continue;
        }
        let width = end - start;
        let range = if width == 64 {
            u64::MAX
        } else {
            ((1u64 << width) - 1) << start
        };
        let candidates = positions[usize::from(c & 0x7f)] & range & !b_matched;
        if candidates != 0 {
            b_matched |= candidates & candidates.wrapping_neg();
            a_matched |= 1 << i;
            matches += 1;
        }
    }
    if matches == 0 {
        return 0.0;
    }
    // Matched characters of a and of b, in order: count the positions that differ.
    let mut half_transpositions = 0u32;
    let (mut am, mut bm) = (a_matched, b_matched);
    while am != 0 {
        let (i, j) = (am.trailing_zeros() as usize, bm.trailing_zeros() as usize);
        if a[i] != b[j] {
            half_transpositions += 1;
        }
        am &= am - 1;
        bm &= bm - 1;
    }
    let m = f64::from(matches);
    let t = f64::from(half_transpositions / 2);
    (m / a.len() as f64 + m / b.len() as f64 + (m - t) / m) / 3.0
}

fn jaro_of<T: Copy + Eq>(a: &[T], b: &[T]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    // Matched flags on the stack for the usual short strings.
    let (mut a_small, mut b_small) = ([false; 64], [false; 64]);
    let (mut a_large, mut b_large) = (Vec::new(), Vec::new());
    let (a_matched, b_matched): (&mut [bool], &mut [bool]) = if a.len() <= 64 && b.len() <= 64 {
        (&mut a_small[..a.len()], &mut b_small[..b.len()])
    } else {
        a_large.resize(a.len(), false);
        b_large.resize(b.len(), false);
        (&mut a_large, &mut b_large)
    };
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut matches = 0usize;
    for (i, ca) in a.iter().enumerate() {
        let start = i.saturating_sub(window);
        let end = (i + window + 1).min(b.len());
        for j in start..end {
            if !b_matched[j] && b[j] == *ca {
                a_matched[i] = true;
                b_matched[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let a_order = a
        .iter()
        .zip(a_matched.iter())
        .filter(|(_, m)| **m)
        .map(|(c, _)| c);
    let b_order = b
        .iter()
        .zip(b_matched.iter())
        .filter(|(_, m)| **m)
        .map(|(c, _)| c);
    let transpositions = a_order.zip(b_order).filter(|(x, y)| x != y).count() / 2;
    let m = matches as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - transpositions as f64) / m) / 3.0
}

/// Jaro–Winkler similarity: Jaro boosted by the common prefix (up to 4 characters,
/// scale 0.1) when the Jaro similarity is above 0.7.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let j = jaro(a, b);
    if j <= 0.7 {
        return j;
    }
    let prefix = a
        .chars()
        .zip(b.chars())
        .take(4)
        .take_while(|(x, y)| x == y)
        .count() as f64;
    j + prefix * 0.1 * (1.0 - j)
}

/// Jaccard similarity of the sets of whitespace-separated tokens: |A ∩ B| / |A ∪ B|
/// (1 when both have no token).
pub fn jaccard(a: &str, b: &str) -> f64 {
    let a: BTreeSet<&str> = a.split_whitespace().collect();
    let b: BTreeSet<&str> = b.split_whitespace().collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// American Soundex: the first letter and three digits (`Robert` → `R163`); letters
/// only (others ignored), `None` when there is no letter.
pub fn soundex(text: &str) -> Option<String> {
    let code = |c: char| match c {
        'B' | 'F' | 'P' | 'V' => Some('1'),
        'C' | 'G' | 'J' | 'K' | 'Q' | 'S' | 'X' | 'Z' => Some('2'),
        'D' | 'T' => Some('3'),
        'L' => Some('4'),
        'M' | 'N' => Some('5'),
        'R' => Some('6'),
        _ => None,
    };
    let mut letters = text
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_uppercase());
    let first = letters.next()?;
    let mut out = String::with_capacity(4);
    out.push(first);
    let mut last = code(first);
    for c in letters {
        if out.len() == 4 {
            break;
        }
        match code(c) {
            Some(d) => {
                if last != Some(d) {
                    out.push(d);
                }
                last = Some(d);
            }
            // H and W do not separate letters with the same code; vowels do.
            None if c == 'H' || c == 'W' => {}
            None => last = None,
        }
    }
    while out.len() < 4 {
        out.push('0');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// Levenshtein by its recursive definition (memoized).
    fn levenshtein_reference(a: &[char], b: &[char]) -> usize {
        fn go(a: &[char], b: &[char], memo: &mut HashMap<(usize, usize), usize>) -> usize {
            if a.is_empty() {
                return b.len();
            }
            if b.is_empty() {
                return a.len();
            }
            if let Some(&v) = memo.get(&(a.len(), b.len())) {
                return v;
            }
            let cost = usize::from(a[0] != b[0]);
            let v = (go(&a[1..], &b[1..], memo) + cost)
                .min(go(&a[1..], b, memo) + 1)
                .min(go(a, &b[1..], memo) + 1);
            memo.insert((a.len(), b.len()), v);
            v
        }
        go(a, b, &mut HashMap::new())
    }

    /// True Damerau–Levenshtein as the fewest single edits (insert, delete, substitute,
    /// swap adjacent) applied one after another: a breadth-first search over strings.
    fn damerau_reference(a: &str, b: &str) -> usize {
        let alphabet: BTreeSet<char> = a.chars().chain(b.chars()).collect();
        let target: Vec<char> = b.chars().collect();
        let start: Vec<char> = a.chars().collect();
        let limit = start.len().max(target.len()) + 1;
        let mut seen = std::collections::HashSet::new();
        let mut frontier = vec![start];
        for distance in 0.. {
            let mut next = Vec::new();
            for s in frontier {
                if s == target {
                    return distance;
                }
                if !seen.insert(s.clone()) {
                    continue;
                }
                for i in 0..=s.len() {
                    if s.len() < limit {
                        for &c in &alphabet {
                            let mut t = s.clone();
                            t.insert(i, c);
                            next.push(t);
                        }
                    }
                    if i < s.len() {
                        let mut t = s.clone();
                        t.remove(i);
                        next.push(t);
                        for &c in &alphabet {
                            let mut t = s.clone();
                            t[i] = c;
                            next.push(t);
                        }
                    }
                    if i + 1 < s.len() {
                        let mut t = s.clone();
                        t.swap(i, i + 1);
                        next.push(t);
                    }
                }
            }
            frontier = next;
        }
        unreachable!()
    }

    proptest! {
        #[test]
        fn levenshtein_matches_its_definition(a in "[abcé]{0,7}", b in "[abcé]{0,7}") {
            let (ca, cb): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            prop_assert_eq!(levenshtein(&a, &b), levenshtein_reference(&ca, &cb));
        }

        #[test]
        fn damerau_matches_a_search_over_edits(a in "[abc]{0,5}", b in "[abc]{0,5}") {
            prop_assert_eq!(damerau_levenshtein(&a, &b), damerau_reference(&a, &b));
        }

        #[test]
        fn damerau_on_any_characters_matches_the_search(a in "[abé]{0,4}", b in "[abé]{0,4}") {
            prop_assert_eq!(damerau_levenshtein(&a, &b), damerau_reference(&a, &b));
        }

        /// The byte path for ASCII text equals the character path.
        #[test]
        fn ascii_and_character_paths_agree(a in "[a-f ]{0,12}", b in "[a-f ]{0,12}") {
            let (ca, cb): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            prop_assert_eq!(damerau_levenshtein(&a, &b), lowrance_wagner(&ca, &cb, &mut HashMap::new()));
            prop_assert_eq!(jaro(&a, &b), jaro_of(&ca, &cb));
        }

        /// The bit-mask Jaro equals the scanning one up to 64 bytes (the longest mask).
        #[test]
        fn jaro_bit_masks_agree_up_to_64_bytes(a in "[a-d]{0,64}", b in "[a-d]{0,64}") {
            prop_assert_eq!(jaro_bits(a.as_bytes(), b.as_bytes()), jaro_of(a.as_bytes(), b.as_bytes()));
        }

        #[test]
        fn similarities_are_symmetric_and_bounded(a in "[a-e ]{0,10}", b in "[a-e ]{0,10}") {
            for f in [jaro, jaro_winkler, jaccard] {
                let (x, y) = (f(&a, &b), f(&b, &a));
                prop_assert!((x - y).abs() < 1e-12);
                prop_assert!((0.0..=1.0 + 1e-12).contains(&x));
            }
            prop_assert!((jaro(&a, &a) - 1.0).abs() < 1e-12);
            prop_assert!(jaro_winkler(&a, &b) >= jaro(&a, &b));
            prop_assert!(damerau_levenshtein(&a, &b) <= levenshtein(&a, &b));
        }
    }

    #[test]
    fn known_values() {
        let close = |x: f64, y: f64| (x - y).abs() < 5e-4;
        assert!(close(jaro("MARTHA", "MARHTA"), 0.9444));
        assert!(close(jaro_winkler("MARTHA", "MARHTA"), 0.9611));
        assert!(close(jaro_winkler("DWAYNE", "DUANE"), 0.84));
        assert!(close(jaro_winkler("DIXON", "DICKSONX"), 0.8133));
        assert_eq!(jaro("abc", "xyz"), 0.0);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(damerau_levenshtein("CA", "ABC"), 2);
        assert_eq!(damerau_levenshtein("smtih", "smith"), 1);
        assert!(close(jaccard("12 High Street", "12 High St"), 0.5));
        for (name, code) in [
            ("Robert", "R163"),
            ("Rupert", "R163"),
            ("Rubin", "R150"),
            ("Ashcraft", "A261"),
            ("Tymczak", "T522"),
            ("Pfister", "P236"),
            ("Honeyman", "H555"),
            ("Lee", "L000"),
        ] {
            assert_eq!(soundex(name).as_deref(), Some(code), "{name}");
        }
        assert_eq!(soundex("123"), None);
    }

    #[test]
    fn dates_in_every_layout_and_impossible_ones() {
        assert_eq!(days_between("19560909", "1956-09-19"), Some(10));
        assert_eq!(days_between("2024/03/01", "2024-02-28T23:59:00Z"), Some(2));
        assert_eq!(days_between("2024-01-01 10:00:00", "20240101"), Some(0));
        for bad in [
            "19561309",
            "1956-02-30",
            "1956-9-9",
            "195609",
            "2024-01-01x",
            "",
            "abcdefgh",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    proptest! {
        /// Against the day count from the proleptic calendar (days since 0001-01-01).
        #[test]
        fn days_between_counts_calendar_days(a in 0i32..800_000, b in 0i32..800_000, la in 0usize..3, lb in 0usize..3) {
            let date = |n: i32| chrono::NaiveDate::from_num_days_from_ce_opt(n + 1).unwrap();
            let layout = |d: chrono::NaiveDate, l: usize| match l {
                0 => d.format("%Y-%m-%d").to_string(),
                1 => d.format("%Y%m%d").to_string(),
                _ => d.format("%Y/%m/%d").to_string(),
            };
            let (da, db) = (date(a), date(b));
            prop_assume!(da.format("%Y").to_string().len() == 4 && db.format("%Y").to_string().len() == 4);
            prop_assert_eq!(days_between(&layout(da, la), &layout(db, lb)), Some(i64::from((a - b).abs())));
        }
    }
}
