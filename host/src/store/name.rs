//! File names: the one place that decides what a user may call a file.

use std::fmt;

/// Most bytes of UTF-8 in a name, as on common file systems.
pub const MAX_NAME_BYTES: usize = 255;

/// What stays as it is in one path segment of a URL: RFC 3986's
/// unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `text` (a name, a prefix) as one path segment or query value of a URL,
/// percent-encoded.
pub fn url_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// A name that is safe as one path segment of the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("file name is empty")]
    Empty,
    /// `.` or `..`.
    #[error("file name {0:?} is reserved")]
    Reserved(String),
    /// Longer than [`MAX_NAME_BYTES`].
    #[error("file name is {0} bytes long; at most {MAX_NAME_BYTES} are allowed")]
    TooLong(usize),
    /// Holds a path separator, NUL or another control character.
    #[error("file name contains the forbidden character {0:?}")]
    ForbiddenChar(char),
}

impl FileName {
    /// Validates `name`: non-empty, not `.` or `..`, at most 255 bytes, and
    /// free of `/`, `\`, NUL and every other control character.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name == "." || name == ".." {
            return Err(NameError::Reserved(name.to_owned()));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong(name.len()));
        }
        if let Some(c) = name.chars().find(|&c| c == '/' || c == '\\' || c.is_control()) {
            return Err(NameError::ForbiddenChar(c));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rules, restated as a plain predicate over the characters.
    fn oracle(name: &str) -> bool {
        !name.is_empty()
            && name != "."
            && name != ".."
            && name.len() <= MAX_NAME_BYTES
            && !name.contains(['/', '\\', '\0'])
            && !name.chars().any(char::is_control)
    }

    proptest! {
        #[test]
        fn accepts_exactly_what_the_rules_allow(name in "\\PC{0,80}|[./\\\\a\\x00\\x1f\\x7f]{0,4}|.{250,260}") {
            prop_assert_eq!(FileName::parse(&name).is_ok(), oracle(&name));
        }

        #[test]
        fn an_accepted_name_is_one_path_segment(name in "\\PC{1,60}") {
            if let Ok(valid) = FileName::parse(&name) {
                let path = std::path::Path::new(valid.as_str());
                prop_assert_eq!(path.components().count(), 1);
                let is_normal = matches!(path.components().next(), Some(std::path::Component::Normal(_)));
                prop_assert!(is_normal);
                prop_assert_eq!(valid.as_str(), name.as_str());
            }
        }

        #[test]
        fn a_separator_anywhere_is_refused(prefix in "[a-z]{0,10}", sep in "[/\\\\\\x00\\n]", suffix in "[a-z]{0,10}") {
            let name = format!("{prefix}{sep}{suffix}");
            prop_assert!(FileName::parse(&name).is_err());
        }
    }

    #[test]
    fn examples() {
        assert!(FileName::parse("report.pdf").is_ok());
        assert!(FileName::parse(".bashrc").is_ok());
        assert!(FileName::parse("...").is_ok());
        assert!(FileName::parse("héllo wörld ✓.txt").is_ok());
        assert_eq!(FileName::parse(""), Err(NameError::Empty));
        assert_eq!(FileName::parse(".."), Err(NameError::Reserved("..".into())));
        assert_eq!(FileName::parse("a/b"), Err(NameError::ForbiddenChar('/')));
        assert_eq!(FileName::parse("a\\b"), Err(NameError::ForbiddenChar('\\')));
        assert_eq!(FileName::parse("a\0b"), Err(NameError::ForbiddenChar('\0')));
        assert_eq!(FileName::parse(&"é".repeat(128)), Err(NameError::TooLong(256)));
        assert!(FileName::parse(&"a".repeat(255)).is_ok());
    }
}
