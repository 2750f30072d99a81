//! The REST frontend's key decoding (`plugins/rest/src/key.rs`, `key::from_path`): how
//! a request path becomes key bytes. The target compiles that one file (it uses only
//! `percent-encoding`), not the axum/hyper/rustls frontend around it.
//!
//! Checks: any path decodes without panic to a key no longer than the path; decoding is
//! stable (the key, percent-encoded again, decodes to itself); any key bytes a client
//! percent-encodes — every byte, or all but the unreserved ones, upper- or lower-case
//! hex — come back exactly, under both routes (`/v1/key/{key}` and `/v1/{key}`).
#![no_main]

#[path = "../../plugins/rest/src/key.rs"]
mod key;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

#[derive(Debug)]
struct Input<'a> {
    path: &'a str,
    key: &'a [u8],
    lower: bool,
}

impl<'a> Arbitrary<'a> for Input<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Input {
            path: u.arbitrary()?,
            key: u.arbitrary()?,
            lower: u.arbitrary()?,
        })
    }
}

/// Every byte as `%XX`.
fn encode_all(key: &[u8], lower: bool) -> String {
    key.iter()
        .map(|b| {
            if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// All but ASCII letters and digits as `%XX` (what most clients do).
fn encode_reserved(key: &[u8]) -> String {
    percent_encoding::percent_encode(key, NON_ALPHANUMERIC).to_string()
}

fuzz_target!(|input: Input<'_>| {
    let key = key::from_path(input.path);
    assert!(key.len() <= input.path.len());
    let again = encode_reserved(&key);
    assert_eq!(key::from_path(&format!("/v1/key/{again}")), key);
    // A path that is already a key's UTF-8 text, encoded the usual way.
    if let Ok(text) = std::str::from_utf8(&key) {
        let enc = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        assert_eq!(key::from_path(&format!("/v1/{enc}")), key);
    }

    for enc in [
        encode_all(input.key, input.lower),
        encode_reserved(input.key),
    ] {
        assert_eq!(key::from_path(&format!("/v1/key/{enc}")), input.key);
        assert_eq!(key::from_path(&format!("/v1/{enc}")), input.key);
    }
});
