//! Messages for misspelled names, on the shared did-you-mean rule.

use fulgur_format::suggest::did_you_mean;

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
        assert_eq!(
            hint("monitr", &["mode", "monitor"]),
            ", did you mean `monitor`?"
        );
        assert_eq!(hint("zzz", &["a", "b"]), ", expected one of `a`, `b`");
    }
}
