//! A compiled list of path globs that remembers its source patterns for messages.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::error::PolicyError;

/// Globs compiled into one [`GlobSet`], in first-seen order with duplicates removed.
#[derive(Debug, Clone)]
pub(super) struct GlobList {
    set: GlobSet,
    patterns: Vec<String>,
}

impl GlobList {
    /// Compiles `patterns` with `literal_separator(true)` (so `*` never crosses `/`) and
    /// platform-independent backslash escapes.
    pub(super) fn build<'p>(
        patterns: impl IntoIterator<Item = &'p str>,
        case_insensitive: bool,
    ) -> Result<Self, PolicyError> {
        let mut kept: Vec<String> = Vec::new();
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            if kept.iter().any(|k| k == pattern) {
                continue;
            }
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .case_insensitive(case_insensitive)
                .build()
                .map_err(|e| invalid(pattern, e.kind().to_string()))?;
            builder.add(glob);
            kept.push(pattern.to_owned());
        }
        let set = builder.build().map_err(|e| invalid(&kept.join(", "), e.to_string()))?;
        Ok(Self { set, patterns: kept })
    }

    /// The first pattern (in list order) that matches `path`, if any.
    pub(super) fn first_match(&self, path: &str) -> Option<&str> {
        let index = self.set.matches(path).into_iter().min()?;
        self.patterns.get(index).map(String::as_str)
    }

    /// True if any pattern matches `path`.
    pub(super) fn is_match(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    /// The source patterns, in match-priority order.
    pub(super) fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

fn invalid(glob: &str, message: String) -> PolicyError {
    PolicyError::InvalidGlob { glob: glob.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_does_not_cross_separator() {
        let list = GlobList::build(["*.yml", "docs/**"], false).unwrap();
        assert!(list.is_match("a.yml"));
        assert!(!list.is_match("dir/a.yml"));
        assert_eq!(list.first_match("docs/x/y.md"), Some("docs/**"));
        assert_eq!(list.first_match("src/x"), None);
    }

    #[test]
    fn dedups_and_reports_first_pattern() {
        let list = GlobList::build(["a/**", "a/**", "**/b"], true).unwrap();
        assert_eq!(list.patterns(), ["a/**", "**/b"]);
        assert_eq!(list.first_match("A/B"), Some("a/**"));
    }

    #[test]
    fn bad_glob_is_an_error() {
        let err = GlobList::build(["src/[a-"], false).unwrap_err();
        match err {
            PolicyError::InvalidGlob { glob, message } => {
                assert_eq!(glob, "src/[a-");
                assert!(!message.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
