//! Per-connection type filters: exact names and `prefix*` patterns.

use std::fmt;

use crate::event::{is_valid_type_name, types, MAX_TYPE_LEN};

/// The most patterns one filter may hold; a longer list is refused.
pub const MAX_PATTERNS: usize = 64;

/// Which event types a connection receives.
///
/// Empty means everything. Items are exact names (`scan_started`) or prefixes ending in `*`
/// (`render_*`, `preview.*`, or `*` alone). `heartbeat`, `health_status` and the control
/// types always pass ([`types::always_delivered`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TypeFilter {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(Box<str>),
    /// Matches every name that starts with this; empty for `*`.
    Prefix(Box<str>),
}

impl TypeFilter {
    /// The filter that passes everything.
    pub fn all() -> TypeFilter {
        TypeFilter::default()
    }

    /// Parses the comma-separated `types` query value. An empty value passes everything.
    pub fn parse_list(list: &str) -> Result<TypeFilter, FilterError> {
        if list.is_empty() {
            return Ok(TypeFilter::all());
        }
        TypeFilter::from_items(list.split(','))
    }

    /// Builds a filter from its items, as in a `subscribe` message.
    pub fn from_items<'a>(
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<TypeFilter, FilterError> {
        let mut patterns = Vec::new();
        for item in items {
            if patterns.len() == MAX_PATTERNS {
                return Err(FilterError::TooMany);
            }
            patterns.push(Pattern::parse(item)?);
        }
        Ok(TypeFilter { patterns })
    }

    /// Whether a frame of type `name` passes.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.is_empty()
            || types::always_delivered(name)
            || self.patterns.iter().any(|p| p.matches(name))
    }

    /// The items as written, for the `subscribed` answer.
    pub fn items(&self) -> impl Iterator<Item = String> + '_ {
        self.patterns.iter().map(|p| match p {
            Pattern::Exact(name) => name.to_string(),
            Pattern::Prefix(prefix) => format!("{prefix}*"),
        })
    }
}

impl Pattern {
    fn parse(item: &str) -> Result<Pattern, FilterError> {
        if item.is_empty() {
            return Err(FilterError::Empty);
        }
        match item.strip_suffix('*') {
            Some(prefix) => {
                let valid = prefix.is_empty()
                    || (prefix.len() < MAX_TYPE_LEN && is_valid_type_name(prefix));
                if valid {
                    Ok(Pattern::Prefix(prefix.into()))
                } else {
                    Err(FilterError::Invalid(item.into()))
                }
            }
            None if is_valid_type_name(item) => Ok(Pattern::Exact(item.into())),
            None => Err(FilterError::Invalid(item.into())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => **exact == *name,
            Pattern::Prefix(prefix) => name.starts_with(&**prefix),
        }
    }
}

/// Why a type filter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterError {
    /// An empty item (`a,,b` or a trailing comma).
    Empty,
    /// An item that is neither a valid type name nor a valid prefix followed by `*`.
    Invalid(Box<str>),
    /// More than [`MAX_PATTERNS`] items.
    TooMany,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Empty => f.write_str("empty item"),
            FilterError::Invalid(item) => {
                let shown: String = item.chars().take(40).collect();
                write!(f, "invalid item {shown:?}")
            }
            FilterError::TooMany => write!(f, "more than {MAX_PATTERNS} items"),
        }
    }
}

impl std::error::Error for FilterError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix_patterns() {
        let filter = TypeFilter::parse_list("scan_started,render_*,preview.*").unwrap();
        assert!(filter.matches("scan_started"));
        assert!(!filter.matches("scan_completed"));
        assert!(filter.matches("render_done"));
        assert!(filter.matches("preview.ready"));
        assert!(!filter.matches("previewready"));
        assert_eq!(
            filter.items().collect::<Vec<_>>(),
            ["scan_started", "render_*", "preview.*"]
        );
    }

    #[test]
    fn control_heartbeat_and_health_always_pass() {
        let filter = TypeFilter::parse_list("scan_started").unwrap();
        for name in [
            "heartbeat",
            "health_status",
            "pong",
            "subscribed",
            "error",
            "resync_required",
        ] {
            assert!(filter.matches(name), "{name}");
        }
    }

    #[test]
    fn empty_and_star_pass_everything() {
        assert!(TypeFilter::parse_list("").unwrap().matches("anything"));
        assert!(TypeFilter::parse_list("*").unwrap().matches("anything"));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(TypeFilter::parse_list("a,,b"), Err(FilterError::Empty));
        assert_eq!(TypeFilter::parse_list("a,"), Err(FilterError::Empty));
        assert_eq!(
            TypeFilter::parse_list("A"),
            Err(FilterError::Invalid("A".into()))
        );
        assert_eq!(
            TypeFilter::parse_list("a*b"),
            Err(FilterError::Invalid("a*b".into()))
        );
        assert_eq!(
            TypeFilter::parse_list("**"),
            Err(FilterError::Invalid("**".into()))
        );
        let many = vec!["a"; MAX_PATTERNS + 1].join(",");
        assert_eq!(TypeFilter::parse_list(&many), Err(FilterError::TooMany));
    }
}
