//! Random command sequences: what a Redis client might send kvs, over every command kvs
//! serves and some it refuses, rendered as RESP arrays or as inline commands.

/// xorshift64*: small, seedable, the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One command and how it goes on the wire.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub args: Vec<Vec<u8>>,
    /// Sent as an inline command (a text line, Redis's quoting) instead of a RESP array.
    pub inline: bool,
}

impl Cmd {
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.args[0]).to_ascii_lowercase()
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.inline {
            for (i, arg) in self.args.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                inline_arg(arg, i, &mut out);
            }
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(format!("*{}\r\n", self.args.len()).as_bytes());
            for arg in &self.args {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    /// The command as a person would type it, for failure messages.
    pub fn show(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| format!("{:?}", Bytes(a)))
            .collect();
        args.join(" ")
    }
}

/// Bytes shown as an escaped string.
pub struct Bytes<'a>(pub &'a [u8]);

impl std::fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// One argument of an inline command: bare when it can be, else quoted — single quotes
/// for plain text, double quotes with escapes for anything.
fn inline_arg(arg: &[u8], position: usize, out: &mut Vec<u8>) {
    let bare = |b: &u8| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\');
    if !arg.is_empty() && arg.iter().all(bare) && !(position == 0 && arg[0] == b'*') {
        out.extend_from_slice(arg);
    } else if arg.iter().all(|b| *b == b' ' || b.is_ascii_graphic())
        && arg.last() != Some(&b'\\')
        && arg.len() % 3 == 1
    {
        out.push(b'\'');
        for &b in arg {
            if b == b'\'' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'\'');
    } else {
        out.push(b'"');
        for &b in arg {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b' ' | 0x21..=0x7e => out.push(b),
                _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            }
        }
        out.push(b'"');
    }
}

/// A pipeline: commands whose replies are compared one by one, then perhaps bytes that
/// end the connection (a protocol error or `QUIT`), after which both servers must have
/// answered the same and closed.
pub struct Pipeline {
    pub cmds: Vec<Cmd>,
    pub ending: Option<Vec<u8>>,
}

/// Keys: a few, so commands meet each other's writes; binary ones; rarely the empty key.
const KEYS: &[&[u8]] = &[
    b"k0",
    b"k1",
    b"k2",
    b"k3",
    b"k4",
    b"k5",
    b"with space",
    b"bin\x00\r\n\xff",
    b"\xc3\xbc",
    b"q\"uo'te\\",
];

fn key(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(2) {
        return Vec::new();
    }
    rng.pick(KEYS).to_vec()
}

fn value(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1 => 200 + rng.below(2000) as usize,
        _ => rng.below(24) as usize,
    };
    let binary = rng.chance(30);
    (0..len)
        .map(|_| {
            if binary {
                rng.next() as u8
            } else {
                *rng.pick(b"abcxyz 019\"'\\-_")
            }
        })
        .collect()
}

/// Printable words, for names and the arguments of unknown commands (Redis prints
/// those back with `%s`).
fn word(rng: &mut Rng) -> Vec<u8> {
    let most = if rng.chance(5) { 200 } else { 10 };
    let len = 1 + rng.below(most) as usize;
    (0..len).map(|_| *rng.pick(b"abcdefghijk-XYZ_09")).collect()
}

fn args(words: &[&[u8]]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.to_vec()).collect()
}

/// Redis commands kvs does not serve, each in a form with the right argument count.
pub const UNSERVED: &[(&str, &[&str])] = &[
    ("SETRANGE", &["k0", "0", "x"]),
    ("GETRANGE", &["k1", "0", "1"]),
    ("KEYS", &["*"]),
    ("FLUSHDB", &[]),
    ("MULTI", &[]),
];

/// One random command.
pub fn command(rng: &mut Rng) -> Cmd {
    let args = match rng.below(100) {
        0..=19 => vec![b"SET".to_vec(), key(rng), value(rng)],
        20..=34 => vec![b"GET".to_vec(), key(rng)],
        35..=41 => multi(rng, b"MSET", true),
        42..=48 => multi(rng, b"MGET", false),
        49..=55 => multi(rng, b"DEL", false),
        56..=60 => multi(rng, b"EXISTS", false),
        61..=64 => vec![b"STRLEN".to_vec(), key(rng)],
        65..=66 => args(&[b"DBSIZE"]),
        67..=69 => ping_echo(rng),
        70..=71 => vec![
            b"SELECT".to_vec(),
            rng.pick(&[&b"0"[..], b"00", b"x", b"-1", b"1", b"15", b"16"])
                .to_vec(),
        ],
        72..=73 => config(rng),
        74..=77 => client(rng),
        78..=80 => hello(rng),
        81 => args(&[
            b"INFO",
            *rng.pick(&[&b"server"[..], b"keyspace", b"clients"]),
        ]),
        82 => args(&[b"COMMAND", b"COUNT"]),
        83..=85 => {
            let mut a = vec![rng.pick(&[&b"FOO"[..], b"getx", b"S E T"]).to_vec()];
            a.extend((0..rng.below(4)).map(|_| word(rng)));
            a
        }
        86..=89 => unserved(rng),
        90..=97 => atomic(rng),
        _ => wrong_arity(rng),
    };
    Cmd {
        args,
        inline: rng.chance(15),
    }
}

