//! The RESP decoder (`kvs_resp::Decoder`) on arbitrary client bytes, under small
//! fuzzer-chosen limits, fed twice: whole, and split at fuzzer-chosen points (the
//! decoder is streaming: a connection hands it whatever has arrived).
//!
//! Checks: no panic; splitting changes nothing (the same commands, skipped commands
//! and protocol error, in the same order); every decoded command consumed at least
//! one byte (a caller loops on `decode`); the bytes a decoder waits on stay bounded
//! (never more than one command's worth: the limits are what keeps a hostile client's
//! bytes out of memory); a decoded command re-encoded as a RESP array decodes to the
//! same arguments.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use kvs_resp::{Decoded, Decoder, Limits};
use libfuzzer_sys::fuzz_target;

/// Longest header line the decoder waits for (`MAX_HEADER` in `decode.rs`), plus the
/// `*`/`$` before it.
const HEADER: usize = 1 + 32;

#[derive(Debug)]
struct Input<'a> {
    limits: Limits,
    splits: Vec<usize>,
    bytes: &'a [u8],
}

impl<'a> Arbitrary<'a> for Input<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let limits = Limits {
            max_bulk_bytes: u.int_in_range(0..=64)?,
            max_command_bytes: u.int_in_range(0..=256)?,
            max_args: u.int_in_range(0..=16)?,
            max_inline_bytes: u.int_in_range(0..=64)?,
        };
        let n = u.int_in_range(0..=16)?;
        let mut splits = Vec::with_capacity(n);
        for _ in 0..n {
            splits.push(u.int_in_range(0..=u16::MAX as usize)?);
        }
        Ok(Input {
            limits,
            splits,
            bytes: u.bytes(u.len())?,
        })
    }
}

/// What a connection saw: commands (owned), skipped commands' messages, and how it
/// ended: a protocol error, or bytes still waiting for more.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Command(Vec<Vec<u8>>),
    TooLarge(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    seen: Vec<Seen>,
    error: Option<String>,
    waiting: usize,
}

/// The most bytes a decoder may leave unconsumed while it waits for more.
fn bound(l: &Limits) -> usize {
    // An inline line; or an array header, then arguments totalling at most
    // `max_command_bytes` (+ the last one's CRLF), then one more argument header.
    l.max_inline_bytes
        .max(HEADER.max(l.max_command_bytes + 2) + HEADER)
}

fn feed(limits: Limits, pieces: &[&[u8]]) -> Outcome {
    let mut d = Decoder::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            let (n, got) = match d.decode(&buf[pos..]) {
                Ok(x) => x,
                Err(e) => {
                    return Outcome {
                        seen,
                        error: Some(e.0),
                        waiting: 0,
                    };
                }
            };
            assert!(n <= buf.len() - pos, "consumed {n} of {}", buf.len() - pos);
            pos += n;
            match got {
                Some(Decoded::Command(args)) => {
                    assert!(n > 0, "a command that consumed nothing");
                    seen.push(Seen::Command(args.iter().map(|a| a.to_vec()).collect()))
                }
                Some(Decoded::TooLarge(why)) => {
                    assert!(n > 0, "a skipped command that consumed nothing");
                    seen.push(Seen::TooLarge(why))
                }
                None => break,
            }
        }
        buf.drain(..pos);
        assert!(
            buf.len() <= bound(&limits),
            "the decoder waits on {} bytes (limits {limits:?}: at most {})",
            buf.len(),
            bound(&limits)
        );
    }
    Outcome {
        seen,
        error: None,
        waiting: buf.len(),
    }
}

fuzz_target!(|input: Input<'_>| {
    let Input {
        limits,
        mut splits,
        bytes,
    } = input;
    let whole = feed(limits, &[bytes]);

    let mut cuts: Vec<usize> = splits.drain(..).map(|s| s % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut at = 0;
    for c in cuts {
        pieces.push(&bytes[at..c]);
        at = c;
    }
    pieces.push(&bytes[at..]);
    let split = feed(limits, &pieces);
    assert_eq!(
        whole, split,
        "splitting at {pieces:?} changed what was decoded"
    );
    // One byte at a time, the extreme split (bounded: it is quadratic in the worst case).
    if bytes.len() <= 512 {
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(whole, feed(limits, &singles), "byte-by-byte changed it");
    }

    // What was decoded, re-encoded as RESP arrays, decodes to the same arguments.
    let mut again = Vec::new();
    let mut want = Vec::new();
    for s in &whole.seen {
        if let Seen::Command(args) = s
            && !args.is_empty()
        {
            again.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                again.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                again.extend_from_slice(a);
                again.extend_from_slice(b"\r\n");
            }
            want.push(Seen::Command(args.clone()));
        }
    }
    let re = feed(Limits::default(), &[&again]);
    assert_eq!(re.error, None);
    assert_eq!(re.waiting, 0);
    assert_eq!(re.seen, want);
});
