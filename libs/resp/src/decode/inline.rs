//! Inline commands (a text line, as `telnet` or `redis-cli` in a pipe sends them), split
//! as Redis's `sdssplitargs` splits them.

/// Splits an inline command line into `args` (reusing its buffers) as Redis's
/// `sdssplitargs` does; the number of arguments, or `None` for unbalanced quotes.
pub(super) fn split(line: &[u8], args: &mut Vec<Vec<u8>>) -> Option<usize> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    // C's isspace: a closing quote must be followed by one (or the end).
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut count = 0;
    let mut p = 0;
    loop {
        while p < line.len() && space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(count);
        }
        if args.len() == count {
            args.push(Vec::new());
        }
        let arg = &mut args[count];
        arg.clear();
        count += 1;
        let (mut double, mut single) = (false, false);
        loop {
            let c = at(p);
            if double {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && hex(at(p + 2)).is_some()
                    && hex(at(p + 3)).is_some()
                {
                    arg.push(hex(at(p + 2))? * 16 + hex(at(p + 3))?);
                    p += 3;
                } else if c == b'\\' && p + 1 < line.len() {
                    p += 1;
                    arg.push(match line[p] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if p + 1 < line.len() && !space(line[p + 1]) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return None;
                } else {
                    arg.push(c);
                }
            } else if single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    arg.push(b'\'');
                } else if c == b'\'' {
                    if p + 1 < line.len() && !space(line[p + 1]) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if p >= line.len() {
                    return None;
                } else {
                    arg.push(c);
                }
            } else if p >= line.len() || matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            } else if c == b'"' {
                double = true;
            } else if c == b'\'' {
                single = true;
            } else {
                arg.push(c);
            }
            p += 1;
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::split;

    fn args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut args = vec![b"stale".to_vec(); 2];
        let n = split(line, &mut args)?;
        Some(args[..n].to_vec())
    }

    #[test]
    fn quotes_and_escapes_as_redis() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"SET k v", &[b"SET", b"k", b"v"]),
            (b"  SET \t k   v  ", &[b"SET", b"k", b"v"]),
            (b"SET iq \"b c\"", &[b"SET", b"iq", b"b c"]),
            (
                b"ECHO \"\\x41\\n\\t\\\"\\\\\\q\"",
                &[b"ECHO", b"A\n\t\"\\q"],
            ),
            (b"ECHO \"\\xZZ\"", &[b"ECHO", b"xZZ"]),
            (b"ECHO 'it\\'s \\n'", &[b"ECHO", b"it's \\n"]),
            (b"ECHO \"\" ''", &[b"ECHO", b"", b""]),
            (b"ECHO a\"b c\"", &[b"ECHO", b"ab c"]),
            (b"ECHO a\x0bb", &[b"ECHO", b"a\x0bb"]),
            (b"ECHO a\rb", &[b"ECHO", b"a", b"b"]),
            (b"ECHO \"\\x00\"", &[b"ECHO", b"\0"]),
            (b"", &[]),
        ];
        for (line, want) in cases {
            let want: Vec<Vec<u8>> = want.iter().map(|a| a.to_vec()).collect();
            assert_eq!(
                args(line),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn an_unbalanced_or_unseparated_quote_is_refused() {
        for line in [
            &b"ECHO \"a"[..],
            b"ECHO 'a",
            b"ECHO \"a\"b",
            b"ECHO 'a'b",
            b"ECHO \"a\\\"",
        ] {
            assert_eq!(args(line), None, "{:?}", String::from_utf8_lossy(line));
        }
    }
}
