//! Client bytes -> commands, streaming and bounded.

mod inline;

/// How much one command may claim. Anything over these is refused before it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest argument (bulk string) accepted; a longer one is skipped and answered
    /// with an error. kvs sets it from its key and value limits.
    pub max_bulk_bytes: usize,
    /// Most bytes one command may span, headers included (e.g. a long `MSET`).
    pub max_command_bytes: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Longest inline command (a plain text line, as `telnet` sends).
    pub max_inline_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_bytes: 1 << 20,
            max_command_bytes: 64 << 20,
            max_args: 1 << 20,
            max_inline_bytes: 64 << 10,
        }
    }
}

/// The largest bulk length any Redis accepts (its `proto-max-bulk-len` default): a claim
/// over it is not a big value but a broken or hostile client.
const PROTO_MAX_BULK_LEN: i64 = 512 << 20;
/// Longest `*<n>` / `$<n>` header line we wait for.
const MAX_HEADER: usize = 32;

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole command: its arguments, the name first. Empty for an empty line or `*0`
    /// (answer nothing).
    Command(Vec<&'a [u8]>),
    /// A whole command went past a limit and was skipped without being held; answer
    /// this message as an error and carry on.
    TooLarge(String),
}

/// Bytes that are not RESP. Answer `-ERR <message>` and close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn protocol(what: &str) -> ProtocolError {
    ProtocolError(format!("Protocol error: {what}"))
}

/// Skipping the rest of a command that went past a limit.
#[derive(Debug)]
struct Skip {
    /// Bytes of the current argument (and its CRLF) still to discard.
    bulk_left: u64,
    /// Arguments after the current one.
    args_left: u64,
    /// The error to answer once the command is behind us.
    why: String,
}