/// An atomic update or a TTL read. Deadlines are far off (no key expires during a
/// run), float increments are exact in binary (so both servers print the same sum).
fn atomic(rng: &mut Rng) -> Vec<Vec<u8>> {
    const NUMBERS: &[&[u8]] = &[b"1", b"-3", b"100", b"x", b"9223372036854775807", b"0"];
    let k = key(rng);
    let mut a = match rng.below(16) {
        0 => {
            let mut a = vec![b"SET".to_vec(), k, value(rng)];
            let options: &[&[&[u8]]] = &[
                &[b"NX"],
                &[b"XX"],
                &[b"GET"],
                &[b"KEEPTTL"],
                &[b"EX", b"1000"],
                &[b"PX", b"1000000"],
                &[b"NX", b"GET"],
                &[b"XX", b"EX", b"1000"],
                &[b"EX"],
                &[b"EX", b"0"],
                &[b"NX", b"XX"],
                &[b"BOGUS"],
            ];
            a.extend(rng.pick(options).iter().map(|o| o.to_vec()));
            a
        }
        1 => vec![b"SETNX".to_vec(), k, value(rng)],
        2 => vec![b"GETSET".to_vec(), k, value(rng)],
        3 => vec![b"GETDEL".to_vec(), k],
        4 => vec![b"INCR".to_vec(), k],
        5 => vec![b"DECR".to_vec(), k],
        6 => vec![b"INCRBY".to_vec(), k, rng.pick(NUMBERS).to_vec()],
        7 => vec![b"DECRBY".to_vec(), k, rng.pick(NUMBERS).to_vec()],
        8 => vec![
            b"INCRBYFLOAT".to_vec(),
            k,
            rng.pick(&[&b"1.5"[..], b"-0.25", b"3", b"x", b"0.125"])
                .to_vec(),
        ],
        9 => vec![b"APPEND".to_vec(), k, value(rng)],
        10 => vec![b"EXPIRE".to_vec(), k, b"1000".to_vec()],
        // Fixed wall-clock deadlines (in 2100), so that `GT`/`LT` compare the same on
        // both servers whenever each reads its clock.
        13 => {
            let mut a = vec![
                b"PEXPIREAT".to_vec(),
                k,
                rng.pick(&[&b"4102444800000"[..], b"4102444900000", b"4102444700000"])
                    .to_vec(),
            ];
            let options: &[&[&[u8]]] = &[
                &[],
                &[b"NX"],
                &[b"XX"],
                &[b"GT"],
                &[b"LT"],
                &[b"xx", b"lt"],
                &[b"XX", b"GT"],
                &[b"NX", b"XX"],
                &[b"GT", b"LT"],
                &[b"BOGUS"],
            ];
            a.extend(rng.pick(options).iter().map(|o| o.to_vec()));
            a
        }
        14 => multi(rng, b"MSETNX", true),
        11 => vec![b"PERSIST".to_vec(), k],
        12 => vec![rng.pick(&[&b"TTL"[..], b"PTTL"]).to_vec(), k],
        _ => vec![b"SETEX".to_vec(), k, b"1000".to_vec(), value(rng)],
    };
    if rng.chance(10) {
        a.pop(); // a wrong argument count, or a missing option value
    }
    a
}

/// `MSET k v ...` or `MGET/DEL/EXISTS k ...`, keys sometimes repeated.
fn multi(rng: &mut Rng, name: &[u8], pairs: bool) -> Vec<Vec<u8>> {
    let mut a = vec![name.to_vec()];
    for _ in 0..1 + rng.below(5) {
        a.push(key(rng));
        if pairs {
            a.push(value(rng));
        }
    }
    a
}

fn ping_echo(rng: &mut Rng) -> Vec<Vec<u8>> {
    match rng.below(3) {
        0 => args(&[b"PING"]),
        1 => vec![b"PING".to_vec(), value(rng)],
        _ => vec![b"ECHO".to_vec(), value(rng)],
    }
}

