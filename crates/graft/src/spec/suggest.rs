//! "Did you mean" suggestions for misspelled names.

/// The candidate closest to `word` by edit distance, if it is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ", did you mean `x`?" or nothing.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(cur).min(row[j]) };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" into a message with a suggestion.
pub fn explain_serde(message: &str) -> String {
    let first_line = message.lines().next().unwrap_or(message).trim().to_string();
    let Some(rest) = first_line.strip_prefix("unknown field `") else {
        return first_line;
    };
    let Some((field, expected)) = rest.split_once("`, expected") else {
        return first_line;
    };
    let options: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    format!(
        "unknown option `{field}`{}; valid options: {}",
        hint(field, options.iter().copied()),
        options.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("conv2", "conv2d"), 1);
        assert_eq!(edit_distance("filtrs", "filters"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("dens", ["dense", "dropout"]), Some("dense"));
        assert_eq!(closest("zzzzzz", ["dense", "dropout"]), None);
    }

    #[test]
    fn rewrites_unknown_field() {
        let m = explain_serde("unknown field `filtrs`, expected one of `filters`, `kernel`");
        assert_eq!(
            m,
            "unknown option `filtrs`; did you mean `filters`?; valid options: filters, kernel"
        );
    }
}
