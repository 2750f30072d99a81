//! How a request path becomes key bytes: everything after the route prefix
//! (`/v1/key/` or `/v1/`), percent-decoded. A `%` not followed by two hex digits is
//! kept as it is. Public (hidden) so that `fuzz/` can drive it; it uses nothing but
//! `percent-encoding`, so the fuzz target compiles this file alone.

/// The key a request for `path` names (empty if none; the caller refuses that).
pub fn from_path(path: &str) -> Vec<u8> {
    let raw = path
        .strip_prefix("/v1/key/")
        .or_else(|| path.strip_prefix("/v1/"))
        .unwrap_or("");
    percent_encoding::percent_decode_str(raw).collect()
}

#[cfg(test)]
mod tests {
    use super::from_path;

    #[test]
    fn keys_from_paths() {
        assert_eq!(from_path("/v1/key/a%2Fb"), b"a/b");
        assert_eq!(from_path("/v1/key/nul%00%0A"), b"nul\0\n");
        assert_eq!(from_path("/v1/k%C3%A9y"), "kéy".as_bytes());
        assert_eq!(from_path("/v1/key/100%"), b"100%");
        assert_eq!(from_path("/v1/key/%zz%4"), b"%zz%4");
        assert_eq!(from_path("/v1/key/"), b"");
        assert_eq!(from_path("/other"), b"");
    }
}
