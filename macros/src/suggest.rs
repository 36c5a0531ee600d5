//! Messages for misspelled names, on the shared did-you-mean rule.

use fulgur_rules::suggest::did_you_mean;

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

/// `` `a`, `b` or `c` ``.
pub fn alternatives<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
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
        assert_eq!(alternatives(["a", "b", "c"]), "`a`, `b` or `c`");
        assert_eq!(alternatives(["a"]), "`a`");
    }
}
