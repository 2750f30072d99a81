//! Server replies, encoded for the protocol version a connection chose.

/// The protocol a connection speaks: RESP2 until the client says `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, the default.
    #[default]
    Resp2,
    /// RESP3 (`HELLO 3`): real nulls and maps.
    Resp3,
}

/// Appends replies to an output buffer.
#[derive(Debug)]
pub struct Reply<'a> {
    out: &'a mut Vec<u8>,
    protocol: Protocol,
}

impl<'a> Reply<'a> {
    /// Replies appended to `out`, in `protocol`.
    pub fn new(out: &'a mut Vec<u8>, protocol: Protocol) -> Self {
        Reply { out, protocol }
    }

    /// `+OK`-style status.
    pub fn simple(&mut self, s: &str) -> &mut Self {
        self.out.push(b'+');
        self.line(s.as_bytes());
        self
    }

    /// An error; `message` starts with its code (`ERR`, `NOAUTH`, ...). Line breaks in
    /// it become spaces (they would end the reply early).
    pub fn error(&mut self, message: &str) -> &mut Self {
        self.out.push(b'-');
        self.line(message.as_bytes());
        self
    }

    /// An integer.
    pub fn integer(&mut self, n: i64) -> &mut Self {
        self.header(b':', n)
    }

    /// A bulk string (binary-safe).
    pub fn bulk(&mut self, bytes: &[u8]) -> &mut Self {
        self.header(b'$', bytes.len() as i64);
        self.out.extend_from_slice(bytes);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Text for a person (`INFO`): a verbatim string (`=`, format `txt`) in RESP3, a
    /// bulk string in RESP2, as Redis answers.
    pub fn verbatim(&mut self, text: &[u8]) -> &mut Self {
        if self.protocol == Protocol::Resp2 {
            return self.bulk(text);
        }
        self.header(b'=', text.len() as i64 + 4);
        self.out.extend_from_slice(b"txt:");
        self.out.extend_from_slice(text);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// A bulk string, or null.
    pub fn optional(&mut self, bytes: Option<&[u8]>) -> &mut Self {
        match bytes {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }

    /// Null: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) -> &mut Self {
        self.out.extend_from_slice(match self.protocol {
            Protocol::Resp2 => b"$-1\r\n",
            Protocol::Resp3 => b"_\r\n",
        });
        self
    }

    /// The header of an array of `n` elements; append the elements next.
    pub fn array(&mut self, n: usize) -> &mut Self {
        self.header(b'*', n as i64)
    }

    /// The header of a map of `n` pairs (RESP3; a flat array of `2n` in RESP2); append
    /// key, value, key, value next.
    pub fn map(&mut self, n: usize) -> &mut Self {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', 2 * n as i64),
            Protocol::Resp3 => self.header(b'%', n as i64),
        }
    }

    /// `<tag><n>\r\n`, formatted by hand: it precedes every reply on the hot path.
    fn header(&mut self, tag: u8, n: i64) -> &mut Self {
        if (0..10).contains(&n) {
            // The most common header (`*2`, `$5`, `:1`) in one write.
            self.out
                .extend_from_slice(&[tag, b'0' + n as u8, b'\r', b'\n']);
            return self;
        }
        self.out.push(tag);
        if n < 0 {
            self.out.push(b'-');
        }
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut m = n.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (m % 10) as u8;
            m /= 10;
            if m == 0 {
                break;
            }
        }
        // Byte by byte: a length is a few digits, and a copy of a variable length is a
        // call (in WASM, a `memory.copy` that leaves the guest) costing more than that.
        self.out.reserve(digits.len() - at + 2);
        for &d in &digits[at..] {
            self.out.push(d);
        }
        self.out.extend_from_slice(b"\r\n");
        self
    }

    fn line(&mut self, s: &[u8]) {
        self.out.extend(
            s.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let mut out = Vec::new();
        Reply::new(&mut out, Protocol::Resp2)
            .simple("OK")
            .error("ERR bad\r\nthing")
            .integer(-3)
            .integer(i64::MIN)
            .integer(0)
            .bulk(b"a\r\nb")
            .null()
            .array(2)
            .map(1);
        assert_eq!(
            out,
            b"+OK\r\n-ERR bad  thing\r\n:-3\r\n:-9223372036854775808\r\n:0\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n*2\r\n"
        );
        let mut out = Vec::new();
        Reply::new(&mut out, Protocol::Resp3)
            .null()
            .map(2)
            .verbatim(b"a\r\nb");
        assert_eq!(out, b"_\r\n%2\r\n=8\r\ntxt:a\r\nb\r\n");
        let mut out = Vec::new();
        Reply::new(&mut out, Protocol::Resp2).verbatim(b"ab");
        assert_eq!(out, b"$2\r\nab\r\n");
    }
}
