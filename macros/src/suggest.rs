//! Did-you-mean suggestions for misspelled names.

/// Levenshtein distance between two strings, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a likely typo (the runtime's rule, so
/// that compile-time and run-time messages suggest the same name).
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `, did you mean `x`?` or `, expected one of `a`, `b`` when nothing is close.
pub fn hint(name: &str, candidates: &[&str]) -> String {
    match did_you_mean(name, candidates.iter().copied()) {
        Some(s) => format!(", did you mean `{s}`?"),
        None => format!(", expected one of {}", listing(candidates.iter().copied())),
    }
}

/// `` `a`, `b`, `c` ``.
pub fn listing<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_matches_only() {
        assert_eq!(edit_distance("monitr", "monitor"), 1);
        assert_eq!(did_you_mean("monitr", ["mode", "monitor"]), Some("monitor"));
        assert_eq!(did_you_mean("accuracy", ["val_loss", "epoch"]), None);
        assert_eq!(hint("zzz", &["a", "b"]), ", expected one of `a`, `b`");
    }
}