fn config(rng: &mut Rng) -> Vec<Vec<u8>> {
    match rng.below(5) {
        0 => args(&[b"CONFIG", b"GET"]),
        1 => args(&[b"CONFIG"]),
        2 => args(&[b"CONFIG", b"GET", b"maxmemory"]),
        3 => args(&[b"CONFIG", b"SET", b"maxmemory", b"1"]),
        _ => args(&[
            b"CONFIG",
            b"get",
            *rng.pick(&[&b"save"[..], b"appendonly", b"APPENDONLY"]),
        ]),
    }
}

fn client(rng: &mut Rng) -> Vec<Vec<u8>> {
    let names: &[&[u8]] = &[b"app-1", b"a b", b"", b"x\ny", b"\xc3\xbc"];
    match rng.below(6) {
        0 | 1 => vec![
            b"CLIENT".to_vec(),
            b"SETNAME".to_vec(),
            rng.pick(names).to_vec(),
        ],
        2 => args(&[b"CLIENT", b"GETNAME"]),
        3 => args(&[b"CLIENT", *rng.pick(&[&b"ID"[..], b"INFO"])]),
        4 => args(&[b"CLIENT", b"SETINFO", b"lib-name", b"kvs-diff"]),
        _ => args(&[b"CLIENT", b"GETNAME", b"extra"]),
    }
}

fn hello(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut a = args(&[b"HELLO"]);
    match rng.below(8) {
        0 => {}
        1 => a.push(b"abc".to_vec()),
        2 => a.push(b"4".to_vec()),
        3 => a.extend(args(&[b"3", b"SETNAME"])),
        4 => a.extend(args(&[b"2", b"SETNAME", b"a b"])),
        5 => a.extend(args(&[b"3", b"BOGUS"])),
        _ => {
            a.push(rng.pick(&[&b"2"[..], b"3"]).to_vec());
            if rng.chance(40) {
                a.extend(args(&[b"SETNAME", b"hello-name"]));
            }
        }
    }
    a
}

fn unserved(rng: &mut Rng) -> Vec<Vec<u8>> {
    let (name, rest) = rng.pick(UNSERVED);
    let mut a: Vec<Vec<u8>> = std::iter::once(*name)
        .chain(rest.iter().copied())
        .map(|s| s.as_bytes().to_vec())
        .collect();
    // Half the time a wrong argument count, which Redis and kvs must answer alike.
    if rng.chance(50) {
        match *name {
            "EXPIRE" => a.truncate(2),
            "FLUSHDB" => {}
            _ => a.push(b"extra".to_vec()),
        }
    }
    a
}

fn wrong_arity(rng: &mut Rng) -> Vec<Vec<u8>> {
    let forms: &[&[&[u8]]] = &[
        &[b"GET"],
        &[b"GET", b"k0", b"k1"],
        &[b"SET", b"k0"],
        &[b"MSET", b"k0"],
        &[b"MSET", b"k0", b"v", b"k1"],
        &[b"MGET"],
        &[b"DEL"],
        &[b"EXISTS"],
        &[b"STRLEN"],
        &[b"ECHO"],
        &[b"PING", b"a", b"b"],
        &[b"SELECT"],
        &[b"DBSIZE", b"x"],
    ];
    let form: &[&[u8]] = forms[rng.below(forms.len() as u64) as usize];
    args(form)
}

/// Bytes that end a connection: Redis answers a protocol error (or `QUIT`'s `+OK`) and
/// closes.
fn ending(rng: &mut Rng) -> Vec<u8> {
    let endings: &[&[u8]] = &[
        b"ECHO \"unbalanced\r\n",
        b"ECHO 'unbalanced\r\n",
        b"ECHO \"a\"b\r\n",
        b"*01\r\n$4\r\nPING\r\n",
        b"*1\r\n$04\r\nPING\r\n",
        b"*1\r\n$-0\r\n",
        b"*-0\r\n",
        b"*1\r\n+PING\r\n",
        b"*1\r\n$x\r\n",
        b"QUIT\r\n",
        b"*1\r\n$4\r\nQUIT\r\n",
    ];
    rng.pick(endings).to_vec()
}

/// A pipeline of 1-100 commands, one in ten ending its connection.
pub fn pipeline(rng: &mut Rng) -> Pipeline {
    let n = 1 + rng.below(100) as usize;
    let cmds = (0..n).map(|_| command(rng)).collect();
    let ending = rng.chance(10).then(|| ending(rng));
    Pipeline { cmds, ending }
}
