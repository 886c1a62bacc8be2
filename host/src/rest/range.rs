//! Which bytes of a file a download sends, from its `Range` header.

use std::ops::RangeInclusive;

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The whole file (`200`).
    Full,
    /// One range of it (`206`).
    Partial(RangeInclusive<u64>),
    /// Nothing can be sent (`416`).
    Unsatisfiable,
}

/// Decides what to send of a file of `size` bytes. A header that does not
/// parse, or that asks for several ranges, is ignored (the whole file is
/// sent), as RFC 9110 allows; a well-formed range outside the file is
/// unsatisfiable.
pub fn select(header: Option<&str>, size: u64) -> Selection {
    let Some(header) = header else {
        return Selection::Full;
    };
    let Ok(parsed) = http_range_header::parse_range_header(header) else {
        return Selection::Full;
    };
    match parsed.validate(size) {
        Ok(ranges) => match ranges.as_slice() {
            [one] if *one.start() < size && one.start() <= one.end() => Selection::Partial(one.clone()),
            [_] => Selection::Unsatisfiable,
            _ => Selection::Full,
        },
        Err(_) => Selection::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(select(None, 10), Selection::Full);
        assert_eq!(select(Some("bytes=0-4"), 10), Selection::Partial(0..=4));
        assert_eq!(select(Some("bytes=5-"), 10), Selection::Partial(5..=9));
        assert_eq!(select(Some("bytes=-3"), 10), Selection::Partial(7..=9));
        assert_eq!(select(Some("bytes=8-100"), 10), Selection::Partial(8..=9));
        assert_eq!(select(Some("bytes=10-"), 10), Selection::Unsatisfiable);
        assert_eq!(select(Some("bytes=0-"), 0), Selection::Unsatisfiable);
        assert_eq!(select(Some("bytes=-20"), 10), Selection::Unsatisfiable);
        assert_eq!(select(Some("bytes=0-1,4-5"), 10), Selection::Full);
        assert_eq!(select(Some("pages=1-2"), 10), Selection::Full);
        assert_eq!(select(Some("bytes=x-y"), 10), Selection::Full);
    }

    proptest! {
        #[test]
        fn a_partial_range_lies_inside_the_file(size in 0u64..10_000, a in 0u64..12_000, b in 0u64..12_000) {
            for header in [format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{b}")] {
                if let Selection::Partial(r) = select(Some(&header), size) {
                    prop_assert!(r.start() <= r.end());
                    prop_assert!(*r.end() < size);
                }
            }
        }

        /// Fuzzed: a `Range` header of any text is the whole file, a part
        /// inside it, or unsatisfiable; never a part outside it.
        #[test]
        fn a_fuzzed_range_header_never_leaves_the_file(size in 0u64..10_000, tail in "\\PC{0,24}|[0-9,= -]{0,24}") {
            for header in [tail.clone(), format!("bytes={tail}")] {
                if let Selection::Partial(r) = select(Some(&header), size) {
                    prop_assert!(r.start() <= r.end() && *r.end() < size, "{header}: {r:?} of {size}");
                }
            }
        }

        #[test]
        fn an_explicit_range_inside_the_file_is_served_exactly(size in 1u64..10_000, a in 0u64..10_000, len in 0u64..10_000) {
            let start = a % size;
            let end = (start + len).min(size - 1);
            prop_assert_eq!(select(Some(&format!("bytes={start}-{end}")), size), Selection::Partial(start..=end));
        }
    }
}