/// One connection's decoder. The caller keeps the bytes; the decoder keeps only whether
/// it is in the middle of skipping an oversized command.
///
/// ```
/// use kvs_resp::{Decoded, Decoder, Limits};
/// let mut d = Decoder::new(Limits::default());
/// let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n";
/// let (n, got) = d.decode(buf).unwrap();
/// assert_eq!(got, Some(Decoded::Command(vec![&b"GET"[..], b"k"])));
/// let (m, got) = d.decode(&buf[n..]).unwrap();
/// assert_eq!(got, Some(Decoded::Command(vec![&b"PING"[..]])));
/// assert_eq!(n + m, buf.len());
/// ```
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    skip: Option<Skip>,
    /// The last inline command's arguments, unquoted (kept to reuse their buffers).
    inline_args: Vec<Vec<u8>>,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            skip: None,
            inline_args: Vec::new(),
        }
    }

    /// Whether it is in the middle of a command it is skipping (its bytes were consumed,
    /// so the caller's buffer may be empty while the command is still arriving).
    pub fn mid_command(&self) -> bool {
        self.skip.is_some()
    }

    /// Decodes the command at the start of `buf`. Returns how many bytes it consumed —
    /// drop them — and the command, or `None` when more bytes are needed (then call
    /// again, with the rest of `buf` plus what arrives next). The consumed count may be
    /// non-zero with `None`: those were bytes of a command being skipped. An inline
    /// command's arguments may borrow the decoder (quotes and escapes are undone into it).
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a [u8],
    ) -> Result<(usize, Option<Decoded<'a>>), ProtocolError> {
        self.decode_into(buf, Vec::new())
    }

    /// [`Decoder::decode`], a command's arguments collected into `args` (cleared
    /// first) instead of a new `Vec`: a caller that keeps the `Vec` between commands
    /// (handing it back through [`recycle`]) decodes without allocating. When no
    /// command is returned, `args` is dropped: don't call it on an empty buffer.
    pub fn decode_into<'a>(
        &'a mut self,
        buf: &'a [u8],
        mut args: Vec<&'a [u8]>,
    ) -> Result<(usize, Option<Decoded<'a>>), ProtocolError> {
        args.clear();
        if self.skip.is_some() {
            return self.skip_from(buf, 0);
        }
        match buf.first() {
            None => Ok((0, None)),
            Some(b'*') => self.array(buf, args),
            Some(_) => self.inline(buf, args),
        }
    }

    fn array<'a>(
        &mut self,
        buf: &'a [u8],
        mut args: Vec<&'a [u8]>,
    ) -> Result<(usize, Option<Decoded<'a>>), ProtocolError> {
        let Some((n, mut pos)) = header(buf, 1, "invalid multibulk length")? else {
            return Ok((0, None));
        };
        if n <= 0 {
            return Ok((pos, Some(Decoded::Command(args))));
        }
        if n as u64 > self.limits.max_args as u64 {
            return Err(protocol("invalid multibulk length"));
        }
        let n = n as u64;
        args.reserve(n.min(16) as usize);
        for i in 0..n {
            let Some(&first) = buf.get(pos) else {
                return Ok((0, None));
            };
            if first != b'$' {
                return Err(protocol(&format!(
                    "expected '$', got '{}'",
                    (first as char).escape_default()
                )));
            }
            let Some((len, next)) = header(buf, pos + 1, "invalid bulk length")? else {
                return Ok((0, None));
            };
            if !(0..=PROTO_MAX_BULK_LEN).contains(&len) {
                return Err(protocol("invalid bulk length"));
            }
            let len = len as usize;
            let over = if len > self.limits.max_bulk_bytes {
                Some(format!(
                    "argument of {len} bytes is larger than the limit of {} bytes",
                    self.limits.max_bulk_bytes
                ))
            } else if next + len > self.limits.max_command_bytes {
                Some(format!(
                    "command is larger than the limit of {} bytes",
                    self.limits.max_command_bytes
                ))
            } else {
                None
            };
            if let Some(why) = over {
                self.skip = Some(Skip {
                    bulk_left: len as u64 + 2,
                    args_left: n - i - 1,
                    why,
                });
                return self.skip_from(buf, next);
            }
            if buf.len() < next + len + 2 {
                return Ok((0, None));
            }
            if &buf[next + len..next + len + 2] != b"\r\n" {
                return Err(protocol("bulk string not terminated by CRLF"));
            }
            args.push(&buf[next..next + len]);
            pos = next + len + 2;
        }
        Ok((pos, Some(Decoded::Command(args))))
    }

    /// Discards the skipped command's bytes from `buf[pos..]`.
    fn skip_from<'a>(
        &mut self,
        buf: &'a [u8],
        mut pos: usize,
    ) -> Result<(usize, Option<Decoded<'a>>), ProtocolError> {
        loop {
            let skip = self.skip.as_mut().expect("skipping");
            if skip.bulk_left > 0 {
                let take = skip.bulk_left.min((buf.len() - pos) as u64);
                pos += take as usize;
                skip.bulk_left -= take;
                if skip.bulk_left > 0 {
                    return Ok((pos, None));
                }
            }
            if skip.args_left == 0 {
                let why = self.skip.take().expect("skipping").why;
                return Ok((pos, Some(Decoded::TooLarge(why))));
            }
            let Some(&first) = buf.get(pos) else {
                return Ok((pos, None));
            };
            if first != b'$' {
                self.skip = None;
                return Err(protocol(&format!(
                    "expected '$', got '{}'",
                    (first as char).escape_default()
                )));
            }
            let Some((len, next)) = header(buf, pos + 1, "invalid bulk length")? else {
                return Ok((pos, None));
            };
            if !(0..=PROTO_MAX_BULK_LEN).contains(&len) {
                self.skip = None;
                return Err(protocol("invalid bulk length"));
            }
            skip.bulk_left = len as u64 + 2;
            skip.args_left -= 1;
            pos = next;
        }
    }

    /// An inline command: one line, split as Redis splits it (`sdssplitargs`): blanks
    /// separate arguments, `"..."` takes escapes (`\\x41`, `\\n`, `\\"`, ...), `'...'` takes
    /// `\\'`; an unbalanced quote is a protocol error.
    fn inline<'a>(
        &'a mut self,
        buf: &'a [u8],
        mut args: Vec<&'a [u8]>,
    ) -> Result<(usize, Option<Decoded<'a>>), ProtocolError> {
        let window = &buf[..buf.len().min(self.limits.max_inline_bytes + 1)];
        let Some(end) = window.iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.max_inline_bytes {
                return Err(protocol("too big inline request"));
            }
            return Ok((0, None));
        };
        let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
        // Redis reads the line as a C string: a NUL ends it.
        let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
        let count = inline::split(line, &mut self.inline_args)
            .ok_or_else(|| protocol("unbalanced quotes in request"))?;
        args.extend(self.inline_args[..count].iter().map(Vec::as_slice));
        Ok((end + 1, Some(Decoded::Command(args))))
    }
}

