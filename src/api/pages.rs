//! List pages (AIP-158): page sizes and opaque page tokens bound to the list's filters.

use super::convert::Reader;

/// Page size when a list request leaves it at 0 (AIP-158).
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page a list answers with.
pub const MAX_PAGE_SIZE: i64 = 500;

/// Reads `page_size` as AIP-158 says: 0 means the default, a size above the maximum is the
/// maximum, and a negative size is refused.
pub fn page_size(r: &mut Reader, raw: i32) -> i64 {
    match i64::from(raw) {
        0 => DEFAULT_PAGE_SIZE,
        n if n < 0 => {
            r.violation("page_size", format!("must not be negative, got {n}"));
            DEFAULT_PAGE_SIZE
        }
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// An opaque page token: the last item's position and a fingerprint of the filters it belongs to.
pub fn page_token(cursor: &crate::store::Cursor, filters: &str) -> String {
    let plain = format!(
        "v1\n{}\n{}\n{}",
        cursor.at_ms,
        cursor.id,
        filter_key(filters)
    );
    hex::encode(plain)
}

fn filter_key(filters: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(filters.as_bytes());
    hex::encode(&digest[..8])
}

/// Cuts rows fetched with `limit + 1` to one page and makes the token for the next one
/// (empty on the last page).
pub fn page<T>(
    mut rows: Vec<T>,
    limit: i64,
    filters: &str,
    position: impl Fn(&T) -> crate::store::Cursor,
) -> (Vec<T>, String) {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let token = match rows.last() {
        Some(last) if more => page_token(&position(last), filters),
        _ => String::new(),
    };
    (rows, token)
}

/// Reads a page token made by [`page_token`] for the same filters.
pub fn read_page_token(r: &mut Reader, raw: &str, filters: &str) -> Option<crate::store::Cursor> {
    if raw.is_empty() {
        return None;
    }
    let parsed = hex::decode(raw)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|plain| {
            let parts: Vec<&str> = plain.split('\n').collect();
            match parts.as_slice() {
                ["v1", at, id, key] if *key == filter_key(filters) => {
                    at.parse().ok().map(|at_ms| crate::store::Cursor {
                        at_ms,
                        id: id.to_string(),
                    })
                }
                _ => None,
            }
        });
    if parsed.is_none() {
        r.violation(
            "page_token",
            "is not a page token from this list with these filters",
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AIP-158: unset is the default, above the maximum is the maximum, negative is refused.
    #[test]
    fn a_page_size_above_the_maximum_is_the_maximum() {
        let mut r = Reader::default();
        assert_eq!(page_size(&mut r, 0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(&mut r, 1), 1);
        assert_eq!(page_size(&mut r, 500), 500);
        assert_eq!(page_size(&mut r, 501), MAX_PAGE_SIZE);
        assert_eq!(page_size(&mut r, i32::MAX), MAX_PAGE_SIZE);
        assert!(r.violations.is_empty());
        page_size(&mut r, -1);
        assert_eq!(r.violations.len(), 1);
    }

    /// A token handed to a caller before an upgrade still reads after it: the format is fixed
    /// (hex of `v1`, the position and the filters' fingerprint), written here in full.
    #[test]
    fn page_tokens_keep_their_format() {
        const TOKEN: &str = "76310a313730303030303030303030300a30313930643263342d303030302d373030302d383030302d3030303030303030303030310a38383466393933633234316232306537";
        let cursor = crate::store::Cursor {
            at_ms: 1_700_000_000_000,
            id: "0190d2c4-0000-7000-8000-000000000001".into(),
        };
        assert_eq!(page_token(&cursor, "therapy=3"), TOKEN);
        let mut r = Reader::default();
        let read = read_page_token(&mut r, TOKEN, "therapy=3").expect("the token reads");
        assert_eq!((read.at_ms, read.id), (cursor.at_ms, cursor.id));
        assert!(r.violations.is_empty());
        assert!(read_page_token(&mut r, TOKEN, "therapy=4").is_none());
        assert!(read_page_token(&mut r, "zz", "therapy=3").is_none());
        assert_eq!(r.violations.len(), 2);
    }
}
