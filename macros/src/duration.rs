//! `train_time_interval = "1h30min"`: durations parsed at compile time.

/// A parsed duration: whole seconds and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    pub secs: u64,
    pub nanos: u32,
}

const UNITS: &[(&str, u128)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("min", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses `30min`, `1h30min`, `1h 30min`, `500ms`, `2d`: integers with a unit each, units from the
/// largest to the smallest, each at most once.
pub fn parse(text: &str) -> Result<Duration, String> {
    let expected =
        "expected a number and a unit (`ms`, `s`, `min`, `h`, `d`), such as `30min` or `1h30min`";
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    let mut last_unit: Option<usize> = None;
    let mut parts = 0;
    while i < chars.len() {
        if chars[i] == ' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        let digits: String = chars[start..i].iter().collect();
        if digits.is_empty() {
            return Err(format!("invalid duration `{text}`, {expected}"));
        }
        let unit_start = i;
        while i < chars.len() && chars[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit: String = chars[unit_start..i].iter().collect();
        if unit.is_empty() {
            return Err(match chars.get(i) {
                Some('.') => format!(
                    "invalid duration `{text}`, fractions are not supported, use a smaller unit such as `90min` for `1.5h`"
                ),
                _ => format!("missing unit after `{digits}` in duration `{text}`, expected `ms`, `s`, `min`, `h` or `d`"),
            });
        }
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            let hint = match alias(&unit) {
                Some(s) => format!(", did you mean `{s}`?"),
                None => ", expected `ms`, `s`, `min`, `h` or `d`".to_string(),
            };
            return Err(format!("unknown unit `{unit}` in duration `{text}`{hint}"));
        };
        if let Some(last) = last_unit {
            if index <= last {
                return Err(format!(
                    "invalid duration `{text}`, units go from the largest to the smallest, each at most once"
                ));
            }
        }
        last_unit = Some(index);
        let n: u128 = digits
            .parse()
            .map_err(|_| format!("duration `{text}` is too long"))?;
        total_ms = n
            .checked_mul(UNITS[index].1)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(|| format!("duration `{text}` is too long"))?;
        parts += 1;
    }
    if parts == 0 {
        return Err(format!("empty duration, {expected}"));
    }
    let secs =
        u64::try_from(total_ms / 1000).map_err(|_| format!("duration `{text}` is too long"))?;
    Ok(Duration {
        secs,
        nanos: (total_ms % 1000) as u32 * 1_000_000,
    })
}

/// The unit a common spelling means.
fn alias(unit: &str) -> Option<&'static str> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "m" | "mn" | "mins" | "minute" | "minutes" => "min",
        "sec" | "secs" | "second" | "seconds" => "s",
        "hr" | "hrs" | "hour" | "hours" => "h",
        "day" | "days" => "d",
        "msec" | "msecs" | "millis" | "milliseconds" => "ms",
        other => return UNITS.iter().map(|(u, _)| *u).find(|u| *u == other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (u64, u32) {
        let d = parse(text).unwrap();
        (d.secs, d.nanos)
    }

    #[test]
    fn units_and_combinations() {
        assert_eq!(ok("30min"), (1800, 0));
        assert_eq!(ok("1h30min"), (5400, 0));
        assert_eq!(ok("1h 30min"), (5400, 0));
        assert_eq!(ok("2d"), (172_800, 0));
        assert_eq!(ok("1s500ms"), (1, 500_000_000));
        assert_eq!(ok("0s"), (0, 0));
        assert_eq!(ok("1d2h3min4s5ms"), (93_784, 5_000_000));
    }

    #[test]
    fn mistakes_are_explained() {
        assert_eq!(
            parse("30m").unwrap_err(),
            "unknown unit `m` in duration `30m`, did you mean `min`?"
        );
        assert_eq!(
            parse("30").unwrap_err(),
            "missing unit after `30` in duration `30`, expected `ms`, `s`, `min`, `h` or `d`"
        );
        assert!(parse("30min1h")
            .unwrap_err()
            .contains("largest to the smallest"));
        assert!(parse("1h1h").unwrap_err().contains("each at most once"));
        assert!(parse("").unwrap_err().starts_with("empty duration"));
        assert!(parse("1.5h").unwrap_err().contains("fractions"));
        assert!(parse("h").unwrap_err().starts_with("invalid duration `h`"));
        assert!(parse("99999999999999999999999d")
            .unwrap_err()
            .contains("too long"));
        assert_eq!(
            parse("5sec").unwrap_err(),
            "unknown unit `sec` in duration `5sec`, did you mean `s`?"
        );
    }
}
