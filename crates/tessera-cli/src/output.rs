//! Human-readable formatting shared by the commands.

use tessera_ingest::FileReport;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// One line about one imported file.
pub fn file_line(r: &FileReport) -> String {
    if r.skipped {
        return format!("  skipped {} (imported before)", r.location);
    }
    let mut s = format!(
        "  {}: {} events imported",
        r.location,
        thousands(r.rows_imported)
    );
    if r.rows_duplicate > 0 {
        s.push_str(&format!(
            ", {} duplicates skipped",
            thousands(r.rows_duplicate)
        ));
    }
    if r.rows_rejected > 0 {
        s.push_str(&format!(", {} rejected", thousands(r.rows_rejected)));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::thousands(1234567), "1,234,567");
        assert_eq!(super::thousands(12), "12");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(10), "10 B");
    }
}