/// A command's argument list, emptied and freed of the buffer it borrowed, to pass to
/// [`Decoder::decode_into`] again: the allocation is kept (an in-place collect of an
/// empty `Vec`).
pub fn recycle<'b>(mut args: Vec<&[u8]>) -> Vec<&'b [u8]> {
    args.clear();
    args.into_iter()
        .map(|_| -> &'b [u8] { unreachable!() })
        .collect()
}

/// Reads `<integer>\r\n` starting at `buf[start]`: the integer and the position after
/// the CRLF, or `None` if the line is not complete yet.
fn header(buf: &[u8], start: usize, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    // The usual header first, in one pass: a positive number of at most 18 digits and
    // its CRLF, all there. Anything else (a sign, a zero, a partial line, a bad byte)
    // takes the general path below, which decides alike for what this accepts.
    if let Some(&first @ b'1'..=b'9') = buf.get(start) {
        let mut n = (first - b'0') as i64;
        let mut i = start + 1;
        while let Some(&b) = buf.get(i) {
            match b {
                b'0'..=b'9' if i - start < 18 => n = n * 10 + (b - b'0') as i64,
                b'\r' if buf.get(i + 1) == Some(&b'\n') => return Ok(Some((n, i + 2))),
                _ => break,
            }
            i += 1;
        }
    }
    let window = &buf[start.min(buf.len())..buf.len().min(start + MAX_HEADER)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= MAX_HEADER {
            return Err(protocol(what));
        }
        return Ok(None);
    };
    if cr + 1 >= window.len() {
        // A CR in the window's last byte: its LF would be past the longest header, so
        // the line is too long. (Waiting instead would wait forever, the connection's
        // buffer growing with whatever the client sends: found by fuzzing.)
        if window.len() >= MAX_HEADER {
            return Err(protocol(what));
        }
        return Ok(None);
    }
    if window[cr + 1] != b'\n' {
        return Err(protocol(what));
    }
    let n = parse_i64(&window[..cr]).ok_or_else(|| protocol(what))?;
    Ok(Some((n, start + cr + 2)))
}

/// A decimal integer with an optional `-`, as RESP headers write them; `None` for
/// anything else or an overflow. Strict as Redis's `string2ll`: no leading zeros, no
/// `-0`. (On the hot path: every argument has a header.)
pub(crate) fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    match digits {
        [] => return None,
        [b'0', _, ..] => return None,
        [b'0'] if negative => return None,
        _ => {}
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = if digits.len() <= 18 {
        // At most 18 digits cannot overflow an i64: no checked multiply, which a WASM
        // build (wasm-resp) makes a 128-bit multiply call per digit.
        digits.iter().fold(0i64, |n, &d| n * 10 + (d - b'0') as i64)
    } else {
        let mut n: i64 = 0;
        for &d in digits {
            n = n.checked_mul(10)?.checked_add((d - b'0') as i64)?;
        }
        n
    };
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            max_bulk_bytes: 8,
            max_command_bytes: 64,
            max_args: 10,
            max_inline_bytes: 16,
        }
    }

    /// What `feed` saw: a command's arguments, or a skipped command's error.
    type Seen = Result<Vec<Vec<u8>>, String>;

    /// Feeds `input` in pieces of `step` bytes, as a connection would, collecting what
    /// comes out (commands as owned args, skipped ones as `Err(message)`).
    fn feed(limits: Limits, input: &[u8], step: usize) -> Result<Vec<Seen>, ProtocolError> {
        let mut d = Decoder::new(limits);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                let (n, got) = d.decode(&buf[pos..])?;
                pos += n;
                match got {
                    Some(Decoded::Command(args)) => {
                        out.push(Ok(args.iter().map(|a| a.to_vec()).collect()))
                    }
                    Some(Decoded::TooLarge(why)) => out.push(Err(why)),
                    None => break,
                }
            }
            buf.drain(..pos);
            // Never more than one unfinished command is held.
            assert!(
                buf.len() <= limits.max_command_bytes + MAX_HEADER,
                "{}",
                buf.len()
            );
        }
        Ok(out)
    }

    fn cmd(args: &[&str]) -> Seen {
        Ok(args.iter().map(|a| a.as_bytes().to_vec()).collect())
    }

    #[test]
    fn every_split_of_a_pipeline_decodes_the_same() {
        let input =
            b"*3\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$4\r\na\r\nb\r\nPING\r\n*1\r\n$4\r\nPING\r\n\r\nECHO \"a b\" 'c'\r\n";
        let want = vec![
            Ok(vec![b"SET".to_vec(), b"k\x00".to_vec(), b"a\r\nb".to_vec()]),
            cmd(&["PING"]),
            cmd(&["PING"]),
            cmd(&[]),
            cmd(&["ECHO", "a b", "c"]),
        ];
        for step in 1..=input.len() {
            assert_eq!(feed(small(), input, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn an_oversized_argument_is_skipped_and_the_stream_carries_on() {
        let input =
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20\r\n01234567890123456789\r\n*1\r\n$4\r\nPING\r\n";
        for step in 1..=input.len() {
            let got = feed(small(), input, step).unwrap();
            assert_eq!(got.len(), 2, "step {step}: {got:?}");
            assert!(got[0].as_ref().unwrap_err().contains("limit of 8 bytes"));
            assert_eq!(got[1], cmd(&["PING"]));
        }
        // Arguments after the oversized one are skipped too.
        let input = b"*3\r\n$3\r\nSET\r\n$9\r\n012345678\r\n$1\r\nv\r\nPING\r\n";
        let got = feed(small(), input, 3).unwrap();
        assert!(got[0].is_err());
        assert_eq!(got[1], cmd(&["PING"]));
    }

    #[test]
    fn a_command_over_the_total_limit_is_skipped() {
        let mut input = b"*9\r\n$4\r\nMSET\r\n".to_vec();
        for _ in 0..8 {
            input.extend_from_slice(b"$8\r\n01234567\r\n");
        }
        input.extend_from_slice(b"PING\r\n");
        let got = feed(small(), &input, 5).unwrap();
        assert!(got[0].as_ref().unwrap_err().contains("command is larger"));
        assert_eq!(got[1], cmd(&["PING"]));
    }

    #[test]
    fn broken_headers_are_protocol_errors() {
        for bad in [
            &b"*x\r\n"[..],
            b"*1\r\n+PING\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$1073741824\r\n",
            b"*99999999999\r\n",
            b"*1\r\n$4\r\nPINGxx",
            b"*1\r\n$99999999999999999999999999999999999999\r\n",
            b"*1\r\n$4\rX",
            // Redis's string2ll: no leading zeros, no -0.
            b"*01\r\n$4\r\nPING\r\n",
            b"*1\r\n$04\r\nPING\r\n",
            b"*1\r\n$-0\r\n",
            b"*-0\r\n",
            // An unbalanced quote, or a closing one not followed by a blank.
            b"ECHO \"a\r\n",
            b"ECHO 'a\r\n",
            b"ECHO \"a\"b\r\n",
            b"ECHO 'a'b\r\n",
            b"ECHO \"a\\\"\r\n",
        ] {
            for step in 1..=bad.len() {
                let got = feed(small(), bad, step);
                assert!(
                    got.is_err(),
                    "{:?} step {step}: {got:?}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        assert!(
            feed(small(), &[b'a'; 40], 7).is_err(),
            "inline line over the limit"
        );
    }

    /// Found by `fuzz/` (resp_decoder): a header line whose CR is its 32nd byte (the
    /// last the decoder looks at) was neither accepted nor refused; the decoder waited
    /// for more bytes forever while the frontend buffered everything the client sent.
    #[test]
    fn a_header_cr_at_the_window_edge_is_an_error_not_an_endless_wait() {
        for prefix in [&b"*"[..], b"*1\r\n$"] {
            let mut input = prefix.to_vec();
            input.extend_from_slice(&[b'0'; MAX_HEADER - 1]);
            input.push(b'\r');
            input.extend_from_slice(&[b'x'; 200]);
            for step in [1, 7, input.len()] {
                let got = feed(small(), &input, step);
                assert!(got.is_err(), "step {step}: {got:?}");
            }
        }
        // One digit fewer leaves room for the LF: the whole header arrives, and a
        // zero-padded length is then refused as Redis refuses it (not waited on).
        let mut padded = b"*".to_vec();
        padded.extend_from_slice(&[b'0'; MAX_HEADER - 3]);
        padded.extend_from_slice(b"1\r\n$1\r\nx\r\n");
        let err = feed(small(), &padded, 1).unwrap_err();
        assert!(
            format!("{err:?}").contains("invalid multibulk length"),
            "{err:?}"
        );
    }

    #[test]
    fn decode_into_reuses_the_argument_list_it_is_given() {
        let mut d = Decoder::new(Limits::default());
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let mut spare: Vec<&'static [u8]> = Vec::with_capacity(8);
        let address = spare.as_ptr();
        let mut pos = 0;
        let mut seen = Vec::new();
        while let (n, Some(Decoded::Command(args))) = d
            .decode_into(&buf[pos..], recycle(std::mem::take(&mut spare)))
            .unwrap()
        {
            seen.push(args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
            pos += n;
            spare = recycle(args);
            assert_eq!(spare.as_ptr(), address, "the same allocation");
        }
        assert_eq!(
            seen,
            [
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]
            ]
        );
    }

    #[test]
    fn headers_read_in_one_pass_agree_with_the_general_reading() {
        // What `header` must answer, from the general rule: the line up to the first
        // CR (within MAX_HEADER bytes), which must be followed by LF, parsed strictly.
        let expected = |line: &[u8]| -> Result<Option<(i64, usize)>, ()> {
            let window = &line[..line.len().min(MAX_HEADER)];
            match window.iter().position(|&b| b == b'\r') {
                None if window.len() >= MAX_HEADER => Err(()),
                None => Ok(None),
                Some(cr) if cr + 1 >= window.len() && window.len() >= MAX_HEADER => Err(()),
                Some(cr) if cr + 1 >= window.len() => Ok(None),
                Some(cr) if window[cr + 1] != b'\n' => Err(()),
                Some(cr) => parse_i64(&window[..cr])
                    .map(|n| Some((n, cr + 2)))
                    .ok_or(()),
            }
        };
        let digits = [
            "1",
            "7",
            "42",
            "100",
            "999999999999999999",
            "1000000000000000000",
        ];
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for d in digits.iter().chain(&[
            "0",
            "-1",
            "01",
            "9223372036854775807",
            "92233720368547758070",
        ]) {
            for tail in ["\r\n", "\r\nrest", "\r", "", "\rx", "x\r\n", "\n"] {
                lines.push(format!("{d}{tail}").into_bytes());
            }
        }
        for line in &lines {
            let got = header(line, 0, "test").map_err(|_| ());
            assert_eq!(got, expected(line), "{:?}", String::from_utf8_lossy(line));
            // The same at an offset, as headers are read mid-buffer.
            let shifted = [b"$".as_slice(), line].concat();
            let got = header(&shifted, 1, "test").map_err(|_| ());
            let want = expected(line).map(|o| o.map(|(n, at)| (n, at + 1)));
            assert_eq!(got, want, "at 1: {:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn header_integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(
            parse_i64(b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        assert_eq!(
            parse_i64(b"-999999999999999999"),
            Some(-999_999_999_999_999_999)
        );
        assert_eq!(
            parse_i64(b"1000000000000000000"),
            Some(1_000_000_000_000_000_000)
        );
        assert_eq!(parse_i64(b"-9223372036854775807"), Some(-i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"1x",
            b" 1",
            b"9223372036854775808",
            b"99999999999999999999",
            b"1x3456789012345678",
            b"01",
            b"00",
            b"-0",
            b"-01",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn incomplete_input_waits_without_error() {
        for partial in [
            &b"*2\r\n$3\r\nGET\r\n$1"[..],
            b"*2",
            b"GET k",
            b"*1\r\n$9\r\n0123",
        ] {
            assert_eq!(feed(small(), partial, 1).unwrap(), vec![]);
        }
    }

    /// Random pipelines in random pieces (a fixed-seed generator, so failures repeat):
    /// what goes in comes out, byte for byte.
    #[test]
    fn random_pipelines_round_trip() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut input = Vec::new();
            let mut want = Vec::new();
            for _ in 0..(next() % 6 + 1) {
                let argc = next() % 4 + 1;
                input.extend_from_slice(format!("*{argc}\r\n").as_bytes());
                let mut args = Vec::new();
                for _ in 0..argc {
                    let len = (next() % 9) as usize;
                    let arg: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    input.extend_from_slice(format!("${len}\r\n").as_bytes());
                    input.extend_from_slice(&arg);
                    input.extend_from_slice(b"\r\n");
                    args.push(arg);
                }
                want.push(Ok(args));
            }
            let step = (next() % 20 + 1) as usize;
            assert_eq!(feed(small(), &input, step).unwrap(), want);
        }
    }
}
