//! What a request's conditional headers ask of a write: `If-Match`, `If-None-Match: *`
//! and `kvs-ttl-ms`, read into the [`Update`] the host's writer evaluates, so a
//! read-modify-write over HTTP loses no update (RFC 9110 section 13: a failed
//! precondition is 412).
//!
//! An entity tag is the key's revision, quoted (`"42"`): the log position of the write
//! that last changed it.

use axum::http::{HeaderMap, HeaderValue, header};
use kvs_plugin_api::{Condition, Expiry};

/// The header that gives a PUT a time to live, and a GET's answer the time left, in
/// milliseconds.
pub const TTL_HEADER: &str = "kvs-ttl-ms";

/// What a write's headers ask for, if anything beyond a plain write.
#[derive(Debug, PartialEq)]
pub struct Conditional {
    /// When it applies.
    pub condition: Condition,
    /// Its deadline (a PUT's `kvs-ttl-ms`).
    pub expiry: Expiry,
}

/// The entity tag of `revision`.
pub fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits and quotes")
}

/// The revision an entity tag names: exactly as kvs writes them (`"42"`: digits, no
/// leading zero, not 0, which no key has), since entity tags compare byte for byte; a
/// weak tag (`W/"42"`) never matches a write's strong comparison, so it names none.
fn revision_of(tag: &str) -> Option<u64> {
    let digits = tag.strip_prefix('"')?.strip_suffix('"')?;
    let revision: u64 = digits.parse().ok()?;
    (revision != 0 && digits == revision.to_string()).then_some(revision)
}

/// Reads a write's conditional headers. `Ok(None)`: a plain write. `Err`: a header kvs
/// cannot honour, with why (answered 400: ignoring a condition could lose an update).
pub fn read(headers: &HeaderMap, put: bool) -> Result<Option<Conditional>, String> {
    let text = |name: header::HeaderName| -> Result<Option<&str>, String> {
        match headers.get_all(&name).iter().count() {
            0 => Ok(None),
            1 => headers[&name]
                .to_str()
                .map(|v| Some(v.trim()))
                .map_err(|_| format!("{name} is not text")),
            _ => Err(format!("{name} given more than once; give one")),
        }
    };
    let condition = match (text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => {
            return Err("If-Match and If-None-Match together; give one".into());
        }
        (Some("*"), None) => Some(Condition::Present),
        (Some(tag), None) => {
            if tag.contains(',') {
                return Err("If-Match with several entity tags; kvs compares one".into());
            }
            // A tag that is not one of kvs's matches no key: the write fails its
            // precondition rather than being refused as malformed.
            Some(Condition::Revision(revision_of(tag).unwrap_or(u64::MAX)))
        }
        (None, Some("*")) => Some(Condition::Absent),
        (None, Some(_)) => {
            return Err(
                "If-None-Match on a write takes only *; use If-Match with an entity tag".into(),
            );
        }
        (None, None) => None,
    };
    let ttl = match text(header::HeaderName::from_static(TTL_HEADER))? {
        None => None,
        Some(_) if !put => return Err(format!("{TTL_HEADER} is for PUT")),
        // Digits only: Rust's parse would take a leading `+`, which HTTP's grammar for
        // a number of milliseconds does not.
        Some(ms) => match ms.parse::<u64>() {
            Ok(n) if n > 0 && ms.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                return Err(format!(
                    "{TTL_HEADER} must be a whole number of milliseconds above 0, not {ms:?}"
                ));
            }
        },
    };
    if condition.is_none() && ttl.is_none() {
        return Ok(None);
    }
    Ok(Some(Conditional {
        condition: condition.unwrap_or(Condition::Always),
        expiry: ttl.map_or(Expiry::Clear, Expiry::After),
    }))
}

/// Whether a GET's `If-Match` value holds for a key at `revision` (`None`: absent):
/// `*` matches any present key; otherwise one of the tags must name its revision
/// (strong comparison: a weak tag matches nothing).
pub fn matches(tags: &HeaderValue, revision: Option<u64>) -> bool {
    let Some(revision) = revision else {
        return false;
    };
    tags.to_str().is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || revision_of(tag) == Some(revision))
    })
}

/// Whether a GET's `If-None-Match` value names the current revision (answered 304;
/// the weak comparison RFC 9110 asks for here).
pub fn not_modified(tags: &HeaderValue, revision: u64) -> bool {
    tags.to_str().is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || revision_of(tag.trim_start_matches("W/")) == Some(revision))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn headers_become_conditions() {
        let read = |pairs: &[(&str, &str)]| read(&headers(pairs), true);
        assert_eq!(read(&[]), Ok(None));
        let only = |condition| {
            Ok(Some(Conditional {
                condition,
                expiry: Expiry::Clear,
            }))
        };
        assert_eq!(read(&[("if-match", "\"7\"")]), only(Condition::Revision(7)));
        for never in ["\"0\"", "\"007\"", "\"+7\"", "\"x\""] {
            assert_eq!(
                read(&[("if-match", never)]),
                only(Condition::Revision(u64::MAX)),
                "{never} is no tag kvs gave out"
            );
        }
        assert_eq!(read(&[("if-match", "*")]), only(Condition::Present));
        assert_eq!(read(&[("if-none-match", "*")]), only(Condition::Absent));
        assert_eq!(
            read(&[("if-match", "W/\"7\"")]),
            only(Condition::Revision(u64::MAX)),
            "a weak tag never matches a write"
        );
        assert_eq!(
            read(&[("kvs-ttl-ms", "300")]),
            Ok(Some(Conditional {
                condition: Condition::Always,
                expiry: Expiry::After(300)
            }))
        );
        for bad in [
            &[("if-match", "\"1\", \"2\"")][..],
            &[("if-none-match", "\"1\"")],
            &[("if-match", "*"), ("if-none-match", "*")],
            &[("kvs-ttl-ms", "0")],
            &[("kvs-ttl-ms", "soon")],
            &[("if-match", "\"1\""), ("if-match", "\"2\"")],
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        assert!(super::read(&headers(&[("kvs-ttl-ms", "5")]), false).is_err());
        for odd in ["+5", "5 ", "0x5", "5.0", "-5"] {
            let value = HeaderValue::from_str(odd).unwrap();
            let mut map = HeaderMap::new();
            map.insert(TTL_HEADER, value);
            // (trimmed first, as every header value is: "5 " is 5)
            let read = super::read(&map, true);
            assert_eq!(read.is_err(), odd.trim() != "5", "{odd:?}: {read:?}");
        }
        assert!(not_modified(&HeaderValue::from_static("\"3\", W/\"4\""), 4));
        assert!(!not_modified(&HeaderValue::from_static("\"3\""), 4));
    }

    #[test]
    fn if_match_on_a_read_holds_only_for_the_key_at_that_revision() {
        let tags = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(matches(&tags("\"7\""), Some(7)));
        assert!(matches(&tags("\"3\", \"7\""), Some(7)));
        assert!(matches(&tags("*"), Some(1)));
        assert!(!matches(&tags("*"), None), "a missing key matches nothing");
        assert!(!matches(&tags("\"7\""), None));
        assert!(!matches(&tags("\"8\""), Some(7)));
        assert!(!matches(&tags("W/\"7\""), Some(7)), "strong comparison");
    }
}
