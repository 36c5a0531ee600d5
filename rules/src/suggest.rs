//! Did-you-mean suggestions for misspelled names.
//!
//! Three tiers, tried in order, each stricter about ambiguity than the one before:
//!
//! 1. a typo: an edit distance of at most a third of the name (`val_los` → `val_loss`);
//! 2. an abbreviation or an expansion, word by word: the same words, each equal or one a prefix of the
//!    other (`val_accuracy` → `val_acc`, `maximum` → `max`, `val/acc` → `val_accuracy`);
//! 3. containment, by whole words: the name's words are a run of the candidate's, or the other way round
//!    (`acc` → `val_acc`, `my_val_loss` → `val_loss`).
//!
//! Words are separated by `_`, `/`, `-` or `.`. A prefix counts only when it is at least
//! [`MIN_PREFIX`] characters long, and tiers 2 and 3 suggest a name only when it is the only one that
//! fits, so that `acc` with both `train_acc` and `val_acc` known suggests neither, and a short name
//! such as `lr` never matches by containment alone.

/// The shortest word that may stand for a longer one (`acc` for `accuracy`, `max` for `maximum`).
pub const MIN_PREFIX: usize = 3;

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

/// The candidate `name` most likely stands for, if one is close enough (see the module docs).
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let candidates: Vec<&'a str> = candidates.into_iter().collect();
    let limit = (name.chars().count() / 3).max(1);
    let typo = candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    typo.or_else(|| only(&candidates, |c| abbreviates(name, c)))
        .or_else(|| only(&candidates, |c| contains(name, c) || contains(c, name)))
}

/// The one candidate that fits, or `None` when none or several do.
fn only<'a>(candidates: &[&'a str], fits: impl Fn(&str) -> bool) -> Option<&'a str> {
    let mut fitting = candidates.iter().filter(|c| fits(c));
    match (fitting.next(), fitting.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

fn words(name: &str) -> Vec<&str> {
    name.split(['_', '/', '-', '.'])
        .filter(|w| !w.is_empty())
        .collect()
}

/// Equal, or the shorter word (at least [`MIN_PREFIX`] characters) begins the longer one.
fn same_word(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short == long || (short.chars().count() >= MIN_PREFIX && long.starts_with(short))
}

/// Tier 2: the same number of words, each the same word or an abbreviation of it.
fn abbreviates(name: &str, candidate: &str) -> bool {
    let (a, b) = (words(name), words(candidate));
    name != candidate
        && !a.is_empty()
        && a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| same_word(x, y))
}

/// Tier 3: the words of `part` are a run of the words of `whole`, fewer than all of them, matching
/// at least [`MIN_PREFIX`] characters in all.
fn contains(part: &str, whole: &str) -> bool {
    let (p, w) = (words(part), words(whole));
    let matched: usize = p.iter().map(|x| x.chars().count()).sum();
    !p.is_empty()
        && p.len() < w.len()
        && matched >= MIN_PREFIX
        && w.windows(p.len())
            .any(|run| run.iter().zip(&p).all(|(x, y)| same_word(x, y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: [&str; 6] = [
        "epoch",
        "step",
        "train_loss",
        "val_loss",
        "val_acc",
        "test_acc",
    ];

    #[test]
    fn suggestions_are_close_matches_only() {
        assert_eq!(edit_distance("val_los", "val_loss"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            did_you_mean("val_los", ["train_loss", "val_loss", "val_acc"]),
            Some("val_loss")
        );
        assert_eq!(did_you_mean("accuracy", ["val_loss", "epoch"]), None);
    }

    #[test]
    fn abbreviations_and_expansions() {
        assert_eq!(did_you_mean("val_accuracy", METRICS), Some("val_acc"));
        assert_eq!(did_you_mean("validation_loss", METRICS), Some("val_loss"));
        assert_eq!(
            did_you_mean("val/acc", ["val_accuracy"]),
            Some("val_accuracy")
        );
        assert_eq!(did_you_mean("maximum", ["min", "max"]), Some("max"));
        assert_eq!(did_you_mean("minimize", ["min", "max"]), Some("min"));
        assert_eq!(did_you_mean("average", ["mean", "sum", "max", "min"]), None);
    }

    #[test]
    fn containment_by_whole_words() {
        assert_eq!(did_you_mean("my_val_loss", METRICS), Some("val_loss"));
        assert_eq!(did_you_mean("train", METRICS), Some("train_loss"));
        assert_eq!(
            did_you_mean("top", ["save_top_k", "mode"]),
            Some("save_top_k")
        );
    }

    #[test]
    fn unrelated_or_ambiguous_names_get_nothing() {
        // Unrelated names.
        assert_eq!(did_you_mean("lr", METRICS), None);
        assert_eq!(did_you_mean("learning_rate", METRICS), None);
        assert_eq!(did_you_mean("f1_score", METRICS), None);
        assert_eq!(did_you_mean("val_f1", METRICS), None);
        assert_eq!(
            did_you_mean("train_accuracy", ["val_acc", "val_loss"]),
            None
        );
        // Several candidates fit equally well: no guess.
        assert_eq!(did_you_mean("acc", METRICS), None);
        assert_eq!(did_you_mean("loss", METRICS), None);
        assert_eq!(did_you_mean("val", METRICS), None);
        // Short names and short prefixes do not match by containment.
        assert_eq!(did_you_mean("l", ["val_loss"]), None);
        assert_eq!(did_you_mean("lo", ["val_loss"]), None);
        assert_eq!(did_you_mean("va_lo", ["val_loss", "val_acc"]), None);
        assert_eq!(did_you_mean("m", ["min", "max"]), None);
        // Words match whole, not inside other words.
        assert_eq!(did_you_mean("oss", ["val_loss"]), None);
        assert_eq!(did_you_mean("cc", ["val_acc"]), None);
    }
}
