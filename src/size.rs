//! Human sizes on the command line: `32m`, `1g`, `512k`, `1048576`, `256MiB`.

/// Parses a size in bytes. Suffixes are binary (k = 1024), as docker's are.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "Invalid size {s:?}: it must be a positive number of bytes"
        ));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("Invalid size {s:?}: use a number with an optional unit, e.g. 64m or 1g")
    })?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "Invalid size {s:?}: unknown unit {unit:?}; use b, k, m, g or t"
            ));
        }
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(format!(
            "Invalid size {s:?}: it is too large; the most is 8 EiB"
        ));
    }
    if bytes < 1.0 {
        return Err(format!(
            "Invalid size {s:?}: it must be a positive number of bytes"
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("32m"), Ok(32 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert!(parse_size("-1").unwrap_err().contains("positive"));
        assert!(
            parse_size("99999999999g")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_size("0").unwrap_err().contains("positive"));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for bad in ["", "m", "-1m", "12x", "0", "1e999g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
